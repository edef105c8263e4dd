//! How a workstation request names a subscriber's token: by serial number when the token has
//! one, by an RFC 7512 `pkcs11:` URI (`model`, `manufacturer`, `serial`, `token`), or by a
//! slot handle that `ListTokens` hands out for every slot (the only name of a blank token
//! whose serial is empty, as kryoptic's are). A handle carries a fingerprint of what the slot
//! held when it was listed, so it stops naming the slot as soon as the slot changes
//! (initialised, re-plugged, another token inserted).

use std::fmt;

use sha2::{Digest, Sha256};

/// The CK_TOKEN_INFO fields a token is named and recognised by (padding removed).
#[derive(Clone, Copy, Debug)]
pub struct TokenFields<'a> {
    /// serialNumber.
    pub serial: &'a str,
    /// label.
    pub label: &'a str,
    /// manufacturerID.
    pub manufacturer: &'a str,
    /// model.
    pub model: &'a str,
    /// CKF_TOKEN_INITIALIZED.
    pub initialized: bool,
}

impl TokenFields<'_> {
    /// A short digest of what the slot holds: changes when the token is initialised
    /// (label, flag and, on most modules, serial change) or replaced.
    pub fn fingerprint(&self, slot: u64) -> String {
        let mut h = Sha256::new();
        for part in [self.serial, self.label, self.manufacturer, self.model] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.update([u8::from(self.initialized)]);
        h.update(slot.to_be_bytes());
        hex::encode(&h.finalize()[..6])
    }

    /// The token's RFC 7512 URI: every identifying attribute it has, percent-encoded.
    pub fn uri(&self) -> String {
        let mut parts = Vec::new();
        for (name, value) in [
            ("model", self.model),
            ("manufacturer", self.manufacturer),
            ("serial", self.serial),
            ("token", self.label),
        ] {
            if !value.is_empty() {
                parts.push(format!("{name}={}", percent_encode(value)));
            }
        }
        format!("pkcs11:{}", parts.join(";"))
    }
}

/// The attributes of a `pkcs11:` URI that select a token; every one given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenUri {
    /// `token=`: the label.
    pub token: Option<String>,
    /// `serial=`.
    pub serial: Option<String>,
    /// `manufacturer=`.
    pub manufacturer: Option<String>,
    /// `model=`.
    pub model: Option<String>,
}

/// A slot handle as `ListTokens` hands it out: `slot:{module}:{slot id}:{fingerprint}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotHandle {
    /// Index of the module in the workstation's `[token] modules`.
    pub module: usize,
    /// The slot id in that module's current context.
    pub slot: u64,
    /// [`TokenFields::fingerprint`] of the slot when it was listed.
    pub fingerprint: String,
}

impl SlotHandle {
    /// The handle's text.
    pub fn text(&self) -> String {
        format!("slot:{}:{}:{}", self.module, self.slot, self.fingerprint)
    }
}

/// How a request names a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenAddress {
    /// By serial number (CK_TOKEN_INFO.serialNumber, padding removed).
    Serial(String),
    /// By an RFC 7512 URI.
    Uri(TokenUri),
    /// By a slot handle from `ListTokens`.
    Handle(SlotHandle),
    /// The token in this slot of the module's current context, if it still has this serial
    /// (the slot an operation found and keeps using, e.g. across C_InitToken).
    InSlot {
        /// The slot id.
        slot: u64,
        /// The serial the token had when found (may be empty).
        serial: String,
    },
}

impl TokenAddress {
    /// Parse what a client sent: `pkcs11:...` is a URI, `slot:...` a handle, anything else
    /// a serial number. Errors name the problem; the caller names the field.
    pub fn parse(text: &str) -> Result<TokenAddress, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "is empty: give the token's serial, a pkcs11: URI or a slot handle from ListTokens"
                    .into(),
            );
        }
        if text.chars().any(char::is_control) {
            return Err("contains control characters".into());
        }
        if let Some(rest) = text.strip_prefix("pkcs11:") {
            return parse_uri(rest).map(TokenAddress::Uri);
        }
        if let Some(rest) = text.strip_prefix("slot:") {
            let bad = || format!("{text:?} is not a slot handle from ListTokens");
            let mut it = rest.split(':');
            let (Some(m), Some(s), Some(f), None) = (it.next(), it.next(), it.next(), it.next())
            else {
                return Err(bad());
            };
            let module = m.parse().map_err(|_| bad())?;
            let slot = s.parse().map_err(|_| bad())?;
            if f.len() != 12 || !f.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            return Ok(TokenAddress::Handle(SlotHandle {
                module,
                slot,
                fingerprint: f.to_ascii_lowercase(),
            }));
        }
        if text.chars().count() > 16 {
            return Err("a serial number has at most 16 characters (name the token by a pkcs11: URI or a slot handle otherwise)".into());
        }
        Ok(TokenAddress::Serial(text.to_owned()))
    }

    /// Whether the token `t` in slot `slot` (of the module the address is tried on) is the
    /// one named. A handle's module index is the caller's to check.
    pub fn matches(&self, slot: u64, t: &TokenFields<'_>) -> bool {
        match self {
            TokenAddress::Serial(s) => !t.serial.is_empty() && t.serial == s.trim(),
            TokenAddress::Uri(u) => {
                let ok = |want: &Option<String>, have: &str| {
                    want.as_deref().is_none_or(|w| w.trim_end() == have)
                };
                ok(&u.token, t.label)
                    && ok(&u.serial, t.serial)
                    && ok(&u.manufacturer, t.manufacturer)
                    && ok(&u.model, t.model)
            }
            TokenAddress::Handle(h) => h.slot == slot && h.fingerprint == t.fingerprint(slot),
            TokenAddress::InSlot { slot: s, serial } => *s == slot && serial == t.serial,
        }
    }
}

impl fmt::Display for TokenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenAddress::Serial(s) => f.write_str(s),
            TokenAddress::Uri(u) => {
                let fields = TokenFields {
                    serial: u.serial.as_deref().unwrap_or(""),
                    label: u.token.as_deref().unwrap_or(""),
                    manufacturer: u.manufacturer.as_deref().unwrap_or(""),
                    model: u.model.as_deref().unwrap_or(""),
                    initialized: true,
                };
                f.write_str(&fields.uri())
            }
            TokenAddress::Handle(h) => f.write_str(&h.text()),
            TokenAddress::InSlot { slot, serial } if serial.is_empty() => {
                write!(f, "the token in slot {slot}")
            }
            TokenAddress::InSlot { serial, .. } => f.write_str(serial),
        }
    }
}

fn parse_uri(rest: &str) -> Result<TokenUri, String> {
    let path = rest.split_once('?').map_or(rest, |(path, _query)| path);
    let mut uri = TokenUri::default();
    for attr in path.split(';').filter(|a| !a.is_empty()) {
        let (name, value) = attr
            .split_once('=')
            .ok_or_else(|| format!("URI attribute {attr:?} has no value"))?;
        let value = super::uri::percent_decode(value)?;
        // An empty value names nothing (as in the configuration's URIs): a token's URI
        // leaves out its empty fields, so `pkcs11:token=` could never be printed back.
        let value = Some(value).filter(|v| !v.is_empty());
        match name {
            "token" => uri.token = value,
            "serial" => uri.serial = value,
            "manufacturer" => uri.manufacturer = value,
            "model" => uri.model = value,
            "object" | "id" | "type" => {}
            n if n.starts_with("library-") => {}
            "slot-id" | "slot-description" | "slot-manufacturer" => {
                return Err(format!(
                    "URI attribute {name} names a slot, which changes; use a slot handle from ListTokens"
                ));
            }
            other => return Err(format!("unknown URI attribute {other:?}")),
        }
    }
    if uri == TokenUri::default() {
        return Err("the URI names no token (model, manufacturer, serial or token)".into());
    }
    Ok(uri)
}

/// RFC 3986 percent-encoding of a URI attribute value (unreserved characters stay).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(serial: &'a str, label: &'a str) -> TokenFields<'a> {
        TokenFields {
            serial,
            label,
            manufacturer: "Kryoptic Project",
            model: "v1",
            initialized: !label.is_empty(),
        }
    }

    #[test]
    fn serials_uris_and_handles_parse() {
        assert_eq!(
            TokenAddress::parse(" 8df1e66f75d0e9e5 ").unwrap(),
            TokenAddress::Serial("8df1e66f75d0e9e5".into())
        );
        let TokenAddress::Uri(u) =
            TokenAddress::parse("pkcs11:model=v1;manufacturer=Kryoptic%20Project;token=%E5%BC%A0")
                .unwrap()
        else {
            panic!("a URI")
        };
        assert_eq!(u.manufacturer.as_deref(), Some("Kryoptic Project"));
        assert_eq!(u.token.as_deref(), Some("张"));
        assert_eq!(
            TokenAddress::parse("slot:1:7:0a1b2c3d4e5f").unwrap(),
            TokenAddress::Handle(SlotHandle {
                module: 1,
                slot: 7,
                fingerprint: "0a1b2c3d4e5f".into()
            })
        );
        for bad in [
            "",
            "slot:1:7",
            "slot:x:7:0a1b2c3d4e5f",
            "slot:1:7:zz",
            "pkcs11:",
            "pkcs11:slot-id=3",
            "pkcs11:token=%ff",
            "12345678901234567",
            "a\nb",
        ] {
            assert!(TokenAddress::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_uri_matches_every_attribute_it_gives_and_a_serial_never_matches_a_blank_one() {
        let blank = fields("", "");
        assert!(!TokenAddress::Serial(String::new()).matches(1, &blank));
        let uri = TokenAddress::parse("pkcs11:manufacturer=Kryoptic%20Project;model=v1").unwrap();
        assert!(uri.matches(1, &blank));
        let uri = TokenAddress::parse("pkcs11:serial=ab;token=x").unwrap();
        assert!(uri.matches(1, &fields("ab", "x")));
        assert!(!uri.matches(1, &fields("ab", "y")));
    }

    #[test]
    fn a_handle_stops_naming_a_slot_once_it_changes() {
        let before = fields("", "");
        let handle = SlotHandle {
            module: 0,
            slot: 3,
            fingerprint: before.fingerprint(3),
        };
        let addr = TokenAddress::parse(&handle.text()).unwrap();
        assert!(addr.matches(3, &before));
        assert!(!addr.matches(4, &before), "another slot");
        assert!(!addr.matches(3, &fields("c0ffee", "fresh")), "initialised");
    }

    #[test]
    fn an_attribute_with_an_empty_value_names_nothing_and_every_uri_prints_as_it_parses() {
        let err = TokenAddress::parse("pkcs11:token=").unwrap_err();
        assert!(err.contains("names no token"), "{err}");
        let addr = TokenAddress::parse("pkcs11:serial=ab12;token=").unwrap();
        assert_eq!(
            addr,
            TokenAddress::Uri(TokenUri {
                serial: Some("ab12".into()),
                ..TokenUri::default()
            })
        );
        assert_eq!(TokenAddress::parse(&addr.to_string()).unwrap(), addr);
    }

    #[test]
    fn a_token_uri_round_trips() {
        let t = fields("ab12", "张三 (personal)");
        let uri = t.uri();
        assert!(
            uri.starts_with("pkcs11:model=v1;manufacturer=Kryoptic%20Project;serial=ab12;token=")
        );
        assert!(TokenAddress::parse(&uri).unwrap().matches(0, &t));
    }
}

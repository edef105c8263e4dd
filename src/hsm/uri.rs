//! Naming a token by label or serial number, from settings or an RFC 7512 `pkcs11:` URI.
//! Never by slot id: SoftHSM renumbers a slot when its token is initialised and USB tokens
//! change slots on re-plug.

use std::fmt;

use super::HsmError;

/// Which token the HSM's keys live on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSelector {
    /// The token whose CKA label (CK_TOKEN_INFO.label) is this.
    Label(String),
    /// The token whose serial number (CK_TOKEN_INFO.serialNumber) is this.
    Serial(String),
}

impl TokenSelector {
    /// Parse an RFC 7512 URI such as `pkcs11:token=signet-ca` or `pkcs11:serial=8df1e66f75d0e9e5`.
    ///
    /// Values are percent-decoded. When both `token` and `serial` are given the serial wins,
    /// as it is unique where labels need not be. Attributes that name objects or the module
    /// (`object`, `id`, `type`, `manufacturer`, `model`, `library-*`) are ignored; slot
    /// attributes are refused, since slots are not stable names.
    pub fn parse_uri(uri: &str) -> Result<TokenSelector, HsmError> {
        let invalid = |reason: String| HsmError::InvalidUri {
            uri: uri.to_owned(),
            reason,
        };
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| invalid("it does not start with \"pkcs11:\"".into()))?;
        // The query part (pin-source, module-path, ...) does not select a token.
        let path = rest.split_once('?').map_or(rest, |(path, _query)| path);
        let mut label = None;
        let mut serial = None;
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| invalid(format!("attribute {attr:?} has no value")))?;
            let value = percent_decode(value).map_err(invalid)?;
            match name {
                "token" => label = Some(value),
                "serial" => serial = Some(value),
                "object" | "id" | "type" | "manufacturer" | "model" => {}
                n if n.starts_with("library-") => {}
                "slot-id" | "slot-description" | "slot-manufacturer" => {
                    return Err(invalid(format!(
                        "{name} names a slot, which changes; name the token by token= or serial="
                    )));
                }
                other => return Err(invalid(format!("unknown attribute {other:?}"))),
            }
        }
        match (serial, label) {
            (Some(serial), _) if !serial.is_empty() => Ok(TokenSelector::Serial(serial)),
            (_, Some(label)) if !label.is_empty() => Ok(TokenSelector::Label(label)),
            _ => Err(invalid("it names no token (token= or serial=)".into())),
        }
    }

    /// True when a token with this label and serial number is the one selected.
    pub fn matches(&self, label: &str, serial: &str) -> bool {
        match self {
            TokenSelector::Label(want) => label.trim_end() == want.trim_end(),
            TokenSelector::Serial(want) => serial.trim() == want.trim(),
        }
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "label {l:?}"),
            TokenSelector::Serial(s) => write!(f, "serial {s:?}"),
        }
    }
}

/// RFC 3986 percent-decoding into UTF-8.
pub(super) fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                // from_str_radix alone would also take a sign: `%+f`.
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{value:?} has a broken percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_label_uri_selects_by_label() {
        assert_eq!(
            TokenSelector::parse_uri("pkcs11:token=signet-ca").unwrap(),
            TokenSelector::Label("signet-ca".into())
        );
    }

    #[test]
    fn serial_uri_selects_by_serial_and_wins_over_label() {
        assert_eq!(
            TokenSelector::parse_uri("pkcs11:token=a;serial=8df1e66f75d0e9e5").unwrap(),
            TokenSelector::Serial("8df1e66f75d0e9e5".into())
        );
    }

    #[test]
    fn percent_escapes_are_decoded_including_utf8() {
        assert_eq!(
            TokenSelector::parse_uri("pkcs11:token=My%20CA%3B%E4%B8%AD;object=key?pin-value=1")
                .unwrap(),
            TokenSelector::Label("My CA;中".into())
        );
    }

    #[test]
    fn bad_uris_are_refused_with_a_reason() {
        for bad in [
            "token=signet-ca",
            "pkcs11:",
            "pkcs11:object=key",
            "pkcs11:slot-id=3",
            "pkcs11:token=%4",
            "pkcs11:token=%ff",
            "pkcs11:token",
            "pkcs11:frobnicate=1",
        ] {
            let err = TokenSelector::parse_uri(bad).unwrap_err();
            assert!(matches!(err, HsmError::InvalidUri { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn a_percent_escape_is_exactly_two_hex_digits() {
        assert!(TokenSelector::parse_uri("pkcs11:token=%+f").is_err());
        assert!(TokenSelector::parse_uri("pkcs11:token=%-1").is_err());
        assert_eq!(
            TokenSelector::parse_uri("pkcs11:token=%2B%2b").unwrap(),
            TokenSelector::Label("++".into())
        );
    }

    #[test]
    fn padded_token_fields_match() {
        let sel = TokenSelector::Label("signet-ca".into());
        assert!(sel.matches("signet-ca                       ", "x"));
        assert!(!sel.matches("signet-ca2", "x"));
        assert!(TokenSelector::Serial("abc".into()).matches("x", "abc "));
    }
}

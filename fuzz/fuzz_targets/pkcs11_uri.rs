//! PKCS#11 names: RFC 7512 URIs in the configuration (`TokenSelector::parse_uri`) and the
//! token a workstation request names (`TokenAddress::parse`: a serial, a `pkcs11:` URI or a
//! slot handle). A name that parses is printed as text that parses back to the same name,
//! and selects the token whose (space-padded) fields are the ones it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::hsm::TokenSelector;
use signet::hsm::address::{TokenAddress, TokenFields};

fn fields<'a>(
    serial: &'a str,
    label: &'a str,
    manufacturer: &'a str,
    model: &'a str,
) -> TokenFields<'a> {
    TokenFields {
        serial,
        label,
        manufacturer,
        model,
        initialized: true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = TokenSelector::parse_uri(text) {
        let uri = match &sel {
            TokenSelector::Label(l) => {
                assert!(!l.is_empty());
                assert!(sel.matches(&format!("{l}   "), "any serial"));
                fields("", l, "", "").uri()
            }
            TokenSelector::Serial(s) => {
                assert!(!s.is_empty());
                assert!(sel.matches("any label", s));
                fields(s, "", "", "").uri()
            }
        };
        assert_eq!(
            TokenSelector::parse_uri(&uri).ok().as_ref(),
            Some(&sel),
            "{uri} names another token than {text:?}"
        );
    }
    if let Ok(address) = TokenAddress::parse(text) {
        let shown = address.to_string();
        assert_eq!(
            TokenAddress::parse(&shown).ok().as_ref(),
            Some(&address),
            "{shown:?} names another token than {text:?}"
        );
        match &address {
            TokenAddress::Serial(s) => {
                assert!(address.matches(0, &fields(s, "label", "maker", "model")));
            }
            TokenAddress::Uri(u) => {
                // Tokens report their fields with the padding removed.
                let f = fields(
                    u.serial.as_deref().map_or("s", str::trim_end),
                    u.token.as_deref().map_or("l", str::trim_end),
                    u.manufacturer.as_deref().map_or("m", str::trim_end),
                    u.model.as_deref().map_or("n", str::trim_end),
                );
                assert!(address.matches(0, &f), "{address:?} does not match {f:?}");
            }
            TokenAddress::Handle(h) => {
                assert_eq!(h.fingerprint.len(), 12);
            }
            TokenAddress::InSlot { .. } => panic!("a client named a token by a bare slot"),
        }
    }
});

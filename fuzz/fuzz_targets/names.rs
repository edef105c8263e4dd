//! Names in requests and on the command line: subject text (`CN=..., O=...`), SANs
//! (`dns:`, `ip:`, `email:`), DNS names with and without wildcard syntax, the Public Suffix
//! List look-ups, and unified social credit codes. An accepted subject or SAN keeps its
//! meaning (its X.509 encoding carries exactly the accepted values, its text parses back to
//! it); a DNS name accepted is ASCII of at most 253 characters, accepted with wildcard
//! syntax too, and has a wildcard only where allowed; a credit code accepted carries its
//! own check character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet::pki::dns::{check_dns_name, is_public_name, is_wildcard, public_suffix};
use signet::pki::name::{check_credit_code, credit_code_check_char};
use signet::pki::{San, SubjectSpec};
use signet_fuzz::{assert_san_keeps_meaning, assert_subject_keeps_meaning};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = SubjectSpec::parse(text) {
        assert_subject_keeps_meaning(&spec);
    }
    if let Ok(san) = text.parse::<San>() {
        assert_san_keeps_meaning(&san);
    }
    let plain = check_dns_name(text, false);
    let wild = check_dns_name(text, true);
    if plain.is_ok() {
        assert!(
            wild.is_ok(),
            "{text:?} accepted only without wildcard syntax"
        );
        assert!(!text.contains('*'), "{text:?} has a wildcard");
    }
    if wild.is_ok() {
        assert!(
            text.is_ascii() && !text.is_empty() && text.len() <= 253,
            "{text:?}"
        );
        let stars = text.matches('*').count();
        assert!(stars == 0 || (stars == 1 && is_wildcard(text)), "{text:?}");
        let _ = is_public_name(text);
        let lower = text.to_ascii_lowercase();
        if let Some(s) = public_suffix(&lower) {
            assert_eq!(s, lower);
        }
        let san = San::Dns(text.to_owned())
            .checked("san")
            .expect("a checked name is a SAN");
        assert_san_keeps_meaning(&san);
    }
    if check_credit_code(text).is_ok() {
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(chars.len(), 18);
        let first: String = chars[..17].iter().collect();
        assert_eq!(credit_code_check_char(&first), Some(chars[17]), "{text}");
    }
});

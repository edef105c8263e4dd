//! DNS names as a certificate carries them (dNSName SANs, e-mail domains): LDH labels,
//! internationalised labels only as IDNA 2008 A-labels that decode and round-trip, a wildcard
//! only as the whole leftmost label and never directly over a public suffix (the Public Suffix
//! List compiled into signet by the `psl` crate; `cargo update -p psl` brings a newer list).
//!
//! Relying parties compare the A-labels a certificate carries, so that is what an RA must
//! send: a U-label (`例子.中国`) is refused with the A-label it stands for, rather than
//! converted, so the name signet signs is byte for byte the name the RA verified.

use super::text::{check_chars, describe, general_category};
use icu_properties::props::GeneralCategory;

/// True for a name whose leftmost label is the wildcard `*`.
pub fn is_wildcard(name: &str) -> bool {
    name.starts_with("*.")
}

/// Check a DNS name for a dNSName SAN; `wildcard_syntax` lets the leftmost label be `*`
/// (whether a profile accepts a wildcard is the profile's decision). The error is a sentence
/// for the field that holds the name.
pub fn check_dns_name(d: &str, wildcard_syntax: bool) -> Result<(), String> {
    check_chars(d)?;
    if d.is_empty() || d.len() > 253 {
        return Err(format!(
            "DNS name must be 1 to 253 characters, got {}",
            d.len()
        ));
    }
    if !d.is_ascii() {
        return Err(not_ascii(d));
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(format!("DNS name {d:?} must have at least two labels"));
    }
    let mut idn = false;
    for (i, label) in labels.iter().enumerate() {
        if label.contains('*') {
            if *label == "*" && i == 0 && wildcard_syntax {
                continue;
            }
            return Err(if wildcard_syntax {
                format!(
                    "DNS name {d:?}: a wildcard is only the whole leftmost label, as in *.example.cn; \
                     `*` is allowed nowhere else"
                )
            } else {
                format!("DNS name {d:?}: `*` is not allowed here")
            });
        }
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("DNS name {d:?} has an invalid label {label:?}"));
        }
        if label.get(2..4) == Some("--") {
            if label[..2].eq_ignore_ascii_case("xn") {
                check_a_label(label).map_err(|m| format!("DNS name {d:?}: {m}"))?;
                idn = true;
            } else {
                return Err(format!(
                    "DNS name {d:?}: label {label:?} has hyphens in its third and fourth \
                     positions, which are reserved for A-labels (xn--, RFC 5891 section 4.2.3.1)"
                ));
            }
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("DNS name {d:?} looks like an IP address; use ip:"));
    }
    let base = d.strip_prefix("*.").unwrap_or(d).to_ascii_lowercase();
    if idn {
        // The whole name again, for the rules that span labels (RFC 5893's bidi rule).
        match idna::domain_to_ascii_strict(&base) {
            Ok(a) if a == base => {}
            _ => {
                return Err(format!(
                    "DNS name {d:?} is not a valid internationalised name (IDNA 2008: \
                     its labels break the bidi rule of RFC 5893 or do not round-trip)"
                ));
            }
        }
    }
    if is_wildcard(d)
        && let Some(suffix) = public_suffix(&base)
    {
        return Err(format!(
            "wildcard {d:?} sits directly over the public suffix {suffix:?}, so it would cover \
             every domain registered under it (CA/Browser Forum Baseline Requirements 3.2.2.6, \
             Public Suffix List)"
        ));
    }
    Ok(())
}

/// `Some(base)` when `base` (lower case, A-labels) is itself a public suffix: a listed ICANN
/// or private suffix, or a top-level domain the list does not know (its default rule `*`).
pub fn public_suffix(base: &str) -> Option<&str> {
    let suffix = psl::suffix(base.as_bytes())?;
    (suffix.as_bytes() == base.as_bytes()).then_some(base)
}

/// Whether `d` (a checked dNSName, possibly a wildcard) is a name in the public DNS: under a
/// suffix the Public Suffix List knows, and not a public suffix itself. Internal names
/// (`intranet.local`, `host.test`, `server`) are not.
pub fn is_public_name(d: &str) -> bool {
    let base = d.strip_prefix("*.").unwrap_or(d).to_ascii_lowercase();
    match psl::suffix(base.as_bytes()) {
        Some(s) => s.is_known() && s.as_bytes() != base.as_bytes(),
        None => false,
    }
}

/// The refusal of a name that is not ASCII: the A-label form to send instead, when there is
/// one.
fn not_ascii(d: &str) -> String {
    let (star, base) = match d.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", d),
    };
    match idna::domain_to_ascii_strict(base).map(|a| format!("{star}{a}")) {
        Ok(a) => match check_dns_name(&a, true) {
            Ok(()) => format!(
                "DNS name {d:?} is not ASCII; send its A-label form {a:?}: a certificate carries \
                 A-labels, and relying parties compare those"
            ),
            Err(m) => format!("DNS name {d:?} is not ASCII, and its A-label form is refused: {m}"),
        },
        Err(_) => format!(
            "DNS name {d:?} is not ASCII and not a valid internationalised name; send \
             internationalised labels as IDNA 2008 A-labels (xn--)"
        ),
    }
}

/// An A-label: valid Punycode that decodes to a U-label of IDNA 2008 characters, which
/// encodes back to the same label.
fn check_a_label(label: &str) -> Result<(), String> {
    let lower = label.to_ascii_lowercase();
    let Some(ulabel) = idna::punycode::decode_to_string(&lower[4..]) else {
        return Err(format!(
            "label {label:?} is not valid Punycode, so it is not an A-label"
        ));
    };
    if ulabel.is_ascii() {
        return Err(format!(
            "label {label:?} decodes to the ASCII {ulabel:?}; an A-label encodes non-ASCII characters"
        ));
    }
    if let Some((c, why)) = ulabel
        .chars()
        .find_map(|c| idna2008_refusal(c).map(|w| (c, w)))
    {
        return Err(format!(
            "label {label:?} decodes to {ulabel:?}, whose {} {why}",
            describe(c)
        ));
    }
    match idna::domain_to_ascii_strict(&ulabel) {
        Ok(again) if again == lower => Ok(()),
        Ok(again) => Err(format!(
            "label {label:?} decodes to {ulabel:?}, which encodes as {again:?}: an A-label \
             must round-trip"
        )),
        Err(_) => Err(format!(
            "label {label:?} decodes to {ulabel:?}, which is not a valid IDNA label"
        )),
    }
}

/// Why a code point may not stand in a U-label, after RFC 5892's rules: the lower-case
/// letters, marks and digits are PVALID (case and compatibility forms are caught by the
/// round trip); symbols, punctuation, spaces, old Hangul jamo and the exceptions it
/// disallows are not. Characters valid only in context (CONTEXTJ, CONTEXTO: joiners, the
/// middle dot, Arabic-Indic digits, ...) are refused too: signet does not evaluate contexts.
fn idna2008_refusal(c: char) -> Option<&'static str> {
    if c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit() {
        return None;
    }
    if c.is_ascii() {
        return Some("is not a lower-case letter, digit or hyphen");
    }
    match u32::from(c) {
        // PVALID by exception (RFC 5892 section 2.6).
        0x00DF | 0x03C2 | 0x06FD | 0x06FE | 0x0F0B | 0x3007 => return None,
        0x0640 | 0x07FA | 0x302E | 0x302F | 0x3031..=0x3035 | 0x303B => {
            return Some("is DISALLOWED in IDNA 2008 (RFC 5892 section 2.6)");
        }
        0x1100..=0x11FF | 0xA960..=0xA97F | 0xD7B0..=0xD7FF => {
            return Some("is an old Hangul jamo, DISALLOWED in IDNA 2008");
        }
        0x00B7
        | 0x0375
        | 0x05F3
        | 0x05F4
        | 0x30FB
        | 0x0660..=0x0669
        | 0x06F0..=0x06F9
        | 0x200C
        | 0x200D => {
            return Some(
                "is valid only in context (RFC 5892 CONTEXTO/CONTEXTJ), which signet does not accept",
            );
        }
        _ => {}
    }
    match general_category(c) {
        GeneralCategory::LowercaseLetter
        | GeneralCategory::OtherLetter
        | GeneralCategory::ModifierLetter
        | GeneralCategory::NonspacingMark
        | GeneralCategory::SpacingMark
        | GeneralCategory::DecimalNumber => None,
        _ => Some("is not a lower-case letter, mark or digit, so IDNA 2008 disallows it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(d: &str) -> String {
        check_dns_name(d, true).expect_err(d)
    }

    #[test]
    fn ascii_names_and_valid_a_labels_pass() {
        for ok in [
            "www.example.cn",
            "WWW.Example.CN",
            "a-b.example.com.cn",
            "xn--fsqu00a.xn--fiqs8s",
            "www.xn--fiqs8s",
            "xn--55qx5d.cn",
            "*.example.cn",
            "*.xn--fsqu00a.xn--fiqs8s",
            "*.example.com.cn",
            "xn--mnchen-3ya.de",
            "XN--MNCHEN-3YA.de",
        ] {
            check_dns_name(ok, true).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn public_names_are_told_from_internal_ones() {
        for d in [
            "www.example.cn",
            "*.example.cn",
            "pay.example.com.cn",
            "xn--fsqu00a.xn--fiqs8s",
        ] {
            assert!(is_public_name(d), "{d}");
        }
        for d in [
            "intranet.local",
            "host.test",
            "server",
            "cn",
            "com.cn",
            "*.com.cn",
        ] {
            assert!(!is_public_name(d), "{d}");
        }
    }

    #[test]
    fn wildcards_over_a_public_suffix_are_refused() {
        for (d, suffix) in [
            ("*.com.cn", "com.cn"),
            ("*.cn", "cn"),
            ("*.xn--fiqs8s", "xn--fiqs8s"),
            ("*.gov.cn", "gov.cn"),
            ("*.xn--55qx5d.cn", "xn--55qx5d.cn"),
            ("*.github.io", "github.io"),
            ("*.corp", "corp"),
            ("*.COM.CN", "com.cn"),
        ] {
            let e = refused(d);
            assert!(e.contains(&format!("public suffix {suffix:?}")), "{d}: {e}");
        }
    }

    #[test]
    fn a_star_anywhere_but_the_whole_leftmost_label_is_refused() {
        for d in [
            "www.*.example.cn",
            "w*.example.cn",
            "*w.example.cn",
            "*.*.example.cn",
            "example.*",
            "**.example.cn",
        ] {
            assert!(refused(d).contains("whole leftmost label"), "{d}");
        }
        assert!(
            check_dns_name("*.example.cn", false)
                .unwrap_err()
                .contains("not allowed")
        );
    }

    #[test]
    fn bad_punycode_and_labels_that_do_not_round_trip_are_refused() {
        let e = refused("xn--zz.example.cn");
        assert!(e.contains("not valid Punycode"), "{e}");
        let e = refused("xn--abc-.example.cn");
        assert!(e.contains("invalid label") || e.contains("ASCII"), "{e}");
        // "ab×c": × is a symbol.
        let e = refused("xn--abc-9ja.example.cn");
        assert!(e.contains("U+00D7"), "{e}");
        // Upper-case Ü (xn--tda is "ü", which passes; "Ü" encodes as xn--wca).
        check_dns_name("xn--tda.example.cn", false).unwrap();
        let e = refused("xn--wca.example.cn");
        assert!(e.contains("U+00DC"), "{e}");
        // "éx" written decomposed (e + U+0301): not NFC, so it encodes differently.
        let e = refused("xn--ex-8tb.example.cn");
        assert!(e.contains("must round-trip"), "{e}");
        // Full-width letters: UTS 46 maps them, so they do not round-trip.
        let e = refused("xn--ph7cc.example.cn");
        assert!(e.contains("decodes to"), "{e}");
        // ☃ is a symbol: valid in UTS 46, DISALLOWED in IDNA 2008.
        let e = refused("xn--n3h.example.cn");
        assert!(e.contains("U+2603"), "{e}");
        // Reserved LDH labels that are not A-labels.
        let e = refused("ab--cd.example.cn");
        assert!(e.contains("reserved for A-labels"), "{e}");
    }

    #[test]
    fn u_labels_are_refused_with_the_a_label_to_send() {
        let e = refused("例子.中国");
        assert!(e.contains("\"xn--fsqu00a.xn--fiqs8s\""), "{e}");
        let e = refused("*.例子.中国");
        assert!(e.contains("\"*.xn--fsqu00a.xn--fiqs8s\""), "{e}");
        let e = refused("*.中国");
        assert!(e.contains("public suffix \"xn--fiqs8s\""), "{e}");
        let e = refused("www.\u{200B}example.cn");
        assert!(e.contains("U+200B ZERO WIDTH SPACE"), "{e}");
    }
}

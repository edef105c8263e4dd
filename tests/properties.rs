//! Property tests of the pure parts, over generated inputs rather than hand-picked ones:
//! subjects keep their meaning through text and DER, SANs through text and GeneralName,
//! serials through every spelling clients use, and the audit chain notices every single-byte
//! change of any entry.

use std::net::IpAddr;

use der::{Decode, Encode};
use proptest::prelude::*;
use signet::audit::{AuditEntry, AuditEvent, entry_hash, genesis_hash, verify_chain};
use signet::ca::normalize_serial;
use signet::pki::serial::{random_serial, serial_hex};
use signet::pki::{San, SubjectSpec};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

/// A subject value: letters, digits, CJK, and the characters the text form must escape.
fn value() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9 宁津县精神卫生中心,=+\\\\\"'.()-]{1,40}")
        .expect("regex")
        // Values with white space at either end are refused, so none is generated.
        .prop_map(|v| v.trim().to_owned())
        .prop_filter("no blank values", |v| !v.is_empty())
}

/// A subject of some of CN, O, OU, L, ST and C, each at most once.
fn subject() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    (
        value(),
        proptest::option::of(value()),
        proptest::option::of(value()),
        proptest::option::of(value()),
        proptest::option::of("[A-Z]{2}"),
    )
        .prop_map(|(cn, o, ou, l, c)| {
            let mut pairs = vec![("CN", cn)];
            pairs.extend(o.map(|v| ("O", v)));
            pairs.extend(ou.map(|v| ("OU", v)));
            pairs.extend(l.map(|v| ("L", v)));
            pairs.extend(c.map(|v| ("C", v)));
            pairs
        })
}

/// The string values of every attribute of a DER Name, in order.
fn name_values(name: &Name) -> Vec<String> {
    name.iter()
        .map(|atv| {
            atv.value
                .decode_as::<der::asn1::Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    atv.value
                        .decode_as::<der::asn1::PrintableStringRef<'_>>()
                        .map(|s| s.as_str().to_owned())
                })
                .expect("a string attribute")
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn subjects_keep_their_values_through_text_and_der(pairs in subject()) {
        let spec = SubjectSpec::from_pairs(pairs.clone()).expect("generated subjects are valid");
        // The text form (escaping commas and backslashes) parses back to the same subject.
        let again = SubjectSpec::parse(&spec.to_string()).expect("its own text parses");
        prop_assert_eq!(&again, &spec);
        // DER and back: every value is in the Name, unchanged.
        let der = spec.to_name().expect("encodes").to_der().expect("DER");
        let decoded = Name::from_der(&der).expect("decodes");
        let mut values = name_values(&decoded);
        let mut wanted: Vec<String> = pairs.into_iter().map(|(_, v)| v).collect();
        values.sort();
        wanted.sort();
        prop_assert_eq!(values, wanted);
    }

    #[test]
    fn ip_sans_keep_their_address_through_text_and_general_name(octets in any::<[u8; 16]>(), v4 in any::<bool>()) {
        let ip: IpAddr = if v4 {
            IpAddr::from([octets[0], octets[1], octets[2], octets[3]])
        } else {
            IpAddr::from(octets)
        };
        let san = San::Ip(ip);
        let parsed: San = san.to_string().parse().expect("its own text parses");
        prop_assert_eq!(&parsed, &san);
        match san.to_general_name().expect("encodes") {
            GeneralName::IpAddress(o) => {
                let back = match o.as_bytes().len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(o.as_bytes()).unwrap()),
                    _ => IpAddr::from(<[u8; 16]>::try_from(o.as_bytes()).unwrap()),
                };
                prop_assert_eq!(back, ip);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn dns_sans_keep_their_name_through_text_and_general_name(
        labels in proptest::collection::vec("[a-z0-9]([a-z0-9]|-[a-z0-9]){0,8}", 1..4),
        tld in "[a-z]{2,6}",
    ) {
        // (A name whose last label is all digits reads as an IP address, and "--" in a
        // label's third and fourth places is kept for A-labels: both are refused.)
        let name = format!("{}.{tld}", labels.join("."));
        let san = San::Dns(name.clone());
        let parsed: San = san.to_string().parse().expect("its own text parses");
        prop_assert_eq!(&parsed, &san);
        match san.to_general_name().expect("encodes") {
            GeneralName::DnsName(d) => prop_assert_eq!(d.as_str(), name.as_str()),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn serials_normalise_from_every_spelling(_round in 0u8..8, upper in any::<bool>(), colons in any::<bool>()) {
        let hex = serial_hex(&random_serial());
        // Positive, at most 20 octets, lower-case hex of the content octets.
        prop_assert!(hex.len() <= 40 && hex.len() % 2 == 0);
        prop_assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert!(u8::from_str_radix(&hex[..2], 16).unwrap() < 0x80 || hex.starts_with("00"));
        let mut spelt = if upper { hex.to_uppercase() } else { hex.clone() };
        if colons {
            spelt = spelt
                .as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(":");
        }
        prop_assert_eq!(normalize_serial(&spelt).expect("a serial"), hex);
    }

    #[test]
    fn the_audit_chain_notices_every_single_byte_change(
        n in 1usize..6,
        which in any::<prop::sample::Index>(),
        field in 0usize..7,
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut prev = genesis_hash();
        let mut entries = Vec::new();
        for i in 0..n {
            let seq = i as i64 + 1;
            let event = AuditEvent {
                actor: format!("ra-{i}"),
                action: "certificate.issued".into(),
                object: format!("{:032x}", i * 7919),
                request_digest: Some(format!("{:064x}", i)),
                detail: format!("{{\"profile\":\"server\",\"n\":{i}}}"),
            };
            let at = 1_790_000_000 + seq;
            let hash = entry_hash(&prev, seq, at, &event);
            entries.push(AuditEntry { seq, at, event, prev_hash: prev.clone(), hash: hash.clone() });
            prev = hash;
        }
        prop_assert_eq!(verify_chain(&entries), Ok(n));
        let e = &mut entries[which.index(n)];
        // One byte of one field, replaced by another value.
        let change = |s: &mut String| {
            let mut bytes = s.clone().into_bytes();
            let i = at.index(bytes.len().max(1)).min(bytes.len().saturating_sub(1));
            if bytes.is_empty() {
                bytes.push(byte);
            } else if bytes[i] == byte {
                bytes[i] = byte.wrapping_add(1);
            } else {
                bytes[i] = byte;
            }
            *s = String::from_utf8_lossy(&bytes).into_owned();
        };
        let before = format!("{e:?}");
        match field {
            0 => change(&mut e.event.actor),
            1 => change(&mut e.event.action),
            2 => change(&mut e.event.object),
            3 => change(&mut e.event.detail),
            4 => change(e.event.request_digest.get_or_insert_with(String::new)),
            5 => e.at ^= 1 << (byte % 40),
            _ => change(&mut e.prev_hash),
        }
        prop_assume!(format!("{e:?}") != before);
        prop_assert!(verify_chain(&entries).is_err());
    }
}

//! RA and workstation requests from the wire to the authority's types: the first byte
//! chooses Issue, Renew, Revoke or Personalize, the rest is the protobuf message (prost
//! decodes it, as tonic does) or, with the high bit set, a message built field by field
//! from the bytes (attribute types and SAN kinds picked from the valid ones, so conversion
//! gets past the first check). Every given subject attribute and SAN is either accepted or
//! refused with a violation naming its index; accepted names keep their meaning and
//! survive the trip back to a message (what a workstation sends a remote CA) unchanged.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use signet::api::convert;
use signet::api::pb;
use signet::api::token_service;
use signet::ca::{self, Violation};
use signet::hsm::address::TokenAddress;
use signet::pki::Attr;
use signet_fuzz::{assert_san_keeps_meaning, assert_subject_keeps_meaning};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let structured = kind & 0x80 != 0;
    match kind % 4 {
        0 => {
            let m = if structured {
                build_issue(rest)
            } else {
                pb::IssueRequest::decode(rest).ok()
            };
            if let Some(m) = m {
                issue(m);
            }
        }
        1 => {
            if let Ok(m) = pb::RenewRequest::decode(rest) {
                renew(m);
            }
        }
        2 => {
            if let Ok(m) = pb::RevokeRequest::decode(rest) {
                revoke(m);
            }
        }
        _ => {
            let m = if structured {
                build_issue(rest).map(|i| pb::PersonalizeRequest {
                    token_serial: i.request_id.clone(),
                    token: i.profile.clone(),
                    subject: i.subject,
                    sans: i.sans,
                    approval: i.approval,
                    key_algorithm: i.validity_years as i32,
                    ..Default::default()
                })
            } else {
                pb::PersonalizeRequest::decode(rest).ok()
            };
            if let Some(m) = m {
                personalize(m);
            }
        }
    }
});

/// An Issue message whose attribute types and SAN kinds are mostly valid ones.
fn build_issue(bytes: &[u8]) -> Option<pb::IssueRequest> {
    use pb::subject_alt_name::Name;
    let mut u = Unstructured::new(bytes);
    let mut m = pb::IssueRequest::arbitrary_fields(&mut u).ok()?;
    let n = u.int_in_range(0..=8u8).ok()?;
    for _ in 0..n {
        let r#type = if u.ratio(7, 8u8).ok()? {
            u.choose(&Attr::ALL).ok()?.short_name().to_owned()
        } else {
            String::arbitrary(&mut u).ok()?
        };
        let value = String::arbitrary(&mut u).ok()?;
        m.subject.push(pb::SubjectAttribute { r#type, value });
    }
    let n = u.int_in_range(0..=6u8).ok()?;
    for _ in 0..n {
        let value = String::arbitrary(&mut u).ok()?;
        let name = match u.int_in_range(0..=3u8).ok()? {
            0 => None,
            1 => Some(Name::Dns(value)),
            2 => Some(Name::Ip(value)),
            _ => Some(Name::Email(value)),
        };
        m.sans.push(pb::SubjectAltName { name });
    }
    Some(m)
}

trait ArbitraryFields: Sized {
    fn arbitrary_fields(u: &mut Unstructured<'_>) -> arbitrary::Result<Self>;
}

impl ArbitraryFields for pb::IssueRequest {
    fn arbitrary_fields(u: &mut Unstructured<'_>) -> arbitrary::Result<Self> {
        Ok(pb::IssueRequest {
            request_id: String::arbitrary(u)?,
            profile: String::arbitrary(u)?,
            issuer: String::arbitrary(u)?,
            csr: Vec::arbitrary(u)?,
            validity_years: u32::arbitrary(u)?,
            approval: if bool::arbitrary(u)? {
                Some(pb::Approval {
                    officer: String::arbitrary(u)?,
                    ra_reference: String::arbitrary(u)?,
                    agreement_version: String::arbitrary(u)?,
                })
            } else {
                None
            },
            validate_only: bool::arbitrary(u)?,
            ..Default::default()
        })
    }
}

fn count(bad: &[Violation], prefix: &str) -> usize {
    bad.iter().filter(|v| v.field.starts_with(prefix)).count()
}

/// The subject, SANs and approval of a message, converted; checks that every attribute and
/// name given was accepted or refused once, and that what was accepted keeps its meaning.
fn names(
    subject: &[pb::SubjectAttribute],
    sans: &[pb::SubjectAltName],
    bad: &[Violation],
    converted_subject: &signet::pki::SubjectSpec,
    converted_sans: &[signet::pki::San],
) {
    let whole_subject_refused = bad.iter().any(|v| v.field == "subject");
    if !whole_subject_refused {
        assert_eq!(
            converted_subject.attrs().len() + count(bad, "subject["),
            subject.len(),
            "each subject attribute accepted or refused once: {bad:?}"
        );
    }
    assert_eq!(
        converted_sans.len() + count(bad, "sans["),
        sans.len(),
        "each SAN accepted or refused once: {bad:?}"
    );
    for (attr, value) in converted_subject.attrs() {
        assert!(
            subject
                .iter()
                .any(|a| a.r#type == attr.short_name() && &a.value == value),
            "{attr}={value:?} was not in the request"
        );
    }
    assert_subject_keeps_meaning(converted_subject);
    for s in converted_sans {
        assert_san_keeps_meaning(s);
    }
}

fn known_field(v: &Violation) -> bool {
    [
        "subject",
        "sans",
        "approval",
        "csr",
        "reason",
        "reported_at",
        "key_algorithm",
    ]
    .iter()
    .any(|root| v.root() == *root)
}

fn issue(m: pb::IssueRequest) {
    let (req, bad) = convert::issue_request(m.clone());
    assert!(bad.iter().all(known_field), "{bad:?}");
    names(&m.subject, &m.sans, &bad, &req.subject, &req.sans);
    assert_eq!(req.csr, m.csr);
    assert_eq!(
        req.approval.officer,
        m.approval.clone().unwrap_or_default().officer
    );
    // What a workstation forwards converts again to the same request, without problems
    // in the names (the ones refused are gone).
    let again = convert::issue_message(&req);
    let (req2, bad2) = convert::issue_request(again);
    assert!(
        bad2.iter().all(|v| v.root() == "csr"),
        "the forwarded request has problems: {bad2:?}"
    );
    assert_eq!(req2.subject, req.subject);
    assert_eq!(req2.sans, req.sans);
    assert_eq!(req2.request_id, req.request_id);
    assert_eq!(req2.issuer, req.issuer);
}

fn renew(m: pb::RenewRequest) {
    let (req, bad) = convert::renew_request(m.clone());
    assert_eq!(bad.is_empty(), m.approval.is_some(), "{bad:?}");
    assert_eq!(req.csr.is_none(), m.csr.is_empty());
    serial(&req.serial);
}

fn revoke(m: pb::RevokeRequest) {
    let (req, bad) = convert::revoke_request(m.clone());
    assert!(bad.iter().all(known_field), "{bad:?}");
    let reason_ok = convert::reason(m.reason).is_ok();
    assert_eq!(reason_ok, !bad.iter().any(|v| v.field == "reason"));
    if reason_ok {
        assert_eq!(convert::reason_value(req.reason), m.reason);
    }
    if let Some(t) = &m.reported_at {
        match convert::unix_seconds("reported_at", t) {
            Ok(s) => assert_eq!(req.reported_at, Some(s)),
            Err(_) => assert_eq!(req.reported_at, None),
        }
    }
    serial(&req.serial);
}

/// A serial as the authority reads it: normalising twice changes nothing, and the result
/// is the hex of a DER INTEGER's content (at most 21 octets, minimal, positive).
fn serial(text: &str) {
    if let Ok(n) = ca::normalize_serial(text) {
        assert_eq!(ca::normalize_serial(&n).ok().as_ref(), Some(&n));
        let bytes = hex_decode(&n);
        assert!(!bytes.is_empty() && bytes.len() <= 21, "{n}");
        assert!(bytes[0] < 0x80, "{n} is negative");
        if bytes.len() > 1 {
            assert!(!(bytes[0] == 0 && bytes[1] < 0x80), "{n} is not minimal");
        }
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn personalize(m: pb::PersonalizeRequest) {
    let mut bad = Vec::new();
    let _ = token_service::key_type(m.key_algorithm);
    let subject = convert::subject_into(&m.subject, &mut bad);
    let sans = convert::sans_into(&m.sans, &mut bad);
    let _ = convert::approval_into(m.approval.clone(), &mut bad);
    names(&m.subject, &m.sans, &bad, &subject, &sans);
    if let Ok(name) = token_service::token_name(m.token_serial.clone(), m.token.clone()) {
        if let Ok(address) = TokenAddress::parse(&name.text) {
            // The workstation names the token back to the client by the address's text.
            let _ = address.to_string();
        }
    }
}

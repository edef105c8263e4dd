//! Messages to domain types and back. A field that does not convert is refused with the
//! proto path of the field (`subject[2].type`, `sans[0].ip`), so the RA's developer can find
//! it; everything that needs the CA's knowledge (profiles, validity, CSR) is left to the
//! authority, which names its fields the same way.

use std::time::{Duration, UNIX_EPOCH};

use prost_types::Timestamp;

use super::error::Refusal;
use super::pb;
use crate::ca::{self, Issued};
use crate::pki::{San, SubjectSpec};

/// A Unix time in seconds as a protobuf Timestamp.
pub fn timestamp(unix: i64) -> Timestamp {
    Timestamp {
        seconds: unix,
        nanos: 0,
    }
}

/// A protobuf Timestamp as Unix seconds (fractions dropped); refuses out-of-range values.
pub fn unix_seconds(field: &str, t: &Timestamp) -> Result<i64, Refusal> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Refusal::field(field, "nanos must be 0 to 999999999"));
    }
    // 0001-01-01 to 9999-12-31, the range of google.protobuf.Timestamp.
    if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds) {
        return Err(Refusal::field(field, "is outside years 1 to 9999"));
    }
    Ok(t.seconds)
}

/// The subject attributes, each checked on its own so an error names its index.
pub fn subject(attrs: &[pb::SubjectAttribute]) -> Result<SubjectSpec, Refusal> {
    let mut seen: Vec<&str> = Vec::with_capacity(attrs.len());
    for (i, a) in attrs.iter().enumerate() {
        if crate::pki::Attr::from_short_name(&a.r#type).is_none() {
            let known: Vec<&str> = crate::pki::Attr::ALL
                .iter()
                .map(|a| a.short_name())
                .collect();
            return Err(Refusal::field(
                format!("subject[{i}].type"),
                format!(
                    "unknown attribute type {:?} (allowed: {})",
                    a.r#type,
                    known.join(", ")
                ),
            ));
        }
        if seen.contains(&a.r#type.as_str()) {
            return Err(Refusal::field(
                format!("subject[{i}].type"),
                format!("{} is given more than once", a.r#type),
            ));
        }
        seen.push(&a.r#type);
        SubjectSpec::from_pairs([(&a.r#type, &a.value)]).map_err(|e| {
            let problem = match e {
                crate::pki::PkiError::Invalid { problem, .. } => problem,
                other => other.to_string(),
            };
            Refusal::field(format!("subject[{i}].value"), problem)
        })?;
    }
    SubjectSpec::from_pairs(attrs.iter().map(|a| (&a.r#type, &a.value)))
        .map_err(|e| Refusal::field("subject", e.to_string()))
}

/// The subject alternative names, each checked on its own.
pub fn sans(names: &[pb::SubjectAltName]) -> Result<Vec<San>, Refusal> {
    use pb::subject_alt_name::Name;
    let mut out = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let (field, san) = match &n.name {
            None => {
                return Err(Refusal::field(
                    format!("sans[{i}]"),
                    "set one of dns, ip, email",
                ));
            }
            Some(Name::Dns(d)) => (format!("sans[{i}].dns"), San::Dns(d.clone())),
            Some(Name::Email(e)) => (format!("sans[{i}].email"), San::Email(e.clone())),
            Some(Name::Ip(ip)) => {
                let field = format!("sans[{i}].ip");
                let addr = ip.parse().map_err(|_| {
                    Refusal::field(&field, format!("{ip:?} is not an IPv4 or IPv6 address"))
                })?;
                (field, San::Ip(addr))
            }
        };
        let san = san.checked(&field).map_err(|e| match e {
            crate::pki::PkiError::Invalid { field, problem } => Refusal::field(field, problem),
            other => Refusal::field(&field, other.to_string()),
        })?;
        out.push(san);
    }
    Ok(out)
}

/// The approval evidence; required.
pub fn approval(a: Option<pb::Approval>) -> Result<ca::Approval, Refusal> {
    let a = a.ok_or_else(|| Refusal::field("approval", "is required"))?;
    Ok(ca::Approval {
        officer: a.officer,
        ra_reference: a.ra_reference,
        agreement_version: a.agreement_version,
    })
}

/// An Issue message as the authority's request.
pub fn issue_request(m: pb::IssueRequest) -> Result<ca::IssueRequest, Refusal> {
    let subject = subject(&m.subject)?;
    let sans = sans(&m.sans)?;
    let approval = approval(m.approval)?;
    if m.csr.is_empty() {
        return Err(Refusal::field("csr", "is required (a DER PKCS#10 request)"));
    }
    Ok(ca::IssueRequest {
        request_id: m.request_id,
        profile: m.profile,
        issuer: Some(m.issuer).filter(|i| !i.is_empty()),
        csr: m.csr,
        subject,
        sans,
        validity_years: m.validity_years,
        approval,
    })
}

/// The answer to Issue.
pub fn issue_response(i: Issued) -> pb::IssueResponse {
    pb::IssueResponse {
        certificate: i.cert_der,
        chain: i.chain,
        serial: i.record.serial,
        not_before: Some(timestamp(i.record.not_before)),
        not_after: Some(timestamp(i.record.not_after)),
    }
}

/// A serial as the RA typed it: lower-case hex, no separators.
pub fn serial(field: &str, s: &str) -> Result<String, Refusal> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Refusal::field(field, "is required"));
    }
    if s.len() > 40 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Refusal::field(
            field,
            "must be the serial number in hex (at most 40 digits)",
        ));
    }
    Ok(s.to_ascii_lowercase())
}

/// Unix seconds of now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(t: &str, v: &str) -> pb::SubjectAttribute {
        pb::SubjectAttribute {
            r#type: t.into(),
            value: v.into(),
        }
    }

    fn field_of(r: Refusal) -> String {
        match r {
            Refusal::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn subject_errors_name_the_index() {
        let e = subject(&[attr("CN", "a"), attr("O", "b"), attr("XX", "c")]).unwrap_err();
        assert_eq!(field_of(e), "subject[2].type");
        let e = subject(&[attr("CN", "a"), attr("C", "China")]).unwrap_err();
        assert_eq!(field_of(e), "subject[1].value");
        let e = subject(&[attr("CN", "a"), attr("CN", "b")]).unwrap_err();
        assert_eq!(field_of(e), "subject[1].type");
        let s = subject(&[attr("CN", "张三"), attr("C", "CN")]).unwrap();
        assert_eq!(s.to_string(), "C=CN, CN=张三");
    }

    #[test]
    fn san_errors_name_the_index_and_kind() {
        use pb::subject_alt_name::Name;
        let e = sans(&[
            pb::SubjectAltName {
                name: Some(Name::Dns("www.example.cn".into())),
            },
            pb::SubjectAltName {
                name: Some(Name::Ip("300.1.1.1".into())),
            },
        ])
        .unwrap_err();
        assert_eq!(field_of(e), "sans[1].ip");
        let e = sans(&[pb::SubjectAltName { name: None }]).unwrap_err();
        assert_eq!(field_of(e), "sans[0]");
    }
}

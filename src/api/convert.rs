//! Messages to domain types and back. A field that does not convert is refused with the
//! proto path of the field (`subject[2].type`, `sans[0].ip`), so the RA's developer can find
//! it; everything that needs the CA's knowledge (profiles, validity, CSR) is left to the
//! authority, which names its fields the same way.

use std::collections::BTreeSet;

use prost_types::Timestamp;

use super::error::Refusal;
use super::pb;
use crate::ca::{self, CaError, Issued, Revoked, Violation};
use crate::pki::{RevocationReason, San, SubjectSpec};
use crate::store::{
    CertFilter, CertPage, CertStatus, CertificateRecord, RevocationEvent, RevocationEventKind,
};

/// A Unix time in seconds as a protobuf Timestamp.
pub fn timestamp(unix: i64) -> Timestamp {
    Timestamp {
        seconds: unix,
        nanos: 0,
    }
}

/// A protobuf Timestamp as Unix seconds (fractions dropped); refuses out-of-range values.
pub fn unix_seconds(field: &str, t: &Timestamp) -> Result<i64, Violation> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Violation::new(field, "nanos must be 0 to 999999999"));
    }
    // 0001-01-01 to 9999-12-31, the range of google.protobuf.Timestamp.
    if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds) {
        return Err(Violation::new(field, "is outside years 1 to 9999"));
    }
    Ok(t.seconds)
}

/// Refuse a request when converting it (`bad`) or the authority's own checks of its fields
/// (`checked`) found problems, naming every field at fault: the conversion's problems
/// first, then the authority's on fields whose conversion went through (a field whose
/// conversion failed was judged on an incomplete stand-in, so its problems there are left
/// out).
pub fn refuse_if(bad: Vec<Violation>, checked: Vec<Violation>) -> Result<(), Refusal> {
    let roots: BTreeSet<String> = bad.iter().map(|v| v.root().to_owned()).collect();
    let mut all = bad;
    all.extend(checked.into_iter().filter(|v| !roots.contains(v.root())));
    match CaError::from_violations(all) {
        Some(e) => Err(Refusal::Ca(e)),
        None => Ok(()),
    }
}

/// The problems of an authority's check, when it found problems with fields.
pub fn violations_of(checked: Result<(), CaError>) -> Vec<Violation> {
    checked
        .err()
        .and_then(|e| e.into_violations().ok())
        .unwrap_or_default()
}

/// The subject attributes, each checked on its own so a problem names its index; the
/// attributes that pass make up the subject, the problems go onto `bad`.
pub fn subject_into(attrs: &[pb::SubjectAttribute], bad: &mut Vec<Violation>) -> SubjectSpec {
    let mut seen: Vec<&str> = Vec::with_capacity(attrs.len());
    let mut good: Vec<(&str, &str)> = Vec::with_capacity(attrs.len());
    for (i, a) in attrs.iter().enumerate() {
        if crate::pki::Attr::from_short_name(&a.r#type).is_none() {
            let known: Vec<&str> = crate::pki::Attr::ALL
                .iter()
                .map(|a| a.short_name())
                .collect();
            bad.push(Violation::new(
                format!("subject[{i}].type"),
                format!(
                    "unknown attribute type {:?} (allowed: {})",
                    a.r#type,
                    known.join(", ")
                ),
            ));
            continue;
        }
        if seen.contains(&a.r#type.as_str()) {
            bad.push(Violation::new(
                format!("subject[{i}].type"),
                format!("{} is given more than once", a.r#type),
            ));
            continue;
        }
        seen.push(&a.r#type);
        match SubjectSpec::from_pairs([(&a.r#type, &a.value)]) {
            Ok(_) => good.push((&a.r#type, &a.value)),
            Err(e) => {
                let problem = match e {
                    crate::pki::PkiError::Invalid { problem, .. } => problem,
                    other => other.to_string(),
                };
                bad.push(Violation::new(format!("subject[{i}].value"), problem));
            }
        }
    }
    SubjectSpec::from_pairs(good).unwrap_or_else(|e| {
        bad.push(Violation::new("subject", e.to_string()));
        SubjectSpec::default()
    })
}

/// The subject attributes, refused with every problem named.
pub fn subject(attrs: &[pb::SubjectAttribute]) -> Result<SubjectSpec, Refusal> {
    let mut bad = Vec::new();
    let s = subject_into(attrs, &mut bad);
    refuse_if(bad, Vec::new())?;
    Ok(s)
}

/// The subject alternative names, each checked on its own; the names that pass are
/// returned, the problems go onto `bad`.
pub fn sans_into(names: &[pb::SubjectAltName], bad: &mut Vec<Violation>) -> Vec<San> {
    use pb::subject_alt_name::Name;
    let mut out = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let (field, san) = match &n.name {
            None => {
                bad.push(Violation::new(
                    format!("sans[{i}]"),
                    "set one of dns, ip, email",
                ));
                continue;
            }
            Some(Name::Dns(d)) => (format!("sans[{i}].dns"), San::Dns(d.clone())),
            Some(Name::Email(e)) => (format!("sans[{i}].email"), San::Email(e.clone())),
            Some(Name::Ip(ip)) => {
                let field = format!("sans[{i}].ip");
                if let Err(m) = crate::pki::text::check_chars(ip) {
                    bad.push(Violation::new(field, m));
                    continue;
                }
                match ip.parse() {
                    Ok(addr) => (field, San::Ip(addr)),
                    Err(_) => {
                        bad.push(Violation::new(
                            field,
                            format!("{ip:?} is not an IPv4 or IPv6 address"),
                        ));
                        continue;
                    }
                }
            }
        };
        match san.checked(&field) {
            Ok(san) => out.push(san),
            Err(crate::pki::PkiError::Invalid { field, problem }) => {
                bad.push(Violation::new(field, problem));
            }
            Err(other) => bad.push(Violation::new(field, other.to_string())),
        }
    }
    out
}

/// The subject alternative names, refused with every problem named.
pub fn sans(names: &[pb::SubjectAltName]) -> Result<Vec<San>, Refusal> {
    let mut bad = Vec::new();
    let s = sans_into(names, &mut bad);
    refuse_if(bad, Vec::new())?;
    Ok(s)
}

/// The approval evidence; required (a missing one stands in as empty, its problem onto
/// `bad`).
pub fn approval_into(a: Option<pb::Approval>, bad: &mut Vec<Violation>) -> ca::Approval {
    let a = a.unwrap_or_else(|| {
        bad.push(Violation::new("approval", "is required"));
        pb::Approval::default()
    });
    ca::Approval {
        officer: a.officer,
        ra_reference: a.ra_reference,
        agreement_version: a.agreement_version,
    }
}

/// An Issue message as the authority's request, and every problem the conversion found
/// (problems that need the CA's knowledge, such as profiles, validity and the CSR, are the
/// authority's to find).
pub fn issue_request(m: pb::IssueRequest) -> (ca::IssueRequest, Vec<Violation>) {
    let mut bad = Vec::new();
    let subject = subject_into(&m.subject, &mut bad);
    let sans = sans_into(&m.sans, &mut bad);
    let approval = approval_into(m.approval, &mut bad);
    if m.csr.is_empty() {
        bad.push(Violation::new("csr", "is required (a DER PKCS#10 request)"));
    }
    let req = ca::IssueRequest {
        request_id: m.request_id,
        profile: m.profile,
        issuer: Some(m.issuer).filter(|i| !i.is_empty()),
        csr: m.csr,
        subject,
        sans,
        validity_years: m.validity_years,
        approval,
    };
    (req, bad)
}

/// The authority's request as an Issue message: what a workstation sends a remote CA.
pub fn issue_message(r: &ca::IssueRequest) -> pb::IssueRequest {
    use pb::subject_alt_name::Name;
    pb::IssueRequest {
        request_id: r.request_id.clone(),
        profile: r.profile.clone(),
        issuer: r.issuer.clone().unwrap_or_default(),
        csr: r.csr.clone(),
        subject: r
            .subject
            .attrs()
            .iter()
            .map(|(a, v)| pb::SubjectAttribute {
                r#type: a.short_name().to_owned(),
                value: v.clone(),
            })
            .collect(),
        sans: r
            .sans
            .iter()
            .map(|s| pb::SubjectAltName {
                name: Some(match s {
                    San::Dns(d) => Name::Dns(d.clone()),
                    San::Email(e) => Name::Email(e.clone()),
                    San::Ip(ip) => Name::Ip(ip.to_string()),
                }),
            })
            .collect(),
        validity_years: r.validity_years,
        approval: Some(pb::Approval {
            officer: r.approval.officer.clone(),
            ra_reference: r.approval.ra_reference.clone(),
            agreement_version: r.approval.agreement_version.clone(),
        }),
        validate_only: false,
    }
}

/// The answer to Issue.
pub fn issue_response(i: Issued, validate_only: bool) -> pb::IssueResponse {
    pb::IssueResponse {
        certificate: i.cert_der,
        chain: i.chain,
        serial: i.record.serial,
        not_before: Some(timestamp(i.record.not_before)),
        not_after: Some(timestamp(i.record.not_after)),
        issuer: i.record.issuer,
        subject: i.record.subject,
        validate_only,
    }
}

/// A Renew message as the authority's request, and the conversion's problems.
pub fn renew_request(m: pb::RenewRequest) -> (ca::RenewRequest, Vec<Violation>) {
    let mut bad = Vec::new();
    let approval = approval_into(m.approval, &mut bad);
    let req = ca::RenewRequest {
        request_id: m.request_id,
        serial: m.serial,
        csr: Some(m.csr).filter(|c| !c.is_empty()),
        validity_years: m.validity_years,
        approval,
    };
    (req, bad)
}

/// The answer to Renew.
pub fn renew_response(i: Issued, validate_only: bool) -> pb::RenewResponse {
    pb::RenewResponse {
        renewed_from: i.record.renewed_from.clone().unwrap_or_default(),
        certificate: i.cert_der,
        chain: i.chain,
        serial: i.record.serial,
        not_before: Some(timestamp(i.record.not_before)),
        not_after: Some(timestamp(i.record.not_after)),
        issuer: i.record.issuer,
        subject: i.record.subject,
        validate_only,
    }
}

/// A proto reason as the RFC 5280 reason; removeFromCRL and unknown values are refused.
pub fn reason(v: i32) -> Result<RevocationReason, Violation> {
    u8::try_from(v)
        .ok()
        .and_then(RevocationReason::from_code)
        .ok_or_else(|| {
            Violation::new(
                "reason",
                format!(
                    "{v} is not a reason a revocation can give (removeFromCRL only releases a hold)"
                ),
            )
        })
}

/// The proto value of an RFC 5280 reason (the numbers are the same).
pub fn reason_value(r: RevocationReason) -> i32 {
    i32::from(r.code())
}

/// An optional timestamp field as Unix seconds; a bad one is a problem of `field` (and is
/// taken as absent).
fn optional_time(field: &str, t: Option<&Timestamp>, bad: &mut Vec<Violation>) -> Option<i64> {
    match t.map(|t| unix_seconds(field, t)) {
        Some(Err(v)) => {
            bad.push(v);
            None
        }
        Some(Ok(t)) => Some(t),
        None => None,
    }
}

/// A Revoke message as the authority's request, and the conversion's problems.
pub fn revoke_request(m: pb::RevokeRequest) -> (ca::RevokeRequest, Vec<Violation>) {
    let mut bad = Vec::new();
    let reason = reason(m.reason).unwrap_or_else(|v| {
        bad.push(v);
        RevocationReason::Unspecified
    });
    let reported_at = optional_time("reported_at", m.reported_at.as_ref(), &mut bad);
    let req = ca::RevokeRequest {
        reason,
        reported_at,
        request_id: m.request_id,
        serial: m.serial,
        comment: m.comment,
    };
    (req, bad)
}

/// The proto status of a stored status.
pub fn status(s: CertStatus) -> pb::CertificateStatus {
    match s {
        CertStatus::Pending => pb::CertificateStatus::Pending,
        CertStatus::Valid => pb::CertificateStatus::Valid,
        CertStatus::Revoked => pb::CertificateStatus::Revoked,
    }
}

/// The answer to Revoke.
pub fn revoke_response(r: Revoked) -> pb::RevokeResponse {
    pb::RevokeResponse {
        status: status(r.record.status) as i32,
        already_revoked: r.already_revoked,
        revoked_at: r
            .record
            .revocation
            .as_ref()
            .map(|v| timestamp(v.revoked_at)),
    }
}

/// A ReleaseHold message as the authority's request.
pub fn release_request(m: pb::ReleaseHoldRequest) -> ca::ReleaseHoldRequest {
    ca::ReleaseHoldRequest {
        request_id: m.request_id,
        serial: m.serial,
        comment: m.comment,
    }
}

/// The answer to ReleaseHold: the release is the last event of the certificate's history.
pub fn release_response(
    r: &CertificateRecord,
    history: &[RevocationEvent],
) -> pb::ReleaseHoldResponse {
    pb::ReleaseHoldResponse {
        status: status(r.status) as i32,
        released_at: history
            .iter()
            .rev()
            .find(|e| e.kind == RevocationEventKind::Released)
            .map(|e| timestamp(e.recorded_at)),
    }
}

/// A revocation event as the proto shows it.
pub fn revocation_event(e: RevocationEvent) -> pb::RevocationEvent {
    pb::RevocationEvent {
        kind: match e.kind {
            RevocationEventKind::Revoked => pb::RevocationEventKind::Revoked,
            RevocationEventKind::Held => pb::RevocationEventKind::Held,
            RevocationEventKind::Released => pb::RevocationEventKind::Released,
        } as i32,
        reason: e.reason.map_or(0, reason_value),
        actor: e.actor,
        request_id: e.request_id,
        recorded_at: Some(timestamp(e.recorded_at)),
        reported_at: e.reported_at.map(timestamp),
        first_published_at: e.published_at.map(timestamp),
        comment: e.comment,
    }
}

/// The answer to GetCertificate, with the certificate's revocation history.
pub fn certificate_response(
    r: CertificateRecord,
    history: Vec<RevocationEvent>,
) -> pb::GetCertificateResponse {
    let rev = r.revocation.as_ref();
    pb::GetCertificateResponse {
        first_published_at: rev.and_then(|v| v.first_published_at).map(timestamp),
        history: history.into_iter().map(revocation_event).collect(),
        certificate: r.cert_der.clone().unwrap_or_default(),
        status: status(r.status) as i32,
        reason: rev.map_or(0, |v| reason_value(v.reason)),
        revoked_at: rev.map(|v| timestamp(v.revoked_at)),
        reported_at: rev.and_then(|v| v.reported_at).map(timestamp),
        revocation_comment: rev.map(|v| v.comment.clone()).unwrap_or_default(),
        not_before: Some(timestamp(r.not_before)),
        not_after: Some(timestamp(r.not_after)),
        renewed_from: r.renewed_from.unwrap_or_default(),
        profile: r.profile,
        ra: r.ra,
        issuer: r.issuer,
        serial: r.serial,
        subject: r.subject,
        request_id: r.request_id,
    }
}

/// Most summaries per page, and the page size when none is asked for.
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

/// A ListCertificates message as a filter, page token and page size, and the conversion's
/// problems. The caller narrows the filter to the profiles the RA may see.
pub fn list_request(
    m: pb::ListCertificatesRequest,
) -> ((CertFilter, Option<String>, usize), Vec<Violation>) {
    let mut bad = Vec::new();
    let status = match pb::CertificateStatus::try_from(m.status) {
        Ok(pb::CertificateStatus::Unspecified) => None,
        Ok(pb::CertificateStatus::Pending) => Some(CertStatus::Pending),
        Ok(pb::CertificateStatus::Valid) => Some(CertStatus::Valid),
        Ok(pb::CertificateStatus::Revoked) => Some(CertStatus::Revoked),
        Err(_) => {
            bad.push(Violation::new(
                "status",
                format!("{} is not a certificate status", m.status),
            ));
            None
        }
    };
    if m.page_size > MAX_PAGE {
        bad.push(Violation::new(
            "page_size",
            format!("at most {MAX_PAGE} per page"),
        ));
    }
    let size = if m.page_size == 0 {
        DEFAULT_PAGE
    } else {
        m.page_size.min(MAX_PAGE)
    };
    let expiring_before = optional_time("expiring_before", m.expiring_before.as_ref(), &mut bad);
    let updated_since = optional_time("updated_since", m.updated_since.as_ref(), &mut bad);
    let nonempty = |s: String| Some(s).filter(|s| !s.is_empty());
    let filter = CertFilter {
        status,
        profiles: None,
        profile: nonempty(m.profile),
        ra: nonempty(m.ra),
        subject_contains: nonempty(m.subject_contains),
        expiring_before,
        issuer: None,
        updated_since,
    };
    ((filter, nonempty(m.page_token), size as usize), bad)
}

/// A listing entry.
pub fn summary(r: CertificateRecord) -> pb::CertificateSummary {
    let rev = r.revocation.as_ref();
    pb::CertificateSummary {
        reason: rev.map_or(0, |v| reason_value(v.reason)),
        reported_at: rev.and_then(|v| v.reported_at).map(timestamp),
        first_published_at: rev.and_then(|v| v.first_published_at).map(timestamp),
        status: status(r.status) as i32,
        not_before: Some(timestamp(r.not_before)),
        not_after: Some(timestamp(r.not_after)),
        revoked_at: r.revocation.as_ref().map(|v| timestamp(v.revoked_at)),
        renewed_from: r.renewed_from.unwrap_or_default(),
        serial: r.serial,
        subject: r.subject,
        profile: r.profile,
        ra: r.ra,
        issuer: r.issuer,
        updated_at: Some(timestamp(r.updated_at)),
    }
}

/// The answer to ListCertificates.
pub fn list_response(p: CertPage) -> pb::ListCertificatesResponse {
    pb::ListCertificatesResponse {
        certificates: p.records.into_iter().map(summary).collect(),
        next_page_token: p.next_page_token.unwrap_or_default(),
    }
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
        fields_of(r).remove(0)
    }

    fn fields_of(r: Refusal) -> Vec<String> {
        match r {
            Refusal::Ca(e) => match e.into_violations() {
                Ok(v) => v.into_iter().map(|v| v.field).collect(),
                Err(other) => panic!("not a field error: {other}"),
            },
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

    #[test]
    fn a_message_is_converted_whole_and_every_problem_is_named() {
        use pb::subject_alt_name::Name;
        let m = pb::IssueRequest {
            request_id: "r-1".into(),
            profile: "server".into(),
            subject: vec![
                attr("XX", "a"),
                attr("CN", "ok.example.cn"),
                attr("C", "China"),
            ],
            sans: vec![
                pb::SubjectAltName {
                    name: Some(Name::Ip("nope".into())),
                },
                pb::SubjectAltName {
                    name: Some(Name::Dns("ok.example.cn".into())),
                },
                pb::SubjectAltName { name: None },
            ],
            ..Default::default()
        };
        let (req, bad) = issue_request(m);
        let fields: Vec<&str> = bad.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "subject[0].type",
                "subject[2].value",
                "sans[0].ip",
                "sans[2]",
                "approval",
                "csr"
            ]
        );
        // What did convert is kept, for the authority to judge the rest.
        assert_eq!(req.subject.to_string(), "CN=ok.example.cn");
        assert_eq!(req.sans, [San::Dns("ok.example.cn".into())]);
    }

    #[test]
    fn the_authoritys_problems_with_fields_that_failed_to_convert_are_left_out() {
        let converted = vec![Violation::new("subject[0].type", "unknown")];
        let checked = vec![
            Violation::new("subject.CN", "is required"),
            Violation::new("validity_years", "3 is not allowed"),
        ];
        let e = refuse_if(converted, checked).unwrap_err();
        assert_eq!(fields_of(e), ["subject[0].type", "validity_years"]);
        assert!(refuse_if(Vec::new(), Vec::new()).is_ok());
    }
}

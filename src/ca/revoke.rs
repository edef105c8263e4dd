//! Revocation, hold and release: a valid certificate becomes revoked (or held, for
//! certificateHold) at once in the store, so the next status answer shows it, with the RFC
//! 5280 reason, who revoked, when the subscriber reported it and the RA's note; a held
//! certificate can be released (valid again) or revoked for good. Every step is idempotent
//! per RA request id, kept in the certificate's history and audited in the same transaction.

use serde::{Deserialize, Serialize};

use super::{Authority, CaError, MAX_REQUEST_ID, check_text, invalid, normalize_serial};
use crate::audit::AuditEvent;
use crate::pki::RevocationReason;
use crate::store::{
    CertStatus, CertificateRecord, ReleaseOutcome, ReleaseRecord, RevocationEvent, RevokeOutcome,
    RevokeRecord,
};

/// Longest comment kept with a revocation, in characters.
pub const MAX_COMMENT: usize = 1000;

/// How far ahead of the CA's clock a `reported_at` may be: RA desks' clocks drift a little,
/// and a report time a few seconds ahead is a clock, not a claim about the future.
const CLOCK_SKEW: i64 = 300;

/// An RA's request to revoke a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// Chosen by the RA; the same id always gets the same answer.
    pub request_id: String,
    /// Serial of the certificate to revoke (hex).
    pub serial: String,
    /// The RFC 5280 reason.
    pub reason: RevocationReason,
    /// When the subscriber reported it (Unix seconds); not in the future, and not before
    /// the certificate's notBefore.
    pub reported_at: Option<i64>,
    /// The RA's note (at most 1000 characters), kept as the CA's record.
    pub comment: String,
}

/// The answer to a revocation request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate as now recorded.
    pub record: CertificateRecord,
    /// The certificate had been revoked before this request; nothing changed.
    pub already_revoked: bool,
}

impl Authority {
    /// Revoke a certificate for `ra`, once per `(ra, request_id)`. `CertificateHold` puts it
    /// on hold (see [`Authority::release_hold`]); any other reason is final, also for a held
    /// certificate. Revoking a certificate already revoked for good, or holding a held one,
    /// changes nothing and says so.
    pub async fn revoke(&self, ra: &str, req: RevokeRequest) -> Result<Revoked, CaError> {
        check_text("request_id", &req.request_id, MAX_REQUEST_ID)?;
        // The operator is the CA; an RA speaks for subscribers and may not declare a CA
        // compromise.
        if ra != crate::audit::ACTOR_OPERATOR
            && let Some(why) = req.reason.ra_refusal()
        {
            return Err(invalid("reason", why));
        }
        let serial = normalize_serial(&req.serial)?;
        check_comment(&req.comment)?;
        let now = crate::clock::unix_now();
        if let Some(t) = req.reported_at {
            if t < 0 {
                return Err(invalid("reported_at", "must not be before 1970"));
            }
            if t > now + CLOCK_SKEW {
                return Err(invalid(
                    "reported_at",
                    format!(
                        "{} is in the future; give the time the subscriber reported it",
                        super::rfc3339(t)
                    ),
                ));
            }
        }
        if let Some(cert) = self.store.certificate(&serial).await? {
            check_times(&serial, cert.not_before, req.reported_at, now)?;
        }
        let digest = revoke_digest(&req, &serial)?;
        let detail = serde_json::json!({
            "request_id": req.request_id,
            "reason": req.reason.name(),
            "reason_code": req.reason.code(),
            "reported_at": req.reported_at,
            "comment": req.comment,
        });
        let held = req.reason == RevocationReason::CertificateHold;
        let audit = AuditEvent {
            actor: ra.to_owned(),
            action: if held {
                "certificate.held"
            } else {
                "certificate.revoked"
            }
            .into(),
            object: serial.clone(),
            request_digest: Some(digest.clone()),
            detail: detail.to_string(),
        };
        let rec = RevokeRecord {
            serial: serial.clone(),
            ra: ra.to_owned(),
            request_id: req.request_id.clone(),
            request_digest: digest,
            reason: req.reason,
            revoked_at: now,
            // Reported within the clock skew allowance but after our clock: the report cannot
            // have come after it was recorded.
            reported_at: req.reported_at.map(|t| t.min(now)),
            comment: req.comment.clone(),
        };
        match self.store.revoke(rec, audit).await? {
            RevokeOutcome::Revoked(record) => {
                crate::metrics::metrics().revoked(&record.issuer, req.reason.name());
                if held {
                    tracing::info!(serial = %record.serial, ra, "certificate put on hold");
                } else {
                    tracing::info!(serial = %record.serial, ra, reason = %req.reason, "certificate revoked");
                }
                self.revocations.notify_one();
                Ok(Revoked {
                    record,
                    already_revoked: false,
                })
            }
            RevokeOutcome::AlreadyRevoked(record) => Ok(Revoked {
                record,
                already_revoked: true,
            }),
            RevokeOutcome::NotIssued => Err(CaError::FailedPrecondition(format!(
                "certificate {serial} has not been issued yet (its issuance is pending), so it cannot be revoked"
            ))),
            RevokeOutcome::NotFound => Err(CaError::NotFound(format!(
                "no certificate with serial {serial}"
            ))),
            RevokeOutcome::Conflict { serial } => Err(CaError::AlreadyExists {
                ra: ra.to_owned(),
                request_id: req.request_id.clone(),
                serial,
            }),
        }
    }

    /// Take a held certificate off hold for `ra`, once per `(ra, request_id)`: it is valid
    /// again (OCSP good at once, absent from the next CRL), and the hold stays in its
    /// history. A certificate that is not on hold is refused with FAILED_PRECONDITION naming
    /// its state: only certificateHold can be released, every other reason is final.
    pub async fn release_hold(
        &self,
        ra: &str,
        req: ReleaseHoldRequest,
    ) -> Result<CertificateRecord, CaError> {
        check_text("request_id", &req.request_id, MAX_REQUEST_ID)?;
        let serial = normalize_serial(&req.serial)?;
        check_comment(&req.comment)?;
        let digest = release_digest(&req, &serial)?;
        let audit = AuditEvent {
            actor: ra.to_owned(),
            action: "certificate.released".into(),
            object: serial.clone(),
            request_digest: Some(digest.clone()),
            detail: serde_json::json!({
                "request_id": req.request_id,
                "comment": req.comment,
            })
            .to_string(),
        };
        let rec = ReleaseRecord {
            serial: serial.clone(),
            ra: ra.to_owned(),
            request_id: req.request_id.clone(),
            request_digest: digest,
            released_at: crate::clock::unix_now(),
            comment: req.comment.clone(),
        };
        match self.store.release_hold(rec, audit).await? {
            ReleaseOutcome::Released(record) => {
                tracing::info!(serial = %record.serial, ra, "certificate released from hold");
                self.revocations.notify_one();
                Ok(record)
            }
            ReleaseOutcome::NotHeld(record) => Err(CaError::FailedPrecondition(
                match (record.status, &record.revocation) {
                    (CertStatus::Revoked, Some(r)) => format!(
                        "certificate {serial} is revoked for {}, which is final; only a certificate on hold (certificateHold) can be released",
                        r.reason
                    ),
                    (CertStatus::Pending, _) => format!(
                        "certificate {serial} has not been issued yet (its issuance is pending), so it is not on hold"
                    ),
                    _ => format!(
                        "certificate {serial} is valid, not on hold; only a certificate on hold (certificateHold) can be released"
                    ),
                },
            )),
            ReleaseOutcome::NotFound => Err(CaError::NotFound(format!(
                "no certificate with serial {serial}"
            ))),
            ReleaseOutcome::Conflict { serial } => Err(CaError::AlreadyExists {
                ra: ra.to_owned(),
                request_id: req.request_id.clone(),
                serial,
            }),
        }
    }

    /// The revocation history of a certificate: holds, releases and revocations, oldest
    /// first, each with when it was recorded, reported and first published.
    pub async fn revocation_history(&self, serial: &str) -> Result<Vec<RevocationEvent>, CaError> {
        let serial = normalize_serial(serial)?;
        Ok(self.store.revocation_history(&serial).await?)
    }
}

/// A request to take a certificate off hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseHoldRequest {
    /// Chosen by the RA; the same id always gets the same answer.
    pub request_id: String,
    /// Serial of the held certificate (hex).
    pub serial: String,
    /// The RA's note (at most 1000 characters), e.g. that the token was found.
    pub comment: String,
}

/// The times of a revocation of the certificate `serial`, valid from `not_before`, requested
/// with `reported_at` while the CA's clock reads `now`: neither may be before the certificate
/// existed.
///
/// A `reported_at` before notBefore claims the certificate became invalid before it was
/// valid: bad input, refused naming the field. A clock before notBefore means the CA's clock
/// is behind the one that signed the certificate; the revocation is refused rather than dated
/// at notBefore. An auditor reads revocationDate as the moment the CA recorded the
/// revocation, taken from its clock: a clamped date would be a time nobody observed, and
/// would hide the broken clock that the CRLs, OCSP answers and audit entries of the same
/// moment also depend on. Refused, the RA retries with the same request id once the clock is
/// right, and the time recorded is then true.
fn check_times(
    serial: &str,
    not_before: i64,
    reported_at: Option<i64>,
    now: i64,
) -> Result<(), CaError> {
    if let Some(t) = reported_at
        && t < not_before
    {
        return Err(invalid(
            "reported_at",
            format!(
                "{} is before the certificate's notBefore {}; give the time the subscriber reported it, not earlier than the certificate's validity",
                super::rfc3339(t),
                super::rfc3339(not_before)
            ),
        ));
    }
    if now < not_before {
        return Err(CaError::FailedPrecondition(format!(
            "the CA's clock reads {}, before the notBefore {} of certificate {serial}: the clock is behind, and a revocation dated before the certificate's validity is not recorded; retry once the clock is right",
            super::rfc3339(now),
            super::rfc3339(not_before)
        )));
    }
    Ok(())
}

fn check_comment(comment: &str) -> Result<(), CaError> {
    let comment_len = comment.chars().count();
    if comment_len > MAX_COMMENT {
        return Err(invalid(
            "comment",
            format!("is {comment_len} characters long; at most {MAX_COMMENT} allowed"),
        ));
    }
    // A note may span lines; nothing else invisible or bidirectional (as in names).
    let text: String = comment
        .chars()
        .filter(|c| !matches!(c, '\n' | '\r' | '\t'))
        .collect();
    crate::pki::text::check_chars(&text).map_err(|m| invalid("comment", m))
}

/// SHA-256 over the canonical JSON of a release (everything but the id), domain-separated
/// from revocation digests.
fn release_digest(req: &ReleaseHoldRequest, serial: &str) -> Result<String, CaError> {
    let mut body = req.clone();
    body.request_id.clear();
    body.serial = serial.to_owned();
    super::tagged_digest(b"signet-release-v1\0", &body)
}

/// SHA-256 over the canonical JSON of the revocation (everything but the id, the serial in
/// its stored form), domain-separated from issuance and renewal digests.
fn revoke_digest(req: &RevokeRequest, serial: &str) -> Result<String, CaError> {
    let mut body = req.clone();
    body.request_id.clear();
    body.serial = serial.to_owned();
    super::tagged_digest(b"signet-revoke-v1\0", &body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_comment_may_span_lines_but_not_hide_or_reverse_text() {
        assert!(super::check_comment("lost on the train\nreported by phone\t(desk 3)").is_ok());
        for bad in [
            "key\u{202e}txt",
            "a\u{200b}b",
            "bell\u{7}",
            "private\u{e000}",
        ] {
            let e = super::check_comment(bad).unwrap_err().to_string();
            assert!(e.starts_with("comment: U+"), "{e}");
        }
    }

    use super::*;

    fn field(e: CaError) -> String {
        match e {
            CaError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn times_before_the_certificate_existed_are_refused() {
        assert!(check_times("01", 100, None, 100).is_ok());
        assert!(check_times("01", 100, Some(100), 150).is_ok());
        assert_eq!(
            field(check_times("01", 100, Some(99), 150).unwrap_err()),
            "reported_at"
        );
        match check_times("01", 100, None, 99) {
            Err(CaError::FailedPrecondition(m)) => assert!(m.contains("clock"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

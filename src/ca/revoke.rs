//! Revocation: a valid certificate becomes revoked at once in the store (so the next status
//! answer shows it), with the RFC 5280 reason, who revoked, when the subscriber reported it
//! and the RA's note; idempotent per RA request id, audited in the same transaction.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Authority, CaError, MAX_REQUEST_ID, check_text, invalid, normalize_serial, unix};
use crate::audit::AuditEvent;
use crate::pki::RevocationReason;
use crate::store::{CertificateRecord, RevokeOutcome, RevokeRecord};

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
    /// When the subscriber reported it (Unix seconds); not in the future.
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
    /// Revoke a certificate for `ra`, once per `(ra, request_id)`. Revoking an already revoked
    /// certificate changes nothing and says so; `CertificateHold` is recorded like any other
    /// reason (release comes with hold support).
    pub async fn revoke(&self, ra: &str, req: RevokeRequest) -> Result<Revoked, CaError> {
        check_text("request_id", &req.request_id, MAX_REQUEST_ID)?;
        let serial = normalize_serial(&req.serial)?;
        let comment_len = req.comment.chars().count();
        if comment_len > MAX_COMMENT {
            return Err(invalid(
                "comment",
                format!("is {comment_len} characters long; at most {MAX_COMMENT} allowed"),
            ));
        }
        if req
            .comment
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(invalid("comment", "contains control characters"));
        }
        let now = unix(SystemTime::now());
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
        let digest = revoke_digest(&req, &serial)?;
        let detail = serde_json::json!({
            "request_id": req.request_id,
            "reason": req.reason.name(),
            "reason_code": req.reason.code(),
            "reported_at": req.reported_at,
            "comment": req.comment,
        });
        let audit = AuditEvent {
            actor: ra.to_owned(),
            action: "certificate.revoked".into(),
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
            reported_at: req.reported_at,
            comment: req.comment.clone(),
        };
        match self.store.revoke(rec, audit).await? {
            RevokeOutcome::Revoked(record) => {
                tracing::info!(serial = %record.serial, ra, reason = %req.reason, "certificate revoked");
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
}

/// SHA-256 over the canonical JSON of the revocation (everything but the id, the serial in
/// its stored form), domain-separated from issuance and renewal digests.
fn revoke_digest(req: &RevokeRequest, serial: &str) -> Result<String, CaError> {
    let mut body = req.clone();
    body.request_id.clear();
    body.serial = serial.to_owned();
    let json = serde_json::to_vec(&body).map_err(|e| CaError::Internal(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(b"signet-revoke-v1\0");
    h.update(json);
    Ok(hex::encode(h.finalize()))
}

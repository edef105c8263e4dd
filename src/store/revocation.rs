//! Revocation, hold and release: the requests, their outcomes, the history of events kept
//! per certificate, and what the CRL publisher watches.

use super::certificates::CertificateRecord;
use super::error::StoreError;
use crate::pki::RevocationReason;

/// What a revocation event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationEventKind {
    /// Revoked for good (any reason but certificateHold).
    Revoked,
    /// Put on hold (certificateHold).
    Held,
    /// Taken off hold: valid again.
    Released,
}

impl RevocationEventKind {
    /// The name stored in the database and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationEventKind::Revoked => "revoked",
            RevocationEventKind::Held => "held",
            RevocationEventKind::Released => "released",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Result<RevocationEventKind, StoreError> {
        match s {
            "revoked" => Ok(RevocationEventKind::Revoked),
            "held" => Ok(RevocationEventKind::Held),
            "released" => Ok(RevocationEventKind::Released),
            other => Err(StoreError::Corrupt(format!(
                "unknown revocation event {other:?}"
            ))),
        }
    }
}

/// One step in a certificate's revocation history (a hold, its release, a revocation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEvent {
    /// What happened.
    pub kind: RevocationEventKind,
    /// The reason given (`None` for a release).
    pub reason: Option<RevocationReason>,
    /// The RA (or `operator`) that asked.
    pub actor: String,
    /// Its request id.
    pub request_id: String,
    /// When it was recorded, Unix seconds.
    pub recorded_at: i64,
    /// When the subscriber reported it, Unix seconds.
    pub reported_at: Option<i64>,
    /// When a published CRL first showed it, Unix seconds (revocations and holds).
    pub published_at: Option<i64>,
    /// The note kept with it.
    pub comment: String,
}

/// A request to take a certificate off hold, as the store records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseRecord {
    /// The held certificate.
    pub serial: String,
    /// The RA asking.
    pub ra: String,
    /// The RA's request id; unique per RA among release requests.
    pub request_id: String,
    /// SHA-256 (hex) of the canonical request; a retry must match it.
    pub request_digest: String,
    /// When the release takes effect, Unix seconds.
    pub released_at: i64,
    /// The RA's note.
    pub comment: String,
}

/// What `Store::release_hold` found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The certificate was on hold and is valid again (also on a retry of that request).
    Released(CertificateRecord),
    /// The certificate is not on hold (valid, pending, or revoked for a final reason);
    /// nothing changed.
    NotHeld(CertificateRecord),
    /// No certificate has this serial.
    NotFound,
    /// The RA used this request id for a different release request (of `serial`).
    Conflict {
        /// The serial the first request named.
        serial: String,
    },
}

/// A revocation no published CRL lists yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpublishedRevocation {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// The issuer's configured name.
    pub issuer: String,
    /// When it was recorded, Unix seconds.
    pub revoked_at: i64,
}

/// What the CRL publisher polls: has anything been revoked, held or released since it last
/// looked (possibly by another process), and which revocations still wait for a CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationWatch {
    /// The sequence number of the latest revocation event (0 when there is none).
    pub last_event: i64,
    /// Revocations of unexpired certificates that no published CRL lists yet, oldest first.
    pub unpublished: Vec<UnpublishedRevocation>,
}

/// A revocation request, as the store records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokeRecord {
    /// The certificate to revoke.
    pub serial: String,
    /// The RA asking.
    pub ra: String,
    /// The RA's request id; unique per RA among revocation requests.
    pub request_id: String,
    /// SHA-256 (hex) of the canonical request; a retry must match it.
    pub request_digest: String,
    /// The reason.
    pub reason: RevocationReason,
    /// When the revocation takes effect, Unix seconds.
    pub revoked_at: i64,
    /// When the subscriber reported it, Unix seconds.
    pub reported_at: Option<i64>,
    /// The RA's note.
    pub comment: String,
}

/// What `Store::revoke` found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The certificate was valid and is now revoked (also on a retry of that request).
    Revoked(CertificateRecord),
    /// The certificate had already been revoked; nothing changed.
    AlreadyRevoked(CertificateRecord),
    /// The certificate is still pending: it was never issued, so there is nothing to revoke.
    NotIssued,
    /// No certificate has this serial.
    NotFound,
    /// The RA used this request id for a different revocation request (of `serial`).
    Conflict {
        /// The serial the first request named.
        serial: String,
    },
}

//! Certificate records: their life-cycle state, how they are listed, and what starting an
//! issuance found.

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::pki::RevocationReason;

/// Life-cycle state of a certificate record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    /// Serial drawn and TBS recorded; not yet signed and committed.
    Pending,
    /// Signed and committed.
    Valid,
    /// Revoked.
    Revoked,
}

impl CertStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Pending => "pending",
            CertStatus::Valid => "valid",
            CertStatus::Revoked => "revoked",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Result<CertStatus, StoreError> {
        match s {
            "pending" => Ok(CertStatus::Pending),
            "valid" => Ok(CertStatus::Valid),
            "revoked" => Ok(CertStatus::Revoked),
            other => Err(StoreError::Corrupt(format!(
                "unknown certificate status {other:?}"
            ))),
        }
    }
}

/// A certificate and everything known about how it came to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Serial number, lower-case hex of the DER content octets.
    pub serial: String,
    /// The issuer's configured name.
    pub issuer: String,
    /// The RA that asked for it (`operator` for local issuance).
    pub ra: String,
    /// The RA's request id; unique per RA.
    pub request_id: String,
    /// SHA-256 (hex) of the canonical request; a retry must match it.
    pub request_digest: String,
    /// Profile name.
    pub profile: String,
    /// Subject as text (RFC 4514-like, for listing and search).
    pub subject: String,
    /// The full request as the RA sent it (subject, SANs, approval), JSON.
    pub request_json: String,
    /// The CSR, DER.
    pub csr_der: Vec<u8>,
    /// The TBSCertificate to sign, DER, while the record is pending; empty once the
    /// certificate is committed (it is inside the certificate, which the store keeps
    /// instead of both).
    pub tbs_der: Vec<u8>,
    /// The signed certificate, DER; `None` while pending.
    pub cert_der: Option<Vec<u8>>,
    /// State.
    pub status: CertStatus,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// When the pending row was written, Unix seconds.
    pub created_at: i64,
    /// When the certificate was committed, Unix seconds.
    pub issued_at: Option<i64>,
    /// Serial of the certificate this one renews; `None` for a first issuance.
    pub renewed_from: Option<String>,
    /// How and why it was revoked; `None` unless the status is revoked.
    pub revocation: Option<RevocationInfo>,
    /// When the record last changed (issued, revoked, held, released, first published in a
    /// CRL), Unix seconds; the store sets it.
    pub updated_at: i64,
}

/// The revocation of a certificate as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationInfo {
    /// The RFC 5280 reason.
    pub reason: RevocationReason,
    /// When the CA recorded the revocation (the CRL entry's revocationDate), Unix seconds.
    pub revoked_at: i64,
    /// When the subscriber reported it (e.g. the suspected key compromise), Unix seconds.
    pub reported_at: Option<i64>,
    /// The RA's free-text note, kept as the CA's record.
    pub comment: String,
    /// The RA (or `operator`) that revoked it.
    pub revoked_by: String,
    /// When the first published CRL listing this revocation was made (its thisUpdate), Unix
    /// seconds; `None` until a CRL lists it.
    pub first_published_at: Option<i64>,
}

/// Which certificates a listing returns. Every field narrows it; the default lists every
/// issued (valid or revoked) certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertFilter {
    /// Only this status. `None` means valid and revoked; pending records are listed only when
    /// asked for explicitly.
    pub status: Option<CertStatus>,
    /// Only these profiles (the profiles a caller may see); `None` means all.
    pub profiles: Option<Vec<String>>,
    /// Only this profile.
    pub profile: Option<String>,
    /// Only certificates this RA asked for.
    pub ra: Option<String>,
    /// Only subjects containing this text (a plain, case-sensitive substring).
    pub subject_contains: Option<String>,
    /// Only certificates whose not-after is before this Unix time.
    pub expiring_before: Option<i64>,
    /// Only certificates of this issuer.
    pub issuer: Option<String>,
    /// Only records changed at or after this Unix time, listed in the order they changed
    /// (`updated_at`, then serial) instead of by serial.
    pub updated_since: Option<i64>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPage {
    /// The records, in serial order.
    pub records: Vec<CertificateRecord>,
    /// Pass this to get the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// The largest page a listing returns.
pub const MAX_PAGE_SIZE: usize = 1000;

/// What `Store::begin_issuance` found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginOutcome {
    /// A new pending record was written; sign its TBS.
    Started(CertificateRecord),
    /// The same request was seen before and is still pending (a crash or failure between
    /// recording and committing): sign the stored TBS again.
    Resume(CertificateRecord),
    /// The same request was already completed: answer with the stored certificate.
    Done(CertificateRecord),
    /// The RA used this request id for a different request.
    Conflict(CertificateRecord),
    /// The drawn serial is taken (astronomically rare with 127 random bits): draw another.
    SerialTaken,
}

//! Durable records: the CA hierarchy the ceremony made, every certificate with the request
//! that caused it, and the audit log. The [`Store`] trait speaks in CA terms only, so a
//! PostgreSQL implementation can replace SQLite without touching its callers.

pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEntry, AuditEvent, Checkpoint};
use crate::pki::RevocationReason;

pub use sqlite::SqliteStore;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation; safe to retry later.
    #[error("the store is unavailable while {context}: {message}")]
    Unavailable {
        /// What signet was doing.
        context: &'static str,
        /// The database's message.
        message: String,
    },
    /// A unique key already exists (a CA key label, an issuer name).
    #[error("{what} already exists in the store")]
    Duplicate {
        /// What was duplicated.
        what: String,
    },
    /// The row to update is not there or not in the expected state.
    #[error("{0}")]
    NotFound(String),
    /// Stored data that does not read back as written (a bug or tampering).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A listing's page token was not one this store handed out.
    #[error("invalid page token: {0}")]
    InvalidPageToken(String),
}

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

/// A key the ceremony generated in the HSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaKeyRecord {
    /// CKA_LABEL.
    pub label: String,
    /// Key type name (`p384`, `rsa2048`, ...).
    pub key_type: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// Unix time of generation.
    pub created_at: i64,
}

/// A CA certificate the ceremony made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerRecord {
    /// The issuer's configured name.
    pub name: String,
    /// The issuer that signed it; `None` for the root.
    pub parent: Option<String>,
    /// CKA_LABEL of its key.
    pub key_label: String,
    /// Signature algorithm name it signs with.
    pub signature: String,
    /// Serial (hex).
    pub serial: String,
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// Unix time of creation.
    pub created_at: i64,
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
    /// The TBSCertificate that is (or was) signed, DER.
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

/// What [`Store::release_hold`] found or did.
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

/// What [`Store::revoke`] found or did.
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

/// A CRL as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlRecord {
    /// The issuer's configured name.
    pub issuer: String,
    /// Its cRLNumber.
    pub number: u64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// The signed CRL, DER.
    pub der: Vec<u8>,
}

/// A revoked, unexpired certificate as a CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlRevocation {
    /// Serial number, lower-case hex of the DER content octets.
    pub serial: String,
    /// When the CA recorded the revocation, Unix seconds.
    pub revoked_at: i64,
    /// The RFC 5280 reason.
    pub reason: RevocationReason,
    /// When the subscriber reported it, Unix seconds.
    pub reported_at: Option<i64>,
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

/// What [`Store::begin_issuance`] found or did.
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

/// How far the personalisation of a token got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenJobState {
    /// The key pair is on the token and the CSR is made; the CA has not answered yet.
    Generated,
    /// The CA issued the certificate; it may not be on the token yet.
    Issued,
    /// Certificate and chain are on the token and the pair was proved to work.
    Written,
    /// The CA refused; the key pair was destroyed. The request id may be used again.
    Abandoned,
}

impl TokenJobState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenJobState::Generated => "generated",
            TokenJobState::Issued => "issued",
            TokenJobState::Written => "written",
            TokenJobState::Abandoned => "abandoned",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Result<TokenJobState, StoreError> {
        match s {
            "generated" => Ok(TokenJobState::Generated),
            "issued" => Ok(TokenJobState::Issued),
            "written" => Ok(TokenJobState::Written),
            "abandoned" => Ok(TokenJobState::Abandoned),
            other => Err(StoreError::Corrupt(format!(
                "unknown token job state {other:?}"
            ))),
        }
    }
}

/// The journal entry of one personalisation request: enough to finish it after a failure
/// with the identical request (same CSR bytes), so the CA answers with the same certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenJob {
    /// The workstation's request id, also the CA request id.
    pub request_id: String,
    /// The token's serial number.
    pub token_serial: String,
    /// CKA_LABEL of key pair and certificate.
    pub label: String,
    /// CKA_ID of key pair and certificate (SHA-1 of the public key).
    pub key_id: Vec<u8>,
    /// Key type name (`p256`, `rsa2048`, ...).
    pub key_type: String,
    /// SHA-256 (hex) of the personalisation request (never the PIN); a retry must match.
    pub request_digest: String,
    /// The CSR as sent to the CA, DER.
    pub csr_der: Vec<u8>,
    /// How far it got.
    pub state: TokenJobState,
    /// The issued certificate, DER, once the CA answered.
    pub cert_der: Option<Vec<u8>>,
    /// The CA certificates of the chain, DER, issuing CA first.
    pub chain_der: Vec<Vec<u8>>,
    /// Why it was abandoned, or empty.
    pub detail: String,
    /// When the entry was first written, Unix seconds.
    pub created_at: i64,
    /// When it last changed, Unix seconds.
    pub updated_at: i64,
}

/// Durable storage for a CA.
#[async_trait]
pub trait Store: Send + Sync {
    /// Record a key the ceremony generated. Fails with `Duplicate` if the label is known.
    async fn record_ca_key(&self, key: CaKeyRecord, audit: AuditEvent) -> Result<(), StoreError>;

    /// The recorded CA key with this label.
    async fn ca_key(&self, label: &str) -> Result<Option<CaKeyRecord>, StoreError>;

    /// Record a CA certificate. Fails with `Duplicate` if the issuer name is known.
    async fn record_issuer(
        &self,
        issuer: IssuerRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError>;

    /// Every recorded issuer, in creation order.
    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError>;

    /// Step 4-5 of issuance, atomically: look up `(ra, request_id)`; if unseen, insert the
    /// pending record (serial and TBS written before anything is signed).
    async fn begin_issuance(&self, pending: CertificateRecord) -> Result<BeginOutcome, StoreError>;

    /// Step 7: store the signed certificate, mark the record valid and append the audit
    /// entry, in one durable transaction. The record must be pending.
    async fn complete_issuance(
        &self,
        serial: &str,
        cert_der: &[u8],
        issued_at: i64,
        audit: AuditEvent,
    ) -> Result<CertificateRecord, StoreError>;

    /// The certificate with this serial.
    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError>;

    /// The certificate an RA's request id produced.
    async fn certificate_by_request(
        &self,
        ra: &str,
        request_id: &str,
    ) -> Result<Option<CertificateRecord>, StoreError>;

    /// Revoke a certificate, idempotently per `(ra, request_id)`, in one transaction: a
    /// retry with the same digest gets the first answer again, a different request under the
    /// same id gets `Conflict`. A valid certificate becomes revoked (or held, for
    /// certificateHold), a held one may be revoked for good with another reason; then a
    /// revocation event and `audit` are appended. Any other revoked certificate is left
    /// exactly as it was (and no audit entry is written).
    async fn revoke(
        &self,
        rev: RevokeRecord,
        audit: AuditEvent,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Take a held certificate off hold, idempotently per `(ra, request_id)`, in one
    /// transaction: the certificate is valid again, the hold stays in its history with when
    /// it was first published, and a release event and `audit` are appended. A certificate
    /// that is not on hold is left as it was (`NotHeld`).
    async fn release_hold(
        &self,
        rel: ReleaseRecord,
        audit: AuditEvent,
    ) -> Result<ReleaseOutcome, StoreError>;

    /// The revocation history of a certificate (holds, releases, revocations), oldest first.
    async fn revocation_history(&self, serial: &str) -> Result<Vec<RevocationEvent>, StoreError>;

    /// The latest revocation event and the revocations of certificates unexpired at `at`
    /// that no published CRL lists yet. Cheap enough to poll every few seconds.
    async fn revocation_watch(&self, at: i64) -> Result<RevocationWatch, StoreError>;

    /// One page of certificates matching `filter`, in serial order. Pages are keyed by serial,
    /// so paging is stable while certificates are added: every record that exists throughout
    /// is returned exactly once. `page_size` is clamped to 1..=[`MAX_PAGE_SIZE`]; a token
    /// this store did not hand out is `InvalidPageToken`.
    async fn list_certificates(
        &self,
        filter: CertFilter,
        page_token: Option<String>,
        page_size: usize,
    ) -> Result<CertPage, StoreError>;

    /// The number of certificate records (any status).
    async fn count_certificates(&self) -> Result<u64, StoreError>;

    /// Reserve the next cRLNumber of `issuer`: larger than every number handed out before,
    /// durably, so a number is never used twice even if the CRL it was drawn for is never
    /// recorded (a failed signature, a crash) or two processes publish at once.
    async fn next_crl_number(&self, issuer: &str) -> Result<u64, StoreError>;

    /// Record a published CRL and, in the same transaction, note for each of `serials` (the
    /// certificates it lists) when it first appeared in a CRL and append `audit` (its
    /// `crl.signed` entry). The number must have been reserved with
    /// [`Store::next_crl_number`].
    async fn record_crl(
        &self,
        crl: CrlRecord,
        serials: Vec<String>,
        audit: AuditEvent,
    ) -> Result<(), StoreError>;

    /// The CRL of `issuer` with the largest number.
    async fn latest_crl(&self, issuer: &str) -> Result<Option<CrlRecord>, StoreError>;

    /// The certificates of `issuer` that are revoked and not expired at `at` (Unix seconds),
    /// in serial order.
    async fn revoked_for_crl(
        &self,
        issuer: &str,
        at: i64,
    ) -> Result<Vec<CrlRevocation>, StoreError>;

    /// The personalisation journal entry of this request id.
    async fn token_job(&self, request_id: &str) -> Result<Option<TokenJob>, StoreError>;

    /// Write (insert or replace) a personalisation journal entry and, in the same
    /// transaction, append `audit` if given.
    async fn save_token_job(
        &self,
        job: TokenJob,
        audit: Option<AuditEvent>,
    ) -> Result<(), StoreError>;

    /// How many wrong user PINs were entered at this token since the last good one.
    async fn pin_failures(&self, token_serial: &str) -> Result<u32, StoreError>;

    /// Count one more wrong user PIN at this token; returns the new count.
    async fn record_pin_failure(&self, token_serial: &str) -> Result<u32, StoreError>;

    /// Forget the wrong-PIN count of this token (a good PIN, an unblock) and append `audit`
    /// in the same transaction, if given.
    async fn reset_pin_failures(
        &self,
        token_serial: &str,
        audit: Option<AuditEvent>,
    ) -> Result<(), StoreError>;

    /// Append an audit entry on its own (events without another state change).
    async fn append_audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError>;

    /// Audit entries with `seq >= from`, at most `limit`, in order.
    async fn audit_entries(&self, from: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// The newest audit entry.
    async fn last_audit_entry(&self) -> Result<Option<AuditEntry>, StoreError>;

    /// The sequence number of the first audit entry whose object is `object`.
    async fn first_audit_seq_for(&self, object: &str) -> Result<Option<i64>, StoreError>;

    /// Record a signed checkpoint. One per covered entry: a second for the same seq is
    /// `Duplicate`.
    async fn record_checkpoint(&self, checkpoint: Checkpoint) -> Result<(), StoreError>;

    /// Every checkpoint, in seq order.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// The checkpoint covering the newest entry, if any.
    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// Reserve `count` timestamp serial numbers, durably: the first of a block that is never
    /// handed out again, whatever happens to this process. Also raises the recorded time of
    /// the TSA's latest token to `now_ms` (Unix milliseconds) if that is later.
    async fn reserve_tsa_serials(&self, count: u64, now_ms: i64) -> Result<u64, StoreError>;

    /// Raise the recorded time of the TSA's latest token to `at_ms` if that is later (at
    /// shutdown, so the next start can tell whether the clock went backwards).
    async fn note_tsa_time(&self, at_ms: i64) -> Result<(), StoreError>;

    /// The recorded time of the TSA's latest token, Unix milliseconds.
    async fn tsa_last_time(&self) -> Result<Option<i64>, StoreError>;
}

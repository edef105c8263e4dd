//! Durable records: the CA hierarchy the ceremony made, every certificate with the request
//! that caused it, and the audit log. The [`Store`] trait speaks in CA terms only, so a
//! PostgreSQL implementation can replace SQLite without touching its callers.
//!
//! The record types live in one file per concern (`certificates`, `revocation`, `crl`,
//! `keys`, `tokens`) and [`StoreError`] in `error`; each backend has a directory of its own
//! laid out the same way, with [`sqlite`] the first.

mod certificates;
mod crl;
mod error;
mod keys;
mod revocation;
pub mod sqlite;
mod tokens;

use async_trait::async_trait;

use crate::audit::{AuditEntry, AuditEvent, Checkpoint};

pub use certificates::{
    BeginOutcome, CertFilter, CertPage, CertStatus, CertificateRecord, MAX_PAGE_SIZE,
    RevocationInfo,
};
pub use crl::{CrlRecord, CrlRevocation};
pub use error::StoreError;
pub use keys::{CaKeyRecord, IssuerRecord};
pub use revocation::{
    ReleaseOutcome, ReleaseRecord, RevocationEvent, RevocationEventKind, RevocationWatch,
    RevokeOutcome, RevokeRecord, UnpublishedRevocation,
};
pub use sqlite::SqliteStore;
pub use tokens::{TokenInit, TokenInitState, TokenJob, TokenJobState};

/// Durable storage for a CA.
#[async_trait]
pub trait Store: Send + Sync {
    /// Whether the store can write now: fails (as `Unavailable`) while writes fail, as they
    /// do when the file system is full or the disk returns I/O errors. Cheap while writes
    /// succeed; while they fail, and after a quiet spell, it tries a small durable write of
    /// its own, so it also notices when writing works again.
    async fn probe_write(&self) -> Result<(), StoreError>;

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

    /// The initialisation journal entry of this request id.
    async fn token_init(&self, request_id: &str) -> Result<Option<TokenInit>, StoreError>;

    /// Write (insert or replace) an initialisation journal entry and, in the same
    /// transaction, append `audit` if given.
    async fn save_token_init(
        &self,
        init: TokenInit,
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
    /// handed out again, whatever happens to this process. Also raises the TSA's time
    /// ceiling (see [`Store::note_tsa_time`]) to `ceiling_ms` if that is later, in the same
    /// write.
    async fn reserve_tsa_serials(&self, count: u64, ceiling_ms: i64) -> Result<u64, StoreError>;

    /// Raise the TSA's time ceiling to `ceiling_ms` (Unix milliseconds) if that is later,
    /// durably. The TSA writes it ahead of use, before it stamps a token later than the
    /// ceiling it wrote last, so no token is ever later than the stored ceiling: after a
    /// crash, the ceiling is the time the clock must reach before the TSA signs again.
    async fn note_tsa_time(&self, ceiling_ms: i64) -> Result<(), StoreError>;

    /// At a graceful stop: lower the TSA's time ceiling from `ceiling_ms` (the one this
    /// process wrote last) to `latest_ms`, the time of its latest token, so the next start
    /// need not wait for the clock to pass a ceiling no token reached. Changes nothing and
    /// returns false when the stored ceiling is no longer `ceiling_ms` (another process
    /// raised it) or `latest_ms` is not below it.
    async fn settle_tsa_time(&self, ceiling_ms: i64, latest_ms: i64) -> Result<bool, StoreError>;

    /// The TSA's time ceiling, Unix milliseconds: no token issued so far is later.
    async fn tsa_last_time(&self) -> Result<Option<i64>, StoreError>;
}

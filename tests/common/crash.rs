//! A store that fails to commit, as if the process died between the HSM signing and the
//! commit: what a retry with the same request id must recover from.

#![allow(dead_code)]

use async_trait::async_trait;
use signet::audit::{AuditEntry, AuditEvent, Checkpoint};
use signet::store::{
    BeginOutcome, CaKeyRecord, CertFilter, CertPage, CertificateRecord, CrlRecord, CrlRevocation,
    IssuerRecord, ReleaseOutcome, ReleaseRecord, RevocationEvent, RevocationWatch, RevokeOutcome,
    RevokeRecord, SqliteStore, Store, StoreError, TokenInit, TokenJob,
};

/// A store that fails to commit, as if the process died between signing and commit.
pub struct CrashBeforeCommit(pub SqliteStore);

#[async_trait]
impl Store for CrashBeforeCommit {
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.0.probe_write().await
    }
    async fn record_ca_key(&self, k: CaKeyRecord, a: AuditEvent) -> Result<(), StoreError> {
        self.0.record_ca_key(k, a).await
    }
    async fn ca_key(&self, l: &str) -> Result<Option<CaKeyRecord>, StoreError> {
        self.0.ca_key(l).await
    }
    async fn record_issuer(&self, i: IssuerRecord, a: AuditEvent) -> Result<(), StoreError> {
        self.0.record_issuer(i, a).await
    }
    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        self.0.issuers().await
    }
    async fn begin_issuance(&self, p: CertificateRecord) -> Result<BeginOutcome, StoreError> {
        self.0.begin_issuance(p).await
    }
    async fn complete_issuance(
        &self,
        _: &str,
        _: &[u8],
        _: i64,
        _: AuditEvent,
    ) -> Result<CertificateRecord, StoreError> {
        Err(StoreError::Unavailable {
            context: "committing a certificate",
            message: "simulated crash".into(),
        })
    }
    async fn certificate(&self, s: &str) -> Result<Option<CertificateRecord>, StoreError> {
        self.0.certificate(s).await
    }
    async fn certificate_by_request(
        &self,
        ra: &str,
        id: &str,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        self.0.certificate_by_request(ra, id).await
    }
    async fn revoke(&self, r: RevokeRecord, a: AuditEvent) -> Result<RevokeOutcome, StoreError> {
        self.0.revoke(r, a).await
    }
    async fn release_hold(
        &self,
        r: ReleaseRecord,
        a: AuditEvent,
    ) -> Result<ReleaseOutcome, StoreError> {
        self.0.release_hold(r, a).await
    }
    async fn revocation_history(&self, s: &str) -> Result<Vec<RevocationEvent>, StoreError> {
        self.0.revocation_history(s).await
    }
    async fn revocation_watch(&self, at: i64) -> Result<RevocationWatch, StoreError> {
        self.0.revocation_watch(at).await
    }
    async fn list_certificates(
        &self,
        f: CertFilter,
        t: Option<String>,
        n: usize,
    ) -> Result<CertPage, StoreError> {
        self.0.list_certificates(f, t, n).await
    }
    async fn count_certificates(&self) -> Result<u64, StoreError> {
        self.0.count_certificates().await
    }
    async fn next_crl_number(&self, i: &str) -> Result<u64, StoreError> {
        self.0.next_crl_number(i).await
    }
    async fn record_crl(
        &self,
        c: CrlRecord,
        s: Vec<String>,
        a: AuditEvent,
    ) -> Result<(), StoreError> {
        self.0.record_crl(c, s, a).await
    }
    async fn latest_crl(&self, i: &str) -> Result<Option<CrlRecord>, StoreError> {
        self.0.latest_crl(i).await
    }
    async fn revoked_for_crl(&self, i: &str, at: i64) -> Result<Vec<CrlRevocation>, StoreError> {
        self.0.revoked_for_crl(i, at).await
    }
    async fn append_audit(&self, e: AuditEvent) -> Result<AuditEntry, StoreError> {
        self.0.append_audit(e).await
    }
    async fn audit_entries(&self, f: i64, l: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.0.audit_entries(f, l).await
    }
    async fn token_job(&self, r: &str) -> Result<Option<TokenJob>, StoreError> {
        self.0.token_job(r).await
    }
    async fn save_token_job(&self, j: TokenJob, a: Option<AuditEvent>) -> Result<(), StoreError> {
        self.0.save_token_job(j, a).await
    }
    async fn token_init(&self, r: &str) -> Result<Option<TokenInit>, StoreError> {
        self.0.token_init(r).await
    }
    async fn save_token_init(&self, i: TokenInit, a: Option<AuditEvent>) -> Result<(), StoreError> {
        self.0.save_token_init(i, a).await
    }
    async fn pin_failures(&self, t: &str) -> Result<u32, StoreError> {
        self.0.pin_failures(t).await
    }
    async fn record_pin_failure(&self, t: &str) -> Result<u32, StoreError> {
        self.0.record_pin_failure(t).await
    }
    async fn reset_pin_failures(&self, t: &str, a: Option<AuditEvent>) -> Result<(), StoreError> {
        self.0.reset_pin_failures(t, a).await
    }
    async fn last_audit_entry(&self) -> Result<Option<AuditEntry>, StoreError> {
        self.0.last_audit_entry().await
    }
    async fn first_audit_seq_for(&self, o: &str) -> Result<Option<i64>, StoreError> {
        self.0.first_audit_seq_for(o).await
    }
    async fn record_checkpoint(&self, c: Checkpoint) -> Result<(), StoreError> {
        self.0.record_checkpoint(c).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.0.checkpoints().await
    }
    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.0.last_checkpoint().await
    }
    async fn reserve_tsa_serials(&self, n: u64, t: i64) -> Result<u64, StoreError> {
        self.0.reserve_tsa_serials(n, t).await
    }
    async fn note_tsa_time(&self, t: i64) -> Result<(), StoreError> {
        self.0.note_tsa_time(t).await
    }
    async fn settle_tsa_time(&self, c: i64, t: i64) -> Result<bool, StoreError> {
        self.0.settle_tsa_time(c, t).await
    }
    async fn tsa_last_time(&self) -> Result<Option<i64>, StoreError> {
        self.0.tsa_last_time().await
    }
}

//! Stores that fail one step as if the process died there, everything else going to SQLite:
//! the commit of an issued certificate (between signing and recording), or the first write
//! of one token-initialisation state (between C_InitToken and the journal entry that records
//! it, say).

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use signet::audit::{AuditEntry, AuditEvent, Checkpoint};
use signet::store::{
    BeginOutcome, CaKeyRecord, CertFilter, CertPage, CertificateRecord, CrlRecord, CrlRevocation,
    IssuerRecord, ReleaseOutcome, ReleaseRecord, RevocationEvent, RevocationWatch, RevokeOutcome,
    RevokeRecord, SqliteStore, Store, StoreError, TokenInit, TokenInitState, TokenJob,
};

/// Which step fails.
pub enum Fault {
    /// Every `complete_issuance`: the certificate was signed but is never recorded.
    BeforeCommit,
    /// The first `save_token_init` of an entry in this state.
    InitJournal(TokenInitState, AtomicBool),
}

/// A store that fails at its [`Fault`].
pub struct Faulty {
    /// The real store.
    pub inner: SqliteStore,
    /// Where it fails.
    pub fault: Fault,
}

impl Faulty {
    /// Fails every commit of an issued certificate.
    pub fn before_commit(inner: SqliteStore) -> Faulty {
        Faulty {
            inner,
            fault: Fault::BeforeCommit,
        }
    }

    /// Fails the first journal write of a token initialisation in `state`.
    pub fn init_journal(inner: SqliteStore, state: TokenInitState) -> Faulty {
        Faulty {
            inner,
            fault: Fault::InitJournal(state, AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl Store for Faulty {
    async fn probe_write(&self) -> Result<(), StoreError> {
        self.inner.probe_write().await
    }
    async fn record_ca_key(&self, k: CaKeyRecord, a: AuditEvent) -> Result<(), StoreError> {
        self.inner.record_ca_key(k, a).await
    }
    async fn ca_key(&self, l: &str) -> Result<Option<CaKeyRecord>, StoreError> {
        self.inner.ca_key(l).await
    }
    async fn record_issuer(&self, i: IssuerRecord, a: AuditEvent) -> Result<(), StoreError> {
        self.inner.record_issuer(i, a).await
    }
    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        self.inner.issuers().await
    }
    async fn begin_issuance(&self, p: CertificateRecord) -> Result<BeginOutcome, StoreError> {
        self.inner.begin_issuance(p).await
    }
    async fn complete_issuance(
        &self,
        s: &str,
        c: &[u8],
        t: i64,
        a: AuditEvent,
    ) -> Result<CertificateRecord, StoreError> {
        if let Fault::BeforeCommit = self.fault {
            return Err(StoreError::Unavailable {
                context: "committing a certificate",
                message: "simulated crash".into(),
            });
        }
        self.inner.complete_issuance(s, c, t, a).await
    }
    async fn certificate(&self, s: &str) -> Result<Option<CertificateRecord>, StoreError> {
        self.inner.certificate(s).await
    }
    async fn certificate_by_request(
        &self,
        ra: &str,
        id: &str,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        self.inner.certificate_by_request(ra, id).await
    }
    async fn revoke(&self, r: RevokeRecord, a: AuditEvent) -> Result<RevokeOutcome, StoreError> {
        self.inner.revoke(r, a).await
    }
    async fn release_hold(
        &self,
        r: ReleaseRecord,
        a: AuditEvent,
    ) -> Result<ReleaseOutcome, StoreError> {
        self.inner.release_hold(r, a).await
    }
    async fn revocation_history(&self, s: &str) -> Result<Vec<RevocationEvent>, StoreError> {
        self.inner.revocation_history(s).await
    }
    async fn revocation_watch(&self, at: i64) -> Result<RevocationWatch, StoreError> {
        self.inner.revocation_watch(at).await
    }
    async fn list_certificates(
        &self,
        f: CertFilter,
        t: Option<String>,
        n: usize,
    ) -> Result<CertPage, StoreError> {
        self.inner.list_certificates(f, t, n).await
    }
    async fn count_certificates(&self) -> Result<u64, StoreError> {
        self.inner.count_certificates().await
    }
    async fn next_crl_number(&self, i: &str) -> Result<u64, StoreError> {
        self.inner.next_crl_number(i).await
    }
    async fn record_crl(
        &self,
        c: CrlRecord,
        s: Vec<String>,
        a: AuditEvent,
    ) -> Result<(), StoreError> {
        self.inner.record_crl(c, s, a).await
    }
    async fn latest_crl(&self, i: &str) -> Result<Option<CrlRecord>, StoreError> {
        self.inner.latest_crl(i).await
    }
    async fn revoked_for_crl(&self, i: &str, at: i64) -> Result<Vec<CrlRevocation>, StoreError> {
        self.inner.revoked_for_crl(i, at).await
    }
    async fn append_audit(&self, e: AuditEvent) -> Result<AuditEntry, StoreError> {
        self.inner.append_audit(e).await
    }
    async fn audit_entries(&self, f: i64, l: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_entries(f, l).await
    }
    async fn token_job(&self, r: &str) -> Result<Option<TokenJob>, StoreError> {
        self.inner.token_job(r).await
    }
    async fn save_token_job(&self, j: TokenJob, a: Option<AuditEvent>) -> Result<(), StoreError> {
        self.inner.save_token_job(j, a).await
    }
    async fn token_init(&self, r: &str) -> Result<Option<TokenInit>, StoreError> {
        self.inner.token_init(r).await
    }
    async fn save_token_init(&self, i: TokenInit, a: Option<AuditEvent>) -> Result<(), StoreError> {
        if let Fault::InitJournal(state, failed) = &self.fault
            && i.state == *state
            && !failed.swap(true, Ordering::SeqCst)
        {
            return Err(StoreError::Unavailable {
                context: "recording a token initialisation",
                message: "simulated crash".into(),
            });
        }
        self.inner.save_token_init(i, a).await
    }
    async fn pin_failures(&self, t: &str) -> Result<u32, StoreError> {
        self.inner.pin_failures(t).await
    }
    async fn record_pin_failure(&self, t: &str) -> Result<u32, StoreError> {
        self.inner.record_pin_failure(t).await
    }
    async fn reset_pin_failures(&self, t: &str, a: Option<AuditEvent>) -> Result<(), StoreError> {
        self.inner.reset_pin_failures(t, a).await
    }
    async fn last_audit_entry(&self) -> Result<Option<AuditEntry>, StoreError> {
        self.inner.last_audit_entry().await
    }
    async fn first_audit_seq_for(&self, o: &str) -> Result<Option<i64>, StoreError> {
        self.inner.first_audit_seq_for(o).await
    }
    async fn record_checkpoint(&self, c: Checkpoint) -> Result<(), StoreError> {
        self.inner.record_checkpoint(c).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.inner.checkpoints().await
    }
    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.inner.last_checkpoint().await
    }
    async fn reserve_tsa_serials(&self, n: u64, t: i64) -> Result<u64, StoreError> {
        self.inner.reserve_tsa_serials(n, t).await
    }
    async fn note_tsa_time(&self, t: i64) -> Result<(), StoreError> {
        self.inner.note_tsa_time(t).await
    }
    async fn settle_tsa_time(&self, c: i64, t: i64) -> Result<bool, StoreError> {
        self.inner.settle_tsa_time(c, t).await
    }
    async fn tsa_last_time(&self) -> Result<Option<i64>, StoreError> {
        self.inner.tsa_last_time().await
    }
}

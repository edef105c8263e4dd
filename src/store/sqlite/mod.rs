//! The embedded SQLite store: one file, WAL journal, every commit's log fsynced before its
//! caller is answered; schema migrations keyed by `PRAGMA user_version`. Calls run on
//! one database thread of their own (`signet-sqlite`, in `db`), never on the async executor.
//!
//! One file per concern holds the queries (`certificates`, `revocation`, `crl`, `keys`,
//! `tokens`, `audit`, `tsa`); `db` owns the connection, the database thread and the sync
//! thread that makes each group durable, `checkpoint` the thread that copies the write-ahead
//! log into the database file, `schema` the migrations. The trait implementation below only hands each call to its concern.

mod audit;
pub mod backup;
mod certificates;
mod checkpoint;
mod crl;
mod db;
mod error;
mod health;
mod keys;
mod revocation;
mod schema;
#[cfg(test)]
mod test_support;
mod tokens;
mod tsa;

use async_trait::async_trait;

use crate::audit::{AuditEntry, AuditEvent, Checkpoint};
use crate::store::Store;
use crate::store::certificates::{BeginOutcome, CertFilter, CertPage, CertificateRecord};
use crate::store::crl::{CrlRecord, CrlRevocation};
use crate::store::error::StoreError;
use crate::store::keys::{CaKeyRecord, IssuerRecord};
use crate::store::revocation::{
    ReleaseOutcome, ReleaseRecord, RevocationEvent, RevocationWatch, RevokeOutcome, RevokeRecord,
};
use crate::store::tokens::{TokenInit, TokenJob};

pub use db::SqliteStore;

#[async_trait]
impl Store for SqliteStore {
    async fn probe_write(&self) -> Result<(), StoreError> {
        health::probe_write(self).await
    }

    async fn record_ca_key(&self, key: CaKeyRecord, audit: AuditEvent) -> Result<(), StoreError> {
        keys::record_ca_key(self, key, audit).await
    }

    async fn ca_key(&self, label: &str) -> Result<Option<CaKeyRecord>, StoreError> {
        keys::ca_key(self, label).await
    }

    async fn record_issuer(
        &self,
        issuer: IssuerRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        keys::record_issuer(self, issuer, audit).await
    }

    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        keys::issuers(self).await
    }

    async fn begin_issuance(&self, p: CertificateRecord) -> Result<BeginOutcome, StoreError> {
        certificates::begin_issuance(self, p).await
    }

    async fn complete_issuance(
        &self,
        serial: &str,
        cert_der: &[u8],
        issued_at: i64,
        audit: AuditEvent,
    ) -> Result<CertificateRecord, StoreError> {
        certificates::complete_issuance(self, serial, cert_der, issued_at, audit).await
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        certificates::certificate(self, serial).await
    }

    async fn certificate_by_request(
        &self,
        ra: &str,
        request_id: &str,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        certificates::certificate_by_request(self, ra, request_id).await
    }

    async fn revoke(
        &self,
        rev: RevokeRecord,
        audit: AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        revocation::revoke(self, rev, audit).await
    }

    async fn release_hold(
        &self,
        rel: ReleaseRecord,
        audit: AuditEvent,
    ) -> Result<ReleaseOutcome, StoreError> {
        revocation::release_hold(self, rel, audit).await
    }

    async fn revocation_history(&self, serial: &str) -> Result<Vec<RevocationEvent>, StoreError> {
        revocation::revocation_history(self, serial).await
    }

    async fn revocation_watch(&self, at: i64) -> Result<RevocationWatch, StoreError> {
        revocation::revocation_watch(self, at).await
    }

    async fn list_certificates(
        &self,
        filter: CertFilter,
        page_token: Option<String>,
        page_size: usize,
    ) -> Result<CertPage, StoreError> {
        certificates::list_certificates(self, filter, page_token, page_size).await
    }

    async fn count_certificates(&self) -> Result<u64, StoreError> {
        certificates::count_certificates(self).await
    }

    async fn next_crl_number(&self, issuer: &str) -> Result<u64, StoreError> {
        crl::next_crl_number(self, issuer).await
    }

    async fn record_crl(
        &self,
        crl: CrlRecord,
        serials: Vec<String>,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        crl::record_crl(self, crl, serials, audit).await
    }

    async fn latest_crl(&self, issuer: &str) -> Result<Option<CrlRecord>, StoreError> {
        crl::latest_crl(self, issuer).await
    }

    async fn revoked_for_crl(
        &self,
        issuer: &str,
        at: i64,
    ) -> Result<Vec<CrlRevocation>, StoreError> {
        crl::revoked_for_crl(self, issuer, at).await
    }

    async fn token_job(&self, request_id: &str) -> Result<Option<TokenJob>, StoreError> {
        tokens::token_job(self, request_id).await
    }

    async fn save_token_job(
        &self,
        job: TokenJob,
        audit: Option<AuditEvent>,
    ) -> Result<(), StoreError> {
        tokens::save_token_job(self, job, audit).await
    }

    async fn token_init(&self, request_id: &str) -> Result<Option<TokenInit>, StoreError> {
        tokens::token_init(self, request_id).await
    }

    async fn save_token_init(
        &self,
        init: TokenInit,
        audit: Option<AuditEvent>,
    ) -> Result<(), StoreError> {
        tokens::save_token_init(self, init, audit).await
    }

    async fn pin_failures(&self, token_serial: &str) -> Result<u32, StoreError> {
        tokens::pin_failures(self, token_serial).await
    }

    async fn record_pin_failure(&self, token_serial: &str) -> Result<u32, StoreError> {
        tokens::record_pin_failure(self, token_serial).await
    }

    async fn reset_pin_failures(
        &self,
        token_serial: &str,
        audit: Option<AuditEvent>,
    ) -> Result<(), StoreError> {
        tokens::reset_pin_failures(self, token_serial, audit).await
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        audit::append_audit(self, event).await
    }

    async fn audit_entries(&self, from: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        audit::audit_entries(self, from, limit).await
    }

    async fn last_audit_entry(&self) -> Result<Option<AuditEntry>, StoreError> {
        audit::last_audit_entry(self).await
    }

    async fn first_audit_seq_for(&self, object: &str) -> Result<Option<i64>, StoreError> {
        audit::first_audit_seq_for(self, object).await
    }

    async fn record_checkpoint(&self, cp: Checkpoint) -> Result<(), StoreError> {
        audit::record_checkpoint(self, cp).await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        audit::checkpoints(self).await
    }

    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        audit::last_checkpoint(self).await
    }

    async fn reserve_tsa_serials(&self, count: u64, ceiling_ms: i64) -> Result<u64, StoreError> {
        tsa::reserve_tsa_serials(self, count, ceiling_ms).await
    }

    async fn note_tsa_time(&self, ceiling_ms: i64) -> Result<(), StoreError> {
        tsa::note_tsa_time(self, ceiling_ms).await
    }

    async fn settle_tsa_time(&self, ceiling_ms: i64, latest_ms: i64) -> Result<bool, StoreError> {
        tsa::settle_tsa_time(self, ceiling_ms, latest_ms).await
    }

    async fn tsa_last_time(&self) -> Result<Option<i64>, StoreError> {
        tsa::tsa_last_time(self).await
    }
}

#[cfg(test)]
mod tests {
    // Here rather than in schema.rs: it opens the store through db.rs, which uses schema.rs.
    use rusqlite::Connection;

    use crate::audit;
    use crate::store::Store;
    use crate::store::revocation::RevokeOutcome;
    use crate::store::sqlite::db::SqliteStore;
    use crate::store::sqlite::schema::MIGRATIONS;
    use crate::store::sqlite::test_support::{event, revocation};

    #[tokio::test]
    async fn a_version_1_database_migrates_and_keeps_its_certificates() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO ca_keys VALUES ('k', 'p256', x'01', 1);
             INSERT INTO issuers VALUES ('ec', NULL, 'k', 'ecdsa-sha256', '01', x'02', 1);
             INSERT INTO certificates (serial, issuer, ra, request_id, request_digest, profile, \
               subject, request_json, csr_der, tbs_der, cert_der, status, not_before, not_after, \
               created_at, issued_at) \
             VALUES ('aa', 'ec', 'ra-1', 'r1', 'd', 'server', 'CN=x', '{}', x'03', x'04', x'05', \
               'valid', 10, 20, 10, 11);",
        )
        .unwrap();
        let s = SqliteStore::setup(conn).unwrap();
        // The issuer of an older store is the first generation of its own family.
        let issuers = s.issuers().await.unwrap();
        assert_eq!(
            (issuers[0].family.as_str(), issuers[0].generation),
            ("ec", 1)
        );
        let rec = s.certificate("aa").await.unwrap().unwrap();
        assert_eq!(rec.renewed_from, None);
        assert_eq!(rec.revocation, None);
        assert!(matches!(
            s.revoke(revocation("aa", "r1", "x"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::Revoked(_)
        ));
    }

    /// A database as version 8 left it: a committed certificate with its TBS, a pending
    /// one, a revoked one nobody has published yet, and the audit entries that made them.
    fn version_8_database(path: &std::path::Path) {
        let mut conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        for (i, m) in MIGRATIONS.iter().take(8).enumerate() {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(m).unwrap();
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
            tx.commit().unwrap();
        }
        conn.execute_batch(
            "INSERT INTO ca_keys VALUES ('k', 'p256', x'01', 1);
             INSERT INTO issuers VALUES ('ec', NULL, 'k', 'ecdsa-sha256', '01', x'02', 1);
             INSERT INTO certificates (serial, issuer, ra, request_id, request_digest, profile, \
               subject, request_json, csr_der, tbs_der, cert_der, status, not_before, not_after, \
               created_at, issued_at) VALUES
               ('aa', 'ec', 'ra-1', 'r1', 'd', 'server', 'CN=a', '{}', x'03', x'0404', x'05', \
                'valid', 10, 4000000000, 10, 11),
               ('bb', 'ec', 'ra-1', 'r2', 'd', 'server', 'CN=b', '{}', x'03', x'0606', NULL, \
                'pending', 10, 4000000000, 10, NULL),
               ('cc', 'ec', 'ra-1', 'r3', 'd', 'device', 'CN=c', '{}', x'03', x'0707', x'08', \
                'revoked', 10, 4000000000, 10, 11);
             UPDATE certificates SET revoked_at = 50, revocation_reason = 'keyCompromise', \
               revoked_by = 'ra-1', revocation_comment = '' WHERE serial = 'cc';
             INSERT INTO revocation_events (serial, kind, reason, actor, request_id, \
               recorded_at, comment) VALUES ('cc', 'revoked', 'keyCompromise', 'ra-1', 'rv', 50, '');",
        )
        .unwrap();
        // The audit entries as version 8 wrote them.
        let mut prev = audit::genesis_hash();
        for (seq, (action, object)) in [("certificate.issued", "aa"), ("certificate.revoked", "cc")]
            .into_iter()
            .enumerate()
        {
            let mut e = event(action);
            e.object = object.into();
            let seq = seq as i64 + 1;
            let hash = audit::entry_hash(&prev, seq, 100 + seq, &e);
            conn.execute(
                "INSERT INTO audit_log VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params![
                    seq,
                    100 + seq,
                    e.actor,
                    e.action,
                    e.object,
                    e.request_digest,
                    e.detail,
                    prev,
                    hash
                ],
            )
            .unwrap();
            prev = hash;
        }
    }

    #[tokio::test]
    async fn a_version_8_database_migrates_keeping_every_record_and_drops_signed_tbs() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("v8.sqlite");
        version_8_database(&path);
        let s = SqliteStore::open(&path).unwrap();
        // Every certificate is still there, with its certificate; signed ones lost the TBS
        // (it is inside the certificate), the pending one kept it to be signed again.
        assert_eq!(s.count_certificates().await.unwrap(), 3);
        let aa = s.certificate("aa").await.unwrap().unwrap();
        assert_eq!(aa.cert_der, Some(vec![5]));
        assert!(aa.tbs_der.is_empty());
        let bb = s.certificate("bb").await.unwrap().unwrap();
        assert_eq!(bb.tbs_der, vec![6, 6]);
        let cc = s.certificate("cc").await.unwrap().unwrap();
        assert!(cc.tbs_der.is_empty());
        assert_eq!(cc.revocation.map(|r| r.revoked_at), Some(50));
        // The revocation is still found for CRLs and by the watch, now through the
        // partial indexes.
        let listed = s.revoked_for_crl("ec", 100).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].serial, "cc");
        let watch = s.revocation_watch(100).await.unwrap();
        assert_eq!(watch.unpublished.len(), 1);
        // The chain written before the migration verifies and grows after it.
        let before = s.audit_entries(1, 100).await.unwrap();
        assert_eq!(audit::verify_chain(&before), Ok(before.len()));
        s.complete_issuance("bb", &[9, 9], 12, event("certificate.issued"))
            .await
            .unwrap();
        let after = s.audit_entries(1, 100).await.unwrap();
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(audit::verify_chain(&after), Ok(after.len()));
        drop(s);
        let conn = Connection::open(&path).unwrap();
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'certificates' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            [
                "certificates_by_expiry",
                "certificates_by_profile",
                "certificates_by_ra",
                "certificates_by_update",
                "certificates_revoked_for_crl",
                "certificates_revoked_unpublished",
                "sqlite_autoindex_certificates_1",
                "sqlite_autoindex_certificates_2",
            ]
        );
        let tbs_left: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM certificates WHERE length(tbs_der) > 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tbs_left, 0, "bb was committed after the migration");
        // A CRL is built from the partial index alone.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT serial, revoked_at, revocation_reason, \
                 revocation_reported_at FROM certificates WHERE issuer = 'ec' \
                 AND status = 'revoked' AND not_after >= 100 ORDER BY serial",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(
            plan.contains("COVERING INDEX certificates_revoked_for_crl"),
            "{plan}"
        );
    }

    #[tokio::test]
    async fn a_quiet_file_store_has_its_write_ahead_log_checkpointed_off_the_database_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("wal.sqlite");
        let s = SqliteStore::open(&path).unwrap();
        for i in 0..50 {
            s.append_audit(event(&format!("a{i}"))).await.unwrap();
        }
        let wal = dir.join("wal.sqlite-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        // SQLite's automatic checkpoint is off on the database thread's connection...
        let auto = s
            .run("reading a pragma", |c| {
                c.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get::<_, i64>(0))
                    .map_err(super::error::unavailable("reading a pragma"))
            })
            .await
            .unwrap();
        assert_eq!(auto, 0);
        // ...and the checkpoint thread empties the log once the store is quiet.
        let mut emptied = false;
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0 {
                emptied = true;
                break;
            }
        }
        assert!(emptied, "the write-ahead log was never checkpointed");
        assert_eq!(s.audit_entries(1, 100).await.unwrap().len(), 50);
    }
}

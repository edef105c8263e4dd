//! Token personalisation in SQLite: the journal per request id and the wrong-PIN count per
//! token.

use rusqlite::{OptionalExtension, params};

use super::audit::append_audit_tx;
use super::db::SqliteStore;
use super::error::unavailable;
use crate::audit::AuditEvent;
use crate::clock::unix_now as now;
use crate::store::error::StoreError;
use crate::store::tokens::{TokenInit, TokenInitState, TokenJob, TokenJobState};

pub(super) async fn token_init(
    store: &SqliteStore,
    request_id: &str,
) -> Result<Option<TokenInit>, StoreError> {
    let request_id = request_id.to_owned();
    let ctx = "reading a token initialisation";
    store
        .run(ctx, move |conn| {
            conn.query_row(
                "SELECT request_id, request_digest, token, module, slot, old_serial, old_label, \
                 old_fingerprint, new_serial, label, force, wiped_json, state, created_at, \
                 updated_at FROM token_inits WHERE request_id = ?1",
                params![request_id],
                |r| {
                    Ok((
                        TokenInit {
                            request_id: r.get(0)?,
                            request_digest: r.get(1)?,
                            token: r.get(2)?,
                            module: r.get(3)?,
                            slot: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(u64::MAX),
                            old_serial: r.get(5)?,
                            old_label: r.get(6)?,
                            old_fingerprint: r.get(7)?,
                            new_serial: r.get(8)?,
                            label: r.get(9)?,
                            force: r.get(10)?,
                            wiped_certificates: Vec::new(),
                            state: TokenInitState::Started,
                            created_at: r.get(13)?,
                            updated_at: r.get(14)?,
                        },
                        r.get::<_, String>(11)?,
                        r.get::<_, String>(12)?,
                    ))
                },
            )
            .optional()
            .map_err(unavailable(ctx))?
            .map(|(mut init, wiped, state)| {
                init.state = TokenInitState::parse(&state)?;
                init.wiped_certificates = serde_json::from_str(&wiped).map_err(|e| {
                    StoreError::Corrupt(format!("token initialisation wiped_json: {e}"))
                })?;
                Ok(init)
            })
            .transpose()
        })
        .await
}

pub(super) async fn save_token_init(
    store: &SqliteStore,
    init: TokenInit,
    audit: Option<AuditEvent>,
) -> Result<(), StoreError> {
    let ctx = "recording a token initialisation";
    store
        .run(ctx, move |conn| {
            let wiped = serde_json::to_string(&init.wiped_certificates)
                .map_err(|e| StoreError::Corrupt(format!("token initialisation: {e}")))?;
            let slot = i64::try_from(init.slot)
                .map_err(|_| StoreError::Corrupt(format!("slot id {} too large", init.slot)))?;
            conn.execute(
                "INSERT INTO token_inits (request_id, request_digest, token, module, slot, \
                 old_serial, old_label, old_fingerprint, new_serial, label, force, wiped_json, \
                 state, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                 ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT (request_id) DO UPDATE SET \
                 request_digest = ?2, token = ?3, module = ?4, slot = ?5, old_serial = ?6, \
                 old_label = ?7, old_fingerprint = ?8, new_serial = ?9, label = ?10, force = ?11, \
                 wiped_json = ?12, state = ?13, updated_at = ?15",
                params![
                    init.request_id,
                    init.request_digest,
                    init.token,
                    init.module,
                    slot,
                    init.old_serial,
                    init.old_label,
                    init.old_fingerprint,
                    init.new_serial,
                    init.label,
                    init.force,
                    wiped,
                    init.state.as_str(),
                    init.created_at,
                    now(),
                ],
            )
            .map_err(unavailable(ctx))?;
            if let Some(event) = &audit {
                append_audit_tx(conn, event)?;
            }
            Ok(())
        })
        .await
}

pub(super) async fn token_job(
    store: &SqliteStore,
    request_id: &str,
) -> Result<Option<TokenJob>, StoreError> {
    let request_id = request_id.to_owned();
    store
        .run("reading a token personalisation", move |conn| {
            conn.query_row(
                "SELECT request_id, token_serial, label, key_id, key_type, request_digest, \
             csr_der, state, cert_der, chain_json, detail, created_at, updated_at \
             FROM token_jobs WHERE request_id = ?1",
                params![request_id],
                |r| {
                    Ok((
                        TokenJob {
                            request_id: r.get(0)?,
                            token_serial: r.get(1)?,
                            label: r.get(2)?,
                            key_id: r.get(3)?,
                            key_type: r.get(4)?,
                            request_digest: r.get(5)?,
                            csr_der: r.get(6)?,
                            state: TokenJobState::Generated,
                            cert_der: r.get(8)?,
                            chain_der: Vec::new(),
                            detail: r.get(10)?,
                            created_at: r.get(11)?,
                            updated_at: r.get(12)?,
                        },
                        r.get::<_, String>(7)?,
                        r.get::<_, String>(9)?,
                    ))
                },
            )
            .optional()
            .map_err(unavailable("reading a token personalisation"))?
            .map(|(mut job, state, chain)| {
                job.state = TokenJobState::parse(&state)?;
                let hex_chain: Vec<String> = serde_json::from_str(&chain)
                    .map_err(|e| StoreError::Corrupt(format!("token job chain: {e}")))?;
                job.chain_der = hex_chain
                    .iter()
                    .map(hex::decode)
                    .collect::<Result<_, _>>()
                    .map_err(|e| StoreError::Corrupt(format!("token job chain: {e}")))?;
                Ok(job)
            })
            .transpose()
        })
        .await
}

pub(super) async fn save_token_job(
    store: &SqliteStore,
    job: TokenJob,
    audit: Option<AuditEvent>,
) -> Result<(), StoreError> {
    store
        .run("recording a token personalisation", move |conn| {
            let chain: Vec<String> = job.chain_der.iter().map(hex::encode).collect();
            let chain = serde_json::to_string(&chain)
                .map_err(|e| StoreError::Corrupt(format!("token job chain: {e}")))?;
            conn.execute(
                "INSERT INTO token_jobs (request_id, token_serial, label, key_id, key_type, \
             request_digest, csr_der, state, cert_der, chain_json, detail, created_at, \
             updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
             ON CONFLICT (request_id) DO UPDATE SET token_serial = ?2, label = ?3, \
             key_id = ?4, key_type = ?5, request_digest = ?6, csr_der = ?7, state = ?8, \
             cert_der = ?9, chain_json = ?10, detail = ?11, updated_at = ?13",
                params![
                    job.request_id,
                    job.token_serial,
                    job.label,
                    job.key_id,
                    job.key_type,
                    job.request_digest,
                    job.csr_der,
                    job.state.as_str(),
                    job.cert_der,
                    chain,
                    job.detail,
                    job.created_at,
                    now(),
                ],
            )
            .map_err(unavailable("recording a token personalisation"))?;
            if let Some(event) = &audit {
                append_audit_tx(conn, event)?;
            }
            Ok(())
        })
        .await
}

pub(super) async fn pin_failures(
    store: &SqliteStore,
    token_serial: &str,
) -> Result<u32, StoreError> {
    let serial = token_serial.to_owned();
    store
        .run("reading a token's wrong-PIN count", move |conn| {
            let n: Option<i64> = conn
                .query_row(
                    "SELECT failures FROM token_pin_failures WHERE token_serial = ?1",
                    params![serial],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable("reading a token's wrong-PIN count"))?;
            Ok(u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX))
        })
        .await
}

pub(super) async fn record_pin_failure(
    store: &SqliteStore,
    token_serial: &str,
) -> Result<u32, StoreError> {
    let serial = token_serial.to_owned();
    store
        .run("counting a wrong PIN", move |conn| {
            let n: i64 = conn
                .query_row(
                    "INSERT INTO token_pin_failures (token_serial, failures, updated_at) \
                 VALUES (?1, 1, ?2) ON CONFLICT (token_serial) DO UPDATE \
                 SET failures = failures + 1, updated_at = ?2 RETURNING failures",
                    params![serial, now()],
                    |r| r.get(0),
                )
                .map_err(unavailable("counting a wrong PIN"))?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
}

pub(super) async fn reset_pin_failures(
    store: &SqliteStore,
    token_serial: &str,
    audit: Option<AuditEvent>,
) -> Result<(), StoreError> {
    let serial = token_serial.to_owned();
    store
        .run("resetting a token's wrong-PIN count", move |conn| {
            conn.execute(
                "DELETE FROM token_pin_failures WHERE token_serial = ?1",
                params![serial],
            )
            .map_err(unavailable("resetting a token's wrong-PIN count"))?;
            if let Some(event) = &audit {
                append_audit_tx(conn, event)?;
            }
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::sqlite::db::SqliteStore;
    use crate::store::sqlite::test_support::event;
    use crate::store::tokens::{TokenInit, TokenInitState, TokenJob, TokenJobState};

    #[tokio::test]
    async fn token_initialisation_entries_round_trip_with_their_audit_entry() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert_eq!(s.token_init("i-1").await.unwrap(), None);
        let mut init = TokenInit {
            request_id: "i-1".into(),
            request_digest: "d".into(),
            token: "slot:0:3:0a1b2c3d4e5f".into(),
            module: "/usr/lib/x.so".into(),
            slot: 3,
            old_serial: String::new(),
            old_label: String::new(),
            old_fingerprint: "0a1b2c3d4e5f".into(),
            new_serial: String::new(),
            label: "张三".into(),
            force: false,
            wiped_certificates: vec!["0102".into()],
            state: TokenInitState::Started,
            created_at: 5,
            updated_at: 5,
        };
        s.save_token_init(init.clone(), None).await.unwrap();
        assert!(s.token_init("i-1").await.unwrap().is_some());
        init.state = TokenInitState::Done;
        init.new_serial = "c0ffee".into();
        s.save_token_init(init.clone(), Some(event("token.initialized")))
            .await
            .unwrap();
        let read = s.token_init("i-1").await.unwrap().unwrap();
        assert_eq!(read.state, TokenInitState::Done);
        assert_eq!(read.new_serial, "c0ffee");
        assert_eq!(read.wiped_certificates, vec!["0102".to_owned()]);
        assert_eq!((read.slot, read.created_at), (3, 5));
        assert_eq!(s.audit_entries(1, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn token_journal_entries_round_trip_and_wrong_pins_are_counted_per_token() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert_eq!(s.token_job("t-1").await.unwrap(), None);
        let mut job = TokenJob {
            request_id: "t-1".into(),
            token_serial: "0a1b2c".into(),
            label: "zhang-san".into(),
            key_id: vec![0xaa; 20],
            key_type: "p256".into(),
            request_digest: "d".into(),
            csr_der: vec![0x30, 0x00],
            state: TokenJobState::Generated,
            cert_der: None,
            chain_der: Vec::new(),
            detail: String::new(),
            created_at: 7,
            updated_at: 7,
        };
        s.save_token_job(job.clone(), None).await.unwrap();
        let read = s.token_job("t-1").await.unwrap().unwrap();
        assert_eq!(read.state, TokenJobState::Generated);
        assert_eq!(read.csr_der, job.csr_der);
        job.state = TokenJobState::Written;
        job.cert_der = Some(vec![1, 2, 3]);
        job.chain_der = vec![vec![4], vec![5, 6]];
        s.save_token_job(job.clone(), Some(event("token.personalized")))
            .await
            .unwrap();
        let read = s.token_job("t-1").await.unwrap().unwrap();
        assert_eq!(read.state, TokenJobState::Written);
        assert_eq!(read.cert_der, Some(vec![1, 2, 3]));
        assert_eq!(read.chain_der, vec![vec![4], vec![5, 6]]);
        assert_eq!(read.created_at, 7, "the first write's time is kept");
        let audit = s.audit_entries(1, 10).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].event.action, "token.personalized");

        assert_eq!(s.pin_failures("0a1b2c").await.unwrap(), 0);
        assert_eq!(s.record_pin_failure("0a1b2c").await.unwrap(), 1);
        assert_eq!(s.record_pin_failure("0a1b2c").await.unwrap(), 2);
        assert_eq!(s.record_pin_failure("ffff").await.unwrap(), 1);
        s.reset_pin_failures("0a1b2c", Some(event("token.pin_unblocked")))
            .await
            .unwrap();
        assert_eq!(s.pin_failures("0a1b2c").await.unwrap(), 0);
        assert_eq!(s.pin_failures("ffff").await.unwrap(), 1);
        assert_eq!(s.audit_entries(1, 10).await.unwrap().len(), 2);
    }
}

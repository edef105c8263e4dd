//! The audit chain in SQLite: appending an entry inside the caller's transaction, reading
//! entries back, and the signed checkpoints of the chain.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db::SqliteStore;
use super::error::{duplicate_or_unavailable, unavailable};
use crate::audit::{self, AuditEntry, AuditEvent, Checkpoint};
use crate::clock::unix_now as now;
use crate::store::error::StoreError;

/// Append `event` to the audit chain inside the caller's transaction.
pub(super) fn append_audit_tx(
    conn: &Connection,
    event: &AuditEvent,
) -> Result<AuditEntry, StoreError> {
    let lines = audit::event_lines(event);
    let (seq, at, prev_hash, hash) = append_lines_tx(conn, event, &lines)?;
    Ok(AuditEntry {
        seq,
        at,
        event: event.clone(),
        prev_hash,
        hash,
    })
}

/// Append `event`, whose canonical lines the caller wrote beforehand
/// ([`audit::event_lines`], off the database thread), inside the caller's transaction: read
/// the chain's head, hash, insert, all with cached statements. Returns the new entry's
/// sequence number, time, previous hash and hash.
pub(super) fn append_lines_tx(
    conn: &Connection,
    event: &AuditEvent,
    lines: &str,
) -> Result<(i64, i64, String, String), StoreError> {
    let last: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(unavailable("reading the audit chain"))?;
    let (seq, prev_hash) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, audit::genesis_hash()),
    };
    let at = now();
    let hash = audit::entry_hash_of_lines(&prev_hash, seq, at, lines);
    conn.prepare_cached(
        "INSERT INTO audit_log (seq, at, actor, action, object, request_digest, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            seq,
            at,
            event.actor,
            event.action,
            event.object,
            event.request_digest,
            event.detail,
            prev_hash,
            hash
        ])
    })
    .map_err(unavailable("appending to the audit log"))?;
    crate::metrics::metrics().audit_head(seq);
    Ok((seq, at, prev_hash, hash))
}

const AUDIT_COLUMNS: &str =
    "seq, at, actor, action, object, request_digest, detail, prev_hash, hash";

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        event: AuditEvent {
            actor: r.get(2)?,
            action: r.get(3)?,
            object: r.get(4)?,
            request_digest: r.get(5)?,
            detail: r.get(6)?,
        },
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

/// Checkpoints in the order (and limit) `tail` gives, e.g. `ORDER BY seq`.
async fn query_checkpoints(
    store: &SqliteStore,
    tail: &'static str,
) -> Result<Vec<Checkpoint>, StoreError> {
    const CTX: &str = "reading audit checkpoints";
    store
        .run(CTX, move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT seq, hash, at, key_label, signature FROM audit_checkpoints {tail}"
                ))
                .map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Checkpoint {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                        at: r.get(2)?,
                        key_label: r.get(3)?,
                        signature: r.get(4)?,
                    })
                })
                .map_err(unavailable(CTX))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(unavailable(CTX))
        })
        .await
}

pub(super) async fn append_audit(
    store: &SqliteStore,
    event: AuditEvent,
) -> Result<AuditEntry, StoreError> {
    store
        .run("appending to the audit log", move |conn| {
            append_audit_tx(conn, &event)
        })
        .await
}

pub(super) async fn audit_entries(
    store: &SqliteStore,
    from: i64,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    store
        .run("reading the audit log", move |conn| {
            let mut stmt = conn
            .prepare(
                "SELECT seq, at, actor, action, object, request_digest, detail, prev_hash, hash \
                 FROM audit_log WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(unavailable("reading the audit log"))?;
            let rows = stmt
                .query_map(params![from, limit as i64], audit_from_row)
                .map_err(unavailable("reading the audit log"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(unavailable("reading the audit log"))
        })
        .await
}

pub(super) async fn last_audit_entry(
    store: &SqliteStore,
) -> Result<Option<AuditEntry>, StoreError> {
    const CTX: &str = "reading the audit log";
    store
        .run(CTX, move |conn| {
            conn.query_row(
                &format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1"),
                [],
                audit_from_row,
            )
            .optional()
            .map_err(unavailable(CTX))
        })
        .await
}

pub(super) async fn first_audit_seq_for(
    store: &SqliteStore,
    object: &str,
) -> Result<Option<i64>, StoreError> {
    const CTX: &str = "reading the audit log";
    let object = object.to_owned();
    store
        .run(CTX, move |conn| {
            conn.query_row(
                "SELECT MIN(seq) FROM audit_log WHERE object = ?1",
                [&object],
                |r| r.get(0),
            )
            .map_err(unavailable(CTX))
        })
        .await
}

pub(super) async fn record_checkpoint(
    store: &SqliteStore,
    cp: Checkpoint,
) -> Result<(), StoreError> {
    const CTX: &str = "recording an audit checkpoint";
    store
        .run(CTX, move |conn| {
            conn.execute(
                "INSERT INTO audit_checkpoints (seq, hash, at, key_label, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
                params![cp.seq, cp.hash, cp.at, cp.key_label, cp.signature],
            )
            .map_err(duplicate_or_unavailable(
                format!("a checkpoint of audit entry {}", cp.seq),
                CTX,
            ))?;
            Ok(())
        })
        .await
}

pub(super) async fn checkpoints(store: &SqliteStore) -> Result<Vec<Checkpoint>, StoreError> {
    query_checkpoints(store, "ORDER BY seq").await
}

pub(super) async fn last_checkpoint(store: &SqliteStore) -> Result<Option<Checkpoint>, StoreError> {
    Ok(query_checkpoints(store, "ORDER BY seq DESC LIMIT 1")
        .await?
        .pop())
}

#[cfg(test)]
mod tests {
    use crate::audit::Checkpoint;
    use crate::store::Store;
    use crate::store::error::StoreError;
    use crate::store::sqlite::db::SqliteStore;
    use crate::store::sqlite::test_support::event;

    #[tokio::test]
    async fn one_checkpoint_per_entry_and_entries_are_found_by_object() {
        let s = SqliteStore::open_in_memory().unwrap();
        for a in ["a", "b", "c"] {
            s.append_audit(event(a)).await.unwrap();
        }
        let last = s.last_audit_entry().await.unwrap().unwrap();
        assert_eq!(last.seq, 3);
        let cp = Checkpoint {
            seq: 3,
            hash: last.hash.clone(),
            at: 10,
            key_label: "audit".into(),
            signature: vec![1, 2, 3],
        };
        s.record_checkpoint(cp.clone()).await.unwrap();
        assert!(matches!(
            s.record_checkpoint(cp.clone()).await,
            Err(StoreError::Duplicate { .. })
        ));
        assert_eq!(s.checkpoints().await.unwrap(), vec![cp]);
        let mut e = event("x");
        e.object = "00ff".into();
        s.append_audit(e.clone()).await.unwrap();
        s.append_audit(e).await.unwrap();
        assert_eq!(s.first_audit_seq_for("00ff").await.unwrap(), Some(4));
        assert_eq!(s.first_audit_seq_for("nothing").await.unwrap(), None);
    }
}

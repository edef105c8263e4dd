//! Whether the SQLite store can write: the database thread's record of its latest commit,
//! and a probe write when that failed or is old, so health turns NOT_SERVING while the disk
//! is full (or fails) and recovers once a write succeeds again; and how much of the disk the
//! database takes.

use rusqlite::params;

use super::db::SqliteStore;
use super::error::unavailable;
use crate::clock::unix_now;
use crate::store::error::StoreError;

/// A successful commit younger than this answers the probe without writing.
const QUIET_SECONDS: i64 = 10;

/// Bytes the probe writes: a few pages, about what an issuance adds (certificate row, audit
/// entry and their index entries), so a probe that fits means an issuance would too.
const PROBE_BYTES: usize = 16 * 1024;

const CONTEXT: &str = "probing whether the store can write";

/// Write [`PROBE_BYTES`] to a new file at `side` and remove it: fails (as `Unavailable`) when
/// the file system has no room for them. No fsync: the file system refuses a write it has no
/// blocks for when the write is made.
fn room_to_grow(side: &std::path::Path) -> Result<(), StoreError> {
    use std::io::Write;
    let wrote = std::fs::File::create(side).and_then(|mut f| f.write_all(&[0u8; PROBE_BYTES]));
    let _ = std::fs::remove_file(side);
    wrote.map_err(|e| StoreError::Unavailable {
        context: CONTEXT,
        message: format!("no room to grow the store: {e}"),
    })
}

/// First, whether the file system holding the store has room to grow by an issuance or so
/// (commits that fit in write-ahead-log space already on disk can succeed on a full file
/// system; the next one that needs a new block fails). Then, answer from the latest commit
/// while it succeeded recently; otherwise write the probe row (through the same group commit
/// as every call, fsync included) and answer with that.
pub(super) async fn probe_write(store: &SqliteStore) -> Result<(), StoreError> {
    if let Some(db) = store.file() {
        let mut side = db.as_os_str().to_owned();
        side.push("-probe");
        let side = std::path::PathBuf::from(side);
        tokio::task::spawn_blocking(move || room_to_grow(&side))
            .await
            .map_err(|e| StoreError::Unavailable {
                context: CONTEXT,
                message: e.to_string(),
            })??;
    }
    let writes = store.writes();
    if !writes.failing() && unix_now() - writes.last_ok() < QUIET_SECONDS {
        return Ok(());
    }
    store
        .run(CONTEXT, |conn| {
            conn.execute(
                "UPDATE store_probe SET at = ?1, padding = zeroblob(?2) WHERE id = 1",
                params![unix_now(), PROBE_BYTES as i64],
            )
            .map_err(unavailable(CONTEXT))?;
            Ok(())
        })
        .await
}

impl SqliteStore {
    /// Bytes the database's pages hold (pages in use times the page size, free pages not
    /// counted), as of the latest commit, write-ahead log included.
    pub async fn footprint(&self) -> Result<u64, StoreError> {
        const CTX: &str = "measuring the database";
        self.run(CTX, |conn| {
            let pragma = |name: &str| -> Result<i64, StoreError> {
                conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                    .map_err(unavailable(CTX))
            };
            let used = pragma("page_count")? - pragma("freelist_count")?;
            Ok((used.max(0) as u64) * (pragma("page_size")?.max(0) as u64))
        })
        .await
    }
}

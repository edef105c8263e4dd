//! Backup and restore of the SQLite store, as files. A backup is an online, consistent copy
//! (`VACUUM INTO` on a connection of its own: one read transaction, so the daemon keeps
//! committing meanwhile and the copy is the database as of one commit). A restore checks the
//! copy before it replaces anything: its schema is brought up to date and its audit chain
//! must verify (the caller does that through the store); then the numbers relying parties
//! have seen must never be handed out again, so the CRL number of every issuer and the TSA's
//! next serial are raised to a floor taken from the clock, above anything a live CA could
//! have issued since the backup was taken.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::store::error::StoreError;

fn failed(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::Unavailable {
        context,
        message: e.to_string(),
    }
}

fn io(context: &'static str, path: &Path) -> impl Fn(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |e| StoreError::Unavailable {
        context,
        message: format!("{path}: {e}"),
    }
}

/// The `-wal` and `-shm` files beside a database file.
fn sidecars(db: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Write a consistent copy of the database at `db` to `out` (which must not exist), while
/// whatever else uses `db` goes on. The copy is a single file, fsynced, with no log beside it.
pub fn backup(db: &Path, out: &Path) -> Result<u64, StoreError> {
    if out.exists() {
        return Err(StoreError::Unavailable {
            context: "writing the backup",
            message: format!("{} exists; give a new file", out.display()),
        });
    }
    if !db.exists() {
        return Err(StoreError::Unavailable {
            context: "reading the store",
            message: format!("{} does not exist", db.display()),
        });
    }
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(failed("opening the store for a backup"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(failed("opening the store for a backup"))?;
    let target = out.to_str().ok_or_else(|| StoreError::Unavailable {
        context: "writing the backup",
        message: format!("{} is not UTF-8", out.display()),
    })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(failed("copying the store"))?;
    drop(conn);
    sync_file(out)?;
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(io("reading the backup", out))
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    let f = std::fs::File::open(path).map_err(io("syncing", path))?;
    f.sync_all().map_err(io("syncing", path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Copy the backup `from` to `work` (a scratch file beside the store) to be checked and
/// raised there; the backup itself is never written.
pub fn stage(from: &Path, work: &Path) -> Result<(), StoreError> {
    for f in std::iter::once(work.to_owned()).chain(sidecars(work)) {
        if f.exists() {
            std::fs::remove_file(&f).map_err(io("clearing the scratch copy", &f))?;
        }
    }
    std::fs::copy(from, work).map_err(io("copying the backup", from))?;
    Ok(())
}

/// What [`raise_floors`] set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Floors {
    /// Each issuer's last CRL number after the restore (the next CRL gets one more).
    pub crl_numbers: Vec<(String, i64)>,
    /// The TSA's next serial, if it had issued any.
    pub tsa_next_serial: Option<i64>,
}

/// Raise every issuer's last CRL number and the TSA's next serial in the database at `work`
/// to at least `now_ms` (milliseconds since the epoch) and `now_ms * 1000`: a CA cannot have
/// published a CRL per millisecond or timestamped a thousand requests per millisecond since
/// any backup was taken, so no number handed out after the backup comes again. Whatever is
/// already above is kept.
pub fn raise_floors(work: &Path, now_ms: i64) -> Result<Floors, StoreError> {
    let conn = Connection::open(work).map_err(failed("opening the scratch copy"))?;
    let ctx = "raising the number floors";
    conn.execute("UPDATE crl_numbers SET last = MAX(last, ?1)", [now_ms])
        .map_err(failed(ctx))?;
    conn.execute(
        "UPDATE tsa_state SET next_serial = MAX(next_serial, ?1)",
        [now_ms.saturating_mul(1000)],
    )
    .map_err(failed(ctx))?;
    let mut stmt = conn
        .prepare("SELECT issuer, last FROM crl_numbers ORDER BY issuer")
        .map_err(failed(ctx))?;
    let crl_numbers = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(failed(ctx))?
        .collect::<Result<Vec<(String, i64)>, _>>()
        .map_err(failed(ctx))?;
    drop(stmt);
    let tsa_next_serial = conn
        .query_row("SELECT next_serial FROM tsa_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .ok();
    Ok(Floors {
        crl_numbers,
        tsa_next_serial,
    })
}

/// A hold on the store at `db` that no other process has open: an exclusive lock, refused
/// (as "in use") while a daemon or a command holds the database. Dropping it lets go.
pub struct Exclusive {
    _conn: Option<Connection>,
}

/// Take [`Exclusive`] hold of `db`, if it exists.
pub fn exclusive(db: &Path) -> Result<Exclusive, StoreError> {
    if !db.exists() {
        return Ok(Exclusive { _conn: None });
    }
    let conn = Connection::open(db).map_err(failed("opening the store"))?;
    let in_use = |_| StoreError::Unavailable {
        context: "replacing the store",
        message: format!(
            "{} is in use (is signet serve running on it?); stop whatever uses it first",
            db.display()
        ),
    };
    conn.busy_timeout(std::time::Duration::from_millis(200))
        .map_err(failed("opening the store"))?;
    conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;")
        .map_err(in_use)?;
    Ok(Exclusive { _conn: Some(conn) })
}

/// Put the checked, raised copy at `work` in place of the store at `db`: a self-contained
/// copy is written beside it (`VACUUM INTO`), fsynced and renamed over it; the database it
/// replaces, if any, is kept as `<db>.replaced-<unix time>` (with its log files).
/// Returns the path the old database was kept under.
pub fn swap_in(work: &Path, db: &Path, now: i64) -> Result<Option<PathBuf>, StoreError> {
    let mut fresh = db.as_os_str().to_owned();
    fresh.push(".restoring");
    let fresh = PathBuf::from(fresh);
    if fresh.exists() {
        std::fs::remove_file(&fresh).map_err(io("clearing", &fresh))?;
    }
    backup(work, &fresh)?;
    let kept = if db.exists() {
        let mut old = db.as_os_str().to_owned();
        old.push(format!(".replaced-{now}"));
        let old = PathBuf::from(old);
        std::fs::rename(db, &old).map_err(io("keeping the replaced store", db))?;
        for (from, to) in sidecars(db).into_iter().zip(sidecars(&old)) {
            if from.exists() {
                std::fs::rename(&from, &to).map_err(io("keeping the replaced store", &from))?;
            }
        }
        Some(old)
    } else {
        None
    };
    std::fs::rename(&fresh, db).map_err(io("putting the restored store in place", &fresh))?;
    sync_file(db)?;
    for f in std::iter::once(work.to_owned()).chain(sidecars(work)) {
        let _ = std::fs::remove_file(f);
    }
    Ok(kept)
}

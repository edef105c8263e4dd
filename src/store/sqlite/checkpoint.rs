//! Write-ahead-log checkpoints off the database thread: a thread and connection of their own
//! (`signet-sqlite-ckpt`) copy the log into the database file while commits go on, so no
//! commit ever waits for a checkpoint, and the log stays bounded under constant load.
//!
//! Restarting the log (so it is written from its start again) needs a moment with no write
//! transaction open. Under constant load the database thread opens the next one as soon as
//! one commits, so SQLite's busy handler rarely finds that moment; the [`Gate`] makes it:
//! the database thread takes its turn at the gate for each group, and the checkpoint thread,
//! when it wants to restart, holds the gate for the restart alone.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use rusqlite::Connection;

use super::error::unavailable;
use crate::store::error::StoreError;

/// How long the checkpoint thread lets commits go by between two checkpoints under load:
/// each copies the latest version of every page the log holds, so a page written by many
/// commits in that time is copied once.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Pages of write-ahead log past which a checkpoint also restarts the log from its start
/// (briefly holding writers back), so a store under constant load keeps a bounded log.
const RESTART_PAGES: i64 = 8_000;

/// How the database and sync threads tell the checkpoint thread that the log has grown, and
/// the gate the database thread passes for each group.
pub(super) struct Checkpoints {
    wake: mpsc::SyncSender<()>,
    gate: Arc<Gate>,
}

impl Checkpoints {
    /// Wake the checkpoint thread unless it already has a wake-up waiting.
    pub(super) fn nudge(&self) {
        let _ = self.wake.try_send(());
    }

    /// The gate write transactions pass.
    pub(super) fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }
}

/// Write transactions take a turn at the gate; a log restart holds it.
#[derive(Default)]
pub(super) struct Gate {
    wanted: AtomicBool,
    turn: Mutex<()>,
}

impl Gate {
    /// The database thread's turn for one group: waits while a restart wants the gate.
    pub(super) fn writer_turn(&self) -> MutexGuard<'_, ()> {
        while self.wanted.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_micros(200));
        }
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `f` with no write transaction open (the database thread waits at the gate).
    fn exclusive<T>(&self, f: impl FnOnce() -> T) -> T {
        self.wanted.store(true, Ordering::Release);
        let held = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f();
        self.wanted.store(false, Ordering::Release);
        drop(held);
        out
    }
}

/// The checkpoint thread. After a commit (a nudge; at most one waits) it waits
/// [`CHECKPOINT_EVERY`], then copies the log into the database file without blocking
/// writers (SQLite's automatic checkpoint would do that inside a commit, on the database
/// thread); past [`RESTART_PAGES`] of log it also restarts the log from its start, holding
/// writers back for the few pages left. The log file keeps its size, so commits overwrite
/// pages the file system already has rather than growing the file. When the store has been
/// quiet for a second it checkpoints and truncates the log. It stops when the database
/// thread, which holds the sender, has ended.
fn checkpoint_thread(conn: Connection, wake: mpsc::Receiver<()>, gate: Arc<Gate>) {
    // (busy, pages in the log): busy when a reader or writer kept the checkpoint from
    // finishing.
    let checkpoint = |mode: &str| -> Option<(bool, i64)> {
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?))
        }) {
            Ok(result) => Some(result),
            Err(e) => {
                tracing::warn!("write-ahead log checkpoint ({mode}): {e}");
                None
            }
        }
    };
    let mut dirty = false;
    // A restart that a long reader (a backup, an audit walk in another process) kept from
    // finishing is tried again only once the log has grown by another RESTART_PAGES, so the
    // database thread is not held at the gate over and over while that reader reads.
    let mut restart_at = RESTART_PAGES;
    loop {
        match wake.recv_timeout(Duration::from_secs(1)) {
            Ok(()) => {
                dirty = true;
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Some((_, log)) = checkpoint("PASSIVE")
                    && log >= restart_at
                {
                    // A second passive checkpoint copies (and syncs) what came during the
                    // first; the restart then has only the last few commits to copy while
                    // the gate holds writers back.
                    checkpoint("PASSIVE");
                    restart_at = match gate.exclusive(|| checkpoint("RESTART")) {
                        Some((false, _)) => RESTART_PAGES,
                        _ => log + RESTART_PAGES,
                    };
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if dirty {
                    dirty = false;
                    if let Some((false, _)) = gate.exclusive(|| checkpoint("TRUNCATE")) {
                        restart_at = RESTART_PAGES;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Turn SQLite's automatic checkpoints off on `hot` (the database thread's connection) and
/// start the checkpoint thread with a connection of its own to `path`.
pub(super) fn start_checkpoints(hot: &Connection, path: &Path) -> Result<Checkpoints, StoreError> {
    let ctx = "starting the checkpoint thread";
    hot.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(unavailable(ctx))?;
    let conn = Connection::open(path).map_err(unavailable(ctx))?;
    // Short: a restart waits for readers while the database thread waits at the gate.
    conn.busy_timeout(Duration::from_millis(50))
        .map_err(unavailable(ctx))?;
    // The checkpoint syncs the log before it copies it, and the database file after.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(unavailable(ctx))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(unavailable(ctx))?;
    let (wake, woken) = mpsc::sync_channel(1);
    let gate = Arc::new(Gate::default());
    let thread_gate = gate.clone();
    std::thread::Builder::new()
        .name("signet-sqlite-ckpt".into())
        .spawn(move || checkpoint_thread(conn, woken, thread_gate))
        .map_err(|e| StoreError::Unavailable {
            context: ctx,
            message: e.to_string(),
        })?;
    Ok(Checkpoints { wake, gate })
}

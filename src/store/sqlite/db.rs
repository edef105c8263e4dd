//! The SQLite store's connection and its database thread: opening the file, the pragmas that
//! make every commit durable, and group commit (the calls that arrive while one commit is on
//! its way to disk share the next transaction, each in a savepoint of its own).
//!
//! The database thread caps every write the CA makes, so it does as little as it can: each
//! call brings its rows encoded, and the thread runs cached prepared statements over them.
//! Write-ahead-log checkpoints (copying the log into the database file and syncing it) run
//! on a thread and connection of their own (`signet-sqlite-ckpt`), never inside a commit.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::error::unavailable;
use super::schema::migrate;
use crate::clock::unix_now;
use crate::store::error::StoreError;

/// The SQLite store. All work goes to one database thread that owns the connection and
/// commits in groups: the calls that arrive while one commit is on its way to disk are run
/// in the next transaction, each inside a savepoint of its own, and share one fsync. Every
/// caller is answered only after the commit that holds its work is durable.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn Job>>,
    writes: Arc<WriteState>,
}

/// What the database thread last saw of writing: whether its latest transaction (or a call
/// in it) failed to reach the disk, and when one last did. Health reads it without I/O.
#[derive(Default)]
pub(super) struct WriteState {
    failed: AtomicBool,
    last_ok: AtomicI64,
}

impl WriteState {
    /// Whether the latest group failed to write (a commit error, or a call refused as
    /// unavailable, as a full disk or an I/O error makes it).
    pub(super) fn failing(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Unix seconds of the latest commit that reached the disk (0: none since start).
    pub(super) fn last_ok(&self) -> i64 {
        self.last_ok.load(Ordering::Acquire)
    }

    /// The outcome of one group: a failure always counts; a success only when the group
    /// wrote something (a group of reads commits nothing and proves nothing about writing).
    fn record(&self, ok: bool, wrote: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        } else if wrote {
            self.last_ok.store(unix_now(), Ordering::Release);
            self.failed.store(false, Ordering::Release);
        }
    }
}

/// The page size of a database signet creates.
const NEW_PAGE_SIZE: i64 = 8192;

/// Largest number of calls sharing one commit.
const MAX_GROUP: usize = 128;

/// A call waiting for the database thread.
trait Job: Send {
    /// Run inside the open transaction (in a savepoint of its own); false when the work
    /// failed as unavailable (the store could not do it, as opposed to refusing it).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Deliver the result once the transaction's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

struct Call<T, F> {
    context: &'static str,
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return true;
        };
        let result = match exec_cached(conn, "SAVEPOINT call") {
            Err(e) => Err(unavailable(self.context)(e)),
            Ok(()) => {
                let r = work(conn);
                // A failed call leaves nothing behind; the others in the group go on.
                let end = if r.is_ok() {
                    exec_cached(conn, "RELEASE call")
                } else {
                    exec_cached(conn, "ROLLBACK TO call")
                        .and_then(|()| exec_cached(conn, "RELEASE call"))
                };
                match end {
                    Ok(()) => r,
                    Err(e) => Err(unavailable(self.context)(e)),
                }
            }
        };
        let wrote = !matches!(result, Err(StoreError::Unavailable { .. }));
        self.result = Some(result);
        wrote
    }

    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let context = self.context;
        let result = match (committed, self.result) {
            (Ok(()), Some(r)) => r,
            (Err(message), Some(Ok(_))) => Err(StoreError::Unavailable { context, message }),
            (_, Some(Err(e))) => Err(e),
            (_, None) => Err(StoreError::Unavailable {
                context,
                message: "the call was never run".into(),
            }),
        };
        // The caller may have given up (deadline); its result is then simply dropped.
        let _ = self.reply.send(result);
    }
}

/// Run a statement without parameters or rows through the connection's statement cache, so
/// the transaction and savepoint statements every call runs are parsed once.
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The database thread: take a call, gather those already waiting, run them all in one
/// transaction, commit once, answer all.
fn database_thread(
    conn: Connection,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    writes: Arc<WriteState>,
    checkpoints: Option<Checkpoints>,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let mut all_ran = true;
        let started = std::time::Instant::now();
        let changes_before = conn.total_changes();
        let committed = match exec_cached(&conn, "BEGIN IMMEDIATE") {
            Err(e) => Err(e.to_string()),
            Ok(()) => {
                for j in &mut group {
                    all_ran &= j.run(&conn);
                }
                exec_cached(&conn, "COMMIT").map_err(|e| {
                    let _ = conn.execute_batch("ROLLBACK");
                    e.to_string()
                })
            }
        };
        let wrote = conn.total_changes() > changes_before;
        writes.record(committed.is_ok() && all_ran, wrote);
        crate::metrics::metrics().store_commit(group.len(), started.elapsed());
        for j in group {
            j.finish(committed.clone());
        }
        if wrote && let Some(c) = &checkpoints {
            c.nudge();
        }
    }
}

/// How long the checkpoint thread lets commits go by between two checkpoints under load:
/// each copies the latest version of every page the log holds, so a page written by many
/// commits in that time is copied once.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Pages of write-ahead log past which a checkpoint also restarts the log from its start
/// (briefly holding writers back), so a store under constant load keeps a bounded log.
const RESTART_PAGES: i64 = 16_000;

/// How the database thread tells the checkpoint thread that the log has grown.
struct Checkpoints {
    wake: mpsc::SyncSender<()>,
}

impl Checkpoints {
    /// Wake the checkpoint thread unless it already has a wake-up waiting.
    fn nudge(&self) {
        let _ = self.wake.try_send(());
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
fn checkpoint_thread(conn: Connection, wake: mpsc::Receiver<()>) {
    let checkpoint = |mode: &str| -> Option<i64> {
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        }) {
            Ok((_, log)) => Some(log),
            Err(e) => {
                tracing::warn!("write-ahead log checkpoint ({mode}): {e}");
                None
            }
        }
    };
    let mut dirty = false;
    loop {
        match wake.recv_timeout(Duration::from_secs(1)) {
            Ok(()) => {
                dirty = true;
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Some(log) = checkpoint("PASSIVE")
                    && log >= RESTART_PAGES
                {
                    checkpoint("RESTART");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if dirty {
                    dirty = false;
                    checkpoint("TRUNCATE");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Turn SQLite's automatic checkpoints off on `hot` (the database thread's connection) and
/// start the checkpoint thread with a connection of its own to `path`.
fn start_checkpoints(hot: &Connection, path: &Path) -> Result<Checkpoints, StoreError> {
    let ctx = "starting the checkpoint thread";
    hot.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(unavailable(ctx))?;
    let conn = Connection::open(path).map_err(unavailable(ctx))?;
    conn.busy_timeout(Duration::from_millis(250))
        .map_err(unavailable(ctx))?;
    // The checkpoint syncs the log before it copies it, and the database file after.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(unavailable(ctx))?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(unavailable(ctx))?;
    let (wake, woken) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("signet-sqlite-ckpt".into())
        .spawn(move || checkpoint_thread(conn, woken))
        .map_err(|e| StoreError::Unavailable {
            context: ctx,
            message: e.to_string(),
        })?;
    Ok(Checkpoints { wake })
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable {
                context: "creating the database directory",
                message: format!("{}: {e}", dir.display()),
            })?;
        }
        let conn = Connection::open(path).map_err(unavailable("opening the database"))?;
        let mut files = vec![path.to_owned()];
        files.extend(["-wal", "-shm"].map(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            std::path::PathBuf::from(name)
        }));
        crate::metrics::metrics().store_files(files);
        Self::setup(conn)
    }

    /// An in-memory database, for unit tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(unavailable("opening the database"))?;
        Self::setup(conn)
    }

    pub(super) fn setup(mut conn: Connection) -> Result<SqliteStore, StoreError> {
        let ctx = "configuring the database";
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(unavailable(ctx))?;
        // A new database gets 8 KiB pages: a certificate row (about 1.4 KiB, the certificate
        // in it) fits five times, where 4 KiB pages held two and left a third of each page
        // empty. Nothing changes for an existing database (its page size is fixed).
        conn.pragma_update(None, "page_size", NEW_PAGE_SIZE)
            .map_err(unavailable(ctx))?;
        // WAL with synchronous=FULL: every commit is fsynced before it returns.
        let journal = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(unavailable(ctx))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable(ctx))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(unavailable(ctx))?;
        // Each call runs in a savepoint; its journal of the pages it changes stays in memory
        // instead of spilling to a temporary file.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(unavailable(ctx))?;
        // The indexes a large store writes at random (serials are random) stay in memory:
        // up to 256 MiB of pages, taken only as the database grows.
        conn.pragma_update(None, "cache_size", -262_144)
            .map_err(unavailable(ctx))?;
        // Room for every statement the store prepares, so none is parsed twice.
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        // A file database in WAL mode gets a checkpoint thread of its own; the database
        // thread then never checkpoints inside a commit.
        let checkpoints = match conn.path().filter(|p| !p.is_empty()) {
            Some(path) if journal.eq_ignore_ascii_case("wal") => {
                let path = path.to_owned();
                Some(start_checkpoints(&conn, Path::new(&path))?)
            }
            _ => None,
        };
        let (jobs, queue) = mpsc::channel();
        let writes = Arc::new(WriteState::default());
        let thread_writes = writes.clone();
        std::thread::Builder::new()
            .name("signet-sqlite".into())
            .spawn(move || database_thread(conn, queue, thread_writes, checkpoints))
            .map_err(|e| StoreError::Unavailable {
                context: "starting the database thread",
                message: e.to_string(),
            })?;
        Ok(SqliteStore { jobs, writes })
    }

    /// What the database thread last saw of writing.
    pub(super) fn writes(&self) -> &WriteState {
        &self.writes
    }

    /// Run `f` on the database thread, inside the next group transaction; answer once that
    /// transaction is committed (or with the error that kept it from being).
    pub(super) async fn run<T, F>(&self, context: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            context,
            work: Some(f),
            result: None,
            reply,
        };
        self.jobs
            .send(Box::new(call))
            .map_err(|_| StoreError::Unavailable {
                context,
                message: "the database thread has stopped".into(),
            })?;
        answer.await.map_err(|_| StoreError::Unavailable {
            context,
            message: "the database thread dropped the call".into(),
        })?
    }
}

//! The SQLite store's connection and its database thread: opening the file, the pragmas that
//! make every commit durable, and group commit (the calls that arrive while one commit is on
//! its way to disk share the next transaction, each in a savepoint of its own).
//!
//! The database thread caps every write the CA makes, so it does as little as it can: each
//! call brings its rows encoded, and the thread runs cached prepared statements over them.
//! It does not wait for the disk either. A file database's group is committed to the
//! write-ahead log, and its calls go to the sync thread (`signet-sqlite-sync`). That thread
//! fsyncs the log and only then answers them, while the database thread runs the next group.
//! So every caller is still answered only after the commit holding its work is on disk, and
//! a group's fsync also covers every group before it. Reads wait the same way: nothing
//! written is shown to anyone before it is durable. Checkpoints (copying the log into the
//! database file) run on a thread and connection of their own (`checkpoint`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::checkpoint::{Checkpoints, Gate, start_checkpoints};
use super::error::unavailable;
use super::schema::migrate;
use crate::clock::unix_now;
use crate::store::error::StoreError;

/// The SQLite store. All work goes to one database thread that owns the connection and
/// commits in groups: the calls that arrive while a group is being run are run in the next
/// transaction, each inside a savepoint of its own, and groups committed while one fsync is
/// on its way to disk share the next. Every caller is answered only after the commit that
/// holds its work is durable.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn Job>>,
    writes: Arc<WriteState>,
    /// The database file; `None` in memory.
    file: Option<Arc<PathBuf>>,
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

/// A committed group on its way to the sync thread.
struct Committed {
    /// When the group's transaction began: the commit latency runs until it is durable.
    started: std::time::Instant,
    group: Vec<Box<dyn Job>>,
    committed: Result<(), String>,
    all_ran: bool,
    wrote: bool,
}

/// Where the database thread's groups go once committed.
enum Answer {
    /// An in-memory database: answer at once (nothing to sync).
    AtOnce(Option<Checkpoints>),
    /// A file database: the sync thread fsyncs the log, then answers. Each group's write
    /// transaction takes its turn at the checkpoint thread's gate.
    AfterSync(mpsc::Sender<Committed>, Arc<Gate>),
}

/// The database thread: take a call, gather those already waiting, run them all in one
/// transaction, commit once, and hand the group to be answered once the commit is durable.
fn database_thread(
    conn: Connection,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    writes: Arc<WriteState>,
    answer: Answer,
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
        let turn = match &answer {
            Answer::AfterSync(_, gate) => Some(gate.writer_turn()),
            Answer::AtOnce(_) => None,
        };
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
        drop(turn);
        let done = Committed {
            started,
            group,
            committed,
            all_ran,
            wrote: conn.total_changes() > changes_before,
        };
        match &answer {
            Answer::AtOnce(checkpoints) => finish(vec![done], Ok(()), &writes, checkpoints),
            Answer::AfterSync(sync, _) => {
                if let Err(mpsc::SendError(done)) = sync.send(done) {
                    let gone = Err("the store's sync thread has stopped".to_owned());
                    finish(vec![done], gone, &writes, &None);
                }
            }
        }
    }
    // The connection closes after this; if it is the last one, SQLite checkpoints the log
    // into the database file then, and must sync both as it does so.
    let _ = conn.pragma_update(None, "synchronous", "FULL");
}

/// Answer the calls of committed groups: `synced` says whether the log reached the disk
/// after their commits.
fn finish(
    done: Vec<Committed>,
    synced: Result<(), String>,
    writes: &WriteState,
    checkpoints: &Option<Checkpoints>,
) {
    let mut wrote = false;
    for c in done {
        crate::metrics::metrics().store_commit(c.group.len(), c.started.elapsed());
        let result = c.committed.and(synced.clone());
        writes.record(result.is_ok() && c.all_ran, c.wrote);
        wrote |= c.wrote;
        for j in c.group {
            j.finish(result.clone());
        }
    }
    if wrote && let Some(c) = checkpoints {
        c.nudge();
    }
}

/// The sync thread: take the committed groups waiting (in commit order), fsync the
/// write-ahead log once for all of them if any wrote, then answer their calls. A failed
/// fsync fails every call of those groups (reads too: what they saw may not be durable).
fn sync_thread(
    wal: PathBuf,
    groups: mpsc::Receiver<Committed>,
    writes: Arc<WriteState>,
    checkpoints: Option<Checkpoints>,
) {
    let mut log: Option<(std::fs::File, u64)> = None;
    while let Ok(first) = groups.recv() {
        let mut done = vec![first];
        while let Ok(more) = groups.try_recv() {
            done.push(more);
        }
        let synced = if done.iter().any(|c| c.wrote) {
            sync_log(&wal, &mut log)
        } else {
            Ok(())
        };
        if let Err(e) = &synced {
            tracing::error!("syncing the write-ahead log {}: {e}", wal.display());
        }
        finish(done, synced, &writes, &checkpoints);
    }
}

/// fdatasync the write-ahead log, reopening it if the file at `wal` is no longer the one
/// held open (SQLite deletes and recreates it only when no connection is open, but a
/// sync must never go to a file SQLite no longer writes).
fn sync_log(wal: &Path, log: &mut Option<(std::fs::File, u64)>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(wal).map_err(|e| e.to_string())?.ino();
    let file = match log {
        Some((f, held)) if *held == ino => f,
        _ => {
            let f = std::fs::File::open(wal).map_err(|e| e.to_string())?;
            let ino = f.metadata().map_err(|e| e.to_string())?.ino();
            &mut log.insert((f, ino)).0
        }
    };
    file.sync_data().map_err(|e| e.to_string())
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
        // WAL with synchronous=FULL while migrating: every commit is fsynced before it
        // returns.
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
        // 32 MiB of page cache: the index pages a large store writes at random (serials are
        // random) mostly stay in memory. SQLite scans its whole page-cache hash at the end of
        // many transactions, so a far larger cache costs the database thread more than the
        // reads it saves (256 MiB: 17% of its time in that scan).
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(unavailable(ctx))?;
        // Room for every statement the store prepares, so none is parsed twice.
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        let writes = Arc::new(WriteState::default());
        let file = conn
            .path()
            .filter(|p| !p.is_empty() && journal.eq_ignore_ascii_case("wal"))
            .map(PathBuf::from);
        let answer = match file.clone() {
            None => Answer::AtOnce(None),
            Some(path) => {
                // A file database in WAL mode: a checkpoint thread of its own (the database
                // thread never checkpoints inside a commit), and the sync thread fsyncs the
                // log after each group, so commits need not (synchronous=NORMAL syncs only
                // around checkpoints, which this connection no longer runs).
                let checkpoints = start_checkpoints(&conn, &path)?;
                let gate = checkpoints.gate();
                conn.pragma_update(None, "synchronous", "NORMAL")
                    .map_err(unavailable(ctx))?;
                let mut wal = path.into_os_string();
                wal.push("-wal");
                let (sync, groups) = mpsc::channel();
                let sync_writes = writes.clone();
                std::thread::Builder::new()
                    .name("signet-sqlite-sync".into())
                    .spawn(move || {
                        sync_thread(PathBuf::from(wal), groups, sync_writes, Some(checkpoints))
                    })
                    .map_err(|e| StoreError::Unavailable {
                        context: "starting the sync thread",
                        message: e.to_string(),
                    })?;
                Answer::AfterSync(sync, gate)
            }
        };
        let (jobs, queue) = mpsc::channel();
        let thread_writes = writes.clone();
        std::thread::Builder::new()
            .name("signet-sqlite".into())
            .spawn(move || database_thread(conn, queue, thread_writes, answer))
            .map_err(|e| StoreError::Unavailable {
                context: "starting the database thread",
                message: e.to_string(),
            })?;
        Ok(SqliteStore {
            jobs,
            writes,
            file: file.map(Arc::new),
        })
    }

    /// What the database thread last saw of writing.
    pub(super) fn writes(&self) -> &WriteState {
        &self.writes
    }

    /// The database file; `None` for an in-memory database.
    pub(super) fn file(&self) -> Option<&Path> {
        self.file.as_deref().map(PathBuf::as_path)
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

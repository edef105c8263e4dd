//! The SQLite store's connection and its database thread: opening the file, the pragmas that
//! make every commit durable, and group commit (the calls that arrive while one commit is on
//! its way to disk share the next transaction, each in a savepoint of its own).

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
        let result = match conn.execute_batch("SAVEPOINT call") {
            Err(e) => Err(unavailable(self.context)(e)),
            Ok(()) => {
                let r = work(conn);
                // A failed call leaves nothing behind; the others in the group go on.
                let end = if r.is_ok() {
                    "RELEASE call"
                } else {
                    "ROLLBACK TO call; RELEASE call"
                };
                match conn.execute_batch(end) {
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

/// The database thread: take a call, gather those already waiting, run them all in one
/// transaction, commit once, answer all.
fn database_thread(conn: Connection, jobs: mpsc::Receiver<Box<dyn Job>>, writes: Arc<WriteState>) {
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
        let committed = match conn.execute_batch("BEGIN IMMEDIATE") {
            Err(e) => Err(e.to_string()),
            Ok(()) => {
                for j in &mut group {
                    all_ran &= j.run(&conn);
                }
                conn.execute_batch("COMMIT").map_err(|e| {
                    let _ = conn.execute_batch("ROLLBACK");
                    e.to_string()
                })
            }
        };
        writes.record(
            committed.is_ok() && all_ran,
            conn.total_changes() > changes_before,
        );
        crate::metrics::metrics().store_commit(group.len(), started.elapsed());
        for j in group {
            j.finish(committed.clone());
        }
    }
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
        // WAL with synchronous=FULL: every commit is fsynced before it returns.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .map_err(unavailable(ctx))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(unavailable(ctx))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(unavailable(ctx))?;
        migrate(&mut conn)?;
        let (jobs, queue) = mpsc::channel();
        let writes = Arc::new(WriteState::default());
        let thread_writes = writes.clone();
        std::thread::Builder::new()
            .name("signet-sqlite".into())
            .spawn(move || database_thread(conn, queue, thread_writes))
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

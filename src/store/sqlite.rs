//! The embedded SQLite store: one file, WAL journal, `synchronous=FULL` so a commit is on disk
//! before the caller answers; schema migrations keyed by `PRAGMA user_version`. Calls run on
//! tokio's blocking pool, never on the async executor.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::oneshot;

use rusqlite::types::Value;

use super::{
    BeginOutcome, CaKeyRecord, CertFilter, CertPage, CertStatus, CertificateRecord, CrlRecord,
    CrlRevocation, IssuerRecord, MAX_PAGE_SIZE, ReleaseOutcome, ReleaseRecord, RevocationEvent,
    RevocationEventKind, RevocationInfo, RevocationWatch, RevokeOutcome, RevokeRecord, Store,
    StoreError, TokenJob, TokenJobState, UnpublishedRevocation,
};
use crate::audit::{self, AuditEntry, AuditEvent, Checkpoint};
use crate::pki::RevocationReason;

/// Schema migrations, applied in order; `user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE ca_keys (
    label       TEXT PRIMARY KEY,
    key_type    TEXT NOT NULL,
    spki_der    BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE issuers (
    name        TEXT PRIMARY KEY,
    parent      TEXT REFERENCES issuers(name),
    key_label   TEXT NOT NULL REFERENCES ca_keys(label),
    signature   TEXT NOT NULL,
    serial      TEXT NOT NULL UNIQUE,
    cert_der    BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE certificates (
    serial          TEXT PRIMARY KEY,
    issuer          TEXT NOT NULL REFERENCES issuers(name),
    ra              TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    request_digest  TEXT NOT NULL,
    profile         TEXT NOT NULL,
    subject         TEXT NOT NULL,
    request_json    TEXT NOT NULL,
    csr_der         BLOB NOT NULL,
    tbs_der         BLOB NOT NULL,
    cert_der        BLOB,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'valid', 'revoked')),
    not_before      INTEGER NOT NULL,
    not_after       INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    issued_at       INTEGER,
    UNIQUE (ra, request_id),
    CHECK ((status = 'pending') = (cert_der IS NULL))
);
CREATE INDEX certificates_by_status_expiry ON certificates (status, not_after);
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    object          TEXT NOT NULL,
    request_digest  TEXT,
    detail          TEXT NOT NULL,
    prev_hash       TEXT NOT NULL,
    hash            TEXT NOT NULL
);
"#,
    // 2: the life cycle. Renewals link to the certificate they renew; revocations carry
    // the RFC 5280 reason, who revoked and when, and are idempotent per RA request id.
    r#"
ALTER TABLE certificates ADD COLUMN renewed_from TEXT REFERENCES certificates(serial);
ALTER TABLE certificates ADD COLUMN revoked_at INTEGER;
ALTER TABLE certificates ADD COLUMN revocation_reason TEXT;
ALTER TABLE certificates ADD COLUMN revocation_reported_at INTEGER;
ALTER TABLE certificates ADD COLUMN revocation_comment TEXT;
ALTER TABLE certificates ADD COLUMN revoked_by TEXT;
CREATE INDEX certificates_by_renewed_from ON certificates (renewed_from);
CREATE INDEX certificates_by_profile ON certificates (profile, serial);
CREATE INDEX certificates_by_ra ON certificates (ra, serial);
CREATE TABLE revocation_requests (
    ra              TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    serial          TEXT NOT NULL REFERENCES certificates(serial),
    request_digest  TEXT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('revoked', 'already_revoked')),
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (ra, request_id)
);
"#,
    // 3: CRLs. Numbers are reserved per issuer before signing and never handed out twice;
    // each revocation notes when it first appeared in a published CRL.
    r#"
CREATE TABLE crl_numbers (
    issuer      TEXT PRIMARY KEY REFERENCES issuers(name),
    last        INTEGER NOT NULL
);
CREATE TABLE crls (
    issuer      TEXT NOT NULL REFERENCES issuers(name),
    number      INTEGER NOT NULL,
    this_update INTEGER NOT NULL,
    next_update INTEGER NOT NULL,
    der         BLOB NOT NULL,
    PRIMARY KEY (issuer, number)
);
ALTER TABLE certificates ADD COLUMN crl_published_at INTEGER;
CREATE INDEX certificates_for_crl ON certificates (issuer, status, not_after);
"#,
    // 4: hold and release. Every revocation, hold and release is an event kept for good (a
    // released hold stays in the history with when it was first published); release requests
    // are idempotent per RA request id like revocations. Revocations recorded before this
    // migration become their certificates' first events.
    r#"
CREATE TABLE revocation_events (
    seq          INTEGER PRIMARY KEY,
    serial       TEXT NOT NULL REFERENCES certificates(serial),
    kind         TEXT NOT NULL CHECK (kind IN ('revoked', 'held', 'released')),
    reason       TEXT,
    actor        TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    recorded_at  INTEGER NOT NULL,
    reported_at  INTEGER,
    published_at INTEGER,
    comment      TEXT NOT NULL
);
CREATE INDEX revocation_events_by_serial ON revocation_events (serial, seq);
INSERT INTO revocation_events (serial, kind, reason, actor, request_id, recorded_at, reported_at, published_at, comment)
    SELECT c.serial,
           CASE c.revocation_reason WHEN 'certificateHold' THEN 'held' ELSE 'revoked' END,
           c.revocation_reason, COALESCE(c.revoked_by, ''),
           COALESCE((SELECT r.request_id FROM revocation_requests r
                     WHERE r.serial = c.serial AND r.outcome = 'revoked' LIMIT 1), ''),
           c.revoked_at, c.revocation_reported_at, c.crl_published_at,
           COALESCE(c.revocation_comment, '')
    FROM certificates c WHERE c.status = 'revoked' ORDER BY c.revoked_at, c.serial;
CREATE TABLE release_requests (
    ra              TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    serial          TEXT NOT NULL REFERENCES certificates(serial),
    request_digest  TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (ra, request_id)
);
CREATE INDEX certificates_unpublished ON certificates (status, crl_published_at);
"#,
    // Token personalisation: a journal per request id (the exact CSR sent, so a retry sends
    // the same request and gets the same certificate), and the wrong-PIN count per token.
    r#"
CREATE TABLE token_jobs (
    request_id      TEXT PRIMARY KEY,
    token_serial    TEXT NOT NULL,
    label           TEXT NOT NULL,
    key_id          BLOB NOT NULL,
    key_type        TEXT NOT NULL,
    request_digest  TEXT NOT NULL,
    csr_der         BLOB NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('generated', 'issued', 'written', 'abandoned')),
    cert_der        BLOB,
    chain_json      TEXT NOT NULL,
    detail          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE TABLE token_pin_failures (
    token_serial    TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
"#,
    // Timestamps and evidence: signed checkpoints of the audit chain; the TSA's serial
    // high-water mark and the time of its latest token; audit entries found by object.
    r#"
CREATE TABLE audit_checkpoints (
    seq         INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    key_label   TEXT NOT NULL,
    signature   BLOB NOT NULL
);
CREATE TABLE tsa_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    next_serial     INTEGER NOT NULL,
    last_time_ms    INTEGER NOT NULL
);
CREATE INDEX audit_log_by_object ON audit_log (object, seq);
"#,
];

/// The SQLite store. All work goes to one database thread that owns the connection and
/// commits in groups: the calls that arrive while one commit is on its way to disk are run
/// in the next transaction, each inside a savepoint of its own, and share one fsync. Every
/// caller is answered only after the commit that holds its work is durable.
#[derive(Clone)]
pub struct SqliteStore {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

/// Largest number of calls sharing one commit.
const MAX_GROUP: usize = 128;

/// A call waiting for the database thread.
trait Job: Send {
    /// Run inside the open transaction (in a savepoint of its own).
    fn run(&mut self, conn: &Connection);
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
    fn run(&mut self, conn: &Connection) {
        let Some(work) = self.work.take() else {
            return;
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
        self.result = Some(result);
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
fn database_thread(conn: Connection, jobs: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let committed = match conn.execute_batch("BEGIN IMMEDIATE") {
            Err(e) => Err(e.to_string()),
            Ok(()) => {
                for j in &mut group {
                    j.run(&conn);
                }
                conn.execute_batch("COMMIT").map_err(|e| {
                    let _ = conn.execute_batch("ROLLBACK");
                    e.to_string()
                })
            }
        };
        for j in group {
            j.finish(committed.clone());
        }
    }
}

fn unavailable(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Unavailable {
        context,
        message: e.to_string(),
    }
}

use crate::clock::unix_now as now;

impl SqliteStore {
    /// Checkpoints in the order (and limit) `tail` gives, e.g. `ORDER BY seq`.
    async fn query_checkpoints(&self, tail: &'static str) -> Result<Vec<Checkpoint>, StoreError> {
        const CTX: &str = "reading audit checkpoints";
        self.run(CTX, move |conn| {
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
        Self::setup(conn)
    }

    /// An in-memory database, for unit tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(unavailable("opening the database"))?;
        Self::setup(conn)
    }

    fn setup(mut conn: Connection) -> Result<SqliteStore, StoreError> {
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
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(unavailable(ctx))?;
        let version = usize::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {version}")))?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {version} is newer than this signet ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Exclusive)
                .map_err(unavailable("migrating the schema"))?;
            tx.execute_batch(m)
                .map_err(unavailable("migrating the schema"))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(unavailable("migrating the schema"))?;
            tx.commit().map_err(unavailable("migrating the schema"))?;
        }
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("signet-sqlite".into())
            .spawn(move || database_thread(conn, queue))
            .map_err(|e| StoreError::Unavailable {
                context: "starting the database thread",
                message: e.to_string(),
            })?;
        Ok(SqliteStore { jobs })
    }

    /// Run `f` on the database thread, inside the next group transaction; answer once that
    /// transaction is committed (or with the error that kept it from being).
    async fn run<T, F>(&self, context: &'static str, f: F) -> Result<T, StoreError>
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

const CERT_COLUMNS: &str = "serial, issuer, ra, request_id, request_digest, profile, subject, \
    request_json, csr_der, tbs_der, cert_der, status, not_before, not_after, created_at, issued_at, \
    renewed_from, revoked_at, revocation_reason, revocation_reported_at, revocation_comment, \
    revoked_by, crl_published_at";

/// The revocation columns as read, before the reason is parsed.
struct RawRevocation {
    revoked_at: Option<i64>,
    reason: Option<String>,
    reported_at: Option<i64>,
    comment: Option<String>,
    revoked_by: Option<String>,
    published_at: Option<i64>,
}

type RawCert = (CertificateRecord, String, RawRevocation);

fn cert_from_row(r: &Row<'_>) -> rusqlite::Result<RawCert> {
    let status: String = r.get(11)?;
    let raw = RawRevocation {
        revoked_at: r.get(17)?,
        reason: r.get(18)?,
        reported_at: r.get(19)?,
        comment: r.get(20)?,
        revoked_by: r.get(21)?,
        published_at: r.get(22)?,
    };
    Ok((
        CertificateRecord {
            serial: r.get(0)?,
            issuer: r.get(1)?,
            ra: r.get(2)?,
            request_id: r.get(3)?,
            request_digest: r.get(4)?,
            profile: r.get(5)?,
            subject: r.get(6)?,
            request_json: r.get(7)?,
            csr_der: r.get(8)?,
            tbs_der: r.get(9)?,
            cert_der: r.get(10)?,
            status: CertStatus::Pending,
            not_before: r.get(12)?,
            not_after: r.get(13)?,
            created_at: r.get(14)?,
            issued_at: r.get(15)?,
            renewed_from: r.get(16)?,
            revocation: None,
        },
        status,
        raw,
    ))
}

fn finish_cert(row: RawCert) -> Result<CertificateRecord, StoreError> {
    let (mut rec, status, raw) = row;
    rec.status = CertStatus::parse(&status)?;
    rec.revocation = match (rec.status, raw.revoked_at, raw.reason) {
        (CertStatus::Revoked, Some(revoked_at), Some(reason)) => Some(RevocationInfo {
            reason: reason
                .parse::<RevocationReason>()
                .map_err(|e| StoreError::Corrupt(format!("certificate {}: {e}", rec.serial)))?,
            revoked_at,
            reported_at: raw.reported_at,
            comment: raw.comment.unwrap_or_default(),
            revoked_by: raw.revoked_by.unwrap_or_default(),
            first_published_at: raw.published_at,
        }),
        (CertStatus::Revoked, _, _) => {
            return Err(StoreError::Corrupt(format!(
                "certificate {} is revoked without a revocation time and reason",
                rec.serial
            )));
        }
        _ => None,
    };
    Ok(rec)
}

fn query_cert(
    conn: &Connection,
    where_clause: &str,
    params: impl rusqlite::Params,
) -> Result<Option<CertificateRecord>, StoreError> {
    let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE {where_clause}");
    conn.query_row(&sql, params, cert_from_row)
        .optional()
        .map_err(unavailable("reading a certificate"))?
        .map(finish_cert)
        .transpose()
}

/// Append `event` to the audit chain inside the caller's transaction.
fn append_audit_tx(conn: &Connection, event: &AuditEvent) -> Result<AuditEntry, StoreError> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(unavailable("reading the audit chain"))?;
    let (seq, prev_hash) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, audit::genesis_hash()),
    };
    let at = now();
    let hash = audit::entry_hash(&prev_hash, seq, at, event);
    conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, object, request_digest, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            seq,
            at,
            event.actor,
            event.action,
            event.object,
            event.request_digest,
            event.detail,
            prev_hash,
            hash
        ],
    )
    .map_err(unavailable("appending to the audit log"))?;
    Ok(AuditEntry {
        seq,
        at,
        event: event.clone(),
        prev_hash,
        hash,
    })
}

/// Append a revocation event inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
fn append_event(
    conn: &Connection,
    serial: &str,
    kind: RevocationEventKind,
    reason: Option<RevocationReason>,
    actor: &str,
    request_id: &str,
    recorded_at: i64,
    reported_at: Option<i64>,
    comment: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO revocation_events (serial, kind, reason, actor, request_id, recorded_at, \
         reported_at, published_at, comment) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)",
        params![
            serial,
            kind.as_str(),
            reason.map(RevocationReason::name),
            actor,
            request_id,
            recorded_at,
            reported_at,
            comment
        ],
    )
    .map_err(unavailable("recording a revocation event"))?;
    Ok(())
}

/// A hold is ending (released, or revoked for good): keep in its event when a CRL first
/// showed it, before the certificate's columns move on.
fn close_hold(conn: &Connection, serial: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE revocation_events SET published_at = \
             (SELECT crl_published_at FROM certificates WHERE serial = ?1) \
         WHERE seq = (SELECT MAX(seq) FROM revocation_events WHERE serial = ?1 AND kind = 'held')",
        [serial],
    )
    .map_err(unavailable("closing a hold"))?;
    Ok(())
}

/// Page tokens name the last serial of the previous page; the prefix versions the format.
const PAGE_TOKEN_PREFIX: &str = "s1.";

fn page_token_after(serial: &str) -> String {
    format!("{PAGE_TOKEN_PREFIX}{serial}")
}

fn parse_page_token(token: &str) -> Result<String, StoreError> {
    let serial = token
        .strip_prefix(PAGE_TOKEN_PREFIX)
        .filter(|s| {
            (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .ok_or_else(|| {
            StoreError::InvalidPageToken("not a token from a previous page of this listing".into())
        })?;
    Ok(serial.to_owned())
}

/// An insert's error: `Duplicate` for a unique-key violation, `Unavailable` otherwise.
fn duplicate_or_unavailable(
    what: String,
    context: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        if is_constraint(&e) {
            StoreError::Duplicate { what }
        } else {
            unavailable(context)(e)
        }
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

#[async_trait]
impl Store for SqliteStore {
    async fn record_ca_key(&self, key: CaKeyRecord, audit: AuditEvent) -> Result<(), StoreError> {
        self.run("recording a CA key", move |conn| {
            let tx: &Connection = conn;
            tx.execute(
                "INSERT INTO ca_keys (label, key_type, spki_der, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![key.label, key.key_type, key.spki_der, key.created_at],
            )
            .map_err(duplicate_or_unavailable(format!("CA key {:?}", key.label), "recording a CA key"))?;
            append_audit_tx(tx, &audit)?;
            Ok(())
        })
        .await
    }

    async fn ca_key(&self, label: &str) -> Result<Option<CaKeyRecord>, StoreError> {
        let label = label.to_owned();
        self.run("reading a CA key", move |conn| {
            conn.query_row(
                "SELECT label, key_type, spki_der, created_at FROM ca_keys WHERE label = ?1",
                [label],
                |r| {
                    Ok(CaKeyRecord {
                        label: r.get(0)?,
                        key_type: r.get(1)?,
                        spki_der: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(unavailable("reading a CA key"))
        })
        .await
    }

    async fn record_issuer(
        &self,
        issuer: IssuerRecord,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        self.run("recording an issuer", move |conn| {
            let tx: &Connection = conn;
            tx.execute(
                "INSERT INTO issuers (name, parent, key_label, signature, serial, cert_der, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    issuer.name,
                    issuer.parent,
                    issuer.key_label,
                    issuer.signature,
                    issuer.serial,
                    issuer.cert_der,
                    issuer.created_at
                ],
            )
            .map_err(duplicate_or_unavailable(format!("issuer {:?}", issuer.name), "recording an issuer"))?;
            append_audit_tx(tx, &audit)?;
            Ok(())
        })
        .await
    }

    async fn issuers(&self) -> Result<Vec<IssuerRecord>, StoreError> {
        self.run("reading issuers", |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT name, parent, key_label, signature, serial, cert_der, created_at \
                     FROM issuers ORDER BY rowid",
                )
                .map_err(unavailable("reading issuers"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(IssuerRecord {
                        name: r.get(0)?,
                        parent: r.get(1)?,
                        key_label: r.get(2)?,
                        signature: r.get(3)?,
                        serial: r.get(4)?,
                        cert_der: r.get(5)?,
                        created_at: r.get(6)?,
                    })
                })
                .map_err(unavailable("reading issuers"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(unavailable("reading issuers"))
        })
        .await
    }

    async fn begin_issuance(&self, p: CertificateRecord) -> Result<BeginOutcome, StoreError> {
        const CTX: &str = "recording a pending certificate";
        self.run(CTX, move |conn| {
            let tx: &Connection = conn;
            if let Some(existing) = query_cert(
                tx,
                "ra = ?1 AND request_id = ?2",
                params![p.ra, p.request_id],
            )? {
                let outcome = if existing.request_digest != p.request_digest {
                    BeginOutcome::Conflict(existing)
                } else if existing.status == CertStatus::Pending {
                    BeginOutcome::Resume(existing)
                } else {
                    BeginOutcome::Done(existing)
                };
                return Ok(outcome);
            }
            let inserted = tx.execute(
                "INSERT INTO certificates (serial, issuer, ra, request_id, request_digest, \
                 profile, subject, request_json, csr_der, tbs_der, cert_der, status, not_before, \
                 not_after, created_at, issued_at, renewed_from) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, 'pending', ?11, ?12, ?13, NULL, ?14)",
                params![
                    p.serial,
                    p.issuer,
                    p.ra,
                    p.request_id,
                    p.request_digest,
                    p.profile,
                    p.subject,
                    p.request_json,
                    p.csr_der,
                    p.tbs_der,
                    p.not_before,
                    p.not_after,
                    p.created_at,
                    p.renewed_from
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_constraint(&e) => {
                    // The (ra, request_id) pair was checked above inside this transaction,
                    // so a constraint here is the serial.
                    return Ok(BeginOutcome::SerialTaken);
                }
                Err(e) => return Err(unavailable(CTX)(e)),
            }
            let mut rec = p;
            rec.status = CertStatus::Pending;
            rec.cert_der = None;
            rec.issued_at = None;
            rec.revocation = None;
            Ok(BeginOutcome::Started(rec))
        })
        .await
    }

    async fn complete_issuance(
        &self,
        serial: &str,
        cert_der: &[u8],
        issued_at: i64,
        audit: AuditEvent,
    ) -> Result<CertificateRecord, StoreError> {
        const CTX: &str = "committing a certificate";
        let serial = serial.to_owned();
        let cert_der = cert_der.to_vec();
        self.run(CTX, move |conn| {
            let tx: &Connection = conn;
            let n = tx
                .execute(
                    "UPDATE certificates SET cert_der = ?1, status = 'valid', issued_at = ?2 \
                     WHERE serial = ?3 AND status = 'pending'",
                    params![cert_der, issued_at, serial],
                )
                .map_err(unavailable(CTX))?;
            if n != 1 {
                return Err(StoreError::NotFound(format!(
                    "no pending certificate with serial {serial}"
                )));
            }
            append_audit_tx(tx, &audit)?;
            let rec = query_cert(tx, "serial = ?1", [&serial])?
                .ok_or_else(|| StoreError::Corrupt(format!("certificate {serial} vanished")))?;
            Ok(rec)
        })
        .await
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>, StoreError> {
        let serial = serial.to_owned();
        self.run("reading a certificate", move |conn| {
            query_cert(conn, "serial = ?1", [serial])
        })
        .await
    }

    async fn certificate_by_request(
        &self,
        ra: &str,
        request_id: &str,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        let (ra, request_id) = (ra.to_owned(), request_id.to_owned());
        self.run("reading a certificate", move |conn| {
            query_cert(conn, "ra = ?1 AND request_id = ?2", params![ra, request_id])
        })
        .await
    }

    async fn revoke(
        &self,
        rev: RevokeRecord,
        audit: AuditEvent,
    ) -> Result<RevokeOutcome, StoreError> {
        const CTX: &str = "revoking a certificate";
        self.run(CTX, move |conn| {
            let tx: &Connection = conn;
            let seen: Option<(String, String, String)> = tx
                .query_row(
                    "SELECT serial, request_digest, outcome FROM revocation_requests \
                     WHERE ra = ?1 AND request_id = ?2",
                    params![rev.ra, rev.request_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(unavailable(CTX))?;
            if let Some((serial, digest, outcome)) = seen {
                if digest != rev.request_digest {
                    return Ok(RevokeOutcome::Conflict { serial });
                }
                let rec = query_cert(tx, "serial = ?1", [&serial])?.ok_or_else(|| {
                    StoreError::Corrupt(format!("revoked certificate {serial} vanished"))
                })?;
                return match outcome.as_str() {
                    "revoked" => Ok(RevokeOutcome::Revoked(rec)),
                    "already_revoked" => Ok(RevokeOutcome::AlreadyRevoked(rec)),
                    other => Err(StoreError::Corrupt(format!(
                        "unknown revocation outcome {other:?}"
                    ))),
                };
            }
            let Some(rec) = query_cert(tx, "serial = ?1", [&rev.serial])? else {
                return Ok(RevokeOutcome::NotFound);
            };
            let held = rec
                .revocation
                .as_ref()
                .is_some_and(|r| r.reason == RevocationReason::CertificateHold);
            let outcome = match rec.status {
                // Nothing to record: a retry is answered from the certificate's state then.
                CertStatus::Pending => return Ok(RevokeOutcome::NotIssued),
                // A hold may become final; a hold again, or any final revocation, is as it was.
                CertStatus::Revoked if !held || rev.reason == RevocationReason::CertificateHold => {
                    "already_revoked"
                }
                CertStatus::Revoked | CertStatus::Valid => {
                    if held {
                        close_hold(tx, &rev.serial)?;
                    }
                    // crl_published_at starts afresh: the final entry has yet to be published.
                    let n = tx
                        .execute(
                            "UPDATE certificates SET status = 'revoked', revoked_at = ?1, \
                             revocation_reason = ?2, revocation_reported_at = ?3, \
                             revocation_comment = ?4, revoked_by = ?5, crl_published_at = NULL \
                             WHERE serial = ?6 AND status = ?7",
                            params![
                                rev.revoked_at,
                                rev.reason.name(),
                                rev.reported_at,
                                rev.comment,
                                rev.ra,
                                rev.serial,
                                rec.status.as_str()
                            ],
                        )
                        .map_err(unavailable(CTX))?;
                    if n != 1 {
                        return Err(StoreError::Corrupt(format!(
                            "certificate {} changed inside a transaction",
                            rev.serial
                        )));
                    }
                    let kind = if rev.reason == RevocationReason::CertificateHold {
                        RevocationEventKind::Held
                    } else {
                        RevocationEventKind::Revoked
                    };
                    append_event(
                        tx,
                        &rev.serial,
                        kind,
                        Some(rev.reason),
                        &rev.ra,
                        &rev.request_id,
                        rev.revoked_at,
                        rev.reported_at,
                        &rev.comment,
                    )?;
                    append_audit_tx(tx, &audit)?;
                    "revoked"
                }
            };
            tx.execute(
                "INSERT INTO revocation_requests (ra, request_id, serial, request_digest, outcome, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    rev.ra,
                    rev.request_id,
                    rev.serial,
                    rev.request_digest,
                    outcome,
                    now()
                ],
            )
            .map_err(unavailable(CTX))?;
            let rec = query_cert(tx, "serial = ?1", [&rev.serial])?.ok_or_else(|| {
                StoreError::Corrupt(format!("certificate {} vanished", rev.serial))
            })?;
            Ok(if outcome == "revoked" {
                RevokeOutcome::Revoked(rec)
            } else {
                RevokeOutcome::AlreadyRevoked(rec)
            })
        })
        .await
    }

    async fn list_certificates(
        &self,
        filter: CertFilter,
        page_token: Option<String>,
        page_size: usize,
    ) -> Result<CertPage, StoreError> {
        const CTX: &str = "listing certificates";
        let after = page_token.as_deref().map(parse_page_token).transpose()?;
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self.run(CTX, move |conn| {
            let mut clauses: Vec<String> = Vec::new();
            let mut values: Vec<Value> = Vec::new();
            let bind = |clause: &str, v: Value, values: &mut Vec<Value>| {
                values.push(v);
                clause.replace('?', &format!("?{}", values.len()))
            };
            match filter.status {
                Some(st) => clauses.push(bind(
                    "status = ?",
                    Value::Text(st.as_str().into()),
                    &mut values,
                )),
                None => clauses.push("status <> 'pending'".into()),
            }
            if let Some(profiles) = &filter.profiles {
                if profiles.is_empty() {
                    return Ok(CertPage {
                        records: Vec::new(),
                        next_page_token: None,
                    });
                }
                let marks: Vec<String> = profiles
                    .iter()
                    .map(|p| bind("?", Value::Text(p.clone()), &mut values))
                    .collect();
                clauses.push(format!("profile IN ({})", marks.join(", ")));
            }
            if let Some(p) = &filter.profile {
                clauses.push(bind("profile = ?", Value::Text(p.clone()), &mut values));
            }
            if let Some(ra) = &filter.ra {
                clauses.push(bind("ra = ?", Value::Text(ra.clone()), &mut values));
            }
            if let Some(i) = &filter.issuer {
                clauses.push(bind("issuer = ?", Value::Text(i.clone()), &mut values));
            }
            if let Some(text) = &filter.subject_contains {
                // instr() is a plain substring test: no LIKE wildcards to escape.
                clauses.push(bind(
                    "instr(subject, ?) > 0",
                    Value::Text(text.clone()),
                    &mut values,
                ));
            }
            if let Some(t) = filter.expiring_before {
                clauses.push(bind("not_after < ?", Value::Integer(t), &mut values));
            }
            if let Some(serial) = &after {
                clauses.push(bind("serial > ?", Value::Text(serial.clone()), &mut values));
            }
            // One row more than the page tells whether another page follows.
            let limit = bind("?", Value::Integer(page_size as i64 + 1), &mut values);
            let sql = format!(
                "SELECT {CERT_COLUMNS} FROM certificates WHERE {} ORDER BY serial LIMIT {limit}",
                clauses.join(" AND ")
            );
            let mut stmt = conn.prepare(&sql).map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), cert_from_row)
                .map_err(unavailable(CTX))?;
            let mut records = Vec::with_capacity(page_size + 1);
            for row in rows {
                records.push(finish_cert(row.map_err(unavailable(CTX))?)?);
            }
            let next_page_token = if records.len() > page_size {
                records.truncate(page_size);
                records.last().map(|r| page_token_after(&r.serial))
            } else {
                None
            };
            Ok(CertPage {
                records,
                next_page_token,
            })
        })
        .await
    }

    async fn count_certificates(&self) -> Result<u64, StoreError> {
        self.run("counting certificates", |conn| {
            conn.query_row("SELECT COUNT(*) FROM certificates", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(unavailable("counting certificates"))
        })
        .await
    }

    async fn next_crl_number(&self, issuer: &str) -> Result<u64, StoreError> {
        const CTX: &str = "reserving a CRL number";
        let issuer = issuer.to_owned();
        self.run(CTX, move |conn| {
            let n: i64 = conn
                .query_row(
                    "INSERT INTO crl_numbers (issuer, last) VALUES (?1, 1) \
                     ON CONFLICT (issuer) DO UPDATE SET last = last + 1 RETURNING last",
                    [&issuer],
                    |r| r.get(0),
                )
                .map_err(unavailable(CTX))?;
            u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("CRL number {n}")))
        })
        .await
    }

    async fn record_crl(
        &self,
        crl: CrlRecord,
        serials: Vec<String>,
        audit: AuditEvent,
    ) -> Result<(), StoreError> {
        const CTX: &str = "recording a CRL";
        self.run(CTX, move |conn| {
            let number = i64::try_from(crl.number)
                .map_err(|_| StoreError::Corrupt(format!("CRL number {}", crl.number)))?;
            let reserved: Option<i64> = conn
                .query_row(
                    "SELECT last FROM crl_numbers WHERE issuer = ?1",
                    [&crl.issuer],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable(CTX))?;
            if reserved.is_none_or(|last| number > last) {
                return Err(StoreError::NotFound(format!(
                    "CRL number {number} of {} was never reserved",
                    crl.issuer
                )));
            }
            conn.execute(
                "INSERT INTO crls (issuer, number, this_update, next_update, der) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    crl.issuer,
                    number,
                    crl.this_update,
                    crl.next_update,
                    crl.der
                ],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Duplicate {
                        what: format!("CRL number {number} of {}", crl.issuer),
                    }
                } else {
                    unavailable(CTX)(e)
                }
            })?;
            let mut mark = conn
                .prepare_cached(
                    "UPDATE certificates SET crl_published_at = ?1 \
                     WHERE serial = ?2 AND issuer = ?3 AND crl_published_at IS NULL \
                     AND status = 'revoked' AND revoked_at <= ?1",
                )
                .map_err(unavailable(CTX))?;
            for serial in &serials {
                mark.execute(params![crl.this_update, serial, crl.issuer])
                    .map_err(unavailable(CTX))?;
            }
            append_audit_tx(conn, &audit)?;
            Ok(())
        })
        .await
    }

    async fn latest_crl(&self, issuer: &str) -> Result<Option<CrlRecord>, StoreError> {
        const CTX: &str = "reading the latest CRL";
        let issuer = issuer.to_owned();
        self.run(CTX, move |conn| {
            conn.query_row(
                "SELECT issuer, number, this_update, next_update, der FROM crls \
                 WHERE issuer = ?1 ORDER BY number DESC LIMIT 1",
                [&issuer],
                |r| {
                    Ok(CrlRecord {
                        issuer: r.get(0)?,
                        number: r.get::<_, i64>(1)?.max(0) as u64,
                        this_update: r.get(2)?,
                        next_update: r.get(3)?,
                        der: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(unavailable(CTX))
        })
        .await
    }

    async fn revoked_for_crl(
        &self,
        issuer: &str,
        at: i64,
    ) -> Result<Vec<CrlRevocation>, StoreError> {
        const CTX: &str = "listing revocations for a CRL";
        let issuer = issuer.to_owned();
        self.run(CTX, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT serial, revoked_at, revocation_reason, revocation_reported_at \
                     FROM certificates \
                     WHERE issuer = ?1 AND status = 'revoked' AND not_after >= ?2 \
                     ORDER BY serial",
                )
                .map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map(params![issuer, at], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })
                .map_err(unavailable(CTX))?;
            let mut out = Vec::new();
            for row in rows {
                let (serial, revoked_at, reason, reported_at) = row.map_err(unavailable(CTX))?;
                let (Some(revoked_at), Some(reason)) = (revoked_at, reason) else {
                    return Err(StoreError::Corrupt(format!(
                        "certificate {serial} is revoked without a revocation time and reason"
                    )));
                };
                let reason = reason
                    .parse::<RevocationReason>()
                    .map_err(|e| StoreError::Corrupt(format!("certificate {serial}: {e}")))?;
                out.push(CrlRevocation {
                    serial,
                    revoked_at,
                    reason,
                    reported_at,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn release_hold(
        &self,
        rel: ReleaseRecord,
        audit: AuditEvent,
    ) -> Result<ReleaseOutcome, StoreError> {
        const CTX: &str = "releasing a hold";
        self.run(CTX, move |conn| {
            let tx: &Connection = conn;
            let seen: Option<(String, String)> = tx
                .query_row(
                    "SELECT serial, request_digest FROM release_requests \
                     WHERE ra = ?1 AND request_id = ?2",
                    params![rel.ra, rel.request_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(unavailable(CTX))?;
            if let Some((serial, digest)) = seen {
                if digest != rel.request_digest {
                    return Ok(ReleaseOutcome::Conflict { serial });
                }
                let rec = query_cert(tx, "serial = ?1", [&serial])?.ok_or_else(|| {
                    StoreError::Corrupt(format!("released certificate {serial} vanished"))
                })?;
                return Ok(ReleaseOutcome::Released(rec));
            }
            let Some(rec) = query_cert(tx, "serial = ?1", [&rel.serial])? else {
                return Ok(ReleaseOutcome::NotFound);
            };
            let held = rec.status == CertStatus::Revoked
                && rec
                    .revocation
                    .as_ref()
                    .is_some_and(|r| r.reason == RevocationReason::CertificateHold);
            if !held {
                return Ok(ReleaseOutcome::NotHeld(rec));
            }
            close_hold(tx, &rel.serial)?;
            let n = tx
                .execute(
                    "UPDATE certificates SET status = 'valid', revoked_at = NULL, \
                     revocation_reason = NULL, revocation_reported_at = NULL, \
                     revocation_comment = NULL, revoked_by = NULL, crl_published_at = NULL \
                     WHERE serial = ?1 AND status = 'revoked' AND revocation_reason = 'certificateHold'",
                    [&rel.serial],
                )
                .map_err(unavailable(CTX))?;
            if n != 1 {
                return Err(StoreError::Corrupt(format!(
                    "certificate {} changed inside a transaction",
                    rel.serial
                )));
            }
            append_event(
                tx,
                &rel.serial,
                RevocationEventKind::Released,
                None,
                &rel.ra,
                &rel.request_id,
                rel.released_at,
                None,
                &rel.comment,
            )?;
            append_audit_tx(tx, &audit)?;
            tx.execute(
                "INSERT INTO release_requests (ra, request_id, serial, request_digest, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![rel.ra, rel.request_id, rel.serial, rel.request_digest, now()],
            )
            .map_err(unavailable(CTX))?;
            let rec = query_cert(tx, "serial = ?1", [&rel.serial])?.ok_or_else(|| {
                StoreError::Corrupt(format!("certificate {} vanished", rel.serial))
            })?;
            Ok(ReleaseOutcome::Released(rec))
        })
        .await
    }

    async fn revocation_history(&self, serial: &str) -> Result<Vec<RevocationEvent>, StoreError> {
        const CTX: &str = "reading a revocation history";
        let serial = serial.to_owned();
        self.run(CTX, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT kind, reason, actor, request_id, recorded_at, reported_at, \
                     published_at, comment FROM revocation_events WHERE serial = ?1 ORDER BY seq",
                )
                .map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map([&serial], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        RevocationEvent {
                            kind: RevocationEventKind::Released,
                            reason: None,
                            actor: r.get(2)?,
                            request_id: r.get(3)?,
                            recorded_at: r.get(4)?,
                            reported_at: r.get(5)?,
                            published_at: r.get(6)?,
                            comment: r.get(7)?,
                        },
                    ))
                })
                .map_err(unavailable(CTX))?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, reason, mut event) = row.map_err(unavailable(CTX))?;
                event.kind = RevocationEventKind::parse(&kind)?;
                event.reason = reason
                    .map(|r| r.parse::<RevocationReason>())
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("certificate {serial}: {e}")))?;
                out.push(event);
            }
            // The certificate's current revocation is published as its columns say.
            if let (Some(last), Some(rec)) =
                (out.last_mut(), query_cert(conn, "serial = ?1", [&serial])?)
                && last.kind != RevocationEventKind::Released
                && last.published_at.is_none()
            {
                last.published_at = rec.revocation.and_then(|r| r.first_published_at);
            }
            Ok(out)
        })
        .await
    }

    async fn token_job(&self, request_id: &str) -> Result<Option<TokenJob>, StoreError> {
        let request_id = request_id.to_owned();
        self.run("reading a token personalisation", move |conn| {
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

    async fn revocation_watch(&self, at: i64) -> Result<RevocationWatch, StoreError> {
        const CTX: &str = "watching for revocations";
        self.run(CTX, move |conn| {
            let last_event: i64 = conn
                .query_row(
                    "SELECT COALESCE(MAX(seq), 0) FROM revocation_events",
                    [],
                    |r| r.get(0),
                )
                .map_err(unavailable(CTX))?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT serial, issuer, revoked_at FROM certificates \
                     WHERE status = 'revoked' AND crl_published_at IS NULL AND not_after >= ?1 \
                     ORDER BY revoked_at, serial",
                )
                .map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map([at], |r| {
                    Ok(UnpublishedRevocation {
                        serial: r.get(0)?,
                        issuer: r.get(1)?,
                        revoked_at: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                    })
                })
                .map_err(unavailable(CTX))?;
            let unpublished = rows
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable(CTX))?;
            Ok(RevocationWatch {
                last_event,
                unpublished,
            })
        })
        .await
    }

    async fn save_token_job(
        &self,
        job: TokenJob,
        audit: Option<AuditEvent>,
    ) -> Result<(), StoreError> {
        self.run("recording a token personalisation", move |conn| {
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

    async fn pin_failures(&self, token_serial: &str) -> Result<u32, StoreError> {
        let serial = token_serial.to_owned();
        self.run("reading a token's wrong-PIN count", move |conn| {
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

    async fn record_pin_failure(&self, token_serial: &str) -> Result<u32, StoreError> {
        let serial = token_serial.to_owned();
        self.run("counting a wrong PIN", move |conn| {
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

    async fn reset_pin_failures(
        &self,
        token_serial: &str,
        audit: Option<AuditEvent>,
    ) -> Result<(), StoreError> {
        let serial = token_serial.to_owned();
        self.run("resetting a token's wrong-PIN count", move |conn| {
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

    async fn append_audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        self.run("appending to the audit log", move |conn| {
            append_audit_tx(conn, &event)
        })
        .await
    }

    async fn audit_entries(&self, from: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.run("reading the audit log", move |conn| {
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

    async fn last_audit_entry(&self) -> Result<Option<AuditEntry>, StoreError> {
        const CTX: &str = "reading the audit log";
        self.run(CTX, move |conn| {
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

    async fn first_audit_seq_for(&self, object: &str) -> Result<Option<i64>, StoreError> {
        const CTX: &str = "reading the audit log";
        let object = object.to_owned();
        self.run(CTX, move |conn| {
            conn.query_row(
                "SELECT MIN(seq) FROM audit_log WHERE object = ?1",
                [&object],
                |r| r.get(0),
            )
            .map_err(unavailable(CTX))
        })
        .await
    }

    async fn record_checkpoint(&self, cp: Checkpoint) -> Result<(), StoreError> {
        const CTX: &str = "recording an audit checkpoint";
        self.run(CTX, move |conn| {
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

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.query_checkpoints("ORDER BY seq").await
    }

    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        Ok(self
            .query_checkpoints("ORDER BY seq DESC LIMIT 1")
            .await?
            .pop())
    }

    async fn reserve_tsa_serials(&self, count: u64, now_ms: i64) -> Result<u64, StoreError> {
        const CTX: &str = "reserving timestamp serial numbers";
        let count = i64::try_from(count)
            .map_err(|_| StoreError::Corrupt(format!("serial block of {count}")))?;
        self.run(CTX, move |conn| {
            let end: i64 = conn
                .query_row(
                    "INSERT INTO tsa_state (id, next_serial, last_time_ms) VALUES (1, 1 + ?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET next_serial = next_serial + ?1, \
                     last_time_ms = MAX(last_time_ms, ?2) RETURNING next_serial",
                    params![count, now_ms],
                    |r| r.get(0),
                )
                .map_err(unavailable(CTX))?;
            u64::try_from(end - count)
                .map_err(|_| StoreError::Corrupt(format!("timestamp serial high-water mark {end}")))
        })
        .await
    }

    async fn note_tsa_time(&self, at_ms: i64) -> Result<(), StoreError> {
        const CTX: &str = "recording the time of the latest timestamp";
        self.run(CTX, move |conn| {
            conn.execute(
                "INSERT INTO tsa_state (id, next_serial, last_time_ms) VALUES (1, 1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET last_time_ms = MAX(last_time_ms, ?1)",
                [at_ms],
            )
            .map_err(unavailable(CTX))?;
            Ok(())
        })
        .await
    }

    async fn tsa_last_time(&self) -> Result<Option<i64>, StoreError> {
        const CTX: &str = "reading the time of the latest timestamp";
        self.run(CTX, move |conn| {
            conn.query_row("SELECT last_time_ms FROM tsa_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(unavailable(CTX))
        })
        .await
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str) -> AuditEvent {
        AuditEvent {
            actor: "test".into(),
            action: action.into(),
            object: "x".into(),
            request_digest: None,
            detail: "{}".into(),
        }
    }

    async fn store_with_issuer() -> SqliteStore {
        let s = SqliteStore::open_in_memory().unwrap();
        s.record_ca_key(
            CaKeyRecord {
                label: "k".into(),
                key_type: "p256".into(),
                spki_der: vec![1],
                created_at: 1,
            },
            event("ceremony.key_generated"),
        )
        .await
        .unwrap();
        s.record_issuer(
            IssuerRecord {
                name: "ec".into(),
                parent: None,
                key_label: "k".into(),
                signature: "ecdsa-sha256".into(),
                serial: "01".into(),
                cert_der: vec![2],
                created_at: 1,
            },
            event("ceremony.issuer_created"),
        )
        .await
        .unwrap();
        s
    }

    fn pending(serial: &str, request_id: &str, digest: &str) -> CertificateRecord {
        CertificateRecord {
            serial: serial.into(),
            issuer: "ec".into(),
            ra: "ra-1".into(),
            request_id: request_id.into(),
            request_digest: digest.into(),
            profile: "server".into(),
            subject: "CN=x".into(),
            request_json: "{}".into(),
            csr_der: vec![3],
            tbs_der: vec![4],
            cert_der: None,
            status: CertStatus::Pending,
            not_before: 10,
            not_after: 20,
            created_at: 10,
            issued_at: None,
            renewed_from: None,
            revocation: None,
        }
    }

    #[tokio::test]
    async fn one_request_id_one_record() {
        let s = store_with_issuer().await;
        assert!(matches!(
            s.begin_issuance(pending("aa", "r1", "d1")).await.unwrap(),
            BeginOutcome::Started(_)
        ));
        // Same request again while pending: resume with the stored serial, not the new one.
        match s.begin_issuance(pending("bb", "r1", "d1")).await.unwrap() {
            BeginOutcome::Resume(r) => assert_eq!(r.serial, "aa"),
            other => panic!("{other:?}"),
        }
        // Different body: conflict.
        assert!(matches!(
            s.begin_issuance(pending("cc", "r1", "d2")).await.unwrap(),
            BeginOutcome::Conflict(_)
        ));
        let done = s
            .complete_issuance("aa", &[9, 9], 11, event("certificate.issued"))
            .await
            .unwrap();
        assert_eq!(done.status, CertStatus::Valid);
        match s.begin_issuance(pending("dd", "r1", "d1")).await.unwrap() {
            BeginOutcome::Done(r) => assert_eq!(r.cert_der, Some(vec![9, 9])),
            other => panic!("{other:?}"),
        }
        // Completing twice is refused.
        assert!(
            s.complete_issuance("aa", &[1], 12, event("certificate.issued"))
                .await
                .is_err()
        );
        // A taken serial under a new request id.
        assert_eq!(
            s.begin_issuance(pending("aa", "r2", "d3")).await.unwrap(),
            BeginOutcome::SerialTaken
        );
        assert_eq!(s.count_certificates().await.unwrap(), 1);
        let log = s.audit_entries(1, 100).await.unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(audit::verify_chain(&log), Ok(3));
    }

    #[tokio::test]
    async fn crl_numbers_grow_are_never_reused_and_listed_revocations_get_published_at() {
        let s = store_with_issuer().await;
        for (serial, id) in [("aa", "r1"), ("bb", "r2")] {
            s.begin_issuance(pending(serial, id, id)).await.unwrap();
            s.complete_issuance(serial, &[9], 11, event("certificate.issued"))
                .await
                .unwrap();
        }
        let mut rev = RevokeRecord {
            serial: "aa".into(),
            ra: "ra-1".into(),
            request_id: "x1".into(),
            request_digest: "x1".into(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: 12,
            reported_at: Some(11),
            comment: String::new(),
        };
        s.revoke(rev.clone(), event("certificate.revoked"))
            .await
            .unwrap();
        let listed = s.revoked_for_crl("ec", 15).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].serial, "aa");
        assert_eq!(listed[0].reported_at, Some(11));
        // Expired certificates leave the CRL.
        assert!(s.revoked_for_crl("ec", 21).await.unwrap().is_empty());
        assert_eq!(s.next_crl_number("ec").await.unwrap(), 1);
        // Number 1 is never recorded (as if signing failed); 2 is.
        let n = s.next_crl_number("ec").await.unwrap();
        assert_eq!(n, 2);
        let crl = |number| CrlRecord {
            issuer: "ec".into(),
            number,
            this_update: 13,
            next_update: 99,
            der: vec![1, 2],
        };
        s.record_crl(crl(2), vec!["aa".into()], event("crl.signed"))
            .await
            .unwrap();
        assert!(
            s.record_crl(crl(2), vec![], event("crl.signed"))
                .await
                .is_err()
        );
        assert!(
            s.record_crl(crl(3), vec![], event("crl.signed"))
                .await
                .is_err(),
            "never reserved"
        );
        assert_eq!(s.latest_crl("ec").await.unwrap(), Some(crl(2)));
        assert_eq!(s.next_crl_number("ec").await.unwrap(), 3);
        let published = |serial: &'static str| {
            s.run("test", move |c| {
                c.query_row(
                    "SELECT crl_published_at FROM certificates WHERE serial = ?1",
                    [serial],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .map_err(unavailable("test"))
            })
        };
        assert_eq!(published("aa").await.unwrap(), Some(13));
        assert_eq!(published("bb").await.unwrap(), None);
        rev.serial = "bb".into();
        rev.request_id = "x2".into();
        s.revoke(rev, event("certificate.revoked")).await.unwrap();
        let mut later = crl(3);
        later.this_update = 14;
        s.record_crl(later, vec!["aa".into(), "bb".into()], event("crl.signed"))
            .await
            .unwrap();
        // The first appearance is kept.
        assert_eq!(published("aa").await.unwrap(), Some(13));
        assert_eq!(published("bb").await.unwrap(), Some(14));
    }

    #[tokio::test]
    async fn timestamp_serial_blocks_never_overlap_and_the_latest_time_only_grows() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert_eq!(s.tsa_last_time().await.unwrap(), None);
        let a = s.reserve_tsa_serials(1000, 5_000).await.unwrap();
        let b = s.reserve_tsa_serials(1000, 4_000).await.unwrap();
        let c = s.reserve_tsa_serials(10, 6_000).await.unwrap();
        assert_eq!((a, b, c), (1, 1001, 2001));
        assert_eq!(s.tsa_last_time().await.unwrap(), Some(6_000));
        s.note_tsa_time(5_500).await.unwrap();
        assert_eq!(s.tsa_last_time().await.unwrap(), Some(6_000));
        s.note_tsa_time(7_000).await.unwrap();
        assert_eq!(s.tsa_last_time().await.unwrap(), Some(7_000));
        assert_eq!(s.reserve_tsa_serials(1, 0).await.unwrap(), 2011);
    }

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

    #[tokio::test]
    async fn duplicate_ca_keys_and_issuers_are_refused() {
        let s = store_with_issuer().await;
        let e = s
            .record_ca_key(
                CaKeyRecord {
                    label: "k".into(),
                    key_type: "p256".into(),
                    spki_der: vec![1],
                    created_at: 1,
                },
                event("ceremony.key_generated"),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Duplicate { .. }), "{e}");
        // The failed transaction left no audit entry behind.
        assert_eq!(s.audit_entries(1, 100).await.unwrap().len(), 2);
    }

    async fn issued(s: &SqliteStore, serial: &str, request_id: &str) -> CertificateRecord {
        let p = pending(serial, request_id, "d");
        assert!(matches!(
            s.begin_issuance(p).await.unwrap(),
            BeginOutcome::Started(_)
        ));
        s.complete_issuance(serial, &[9], 11, event("certificate.issued"))
            .await
            .unwrap()
    }

    fn revocation(serial: &str, request_id: &str, digest: &str) -> RevokeRecord {
        RevokeRecord {
            serial: serial.into(),
            ra: "ra-1".into(),
            request_id: request_id.into(),
            request_digest: digest.into(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: 100,
            reported_at: Some(90),
            comment: "token lost".into(),
        }
    }

    #[tokio::test]
    async fn revoke_is_idempotent_per_request_id_and_changes_a_revoked_certificate_never() {
        let s = store_with_issuer().await;
        issued(&s, "aa", "i1").await;
        let first = match s
            .revoke(revocation("aa", "r1", "x"), event("certificate.revoked"))
            .await
            .unwrap()
        {
            RevokeOutcome::Revoked(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(first.status, CertStatus::Revoked);
        assert_eq!(
            first.revocation,
            Some(RevocationInfo {
                reason: RevocationReason::KeyCompromise,
                revoked_at: 100,
                reported_at: Some(90),
                comment: "token lost".into(),
                revoked_by: "ra-1".into(),
                first_published_at: None,
            })
        );
        // The same request again: the same answer, no second audit entry.
        assert_eq!(
            s.revoke(revocation("aa", "r1", "x"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::Revoked(first.clone())
        );
        // The same id for another request: conflict, naming the first request's serial.
        assert_eq!(
            s.revoke(revocation("bb", "r1", "y"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::Conflict {
                serial: "aa".into()
            }
        );
        // A new request for the revoked certificate: nothing changes.
        let mut again = revocation("aa", "r2", "z");
        again.reason = RevocationReason::Superseded;
        again.revoked_at = 200;
        assert_eq!(
            s.revoke(again.clone(), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::AlreadyRevoked(first.clone())
        );
        assert_eq!(
            s.revoke(again, event("certificate.revoked")).await.unwrap(),
            RevokeOutcome::AlreadyRevoked(first.clone())
        );
        assert_eq!(
            s.revoke(revocation("cc", "r3", "x"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::NotFound
        );
        assert!(matches!(
            s.begin_issuance(pending("dd", "i2", "d")).await.unwrap(),
            BeginOutcome::Started(_)
        ));
        assert_eq!(
            s.revoke(revocation("dd", "r4", "x"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::NotIssued
        );
        assert_eq!(s.certificate("aa").await.unwrap(), Some(first));
        let log = s.audit_entries(1, 100).await.unwrap();
        let revoked = log
            .iter()
            .filter(|e| e.event.action == "certificate.revoked")
            .count();
        assert_eq!(revoked, 1);
        assert_eq!(audit::verify_chain(&log), Ok(log.len()));
    }

    #[tokio::test]
    async fn pages_return_every_issued_record_once_even_while_rows_are_added() {
        let s = store_with_issuer().await;
        for i in 0..20u32 {
            issued(&s, &format!("{:02x}", i * 11 + 1), &format!("i{i}")).await;
        }
        // Pending rows are never listed by default.
        for i in 0..3u32 {
            let p = pending(&format!("{:02x}", i * 11 + 2), &format!("p{i}"), "d");
            s.begin_issuance(p).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = s
                .list_certificates(CertFilter::default(), token, 7)
                .await
                .unwrap();
            assert!(page.records.len() <= 7);
            pages += 1;
            if pages == 2 {
                // Rows added behind and ahead of the cursor while paging.
                issued(&s, "00", "late-1").await;
                issued(&s, "ff", "late-2").await;
            }
            seen.extend(page.records.into_iter().map(|r| r.serial));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "a record came twice: {seen:?}");
        assert_eq!(
            seen.len(),
            21,
            "20 issued plus the one added ahead: {seen:?}"
        );
        assert!(seen.contains(&"ff".to_string()));
        let pending_only = s
            .list_certificates(
                CertFilter {
                    status: Some(CertStatus::Pending),
                    ..CertFilter::default()
                },
                None,
                0,
            )
            .await
            .unwrap();
        // page_size 0 is clamped to 1.
        assert_eq!(pending_only.records.len(), 1);
        assert!(pending_only.next_page_token.is_some());
        for bad in ["", "garbage", "s1.", "s1.XYZ", "s1.aa'--"] {
            let e = s
                .list_certificates(CertFilter::default(), Some(bad.into()), 10)
                .await
                .unwrap_err();
            assert!(matches!(e, StoreError::InvalidPageToken(_)), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn subject_search_is_a_plain_substring_and_an_empty_profile_list_matches_nothing() {
        let s = store_with_issuer().await;
        let mut a = pending("0a", "i1", "d");
        a.subject = "CN=100% sure_thing".into();
        s.begin_issuance(a).await.unwrap();
        s.complete_issuance("0a", &[9], 11, event("certificate.issued"))
            .await
            .unwrap();
        let mut b = pending("0b", "i2", "d");
        b.subject = "CN=100 xsurexthing".into();
        s.begin_issuance(b).await.unwrap();
        s.complete_issuance("0b", &[9], 11, event("certificate.issued"))
            .await
            .unwrap();
        let find = |text: &str| CertFilter {
            subject_contains: Some(text.into()),
            ..CertFilter::default()
        };
        for (text, want) in [
            ("0% sure_", vec!["0a"]),
            ("%", vec!["0a"]),
            ("_", vec!["0a"]),
            ("100", vec!["0a", "0b"]),
        ] {
            let got: Vec<String> = s
                .list_certificates(find(text), None, 100)
                .await
                .unwrap()
                .records
                .into_iter()
                .map(|r| r.serial)
                .collect();
            assert_eq!(got, want, "{text}");
        }
        let none = CertFilter {
            profiles: Some(vec![]),
            ..CertFilter::default()
        };
        assert!(
            s.list_certificates(none, None, 10)
                .await
                .unwrap()
                .records
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_hold_is_released_or_made_final_and_every_step_stays_in_the_history() {
        let s = store_with_issuer().await;
        issued(&s, "aa", "i1").await;
        issued(&s, "bb", "i2").await;
        let hold = |serial: &str, id: &str| RevokeRecord {
            reason: RevocationReason::CertificateHold,
            ..revocation(serial, id, "h")
        };
        let release = |serial: &str, id: &str, digest: &str| ReleaseRecord {
            serial: serial.into(),
            ra: "ra-1".into(),
            request_id: id.into(),
            request_digest: digest.into(),
            released_at: 130,
            comment: "token found".into(),
        };
        assert!(matches!(
            s.revoke(hold("aa", "h1"), event("certificate.held"))
                .await
                .unwrap(),
            RevokeOutcome::Revoked(_)
        ));
        let w = s.revocation_watch(0).await.unwrap();
        assert_eq!(
            w.unpublished
                .iter()
                .map(|u| u.serial.as_str())
                .collect::<Vec<_>>(),
            ["aa"]
        );
        // A valid certificate is not on hold; a retry of a release answers the same.
        assert!(matches!(
            s.release_hold(release("bb", "x1", "d"), event("certificate.released")).await.unwrap(),
            ReleaseOutcome::NotHeld(r) if r.status == CertStatus::Valid
        ));
        let crl = |n: u64, t: i64| CrlRecord {
            issuer: "ec".into(),
            number: n,
            this_update: t,
            next_update: t + 10,
            der: vec![n as u8],
        };
        let n = s.next_crl_number("ec").await.unwrap();
        s.record_crl(crl(n, 120), vec!["aa".into()], event("crl.signed"))
            .await
            .unwrap();
        assert!(s.revocation_watch(0).await.unwrap().unpublished.is_empty());
        for _ in 0..2 {
            match s
                .release_hold(release("aa", "r1", "d"), event("certificate.released"))
                .await
                .unwrap()
            {
                ReleaseOutcome::Released(r) => {
                    assert_eq!((r.status, r.revocation), (CertStatus::Valid, None))
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            s.release_hold(release("aa", "r1", "other"), event("certificate.released")).await.unwrap(),
            ReleaseOutcome::Conflict { serial } if serial == "aa"
        ));
        assert!(matches!(
            s.release_hold(release("aa", "r2", "d"), event("certificate.released"))
                .await
                .unwrap(),
            ReleaseOutcome::NotHeld(_)
        ));
        // Held again, then revoked for good: final, and not releasable.
        s.revoke(hold("aa", "h2"), event("certificate.held"))
            .await
            .unwrap();
        assert!(matches!(
            s.revoke(hold("aa", "h3"), event("certificate.held"))
                .await
                .unwrap(),
            RevokeOutcome::AlreadyRevoked(_)
        ));
        let fin = match s
            .revoke(revocation("aa", "k1", "k"), event("certificate.revoked"))
            .await
            .unwrap()
        {
            RevokeOutcome::Revoked(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fin.revocation.map(|r| (r.reason, r.first_published_at)),
            Some((RevocationReason::KeyCompromise, None))
        );
        assert!(matches!(
            s.revoke(revocation("aa", "k2", "k"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::AlreadyRevoked(_)
        ));
        assert!(matches!(
            s.release_hold(release("aa", "r3", "d"), event("certificate.released")).await.unwrap(),
            ReleaseOutcome::NotHeld(r) if r.revocation.as_ref().map(|v| v.reason) == Some(RevocationReason::KeyCompromise)
        ));
        let history = s.revocation_history("aa").await.unwrap();
        let steps: Vec<_> = history
            .iter()
            .map(|e| (e.kind, e.request_id.as_str(), e.published_at))
            .collect();
        assert_eq!(
            steps,
            [
                (RevocationEventKind::Held, "h1", Some(120)),
                (RevocationEventKind::Released, "r1", None),
                (RevocationEventKind::Held, "h2", None),
                (RevocationEventKind::Revoked, "k1", None),
            ]
        );
        let w = s.revocation_watch(0).await.unwrap();
        assert_eq!(w.unpublished.len(), 1);
        assert!(w.last_event >= 4);
        // A CRL made before the final revocation was recorded does not count as publishing it.
        let n = s.next_crl_number("ec").await.unwrap();
        s.record_crl(crl(n, 99), vec!["aa".into()], event("crl.signed"))
            .await
            .unwrap();
        assert_eq!(s.revocation_watch(0).await.unwrap().unpublished.len(), 1);
        let actions: Vec<String> = s
            .audit_entries(1, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.action)
            .filter(|a| a.starts_with("certificate.") && a != "certificate.issued")
            .collect();
        assert_eq!(
            actions,
            [
                "certificate.held",
                "certificate.released",
                "certificate.held",
                "certificate.revoked"
            ]
        );
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
}

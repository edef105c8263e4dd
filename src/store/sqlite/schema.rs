//! The SQLite schema: its migrations, applied in order and counted by `PRAGMA user_version`.

use rusqlite::{Connection, TransactionBehavior};

use super::error::unavailable;
use crate::store::error::StoreError;

/// 1: the CA hierarchy (HSM keys and the CA certificates made with them), certificates
/// with the request that caused each, and the hash-chained audit log.
const V1_HIERARCHY_CERTIFICATES_AUDIT: &str = r#"
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
"#;

/// 2: the life cycle. Renewals link to the certificate they renew; revocations carry
/// the RFC 5280 reason, who revoked and when, and are idempotent per RA request id.
const V2_LIFE_CYCLE: &str = r#"
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
"#;

/// 3: CRLs. Numbers are reserved per issuer before signing and never handed out twice;
/// each revocation notes when it first appeared in a published CRL.
const V3_CRLS: &str = r#"
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
"#;

/// 4: hold and release. Every revocation, hold and release is an event kept for good (a
/// released hold stays in the history with when it was first published); release requests
/// are idempotent per RA request id like revocations. Revocations recorded before this
/// migration become their certificates' first events.
const V4_HOLD_AND_RELEASE: &str = r#"
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
"#;

/// 5: token personalisation: a journal per request id (the exact CSR sent, so a retry sends
/// the same request and gets the same certificate), and the wrong-PIN count per token.
const V5_TOKEN_PERSONALISATION: &str = r#"
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
"#;

/// 6: timestamps and evidence: signed checkpoints of the audit chain; the TSA's serial
/// high-water mark and the time of its latest token; audit entries found by object.
const V6_TIMESTAMPS_AND_EVIDENCE: &str = r#"
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
"#;

/// Store health (migration 7): one row the health probe rewrites with a padding blob, so a
/// probe needs fresh space in the write-ahead log as an issuance does, and fails when the
/// file system is full.
const V7_STORE_PROBE: &str = r#"
CREATE TABLE store_probe (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    at          INTEGER NOT NULL,
    padding     BLOB NOT NULL
);
INSERT INTO store_probe (id, at, padding) VALUES (1, 0, x'');
"#;

/// 8: the journal of token initialisations: the token as it was and the slot it was in, its
/// serial afterwards, how far it got; a retry with the same request id finishes it.
const V8_TOKEN_INITIALISATION: &str = r#"
CREATE TABLE token_inits (
    request_id          TEXT PRIMARY KEY,
    request_digest      TEXT NOT NULL,
    token               TEXT NOT NULL,
    module              TEXT NOT NULL,
    slot                INTEGER NOT NULL,
    old_serial          TEXT NOT NULL,
    old_label           TEXT NOT NULL,
    old_fingerprint     TEXT NOT NULL,
    new_serial          TEXT NOT NULL,
    label               TEXT NOT NULL,
    force               INTEGER NOT NULL,
    wiped_json          TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('started', 'wiped', 'done')),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
"#;

/// 9: a lean certificate table. Every index is one a query of the store uses, and none is
/// touched by committing a certificate (pending to valid):
///
/// - `certificates_by_renewed_from` goes: no query looks certificates up by what they renew.
/// - `certificates_by_status_expiry` (status, not_after) becomes `certificates_by_expiry`
///   (not_after), for listings with `expiring_before`; with the status in it, every commit
///   moved the row's entry.
/// - `certificates_for_crl` and `certificates_unpublished` become partial indexes over
///   revoked certificates only, the first holding what a CRL lists (so building a CRL reads
///   the index alone), the second only revocations no CRL has listed yet (what the
///   revocation watch polls for). Issuance writes neither.
/// - A committed certificate keeps no TBS: it is inside the certificate. Rows committed
///   before this migration lose theirs here.
///
/// The primary key (serial), the one certificate per (RA, request id) constraint,
/// (profile, serial) and (ra, serial) for listings in serial order (and the delegated OCSP
/// responder's lookup by profile and issuer), and the audit log's (object, seq) for
/// evidence stay.
const V9_LEAN_CERTIFICATES: &str = r#"
DROP INDEX certificates_by_renewed_from;
DROP INDEX certificates_by_status_expiry;
DROP INDEX certificates_for_crl;
DROP INDEX certificates_unpublished;
CREATE INDEX certificates_by_expiry ON certificates (not_after);
CREATE INDEX certificates_revoked_for_crl
    ON certificates (issuer, serial, not_after, revoked_at, revocation_reason, revocation_reported_at)
    WHERE status = 'revoked';
CREATE INDEX certificates_revoked_unpublished
    ON certificates (revoked_at, serial)
    WHERE status = 'revoked' AND crl_published_at IS NULL;
UPDATE certificates SET tbs_der = x'' WHERE status <> 'pending' AND length(tbs_der) > 0;
"#;

/// 10: when each certificate's record last changed (issued, revoked, held, released, first
/// published in a CRL), for RA offices that keep their own copy in step
/// (`ListCertificates { updated_since }`), and the index that query walks in order.
const V10_UPDATED_AT: &str = r#"
ALTER TABLE certificates ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE certificates SET updated_at = max(
    created_at,
    coalesce(issued_at, 0),
    coalesce(revoked_at, 0),
    coalesce(crl_published_at, 0),
    coalesce((SELECT max(recorded_at) FROM revocation_events e WHERE e.serial = certificates.serial), 0)
);
CREATE INDEX certificates_by_update ON certificates (updated_at, serial);
"#;

/// 11: issuer rotation. Each issuer row is one generation (one key, one certificate) of a
/// configured issuer, its family; `signet ceremony --rotate` adds generation 2, 3, ... under
/// names of their own, so the certificates, CRLs and OCSP answers of every generation stay
/// apart. A family has one row per generation.
const V11_ISSUER_GENERATIONS: &str = r#"
ALTER TABLE issuers ADD COLUMN family TEXT;
ALTER TABLE issuers ADD COLUMN generation INTEGER NOT NULL DEFAULT 1 CHECK (generation >= 1);
UPDATE issuers SET family = name;
CREATE UNIQUE INDEX issuers_by_generation ON issuers (family, generation);
"#;

/// Schema migrations, applied in order; `user_version` counts those applied. Never edit one
/// that has shipped: databases out there have run it. Add a new one at the end.
pub(super) const MIGRATIONS: &[&str] = &[
    V1_HIERARCHY_CERTIFICATES_AUDIT,
    V2_LIFE_CYCLE,
    V3_CRLS,
    V4_HOLD_AND_RELEASE,
    V5_TOKEN_PERSONALISATION,
    V6_TIMESTAMPS_AND_EVIDENCE,
    V7_STORE_PROBE,
    V8_TOKEN_INITIALISATION,
    V9_LEAN_CERTIFICATES,
    V10_UPDATED_AT,
    V11_ISSUER_GENERATIONS,
];

/// Bring the schema up to date: each migration `user_version` says the database has not
/// seen yet runs in an exclusive transaction of its own, which also counts it. A database
/// newer than this signet is refused.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let ctx = "configuring the database";
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
    Ok(())
}

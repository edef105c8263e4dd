//! The token store: one SQLite database in the directory named by
//! `SIGNET_SM2_SOFTTOKEN_DIR`, shared by every process that loads the module.
//!
//! Why SQLite: each change (a token initialised, a key pair generated, a certificate
//! written) is one transaction, so a process killed mid-write leaves the previous state,
//! not a truncated file; WAL mode lets signet read while pkcs11-tool writes in another
//! process; and every read goes to the database, so objects another process created are
//! visible at the next C_FindObjectsInit. rusqlite with bundled SQLite is already in
//! signet's build.

use std::path::Path;
use std::time::Duration;

use cryptoki_sys::*;
use rusqlite::{Connection, OptionalExtension, params};

use crate::objects::{self, Attrs};

/// The database file inside the store directory.
pub const DB_FILE: &str = "sm2-softtoken.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    slot      INTEGER PRIMARY KEY,
    serial    TEXT NOT NULL UNIQUE,
    label     BLOB NOT NULL,
    so_wrap   BLOB NOT NULL,
    user_wrap BLOB
);
CREATE TABLE IF NOT EXISTS objects (
    handle INTEGER PRIMARY KEY AUTOINCREMENT,
    slot   INTEGER NOT NULL REFERENCES tokens(slot) ON DELETE CASCADE,
    attrs  BLOB NOT NULL,
    secret BLOB
);
CREATE INDEX IF NOT EXISTS objects_slot ON objects(slot);
";

/// One initialised token.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Its slot id (stable for the token's life).
    pub slot: CK_SLOT_ID,
    /// CK_TOKEN_INFO.serialNumber (16 hex digits).
    pub serial: String,
    /// CK_TOKEN_INFO.label, blank-padded to 32 bytes.
    pub label: [u8; 32],
    /// The token key wrapped under the SO PIN.
    pub so_wrap: Vec<u8>,
    /// The token key wrapped under the user PIN, once C_InitPIN has run.
    pub user_wrap: Option<Vec<u8>>,
}

/// One token object.
#[derive(Debug, Clone)]
pub struct ObjectRow {
    /// Its object handle (never reused: AUTOINCREMENT).
    pub handle: CK_OBJECT_HANDLE,
    /// The slot of its token.
    pub slot: CK_SLOT_ID,
    /// Its attributes.
    pub attrs: Attrs,
    /// Key material sealed under the token key (private keys only).
    pub secret: Option<Vec<u8>>,
}

/// An object row as read: handle, slot, encoded attributes, sealed material.
type RawObject = (i64, i64, Vec<u8>, Option<Vec<u8>>);

/// An open store.
pub struct Store {
    conn: Connection,
}

fn db<T>(r: rusqlite::Result<T>) -> Result<T, CK_RV> {
    r.map_err(|_| CKR_DEVICE_ERROR)
}

fn slot_of(v: i64) -> CK_SLOT_ID {
    v as CK_SLOT_ID
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, CK_RV> {
        std::fs::create_dir_all(dir).map_err(|_| CKR_DEVICE_ERROR)?;
        let conn = db(Connection::open(dir.join(DB_FILE)))?;
        db(conn.busy_timeout(Duration::from_secs(10)))?;
        // WAL: readers in one process never block a writer in another. FULL: a key pair
        // reported as generated survives a power cut.
        db(conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        ))?;
        db(conn.execute_batch(SCHEMA))?;
        Ok(Store { conn })
    }

    fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
        let label_bytes: Vec<u8> = row.get(2)?;
        let mut label = [b' '; 32];
        let n = label_bytes.len().min(32);
        label[..n].copy_from_slice(&label_bytes[..n]);
        Ok(TokenRow {
            slot: slot_of(row.get(0)?),
            serial: row.get(1)?,
            label,
            so_wrap: row.get(3)?,
            user_wrap: row.get(4)?,
        })
    }

    /// Every initialised token, by slot.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, CK_RV> {
        let mut stmt = db(self.conn.prepare_cached(
            "SELECT slot, serial, label, so_wrap, user_wrap FROM tokens ORDER BY slot",
        ))?;
        let rows = db(stmt.query_map([], Self::token_from_row))?;
        db(rows.collect())
    }

    /// The token in `slot`, if initialised.
    pub fn token(&self, slot: CK_SLOT_ID) -> Result<Option<TokenRow>, CK_RV> {
        db(self
            .conn
            .query_row(
                "SELECT slot, serial, label, so_wrap, user_wrap FROM tokens WHERE slot = ?1",
                params![slot as i64],
                Self::token_from_row,
            )
            .optional())
    }

    /// Records a newly initialised token; fails if another process took the slot first.
    pub fn create_token(&self, t: &TokenRow) -> Result<(), CK_RV> {
        self.conn
            .execute(
                "INSERT INTO tokens (slot, serial, label, so_wrap, user_wrap) VALUES (?1, ?2, ?3, ?4, NULL)",
                params![t.slot as i64, t.serial, t.label.as_slice(), t.so_wrap],
            )
            .map(|_| ())
            .map_err(|_| CKR_SLOT_ID_INVALID)
    }

    /// Re-initialises a token: every object destroyed, a new SO wrap, no user PIN.
    pub fn reinit_token(
        &mut self,
        slot: CK_SLOT_ID,
        label: &[u8; 32],
        so_wrap: &[u8],
    ) -> Result<(), CK_RV> {
        let tx = db(self.conn.transaction())?;
        db(tx.execute("DELETE FROM objects WHERE slot = ?1", params![slot as i64]))?;
        db(tx.execute(
            "UPDATE tokens SET label = ?2, so_wrap = ?3, user_wrap = NULL WHERE slot = ?1",
            params![slot as i64, label.as_slice(), so_wrap],
        ))?;
        db(tx.commit())
    }

    /// Replaces the user PIN's wrap of the token key.
    pub fn set_user_wrap(&self, slot: CK_SLOT_ID, wrap: &[u8]) -> Result<(), CK_RV> {
        db(self.conn.execute(
            "UPDATE tokens SET user_wrap = ?2 WHERE slot = ?1",
            params![slot as i64, wrap],
        ))
        .map(|_| ())
    }

    /// Replaces the SO PIN's wrap of the token key.
    pub fn set_so_wrap(&self, slot: CK_SLOT_ID, wrap: &[u8]) -> Result<(), CK_RV> {
        db(self.conn.execute(
            "UPDATE tokens SET so_wrap = ?2 WHERE slot = ?1",
            params![slot as i64, wrap],
        ))
        .map(|_| ())
    }

    /// Adds objects in one transaction (a key pair is both halves or neither); returns
    /// their handles in order.
    pub fn insert_objects(
        &mut self,
        slot: CK_SLOT_ID,
        objects: &[(&Attrs, Option<&[u8]>)],
    ) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
        let tx = db(self.conn.transaction())?;
        let mut handles = Vec::with_capacity(objects.len());
        for (attrs, secret) in objects {
            db(tx.execute(
                "INSERT INTO objects (slot, attrs, secret) VALUES (?1, ?2, ?3)",
                params![slot as i64, objects::encode(attrs), secret],
            ))?;
            handles.push(tx.last_insert_rowid() as CK_OBJECT_HANDLE);
        }
        db(tx.commit())?;
        Ok(handles)
    }

    fn object_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawObject> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    }

    fn decode_row(r: RawObject) -> Result<ObjectRow, CK_RV> {
        Ok(ObjectRow {
            handle: r.0 as CK_OBJECT_HANDLE,
            slot: slot_of(r.1),
            attrs: objects::decode(&r.2)?,
            secret: r.3,
        })
    }

    /// Every object of the token in `slot`.
    pub fn objects(&self, slot: CK_SLOT_ID) -> Result<Vec<ObjectRow>, CK_RV> {
        let mut stmt = db(self.conn.prepare_cached(
            "SELECT handle, slot, attrs, NULL FROM objects WHERE slot = ?1 ORDER BY handle",
        ))?;
        let rows = db(stmt.query_map(params![slot as i64], Self::object_from_row))?;
        let rows: Vec<_> = db(rows.collect())?;
        rows.into_iter().map(Self::decode_row).collect()
    }

    /// One object by handle, with its sealed key material.
    pub fn object(&self, handle: CK_OBJECT_HANDLE) -> Result<Option<ObjectRow>, CK_RV> {
        let Ok(handle) = i64::try_from(handle) else {
            return Ok(None);
        };
        let row = db(self
            .conn
            .query_row(
                "SELECT handle, slot, attrs, secret FROM objects WHERE handle = ?1",
                params![handle],
                Self::object_from_row,
            )
            .optional())?;
        row.map(Self::decode_row).transpose()
    }

    /// Rewrites an object's attributes.
    pub fn update_attrs(&self, handle: CK_OBJECT_HANDLE, attrs: &Attrs) -> Result<(), CK_RV> {
        db(self.conn.execute(
            "UPDATE objects SET attrs = ?2 WHERE handle = ?1",
            params![handle as i64, objects::encode(attrs)],
        ))
        .map(|_| ())
    }

    /// Deletes an object; false if it was already gone.
    pub fn delete_object(&self, handle: CK_OBJECT_HANDLE) -> Result<bool, CK_RV> {
        db(self.conn.execute(
            "DELETE FROM objects WHERE handle = ?1",
            params![handle as i64],
        ))
        .map(|n| n > 0)
    }
}

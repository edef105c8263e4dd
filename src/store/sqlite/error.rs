//! How rusqlite's errors become [`StoreError`]s: `Unavailable` with what signet was doing, or
//! `Duplicate` for a unique-key violation.

use rusqlite::ErrorCode;

use crate::store::error::StoreError;

pub(super) fn unavailable(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Unavailable {
        context,
        message: e.to_string(),
    }
}

/// An insert's error: `Duplicate` for a unique-key violation, `Unavailable` otherwise.
pub(super) fn duplicate_or_unavailable(
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

pub(super) fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

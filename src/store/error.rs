//! What can go wrong in the store, whichever database is behind it.

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the operation; safe to retry later.
    #[error("the store is unavailable while {context}: {message}")]
    Unavailable {
        /// What signet was doing.
        context: &'static str,
        /// The database's message.
        message: String,
    },
    /// A unique key already exists (a CA key label, an issuer name).
    #[error("{what} already exists in the store")]
    Duplicate {
        /// What was duplicated.
        what: String,
    },
    /// The row to update is not there or not in the expected state.
    #[error("{0}")]
    NotFound(String),
    /// Stored data that does not read back as written (a bug or tampering).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A listing's page token was not one this store handed out.
    #[error("invalid page token: {0}")]
    InvalidPageToken(String),
}

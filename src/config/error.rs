//! Configuration errors, each naming the key at fault, and the small checks the sections share.

use std::path::PathBuf;

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not fit the schema (unknown key, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML library's message, which names the key and line.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("{key}: {problem}")]
    Invalid {
        /// The dotted key, e.g. `profiles.server.validity_years`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A secret could not be loaded.
    #[error("{key}: cannot read the PIN: {problem}")]
    Secret {
        /// The key naming the secret's source.
        key: String,
        /// What went wrong (never the secret itself).
        problem: String,
    },
}

/// A value that parses but is not acceptable, at `key`.
pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A name used in URLs, requests and the audit log: 1 to 64 letters, digits, `-` or `_`.
pub(super) fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

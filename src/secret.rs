//! Secrets (PINs): zeroized on drop, never shown by `Debug` or `Display`, read from a file
//! or an environment variable so they never sit in a configuration file.

use std::fmt;
use std::path::Path;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A secret string such as a PIN. Its bytes are wiped when it is dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret's value, for handing to the PKCS#11 module and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Read a secret from a file, trimming one trailing newline.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let raw = Zeroizing::new(std::fs::read_to_string(path)?);
        Ok(Secret(raw.trim_end_matches(['\r', '\n']).to_owned()))
    }

    /// Read a secret from an environment variable.
    pub fn from_env(var: &str) -> Result<Self, std::env::VarError> {
        std::env::var(var).map(Secret)
    }

    /// The number of characters, for policy checks.
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    /// True when the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_value() {
        let s = Secret::new("123456-very-secret".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{s:?}").contains("123456"));
    }

    #[test]
    fn file_secret_loses_its_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pin");
        std::fs::write(&p, " 1234 \n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), " 1234 ");
    }
}

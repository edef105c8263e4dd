//! `[hsm]` and `[store]`: the PKCS#11 module and token holding the CA keys, and the database.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{ConfigError, invalid};
use crate::hsm::TokenSelector;

/// `[hsm]`: the PKCS#11 module and token that hold the CA keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// Environment variables the module reads at load time (e.g. `SOFTHSM2_CONF`), set
    /// before it is loaded. Values starting with `./` or `../` are paths resolved against
    /// the config directory; others are passed as written.
    #[serde(default)]
    pub module_env: BTreeMap<String, String>,
    /// The token's label.
    pub token_label: Option<String>,
    /// The token's serial number.
    pub token_serial: Option<String>,
    /// The token as an RFC 7512 PKCS#11 URI (`pkcs11:token=signet-ca`).
    pub token_uri: Option<String>,
    /// A file holding the user PIN (mode 0600, one line).
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Number of signing sessions, one per worker.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// First back-off delay when the HSM has gone away, in milliseconds.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// Longest back-off delay between reconnection attempts, in milliseconds.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// The longest wait for a free signing session, and separately for one PKCS#11 call,
    /// in milliseconds (key generation may take at least a minute). A call that overruns it
    /// fails with UNAVAILABLE, its session is abandoned and the HSM is reported unavailable
    /// until a reconnect succeeds.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
}

fn default_pool_size() -> usize {
    2
}
fn default_reconnect_initial_ms() -> u64 {
    250
}
fn default_reconnect_max_ms() -> u64 {
    10_000
}
fn default_call_timeout_ms() -> u64 {
    10_000
}

impl HsmConfig {
    /// Exactly one token selector and one PIN source; a pool size and back-off that make sense.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let selectors = [
            self.token_label.is_some(),
            self.token_serial.is_some(),
            self.token_uri.is_some(),
        ];
        if selectors.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(
                "hsm",
                "give exactly one of token_label, token_serial, token_uri (never a slot id: slots are renumbered)",
            ));
        }
        self.token_selector()?;
        if self.pin_file.is_some() == self.pin_env.is_some() {
            return Err(invalid(
                "hsm",
                "give exactly one of pin_file, pin_env (PINs are never written in the configuration)",
            ));
        }
        if !(1..=64).contains(&self.pool_size) {
            return Err(invalid("hsm.pool_size", "must be between 1 and 64"));
        }
        if self.reconnect_initial_ms == 0 || self.reconnect_max_ms < self.reconnect_initial_ms {
            return Err(invalid(
                "hsm.reconnect_max_ms",
                "must be at least reconnect_initial_ms, which must be above 0",
            ));
        }
        if !(100..=600_000).contains(&self.call_timeout_ms) {
            return Err(invalid(
                "hsm.call_timeout_ms",
                "must be 100 to 600000 (0.1 s to 10 min)",
            ));
        }
        Ok(())
    }

    /// The token selector from `token_label`, `token_serial` or `token_uri`.
    pub(super) fn token_selector(&self) -> Result<TokenSelector, ConfigError> {
        if let Some(l) = &self.token_label {
            return Ok(TokenSelector::Label(l.clone()));
        }
        if let Some(s) = &self.token_serial {
            return Ok(TokenSelector::Serial(s.clone()));
        }
        match &self.token_uri {
            Some(u) => {
                TokenSelector::parse_uri(u).map_err(|e| invalid("hsm.token_uri", e.to_string()))
            }
            None => Err(invalid("hsm", "no token selected")),
        }
    }
}

/// `[store]`: the database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Path of the SQLite database file (created if missing).
    pub sqlite: PathBuf,
}

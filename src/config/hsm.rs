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
    /// The module's vendor-defined SM2 numbers: a vendor's published table by name
    /// (`"tass"`, `"sansec"`, `"ibm-ep11"`) or the numbers themselves. Absent: no SM2.
    pub sm2_mechanisms: Option<Sm2MechanismsConfig>,
}

/// `sm2_mechanisms`: a preset's name or a table of numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Sm2MechanismsConfig {
    /// A vendor table by name.
    Preset(String),
    /// The numbers, as the module's header or `pkcs11-tool -M` gives them.
    Table {
        /// CKA_KEY_TYPE of SM2 keys.
        key_type: u64,
        /// Key-pair generation mechanism.
        keygen: u64,
        /// SM2-with-SM3 over the message (the module computes Z).
        sign: Option<u64>,
        /// Raw SM2 over e = SM3(Z ‖ M) computed by signet.
        digest_sign: Option<u64>,
        /// `"raw"` (r ‖ s, the default) or `"der"`.
        signature: Option<String>,
        /// `"module"` (the default when `sign` is given) or `"host"`.
        z: Option<String>,
    },
}

/// The SM2 settings of a module from its `sm2_mechanisms` at `key` (`hsm`,
/// `token.modules[0]`). signet signs with GM/T 0009's default distinguishing ID.
pub(super) fn sm2_settings(
    key: &str,
    mechanisms: Option<&Sm2MechanismsConfig>,
) -> Result<Option<crate::hsm::sm2::Sm2Settings>, ConfigError> {
    use crate::hsm::sm2::{DEFAULT_ID, PRESETS, SignatureFormat, Sm2Mechanisms, ZComputed};
    let Some(mechanisms) = mechanisms else {
        return Ok(None);
    };
    let at = |f: &str| format!("{key}.sm2_mechanisms.{f}");
    let mechanisms = match mechanisms {
        Sm2MechanismsConfig::Preset(name) => PRESETS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                invalid(
                    format!("{key}.sm2_mechanisms"),
                    format!(
                        "{name:?} is not a known table ({}); give the numbers as a table instead",
                        PRESETS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?,
        Sm2MechanismsConfig::Table {
            key_type,
            keygen,
            sign,
            digest_sign,
            signature,
            z,
        } => {
            let signature = match signature.as_deref() {
                None | Some("raw") => SignatureFormat::Raw,
                Some("der") => SignatureFormat::Der,
                Some(other) => {
                    return Err(invalid(
                        at("signature"),
                        format!("{other:?}: use \"raw\" or \"der\""),
                    ));
                }
            };
            let z = match (z.as_deref(), sign) {
                (None, Some(_)) | (Some("module"), _) => ZComputed::Module,
                (None, None) | (Some("host"), _) => ZComputed::Host,
                (Some(other), _) => {
                    return Err(invalid(
                        at("z"),
                        format!("{other:?}: use \"module\" or \"host\""),
                    ));
                }
            };
            if z == ZComputed::Module && sign.is_none() {
                return Err(invalid(
                    at("sign"),
                    "z = \"module\" needs the sign mechanism",
                ));
            }
            if z == ZComputed::Host && digest_sign.is_none() {
                return Err(invalid(
                    at("digest_sign"),
                    "z = \"host\" needs the digest_sign mechanism",
                ));
            }
            for (f, v) in [
                ("key_type", Some(*key_type)),
                ("keygen", Some(*keygen)),
                ("sign", *sign),
                ("digest_sign", *digest_sign),
            ] {
                if v.is_some_and(|v| v < 0x8000_0000) {
                    return Err(invalid(
                        at(f),
                        "not a vendor-defined number (0x80000000 and above); PKCS#11 has no standard SM2 numbers",
                    ));
                }
            }
            Sm2Mechanisms {
                key_type: *key_type,
                keygen: *keygen,
                sign: *sign,
                digest_sign: *digest_sign,
                signature,
                z,
            }
        }
    };
    Ok(Some(crate::hsm::sm2::Sm2Settings {
        mechanisms,
        id: DEFAULT_ID.to_vec(),
    }))
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

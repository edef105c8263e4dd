//! `[tsa]` and `[audit]`: the timestamp authority and the audit key, the service keys the
//! ceremony makes besides the CAs'.

use std::collections::BTreeMap;

use const_oid::ObjectIdentifier;
use serde::Deserialize;

use super::error::{ConfigError, invalid};
use crate::pki::oids::CaOids;
use crate::pki::{KeyType, SignatureAlgorithm, SubjectSpec};

/// `[tsa]`: the timestamp authority. Its key is generated in the HSM by the ceremony and
/// certified by `issuer` with a critical extendedKeyUsage of timeStamping only.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsaConfig {
    /// The issuing CA that certifies the TSA key.
    pub issuer: String,
    /// CKA_LABEL of the TSA key pair in the HSM.
    pub key_label: String,
    /// Key type the ceremony generates (`p256`, `p384`, `rsa2048`, ...; not Ed25519).
    pub key_type: KeyType,
    /// Subject of the TSA certificate (a CN is required).
    pub subject: BTreeMap<String, String>,
    /// Validity of the TSA certificate in years.
    #[serde(default = "default_service_validity")]
    pub validity_years: u32,
    /// The TSA policy OID placed in every token (dotted decimal; default
    /// `{ca.oid_arc}.2.1`); requests naming another policy are refused with
    /// unacceptedPolicy.
    pub policy_oid: Option<String>,
    /// The accuracy stated in tokens: whole seconds part.
    #[serde(default = "default_accuracy_seconds")]
    pub accuracy_seconds: u32,
    /// The accuracy stated in tokens: milliseconds part, 0 to 999.
    #[serde(default)]
    pub accuracy_millis: u32,
    /// How far ahead of the clock the TSA's time ceiling is written, in seconds: one store
    /// write per window at most, and after a crash the TSA waits (timeNotAvailable) until
    /// the clock passes the ceiling, at most this long when the clock is right.
    #[serde(default = "default_time_window")]
    pub time_window_seconds: u64,
}

impl TsaConfig {
    /// The TSA policy OID: `policy_oid`, or `{ca.oid_arc}.2.1`.
    pub fn policy(&self, oids: &CaOids) -> Result<ObjectIdentifier, ConfigError> {
        match &self.policy_oid {
            Some(text) => super::ca::own_oid("tsa.policy_oid", text),
            None => Ok(oids.tsa_policy()),
        }
    }

    /// The policy OID and the accuracy stated in tokens. The key is checked against the
    /// hierarchy by the whole configuration.
    pub(super) fn validate(&self, oids: &CaOids) -> Result<(), ConfigError> {
        self.policy(oids)?;
        if self.accuracy_millis > 999 {
            return Err(invalid("tsa.accuracy_millis", "must be 0 to 999"));
        }
        if self.accuracy_seconds > 3600 {
            return Err(invalid("tsa.accuracy_seconds", "must be 0 to 3600"));
        }
        if self.accuracy_seconds == 0 && self.accuracy_millis == 0 {
            return Err(invalid(
                "tsa.accuracy_seconds",
                "state a non-zero accuracy (accuracy_seconds or accuracy_millis)",
            ));
        }
        if !(1..=300).contains(&self.time_window_seconds) {
            return Err(invalid("tsa.time_window_seconds", "must be 1 to 300"));
        }
        Ok(())
    }
}

/// `[audit]`: the audit key and checkpoints. The ceremony generates the key in the HSM and
/// has `issuer` certify it; the daemon signs the newest entry's hash with it every
/// `checkpoint_interval_seconds` and at shutdown.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The issuing CA that certifies the audit key.
    pub issuer: String,
    /// CKA_LABEL of the audit key pair in the HSM.
    pub key_label: String,
    /// Key type: `p256` or `p384` (checkpoints are checked with `openssl dgst -verify`).
    #[serde(default = "default_audit_key_type")]
    pub key_type: KeyType,
    /// Subject of the audit key's certificate (a CN is required).
    pub subject: BTreeMap<String, String>,
    /// Validity of the audit certificate in years.
    #[serde(default = "default_service_validity")]
    pub validity_years: u32,
    /// How often a checkpoint is signed (and usage counts are written), in seconds.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_seconds: u64,
}

impl AuditConfig {
    /// The checkpoint interval. The key is checked against the hierarchy by the whole
    /// configuration.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=86_400).contains(&self.checkpoint_interval_seconds) {
            return Err(invalid(
                "audit.checkpoint_interval_seconds",
                "must be 10 to 86400",
            ));
        }
        Ok(())
    }
}

fn default_service_validity() -> u32 {
    2
}
fn default_accuracy_seconds() -> u32 {
    1
}
fn default_time_window() -> u64 {
    10
}
fn default_audit_key_type() -> KeyType {
    KeyType::P256
}
fn default_checkpoint_interval() -> u64 {
    3600
}

/// A key the ceremony makes for a service (the TSA, the audit log), checked.
#[derive(Clone, Debug)]
pub struct ServiceKeySpec {
    /// The issuing CA that certifies it.
    pub issuer: String,
    /// CKA_LABEL.
    pub key_label: String,
    /// Key type.
    pub key_type: KeyType,
    /// The algorithm it signs with (the key type's default).
    pub signature: SignatureAlgorithm,
    /// Subject of its certificate.
    pub subject: SubjectSpec,
    /// Validity of its certificate in years.
    pub validity_years: u32,
}

//! `[profiles.NAME]`: certificate profiles, checked into the `Profile`s issuance works from.

use const_oid::ObjectIdentifier;
use serde::Deserialize;

use super::error::{ConfigError, invalid, is_simple_name};
use crate::pki::{KeyType, Profile, ProfileKind};

/// `[profiles.NAME]`: a certificate profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// The certificate kind, which fixes key usages and name rules.
    pub kind: ProfileKind,
    /// Issuers allowed to sign this profile; the first is the default.
    pub issuers: Vec<String>,
    /// Validities allowed, in years.
    #[serde(default = "default_validities")]
    pub validity_years: Vec<u32>,
    /// Renewal allowed in this many days before not-after.
    #[serde(default = "default_renewal_window")]
    pub renewal_window_days: u32,
    /// Certificate policy OID (dotted decimal).
    pub policy_oid: String,
    /// Liability limit shown in the policy's user notice, e.g. `500,000 CNY`.
    pub liability: Option<String>,
    /// Subscriber key types accepted.
    #[serde(default = "default_key_types")]
    pub key_types: Vec<KeyType>,
    /// Whether a dNSName SAN may be a wildcard; by default only for the server kind.
    pub allow_wildcards: Option<bool>,
}

fn default_validities() -> Vec<u32> {
    vec![1, 2]
}
fn default_renewal_window() -> u32 {
    90
}
fn default_key_types() -> Vec<KeyType> {
    KeyType::ALL.to_vec()
}

impl ProfileConfig {
    /// This profile, named `name`, checked. `issuer_problem` says what is wrong with listing
    /// an issuer here (one the hierarchy lacks, or its root), which only the whole
    /// configuration knows.
    pub(super) fn check(
        &self,
        name: &str,
        issuer_problem: impl Fn(&str) -> Result<(), String>,
    ) -> Result<Profile, ConfigError> {
        let key = |f: &str| format!("profiles.{name}.{f}");
        if !is_simple_name(name) {
            return Err(invalid(
                format!("profiles.{name}"),
                "profile names use letters, digits, '-' or '_'",
            ));
        }
        if self.issuers.is_empty() {
            return Err(invalid(key("issuers"), "list at least one issuer"));
        }
        for i in &self.issuers {
            issuer_problem(i).map_err(|problem| invalid(key("issuers"), problem))?;
        }
        if self.validity_years.is_empty()
            || self.validity_years.iter().any(|y| !(1..=2).contains(y))
        {
            return Err(invalid(
                key("validity_years"),
                format!(
                    "{:?}: the subscriber agreements allow 1 or 2 years",
                    self.validity_years
                ),
            ));
        }
        if !(1..=366).contains(&self.renewal_window_days) {
            return Err(invalid(key("renewal_window_days"), "must be 1 to 366"));
        }
        let policy_oid = ObjectIdentifier::new(&self.policy_oid).map_err(|e| {
            invalid(
                key("policy_oid"),
                format!("{:?} is not an OID: {e}", self.policy_oid),
            )
        })?;
        if let Some(l) = &self.liability
            && (l.is_empty() || l.chars().count() > 64)
        {
            return Err(invalid(key("liability"), "must be 1 to 64 characters"));
        }
        if self.key_types.is_empty() {
            return Err(invalid(key("key_types"), "list at least one key type"));
        }
        if self.allow_wildcards == Some(true) && !self.kind.takes_dns_names() {
            return Err(invalid(
                key("allow_wildcards"),
                format!(
                    "the {} kind takes no dns: SANs, so it has no wildcards to allow",
                    self.kind
                ),
            ));
        }
        Ok(Profile {
            allow_wildcards: self
                .allow_wildcards
                .unwrap_or_else(|| self.kind.wildcards_by_default()),
            name: name.to_owned(),
            kind: self.kind,
            validity_years: self.validity_years.clone(),
            renewal_window_days: self.renewal_window_days,
            policy_oid,
            liability: self.liability.clone(),
            key_types: self.key_types.clone(),
            issuers: self.issuers.clone(),
        })
    }
}

//! `[profiles.NAME]`: certificate profiles, checked into the `Profile`s issuance works from.

use serde::Deserialize;

use super::ca::own_oid;
use super::error::{ConfigError, invalid, is_simple_name};
use crate::pki::oids::CaOids;
use crate::pki::{EmailProtection, KeyType, OrgIdForm, Profile, ProfileKind};

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
    /// Certificate policy OID (dotted decimal); default `{ca.oid_arc}.1.N` by kind.
    pub policy_oid: Option<String>,
    /// Liability limit shown in the policy's user notice, e.g. `500,000 CNY`.
    pub liability: Option<String>,
    /// Subscriber key types accepted; by default RSA and ECDSA (no Ed25519).
    pub key_types: Option<Vec<KeyType>>,
    /// Whether a dNSName SAN may be a wildcard; by default only for the server kind.
    pub allow_wildcards: Option<bool>,
    /// When emailProtection is put in a certificate (personal and organization kinds):
    /// `if-email-san` (the default) or `require-email-san`.
    pub email_protection: Option<EmailProtection>,
    /// Where a unified social credit code is written: `ntr` (organizationIdentifier
    /// `NTRCN-<code>`, the default), `bare` or `serial-number`.
    pub org_id_form: Option<OrgIdForm>,
    /// Whether the CA/Browser Forum's TLS or S/MIME Baseline Requirements apply; by
    /// default for the server, payment_gateway, personal and organization kinds.
    pub cabf_requirements: Option<bool>,
}

fn default_validities() -> Vec<u32> {
    vec![1, 2]
}
fn default_renewal_window() -> u32 {
    90
}

impl ProfileConfig {
    /// This profile, named `name`, checked. `issuer_problem` says what is wrong with listing
    /// an issuer here (one the hierarchy lacks, or its root), which only the whole
    /// configuration knows.
    pub(super) fn check(
        &self,
        name: &str,
        oids: &CaOids,
        issuer_problem: impl Fn(&str) -> Result<(), String>,
    ) -> Result<Profile, ConfigError> {
        let key = |f: &str| format!("profiles.{name}.{f}");
        if !is_simple_name(name) {
            return Err(invalid(
                format!("profiles.{name}"),
                "profile names use letters, digits, '-' or '_'",
            ));
        }
        // signet's own kinds are made by the ceremony alone: an RA profile of the audit or
        // TSA kind would hand out the CA's own key purposes.
        let Some(default_policy) = self.kind.policy_number().map(|n| oids.profile_policy(n)) else {
            return Err(invalid(
                key("kind"),
                format!(
                    "{} is the kind of a certificate the ceremony makes for signet itself; profiles take personal, organization, device, server, code_signing or payment_gateway",
                    self.kind
                ),
            ));
        };
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
        let policy_oid = match &self.policy_oid {
            Some(text) => own_oid(&key("policy_oid"), text)?,
            None => default_policy,
        };
        if let Some(l) = &self.liability
            && (l.is_empty() || l.chars().count() > 64)
        {
            return Err(invalid(key("liability"), "must be 1 to 64 characters"));
        }
        let key_types = self
            .key_types
            .clone()
            .unwrap_or_else(|| self.kind.default_key_types());
        if key_types.is_empty() {
            return Err(invalid(key("key_types"), "list at least one key type"));
        }
        if self.email_protection.is_some() && !self.kind.takes_email_protection() {
            return Err(invalid(
                key("email_protection"),
                format!(
                    "the {} kind carries no emailProtection; only personal and organization profiles take this key",
                    self.kind
                ),
            ));
        }
        let cabf = self
            .cabf_requirements
            .unwrap_or_else(|| self.kind.cabf_applies());
        if cabf && !self.kind.cabf_applies() {
            return Err(invalid(
                key("cabf_requirements"),
                format!(
                    "signet follows the CA/B TLS and S/MIME Baseline Requirements, which do not cover the {} kind",
                    self.kind
                ),
            ));
        }
        let org_id_form = self.org_id_form.unwrap_or_default();
        if cabf && self.kind == ProfileKind::Organization && org_id_form != OrgIdForm::Ntr {
            return Err(invalid(
                key("org_id_form"),
                format!(
                    "{:?}: the CA/B S/MIME Baseline Requirements (7.1.4.2.2) want an organisation's credit code as organizationIdentifier NTRCN-<code>; use \"ntr\" or set cabf_requirements = false",
                    org_id_form.name()
                ),
            ));
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
            key_types,
            issuers: self.issuers.clone(),
            email_protection: self.email_protection.unwrap_or_default(),
            org_id_form,
            cabf,
            private_eku: None,
        })
    }
}

//! `[ca]` and `[[issuer]]`: the settings every issuer shares, and the CA hierarchy.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use const_oid::ObjectIdentifier;
use serde::Deserialize;

use super::error::{ConfigError, invalid, is_simple_name};
use crate::pki::oids::{CaOids, cabf};
use crate::pki::verify::RsaExponent;
use crate::pki::{KeyType, SignatureAlgorithm, SubjectSpec};

/// `[ca]`: settings that apply to every issuer and profile.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Public base URL of the status service; CRL distribution points and AIA URLs in every
    /// certificate are built from it (`{base}/crl/{issuer}.crl`, `{base}/ocsp`,
    /// `{base}/ca/{issuer}.crt`).
    pub public_base_url: String,
    /// The subscriber-agreement version applicants currently accept; requests naming any
    /// other version are refused.
    pub agreement_version: String,
    /// Where the ceremony writes CA certificates and the certs-only `.p7b`.
    pub output_dir: PathBuf,
    /// The RSA public exponents subscribers' keys may have: `"65537"` (the default) or
    /// `"odd-at-least-65537"`.
    pub rsa_exponent: Option<String>,
    /// The CA's own OID arc (its IANA private enterprise number, `1.3.6.1.4.1.NNNNN`, or an
    /// arc under its national registration). signet derives its own OIDs and the default
    /// policy OIDs from it (see [`CaOids`]). Required.
    pub oid_arc: Option<String>,
    /// The certificate policy of signet's own certificates (TLS server, RA clients, OCSP
    /// responders, TSA, audit key); default `{oid_arc}.3.1`.
    pub service_policy_oid: Option<String>,
}

/// Parse a dotted-decimal OID at `key`: a policy or arc of the CA's own, so neither
/// anyPolicy nor under the CA/Browser Forum's reserved arc.
pub(super) fn own_oid(key: &str, text: &str) -> Result<ObjectIdentifier, ConfigError> {
    let oid = ObjectIdentifier::new(text)
        .map_err(|e| invalid(key, format!("{text:?} is not an OID: {e}")))?;
    if oid == crate::pki::oids::ANY_POLICY {
        return Err(invalid(
            key,
            "anyPolicy says nothing about how a certificate was issued; name a policy of the CA's own",
        ));
    }
    let dotted = oid.to_string();
    if dotted == cabf::ARC || dotted.starts_with(&format!("{}.", cabf::ARC)) {
        return Err(invalid(
            key,
            format!(
                "{dotted} is under the CA/Browser Forum's arc {}; signet adds the reserved policy OIDs itself where the CA/B rules apply (cabf_requirements)",
                cabf::ARC
            ),
        ));
    }
    Ok(oid)
}

impl CaConfig {
    /// The public base URL and the agreement version.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.public_base_url)
            .map_err(|e| invalid("ca.public_base_url", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "ca.public_base_url",
                "must be an http:// or https:// URL",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                "ca.public_base_url",
                "must not have a query or fragment",
            ));
        }
        if self.agreement_version.trim().is_empty() || self.agreement_version.len() > 64 {
            return Err(invalid(
                "ca.agreement_version",
                "must be 1 to 64 characters",
            ));
        }
        self.rsa_exponent_rule()?;
        self.oids()?;
        Ok(())
    }

    /// The CA's arc and the OIDs signet derives from it.
    pub fn oids(&self) -> Result<CaOids, ConfigError> {
        let Some(text) = &self.oid_arc else {
            return Err(invalid(
                "ca.oid_arc",
                "missing: name the CA's own OID arc (its IANA private enterprise number, 1.3.6.1.4.1.NNNNN); signet derives its policy and key-purpose OIDs from it",
            ));
        };
        let arc = own_oid("ca.oid_arc", text)?;
        if arc.arcs().count() < 3 {
            return Err(invalid(
                "ca.oid_arc",
                format!("{text:?} is a top-level arc, not one a CA was assigned"),
            ));
        }
        let service = self
            .service_policy_oid
            .as_deref()
            .map(|t| own_oid("ca.service_policy_oid", t))
            .transpose()?;
        CaOids::new(arc, service).map_err(|e| invalid("ca.oid_arc", e))
    }

    /// The rule for subscribers' RSA exponents (`rsa_exponent`), 65537 when not configured.
    pub fn rsa_exponent_rule(&self) -> Result<RsaExponent, ConfigError> {
        self.rsa_exponent
            .as_deref()
            .map_or(Ok(RsaExponent::default()), str::parse)
            .map_err(|problem| invalid("ca.rsa_exponent", problem))
    }
}

/// `[[issuer]]`: one CA of the hierarchy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer's name, used in URLs and requests (letters, digits, `-`, `_`).
    pub name: String,
    /// The issuer that certifies this one; absent for the self-signed root.
    pub parent: Option<String>,
    /// CKA_LABEL of the key pair in the HSM.
    pub key_label: String,
    /// Key type generated by the ceremony.
    pub key_type: KeyType,
    /// Signature algorithm this CA signs with; defaults from the key type.
    pub signature: Option<SignatureAlgorithm>,
    /// Subject attributes (`C`, `O`, `CN`, ...).
    pub subject: BTreeMap<String, String>,
    /// Validity of the CA certificate in years.
    pub validity_years: u32,
    /// basicConstraints pathLenConstraint; absent means unlimited.
    pub path_len: Option<u8>,
}

/// A CA of the hierarchy, checked.
#[derive(Clone, Debug)]
pub struct IssuerSpec {
    /// Name used in URLs and requests.
    pub name: String,
    /// Parent issuer's name; `None` for the root.
    pub parent: Option<String>,
    /// CKA_LABEL of the key pair.
    pub key_label: String,
    /// Key type.
    pub key_type: KeyType,
    /// Signature algorithm the CA signs with.
    pub signature: SignatureAlgorithm,
    /// Subject.
    pub subject: SubjectSpec,
    /// Validity in years.
    pub validity_years: u32,
    /// pathLenConstraint.
    pub path_len: Option<u8>,
}

/// The hierarchy, checked: unique names and labels, parents that exist, no cycles,
/// signature algorithms that fit the keys. Parents come before their children.
pub(super) fn check_issuers(issuers: &[IssuerConfig]) -> Result<Vec<IssuerSpec>, ConfigError> {
    let mut specs = Vec::new();
    let mut names = HashMap::new();
    let mut labels = HashMap::new();
    for (i, ic) in issuers.iter().enumerate() {
        let key = |f: &str| format!("issuer[{i}].{f}");
        if !is_simple_name(&ic.name) {
            return Err(invalid(
                key("name"),
                format!("{:?}: use 1 to 64 letters, digits, '-' or '_'", ic.name),
            ));
        }
        if names.insert(ic.name.clone(), i).is_some() {
            return Err(invalid(key("name"), format!("{:?} is used twice", ic.name)));
        }
        if ic.key_label.is_empty() || ic.key_label.len() > 128 {
            return Err(invalid(key("key_label"), "must be 1 to 128 characters"));
        }
        if labels.insert(ic.key_label.clone(), i).is_some() {
            return Err(invalid(
                key("key_label"),
                format!("{:?} is used by another issuer", ic.key_label),
            ));
        }
        let signature = ic
            .signature
            .unwrap_or_else(|| ic.key_type.default_signature_algorithm());
        if !signature.fits_key(ic.key_type) {
            return Err(invalid(
                key("signature"),
                format!("{signature} cannot be made with a {} key", ic.key_type),
            ));
        }
        let subject = SubjectSpec::from_pairs(ic.subject.iter())
            .map_err(|e| invalid(key("subject"), e.to_string()))?;
        if subject.get(crate::pki::Attr::CommonName).is_none() {
            return Err(invalid(key("subject"), "a CA subject needs a CN"));
        }
        if !(1..=30).contains(&ic.validity_years) {
            return Err(invalid(key("validity_years"), "must be 1 to 30"));
        }
        specs.push(IssuerSpec {
            name: ic.name.clone(),
            parent: ic.parent.clone(),
            key_label: ic.key_label.clone(),
            key_type: ic.key_type,
            signature,
            subject,
            validity_years: ic.validity_years,
            path_len: ic.path_len,
        });
    }
    for (i, s) in specs.iter().enumerate() {
        if let Some(p) = &s.parent {
            let Some(&pi) = names.get(p) else {
                return Err(invalid(
                    format!("issuer[{i}].parent"),
                    format!("{p:?} is not a configured issuer"),
                ));
            };
            if pi == i {
                return Err(invalid(
                    format!("issuer[{i}].parent"),
                    "an issuer cannot be its own parent",
                ));
            }
            // Walk up: a cycle never reaches a root.
            let mut cur = pi;
            for _ in 0..specs.len() {
                match &specs[cur].parent {
                    None => break,
                    Some(pp) => cur = names[pp],
                }
            }
            if specs[cur].parent.is_some() {
                return Err(invalid(
                    format!("issuer[{i}].parent"),
                    "the hierarchy has a cycle",
                ));
            }
            if specs[pi].validity_years < s.validity_years {
                return Err(invalid(
                    format!("issuer[{i}].validity_years"),
                    format!("outlives its parent {p:?}"),
                ));
            }
        }
    }
    // Order: parents first.
    let mut ordered: Vec<IssuerSpec> = Vec::with_capacity(specs.len());
    while ordered.len() < specs.len() {
        for s in &specs {
            let ready = s
                .parent
                .as_ref()
                .is_none_or(|p| ordered.iter().any(|o| &o.name == p));
            if ready && !ordered.iter().any(|o| o.name == s.name) {
                ordered.push(s.clone());
            }
        }
    }
    Ok(ordered)
}

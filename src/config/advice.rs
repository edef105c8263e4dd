//! What a configuration that loads may still get wrong: OIDs under an example arc (refused
//! for production), Ed25519 keys that relying parties reject, liability notices the CA/B
//! rules keep out of TLS certificates, and a status URL relying parties cannot reach. Each
//! finding names its key; `signet check-config` prints them and the daemon logs them.

use url::Url;

use super::error::ConfigError;
use super::load::Config;
use crate::pki::KeyType;
use crate::pki::oids::example_arc;

/// One thing worth an operator's attention, at `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The dotted key, e.g. `profiles.server.key_types`.
    pub key: String,
    /// What is wrong and what relying parties will do about it.
    pub problem: String,
    /// True when a production CA must not run with it (`check-config --production`
    /// refuses the configuration).
    pub blocks_production: bool,
}

impl Config {
    /// Every finding about this (loaded, so otherwise valid) configuration.
    pub fn findings(&self) -> Result<Vec<Finding>, ConfigError> {
        let mut out = Vec::new();
        let oids = self.ca.oids()?;
        let mut example = |key: String, oid: &const_oid::ObjectIdentifier, derived: &str| {
            if let Some(arc) = example_arc(oid) {
                out.push(Finding {
                    key,
                    problem: format!(
                        "{oid} is under the example arc {arc}{derived}; a CA's certificates carry OIDs of its own arc (its IANA private enterprise number), and check-config --production refuses this"
                    ),
                    blocks_production: true,
                });
            }
        };
        example(
            "ca.oid_arc".into(),
            oids.arc(),
            ", and so is every OID signet derives from it (default profile and TSA policies, the policy of signet's own certificates, the audit key's purpose)",
        );
        if self.ca.service_policy_oid.is_some() {
            example("ca.service_policy_oid".into(), &oids.service_policy(), "");
        }
        if let Some(t) = &self.tsa
            && t.policy_oid.is_some()
        {
            example("tsa.policy_oid".into(), &t.policy(&oids)?, "");
        }
        let profiles = self.profiles()?;
        for (name, pc) in &self.profiles {
            if pc.policy_oid.is_some()
                && let Some(p) = profiles.get(name)
            {
                example(format!("profiles.{name}.policy_oid"), &p.policy_oid, "");
            }
        }

        for (name, p) in &profiles {
            if p.key_types.contains(&KeyType::Ed25519)
                && let Some(caveat) = p.kind.ed25519_caveat()
            {
                out.push(Finding {
                    key: format!("profiles.{name}.key_types"),
                    problem: format!(
                        "ed25519 is enabled for the {} kind: {caveat}; issue it only to subscribers whose relying parties are known to accept it",
                        p.kind
                    ),
                    blocks_production: false,
                });
            }
            if p.cabf && p.kind.is_tls_server() && p.liability.is_some() {
                out.push(Finding {
                    key: format!("profiles.{name}.liability"),
                    problem: "is not written into the certificates: the CA/B TLS Baseline Requirements (7.1.2.7.9) allow no user notice in a TLS certificate; state the limit in the CPS and the subscriber agreement, or set cabf_requirements = false".into(),
                    blocks_production: false,
                });
            }
        }

        if profiles.values().any(|p| p.cabf)
            && let Some(host) = Url::parse(&self.ca.public_base_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
            && !crate::pki::dns::is_public_name(&host)
        {
            let cabf: Vec<&str> = profiles
                .iter()
                .filter(|(_, p)| p.cabf)
                .map(|(n, _)| n.as_str())
                .collect();
            out.push(Finding {
                key: "ca.public_base_url".into(),
                problem: format!(
                    "host {host:?} is not a public domain name, so relying parties elsewhere cannot fetch CRLs, OCSP or CA certificates from it, and the CA/B Baseline Requirements that profiles {} follow forbid it in the CRL distribution point and AIA",
                    cabf.join(", ")
                ),
                blocks_production: false,
            });
        }
        Ok(out)
    }
}

//! The whole configuration: `Config`, read from TOML, checked section by section and then
//! across sections (a profile lists issuers of the hierarchy, an RA names profiles, the TSA
//! and audit keys are certified by issuing CAs), and the settings derived from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::api::{ApiConfig, RaConfig, validate_ras};
use super::ca::{CaConfig, IssuerConfig, IssuerSpec, check_issuers};
use super::error::{ConfigError, invalid};
use super::hsm::{HsmConfig, StoreConfig};
use super::profiles::ProfileConfig;
use super::services::{AuditConfig, ServiceKeySpec, TsaConfig};
use super::status::{CrlConfig, HttpConfig, LogConfig, MetricsConfig, OcspConfig};
use super::token::TokenConfig;
use crate::hsm::{HsmSettings, TokenSelector};
use crate::pki::{KeyType, Profile, SubjectSpec};
use crate::secret::Secret;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HSM holding the CA keys.
    pub hsm: HsmConfig,
    /// Where issued certificates and the audit log are kept.
    pub store: StoreConfig,
    /// Authority-wide settings.
    pub ca: CaConfig,
    /// The CA hierarchy: a root and the issuing CAs under it, created by `signet ceremony`.
    #[serde(rename = "issuer", default)]
    pub issuers: Vec<IssuerConfig>,
    /// Certificate profiles, by the name requests use.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// The RA API listener (`signet serve`); absent in a configuration used only for the
    /// ceremony and local issuance.
    pub api: Option<ApiConfig>,
    /// The RA offices allowed to call the API, and what each may do. Deny by default: a
    /// client certificate that matches no entry is refused.
    #[serde(rename = "ra", default)]
    pub ras: Vec<RaConfig>,
    /// The public status listener (CRLs, CA certificates, health) over plain HTTP; absent
    /// means `signet serve` offers none.
    pub http: Option<HttpConfig>,
    /// The Prometheus metrics listener; absent means none.
    pub metrics: Option<MetricsConfig>,
    /// When CRLs are regenerated and how long each is valid.
    #[serde(default)]
    pub crl: CrlConfig,
    /// How long OCSP responses stay fresh.
    #[serde(default)]
    pub ocsp: OcspConfig,
    /// Token personalisation (the workstation's subscriber tokens); absent means none.
    pub token: Option<TokenConfig>,
    /// The RFC 3161 timestamp authority (`POST /tsa` on the status service); absent means
    /// signet offers none.
    pub tsa: Option<TsaConfig>,
    /// The audit key that signs checkpoints of the audit log, and how often; absent means
    /// the log is hash-chained but never signed.
    pub audit: Option<AuditConfig>,
    /// Logging: which events are written (`[log] level`, applied at start unless `RUST_LOG`
    /// is set, and again on SIGHUP).
    #[serde(default)]
    pub log: LogConfig,
    /// The directory holding the configuration file; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Config {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::from_toml(&text, &base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parse and check configuration text; relative paths resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        cfg.base_dir = base_dir.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Resolve a path from the file against the configuration directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            normalize(&self.base_dir.join(p))
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.hsm.validate()?;
        if self.hsm_sm2()?.is_none() {
            let sm2_keys = self
                .issuers
                .iter()
                .enumerate()
                .map(|(i, ic)| (format!("issuer[{i}].key_type"), ic.key_type))
                .chain(
                    self.tsa
                        .iter()
                        .map(|t| ("tsa.key_type".to_owned(), t.key_type)),
                )
                .chain(
                    self.audit
                        .iter()
                        .map(|a| ("audit.key_type".to_owned(), a.key_type)),
                )
                .chain(std::iter::once((
                    "ocsp.responder_key_type".to_owned(),
                    self.ocsp.responder_key_type,
                )));
            for (key, key_type) in sm2_keys {
                if key_type == crate::pki::KeyType::Sm2 {
                    return Err(invalid(
                        key,
                        "an sm2 key needs the HSM's SM2 numbers: set [hsm] sm2_mechanisms (PKCS#11 has no standard SM2 mechanism)",
                    ));
                }
            }
        }
        self.ca.validate()?;
        if let Some(t) = &self.token {
            t.validate()?;
        }
        if let Some(h) = &self.http {
            h.validate()?;
        }
        if let Some(level) = &self.log.level {
            tracing_subscriber::EnvFilter::builder()
                .parse(level)
                .map_err(|e| invalid("log.level", format!("{level:?}: {e}")))?;
        }

        // [[issuer]]
        let specs = self.issuer_specs()?;
        let roots = specs.iter().filter(|s| s.parent.is_none()).count();
        if !specs.is_empty() && roots == 0 {
            return Err(invalid("issuer", "no root: one issuer must have no parent"));
        }

        // [profiles]
        let profiles = self.profiles()?;

        // [api]: its TLS issuer is an issuing CA of the hierarchy that signs no profile.
        if let Some(api) = &self.api {
            let issuer = specs
                .iter()
                .find(|s| s.name == api.tls_issuer)
                .ok_or_else(|| {
                    invalid(
                        "api.tls_issuer",
                        format!("{:?} is not a configured issuer", api.tls_issuer),
                    )
                })?;
            if issuer.parent.is_none() {
                return Err(invalid(
                    "api.tls_issuer",
                    "the root does not certify TLS keys; name an issuing CA",
                ));
            }
            // RA client certificates are trusted by their issuer alone; if that issuer also
            // signed subscriber profiles, any subscriber could present a client certificate.
            if let Some((name, _)) = profiles
                .iter()
                .find(|(_, p)| p.issuers.contains(&api.tls_issuer))
            {
                return Err(invalid(
                    "api.tls_issuer",
                    format!(
                        "{:?} also signs profile {name}; RA client certificates need an issuer of their own",
                        api.tls_issuer
                    ),
                ));
            }
            api.validate()?;
        }

        // [ocsp] and [crl]
        self.ocsp.validate()?;
        self.crl.validate()?;

        // [tsa] and [audit]: keys certified by issuing CAs, one purpose each.
        if let Some(t) = &self.tsa {
            self.tsa_key()?;
            t.validate(&self.ca.oids()?)?;
        }
        if let Some(a) = &self.audit {
            self.audit_key()?;
            a.validate()?;
        }
        if let (Some(t), Some(a)) = (&self.tsa, &self.audit)
            && t.key_label == a.key_label
        {
            return Err(invalid(
                "audit.key_label",
                "must differ from tsa.key_label: each key serves one purpose",
            ));
        }

        // [[ra]]: the profiles each RA names are configured.
        validate_ras(&self.ras, |p| {
            if profiles.contains_key(p) {
                Ok(())
            } else {
                Err(format!("{p:?} is not a configured profile"))
            }
        })
    }

    /// The token modules' paths and SM2 numbers, with their `module_env` set for this
    /// process (call at start-up, before the modules are loaded).
    pub fn token_modules(&self) -> Vec<(PathBuf, Option<crate::hsm::sm2::Sm2Settings>)> {
        let Some(t) = &self.token else {
            return Vec::new();
        };
        t.modules
            .iter()
            .map(|m| {
                for (k, v) in &m.module_env {
                    let value = if v.starts_with("./") || v.starts_with("../") {
                        self.resolve(Path::new(v)).to_string_lossy().into_owned()
                    } else {
                        v.clone()
                    };
                    // SAFETY: called at start-up, before the module is loaded and before
                    // threads that read the environment run.
                    unsafe { std::env::set_var(k, value) };
                }
                // Checked when the configuration was loaded.
                let sm2 = super::hsm::sm2_settings("token.modules", m.sm2_mechanisms.as_ref())
                    .ok()
                    .flatten();
                (self.resolve(&m.path), sm2)
            })
            .collect()
    }

    /// The token selector from `token_label`, `token_serial` or `token_uri`.
    pub fn token_selector(&self) -> Result<TokenSelector, ConfigError> {
        self.hsm.token_selector()
    }

    /// Read the HSM PIN from its file or variable.
    pub fn hsm_pin(&self) -> Result<Secret, ConfigError> {
        if let Some(f) = &self.hsm.pin_file {
            let path = self.resolve(f);
            return Secret::from_file(&path).map_err(|e| ConfigError::Secret {
                key: "hsm.pin_file".into(),
                problem: format!("{}: {e}", path.display()),
            });
        }
        if let Some(v) = &self.hsm.pin_env {
            return Secret::from_env(v).map_err(|e| ConfigError::Secret {
                key: "hsm.pin_env".into(),
                problem: format!("${v}: {e}"),
            });
        }
        Err(invalid("hsm", "no PIN source"))
    }

    /// Everything the HSM layer needs, with the PIN loaded. Also sets the module's
    /// environment variables (`module_env`) for this process, which must happen before the
    /// module is loaded and while no other thread reads the environment.
    pub fn hsm_settings(&self) -> Result<HsmSettings, ConfigError> {
        for (k, v) in &self.hsm.module_env {
            let value = if v.starts_with("./") || v.starts_with("../") {
                self.resolve(Path::new(v)).to_string_lossy().into_owned()
            } else {
                v.clone()
            };
            // SAFETY: called once at start-up, before the PKCS#11 module is loaded and
            // before the daemon starts threads that read the environment.
            unsafe { std::env::set_var(k, value) };
        }
        Ok(HsmSettings {
            module: self.resolve(&self.hsm.module),
            token: self.token_selector()?,
            pin: self.hsm_pin()?,
            pool_size: self.hsm.pool_size,
            reconnect_initial: Duration::from_millis(self.hsm.reconnect_initial_ms),
            reconnect_max: Duration::from_millis(self.hsm.reconnect_max_ms),
            call_timeout: Duration::from_millis(self.hsm.call_timeout_ms),
            sm2: self.hsm_sm2()?,
        })
    }

    /// The `[hsm]` module's SM2 settings, when it has SM2.
    pub fn hsm_sm2(&self) -> Result<Option<crate::hsm::sm2::Sm2Settings>, ConfigError> {
        super::hsm::sm2_settings("hsm", self.hsm.sm2_mechanisms.as_ref())
    }

    /// The SQLite database path.
    pub fn store_path(&self) -> PathBuf {
        self.resolve(&self.store.sqlite)
    }

    /// The ceremony output directory.
    pub fn output_dir(&self) -> PathBuf {
        self.resolve(&self.ca.output_dir)
    }

    /// The public base URL without a trailing slash.
    pub fn public_base_url(&self) -> String {
        self.ca.public_base_url.trim_end_matches('/').to_owned()
    }

    /// The hierarchy, checked: unique names and labels, parents that exist, no cycles,
    /// signature algorithms that fit the keys. Parents come before their children.
    pub fn issuer_specs(&self) -> Result<Vec<IssuerSpec>, ConfigError> {
        check_issuers(&self.issuers)
    }

    /// The TSA key and certificate the ceremony makes, checked; `None` without `[tsa]`.
    pub fn tsa_key(&self) -> Result<Option<ServiceKeySpec>, ConfigError> {
        self.tsa
            .as_ref()
            .map(|t| {
                self.service_key(
                    "tsa",
                    &t.issuer,
                    &t.key_label,
                    t.key_type,
                    &t.subject,
                    t.validity_years,
                )
            })
            .transpose()
    }

    /// The audit key and certificate the ceremony makes, checked; `None` without `[audit]`.
    pub fn audit_key(&self) -> Result<Option<ServiceKeySpec>, ConfigError> {
        self.audit
            .as_ref()
            .map(|a| {
                let spec = self.service_key(
                    "audit",
                    &a.issuer,
                    &a.key_label,
                    a.key_type,
                    &a.subject,
                    a.validity_years,
                )?;
                if !matches!(a.key_type, KeyType::P256 | KeyType::P384) {
                    return Err(invalid(
                        "audit.key_type",
                        "must be p256 or p384 (checkpoints are ECDSA, checked with openssl dgst -verify)",
                    ));
                }
                Ok(spec)
            })
            .transpose()
    }

    fn service_key(
        &self,
        section: &str,
        issuer: &str,
        key_label: &str,
        key_type: KeyType,
        subject: &BTreeMap<String, String>,
        validity_years: u32,
    ) -> Result<ServiceKeySpec, ConfigError> {
        let key = |f: &str| format!("{section}.{f}");
        let Some(parent) = self.issuers.iter().find(|i| i.name == issuer) else {
            return Err(invalid(
                key("issuer"),
                format!("{issuer:?} is not a configured issuer"),
            ));
        };
        if parent.parent.is_none() {
            return Err(invalid(
                key("issuer"),
                format!("{issuer:?} is the root; name an issuing CA"),
            ));
        }
        if key_label.is_empty() || key_label.len() > 128 {
            return Err(invalid(key("key_label"), "must be 1 to 128 characters"));
        }
        if self.issuers.iter().any(|i| i.key_label == key_label) {
            return Err(invalid(
                key("key_label"),
                format!("{key_label:?} is the key of an issuer; give this key its own label"),
            ));
        }
        if key_type == KeyType::Ed25519 {
            return Err(invalid(
                key("key_type"),
                "ed25519 is not accepted here; use p256, p384 or an RSA key",
            ));
        }
        let subject = SubjectSpec::from_pairs(subject.iter())
            .map_err(|e| invalid(key("subject"), e.to_string()))?;
        if subject.get(crate::pki::Attr::CommonName).is_none() {
            return Err(invalid(key("subject"), "needs a CN"));
        }
        if !(1..=5).contains(&validity_years) || validity_years > parent.validity_years {
            return Err(invalid(
                key("validity_years"),
                format!(
                    "must be 1 to 5 and within the issuer's {} years",
                    parent.validity_years
                ),
            ));
        }
        Ok(ServiceKeySpec {
            issuer: issuer.to_owned(),
            key_label: key_label.to_owned(),
            key_type,
            signature: key_type.default_signature_algorithm(),
            subject,
            validity_years,
        })
    }

    /// The profiles, checked.
    pub fn profiles(&self) -> Result<BTreeMap<String, Profile>, ConfigError> {
        let oids = self.ca.oids()?;
        let mut out = BTreeMap::new();
        for (name, pc) in &self.profiles {
            let profile = pc.check(name, &oids, |i| self.profile_issuer_problem(i))?;
            out.insert(name.clone(), profile);
        }
        Ok(out)
    }

    /// What is wrong with a profile listing issuer `i`: subscriber certificates come from the
    /// issuing CAs of the hierarchy.
    fn profile_issuer_problem(&self, i: &str) -> Result<(), String> {
        if !self.issuers.iter().any(|c| c.name == i) {
            return Err(format!("{i:?} is not a configured issuer"));
        }
        if self
            .issuers
            .iter()
            .any(|c| c.name == i && c.parent.is_none())
        {
            return Err(format!(
                "{i:?} is the root; subscriber certificates come from issuing CAs"
            ));
        }
        Ok(())
    }
}

/// Remove `.` and `dir/..` pairs lexically, so `hsm-config/../var` reads as `var` in
/// messages. (Symbolic links are not followed: the result names the same file as long as
/// the removed directory is not a link, which holds for the paths an operator writes.)
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

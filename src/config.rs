//! The operator's configuration: TOML read with serde (`deny_unknown_fields`), then checked as
//! a whole so that every mistake is reported with the key that holds it, before any HSM or
//! database is touched. Secrets never sit in the file: PINs come from a file or a variable.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use const_oid::ObjectIdentifier;
use serde::Deserialize;

use crate::hsm::{HsmSettings, TokenSelector};
use crate::pki::{KeyType, Profile, ProfileKind, SignatureAlgorithm, SubjectSpec};
use crate::secret::Secret;

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

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

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
    /// The directory holding the configuration file; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

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

/// `[store]`: the database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Path of the SQLite database file (created if missing).
    pub sqlite: PathBuf,
}

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
}

/// `[api]`: the RA API over gRPC with mutual TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on, e.g. `127.0.0.1:8443`. There is no plaintext listener.
    pub listen: std::net::SocketAddr,
    /// The daemon's TLS certificate chain (PEM, leaf first). The ceremony writes it if missing.
    pub server_cert: PathBuf,
    /// The daemon's TLS private key (PKCS#8 PEM, mode 0600). The ceremony writes it if missing.
    pub server_key: PathBuf,
    /// Names the ceremony puts in the server certificate: DNS names or IP addresses.
    pub server_names: Vec<String>,
    /// The issuing CA that certifies the server certificate and RA client certificates.
    pub tls_issuer: String,
    /// PEM files of the CA certificates trusted to have issued RA client certificates.
    pub client_ca: Vec<PathBuf>,
    /// Deadline applied to a call that carries none, in milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub default_deadline_ms: u64,
    /// Calls served at once; further calls wait.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
}

fn default_deadline_ms() -> u64 {
    30_000
}
fn default_max_concurrent() -> usize {
    256
}

/// `[http]`: the public status service. Plain HTTP without client certificates: everything
/// it serves is signed (CRLs, OCSP responses) or public (CA certificates).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080` (port 0 picks a free port).
    pub listen: std::net::SocketAddr,
}

/// `[crl]`: CRL publication.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlConfig {
    /// Longest delay between a revocation and the CRL that lists it, in seconds.
    #[serde(default = "default_crl_lag")]
    pub lag_seconds: u64,
    /// A CRL is regenerated at least this often, revocations or not, in seconds.
    #[serde(default = "default_crl_interval")]
    pub interval_seconds: u64,
    /// nextUpdate is thisUpdate plus this many hours; at most 24.
    #[serde(default = "default_crl_next_update")]
    pub next_update_hours: u64,
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            lag_seconds: default_crl_lag(),
            interval_seconds: default_crl_interval(),
            next_update_hours: default_crl_next_update(),
        }
    }
}

/// `[ocsp]`: the OCSP responder of the status service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OcspConfig {
    /// nextUpdate is thisUpdate plus this many minutes; 1 to 10080 (seven days).
    #[serde(default = "default_ocsp_validity")]
    pub validity_minutes: u64,
    /// Who signs responses: a delegated responder certificate per issuer (the default), or
    /// the issuer's own key.
    #[serde(default)]
    pub signer: OcspSigner,
    /// Key type of the delegated responder keys the ceremony generates in the HSM.
    #[serde(default = "default_responder_key_type")]
    pub responder_key_type: KeyType,
    /// Lifetime of a delegated responder certificate in days (1 to 90). They carry
    /// id-pkix-ocsp-nocheck, so they are kept short; the daemon renews one when a third of
    /// its lifetime is left.
    #[serde(default = "default_responder_days")]
    pub responder_validity_days: u32,
    /// Reuse a signed `good` response (asked for without a nonce) until half its validity
    /// has passed, after checking the certificate's status again; a revocation takes it out.
    #[serde(default = "default_true")]
    pub cache: bool,
}

/// Who signs OCSP responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OcspSigner {
    /// A delegated responder certificate per issuer (EKU OCSPSigning, nocheck; key in the
    /// HSM), issued by the ceremony.
    #[default]
    Delegated,
    /// The issuer's own key.
    Issuer,
}

impl Default for OcspConfig {
    fn default() -> Self {
        OcspConfig {
            validity_minutes: default_ocsp_validity(),
            signer: OcspSigner::default(),
            responder_key_type: default_responder_key_type(),
            responder_validity_days: default_responder_days(),
            cache: true,
        }
    }
}

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
    /// The TSA policy OID placed in every token (dotted decimal); requests naming another
    /// policy are refused with unacceptedPolicy.
    pub policy_oid: String,
    /// The accuracy stated in tokens: whole seconds part.
    #[serde(default = "default_accuracy_seconds")]
    pub accuracy_seconds: u32,
    /// The accuracy stated in tokens: milliseconds part, 0 to 999.
    #[serde(default)]
    pub accuracy_millis: u32,
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

fn default_service_validity() -> u32 {
    2
}
fn default_accuracy_seconds() -> u32 {
    1
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

fn default_ocsp_validity() -> u64 {
    60
}
fn default_responder_key_type() -> KeyType {
    KeyType::P256
}
fn default_responder_days() -> u32 {
    30
}
fn default_true() -> bool {
    true
}

fn default_crl_lag() -> u64 {
    60
}
fn default_crl_interval() -> u64 {
    6 * 3600
}
fn default_crl_next_update() -> u64 {
    24
}

/// `[token]`: the token personalisation workstation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The workstation's name: the RA recorded for in-process issuance and the actor of
    /// its audit entries.
    pub actor: String,
    /// The PKCS#11 modules that serve subscribers' tokens (OpenSC, a vendor's library;
    /// SoftHSM in the quick start), searched in order for a token by serial.
    pub modules: Vec<TokenModuleConfig>,
    /// Shortest user PIN accepted.
    #[serde(default = "default_pin_min")]
    pub pin_min_len: usize,
    /// Longest user PIN accepted.
    #[serde(default = "default_pin_max")]
    pub pin_max_len: usize,
    /// Wrong user PINs before signet treats the PIN as locked (tokens count on their own
    /// too; SoftHSM never locks).
    #[serde(default = "default_max_pin_tries")]
    pub max_pin_tries: u32,
    /// Key algorithms allowed for subscriber keys.
    #[serde(default = "default_token_key_types")]
    pub key_types: Vec<KeyType>,
    /// Where CSRs go.
    pub issuer: TokenIssuerConfig,
}

/// `[[token.modules]]`: one PKCS#11 module for tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenModuleConfig {
    /// Path of the module (shared library).
    pub path: PathBuf,
    /// Environment variables the module reads at load time, as in `[hsm]`.
    #[serde(default)]
    pub module_env: BTreeMap<String, String>,
}

/// `[token.issuer]`: the CA that certifies tokens' keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuerConfig {
    /// `in-process` (this process's authority) or `remote` (a central signet over mTLS).
    pub kind: String,
    /// Remote: `https://host:port` of the central signet.
    pub endpoint: Option<String>,
    /// Remote: PEM of the CA that issued the central signet's server certificate.
    pub ca_cert: Option<PathBuf>,
    /// Remote: the workstation's client certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// Remote: the workstation's client key (PKCS#8 PEM).
    pub client_key: Option<PathBuf>,
}

fn default_pin_min() -> usize {
    6
}
fn default_pin_max() -> usize {
    32
}
fn default_max_pin_tries() -> u32 {
    5
}
fn default_token_key_types() -> Vec<KeyType> {
    vec![KeyType::Rsa2048, KeyType::P256, KeyType::P384]
}

/// An operation an RA may be granted.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RaOperation {
    /// `Issue`.
    Issue,
    /// `Renew`.
    Renew,
    /// `Revoke` and `ReleaseHold`.
    Revoke,
    /// `GetCertificate`, `ListCertificates`, `GetCaChain`.
    Read,
    /// The token workstation's `TokenService` (list, initialise, personalise, PINs, read).
    Token,
}

/// `[[ra]]`: one RA office.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaConfig {
    /// The RA's name, recorded as the actor of everything it does.
    pub name: String,
    /// Match client certificates whose subject has exactly these attributes, written as
    /// `CN=..., O=..., C=CN`.
    pub subject: Option<String>,
    /// Match client certificates whose SubjectPublicKeyInfo has this SHA-256 (hex).
    pub spki_sha256: Option<String>,
    /// Profiles this RA may issue, renew, revoke and read.
    pub profiles: Vec<String>,
    /// Operations this RA may call.
    pub operations: Vec<RaOperation>,
    /// Where the ceremony writes this RA's client certificate (PEM), if the CA makes it.
    pub client_cert: Option<PathBuf>,
    /// Where the ceremony writes this RA's client key (PKCS#8 PEM, mode 0600).
    pub client_key: Option<PathBuf>,
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

/// A server name as a SAN: an IP address literal, else a DNS name.
pub fn server_name_san(n: &str) -> Result<crate::pki::San, String> {
    let san = match n.parse::<std::net::IpAddr>() {
        Ok(ip) => crate::pki::San::Ip(ip),
        Err(_) => crate::pki::San::Dns(n.to_owned()),
    };
    san.checked("server_names").map_err(|e| e.to_string())
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

fn is_simple_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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
        // [hsm]
        let selectors = [
            self.hsm.token_label.is_some(),
            self.hsm.token_serial.is_some(),
            self.hsm.token_uri.is_some(),
        ];
        if selectors.iter().filter(|s| **s).count() != 1 {
            return Err(invalid(
                "hsm",
                "give exactly one of token_label, token_serial, token_uri (never a slot id: slots are renumbered)",
            ));
        }
        self.token_selector()?;
        if self.hsm.pin_file.is_some() == self.hsm.pin_env.is_some() {
            return Err(invalid(
                "hsm",
                "give exactly one of pin_file, pin_env (PINs are never written in the configuration)",
            ));
        }
        if !(1..=64).contains(&self.hsm.pool_size) {
            return Err(invalid("hsm.pool_size", "must be between 1 and 64"));
        }
        if self.hsm.reconnect_initial_ms == 0
            || self.hsm.reconnect_max_ms < self.hsm.reconnect_initial_ms
        {
            return Err(invalid(
                "hsm.reconnect_max_ms",
                "must be at least reconnect_initial_ms, which must be above 0",
            ));
        }

        // [ca]
        let url = url::Url::parse(&self.ca.public_base_url)
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
        if self.ca.agreement_version.trim().is_empty() || self.ca.agreement_version.len() > 64 {
            return Err(invalid(
                "ca.agreement_version",
                "must be 1 to 64 characters",
            ));
        }

        if let Some(t) = &self.token {
            self.validate_token(t)?;
        }

        // [[issuer]]
        let specs = self.issuer_specs()?;
        let roots = specs.iter().filter(|s| s.parent.is_none()).count();
        if !specs.is_empty() && roots == 0 {
            return Err(invalid("issuer", "no root: one issuer must have no parent"));
        }

        // [profiles]
        let profiles = self.profiles()?;

        // [api] and [[ra]]
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
            if api.server_names.is_empty() {
                return Err(invalid(
                    "api.server_names",
                    "list at least one DNS name or IP address",
                ));
            }
            for (i, n) in api.server_names.iter().enumerate() {
                server_name_san(n).map_err(|e| invalid(format!("api.server_names[{i}]"), e))?;
            }
            if api.client_ca.is_empty() {
                return Err(invalid(
                    "api.client_ca",
                    "list the CA certificates that issue RA client certificates",
                ));
            }
            if api.default_deadline_ms == 0 {
                return Err(invalid("api.default_deadline_ms", "must be above 0"));
            }
            if !(1..=100_000).contains(&api.max_concurrent_requests) {
                return Err(invalid(
                    "api.max_concurrent_requests",
                    "must be 1 to 100000",
                ));
            }
        }
        // [crl]
        let crl = &self.crl;
        if !(1..=10_080).contains(&self.ocsp.validity_minutes) {
            return Err(invalid("ocsp.validity_minutes", "must be 1 to 10080"));
        }
        if !(1..=90).contains(&self.ocsp.responder_validity_days) {
            return Err(invalid("ocsp.responder_validity_days", "must be 1 to 90"));
        }
        if u64::from(self.ocsp.responder_validity_days) * 24 * 60 <= self.ocsp.validity_minutes {
            return Err(invalid(
                "ocsp.responder_validity_days",
                "must outlast ocsp.validity_minutes, or responses would outlive their signer",
            ));
        }
        if !(1..=24).contains(&crl.next_update_hours) {
            return Err(invalid("crl.next_update_hours", "must be 1 to 24"));
        }
        if !(1..=86_400).contains(&crl.lag_seconds) {
            return Err(invalid("crl.lag_seconds", "must be 1 to 86400"));
        }
        // A CRL must be replaced before its nextUpdate passes, with room for a retry.
        if crl.interval_seconds == 0
            || crl.interval_seconds.saturating_mul(2) > crl.next_update_hours * 3600
        {
            return Err(invalid(
                "crl.interval_seconds",
                format!(
                    "must be above 0 and at most half of crl.next_update_hours ({} s)",
                    crl.next_update_hours * 1800
                ),
            ));
        }
        if crl.lag_seconds > crl.interval_seconds {
            return Err(invalid(
                "crl.lag_seconds",
                "must not exceed crl.interval_seconds",
            ));
        }
        if let Some(t) = &self.tsa {
            self.tsa_key()?;
            ObjectIdentifier::new(&t.policy_oid)
                .map_err(|e| invalid("tsa.policy_oid", format!("{:?}: {e}", t.policy_oid)))?;
            if t.accuracy_millis > 999 {
                return Err(invalid("tsa.accuracy_millis", "must be 0 to 999"));
            }
            if t.accuracy_seconds > 3600 {
                return Err(invalid("tsa.accuracy_seconds", "must be 0 to 3600"));
            }
            if t.accuracy_seconds == 0 && t.accuracy_millis == 0 {
                return Err(invalid(
                    "tsa.accuracy_seconds",
                    "state a non-zero accuracy (accuracy_seconds or accuracy_millis)",
                ));
            }
        }
        if let Some(a) = &self.audit {
            self.audit_key()?;
            if !(10..=86_400).contains(&a.checkpoint_interval_seconds) {
                return Err(invalid(
                    "audit.checkpoint_interval_seconds",
                    "must be 10 to 86400",
                ));
            }
        }
        if let (Some(t), Some(a)) = (&self.tsa, &self.audit)
            && t.key_label == a.key_label
        {
            return Err(invalid(
                "audit.key_label",
                "must differ from tsa.key_label: each key serves one purpose",
            ));
        }
        let mut ra_names = HashMap::new();
        for (i, ra) in self.ras.iter().enumerate() {
            let key = |f: &str| format!("ra[{i}].{f}");
            if !is_simple_name(&ra.name) {
                return Err(invalid(
                    key("name"),
                    format!("{:?}: use 1 to 64 letters, digits, '-' or '_'", ra.name),
                ));
            }
            if ra_names.insert(ra.name.clone(), i).is_some() {
                return Err(invalid(key("name"), format!("{:?} is used twice", ra.name)));
            }
            if ra.subject.is_none() && ra.spki_sha256.is_none() {
                return Err(invalid(
                    key("subject"),
                    "give subject or spki_sha256 (or both) to match the RA's client certificate",
                ));
            }
            if let Some(sub) = &ra.subject {
                SubjectSpec::parse(sub).map_err(|e| invalid(key("subject"), e.to_string()))?;
            }
            if let Some(pin) = &ra.spki_sha256
                && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(invalid(
                    key("spki_sha256"),
                    "must be 64 hex digits (SHA-256 of the DER SubjectPublicKeyInfo)",
                ));
            }
            if ra.operations.is_empty() {
                return Err(invalid(
                    key("operations"),
                    "list the operations this RA may call",
                ));
            }
            for p in &ra.profiles {
                if !profiles.contains_key(p) {
                    return Err(invalid(
                        key("profiles"),
                        format!("{p:?} is not a configured profile"),
                    ));
                }
            }
            if ra.client_cert.is_some() != ra.client_key.is_some() {
                return Err(invalid(
                    key("client_key"),
                    "give both client_cert and client_key, or neither",
                ));
            }
            if ra.client_cert.is_some() && ra.subject.is_none() {
                return Err(invalid(
                    key("subject"),
                    "the ceremony needs the subject to put in the client certificate",
                ));
            }
        }
        Ok(())
    }

    fn validate_token(&self, t: &TokenConfig) -> Result<(), ConfigError> {
        if !is_simple_name(&t.actor) {
            return Err(invalid(
                "token.actor",
                "must be a name of letters, digits, '-' and '_'",
            ));
        }
        if t.modules.is_empty() {
            return Err(invalid("token.modules", "list at least one PKCS#11 module"));
        }
        if t.pin_min_len < 4 || t.pin_max_len < t.pin_min_len || t.pin_max_len > 255 {
            return Err(invalid(
                "token.pin_min_len",
                "PIN lengths must satisfy 4 <= pin_min_len <= pin_max_len <= 255",
            ));
        }
        if !(1..=100).contains(&t.max_pin_tries) {
            return Err(invalid("token.max_pin_tries", "must be between 1 and 100"));
        }
        if t.key_types.is_empty() {
            return Err(invalid("token.key_types", "list at least one key type"));
        }
        match t.issuer.kind.as_str() {
            "in-process" => {}
            "remote" => {
                for (key, v) in [
                    ("endpoint", t.issuer.endpoint.is_some()),
                    ("ca_cert", t.issuer.ca_cert.is_some()),
                    ("client_cert", t.issuer.client_cert.is_some()),
                    ("client_key", t.issuer.client_key.is_some()),
                ] {
                    if !v {
                        return Err(invalid(
                            format!("token.issuer.{key}"),
                            "is required when kind = \"remote\"",
                        ));
                    }
                }
            }
            other => {
                return Err(invalid(
                    "token.issuer.kind",
                    format!("{other:?} is neither \"in-process\" nor \"remote\""),
                ));
            }
        }
        Ok(())
    }

    /// The token modules' paths, with their `module_env` set for this process (call at
    /// start-up, before the modules are loaded).
    pub fn token_modules(&self) -> Vec<PathBuf> {
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
                self.resolve(&m.path)
            })
            .collect()
    }

    /// The token selector from `token_label`, `token_serial` or `token_uri`.
    pub fn token_selector(&self) -> Result<TokenSelector, ConfigError> {
        if let Some(l) = &self.hsm.token_label {
            return Ok(TokenSelector::Label(l.clone()));
        }
        if let Some(s) = &self.hsm.token_serial {
            return Ok(TokenSelector::Serial(s.clone()));
        }
        match &self.hsm.token_uri {
            Some(u) => {
                TokenSelector::parse_uri(u).map_err(|e| invalid("hsm.token_uri", e.to_string()))
            }
            None => Err(invalid("hsm", "no token selected")),
        }
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
        })
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
        let mut specs = Vec::new();
        let mut names = HashMap::new();
        let mut labels = HashMap::new();
        for (i, ic) in self.issuers.iter().enumerate() {
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
        let issuer_names: Vec<&str> = self.issuers.iter().map(|i| i.name.as_str()).collect();
        let mut out = BTreeMap::new();
        for (name, pc) in &self.profiles {
            let key = |f: &str| format!("profiles.{name}.{f}");
            if !is_simple_name(name) {
                return Err(invalid(
                    format!("profiles.{name}"),
                    "profile names use letters, digits, '-' or '_'",
                ));
            }
            if pc.issuers.is_empty() {
                return Err(invalid(key("issuers"), "list at least one issuer"));
            }
            for i in &pc.issuers {
                if !issuer_names.contains(&i.as_str()) {
                    return Err(invalid(
                        key("issuers"),
                        format!("{i:?} is not a configured issuer"),
                    ));
                }
                if self
                    .issuers
                    .iter()
                    .any(|c| &c.name == i && c.parent.is_none())
                {
                    return Err(invalid(
                        key("issuers"),
                        format!("{i:?} is the root; subscriber certificates come from issuing CAs"),
                    ));
                }
            }
            if pc.validity_years.is_empty()
                || pc.validity_years.iter().any(|y| !(1..=2).contains(y))
            {
                return Err(invalid(
                    key("validity_years"),
                    format!(
                        "{:?}: the subscriber agreements allow 1 or 2 years",
                        pc.validity_years
                    ),
                ));
            }
            if !(1..=366).contains(&pc.renewal_window_days) {
                return Err(invalid(key("renewal_window_days"), "must be 1 to 366"));
            }
            let policy_oid = ObjectIdentifier::new(&pc.policy_oid).map_err(|e| {
                invalid(
                    key("policy_oid"),
                    format!("{:?} is not an OID: {e}", pc.policy_oid),
                )
            })?;
            if let Some(l) = &pc.liability
                && (l.is_empty() || l.chars().count() > 64)
            {
                return Err(invalid(key("liability"), "must be 1 to 64 characters"));
            }
            if pc.key_types.is_empty() {
                return Err(invalid(key("key_types"), "list at least one key type"));
            }
            out.insert(
                name.clone(),
                Profile {
                    name: name.clone(),
                    kind: pc.kind,
                    validity_years: pc.validity_years.clone(),
                    renewal_window_days: pc.renewal_window_days,
                    policy_oid,
                    liability: pc.liability.clone(),
                    key_types: pc.key_types.clone(),
                    issuers: pc.issuers.clone(),
                },
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "signet-ca"
pin_env = "SIGNET_HSM_PIN"

[store]
sqlite = "signet.db"

[ca]
public_base_url = "http://127.0.0.1:8080/"
agreement_version = "2026-01"
output_dir = "ca"

[[issuer]]
name = "root"
key_label = "root-key"
key_type = "p384"
subject = { C = "CN", O = "Signet", CN = "Signet Root" }
validity_years = 20
path_len = 1

[[issuer]]
name = "issuing-ec"
parent = "root"
key_label = "ec-key"
key_type = "p256"
subject = { CN = "Signet EC CA" }
validity_years = 10
path_len = 0

[profiles.server]
kind = "server"
issuers = ["issuing-ec"]
policy_oid = "1.3.6.1.4.1.99999.1.4"
liability = "100,000 CNY"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/signet"))
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.hsm.pool_size, 2);
        assert_eq!(c.public_base_url(), "http://127.0.0.1:8080");
        assert_eq!(c.store_path(), PathBuf::from("/etc/signet/signet.db"));
        let p = &c.profiles().unwrap()["server"];
        assert_eq!(p.validity_years, vec![1, 2]);
        let specs = c.issuer_specs().unwrap();
        assert_eq!(specs[0].name, "root");
        assert_eq!(specs[1].signature, SignatureAlgorithm::EcdsaSha256);
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    const TSA: &str = r#"
[tsa]
issuer = "issuing-ec"
key_label = "tsa-key"
key_type = "p256"
subject = { CN = "Signet TSA" }
policy_oid = "1.3.6.1.4.1.99999.2.1"

[audit]
issuer = "issuing-ec"
key_label = "audit-key"
subject = { CN = "Signet Audit" }
"#;

    #[test]
    fn tsa_and_audit_settings_default_and_are_checked_by_key() {
        let c = load(&format!("{GOOD}{TSA}")).unwrap();
        let t = c.tsa.as_ref().unwrap();
        assert_eq!(
            (t.accuracy_seconds, t.accuracy_millis, t.validity_years),
            (1, 0, 2)
        );
        assert_eq!(c.audit.as_ref().unwrap().checkpoint_interval_seconds, 3600);
        assert_eq!(c.audit_key().unwrap().unwrap().key_type, KeyType::P256);
        for (from, to, key) in [
            (
                "policy_oid = \"1.3.6.1.4.1.99999.2.1\"",
                "policy_oid = \"tsa\"",
                "tsa.policy_oid:",
            ),
            (
                "issuer = \"issuing-ec\"\nkey_label = \"tsa-key\"",
                "issuer = \"root\"\nkey_label = \"tsa-key\"",
                "tsa.issuer:",
            ),
            (
                "key_label = \"tsa-key\"",
                "key_label = \"ec-key\"",
                "tsa.key_label:",
            ),
            (
                "key_type = \"p256\"",
                "key_type = \"ed25519\"",
                "tsa.key_type:",
            ),
            (
                "subject = { CN = \"Signet TSA\" }",
                "subject = { O = \"Signet\" }",
                "tsa.subject:",
            ),
            (
                "key_label = \"audit-key\"",
                "key_label = \"tsa-key\"",
                "audit.key_label:",
            ),
            (
                "key_label = \"audit-key\"",
                "key_label = \"audit-key\"\nkey_type = \"rsa2048\"",
                "audit.key_type:",
            ),
            (
                "key_label = \"audit-key\"",
                "key_label = \"audit-key\"\ncheckpoint_interval_seconds = 1",
                "audit.checkpoint_interval_seconds:",
            ),
            (
                "policy_oid = \"1.3.6.1.4.1.99999.2.1\"",
                "policy_oid = \"1.3.6.1.4.1.99999.2.1\"\naccuracy_millis = 1000",
                "tsa.accuracy_millis:",
            ),
            (
                "policy_oid = \"1.3.6.1.4.1.99999.2.1\"",
                "policy_oid = \"1.3.6.1.4.1.99999.2.1\"\naccuracy_seconds = 0",
                "tsa.accuracy_seconds:",
            ),
        ] {
            let text = format!("{GOOD}{}", TSA.replacen(from, to, 1));
            let e = err(&text);
            assert!(e.starts_with(key), "{key}: {e}");
        }
    }

    #[test]
    fn http_and_crl_settings_default_and_are_checked_by_key() {
        let c = load(GOOD).unwrap();
        assert!(c.http.is_none());
        assert_eq!(
            (
                c.crl.lag_seconds,
                c.crl.interval_seconds,
                c.crl.next_update_hours
            ),
            (60, 21_600, 24)
        );
        let c = load(&format!(
            "{GOOD}\n[http]\nlisten = \"127.0.0.1:8080\"\n[crl]\nlag_seconds = 1\n"
        ))
        .unwrap();
        assert_eq!(c.http.map(|h| h.listen.port()), Some(8080));
        let e = err(&format!("{GOOD}\n[ocsp]\nvalidity_minutes = 0\n"));
        assert!(e.starts_with("ocsp.validity_minutes:"), "{e}");
        let e = err(&format!("{GOOD}\n[ocsp]\nresponder_validity_days = 91\n"));
        assert!(e.starts_with("ocsp.responder_validity_days:"), "{e}");
        let e = err(&format!(
            "{GOOD}\n[ocsp]\nresponder_validity_days = 1\nvalidity_minutes = 1440\n"
        ));
        assert!(e.contains("must outlast ocsp.validity_minutes"), "{e}");
        let e = err(&format!("{GOOD}\n[ocsp]\nsigner = \"root\"\n"));
        assert!(e.contains("signer"), "{e}");
        let e = err(&format!("{GOOD}\n[crl]\nnext_update_hours = 25\n"));
        assert!(e.starts_with("crl.next_update_hours:"), "{e}");
        let e = err(&format!("{GOOD}\n[crl]\ninterval_seconds = 86400\n"));
        assert!(e.starts_with("crl.interval_seconds:"), "{e}");
        let e = err(&format!("{GOOD}\n[crl]\nlag_seconds = 0\n"));
        assert!(e.starts_with("crl.lag_seconds:"), "{e}");
        let e = err(&format!("{GOOD}\n[http]\nlisten = \"nowhere\"\n"));
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let e = err(&GOOD
            .replace("pool_size", "x")
            .replace("[store]", "[store]\nsqllite = 1"));
        assert!(e.contains("sqllite"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = err(&GOOD.replace(
            r#"policy_oid = "1.3.6.1.4.1.99999.1.4""#,
            r#"policy_oid = "x.1"
validity_years = [3]"#,
        ));
        assert!(e.starts_with("profiles.server.validity_years"), "{e}");
        let e = err(&GOOD.replace(r#"issuers = ["issuing-ec"]"#, r#"issuers = ["nope"]"#));
        assert!(e.starts_with("profiles.server.issuers"), "{e}");
        let e = err(&GOOD.replace(r#"parent = "root""#, r#"parent = "toor""#));
        assert!(e.starts_with("issuer[1].parent"), "{e}");
        let e = err(&GOOD.replace(r#"pin_env = "SIGNET_HSM_PIN""#, ""));
        assert!(e.contains("pin_file, pin_env"), "{e}");
        let e = err(&GOOD.replace(
            r#"key_type = "p256""#,
            r#"key_type = "p256"
signature = "rsa-pss-sha256""#,
        ));
        assert!(e.starts_with("issuer[1].signature"), "{e}");
        let e = err(&GOOD.replace("http://127.0.0.1:8080/", "ftp://x"));
        assert!(e.starts_with("ca.public_base_url"), "{e}");
        let e = err(&GOOD.replace(r#"issuers = ["issuing-ec"]"#, r#"issuers = ["root"]"#));
        assert!(e.contains("root"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let c = Config::from_toml(GOOD, Path::new("hsm-config")).unwrap();
        assert_eq!(
            c.resolve(Path::new("../var/signet.db")),
            PathBuf::from("var/signet.db")
        );
        assert_eq!(c.resolve(Path::new("./x")), PathBuf::from("hsm-config/x"));
    }

    #[test]
    fn shipped_configurations_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hsm-config");
        for f in ["softhsm.toml", "production.toml"] {
            let c = Config::load(&dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(c.profiles().unwrap().len(), 6, "{f}");
            assert_eq!(c.issuer_specs().unwrap().len(), 4, "{f}");
        }
    }

    #[test]
    fn token_section_mistakes_name_their_key() {
        let token = |tries: &str, issuer: &str| {
            format!(
                "{GOOD}\n[token]\nactor = \"ws-1\"\nmodules = [{{ path = \"/usr/lib/x.so\" }}]\nmax_pin_tries = {tries}\n\n[token.issuer]\n{issuer}\n"
            )
        };
        assert!(Config::from_toml(&token("5", "kind = \"in-process\""), Path::new(".")).is_ok());
        let e = err(&token("0", "kind = \"in-process\""));
        assert!(e.contains("token.max_pin_tries"), "{e}");
        let e = err(&token("5", "kind = \"cloud\""));
        assert!(e.contains("token.issuer.kind"), "{e}");
        let e = err(&token("5", "kind = \"remote\""));
        assert!(e.contains("token.issuer.endpoint"), "{e}");
        let e = err(&token("5", "kind = \"in-process\"\npin = \"1234\""));
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_pin_written_inline_is_not_a_key() {
        let e = err(&GOOD.replace(r#"pin_env = "SIGNET_HSM_PIN""#, r#"pin = "1234""#));
        assert!(e.contains("unknown field") && e.contains("pin"), "{e}");
    }
}

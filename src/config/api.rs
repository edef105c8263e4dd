//! `[api]` and `[[ra]]`: the RA API listener, and the RA offices allowed to call it.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{ConfigError, invalid, is_simple_name};
use crate::pki::SubjectSpec;

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
    /// How long `signet serve` may take to stop after SIGTERM or SIGINT, in seconds: calls
    /// in flight, the stop entry and checkpoint of the audit log, closing the HSM. What is
    /// not done by then is skipped, and the process exits with status 1.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    /// CRLs of the `client_ca` certificates signet did not issue (files, PEM or DER, or
    /// `http://` URLs), each verified against its CA: an RA certificate they list is
    /// refused. Certificates signet issued are checked against its own store instead.
    #[serde(default)]
    pub client_crls: Vec<String>,
    /// How often `client_crls` are read again, in seconds.
    #[serde(default = "default_client_crl_refresh")]
    pub client_crl_refresh_seconds: u64,
    /// A connection must complete its TLS handshake within this many seconds.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_seconds: u64,
    /// Calls (HTTP/2 streams) one connection may have open at once.
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: u32,
    /// An HTTP/2 ping after this many seconds without a frame from the client; a client that
    /// does not answer within 20 s is disconnected (dead peers, half-open connections).
    #[serde(default = "default_keepalive")]
    pub keepalive_seconds: u64,
    /// A connection is asked to close (GOAWAY, calls in flight finish) after this many
    /// seconds, whatever it does, so no connection holds its place for ever; gRPC clients
    /// reconnect on their own.
    #[serde(default = "default_max_connection_age")]
    pub max_connection_age_seconds: u64,
    /// Readiness (`/readyz`, gRPC health) signs a test message with every issuer key and
    /// verifies it, at most once per this many seconds: a key that stopped signing (removed,
    /// its usage changed, the HSM refusing it) takes the daemon out of service within it.
    #[serde(default = "default_readiness_signature")]
    pub readiness_signature_seconds: u64,
}

fn default_readiness_signature() -> u64 {
    60
}

fn default_deadline_ms() -> u64 {
    30_000
}
fn default_max_concurrent() -> usize {
    256
}
fn default_client_crl_refresh() -> u64 {
    300
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_max_streams() -> u32 {
    64
}
fn default_keepalive() -> u64 {
    60
}
fn default_max_connection_age() -> u64 {
    3600
}
fn default_shutdown_grace() -> u64 {
    30
}

impl ApiConfig {
    /// The listener's own settings. Its `tls_issuer` is checked against the hierarchy and
    /// the profiles by the whole configuration.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.server_names.is_empty() {
            return Err(invalid(
                "api.server_names",
                "list at least one DNS name or IP address",
            ));
        }
        for (i, n) in self.server_names.iter().enumerate() {
            server_name_san(n).map_err(|e| invalid(format!("api.server_names[{i}]"), e))?;
        }
        if self.client_ca.is_empty() {
            return Err(invalid(
                "api.client_ca",
                "list the CA certificates that issue RA client certificates",
            ));
        }
        if self.default_deadline_ms == 0 {
            return Err(invalid("api.default_deadline_ms", "must be above 0"));
        }
        for (i, c) in self.client_crls.iter().enumerate() {
            if c.starts_with("https://") {
                return Err(invalid(
                    format!("api.client_crls[{i}]"),
                    "https is not supported for CRLs (they are signed; use http:// or a file)",
                ));
            }
            if c.is_empty() {
                return Err(invalid(format!("api.client_crls[{i}]"), "is empty"));
            }
        }
        if !(1..=120).contains(&self.handshake_timeout_seconds) {
            return Err(invalid("api.handshake_timeout_seconds", "must be 1 to 120"));
        }
        if !(1..=1024).contains(&self.max_streams_per_connection) {
            return Err(invalid(
                "api.max_streams_per_connection",
                "must be 1 to 1024",
            ));
        }
        if !(5..=3600).contains(&self.keepalive_seconds) {
            return Err(invalid("api.keepalive_seconds", "must be 5 to 3600"));
        }
        if !(1..=604_800).contains(&self.max_connection_age_seconds) {
            return Err(invalid(
                "api.max_connection_age_seconds",
                "must be 1 to 604800",
            ));
        }
        if !(1..=86_400).contains(&self.client_crl_refresh_seconds) {
            return Err(invalid(
                "api.client_crl_refresh_seconds",
                "must be 1 to 86400",
            ));
        }
        if !(1..=100_000).contains(&self.max_concurrent_requests) {
            return Err(invalid(
                "api.max_concurrent_requests",
                "must be 1 to 100000",
            ));
        }
        if !(1..=86_400).contains(&self.readiness_signature_seconds) {
            return Err(invalid(
                "api.readiness_signature_seconds",
                "must be 1 to 86400",
            ));
        }
        if !(1..=3600).contains(&self.shutdown_grace_seconds) {
            return Err(invalid("api.shutdown_grace_seconds", "must be 1 to 3600"));
        }
        Ok(())
    }
}

/// The RA offices, checked: unique names, a way to match each one's client certificate,
/// operations granted, client certificate and key given together. `profile_problem` says what
/// is wrong with an RA naming a profile (one that is not configured), which only the whole
/// configuration knows.
pub(super) fn validate_ras(
    ras: &[RaConfig],
    profile_problem: impl Fn(&str) -> Result<(), String>,
) -> Result<(), ConfigError> {
    let mut ra_names = HashMap::new();
    for (i, ra) in ras.iter().enumerate() {
        let key = |f: &str| format!("ra[{i}].{f}");
        if !is_simple_name(&ra.name) {
            return Err(invalid(
                key("name"),
                format!("{:?}: use 1 to 64 letters, digits, '-' or '_'", ra.name),
            ));
        }
        // The audit log's own actors: an RA named like them would read as the CA itself, and
        // the operator may give reasons (cACompromise) that no RA may.
        if RESERVED_ACTORS.contains(&ra.name.as_str()) {
            return Err(invalid(
                key("name"),
                format!(
                    "{:?} is the audit log's name for signet itself ({}); choose another",
                    ra.name,
                    RESERVED_ACTORS.join(", ")
                ),
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
            profile_problem(p).map_err(|problem| invalid(key("profiles"), problem))?;
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

/// Actor names the audit log gives signet itself (the operator's commands, the ceremony,
/// the daemon), which no RA may take.
const RESERVED_ACTORS: [&str; 3] = ["operator", "ceremony", "daemon"];

/// A server name as a SAN: an IP address literal, else a DNS name.
pub fn server_name_san(n: &str) -> Result<crate::pki::San, String> {
    let san = match n.parse::<std::net::IpAddr>() {
        Ok(ip) => crate::pki::San::Ip(ip),
        Err(_) => crate::pki::San::Dns(n.to_owned()),
    };
    san.checked("server_names").map_err(|e| e.to_string())
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
    /// `false` suspends the office without revoking its certificate: its calls are refused
    /// (PERMISSION_DENIED) from the next configuration reload (SIGHUP) or start.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_enabled() -> bool {
    true
}

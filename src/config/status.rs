//! `[http]`, `[crl]` and `[ocsp]`: the public status listener, CRL publication and the OCSP
//! responder.

use serde::Deserialize;

use super::error::{ConfigError, invalid};
use crate::pki::KeyType;

/// `[http]`: the public status service. Plain HTTP without client certificates: everything
/// it serves is signed (CRLs, OCSP responses) or public (CA certificates).
///
/// (The Prometheus listener, `[metrics]`, is [`MetricsConfig`].)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on, e.g. `127.0.0.1:8080` (port 0 picks a free port).
    pub listen: std::net::SocketAddr,
    /// A connection must deliver a complete request head (request line and headers) within
    /// this many seconds of connecting or of its previous response, or it is closed: this
    /// ends silent sockets, dribbled headers and idle keep-alive connections alike.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// A request, body included, must be read and answered within this many seconds, or it
    /// gets 408 and its connection is closed.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// Connections served at once; more wait in the kernel's accept queue until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_header_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    1024
}

impl HttpConfig {
    /// Timeouts and the connection cap within bounds.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=300).contains(&self.header_timeout_seconds) {
            return Err(invalid("http.header_timeout_seconds", "must be 1 to 300"));
        }
        if !(1..=600).contains(&self.request_timeout_seconds) {
            return Err(invalid("http.request_timeout_seconds", "must be 1 to 600"));
        }
        if !(1..=65_536).contains(&self.max_connections) {
            return Err(invalid("http.max_connections", "must be 1 to 65536"));
        }
        Ok(())
    }
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

fn default_crl_lag() -> u64 {
    60
}
fn default_crl_interval() -> u64 {
    6 * 3600
}
fn default_crl_next_update() -> u64 {
    24
}

impl OcspConfig {
    /// Response and responder lifetimes within bounds, the responder outlasting a response.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10_080).contains(&self.validity_minutes) {
            return Err(invalid("ocsp.validity_minutes", "must be 1 to 10080"));
        }
        if !(1..=90).contains(&self.responder_validity_days) {
            return Err(invalid("ocsp.responder_validity_days", "must be 1 to 90"));
        }
        if u64::from(self.responder_validity_days) * 24 * 60 <= self.validity_minutes {
            return Err(invalid(
                "ocsp.responder_validity_days",
                "must outlast ocsp.validity_minutes, or responses would outlive their signer",
            ));
        }
        Ok(())
    }
}

impl CrlConfig {
    /// Lifetimes within bounds, and a CRL replaced well before its nextUpdate.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=24).contains(&self.next_update_hours) {
            return Err(invalid("crl.next_update_hours", "must be 1 to 24"));
        }
        if !(1..=86_400).contains(&self.lag_seconds) {
            return Err(invalid("crl.lag_seconds", "must be 1 to 86400"));
        }
        // A CRL must be replaced before its nextUpdate passes, with room for a retry.
        if self.interval_seconds == 0
            || self.interval_seconds.saturating_mul(2) > self.next_update_hours * 3600
        {
            return Err(invalid(
                "crl.interval_seconds",
                format!(
                    "must be above 0 and at most half of crl.next_update_hours ({} s)",
                    self.next_update_hours * 1800
                ),
            ));
        }
        if self.lag_seconds > self.interval_seconds {
            return Err(invalid(
                "crl.lag_seconds",
                "must not exceed crl.interval_seconds",
            ));
        }
        Ok(())
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

/// `[metrics]`: the Prometheus listener, `GET /metrics` in the text exposition format. It
/// says how busy the CA is and when its certificates expire, nothing secret, but it is meant
/// for the operator's monitoring: listen on loopback or a management network.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to listen on, e.g. `127.0.0.1:9464` (port 0 picks a free port).
    pub listen: std::net::SocketAddr,
}

/// `[log]`: what the daemon logs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Which events are written, in `RUST_LOG`'s syntax: `info`, `warn`, or per target as in
    /// `signet::hsm=debug,info`. Absent: `RUST_LOG`, else `info`.
    pub level: Option<String>,
}

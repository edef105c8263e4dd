//! The daemon's side of mutual TLS: its certificate chain and key (PEM files from `[api]`),
//! and the CA certificates trusted to issue RA client certificates. A client certificate is
//! required on every connection: rustls refuses the handshake without one, or with one that
//! is expired or chains to no configured client CA. There is no plaintext listener.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::ApiError;
use crate::config::{ApiConfig, Config};

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, ApiError> {
    let bytes = std::fs::read(path).map_err(|e| ApiError::Tls {
        path: path.to_owned(),
        problem: format!("cannot read the {what}: {e}"),
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ApiError::Tls {
            path: path.to_owned(),
            problem: format!("the {what} is not PEM"),
        });
    }
    Ok(bytes)
}

/// The rustls server configuration for `[api]`.
pub fn server_tls(cfg: &Config, api: &ApiConfig) -> Result<ServerTlsConfig, ApiError> {
    let cert = read_pem(&cfg.resolve(&api.server_cert), "server certificate")?;
    let key = read_pem(&cfg.resolve(&api.server_key), "server key")?;
    let mut roots = Vec::new();
    for p in &api.client_ca {
        let path: PathBuf = cfg.resolve(p);
        roots.extend(read_pem(&path, "client CA certificate")?);
        roots.push(b'\n');
    }
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(roots))
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT))
}

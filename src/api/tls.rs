//! The daemon's side of mutual TLS: its certificate chain and key (PEM files from `[api]`),
//! and the CA certificates trusted to issue RA client certificates. A client certificate is
//! required on every connection: rustls refuses the handshake without one, or with one that
//! is expired, is not for client authentication, or chains to no configured client CA.
//! There is no plaintext listener.
//!
//! signet accepts the connections itself ([`incoming`]) rather than leaving the handshake
//! to tonic, so that a refused handshake is logged (WARN; DEBUG for a connection closed
//! before it completed, as TCP health checks do): the peer's address and the reason rustls
//! gives, at most one line per address and reason every [`REFUSAL_LOG_WINDOW`], with the
//! count of the refusals in between. Established connections reach tonic as
//! `tokio_rustls` streams, so a call still sees its peer's certificates and address.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, CertificateError, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::ApiError;
use crate::config::{ApiConfig, Config};
use crate::escape::Escaped;

/// At most one log line per peer address and reason within this window.
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Addresses remembered for rate limiting; beyond this (many addresses within one window)
/// the rest share one line per window.
const MAX_REMEMBERED: usize = 1024;

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

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let bytes = read_pem(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Tls {
            path: path.to_owned(),
            problem: format!("the {what}: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ApiError::Tls {
            path: path.to_owned(),
            problem: format!("the {what} holds no CERTIFICATE"),
        });
    }
    Ok(certs)
}

/// The client CA certificates in the PEM file `path`, parsed (to verify their CRLs with).
pub fn read_certificates(path: &Path) -> Result<Vec<x509_cert::Certificate>, ApiError> {
    use der::Decode;
    certificates(path, "client CA certificate")?
        .iter()
        .map(|c| {
            x509_cert::Certificate::from_der(c.as_ref()).map_err(|e| ApiError::Tls {
                path: path.to_owned(),
                problem: format!("a client CA certificate does not parse: {e}"),
            })
        })
        .collect()
}

/// The rustls server configuration for `[api]`: the server's chain and key, client
/// certificates required and verified against `client_ca` and `own_cas` (the generations of
/// the TLS issuing CA), HTTP/2 only.
pub fn server_tls(
    cfg: &Config,
    api: &ApiConfig,
    own_cas: &[x509_cert::Certificate],
) -> Result<Arc<ServerConfig>, ApiError> {
    let cert_path = cfg.resolve(&api.server_cert);
    let key_path = cfg.resolve(&api.server_key);
    let chain = certificates(&cert_path, "server certificate")?;
    if let Some(leaf) = chain.first() {
        crate::metrics::metrics().certificate_der("tls", "api", leaf);
    }
    let key = PrivateKeyDer::from_pem_slice(&read_pem(&key_path, "server key")?).map_err(|e| {
        ApiError::Tls {
            path: key_path.clone(),
            problem: format!("the server key: {e}"),
        }
    })?;
    let mut roots = RootCertStore::empty();
    for p in &api.client_ca {
        let path: PathBuf = cfg.resolve(p);
        let (_, unusable) =
            roots.add_parsable_certificates(certificates(&path, "client CA certificate")?);
        if unusable > 0 {
            return Err(ApiError::Tls {
                path,
                problem: format!("{unusable} certificate(s) cannot serve as a trust anchor"),
            });
        }
    }
    for ca in own_cas {
        let der = der::Encode::to_der(ca).map_err(|e| ApiError::Tls {
            path: PathBuf::from(&api.tls_issuer),
            problem: format!("encoding the TLS issuing CA: {e}"),
        })?;
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| ApiError::Tls {
                path: PathBuf::from(&api.tls_issuer),
                problem: format!("the TLS issuing CA cannot serve as a trust anchor: {e}"),
            })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |path: &Path, e: rustls::Error| ApiError::Tls {
        path: path.to_owned(),
        problem: e.to_string(),
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ApiError::Tls {
            path: api
                .client_ca
                .first()
                .map(|p| cfg.resolve(p))
                .unwrap_or_default(),
            problem: format!("client CA certificates: {e}"),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&cert_path, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(&key_path, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The connections of `listener` whose mutual-TLS handshake succeeded, as a stream for
/// tonic's `serve_with_incoming`; handshakes run concurrently, each within
/// `handshake_timeout` (`[api] handshake_timeout_seconds`), and refused ones are logged.
/// Abort the returned task to stop accepting (it owns the listener).
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
) -> (
    ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let refusals = Arc::new(Mutex::new(RefusalLog::default()));
    let task = tokio::spawn(async move {
        let mut handshakes = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        // No Nagle: a gRPC answer is a few small HTTP/2 frames, and waiting
                        // for the client's delayed ACK would add 40 ms to every call.
                        let _ = tcp.set_nodelay(true);
                        let (acceptor, tx, refusals) =
                            (acceptor.clone(), tx.clone(), refusals.clone());
                        handshakes.spawn(async move {
                            let reason = match tokio::time::timeout(
                                handshake_timeout,
                                acceptor.accept(tcp),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => {
                                    // Only fails once the server has stopped.
                                    let _ = tx.send(Ok(tls)).await;
                                    return;
                                }
                                Ok(Err(e)) => Refused::of(&e),
                                Err(_) => Refused {
                                    kind: "timeout",
                                    detail: format!(
                                        "no complete handshake within {} s",
                                        handshake_timeout.as_secs()
                                    ),
                                },
                            };
                            let admitted = refusals
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .admit(peer.ip(), reason.kind, Instant::now());
                            if let Some(suppressed) = admitted {
                                log_refusal(peer, &reason, suppressed);
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            }
        }
    });
    (ReceiverStream::new(rx), task)
}

/// Why a connection closed before it said anything TLS: TCP health checks and port probes
/// do this all day, so it is logged at DEBUG only.
const CLOSED: &str = "connection closed during the handshake";

fn log_refusal(peer: SocketAddr, reason: &Refused, suppressed: u64) {
    if reason.kind == CLOSED {
        tracing::debug!(
            peer = %peer,
            reason = reason.kind,
            error = %Escaped(&reason.detail),
            suppressed,
            "TLS handshake refused"
        );
    } else {
        tracing::warn!(
            peer = %peer,
            reason = reason.kind,
            error = %Escaped(&reason.detail),
            suppressed,
            "TLS handshake refused"
        );
    }
}

/// Why a handshake failed: a short class (the rate limit's key, stable across versions)
/// and what rustls or the socket said.
#[derive(Debug)]
struct Refused {
    kind: &'static str,
    detail: String,
}

impl Refused {
    fn of(e: &std::io::Error) -> Refused {
        let detail = e.to_string();
        let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        let kind = match tls {
            Some(rustls::Error::NoCertificatesPresented) => "no client certificate",
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                CertificateError::UnknownIssuer => "client certificate from an unknown CA",
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "client certificate expired"
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "client certificate not yet valid"
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => {
                    "certificate not for client authentication"
                }
                _ => "client certificate refused",
            },
            Some(rustls::Error::AlertReceived(_)) => "client sent an alert",
            Some(rustls::Error::NoApplicationProtocol) => "client does not offer HTTP/2",
            Some(_) => "TLS protocol error",
            None => CLOSED,
        };
        Refused { kind, detail }
    }
}

/// When refusals were last logged, per peer address and reason.
#[derive(Debug, Default)]
struct RefusalLog {
    seen: HashMap<(IpAddr, &'static str), Seen>,
    /// One shared line per window for whatever does not fit in `seen`.
    overflow: Option<Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether a refusal from `ip` for `kind` at `now` gets a log line: `Some(n)` with the
    /// number of refusals not logged since the last line, or `None` to stay quiet.
    fn admit(&mut self, ip: IpAddr, kind: &'static str, now: Instant) -> Option<u64> {
        let first = Seen {
            logged_at: now,
            suppressed: 0,
        };
        let key = (ip, kind);
        if !self.seen.contains_key(&key) && self.seen.len() >= MAX_REMEMBERED {
            self.seen
                .retain(|_, s| now.saturating_duration_since(s.logged_at) < REFUSAL_LOG_WINDOW);
        }
        if self.seen.contains_key(&key) || self.seen.len() < MAX_REMEMBERED {
            match self.seen.entry(key) {
                Entry::Occupied(e) => e.into_mut().tick(now),
                Entry::Vacant(v) => {
                    v.insert(first);
                    Some(0)
                }
            }
        } else {
            match &mut self.overflow {
                Some(s) => s.tick(now),
                None => {
                    self.overflow = Some(first);
                    Some(0)
                }
            }
        }
    }
}

impl Seen {
    /// Another refusal at `now`: logged (with the count since the last line) once the
    /// window since the last line has passed, counted otherwise.
    fn tick(&mut self, now: Instant) -> Option<u64> {
        if now.saturating_duration_since(self.logged_at) < REFUSAL_LOG_WINDOW {
            self.suppressed += 1;
            None
        } else {
            let n = self.suppressed;
            *self = Seen {
                logged_at: now,
                suppressed: 0,
            };
            Some(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_address_and_reason_per_window_with_the_count_in_between() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(log.admit(a, "no client certificate", t0), Some(0));
        for i in 1..=5 {
            let t = t0 + Duration::from_secs(i);
            assert_eq!(log.admit(a, "no client certificate", t), None);
        }
        // Another reason, or another address, has a line of its own.
        assert_eq!(log.admit(a, "client certificate expired", t0), Some(0));
        assert_eq!(log.admit(b, "no client certificate", t0), Some(0));
        let later = t0 + REFUSAL_LOG_WINDOW + Duration::from_secs(1);
        assert_eq!(log.admit(a, "no client certificate", later), Some(5));
        assert_eq!(log.admit(a, "no client certificate", later), None);
    }

    #[test]
    fn many_addresses_share_one_line_once_the_table_is_full() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        for i in 0..MAX_REMEMBERED as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(log.admit(ip, "timeout", t0), Some(0));
        }
        let t1 = t0 + Duration::from_secs(1);
        let extra: Vec<IpAddr> = (0..10u32)
            .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)))
            .collect();
        let lines = extra
            .iter()
            .filter(|ip| log.admit(**ip, "timeout", t1).is_some())
            .count();
        assert_eq!(lines, 1);
        assert_eq!(log.seen.len(), MAX_REMEMBERED);
        // Once the window has passed, old entries make room again.
        let t2 = t0 + REFUSAL_LOG_WINDOW + Duration::from_secs(1);
        assert_eq!(log.admit(extra[0], "timeout", t2), Some(0));
        assert!(log.seen.len() < MAX_REMEMBERED);
    }

    #[test]
    fn refusals_are_classified_from_what_rustls_says() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let r = Refused::of(&io(rustls::Error::NoCertificatesPresented));
        assert_eq!(r.kind, "no client certificate");
        let r = Refused::of(&io(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )));
        assert_eq!(r.kind, "client certificate from an unknown CA");
        assert!(r.detail.contains("UnknownIssuer"), "{}", r.detail);
        let r = Refused::of(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert_eq!(r.kind, "connection closed during the handshake");
    }
}

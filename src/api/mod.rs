//! The RA API: `signet.v1.CertificateAuthority` over gRPC with mutual TLS, beside
//! `grpc.health.v1` and server reflection on the same port. The services only translate
//! between messages and the [`Authority`]; the RA's identity comes from its client
//! certificate ([`identity`]), what it may do from its `[[ra]]` entry ([`permissions`]), and
//! every error becomes a status in one place ([`error`]).
//!
//! Shaped like mini-redis: [`Api::new`] checks the configuration and TLS material,
//! [`Api::run`] serves a bound listener until `shutdown` completes, then lets calls in
//! flight finish.

pub mod client;
pub mod convert;
pub mod credentials;
pub mod error;
pub mod identity;
pub mod permissions;
pub mod remote_issuer;
pub mod service;
pub mod tls;
pub mod token_service;
pub mod wire;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::ca::Authority;
use crate::config::Config;

/// The generated messages, server and client of `proto/signet/v1/ca.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("signet.v1");

    /// The encoded file descriptor set of the proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("signet_descriptor");
}

/// The fully qualified name of the RA service, as health checks and reflection name it.
pub const SERVICE_NAME: &str = "signet.v1.CertificateAuthority";

/// The fully qualified name of the token workstation service.
pub const TOKEN_SERVICE_NAME: &str = "signet.v1.TokenService";
/// The name under which gRPC health reports the timestamp authority: NOT_SERVING while its
/// clock reads earlier than its latest token.
pub const TSA_HEALTH_NAME: &str = "signet.v1.TimeStampAuthority";

/// How often the health reporter looks at the HSM and the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Why the API could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The configuration has no `[api]` section.
    #[error("the configuration has no [api] section; `signet serve` needs one")]
    NotConfigured,
    /// A TLS file is missing or unusable.
    #[error("TLS material {path}: {problem}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The `[[ra]]` entries could not be read.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed (TLS set-up or transport).
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not load the descriptor set.
    #[error("server reflection: {0}")]
    Reflection(String),
    /// A client CRL could not be loaded or did not verify.
    #[error("{0}")]
    ClientCrl(#[from] credentials::CrlLoadError),
}

/// A configured, not yet running, RA API.
pub struct Api {
    tls: Arc<ServerConfig>,
    /// The configured RAs, to name callers in the log lines of refusals made on the wire.
    ras: Arc<identity::RaDirectory>,
    service: service::CaService,
    authority: Arc<Authority>,
    /// The token service, served beside the RA API when `[token]` is configured.
    token: Option<token_service::TokenService>,
    /// Whether callers' client certificates still stand.
    credentials: Arc<credentials::Credentials>,
    /// How often the client CRLs are read again.
    crl_refresh: Duration,
    /// How connections are bounded (`[api]`).
    limits: ConnectionLimits,
}

/// What bounds an RA API connection.
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    handshake: Duration,
    streams: u32,
    keepalive: Duration,
    max_age: Duration,
}

impl Api {
    /// Check `[api]`, load the TLS material, the RA directory and the client CRLs.
    pub async fn new(cfg: &Config, authority: Arc<Authority>) -> Result<Api, ApiError> {
        let api = cfg.api.as_ref().ok_or(ApiError::NotConfigured)?;
        // Every generation of the TLS issuing CA: RA certificates from an older one stay
        // good after a rotation until they expire.
        let own: Vec<x509_cert::Certificate> = authority
            .generations(&api.tls_issuer)
            .into_iter()
            .map(|i| i.cert.clone())
            .collect();
        if own.is_empty() {
            return Err(ApiError::Tls {
                path: PathBuf::from(&api.tls_issuer),
                problem: "the TLS issuing CA has not been created; run `signet ceremony`".into(),
            });
        }
        let tls = tls::server_tls(cfg, api, &own)?;
        let ras = Arc::new(identity::RaDirectory::from_config(cfg)?);
        let mut client_cas = Vec::new();
        for path in &api.client_ca {
            let path = cfg.resolve(path);
            client_cas.extend(tls::read_certificates(&path)?);
        }
        let sources = api
            .client_crls
            .iter()
            .map(|c| {
                if c.starts_with("http://") {
                    c.clone()
                } else {
                    cfg.resolve(std::path::Path::new(c)).display().to_string()
                }
            })
            .collect();
        let credentials = Arc::new(
            credentials::Credentials::new(
                authority.store().clone(),
                &own,
                Duration::from_secs(cfg.crl.lag_seconds),
                client_cas,
                sources,
            )
            .await?,
        );
        let service = service::CaService::new(
            authority.clone(),
            ras.clone(),
            api.max_concurrent_requests,
            Duration::from_millis(api.default_deadline_ms),
            credentials.clone(),
        );
        Ok(Api {
            tls,
            ras,
            service,
            authority,
            token: None,
            credentials,
            crl_refresh: Duration::from_secs(api.client_crl_refresh_seconds),
            limits: ConnectionLimits {
                handshake: Duration::from_secs(api.handshake_timeout_seconds),
                streams: api.max_streams_per_connection,
                keepalive: Duration::from_secs(api.keepalive_seconds),
                max_age: Duration::from_secs(api.max_connection_age_seconds),
            },
        })
    }

    /// The RA directory the services read, for a configuration reload to replace.
    pub fn ra_directory(&self) -> Arc<identity::RaDirectory> {
        self.ras.clone()
    }

    /// Also serve `signet.v1.TokenService` over `workstation`, on the same listener and
    /// through the same frame (only `[[ra]]` entries granted `token` may call it).
    pub fn with_token_service(mut self, workstation: Arc<crate::token::Workstation>) -> Api {
        self.token = Some(token_service::TokenService::new(
            workstation,
            self.service.frame(),
        ));
        self
    }

    /// Bind the configured listen address (port 0 picks a free port; ask the listener).
    pub async fn bind(cfg: &Config) -> Result<TcpListener, ApiError> {
        let addr = cfg.api.as_ref().ok_or(ApiError::NotConfigured)?.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Bind { addr, source })
    }

    /// Serve on `listener` until `shutdown` completes; then stop accepting connections and
    /// return once the calls in flight have been answered.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ApiError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ApiError::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ApiError::Reflection(e.to_string()))?;

        // Health starts NOT_SERVING and follows the HSM and the store from the first check.
        set_health(&reporter, ServingStatus::NotServing).await;
        let monitor = tokio::spawn(watch_health(reporter.clone(), self.authority.clone()));
        let crl_refresher = tokio::spawn(self.credentials.clone().maintain(self.crl_refresh));

        if self.token.is_some() {
            reporter
                .set_service_status(TOKEN_SERVICE_NAME, ServingStatus::Serving)
                .await;
        }
        // signet completes the TLS handshakes itself, so refused ones are logged.
        let limits = self.limits;
        let (incoming, acceptor) = tls::incoming(listener, self.tls, limits.handshake);
        let stop_accepting = acceptor.abort_handle();
        let served = Server::builder()
            .max_concurrent_streams(limits.streams)
            .http2_keepalive_interval(Some(limits.keepalive))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_connection_age(limits.max_age)
            // tonic's own refusals of malformed or oversized messages, with gRPC's codes.
            .layer(wire::WireLayer::new(self.ras))
            .add_service(
                pb::certificate_authority_server::CertificateAuthorityServer::new(self.service)
                    .max_decoding_message_size(wire::MAX_MESSAGE),
            )
            .add_optional_service(self.token.map(|t| {
                pb::token_service_server::TokenServiceServer::new(t)
                    .max_decoding_message_size(wire::MAX_MESSAGE)
            }))
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, async {
                shutdown.await;
                stop_accepting.abort();
                tracing::info!("shutting down: no new connections; finishing calls in flight");
            })
            .await;
        acceptor.abort();
        monitor.abort();
        crl_refresher.abort();
        served?;
        Ok(())
    }
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// SERVING while the HSM is reachable and the store answers, NOT_SERVING otherwise, from
/// [`Authority::probe_health`] every interval (which `/healthz` then reads without I/O).
async fn watch_health(reporter: tonic_health::server::HealthReporter, authority: Arc<Authority>) {
    let mut last = None;
    loop {
        let health = authority.probe_health(HEALTH_INTERVAL).await;
        // A clock behind an issuer's notBefore stops every issuance: not serving either.
        let clock_ok = !authority
            .degraded()
            .iter()
            .any(|(c, _)| c == crate::ca::CLOCK_HEALTH_COMPONENT);
        // An issuer key whose test signature failed: not ready to sign.
        let keys_ok = authority.keys_ready();
        let status = if health.ok() && clock_ok && keys_ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        // A degraded part (the TSA's clock) is reported under its own service name, so the
        // RA API stays SERVING.
        let tsa_status = if authority
            .degraded()
            .iter()
            .any(|(c, _)| c == crate::ca::tsa::HEALTH_COMPONENT)
        {
            ServingStatus::NotServing
        } else {
            status
        };
        reporter
            .set_service_status(TSA_HEALTH_NAME, tsa_status)
            .await;
        if last != Some(status) {
            tracing::info!(
                hsm = health.hsm,
                store = health.store,
                clock = clock_ok,
                keys = keys_ok,
                "health: {}",
                if status == ServingStatus::Serving {
                    "SERVING"
                } else {
                    "NOT_SERVING"
                }
            );
            set_health(&reporter, status).await;
            last = Some(status);
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

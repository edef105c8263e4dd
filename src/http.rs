//! The public status service over plain HTTP, no client certificate: CRLs, CA certificates,
//! the chain as certs-only PKCS#7 and a health check. Handlers only translate: CRLs come
//! from the publisher's memory and certificates are encoded once at start, so no request
//! waits for the HSM.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::net::TcpListener;

use crate::ca::Authority;
use crate::ca::crl::CrlPublisher;
use crate::config::Config;
use crate::hsm::Hsm;

/// How long a health check waits for the HSM or the store.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the HTTP service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The configuration has no `[http]` section.
    #[error("the configuration has no [http] section")]
    NotConfigured,
    /// The listener could not be bound.
    #[error("cannot listen on {addr} for HTTP: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The chain could not be encoded.
    #[error("encoding the CA chain: {0}")]
    Chain(String),
    /// The server failed.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// What the handlers read.
struct Shared {
    authority: Arc<Authority>,
    hsm: Hsm,
    crls: Arc<CrlPublisher>,
    certs: HashMap<String, Bytes>,
    chain_p7b: Bytes,
}

/// A configured, not yet running, status service.
pub struct Http {
    shared: Arc<Shared>,
}

impl Http {
    /// Encode the CA certificates and the chain once.
    pub fn new(
        authority: Arc<Authority>,
        hsm: Hsm,
        crls: Arc<CrlPublisher>,
    ) -> Result<Http, HttpError> {
        let mut certs = HashMap::new();
        let mut all = Vec::new();
        for i in authority.issuers() {
            certs.insert(i.name.clone(), Bytes::from(i.cert_der.clone()));
            all.push(i.cert.clone());
        }
        let chain_p7b = if all.is_empty() {
            Bytes::new()
        } else {
            Bytes::from(
                crate::pki::pkcs7::certs_only(&all).map_err(|e| HttpError::Chain(e.to_string()))?,
            )
        };
        Ok(Http {
            shared: Arc::new(Shared {
                authority,
                hsm,
                crls,
                certs,
                chain_p7b,
            }),
        })
    }

    /// Bind the configured `[http] listen` address.
    pub async fn bind(cfg: &Config) -> Result<TcpListener, HttpError> {
        let addr = cfg.http.as_ref().ok_or(HttpError::NotConfigured)?.listen;
        TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })
    }

    /// The routes: each handler only translates a path into bytes already in memory.
    fn router(&self) -> Router {
        Router::new()
            .route("/crl/{file}", get(crl))
            .route("/ca/{file}", get(ca_file))
            .route("/healthz", get(healthz))
            .with_state(self.shared.clone())
    }

    /// Serve on `listener` until `shutdown` completes, then finish requests in flight.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpError> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HttpError::Serve)
    }
}

fn der(content_type: &'static str, body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// `GET /crl/{issuer}.crl`.
async fn crl(State(s): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    match file
        .strip_suffix(".crl")
        .and_then(|issuer| s.crls.latest(issuer))
    {
        Some(body) => der("application/pkix-crl", body),
        None => not_found(),
    }
}

/// `GET /ca/{issuer}.crt` and `GET /ca/chain.p7b`.
async fn ca_file(State(s): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    if file == "chain.p7b" && !s.chain_p7b.is_empty() {
        return der("application/pkcs7-mime", s.chain_p7b.clone());
    }
    match file
        .strip_suffix(".crt")
        .and_then(|issuer| s.certs.get(issuer))
    {
        Some(body) => der("application/pkix-cert", body.clone()),
        None => not_found(),
    }
}

/// `GET /healthz`: 200 while the HSM holds the first issuer's key and the store answers.
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let store_ok = matches!(
        tokio::time::timeout(HEALTH_TIMEOUT, s.authority.store().issuers()).await,
        Ok(Ok(_))
    );
    let hsm_ok = s.hsm.is_available()
        && match s.authority.issuers().next().map(|i| i.key_label.clone()) {
            Some(label) => matches!(
                tokio::time::timeout(HEALTH_TIMEOUT, s.hsm.key_exists(&label)).await,
                Ok(Ok(true))
            ),
            None => true,
        };
    if hsm_ok && store_ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n").into_response()
    }
}

//! The public status service over plain HTTP, no client certificate: CRLs, CA certificates,
//! the chain as certs-only PKCS#7, OCSP (RFC 6960, `POST /ocsp` and `GET /ocsp/{base64}`)
//! the timestamp authority (RFC 3161, `POST /tsa`) and a health check. OCSP answers and
//! timestamps are signed in the HSM by the authority's responders; bad OCSP input is always
//! an OCSPResponse with malformedRequest and HTTP 200. Handlers only translate: CRLs come
//! from the publisher's memory, certificates are encoded once at start, and health is the
//! authority's latest probe, so no request for them waits for the HSM or the store.
//!
//! The port is public, so connections are bounded ([`Limits`], from `[http]`): a request
//! head must arrive within a deadline of connecting or of the previous response (silent
//! sockets, dribbled headers and idle keep-alive connections are closed), a whole request
//! within another, each endpoint reads a body of its own size at most, and only so many
//! connections are served at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::ca::Authority;
use crate::ca::crl::CrlPublisher;
use crate::ca::ocsp::OcspResponder;
use crate::ca::tsa::Tsa;
use crate::config::{Config, HttpConfig};

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
}

/// What the handlers read.
struct Shared {
    authority: Arc<Authority>,
    crls: Arc<CrlPublisher>,
    ocsp: Arc<OcspResponder>,
    tsa: Option<Arc<Tsa>>,
    certs: HashMap<String, Bytes>,
    chain_p7b: Bytes,
}

/// How the status service bounds its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A complete request head within this long of connecting or of the previous response.
    pub header_timeout: Duration,
    /// A whole request, body included, read and answered within this long.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits `[http]` sets.
    pub fn from_config(h: &HttpConfig) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(h.header_timeout_seconds),
            request_timeout: Duration::from_secs(h.request_timeout_seconds),
            max_connections: h.max_connections,
        }
    }
}

/// A configured, not yet running, status service.
pub struct Http {
    shared: Arc<Shared>,
    limits: Limits,
}

impl Http {
    /// Encode the CA certificates and the chain once; OCSP requests go to `ocsp`; `tsa`,
    /// when given, answers `POST /tsa` (and its certificate is served as `/ca/tsa.crt`).
    pub fn new(
        authority: Arc<Authority>,
        crls: Arc<CrlPublisher>,
        ocsp: Arc<OcspResponder>,
        tsa: Option<Arc<Tsa>>,
    ) -> Result<Http, HttpError> {
        let mut certs = HashMap::new();
        let mut all = Vec::new();
        for i in authority.issuers() {
            certs.insert(i.name.clone(), Bytes::from(i.cert_der.clone()));
            all.push(i.cert.clone());
        }
        if let Some(t) = &tsa {
            certs
                .entry(crate::ca::keys::TSA.to_owned())
                .or_insert_with(|| Bytes::from(t.cert_der().to_vec()));
        }
        let chain_p7b = if all.is_empty() {
            Bytes::new()
        } else {
            Bytes::from(
                crate::pki::pkcs7::certs_only(&all).map_err(|e| HttpError::Chain(e.to_string()))?,
            )
        };
        Ok(Http {
            limits: Limits {
                header_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(30),
                max_connections: 1024,
            },
            shared: Arc::new(Shared {
                ocsp,
                tsa,
                authority,
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

    /// Bound connections and requests as `limits` says.
    pub fn with_limits(mut self, limits: Limits) -> Http {
        self.limits = limits;
        self
    }

    /// The routes: each handler only translates a path into bytes already in memory. A
    /// body is read only by the POST endpoints, each up to the size its requests may have.
    fn router(&self) -> Router {
        let ocsp =
            post(ocsp_post).layer(DefaultBodyLimit::max(crate::pki::ocsp::MAX_REQUEST_BYTES));
        let tsa = post(tsa_post).layer(DefaultBodyLimit::max(crate::pki::tsp::MAX_REQUEST_BYTES));
        Router::new()
            .route("/crl/{file}", get(crl))
            .route("/ca/{file}", get(ca_file))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/ocsp", ocsp)
            .route("/ocsp/{*request}", get(ocsp_get))
            .route("/tsa", tsa)
            .layer(axum::middleware::from_fn_with_state(
                self.limits.request_timeout,
                request_deadline,
            ))
            .with_state(self.shared.clone())
    }

    /// Serve on `listener` until `shutdown` completes, then let requests in flight finish
    /// (for at most the request timeout).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpError> {
        let router = self.router();
        let limits = self.limits;
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let (stop, stopping) = watch::channel(false);
        let mut conns = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            // A connection over the cap waits in the kernel's queue until one closes.
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, say: back off instead of spinning.
                        tracing::warn!("HTTP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let service = TowerToHyperService::new(router.clone());
            let mut stopping = stopping.clone();
            conns.spawn(async move {
                let _permit = permit;
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .keep_alive(true);
                let mut conn =
                    std::pin::pin!(builder.serve_connection(TokioIo::new(stream), service));
                let mut asked = false;
                loop {
                    tokio::select! {
                        done = conn.as_mut() => {
                            if let Err(e) = done {
                                tracing::debug!(%peer, "HTTP connection closed: {e}");
                            }
                            break;
                        }
                        _ = stopping.changed(), if !asked => {
                            asked = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            });
            while conns.try_join_next().is_some() {}
        }
        let _ = stop.send(true);
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(limits.request_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!("HTTP requests still running at the stop deadline were cut off");
            conns.abort_all();
        }
        Ok(())
    }
}

/// Answer 408 (and close the connection) when a request, body included, takes longer than
/// `deadline`: a client that trickles a body does not hold a task for ever.
async fn request_deadline(State(deadline): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            "the request took too long\n",
        )
            .into_response(),
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

fn ocsp_response(body: Bytes) -> Response {
    der("application/ocsp-response", body)
}

/// `POST /ocsp`: the body is a DER OCSPRequest. A body over the limit (or unreadable) is
/// answered malformedRequest like any other bad request.
async fn ocsp_post(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Response {
    match body {
        Ok(b) => ocsp_response(s.ocsp.respond(&b).await),
        Err(_) => ocsp_response(Bytes::from(crate::pki::ocsp::malformed_request())),
    }
}

/// `GET /ocsp/{base64}`: the DER OCSPRequest in base64 (standard or URL-safe, padded or
/// not), percent-decoded by the router.
async fn ocsp_get(State(s): State<Arc<Shared>>, Path(request): Path<String>) -> Response {
    match decode_base64(&request) {
        Some(b) => ocsp_response(s.ocsp.respond(&b).await),
        None => ocsp_response(Bytes::from(crate::pki::ocsp::malformed_request())),
    }
}

/// Base64, standard or URL-safe alphabet, padding optional; `None` for anything else or for
/// input longer than a request may be.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() > crate::pki::ocsp::MAX_REQUEST_BYTES * 4 / 3 + 4 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return None;
    }
    Some(out)
}

/// `POST /tsa`: the body is a DER TimeStampReq sent as `application/timestamp-query`. Every
/// answer is a TimeStampResp with HTTP 200; a wrong content type or an unreadable body is a
/// rejection (badRequest / badDataFormat), like any other bad request.
async fn tsa_post(
    State(s): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    use crate::pki::tsp::{FailureInfo, Rejection, rejection};
    let Some(tsa) = &s.tsa else {
        return not_found();
    };
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let answer = if !ctype
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/timestamp-query")
    {
        rejection(&Rejection::new(
            FailureInfo::BadRequest,
            format!("Content-Type: {ctype:?}; send application/timestamp-query"),
        ))
    } else {
        match body {
            Ok(b) => tsa.respond(&b).await,
            Err(_) => rejection(&Rejection::new(
                FailureInfo::BadDataFormat,
                "request: unreadable or too long",
            )),
        }
    };
    der("application/timestamp-reply", Bytes::from(answer))
}

/// `GET /healthz`: 200 while the HSM holds the first issuer's key and the store answers and
/// nothing is degraded; otherwise 503 saying what is wrong (a TSA whose clock went
/// backwards is degraded).
async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    let degraded = s.authority.degraded();
    let up = s.authority.health().ok();
    if up && degraded.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else if up {
        let text: String = degraded
            .iter()
            .map(|(c, why)| format!("degraded: {c}: {why}\n"))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n").into_response()
    }
}

/// `GET /readyz`: what `/healthz` checks, and every issuer key's latest test signature
/// (made at most every `[api] readiness_signature_seconds`); 200 when all of it holds, 503
/// otherwise. The body says, line by line, what was found: each key, the oldest CRL, the
/// nearest certificate expiry.
async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let now = crate::clock::unix_now();
    let health = s.authority.health();
    let mut ready = health.ok();
    let mut lines = vec![
        format!("hsm: {}", if health.hsm { "ok" } else { "unavailable" }),
        format!("store: {}", if health.store { "ok" } else { "unavailable" }),
    ];
    for (component, why) in s.authority.degraded() {
        ready = false;
        lines.push(format!("degraded: {component}: {why}"));
    }
    for check in s.authority.key_checks() {
        let ago = now - check.at;
        match &check.problem {
            None => lines.push(format!(
                "issuer {}: signs (checked {ago} s ago)",
                check.issuer
            )),
            Some(p) => {
                ready = false;
                lines.push(format!("issuer {}: FAILING: {p}", check.issuer));
            }
        }
    }
    let metrics = crate::metrics::metrics();
    if let Some((issuer, this_update)) = metrics.oldest_crl() {
        lines.push(format!(
            "oldest CRL: {issuer}, thisUpdate {} s ago",
            now - this_update
        ));
    }
    if let Some((role, name, not_after)) = metrics.nearest_expiry() {
        lines.push(format!(
            "nearest expiry: {role} {name} in {} days",
            (not_after - now).div_euclid(86_400)
        ));
    }
    let head = if ready { "ready" } else { "not ready" };
    let body = format!("{head}\n{}\n", lines.join("\n"));
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::decode_base64;

    #[test]
    fn base64_in_both_alphabets() {
        assert_eq!(decode_base64("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode_base64("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode_base64("TWFu").unwrap(), b"Man");
        assert!(decode_base64("T").is_none());
        assert!(decode_base64("a b").is_none());
    }
}

//! The `signet.v1.CertificateAuthority` service: every call identifies the RA from its client
//! certificate, checks its permissions, waits for a slot under the concurrency limit, runs
//! within its deadline, converts the message, asks the [`Authority`], converts the answer,
//! and is logged with its outcome. No crypto or I/O happens here beyond the authority's.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use der::Decode;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use x509_cert::Certificate;

use super::convert;
use super::credentials::Credentials;
use super::error::Refusal;
use super::identity::{self, Ra, RaDirectory};
use super::pb;
use crate::ca::{Authority, CaError, Violation};
use crate::config::RaOperation;
use crate::escape::Escaped;
use crate::store::{CertFilter, CertificateRecord};

/// The RA API's implementation.
pub struct CaService {
    /// The authority every call ends in.
    authority: Arc<Authority>,
    /// Identity, permission, deadline and concurrency around every call.
    frame: Frame,
}

/// What every call of signet's gRPC services goes through: the caller's identity from its
/// client certificate, the operation check, the deadline, the concurrency limit and the log
/// line with the outcome. Shared by the RA API and the token service.
#[derive(Clone)]
pub struct Frame {
    /// The configured RAs.
    ras: Arc<RaDirectory>,
    /// One permit per call being served; bounds the work handed to the HSM and store.
    permits: Arc<Semaphore>,
    /// Deadline for calls that carry no grpc-timeout.
    default_deadline: Duration,
    /// Whether a caller's client certificate still stands (revoked, expired); `None` checks
    /// nothing beyond the handshake (unit tests).
    credentials: Option<Arc<Credentials>>,
}

/// The request id of a message, for the log (empty for reads).
pub trait Logged {
    /// The client-chosen request id, if the message has one.
    fn request_id(&self) -> &str {
        ""
    }
}

impl Logged for pb::IssueRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}
impl Logged for pb::RenewRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}
impl Logged for pb::RevokeRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}
impl Logged for pb::ReleaseHoldRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}
impl Logged for pb::GetCertificateRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}
impl Logged for pb::ListCertificatesRequest {}
impl Logged for pb::GetCaChainRequest {}

/// Parse a `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl CaService {
    /// A service over `authority` for the RAs in `ras`, their certificates checked by
    /// `credentials` on every call.
    pub fn new(
        authority: Arc<Authority>,
        ras: Arc<RaDirectory>,
        max_concurrent: usize,
        default_deadline: Duration,
        credentials: Arc<Credentials>,
    ) -> CaService {
        CaService {
            authority,
            frame: Frame::new(ras, max_concurrent, default_deadline).with_credentials(credentials),
        }
    }

    /// The frame this service's calls go through, for services on the same listener.
    pub fn frame(&self) -> Frame {
        self.frame.clone()
    }
}

impl Frame {
    /// A frame for the RAs in `ras`, at most `max_concurrent` calls at once.
    pub fn new(ras: Arc<RaDirectory>, max_concurrent: usize, default_deadline: Duration) -> Frame {
        Frame {
            ras,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            default_deadline,
            credentials: None,
        }
    }

    /// Check every caller's client certificate with `credentials` before its call.
    pub fn with_credentials(mut self, credentials: Arc<Credentials>) -> Frame {
        self.credentials = Some(credentials);
        self
    }

    /// The frame around every call: identity, operation check, deadline, concurrency limit,
    /// logging. `body` does the call's own work.
    pub async fn handle<M, R, F, Fut>(
        &self,
        rpc: &'static str,
        op: RaOperation,
        request: Request<M>,
        body: F,
    ) -> Result<Response<R>, Status>
    where
        M: Logged,
        F: FnOnce(Arc<Ra>, M) -> Fut,
        Fut: Future<Output = Result<R, Refusal>>,
    {
        let started = Instant::now();
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(self.default_deadline, |d| d.min(self.default_deadline));
        let certs = request.peer_certs();
        let peer = request
            .remote_addr()
            .map_or_else(|| "-".to_owned(), |a| a.to_string());
        // Parsed once: the certificate names the RA and is checked for its standing.
        let (leaf, identity) =
            match identity::leaf_certificate(certs.as_deref().map(|c| c.as_slice())) {
                Ok(cert) => {
                    let ra = self.ras.identify_certificate(&cert);
                    (Some(cert), ra)
                }
                Err(refusal) => (None, Err(refusal)),
            };
        let message = request.into_inner();
        let request_id = message.request_id().to_owned();
        let (ra_name, result) = match identity {
            Err(refusal) => ("-".to_owned(), Err(refusal)),
            // An RA that may not call this operation is named in the log all the same.
            Ok(ra) => match self
                .standing(&ra, leaf.as_ref())
                .await
                .and_then(|()| ra.require(op))
            {
                Err(refusal) => (ra.name.clone(), Err(refusal)),
                Ok(()) => {
                    let name = ra.name.clone();
                    let work = async {
                        // The semaphore is never closed, so acquiring only waits.
                        let _permit = self.permits.acquire().await;
                        body(ra, message).await
                    };
                    let result = match tokio::time::timeout(deadline, work).await {
                        Ok(r) => r,
                        Err(_) => Err(Refusal::DeadlineExceeded(deadline.as_millis())),
                    };
                    (name, result)
                }
            },
        };
        let elapsed = started.elapsed();
        let elapsed_ms = elapsed.as_millis() as u64;
        // Everything the client chose (its request id; its certificate's subject and its
        // fields' values, which messages may quote) is escaped for the log.
        match result {
            Ok(r) => {
                tracing::info!(
                    rpc,
                    ra = %Escaped(&ra_name),
                    request_id = %Escaped(&request_id),
                    peer = %peer,
                    code = "OK",
                    elapsed_ms,
                    "call"
                );
                crate::metrics::metrics().grpc(rpc, "OK", elapsed);
                Ok(Response::new(r))
            }
            Err(refusal) => {
                let status = Status::from(refusal);
                let code = super::error::code_name(status.code());
                crate::metrics::metrics().grpc(rpc, code, elapsed);
                tracing::info!(
                    rpc,
                    ra = %Escaped(&ra_name),
                    request_id = %Escaped(&request_id),
                    peer = %peer,
                    code,
                    elapsed_ms,
                    message = %Escaped(status.message()),
                    "call"
                );
                Err(status)
            }
        }
    }

    /// Whether the client certificate `ra` called with still stands (not revoked, on hold,
    /// expired or not yet valid); a refusal is also logged as a warning naming the office.
    async fn standing(&self, ra: &Ra, leaf: Option<&Certificate>) -> Result<(), Refusal> {
        let (Some(credentials), Some(leaf)) = (&self.credentials, leaf) else {
            return Ok(());
        };
        credentials.check(leaf).await.map_err(|problem| {
            tracing::warn!(ra = %Escaped(&ra.name), "refused the RA office: {problem}");
            Refusal::from(problem)
        })
    }

    /// Check a profile the request names: unknown is a problem of the `profile` field
    /// (returned), known but not granted to `ra` is PERMISSION_DENIED.
    pub fn requested_profile(
        &self,
        ra: &Ra,
        op: RaOperation,
        profile: &str,
    ) -> Result<Option<Violation>, Refusal> {
        self.ras.requested_profile(ra, op, profile)
    }
}

impl CaService {
    /// The certificate `serial`, if `ra` may do `op` on its profile.
    async fn require_certificate(
        &self,
        ra: &Ra,
        op: RaOperation,
        serial: &str,
    ) -> Result<CertificateRecord, Refusal> {
        let record = self.authority.certificate(serial).await?;
        ra.require_profile(op, &record.profile)?;
        Ok(record)
    }
}

#[tonic::async_trait]
impl pb::certificate_authority_server::CertificateAuthority for CaService {
    async fn issue(
        &self,
        request: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        self.frame
            .handle("Issue", RaOperation::Issue, request, |ra, m| async move {
                let preview = m.validate_only;
                let (req, mut bad) = convert::issue_request(m);
                bad.extend(
                    self.frame
                        .requested_profile(&ra, RaOperation::Issue, &req.profile)?,
                );
                if !bad.is_empty() {
                    // Refused whole: the authority's own checks of the fields that did
                    // convert are reported too.
                    let checked = convert::violations_of(self.authority.validate_issue(&req));
                    convert::refuse_if(bad, checked)?;
                }
                let issued = if preview {
                    self.authority.preview_issue(&ra.name, req).await?
                } else {
                    self.authority.issue(&ra.name, req).await?
                };
                Ok(convert::issue_response(issued, preview))
            })
            .await
    }

    async fn renew(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        self.frame
            .handle("Renew", RaOperation::Renew, request, |ra, m| async move {
                let preview = m.validate_only;
                let (req, bad) = convert::renew_request(m);
                convert::refuse_if(bad, crate::ca::renew_field_problems(&req))?;
                self.require_certificate(&ra, RaOperation::Renew, &req.serial)
                    .await?;
                let issued = if preview {
                    self.authority.preview_renew(&ra.name, req).await?
                } else {
                    self.authority.renew(&ra.name, req).await?
                };
                Ok(convert::renew_response(issued, preview))
            })
            .await
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        self.frame
            .handle("Revoke", RaOperation::Revoke, request, |ra, m| async move {
                let (req, bad) = convert::revoke_request(m);
                convert::refuse_if(
                    bad,
                    crate::ca::request_id_and_serial_problems(&req.request_id, &req.serial),
                )?;
                self.require_certificate(&ra, RaOperation::Revoke, &req.serial)
                    .await?;
                let revoked = self.authority.revoke(&ra.name, req).await?;
                Ok(convert::revoke_response(revoked))
            })
            .await
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::ReleaseHoldResponse>, Status> {
        self.frame
            .handle(
                "ReleaseHold",
                RaOperation::Revoke,
                request,
                |ra, m| async move {
                    let req = convert::release_request(m);
                    convert::refuse_if(
                        Vec::new(),
                        crate::ca::request_id_and_serial_problems(&req.request_id, &req.serial),
                    )?;
                    self.require_certificate(&ra, RaOperation::Revoke, &req.serial)
                        .await?;
                    let record = self.authority.release_hold(&ra.name, req).await?;
                    let history = self.authority.revocation_history(&record.serial).await?;
                    Ok(convert::release_response(&record, &history))
                },
            )
            .await
    }

    async fn get_certificate(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::GetCertificateResponse>, Status> {
        self.frame
            .handle(
                "GetCertificate",
                RaOperation::Read,
                request,
                |ra, m| async move {
                    let record = match (m.serial.is_empty(), m.request_id.is_empty()) {
                        (false, true) => {
                            self.require_certificate(&ra, RaOperation::Read, &m.serial)
                                .await?
                        }
                        (true, false) => {
                            let record = self
                                .authority
                                .certificate_by_request(&ra.name, &m.request_id)
                                .await?;
                            ra.require_profile(RaOperation::Read, &record.profile)?;
                            record
                        }
                        (both_empty, _) => {
                            let problem = if both_empty {
                                "give the serial or the request_id"
                            } else {
                                "give the serial or the request_id, not both"
                            };
                            return Err(Refusal::Ca(CaError::Invalid {
                                field: "serial".into(),
                                problem: problem.into(),
                                also: Vec::new(),
                            }));
                        }
                    };
                    let history = self.authority.revocation_history(&record.serial).await?;
                    Ok(convert::certificate_response(record, history))
                },
            )
            .await
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        self.frame
            .handle(
                "ListCertificates",
                RaOperation::Read,
                request,
                |ra, m| async move {
                    let ((filter, token, size), mut bad) = convert::list_request(m);
                    if let Some(p) = &filter.profile {
                        bad.extend(self.frame.requested_profile(&ra, RaOperation::Read, p)?);
                    }
                    convert::refuse_if(bad, Vec::new())?;
                    // An RA only ever sees the profiles it was granted, whatever it asks for.
                    let filter = CertFilter {
                        profiles: Some(ra.profiles.iter().cloned().collect()),
                        ..filter
                    };
                    let page = self.authority.list(filter, token, size).await?;
                    Ok(convert::list_response(page))
                },
            )
            .await
    }

    async fn get_ca_chain(
        &self,
        request: Request<pb::GetCaChainRequest>,
    ) -> Result<Response<pb::GetCaChainResponse>, Status> {
        self.frame
            .handle(
                "GetCaChain",
                RaOperation::Read,
                request,
                |_ra, m| async move {
                    let ders: Vec<Vec<u8>> = if m.issuer.is_empty() {
                        let mut all: Vec<_> = self.authority.issuers().collect();
                        // Root first, then the issuing CAs by name: a stable order for clients.
                        all.sort_by(|a, b| {
                            (a.parent.is_some(), &a.name).cmp(&(b.parent.is_some(), &b.name))
                        });
                        all.into_iter().map(|i| i.cert_der.clone()).collect()
                    } else {
                        self.authority.chain(&m.issuer)
                    };
                    if ders.is_empty() {
                        return Err(Refusal::Ca(if m.issuer.is_empty() {
                            CaError::FailedPrecondition(
                                "no CA certificate exists yet; run `signet ceremony`".into(),
                            )
                        } else {
                            CaError::NotFound(format!("no issuer named {:?}", m.issuer))
                        }));
                    }
                    let certs = ders
                        .iter()
                        .map(|d| Certificate::from_der(d))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| CaError::Internal(format!("CA certificate: {e}")))?;
                    let p7b = crate::pki::pkcs7::certs_only(&certs)
                        .map_err(|e| CaError::Internal(format!("building the .p7b: {e}")))?;
                    Ok(pb::GetCaChainResponse {
                        certificates: ders,
                        p7b,
                    })
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5000u"), Some(Duration::from_millis(5)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
    }
}

//! Where a workstation's certificate requests go: one trait, two implementations. The
//! in-process issuer hands the request to this process's [`Authority`] (the quick start, the
//! tests); the remote issuer sends it to a central `signet serve` over gRPC with mutual TLS,
//! authenticated by the workstation's own client certificate (production). Personalisation
//! is the same code either way.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::api::client::{self, ClientSettings};
use crate::api::pb::certificate_authority_client::CertificateAuthorityClient;
use crate::api::{convert, pb};
use crate::ca::{Authority, CaError, IssueRequest, normalize_serial};
use crate::store::CertStatus;

/// A certificate as the CA returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The issuing CA's certificate and those above it up to the root, DER.
    pub chain: Vec<Vec<u8>>,
}

/// How a request to the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CA answered and refused: nothing was issued for this request.
    #[error("the CA refused the request: {0}")]
    Refused(CaError),
    /// The CA could not be reached or did not answer; it may or may not have issued. The
    /// same request (same id, same CSR) must be sent again.
    #[error("the CA is unavailable: {0}")]
    Unavailable(String),
}

/// The CA a workstation asks for certificates.
#[async_trait]
pub trait CertificateIssuer: Send + Sync {
    /// Issue a certificate for `req`; the same request id and body always yield the same
    /// certificate.
    async fn issue(&self, req: IssueRequest) -> Result<IssuedCert, IssueError>;

    /// Whether the CA has revoked the certificate with this serial (hex). A certificate the
    /// CA does not know counts as not revoked.
    async fn is_revoked(&self, serial: &str) -> Result<bool, IssueError>;
}

/// Issues through the [`Authority`] of this process, recording `actor` as the RA.
pub struct InProcessIssuer {
    authority: Arc<Authority>,
    actor: String,
}

impl InProcessIssuer {
    /// An issuer over `authority`; `actor` is the workstation's name in records and audit.
    pub fn new(authority: Arc<Authority>, actor: impl Into<String>) -> InProcessIssuer {
        InProcessIssuer {
            authority,
            actor: actor.into(),
        }
    }
}

fn from_ca(e: CaError) -> IssueError {
    match e {
        // An internal error may have happened after signing: the same request is safe to
        // resend, a refusal would destroy a key whose certificate may exist.
        CaError::Unavailable(m) | CaError::Internal(m) => IssueError::Unavailable(m),
        other => IssueError::Refused(other),
    }
}

#[async_trait]
impl CertificateIssuer for InProcessIssuer {
    async fn issue(&self, req: IssueRequest) -> Result<IssuedCert, IssueError> {
        let issued = self
            .authority
            .issue(&self.actor, req)
            .await
            .map_err(from_ca)?;
        Ok(IssuedCert {
            cert_der: issued.cert_der,
            chain: issued.chain,
        })
    }

    async fn is_revoked(&self, serial: &str) -> Result<bool, IssueError> {
        let serial = normalize_serial(serial).map_err(IssueError::Refused)?;
        match self.authority.store().certificate(&serial).await {
            Ok(Some(r)) => Ok(r.status == CertStatus::Revoked),
            Ok(None) => Ok(false),
            Err(e) => Err(from_ca(e.into())),
        }
    }
}

/// Issues through a central signet over gRPC with mutual TLS. The connection is made on
/// first use and shared by every later call (tonic reconnects it if it drops); a failed
/// attempt is not kept, so the next call tries again.
pub struct RemoteIssuer {
    settings: ClientSettings,
    channel: OnceCell<Channel>,
}

impl RemoteIssuer {
    /// An issuer that connects with `settings` (the workstation's client certificate).
    pub fn new(settings: ClientSettings) -> RemoteIssuer {
        RemoteIssuer {
            settings,
            channel: OnceCell::new(),
        }
    }

    /// A client over the shared channel, connecting first if this is the first call.
    async fn ca(&self) -> Result<CertificateAuthorityClient<Channel>, IssueError> {
        let channel = self
            .channel
            .get_or_try_init(|| client::connect(&self.settings))
            .await
            .map_err(|e| IssueError::Unavailable(e.to_string()))?;
        Ok(CertificateAuthorityClient::new(channel.clone()))
    }
}

/// A status from the central CA as the refusal or outage it stands for.
fn from_status(s: &tonic::Status) -> IssueError {
    use tonic::Code;
    match s.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Aborted => IssueError::Unavailable(client::describe_status(s)),
        Code::InvalidArgument => {
            let named = s
                .get_details_bad_request()
                .and_then(|b| b.field_violations.into_iter().next());
            IssueError::Refused(match named {
                Some(v) => CaError::Invalid {
                    field: v.field,
                    problem: v.description,
                },
                None => CaError::Invalid {
                    field: "request".into(),
                    problem: s.message().to_owned(),
                },
            })
        }
        Code::NotFound => IssueError::Refused(CaError::NotFound(s.message().to_owned())),
        _ => IssueError::Refused(CaError::FailedPrecondition(client::describe_status(s))),
    }
}

#[async_trait]
impl CertificateIssuer for RemoteIssuer {
    async fn issue(&self, req: IssueRequest) -> Result<IssuedCert, IssueError> {
        let mut ca = self.ca().await?;
        let answer = ca
            .issue(convert::issue_message(&req))
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(IssuedCert {
            cert_der: answer.certificate,
            chain: answer.chain,
        })
    }

    async fn is_revoked(&self, serial: &str) -> Result<bool, IssueError> {
        let mut ca = self.ca().await?;
        match ca
            .get_certificate(pb::GetCertificateRequest {
                serial: serial.to_owned(),
            })
            .await
        {
            Ok(r) => Ok(r.into_inner().status == pb::CertificateStatus::Revoked as i32),
            // Not the CA's certificate (or not one this workstation may see).
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::PermissionDenied
                ) =>
            {
                Ok(false)
            }
            Err(s) => Err(from_status(&s)),
        }
    }
}

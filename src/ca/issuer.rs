//! Where a token workstation's certificate requests go: one trait, [`CertificateIssuer`],
//! with this process's [`Authority`] behind [`InProcessIssuer`] (the quick start, the tests)
//! and a central `signet serve` over mutual-TLS gRPC behind the API's remote issuer
//! (`crate::api::remote_issuer`, production). Personalisation is the same code either way.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Authority, CaError, IssueRequest, normalize_serial};
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

//! The token workstation's remote issuer: certificate requests sent to a central `signet
//! serve` over gRPC with mutual TLS, authenticated by the workstation's own client
//! certificate, and the choice between it and the in-process issuer that `[token.issuer]`
//! makes.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use super::client::{self, ClientSettings};
use super::pb::certificate_authority_client::CertificateAuthorityClient;
use super::{convert, pb};
use crate::ca::issuer::{CertificateIssuer, InProcessIssuer, IssueError, IssuedCert};
use crate::ca::{Authority, CaError, IssueRequest, Violation};
use crate::config::Config;
use crate::token::TokenError;

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
            let named: Vec<Violation> = s
                .get_details_bad_request()
                .map(|b| b.field_violations)
                .unwrap_or_default()
                .into_iter()
                .map(|v| Violation::new(v.field, v.description))
                .collect();
            IssueError::Refused(CaError::from_violations(named).unwrap_or_else(|| {
                CaError::Invalid {
                    field: "request".into(),
                    problem: s.message().to_owned(),
                    also: Vec::new(),
                }
            }))
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
                ..Default::default()
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

/// The issuer `[token.issuer]` names: this process's `authority` (`kind = "in-process"`) or
/// a central signet over mutual TLS (`kind = "remote"`, with its endpoint, CA certificate
/// and the workstation's client certificate and key).
pub fn workstation_issuer(
    cfg: &Config,
    authority: Option<Arc<Authority>>,
) -> Result<Arc<dyn CertificateIssuer>, TokenError> {
    let t = cfg.token.as_ref().ok_or_else(|| {
        TokenError::FailedPrecondition("the configuration has no [token] section".into())
    })?;
    let invalid = |key: &str| TokenError::Invalid {
        field: key.to_owned(),
        problem: "is required when kind = \"remote\"".into(),
    };
    Ok(match t.issuer.kind.as_str() {
        "remote" => {
            let need = |v: &Option<std::path::PathBuf>, key: &str| {
                v.as_ref()
                    .map(|p| cfg.resolve(p))
                    .ok_or_else(|| invalid(key))
            };
            Arc::new(RemoteIssuer::new(ClientSettings {
                endpoint: t
                    .issuer
                    .endpoint
                    .clone()
                    .ok_or_else(|| invalid("token.issuer.endpoint"))?,
                ca_cert: need(&t.issuer.ca_cert, "token.issuer.ca_cert")?,
                cert: need(&t.issuer.client_cert, "token.issuer.client_cert")?,
                key: need(&t.issuer.client_key, "token.issuer.client_key")?,
            }))
        }
        _ => {
            let authority = authority.ok_or_else(|| {
                TokenError::FailedPrecondition(
                    "token.issuer.kind = \"in-process\" needs the CA in this process".into(),
                )
            })?;
            Arc::new(InProcessIssuer::new(authority, t.actor.clone()))
        }
    })
}

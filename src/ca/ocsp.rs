//! The OCSP responder (RFC 6960): answer a DER request from the store, signed in the HSM by
//! the issuer's own key (issuing CAs carry keyUsage digitalSignature), and check the
//! signature before answering. Every outcome is an OCSPResponse: bad input is
//! malformedRequest, a request naming none of the loaded issuers is unauthorized, an HSM
//! outage is tryLater and anything else internalError.
//!
//! One response has one signer: the issuer named by the first CertID that names a loaded
//! issuer. CertIDs naming another (or no) issuer, and serials that issuer never issued, are
//! answered `unknown`. The signer's certificate is included in `certs`, so relying parties
//! that only hold the root (`openssl ocsp -CAfile root.pem`) can build the path.

use std::sync::Arc;
use std::time::Duration;

use der::Encode;

use super::{Authority, CaError, Issuer};
use crate::pki::ocsp::{self, CertId, OcspResponseStatus, ResponseContent, Status};
use crate::store::CertStatus;

/// Answers OCSP requests for the authority's issuers.
pub struct OcspResponder {
    authority: Arc<Authority>,
    validity: Duration,
}

impl OcspResponder {
    /// A responder whose answers are fresh for `validity`.
    pub fn new(authority: Arc<Authority>, validity: Duration) -> OcspResponder {
        OcspResponder {
            authority,
            validity,
        }
    }

    /// The DER OCSPResponse for the DER request `der`. Never fails: errors become statuses.
    pub async fn respond(&self, der: &[u8]) -> Vec<u8> {
        let Ok(req) = ocsp::parse_request(der) else {
            return ocsp::malformed_request();
        };
        match self.answer(&req).await {
            Ok(Some(resp)) => resp,
            Ok(None) => ocsp::unauthorized(),
            Err(CaError::Unavailable(e)) => {
                tracing::warn!("OCSP: {e}");
                ocsp::error_response(OcspResponseStatus::TryLater)
            }
            Err(e) => {
                tracing::error!("OCSP: {e}");
                ocsp::error_response(OcspResponseStatus::InternalError)
            }
        }
    }

    async fn status(&self, issuer: &Issuer, id: &CertId) -> Result<Status, CaError> {
        if !ocsp::cert_id_matches(id, &issuer.cert) {
            return Ok(Status::Unknown);
        }
        let Ok(serial) = super::normalize_serial(&ocsp::serial_hex(id)) else {
            return Ok(Status::Unknown);
        };
        let rec = self.authority.store.certificate(&serial).await?;
        Ok(match rec {
            Some(r) if r.issuer == issuer.name => match (r.status, r.revocation) {
                (CertStatus::Valid, _) => Status::Good,
                (CertStatus::Revoked, Some(info)) => Status::Revoked {
                    at: super::crl_time(info.revoked_at),
                    reason: info.reason,
                },
                _ => Status::Unknown,
            },
            _ => Status::Unknown,
        })
    }

    async fn answer(&self, req: &ocsp::OcspRequest) -> Result<Option<Vec<u8>>, CaError> {
        let list = &req.tbs_request.request_list;
        let Some(issuer) = list.iter().find_map(|r| {
            self.authority
                .issuers()
                .find(|i| ocsp::cert_id_matches(&r.req_cert, &i.cert))
        }) else {
            return Ok(None);
        };
        let mut entries = Vec::with_capacity(list.len());
        for r in list {
            entries.push((r.req_cert.clone(), self.status(issuer, &r.req_cert).await?));
        }
        let now = super::now_seconds();
        let content = ResponseContent {
            entries: &entries,
            produced_at: now,
            next_update: now + self.validity,
            nonce: ocsp::nonce(req),
        };
        let tbs = ocsp::build_response_data(&issuer.cert, &content)?;
        let tbs_der = tbs
            .to_der()
            .map_err(|e| CaError::Internal(format!("encoding ResponseData: {e}")))?;
        let signature = self
            .authority
            .hsm
            .sign(&issuer.key_label, issuer.signature, &tbs_der)
            .await?;
        let der = ocsp::assemble_response(
            tbs,
            issuer.signature,
            &signature,
            &issuer.spki,
            Some(vec![issuer.cert.clone()]),
        )
        .map_err(|e| {
            tracing::error!(issuer = %issuer.name, "HSM signature over an OCSP response: {e}");
            CaError::Internal(format!(
                "the OCSP signature of {} does not verify",
                issuer.name
            ))
        })?;
        Ok(Some(der))
    }
}

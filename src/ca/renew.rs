//! Renewal: a new certificate for the same subject, SANs and profile as one that is about to
//! expire, linked to it, allowed only in the profile's renewal window. It goes through the
//! same record-sign-commit path as issuance, so it happens exactly once per request id.

use der::Decode;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;

use super::{
    Approval, Authority, CaError, Issued, Prepared, Shape, csr, hex_opt_bytes, normalize_serial,
    rfc3339,
};
use crate::pki::{San, SubjectSpec};
use crate::store::CertStatus;

/// An approved request to renew a certificate.
///
/// The new certificate's validity starts when it is signed and runs `validity_years` from
/// then. It does not carry over what was left of the old certificate: a renewal early in the
/// window gives the subscriber a little overlap and no extra time, so no certificate ever
/// lives longer than its profile allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// Chosen by the RA; the same id always yields the same certificate.
    pub request_id: String,
    /// Serial of the certificate to renew (hex).
    pub serial: String,
    /// A PKCS#10 request (DER) for a new key; `None` keeps the old certificate's key.
    #[serde(with = "hex_opt_bytes")]
    pub csr: Option<Vec<u8>>,
    /// Validity in years; `None` takes the old certificate's.
    pub validity_years: Option<u32>,
    /// The approval evidence.
    pub approval: Approval,
}

/// The parts of a stored request (an [`super::IssueRequest`] or a renewal, both kept in this
/// shape) that a renewal carries over.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RecordedRequest {
    request_id: String,
    profile: String,
    issuer: Option<String>,
    subject: SubjectSpec,
    sans: Vec<San>,
    validity_years: u32,
    approval: Approval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    renewed_from: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    rekey: bool,
}

const DAY: i64 = 86_400;

impl Authority {
    /// Renew a certificate for `ra`, exactly once per `(ra, request_id)`: only a valid,
    /// unexpired certificate, only inside its profile's renewal window (FailedPrecondition
    /// otherwise, naming the date the window opens). The new certificate keeps subject, SANs,
    /// profile and (while the profile still allows it) issuer, and records `renewed_from`.
    pub async fn renew(&self, ra: &str, req: RenewRequest) -> Result<Issued, CaError> {
        self.renew_or_preview(ra, req, false).await
    }

    /// What [`Authority::renew`] would issue, every check run, nothing recorded or signed
    /// (see [`Authority::preview_issue`]).
    pub async fn preview_renew(&self, ra: &str, req: RenewRequest) -> Result<Issued, CaError> {
        self.renew_or_preview(ra, req, true).await
    }

    async fn renew_or_preview(
        &self,
        ra: &str,
        req: RenewRequest,
        preview: bool,
    ) -> Result<Issued, CaError> {
        // Every field that can be judged without the store is judged at once.
        if let Some(e) = CaError::from_violations(super::renew_field_problems(&req)) {
            return Err(e);
        }
        let old_serial = normalize_serial(&req.serial)?;
        let digest = renew_digest(&req, &old_serial)?;

        // A retry is answered from the store before the window and status checks: they may
        // have changed since the first attempt (the old certificate expired, or was revoked
        // because this renewal superseded it), and the answer must not.
        if preview {
            if let Some(done) = self.already_requested(ra, &req.request_id, &digest).await? {
                return Ok(done);
            }
        } else if let Some(existing) = self
            .store
            .certificate_by_request(ra, &req.request_id)
            .await?
        {
            if existing.request_digest != digest {
                return Err(CaError::AlreadyExists {
                    ra: ra.to_owned(),
                    request_id: req.request_id.clone(),
                    serial: existing.serial,
                });
            }
            return match existing.status {
                CertStatus::Pending => self.sign_and_commit(existing, ra).await,
                _ => self.answer(existing),
            };
        }

        self.check_approval(&req.approval)?;
        let old = match self.store.certificate(&old_serial).await? {
            None => {
                return Err(CaError::NotFound(format!(
                    "no certificate with serial {old_serial}"
                )));
            }
            Some(r) => r,
        };
        let now = crate::clock::unix_now();
        match old.status {
            CertStatus::Pending => {
                return Err(CaError::FailedPrecondition(format!(
                    "certificate {old_serial} has not been issued yet, so it cannot be renewed"
                )));
            }
            CertStatus::Revoked => {
                return Err(CaError::FailedPrecondition(format!(
                    "certificate {old_serial} is revoked and cannot be renewed; apply for a new certificate"
                )));
            }
            CertStatus::Valid => {}
        }
        if now > old.not_after {
            return Err(CaError::FailedPrecondition(format!(
                "certificate {old_serial} expired at {}; apply for a new certificate",
                rfc3339(old.not_after)
            )));
        }
        let profiles = self.profiles();
        let profile = profiles.get(&old.profile).ok_or_else(|| {
            CaError::FailedPrecondition(format!(
                "certificate {old_serial} has profile {:?}, which is no longer configured",
                old.profile
            ))
        })?;
        let opens = old.not_after - i64::from(profile.renewal_window_days) * DAY;
        if now < opens {
            let at = rfc3339(opens);
            return Err(CaError::FailedPrecondition(format!(
                "the renewal window of certificate {old_serial} opens on {} ({at}), {} days before it expires at {}; renew it then",
                &at[..at.len().min(10)],
                profile.renewal_window_days,
                rfc3339(old.not_after)
            )));
        }

        let recorded: RecordedRequest = serde_json::from_str(&old.request_json).map_err(|e| {
            CaError::Internal(format!("stored request of certificate {old_serial}: {e}"))
        })?;
        // Keep the old issuer (its current generation) while the profile still allows it;
        // otherwise the profile's default.
        let old_family = self
            .issuers
            .get(&old.issuer)
            .map_or(old.issuer.as_str(), |i| i.family.as_str());
        let issuer_name = if profile.issuers.iter().any(|p| p == old_family) {
            old_family
        } else {
            profile.issuers.first().map(String::as_str).ok_or_else(|| {
                CaError::FailedPrecondition(format!("profile {} has no issuer", profile.name))
            })?
        };
        let issuer = self.current_issuer(issuer_name).ok_or_else(|| {
            CaError::FailedPrecondition(format!(
                "issuer {issuer_name:?} has not been created yet; run `signet ceremony`"
            ))
        })?;

        // The key: a new one proven by a CSR (checked exactly as at issuance), or the old one.
        let (spki, key_type, csr_der) = match &req.csr {
            Some(der) => {
                let c = csr::check_csr(der)?;
                (c.spki, c.key_type, c.der)
            }
            None => {
                let der = old.cert_der.as_deref().ok_or_else(|| {
                    CaError::Internal(format!("certificate {old_serial} has no DER"))
                })?;
                let cert = Certificate::from_der(der).map_err(|e| {
                    CaError::Internal(format!("stored certificate {old_serial}: {e}"))
                })?;
                let spki = cert.tbs_certificate().subject_public_key_info().clone();
                let key_type = crate::pki::verify::key_type_of(&spki, "csr")?;
                (spki, key_type, old.csr_der.clone())
            }
        };
        // A key certified before the CA's exponent rule was tightened is not certified again.
        crate::pki::verify::check_rsa_exponent(&spki, self.rsa_exponent, "csr").map_err(
            |e| match (e, &req.csr) {
                (crate::pki::PkiError::Invalid { field, problem }, None) => super::invalid(
                    &field,
                    format!("the certificate's key: {problem}; renew with a new key (a csr)"),
                ),
                (e, _) => e.into(),
            },
        )?;
        let validity_years = req.validity_years.unwrap_or(recorded.validity_years);
        profile.check_request(&recorded.subject, &recorded.sans, validity_years, key_type)?;

        let request_json = serde_json::to_string(&RecordedRequest {
            request_id: req.request_id.clone(),
            profile: profile.name.clone(),
            issuer: Some(issuer.name.clone()),
            subject: recorded.subject.clone(),
            sans: recorded.sans.clone(),
            validity_years,
            approval: req.approval.clone(),
            renewed_from: Some(old_serial.clone()),
            rekey: req.csr.is_some(),
        })
        .map_err(|e| CaError::Internal(e.to_string()))?;
        self.record_sign_commit(Prepared {
            ra,
            request_id: &req.request_id,
            request_digest: digest,
            preview,
            shape: Shape::Leaf {
                profile,
                key_type,
                validity_years,
            },
            issuer,
            subject: &recorded.subject,
            sans: &recorded.sans,
            spki: &spki,
            csr_der: &csr_der,
            request_json,
            renewed_from: Some(old_serial),
        })
        .await
    }
}

/// SHA-256 over the canonical JSON of the renewal (everything but the id, the serial in its
/// stored form), domain-separated from issuance digests.
fn renew_digest(req: &RenewRequest, serial: &str) -> Result<String, CaError> {
    let mut body = req.clone();
    body.request_id.clear();
    body.serial = serial.to_owned();
    super::tagged_digest(b"signet-renew-v1\0", &body)
}

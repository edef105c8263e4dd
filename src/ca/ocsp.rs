//! The OCSP responder (RFC 6960): answer a DER request from the store, signed in the HSM by
//! a delegated responder certificate per issuer (EKU OCSPSigning, id-pkix-ocsp-nocheck, a
//! short life, renewed by the daemon) or, when configured so, by the issuer's own key. The
//! signature is checked before answering. Every outcome is an OCSPResponse: bad input is
//! malformedRequest, a request naming none of the loaded issuers is unauthorized, an HSM
//! outage is tryLater and anything else internalError.
//!
//! One response has one signer: the one of the issuer named by the first CertID that names
//! a loaded issuer. CertIDs naming another (or no) issuer, and serials that issuer never
//! issued, are answered `unknown`. The signer's certificate and the issuer's are included
//! in `certs`, so relying parties that only hold the root (`openssl ocsp -CAfile root.pem`)
//! can build the path.
//!
//! Good answers to single-certificate requests without a nonce (what browsers and TLS
//! stacks send) are kept signed and reused until half their validity has passed. Before a
//! kept response is served, the certificate's status is read from the store again, so a
//! revocation (from this daemon or from `signet revoke` in another process) takes it out
//! at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use super::{Authority, CaError, Issuer, OCSP_RESPONDER_PROFILE};
use crate::config::{Config, OcspConfig, OcspSigner};
use crate::hsm::Hsm;
use crate::pki::ocsp::{
    self, CertId, IssuerHashes, OcspRequest, OcspResponseStatus, ResponseContent, Status,
};
use crate::pki::{SignatureAlgorithm, SubjectSpec};
use crate::store::{CertFilter, CertStatus, CertificateRecord, Store};

/// The RA name and audit actor under which signet certifies its own responder keys.
pub const RESPONDER_ACTOR: &str = "signet";

/// The audit log counts signatures of the responder keys per period under this action.
pub const USAGE_ACTION: &str = "ocsp.responder_key_used";

/// At most this many signed responses are kept; past it, stale ones are dropped first.
const MAX_CACHED: usize = 100_000;

/// The HSM label of the delegated responder key of the issuer whose key is `issuer_label`.
pub fn responder_key_label(issuer_label: &str) -> String {
    format!("{issuer_label}-ocsp")
}

/// Who signs for one issuer, and what goes with the signature.
struct Signer {
    key_label: String,
    alg: SignatureAlgorithm,
    /// The certificate of the signing key: the responderID is its key hash.
    cert: Certificate,
    spki: SubjectPublicKeyInfoOwned,
    /// Included in every response: the delegated certificate and the issuer's.
    certs: Vec<Certificate>,
    /// When the signing certificate expires: no response outlives it.
    not_after: SystemTime,
    /// The delegated certificate's serial (for logs); `None` when the issuer signs.
    serial: Option<String>,
}

impl Signer {
    fn of_issuer(issuer: &Issuer) -> Signer {
        Signer {
            key_label: issuer.key_label.clone(),
            alg: issuer.signature,
            cert: issuer.cert.clone(),
            spki: issuer.spki.clone(),
            certs: vec![issuer.cert.clone()],
            not_after: issuer
                .cert
                .tbs_certificate()
                .validity()
                .not_after
                .to_system_time(),
            serial: None,
        }
    }
}

/// A signed good response kept for reuse.
struct Kept {
    der: Bytes,
    reuse_until: SystemTime,
}

/// Answers OCSP requests for the authority's issuers.
pub struct OcspResponder {
    authority: Arc<Authority>,
    cfg: OcspConfig,
    /// The loaded issuers' CertID hashes, computed once.
    issuers: Vec<(String, IssuerHashes)>,
    signers: RwLock<HashMap<String, Arc<Signer>>>,
    kept: Option<Mutex<HashMap<Vec<u8>, Kept>>>,
}

impl OcspResponder {
    /// A responder for every loaded issuer. With delegated signing, each issuer's current
    /// responder certificate is loaded from the store, and certified anew (with the key the
    /// ceremony generated) when it is missing or has less than a third of its life left.
    pub async fn open(authority: Arc<Authority>, cfg: &OcspConfig) -> Result<Self, CaError> {
        let issuers = authority
            .issuers()
            .filter_map(|i| IssuerHashes::new(&i.cert).map(|h| (i.name.clone(), h)))
            .collect();
        let responder = OcspResponder {
            cfg: cfg.clone(),
            issuers,
            signers: RwLock::new(HashMap::new()),
            kept: cfg.cache.then(|| Mutex::new(HashMap::new())),
            authority,
        };
        responder.refresh_signers().await?;
        Ok(responder)
    }

    /// Keep the delegated responder certificates fresh until `stopped` turns true: checked
    /// every hour (or a tenth of their life, if shorter), renewed with a third left.
    pub async fn maintain(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        if self.cfg.signer != OcspSigner::Delegated {
            return;
        }
        let lifetime = responder_lifetime(&self.cfg);
        let every = (lifetime / 10).min(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return,
            }
            if *stopped.borrow() {
                return;
            }
            if let Err(e) = self.refresh_signers().await {
                tracing::warn!("OCSP responder certificates: {e}");
            }
        }
    }

    /// Load (and where due, renew) the signer of every issuer.
    async fn refresh_signers(&self) -> Result<(), CaError> {
        let mut fresh = HashMap::new();
        for issuer in self.authority.issuers() {
            let signer = match self.cfg.signer {
                OcspSigner::Issuer => Signer::of_issuer(issuer),
                OcspSigner::Delegated => {
                    let rec = current_or_renewed(&self.authority, issuer, &self.cfg).await?;
                    delegated_signer(issuer, &self.cfg, &rec)?
                }
            };
            let previous = self.signers_read().get(&issuer.name).cloned();
            if signer.serial.is_some() {
                let left = signer
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                crate::metrics::metrics().certificate("ocsp_responder", &issuer.name, left);
            }
            if previous.as_ref().map(|p| &p.serial) != Some(&signer.serial) {
                tracing::info!(
                    issuer = %issuer.name,
                    responder = signer.serial.as_deref().unwrap_or("the issuer's own key"),
                    "OCSP responses signed by this certificate from now on"
                );
            }
            fresh.insert(issuer.name.clone(), Arc::new(signer));
        }
        *self.signers.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn signers_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Signer>>> {
        self.signers.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The DER OCSPResponse for the DER request `der`. Never fails: errors become statuses.
    pub async fn respond(&self, der: &[u8]) -> Bytes {
        let metrics = crate::metrics::metrics();
        let Ok(req) = ocsp::parse_request(der) else {
            metrics.ocsp("malformedRequest", "none");
            return Bytes::from(ocsp::malformed_request());
        };
        match self.answer(&req).await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                metrics.ocsp("unauthorized", "none");
                Bytes::from(ocsp::unauthorized())
            }
            Err(CaError::Unavailable(e)) => {
                tracing::warn!("OCSP: {e}");
                metrics.ocsp("tryLater", "none");
                Bytes::from(ocsp::error_response(OcspResponseStatus::TryLater))
            }
            Err(e) => {
                tracing::error!("OCSP: {e}");
                metrics.ocsp("internalError", "none");
                Bytes::from(ocsp::error_response(OcspResponseStatus::InternalError))
            }
        }
    }

    /// The status of one certificate of `issuer` (found by its CertID hashes).
    async fn status(
        &self,
        issuer: &Issuer,
        hashes: &IssuerHashes,
        id: &CertId,
    ) -> Result<Status, CaError> {
        if !hashes.matches(id) {
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
                    at: crate::clock::from_unix(info.revoked_at),
                    reason: info.reason,
                },
                _ => Status::Unknown,
            },
            Some(_) => Status::Unknown,
            // A CA certificate this issuer signed (an issuing CA under the root) is good:
            // CA certificates are not revoked online.
            None if self.authority.issuers().any(|child| {
                child.parent.as_deref() == Some(issuer.name.as_str())
                    && hex::encode(child.cert.tbs_certificate().serial_number().as_bytes())
                        == serial
            }) =>
            {
                Status::Good
            }
            None => Status::Unknown,
        })
    }

    async fn answer(&self, req: &OcspRequest) -> Result<Option<Bytes>, CaError> {
        let list = &req.tbs_request.request_list;
        let Some((issuer, hashes)) = list.iter().find_map(|r| {
            self.issuers
                .iter()
                .find(|(_, h)| h.matches(&r.req_cert))
                .and_then(|(name, h)| self.authority.issuer(name).map(|i| (i, h)))
        }) else {
            return Ok(None);
        };
        let mut entries = Vec::with_capacity(list.len());
        for r in list {
            let status = self.status(issuer, hashes, &r.req_cert).await?;
            entries.push((r.req_cert.clone(), status));
        }
        let nonce = ocsp::nonce(req);
        // The key under which a good answer is kept: the one CertID, as asked.
        let keep_key = match (&self.kept, entries.as_slice(), nonce) {
            (Some(_), [(id, Status::Good)], None) => id.to_der().ok(),
            _ => None,
        };
        let now = SystemTime::now();
        if let (Some(kept), Some(key)) = (&self.kept, &keep_key) {
            let map = kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(k) = map.get(key)
                && now < k.reuse_until
            {
                count_answers(&entries, "kept");
                return Ok(Some(k.der.clone()));
            }
        } else if let (Some(kept), [(id, Status::Revoked { .. } | Status::Unknown)]) =
            (&self.kept, entries.as_slice())
        {
            // No longer good: never serve the response kept from when it was.
            if let Ok(key) = id.to_der() {
                kept.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            }
        }
        let signer = self
            .signers_read()
            .get(&issuer.name)
            .cloned()
            .ok_or_else(|| {
                CaError::Internal(format!("no OCSP signer loaded for issuer {}", issuer.name))
            })?;
        let der = Bytes::from(self.sign(issuer, &signer, &entries, nonce).await?);
        if let (Some(kept), Some(key)) = (&self.kept, keep_key) {
            let reuse_until = now + self.validity() / 2;
            let mut map = kept.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_CACHED {
                map.retain(|_, k| now < k.reuse_until);
                if map.len() >= MAX_CACHED {
                    map.clear();
                }
            }
            map.insert(
                key,
                Kept {
                    der: der.clone(),
                    reuse_until,
                },
            );
        }
        count_answers(&entries, "signed");
        Ok(Some(der))
    }

    fn validity(&self) -> Duration {
        Duration::from_secs(self.cfg.validity_minutes * 60)
    }

    async fn sign(
        &self,
        issuer: &Issuer,
        signer: &Signer,
        entries: &[(CertId, Status)],
        nonce: Option<&x509_cert::ext::Extension>,
    ) -> Result<Vec<u8>, CaError> {
        let now = super::now_seconds();
        let content = ResponseContent {
            entries,
            produced_at: now,
            next_update: (now + self.validity()).min(signer.not_after),
            nonce,
        };
        let tbs = ocsp::build_response_data(&signer.cert, &content)?;
        let tbs_der = tbs
            .to_der()
            .map_err(|e| CaError::Internal(format!("encoding ResponseData: {e}")))?;
        let signature = self
            .authority
            .hsm
            .sign(&signer.key_label, signer.alg, &tbs_der)
            .await?;
        self.authority.usage.record(USAGE_ACTION, &signer.key_label);
        ocsp::assemble_response(
            tbs,
            signer.alg,
            &signature,
            &signer.spki,
            Some(signer.certs.clone()),
        )
        .map_err(|e| {
            tracing::error!(issuer = %issuer.name, key = %signer.key_label, "HSM signature over an OCSP response: {e}");
            CaError::Internal(format!(
                "the OCSP signature for {} does not verify",
                issuer.name
            ))
        })
    }
}

fn responder_lifetime(cfg: &OcspConfig) -> Duration {
    Duration::from_secs(u64::from(cfg.responder_validity_days) * 86_400)
}

/// The signer made of a delegated responder certificate record.
fn delegated_signer(
    issuer: &Issuer,
    cfg: &OcspConfig,
    rec: &CertificateRecord,
) -> Result<Signer, CaError> {
    let der = rec.cert_der.as_deref().ok_or_else(|| {
        CaError::Internal(format!("responder certificate {} has no DER", rec.serial))
    })?;
    let cert = Certificate::from_der(der)
        .map_err(|e| CaError::Internal(format!("responder certificate {}: {e}", rec.serial)))?;
    let spki = cert.tbs_certificate().subject_public_key_info().clone();
    Ok(Signer {
        key_label: responder_key_label(&issuer.key_label),
        alg: cfg.responder_key_type.default_signature_algorithm(),
        not_after: cert.tbs_certificate().validity().not_after.to_system_time(),
        certs: vec![cert.clone(), issuer.cert.clone()],
        cert,
        spki,
        serial: Some(rec.serial.clone()),
    })
}

/// The delegated responder certificates of `issuer` in the store (valid and revoked), and
/// the current one: valid, for the key now in the HSM, latest to expire.
async fn responder_records(
    store: &Arc<dyn Store>,
    issuer: &str,
) -> Result<Vec<CertificateRecord>, CaError> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let page = store
            .list_certificates(
                CertFilter {
                    profile: Some(OCSP_RESPONDER_PROFILE.into()),
                    issuer: Some(issuer.into()),
                    ..CertFilter::default()
                },
                token,
                500,
            )
            .await?;
        all.extend(page.records);
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return Ok(all),
        }
    }
}

/// The responder certificate of `issuer` to sign with: the current one, or a new one for
/// the same HSM key when there is none or the current one has less than a third of its
/// life left. The new one goes through the authority's record-sign-commit path with a
/// request id numbered per issuer, so two processes renewing at once make one certificate.
async fn current_or_renewed(
    authority: &Authority,
    issuer: &Issuer,
    cfg: &OcspConfig,
) -> Result<CertificateRecord, CaError> {
    let label = responder_key_label(&issuer.key_label);
    if !authority.hsm.key_exists(&label).await? {
        return Err(CaError::FailedPrecondition(format!(
            "the delegated OCSP responder key {label:?} of issuer {} is not in the HSM; run `signet ceremony` to make it, or set [ocsp] signer = \"issuer\"",
            issuer.name
        )));
    }
    let spki = authority.hsm.public_key(&label).await?;
    let spki_der = spki
        .to_der()
        .map_err(|e| CaError::Internal(format!("encoding public key: {e}")))?;
    let records = responder_records(&authority.store, &issuer.name).await?;
    let now = crate::clock::unix_now();
    let lifetime = responder_lifetime(cfg);
    let renew_before = now + (lifetime.as_secs() / 3) as i64;
    let current = records
        .iter()
        .filter(|r| r.status == CertStatus::Valid && r.csr_der == spki_der)
        .max_by_key(|r| r.not_after);
    if let Some(r) = current
        && r.not_after > renew_before
    {
        return Ok(r.clone());
    }
    let subject = responder_subject(issuer)?;
    let request_id = format!("ocsp-responder:{}:{}", issuer.name, records.len() + 1);
    let issued = authority
        .issue_ocsp_responder(
            RESPONDER_ACTOR,
            &request_id,
            &issuer.name,
            &subject,
            &spki,
            lifetime,
        )
        .await?;
    tracing::info!(issuer = %issuer.name, serial = %issued.record.serial, "delegated OCSP responder certified");
    Ok(issued.record)
}

/// `C` and `O` of the issuer, and CN "<issuer CN> OCSP Responder" (or the issuer's
/// configured name when that would not fit).
fn responder_subject(issuer: &Issuer) -> Result<SubjectSpec, CaError> {
    use crate::pki::name::Attr;
    let mut pairs: Vec<(String, String)> = Vec::new();
    let name = issuer.cert.tbs_certificate().subject();
    let mut cn = None;
    for atv in name.iter() {
        let value = atv
            .value
            .decode_as::<der::asn1::Utf8StringRef<'_>>()
            .map(|s| s.as_str().to_owned())
            .or_else(|_| {
                atv.value
                    .decode_as::<der::asn1::PrintableStringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
            });
        let Ok(value) = value else { continue };
        if atv.oid == Attr::Country.oid() || atv.oid == Attr::Organization.oid() {
            let short = if atv.oid == Attr::Country.oid() {
                "C"
            } else {
                "O"
            };
            pairs.push((short.into(), value));
        } else if atv.oid == Attr::CommonName.oid() {
            cn = Some(value);
        }
    }
    let full = format!("{} OCSP Responder", cn.as_deref().unwrap_or(&issuer.name));
    let cn = if full.chars().count() <= Attr::CommonName.max_chars() {
        full
    } else {
        format!("{} OCSP Responder", issuer.name)
    };
    pairs.push(("CN".into(), cn));
    Ok(SubjectSpec::from_pairs(pairs)?)
}

/// For the ceremony: generate each issuer's delegated responder key in the HSM (recorded
/// like every CA key) and certify it. Does nothing when the issuers sign their own OCSP.
pub async fn provision(
    cfg: &Config,
    authority: &Authority,
    hsm: &Hsm,
    store: &Arc<dyn Store>,
) -> Result<Vec<String>, CaError> {
    if cfg.ocsp.signer != OcspSigner::Delegated {
        return Ok(Vec::new());
    }
    let mut made = Vec::new();
    let mut issuers: Vec<&Issuer> = authority.issuers().collect();
    issuers.sort_by(|a, b| a.name.cmp(&b.name));
    for issuer in issuers {
        let label = responder_key_label(&issuer.key_label);
        super::keys::key_for(
            &label,
            cfg.ocsp.responder_key_type,
            &format!("ocsp:{}", issuer.name),
            hsm,
            store,
        )
        .await?;
        let rec = current_or_renewed(authority, issuer, &cfg.ocsp).await?;
        made.push(format!("{} (serial {})", issuer.name, rec.serial));
    }
    Ok(made)
}

/// Count one answer per certificate status it carries, from `source` (kept or signed).
fn count_answers(entries: &[(CertId, Status)], source: &str) {
    let metrics = crate::metrics::metrics();
    for (_, status) in entries {
        let status = match status {
            Status::Good => "good",
            Status::Revoked { .. } => "revoked",
            Status::Unknown => "unknown",
        };
        metrics.ocsp(status, source);
    }
}

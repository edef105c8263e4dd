//! The authority: ties profiles (`pki`), keys (`hsm`) and records (`store`) into issuance
//! that happens exactly once per request: validate, record the serial and TBS, sign in the
//! HSM, check the signature, commit certificate and audit entry together, then answer.
//! Renewal goes through the same path; revocation is one store transaction.

pub mod ceremony;
pub mod checkpoint;
pub mod crl;
pub mod evidence;
pub mod issuer;
pub mod keys;
pub mod ocsp;
mod readiness;
mod renew;
mod revoke;
pub mod tls;
pub mod tsa;

pub use readiness::KeyCheck;
pub use renew::RenewRequest;
pub use revoke::{ReleaseHoldRequest, RevokeRequest, Revoked};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use crate::audit::AuditEvent;
use crate::clock::{now_seconds, unix};
use crate::config::Config;
use crate::hsm::{Hsm, HsmError};
use crate::pki::cert::{self, IssuerRef, LeafRequest, Urls};
use crate::pki::{
    KeyType, PkiError, Profile, San, SignatureAlgorithm, SubjectSpec, csr, serial, verify,
};
use crate::store::{
    BeginOutcome, CertFilter, CertPage, CertStatus, CertificateRecord, IssuerRecord, Store,
    StoreError,
};

/// One problem with one field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The request field at fault, named as the proto names it (`subject[2].type`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Violation {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Violation {
        Violation {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The top-level field this one belongs to: `subject` for `subject[2].type`, `approval`
    /// for `approval.officer`.
    pub fn root(&self) -> &str {
        let end = self.field.find(['.', '[']).unwrap_or(self.field.len());
        &self.field[..end]
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

fn also_text(also: &[Violation]) -> String {
    also.iter().map(|v| format!("; {v}")).collect()
}

/// What an issuance (or ceremony) can fail with. The API layer maps these to gRPC codes in
/// one place; messages never carry HSM internals or secrets.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Bad input: names the field and the problem, and in `also` every other problem found
    /// in the same request (a request is checked whole before it is refused). Nothing was
    /// stored.
    #[error("{field}: {problem}{}", also_text(also))]
    Invalid {
        /// The request field at fault.
        field: String,
        /// What is wrong.
        problem: String,
        /// The request's other problems, in the order they were found.
        also: Vec<Violation>,
    },
    /// The request is well-formed but the CA's state forbids it now (stale agreement
    /// version, issuer not yet created, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The RA already used this request id for a different request.
    #[error(
        "request id {request_id:?} of {ra} was already used for a different request (certificate {serial})"
    )]
    AlreadyExists {
        /// The RA.
        ra: String,
        /// The reused id.
        request_id: String,
        /// The serial the first request produced.
        serial: String,
    },
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// The HSM or the store is down; the request can be retried with the same id.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// Something that should never happen (a signature that does not verify, a corrupt
    /// record). Logged in full; clients see a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CaError {
    /// The refusal of a request with these problems; `None` when there are none.
    pub fn from_violations(violations: Vec<Violation>) -> Option<CaError> {
        let mut all = violations.into_iter();
        let first = all.next()?;
        Some(CaError::Invalid {
            field: first.field,
            problem: first.problem,
            also: all.collect(),
        })
    }

    /// Every problem of an [`CaError::Invalid`], first one first; any other error back.
    pub fn into_violations(self) -> Result<Vec<Violation>, CaError> {
        match self {
            CaError::Invalid {
                field,
                problem,
                also,
            } => {
                let mut all = vec![Violation { field, problem }];
                all.extend(also);
                Ok(all)
            }
            other => Err(other),
        }
    }
}

impl From<PkiError> for CaError {
    fn from(e: PkiError) -> Self {
        match e {
            PkiError::Invalid { field, problem } => CaError::Invalid {
                field,
                problem,
                also: Vec::new(),
            },
            other => CaError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for CaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { .. } => CaError::Unavailable(e.to_string()),
            StoreError::NotFound(m) => CaError::NotFound(m),
            StoreError::InvalidPageToken(m) => invalid("page_token", m),
            other => CaError::Internal(other.to_string()),
        }
    }
}

impl From<HsmError> for CaError {
    fn from(e: HsmError) -> Self {
        if e.is_unavailable() {
            CaError::Unavailable(e.to_string())
        } else {
            CaError::Internal(format!("HSM: {e}"))
        }
    }
}

fn invalid(field: &str, problem: impl Into<String>) -> CaError {
    CaError::Invalid {
        field: field.to_owned(),
        problem: problem.into(),
        also: Vec::new(),
    }
}

/// Where a check's outcome goes while a whole request is being checked: its problems onto
/// `bad`, a state that forbids the request into `blocked` (reported only when no field is at
/// fault), and anything else (the store or the HSM failing) back to the caller.
fn sort_outcome<T>(
    outcome: Result<T, CaError>,
    bad: &mut Vec<Violation>,
    blocked: &mut Option<CaError>,
) -> Result<Option<T>, CaError> {
    match outcome {
        Ok(v) => Ok(Some(v)),
        Err(e @ CaError::FailedPrecondition(_)) => {
            blocked.get_or_insert(e);
            Ok(None)
        }
        Err(e) => {
            bad.extend(e.into_violations()?);
            Ok(None)
        }
    }
}

/// The problems of a renewal's own fields, found without the store: the request id, the
/// serial and the approval's texts.
pub fn renew_field_problems(req: &RenewRequest) -> Vec<Violation> {
    let mut bad = request_id_and_serial_problems(&req.request_id, &req.serial);
    bad.extend(approval_problems(&req.approval));
    bad
}

/// The problems of a request id and a serial, as every call on an existing certificate
/// checks them first.
pub fn request_id_and_serial_problems(request_id: &str, serial: &str) -> Vec<Violation> {
    let mut bad = Vec::new();
    for e in [
        check_text("request_id", request_id, MAX_REQUEST_ID).err(),
        normalize_serial(serial).err(),
    ]
    .into_iter()
    .flatten()
    {
        bad.extend(e.into_violations().unwrap_or_default());
    }
    bad
}

/// The approval's texts: each required, bounded and free of control characters.
fn approval_problems(approval: &Approval) -> Vec<Violation> {
    let mut bad = Vec::new();
    for (field, value) in [
        ("approval.officer", &approval.officer),
        ("approval.ra_reference", &approval.ra_reference),
        ("approval.agreement_version", &approval.agreement_version),
    ] {
        if let Err(e) = check_text(field, value, MAX_APPROVAL_FIELD) {
            bad.extend(e.into_violations().unwrap_or_default());
        }
    }
    bad
}

/// The RA officer's approval that accompanies every request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The RA officer who verified the applicant.
    pub officer: String,
    /// The RA's own reference for the application (case or ticket number).
    pub ra_reference: String,
    /// The subscriber-agreement version the applicant accepted.
    pub agreement_version: String,
}

/// An approved request for a subscriber certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRequest {
    /// Chosen by the RA; the same id always yields the same certificate.
    pub request_id: String,
    /// Profile name.
    pub profile: String,
    /// Issuer name; `None` takes the profile's default.
    pub issuer: Option<String>,
    /// PKCS#10 request, DER. Only its key is used; the subject comes from `subject`.
    #[serde(with = "hex_bytes")]
    pub csr: Vec<u8>,
    /// The subject as the RA verified it.
    pub subject: SubjectSpec,
    /// Subject alternative names as the RA verified them.
    pub sans: Vec<San>,
    /// Validity in years.
    pub validity_years: u32,
    /// The approval evidence.
    pub approval: Approval,
}

mod hex_opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| hex::decode(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// A certificate as handed back to the RA.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The stored record (status, times, request).
    pub record: CertificateRecord,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The issuing CA's certificate and those above it up to the root, DER.
    pub chain: Vec<Vec<u8>>,
}

/// A loaded issuing CA.
#[derive(Clone, Debug)]
pub struct Issuer {
    /// Configured name.
    pub name: String,
    /// Parent's name; `None` for the root.
    pub parent: Option<String>,
    /// CKA_LABEL of its key in the HSM.
    pub key_label: String,
    /// Algorithm its key signs with.
    pub signature: SignatureAlgorithm,
    /// Its certificate.
    pub cert: Certificate,
    /// Its certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its public key.
    pub spki: SubjectPublicKeyInfoOwned,
    /// The configured issuer it is a generation of (its own name for the first).
    pub family: String,
    /// 1 for the key the first ceremony made, one more for each `ceremony --rotate`.
    pub generation: u32,
}

impl Issuer {
    fn as_ref(&self) -> IssuerRef<'_> {
        IssuerRef {
            name: &self.name,
            cert: &self.cert,
            signature: self.signature,
        }
    }
}

/// An issuer generation the ceremony recorded, with its certificate's key checked against
/// the key in the HSM, so a misconfigured label can never sign under the wrong name.
async fn load_issuer(
    rec: &IssuerRecord,
    signature: SignatureAlgorithm,
    hsm: &Hsm,
) -> Result<Issuer, CaError> {
    let cert = Certificate::from_der(&rec.cert_der)
        .map_err(|e| CaError::Internal(format!("issuer {} certificate: {e}", rec.name)))?;
    let spki = cert.tbs_certificate().subject_public_key_info().clone();
    if hsm.public_key(&rec.key_label).await? != spki {
        return Err(CaError::FailedPrecondition(format!(
            "issuer {}: the key labelled {:?} in the HSM is not the key of its certificate",
            rec.name, rec.key_label
        )));
    }
    Ok(Issuer {
        name: rec.name.clone(),
        parent: rec.parent.clone(),
        key_label: rec.key_label.clone(),
        signature,
        cert,
        cert_der: rec.cert_der.clone(),
        spki,
        family: rec.family.clone(),
        generation: rec.generation,
    })
}

/// The component named in health reports while the clock reads earlier than an issuer's
/// notBefore.
pub const CLOCK_HEALTH_COMPONENT: &str = "clock";

/// Why `issuer` cannot sign at `now`, when the clock reads before its certificate's
/// notBefore.
fn clock_behind(issuer: &Issuer, now: std::time::SystemTime) -> Option<String> {
    let start = cert::issuer_not_before(&issuer.cert);
    (now < start).then(|| {
        format!(
            "the system clock reads {}, earlier than the notBefore {} of issuer {}'s certificate; refusing to issue until the clock is set right (a certificate may not start before its issuer)",
            rfc3339(unix(now)),
            rfc3339(unix(start)),
            issuer.name
        )
    })
}

/// Limits on request fields that are not X.509 values.
const MAX_REQUEST_ID: usize = 128;
const MAX_APPROVAL_FIELD: usize = 256;
const MAX_SANS: usize = 100;

/// The certificate authority.
pub struct Authority {
    hsm: Hsm,
    store: Arc<dyn Store>,
    issuers: HashMap<String, Issuer>,
    /// Each configured issuer's newest generation (family -> issuer name): the one that
    /// signs new certificates, while the older ones keep signing CRLs and OCSP answers for
    /// theirs.
    current: HashMap<String, String>,
    /// The profiles, replaced whole by a reload (see [`Authority::reload_profiles`]); each
    /// request works with the set it found when it started.
    profiles: std::sync::RwLock<Arc<BTreeMap<String, Profile>>>,
    urls: Urls,
    agreement_version: String,
    /// The RSA public exponents subscribers' keys may have (`[ca] rsa_exponent`).
    rsa_exponent: verify::RsaExponent,
    /// The certificate policy of signet's own certificates (OCSP responders).
    service_policy: const_oid::ObjectIdentifier,
    /// Woken by every revocation, so the CRL publisher can regenerate.
    revocations: Arc<tokio::sync::Notify>,
    /// Counts of frequent signatures, written to the audit log once per period.
    usage: Arc<crate::audit::UsageCounter>,
    /// Services that work but should not be trusted now (component -> why), for health.
    degraded: Arc<std::sync::RwLock<BTreeMap<String, String>>>,
    /// What the latest health probe found; healthy at first, since opening the authority
    /// has just found every issuer's key in the HSM and read the store.
    health: std::sync::RwLock<Health>,
    /// The issuer keys' latest test signatures (readiness).
    readiness: readiness::Readiness,
}

/// Whether the HSM holds the CA keys and the store answers, as last probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    /// The HSM is connected and finds the root's key.
    pub hsm: bool,
    /// The store answers a query.
    pub store: bool,
}

impl Health {
    /// Both parts are up.
    pub fn ok(self) -> bool {
        self.hsm && self.store
    }
}

impl Authority {
    /// Load the issuers the ceremony recorded and check each certificate's key against the
    /// key in the HSM, so a misconfigured label can never sign under the wrong name.
    pub async fn open(cfg: &Config, hsm: Hsm, store: Arc<dyn Store>) -> Result<Authority, CaError> {
        let specs = cfg
            .issuer_specs()
            .map_err(|e| CaError::FailedPrecondition(e.to_string()))?;
        let records = store.issuers().await?;
        let mut issuers = HashMap::new();
        let mut current = HashMap::new();
        for spec in specs {
            let mut family: Vec<&IssuerRecord> =
                records.iter().filter(|r| r.family == spec.name).collect();
            family.sort_by_key(|r| r.generation);
            let Some(first) = family.first() else {
                tracing::warn!(issuer = %spec.name, "issuer is configured but the ceremony has not created it");
                continue;
            };
            if first.key_label != spec.key_label {
                return Err(CaError::FailedPrecondition(format!(
                    "issuer {}: configured key_label {:?} differs from the recorded {:?}",
                    spec.name, spec.key_label, first.key_label
                )));
            }
            for rec in &family {
                // The first generation signs as configured; a rotated one as the
                // configuration said when the rotation made it.
                let signature = if rec.generation == 1 {
                    spec.signature
                } else {
                    rec.signature.parse().map_err(|e| {
                        CaError::Internal(format!("issuer {} signature: {e}", rec.name))
                    })?
                };
                let issuer = load_issuer(rec, signature, &hsm).await?;
                current.insert(spec.name.clone(), rec.name.clone());
                issuers.insert(rec.name.clone(), issuer);
            }
        }
        for stray in records.iter().filter(|r| !issuers.contains_key(&r.name)) {
            tracing::warn!(issuer = %stray.name, family = %stray.family, "issuer is recorded but not configured: it signs nothing, not even CRLs for its certificates");
        }
        let profiles = std::sync::RwLock::new(Arc::new(
            cfg.profiles()
                .map_err(|e| CaError::FailedPrecondition(e.to_string()))?,
        ));
        Ok(Authority {
            hsm,
            store,
            issuers,
            current,
            profiles,
            urls: Urls {
                base: cfg.public_base_url(),
            },
            agreement_version: cfg.ca.agreement_version.clone(),
            rsa_exponent: cfg
                .ca
                .rsa_exponent_rule()
                .map_err(|e| CaError::FailedPrecondition(e.to_string()))?,
            service_policy: cfg
                .ca
                .oids()
                .map_err(|e| CaError::FailedPrecondition(e.to_string()))?
                .service_policy(),
            revocations: Arc::new(tokio::sync::Notify::new()),
            usage: Arc::new(crate::audit::UsageCounter::new(crate::clock::unix_now())),
            degraded: Arc::default(),
            health: std::sync::RwLock::new(Health {
                hsm: true,
                store: true,
            }),
            readiness: readiness::Readiness::new(std::time::Duration::from_secs(
                cfg.api
                    .as_ref()
                    .map_or(60, |a| a.readiness_signature_seconds),
            )),
        })
    }

    /// The counter of frequent signatures (timestamps, OCSP responses): call
    /// `usage().record(action, object)` after each; the daemon writes the counts to the
    /// audit log every checkpoint interval and at shutdown.
    pub fn usage(&self) -> &Arc<crate::audit::UsageCounter> {
        &self.usage
    }

    /// End the usage period now: append one entry per counted (action, object). Counts
    /// that could not be written go back into the counter for the next period.
    pub async fn flush_usage(&self) -> Result<(), CaError> {
        let counts = self.usage.take(crate::clock::unix_now());
        for (i, ev) in counts.iter().enumerate() {
            if let Err(e) = self.store.append_audit(ev.clone()).await {
                self.usage.restore(&counts[i..]);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Mark `component` degraded (with why) or, with `None`, healthy again. Health checks
    /// (`/healthz`, gRPC health) report what is degraded.
    pub fn set_degraded(&self, component: &str, why: Option<String>) {
        let mut d = self
            .degraded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match why {
            Some(w) => {
                d.insert(component.to_owned(), w);
            }
            None => {
                d.remove(component);
            }
        }
    }

    /// What is degraded now: (component, why).
    pub fn degraded(&self) -> Vec<(String, String)> {
        self.degraded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Probe the HSM (a key lookup on the token, so a vanished device is noticed even with
    /// no signing going on; a failed probe starts its reconnection) and the store, each
    /// within `limit`, and keep the result for [`Authority::health`].
    pub async fn probe_health(&self, limit: std::time::Duration) -> Health {
        // The store must both read and write: a full disk fails every issuance while reads
        // still work.
        let store = matches!(
            tokio::time::timeout(limit, self.store.issuers()).await,
            Ok(Ok(_))
        ) && matches!(
            tokio::time::timeout(limit, self.store.probe_write()).await,
            Ok(Ok(()))
        );
        // Reachability: the root's key (every issuer key is test-signed by readiness).
        let probed = self
            .issuers
            .values()
            .find(|i| i.parent.is_none())
            .or_else(|| self.issuers.values().next());
        let hsm = self.hsm.is_available()
            && match probed {
                Some(i) => matches!(
                    tokio::time::timeout(limit, self.hsm.key_exists(&i.key_label)).await,
                    Ok(Ok(true))
                ),
                None => true,
            };
        // The clock against every issuer: none may sign while it reads before the issuer's
        // own notBefore.
        let now = now_seconds();
        let behind = self.issuers.values().find_map(|i| clock_behind(i, now));
        self.set_degraded(CLOCK_HEALTH_COMPONENT, behind);
        if hsm {
            self.check_keys().await;
        }
        let health = Health { hsm, store };
        *self
            .health
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = health;
        health
    }

    /// What the latest [`Authority::probe_health`] found (no I/O).
    pub fn health(&self) -> Health {
        *self
            .health
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The HSM this authority signs with.
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    /// The store this authority records into.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Notified after each revocation (a permit is kept while nobody waits).
    pub fn revocations(&self) -> Arc<tokio::sync::Notify> {
        self.revocations.clone()
    }

    /// The loaded issuer with this name.
    pub fn issuer(&self, name: &str) -> Option<&Issuer> {
        self.issuers.get(name)
    }

    /// The loaded issuers, every generation of each.
    pub fn issuers(&self) -> impl Iterator<Item = &Issuer> {
        self.issuers.values()
    }

    /// The generation that signs new certificates for the configured issuer `name`, or for
    /// the family of the issuer generation `name`.
    pub fn current_issuer(&self, name: &str) -> Option<&Issuer> {
        let family = self.issuers.get(name).map_or(name, |i| i.family.as_str());
        self.current.get(family).and_then(|n| self.issuers.get(n))
    }

    /// Every generation of the configured issuer `family`, oldest first.
    pub fn generations(&self, family: &str) -> Vec<&Issuer> {
        let mut all: Vec<&Issuer> = self
            .issuers
            .values()
            .filter(|i| i.family == family)
            .collect();
        all.sort_by_key(|i| i.generation);
        all
    }

    /// The issuing CA's certificate and its parents up to the root, DER.
    pub fn chain(&self, issuer: &str) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cur = self.issuers.get(issuer);
        while let Some(i) = cur {
            out.push(i.cert_der.clone());
            cur = i.parent.as_ref().and_then(|p| self.issuers.get(p));
            if out.len() > self.issuers.len() {
                break;
            }
        }
        out
    }

    /// The profiles in force now.
    pub fn profiles(&self) -> Arc<BTreeMap<String, Profile>> {
        self.profiles
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The profile with this name, as in force now.
    pub fn profile(&self, name: &str) -> Option<Profile> {
        self.profiles().get(name).cloned()
    }

    /// Put the profiles of `cfg` in force, if they differ from the current ones only in what
    /// a profile allows (validity, renewal window, key types, wildcards, policy, liability,
    /// e-mail protection, organisation identifier form, CA/B rules, private EKU): a profile
    /// added or removed, or one whose kind or issuers changed, refuses the whole reload and
    /// nothing changes (those need a restart, as the RA permissions and issuers depend on
    /// them). Returns, per changed profile, the names of the fields that changed.
    pub fn reload_profiles(
        &self,
        cfg: &Config,
    ) -> Result<BTreeMap<String, Vec<&'static str>>, CaError> {
        let fresh = cfg
            .profiles()
            .map_err(|e| CaError::FailedPrecondition(e.to_string()))?;
        let current = self.profiles();
        let old: Vec<&String> = current.keys().collect();
        let new: Vec<&String> = fresh.keys().collect();
        if old != new {
            return Err(CaError::FailedPrecondition(format!(
                "profiles {old:?} would become {new:?}: adding or removing a profile needs a restart"
            )));
        }
        let mut changed = BTreeMap::new();
        for (name, was) in current.iter() {
            let Some(now) = fresh.get(name) else { continue };
            if was.kind != now.kind || was.issuers != now.issuers {
                return Err(CaError::FailedPrecondition(format!(
                    "profile {name}: its kind or issuers changed, which needs a restart"
                )));
            }
            let fields = profile_changes(was, now);
            if !fields.is_empty() {
                changed.insert(name.clone(), fields);
            }
        }
        *self
            .profiles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
        Ok(changed)
    }

    /// Issue a certificate for `ra`, exactly once per `(ra, request_id)`.
    pub async fn issue(&self, ra: &str, req: IssueRequest) -> Result<Issued, CaError> {
        self.issue_or_preview(ra, req, false).await
    }

    /// What [`Authority::issue`] would issue for `req`, every check run, nothing recorded or
    /// signed: the answer has no certificate and no serial. A request id already used is
    /// answered as `issue` would (its certificate, or AlreadyExists for another request).
    pub async fn preview_issue(&self, ra: &str, req: IssueRequest) -> Result<Issued, CaError> {
        self.issue_or_preview(ra, req, true).await
    }

    async fn issue_or_preview(
        &self,
        ra: &str,
        req: IssueRequest,
        preview: bool,
    ) -> Result<Issued, CaError> {
        // Step 3: validate everything before touching the store, against the profiles in
        // force as the request arrives.
        let profiles = self.profiles();
        let checked = self.validate(&profiles, &req)?;
        let digest = request_digest(&req)?;
        if preview {
            if let Some(done) = self.already_requested(ra, &req.request_id, &digest).await? {
                return Ok(done);
            }
        }
        let prepared = Prepared {
            ra,
            request_id: &req.request_id,
            request_digest: digest,
            preview,
            shape: Shape::Leaf {
                profile: checked.profile,
                key_type: checked.csr.key_type,
                validity_years: req.validity_years,
            },
            issuer: checked.issuer,
            subject: &req.subject,
            sans: &req.sans,
            spki: &checked.csr.spki,
            csr_der: &req.csr,
            request_json: request_json(&req)?,
            renewed_from: None,
        };
        self.record_sign_commit(prepared).await
    }

    /// The certificate with this serial (valid or revoked; pending records are not shown).
    pub async fn certificate(&self, serial: &str) -> Result<CertificateRecord, CaError> {
        let serial = normalize_serial(serial)?;
        match self.store.certificate(&serial).await? {
            Some(r) if r.status != CertStatus::Pending => Ok(r),
            _ => Err(CaError::NotFound(format!(
                "no certificate with serial {serial}"
            ))),
        }
    }

    /// The certificate `ra` asked for with `request_id`, pending ones included (a retry of
    /// the request with the same id finishes those).
    pub async fn certificate_by_request(
        &self,
        ra: &str,
        request_id: &str,
    ) -> Result<CertificateRecord, CaError> {
        check_text("request_id", request_id, MAX_REQUEST_ID)?;
        self.store
            .certificate_by_request(ra, request_id)
            .await?
            .ok_or_else(|| {
                CaError::NotFound(format!(
                    "no request {:?} from this RA office",
                    crate::escape::Escaped(request_id)
                ))
            })
    }

    /// One page of certificates matching `filter` (see [`Store::list_certificates`]).
    pub async fn list(
        &self,
        filter: CertFilter,
        page_token: Option<String>,
        page_size: usize,
    ) -> Result<CertPage, CaError> {
        if let Some(text) = &filter.subject_contains
            && text.chars().count() > MAX_APPROVAL_FIELD
        {
            return Err(invalid(
                "subject_contains",
                format!("at most {MAX_APPROVAL_FIELD} characters"),
            ));
        }
        Ok(self
            .store
            .list_certificates(filter, page_token, page_size)
            .await?)
    }

    /// Steps 4-7 for a validated request (an issuance or a renewal): look the request up; if
    /// new, record serial and TBS before signing; then sign, check, commit and answer.
    /// Certify a key signet made for its own infrastructure (the daemon's TLS key, RA
    /// client keys) with a profile of signet's own, through the same record-sign-commit
    /// path as subscriber certificates. `actor` is recorded as the RA.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue_infrastructure(
        &self,
        actor: &str,
        request_id: &str,
        profile: &Profile,
        issuer: &str,
        subject: &SubjectSpec,
        sans: &[San],
        spki: &SubjectPublicKeyInfoOwned,
        validity_years: u32,
    ) -> Result<Issued, CaError> {
        let shape = Shape::Leaf {
            profile,
            key_type: verify::key_type_of(spki, "public key")?,
            validity_years,
        };
        // A configured issuer: its current generation signs.
        let issuer = self
            .current_issuer(issuer)
            .map_or(issuer, |i| i.name.as_str());
        self.certify_own(actor, request_id, shape, issuer, subject, sans, spki)
            .await
    }

    /// Certify a delegated OCSP responder key of `issuer` (a key in the HSM) for `lifetime`,
    /// through the same record-sign-commit path, exactly once per `request_id`.
    pub async fn issue_ocsp_responder(
        &self,
        actor: &str,
        request_id: &str,
        issuer: &str,
        subject: &SubjectSpec,
        spki: &SubjectPublicKeyInfoOwned,
        lifetime: std::time::Duration,
    ) -> Result<Issued, CaError> {
        let shape = Shape::OcspResponder { lifetime };
        self.certify_own(actor, request_id, shape, issuer, subject, &[], spki)
            .await
    }

    /// Record, sign and commit a certificate for one of signet's own keys.
    #[allow(clippy::too_many_arguments)]
    async fn certify_own(
        &self,
        actor: &str,
        request_id: &str,
        shape: Shape<'_>,
        issuer: &str,
        subject: &SubjectSpec,
        sans: &[San],
        spki: &SubjectPublicKeyInfoOwned,
    ) -> Result<Issued, CaError> {
        let issuer = self.issuers.get(issuer).ok_or_else(|| {
            CaError::FailedPrecondition(format!("issuer {issuer:?} has not been created"))
        })?;
        let spki_der = spki
            .to_der()
            .map_err(|e| CaError::Internal(format!("encoding public key: {e}")))?;
        let request_json = serde_json::json!({
            "purpose": request_id,
            "profile": shape.profile_name(),
            "subject": subject.to_string(),
            "sans": sans.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "spki": hex::encode(&spki_der),
        })
        .to_string();
        self.record_sign_commit(Prepared {
            ra: actor,
            request_id,
            request_digest: hex::encode(Sha256::digest(request_json.as_bytes())),
            preview: false,
            shape,
            issuer,
            subject,
            sans,
            spki,
            csr_der: &spki_der,
            request_json,
            renewed_from: None,
        })
        .await
    }

    /// Refuse (and report the clock degraded) when `now` is earlier than the notBefore of
    /// `issuer`'s certificate: a certificate starting before its issuer was valid is one
    /// relying parties refuse, and it says the clock is wrong.
    fn check_clock_against(
        &self,
        issuer: &Issuer,
        now: std::time::SystemTime,
    ) -> Result<(), CaError> {
        match clock_behind(issuer, now) {
            Some(why) => {
                tracing::error!("{why}");
                self.set_degraded(CLOCK_HEALTH_COMPONENT, Some(why.clone()));
                Err(CaError::FailedPrecondition(why))
            }
            None => Ok(()),
        }
    }

    async fn record_sign_commit(&self, p: Prepared<'_>) -> Result<Issued, CaError> {
        let mut attempts = 0;
        let record = loop {
            attempts += 1;
            let serial = serial::random_serial();
            let not_before = now_seconds();
            self.check_clock_against(p.issuer, not_before)?;
            let tbs = match p.shape {
                Shape::Leaf {
                    profile,
                    key_type,
                    validity_years,
                } => {
                    let leaf = LeafRequest {
                        profile,
                        subject: p.subject,
                        sans: p.sans,
                        spki: p.spki,
                        key_type,
                        validity_years,
                    };
                    cert::build_leaf_tbs(
                        &p.issuer.as_ref(),
                        &self.urls,
                        &leaf,
                        serial.clone(),
                        not_before,
                    )?
                }
                Shape::OcspResponder { lifetime } => cert::build_ocsp_responder_tbs(
                    &p.issuer.as_ref(),
                    &cert::ResponderRequest {
                        subject: p.subject,
                        spki: p.spki,
                        lifetime,
                        policy: self.service_policy,
                    },
                    serial.clone(),
                    not_before,
                )?,
            };
            let tbs_der = tbs
                .to_der()
                .map_err(|e| CaError::Internal(format!("encoding TBS: {e}")))?;
            let not_after = unix(tbs.validity().not_after.to_system_time());
            let pending = CertificateRecord {
                serial: serial::serial_hex(&serial),
                issuer: p.issuer.name.clone(),
                ra: p.ra.to_owned(),
                request_id: p.request_id.to_owned(),
                request_digest: p.request_digest.clone(),
                profile: p.shape.profile_name().to_owned(),
                // The subject as the certificate carries it (the credit code in the
                // profile's form), so listings find what relying parties see.
                subject: match p.shape {
                    Shape::Leaf { profile, .. } => {
                        profile.certificate_subject(p.subject)?.to_string()
                    }
                    Shape::OcspResponder { .. } => p.subject.to_string(),
                },
                request_json: p.request_json.clone(),
                csr_der: p.csr_der.to_vec(),
                tbs_der,
                cert_der: None,
                status: CertStatus::Pending,
                not_before: unix(not_before),
                not_after,
                created_at: crate::clock::unix_now(),
                issued_at: None,
                renewed_from: p.renewed_from.clone(),
                revocation: None,
                updated_at: 0,
            };
            if p.preview {
                let chain = self.chain(&pending.issuer);
                return Ok(Issued {
                    record: CertificateRecord {
                        serial: String::new(),
                        ..pending
                    },
                    cert_der: Vec::new(),
                    chain,
                });
            }
            match self.store.begin_issuance(pending).await? {
                BeginOutcome::Started(r) | BeginOutcome::Resume(r) => break r,
                BeginOutcome::Done(r) => return self.answer(r),
                BeginOutcome::Conflict(r) => {
                    return Err(CaError::AlreadyExists {
                        ra: p.ra.to_owned(),
                        request_id: p.request_id.to_owned(),
                        serial: r.serial,
                    });
                }
                BeginOutcome::SerialTaken if attempts < 5 => continue,
                BeginOutcome::SerialTaken => {
                    return Err(CaError::Internal(
                        "five serial collisions in a row: RNG failure".into(),
                    ));
                }
            }
        };
        self.sign_and_commit(record, p.ra).await
    }

    /// Steps 6-7 for a pending record: sign its stored TBS, check, commit, answer.
    async fn sign_and_commit(
        &self,
        record: CertificateRecord,
        actor: &str,
    ) -> Result<Issued, CaError> {
        let issuer = self.issuers.get(&record.issuer).ok_or_else(|| {
            CaError::FailedPrecondition(format!(
                "issuer {:?} of pending certificate {} is not loaded",
                record.issuer, record.serial
            ))
        })?;
        let signature = self
            .hsm
            .sign(&issuer.key_label, issuer.signature, &record.tbs_der)
            .await?;
        let cert_der =
            cert::assemble_checked(&record.tbs_der, &signature, &issuer.spki).map_err(|e| {
                tracing::error!(serial = %record.serial, issuer = %issuer.name, "HSM signature does not verify: {e}");
                CaError::Internal(format!("signature of {} does not verify", record.serial))
            })?;
        let mut detail = serde_json::json!({
            "issuer": record.issuer,
            "profile": record.profile,
            "request_id": record.request_id,
            "subject": record.subject,
            "not_after": record.not_after,
        });
        let action = match (&record.renewed_from, detail.as_object_mut()) {
            (Some(old), Some(o)) => {
                o.insert("renewed_from".into(), old.clone().into());
                "certificate.renewed"
            }
            _ if record.profile == OCSP_RESPONDER_PROFILE => "ocsp.responder_certified",
            _ => "certificate.issued",
        };
        let audit = AuditEvent {
            actor: actor.to_owned(),
            action: action.into(),
            object: record.serial.clone(),
            request_digest: Some(record.request_digest.clone()),
            detail: detail.to_string(),
        };
        let done = match self
            .store
            .complete_issuance(&record.serial, &cert_der, crate::clock::unix_now(), audit)
            .await
        {
            Ok(done) => done,
            // Two retries of one request resumed the same pending row at once and both
            // signed its TBS; the other committed first. Its certificate is the answer:
            // ours, signed over the same TBS, never leaves this process.
            Err(StoreError::NotFound(_)) => match self.store.certificate(&record.serial).await? {
                Some(r) if r.status != crate::store::CertStatus::Pending => return self.answer(r),
                _ => {
                    return Err(CaError::Internal(format!(
                        "certificate {} could not be committed",
                        record.serial
                    )));
                }
            },
            Err(e) => return Err(e.into()),
        };
        tracing::info!(serial = %done.serial, ra = %done.ra, profile = %done.profile, issuer = %done.issuer, renewed_from = ?done.renewed_from, "certificate issued");
        crate::metrics::metrics().issued(&done.issuer, &done.profile);
        self.answer(done)
    }

    /// For a preview: what an earlier request with this id became (as issuing it again
    /// would answer), AlreadyExists if it was another request, `None` if the id is unused.
    async fn already_requested(
        &self,
        ra: &str,
        request_id: &str,
        digest: &str,
    ) -> Result<Option<Issued>, CaError> {
        let Some(existing) = self.store.certificate_by_request(ra, request_id).await? else {
            return Ok(None);
        };
        if existing.request_digest != digest {
            return Err(CaError::AlreadyExists {
                ra: ra.to_owned(),
                request_id: request_id.to_owned(),
                serial: existing.serial,
            });
        }
        if existing.status == CertStatus::Pending {
            // Recorded, not signed: its retry would finish it under this serial.
            let chain = self.chain(&existing.issuer);
            return Ok(Some(Issued {
                record: existing,
                cert_der: Vec::new(),
                chain,
            }));
        }
        self.answer(existing).map(Some)
    }

    fn answer(&self, record: CertificateRecord) -> Result<Issued, CaError> {
        let cert_der = record.cert_der.clone().ok_or_else(|| {
            CaError::Internal(format!("certificate {} has no DER", record.serial))
        })?;
        let chain = self.chain(&record.issuer);
        Ok(Issued {
            record,
            cert_der,
            chain,
        })
    }

    /// Check an issue request whole, without the store: every field at fault is named (the
    /// CSR's own checks stop at its first problem). A state that forbids the request (the
    /// agreement version, an issuer not yet created) is reported only when no field is at
    /// fault.
    pub fn validate_issue(&self, req: &IssueRequest) -> Result<(), CaError> {
        self.validate(&self.profiles(), req).map(|_| ())
    }

    fn validate<'a>(
        &'a self,
        profiles: &'a BTreeMap<String, Profile>,
        req: &IssueRequest,
    ) -> Result<Checked<'a>, CaError> {
        let mut bad = Vec::new();
        let mut blocked = None;
        sort_outcome(
            check_text("request_id", &req.request_id, MAX_REQUEST_ID),
            &mut bad,
            &mut blocked,
        )?;
        let profile = profiles.get(&req.profile);
        if profile.is_none() {
            let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
            bad.push(Violation::new(
                "profile",
                format!(
                    "unknown profile {:?} (known: {})",
                    req.profile,
                    known.join(", ")
                ),
            ));
        }
        let issuer = match profile {
            Some(p) => sort_outcome(
                self.issuer_for(p, req.issuer.as_deref()),
                &mut bad,
                &mut blocked,
            )?,
            None => None,
        };
        bad.extend(approval_problems(&req.approval));
        sort_outcome(self.check_agreement(&req.approval), &mut bad, &mut blocked)?;
        if req.sans.len() > MAX_SANS {
            bad.push(Violation::new(
                "sans",
                format!("{} SANs; at most {MAX_SANS}", req.sans.len()),
            ));
        } else {
            for (i, s) in req.sans.iter().enumerate() {
                sort_outcome(
                    s.clone()
                        .checked(&format!("sans[{i}]"))
                        .map_err(CaError::from),
                    &mut bad,
                    &mut blocked,
                )?;
            }
        }
        let csr = sort_outcome(
            csr::check_csr(&req.csr)
                .and_then(|c| {
                    verify::check_rsa_exponent(&c.spki, self.rsa_exponent, "csr")?;
                    Ok(c)
                })
                .map_err(CaError::from),
            &mut bad,
            &mut blocked,
        )?;
        if let Some(p) = profile {
            for e in p.request_problems(
                &req.subject,
                &req.sans,
                req.validity_years,
                csr.as_ref().map(|c| c.key_type),
            ) {
                bad.extend(CaError::from(e).into_violations()?);
            }
        }
        if let Some(e) = CaError::from_violations(bad) {
            return Err(e);
        }
        if let Some(e) = blocked {
            return Err(e);
        }
        match (profile, issuer, csr) {
            (Some(profile), Some(issuer), Some(csr)) => Ok(Checked {
                profile,
                issuer,
                csr,
            }),
            _ => Err(CaError::Internal(
                "a request passed validation without a profile, issuer or CSR".into(),
            )),
        }
    }

    /// The issuer that signs `profile`: the one the request names, if the profile allows it,
    /// or the profile's default.
    fn issuer_for<'a>(
        &'a self,
        profile: &Profile,
        requested: Option<&str>,
    ) -> Result<&'a Issuer, CaError> {
        // A generation's name stands for its family: the current generation signs.
        let requested = requested.map(|i| self.issuers.get(i).map_or(i, |g| g.family.as_str()));
        let issuer_name = match requested {
            Some(i) if profile.issuers.iter().any(|p| p == i) => i,
            Some(i) => {
                return Err(invalid(
                    "issuer",
                    format!(
                        "{i:?} may not sign profile {} (allowed: {})",
                        profile.name,
                        profile.issuers.join(", ")
                    ),
                ));
            }
            None => profile.issuers.first().map(String::as_str).ok_or_else(|| {
                CaError::FailedPrecondition(format!("profile {} has no issuer", profile.name))
            })?,
        };
        self.current_issuer(issuer_name).ok_or_else(|| {
            CaError::FailedPrecondition(format!(
                "issuer {issuer_name:?} has not been created yet; run `signet ceremony`"
            ))
        })
    }

    /// The approval evidence every request carries: present, bounded, and naming the current
    /// subscriber agreement.
    fn check_approval(&self, approval: &Approval) -> Result<(), CaError> {
        if let Some(e) = CaError::from_violations(approval_problems(approval)) {
            return Err(e);
        }
        self.check_agreement(approval)
    }

    /// The agreement version the applicant accepted is the current one (checked once the
    /// version's text itself is fine).
    fn check_agreement(&self, approval: &Approval) -> Result<(), CaError> {
        if check_text(
            "approval.agreement_version",
            &approval.agreement_version,
            MAX_APPROVAL_FIELD,
        )
        .is_ok()
            && approval.agreement_version != self.agreement_version
        {
            return Err(CaError::FailedPrecondition(format!(
                "approval.agreement_version: the applicant accepted agreement version {:?}, but the current version is {:?}; the applicant must accept the current agreement",
                approval.agreement_version, self.agreement_version
            )));
        }
        Ok(())
    }
}

/// Everything needed to record and sign one subscriber certificate, whichever request
/// (issuance or renewal) led to it.
struct Prepared<'a> {
    ra: &'a str,
    request_id: &'a str,
    request_digest: String,
    /// Only say what would be issued: build the TBS, record and sign nothing.
    preview: bool,
    shape: Shape<'a>,
    issuer: &'a Issuer,
    subject: &'a SubjectSpec,
    sans: &'a [San],
    spki: &'a SubjectPublicKeyInfoOwned,
    csr_der: &'a [u8],
    request_json: String,
    renewed_from: Option<String>,
}

/// What kind of certificate a prepared request becomes.
enum Shape<'a> {
    /// A subscriber or infrastructure leaf under a profile.
    Leaf {
        profile: &'a Profile,
        key_type: KeyType,
        validity_years: u32,
    },
    /// A delegated OCSP responder's certificate (see [`cert::build_ocsp_responder_tbs`]).
    OcspResponder { lifetime: std::time::Duration },
}

/// The profile name recorded for delegated OCSP responder certificates.
pub const OCSP_RESPONDER_PROFILE: &str = "ocsp_responder";

impl Shape<'_> {
    fn profile_name(&self) -> &str {
        match self {
            Shape::Leaf { profile, .. } => &profile.name,
            Shape::OcspResponder { .. } => OCSP_RESPONDER_PROFILE,
        }
    }
}

/// A request that passed validation, with what validation resolved.
struct Checked<'a> {
    profile: &'a Profile,
    issuer: &'a Issuer,
    csr: csr::CheckedCsr,
}

fn check_text(field: &str, v: &str, max: usize) -> Result<(), CaError> {
    if v.trim().is_empty() {
        return Err(invalid(field, "is required"));
    }
    if v.chars().count() > max {
        return Err(invalid(
            field,
            format!(
                "is {} characters long; at most {max} allowed",
                v.chars().count()
            ),
        ));
    }
    // Request ids and approval fields end up in logs, the audit log and evidence bundles,
    // where an invisible or bidirectional character would make them read as something else.
    crate::pki::text::check_chars(v).map_err(|m| invalid(field, m))
}

/// SHA-256 over the canonical JSON of the request (everything but the id): a retry with the
/// same id must carry the same digest.
/// SHA-256 (hex) over `tag` and the JSON of `body`.
/// The names of the operator's choices that differ between two versions of a profile.
fn profile_changes(was: &Profile, now: &Profile) -> Vec<&'static str> {
    let pairs = [
        (was.validity_years != now.validity_years, "validity_years"),
        (
            was.renewal_window_days != now.renewal_window_days,
            "renewal_window_days",
        ),
        (was.policy_oid != now.policy_oid, "policy_oid"),
        (was.liability != now.liability, "liability"),
        (was.key_types != now.key_types, "key_types"),
        (
            was.allow_wildcards != now.allow_wildcards,
            "allow_wildcards",
        ),
        (
            was.email_protection != now.email_protection,
            "email_protection",
        ),
        (was.org_id_form != now.org_id_form, "org_id_form"),
        (was.cabf != now.cabf, "cabf"),
        (was.private_eku != now.private_eku, "private_eku"),
    ];
    let mut fields: Vec<&'static str> = pairs
        .iter()
        .filter(|(differs, _)| *differs)
        .map(|(_, name)| *name)
        .collect();
    if fields.is_empty() && was != now {
        fields.push("other");
    }
    fields
}

fn tagged_digest(tag: &[u8], body: &impl serde::Serialize) -> Result<String, CaError> {
    let json = serde_json::to_vec(body).map_err(|e| CaError::Internal(e.to_string()))?;
    let mut h = Sha256::new();
    h.update(tag);
    h.update(json);
    Ok(hex::encode(h.finalize()))
}

fn request_digest(req: &IssueRequest) -> Result<String, CaError> {
    let mut body = req.clone();
    body.request_id.clear();
    let json = serde_json::to_vec(&body).map_err(|e| CaError::Internal(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(json)))
}

/// The request as kept beside the certificate (the CSR is kept separately).
fn request_json(req: &IssueRequest) -> Result<String, CaError> {
    let mut v = serde_json::to_value(req).map_err(|e| CaError::Internal(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("csr");
    }
    Ok(v.to_string())
}

/// A serial as clients write it (upper or lower case, with or without colons, with or without
/// the sign octet OpenSSL leaves out) in the stored form: lower-case hex of the DER INTEGER's
/// content octets.
pub fn normalize_serial(serial: &str) -> Result<String, CaError> {
    let mut hex: String = serial
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.is_empty() || hex.len() > 42 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "serial",
            "must be the certificate serial number in hex (at most 20 octets)",
        ));
    }
    if hex.len() % 2 == 1 {
        hex.insert(0, '0');
    }
    // Drop redundant leading zero octets, keeping one where the next octet has its high bit
    // set (DER's minimal positive encoding).
    while hex.len() > 2 && hex.starts_with("00") && hex.as_bytes()[2] < b'8' {
        hex.drain(..2);
    }
    if hex.as_bytes()[0] >= b'8' {
        hex.insert_str(0, "00");
    }
    Ok(hex)
}

/// A Unix time as an RFC 3339 UTC timestamp; the date alone is its first 10 characters.
pub fn rfc3339(t: i64) -> String {
    u64::try_from(t)
        .ok()
        .and_then(|s| der::DateTime::from_unix_duration(std::time::Duration::from_secs(s)).ok())
        .map(|d| d.to_string())
        .unwrap_or_else(|| format!("@{t}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised_to_der_content_hex() {
        assert_eq!(normalize_serial("7F:01").ok(), Some("7f01".into()));
        assert_eq!(normalize_serial("8001").ok(), Some("008001".into()));
        assert_eq!(normalize_serial("008001").ok(), Some("008001".into()));
        assert_eq!(normalize_serial("00007f").ok(), Some("7f".into()));
        assert_eq!(normalize_serial("abc").ok(), Some("0abc".into()));
        assert!(normalize_serial("").is_err());
        assert!(normalize_serial("xyz").is_err());
        assert!(normalize_serial(&"1".repeat(50)).is_err());
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000), "2027-01-15T08:00:00Z");
    }
}

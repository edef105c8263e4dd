//! What issuance writes to the store, made without an HSM for `signet bench --mode store` and
//! `--prefill`: pending records and certificates the size and shape of real ones (a real TBS
//! built by signet's own certificate builder under a configured profile, then a fresh random
//! serial and host name patched in per certificate), the RA's request as kept beside it, and
//! the audit entries issuance and revocation append.
//!
//! The signature of each certificate is a placeholder of the issuer's signature length: the
//! store never checks signatures, and signing a million certificates in software would
//! measure the signing, not the store.

use std::time::SystemTime;

use der::{Decode, Encode};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::serial_number::SerialNumber;

use signet::audit::AuditEvent;
use signet::config::Config;
use signet::pki::cert::{self, CaRequest, IssuerRef, LeafRequest, Urls};
use signet::pki::{KeyType, Profile, ProfileKind, RevocationReason, San, SignatureAlgorithm};
use signet::pki::{SubjectSpec, csr};
use signet::store::{
    CaKeyRecord, CertStatus, CertificateRecord, IssuerRecord, RevokeRecord, SqliteStore, Store,
};

use super::raw::p256_csrs;

/// The name of the issuer the benchmark makes (a software P-256 CA) in a database that has
/// no issuer of the name asked for.
pub(crate) const BENCH_ISSUER: &str = "bench-ca";

/// The RA recorded as asking for every benchmark certificate.
pub(crate) const BENCH_RA: &str = "bench";

/// Ten digits in the template's host name, replaced by each certificate's number.
const NAME_MARK: &[u8] = b"zq0000000000";

/// Makes the records of one run.
pub(crate) struct Workload {
    issuer: String,
    profile: String,
    tbs: Template,
    cert: Template,
    not_before: i64,
    not_after: i64,
    csrs: Vec<Vec<u8>>,
    run: String,
    agreement: String,
}

/// A DER template and where in it the serial and the host name's digits sit.
struct Template {
    der: Vec<u8>,
    serial_at: usize,
    digits_at: Vec<usize>,
}

impl Template {
    /// Find the marks in `der`: the serial exactly once, the host name at least once.
    fn new(what: &str, der: Vec<u8>, serial: &[u8; 16]) -> Result<Template, String> {
        let serials = find_all(&der, serial);
        let names = find_all(&der, NAME_MARK);
        match (serials.as_slice(), names.is_empty()) {
            ([at], false) => Ok(Template {
                serial_at: *at,
                digits_at: names.into_iter().map(|n| n + 2).collect(),
                der,
            }),
            _ => Err(format!("the template {what} does not carry its marks")),
        }
    }

    /// A copy with this serial and these ten digits in the host name.
    fn patch(&self, serial: &[u8; 16], digits: &[u8]) -> Vec<u8> {
        let mut out = self.der.clone();
        out[self.serial_at..self.serial_at + 16].copy_from_slice(serial);
        for &at in &self.digits_at {
            out[at..at + digits.len()].copy_from_slice(digits);
        }
        out
    }
}

/// One certificate's writes: the pending record, the signed certificate and the audit
/// event that commits it.
pub(crate) struct Issuance {
    pub(crate) pending: CertificateRecord,
    pub(crate) cert_der: Vec<u8>,
    pub(crate) audit: AuditEvent,
}

impl Workload {
    /// A workload for `issuer_name` in `store`: the configured issuer of that name if the
    /// store has it, else the benchmark's own software CA (made and recorded if missing).
    pub(crate) async fn new(
        cfg: &Config,
        store: &SqliteStore,
        issuer_name: &str,
        profile_name: &str,
        run: String,
    ) -> Result<Workload, String> {
        let (issuer, alg, sig_len) = issuer_for(cfg, store, issuer_name).await?;
        let issuer_cert = Certificate::from_der(&issuer.cert_der)
            .map_err(|e| format!("issuer {}'s certificate: {e}", issuer.name))?;
        let profile = match cfg
            .profiles()
            .map_err(|e| e.to_string())?
            .remove(profile_name)
        {
            Some(p) => p,
            None => Profile::with_defaults(
                profile_name,
                ProfileKind::Server,
                cfg.ca.oids().map_err(|e| e.to_string())?.profile_policy(1),
                vec![issuer.name.clone()],
            ),
        };
        let csrs = p256_csrs(64)?;
        let checked = csr::check_csr(&csrs[0]).map_err(|e| e.to_string())?;
        let host = format!(
            "{}.bench.example.cn",
            std::str::from_utf8(NAME_MARK).map_err(|e| e.to_string())?
        );
        let subject = SubjectSpec::parse(&format!("CN={host}")).map_err(|e| e.to_string())?;
        let sans = vec![San::Dns(host)];
        let serial_mark = random_serial_bytes()?;
        let serial = SerialNumber::new(&serial_mark).map_err(|e| e.to_string())?;
        let leaf = LeafRequest {
            profile: &profile,
            subject: &subject,
            sans: &sans,
            spki: &checked.spki,
            key_type: KeyType::P256,
            validity_years: 1,
        };
        let urls = Urls {
            base: cfg.public_base_url(),
        };
        let issuer_ref = IssuerRef {
            name: &issuer.name,
            cert: &issuer_cert,
            signature: alg,
        };
        let tbs = cert::build_leaf_tbs(&issuer_ref, &urls, &leaf, serial, SystemTime::now())
            .map_err(|e| format!("building the template certificate: {e}"))?;
        let not_before = unix(tbs.validity().not_before.to_system_time());
        let not_after = unix(tbs.validity().not_after.to_system_time());
        let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
        let cert_der = cert::assemble(tbs, &vec![0x5a; sig_len])
            .and_then(|c| {
                c.to_der()
                    .map_err(|e| signet::pki::PkiError::invalid("certificate", e.to_string()))
            })
            .map_err(|e| format!("assembling the template certificate: {e}"))?;
        Ok(Workload {
            issuer: issuer.name,
            profile: profile.name.clone(),
            tbs: Template::new("TBS", tbs_der, &serial_mark)?,
            cert: Template::new("certificate", cert_der, &serial_mark)?,
            not_before,
            not_after,
            csrs,
            run,
            agreement: cfg.ca.agreement_version.clone(),
        })
    }

    /// The issuer the records name.
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The writes of certificate number `n` of this run: a fresh random serial, its own
    /// host name, request id and digest.
    pub(crate) fn issuance(&self, n: u64) -> Result<Issuance, String> {
        let serial = random_serial_bytes()?;
        let digits = format!("{:010}", n % 10_000_000_000);
        let host = format!("zq{digits}.bench.example.cn");
        let request_id = format!("bench-{}-{n}", self.run);
        let request_json = serde_json::json!({
            "profile": self.profile,
            "issuer": self.issuer,
            "subject": [{"type": "CN", "value": host}],
            "sans": [{"dns": host}],
            "validity_years": 1,
            "approval": {
                "officer": "王芳",
                "ra_reference": format!("RA-BENCH-{n:010}"),
                "agreement_version": self.agreement,
            },
        })
        .to_string();
        let request_digest = hex::encode(Sha256::digest(request_json.as_bytes()));
        let serial_hex = hex::encode(serial);
        let subject = format!("CN={host}");
        let audit = AuditEvent {
            actor: BENCH_RA.into(),
            action: "certificate.issued".into(),
            object: serial_hex.clone(),
            request_digest: Some(request_digest.clone()),
            detail: serde_json::json!({
                "issuer": self.issuer,
                "profile": self.profile,
                "request_id": request_id,
                "subject": subject,
                "not_after": self.not_after,
            })
            .to_string(),
        };
        let now = signet::clock::unix_now();
        let pending = CertificateRecord {
            serial: serial_hex,
            issuer: self.issuer.clone(),
            ra: BENCH_RA.into(),
            request_id,
            request_digest,
            profile: self.profile.clone(),
            subject,
            request_json,
            csr_der: self.csrs[(n % self.csrs.len() as u64) as usize].clone(),
            tbs_der: self.tbs.patch(&serial, digits.as_bytes()),
            cert_der: None,
            status: CertStatus::Pending,
            not_before: self.not_before,
            not_after: self.not_after,
            created_at: now,
            issued_at: None,
            renewed_from: None,
            revocation: None,
            updated_at: 0,
        };
        Ok(Issuance {
            pending,
            cert_der: self.cert.patch(&serial, digits.as_bytes()),
            audit,
        })
    }

    /// A revocation of `rec` as an RA asks for it, with its audit event.
    pub(crate) fn revocation(&self, rec: &CertificateRecord) -> (RevokeRecord, AuditEvent) {
        const REASONS: [RevocationReason; 4] = [
            RevocationReason::KeyCompromise,
            RevocationReason::Superseded,
            RevocationReason::CessationOfOperation,
            RevocationReason::AffiliationChanged,
        ];
        let reason = REASONS[rec
            .serial
            .len()
            .wrapping_add(rec.serial.as_bytes()[1] as usize)
            % 4];
        let request_id = format!("{}-revoke", rec.request_id);
        let now = signet::clock::unix_now();
        let detail = serde_json::json!({
            "request_id": request_id,
            "reason": reason.name(),
            "reason_code": reason.code(),
            "reported_at": now - 3600,
            "comment": "subscriber reported the token lost",
        })
        .to_string();
        let digest = hex::encode(Sha256::digest(detail.as_bytes()));
        let audit = AuditEvent {
            actor: BENCH_RA.into(),
            action: "certificate.revoked".into(),
            object: rec.serial.clone(),
            request_digest: Some(digest.clone()),
            detail,
        };
        let rev = RevokeRecord {
            serial: rec.serial.clone(),
            ra: BENCH_RA.into(),
            request_id,
            request_digest: digest,
            reason,
            revoked_at: now,
            reported_at: Some(now - 3600),
            comment: "subscriber reported the token lost".into(),
        };
        (rev, audit)
    }
}

/// The issuer record, its signature algorithm and signature length: the store's issuer
/// named `name` if it has one (its algorithm and key from the configuration), else the
/// benchmark's software CA, recorded on first use.
async fn issuer_for(
    cfg: &Config,
    store: &SqliteStore,
    name: &str,
) -> Result<(IssuerRecord, SignatureAlgorithm, usize), String> {
    let issuers = store.issuers().await.map_err(|e| e.to_string())?;
    if let Some(found) = issuers.iter().find(|i| i.name == name)
        && let Some(spec) = cfg
            .issuer_specs()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|s| s.name == name)
    {
        return Ok((found.clone(), spec.signature, signature_len(spec.key_type)));
    }
    if let Some(found) = issuers.into_iter().find(|i| i.name == BENCH_ISSUER) {
        return Ok((found, SignatureAlgorithm::EcdsaSha256, 72));
    }
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    let key = loop {
        getrandom::fill(seed.as_mut()).map_err(|e| format!("random number generator: {e}"))?;
        if let Ok(k) = p256::ecdsa::SigningKey::from_slice(seed.as_ref()) {
            break k;
        }
    };
    let spki_der = key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| e.to_string())?;
    let spki = spki::SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
        .map_err(|e| e.to_string())?;
    let subject = SubjectSpec::parse("C=CN, O=signet bench, CN=signet bench CA")
        .map_err(|e| e.to_string())?;
    let urls = Urls {
        base: cfg.public_base_url(),
    };
    let req = CaRequest {
        subject: &subject,
        spki: &spki,
        path_len: Some(0),
        validity_years: 10,
    };
    let serial = SerialNumber::new(&random_serial_bytes()?).map_err(|e| e.to_string())?;
    let tbs = cert::build_ca_tbs(
        None,
        SignatureAlgorithm::EcdsaSha256,
        &urls,
        &req,
        serial,
        SystemTime::now(),
    )
    .map_err(|e| e.to_string())?;
    let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
    let sig: p256::ecdsa::Signature = key.sign(&tbs_der);
    let ca = cert::assemble(tbs, sig.to_der().as_bytes()).map_err(|e| e.to_string())?;
    let now = signet::clock::unix_now();
    let label = format!("{BENCH_ISSUER}-software");
    store
        .record_ca_key(
            CaKeyRecord {
                label: label.clone(),
                key_type: KeyType::P256.name().into(),
                spki_der: spki_der.as_bytes().to_vec(),
                created_at: now,
            },
            AuditEvent::daemon(
                "bench.key_made",
                &label,
                serde_json::json!({"software": true}),
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    let record = IssuerRecord {
        name: BENCH_ISSUER.into(),
        parent: None,
        key_label: label,
        signature: SignatureAlgorithm::EcdsaSha256.name().into(),
        serial: hex::encode(ca.tbs_certificate().serial_number().as_bytes()),
        cert_der: ca.to_der().map_err(|e| e.to_string())?,
        created_at: now,
        family: BENCH_ISSUER.into(),
        generation: 1,
    };
    store
        .record_issuer(
            record.clone(),
            AuditEvent::daemon(
                "bench.issuer_made",
                BENCH_ISSUER,
                serde_json::json!({"software": true}),
            ),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((record, SignatureAlgorithm::EcdsaSha256, 72))
}

/// The length of a signature by a key of this type (DER ECDSA at its usual length).
fn signature_len(key: KeyType) -> usize {
    match key {
        KeyType::Rsa2048 => 256,
        KeyType::Rsa3072 => 384,
        KeyType::Rsa4096 => 512,
        KeyType::P256 | KeyType::Sm2 => 72,
        KeyType::P384 => 104,
        KeyType::Ed25519 => 64,
    }
}

/// 16 random octets, the first in 1..=0x7f: a serial's content octets, as signet draws them.
fn random_serial_bytes() -> Result<[u8; 16], String> {
    let mut b = [0u8; 16];
    loop {
        getrandom::fill(&mut b).map_err(|e| format!("random number generator: {e}"))?;
        b[0] &= 0x7f;
        if b[0] != 0 {
            return Ok(b);
        }
    }
}

/// Every offset at which `needle` occurs in `hay`.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

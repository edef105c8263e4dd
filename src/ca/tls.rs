//! TLS material for signet's own RA API, made by the ceremony: the daemon's server
//! certificate and the client certificates of RA offices that do not bring their own. Their
//! keys are software P-256 keys written as PKCS#8 files (mode 0600), because rustls needs
//! them in memory; the certificates come from the TLS-only issuing CA in the HSM and are
//! recorded in the store like every other certificate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use der::{Decode, Encode};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use spki::SubjectPublicKeyInfoOwned;
use zeroize::Zeroizing;

use super::CaError;
use crate::audit::AuditEvent;
use crate::config::{Config, server_name_san};
use crate::hsm::Hsm;
use crate::pki::cert::{self, IssuerRef, LeafRequest, Urls};
use crate::pki::{KeyType, Profile, ProfileKind, San, SubjectSpec, serial};
use crate::store::{BeginOutcome, CertStatus, CertificateRecord, Store};

/// The issuing CA the TLS certificates come from, as the ceremony has it.
pub struct TlsIssuer<'a> {
    /// Configured name.
    pub name: &'a str,
    /// CKA_LABEL of its key.
    pub key_label: &'a str,
    /// Its certificate.
    pub cert: &'a x509_cert::Certificate,
    /// Its public key.
    pub spki: &'a SubjectPublicKeyInfoOwned,
    /// The algorithm it signs with.
    pub signature: crate::pki::SignatureAlgorithm,
}

/// One certificate to make: where its files go and what it says.
struct Wanted {
    /// Request id recorded in the store (`tls-server`, `ra-client:NAME`).
    request_id: String,
    kind: ProfileKind,
    subject: SubjectSpec,
    sans: Vec<San>,
    validity_years: u32,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// Make the server certificate and the RA client certificates the configuration asks for,
/// skipping those whose files exist. Returns the files written.
pub async fn make(
    cfg: &Config,
    issuer: &TlsIssuer<'_>,
    hsm: &Hsm,
    store: &std::sync::Arc<dyn Store>,
) -> Result<Vec<PathBuf>, CaError> {
    let Some(api) = &cfg.api else {
        return Ok(Vec::new());
    };
    let mut wanted = Vec::new();
    let sans = api
        .server_names
        .iter()
        .map(|n| {
            server_name_san(n)
                .map_err(|e| CaError::FailedPrecondition(format!("api.server_names: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let subject = SubjectSpec::from_pairs([("CN", api.server_names[0].as_str())])?;
    wanted.push(Wanted {
        request_id: "tls-server".into(),
        kind: ProfileKind::Server,
        subject,
        sans,
        validity_years: 1,
        cert_path: cfg.resolve(&api.server_cert),
        key_path: cfg.resolve(&api.server_key),
    });
    for ra in &cfg.ras {
        let (Some(c), Some(k), Some(subject)) = (&ra.client_cert, &ra.client_key, &ra.subject)
        else {
            continue;
        };
        wanted.push(Wanted {
            request_id: format!("ra-client:{}", ra.name),
            kind: ProfileKind::RaClient,
            subject: SubjectSpec::parse(subject)?,
            sans: vec![],
            validity_years: 2,
            cert_path: cfg.resolve(c),
            key_path: cfg.resolve(k),
        });
    }
    let urls = Urls {
        base: cfg.public_base_url(),
    };
    let mut written = Vec::new();
    for w in wanted {
        match (w.cert_path.exists(), w.key_path.exists()) {
            (true, true) => continue,
            (false, false) => {}
            _ => {
                return Err(CaError::FailedPrecondition(format!(
                    "only one of {} and {} exists; refusing to overwrite it or to pair it with a new key",
                    w.cert_path.display(),
                    w.key_path.display()
                )));
            }
        }
        written.extend(make_one(&w, issuer, &urls, hsm, store).await?);
    }
    Ok(written)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh software P-256 key: PKCS#8 PEM (zeroized on drop) and its public key.
fn software_key() -> Result<(Zeroizing<String>, SubjectPublicKeyInfoOwned), CaError> {
    let secret = loop {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| CaError::Internal(format!("random number generator: {e}")))?;
        // Out of range (zero or above the group order) happens about once in 2^32 draws.
        if let Ok(k) = p256::SecretKey::from_slice(bytes.as_ref()) {
            break k;
        }
    };
    let pem = secret
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| CaError::Internal(format!("encoding a TLS key: {e}")))?;
    let spki_der = secret
        .public_key()
        .to_public_key_der()
        .map_err(|e| CaError::Internal(format!("encoding a TLS public key: {e}")))?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
        .map_err(|e| CaError::Internal(format!("decoding a TLS public key: {e}")))?;
    Ok((Zeroizing::new(pem.to_string()), spki))
}

async fn make_one(
    w: &Wanted,
    issuer: &TlsIssuer<'_>,
    urls: &Urls,
    hsm: &Hsm,
    store: &std::sync::Arc<dyn Store>,
) -> Result<Vec<PathBuf>, CaError> {
    let (key_pem, spki) = software_key()?;
    // Profile names of their own, so that no RA's profile list ever covers them.
    let profile_name = match w.kind {
        ProfileKind::Server => "tls_server",
        other => other.name(),
    };
    let profile = Profile {
        name: profile_name.into(),
        kind: w.kind,
        validity_years: vec![w.validity_years],
        renewal_window_days: 30,
        // anyPolicy (RFC 5280): these certificates serve only signet's own API and fall under
        // no subscriber policy; their issuer signs nothing else.
        policy_oid: const_oid::ObjectIdentifier::new_unwrap("2.5.29.32.0"),
        liability: None,
        key_types: vec![KeyType::P256],
        issuers: vec![issuer.name.to_owned()],
    };
    let serial = serial::random_serial();
    let not_before = UNIX_EPOCH + std::time::Duration::from_secs(unix(SystemTime::now()) as u64);
    let leaf = LeafRequest {
        profile: &profile,
        subject: &w.subject,
        sans: &w.sans,
        spki: &spki,
        key_type: KeyType::P256,
        validity_years: w.validity_years,
    };
    let issuer_ref = IssuerRef {
        name: issuer.name,
        cert: issuer.cert,
        signature: issuer.signature,
    };
    let tbs = cert::build_leaf_tbs(&issuer_ref, urls, &leaf, serial.clone(), not_before)?;
    let tbs_der = tbs
        .to_der()
        .map_err(|e| CaError::Internal(format!("encoding TBS: {e}")))?;
    let serial_hex = serial::serial_hex(&serial);
    let request = serde_json::json!({
        "purpose": w.request_id,
        "subject": w.subject.to_string(),
        "sans": w.sans.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(request.to_string()));
    let spki_der = spki
        .to_der()
        .map_err(|e| CaError::Internal(format!("encoding public key: {e}")))?;
    // Recorded like every certificate, pending before it is signed. The request id carries
    // the serial so a later ceremony run can make a replacement after the files are removed.
    let pending = CertificateRecord {
        serial: serial_hex.clone(),
        issuer: issuer.name.to_owned(),
        ra: super::ceremony::ACTOR.into(),
        request_id: format!("{}:{serial_hex}", w.request_id),
        request_digest: digest.clone(),
        profile: profile_name.into(),
        subject: w.subject.to_string(),
        request_json: request.to_string(),
        csr_der: spki_der,
        tbs_der: tbs_der.clone(),
        cert_der: None,
        status: CertStatus::Pending,
        not_before: unix(not_before),
        not_after: unix(tbs.validity().not_after.to_system_time()),
        created_at: unix(SystemTime::now()),
        issued_at: None,
        renewed_from: None,
        revocation: None,
    };
    match store.begin_issuance(pending).await? {
        BeginOutcome::Started(_) => {}
        other => {
            return Err(CaError::Internal(format!(
                "recording TLS certificate {serial_hex}: unexpected {other:?}"
            )));
        }
    }
    let sig = hsm
        .sign(issuer.key_label, issuer.signature, &tbs_der)
        .await?;
    let certificate = cert::assemble(tbs, &sig)?;
    cert::check_signed_by(&certificate, issuer.spki)?;
    let cert_der = certificate
        .to_der()
        .map_err(|e| CaError::Internal(format!("encoding certificate: {e}")))?;
    // Key first (private, never overwritten), then the certificate chain beside it.
    write_private(&w.key_path, key_pem.as_bytes())?;
    let mut chain = super::ceremony::pem_encode(&cert_der);
    chain.push_str(&super::ceremony::pem_encode(
        &issuer
            .cert
            .to_der()
            .map_err(|e| CaError::Internal(format!("encoding certificate: {e}")))?,
    ));
    write_new(&w.cert_path, chain.as_bytes(), 0o644)?;
    let audit = AuditEvent {
        actor: super::ceremony::ACTOR.into(),
        action: "ceremony.tls_certificate_issued".into(),
        object: serial_hex.clone(),
        request_digest: Some(digest),
        detail: serde_json::json!({
            "purpose": w.request_id,
            "subject": w.subject.to_string(),
            "cert_file": w.cert_path.display().to_string(),
        })
        .to_string(),
    };
    store
        .complete_issuance(&serial_hex, &cert_der, unix(SystemTime::now()), audit)
        .await?;
    tracing::info!(purpose = %w.request_id, serial = %serial_hex, "TLS certificate issued");
    Ok(vec![w.key_path.clone(), w.cert_path.clone()])
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    write_new(path, bytes, 0o600)
}

/// Create a file that must not exist yet, with the given mode from the start.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            CaError::FailedPrecondition(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            CaError::FailedPrecondition(format!("cannot create {}: {e}", path.display()))
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CaError::FailedPrecondition(format!("cannot write {}: {e}", path.display())))
}

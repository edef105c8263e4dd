//! TLS material for signet's own RA API, made by the ceremony: the daemon's server
//! certificate and the client certificates of RA offices that do not bring their own. Their
//! keys are software P-256 keys written as PKCS#8 files (mode 0600), because rustls needs
//! them in memory; the certificates come from the TLS-only issuing CA in the HSM and are
//! recorded in the store like every other certificate.

use std::io::Write;
use std::path::{Path, PathBuf};

use der::{Decode, Encode};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use spki::SubjectPublicKeyInfoOwned;
use zeroize::Zeroizing;

use super::{Authority, CaError};
use crate::config::{Config, server_name_san};
use crate::pki::{KeyType, Profile, ProfileKind, San, SubjectSpec};

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
pub async fn make(cfg: &Config, authority: &Authority) -> Result<Vec<PathBuf>, CaError> {
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
    let policy = cfg
        .ca
        .oids()
        .map_err(|e| CaError::FailedPrecondition(e.to_string()))?
        .service_policy();
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
        written.extend(make_one(&w, &api.tls_issuer, policy, authority).await?);
    }
    Ok(written)
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
    issuer: &str,
    policy: const_oid::ObjectIdentifier,
    authority: &Authority,
) -> Result<Vec<PathBuf>, CaError> {
    let (key_pem, spki) = software_key()?;
    // Profile names of their own, so that no RA's profile list ever covers them.
    let profile_name = match w.kind {
        ProfileKind::Server => "tls_server",
        other => other.name(),
    };
    let profile = Profile {
        validity_years: vec![w.validity_years],
        renewal_window_days: 30,
        key_types: vec![KeyType::P256],
        allow_wildcards: false,
        // These certificates serve only signet's own API (an address such as 127.0.0.1 is
        // fine here): the CA/B rules for public TLS do not apply.
        cabf: false,
        ..Profile::with_defaults(
            profile_name,
            w.kind,
            // The CA's policy for its own certificates: their issuer signs nothing else.
            policy,
            vec![issuer.to_owned()],
        )
    };
    // One request id per key: a later run that makes a new key (after the files were
    // removed) certifies it anew.
    let spki_der = spki
        .to_der()
        .map_err(|e| CaError::Internal(format!("encoding public key: {e}")))?;
    let key_id = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&spki_der)[..8]);
    let issued = authority
        .issue_infrastructure(
            super::keys::ACTOR,
            &format!("{}:{key_id}", w.request_id),
            &profile,
            issuer,
            &w.subject,
            &w.sans,
            &spki,
            w.validity_years,
        )
        .await?;
    // Key first (private, never overwritten), then the certificate chain beside it.
    write_private(&w.key_path, key_pem.as_bytes())?;
    // Leaf and its issuing CA: what a TLS peer needs besides the root it trusts.
    let chain = crate::pki::pkcs7::pem_certificates(
        std::iter::once(&issued.cert_der).chain(issued.chain.first()),
    );
    write_new(&w.cert_path, chain.as_bytes(), 0o644)?;
    tracing::info!(purpose = %w.request_id, serial = %issued.record.serial, "TLS certificate issued");
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

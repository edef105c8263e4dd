//! The key ceremony: generate the CA keys in the HSM and make the hierarchy's certificates
//! (self-signed root, issuing CAs under it), record each key and certificate in the store,
//! and publish them as files and a certs-only `.p7b`. It never overwrites a key or a
//! certificate; run again, it finishes what an interrupted run left and leaves the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use der::Encode;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use super::CaError;
use super::keys::{ACTOR, AUDIT, TSA, key_for, service_request_id};
use crate::audit::AuditEvent;
use crate::clock::{now_seconds, unix_now};
use crate::config::{Config, IssuerSpec, ServiceKeySpec};
use crate::hsm::Hsm;
use crate::pki::cert::{self, CaRequest, IssuerRef, Urls};
use crate::pki::oids::CaOids;
use crate::pki::{Profile, ProfileKind, pkcs7, serial};
use crate::store::{IssuerRecord, Store};

/// What a ceremony run did.
#[derive(Debug, Default)]
pub struct CeremonyReport {
    /// Issuers created by this run.
    pub created: Vec<String>,
    /// Issuers that already existed and were left alone.
    pub existing: Vec<String>,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// The delegated OCSP responder certificate each issuer signs responses with.
    pub responders: Vec<String>,
}

struct Made {
    name: String,
    signature: crate::pki::SignatureAlgorithm,
    key_label: String,
    cert: Certificate,
    spki: SubjectPublicKeyInfoOwned,
}

/// Run the ceremony for every issuer in the configuration, parents first.
pub async fn run(
    cfg: &Config,
    hsm: &Hsm,
    store: &Arc<dyn Store>,
) -> Result<CeremonyReport, CaError> {
    let specs = cfg
        .issuer_specs()
        .map_err(|e| CaError::FailedPrecondition(e.to_string()))?;
    if specs.is_empty() {
        return Err(CaError::FailedPrecondition(
            "the configuration defines no [[issuer]]; nothing to create".into(),
        ));
    }
    let out_dir = cfg.output_dir();
    std::fs::create_dir_all(&out_dir).map_err(|e| {
        CaError::FailedPrecondition(format!("cannot create {}: {e}", out_dir.display()))
    })?;
    let urls = Urls {
        base: cfg.public_base_url(),
    };
    let recorded = store.issuers().await?;
    let mut report = CeremonyReport::default();
    let mut made: Vec<Made> = Vec::new();

    for spec in &specs {
        let cert_path = out_dir.join(format!("{}.crt", spec.name));
        let pem_path = out_dir.join(format!("{}.pem", spec.name));
        if let Some(rec) = recorded
            .iter()
            .find(|r| r.family == spec.name && r.generation == 1)
        {
            let m = recorded_issuer(rec, spec.signature, hsm).await?;
            publish(&cert_path, &pem_path, &rec.cert_der, &mut report)?;
            report.existing.push(spec.name.clone());
            made.push(m);
            continue;
        }
        for p in [&cert_path, &pem_path] {
            if p.exists() {
                return Err(CaError::FailedPrecondition(format!(
                    "{} exists but issuer {} is not in the store; refusing to overwrite a certificate",
                    p.display(),
                    spec.name
                )));
            }
        }
        let spki = key_for(&spec.key_label, spec.key_type, &spec.name, hsm, store).await?;
        let first = Generation {
            family: &spec.name,
            number: 1,
        };
        let m = certify(spec, first, spki, &made, &urls, hsm, store).await?;
        let der = m
            .cert
            .to_der()
            .map_err(|e| CaError::Internal(format!("encoding certificate: {e}")))?;
        publish(&cert_path, &pem_path, &der, &mut report)?;
        tracing::info!(issuer = %spec.name, key = %spec.key_label, "issuer created");
        report.created.push(spec.name.clone());
        made.push(m);
    }

    // Generations made by `--rotate` since: published beside the first, and in the chain.
    for rec in recorded
        .iter()
        .filter(|r| r.generation > 1 && specs.iter().any(|s| s.name == r.family))
    {
        let signature = rec
            .signature
            .parse()
            .map_err(|e| CaError::Internal(format!("issuer {}: {e}", rec.name)))?;
        let m = recorded_issuer(rec, signature, hsm).await?;
        publish(
            &out_dir.join(format!("{}.crt", rec.name)),
            &out_dir.join(format!("{}.pem", rec.name)),
            &rec.cert_der,
            &mut report,
        )?;
        report.existing.push(rec.name.clone());
        made.push(m);
    }

    // Delegated OCSP responders, TLS material for the RA API (from its TLS-only issuing CA),
    // and the TSA and audit keys' certificates, certified through the authority's one
    // issuance path now that the hierarchy exists.
    let services = [
        (TSA, ProfileKind::TimeStamping, service_spec(cfg.tsa_key())?),
        (
            AUDIT,
            ProfileKind::AuditSigning,
            service_spec(cfg.audit_key())?,
        ),
    ];
    {
        let authority = super::Authority::open(cfg, hsm.clone(), store.clone()).await?;
        report.responders = super::ocsp::provision(cfg, &authority, hsm, store).await?;
        if cfg.api.is_some() {
            report
                .files
                .extend(super::tls::make(cfg, &authority).await?);
        }
        let oids = cfg
            .ca
            .oids()
            .map_err(|e| CaError::FailedPrecondition(e.to_string()))?;
        for (purpose, kind, spec) in &services {
            if let Some(spec) = spec {
                let path = certify_service(
                    purpose, *kind, spec, &oids, &out_dir, hsm, store, &authority,
                )
                .await?;
                report.files.push(path);
            }
        }
    }

    // The chain files are publications derived from the store: rewritten on every run.
    let certs: Vec<Certificate> = made.iter().map(|m| m.cert.clone()).collect();
    let p7b = pkcs7::certs_only(&certs)?;
    let p7b_path = out_dir.join("chain.p7b");
    write_file(&p7b_path, &p7b)?;
    report.files.push(p7b_path);
    let ders = certs
        .iter()
        .map(|c| c.to_der())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Internal(format!("encoding certificate: {e}")))?;
    let pem = pkcs7::pem_certificates(&ders);
    let chain_pem = out_dir.join("chain.pem");
    write_file(&chain_pem, pem.as_bytes())?;
    report.files.push(chain_pem);
    Ok(report)
}

/// An issuer the ceremony recorded earlier, its key checked against the HSM as the
/// authority loads it.
async fn recorded_issuer(
    rec: &IssuerRecord,
    signature: crate::pki::SignatureAlgorithm,
    hsm: &Hsm,
) -> Result<Made, CaError> {
    let issuer = super::load_issuer(rec, signature, hsm).await?;
    Ok(Made {
        name: issuer.name,
        signature: issuer.signature,
        key_label: issuer.key_label,
        cert: issuer.cert,
        spki: issuer.spki,
    })
}

/// `signet ceremony --rotate ISSUER`: give the configured issuing CA `family` a new
/// generation (a new key in the HSM and a certificate for it from the same parent, with the
/// configured subject, key type and signature algorithm), then finish as a ceremony run
/// does: its OCSP responder, its files, a chain and `.p7b` carrying every generation.
///
/// The new generation is named `{family}-g{N}` (its key `{key_label}-g{N}`) and signs
/// every certificate issued for `family` from the next start of the daemon on; the older
/// ones keep signing CRLs and OCSP answers for the certificates they issued. A root and an
/// issuer with issuers under it are refused: their certificates are trust anchors or parents
/// of other CAs, which a new key does not replace.
pub async fn rotate(
    cfg: &Config,
    hsm: &Hsm,
    store: &Arc<dyn Store>,
    family: &str,
) -> Result<CeremonyReport, CaError> {
    let specs = cfg
        .issuer_specs()
        .map_err(|e| CaError::FailedPrecondition(e.to_string()))?;
    let refuse = |why: String| {
        Err(CaError::FailedPrecondition(format!(
            "--rotate {family}: {why}"
        )))
    };
    let Some(spec) = specs.iter().find(|s| s.name == family) else {
        return refuse("no [[issuer]] has this name".into());
    };
    let Some(parent_name) = &spec.parent else {
        return refuse("it is the root; a root is replaced by a new hierarchy that relying parties install, not rotated".into());
    };
    if let Some(child) = specs.iter().find(|s| s.parent.as_deref() == Some(family)) {
        return refuse(format!(
            "issuer {} is under it; only an issuing CA with no CA under it can be rotated",
            child.name
        ));
    }
    let recorded = store.issuers().await?;
    let newest = |f: &str| {
        recorded
            .iter()
            .filter(|r| r.family == f)
            .max_by_key(|r| r.generation)
    };
    let Some(last) = newest(family) else {
        return refuse("it has not been created yet; run `signet ceremony` first".into());
    };
    let Some(parent) = newest(parent_name) else {
        return refuse(format!("its parent {parent_name} has not been created yet"));
    };
    let number = last.generation + 1;
    let name = format!("{family}-g{number}");
    let key_label = format!("{}-g{number}", spec.key_label);
    let labels = specs
        .iter()
        .map(|s| s.key_label.clone())
        .chain(
            [cfg.tsa_key(), cfg.audit_key()]
                .into_iter()
                .filter_map(|k| k.ok().flatten())
                .map(|k| k.key_label),
        )
        .collect::<Vec<_>>();
    if specs.iter().any(|s| s.name == name) || recorded.iter().any(|r| r.name == name) {
        return refuse(format!("the new generation's name {name} is taken"));
    }
    if labels.contains(&key_label) {
        return refuse(format!(
            "the new generation's key label {key_label:?} is configured for another key"
        ));
    }
    let parent_signature = parent
        .signature
        .parse()
        .map_err(|e| CaError::Internal(format!("issuer {}: {e}", parent.name)))?;
    let parent = recorded_issuer(parent, parent_signature, hsm).await?;
    let new_spec = IssuerSpec {
        name: name.clone(),
        parent: Some(parent.name.clone()),
        key_label: key_label.clone(),
        ..spec.clone()
    };
    let spki = key_for(&key_label, spec.key_type, &name, hsm, store).await?;
    let urls = Urls {
        base: cfg.public_base_url(),
    };
    let generation = Generation { family, number };
    certify(&new_spec, generation, spki, &[parent], &urls, hsm, store).await?;
    tracing::info!(issuer = %name, family, generation = number, key = %key_label, "issuer rotated");
    let mut report = run(cfg, hsm, store).await?;
    report.existing.retain(|n| n != &name);
    report.created.push(name);
    Ok(report)
}

fn service_spec(
    spec: Result<Option<ServiceKeySpec>, crate::config::ConfigError>,
) -> Result<Option<ServiceKeySpec>, CaError> {
    spec.map_err(|e| CaError::FailedPrecondition(e.to_string()))
}

/// Make (or find) a service key and its certificate, and write `{purpose}.pem`: the
/// certificate followed by its issuing chain. The certificate carries the CA's policy for its
/// own certificates; the audit key's, the CA's own audit key purpose as its only (critical)
/// extendedKeyUsage.
#[allow(clippy::too_many_arguments)]
async fn certify_service(
    purpose: &str,
    kind: ProfileKind,
    spec: &ServiceKeySpec,
    oids: &CaOids,
    out_dir: &Path,
    hsm: &Hsm,
    store: &Arc<dyn Store>,
    authority: &super::Authority,
) -> Result<PathBuf, CaError> {
    let spki = key_for(&spec.key_label, spec.key_type, purpose, hsm, store).await?;
    let profile = Profile {
        validity_years: vec![spec.validity_years],
        renewal_window_days: 30,
        key_types: vec![spec.key_type],
        allow_wildcards: false,
        cabf: false,
        private_eku: (kind == ProfileKind::AuditSigning).then(|| oids.audit_key_purpose()),
        ..Profile::with_defaults(
            kind.name(),
            kind,
            oids.service_policy(),
            vec![spec.issuer.clone()],
        )
    };
    let issued = authority
        .issue_infrastructure(
            ACTOR,
            &service_request_id(purpose, &spki)?,
            &profile,
            &spec.issuer,
            &spec.subject,
            &[],
            &spki,
            spec.validity_years,
        )
        .await?;
    let pem = pkcs7::pem_certificates(std::iter::once(&issued.cert_der).chain(&issued.chain));
    let path = out_dir.join(format!("{purpose}.pem"));
    write_file(&path, pem.as_bytes())?;
    tracing::info!(purpose, serial = %issued.record.serial, key = %spec.key_label, "service key certified");
    Ok(path)
}

/// Which generation of which configured issuer a certificate is made for.
struct Generation<'a> {
    family: &'a str,
    number: u32,
}

/// Build, sign, check and record the issuer's certificate.
async fn certify(
    spec: &IssuerSpec,
    generation: Generation<'_>,
    spki: SubjectPublicKeyInfoOwned,
    made: &[Made],
    urls: &Urls,
    hsm: &Hsm,
    store: &Arc<dyn Store>,
) -> Result<Made, CaError> {
    let parent = match &spec.parent {
        None => None,
        Some(p) => Some(made.iter().find(|m| &m.name == p).ok_or_else(|| {
            CaError::Internal(format!("parent {p} of {} was not made first", spec.name))
        })?),
    };
    let serial = serial::random_serial();
    let req = CaRequest {
        subject: &spec.subject,
        spki: &spki,
        path_len: spec.path_len,
        validity_years: spec.validity_years,
    };
    let (tbs, signer_label, signer_alg, signer_spki) = match parent {
        None => (
            cert::build_ca_tbs(
                None,
                spec.signature,
                urls,
                &req,
                serial.clone(),
                now_seconds(),
            )?,
            spec.key_label.as_str(),
            spec.signature,
            &spki,
        ),
        Some(p) => {
            let issuer = IssuerRef {
                name: &p.name,
                cert: &p.cert,
                signature: p.signature,
            };
            (
                cert::build_ca_tbs(
                    Some(&issuer),
                    p.signature,
                    urls,
                    &req,
                    serial.clone(),
                    now_seconds(),
                )?,
                p.key_label.as_str(),
                p.signature,
                &p.spki,
            )
        }
    };
    let tbs_der = tbs
        .to_der()
        .map_err(|e| CaError::Internal(format!("encoding TBS: {e}")))?;
    let sig = hsm.sign(signer_label, signer_alg, &tbs_der).await?;
    let cert = cert::assemble(tbs, &sig)?;
    cert::check_signed_by(&cert, signer_spki)
        .map_err(|e| CaError::Internal(format!("certificate of {}: {e}", spec.name)))?;
    let cert_der = cert
        .to_der()
        .map_err(|e| CaError::Internal(format!("encoding certificate: {e}")))?;
    let serial_hex = serial::serial_hex(&serial);
    let audit = AuditEvent {
        actor: ACTOR.into(),
        action: if generation.number == 1 {
            "ceremony.issuer_certified"
        } else {
            "ceremony.issuer_rotated"
        }
        .into(),
        object: spec.name.clone(),
        request_digest: None,
        detail: serde_json::json!({
            "serial": serial_hex,
            "parent": spec.parent,
            "key_label": spec.key_label,
            "subject": spec.subject.to_string(),
            "family": generation.family,
            "generation": generation.number,
        })
        .to_string(),
    };
    store
        .record_issuer(
            IssuerRecord {
                name: spec.name.clone(),
                parent: spec.parent.clone(),
                key_label: spec.key_label.clone(),
                signature: spec.signature.name().into(),
                serial: serial_hex,
                cert_der,
                created_at: unix_now(),
                family: generation.family.to_owned(),
                generation: generation.number,
            },
            audit,
        )
        .await?;
    Ok(Made {
        name: spec.name.clone(),
        signature: spec.signature,
        key_label: spec.key_label.clone(),
        cert,
        spki,
    })
}

/// Write a CA certificate as `.crt` (DER, as served to relying parties) and `.pem`; an
/// existing file must already hold exactly this certificate.
fn publish(
    der_path: &Path,
    pem_path: &Path,
    der: &[u8],
    report: &mut CeremonyReport,
) -> Result<(), CaError> {
    let pem = pkcs7::pem_certificate(der);
    for (path, bytes) in [(der_path, der), (pem_path, pem.as_bytes())] {
        match std::fs::read(path) {
            Ok(existing) if existing == bytes => {}
            Ok(_) => {
                return Err(CaError::FailedPrecondition(format!(
                    "{} holds a different certificate; refusing to overwrite it",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_file(path, bytes)?;
                report.files.push(path.to_path_buf());
            }
            Err(e) => {
                return Err(CaError::FailedPrecondition(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    // Write beside and rename, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CaError::FailedPrecondition(format!("cannot write {}: {e}", path.display())))
}

//! The key ceremony: generate the CA keys in the HSM and make the hierarchy's certificates
//! (self-signed root, issuing CAs under it), record each key and certificate in the store,
//! and publish them as files and a certs-only `.p7b`. It never overwrites a key or a
//! certificate; run again, it finishes what an interrupted run left and leaves the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use der::{Decode, Encode};
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
        if let Some(rec) = recorded.iter().find(|r| r.name == spec.name) {
            let cert = Certificate::from_der(&rec.cert_der).map_err(|e| {
                CaError::Internal(format!("recorded certificate of {}: {e}", rec.name))
            })?;
            let spki = cert.tbs_certificate().subject_public_key_info().clone();
            if hsm.public_key(&spec.key_label).await? != spki {
                return Err(CaError::FailedPrecondition(format!(
                    "issuer {}: the key labelled {:?} in the HSM does not match its recorded certificate",
                    spec.name, spec.key_label
                )));
            }
            publish(&cert_path, &pem_path, &rec.cert_der, &mut report)?;
            report.existing.push(spec.name.clone());
            made.push(Made {
                name: spec.name.clone(),
                signature: spec.signature,
                key_label: spec.key_label.clone(),
                cert,
                spki,
            });
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
        let m = certify(spec, spki, &made, &urls, hsm, store).await?;
        let der = m
            .cert
            .to_der()
            .map_err(|e| CaError::Internal(format!("encoding certificate: {e}")))?;
        publish(&cert_path, &pem_path, &der, &mut report)?;
        tracing::info!(issuer = %spec.name, key = %spec.key_label, "issuer created");
        report.created.push(spec.name.clone());
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

/// Build, sign, check and record the issuer's certificate.
async fn certify(
    spec: &IssuerSpec,
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
        action: "ceremony.issuer_certified".into(),
        object: spec.name.clone(),
        request_digest: None,
        detail: serde_json::json!({
            "serial": serial_hex,
            "parent": spec.parent,
            "key_label": spec.key_label,
            "subject": spec.subject.to_string(),
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

//! Keys the CA holds in the HSM, and the certificates the ceremony made for its service keys:
//! a key is found by label and checked against the one the ceremony recorded, or generated
//! and recorded; a service key's certificate is found by its request id. The ceremony, the
//! OCSP responders, the TLS material, the TSA and the evidence bundles all go through here.

use std::sync::Arc;

use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

use super::CaError;
use crate::audit::AuditEvent;
use crate::clock::unix_now;
use crate::hsm::Hsm;
use crate::pki::KeyType;
use crate::store::{CaKeyRecord, Store};

/// Actor name recorded in the audit log for ceremony steps.
pub const ACTOR: &str = "ceremony";

/// The purpose name of the TSA key (its certificate's request id and file name).
pub const TSA: &str = "tsa";
/// The purpose name of the audit key.
pub const AUDIT: &str = "audit";
/// The request id under which the ceremony certifies a service key (`tsa:1a2b...`): one per
/// key, so the daemon finds the certificate of the key it holds.
pub fn service_request_id(
    purpose: &str,
    spki: &SubjectPublicKeyInfoOwned,
) -> Result<String, CaError> {
    let der = spki
        .to_der()
        .map_err(|e| CaError::Internal(format!("encoding public key: {e}")))?;
    let id = <sha2::Sha256 as sha2::Digest>::digest(&der);
    Ok(format!("{purpose}:{}", hex::encode(&id[..8])))
}

/// The certificate the ceremony made for the service key `spki` (`purpose` `tsa` or
/// `audit`): DER, parsed, and its issuer's name. `key` names the key in errors.
pub(crate) async fn service_certificate(
    store: &Arc<dyn Store>,
    purpose: &str,
    spki: &SubjectPublicKeyInfoOwned,
    key: &str,
) -> Result<(Vec<u8>, Certificate, String), CaError> {
    let missing = || {
        CaError::FailedPrecondition(format!(
            "the {purpose} key {key:?} has no certificate; run `signet ceremony`"
        ))
    };
    let record = store
        .certificate_by_request(ACTOR, &service_request_id(purpose, spki)?)
        .await?
        .ok_or_else(missing)?;
    let der = record.cert_der.ok_or_else(missing)?;
    let cert = Certificate::from_der(&der)
        .map_err(|e| CaError::Internal(format!("stored {purpose} certificate: {e}")))?;
    Ok((der, cert, record.issuer))
}

/// The key labelled `label`: generated now, or the one an interrupted run generated and
/// recorded. `purpose` (an issuer name, `tsa`, `audit`, `ocsp:ISSUER`) goes into the audit
/// entry.
pub(crate) async fn key_for(
    label: &str,
    key_type: KeyType,
    purpose: &str,
    hsm: &Hsm,
    store: &Arc<dyn Store>,
) -> Result<SubjectPublicKeyInfoOwned, CaError> {
    let recorded = store.ca_key(label).await?;
    let in_hsm = hsm.key_exists(label).await?;
    match (recorded, in_hsm) {
        (Some(rec), true) => {
            let spki = hsm.public_key(label).await?;
            let der = spki
                .to_der()
                .map_err(|e| CaError::Internal(format!("encoding public key: {e}")))?;
            if der != rec.spki_der {
                return Err(CaError::FailedPrecondition(format!(
                    "key {label:?} in the HSM is not the key the ceremony recorded; refusing to use it"
                )));
            }
            tracing::info!(key = %label, "reusing the key an earlier ceremony run generated");
            Ok(spki)
        }
        (Some(_), false) => Err(CaError::FailedPrecondition(format!(
            "key {label:?} is recorded in the store but missing from the HSM"
        ))),
        (None, true) => Err(CaError::FailedPrecondition(format!(
            "a key labelled {label:?} already exists in the HSM and was not made by this CA's ceremony; refusing to overwrite or adopt it"
        ))),
        (None, false) => {
            let spki = hsm.generate_key(label, key_type).await?;
            let spki_der = spki
                .to_der()
                .map_err(|e| CaError::Internal(format!("encoding public key: {e}")))?;
            let audit = AuditEvent {
                actor: ACTOR.into(),
                action: "ceremony.key_generated".into(),
                object: label.to_owned(),
                request_digest: None,
                detail: serde_json::json!({ "purpose": purpose, "key_type": key_type.name() })
                    .to_string(),
            };
            store
                .record_ca_key(
                    CaKeyRecord {
                        label: label.to_owned(),
                        key_type: key_type.name().into(),
                        spki_der,
                        created_at: unix_now(),
                    },
                    audit,
                )
                .await?;
            Ok(spki)
        }
    }
}

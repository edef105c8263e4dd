//! Which RA is calling: the client certificate rustls has already verified is matched against
//! the `[[ra]]` entries of the configuration, by subject (every attribute equal, in any
//! order), by the SHA-256 of its SubjectPublicKeyInfo, or by both when both are configured.
//! A certificate that matches no entry is refused: there is no anonymous or default RA.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use der::asn1::{Any, ObjectIdentifier};
use der::{Decode, Encode, Tag, Tagged};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

use super::error::Refusal;
use crate::config::{Config, ConfigError, RaOperation};
use crate::pki::SubjectSpec;

/// One configured RA office and what it may do.
#[derive(Debug)]
pub struct Ra {
    /// The RA's name, recorded as the actor of everything it does.
    pub name: String,
    /// Subject attributes a certificate must carry, as (OID, value), sorted; `None` when the
    /// RA is matched by key alone.
    subject: Option<Vec<(ObjectIdentifier, String)>>,
    /// SHA-256 of the DER SubjectPublicKeyInfo; `None` when matched by subject alone.
    spki_sha256: Option<[u8; 32]>,
    /// Profiles the RA may use and see.
    pub profiles: BTreeSet<String>,
    /// Operations the RA may call.
    pub operations: BTreeSet<RaOperation>,
    /// `false`: the office is suspended (`[[ra]] enabled = false`); every call is refused.
    pub enabled: bool,
}

/// The client's own certificate (the first of `peer_certs`, as rustls verified them), parsed.
pub fn leaf_certificate(peer_certs: Option<&[impl AsRef<[u8]>]>) -> Result<Certificate, Refusal> {
    let leaf = peer_certs
        .and_then(|c| c.first())
        .ok_or_else(|| Refusal::denied("no client certificate was presented"))?;
    Certificate::from_der(leaf.as_ref())
        .map_err(|_| Refusal::denied("the client certificate does not parse"))
}

/// The configured RAs, and the names of the configured profiles (to tell a profile that
/// does not exist from one an RA was not granted). A configuration reload replaces the RAs
/// in place ([`RaDirectory::replace`]), so every service holding the directory sees the new
/// entries from its next call; profiles are part of the CA's structure and change only with
/// a restart.
#[derive(Debug, Default)]
pub struct RaDirectory {
    ras: RwLock<Vec<Arc<Ra>>>,
    pub(super) profiles: BTreeSet<String>,
}

/// A certificate's subject as (OID, value) pairs, sorted, with the value decoded as text;
/// `None` if an attribute's value is not a string type.
fn subject_pairs(cert: &Certificate) -> Option<Vec<(ObjectIdentifier, String)>> {
    let mut out = Vec::new();
    for atv in cert.tbs_certificate().subject().iter() {
        out.push((atv.oid, any_text(&atv.value)?));
    }
    out.sort();
    Some(out)
}

/// The text of a directory-string value, whatever string type encodes it.
fn any_text(v: &Any) -> Option<String> {
    let bytes = v.value();
    match v.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString => {
            String::from_utf8(bytes.to_vec()).ok()
        }
        Tag::BmpString => {
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // T.61 as written by old tools is in practice Latin-1.
        Tag::TeletexString => Some(bytes.iter().map(|b| char::from(*b)).collect()),
        _ => None,
    }
}

impl RaDirectory {
    /// The RAs of a configuration (already validated when it was loaded).
    pub fn from_config(cfg: &Config) -> Result<RaDirectory, ConfigError> {
        let mut ras = Vec::new();
        for (i, rc) in cfg.ras.iter().enumerate() {
            let subject = match &rc.subject {
                Some(text) => {
                    let spec = SubjectSpec::parse(text).map_err(|e| ConfigError::Invalid {
                        key: format!("ra[{i}].subject"),
                        problem: e.to_string(),
                    })?;
                    let mut pairs: Vec<_> = spec
                        .attrs()
                        .iter()
                        .map(|(a, v)| (a.oid(), v.clone()))
                        .collect();
                    pairs.sort();
                    Some(pairs)
                }
                None => None,
            };
            let spki_sha256 = match &rc.spki_sha256 {
                Some(h) => {
                    let bytes = hex::decode(h)
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok());
                    Some(bytes.ok_or_else(|| ConfigError::Invalid {
                        key: format!("ra[{i}].spki_sha256"),
                        problem: "must be 64 hex digits".into(),
                    })?)
                }
                None => None,
            };
            ras.push(Arc::new(Ra {
                name: rc.name.clone(),
                subject,
                spki_sha256,
                profiles: rc.profiles.iter().cloned().collect(),
                operations: rc.operations.iter().copied().collect(),
                enabled: rc.enabled,
            }));
        }
        Ok(RaDirectory {
            ras: RwLock::new(ras),
            profiles: cfg.profiles.keys().cloned().collect(),
        })
    }

    /// Take the RA entries of `other` (a reloaded configuration's) in place of these.
    pub fn replace(&self, other: RaDirectory) {
        let new = other
            .ras
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        *self.ras.write().unwrap_or_else(PoisonError::into_inner) = new;
    }

    /// The names of the configured RAs, each with whether it is enabled.
    pub fn summary(&self) -> Vec<(String, bool)> {
        self.ras
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|r| (r.name.clone(), r.enabled))
            .collect()
    }

    /// The RA presenting `peer_certs` (leaf first, as rustls verified it).
    pub fn identify(&self, peer_certs: Option<&[impl AsRef<[u8]>]>) -> Result<Arc<Ra>, Refusal> {
        self.identify_certificate(&leaf_certificate(peer_certs)?)
    }

    /// The RA a parsed client certificate belongs to.
    pub fn identify_certificate(&self, cert: &Certificate) -> Result<Arc<Ra>, Refusal> {
        let subject = subject_pairs(cert);
        let spki_hash: Option<[u8; 32]> = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .ok()
            .map(|d| Sha256::digest(d).into());
        let ras = self.ras.read().unwrap_or_else(PoisonError::into_inner);
        let found = ras.iter().find(|ra| {
            let by_subject = ra
                .subject
                .as_ref()
                .is_none_or(|want| subject.as_ref() == Some(want));
            let by_key = ra
                .spki_sha256
                .as_ref()
                .is_none_or(|want| spki_hash.as_ref() == Some(want));
            by_subject && by_key
        });
        found.cloned().ok_or_else(|| {
            Refusal::denied(format!(
                "client certificate {} is not a configured RA",
                cert.tbs_certificate().subject()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::asn1::{PrintableStringRef, Utf8StringRef};

    #[test]
    fn string_types_decode_to_the_same_text() {
        let u = Any::encode_from(&Utf8StringRef::new("Signet RA").unwrap()).unwrap();
        let p = Any::encode_from(&PrintableStringRef::new("Signet RA").unwrap()).unwrap();
        assert_eq!(any_text(&u), any_text(&p));
        let bmp = Any::new(Tag::BmpString, vec![0x5b, 0x81, 0x6d, 0x25]).unwrap();
        assert_eq!(any_text(&bmp).as_deref(), Some("宁津"));
        let int = Any::new(Tag::Integer, vec![1]).unwrap();
        assert_eq!(any_text(&int), None);
    }
}

//! CRL building (RFC 5280 section 5): the v2 TBSCertList of an issuer, kept apart from
//! signing (an HSM call elsewhere), then the signed CRL assembled and checked against the
//! issuer's key before anyone can fetch it. Pure, no I/O.

use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use der::asn1::{BitString, GeneralizedTime, OctetString};
use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;
use x509_cert::certificate::Version;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlNumber, CrlReason};
use x509_cert::serial_number::SerialNumber;

use super::PkiError;
use super::alg::SignatureAlgorithm;
use super::cert::{extension, issuer_key_id, to_time};
use super::revocation::RevocationReason;
use super::verify::verify_signature;

/// id-ce-invalidityDate (RFC 5280 section 5.3.2).
const ID_CE_INVALIDITY_DATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.24");

fn enc(e: der::Error) -> PkiError {
    PkiError::Encoding(e.to_string())
}

/// One revoked certificate as the CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlEntry {
    /// The serial number's DER content octets.
    pub serial: Vec<u8>,
    /// When the CA revoked it (revocationDate).
    pub revoked_at: SystemTime,
    /// Why; `Unspecified` is left out of the entry, as RFC 5280 section 5.3.1 asks.
    pub reason: RevocationReason,
    /// When the subscriber reported the key compromised or the certificate otherwise
    /// invalid (invalidityDate), if known.
    pub reported_at: Option<SystemTime>,
}

/// What one CRL says, apart from who signs it.
#[derive(Clone, Debug)]
pub struct CrlContent<'a> {
    /// The cRLNumber: larger than every number this issuer used before.
    pub number: u64,
    /// thisUpdate.
    pub this_update: SystemTime,
    /// nextUpdate.
    pub next_update: SystemTime,
    /// The revoked, unexpired certificates of the issuer.
    pub entries: &'a [CrlEntry],
}

pub(crate) fn reason_of(r: RevocationReason) -> CrlReason {
    match r {
        RevocationReason::Unspecified => CrlReason::Unspecified,
        RevocationReason::KeyCompromise => CrlReason::KeyCompromise,
        RevocationReason::CaCompromise => CrlReason::CaCompromise,
        RevocationReason::AffiliationChanged => CrlReason::AffiliationChanged,
        RevocationReason::Superseded => CrlReason::Superseded,
        RevocationReason::CessationOfOperation => CrlReason::CessationOfOperation,
        RevocationReason::CertificateHold => CrlReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise => CrlReason::AaCompromise,
    }
}

fn entry(e: &CrlEntry) -> Result<RevokedCert, PkiError> {
    let mut exts = Vec::new();
    if e.reason != RevocationReason::Unspecified {
        exts.push(extension(&reason_of(e.reason), false)?);
    }
    if let Some(t) = e.reported_at {
        // invalidityDate is a GeneralizedTime whatever the year (RFC 5280 section 5.3.2).
        let t = GeneralizedTime::from_system_time(t)
            .map_err(|err| PkiError::invalid("reported_at", format!("out of range: {err}")))?;
        exts.push(Extension {
            extn_id: ID_CE_INVALIDITY_DATE,
            critical: false,
            extn_value: OctetString::new(t.to_der().map_err(enc)?).map_err(enc)?,
        });
    }
    Ok(RevokedCert {
        serial_number: SerialNumber::new(&e.serial)
            .map_err(|err| PkiError::invalid("serial", err.to_string()))?,
        revocation_date: to_time(e.revoked_at, "revoked_at")?,
        crl_entry_extensions: (!exts.is_empty()).then_some(exts),
    })
}

/// The v2 TBSCertList of `issuer` (signed with `signature`): issuer name, thisUpdate,
/// nextUpdate, the entries, authorityKeyIdentifier and cRLNumber. Times are UTCTime through
/// 2049 and GeneralizedTime from 2050.
pub fn build_tbs_crl(
    issuer: &Certificate,
    signature: SignatureAlgorithm,
    content: &CrlContent<'_>,
) -> Result<TbsCertList, PkiError> {
    if content.next_update <= content.this_update {
        return Err(PkiError::invalid(
            "next_update",
            "must be after this_update",
        ));
    }
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(issuer_key_id(issuer)).map_err(enc)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let number = CrlNumber::try_from(content.number).map_err(enc)?;
    let revoked = content
        .entries
        .iter()
        .map(entry)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TbsCertList {
        version: Version::V2,
        signature: signature.algorithm_identifier(),
        issuer: issuer.tbs_certificate().subject().clone(),
        this_update: to_time(content.this_update, "this_update")?,
        next_update: Some(to_time(content.next_update, "next_update")?),
        // An empty SEQUENCE OF is not allowed: no entries means the field is absent.
        revoked_certificates: (!revoked.is_empty()).then_some(revoked),
        crl_extensions: Some(vec![extension(&aki, false)?, extension(&number, false)?]),
    })
}

/// Put TBSCertList and signature together (signatureAlgorithm = tbs.signature).
pub fn assemble_crl(tbs: TbsCertList, signature: &[u8]) -> Result<CertificateList, PkiError> {
    let crl = CertificateList {
        signature_algorithm: tbs.signature.clone(),
        tbs_cert_list: tbs,
        signature: BitString::from_bytes(signature).map_err(enc)?,
    };
    // Round trip, so what is checked and served is exactly what decodes.
    CertificateList::from_der(&crl.to_der().map_err(enc)?).map_err(enc)
}

/// Check a CRL's signature against the issuer's public key (done before it is published).
pub fn check_crl_signed_by(
    crl: &CertificateList,
    issuer_spki: &SubjectPublicKeyInfoOwned,
) -> Result<(), PkiError> {
    let what = "CRL";
    if crl.signature_algorithm != crl.tbs_cert_list.signature {
        return Err(PkiError::invalid(
            what,
            "signatureAlgorithm differs from tbsCertList.signature",
        ));
    }
    let message = crl.tbs_cert_list.to_der().map_err(enc)?;
    let signature = crl
        .signature
        .as_bytes()
        .ok_or_else(|| PkiError::invalid(what, "signature BIT STRING has unused bits"))?;
    verify_signature(
        issuer_spki,
        &crl.signature_algorithm,
        &message,
        signature,
        what,
    )
}

/// The cRLNumber of a CRL, if it has one that fits 64 bits.
pub fn crl_number(crl: &CertificateList) -> Option<u64> {
    let ext = crl
        .tbs_cert_list
        .crl_extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER)?;
    let n = CrlNumber::from_der(ext.extn_value.as_bytes()).ok()?;
    let bytes = n.0.as_bytes();
    if bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::soft_signer::SoftKey;
    use crate::pki::test_ca;
    use std::time::Duration;

    #[test]
    fn a_signed_crl_verifies_and_carries_number_reason_and_invalidity_date() {
        let key = SoftKey::p256(7);
        let issuer = test_ca(&key, "Test CRL Issuer");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let entries = [
            CrlEntry {
                serial: vec![0x7f, 1, 2, 3],
                revoked_at: now,
                reason: RevocationReason::KeyCompromise,
                reported_at: Some(now - Duration::from_secs(3600)),
            },
            CrlEntry {
                serial: vec![0x01],
                revoked_at: now,
                reason: RevocationReason::Unspecified,
                reported_at: None,
            },
        ];
        let content = CrlContent {
            number: 300,
            this_update: now,
            next_update: now + Duration::from_secs(86_400),
            entries: &entries,
        };
        let tbs = build_tbs_crl(&issuer, key.default_alg(), &content).unwrap();
        let sig = key.sign(key.default_alg(), &tbs.to_der().unwrap());
        let crl = assemble_crl(tbs, &sig).unwrap();
        check_crl_signed_by(&crl, &key.spki()).unwrap();
        assert_eq!(crl_number(&crl), Some(300));
        let revoked = crl.tbs_cert_list.revoked_certificates.as_ref().unwrap();
        assert_eq!(revoked[0].crl_entry_extensions.as_ref().unwrap().len(), 2);
        assert!(revoked[1].crl_entry_extensions.is_none());
        assert!(matches!(
            crl.tbs_cert_list.this_update,
            x509_cert::time::Time::UtcTime(_)
        ));
        // Another key does not verify it.
        assert!(check_crl_signed_by(&crl, &SoftKey::p256(8).spki()).is_err());
    }

    #[test]
    fn an_empty_crl_has_no_revoked_certificates_field() {
        let key = SoftKey::p256(9);
        let issuer = test_ca(&key, "Test CRL Issuer");
        let now = SystemTime::now();
        let content = CrlContent {
            number: 1,
            this_update: now,
            next_update: now + Duration::from_secs(3600),
            entries: &[],
        };
        let tbs = build_tbs_crl(&issuer, key.default_alg(), &content).unwrap();
        assert!(tbs.revoked_certificates.is_none());
        let backwards = CrlContent {
            next_update: now,
            ..content
        };
        assert!(build_tbs_crl(&issuer, key.default_alg(), &backwards).is_err());
    }
}

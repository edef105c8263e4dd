//! Certs-only PKCS#7 (the `.p7b` a CA hands out for its chain) and PEM armour: how relying
//! parties and Windows-style tooling expect to receive CA certificates.

use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
use const_oid::db::rfc5911::{ID_DATA, ID_SIGNED_DATA};
use der::asn1::SetOfVec;
use der::{Any, Encode};
use x509_cert::Certificate;

use super::PkiError;

fn enc(e: der::Error) -> PkiError {
    PkiError::Encoding(e.to_string())
}

/// A DER ContentInfo holding a degenerate SignedData (RFC 5652; version 1, no digest
/// algorithms, id-data without content, the certificates, no signers): the `.p7b` format.
/// Duplicates are dropped. DER sorts the SET OF (der's SetOfVec does it), so the order given
/// carries no meaning; `openssl crl2pkcs7` keeps its input order instead, so its bytes can differ.
pub fn certs_only(certs: &[Certificate]) -> Result<Vec<u8>, PkiError> {
    if certs.is_empty() {
        return Err(PkiError::invalid(
            "certs",
            "a .p7b needs at least one certificate",
        ));
    }
    let mut unique: Vec<Certificate> = Vec::with_capacity(certs.len());
    for c in certs {
        if !unique.contains(c) {
            unique.push(c.clone());
        }
    }
    let set = SetOfVec::try_from(
        unique
            .into_iter()
            .map(CertificateChoices::Certificate)
            .collect::<Vec<_>>(),
    )
    .map_err(enc)?;
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::default(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(set)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::default()),
    };
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(enc)?,
    }
    .to_der()
    .map_err(enc)
}

/// PEM armour (RFC 7468) of one DER object under `label`, LF line ends.
pub fn pem(label: &str, der: &[u8]) -> String {
    // Encoding into a String cannot fail for in-memory DER of any size signet handles.
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// One certificate as PEM.
pub fn pem_certificate(der: &[u8]) -> String {
    pem("CERTIFICATE", der)
}

/// Certificates as concatenated PEM, in the order given (a chain file: leaf first).
pub fn pem_certificates<D: AsRef<[u8]>>(ders: impl IntoIterator<Item = D>) -> String {
    ders.into_iter()
        .map(|d| pem_certificate(d.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_its_certificates_as_pem_in_order() {
        let (a, b) = (vec![0x30, 0x01, 0x00], vec![0x30, 0x02, 0x01, 0x02]);
        let chain = pem_certificates([&a, &b]);
        assert_eq!(chain, pem_certificate(&a) + &pem_certificate(&b));
        assert!(chain.starts_with("-----BEGIN CERTIFICATE-----\nMAEA\n"));
    }

    #[test]
    fn empty_chain_is_refused() {
        assert!(certs_only(&[]).is_err());
    }

    #[test]
    fn certificates_are_deduplicated_and_in_der_set_order() {
        use crate::pki::soft_signer::SoftKey;
        let a = crate::pki::test_ca(&SoftKey::rsa2048(), "A");
        let b = crate::pki::test_ca(&SoftKey::p256(4), "B");
        let one = certs_only(&[a.clone(), b.clone()]).unwrap();
        let two = certs_only(&[b.clone(), a.clone(), b.clone()]).unwrap();
        assert_eq!(one, two);
        let (da, db) = (a.to_der().unwrap(), b.to_der().unwrap());
        let find = |d: &[u8]| one.windows(d.len()).position(|w| w == d).unwrap();
        // The shorter (P-256) certificate sorts first: its length octets are smaller.
        assert!(db.len() < da.len());
        assert!(find(&db) < find(&da));
    }
}

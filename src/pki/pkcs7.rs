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

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// PEM armour (RFC 7468): `-----BEGIN {label}-----`, base64 in 64-character lines, `-----END
/// {label}-----`, each line ending in LF.
pub fn pem(label: &str, der: &[u8]) -> String {
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(BASE64[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_matches_the_der_crate() {
        for len in [1usize, 2, 3, 47, 48, 49, 100, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let ours = pem("CERTIFICATE", &data);
            let theirs =
                der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &data).unwrap();
            assert_eq!(ours, theirs, "length {len}");
        }
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

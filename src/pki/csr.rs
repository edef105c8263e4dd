//! PKCS#10 certification requests from subscribers: parsed strictly, their self-signature
//! checked as proof of possession, and their key classified into a [`KeyType`] signet issues
//! for. The subject and attributes of a CSR are ignored: the RA's verified data wins.

use der::asn1::{AnyRef, BitString, Int};
use der::{Decode, Encode, Reader, Sequence, SliceReader};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::request::CertReqInfo;

use super::PkiError;
use super::alg::KeyType;
use super::verify::{SM2_STANDARD_ID, key_type_of, verify_signature_sm2_ids};

/// Largest CSR accepted, in bytes. A 4096-bit RSA request is under 2 KiB; anything near this
/// limit is not a request signet would issue for.
pub const MAX_CSR_LEN: usize = 64 * 1024;

/// A CSR that parsed, whose signature verified, and whose key signet accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedCsr {
    /// The request exactly as received.
    pub der: Vec<u8>,
    /// The subscriber's public key, to be copied into the certificate.
    pub spki: SubjectPublicKeyInfoOwned,
    /// The key's type and size.
    pub key_type: KeyType,
}

/// CertificationRequest with the info kept as raw bytes, so the signature is checked over
/// exactly what the subscriber signed.
#[derive(Sequence)]
struct RawCsr<'a> {
    info: AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

fn bad_csr(problem: impl Into<String>) -> PkiError {
    PkiError::invalid("csr", problem)
}

/// Parse a DER PKCS#10 request (refusing more than 64 KiB, trailing data and versions other
/// than v1), verify its self-signature and classify its key. Every error names the field `csr`.
pub fn check_csr(der: &[u8]) -> Result<CheckedCsr, PkiError> {
    if der.is_empty() {
        return Err(bad_csr("is empty"));
    }
    if der.len() > MAX_CSR_LEN {
        return Err(bad_csr(format!(
            "is {} bytes long; at most {MAX_CSR_LEN} accepted",
            der.len()
        )));
    }
    let not_pkcs10 = |e: der::Error| bad_csr(format!("not a DER PKCS#10 request: {e}"));
    let mut reader = SliceReader::new(der).map_err(not_pkcs10)?;
    let raw = RawCsr::decode(&mut reader).map_err(not_pkcs10)?;
    let rest = u32::from(reader.remaining_len());
    if rest != 0 {
        return Err(bad_csr(format!(
            "{rest} bytes of trailing data after the request"
        )));
    }
    let info_der = raw.info.to_der().map_err(not_pkcs10)?;
    // Look at the version before decoding the rest, to say what is wrong with it.
    let version = SliceReader::new(raw.info.value())
        .and_then(|mut r| Int::decode(&mut r))
        .map_err(not_pkcs10)?;
    if version.as_bytes() != [0] {
        return Err(bad_csr(format!(
            "version field is 0x{}; only v1 (0) is defined",
            hex::encode(version.as_bytes())
        )));
    }
    let info = CertReqInfo::from_der(&info_der).map_err(not_pkcs10)?;
    let spki = info.public_key;
    let key_type = key_type_of(&spki, "csr")?;
    let signature = raw
        .signature
        .as_bytes()
        .ok_or_else(|| bad_csr("signature BIT STRING has unused bits"))?;
    // An SM2 request is signed under its maker's distinguishing ID, which PKCS#10 does not
    // carry: GM/T 0009's default (what signet's tokens and most Chinese tools use) or the empty
    // ID OpenSSL 3.0 signs with unless told `-sigopt distid:...`. Either proves possession.
    verify_signature_sm2_ids(
        &spki,
        &raw.algorithm,
        &info_der,
        signature,
        "csr",
        &[SM2_STANDARD_ID, ""],
    )
    .map_err(|e| match e {
        PkiError::BadSignature { .. } => bad_csr(
            "self-signature does not verify, so the request does not prove possession of the key",
        ),
        other => other,
    })?;
    Ok(CheckedCsr {
        der: der.to_vec(),
        spki,
        key_type,
    })
}

/// The DER CertificationRequestInfo (v1, no attributes) naming `subject` and `spki`: the
/// bytes a key on a subscriber's token signs to prove possession.
pub fn request_info(
    subject: &super::SubjectSpec,
    spki: &SubjectPublicKeyInfoOwned,
) -> Result<Vec<u8>, PkiError> {
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject: subject.to_name()?,
        public_key: spki.clone(),
        attributes: Default::default(),
    };
    info.to_der()
        .map_err(|e| PkiError::Encoding(format!("CertificationRequestInfo: {e}")))
}

/// A DER CertificationRequest from the info [`request_info`] made, the algorithm the key
/// signed with and the signature (DER Ecdsa-Sig-Value for ECDSA).
pub fn assemble_request(
    info_der: &[u8],
    algorithm: super::SignatureAlgorithm,
    signature: &[u8],
) -> Result<Vec<u8>, PkiError> {
    let encoding = |e: der::Error| PkiError::Encoding(format!("CertificationRequest: {e}"));
    RawCsr {
        info: AnyRef::from_der(info_der).map_err(encoding)?,
        algorithm: algorithm.algorithm_identifier(),
        signature: BitString::from_bytes(signature).map_err(encoding)?,
    }
    .to_der()
    .map_err(encoding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::SignatureAlgorithm;
    use crate::pki::alg::oid;
    use crate::pki::name::SubjectSpec;
    use crate::pki::soft_signer::SoftKey;
    use crate::pki::verify::RsaPublicKey;
    use const_oid::ObjectIdentifier;
    use der::asn1::UintRef;
    use der::asn1::{Any, OctetString};
    use x509_cert::request::{CertReq, Version};

    /// A CSR built by hand, signed by `key` with `alg`.
    pub(crate) fn make_csr(key: &SoftKey, alg: SignatureAlgorithm) -> Vec<u8> {
        csr_with_spki(key.spki(), |tbs| key.sign(alg, tbs), alg)
    }

    fn csr_with_spki(
        spki: SubjectPublicKeyInfoOwned,
        sign: impl Fn(&[u8]) -> Vec<u8>,
        alg: SignatureAlgorithm,
    ) -> Vec<u8> {
        let info = CertReqInfo {
            version: Version::V1,
            subject: SubjectSpec::parse("CN=csr test")
                .unwrap()
                .to_name()
                .unwrap(),
            public_key: spki,
            attributes: Default::default(),
        };
        let sig = sign(&info.to_der().unwrap());
        CertReq {
            info,
            algorithm: alg.algorithm_identifier(),
            signature: BitString::from_bytes(&sig).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    fn problem(e: PkiError) -> String {
        match e {
            PkiError::Invalid { field, problem } => {
                assert_eq!(field, "csr", "{problem}");
                problem
            }
            other => panic!("expected an input error naming csr, got {other:?}"),
        }
    }

    #[test]
    fn csrs_of_every_accepted_key_and_algorithm_pass() {
        let cases = [
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPkcs1Sha256),
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPkcs1Sha384),
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPssSha256),
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPssSha384),
            (SoftKey::p256(7), SignatureAlgorithm::EcdsaSha256),
            (SoftKey::p384(7), SignatureAlgorithm::EcdsaSha384),
            (SoftKey::ed25519(7), SignatureAlgorithm::Ed25519),
        ];
        for (key, alg) in cases {
            let der = make_csr(&key, alg);
            let checked = check_csr(&der).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(checked.key_type, key.key_type());
            assert_eq!(checked.spki, key.spki());
            assert_eq!(checked.der, der);
        }
    }

    #[test]
    fn csr_with_a_flipped_signature_byte_is_refused_as_no_proof_of_possession() {
        for (key, alg) in [
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPkcs1Sha256),
            (SoftKey::p256(3), SignatureAlgorithm::EcdsaSha256),
            (SoftKey::ed25519(3), SignatureAlgorithm::Ed25519),
        ] {
            let mut der = make_csr(&key, alg);
            let n = der.len();
            der[n - 5] ^= 0x01;
            let p = problem(check_csr(&der).unwrap_err());
            assert!(
                p.contains("possession") || p.contains("not a DER"),
                "{alg}: {p}"
            );
        }
    }

    #[test]
    fn garbage_trailing_data_oversize_and_wrong_version_are_refused() {
        assert!(problem(check_csr(b"").unwrap_err()).contains("empty"));
        assert!(problem(check_csr(b"\x30\x03garbage").unwrap_err()).contains("not a DER"));
        let good = make_csr(&SoftKey::p256(9), SignatureAlgorithm::EcdsaSha256);
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"xx");
        assert!(problem(check_csr(&trailing).unwrap_err()).contains("2 bytes of trailing"));
        let big = vec![0x30; MAX_CSR_LEN + 1];
        assert!(problem(check_csr(&big).unwrap_err()).contains("at most 65536"));
        // version INTEGER 0 -> 1 (the first 02 01 00 is the CertificationRequestInfo version)
        let at = good.windows(3).position(|w| w == [2, 1, 0]).unwrap();
        let mut v2 = good.clone();
        v2[at + 2] = 1;
        assert!(problem(check_csr(&v2).unwrap_err()).contains("only v1"));
    }

    fn rsa_spki(bits: usize, e: &[u8]) -> SubjectPublicKeyInfoOwned {
        let mut n = vec![0xff; bits / 8];
        n[0] = 0xc1;
        let key = RsaPublicKey {
            modulus: UintRef::new(&n).unwrap(),
            public_exponent: UintRef::new(e).unwrap(),
        };
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: oid::RSA_ENCRYPTION,
                parameters: Some(Any::from(der::asn1::Null)),
            },
            subject_public_key: BitString::from_bytes(&key.to_der().unwrap()).unwrap(),
        }
    }

    #[test]
    fn rsa_sizes_and_exponents_are_classified() {
        let e = [1, 0, 1];
        assert_eq!(
            key_type_of(&rsa_spki(2048, &e), "csr").unwrap(),
            KeyType::Rsa2048
        );
        assert_eq!(
            key_type_of(&rsa_spki(3072, &e), "csr").unwrap(),
            KeyType::Rsa3072
        );
        assert_eq!(
            key_type_of(&rsa_spki(4096, &e), "csr").unwrap(),
            KeyType::Rsa4096
        );
        assert!(key_type_of(&rsa_spki(2048, &[3]), "csr").is_ok());
        let p = problem(key_type_of(&rsa_spki(1024, &e), "csr").unwrap_err());
        assert_eq!(p, "RSA key of 1024 bits; at least 2048 required");
        let p = problem(key_type_of(&rsa_spki(2560, &e), "csr").unwrap_err());
        assert!(p.contains("2560 bits"), "{p}");
        assert!(problem(key_type_of(&rsa_spki(2048, &[1]), "csr").unwrap_err()).contains("odd"));
        assert!(
            problem(key_type_of(&rsa_spki(2048, &[1, 0, 0]), "csr").unwrap_err()).contains("odd")
        );
        // The CA's exponent rule for subscribers: 65537 by default, or any odd one from it.
        use crate::pki::verify::{RsaExponent, check_rsa_exponent};
        for (exp, f4, odd) in [
            (&[1u8, 0, 1][..], true, true),
            (&[3][..], false, false),
            (&[1, 0, 3][..], false, true),
            (&[1, 0, 0, 1][..], false, true),
            (&[0xff, 0xff][..], false, false),
        ] {
            let spki = rsa_spki(2048, exp);
            assert_eq!(
                check_rsa_exponent(&spki, RsaExponent::F4, "csr").is_ok(),
                f4,
                "{exp:?}"
            );
            assert_eq!(
                check_rsa_exponent(&spki, RsaExponent::OddAtLeast65537, "csr").is_ok(),
                odd,
                "{exp:?}"
            );
        }
        let p =
            problem(check_rsa_exponent(&rsa_spki(2048, &[3]), RsaExponent::F4, "csr").unwrap_err());
        assert!(
            p.starts_with("RSA public exponent 3 is not accepted"),
            "{p}"
        );
        check_rsa_exponent(&SoftKey::p256(1).spki(), RsaExponent::F4, "csr").unwrap();
        assert_eq!(
            "odd-at-least-65537".parse(),
            Ok(RsaExponent::OddAtLeast65537)
        );
        assert!("3".parse::<RsaExponent>().is_err());
        let mut absent = rsa_spki(2048, &e);
        absent.algorithm.parameters = None;
        assert!(problem(key_type_of(&absent, "csr").unwrap_err()).contains("NULL"));
    }

    fn ec_spki(curve: &str, point: &[u8]) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: oid::EC_PUBLIC_KEY,
                parameters: Some(Any::encode_from(&ObjectIdentifier::new_unwrap(curve)).unwrap()),
            },
            subject_public_key: BitString::from_bytes(point).unwrap(),
        }
    }

    #[test]
    fn other_curves_and_bad_points_are_refused() {
        let mut point = vec![4u8];
        point.extend_from_slice(&[1u8; 64]);
        let p = problem(key_type_of(&ec_spki("1.3.132.0.10", &point), "csr").unwrap_err());
        assert!(p.contains("secp256k1") && p.contains("not accepted"), "{p}");
        let p = problem(key_type_of(&ec_spki("1.2.840.10045.3.1.7", &point), "csr").unwrap_err());
        assert!(p.contains("not a point on the curve"), "{p}");
        let good = SoftKey::p256(5).spki();
        let compressed = p256::ecdsa::SigningKey::from_slice(&[5; 32])
            .unwrap()
            .verifying_key()
            .to_sec1_point(true);
        let p = problem(
            key_type_of(
                &ec_spki("1.2.840.10045.3.1.7", compressed.as_bytes()),
                "csr",
            )
            .unwrap_err(),
        );
        assert!(p.contains("uncompressed"), "{p}");
        let mut implicit = good.clone();
        implicit.algorithm.parameters = Some(Any::from(der::asn1::Null));
        assert!(problem(key_type_of(&implicit, "csr").unwrap_err()).contains("namedCurve"));
        let dsa = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.2.840.10040.4.1"),
                parameters: None,
            },
            subject_public_key: BitString::from_bytes(
                &OctetString::new(vec![1, 2, 3]).unwrap().to_der().unwrap(),
            )
            .unwrap(),
        };
        let p = problem(key_type_of(&dsa, "csr").unwrap_err());
        assert!(p.contains("not accepted"), "{p}");
    }
}

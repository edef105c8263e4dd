//! A software signer for tests only: keys from fixed seeds (and one fixed RSA test key), so
//! `pki` can be exercised without an HSM. Included by path into the `pki` unit tests and into
//! integration tests (outside `tests/common`, so it needs no shared `mod.rs`); the including
//! module's parent provides `KeyType`, `SignatureAlgorithm` and `alg`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use der::asn1::BitString;
use der::{Any, Decode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::alg::oid;
use super::{KeyType, SignatureAlgorithm};

/// A fixed 2048-bit RSA test key (PKCS#8 DER, made with `openssl genpkey`; test use only).
const RSA_2048_PKCS8: &[u8] = include_bytes!("../data/rsa2048-test-ca.pk8.der");

/// A private key held in memory; never anything but a test fixture.
pub enum SoftKey {
    /// RSA (the fixed test key).
    Rsa(Box<rsa::PrivateKey>),
    /// P-256 from a seed.
    P256(p256::ecdsa::SigningKey),
    /// P-384 from a seed.
    P384(p384::ecdsa::SigningKey),
    /// Ed25519 from a seed.
    Ed25519(ed25519_dalek::SigningKey),
}

impl SoftKey {
    /// The fixed RSA-2048 test key.
    pub fn rsa2048() -> SoftKey {
        use rsa::pkcs8::DecodePrivateKey;
        SoftKey::Rsa(Box::new(
            rsa::PrivateKey::from_pkcs8_der(RSA_2048_PKCS8).expect("test RSA key decodes"),
        ))
    }

    /// A P-256 key derived from `seed` (any byte; the scalar is `seed` repeated).
    pub fn p256(seed: u8) -> SoftKey {
        SoftKey::P256(p256::ecdsa::SigningKey::from_slice(&[seed.max(1); 32]).unwrap())
    }

    /// A P-384 key derived from `seed`.
    pub fn p384(seed: u8) -> SoftKey {
        SoftKey::P384(p384::ecdsa::SigningKey::from_slice(&[seed.max(1); 48]).unwrap())
    }

    /// An Ed25519 key derived from `seed`.
    pub fn ed25519(seed: u8) -> SoftKey {
        SoftKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match self {
            SoftKey::Rsa(_) => KeyType::Rsa2048,
            SoftKey::P256(_) => KeyType::P256,
            SoftKey::P384(_) => KeyType::P384,
            SoftKey::Ed25519(_) => KeyType::Ed25519,
        }
    }

    /// The algorithm a CA with this key signs with by default.
    pub fn default_alg(&self) -> SignatureAlgorithm {
        self.key_type().default_signature_algorithm()
    }

    /// The public key as a SubjectPublicKeyInfo.
    pub fn spki(&self) -> SubjectPublicKeyInfoOwned {
        let ec = |curve, point: &[u8]| SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: oid::EC_PUBLIC_KEY,
                parameters: Some(Any::encode_from(&curve).unwrap()),
            },
            subject_public_key: BitString::from_bytes(point).unwrap(),
        };
        match self {
            SoftKey::Rsa(k) => {
                use rsa::pkcs8::EncodePublicKey;
                let der = rsa::PublicKey::from(k.as_ref())
                    .to_public_key_der()
                    .unwrap();
                SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).unwrap()
            }
            SoftKey::P256(k) => ec(
                oid::SECP256R1,
                k.verifying_key().to_sec1_point(false).as_bytes(),
            ),
            SoftKey::P384(k) => ec(
                oid::SECP384R1,
                k.verifying_key().to_sec1_point(false).as_bytes(),
            ),
            SoftKey::Ed25519(k) => SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: oid::ED25519,
                    parameters: None,
                },
                subject_public_key: BitString::from_bytes(&k.verifying_key().to_bytes()).unwrap(),
            },
        }
    }

    /// Sign `msg` with `alg` the way the HSM would: PKCS#1 v1.5 or PSS (salt = hash length),
    /// DER Ecdsa-Sig-Value, or a raw 64-byte Ed25519 signature.
    pub fn sign(&self, alg: SignatureAlgorithm, msg: &[u8]) -> Vec<u8> {
        assert!(
            alg.fits_key(self.key_type()),
            "{alg} does not fit {}",
            self.key_type()
        );
        match self {
            SoftKey::Rsa(k) => match alg {
                SignatureAlgorithm::RsaPkcs1Sha256 => k.pkcs1v15_sign::<sha2::Sha256>(msg),
                SignatureAlgorithm::RsaPkcs1Sha384 => k.pkcs1v15_sign::<sha2::Sha384>(msg),
                SignatureAlgorithm::RsaPssSha256 => k.pss_sign::<sha2::Sha256>(msg),
                SignatureAlgorithm::RsaPssSha384 => k.pss_sign::<sha2::Sha384>(msg),
                _ => unreachable!(),
            }
            .unwrap(),
            SoftKey::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::DerSignature = k.sign(msg);
                sig.as_bytes().to_vec()
            }
            SoftKey::P384(k) => {
                use p384::ecdsa::signature::Signer;
                let sig: p384::ecdsa::DerSignature = k.sign(msg);
                sig.as_bytes().to_vec()
            }
            SoftKey::Ed25519(k) => {
                use ed25519_dalek::Signer;
                k.sign(msg).to_bytes().to_vec()
            }
        }
    }
}

//! Key types and signature algorithms signet knows, shared by `pki` (encoding, verification)
//! and `hsm` (key generation, signing mechanisms).

use std::fmt;
use std::str::FromStr;

use const_oid::ObjectIdentifier;
use der::asn1::Null;
use der::{Any, Sequence};
use serde::{Deserialize, Serialize};
use spki::AlgorithmIdentifierOwned;

/// Object identifiers for the algorithms below, spelled out so a reader can check them
/// against RFC 3279, RFC 4055, RFC 5480, RFC 5758 and RFC 8410 without a lookup table.
pub mod oid {
    use const_oid::ObjectIdentifier;

    /// rsaEncryption (RFC 3279).
    pub const RSA_ENCRYPTION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    /// sha256WithRSAEncryption (RFC 4055).
    pub const SHA256_WITH_RSA: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
    /// sha384WithRSAEncryption (RFC 4055).
    pub const SHA384_WITH_RSA: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
    /// sha512WithRSAEncryption (RFC 4055).
    pub const SHA512_WITH_RSA: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
    /// id-RSASSA-PSS (RFC 4055).
    pub const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
    /// id-mgf1 (RFC 4055).
    pub const MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
    /// id-sha256 (RFC 5758).
    pub const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
    /// id-sha384 (RFC 5758).
    pub const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
    /// id-sha512 (RFC 5758).
    pub const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
    /// id-ecPublicKey (RFC 5480).
    pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// secp256r1 / prime256v1 (RFC 5480).
    pub const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    /// secp384r1 (RFC 5480).
    pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    /// ecdsa-with-SHA256 (RFC 5758).
    pub const ECDSA_WITH_SHA256: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    /// ecdsa-with-SHA384 (RFC 5758).
    pub const ECDSA_WITH_SHA384: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
    /// ecdsa-with-SHA512 (RFC 5758).
    pub const ECDSA_WITH_SHA512: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
    /// id-Ed25519 (RFC 8410).
    pub const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
    /// sm2p256v1, the SM2 curve (GM/T 0006, GB/T 33560): the namedCurve of an
    /// id-ecPublicKey SM2 key in GM/T 0015 certificates.
    pub const SM2_P256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");
    /// SM2-with-SM3 signature (GM/T 0006).
    pub const SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");
    /// The SM3 hash (GM/T 0006).
    pub const SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.401");
}

/// A key type signet can generate in an HSM or on a token, or accept in a CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// RSA with a 2048-bit modulus.
    Rsa2048,
    /// RSA with a 3072-bit modulus.
    Rsa3072,
    /// RSA with a 4096-bit modulus.
    Rsa4096,
    /// ECDSA on NIST P-256.
    P256,
    /// ECDSA on NIST P-384.
    P384,
    /// EdDSA on edwards25519.
    Ed25519,
    /// SM2 (GM/T 0003) on sm2p256v1.
    Sm2,
}

impl KeyType {
    /// Every key type, in the order they are listed to users.
    pub const ALL: [KeyType; 7] = [
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
        KeyType::P256,
        KeyType::P384,
        KeyType::Ed25519,
        KeyType::Sm2,
    ];

    /// The name used in configuration files, on the command line and in the store.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Rsa4096 => "rsa4096",
            KeyType::P256 => "p256",
            KeyType::P384 => "p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Sm2 => "sm2",
        }
    }

    /// True for the RSA sizes.
    pub fn is_rsa(self) -> bool {
        self.rsa_bits().is_some()
    }

    /// The RSA modulus length in bits, or `None` for elliptic-curve keys.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyType::Rsa2048 => Some(2048),
            KeyType::Rsa3072 => Some(3072),
            KeyType::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The signature algorithm a CA key of this type signs with unless configured otherwise.
    pub fn default_signature_algorithm(self) -> SignatureAlgorithm {
        match self {
            KeyType::Rsa2048 | KeyType::Rsa3072 => SignatureAlgorithm::RsaPkcs1Sha256,
            KeyType::Rsa4096 => SignatureAlgorithm::RsaPkcs1Sha384,
            KeyType::P256 => SignatureAlgorithm::EcdsaSha256,
            KeyType::P384 => SignatureAlgorithm::EcdsaSha384,
            KeyType::Ed25519 => SignatureAlgorithm::Ed25519,
            KeyType::Sm2 => SignatureAlgorithm::Sm2Sm3,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = KeyType::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown key type {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// A signature algorithm a CA key signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384, MGF1-SHA-384, 48-byte salt.
    RsaPssSha384,
    /// ECDSA with SHA-256 (the signature DER-encoded as Ecdsa-Sig-Value).
    EcdsaSha256,
    /// ECDSA with SHA-384 (the signature DER-encoded as Ecdsa-Sig-Value).
    EcdsaSha384,
    /// Ed25519 (pure EdDSA).
    Ed25519,
    /// SM2 with SM3 (GM/T 0003, GM/T 0009): e = SM3(Z ‖ message), Z from the signer's
    /// distinguishing ID and public key; the signature DER-encoded as SM2Signature.
    Sm2Sm3,
}

/// The hash functions used by the signature algorithms above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SM3 (GM/T 0004).
    Sm3,
}

impl Hash {
    /// Digest `data` with this hash.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sm3 => sm3::Sm3::digest(data).to_vec(),
        }
    }

    /// The digest length in bytes (also the PSS salt length signet uses).
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha256 | Hash::Sm3 => 32,
            Hash::Sha384 => 48,
        }
    }

    /// The hash algorithm's OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Hash::Sha256 => oid::SHA256,
            Hash::Sha384 => oid::SHA384,
            Hash::Sm3 => oid::SM3,
        }
    }
}

/// RSASSA-PSS-params (RFC 4055 section 3.1), encoded the way RFC 4055 and the CA/B Forum
/// profiles expect: hash and MGF1 hash equal, salt length equal to the hash length, trailer
/// field left at its default.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    hash: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT")]
    mask_gen: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    salt_len: u32,
}

impl FromStr for SignatureAlgorithm {
    type Err = String;

    /// The algorithm with this configuration name (as [`SignatureAlgorithm::name`] gives it).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignatureAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("{s:?} is not a signature algorithm signet knows"))
    }
}

impl SignatureAlgorithm {
    /// Every algorithm, in declaration order.
    pub const ALL: [SignatureAlgorithm; 8] = [
        SignatureAlgorithm::RsaPkcs1Sha256,
        SignatureAlgorithm::RsaPkcs1Sha384,
        SignatureAlgorithm::RsaPssSha256,
        SignatureAlgorithm::RsaPssSha384,
        SignatureAlgorithm::EcdsaSha256,
        SignatureAlgorithm::EcdsaSha384,
        SignatureAlgorithm::Ed25519,
        SignatureAlgorithm::Sm2Sm3,
    ];

    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            SignatureAlgorithm::RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            SignatureAlgorithm::RsaPssSha256 => "rsa-pss-sha256",
            SignatureAlgorithm::RsaPssSha384 => "rsa-pss-sha384",
            SignatureAlgorithm::EcdsaSha256 => "ecdsa-sha256",
            SignatureAlgorithm::EcdsaSha384 => "ecdsa-sha384",
            SignatureAlgorithm::Ed25519 => "ed25519",
            SignatureAlgorithm::Sm2Sm3 => "sm2-sm3",
        }
    }

    /// The hash applied to the message before signing, or `None` for Ed25519.
    pub fn hash(self) -> Option<Hash> {
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256
            | SignatureAlgorithm::RsaPssSha256
            | SignatureAlgorithm::EcdsaSha256 => Some(Hash::Sha256),
            SignatureAlgorithm::RsaPkcs1Sha384
            | SignatureAlgorithm::RsaPssSha384
            | SignatureAlgorithm::EcdsaSha384 => Some(Hash::Sha384),
            SignatureAlgorithm::Sm2Sm3 => Some(Hash::Sm3),
            SignatureAlgorithm::Ed25519 => None,
        }
    }

    /// Whether a key of type `key` can produce this signature.
    pub fn fits_key(self, key: KeyType) -> bool {
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256
            | SignatureAlgorithm::RsaPkcs1Sha384
            | SignatureAlgorithm::RsaPssSha256
            | SignatureAlgorithm::RsaPssSha384 => key.is_rsa(),
            SignatureAlgorithm::EcdsaSha256 => key == KeyType::P256,
            SignatureAlgorithm::EcdsaSha384 => key == KeyType::P384,
            SignatureAlgorithm::Ed25519 => key == KeyType::Ed25519,
            SignatureAlgorithm::Sm2Sm3 => key == KeyType::Sm2,
        }
    }

    /// The AlgorithmIdentifier placed in `signatureAlgorithm` of certificates, CRLs and
    /// OCSP responses. Parameters follow RFC 4055 (NULL for PKCS#1 v1.5, explicit PSS params),
    /// RFC 5758 / RFC 8410 (absent for ECDSA and Ed25519) and GM/T 0015 (absent for SM2).
    pub fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        let null = || Some(Any::encode_from(&Null).expect("NULL always encodes"));
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256 => AlgorithmIdentifierOwned {
                oid: oid::SHA256_WITH_RSA,
                parameters: null(),
            },
            SignatureAlgorithm::RsaPkcs1Sha384 => AlgorithmIdentifierOwned {
                oid: oid::SHA384_WITH_RSA,
                parameters: null(),
            },
            SignatureAlgorithm::RsaPssSha256 | SignatureAlgorithm::RsaPssSha384 => {
                let hash = self.hash().expect("PSS always has a hash");
                let hash_alg = AlgorithmIdentifierOwned {
                    oid: hash.oid(),
                    parameters: null(),
                };
                let params = PssParams {
                    hash: hash_alg.clone(),
                    mask_gen: AlgorithmIdentifierOwned {
                        oid: oid::MGF1,
                        parameters: Some(
                            Any::encode_from(&hash_alg).expect("AlgorithmIdentifier encodes"),
                        ),
                    },
                    salt_len: hash.output_len() as u32,
                };
                AlgorithmIdentifierOwned {
                    oid: oid::RSASSA_PSS,
                    parameters: Some(Any::encode_from(&params).expect("PSS params encode")),
                }
            }
            SignatureAlgorithm::EcdsaSha256 => AlgorithmIdentifierOwned {
                oid: oid::ECDSA_WITH_SHA256,
                parameters: None,
            },
            SignatureAlgorithm::EcdsaSha384 => AlgorithmIdentifierOwned {
                oid: oid::ECDSA_WITH_SHA384,
                parameters: None,
            },
            SignatureAlgorithm::Ed25519 => AlgorithmIdentifierOwned {
                oid: oid::ED25519,
                parameters: None,
            },
            // GM/T 0015: parameters absent (a NULL is accepted when reading).
            SignatureAlgorithm::Sm2Sm3 => AlgorithmIdentifierOwned {
                oid: oid::SM2_WITH_SM3,
                parameters: None,
            },
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::SignatureAlgorithm;

    #[test]
    fn every_algorithm_reads_back_from_its_name_which_is_also_its_configuration_spelling() {
        for a in SignatureAlgorithm::ALL {
            assert_eq!(a.name().parse::<SignatureAlgorithm>(), Ok(a));
            let from_toml: SignatureAlgorithm =
                serde_json::from_value(serde_json::Value::String(a.name().into())).unwrap();
            assert_eq!(from_toml, a);
        }
        let e = "rsa-md5".parse::<SignatureAlgorithm>().unwrap_err();
        assert!(e.contains("rsa-md5"), "{e}");
    }
}

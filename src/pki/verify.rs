//! Software signature verification for the algorithms signet accepts: proof of possession on
//! CSRs and the check of every certificate the HSM has just signed before it leaves the CA.

use const_oid::ObjectIdentifier;
use der::asn1::UintRef;
use der::{Decode, Encode, Sequence};
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::PkiError;
use super::alg::{KeyType, oid};

/// The hashes a signature algorithm may use (SHA-1 is deliberately absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    fn from_oid(o: &ObjectIdentifier) -> Option<HashAlg> {
        match *o {
            oid::SHA256 => Some(HashAlg::Sha256),
            oid::SHA384 => Some(HashAlg::Sha384),
            oid::SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha256 => sha2::Sha256::digest(message).to_vec(),
            HashAlg::Sha384 => sha2::Sha384::digest(message).to_vec(),
            HashAlg::Sha512 => sha2::Sha512::digest(message).to_vec(),
        }
    }

    fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
}

/// A signature algorithm as understood by the verifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    RsaPkcs1(HashAlg),
    RsaPss {
        hash: HashAlg,
        salt_len: usize,
    },
    Ecdsa(HashAlg),
    Ed25519,
    /// SM2 with SM3 (GM/T 0003, GM/T 0009).
    Sm2Sm3,
}

/// The distinguishing IDs an SM2 signature is checked under: GM/T 0009's default, which
/// signet signs with.
pub const SM2_STANDARD_ID: &str = "1234567812345678";

/// RSASSA-PSS-params as they may appear on the wire (RFC 4055 section 3.1): every field has a
/// DEFAULT, so every field is optional here.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct PssParamsIn {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

/// Names of curves and algorithms a refused key or signature is likely to carry; const-oid's
/// database lacks some of them (secp256k1, SM2).
const KNOWN_NAMES: [(&str, &str); 12] = [
    ("1.3.132.0.10", "secp256k1"),
    ("1.3.132.0.33", "secp224r1"),
    ("1.3.132.0.35", "secp521r1 (P-521)"),
    ("1.2.840.10045.3.1.1", "prime192v1 (P-192)"),
    ("1.3.36.3.3.2.8.1.1.7", "brainpoolP256r1"),
    ("1.3.36.3.3.2.8.1.1.11", "brainpoolP384r1"),
    ("1.2.156.10197.1.301", "SM2"),
    ("1.2.156.10197.1.501", "SM2 with SM3"),
    ("1.2.840.10040.4.1", "DSA"),
    ("1.3.101.110", "X25519"),
    ("1.3.101.113", "Ed448"),
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
];

/// A display name for an OID: its registered name where known, the dotted form otherwise.
pub(crate) fn oid_name(o: &ObjectIdentifier) -> String {
    let dotted = o.to_string();
    if let Some((_, name)) = KNOWN_NAMES.iter().find(|(d, _)| *d == dotted) {
        return format!("{name} ({dotted})");
    }
    match const_oid::db::DB.by_oid(o) {
        Some(name) => format!("{name} ({dotted})"),
        None => dotted,
    }
}

/// Parameters must be absent, or (where `null_ok`) an ASN.1 NULL.
fn check_no_params(
    alg: &AlgorithmIdentifierOwned,
    null_ok: bool,
    what: &str,
) -> Result<(), PkiError> {
    match &alg.parameters {
        None => Ok(()),
        Some(p) if null_ok && p.is_null() => Ok(()),
        Some(_) => Err(PkiError::invalid(
            what,
            format!(
                "signature algorithm {} carries unexpected parameters",
                oid_name(&alg.oid)
            ),
        )),
    }
}

fn pss_scheme(alg: &AlgorithmIdentifierOwned, what: &str) -> Result<Scheme, PkiError> {
    let bad = |m: &str| PkiError::invalid(what, format!("RSASSA-PSS parameters: {m}"));
    let params = alg
        .parameters
        .as_ref()
        .ok_or_else(|| bad("missing (the SHA-1 defaults are not accepted)"))?;
    let der = params.to_der().map_err(|e| bad(&e.to_string()))?;
    let params = PssParamsIn::from_der(&der).map_err(|e| bad(&e.to_string()))?;
    let hash_alg = params
        .hash
        .ok_or_else(|| bad("hash absent, i.e. SHA-1, which is not accepted"))?;
    let hash = HashAlg::from_oid(&hash_alg.oid).ok_or_else(|| {
        bad(&format!(
            "hash {} is not accepted (SHA-256, SHA-384 or SHA-512)",
            oid_name(&hash_alg.oid)
        ))
    })?;
    let mgf = params
        .mask_gen
        .ok_or_else(|| bad("mask generation absent, i.e. MGF1 with SHA-1"))?;
    if mgf.oid != oid::MGF1 {
        return Err(bad(&format!(
            "mask generation {} is not MGF1",
            oid_name(&mgf.oid)
        )));
    }
    let mgf_hash = mgf
        .parameters
        .as_ref()
        .and_then(|p| p.to_der().ok())
        .and_then(|d| AlgorithmIdentifierOwned::from_der(&d).ok())
        .ok_or_else(|| bad("MGF1 hash missing or malformed"))?;
    if HashAlg::from_oid(&mgf_hash.oid) != Some(hash) {
        return Err(bad("MGF1 hash differs from the message hash"));
    }
    if params.trailer.unwrap_or(1) != 1 {
        return Err(bad("trailer field must be 1"));
    }
    let salt_len = params.salt_len.unwrap_or(20) as usize;
    Ok(Scheme::RsaPss { hash, salt_len })
}

fn scheme_of(alg: &AlgorithmIdentifierOwned, what: &str) -> Result<Scheme, PkiError> {
    let scheme = match alg.oid {
        oid::SHA256_WITH_RSA => Scheme::RsaPkcs1(HashAlg::Sha256),
        oid::SHA384_WITH_RSA => Scheme::RsaPkcs1(HashAlg::Sha384),
        oid::SHA512_WITH_RSA => Scheme::RsaPkcs1(HashAlg::Sha512),
        oid::RSASSA_PSS => return pss_scheme(alg, what),
        oid::ECDSA_WITH_SHA256 => Scheme::Ecdsa(HashAlg::Sha256),
        oid::ECDSA_WITH_SHA384 => Scheme::Ecdsa(HashAlg::Sha384),
        oid::ECDSA_WITH_SHA512 => Scheme::Ecdsa(HashAlg::Sha512),
        oid::ED25519 => Scheme::Ed25519,
        oid::SM2_WITH_SM3 => Scheme::Sm2Sm3,
        other => {
            return Err(PkiError::invalid(
                what,
                format!(
                    "signature algorithm {} is not accepted (sha256/384/512WithRSAEncryption, \
                     RSASSA-PSS, ecdsa-with-SHA256/384/512, Ed25519 or SM2-with-SM3)",
                    oid_name(&other)
                ),
            ));
        }
    };
    // RFC 4055: NULL (or, tolerated, absent) for PKCS#1 v1.5; RFC 5758 / RFC 8410: absent;
    // GM/T 0015: absent for SM2-with-SM3, a NULL tolerated.
    check_no_params(
        alg,
        matches!(scheme, Scheme::RsaPkcs1(_) | Scheme::Sm2Sm3),
        what,
    )?;
    Ok(scheme)
}

/// Verify `signature` over `message` with `spki` under the signature AlgorithmIdentifier `alg`
/// (as found in a certificate or CSR). ECDSA signatures are DER Ecdsa-Sig-Value.
///
/// Returns [`PkiError::BadSignature`] when the signature does not verify, and
/// [`PkiError::Invalid`] (field `what`) for unsupported algorithms or a key that does not fit
/// the algorithm.
pub fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
    what: &str,
) -> Result<(), PkiError> {
    verify_signature_sm2_ids(spki, alg, message, signature, what, &[SM2_STANDARD_ID])
}

/// [`verify_signature`], an SM2 signature accepted when it verifies under any of `sm2_ids`
/// (the signer's distinguishing ID, which the signed object does not carry).
pub fn verify_signature_sm2_ids(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
    what: &str,
    sm2_ids: &[&str],
) -> Result<(), PkiError> {
    let scheme = scheme_of(alg, what)?;
    let key = key_type_of(spki, what)?;
    let fits = match scheme {
        Scheme::RsaPkcs1(_) | Scheme::RsaPss { .. } => key.is_rsa(),
        Scheme::Ecdsa(_) => matches!(key, KeyType::P256 | KeyType::P384),
        Scheme::Ed25519 => key == KeyType::Ed25519,
        Scheme::Sm2Sm3 => key == KeyType::Sm2,
    };
    if !fits {
        return Err(PkiError::invalid(
            what,
            format!(
                "signature algorithm {} does not fit a {key} key",
                oid_name(&alg.oid)
            ),
        ));
    }
    let key_bits = spki.subject_public_key.raw_bytes();
    let ok = if scheme == Scheme::Sm2Sm3 {
        verify_sm2(key_bits, message, signature, sm2_ids, what)?
    } else {
        match verify_with_ring(scheme, key, key_bits, message, signature) {
            Some(ok) => ok,
            None => verify_with_rustcrypto(scheme, key, spki, message, signature, what)?,
        }
    };
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadSignature {
            what: what.to_owned(),
        })
    }
}

/// Verify with `ring` (optimised assembly) when ring implements exactly `scheme` on a `key`
/// of this type: `Some(verified)`, or `None` when the combination must go to the RustCrypto
/// path (Ed25519, ECDSA with SHA-512, PSS with a salt other than the hash length, RSA
/// moduli outside 2048..=8192 bits). `key` has passed [`key_type_of`] and fits `scheme`; within that, ring
/// accepts exactly the signatures the RustCrypto path accepts (ring takes no PSS parameters:
/// MGF1 with the message hash, salt = hash length, trailer 1, which `pss_scheme` and the
/// check here guarantee).
fn verify_with_ring(
    scheme: Scheme,
    key: KeyType,
    key_bits: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Option<bool> {
    use ring::signature as rs;
    let rsa_in_range = matches!(key.rsa_bits(), Some(2048..=8192));
    let alg: &'static dyn rs::VerificationAlgorithm = match (scheme, key) {
        (Scheme::Ecdsa(HashAlg::Sha256), KeyType::P256) => &rs::ECDSA_P256_SHA256_ASN1,
        (Scheme::Ecdsa(HashAlg::Sha384), KeyType::P256) => &rs::ECDSA_P256_SHA384_ASN1,
        (Scheme::Ecdsa(HashAlg::Sha256), KeyType::P384) => &rs::ECDSA_P384_SHA256_ASN1,
        (Scheme::Ecdsa(HashAlg::Sha384), KeyType::P384) => &rs::ECDSA_P384_SHA384_ASN1,
        (Scheme::RsaPkcs1(hash), _) if rsa_in_range => match hash {
            HashAlg::Sha256 => &rs::RSA_PKCS1_2048_8192_SHA256,
            HashAlg::Sha384 => &rs::RSA_PKCS1_2048_8192_SHA384,
            HashAlg::Sha512 => &rs::RSA_PKCS1_2048_8192_SHA512,
        },
        (Scheme::RsaPss { hash, salt_len }, _) if rsa_in_range && salt_len == hash.output_len() => {
            match hash {
                HashAlg::Sha256 => &rs::RSA_PSS_2048_8192_SHA256,
                HashAlg::Sha384 => &rs::RSA_PSS_2048_8192_SHA384,
                HashAlg::Sha512 => &rs::RSA_PSS_2048_8192_SHA512,
            }
        }
        // Ed25519 stays with ed25519-dalek's verify_strict: as fast as ring here, and it
        // refuses small-order R values, which ring does not check.
        _ => return None,
    };
    // RSA: the RSAPublicKey DER (the BIT STRING contents); EC: the uncompressed SEC1 point;
    // Ed25519: the 32-byte key. All are exactly what `spki.subject_public_key` holds.
    Some(
        rs::UnparsedPublicKey::new(alg, key_bits)
            .verify(message, signature)
            .is_ok(),
    )
}

/// The RustCrypto path, for every combination (the tests compare it with ring); `Ok(verified)`,
/// or an input error for a key that does not decode.
fn verify_with_rustcrypto(
    scheme: Scheme,
    key: KeyType,
    spki: &SubjectPublicKeyInfoOwned,
    message: &[u8],
    signature: &[u8],
    what: &str,
) -> Result<bool, PkiError> {
    // key_type_of has already decoded the key once; decoding again cannot fail for a
    // well-formed key, but is still mapped to an error rather than trusted.
    let malformed = |e: String| PkiError::invalid(what, format!("public key: {e}"));
    let key_bits = spki.subject_public_key.raw_bytes();
    Ok(match scheme {
        Scheme::RsaPkcs1(hash) | Scheme::RsaPss { hash, .. } => {
            let spki_der = spki.to_der().map_err(|e| malformed(e.to_string()))?;
            let spki_ref = spki::SubjectPublicKeyInfoRef::from_der(&spki_der)
                .map_err(|e| malformed(e.to_string()))?;
            let pk = rsa::PublicKey::try_from(spki_ref).map_err(|e| malformed(e.to_string()))?;
            match scheme {
                Scheme::RsaPss { salt_len, .. } => {
                    verify_pss(pk, hash, salt_len, message, signature)
                }
                _ => match hash {
                    HashAlg::Sha256 => pk.pkcs1v15_verify::<sha2::Sha256>(message, signature),
                    HashAlg::Sha384 => pk.pkcs1v15_verify::<sha2::Sha384>(message, signature),
                    HashAlg::Sha512 => pk.pkcs1v15_verify::<sha2::Sha512>(message, signature),
                }
                .is_ok(),
            }
        }
        Scheme::Ecdsa(hash) => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let prehash = hash.digest(message);
            match key {
                KeyType::P256 => {
                    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
                        .map_err(|e| malformed(e.to_string()))?;
                    p256::ecdsa::DerSignature::from_bytes(signature)
                        .is_ok_and(|sig| vk.verify_prehash(&prehash, &sig).is_ok())
                }
                _ => {
                    let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bits)
                        .map_err(|e| malformed(e.to_string()))?;
                    p384::ecdsa::DerSignature::from_bytes(signature)
                        .is_ok_and(|sig| vk.verify_prehash(&prehash, &sig).is_ok())
                }
            }
        }
        Scheme::Ed25519 => {
            let bytes: &[u8; 32] = key_bits
                .try_into()
                .map_err(|_| malformed("Ed25519 key is not 32 bytes".into()))?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(bytes)
                .map_err(|e| malformed(e.to_string()))?;
            ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| vk.verify_strict(message, &sig).is_ok())
        }
        Scheme::Sm2Sm3 => verify_sm2(key_bits, message, signature, &[SM2_STANDARD_ID], what)?,
    })
}

/// An SM2 signature (DER SM2Signature) over `message` by the key `point`, under any of `ids`.
fn verify_sm2(
    point: &[u8],
    message: &[u8],
    signature: &[u8],
    ids: &[&str],
    what: &str,
) -> Result<bool, PkiError> {
    use sm2::dsa::signature::Verifier;
    let Ok(sig) = sm2::dsa::Signature::from_der(signature) else {
        return Ok(false);
    };
    for id in ids {
        let vk = sm2::dsa::VerifyingKey::from_sec1_bytes(id, point)
            .map_err(|e| PkiError::invalid(what, format!("SM2 public key: {e}")))?;
        if vk.verify(message, &sig).is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn verify_pss(
    pk: rsa::PublicKey,
    hash: HashAlg,
    salt_len: usize,
    message: &[u8],
    signature: &[u8],
) -> bool {
    use rsa::signature::Verifier;
    let Ok(sig) = rsa::pss::Signature::try_from(signature) else {
        return false;
    };
    match hash {
        HashAlg::Sha256 => rsa::pss::VerifyingKey::<sha2::Sha256>::new_with_salt_len(pk, salt_len)
            .verify(message, &sig)
            .is_ok(),
        HashAlg::Sha384 => rsa::pss::VerifyingKey::<sha2::Sha384>::new_with_salt_len(pk, salt_len)
            .verify(message, &sig)
            .is_ok(),
        HashAlg::Sha512 => rsa::pss::VerifyingKey::<sha2::Sha512>::new_with_salt_len(pk, salt_len)
            .verify(message, &sig)
            .is_ok(),
    }
}

/// RSAPublicKey (RFC 8017 appendix A.1.1).
#[derive(Sequence)]
pub(crate) struct RsaPublicKey<'a> {
    pub(crate) modulus: UintRef<'a>,
    pub(crate) public_exponent: UintRef<'a>,
}

/// The [`KeyType`] of a SubjectPublicKeyInfo: RSA with a 2048-, 3072- or 4096-bit modulus and
/// an odd exponent above 1, P-256 or P-384 (id-ecPublicKey with a named curve and an
/// uncompressed point on the curve), or Ed25519. Errors name `field`.
pub fn key_type_of(spki: &SubjectPublicKeyInfoOwned, field: &str) -> Result<KeyType, PkiError> {
    let bad = |m: String| PkiError::invalid(field, m);
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad("public key BIT STRING has unused bits".into()))?;
    match spki.algorithm.oid {
        oid::RSA_ENCRYPTION => {
            if !spki
                .algorithm
                .parameters
                .as_ref()
                .is_some_and(|p| p.is_null())
            {
                return Err(bad(
                    "rsaEncryption parameters must be NULL (RFC 3279)".into()
                ));
            }
            rsa_key_type(key).map_err(bad)
        }
        oid::EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                .ok_or_else(|| {
                    bad("EC key parameters must name a curve (namedCurve, RFC 5480)".into())
                })?;
            if key.first() != Some(&0x04) {
                return Err(bad(
                    "EC public key must be an uncompressed point (RFC 5480)".into(),
                ));
            }
            match curve {
                oid::SECP256R1 => p256::ecdsa::VerifyingKey::from_sec1_bytes(key)
                    .map(|_| KeyType::P256)
                    .map_err(|_| bad("P-256 public key is not a point on the curve".into())),
                oid::SECP384R1 => p384::ecdsa::VerifyingKey::from_sec1_bytes(key)
                    .map(|_| KeyType::P384)
                    .map_err(|_| bad("P-384 public key is not a point on the curve".into())),
                oid::SM2_P256V1 => sm2::PublicKey::from_sec1_bytes(key)
                    .map(|_| KeyType::Sm2)
                    .map_err(|_| bad("SM2 public key is not a point on the curve".into())),
                other => Err(bad(format!(
                    "elliptic curve {} is not accepted (P-256, P-384 or sm2p256v1)",
                    oid_name(&other)
                ))),
            }
        }
        oid::ED25519 => {
            if spki.algorithm.parameters.is_some() {
                return Err(bad(
                    "Ed25519 key parameters must be absent (RFC 8410)".into()
                ));
            }
            let bytes: &[u8; 32] = key.try_into().map_err(|_| {
                bad(format!(
                    "Ed25519 public key is {} bytes; 32 expected",
                    key.len()
                ))
            })?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(bytes)
                .map_err(|_| bad("Ed25519 public key is not a valid point".into()))?;
            if vk.is_weak() {
                return Err(bad(
                    "Ed25519 public key is a weak (small-order) point".into()
                ));
            }
            Ok(KeyType::Ed25519)
        }
        other => Err(bad(format!(
            "public key algorithm {} is not accepted (RSA, P-256, P-384, Ed25519 or SM2)",
            oid_name(&other)
        ))),
    }
}

/// Which RSA public exponents a subscriber's key may have (`[ca] rsa_exponent`). Keys made
/// for signet itself (CA, OCSP, TSA, audit) are generated with 65537 and are not checked
/// against it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RsaExponent {
    /// Exactly 65537 (F4), what every mainstream key generator makes: the default.
    #[default]
    F4,
    /// Any odd exponent of at least 65537 (and below 2^33, what verifiers accept), for a CA
    /// whose subscribers' tokens make keys with other large exponents.
    OddAtLeast65537,
}

impl RsaExponent {
    /// The configuration value: `65537` or `odd-at-least-65537`.
    pub fn name(self) -> &'static str {
        match self {
            RsaExponent::F4 => "65537",
            RsaExponent::OddAtLeast65537 => "odd-at-least-65537",
        }
    }
}

impl std::str::FromStr for RsaExponent {
    type Err = String;

    fn from_str(s: &str) -> Result<RsaExponent, String> {
        match s {
            "65537" => Ok(RsaExponent::F4),
            "odd-at-least-65537" => Ok(RsaExponent::OddAtLeast65537),
            other => Err(format!(
                "{other:?} is not an exponent rule (\"65537\" or \"odd-at-least-65537\")"
            )),
        }
    }
}

/// Check a subscriber key's RSA public exponent against `rule`; other key types pass. The key
/// has passed [`key_type_of`]. Errors name `field`.
pub fn check_rsa_exponent(
    spki: &SubjectPublicKeyInfoOwned,
    rule: RsaExponent,
    field: &str,
) -> Result<(), PkiError> {
    if spki.algorithm.oid != oid::RSA_ENCRYPTION {
        return Ok(());
    }
    let bad = |m: String| PkiError::invalid(field, m);
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad("public key BIT STRING has unused bits".into()))?;
    let rsa =
        RsaPublicKey::from_der(key).map_err(|e| bad(format!("malformed RSA public key: {e}")))?;
    let e = rsa.public_exponent.as_bytes().iter().fold(0u64, |acc, b| {
        acc.saturating_mul(256).saturating_add(u64::from(*b))
    });
    let ok = match rule {
        RsaExponent::F4 => e == 65_537,
        RsaExponent::OddAtLeast65537 => e >= 65_537 && e % 2 == 1,
    };
    if ok {
        return Ok(());
    }
    Err(bad(format!(
        "RSA public exponent {e} is not accepted: this CA requires {} (generate the key with \
         the usual exponent 65537)",
        match rule {
            RsaExponent::F4 => "65537",
            RsaExponent::OddAtLeast65537 => "an odd exponent of at least 65537",
        }
    )))
}

fn rsa_key_type(key: &[u8]) -> Result<KeyType, String> {
    let rsa = RsaPublicKey::from_der(key).map_err(|e| format!("malformed RSA public key: {e}"))?;
    let n = rsa.modulus.as_bytes();
    let bits = match n.first() {
        Some(&b) => n.len() * 8 - b.leading_zeros() as usize,
        None => 0,
    };
    let key_type = match bits {
        2048 => KeyType::Rsa2048,
        3072 => KeyType::Rsa3072,
        4096 => KeyType::Rsa4096,
        b if b < 2048 => return Err(format!("RSA key of {b} bits; at least 2048 required")),
        b => {
            return Err(format!(
                "RSA key of {b} bits; only 2048, 3072 and 4096 bits are accepted"
            ));
        }
    };
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err("RSA modulus is even".into());
    }
    let e = rsa.public_exponent.as_bytes();
    let e_odd = e.last().is_some_and(|b| b & 1 == 1);
    if !e_odd || e == [1] {
        return Err(format!(
            "RSA public exponent 0x{} must be odd and greater than 1 (65537 is usual)",
            hex::encode(e)
        ));
    }
    // Verifiers (ring, RustCrypto, Go) refuse exponents of 2^33 and above.
    if e.len() > 5 || (e.len() == 5 && e[0] > 1) {
        return Err(format!(
            "RSA public exponent 0x{} is too large (65537 is usual)",
            hex::encode(e)
        ));
    }
    Ok(key_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::SignatureAlgorithm;
    use crate::pki::soft_signer::SoftKey;

    const MSG: &[u8] = b"to be signed";

    #[test]
    fn every_signing_algorithm_verifies_and_a_changed_message_does_not() {
        let cases = [
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPkcs1Sha256),
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPkcs1Sha384),
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPssSha256),
            (SoftKey::rsa2048(), SignatureAlgorithm::RsaPssSha384),
            (SoftKey::p256(1), SignatureAlgorithm::EcdsaSha256),
            (SoftKey::p384(1), SignatureAlgorithm::EcdsaSha384),
            (SoftKey::ed25519(1), SignatureAlgorithm::Ed25519),
        ];
        for (key, alg) in cases {
            let sig = key.sign(alg, MSG);
            let ai = alg.algorithm_identifier();
            verify_signature(&key.spki(), &ai, MSG, &sig, "test")
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            match verify_signature(&key.spki(), &ai, b"something else", &sig, "test") {
                Err(PkiError::BadSignature { what }) => assert_eq!(what, "test"),
                other => panic!("{alg}: expected BadSignature, got {other:?}"),
            }
            assert!(matches!(
                verify_signature(&key.spki(), &ai, MSG, &sig[..sig.len() - 1], "test"),
                Err(PkiError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn ecdsa_with_a_longer_hash_than_the_curve_verifies() {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let sk = p256::ecdsa::SigningKey::from_slice(&[1; 32]).unwrap();
        let sig: p256::ecdsa::DerSignature = sk.sign_prehash(&sha2::Sha512::digest(MSG)).unwrap();
        let ai = AlgorithmIdentifierOwned {
            oid: oid::ECDSA_WITH_SHA512,
            parameters: None,
        };
        verify_signature(&SoftKey::p256(1).spki(), &ai, MSG, sig.as_bytes(), "test").unwrap();
    }

    #[test]
    fn wrong_key_for_the_algorithm_and_unknown_algorithms_are_input_errors() {
        let rsa = SoftKey::rsa2048();
        let ec = SoftKey::p256(2);
        let sig = ec.sign(SignatureAlgorithm::EcdsaSha256, MSG);
        let e = verify_signature(
            &rsa.spki(),
            &SignatureAlgorithm::EcdsaSha256.algorithm_identifier(),
            MSG,
            &sig,
            "csr",
        )
        .unwrap_err();
        assert!(
            matches!(&e, PkiError::Invalid { field, problem } if field == "csr" && problem.contains("does not fit")),
            "{e}"
        );
        let sha1_rsa = AlgorithmIdentifierOwned {
            oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5"),
            parameters: None,
        };
        let e = verify_signature(&rsa.spki(), &sha1_rsa, MSG, &sig, "csr").unwrap_err();
        assert!(e.to_string().contains("sha1WithRSAEncryption"), "{e}");
        // PSS with absent parameters means SHA-1: refused.
        let pss_sha1 = AlgorithmIdentifierOwned {
            oid: oid::RSASSA_PSS,
            parameters: None,
        };
        let e = verify_signature(&rsa.spki(), &pss_sha1, MSG, &sig, "csr").unwrap_err();
        assert!(e.to_string().contains("SHA-1"), "{e}");
        // ECDSA with parameters present is malformed (RFC 5758).
        let mut with_params = SignatureAlgorithm::EcdsaSha256.algorithm_identifier();
        with_params.parameters = Some(der::Any::from(der::asn1::Null));
        let e = verify_signature(&ec.spki(), &with_params, MSG, &sig, "csr").unwrap_err();
        assert!(e.to_string().contains("unexpected parameters"), "{e}");
    }

    /// A key, the scheme under test, and a signature over [`MSG`] made outside the verifier.
    fn agreement_cases() -> Vec<(&'static str, SoftKey, Scheme, Vec<u8>)> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let mut cases = Vec::new();
        for alg in [
            SignatureAlgorithm::RsaPkcs1Sha256,
            SignatureAlgorithm::RsaPkcs1Sha384,
            SignatureAlgorithm::RsaPssSha256,
            SignatureAlgorithm::RsaPssSha384,
            SignatureAlgorithm::EcdsaSha256,
            SignatureAlgorithm::EcdsaSha384,
        ] {
            let key = if alg.fits_key(KeyType::Rsa2048) {
                SoftKey::rsa2048()
            } else if alg.fits_key(KeyType::P256) {
                SoftKey::p256(3)
            } else {
                SoftKey::p384(3)
            };
            let sig = key.sign(alg, MSG);
            let scheme = scheme_of(&alg.algorithm_identifier(), "test").unwrap();
            cases.push((alg.name(), key, scheme, sig));
        }
        let SoftKey::Rsa(rsa_key) = SoftKey::rsa2048() else {
            unreachable!()
        };
        cases.push((
            "rsa-pkcs1-sha512",
            SoftKey::rsa2048(),
            Scheme::RsaPkcs1(HashAlg::Sha512),
            rsa_key.pkcs1v15_sign::<sha2::Sha512>(MSG).unwrap(),
        ));
        cases.push((
            "rsa-pss-sha512",
            SoftKey::rsa2048(),
            Scheme::RsaPss {
                hash: HashAlg::Sha512,
                salt_len: 64,
            },
            rsa_key.pss_sign::<sha2::Sha512>(MSG).unwrap(),
        ));
        let p256 = p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap();
        let sig: p256::ecdsa::DerSignature = p256.sign_prehash(&sha2::Sha384::digest(MSG)).unwrap();
        cases.push((
            "p256-sha384",
            SoftKey::p256(3),
            Scheme::Ecdsa(HashAlg::Sha384),
            sig.as_bytes().to_vec(),
        ));
        let p384 = p384::ecdsa::SigningKey::from_slice(&[3; 48]).unwrap();
        let sig: p384::ecdsa::DerSignature = p384.sign_prehash(&sha2::Sha256::digest(MSG)).unwrap();
        cases.push((
            "p384-sha256",
            SoftKey::p384(3),
            Scheme::Ecdsa(HashAlg::Sha256),
            sig.as_bytes().to_vec(),
        ));
        cases
    }

    /// Both verifiers on one input: ring's answer (which must exist) and RustCrypto's.
    fn both(key: &SoftKey, scheme: Scheme, msg: &[u8], sig: &[u8]) -> (bool, bool) {
        let spki = key.spki();
        let kt = key_type_of(&spki, "test").unwrap();
        let ring = verify_with_ring(scheme, kt, spki.subject_public_key.raw_bytes(), msg, sig)
            .expect("ring covers this combination");
        let rc = verify_with_rustcrypto(scheme, kt, &spki, msg, sig, "test").unwrap();
        (ring, rc)
    }

    #[test]
    fn ring_and_rustcrypto_agree_on_good_and_tampered_signatures() {
        for (name, key, scheme, sig) in agreement_cases() {
            assert_eq!(both(&key, scheme, MSG, &sig), (true, true), "{name}");
            // A flipped byte at the start, in the middle and at the end of the signature.
            for at in [0, sig.len() / 2, sig.len() - 1] {
                let mut bad = sig.clone();
                bad[at] ^= 0x01;
                assert_eq!(
                    both(&key, scheme, MSG, &bad),
                    (false, false),
                    "{name}, byte {at}"
                );
            }
            let mut msg = MSG.to_vec();
            msg[0] ^= 0x80;
            assert_eq!(both(&key, scheme, &msg, &sig), (false, false), "{name}");
            assert_eq!(both(&key, scheme, MSG, &[]), (false, false), "{name}");
            let mut longer = sig.clone();
            longer.push(0);
            assert_eq!(both(&key, scheme, MSG, &longer), (false, false), "{name}");
            // The other key of the same type does not verify it either.
            let other = match key.key_type() {
                KeyType::P256 => SoftKey::p256(4),
                KeyType::P384 => SoftKey::p384(4),
                KeyType::Ed25519 => SoftKey::ed25519(4),
                _ => continue,
            };
            assert_eq!(both(&other, scheme, MSG, &sig), (false, false), "{name}");
        }
    }

    #[test]
    fn combinations_ring_lacks_go_to_rustcrypto() {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        // ECDSA with SHA-512 on P-256.
        let p256 = SoftKey::p256(1);
        let spki = p256.spki();
        let none = |scheme, kt, spki: &SubjectPublicKeyInfoOwned| {
            verify_with_ring(scheme, kt, spki.subject_public_key.raw_bytes(), MSG, &[]).is_none()
        };
        assert!(none(Scheme::Ecdsa(HashAlg::Sha512), KeyType::P256, &spki));
        assert!(none(
            Scheme::Ecdsa(HashAlg::Sha512),
            KeyType::P384,
            &SoftKey::p384(1).spki()
        ));
        // PSS with a salt other than the hash length: ring cannot be told the salt length.
        let SoftKey::Rsa(rsa_key) = SoftKey::rsa2048() else {
            unreachable!()
        };
        let rsa_spki = SoftKey::rsa2048().spki();
        let scheme = Scheme::RsaPss {
            hash: HashAlg::Sha256,
            salt_len: 20,
        };
        assert!(none(scheme, KeyType::Rsa2048, &rsa_spki));
        let sig = {
            use rsa::signature::{SignatureEncoding, Signer};
            rsa::pss::SigningKey::<sha2::Sha256>::new_with_salt_len((*rsa_key).clone(), 20)
                .sign(MSG)
                .to_vec()
        };
        let sha256 = AlgorithmIdentifierOwned {
            oid: oid::SHA256,
            parameters: Some(der::Any::from(der::asn1::Null)),
        };
        let params = PssParamsIn {
            hash: Some(sha256.clone()),
            mask_gen: Some(AlgorithmIdentifierOwned {
                oid: oid::MGF1,
                parameters: Some(der::Any::encode_from(&sha256).unwrap()),
            }),
            salt_len: Some(20),
            trailer: None,
        };
        let ai = AlgorithmIdentifierOwned {
            oid: oid::RSASSA_PSS,
            parameters: Some(der::Any::encode_from(&params).unwrap()),
        };
        assert_eq!(scheme_of(&ai, "test").unwrap(), scheme);
        verify_signature(&rsa_spki, &ai, MSG, &sig, "test").unwrap();
        let mut bad = sig.clone();
        bad[7] ^= 1;
        assert!(matches!(
            verify_signature(&rsa_spki, &ai, MSG, &bad, "test"),
            Err(PkiError::BadSignature { .. })
        ));
        // The same signature under the standard parameters (salt 32, so ring) does not verify.
        let standard = SignatureAlgorithm::RsaPssSha256.algorithm_identifier();
        assert!(matches!(
            verify_signature(&rsa_spki, &standard, MSG, &sig, "test"),
            Err(PkiError::BadSignature { .. })
        ));
        // P-256 with SHA-512, tampered: BadSignature from the fallback.
        let sk = p256::ecdsa::SigningKey::from_slice(&[1; 32]).unwrap();
        let sig: p256::ecdsa::DerSignature = sk.sign_prehash(&sha2::Sha512::digest(MSG)).unwrap();
        let ai = AlgorithmIdentifierOwned {
            oid: oid::ECDSA_WITH_SHA512,
            parameters: None,
        };
        assert!(matches!(
            verify_signature(&spki, &ai, b"other", sig.as_bytes(), "test"),
            Err(PkiError::BadSignature { what }) if what == "test"
        ));
    }

    #[test]
    #[ignore]
    fn verification_throughput() {
        use std::time::{Duration, Instant};
        fn rate(mut f: impl FnMut() -> bool) -> f64 {
            assert!(f());
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < Duration::from_millis(1500) {
                for _ in 0..16 {
                    assert!(f());
                }
                n += 16;
            }
            n as f64 / start.elapsed().as_secs_f64()
        }
        let message = vec![0x5a; 1024]; // about a TBSCertificate
        println!(
            "{:<28} {:>12} {:>12} {:>8}",
            "", "RustCrypto/s", "ring/s", "speed-up"
        );
        for (name, key, scheme, _) in agreement_cases() {
            let sig = match name {
                "rsa-pkcs1-sha256" => key.sign(SignatureAlgorithm::RsaPkcs1Sha256, &message),
                "rsa-pss-sha256" => key.sign(SignatureAlgorithm::RsaPssSha256, &message),
                "ecdsa-sha256" => key.sign(SignatureAlgorithm::EcdsaSha256, &message),
                "ecdsa-sha384" => key.sign(SignatureAlgorithm::EcdsaSha384, &message),
                "ed25519" => key.sign(SignatureAlgorithm::Ed25519, &message),
                _ => continue,
            };
            let spki = key.spki();
            let kt = key_type_of(&spki, "bench").unwrap();
            let bits = spki.subject_public_key.raw_bytes();
            let rc = rate(|| {
                verify_with_rustcrypto(scheme, kt, &spki, &message, &sig, "bench").unwrap()
            });
            let ring = rate(|| verify_with_ring(scheme, kt, bits, &message, &sig).unwrap());
            println!(
                "{:<28} {:>12.0} {:>12.0} {:>7.1}x",
                format!("{name} ({kt})"),
                rc,
                ring,
                ring / rc
            );
        }
    }
}

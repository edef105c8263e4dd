//! Keys on the token: finding them, the signing mechanisms for each algorithm, reading a
//! public key into a SubjectPublicKeyInfo, generating key pairs with every attribute set, and
//! the raw-to-DER conversion of ECDSA signatures.

use std::borrow::Cow;

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType as CkKeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use der::asn1::{BitString, Null, ObjectIdentifier, OctetString, UintRef};
use der::{Any, Decode, Encode, Sequence};
use sha1::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::error::{Failure, HsmError, is_mechanism_rv};
use super::sm2::Sm2Settings;
use crate::pki::alg::{Hash, KeyType, SignatureAlgorithm, oid};

/// The family of a key on the token, read once from CKA_KEY_TYPE when the key is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    Ec,
    Ed25519,
    /// An SM2 key, of the module's vendor-defined key type.
    Sm2,
}

/// A private key found on the token: its handle and family, and for an SM2 key whose
/// signatures need Z computed on the host, its public point (04 ‖ x ‖ y).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FoundKey {
    pub(crate) handle: ObjectHandle,
    pub(crate) kind: KeyKind,
    pub(crate) sm2_point: Option<[u8; 65]>,
}

fn ck<T>(op: &'static str, r: cryptoki::error::Result<T>) -> Result<T, Failure> {
    r.map_err(|e| Failure::from_ck(op, e))
}

/// Find the private key labelled `label` (CKA_LABEL + CKA_CLASS private key).
pub(crate) fn find_private_key(
    session: &Session,
    label: &str,
    sm2: Option<&Sm2Settings>,
) -> Result<FoundKey, Failure> {
    let handles = ck(
        "C_FindObjects",
        session.find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ]),
    )?;
    let handle = match handles.as_slice() {
        [] => {
            return Err(Failure::Final(HsmError::KeyNotFound {
                label: label.to_owned(),
            }));
        }
        [h] => *h,
        [h, ..] => {
            tracing::warn!(
                label,
                count = handles.len(),
                "several private keys share a label; using the first"
            );
            *h
        }
    };
    found_key(session, handle, label, sm2, || {
        public_key(session, label, sm2)
    })
}

/// The private key `handle` with its family, and (for an SM2 key signed with Z computed on
/// the host) its public point, read through `public`.
pub(crate) fn found_key(
    session: &Session,
    handle: ObjectHandle,
    label: &str,
    sm2: Option<&Sm2Settings>,
    public: impl FnOnce() -> Result<SubjectPublicKeyInfoOwned, Failure>,
) -> Result<FoundKey, Failure> {
    let kind = key_kind(session, handle, label, sm2)?;
    let sm2_point = match sm2 {
        Some(settings) if kind == KeyKind::Sm2 && settings.needs_public_point() => {
            let spki = public()?;
            let point: [u8; 65] = spki
                .subject_public_key
                .raw_bytes()
                .try_into()
                .map_err(|_| invalid(label, "the SM2 public key is not a 65-byte point"))?;
            Some(point)
        }
        _ => None,
    };
    Ok(FoundKey {
        handle,
        kind,
        sm2_point,
    })
}

/// The family of the key `handle` (CKA_KEY_TYPE); `label` names it in the error for an
/// unsupported type.
pub(crate) fn key_kind(
    session: &Session,
    handle: ObjectHandle,
    label: &str,
    sm2: Option<&Sm2Settings>,
) -> Result<KeyKind, Failure> {
    let attrs = ck(
        "C_GetAttributeValue",
        session.get_attributes(handle, &[AttributeType::KeyType]),
    )?;
    match attrs.first() {
        Some(Attribute::KeyType(t)) if *t == CkKeyType::RSA => Ok(KeyKind::Rsa),
        Some(Attribute::KeyType(t)) if *t == CkKeyType::EC => Ok(KeyKind::Ec),
        Some(Attribute::KeyType(t)) if *t == CkKeyType::EC_EDWARDS => Ok(KeyKind::Ed25519),
        Some(Attribute::KeyType(t))
            if sm2.is_some_and(|s| u64::from(*t) == s.mechanisms.key_type) =>
        {
            Ok(KeyKind::Sm2)
        }
        other => Err(Failure::Final(HsmError::InvalidKey {
            label: label.to_owned(),
            reason: format!("unsupported CKA_KEY_TYPE {other:?}"),
        })),
    }
}

/// Whether any object (of any class) carries this label.
pub(crate) fn label_taken(session: &Session, label: &str) -> Result<bool, Failure> {
    let found = ck(
        "C_FindObjects",
        session.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]),
    )?;
    Ok(!found.is_empty())
}

fn pss(hash: Hash) -> PkcsPssParams {
    let (hash_alg, mgf) = match hash {
        Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        Hash::Sha384 | Hash::Sm3 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
    };
    PkcsPssParams {
        hash_alg,
        mgf,
        s_len: (hash.output_len() as std::ffi::c_ulong).into(),
    }
}

/// Refuse `alg` for a key of another family, before anything reaches the token.
pub(crate) fn check_kind(
    label: &str,
    key: FoundKey,
    alg: SignatureAlgorithm,
) -> Result<(), Failure> {
    let wanted = match alg {
        SignatureAlgorithm::RsaPkcs1Sha256
        | SignatureAlgorithm::RsaPkcs1Sha384
        | SignatureAlgorithm::RsaPssSha256
        | SignatureAlgorithm::RsaPssSha384 => KeyKind::Rsa,
        SignatureAlgorithm::EcdsaSha256 | SignatureAlgorithm::EcdsaSha384 => KeyKind::Ec,
        SignatureAlgorithm::Ed25519 => KeyKind::Ed25519,
        SignatureAlgorithm::Sm2Sm3 => KeyKind::Sm2,
    };
    if wanted != key.kind {
        return Err(Failure::Final(HsmError::Mechanism {
            mechanism: alg.to_string(),
            label: label.to_owned(),
            reason: format!("the key is a {:?} key", key.kind),
        }));
    }
    Ok(())
}

/// The PKCS#11 mechanism for `alg` and the bytes to hand to C_Sign: the message itself,
/// except for ECDSA, which is hashed here and signed with CKM_ECDSA (SoftHSM 2.6 has no
/// CKM_ECDSA_SHA256), and SM2, whose mechanism and input come from the module's `sm2`
/// settings (e computed here from the key's `sm2_point` when the module signs raw).
pub fn mechanism<'m>(
    alg: SignatureAlgorithm,
    message: &'m [u8],
    sm2: Option<&Sm2Settings>,
    sm2_point: Option<&[u8]>,
) -> Result<(Mechanism<'static>, Cow<'m, [u8]>), String> {
    Ok(match alg {
        SignatureAlgorithm::Sm2Sm3 => {
            let settings =
                sm2.ok_or("the module has no SM2 mechanisms configured ([hsm] sm2_mechanisms)")?;
            return settings.mechanism(sm2_point, message);
        }
        SignatureAlgorithm::RsaPkcs1Sha256 => (Mechanism::Sha256RsaPkcs, Cow::Borrowed(message)),
        SignatureAlgorithm::RsaPkcs1Sha384 => (Mechanism::Sha384RsaPkcs, Cow::Borrowed(message)),
        SignatureAlgorithm::RsaPssSha256 => (
            Mechanism::Sha256RsaPkcsPss(pss(Hash::Sha256)),
            Cow::Borrowed(message),
        ),
        SignatureAlgorithm::RsaPssSha384 => (
            Mechanism::Sha384RsaPkcsPss(pss(Hash::Sha384)),
            Cow::Borrowed(message),
        ),
        SignatureAlgorithm::EcdsaSha256 | SignatureAlgorithm::EcdsaSha384 => {
            let hash = alg.hash().unwrap_or(Hash::Sha256);
            (Mechanism::Ecdsa, Cow::Owned(hash.digest(message)))
        }
        SignatureAlgorithm::Ed25519 => (
            Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            Cow::Borrowed(message),
        ),
    })
}

/// The signature as X.509 and CMS carry it, from what C_Sign returned: ECDSA's and SM2's
/// raw r‖s DER-encoded (an SM2 module that answers DER already is checked and kept), anything
/// else as it is.
pub(crate) fn finish_signature(
    alg: SignatureAlgorithm,
    raw: Vec<u8>,
    sm2: Option<&Sm2Settings>,
) -> Result<Vec<u8>, Failure> {
    let bad = |reason: String| {
        Failure::Final(HsmError::Pkcs11 {
            op: "C_Sign",
            rv: reason,
        })
    };
    match alg {
        SignatureAlgorithm::Sm2Sm3
            if sm2.is_some_and(|s| s.mechanisms.signature == super::sm2::SignatureFormat::Der) =>
        {
            EcdsaSigValue::from_der(&raw)
                .map(|_| raw.clone())
                .map_err(|e| bad(format!("the module's SM2 signature is not DER: {e}")))
        }
        SignatureAlgorithm::EcdsaSha256
        | SignatureAlgorithm::EcdsaSha384
        | SignatureAlgorithm::Sm2Sm3 => ecdsa_raw_to_der(&raw).map_err(bad),
        _ => Ok(raw),
    }
}

/// Sign `message` with `key`: the key must be of `alg`'s family; the mechanism and the
/// bytes signed are [`mechanism`]'s, the result [`finish_signature`]'s.
pub(crate) fn sign(
    session: &Session,
    label: &str,
    key: FoundKey,
    alg: SignatureAlgorithm,
    message: &[u8],
    sm2: Option<&Sm2Settings>,
) -> Result<Vec<u8>, Failure> {
    check_kind(label, key, alg)?;
    let (mechanism, data) = mechanism(
        alg,
        message,
        sm2,
        key.sm2_point.as_ref().map(|p| p.as_slice()),
    )
    .map_err(|reason| {
        Failure::Final(HsmError::Mechanism {
            mechanism: alg.to_string(),
            label: label.to_owned(),
            reason,
        })
    })?;
    let raw = session
        .sign(&mechanism, key.handle, &data)
        .map_err(|e| match e {
            CkError::Pkcs11(rv, _) if is_mechanism_rv(rv) => Failure::Final(HsmError::Mechanism {
                mechanism: alg.to_string(),
                label: label.to_owned(),
                reason: super::error::rv_name(rv),
            }),
            other => Failure::from_ck("C_Sign", other),
        })?;
    finish_signature(alg, raw, sm2)
}

/// Ecdsa-Sig-Value (RFC 3279 section 2.2.3).
#[derive(Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// Convert a PKCS#11 ECDSA signature (r and s big-endian, each half the length) into the
/// DER Ecdsa-Sig-Value that goes into X.509 and CMS. Leading zeros are stripped and a zero
/// byte is prepended where the top bit is set, as DER INTEGERs require.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(format!("an ECDSA signature of odd length {}", raw.len()));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let value = EcdsaSigValue {
        r: UintRef::new(r).map_err(|e| e.to_string())?,
        s: UintRef::new(s).map_err(|e| e.to_string())?,
    };
    value.to_der().map_err(|e| e.to_string())
}

/// RSAPublicKey (RFC 8017 appendix A.1.1).
#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

fn invalid(label: &str, reason: impl Into<String>) -> Failure {
    Failure::Final(HsmError::InvalidKey {
        label: label.to_owned(),
        reason: reason.into(),
    })
}

/// The public key object labelled `label`, read into a SubjectPublicKeyInfo.
pub(crate) fn public_key(
    session: &Session,
    label: &str,
    sm2: Option<&Sm2Settings>,
) -> Result<SubjectPublicKeyInfoOwned, Failure> {
    let handles = ck(
        "C_FindObjects",
        session.find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ]),
    )?;
    let Some(&handle) = handles.first() else {
        return Err(Failure::Final(HsmError::KeyNotFound {
            label: label.to_owned(),
        }));
    };
    public_key_of(session, handle, label, sm2)
}

pub(crate) fn public_key_of(
    session: &Session,
    handle: ObjectHandle,
    label: &str,
    sm2: Option<&Sm2Settings>,
) -> Result<SubjectPublicKeyInfoOwned, Failure> {
    let kind = key_kind(session, handle, label, sm2)?;
    let wanted: &[AttributeType] = match kind {
        KeyKind::Rsa => &[AttributeType::Modulus, AttributeType::PublicExponent],
        KeyKind::Ec | KeyKind::Ed25519 | KeyKind::Sm2 => {
            &[AttributeType::EcParams, AttributeType::EcPoint]
        }
    };
    let attrs = ck(
        "C_GetAttributeValue",
        session.get_attributes(handle, wanted),
    )?;
    let mut first = None;
    let mut second = None;
    for a in attrs {
        match a {
            Attribute::Modulus(v) | Attribute::EcParams(v) => first = Some(v),
            Attribute::PublicExponent(v) | Attribute::EcPoint(v) => second = Some(v),
            _ => {}
        }
    }
    let (Some(first), Some(second)) = (first, second) else {
        return Err(invalid(
            label,
            "the token did not return the public key attributes",
        ));
    };
    let spki = match kind {
        KeyKind::Rsa => rsa_spki(&first, &second),
        KeyKind::Ec => ec_spki(&first, &second),
        KeyKind::Sm2 => match ObjectIdentifier::from_der(&first) {
            Ok(curve) if curve == oid::SM2_P256V1 => ec_spki(&first, &second),
            _ => Err("an SM2 key whose CKA_EC_PARAMS is not sm2p256v1".into()),
        },
        KeyKind::Ed25519 => ed25519_spki(&second),
    };
    spki.map_err(|reason| invalid(label, reason))
}

/// rsaEncryption with NULL parameters around RSAPublicKey.
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<SubjectPublicKeyInfoOwned, String> {
    // An empty value would encode as an INTEGER with no content octets, which no DER
    // decoder reads back; zero is no RSA key either.
    for (name, value) in [("CKA_MODULUS", modulus), ("CKA_PUBLIC_EXPONENT", exponent)] {
        if value.iter().all(|&b| b == 0) {
            return Err(format!("the token returned {name} as zero or empty"));
        }
    }
    let key = RsaPublicKey {
        modulus: UintRef::new(modulus).map_err(|e| e.to_string())?,
        public_exponent: UintRef::new(exponent).map_err(|e| e.to_string())?,
    }
    .to_der()
    .map_err(|e| e.to_string())?;
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::RSA_ENCRYPTION,
            parameters: Some(Any::encode_from(&Null).map_err(|e| e.to_string())?),
        },
        subject_public_key: BitString::from_bytes(&key).map_err(|e| e.to_string())?,
    })
}

/// CKA_EC_POINT is DER OCTET STRING-wrapped per PKCS#11, though some modules return the
/// bare point; take the bare point if it already has the expected length.
fn unwrap_point(point: &[u8], bare_len: usize) -> Result<Vec<u8>, String> {
    if point.len() == bare_len {
        return Ok(point.to_vec());
    }
    let inner = OctetString::from_der(point)
        .map_err(|e| format!("CKA_EC_POINT is neither a bare point nor an OCTET STRING: {e}"))?;
    if inner.as_bytes().len() != bare_len {
        return Err(format!(
            "CKA_EC_POINT holds {} bytes, expected {bare_len}",
            inner.as_bytes().len()
        ));
    }
    Ok(inner.as_bytes().to_vec())
}

/// id-ecPublicKey with the named curve from CKA_EC_PARAMS around the uncompressed point.
pub fn ec_spki(params: &[u8], point: &[u8]) -> Result<SubjectPublicKeyInfoOwned, String> {
    let curve = ObjectIdentifier::from_der(params)
        .map_err(|e| format!("CKA_EC_PARAMS is not a named curve: {e}"))?;
    let field_len = match curve {
        c if c == oid::SECP256R1 || c == oid::SM2_P256V1 => 32,
        c if c == oid::SECP384R1 => 48,
        other => return Err(format!("curve {other} is not supported")),
    };
    let point = unwrap_point(point, 1 + 2 * field_len)?;
    if point.first() != Some(&0x04) {
        return Err("the EC point is not uncompressed".into());
    }
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&curve).map_err(|e| e.to_string())?),
        },
        subject_public_key: BitString::from_bytes(&point).map_err(|e| e.to_string())?,
    })
}

/// id-Ed25519 (no parameters) around the 32-byte key.
pub fn ed25519_spki(point: &[u8]) -> Result<SubjectPublicKeyInfoOwned, String> {
    let key = unwrap_point(point, 32)?;
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: oid::ED25519,
            parameters: None,
        },
        subject_public_key: BitString::from_bytes(&key).map_err(|e| e.to_string())?,
    })
}

/// CKA_ID for a key pair: SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280's
/// method 1 key identifier), so the certificate written later gets the same id.
pub(crate) fn key_id(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    sha1::Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec()
}

/// Generate a key pair labelled `label`, every attribute set explicitly, CKA_ID linked.
pub(crate) fn generate(
    session: &Session,
    label: &str,
    key_type: KeyType,
    sm2: Option<&Sm2Settings>,
) -> Result<SubjectPublicKeyInfoOwned, Failure> {
    if label_taken(session, label)? {
        return Err(Failure::Final(HsmError::KeyExists {
            label: label.to_owned(),
        }));
    }
    let label_attr = Attribute::Label(label.as_bytes().to_vec());
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
        label_attr.clone(),
    ];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        label_attr,
    ];
    let curve_params = |curve: ObjectIdentifier| {
        curve
            .to_der()
            .map_err(|e| invalid(label, format!("curve OID does not encode: {e}")))
    };
    let mechanism = match key_type {
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let bits = key_type.rsa_bits().unwrap_or(2048) as std::ffi::c_ulong;
            public.push(Attribute::ModulusBits(bits.into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            public.push(Attribute::VerifyRecover(false));
            private.push(Attribute::SignRecover(false));
            Mechanism::RsaPkcsKeyPairGen
        }
        KeyType::P256 => {
            public.push(Attribute::EcParams(curve_params(oid::SECP256R1)?));
            Mechanism::EccKeyPairGen
        }
        KeyType::P384 => {
            public.push(Attribute::EcParams(curve_params(oid::SECP384R1)?));
            Mechanism::EccKeyPairGen
        }
        KeyType::Ed25519 => {
            public.push(Attribute::EcParams(curve_params(oid::ED25519)?));
            Mechanism::EccEdwardsKeyPairGen
        }
        KeyType::Sm2 => {
            let settings = sm2.ok_or_else(|| {
                Failure::Final(HsmError::Mechanism {
                    mechanism: "sm2 key generation".into(),
                    label: label.to_owned(),
                    reason: "the module has no SM2 mechanisms configured ([hsm] sm2_mechanisms)"
                        .into(),
                })
            })?;
            let key_type = CkKeyType::new_vendor_defined(
                settings.mechanisms.key_type as cryptoki_sys::CK_KEY_TYPE,
            )
            .map_err(|e| invalid(label, format!("SM2 key type: {e}")))?;
            public.push(Attribute::EcParams(curve_params(oid::SM2_P256V1)?));
            public.push(Attribute::KeyType(key_type));
            private.push(Attribute::KeyType(key_type));
            settings
                .keygen_mechanism()
                .map_err(|reason| invalid(label, reason))?
        }
    };
    let (pub_handle, priv_handle) = session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| match e {
            CkError::Pkcs11(rv, _) if is_mechanism_rv(rv) => Failure::Final(HsmError::Mechanism {
                mechanism: format!("{key_type} key generation"),
                label: label.to_owned(),
                reason: super::error::rv_name(rv),
            }),
            other => Failure::from_ck("C_GenerateKeyPair", other),
        })?;
    let linked = public_key_of(session, pub_handle, label, sm2).and_then(|spki| {
        let id = Attribute::Id(key_id(&spki));
        ck(
            "C_SetAttributeValue",
            session.update_attributes(pub_handle, std::slice::from_ref(&id)),
        )?;
        ck(
            "C_SetAttributeValue",
            session.update_attributes(priv_handle, &[id]),
        )?;
        Ok(spki)
    });
    if linked.is_err() {
        // Leave no half-made pair behind to block a retry under the same label.
        for h in [pub_handle, priv_handle] {
            if let Err(e) = session.destroy_object(h) {
                tracing::warn!(label, error = %e, "could not remove a half-generated key");
            }
        }
    }
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_zero_modulus_or_exponent_from_a_token_is_refused() {
        let modulus = [0xc1u8; 256];
        for (m, e) in [
            (&[][..], &[1u8, 0, 1][..]),
            (&[0, 0][..], &[1, 0, 1][..]),
            (&modulus[..], &[][..]),
            (&modulus[..], &[0][..]),
        ] {
            let err = rsa_spki(m, e).unwrap_err();
            assert!(err.contains("zero or empty"), "{err}");
        }
        let spki = rsa_spki(&modulus, &[0, 1, 0, 1]).unwrap();
        let key = RsaPublicKey::from_der(spki.subject_public_key.raw_bytes()).unwrap();
        assert_eq!(key.modulus.as_bytes(), &modulus[..]);
        assert_eq!(key.public_exponent.as_bytes(), &[1, 0, 1]);
    }

    #[test]
    fn ecdsa_raw_signature_becomes_der_sequence_of_two_integers() {
        let mut raw = vec![0x11; 32];
        raw.extend_from_slice(&[0x22; 32]);
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 68, 0x02, 32]);
        assert_eq!(&der[4..36], &[0x11; 32]);
        assert_eq!(&der[36..38], &[0x02, 32]);
    }

    #[test]
    fn ecdsa_high_bit_gets_a_leading_zero_and_leading_zeros_are_stripped() {
        let mut raw = vec![0x80; 32];
        let mut s = vec![0x00, 0x00, 0x7f];
        s.extend_from_slice(&[0x01; 29]);
        raw.extend_from_slice(&s);
        let der = ecdsa_raw_to_der(&raw).unwrap();
        // r: 33 bytes with a zero pad; s: 30 bytes once the two zeros go.
        assert_eq!(&der[..5], &[0x30, 2 + 33 + 2 + 30, 0x02, 33, 0x00]);
        assert_eq!(der[5], 0x80);
        assert_eq!(&der[37..40], &[0x02, 30, 0x7f]);
        assert_eq!(der.len(), 2 + 2 + 33 + 2 + 30);
    }

    #[test]
    fn ecdsa_all_zero_half_encodes_as_integer_zero() {
        let mut raw = vec![0u8; 48];
        raw.extend_from_slice(&[0x05; 48]);
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 3 + 50, 0x02, 1, 0x00]);
    }

    #[test]
    fn ecdsa_odd_or_empty_signature_is_refused() {
        assert!(ecdsa_raw_to_der(&[]).is_err());
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    }

    #[test]
    fn ec_point_is_unwrapped_from_its_octet_string_or_taken_bare() {
        let params = oid::SECP256R1.to_der().unwrap();
        let mut point = vec![0x04];
        point.extend_from_slice(&[0xab; 64]);
        let wrapped = OctetString::new(point.clone()).unwrap().to_der().unwrap();
        let a = ec_spki(&params, &wrapped).unwrap();
        let b = ec_spki(&params, &point).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.subject_public_key.raw_bytes(), point.as_slice());
        assert_eq!(a.algorithm.oid, oid::EC_PUBLIC_KEY);
    }

    #[test]
    fn ed25519_key_is_unwrapped_and_has_no_parameters() {
        let wrapped = OctetString::new(vec![7u8; 32]).unwrap().to_der().unwrap();
        let spki = ed25519_spki(&wrapped).unwrap();
        assert_eq!(spki.subject_public_key.raw_bytes(), &[7u8; 32]);
        assert!(spki.algorithm.parameters.is_none());
        assert!(ed25519_spki(&[1, 2, 3]).is_err());
    }

    #[test]
    fn rsa_public_key_is_rsaencryption_with_null_parameters() {
        let spki = rsa_spki(&[0xc0; 256], &[1, 0, 1]).unwrap();
        assert_eq!(spki.algorithm.oid, oid::RSA_ENCRYPTION);
        let params = spki.algorithm.parameters.unwrap();
        assert_eq!(params.to_der().unwrap(), vec![0x05, 0x00]);
        // SEQUENCE { INTEGER (257 bytes with the zero pad), INTEGER 65537 }
        assert_eq!(
            &spki.subject_public_key.raw_bytes()[..8],
            &[0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01]
        );
    }

    #[test]
    fn key_id_is_sha1_of_the_public_key_bits() {
        let spki = ed25519_spki(&[7u8; 32]).unwrap();
        assert_eq!(key_id(&spki), sha1::Sha1::digest([7u8; 32]).to_vec());
    }
}

//! The cryptography behind each mechanism: key-pair generation, signing, verification,
//! SM2 encryption and digests, on RustCrypto's sm2, sm3, p256 and rsa crates.
//!
//! Nothing here knows about sessions or storage: it turns key material and caller bytes
//! into bytes, and maps every failure to the CK_RV a PKCS#11 caller expects.

use std::mem::ManuallyDrop;

use cryptoki_sys::*;
use getrandom::SysRng;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use sm2::elliptic_curve::Generate;
use sm2::elliptic_curve::sec1::ToSec1Point;
use sm3::Sm3;
use zeroize::{Zeroize, Zeroizing};

use crate::objects::{self, Attrs, Template};
use crate::vendor::*;

/// SM2 curve coefficients and base point (GM/T 0003.5), the inputs of ZA.
const SM2_A: [u8; 32] = hex32("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC");
const SM2_B: [u8; 32] = hex32("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93");
const SM2_GX: [u8; 32] = hex32("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7");
const SM2_GY: [u8; 32] = hex32("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0");

/// The DigestInfo prefix of SHA-256 (PKCS#1 v1.5 signatures, CKM_SHA256_RSA_PKCS).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not upper-case hex"),
        }
    }
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// Every mechanism the token offers, with its CK_MECHANISM_INFO.
pub fn mechanism_list() -> Vec<(CK_MECHANISM_TYPE, CK_MECHANISM_INFO)> {
    let info = |min, max, flags| CK_MECHANISM_INFO {
        ulMinKeySize: min,
        ulMaxKeySize: max,
        flags,
    };
    let ec = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
    vec![
        (
            CKM_SM2_KEY_PAIR_GEN,
            info(256, 256, CKF_GENERATE_KEY_PAIR | ec),
        ),
        (CKM_SM2, info(256, 256, CKF_SIGN | CKF_VERIFY | ec)),
        (CKM_SM2_SM3, info(256, 256, CKF_SIGN | CKF_VERIFY | ec)),
        (
            CKM_SM2_ENCRYPT,
            info(256, 256, CKF_ENCRYPT | CKF_DECRYPT | ec),
        ),
        (CKM_SM3, info(0, 0, CKF_DIGEST)),
        (
            CKM_EC_KEY_PAIR_GEN,
            info(256, 256, CKF_GENERATE_KEY_PAIR | ec),
        ),
        (CKM_ECDSA, info(256, 256, CKF_SIGN | CKF_VERIFY | ec)),
        (CKM_ECDSA_SHA256, info(256, 256, CKF_SIGN | CKF_VERIFY | ec)),
        (
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            info(2048, 4096, CKF_GENERATE_KEY_PAIR),
        ),
        (CKM_RSA_PKCS, info(2048, 4096, CKF_SIGN | CKF_VERIFY)),
        (CKM_SHA256_RSA_PKCS, info(2048, 4096, CKF_SIGN | CKF_VERIFY)),
        (CKM_SHA256, info(0, 0, CKF_DIGEST)),
    ]
}

/// A value whose memory is overwritten with zeros when it is dropped, for key types that
/// do not wipe themselves (sm2's SigningKey and DecryptingKey hold a bare scalar).
pub struct Wiped<T>(ManuallyDrop<T>);

impl<T> Wiped<T> {
    fn new(v: T) -> Self {
        Wiped(ManuallyDrop::new(v))
    }
}

impl<T> std::ops::Deref for Wiped<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Drop for Wiped<T> {
    fn drop(&mut self) {
        let p: *mut T = &mut *self.0;
        // SAFETY: `p` points at the value inside our ManuallyDrop, which nothing else can
        // reach. It is dropped exactly once here (ManuallyDrop never drops it again), after
        // which its bytes are plain memory that we own, so overwriting them as `u8`s is
        // sound; the value is never read again.
        unsafe {
            std::ptr::drop_in_place(p);
            std::slice::from_raw_parts_mut(p.cast::<u8>(), size_of::<T>()).zeroize();
        }
    }
}

/// An SM2 private key as the cache keeps it.
pub struct Sm2Private {
    secret: sm2::SecretKey,
    signing: Wiped<sm2::dsa::SigningKey>,
    point: [u8; 65],
}

/// Private key material, decrypted, ready to use. Dropping it wipes it.
pub enum PrivateKey {
    /// An SM2 key (CKK_SM2).
    Sm2(Sm2Private),
    /// A P-256 key (CKK_EC).
    P256(p256::ecdsa::SigningKey),
    /// An RSA key (CKK_RSA).
    Rsa(rsa::PrivateKey),
}

/// A public key taken from an object's attributes.
pub enum PublicKey {
    /// SM2: the uncompressed point.
    Sm2([u8; 65]),
    /// P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// RSA.
    Rsa(rsa::PublicKey),
}

fn uncompressed<C>(p: &impl ToSec1Point<C>) -> Result<[u8; 65], CK_RV>
where
    C: sm2::elliptic_curve::Curve,
    C::FieldBytesSize: sm2::elliptic_curve::sec1::ModulusSize,
{
    p.to_sec1_point(false)
        .as_bytes()
        .try_into()
        .map_err(|_| CKR_GENERAL_ERROR)
}

impl PrivateKey {
    /// Rebuilds a key from what [`generate`] sealed.
    pub fn from_secret(key_type: CK_KEY_TYPE, secret: &[u8]) -> Result<PrivateKey, CK_RV> {
        match key_type {
            CKK_SM2 => {
                let secret = sm2::SecretKey::from_slice(secret).map_err(|_| CKR_DEVICE_ERROR)?;
                Self::sm2(secret)
            }
            CKK_EC => p256::ecdsa::SigningKey::from_slice(secret)
                .map(PrivateKey::P256)
                .map_err(|_| CKR_DEVICE_ERROR),
            CKK_RSA => rsa::PrivateKey::from_pkcs1_der(secret)
                .map(PrivateKey::Rsa)
                .map_err(|_| CKR_DEVICE_ERROR),
            _ => Err(CKR_DEVICE_ERROR),
        }
    }

    fn sm2(secret: sm2::SecretKey) -> Result<PrivateKey, CK_RV> {
        // The distinguishing ID given here is unused: ZA is computed per operation from the
        // mechanism's parameter, and only the prehash signer is called.
        let id = std::str::from_utf8(DEFAULT_SM2_ID).map_err(|_| CKR_GENERAL_ERROR)?;
        let signing = sm2::dsa::SigningKey::new(id, &secret).map_err(|_| CKR_DEVICE_ERROR)?;
        let point = uncompressed(&secret.public_key())?;
        Ok(PrivateKey::Sm2(Sm2Private {
            secret,
            signing: Wiped::new(signing),
            point,
        }))
    }

    /// The key material to seal for the store.
    fn secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>, CK_RV> {
        Ok(match self {
            PrivateKey::Sm2(k) => Zeroizing::new(k.secret.to_bytes().to_vec()),
            PrivateKey::P256(k) => Zeroizing::new(k.to_bytes().to_vec()),
            PrivateKey::Rsa(k) => Zeroizing::new(
                k.to_pkcs1_der()
                    .map_err(|_| CKR_GENERAL_ERROR)?
                    .as_bytes()
                    .to_vec(),
            ),
        })
    }

    /// CKK_* of this key.
    pub fn key_type(&self) -> CK_KEY_TYPE {
        match self {
            PrivateKey::Sm2(_) => CKK_SM2,
            PrivateKey::P256(_) => CKK_EC,
            PrivateKey::Rsa(_) => CKK_RSA,
        }
    }
}

/// DER OCTET STRING of an uncompressed point (CKA_EC_POINT).
fn ec_point_attr(point: &[u8; 65]) -> Vec<u8> {
    let mut v = vec![0x04, 65];
    v.extend_from_slice(point);
    v
}

/// The uncompressed point inside CKA_EC_POINT (DER OCTET STRING, or bare as some
/// applications write it).
fn point_from_attr(v: &[u8]) -> Result<[u8; 65], CK_RV> {
    let bare = match v {
        [0x04, 65, rest @ ..] if rest.len() == 65 => rest,
        _ => v,
    };
    bare.try_into().map_err(|_| CKR_KEY_TYPE_INCONSISTENT)
}

fn trimmed(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

/// A freshly generated key pair: the key, its sealed-to-be material, and the
/// algorithm-specific attributes of each half.
pub struct NewKeyPair {
    /// The private key, for the cache.
    pub key: PrivateKey,
    /// The material to seal under the token key.
    pub secret: Zeroizing<Vec<u8>>,
    /// Public-key attributes (CKA_KEY_TYPE, EC params and point, or modulus and exponent).
    pub public: Attrs,
    /// Private-key attributes that are not secret.
    pub private: Attrs,
}

/// Generates a key pair for a *_KEY_PAIR_GEN mechanism; `public_template` gives the curve or
/// the modulus size.
pub fn generate(
    mechanism: CK_MECHANISM_TYPE,
    public_template: &Template,
) -> Result<NewKeyPair, CK_RV> {
    let mut public = Attrs::new();
    let mut private = Attrs::new();
    let key = match mechanism {
        CKM_SM2_KEY_PAIR_GEN | CKM_EC_KEY_PAIR_GEN => {
            let (params, key) = if mechanism == CKM_SM2_KEY_PAIR_GEN {
                if public_template
                    .get(CKA_EC_PARAMS)
                    .is_some_and(|p| p != SM2P256V1_PARAMS)
                {
                    return Err(CKR_CURVE_NOT_SUPPORTED);
                }
                let secret = sm2::SecretKey::try_generate_from_rng(&mut SysRng)
                    .map_err(|_| CKR_DEVICE_ERROR)?;
                (SM2P256V1_PARAMS, PrivateKey::sm2(secret)?)
            } else {
                match public_template.get(CKA_EC_PARAMS) {
                    Some(PRIME256V1_PARAMS) => {}
                    Some(_) => return Err(CKR_CURVE_NOT_SUPPORTED),
                    None => return Err(CKR_TEMPLATE_INCOMPLETE),
                }
                let k = p256::ecdsa::SigningKey::try_generate_from_rng(&mut SysRng)
                    .map_err(|_| CKR_DEVICE_ERROR)?;
                (PRIME256V1_PARAMS, PrivateKey::P256(k))
            };
            let point = match &key {
                PrivateKey::Sm2(k) => k.point,
                PrivateKey::P256(k) => uncompressed(k.verifying_key().as_affine())?,
                PrivateKey::Rsa(_) => return Err(CKR_GENERAL_ERROR),
            };
            for attrs in [&mut public, &mut private] {
                attrs.insert(CKA_EC_PARAMS, params.to_vec());
            }
            public.insert(CKA_EC_POINT, ec_point_attr(&point));
            key
        }
        CKM_RSA_PKCS_KEY_PAIR_GEN => {
            let bits = public_template
                .get_ulong(CKA_MODULUS_BITS)?
                .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            if !(2048..=4096).contains(&bits) {
                return Err(CKR_KEY_SIZE_RANGE);
            }
            let exponent = match public_template.get(CKA_PUBLIC_EXPONENT) {
                Some(e) if e.len() <= 8 => rsa::BoxedUint::from_be_slice_vartime(e),
                Some(_) => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
                None => rsa::BoxedUint::from(65537u64),
            };
            let k = rsa::PrivateKey::new_with_exp(&mut SysRng, bits as usize, exponent)
                .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
            for attrs in [&mut public, &mut private] {
                attrs.insert(CKA_MODULUS, k.n_bytes().to_vec());
                attrs.insert(CKA_PUBLIC_EXPONENT, trimmed(&k.e_bytes()));
            }
            public.insert(CKA_MODULUS_BITS, objects::ulong(bits));
            PrivateKey::Rsa(k)
        }
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    for attrs in [&mut public, &mut private] {
        attrs.insert(CKA_KEY_TYPE, objects::ulong(key.key_type()));
        attrs.insert(CKA_KEY_GEN_MECHANISM, objects::ulong(mechanism));
    }
    let secret = key.secret_bytes()?;
    Ok(NewKeyPair {
        key,
        secret,
        public,
        private,
    })
}

impl PublicKey {
    /// The public key of a public-key object.
    pub fn from_attrs(attrs: &Attrs) -> Result<PublicKey, CK_RV> {
        let get = |t| {
            attrs
                .get(&t)
                .map(Vec::as_slice)
                .ok_or(CKR_KEY_TYPE_INCONSISTENT)
        };
        match objects::get_ulong(attrs, CKA_KEY_TYPE) {
            Some(CKK_SM2) => {
                let point = point_from_attr(get(CKA_EC_POINT)?)?;
                sm2::PublicKey::from_sec1_bytes(&point).map_err(|_| CKR_KEY_TYPE_INCONSISTENT)?;
                Ok(PublicKey::Sm2(point))
            }
            Some(CKK_EC) => {
                if get(CKA_EC_PARAMS)? != PRIME256V1_PARAMS {
                    return Err(CKR_CURVE_NOT_SUPPORTED);
                }
                let point = point_from_attr(get(CKA_EC_POINT)?)?;
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map(PublicKey::P256)
                    .map_err(|_| CKR_KEY_TYPE_INCONSISTENT)
            }
            Some(CKK_RSA) => {
                let n = rsa::BoxedUint::from_be_slice_vartime(get(CKA_MODULUS)?);
                let e = rsa::BoxedUint::from_be_slice_vartime(get(CKA_PUBLIC_EXPONENT)?);
                rsa::PublicKey::new(n, e)
                    .map(PublicKey::Rsa)
                    .map_err(|_| CKR_KEY_TYPE_INCONSISTENT)
            }
            _ => Err(CKR_KEY_TYPE_INCONSISTENT),
        }
    }

    /// Checks the attributes a caller gives for a new public-key object.
    pub fn check_attrs(attrs: &Attrs) -> Result<(), CK_RV> {
        match Self::from_attrs(attrs) {
            Ok(_) => Ok(()),
            Err(CKR_CURVE_NOT_SUPPORTED) => Err(CKR_CURVE_NOT_SUPPORTED),
            Err(_) => Err(CKR_TEMPLATE_INCONSISTENT),
        }
    }
}

/// ZA = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA) for the distinguishing ID `id`.
pub fn sm2_za(id: &[u8], point: &[u8; 65]) -> Result<[u8; 32], CK_RV> {
    let entl: u16 = id
        .len()
        .checked_mul(8)
        .and_then(|bits| u16::try_from(bits).ok())
        .ok_or(CKR_MECHANISM_PARAM_INVALID)?;
    let mut h = Sm3::new();
    h.update(entl.to_be_bytes());
    h.update(id);
    for part in [&SM2_A, &SM2_B, &SM2_GX, &SM2_GY] {
        h.update(part);
    }
    h.update(&point[1..]);
    Ok(h.finalize().into())
}

/// A running hash for the hashing mechanisms.
#[derive(Clone)]
pub enum Hasher {
    /// SM3.
    Sm3(Sm3),
    /// SHA-256.
    Sha256(Sha256),
}

impl Hasher {
    /// The hash of a digest mechanism.
    pub fn for_digest(mechanism: CK_MECHANISM_TYPE) -> Result<Hasher, CK_RV> {
        match mechanism {
            CKM_SM3 => Ok(Hasher::Sm3(Sm3::new())),
            CKM_SHA256 => Ok(Hasher::Sha256(Sha256::new())),
            _ => Err(CKR_MECHANISM_INVALID),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sm3(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// The digest (32 bytes for both).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sm3(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// What a sign or verify operation does with the input.
enum Input {
    /// The input is already the value to sign (CKM_SM2's e, CKM_ECDSA's hash,
    /// CKM_RSA_PKCS's DigestInfo); single-part only.
    Raw,
    /// The input is hashed (after ZA for CKM_SM2_SM3); multi-part allowed.
    Hashed(Hasher),
}

/// A signature operation between C_SignInit and its end.
pub struct SignOp {
    mechanism: CK_MECHANISM_TYPE,
    key: std::sync::Arc<PrivateKey>,
    input: Input,
    /// A computed signature kept for a second call after a length query.
    pub pending: Option<Vec<u8>>,
    /// Whether C_SignUpdate was called (C_Sign is then refused).
    pub multipart: bool,
}

fn mech_matches_key(mechanism: CK_MECHANISM_TYPE, key_type: CK_KEY_TYPE) -> Result<(), CK_RV> {
    let ok = match mechanism {
        CKM_SM2 | CKM_SM2_SM3 | CKM_SM2_ENCRYPT => key_type == CKK_SM2,
        CKM_ECDSA | CKM_ECDSA_SHA256 => key_type == CKK_EC,
        CKM_RSA_PKCS | CKM_SHA256_RSA_PKCS => key_type == CKK_RSA,
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    if ok {
        Ok(())
    } else {
        Err(CKR_KEY_TYPE_INCONSISTENT)
    }
}

/// The initial input state of a sign/verify mechanism; `point` is the SM2 public key, for ZA.
fn input_for(
    mechanism: CK_MECHANISM_TYPE,
    param: &[u8],
    point: Option<&[u8; 65]>,
) -> Result<Input, CK_RV> {
    match mechanism {
        CKM_SM2_SM3 => {
            let id = if param.is_empty() {
                DEFAULT_SM2_ID
            } else {
                param
            };
            let point = point.ok_or(CKR_KEY_TYPE_INCONSISTENT)?;
            let mut h = Sm3::new();
            h.update(sm2_za(id, point)?);
            Ok(Input::Hashed(Hasher::Sm3(h)))
        }
        CKM_ECDSA_SHA256 | CKM_SHA256_RSA_PKCS if param.is_empty() => {
            Ok(Input::Hashed(Hasher::Sha256(Sha256::new())))
        }
        CKM_SM2 | CKM_ECDSA | CKM_RSA_PKCS if param.is_empty() => Ok(Input::Raw),
        CKM_SM2 | CKM_ECDSA | CKM_RSA_PKCS | CKM_ECDSA_SHA256 | CKM_SHA256_RSA_PKCS => {
            Err(CKR_MECHANISM_PARAM_INVALID)
        }
        _ => Err(CKR_MECHANISM_INVALID),
    }
}

fn update_input(input: &mut Input, data: &[u8]) -> Result<(), CK_RV> {
    match input {
        Input::Hashed(h) => {
            h.update(data);
            Ok(())
        }
        // PKCS#11 defines CKM_ECDSA, CKM_RSA_PKCS (and so CKM_SM2) as single-part.
        Input::Raw => Err(CKR_FUNCTION_NOT_SUPPORTED),
    }
}

/// The value signed: the raw input, or the hash wrapped as the mechanism says.
fn signed_value(mechanism: CK_MECHANISM_TYPE, input: Input, data: &[u8]) -> Vec<u8> {
    match input {
        Input::Raw => data.to_vec(),
        Input::Hashed(mut h) => {
            h.update(data);
            let digest = h.finish();
            if mechanism == CKM_SHA256_RSA_PKCS {
                [SHA256_DIGEST_INFO, &digest].concat()
            } else {
                digest
            }
        }
    }
}

impl SignOp {
    /// C_SignInit: checks the mechanism against the key.
    pub fn new(
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
        key: std::sync::Arc<PrivateKey>,
    ) -> Result<SignOp, CK_RV> {
        mech_matches_key(mechanism, key.key_type())?;
        let point = match &*key {
            PrivateKey::Sm2(k) => Some(k.point),
            _ => None,
        };
        let input = input_for(mechanism, param, point.as_ref())?;
        Ok(SignOp {
            mechanism,
            key,
            input,
            pending: None,
            multipart: false,
        })
    }

    /// C_SignUpdate.
    pub fn update(&mut self, data: &[u8]) -> Result<(), CK_RV> {
        self.multipart = true;
        update_input(&mut self.input, data)
    }

    /// Computes the signature over what was fed plus `data` (once; kept in `pending`).
    pub fn signature(&mut self, data: &[u8]) -> Result<&[u8], CK_RV> {
        if self.pending.is_none() {
            let input = std::mem::replace(&mut self.input, Input::Raw);
            let value = signed_value(self.mechanism, input, data);
            self.pending = Some(sign_value(&self.key, &value)?);
        }
        self.pending.as_deref().ok_or(CKR_GENERAL_ERROR)
    }
}

fn sign_value(key: &PrivateKey, value: &[u8]) -> Result<Vec<u8>, CK_RV> {
    match key {
        PrivateKey::Sm2(k) => {
            use sm2::dsa::signature::hazmat::RandomizedPrehashSigner;
            if value.len() != 32 {
                return Err(CKR_DATA_LEN_RANGE);
            }
            let sig: sm2::dsa::Signature = k
                .signing
                .sign_prehash_with_rng(&mut SysRng, value)
                .map_err(|_| CKR_FUNCTION_FAILED)?;
            Ok(sig.to_bytes().to_vec())
        }
        PrivateKey::P256(k) => {
            use p256::ecdsa::signature::hazmat::RandomizedPrehashSigner;
            if value.len() < 16 || value.len() > 64 {
                return Err(CKR_DATA_LEN_RANGE);
            }
            let sig: p256::ecdsa::Signature = k
                .sign_prehash_with_rng(&mut SysRng, value)
                .map_err(|_| CKR_DATA_LEN_RANGE)?;
            Ok(sig.to_bytes().to_vec())
        }
        PrivateKey::Rsa(k) => k
            .sign_with_rng(&mut SysRng, rsa::Pkcs1v15Sign::new_unprefixed(), value)
            .map_err(|_| CKR_DATA_LEN_RANGE),
    }
}

/// A verification operation between C_VerifyInit and its end.
pub struct VerifyOp {
    mechanism: CK_MECHANISM_TYPE,
    key: PublicKey,
    input: Input,
}

impl VerifyOp {
    /// C_VerifyInit.
    pub fn new(
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
        key: PublicKey,
    ) -> Result<VerifyOp, CK_RV> {
        let (key_type, point) = match &key {
            PublicKey::Sm2(p) => (CKK_SM2, Some(p)),
            PublicKey::P256(_) => (CKK_EC, None),
            PublicKey::Rsa(_) => (CKK_RSA, None),
        };
        mech_matches_key(mechanism, key_type)?;
        let input = input_for(mechanism, param, point)?;
        Ok(VerifyOp {
            mechanism,
            key,
            input,
        })
    }

    /// C_VerifyUpdate.
    pub fn update(&mut self, data: &[u8]) -> Result<(), CK_RV> {
        update_input(&mut self.input, data)
    }

    /// C_Verify / C_VerifyFinal: CKR_OK, CKR_SIGNATURE_INVALID or CKR_SIGNATURE_LEN_RANGE.
    pub fn verify(self, data: &[u8], signature: &[u8]) -> Result<(), CK_RV> {
        let value = signed_value(self.mechanism, self.input, data);
        match &self.key {
            PublicKey::Sm2(point) => {
                use sm2::dsa::signature::hazmat::PrehashVerifier;
                if value.len() != 32 {
                    return Err(CKR_DATA_LEN_RANGE);
                }
                let sig = sm2::dsa::Signature::from_slice(signature).map_err(|_| {
                    if signature.len() == 64 {
                        CKR_SIGNATURE_INVALID
                    } else {
                        CKR_SIGNATURE_LEN_RANGE
                    }
                })?;
                let id = std::str::from_utf8(DEFAULT_SM2_ID).map_err(|_| CKR_GENERAL_ERROR)?;
                let vk = sm2::dsa::VerifyingKey::from_sec1_bytes(id, point)
                    .map_err(|_| CKR_GENERAL_ERROR)?;
                vk.verify_prehash(&value, &sig)
                    .map_err(|_| CKR_SIGNATURE_INVALID)
            }
            PublicKey::P256(vk) => {
                use p256::ecdsa::signature::hazmat::PrehashVerifier;
                let sig = p256::ecdsa::Signature::from_slice(signature).map_err(|_| {
                    if signature.len() == 64 {
                        CKR_SIGNATURE_INVALID
                    } else {
                        CKR_SIGNATURE_LEN_RANGE
                    }
                })?;
                vk.verify_prehash(&value, &sig)
                    .map_err(|_| CKR_SIGNATURE_INVALID)
            }
            PublicKey::Rsa(pk) => {
                if signature.len() != pk.size() {
                    return Err(CKR_SIGNATURE_LEN_RANGE);
                }
                pk.verify(rsa::Pkcs1v15Sign::new_unprefixed(), &value, signature)
                    .map_err(|_| CKR_SIGNATURE_INVALID)
            }
        }
    }
}

/// SM2 encryption (CKM_SM2_ENCRYPT) to a public key: a GM/T 0009 DER SM2Cipher
/// (SEQUENCE { x, y INTEGER, hash OCTET STRING (C3), ciphertext OCTET STRING (C2) }).
pub fn sm2_encrypt(key: &PublicKey, plaintext: &[u8]) -> Result<Vec<u8>, CK_RV> {
    let PublicKey::Sm2(point) = key else {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    };
    if plaintext.is_empty() {
        return Err(CKR_DATA_LEN_RANGE);
    }
    let ek = sm2::pke::EncryptingKey::from_sec1_bytes(point).map_err(|_| CKR_GENERAL_ERROR)?;
    ek.encrypt_der(&mut SysRng, plaintext)
        .map_err(|_| CKR_FUNCTION_FAILED)
}

/// SM2 decryption: DER SM2Cipher (what [`sm2_encrypt`] and OpenSSL produce), or the raw
/// 04 ‖ C1 ‖ C3 ‖ C2 form some SM2 devices use (told apart by the first byte).
pub fn sm2_decrypt(key: &PrivateKey, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CK_RV> {
    let PrivateKey::Sm2(k) = key else {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    };
    let dk = Wiped::new(sm2::pke::DecryptingKey::new(k.secret.clone()));
    let plain = match ciphertext.first() {
        Some(0x30) => dk.decrypt_der(ciphertext),
        Some(0x04) => dk.decrypt(ciphertext),
        _ => return Err(CKR_ENCRYPTED_DATA_INVALID),
    };
    plain
        .map(Zeroizing::new)
        .map_err(|_| CKR_ENCRYPTED_DATA_INVALID)
}

/// Checks a mechanism for C_EncryptInit / C_DecryptInit against the key type.
pub fn check_crypt(
    mechanism: CK_MECHANISM_TYPE,
    param: &[u8],
    key_type: CK_KEY_TYPE,
) -> Result<(), CK_RV> {
    if mechanism != CKM_SM2_ENCRYPT {
        return Err(CKR_MECHANISM_INVALID);
    }
    if !param.is_empty() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    mech_matches_key(mechanism, key_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sm2_pair() -> (Arc<PrivateKey>, PublicKey) {
        let pair = generate(CKM_SM2_KEY_PAIR_GEN, &Template::default()).expect("generate");
        let public = PublicKey::from_attrs(&pair.public).expect("public");
        (Arc::new(pair.key), public)
    }

    #[test]
    fn sm2_sm3_signatures_verify_with_the_sm2_crate_and_the_standard_id() {
        use sm2::dsa::signature::Verifier;
        let (key, public) = sm2_pair();
        let mut op = SignOp::new(CKM_SM2_SM3, b"", key).expect("init");
        let sig = op.signature(b"message").expect("sign").to_vec();
        let PublicKey::Sm2(point) = public else {
            panic!("sm2 key")
        };
        let vk = sm2::dsa::VerifyingKey::from_sec1_bytes("1234567812345678", &point).expect("vk");
        let sig = sm2::dsa::Signature::from_slice(&sig).expect("64 bytes");
        vk.verify(b"message", &sig).expect("verifies");
    }

    #[test]
    fn a_signature_made_with_another_id_does_not_verify_with_the_default() {
        let (key, public) = sm2_pair();
        let mut op = SignOp::new(CKM_SM2_SM3, b"alice@example", key).expect("init");
        let sig = op.signature(b"m").expect("sign").to_vec();
        let verify = VerifyOp::new(CKM_SM2_SM3, b"", public).expect("init");
        assert_eq!(verify.verify(b"m", &sig), Err(CKR_SIGNATURE_INVALID));
    }

    #[test]
    fn sm2_encryption_round_trips_in_der_and_raw_form() {
        let (key, public) = sm2_pair();
        let der = sm2_encrypt(&public, b"session key").expect("encrypt");
        assert_eq!(der[0], 0x30);
        assert_eq!(
            sm2_decrypt(&key, &der).expect("decrypt").as_slice(),
            b"session key"
        );
        let PublicKey::Sm2(point) = public else {
            panic!("sm2 key")
        };
        let raw = sm2::pke::EncryptingKey::from_sec1_bytes(&point)
            .expect("key")
            .encrypt(&mut SysRng, b"raw form")
            .expect("encrypt");
        assert_eq!(
            sm2_decrypt(&key, &raw).expect("decrypt").as_slice(),
            b"raw form"
        );
    }

    #[test]
    fn p256_and_rsa_signatures_verify() {
        let ec = Template(vec![(CKA_EC_PARAMS, PRIME256V1_PARAMS.to_vec())]);
        let rsa = Template(vec![(CKA_MODULUS_BITS, objects::ulong(2048))]);
        for (keygen, mech, t) in [
            (CKM_EC_KEY_PAIR_GEN, CKM_ECDSA_SHA256, ec),
            (CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_SHA256_RSA_PKCS, rsa),
        ] {
            let pair = generate(keygen, &t).expect("generate");
            let public = PublicKey::from_attrs(&pair.public).expect("public");
            let mut op = SignOp::new(mech, b"", Arc::new(pair.key)).expect("init");
            let sig = op.signature(b"tbs").expect("sign").to_vec();
            VerifyOp::new(mech, b"", public)
                .expect("init")
                .verify(b"tbs", &sig)
                .expect("verifies");
        }
    }
}

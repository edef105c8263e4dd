//! SM2 in PKCS#11 modules, which have no standard SM2 mechanism: the vendor-defined numbers
//! a module uses (from configuration, with the published tables of some vendors as presets),
//! and the host's part of an SM2 signature when the module signs a digest (Z and e of
//! GM/T 0003.2 and GM/T 0009).

use std::borrow::Cow;

use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use sm3::{Digest, Sm3};

/// The distinguishing ID GM/T 0009 names as the default: "1234567812345678".
pub const DEFAULT_ID: &[u8] = b"1234567812345678";

/// How a module returns an SM2 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureFormat {
    /// r ‖ s, 32 bytes each.
    Raw,
    /// SM2Signature ::= SEQUENCE { r INTEGER, s INTEGER }, DER.
    Der,
}

/// Who computes Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA) and e = SM3(Z ‖ M).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZComputed {
    /// signet, from the key's public point; the module signs e with the raw mechanism.
    Host,
    /// The module, through its SM2-with-SM3 mechanism (given the message).
    Module,
}

/// A module's vendor-defined SM2 numbers and conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sm2Mechanisms {
    /// CKA_KEY_TYPE of SM2 keys.
    pub key_type: u64,
    /// The key-pair generation mechanism.
    pub keygen: u64,
    /// SM2-with-SM3 over the message (the module computes Z with the default ID and e).
    pub sign: Option<u64>,
    /// Raw SM2 over a 32-byte e computed on the host.
    pub digest_sign: Option<u64>,
    /// How signatures come back.
    pub signature: SignatureFormat,
    /// Who computes Z and e.
    pub z: ZComputed,
}

/// The tables vendors publish in their PKCS#11 headers, by the name `[hsm] sm2_mechanisms`
/// gives them.
pub const PRESETS: &[(&str, Sm2Mechanisms)] = &[
    (
        "tass",
        Sm2Mechanisms {
            key_type: 0x8000_0004,
            keygen: 0x8000_8001,
            sign: Some(0x8000_8100),
            digest_sign: Some(0x8000_8000),
            signature: SignatureFormat::Raw,
            z: ZComputed::Module,
        },
    ),
    (
        "sansec",
        Sm2Mechanisms {
            key_type: 0x8000_0004,
            keygen: 0x8000_8001,
            sign: Some(0x8000_8100),
            digest_sign: Some(0x8000_8104),
            signature: SignatureFormat::Raw,
            z: ZComputed::Module,
        },
    ),
    (
        "ibm-ep11",
        Sm2Mechanisms {
            key_type: 0x8005_0002,
            keygen: 0x8005_000A,
            sign: Some(0x8005_000C),
            digest_sign: Some(0x8005_000B),
            signature: SignatureFormat::Raw,
            z: ZComputed::Module,
        },
    ),
];

/// The SM2 settings of one module: its numbers and the distinguishing ID signet signs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sm2Settings {
    /// The module's numbers.
    pub mechanisms: Sm2Mechanisms,
    /// The signer's distinguishing ID (GM/T 0009's default unless configured).
    pub id: Vec<u8>,
}

impl Sm2Settings {
    /// Whether the module computes Z: it does so only with the default ID, since a
    /// vendor's SM2-with-SM3 mechanism takes no standard ID parameter.
    fn module_hashes(&self) -> bool {
        self.mechanisms.z == ZComputed::Module
            && self.mechanisms.sign.is_some()
            && self.id == DEFAULT_ID
    }

    /// Whether signing with this module needs the key's public point (for Z on the host).
    pub fn needs_public_point(&self) -> bool {
        !self.module_hashes()
    }

    /// The mechanism and the bytes to hand to C_Sign for `message`, signed by the key whose
    /// uncompressed public point (04 ‖ x ‖ y) is `point` (needed only when the host computes
    /// Z).
    pub fn mechanism<'m>(
        &self,
        point: Option<&[u8]>,
        message: &'m [u8],
    ) -> Result<(Mechanism<'static>, Cow<'m, [u8]>), String> {
        if self.module_hashes() {
            let sign = self.mechanisms.sign.unwrap_or_default();
            return Ok((vendor(sign)?, Cow::Borrowed(message)));
        }
        let raw = self.mechanisms.digest_sign.ok_or(
            "the module's SM2 table has no digest_sign mechanism, which signing with this distinguishing ID or z = \"host\" needs",
        )?;
        let point = point.ok_or("the SM2 key's public point is unknown")?;
        let e = e_value(&z_value(&self.id, point)?, message);
        Ok((vendor(raw)?, Cow::Owned(e.to_vec())))
    }

    /// The mechanism that generates an SM2 key pair.
    pub fn keygen_mechanism(&self) -> Result<Mechanism<'static>, String> {
        vendor(self.mechanisms.keygen)
    }
}

fn vendor(number: u64) -> Result<Mechanism<'static>, String> {
    let t = MechanismType::new_vendor_defined(number as cryptoki_sys::CK_MECHANISM_TYPE)
        .map_err(|e| format!("mechanism {number:#x} is not vendor-defined: {e}"))?;
    Ok(Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(
        t, None,
    )))
}

/// The SM2 curve's a, b and base point (GM/T 0003.5), big-endian.
const CURVE_A: [u8; 32] =
    hex_literal("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC");
const CURVE_B: [u8; 32] =
    hex_literal("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93");
const GX: [u8; 32] =
    hex_literal("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7");
const GY: [u8; 32] =
    hex_literal("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0");

/// 64 hex digits as 32 bytes, at compile time.
const fn hex_literal(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => panic!("not a hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64);
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA), ENTL the ID's length in bits as two
/// bytes, (xA, yA) the signer's public point given as 04 ‖ x ‖ y.
pub fn z_value(id: &[u8], point: &[u8]) -> Result<[u8; 32], String> {
    let bits = id
        .len()
        .checked_mul(8)
        .and_then(|b| u16::try_from(b).ok())
        .ok_or("the distinguishing ID is longer than 8191 bytes")?;
    let [0x04, xy @ ..] = point else {
        return Err("the SM2 public point is not uncompressed".into());
    };
    if xy.len() != 64 {
        return Err(format!("an SM2 public point of {} bytes", point.len()));
    }
    let mut h = Sm3::new();
    h.update(bits.to_be_bytes());
    h.update(id);
    for part in [&CURVE_A, &CURVE_B, &GX, &GY] {
        h.update(part);
    }
    h.update(xy);
    Ok(h.finalize().into())
}

/// e = SM3(Z ‖ M).
pub fn e_value(z: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut h = Sm3::new();
    h.update(z);
    h.update(message);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::dsa::signature::Verifier;
    use sm2::dsa::signature::hazmat::PrehashSigner;

    /// A raw SM2 signature over e computed here verifies as an SM2-with-SM3 signature of the
    /// message, with the same ID, by an implementation that computes Z itself; with another
    /// ID it does not.
    #[test]
    fn e_computed_on_the_host_is_what_an_independent_verifier_hashes() {
        let secret = sm2::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let signer = sm2::dsa::SigningKey::new("1234567812345678", &secret).unwrap();
        let point = secret.public_key().to_sec1_bytes();
        let message = b"tbsCertificate bytes";
        let e = e_value(&z_value(DEFAULT_ID, &point).unwrap(), message);
        let sig: sm2::dsa::Signature = signer.sign_prehash(&e).unwrap();
        let verifier = sm2::dsa::VerifyingKey::from_sec1_bytes("1234567812345678", &point).unwrap();
        verifier.verify(message, &sig).unwrap();
        let other = sm2::dsa::VerifyingKey::from_sec1_bytes("", &point).unwrap();
        assert!(other.verify(message, &sig).is_err());
    }

    #[test]
    fn the_module_hashes_only_with_the_default_id_and_a_sign_mechanism() {
        let tass = PRESETS[0].1;
        let with = |id: &[u8], m: Sm2Mechanisms| Sm2Settings {
            mechanisms: m,
            id: id.to_vec(),
        };
        assert!(!with(DEFAULT_ID, tass).needs_public_point());
        assert!(with(b"ALICE123@YAHOO.COM", tass).needs_public_point());
        let host = Sm2Mechanisms {
            z: ZComputed::Host,
            ..tass
        };
        assert!(with(DEFAULT_ID, host).needs_public_point());
        let no_raw = Sm2Mechanisms {
            digest_sign: None,
            ..host
        };
        let e = with(DEFAULT_ID, no_raw)
            .mechanism(Some(&[4; 65]), b"m")
            .unwrap_err();
        assert!(e.contains("digest_sign"), "{e}");
        assert!(z_value(DEFAULT_ID, &[4; 33]).is_err());
    }
}

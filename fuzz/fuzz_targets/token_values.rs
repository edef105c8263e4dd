//! Attribute values read back from a PKCS#11 token, which a faulty or hostile module (or a
//! subscriber's USB key) controls: CKA_MODULUS and CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS and
//! CKA_EC_POINT (wrapped or bare), an Ed25519 CKA_EC_POINT, a raw ECDSA signature, and a
//! certificate's CKA_VALUE as `ReadToken` summarises it. A key that converts holds exactly
//! the bytes read (minus an OCTET STRING wrapper and leading zeros) and re-encodes to
//! itself; a signature converts to a DER Ecdsa-Sig-Value whose r and s are the two halves.
//!
//! Framing: a kind byte (0 RSA, 1 EC, 2 Ed25519, 3 signature, 4 certificate), then for the
//! two-value kinds a two-byte big-endian length and the first value; the rest is the last
//! value.
#![no_main]

use der::asn1::UintRef;
use der::{Decode, Encode, Sequence};
use libfuzzer_sys::fuzz_target;
use signet::fuzzing::{ec_spki, ecdsa_raw_to_der, ed25519_spki, rsa_spki};
use signet::hsm::token::TokenObject;
use signet::pki::verify::key_type_of;
use spki::SubjectPublicKeyInfoOwned;

enum Input<'a> {
    Rsa {
        modulus: &'a [u8],
        exponent: &'a [u8],
    },
    Ec {
        params: &'a [u8],
        point: &'a [u8],
    },
    Ed25519 {
        point: &'a [u8],
    },
    Signature {
        raw: &'a [u8],
    },
    Certificate {
        label: &'a [u8],
        value: &'a [u8],
    },
}

fn input(data: &[u8]) -> Option<Input<'_>> {
    let (&kind, rest) = data.split_first()?;
    let two = || {
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        (len <= rest.len()).then(|| rest.split_at(len))
    };
    Some(match kind % 5 {
        0 => two().map(|(modulus, exponent)| Input::Rsa { modulus, exponent })?,
        1 => two().map(|(params, point)| Input::Ec { params, point })?,
        2 => Input::Ed25519 { point: rest },
        3 => Input::Signature { raw: rest },
        _ => two().map(|(label, value)| Input::Certificate { label, value })?,
    })
}

#[derive(Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

#[derive(Sequence)]
struct EcdsaSig<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// An unsigned big-endian number without its leading zeros (empty for zero).
fn strip_zeros(b: &[u8]) -> &[u8] {
    &b[b.iter().position(|&x| x != 0).unwrap_or(b.len())..]
}

fn round_trips(spki: &SubjectPublicKeyInfoOwned) {
    let der = spki.to_der().expect("a converted key encodes");
    assert_eq!(
        SubjectPublicKeyInfoOwned::from_der(&der).ok().as_ref(),
        Some(spki)
    );
    // Classifying it never panics, whatever the token handed over.
    let _ = key_type_of(spki, "public key");
}

/// The point inside a CKA_EC_POINT: the value itself when it has the bare length, else the
/// content of the OCTET STRING it is.
fn inner_point(point: &[u8], bare: usize) -> Vec<u8> {
    if point.len() == bare {
        point.to_vec()
    } else {
        der::asn1::OctetString::from_der(point)
            .expect("a converted point was an OCTET STRING")
            .as_bytes()
            .to_vec()
    }
}

fuzz_target!(|data: &[u8]| match input(data) {
    None => {}
    Some(Input::Rsa { modulus, exponent }) => {
        if let Ok(spki) = rsa_spki(modulus, exponent) {
            round_trips(&spki);
            let key = RsaPublicKey::from_der(spki.subject_public_key.raw_bytes())
                .expect("RSAPublicKey decodes");
            assert_eq!(strip_zeros(key.modulus.as_bytes()), strip_zeros(modulus));
            assert_eq!(
                strip_zeros(key.public_exponent.as_bytes()),
                strip_zeros(exponent)
            );
        }
    }
    Some(Input::Ec { params, point }) => {
        if let Ok(spki) = ec_spki(params, point) {
            round_trips(&spki);
            let bits = spki.subject_public_key.raw_bytes();
            assert!(bits.len() == 65 || bits.len() == 97, "{} bytes", bits.len());
            assert_eq!(bits[0], 4);
            assert_eq!(inner_point(point, bits.len()), bits);
        }
    }
    Some(Input::Ed25519 { point }) => {
        if let Ok(spki) = ed25519_spki(point) {
            round_trips(&spki);
            let bits = spki.subject_public_key.raw_bytes();
            assert_eq!(bits.len(), 32);
            assert_eq!(inner_point(point, 32), bits);
        }
    }
    Some(Input::Signature { raw }) => {
        if let Ok(der) = ecdsa_raw_to_der(raw) {
            let sig = EcdsaSig::from_der(&der).expect("the DER signature decodes");
            let (r, s) = raw.split_at(raw.len() / 2);
            assert_eq!(strip_zeros(sig.r.as_bytes()), strip_zeros(r));
            assert_eq!(strip_zeros(sig.s.as_bytes()), strip_zeros(s));
        }
    }
    Some(Input::Certificate { label, value }) => {
        let obj = TokenObject {
            class: "certificate".into(),
            label: String::from_utf8_lossy(label).into_owned(),
            id: label.iter().rev().copied().collect(),
            value: value.to_vec(),
            flags: Vec::new(),
        };
        if let Some(summary) = signet::token::summarize(&obj) {
            assert!(x509_cert::Certificate::from_der(value).is_ok());
            assert_eq!(summary.label, obj.label);
            assert_eq!(summary.id, obj.id);
            assert!(summary.serial.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
});

//! A subscriber's public key without proof of possession: the SubjectPublicKeyInfo a CSR
//! carries (or a certificate being renewed), its classification (`key_type_of`), the
//! exponent rule and signature verification under any algorithm identifier, signature and
//! message. The bytes are DER read in order: the SubjectPublicKeyInfo, the signature
//! AlgorithmIdentifier, the signature as a BIT STRING, and the message as whatever follows
//! (a CSR's three parts after its key are exactly that). A key accepted as a type is of the
//! algorithm that type names and re-encodes to itself, and a signature that verifies is
//! under an algorithm fitting that key.
#![no_main]

use der::asn1::BitString;
use der::{Decode, Encode, Reader, SliceReader};
use libfuzzer_sys::fuzz_target;
use signet::pki::KeyType;
use signet::pki::alg::oid;
use signet::pki::verify::{RsaExponent, check_rsa_exponent, key_type_of, verify_signature};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = SliceReader::new(data) else {
        return;
    };
    let Ok(spki) = SubjectPublicKeyInfoOwned::decode(&mut reader) else {
        return;
    };
    let kt = key_type_of(&spki, "spki");
    for rule in [RsaExponent::F4, RsaExponent::OddAtLeast65537] {
        if kt.is_ok() {
            let _ = check_rsa_exponent(&spki, rule, "spki");
        }
    }
    if let Ok(kt) = kt {
        let expected = match kt {
            KeyType::P256 | KeyType::P384 | KeyType::Sm2 => oid::EC_PUBLIC_KEY,
            KeyType::Ed25519 => oid::ED25519,
            k if k.is_rsa() => oid::RSA_ENCRYPTION,
            other => panic!("key_type_of gave {other}, a type subscribers cannot have"),
        };
        assert_eq!(spki.algorithm.oid, expected, "{kt}");
        let der = spki.to_der().expect("an accepted key encodes");
        let again = SubjectPublicKeyInfoOwned::from_der(&der).expect("and decodes");
        assert_eq!(again, spki);
        assert_eq!(key_type_of(&again, "spki").ok(), Some(kt));
        let bits = spki.subject_public_key.raw_bytes();
        match kt {
            KeyType::P256 | KeyType::Sm2 => assert_eq!(bits.len(), 65),
            KeyType::P384 => assert_eq!(bits.len(), 97),
            KeyType::Ed25519 => assert_eq!(bits.len(), 32),
            _ => {}
        }
    }
    let Ok(alg) = AlgorithmIdentifierOwned::decode(&mut reader) else {
        return;
    };
    let Ok(signature) = BitString::decode(&mut reader) else {
        return;
    };
    let Ok(message) = reader.read_slice(reader.remaining_len()) else {
        return;
    };
    if verify_signature(&spki, &alg, message, signature.raw_bytes(), "spki").is_ok() {
        let kt = kt.expect("a signature verified under a key signet does not accept");
        let family = match kt {
            KeyType::P256 | KeyType::P384 => "1.2.840.10045.4.",
            KeyType::Ed25519 => "1.3.101.112",
            KeyType::Sm2 => "1.2.156.10197.1.501",
            _ => "1.2.840.113549.1.1.",
        };
        assert!(
            alg.oid.to_string().starts_with(family),
            "a signature verified under {} with a {kt} key",
            alg.oid
        );
    }
});

//! CSRs that do prove possession: the fuzzer chooses the key (RSA-2048, P-256, P-384 or
//! Ed25519), the algorithm, the subject bytes and the attributes, and a fixed test key signs
//! the request info, so `check_csr` gets past the signature to everything after it. A
//! correctly signed request with a key signet accepts must be accepted with that key's type;
//! the same request with any one signature bit flipped, or signed over other bytes, must be
//! refused as not proving possession.
#![no_main]

use arbitrary::Arbitrary;
use der::asn1::{AnyRef, BitString};
use der::{Decode, Encode, Sequence};
use libfuzzer_sys::fuzz_target;
use signet::pki::SignatureAlgorithm;
use signet::pki::csr::check_csr;
use signet_fuzz::soft_signer::SoftKey;
use spki::AlgorithmIdentifierOwned;
use std::sync::OnceLock;

/// CertificationRequest with the info as raw DER, whatever the fuzzer made of it.
#[derive(Sequence)]
struct Csr<'a> {
    info: AnyRef<'a>,
    algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

#[derive(Arbitrary, Debug)]
struct Input {
    key: u8,
    alg: u8,
    /// DER of a Name (or anything: then the info does not decode).
    subject: Vec<u8>,
    /// DER of the attributes' content.
    attributes: Vec<u8>,
    /// Bytes signed in place of the info, when the fuzzer chooses to sign other bytes.
    other_message: Option<Vec<u8>>,
    /// A signature bit to flip.
    flip: Option<u16>,
}

fn keys() -> &'static [SoftKey; 4] {
    static KEYS: OnceLock<[SoftKey; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            SoftKey::rsa2048(),
            SoftKey::p256(7),
            SoftKey::p384(7),
            SoftKey::ed25519(7),
        ]
    })
}

/// The algorithms a key of this type signs with, as signet pairs them (P-256 with SHA-256,
/// P-384 with SHA-384).
fn algorithms(key: &SoftKey) -> Vec<SignatureAlgorithm> {
    use SignatureAlgorithm::*;
    [
        RsaPkcs1Sha256,
        RsaPkcs1Sha384,
        RsaPssSha256,
        RsaPssSha384,
        EcdsaSha256,
        EcdsaSha384,
        Ed25519,
    ]
    .into_iter()
    .filter(|a| a.fits_key(key.key_type()))
    .collect()
}

/// DER header (tag, length) for `len` content octets.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

fuzz_target!(|input: Input| {
    if input.subject.len() > 2000 || input.attributes.len() > 2000 {
        return;
    }
    let key = &keys()[usize::from(input.key % 4)];
    let algs = algorithms(key);
    let alg = algs[usize::from(input.alg) % algs.len()];
    let spki = key.spki().to_der().expect("test key encodes");
    // CertificationRequestInfo ::= SEQUENCE { version 0, subject, spki, [0] attributes }
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend(&input.subject);
    body.extend(&spki);
    body.extend(tlv(0xa0, &input.attributes));
    let info = tlv(0x30, &body);
    let Ok(info_any) = AnyRef::from_der(&info) else {
        return;
    };
    let message = input.other_message.as_deref().unwrap_or(&info);
    let mut signature = key.sign(alg, message);
    if let Some(bit) = input.flip {
        let bit = usize::from(bit) % (signature.len() * 8);
        signature[bit / 8] ^= 1 << (bit % 8);
    }
    let der = Csr {
        info: info_any,
        algorithm: alg.algorithm_identifier(),
        signature: BitString::from_bytes(&signature).expect("signature fits a BIT STRING"),
    }
    .to_der()
    .expect("request encodes");
    let info_decodes = x509_cert::request::CertReqInfo::from_der(&info).is_ok();
    let signed_info = input
        .other_message
        .as_deref()
        .is_none_or(|m| m == info.as_slice());
    let result = check_csr(&der);
    if !info_decodes {
        assert!(
            result.is_err(),
            "a request whose info does not decode was accepted"
        );
        return;
    }
    if signed_info && input.flip.is_none() {
        let c = result.unwrap_or_else(|e| panic!("a correctly signed {alg} request refused: {e}"));
        assert_eq!(c.key_type, key.key_type());
        assert_eq!(c.spki, key.spki());
        assert_eq!(c.der, der);
    } else {
        let e = result.expect_err("a request whose signature does not verify was accepted");
        assert!(e.to_string().starts_with("csr: "), "{e}");
    }
});

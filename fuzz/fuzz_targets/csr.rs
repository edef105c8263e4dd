//! CSR bytes as an RA sends them in Issue and Renew: `check_csr` parses, checks proof of
//! possession (the self-signature) and classifies the key. An accepted request is kept byte
//! for byte, its key re-encodes to itself and has the type reported; every refusal names
//! the field `csr`.
#![no_main]

use der::{Decode, Encode};
use libfuzzer_sys::fuzz_target;
use signet::pki::PkiError;
use signet::pki::csr::check_csr;
use signet::pki::verify::key_type_of;
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::request::CertReq;

fuzz_target!(|data: &[u8]| {
    match check_csr(data) {
        Ok(c) => {
            assert_eq!(c.der, data, "the request is kept exactly as received");
            assert_eq!(key_type_of(&c.spki, "csr").ok(), Some(c.key_type));
            let spki_der = c.spki.to_der().expect("an accepted key encodes");
            assert_eq!(
                SubjectPublicKeyInfoOwned::from_der(&spki_der).ok().as_ref(),
                Some(&c.spki),
                "an accepted key re-encodes to itself"
            );
            let req = CertReq::from_der(data).expect("an accepted request is a PKCS#10 request");
            assert_eq!(req.info.public_key, c.spki);
        }
        Err(PkiError::Invalid { field, .. }) => assert_eq!(field, "csr"),
        Err(other) => panic!("a CSR refusal that names no field: {other:?}"),
    }
});

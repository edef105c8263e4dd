//! OCSP requests as relying parties send them: the DER body of `POST /ocsp` (first byte
//! even) or the base64 path of `GET /ocsp/{request}` (first byte odd). A request that
//! parses re-encodes to an equal request; it names 1 to 20 certificates; a CertID matches
//! the issuer exactly when its hashes are the issuer's; and the response built for it
//! (signed with a test key, its signature checked) answers exactly the CertIDs asked about,
//! in order, and echoes the nonce. Base64 that decodes is what an encoder would produce
//! from the decoded bytes, in both alphabets, padded or not.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use der::{Decode, Encode};
use libfuzzer_sys::fuzz_target;
use signet::http::decode_base64;
use signet::pki::ocsp::{
    self, BasicOcspResponse, ID_SHA1, ID_SHA256, IssuerHashes, OcspRequest, OcspResponse,
    ResponseContent, Status,
};
use signet_fuzz::test_ca;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        request(rest);
    } else if let Ok(text) = std::str::from_utf8(rest) {
        if let Some(der) = decode_base64(text) {
            for (alphabet, pad) in [(STANDARD, true), (URL_SAFE, false)] {
                let again = encode(&der, alphabet, pad);
                assert_eq!(decode_base64(&again).as_ref(), Some(&der), "{again}");
            }
            request(&der);
        }
    }
});

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 (RFC 4648) of `bytes` in `alphabet`, with or without `=` padding.
fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn request(der: &[u8]) {
    let Ok(req) = ocsp::parse_request(der) else {
        return;
    };
    let n = req.tbs_request.request_list.len();
    assert!((1..=ocsp::MAX_REQUESTS).contains(&n));
    let again = req.to_der().expect("a parsed request encodes");
    assert_eq!(OcspRequest::from_der(&again).ok().as_ref(), Some(&req));

    let (key, ca) = test_ca();
    let hashes = IssuerHashes::new(ca).expect("test CA hashes");
    let mut entries = Vec::with_capacity(n);
    for r in &req.tbs_request.request_list {
        let id = &r.req_cert;
        let alg = id.hash_algorithm.oid;
        let ours = (alg == ID_SHA1 || alg == ID_SHA256)
            && hashes
                .cert_id(alg, id.serial_number.as_bytes())
                .is_ok_and(|mine| {
                    mine.issuer_name_hash == id.issuer_name_hash
                        && mine.issuer_key_hash == id.issuer_key_hash
                });
        assert_eq!(hashes.matches(id), ours);
        let _ = signet::ca::normalize_serial(&ocsp::serial_hex(id));
        entries.push((
            id.clone(),
            if ours { Status::Good } else { Status::Unknown },
        ));
    }

    let nonce = ocsp::nonce(&req);
    let at = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let content = ResponseContent {
        entries: &entries,
        produced_at: at,
        next_update: at + Duration::from_secs(3600),
        nonce,
    };
    let Ok(data) = ocsp::build_response_data(ca, &content) else {
        // Only a nonce the response cannot carry may stop it.
        assert!(nonce.is_some(), "no response for a request without a nonce");
        return;
    };
    let alg = key.default_alg();
    let signature = key.sign(alg, &data.to_der().expect("response data encodes"));
    let spki = ca.tbs_certificate().subject_public_key_info();
    let resp = ocsp::assemble_response(data, alg, &signature, spki, None)
        .expect("a response signed by the responder's key assembles");
    let resp = OcspResponse::from_der(&resp).expect("the response decodes");
    let bytes = resp
        .response_bytes
        .expect("a successful response has bytes");
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).expect("basic decodes");
    let answered: Vec<_> = basic
        .tbs_response_data
        .responses
        .iter()
        .map(|s| &s.cert_id)
        .collect();
    let asked: Vec<_> = req
        .tbs_request
        .request_list
        .iter()
        .map(|r| &r.req_cert)
        .collect();
    assert_eq!(
        answered, asked,
        "the response answers what was asked, in order"
    );
    let echoed = basic
        .tbs_response_data
        .response_extensions
        .as_ref()
        .and_then(|e| e.iter().find(|e| e.extn_id == ocsp::ID_PKIX_OCSP_NONCE));
    assert_eq!(
        echoed.map(|e| &e.extn_value),
        nonce.map(|n| &n.extn_value),
        "the nonce is echoed exactly"
    );
}

//! RFC 3161 queries as clients POST them to `/tsa`: `parse_request` checks a TimeStampReq
//! against the TSA's policy. A query refused becomes a rejection that decodes, with status
//! 2 and one failInfo bit; a query accepted re-encodes to an equal query, and the token
//! granted for it (signed with a test key, its signature checked) carries exactly the
//! query's imprint and nonce under the TSA's policy.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use libfuzzer_sys::fuzz_target;
use signet::pki::tsp::{self, Accuracy, TimeStampReq, TimeStampResp, TokenContent};
use signet_fuzz::test_ca;

/// The policy the seed queries ask for (`openssl ts -query -tspolicy`).
const POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.3161.1");

fuzz_target!(|data: &[u8]| {
    let req = match tsp::parse_request(data, &POLICY) {
        Ok(req) => req,
        Err(rejection) => {
            let der = tsp::rejection(&rejection);
            let resp = TimeStampResp::from_der(&der).expect("a rejection decodes");
            assert_eq!(resp.status.status, 2);
            assert!(resp.time_stamp_token.is_none());
            let bits = resp.status.fail_info.expect("a rejection says why");
            assert_eq!(
                bits.raw_bytes().iter().map(|b| b.count_ones()).sum::<u32>(),
                1
            );
            return;
        }
    };
    assert_eq!(req.version, 1);
    let again = req.to_der().expect("an accepted query encodes");
    assert_eq!(TimeStampReq::from_der(&again).ok().as_ref(), Some(&req));

    let (key, ca) = test_ca();
    let alg = key.default_alg();
    let content = TokenContent {
        policy: POLICY,
        request: &req,
        serial: 7,
        gen_time: UNIX_EPOCH + Duration::from_secs(1_900_000_000),
        accuracy: Accuracy {
            seconds: Some(1),
            millis: None,
            micros: None,
        },
    };
    let attribute = tsp::signing_certificate_attribute(ca).expect("test CA attribute");
    let prepared = tsp::prepare_token(&content, &attribute, alg).expect("token prepares");
    let signature = key.sign(alg, prepared.to_be_signed());
    let granted = tsp::assemble_granted(prepared, ca, alg, &signature, req.cert_req)
        .expect("a token signed by the TSA key assembles");
    let tst = tsp::tst_info_of(&granted).expect("the granted token decodes");
    assert_eq!(tst.policy, POLICY);
    assert_eq!(tst.message_imprint, req.message_imprint);
    assert_eq!(tst.nonce, req.nonce);
    assert_eq!(tst.serial_number, 7);
});

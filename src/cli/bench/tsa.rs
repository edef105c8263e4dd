//! `signet bench --mode tsa`: timestamp queries to `POST /tsa` beside the TSA key's raw rate.

use bytes::Bytes;
use signet::config::Config;

use super::args::BenchArgs;
use super::common::{Key, connections, load_http, measure, print_figures};
use super::http;

/// TSA mode: raw rate of the TSA key, timestamp load, raw rate again; print figures and the
/// ratio.
pub(crate) fn run(cfg: Config, a: &BenchArgs) -> Result<(), String> {
    let spec = cfg
        .tsa_key()
        .map_err(|e| e.to_string())?
        .ok_or("the configuration has no [tsa] section")?;
    let addr = http::address(&cfg, a.http.as_deref())?;
    let key = Key {
        label: spec.key_label.clone(),
        signature: spec.signature,
    };
    let m = measure(&cfg, &key, a, || async {
        let conns = connections(addr, a.concurrency).await?;
        load_http(
            conns,
            a,
            "/tsa",
            "application/timestamp-query",
            |_, _| tsa_query().map(Bytes::from),
            |body| {
                signet::pki::tsp::tst_info_of(body)
                    .map(|_| ())
                    .map_err(|e| format!("not a granted token: {e}"))
            },
        )
        .await
    })?;
    println!(
        "TSA key           {} ({}, {})",
        spec.key_label, spec.key_type, spec.signature
    );
    println!(
        "callers           {} (one keep-alive connection each), {} s",
        a.concurrency, a.duration
    );
    print_figures("timestamps", &m);
    Ok(())
}

/// A SHA-256 timestamp query with a fresh imprint and nonce, and certReq, DER.
fn tsa_query() -> Result<Vec<u8>, String> {
    use der::Encode;
    use signet::pki::tsp::{ID_SHA256, MessageImprint, TimeStampReq};
    let mut imprint = [0u8; 32];
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut imprint).map_err(|e| e.to_string())?;
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    // A positive INTEGER in its shortest form: the first octet 0x01 to 0x7f.
    nonce[0] = (nonce[0] & 0x7f).max(1);
    TimeStampReq {
        version: 1,
        message_imprint: MessageImprint {
            hash_algorithm: spki::AlgorithmIdentifierOwned {
                oid: ID_SHA256,
                parameters: None,
            },
            hashed_message: der::asn1::OctetString::new(imprint.to_vec())
                .map_err(|e| e.to_string())?,
        },
        req_policy: None,
        nonce: Some(der::asn1::Int::new(&nonce).map_err(|e| e.to_string())?),
        cert_req: true,
        extensions: None,
    }
    .to_der()
    .map_err(|e| e.to_string())
}

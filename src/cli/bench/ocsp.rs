//! `signet bench --mode ocsp`: OCSP responses per second from a running daemon's HTTP
//! listener, first for requests without a nonce (answered from the kept, already signed
//! responses), then with a fresh nonce on every request (each one signed in the HSM), with
//! the raw signing rate of the responder's key measured in the same run.

use std::sync::Arc;

use bytes::Bytes;
use der::Decode;
use x509_cert::Certificate;

use signet::api::client::{ClientSettings, connect};
use signet::api::pb::certificate_authority_client::CertificateAuthorityClient;
use signet::ca::ocsp::responder_key_label;
use signet::config::{Config, OcspSigner};
use signet::pki::ocsp::{self, ID_SHA1, IssuerHashes, OcspResponse, OcspResponseStatus};

use super::args::BenchArgs;
use super::common::{
    Key, connections, issue_request, issuer_spec, load_http, measure, ms, print_raw, run_id,
};
use super::http::{self, Conn};
use super::raw::p256_csrs;

/// Certificates issued for the run; requests pick among them.
const CERTIFICATES: usize = 32;

/// Run the OCSP benchmark against the daemon of `cfg`.
pub(crate) fn run(cfg: Config, client: ClientSettings, a: &BenchArgs) -> Result<(), String> {
    let spec = issuer_spec(&cfg, a)?;
    let key = match cfg.ocsp.signer {
        OcspSigner::Delegated => Key {
            label: responder_key_label(&spec.key_label),
            signature: cfg.ocsp.responder_key_type.default_signature_algorithm(),
        },
        OcspSigner::Issuer => Key {
            label: spec.key_label.clone(),
            signature: spec.signature,
        },
    };
    let addr = http::address(&cfg, a.http.as_deref())?;
    let agreement = cfg.ca.agreement_version.clone();
    let m = measure(&cfg, &key, a, || async {
        let requests = Arc::new(prepare(&client, a, &agreement, addr).await?);
        // One pass so every kept response exists before the clock starts.
        let mut warm = Conn::open(addr).await?;
        for r in requests.iter() {
            check(&warm.post("/ocsp", CONTENT_TYPE, r.clone()).await?)?;
        }
        let pick = |requests: &Arc<Vec<Bytes>>| {
            let requests = requests.clone();
            move |w: usize, i: usize| Ok(requests[(w + i) % requests.len()].clone())
        };
        let kept = load_http(
            connections(addr, a.concurrency).await?,
            a,
            "/ocsp",
            CONTENT_TYPE,
            pick(&requests),
            check,
        )
        .await?;
        let fresh = pick(&requests);
        let signed = load_http(
            connections(addr, a.concurrency).await?,
            a,
            "/ocsp",
            CONTENT_TYPE,
            move |w, i| fresh(w, i).and_then(|r| with_nonce(&r)),
            check,
        )
        .await?;
        Ok((kept, signed))
    })?;
    let (kept, signed) = &m.load;
    println!(
        "issuer            {} (responder key {}, {})",
        a.issuer, key.label, key.signature
    );
    println!(
        "callers           {} HTTP/1.1 keep-alive connections, {} s per phase",
        a.concurrency, a.duration
    );
    let raw = m.raw();
    for (name, p) in [("kept (no nonce)", kept), ("signed (nonce)", signed)] {
        println!(
            "{name:<17} {:.0}/s, {:.1}x the raw signing rate; p50 {:.2} ms, p99 {:.2} ms; {} errors",
            p.rate(),
            p.rate() / raw,
            ms(p.latency.p50),
            ms(p.latency.p99),
            p.errors
        );
        if let Some(e) = &p.first_error {
            println!("first error       {e}");
        }
    }
    print_raw(&m);
    println!(
        "ratio             signed answers at {:.0}% of the raw signing rate",
        100.0 * signed.rate() / raw
    );
    Ok(())
}

const CONTENT_TYPE: &str = "application/ocsp-request";

/// The answer must be a successful OCSPResponse.
fn check(der: &[u8]) -> Result<(), String> {
    let resp = OcspResponse::from_der(der).map_err(|e| format!("OCSP response: {e}"))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(format!("OCSP status {:?}", resp.response_status));
    }
    Ok(())
}

/// Issue the certificates the requests ask about; return one nonce-less SHA-1 request for
/// each.
async fn prepare(
    client: &ClientSettings,
    a: &BenchArgs,
    agreement: &str,
    addr: std::net::SocketAddr,
) -> Result<Vec<Bytes>, String> {
    let issuer_der = Conn::open(addr)
        .await?
        .get(&format!("/ca/{}.crt", a.issuer))
        .await?;
    let issuer = Certificate::from_der(&issuer_der)
        .map_err(|e| format!("issuer certificate from the daemon: {e}"))?;
    let hashes =
        IssuerHashes::new(&issuer).ok_or("the issuer certificate's subject does not encode")?;
    let mut ca = CertificateAuthorityClient::new(connect(client).await.map_err(|e| e.to_string())?);
    let run = run_id();
    let mut out = Vec::with_capacity(CERTIFICATES);
    for (i, csr) in p256_csrs(CERTIFICATES)?.into_iter().enumerate() {
        let req = issue_request(
            &format!("bench-ocsp-{run}-{i}"),
            &a.profile,
            &a.issuer,
            csr,
            &format!("bench-ocsp-{i}.example.cn"),
            agreement,
        );
        let issued = ca
            .issue(req)
            .await
            .map_err(|s| format!("issuing the certificates to ask about: {}", s.message()))?
            .into_inner();
        let cert = Certificate::from_der(&issued.certificate).map_err(|e| e.to_string())?;
        let id = hashes
            .cert_id(ID_SHA1, cert.tbs_certificate().serial_number().as_bytes())
            .map_err(|e| e.to_string())?;
        out.push(Bytes::from(
            ocsp::build_request(vec![id], None).map_err(|e| e.to_string())?,
        ));
    }
    Ok(out)
}

/// The same request with a fresh 16-octet nonce.
fn with_nonce(request: &[u8]) -> Result<Bytes, String> {
    let req = ocsp::parse_request(request).map_err(|e| e.to_string())?;
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| format!("random number generator: {e}"))?;
    let ids = req
        .tbs_request
        .request_list
        .into_iter()
        .map(|r| r.req_cert)
        .collect();
    ocsp::build_request(ids, Some(&nonce))
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

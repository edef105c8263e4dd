//! `signet bench --mode ocsp`: OCSP responses per second from a running daemon's HTTP
//! listener, first for requests without a nonce (answered from the kept, already signed
//! responses), then with a fresh nonce on every request (each one signed in the HSM), with
//! the raw signing rate of the responder's key measured in the same run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use der::Decode;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use x509_cert::Certificate;

use signet::api::client::{ClientSettings, connect};
use signet::api::pb::certificate_authority_client::CertificateAuthorityClient;
use signet::bench::{Latency, RawRate, latency, p256_csrs, raw_signing_rate};
use signet::ca::ocsp::responder_key_label;
use signet::config::{Config, OcspSigner};
use signet::hsm::Hsm;
use signet::pki::SignatureAlgorithm;
use signet::pki::ocsp::{self, ID_SHA1, IssuerHashes, OcspResponse, OcspResponseStatus};

use crate::bench_cmd::{BenchArgs, issue_request, ms};

/// Certificates issued for the run; requests pick among them.
const CERTIFICATES: usize = 32;

/// One phase's figures.
struct Phase {
    answered: u64,
    errors: u64,
    elapsed: Duration,
    latency: Latency,
    first_error: Option<String>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
}

/// Run the OCSP benchmark against the daemon of `cfg`.
pub fn run(cfg: Config, client: ClientSettings, a: &BenchArgs) -> Result<(), String> {
    let spec = cfg
        .issuer_specs()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| s.name == a.issuer)
        .ok_or_else(|| format!("--issuer {:?} is not a configured issuer", a.issuer))?;
    let (key_label, alg): (String, SignatureAlgorithm) = match cfg.ocsp.signer {
        OcspSigner::Delegated => (
            responder_key_label(&spec.key_label),
            cfg.ocsp.responder_key_type.default_signature_algorithm(),
        ),
        OcspSigner::Issuer => (spec.key_label.clone(), spec.signature),
    };
    let addr = http_address(&cfg, a.http.as_deref())?;
    let agreement = cfg.ca.agreement_version.clone();
    let pool = cfg.hsm.pool_size;
    let hsm = Hsm::open(cfg.hsm_settings().map_err(|e| e.to_string())?)
        .map_err(|e| format!("HSM: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let raw_for = Duration::from_secs(a.raw_seconds.max(1));
    let raw = |hsm: Hsm, label: String| async move {
        raw_signing_rate(&hsm, &label, alg, pool, raw_for)
            .await
            .map_err(|e| format!("raw signing with {label:?}: {e}"))
    };
    let result = rt.block_on(async {
        let before = raw(hsm.clone(), key_label.clone()).await?;
        eprintln!(
            "raw HSM signing, {key_label} ({alg}), {pool} sessions: {:.0}/s",
            before.per_second
        );
        let requests = prepare(&client, a, &agreement, addr).await?;
        // One pass so every kept response exists before the clock starts.
        for r in &requests {
            post(&mut open(addr).await?, addr, r.clone()).await?;
        }
        let requests = Arc::new(requests);
        let cached = load(addr, a, requests.clone(), None).await?;
        let signed = load(addr, a, requests, Some(())).await?;
        let after = raw(hsm.clone(), key_label.clone()).await?;
        Ok::<_, String>((before, cached, signed, after))
    });
    hsm.close();
    let (before, cached, signed, after) = result?;
    report(a, &key_label, alg, pool, before, after, &cached, &signed);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    a: &BenchArgs,
    key_label: &str,
    alg: SignatureAlgorithm,
    pool: usize,
    before: RawRate,
    after: RawRate,
    cached: &Phase,
    signed: &Phase,
) {
    let raw = (before.per_second + after.per_second) / 2.0;
    println!(
        "issuer            {} (responder key {key_label}, {alg})",
        a.issuer
    );
    println!(
        "callers           {} HTTP/1.1 keep-alive connections, {} s per phase",
        a.concurrency, a.duration
    );
    for (name, p) in [("kept (no nonce)", cached), ("signed (nonce)", signed)] {
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
    println!(
        "raw HSM signing   {:.0}/s before, {:.0}/s after ({pool} sessions)",
        before.per_second, after.per_second
    );
    println!(
        "ratio             signed answers at {:.0}% of the raw signing rate",
        100.0 * signed.rate() / raw
    );
}

/// The daemon's HTTP address: `--http`, else `[http] listen` (an unspecified address
/// means this host).
fn http_address(cfg: &Config, given: Option<&str>) -> Result<SocketAddr, String> {
    let mut addr = match given {
        Some(text) => text
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("--http {text:?}: {e} (give host:port of the daemon)"))?,
        None => {
            cfg.http
                .as_ref()
                .ok_or("the configuration has no [http] section; pass --http host:port")?
                .listen
        }
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(addr)
}

/// Issue the certificates the requests ask about; return one nonce-less SHA-1 request for
/// each.
async fn prepare(
    client: &ClientSettings,
    a: &BenchArgs,
    agreement: &str,
    addr: SocketAddr,
) -> Result<Vec<Bytes>, String> {
    let issuer_der = get(addr, &format!("/ca/{}.crt", a.issuer)).await?;
    let issuer = Certificate::from_der(&issuer_der)
        .map_err(|e| format!("issuer certificate from the daemon: {e}"))?;
    let hashes =
        IssuerHashes::new(&issuer).ok_or("the issuer certificate's subject does not encode")?;
    let mut ca = CertificateAuthorityClient::new(connect(client).await.map_err(|e| e.to_string())?);
    let csrs = p256_csrs(CERTIFICATES)?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut out = Vec::with_capacity(CERTIFICATES);
    for (i, csr) in csrs.into_iter().enumerate() {
        let req = issue_request(
            &format!("bench-ocsp-{run_id}-{i}"),
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

/// `--concurrency` connections posting requests for `--duration`. With `nonce`, each
/// request gets a fresh random nonce (so each answer is signed); without, the prepared
/// requests are sent as they are.
async fn load(
    addr: SocketAddr,
    a: &BenchArgs,
    requests: Arc<Vec<Bytes>>,
    nonce: Option<()>,
) -> Result<Phase, String> {
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let duration = Duration::from_secs(a.duration.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let mut conn = open(addr).await?;
        let requests = requests.clone();
        let errors = errors.clone();
        let first_error = first_error.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = w;
            while start.elapsed() < duration {
                i += 1;
                let body = match nonce {
                    None => requests[i % requests.len()].clone(),
                    Some(()) => match with_nonce(&requests[i % requests.len()]) {
                        Ok(b) => b,
                        Err(e) => return Err(e),
                    },
                };
                let t = Instant::now();
                match post(&mut conn, addr, body).await {
                    Ok(()) => samples.push(t.elapsed()),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock()
                            && f.is_none()
                        {
                            *f = Some(e);
                        }
                        conn = open(addr).await?;
                    }
                }
            }
            Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.map_err(|e| format!("load task: {e}"))??);
    }
    let elapsed = start.elapsed();
    Ok(Phase {
        answered: samples.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency: latency(&mut samples),
        first_error: first_error.lock().ok().and_then(|f| f.clone()),
    })
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

type Conn = SendRequest<Full<Bytes>>;

async fn open(addr: SocketAddr) -> Result<Conn, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP to {addr}: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn exchange(conn: &mut Conn, req: hyper::Request<Full<Bytes>>) -> Result<Bytes, String> {
    conn.ready().await.map_err(|e| e.to_string())?;
    let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    Ok(body)
}

async fn get(addr: SocketAddr, path: &str) -> Result<Bytes, String> {
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    exchange(&mut open(addr).await?, req)
        .await
        .map_err(|e| format!("GET {path}: {e}"))
}

/// POST one OCSP request; the answer must be a successful OCSPResponse.
async fn post(conn: &mut Conn, addr: SocketAddr, body: Bytes) -> Result<(), String> {
    let req = hyper::Request::post("/ocsp")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_TYPE, "application/ocsp-request")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let der = exchange(conn, req).await?;
    let resp = OcspResponse::from_der(&der).map_err(|e| format!("OCSP response: {e}"))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(format!("OCSP status {:?}", resp.response_status));
    }
    Ok(())
}

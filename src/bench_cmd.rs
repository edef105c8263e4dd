//! `signet bench`: a load generator against a running daemon over real mutual-TLS gRPC, with
//! the raw HSM signing rate of the same issuer key and pool size measured in the same run,
//! so that every figure is reported as a ratio to what the hardware can do. `--mode tsa`
//! loads the timestamp authority (`POST /tsa` over HTTP/1.1 keep-alive connections) instead,
//! beside the raw rate of the TSA key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use signet::api::client::{ClientSettings, connect, describe_status};
use signet::api::pb;
use signet::api::pb::certificate_authority_client::CertificateAuthorityClient;
use signet::bench::{Latency, RawRate, latency, p256_csrs, raw_signing_rate};
use signet::config::Config;
use signet::hsm::Hsm;

/// What `signet bench` loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Issue` calls over mTLS gRPC.
    Issue,
    /// Timestamp queries to `POST /tsa`.
    Tsa,
}

/// `signet bench` options.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to load: certificate issuance over gRPC, or the timestamp authority over HTTP.
    #[arg(long, value_enum, default_value_t = Mode::Issue)]
    mode: Mode,
    /// TSA mode: the status service's base URL (default: `[ca] public_base_url`).
    #[arg(long)]
    tsa_url: Option<String>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of raw HSM signing before the load (and again after it).
    #[arg(long, default_value_t = 5)]
    raw_seconds: u64,
    /// The issuer to load; its key is the one measured raw.
    #[arg(long, default_value = "issuing-rsa")]
    issuer: String,
    /// The profile requested (server: CN and a DNS SAN per request).
    #[arg(long, default_value = "server")]
    profile: String,
    /// Connections to spread the callers over (an RA office usually has a few).
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

/// What one run measured.
struct Report {
    issued: u64,
    errors: u64,
    elapsed: Duration,
    latency: Latency,
    first_error: Option<String>,
}

impl BenchArgs {
    /// Whether this run loads the TSA (and needs no RA client settings).
    pub fn is_tsa(&self) -> bool {
        self.mode == Mode::Tsa
    }
}

/// TSA mode: raw rate of the TSA key, timestamp load, raw rate again; print figures and
/// the ratio.
pub fn run_tsa(cfg: Config, a: &BenchArgs) -> Result<(), String> {
    let spec = cfg
        .tsa_key()
        .map_err(|e| e.to_string())?
        .ok_or("the configuration has no [tsa] section")?;
    let base = a.tsa_url.clone().unwrap_or_else(|| cfg.public_base_url());
    let url = url::Url::parse(&base).map_err(|e| format!("--tsa-url {base:?}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!("--tsa-url {base:?}: only http:// is supported"));
    }
    let host = url.host_str().ok_or("--tsa-url: no host")?.to_owned();
    let addr = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
    let path = format!("{}/tsa", url.path().trim_end_matches('/'));
    let key = Key {
        label: spec.key_label.clone(),
        signature: spec.signature,
    };
    let (before, report, after) = measure(&cfg, &key, a, load_tsa(&addr, &host, &path, a))?;
    println!(
        "TSA key           {} ({}, {})",
        spec.key_label, spec.key_type, spec.signature
    );
    println!(
        "callers           {} (one keep-alive connection each), {} s",
        a.concurrency, a.duration
    );
    print_figures("timestamps", &report, before, after, cfg.hsm.pool_size);
    Ok(())
}

/// The key measured raw.
struct Key {
    label: String,
    signature: signet::pki::SignatureAlgorithm,
}

/// Raw rate of `key`, then `load`, then the raw rate again, on a runtime of its own.
fn measure(
    cfg: &Config,
    key: &Key,
    a: &BenchArgs,
    load: impl std::future::Future<Output = Result<Report, String>>,
) -> Result<(RawRate, Report, RawRate), String> {
    let pool = cfg.hsm.pool_size;
    let hsm = Hsm::open(cfg.hsm_settings().map_err(|e| e.to_string())?)
        .map_err(|e| format!("HSM: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let raw_for = Duration::from_secs(a.raw_seconds.max(1));
    let result = rt.block_on(async {
        let before = raw_signing_rate(&hsm, &key.label, key.signature, pool, raw_for)
            .await
            .map_err(|e| format!("raw signing: {e}"))?;
        eprintln!(
            "raw HSM signing, {} ({}), {pool} sessions: {:.0}/s",
            key.label, key.signature, before.per_second
        );
        let report = load.await?;
        let after = raw_signing_rate(&hsm, &key.label, key.signature, pool, raw_for)
            .await
            .map_err(|e| format!("raw signing: {e}"))?;
        Ok::<_, String>((before, report, after))
    });
    hsm.close();
    result
}

/// Print what a run measured: `what` per second, errors, latency, raw rates and the ratio.
fn print_figures(what: &str, report: &Report, before: RawRate, after: RawRate, pool: usize) {
    let raw = (before.per_second + after.per_second) / 2.0;
    let rate = report.issued as f64 / report.elapsed.as_secs_f64();
    println!("{what:<18}{} ({:.0}/s)", report.issued, rate);
    println!("errors            {}", report.errors);
    println!(
        "latency           p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(report.latency.p50),
        ms(report.latency.p99),
        ms(report.latency.max)
    );
    println!(
        "raw HSM signing   {:.0}/s before, {:.0}/s after ({} sessions)",
        before.per_second, after.per_second, pool
    );
    println!(
        "ratio             {:.0}% of the raw signing rate",
        100.0 * rate / raw
    );
    if let Some(e) = &report.first_error {
        println!("first error       {e}");
    }
}

/// Errors seen by the load tasks: how many, and the first one.
#[derive(Clone, Default)]
struct Errors {
    count: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<String>>>,
}

impl Errors {
    fn record(&self, e: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first.lock()
            && f.is_none()
        {
            *f = Some(e);
        }
    }

    /// Wait for the load tasks and make the report.
    async fn report(
        self,
        tasks: Vec<tokio::task::JoinHandle<Vec<Duration>>>,
        start: Instant,
    ) -> Result<Report, String> {
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await.map_err(|e| format!("load task: {e}"))?);
        }
        let elapsed = start.elapsed();
        let first_error = self.first.lock().ok().and_then(|f| f.clone());
        Ok(Report {
            issued: samples.len() as u64,
            errors: self.count.load(Ordering::Relaxed),
            elapsed,
            latency: latency(&mut samples),
            first_error,
        })
    }
}

/// A SHA-256 timestamp query with a nonce and certReq, DER.
fn tsa_query() -> Result<Vec<u8>, String> {
    use der::Encode;
    use signet::pki::tsp::{ID_SHA256, MessageImprint, TimeStampReq};
    let mut imprint = [0u8; 32];
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut imprint).map_err(|e| e.to_string())?;
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    nonce[0] &= 0x7f;
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

/// One POST over a kept-alive HTTP/1.1 connection: the response body.
async fn post_tsa(
    stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    stream
        .get_mut()
        .write_all(request)
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(format!("HTTP status line {:?}", line.trim()));
    }
    let mut len = None;
    loop {
        line.clear();
        if stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("connection closed".into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let len = len.ok_or("no Content-Length")?;
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

async fn load_tsa(addr: &str, host: &str, path: &str, a: &BenchArgs) -> Result<Report, String> {
    let query = tsa_query()?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/timestamp-query\r\nContent-Length: {}\r\n\r\n",
        query.len()
    )
    .into_bytes();
    request.extend_from_slice(&query);
    let request = Arc::new(request);
    let errors = Errors::default();
    let duration = Duration::from_secs(a.duration.max(1));
    let mut streams = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        streams.push(tokio::io::BufReader::new(s));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut stream in streams {
        let (request, errors) = (request.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while start.elapsed() < duration {
                let t = Instant::now();
                let outcome = post_tsa(&mut stream, &request).await.and_then(|body| {
                    signet::pki::tsp::tst_info_of(&body)
                        .map(|_| ())
                        .map_err(|e| format!("not a granted token: {e}"))
                });
                match outcome {
                    Ok(()) => samples.push(t.elapsed()),
                    Err(e) => {
                        // A connection out of step is useless: this caller stops.
                        errors.record(e);
                        break;
                    }
                }
            }
            samples
        }));
    }
    errors.report(tasks, start).await
}

/// Run the benchmark: raw rate, load, raw rate again; print figures and the ratio.
pub fn run(cfg: Config, client: ClientSettings, a: &BenchArgs) -> Result<(), String> {
    let spec = cfg
        .issuer_specs()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| s.name == a.issuer)
        .ok_or_else(|| format!("--issuer {:?} is not a configured issuer", a.issuer))?;
    let agreement = cfg.ca.agreement_version.clone();
    let key = Key {
        label: spec.key_label.clone(),
        signature: spec.signature,
    };
    let (before, report, after) = measure(&cfg, &key, a, load(&client, a, &agreement))?;
    println!(
        "issuer            {} ({}, {})",
        a.issuer, spec.key_type, spec.signature
    );
    println!(
        "callers           {} over {} connections, {} s",
        a.concurrency, a.connections, a.duration
    );
    print_figures("issued", &report, before, after, cfg.hsm.pool_size);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn load(client: &ClientSettings, a: &BenchArgs, agreement: &str) -> Result<Report, String> {
    let csrs = Arc::new(p256_csrs(64)?);
    let mut clients = Vec::new();
    for _ in 0..a.connections.max(1) {
        let ch = connect(client).await.map_err(|e| e.to_string())?;
        clients.push(CertificateAuthorityClient::new(ch));
    }
    // Request ids unique to this run, so a second run issues anew.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let errors = Errors::default();
    let duration = Duration::from_secs(a.duration.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let mut c = clients[w % clients.len()].clone();
        let csrs = csrs.clone();
        let errors = errors.clone();
        let (issuer, profile, agreement) =
            (a.issuer.clone(), a.profile.clone(), agreement.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = 0usize;
            while start.elapsed() < duration {
                let host = format!("bench-{w}-{i}.example.cn");
                let req = pb::IssueRequest {
                    request_id: format!("bench-{run_id}-{w}-{i}"),
                    profile: profile.clone(),
                    issuer: issuer.clone(),
                    csr: csrs[(w + i) % csrs.len()].clone(),
                    subject: vec![pb::SubjectAttribute {
                        r#type: "CN".into(),
                        value: host.clone(),
                    }],
                    sans: vec![pb::SubjectAltName {
                        name: Some(pb::subject_alt_name::Name::Dns(host)),
                    }],
                    validity_years: 1,
                    approval: Some(pb::Approval {
                        officer: "bench".into(),
                        ra_reference: format!("BENCH-{w}-{i}"),
                        agreement_version: agreement.clone(),
                    }),
                };
                let t = Instant::now();
                match c.issue(req).await {
                    Ok(_) => samples.push(t.elapsed()),
                    Err(status) => errors.record(describe_status(&status)),
                }
                i += 1;
            }
            samples
        }));
    }
    errors.report(tasks, start).await
}

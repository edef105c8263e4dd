//! `signet bench`: a load generator against a running daemon, with the raw HSM signing rate
//! of the key that does the signing (same key, same pool size) measured in the same run, so
//! that every figure is reported as a ratio to what the hardware can do. `--mode issue`
//! loads certificate issuance over mutual-TLS gRPC; `--mode ocsp` and `--mode tsa` load the
//! status service's OCSP responder and timestamp authority over HTTP/1.1 keep-alive
//! connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use signet::api::client::{ClientSettings, connect, describe_status};
use signet::api::pb;
use signet::api::pb::certificate_authority_client::CertificateAuthorityClient;
use signet::bench::{Latency, RawRate, latency, p256_csrs, raw_signing_rate};
use signet::config::Config;
use signet::hsm::Hsm;
use signet::pki::SignatureAlgorithm;

use crate::bench_http::{self, Conn};

/// What `signet bench` loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Issue` calls over mutual-TLS gRPC.
    Issue,
    /// OCSP requests to `POST /ocsp`: kept answers, then freshly signed ones.
    Ocsp,
    /// Timestamp queries to `POST /tsa`.
    Tsa,
}

/// `signet bench` options.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to load.
    #[arg(long, value_enum, default_value_t = Mode::Issue)]
    pub(crate) mode: Mode,
    /// OCSP and TSA modes: the daemon's HTTP address, host:port (default `[http] listen`).
    #[arg(long)]
    pub(crate) http: Option<String>,
    /// Concurrent callers (in OCSP and TSA modes, each on a connection of its own).
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Seconds of load (in OCSP mode, per phase).
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Seconds of raw HSM signing before the load (and again after it).
    #[arg(long, default_value_t = 5)]
    pub(crate) raw_seconds: u64,
    /// The issuer to load; its key (in OCSP mode, its responder's key) is measured raw.
    #[arg(long, default_value = "issuing-rsa")]
    pub(crate) issuer: String,
    /// The profile requested (server: CN and a DNS SAN per request).
    #[arg(long, default_value = "server")]
    pub(crate) profile: String,
    /// Connections to spread the gRPC callers over (an RA office usually has a few).
    #[arg(long, default_value_t = 4)]
    pub(crate) connections: usize,
}

/// What one load measured.
pub(crate) struct Report {
    pub(crate) done: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Latency,
    pub(crate) first_error: Option<String>,
}

impl Report {
    /// Completed calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }
}

/// The key measured raw.
pub(crate) struct Key {
    pub(crate) label: String,
    pub(crate) signature: SignatureAlgorithm,
}

/// The raw rates before and after a load, and the load's result.
pub(crate) struct Measured<T> {
    pub(crate) before: RawRate,
    pub(crate) load: T,
    pub(crate) after: RawRate,
}

impl<T> Measured<T> {
    /// The mean of the two raw rates.
    pub(crate) fn raw(&self) -> f64 {
        (self.before.per_second + self.after.per_second) / 2.0
    }
}

/// Raw rate of `key`, then `load`, then the raw rate again, on a runtime of its own.
pub(crate) fn measure<T, F>(
    cfg: &Config,
    key: &Key,
    a: &BenchArgs,
    load: impl FnOnce() -> F,
) -> Result<Measured<T>, String>
where
    F: std::future::Future<Output = Result<T, String>>,
{
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
            .map_err(|e| format!("raw signing with {:?}: {e}", key.label))?;
        eprintln!(
            "raw HSM signing, {} ({}), {pool} sessions: {:.0}/s",
            key.label, key.signature, before.per_second
        );
        let load = load().await?;
        let after = raw_signing_rate(&hsm, &key.label, key.signature, pool, raw_for)
            .await
            .map_err(|e| format!("raw signing with {:?}: {e}", key.label))?;
        Ok::<_, String>(Measured {
            before,
            load,
            after,
        })
    });
    hsm.close();
    result
}

/// Print a load's figures: `what` per second, errors, latency, raw rates and the ratio.
pub(crate) fn print_figures(what: &str, m: &Measured<Report>, pool: usize) {
    let report = &m.load;
    println!("{what:<18}{} ({:.0}/s)", report.done, report.rate());
    println!("errors            {}", report.errors);
    println!(
        "latency           p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(report.latency.p50),
        ms(report.latency.p99),
        ms(report.latency.max)
    );
    print_raw(m, pool);
    println!(
        "ratio             {:.0}% of the raw signing rate",
        100.0 * report.rate() / m.raw()
    );
    if let Some(e) = &report.first_error {
        println!("first error       {e}");
    }
}

/// Print the raw rates of a run.
pub(crate) fn print_raw<T>(m: &Measured<T>, pool: usize) {
    println!(
        "raw HSM signing   {:.0}/s before, {:.0}/s after ({pool} sessions)",
        m.before.per_second, m.after.per_second
    );
}

/// Errors seen by the load tasks: how many, and the first one.
#[derive(Clone, Default)]
pub(crate) struct Errors {
    count: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<String>>>,
}

impl Errors {
    pub(crate) fn record(&self, e: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first.lock()
            && f.is_none()
        {
            *f = Some(e);
        }
    }

    /// Wait for the load tasks (each returning its latency samples) and make the report.
    pub(crate) async fn report(
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
            done: samples.len() as u64,
            errors: self.count.load(Ordering::Relaxed),
            elapsed,
            latency: latency(&mut samples),
            first_error,
        })
    }
}

/// `concurrency` callers, each on a connection of its own to the status service, POSTing
/// what `body` makes (from the caller's number and its call count) for `--duration`; an
/// answer counts when `check` accepts its body. A caller whose connection fails stops.
pub(crate) async fn load_http(
    conns: Vec<Conn>,
    a: &BenchArgs,
    path: &'static str,
    content_type: &'static str,
    body: impl Fn(usize, usize) -> Result<Bytes, String> + Send + Sync + 'static,
    check: impl Fn(&[u8]) -> Result<(), String> + Send + Sync + 'static,
) -> Result<Report, String> {
    let errors = Errors::default();
    let duration = Duration::from_secs(a.duration.max(1));
    let (body, check) = (Arc::new(body), Arc::new(check));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (w, mut conn) in conns.into_iter().enumerate() {
        let (errors, body, check) = (errors.clone(), body.clone(), check.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = 0usize;
            while start.elapsed() < duration {
                i += 1;
                let t = Instant::now();
                let outcome = match body(w, i) {
                    Ok(b) => match conn.post(path, content_type, b).await {
                        Ok(answer) => check(&answer),
                        Err(e) => {
                            errors.record(e);
                            break;
                        }
                    },
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => samples.push(t.elapsed()),
                    Err(e) => errors.record(e),
                }
            }
            samples
        }));
    }
    errors.report(tasks, start).await
}

/// Open `n` connections to the status service.
pub(crate) async fn connections(addr: std::net::SocketAddr, n: usize) -> Result<Vec<Conn>, String> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        conns.push(Conn::open(addr).await?);
    }
    Ok(conns)
}

/// TSA mode: raw rate of the TSA key, timestamp load, raw rate again; print figures and the
/// ratio.
fn run_tsa(cfg: Config, a: &BenchArgs) -> Result<(), String> {
    let spec = cfg
        .tsa_key()
        .map_err(|e| e.to_string())?
        .ok_or("the configuration has no [tsa] section")?;
    let addr = bench_http::address(&cfg, a.http.as_deref())?;
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
    print_figures("timestamps", &m, cfg.hsm.pool_size);
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

/// Run the benchmark `--mode` names. `client` gives the RA client settings, asked for only
/// by the modes that call the RA API (TSA mode needs none).
pub fn run(
    cfg: Config,
    a: &BenchArgs,
    client: impl FnOnce() -> Result<ClientSettings, String>,
) -> Result<(), String> {
    match a.mode {
        Mode::Issue => run_issue(cfg, client()?, a),
        Mode::Ocsp => crate::bench_ocsp::run(cfg, client()?, a),
        Mode::Tsa => run_tsa(cfg, a),
    }
}

/// The configured issuer named by `--issuer`.
pub(crate) fn issuer_spec(
    cfg: &Config,
    a: &BenchArgs,
) -> Result<signet::config::IssuerSpec, String> {
    cfg.issuer_specs()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| s.name == a.issuer)
        .ok_or_else(|| format!("--issuer {:?} is not a configured issuer", a.issuer))
}

/// Issue mode: raw rate of the issuer key, issuance load, raw rate again.
fn run_issue(cfg: Config, client: ClientSettings, a: &BenchArgs) -> Result<(), String> {
    let spec = issuer_spec(&cfg, a)?;
    let agreement = cfg.ca.agreement_version.clone();
    let key = Key {
        label: spec.key_label.clone(),
        signature: spec.signature,
    };
    let m = measure(&cfg, &key, a, || load(&client, a, &agreement))?;
    println!(
        "issuer            {} ({}, {})",
        a.issuer, spec.key_type, spec.signature
    );
    println!(
        "callers           {} over {} connections, {} s",
        a.concurrency, a.connections, a.duration
    );
    print_figures("issued", &m, cfg.hsm.pool_size);
    Ok(())
}

/// Milliseconds, for printing.
pub(crate) fn ms(d: Duration) -> f64 {
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
    let run_id = run_id();
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
                let req = issue_request(
                    &format!("bench-{run_id}-{w}-{i}"),
                    &profile,
                    &issuer,
                    csrs[(w + i) % csrs.len()].clone(),
                    &format!("bench-{w}-{i}.example.cn"),
                    &agreement,
                );
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

/// Milliseconds since the epoch: makes request ids unique to a run.
pub(crate) fn run_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// An `Issue` request for `host` (CN and DNS SAN) with a CSR made up front.
pub(crate) fn issue_request(
    request_id: &str,
    profile: &str,
    issuer: &str,
    csr: Vec<u8>,
    host: &str,
    agreement: &str,
) -> pb::IssueRequest {
    pb::IssueRequest {
        request_id: request_id.to_owned(),
        profile: profile.to_owned(),
        issuer: issuer.to_owned(),
        csr,
        subject: vec![pb::SubjectAttribute {
            r#type: "CN".into(),
            value: host.to_owned(),
        }],
        sans: vec![pb::SubjectAltName {
            name: Some(pb::subject_alt_name::Name::Dns(host.to_owned())),
        }],
        validity_years: 1,
        approval: Some(pb::Approval {
            officer: "bench".into(),
            ra_reference: format!("BENCH-{request_id}"),
            agreement_version: agreement.to_owned(),
        }),
    }
}

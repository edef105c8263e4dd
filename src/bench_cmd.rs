//! `signet bench`: a load generator against a running daemon over real mutual-TLS gRPC, with
//! the raw HSM signing rate of the same issuer key and pool size measured in the same run,
//! so that every figure is reported as a ratio to what the hardware can do.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use signet::api::client::{ClientSettings, connect, describe_status};
use signet::api::pb;
use signet::api::pb::certificate_authority_client::CertificateAuthorityClient;
use signet::bench::{Latency, latency, p256_csrs, raw_signing_rate};
use signet::config::Config;
use signet::hsm::Hsm;

/// What `signet bench` loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Issue` calls over mutual-TLS gRPC.
    Issue,
    /// OCSP requests over HTTP: kept answers, then freshly signed ones.
    Ocsp,
}

/// `signet bench` options.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// What to load.
    #[arg(long, value_enum, default_value_t = Mode::Issue)]
    pub(crate) mode: Mode,
    /// Concurrent callers (for OCSP: connections, one caller each).
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Seconds of load (for OCSP: per phase).
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Seconds of raw HSM signing before the load (and again after it).
    #[arg(long, default_value_t = 5)]
    pub(crate) raw_seconds: u64,
    /// The issuer to load; its key (for OCSP: its responder's key) is the one measured raw.
    #[arg(long, default_value = "issuing-rsa")]
    pub(crate) issuer: String,
    /// The profile requested (server: CN and a DNS SAN per request).
    #[arg(long, default_value = "server")]
    pub(crate) profile: String,
    /// Connections to spread the gRPC callers over (an RA office usually has a few).
    #[arg(long, default_value_t = 4)]
    pub(crate) connections: usize,
    /// The daemon's HTTP address (host:port) for OCSP; default `[http] listen`.
    #[arg(long)]
    pub(crate) http: Option<String>,
}

/// What one run measured.
struct Report {
    issued: u64,
    errors: u64,
    elapsed: Duration,
    latency: Latency,
    first_error: Option<String>,
}

/// Run the benchmark: raw rate, load, raw rate again; print figures and the ratio.
pub fn run(cfg: Config, client: ClientSettings, a: &BenchArgs) -> Result<(), String> {
    match a.mode {
        Mode::Issue => run_issue(cfg, client, a),
        Mode::Ocsp => crate::bench_ocsp::run(cfg, client, a),
    }
}

fn run_issue(cfg: Config, client: ClientSettings, a: &BenchArgs) -> Result<(), String> {
    let spec = cfg
        .issuer_specs()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| s.name == a.issuer)
        .ok_or_else(|| format!("--issuer {:?} is not a configured issuer", a.issuer))?;
    let agreement = cfg.ca.agreement_version.clone();
    let pool = cfg.hsm.pool_size;
    let hsm = Hsm::open(cfg.hsm_settings().map_err(|e| e.to_string())?)
        .map_err(|e| format!("HSM: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let raw_for = Duration::from_secs(a.raw_seconds.max(1));
    let result = rt.block_on(async {
        let before = raw_signing_rate(&hsm, &spec.key_label, spec.signature, pool, raw_for)
            .await
            .map_err(|e| format!("raw signing: {e}"))?;
        eprintln!(
            "raw HSM signing, {} ({}), {pool} sessions: {:.0}/s",
            spec.key_label, spec.signature, before.per_second
        );
        let report = load(&client, a, &agreement).await?;
        let after = raw_signing_rate(&hsm, &spec.key_label, spec.signature, pool, raw_for)
            .await
            .map_err(|e| format!("raw signing: {e}"))?;
        Ok::<_, String>((before, report, after))
    });
    hsm.close();
    let (before, report, after) = result?;
    let raw = (before.per_second + after.per_second) / 2.0;
    let rate = report.issued as f64 / report.elapsed.as_secs_f64();
    println!(
        "issuer            {} ({}, {})",
        a.issuer, spec.key_type, spec.signature
    );
    println!(
        "callers           {} over {} connections, {} s",
        a.concurrency, a.connections, a.duration
    );
    println!("issued            {} ({:.0}/s)", report.issued, rate);
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
    if let Some(e) = report.first_error {
        println!("first error       {e}");
    }
    Ok(())
}

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
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let duration = Duration::from_secs(a.duration.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let mut c = clients[w % clients.len()].clone();
        let csrs = csrs.clone();
        let errors = errors.clone();
        let first_error = first_error.clone();
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
                    Err(status) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock()
                            && f.is_none()
                        {
                            *f = Some(describe_status(&status));
                        }
                    }
                }
                i += 1;
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.map_err(|e| format!("load task: {e}"))?);
    }
    let elapsed = start.elapsed();
    let first_error = first_error.lock().ok().and_then(|f| f.clone());
    Ok(Report {
        issued: samples.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        latency: latency(&mut samples),
        first_error,
    })
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

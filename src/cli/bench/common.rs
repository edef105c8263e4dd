//! What every bench mode shares: the raw rate measured before and after a load, the load's
//! report and errors, HTTP load over keep-alive connections, and the figures printed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use signet::api::pb;
use signet::config::Config;
use signet::hsm::Hsm;
use signet::pki::SignatureAlgorithm;

use super::args::BenchArgs;
use super::direct::direct_signing_rate;
use super::http::Conn;
use super::raw::{Latency, RawRate, latency, raw_signing_rate};

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

/// The ceilings measured around a load, and the load's result: the HSM's own rate (a
/// direct PKCS#11 loop, before and after) and the rate through signet's HSM layer
/// (`Hsm::sign` in a loop, before and after), so both the layer's cost and the end-to-end
/// ratio are visible.
pub(crate) struct Measured<T> {
    /// Sessions in the pool (and threads of the direct loop).
    pub(crate) pool: usize,
    /// Tasks signing through the layer.
    pub(crate) callers: usize,
    pub(crate) before: f64,
    pub(crate) layer_before: RawRate,
    pub(crate) load: T,
    pub(crate) layer_after: RawRate,
    pub(crate) after: f64,
}

impl<T> Measured<T> {
    /// The HSM's own rate: the mean of the direct loop's two runs.
    pub(crate) fn raw(&self) -> f64 {
        (self.before + self.after) / 2.0
    }

    /// The rate through signet's HSM layer: the mean of its two runs.
    pub(crate) fn layer(&self) -> f64 {
        (self.layer_before.per_second + self.layer_after.per_second) / 2.0
    }
}

/// The direct rate of `key`, then signet's layer, `load`, the layer again, and the direct
/// rate again (each direct run with the module to itself: signet's context is closed).
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
    let callers = a.layer_callers(pool);
    let raw_for = Duration::from_secs(a.raw_seconds.max(1));
    let settings = cfg.hsm_settings().map_err(|e| e.to_string())?;
    let direct = |when: &str| {
        let rate = direct_signing_rate(&settings, &key.label, key.signature, pool, raw_for)
            .map_err(|e| format!("direct PKCS#11 signing with {:?}: {e}", key.label))?;
        eprintln!(
            "HSM direct, {} ({}), {pool} sessions, {when}: {rate:.0}/s",
            key.label, key.signature
        );
        Ok::<_, String>(rate)
    };
    let before = direct("before")?;
    let hsm = Hsm::open(cfg.hsm_settings().map_err(|e| e.to_string())?)
        .map_err(|e| format!("HSM: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(async {
        let layer_before = raw_signing_rate(&hsm, &key.label, key.signature, callers, raw_for)
            .await
            .map_err(|e| {
                format!(
                    "signing through signet's HSM layer with {:?}: {e}",
                    key.label
                )
            })?;
        eprintln!(
            "signet HSM layer, {pool} sessions, {callers} callers: {:.0}/s",
            layer_before.per_second
        );
        let load = load().await?;
        let layer_after = raw_signing_rate(&hsm, &key.label, key.signature, callers, raw_for)
            .await
            .map_err(|e| {
                format!(
                    "signing through signet's HSM layer with {:?}: {e}",
                    key.label
                )
            })?;
        Ok::<_, String>((layer_before, load, layer_after))
    });
    drop(rt);
    hsm.close();
    let (layer_before, load, layer_after) = result?;
    let after = direct("after")?;
    Ok(Measured {
        pool,
        callers,
        before,
        layer_before,
        load,
        layer_after,
        after,
    })
}

/// Print a load's figures: `what` per second, errors, latency, the ceilings and the ratio.
pub(crate) fn print_figures(what: &str, m: &Measured<Report>) {
    let report = &m.load;
    println!("{what:<18}{} ({:.0}/s)", report.done, report.rate());
    println!("errors            {}", report.errors);
    println!(
        "latency           p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(report.latency.p50),
        ms(report.latency.p99),
        ms(report.latency.max)
    );
    print_raw(m);
    println!(
        "ratio             {:.0}% of the raw signing rate (the HSM's own, direct)",
        100.0 * report.rate() / m.raw()
    );
    if let Some(e) = &report.first_error {
        println!("first error       {e}");
    }
}

/// Print the ceilings of a run: the HSM's direct rate and signet's HSM layer.
pub(crate) fn print_raw<T>(m: &Measured<T>) {
    let (pool, callers) = (m.pool, m.callers);
    println!(
        "raw HSM signing   {:.0}/s before, {:.0}/s after ({pool} sessions, direct PKCS#11 loop)",
        m.before, m.after
    );
    println!(
        "signet HSM layer  {:.0}/s before, {:.0}/s after ({callers} callers; {:.0}% of the direct rate)",
        m.layer_before.per_second,
        m.layer_after.per_second,
        100.0 * m.layer() / m.raw()
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

/// Milliseconds, for printing.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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
        validate_only: false,
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

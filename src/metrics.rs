//! Prometheus metrics: the process-wide counters, gauges and histograms signet's parts
//! update as they work, and their text exposition (`GET /metrics` on `[metrics] listen`).
//!
//! Labels are bounded by configuration, never by clients: issuer, profile, key label, RPC
//! method and status code, reason, outcome. No serial, request id or subject ever becomes a
//! label. Values that only mean something at the moment of the scrape (a CRL's age, the
//! seconds until a certificate expires, the database's size) are computed when scraped,
//! from timestamps and paths recorded as things happen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::clock::unix_now;

/// Latency buckets, seconds: 0.5 ms to about 16 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).unwrap_or_default()
}

/// Every metric signet exports.
pub struct Metrics {
    registry: Registry,
    grpc_requests: IntCounterVec,
    grpc_seconds: HistogramVec,
    issued: IntCounterVec,
    revoked: IntCounterVec,
    hsm_operations: IntCounterVec,
    hsm_sign_seconds: HistogramVec,
    hsm_sessions: IntGauge,
    hsm_sessions_busy: IntGauge,
    hsm_up: IntGauge,
    hsm_outages: IntCounter,
    hsm_reconnects: IntCounter,
    store_commit_seconds: Histogram,
    store_group_size: Histogram,
    store_bytes: IntGauge,
    crl_number: IntGaugeVec,
    crl_entries: IntGaugeVec,
    crl_bytes: IntGaugeVec,
    crl_age: GaugeVec,
    ocsp_responses: IntCounterVec,
    tsa_responses: IntCounterVec,
    audit_head: IntGauge,
    audit_checkpoint_age: Gauge,
    expiry: GaugeVec,
    /// What the scrape-time values are computed from.
    at_scrape: Mutex<AtScrape>,
}

#[derive(Default)]
struct AtScrape {
    /// thisUpdate of each issuer's latest CRL, Unix seconds.
    crl_this_update: BTreeMap<String, i64>,
    /// notAfter of each certificate signet depends on, by (role, name), Unix seconds.
    not_after: BTreeMap<(&'static str, String), i64>,
    /// The store's files, whose sizes add up to the database's size.
    store_files: Vec<PathBuf>,
    /// When the audit log was last checkpointed, Unix seconds.
    checkpointed_at: Option<i64>,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn float_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(latency_buckets());
    let h = HistogramVec::new(opts, labels).expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let build = gauge_vec(
            &r,
            "signet_build_info",
            "signet's version; the value is always 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            grpc_requests: counter_vec(
                &r,
                "signet_grpc_requests_total",
                "RA API calls answered, by method and gRPC status code.",
                &["method", "code"],
            ),
            grpc_seconds: histogram_vec(
                &r,
                "signet_grpc_request_duration_seconds",
                "Time to answer an RA API call, by method.",
                &["method"],
            ),
            issued: counter_vec(
                &r,
                "signet_certificates_issued_total",
                "Certificates signed and committed, by issuer and profile.",
                &["issuer", "profile"],
            ),
            revoked: counter_vec(
                &r,
                "signet_certificates_revoked_total",
                "Revocations and holds recorded, by issuer and reason.",
                &["issuer", "reason"],
            ),
            hsm_operations: counter_vec(
                &r,
                "signet_hsm_operations_total",
                "HSM operations, by key label, operation and outcome (ok, or the class of error).",
                &["key", "operation", "outcome"],
            ),
            hsm_sign_seconds: histogram_vec(
                &r,
                "signet_hsm_sign_duration_seconds",
                "Time from queueing a signature to its answer, by key label.",
                &["key"],
            ),
            hsm_sessions: gauge(
                &r,
                "signet_hsm_sessions",
                "Signing sessions (and signer threads) of the CA's HSM pool.",
            ),
            hsm_sessions_busy: gauge(
                &r,
                "signet_hsm_sessions_busy",
                "Signing sessions running an operation now.",
            ),
            hsm_up: gauge(
                &r,
                "signet_hsm_up",
                "1 while the CA's HSM is reachable, 0 while it is being reconnected.",
            ),
            hsm_outages: counter(
                &r,
                "signet_hsm_outages_total",
                "Times the HSM was found gone (a device failure or a call past its timeout).",
            ),
            hsm_reconnects: counter(
                &r,
                "signet_hsm_reconnects_total",
                "Times the HSM was reconnected after an outage.",
            ),
            store_commit_seconds: histogram(
                &r,
                "signet_store_commit_duration_seconds",
                "Time of one group commit of the store, fsync included.",
                latency_buckets(),
            ),
            store_group_size: histogram(
                &r,
                "signet_store_commit_group_size",
                "Calls sharing one commit of the store.",
                prometheus::exponential_buckets(1.0, 2.0, 9).unwrap_or_default(),
            ),
            store_bytes: gauge(
                &r,
                "signet_store_database_bytes",
                "Size of the store's database files (database and write-ahead log).",
            ),
            crl_number: gauge_vec(
                &r,
                "signet_crl_number",
                "cRLNumber of the latest CRL published, by issuer.",
                &["issuer"],
            ),
            crl_entries: gauge_vec(
                &r,
                "signet_crl_entries",
                "Certificates listed by the latest CRL, by issuer.",
                &["issuer"],
            ),
            crl_bytes: gauge_vec(
                &r,
                "signet_crl_bytes",
                "Size of the latest CRL (DER), by issuer.",
                &["issuer"],
            ),
            crl_age: float_gauge_vec(
                &r,
                "signet_crl_age_seconds",
                "Seconds since the thisUpdate of the latest CRL, by issuer.",
                &["issuer"],
            ),
            ocsp_responses: counter_vec(
                &r,
                "signet_ocsp_responses_total",
                "OCSP answers, by certificate status (good, revoked, unknown) or error status, and by source (kept: a signed answer reused; signed: signed for this request; none: an error status).",
                &["status", "source"],
            ),
            tsa_responses: counter_vec(
                &r,
                "signet_tsa_responses_total",
                "Timestamp requests answered, by status (granted, rejection).",
                &["status"],
            ),
            audit_head: gauge(
                &r,
                "signet_audit_entries",
                "Sequence number of the newest audit log entry (the chain's head).",
            ),
            audit_checkpoint_age: {
                let g = Gauge::new(
                    "signet_audit_checkpoint_age_seconds",
                    "Seconds since the audit log was last checkpointed (signed); -1 before the first.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            expiry: float_gauge_vec(
                &r,
                "signet_certificate_expiry_seconds",
                "Seconds until notAfter of a certificate signet depends on, by role (issuer, ocsp_responder, tsa, tls) and name.",
                &["role", "name"],
            ),
            at_scrape: Mutex::new(AtScrape::default()),
            registry: r,
        }
    }

    fn at_scrape(&self) -> std::sync::MutexGuard<'_, AtScrape> {
        self.at_scrape
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One RA API call answered with `code` after `elapsed`.
    pub fn grpc(&self, method: &str, code: &str, elapsed: Duration) {
        self.grpc_requests.with_label_values(&[method, code]).inc();
        self.grpc_seconds
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }

    /// A certificate of `profile` signed by `issuer` and committed.
    pub fn issued(&self, issuer: &str, profile: &str) {
        self.issued.with_label_values(&[issuer, profile]).inc();
    }

    /// A revocation (or hold) recorded for a certificate of `issuer`.
    pub fn revoked(&self, issuer: &str, reason: &str) {
        self.revoked.with_label_values(&[issuer, reason]).inc();
    }

    /// An HSM operation on `key` ended with `outcome` (`ok` or an error class).
    pub fn hsm_operation(&self, key: &str, operation: &str, outcome: &str) {
        self.hsm_operations
            .with_label_values(&[key, operation, outcome])
            .inc();
    }

    /// A signature with `key` answered after `elapsed` (queue wait included).
    pub fn hsm_signed(&self, key: &str, elapsed: Duration) {
        self.hsm_sign_seconds
            .with_label_values(&[key])
            .observe(elapsed.as_secs_f64());
    }

    /// The CA's HSM pool has `sessions` signing sessions.
    pub fn hsm_sessions(&self, sessions: usize) {
        self.hsm_sessions
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
    }

    /// A signer thread started (`true`) or finished (`false`) an operation.
    pub fn hsm_busy(&self, started: bool) {
        if started {
            self.hsm_sessions_busy.inc();
        } else {
            self.hsm_sessions_busy.dec();
        }
    }

    /// The HSM is reachable (`true`) or not (`false`); `changed` when it just went away or
    /// came back.
    pub fn hsm_availability(&self, up: bool, changed: bool) {
        self.hsm_up.set(i64::from(up));
        if changed && !up {
            self.hsm_outages.inc();
        }
    }

    /// The HSM was reconnected after an outage.
    pub fn hsm_reconnected(&self) {
        self.hsm_reconnects.inc();
    }

    /// One group commit of `calls` calls took `elapsed`.
    pub fn store_commit(&self, calls: usize, elapsed: Duration) {
        self.store_commit_seconds.observe(elapsed.as_secs_f64());
        self.store_group_size.observe(calls as f64);
    }

    /// The store's database lives in `files` (their sizes are read at each scrape).
    pub fn store_files(&self, files: Vec<PathBuf>) {
        self.at_scrape().store_files = files;
    }

    /// `issuer` published CRL number `number`, `bytes` long, listing `entries` certificates,
    /// with thisUpdate `this_update` (Unix seconds).
    pub fn crl(&self, issuer: &str, number: u64, entries: usize, bytes: usize, this_update: i64) {
        let labels = [issuer];
        self.crl_number
            .with_label_values(&labels)
            .set(i64::try_from(number).unwrap_or(i64::MAX));
        self.crl_entries
            .with_label_values(&labels)
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.crl_bytes
            .with_label_values(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.at_scrape()
            .crl_this_update
            .insert(issuer.to_owned(), this_update);
    }

    /// An OCSP answer with certificate status (or error status) `status` from `source`.
    pub fn ocsp(&self, status: &str, source: &str) {
        self.ocsp_responses
            .with_label_values(&[status, source])
            .inc();
    }

    /// A timestamp request answered with `status` (granted, rejection).
    pub fn tsa(&self, status: &str) {
        self.tsa_responses.with_label_values(&[status]).inc();
    }

    /// The audit log's newest entry is `seq`.
    pub fn audit_head(&self, seq: i64) {
        self.audit_head.set(seq);
    }

    /// The audit log was checkpointed at `at` (Unix seconds).
    pub fn audit_checkpointed(&self, at: i64) {
        self.at_scrape().checkpointed_at = Some(at);
    }

    /// signet depends on a certificate in `role` named `name` that expires at `not_after`
    /// (Unix seconds); a later call for the same role and name replaces it (a renewal).
    pub fn certificate(&self, role: &'static str, name: &str, not_after: i64) {
        self.at_scrape()
            .not_after
            .insert((role, name.to_owned()), not_after);
    }

    /// [`Metrics::certificate`] for a DER certificate (one that does not parse is skipped:
    /// whoever loaded it reports that).
    pub fn certificate_der(&self, role: &'static str, name: &str, der: &[u8]) {
        use der::Decode;
        if let Ok(cert) = x509_cert::Certificate::from_der(der) {
            let not_after = cert
                .tbs_certificate()
                .validity()
                .not_after
                .to_unix_duration();
            let secs = i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX);
            self.certificate(role, name, secs);
        }
    }

    /// The issuer whose latest CRL is the oldest, with its thisUpdate (Unix seconds).
    pub fn oldest_crl(&self) -> Option<(String, i64)> {
        self.at_scrape()
            .crl_this_update
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|(i, t)| (i.clone(), *t))
    }

    /// The certificate signet depends on that expires first: role, name, notAfter.
    pub fn nearest_expiry(&self) -> Option<(&'static str, String, i64)> {
        self.at_scrape()
            .not_after
            .iter()
            .min_by_key(|(_, t)| **t)
            .map(|((role, name), t)| (*role, name.clone(), *t))
    }

    /// The text exposition of every metric, scrape-time values computed now.
    pub fn render(&self) -> String {
        let now = unix_now();
        {
            let at = self.at_scrape();
            for (issuer, this_update) in &at.crl_this_update {
                self.crl_age
                    .with_label_values(&[issuer])
                    .set((now - this_update) as f64);
            }
            for ((role, name), not_after) in &at.not_after {
                self.expiry
                    .with_label_values(&[role, name.as_str()])
                    .set((not_after - now) as f64);
            }
            let bytes: u64 = at
                .store_files
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum();
            self.store_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            self.audit_checkpoint_age
                .set(at.checkpointed_at.map_or(-1.0, |t| (now - t) as f64));
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serve `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                metrics().render(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_time_values_are_computed_from_what_was_recorded() {
        let m = Metrics::new();
        let now = unix_now();
        m.crl("issuing-test", 7, 3, 512, now - 100);
        m.certificate("issuer", "issuing-test", now + 1000);
        m.grpc("Issue", "OK", Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("signet_crl_number{issuer=\"issuing-test\"} 7"),
            "{text}"
        );
        let age = text
            .lines()
            .find_map(|l| l.strip_prefix("signet_crl_age_seconds{issuer=\"issuing-test\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("an age");
        assert!((100.0..110.0).contains(&age), "{age}");
        let left = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "signet_certificate_expiry_seconds{name=\"issuing-test\",role=\"issuer\"} ",
                )
            })
            .and_then(|v| v.parse::<f64>().ok())
            .expect("seconds to expiry");
        assert!((990.0..=1000.0).contains(&left), "{left}");
        assert!(
            text.contains("signet_grpc_requests_total{code=\"OK\",method=\"Issue\"} 1"),
            "{text}"
        );
    }
}

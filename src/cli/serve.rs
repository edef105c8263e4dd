//! `signet serve` and `signet quickstart`: the daemon (RA API, token service, status
//! service, TSA, checkpoints) from start-up to a graceful stop, and the quick start's
//! ceremony, demo CSR and first `signet ra` line before it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use signet::api::Api;
use signet::audit::AuditEvent;
use signet::ca::Authority;
use signet::ca::checkpoint::Checkpointer;
use signet::ca::crl::CrlPublisher;
use signet::ca::ocsp::OcspResponder;
use signet::ca::tsa::Tsa;
use signet::config::Config;
use signet::hsm::softhsm;
use signet::http::Http;

use super::ceremony::hold_ceremony;
use super::common::{Parts, backup_root, describe, log_findings, open_parts, runtime};

/// `signet serve`: open the HSM (before the runtime: it sets the module's environment), the
/// store and the authority, bind, announce the address, serve until a signal, let the calls
/// in flight finish, then close the HSM.
pub(crate) fn serve(cfg: Config, path: Option<&Path>) -> Result<(), String> {
    if cfg.api.is_none() {
        return Err(signet::api::ApiError::NotConfigured.to_string());
    }
    log_findings(&cfg)?;
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    serve_parts(parts, rt, path)
}

/// The end of the grace period a stop may take: `[api] shutdown_grace_seconds` after the
/// signal (or after the first look, if the servers ended without one).
#[derive(Clone)]
struct StopClock {
    grace: Duration,
    deadline: Arc<OnceLock<Instant>>,
}

impl StopClock {
    fn new(grace: Duration) -> StopClock {
        StopClock {
            grace,
            deadline: Arc::new(OnceLock::new()),
        }
    }

    /// The stop begins now.
    fn start(&self) {
        let _ = self.deadline.set(Instant::now() + self.grace);
    }

    fn deadline(&self) -> Instant {
        *self.deadline.get_or_init(|| Instant::now() + self.grace)
    }

    fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// Completes once the stop has begun and its grace period has run out.
    async fn over(self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let _ = stopped.wait_for(|stop| *stop).await;
        tokio::time::sleep_until(self.deadline().into()).await;
    }
}

/// Serve with an open HSM and store on `rt`, until a signal; then close the HSM. One signal
/// stops every server: it is fanned out through a watch channel. The whole stop, from the
/// signal to closing the HSM, is bounded by `[api] shutdown_grace_seconds`: whatever is not
/// done by then (calls in flight, the audit log's stop entry and checkpoint, C_Finalize) is
/// skipped with an ERROR line, and the stop is reported as not clean (exit status 1).
fn serve_parts(
    parts: Parts,
    rt: tokio::runtime::Runtime,
    config_path: Option<&Path>,
) -> Result<(), String> {
    let clock = StopClock::new(Duration::from_secs(
        parts
            .cfg
            .api
            .as_ref()
            .map_or(30, |a| a.shutdown_grace_seconds),
    ));
    let mut unclean: Vec<String> = Vec::new();
    let result = rt.block_on(async {
        let authority = Arc::new(
            Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone())
                .await
                .map_err(describe)?,
        );
        let mut api = Api::new(&parts.cfg, authority.clone())
            .await
            .map_err(|e| e.to_string())?;
        if parts.cfg.token.is_some() {
            let issuer = signet::api::remote_issuer::workstation_issuer(
                &parts.cfg,
                Some(authority.clone()),
            )
            .map_err(|e| e.to_string())?;
            let workstation =
                signet::token::Workstation::from_config(&parts.cfg, parts.store.clone(), issuer)
                    .map_err(|e| e.to_string())?;
            api = api.with_token_service(Arc::new(workstation));
            tracing::info!("token service enabled ([token])");
        }
        let tsa = Tsa::open(&parts.cfg, authority.clone())
            .await
            .map_err(describe)?
            .map(Arc::new);
        let checkpointer = Checkpointer::open(&parts.cfg, authority.clone())
            .await
            .map_err(describe)?
            .map(Arc::new);
        authority
            .store()
            .append_audit(AuditEvent::daemon(
                "daemon.started",
                "signet",
                serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id() }),
            ))
            .await
            .map_err(|e| e.to_string())?;
        let listener = Api::bind(&parts.cfg).await.map_err(|e| e.to_string())?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("listener address: {e}"))?;
        // Handlers are installed before the address is announced, so a signal sent by
        // whoever waits for the announcement always means a graceful stop.
        let signal = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
        if let Some(path) = config_path {
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
            tokio::spawn(reload_on_hangup(
                hangup,
                path.to_owned(),
                api.ra_directory(),
                authority.clone(),
            ));
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signalled = clock.clone();
        tokio::spawn(async move {
            signal.await;
            signalled.start();
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        if let Some(c) = &checkpointer {
            tokio::spawn(c.clone().run(stopped.clone()));
        }
        let http = match &parts.cfg.http {
            Some(_) => Some(
                start_http(
                    &parts,
                    authority.clone(),
                    tsa.clone(),
                    stopped.clone(),
                    until_stopped(stopped.clone()),
                )
                .await?,
            ),
            None => None,
        };
        if let Some(m) = &parts.cfg.metrics {
            let listener = tokio::net::TcpListener::bind(m.listen)
                .await
                .map_err(|e| format!("cannot listen on {} for metrics: {e}", m.listen))?;
            let at = listener
                .local_addr()
                .map_err(|e| format!("metrics listener address: {e}"))?;
            tracing::info!(addr = %at, "serving Prometheus metrics");
            println!("signet: serving metrics on {at}");
            let shutdown = until_stopped(stopped.clone());
            tokio::spawn(async move {
                if let Err(e) = signet::metrics::serve(listener, shutdown).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
        }
        let metrics = signet::metrics::metrics();
        for issuer in authority.issuers() {
            metrics.certificate_der("issuer", &issuer.name, &issuer.cert_der);
        }
        if let Some(tsa) = &tsa {
            metrics.certificate_der("tsa", "tsa", tsa.cert_der());
        }
        tracing::info!(%addr, "serving the RA API");
        println!("signet: serving RA API on {addr}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        notify_systemd(&stopped);
        let served = tokio::select! {
            served = api.run(listener, until_stopped(stopped.clone())) => {
                served.map_err(|e| e.to_string())
            }
            () = clock.clone().over(stopped.clone()) => {
                tracing::error!(
                    grace_seconds = clock.grace.as_secs(),
                    "RA API calls still in flight at the end of the grace period are abandoned"
                );
                unclean.push("RA API calls were abandoned".to_owned());
                Ok(())
            }
        };
        if let Some(mut http) = http {
            if served.is_err() {
                http.abort();
                return served;
            }
            tokio::select! {
                ended = &mut http => {
                    ended
                        .map_err(|e| format!("HTTP server: {e}"))?
                        .map_err(|e| e.to_string())?;
                }
                () = clock.clone().over(stopped.clone()) => {
                    http.abort();
                    tracing::error!(
                        grace_seconds = clock.grace.as_secs(),
                        "HTTP requests still in flight at the end of the grace period are abandoned"
                    );
                    unclean.push("HTTP requests were abandoned".to_owned());
                }
            }
        }
        unclean.extend(
            finish_audit(
                &authority,
                tsa.as_deref(),
                checkpointer.as_deref(),
                clock.deadline(),
            )
            .await,
        );
        served
    });
    // Blocking tasks still running (file reads of client CRLs) get a moment, within the
    // grace period, before the HSM is closed.
    rt.shutdown_timeout(clock.remaining().min(Duration::from_secs(10)));
    // C_CloseSession and C_Finalize hang with a hung HSM: they run on a thread of their
    // own, abandoned at the end of the grace period (with half a second at least).
    if !parts
        .hsm
        .close_within(clock.remaining().max(Duration::from_millis(500)))
    {
        tracing::error!(
            "the HSM did not close (C_CloseSession, C_Finalize) within the grace period; exiting without it"
        );
        unclean.push("the HSM was not closed".to_owned());
    }
    match result {
        Ok(()) if unclean.is_empty() => {
            tracing::info!("stopped");
            Ok(())
        }
        Ok(()) => Err(format!("stopped, but not cleanly: {}", unclean.join("; "))),
        Err(e) => Err(e),
    }
}

/// At a graceful stop: record the TSA's latest time, write the stop entry (after the usage
/// counts), and sign a checkpoint over it, so the log ends covered. Each step must be done
/// by `deadline`; one that fails or is not is logged as an ERROR and returned.
async fn finish_audit(
    authority: &Authority,
    tsa: Option<&Tsa>,
    checkpointer: Option<&Checkpointer>,
    deadline: Instant,
) -> Vec<String> {
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut failed = Vec::new();
    let mut step = |what: &str, outcome: Option<String>| {
        if let Some(problem) = outcome {
            tracing::error!("{what}: {problem}");
            failed.push(what.to_owned());
        }
    };
    let late = || "the grace period ran out".to_owned();
    if let Some(t) = tsa {
        let r = tokio::time::timeout_at(deadline, t.close()).await;
        step(
            "recording the TSA's latest time",
            r.map_or_else(|_| Some(late()), |r| r.err().map(|e| e.to_string())),
        );
    }
    let store = authority.store();
    let r = tokio::time::timeout_at(deadline, authority.flush_usage()).await;
    step(
        "writing usage counts",
        r.map_or_else(|_| Some(late()), |r| r.err().map(|e| e.to_string())),
    );
    let stop = AuditEvent::daemon(
        "daemon.stopped",
        "signet",
        serde_json::json!({ "pid": std::process::id() }),
    );
    let r = tokio::time::timeout_at(deadline, store.append_audit(stop)).await;
    step(
        "writing the stop entry",
        r.map_or_else(|_| Some(late()), |r| r.err().map(|e| e.to_string())),
    );
    if let Some(c) = checkpointer {
        // Skipped when the HSM cannot sign in time: the log then ends with entries no
        // checkpoint covers, which the next start-up or periodic checkpoint covers.
        let r = tokio::time::timeout_at(deadline, c.checkpoint()).await;
        step(
            "the shutdown checkpoint was skipped",
            r.map_or_else(
                |_| Some("the HSM did not sign within the grace period".to_owned()),
                |r| r.err().map(|e| e.to_string()),
            ),
        );
    }
    failed
}

/// The status service: publish every issuer's CRL (so the first request finds one; with the
/// clock behind an issuer's latest CRL, that one), keep them fresh in the background, and
/// serve them over HTTP until `shutdown`.
async fn start_http(
    parts: &Parts,
    authority: Arc<Authority>,
    tsa: Option<Arc<Tsa>>,
    stopped: tokio::sync::watch::Receiver<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), signet::http::HttpError>>, String> {
    let publisher = Arc::new(CrlPublisher::new(authority.clone(), &parts.cfg.crl));
    publisher.publish_at_start().await.map_err(describe)?;
    let stopped_ocsp = stopped.clone();
    tokio::spawn(publisher.clone().run(stopped));
    let ocsp = Arc::new(
        OcspResponder::open(authority.clone(), &parts.cfg.ocsp)
            .await
            .map_err(describe)?,
    );
    tokio::spawn(ocsp.clone().maintain(stopped_ocsp));
    let limits = parts
        .cfg
        .http
        .as_ref()
        .map(signet::http::Limits::from_config)
        .ok_or("the configuration has no [http] section")?;
    let http = Http::new(authority, publisher, ocsp, tsa)
        .map_err(|e| e.to_string())?
        .with_limits(limits);
    let listener = Http::bind(&parts.cfg).await.map_err(|e| e.to_string())?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("HTTP listener address: {e}"))?;
    tracing::info!(%addr, "serving CRLs and CA certificates over HTTP");
    println!("signet: serving HTTP on {addr}");
    Ok(tokio::spawn(http.run(listener, shutdown)))
}

/// On every SIGHUP, read the configuration file again and take its `[[ra]]` entries (an
/// office suspended with `enabled = false`, a new one, changed permissions): the result is
/// a log line and an audit entry; a file that does not load changes nothing.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    path: PathBuf,
    ras: Arc<signet::api::identity::RaDirectory>,
    authority: Arc<Authority>,
) {
    let store = authority.store().clone();
    while hangup.recv().await.is_some() {
        // Everything is checked before anything changes: the file, the [[ra]] entries, and
        // that the profiles differ only in what a reload may change.
        let loaded = Config::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                let directory = signet::api::identity::RaDirectory::from_config(&cfg)
                    .map_err(|e| e.to_string())?;
                let profiles = authority.reload_profiles(&cfg).map_err(|e| e.to_string())?;
                Ok((directory, cfg.log.level, profiles))
            });
        let event = match loaded {
            Ok((directory, level, profiles)) => {
                ras.replace(directory);
                for (name, fields) in &profiles {
                    tracing::warn!(profile = %name, changed = ?fields, "profile reloaded");
                }
                if let Some(level) = &level {
                    match super::common::set_log_level(level) {
                        // At WARN, so the change shows whatever the new level hides.
                        Ok(()) => tracing::warn!(level = %level, "log level set from [log] level"),
                        Err(e) => tracing::error!("log level not changed: {e}"),
                    }
                }
                let offices: Vec<serde_json::Value> = ras
                    .summary()
                    .into_iter()
                    .map(|(name, enabled)| serde_json::json!({ "name": name, "enabled": enabled }))
                    .collect();
                tracing::info!(
                    path = %path.display(),
                    offices = %serde_json::Value::Array(offices.clone()),
                    "configuration reloaded: [[ra]] entries replaced"
                );
                AuditEvent::daemon(
                    "config.reloaded",
                    &path.display().to_string(),
                    serde_json::json!({ "ras": offices, "log_level": level, "profiles": profiles }),
                )
            }
            Err(e) => {
                tracing::error!(path = %path.display(), "configuration reload refused, nothing changed: {e}");
                AuditEvent::daemon(
                    "config.reload_refused",
                    &path.display().to_string(),
                    serde_json::json!({ "error": e }),
                )
            }
        };
        if let Err(e) = store.append_audit(event).await {
            tracing::error!("recording the configuration reload: {e}");
        }
    }
}

/// Under systemd (`Type=notify`): READY=1 now that every listener serves, WATCHDOG=1 at
/// half the unit's `WatchdogSec` while the runtime runs, STOPPING=1 when a stop begins.
/// Without `NOTIFY_SOCKET` nothing is sent.
fn notify_systemd(stopped: &tokio::sync::watch::Receiver<bool>) {
    use sd_notify::NotifyState;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell systemd the daemon is ready");
    }
    if let Some(every) = sd_notify::watchdog_enabled() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            }
        });
    }
    let mut stopping = stopped.clone();
    tokio::spawn(async move {
        if stopping.wait_for(|s| *s).await.is_ok() {
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
        }
    });
}

/// Completes on SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}

/// The quick start: ceremony (if not done yet, including the TLS material of the RA API),
/// a demo subscriber CSR, the `signet ra` line that issues a first certificate, then the
/// daemon itself.
pub(crate) fn quickstart(cfg: Config, path: Option<&Path>) -> Result<(), String> {
    if cfg.api.is_none() {
        return Err(signet::api::ApiError::NotConfigured.to_string());
    }
    log_findings(&cfg)?;
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    let report = hold_ceremony(&parts, &rt)?;
    back_up_softhsm(&parts.cfg, !report.created.is_empty())?;
    let work = parts
        .cfg
        .store_path()
        .parent()
        .map(|p| p.join("quickstart"))
        .unwrap_or_else(|| PathBuf::from("quickstart"));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let csr = work.join("subscriber.csr");
    if !csr.exists() {
        // The subscriber's key is made by the subscriber's own tool, never by the CA.
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .arg("-keyout")
            .arg(work.join("subscriber.key"))
            .arg("-out")
            .arg(&csr)
            .args([
                "-subj",
                "/CN=ignored (signet takes the subject from the RA)",
            ])
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("running openssl to make a demo CSR: {e}"))?;
        if !status.success() {
            return Err("openssl could not make the demo CSR".into());
        }
    }
    let config = std::env::args()
        .skip_while(|a| a != "--config" && a != "-c")
        .nth(1)
        .unwrap_or_else(|| "hsm-config/softhsm.toml".into());
    let out = parts.cfg.output_dir();
    let root = parts
        .cfg
        .issuer_specs()
        .ok()
        .and_then(|s| s.into_iter().find(|i| i.parent.is_none()))
        .map(|i| i.name)
        .unwrap_or_else(|| "root".into());
    eprintln!(
        "\nThe CA is ready. From another terminal, issue a first certificate as RA office {ra}:\n\n  \
         cargo run -q -- --config {config} ra issue --profile organization --csr {csr} \\\n    \
         --subject 'C=CN, O=宁津县精神卫生中心, organizationIdentifier={code}, CN=宁津县精神卫生中心' \\\n    \
         --validity 1 --request-id first-1 --officer 王芳 --ra-reference QS-0001 \\\n    \
         --agreement-version {agreement} --out {work}/first.pem\n\n\
         and check it:  openssl verify -CAfile {root} -untrusted {chain} {work}/first.pem\n",
        ra = parts
            .cfg
            .ras
            .first()
            .map(|r| r.name.as_str())
            .unwrap_or("(none configured)"),
        csr = csr.display(),
        code = QUICKSTART_CREDIT_CODE,
        agreement = parts.cfg.ca.agreement_version,
        work = work.display(),
        root = out.join(format!("{root}.pem")).display(),
        chain = out.join("chain.pem").display(),
    );
    serve_parts(parts, rt, path)
}

/// A unified social credit code with a valid check character, for the demo organisation.
const QUICKSTART_CREDIT_CODE: &str = "12371422MB2850001N";

/// On SoftHSM, keep a copy of the token directory once the ceremony has made keys (`made`),
/// or when no copy exists yet, and say where: SoftHSM can lose a token to a kill during its
/// login (see [`softhsm`]), and the copy is then the only way back to the CA keys.
fn back_up_softhsm(cfg: &Config, made: bool) -> Result<(), String> {
    if !softhsm::is_softhsm(&cfg.hsm.module) {
        return Ok(());
    }
    let Some(tokens) = softhsm::token_dir() else {
        return Ok(());
    };
    let root = backup_root(&tokens);
    let have_one = std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_some());
    if have_one && !made {
        eprintln!(
            "SoftHSM token directory: copies kept under {}",
            root.display()
        );
        return Ok(());
    }
    let name = format!("ceremony-{}", signet::clock::unix_now());
    let copy = softhsm::backup_tokens(&tokens, &root, &name)
        .map_err(|e| format!("backing up the SoftHSM token directory: {e}"))?;
    eprintln!(
        "SoftHSM token directory {} copied to {} (restore it from there if SoftHSM ever \
         loses a token; see docs/softhsm.md)",
        tokens.display(),
        copy.display()
    );
    Ok(())
}

//! The `signet` command: key ceremony, local issuance, the quick start, the daemon (`serve`)
//! and the reference RA client (`ra`). (The token workstation commands build on the same
//! library.)

mod bench_cmd;
mod bench_http;
mod bench_ocsp;
mod ra_cmd;
mod token_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use signet::api::Api;
use signet::audit::AuditEvent;
use signet::ca::ceremony;
use signet::ca::checkpoint::Checkpointer;
use signet::ca::crl::CrlPublisher;
use signet::ca::ocsp::OcspResponder;
use signet::ca::tsa::Tsa;
use signet::ca::{Approval, Authority, CaError, IssueRequest};
use signet::config::Config;
use signet::hsm::Hsm;
use signet::http::Http;
use signet::pki::pkcs7::pem_certificates;
use signet::pki::{San, SubjectSpec};
use signet::store::{SqliteStore, Store};

/// signet: a certificate authority whose keys live in PKCS#11 hardware.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). The quick start uses hsm-config/softhsm.toml.
    #[arg(long, short, env = "SIGNET_CONFIG", global = true)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA keys in the HSM and the hierarchy's certificates (root, issuing CAs);
    /// never overwrites a key or certificate.
    Ceremony,
    /// Issue a certificate locally, as the operator (the RA API does the same over mTLS).
    Issue(Box<ra_cmd::IssueArgs>),
    /// Quick start on SoftHSM: run the ceremony if needed (CA keys, certificates, the
    /// daemon's TLS certificate, an RA client certificate), print the `signet ra` line that
    /// issues a first certificate, and serve the RA API until SIGTERM or SIGINT.
    Quickstart,
    /// Check a configuration file and print what it defines.
    CheckConfig,
    /// Run the daemon: the RA API over mutual TLS on the [api] listen address and, when
    /// [http] is configured, CRLs, CA certificates and health over plain HTTP, until SIGTERM
    /// or SIGINT (calls in flight are finished first).
    Serve,
    /// Revoke a certificate locally, as the operator (CA-initiated revocation), through the
    /// same path as the RA API's Revoke. A running daemon on the same store publishes it
    /// within its [crl] lag_seconds; with --publish this command publishes fresh CRLs itself.
    Revoke(Box<RevokeArgs>),
    /// Publish fresh CRLs now (every issuer, or one) and print what each says.
    Crl {
        /// Only this issuer.
        #[arg(long)]
        issuer: Option<String>,
    },
    /// The reference RA client: call the RA API over mutual TLS.
    Ra(Box<ra_cmd::RaArgs>),
    /// The token workstation's front desk: list, init, personalize, change-pin, unblock and
    /// read subscribers' tokens through a daemon's TokenService over mutual TLS.
    Token(Box<token_cmd::TokenArgs>),
    /// The audit log: verify the chain and its signed checkpoints, sign a checkpoint now, or
    /// write the evidence bundle of one certificate.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Load a running daemon and report the rate and latency beside the raw HSM signing rate
    /// of the same key and pool size: concurrent Issue calls over mTLS gRPC (`--mode issue`),
    /// OCSP requests (`--mode ocsp`) or timestamp requests (`--mode tsa`) over HTTP.
    Bench {
        #[command(flatten)]
        conn: Box<ra_cmd::ConnArgs>,
        #[command(flatten)]
        args: Box<bench_cmd::BenchArgs>,
    },
}

/// `signet revoke`: what the operator revokes, why, and since when.
#[derive(clap::Args)]
struct RevokeArgs {
    /// Serial number (hex, as `openssl x509 -serial` prints it or lower case).
    #[arg(long)]
    serial: String,
    /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
    /// superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise.
    #[arg(long)]
    reason: String,
    /// When the problem was reported or the key became unsafe (RFC 3339); the CRL entry's
    /// invalidity date. Default: none given (the revocation time stands).
    #[arg(long)]
    reported_at: Option<String>,
    /// Request id; running again with the same id changes nothing. Default: a fresh one.
    #[arg(long)]
    request_id: Option<String>,
    /// A note kept with the revocation.
    #[arg(long, default_value = "")]
    comment: String,
    /// Also publish fresh CRLs of every issuer now (when no daemon runs to do it).
    #[arg(long)]
    publish: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the whole chain and every checkpoint: prints OK with the count and range, or the
    /// first entry where the chain breaks (and exits non-zero). Reads the store only.
    Verify,
    /// Append the usage counts and sign a checkpoint over the newest entry now, with the
    /// audit key in the HSM.
    Checkpoint,
    /// Write the evidence bundle of one certificate into a directory: request and approval,
    /// CSR, certificate and chain, audit entries up to a signed checkpoint, and README.txt
    /// with the OpenSSL commands that check each part.
    Evidence {
        /// The certificate's serial number (hex).
        #[arg(long)]
        serial: String,
        /// The directory to write (created; must not hold a bundle already).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    let path = path.ok_or("no configuration: pass --config FILE or set SIGNET_CONFIG")?;
    Config::load(path).map_err(|e| e.to_string())
}

/// The HSM and store a command works with. The HSM is opened on this thread before the
/// runtime starts, because opening it sets the module's environment variables.
struct Parts {
    cfg: Config,
    hsm: Hsm,
    store: Arc<dyn Store>,
}

fn open_parts(cfg: Config) -> Result<Parts, String> {
    let settings = cfg.hsm_settings().map_err(|e| e.to_string())?;
    let hsm = Hsm::open(settings).map_err(|e| format!("HSM: {e}"))?;
    let store = SqliteStore::open(&cfg.store_path()).map_err(|e| e.to_string())?;
    Ok(Parts {
        cfg,
        hsm,
        store: Arc::new(store),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn run(cli: Cli) -> Result<(), String> {
    let cli = match cli.command {
        Command::Ra(args) => return ra_cmd::run(*args, cli.config.as_deref(), read_csr),
        Command::Token(args) => return token_cmd::run(*args, cli.config.as_deref()),
        command => Cli {
            command,
            config: cli.config,
        },
    };
    let cfg = load_config(cli.config.as_deref())?;
    match cli.command {
        Command::Ra(_) | Command::Token(_) => unreachable!("handled above"),
        Command::Bench { conn, args } => bench_cmd::run(cfg, &args, || {
            ra_cmd::settings(&conn, cli.config.as_deref())
        }),
        Command::Serve => serve(cfg),
        Command::CheckConfig => {
            let specs = cfg.issuer_specs().map_err(|e| e.to_string())?;
            for s in specs {
                println!(
                    "issuer {} ({} key {:?}, {}){}",
                    s.name,
                    s.key_type,
                    s.key_label,
                    s.signature,
                    s.parent.map(|p| format!(" under {p}")).unwrap_or_default()
                );
            }
            for (name, p) in cfg.profiles().map_err(|e| e.to_string())? {
                println!(
                    "profile {name}: {} by {} for {:?} years",
                    p.kind,
                    p.issuers.join(", "),
                    p.validity_years
                );
            }
            Ok(())
        }
        Command::Ceremony => {
            let parts = open_parts(cfg)?;
            let rt = runtime()?;
            let report = rt
                .block_on(ceremony::run(&parts.cfg, &parts.hsm, &parts.store))
                .map_err(|e| e.to_string())?;
            print_report(&report);
            parts.hsm.close();
            Ok(())
        }
        Command::Issue(args) => {
            let parts = open_parts(cfg)?;
            let rt = runtime()?;
            let req = issue_request(&args)?;
            let issued = rt
                .block_on(async {
                    let ca =
                        Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone()).await?;
                    ca.issue(signet::audit::ACTOR_OPERATOR, req).await
                })
                .map_err(describe)?;
            parts.hsm.close();
            let chain = if args.chain { &issued.chain[..] } else { &[] };
            let pem = pem_certificates(std::iter::once(&issued.cert_der).chain(chain));
            match &args.out {
                Some(p) => std::fs::write(p, pem).map_err(|e| format!("{}: {e}", p.display()))?,
                None => print!("{pem}"),
            }
            eprintln!(
                "issued serial {} ({} by {}), valid until {}",
                issued.record.serial,
                issued.record.profile,
                issued.record.issuer,
                issued.record.not_after
            );
            Ok(())
        }
        Command::Quickstart => quickstart(cfg),
        Command::Revoke(args) => revoke(cfg, &args),
        Command::Audit(cmd) => audit(cfg, cmd),
        Command::Crl { issuer } => {
            let parts = open_parts(cfg)?;
            let rt = runtime()?;
            let published = rt.block_on(async {
                let ca = Arc::new(
                    Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone()).await?,
                );
                let publisher = CrlPublisher::new(ca, &parts.cfg.crl);
                match &issuer {
                    Some(name) => publisher.publish(name).await.map(|p| vec![p]),
                    None => publisher.publish_all().await,
                }
            });
            parts.hsm.close();
            print_published(&published.map_err(describe)?);
            Ok(())
        }
    }
}

/// `signet revoke`: revoke through the authority's one revocation path as `operator`, print
/// the outcome, and publish CRLs when asked.
fn revoke(cfg: Config, args: &RevokeArgs) -> Result<(), String> {
    let reason: signet::pki::RevocationReason =
        args.reason.parse().map_err(|e| format!("--reason: {e}"))?;
    let reported_at = args
        .reported_at
        .as_deref()
        .map(|t| signet::api::client::parse_rfc3339(t).map_err(|e| format!("--reported-at: {e}")))
        .transpose()?;
    let request_id = match &args.request_id {
        Some(id) => id.clone(),
        None => format!(
            "operator-revoke-{}",
            signet::pki::serial::serial_hex(&signet::pki::serial::random_serial())
        ),
    };
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let ca =
            Arc::new(Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone()).await?);
        let revoked = ca
            .revoke(
                signet::audit::ACTOR_OPERATOR,
                signet::ca::RevokeRequest {
                    request_id: request_id.clone(),
                    serial: args.serial.clone(),
                    reason,
                    reported_at,
                    comment: args.comment.clone(),
                },
            )
            .await?;
        let published = if args.publish {
            CrlPublisher::new(ca, &parts.cfg.crl).publish_all().await?
        } else {
            Vec::new()
        };
        Ok::<_, CaError>((revoked, published))
    });
    parts.hsm.close();
    let (revoked, published) = result.map_err(describe)?;
    let rev = revoked.record.revocation.as_ref();
    println!(
        "{}: {} ({}) at {} by {}, request {request_id}{}",
        revoked.record.serial,
        if rev.is_some_and(|r| r.reason == signet::pki::RevocationReason::CertificateHold) {
            "on hold"
        } else {
            "revoked"
        },
        rev.map_or_else(|| "-".to_owned(), |r| r.reason.to_string()),
        rev.map_or_else(|| "-".to_owned(), |r| signet::ca::rfc3339(r.revoked_at)),
        rev.map_or("-", |r| r.revoked_by.as_str()),
        if revoked.already_revoked {
            " (already revoked before; nothing changed)"
        } else {
            ""
        },
    );
    if published.is_empty() {
        println!(
            "a running daemon publishes it within {} s ([crl] lag_seconds); `signet crl` publishes now",
            parts.cfg.crl.lag_seconds
        );
    }
    print_published(&published);
    Ok(())
}

fn print_published(published: &[signet::ca::crl::PublishedCrl]) {
    for p in published {
        println!(
            "{}: CRL number {}, thisUpdate {}, nextUpdate {}, {} entries",
            p.issuer,
            p.number,
            signet::ca::rfc3339(p.this_update),
            signet::ca::rfc3339(p.next_update),
            p.entries
        );
    }
}

/// `signet audit ...`.
fn audit(cfg: Config, cmd: AuditCommand) -> Result<(), String> {
    if let AuditCommand::Verify = cmd {
        let store = SqliteStore::open(&cfg.store_path()).map_err(|e| e.to_string())?;
        let rt = runtime()?;
        let found = rt
            .block_on(signet::ca::checkpoint::verify_log(&store))
            .map_err(describe)?;
        return match found {
            Ok(r) => {
                println!(
                    "audit log OK: {} entries (1 to {}), {} checkpoints verified{}",
                    r.entries,
                    r.entries,
                    r.checkpoints,
                    match r.covered_to {
                        Some(s) if s == r.entries => ", the newest entry is covered".to_owned(),
                        Some(s) => format!(
                            ", entries 1 to {s} covered by a signed checkpoint, {} after it not yet",
                            r.entries - s
                        ),
                        None => ", no entry is covered by a signed checkpoint yet".to_owned(),
                    }
                );
                Ok(())
            }
            Err(b) => Err(format!("audit log BROKEN at entry {}: {}", b.seq, b.reason)),
        };
    }
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let authority =
            Arc::new(Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone()).await?);
        match cmd {
            AuditCommand::Verify => unreachable!("handled above"),
            AuditCommand::Checkpoint => {
                let cp = signet::ca::checkpoint::Checkpointer::open(&parts.cfg, authority)
                    .await?
                    .ok_or_else(|| {
                        CaError::FailedPrecondition(
                            "the configuration has no [audit] section".into(),
                        )
                    })?;
                Ok(match cp.checkpoint().await? {
                    Some(c) => format!("checkpoint signed over entry {} ({})", c.seq, c.hash),
                    None => "the newest entry is already covered by a checkpoint".to_owned(),
                })
            }
            AuditCommand::Evidence { serial, out } => {
                let b = signet::ca::evidence::write_bundle(&authority, &serial, &out).await?;
                Ok(format!(
                    "wrote {}: audit entries {} to {}, checkpoint over {}; see README.txt there",
                    b.dir.display(),
                    b.entries.0,
                    b.entries.1,
                    b.checkpoint_seq
                ))
            }
        }
    });
    parts.hsm.close();
    println!("{}", result.map_err(describe)?);
    Ok(())
}

/// `signet serve`: open the HSM (before the runtime: it sets the module's environment), the
/// store and the authority, bind, announce the address, serve until a signal, let the calls
/// in flight finish, then close the HSM.
fn serve(cfg: Config) -> Result<(), String> {
    if cfg.api.is_none() {
        return Err(signet::api::ApiError::NotConfigured.to_string());
    }
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    serve_parts(parts, rt)
}

/// Serve with an open HSM and store on `rt`, until a signal; then close the HSM. One signal
/// stops every server: it is fanned out through a watch channel.
fn serve_parts(parts: Parts, rt: tokio::runtime::Runtime) -> Result<(), String> {
    let result = rt.block_on(async {
        let authority = Arc::new(
            Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone())
                .await
                .map_err(describe)?,
        );
        let mut api = Api::new(&parts.cfg, authority.clone())
            .map_err(|e| e.to_string())?;
        if parts.cfg.token.is_some() {
            let workstation = signet::token::Workstation::from_config(
                &parts.cfg,
                parts.store.clone(),
                Some(authority.clone()),
            )
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
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
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
        tracing::info!(%addr, "serving the RA API");
        println!("signet: serving RA API on {addr}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let served = api
            .run(listener, until_stopped(stopped))
            .await
            .map_err(|e| e.to_string());
        if let Some(http) = http {
            if served.is_err() {
                http.abort();
                return served;
            }
            http.await
                .map_err(|e| format!("HTTP server: {e}"))?
                .map_err(|e| e.to_string())?;
        }
        finish_audit(&authority, tsa.as_deref(), checkpointer.as_deref()).await;
        served
    });
    // Signing calls abandoned at their deadline may still hold an HSM session: give the
    // blocking pool a moment before the module is finalised.
    rt.shutdown_timeout(std::time::Duration::from_secs(10));
    parts.hsm.close();
    if result.is_ok() {
        tracing::info!("stopped");
    }
    result
}

/// At a graceful stop: record the TSA's latest time, write the stop entry (after the usage
/// counts), and sign a checkpoint over it, so the log ends covered.
async fn finish_audit(
    authority: &Authority,
    tsa: Option<&Tsa>,
    checkpointer: Option<&Checkpointer>,
) {
    if let Some(t) = tsa
        && let Err(e) = t.close().await
    {
        tracing::error!("recording the TSA's latest time: {e}");
    }
    let store = authority.store();
    if let Err(e) = authority.flush_usage().await {
        tracing::error!("writing usage counts: {e}");
    }
    let stop = AuditEvent::daemon(
        "daemon.stopped",
        "signet",
        serde_json::json!({ "pid": std::process::id() }),
    );
    if let Err(e) = store.append_audit(stop).await {
        tracing::error!("writing the stop entry: {e}");
    }
    if let Some(c) = checkpointer
        && let Err(e) = c.checkpoint().await
    {
        tracing::error!("the shutdown checkpoint failed: {e}");
    }
}

/// The status service: publish every issuer's CRL (so the first request finds one), keep
/// them fresh in the background, and serve them over HTTP until `shutdown`.
async fn start_http(
    parts: &Parts,
    authority: Arc<Authority>,
    tsa: Option<Arc<Tsa>>,
    stopped: tokio::sync::watch::Receiver<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<Result<(), signet::http::HttpError>>, String> {
    let publisher = Arc::new(CrlPublisher::new(authority.clone(), &parts.cfg.crl));
    publisher.publish_all().await.map_err(describe)?;
    let stopped_ocsp = stopped.clone();
    tokio::spawn(publisher.clone().run(stopped));
    let ocsp = Arc::new(
        OcspResponder::open(authority.clone(), &parts.cfg.ocsp)
            .await
            .map_err(describe)?,
    );
    tokio::spawn(ocsp.clone().maintain(stopped_ocsp));
    let http = Http::new(authority, publisher, ocsp, tsa).map_err(|e| e.to_string())?;
    let listener = Http::bind(&parts.cfg).await.map_err(|e| e.to_string())?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("HTTP listener address: {e}"))?;
    tracing::info!(%addr, "serving CRLs and CA certificates over HTTP");
    println!("signet: serving HTTP on {addr}");
    Ok(tokio::spawn(http.run(listener, shutdown)))
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

fn describe(e: CaError) -> String {
    match &e {
        CaError::Invalid { .. } => format!("invalid request: {e}"),
        _ => e.to_string(),
    }
}

fn print_report(r: &ceremony::CeremonyReport) {
    for n in &r.created {
        eprintln!("created issuer {n}");
    }
    for n in &r.existing {
        eprintln!("issuer {n} already exists; left untouched");
    }
    for f in &r.files {
        eprintln!("wrote {}", f.display());
    }
    for o in &r.responders {
        eprintln!("OCSP responder of {o}");
    }
}

fn read_csr(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("--csr {}: {e}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        let text =
            String::from_utf8(bytes).map_err(|_| "--csr: PEM file is not text".to_string())?;
        let (label, der) =
            der::pem::decode_vec(text.as_bytes()).map_err(|e| format!("--csr: bad PEM: {e}"))?;
        if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
            return Err(format!(
                "--csr: PEM label {label:?} is not a CERTIFICATE REQUEST"
            ));
        }
        Ok(der)
    } else {
        Ok(bytes)
    }
}

fn issue_request(a: &ra_cmd::IssueArgs) -> Result<IssueRequest, String> {
    let subject = SubjectSpec::parse(&a.subject).map_err(|e| format!("invalid request: {e}"))?;
    let sans = a
        .sans
        .iter()
        .map(|s| s.parse::<San>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid request: {e}"))?;
    Ok(IssueRequest {
        request_id: a.request_id.clone(),
        profile: a.profile.clone(),
        issuer: a.issuer.clone(),
        csr: read_csr(&a.csr)?,
        subject,
        sans,
        validity_years: a.validity,
        approval: Approval {
            officer: a.approval.officer.clone(),
            ra_reference: a.approval.ra_reference.clone(),
            agreement_version: a.approval.agreement_version.clone(),
        },
    })
}

/// The quick start: ceremony (if not done yet, including the TLS material of the RA API),
/// a demo subscriber CSR, the `signet ra` line that issues a first certificate, then the
/// daemon itself.
fn quickstart(cfg: Config) -> Result<(), String> {
    if cfg.api.is_none() {
        return Err(signet::api::ApiError::NotConfigured.to_string());
    }
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    let report = rt
        .block_on(ceremony::run(&parts.cfg, &parts.hsm, &parts.store))
        .map_err(|e| e.to_string())?;
    print_report(&report);
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
    serve_parts(parts, rt)
}

/// A unified social credit code with a valid check character, for the demo organisation.
const QUICKSTART_CREDIT_CODE: &str = "12371422MB2850001N";

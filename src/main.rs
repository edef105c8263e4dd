//! The `signet` command: parses the command line and hands each subcommand to its family in
//! [`cli`] (the daemon, the ceremony, the operator's local commands, the RA and token
//! clients, the audit log, the benchmark). Only `cli/` prints to the terminal.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// signet: a certificate authority whose keys live in PKCS#11 hardware.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). The quick start uses hsm-config/softhsm.toml.
    #[arg(long, short, env = "SIGNET_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// How log lines (on standard error) are written: `text` for people, `json` (one object
    /// per line: timestamp, level, target, fields) for log collectors.
    #[arg(long, value_enum, env = "SIGNET_LOG_FORMAT", global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// The format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create the CA keys in the HSM and the hierarchy's certificates (root, issuing CAs);
    /// never overwrites a key or certificate.
    Ceremony {
        /// Give this issuing CA a new key and certificate (generation `ISSUER-gN`, key
        /// `KEY_LABEL-gN`): new certificates come from it once the daemon restarts, the older
        /// generations keep signing CRLs and OCSP answers for theirs, the chain and .p7b carry
        /// them all.
        #[arg(long, value_name = "ISSUER")]
        rotate: Option<String>,
    },
    /// Issue a certificate locally, as the operator (the RA API does the same over mTLS).
    Issue(Box<cli::ra::IssueArgs>),
    /// Quick start on SoftHSM: run the ceremony if needed (CA keys, certificates, the
    /// daemon's TLS certificate, an RA client certificate), print the `signet ra` line that
    /// issues a first certificate, and serve the RA API until SIGTERM or SIGINT.
    Quickstart,
    /// Check a configuration file, print what it defines and warn about what loads but
    /// should be changed (OIDs under an example arc, Ed25519 where relying parties refuse it).
    CheckConfig {
        /// Refuse (exit non-zero) what a production CA must not run with: OIDs under an
        /// example arc.
        #[arg(long)]
        production: bool,
    },
    /// Run the daemon: the RA API over mutual TLS on the [api] listen address and, when
    /// [http] is configured, CRLs, CA certificates and health over plain HTTP, until SIGTERM
    /// or SIGINT (calls in flight are finished first).
    Serve,
    /// Revoke a certificate locally, as the operator (CA-initiated revocation), through the
    /// same path as the RA API's Revoke. A running daemon on the same store publishes it
    /// within its [crl] lag_seconds; with --publish this command publishes fresh CRLs itself.
    Revoke(Box<cli::operator::RevokeArgs>),
    /// Publish fresh CRLs now (every issuer, or one) and print what each says.
    Crl {
        /// Only this issuer.
        #[arg(long)]
        issuer: Option<String>,
    },
    /// The reference RA client: call the RA API over mutual TLS.
    Ra(Box<cli::ra::RaArgs>),
    /// The token workstation's front desk: list, init, personalize, change-pin, unblock and
    /// read subscribers' tokens through a daemon's TokenService over mutual TLS.
    Token(Box<cli::token::TokenArgs>),
    /// The audit log: verify the chain and its signed checkpoints, sign a checkpoint now, or
    /// write the evidence bundle of one certificate.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// The SQLite store: an online backup to a file, or a restore from one (checked, with the
    /// CRL numbers and TSA serials raised so none is handed out twice).
    #[command(subcommand)]
    Store(cli::store::StoreCommand),
    /// Shell completions (bash, zsh, fish, elvish, powershell) on standard output.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on standard output.
    #[command(hide = true)]
    Man,
    /// Load a running daemon and report the rate and latency beside the raw HSM signing rate
    /// of the same key and pool size: concurrent Issue calls over mTLS gRPC (`--mode issue`),
    /// OCSP requests (`--mode ocsp`) or timestamp requests (`--mode tsa`) over HTTP.
    Bench {
        #[command(flatten)]
        conn: Box<cli::ra::ConnArgs>,
        #[command(flatten)]
        args: Box<cli::bench::BenchArgs>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // The filter stays replaceable: `[log] level`, at start and on SIGHUP.
    match cli.log_format {
        LogFormat::Text => {
            let logs = logs
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter_reloading();
            let handle = logs.reload_handle();
            cli::common::set_log_filter_hook(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            logs.init();
        }
        LogFormat::Json => {
            let logs = logs
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_filter_reloading();
            let handle = logs.reload_handle();
            cli::common::set_log_filter_hook(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            logs.init();
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Hand the parsed command to its family.
fn run(cli: Cli) -> Result<(), String> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Ra(args) => cli::ra::run(*args, config),
        Command::Token(args) => cli::token::run(*args, config),
        Command::Bench { conn, args } => {
            let cfg = cli::common::load_config(config)?;
            cli::bench::run(cfg, &args, || cli::ra::settings(&conn, config))
        }
        Command::Serve => cli::serve::serve(cli::common::load_config(config)?, config),
        Command::Quickstart => cli::serve::quickstart(cli::common::load_config(config)?, config),
        Command::CheckConfig { production } => {
            cli::ceremony::check_config(&cli::common::load_config(config)?, production)
        }
        Command::Ceremony { rotate } => {
            cli::ceremony::run(cli::common::load_config(config)?, rotate.as_deref())
        }
        Command::Issue(args) => cli::operator::issue(cli::common::load_config(config)?, &args),
        Command::Revoke(args) => cli::operator::revoke(cli::common::load_config(config)?, &args),
        Command::Crl { issuer } => {
            cli::operator::crl(cli::common::load_config(config)?, issuer.as_deref())
        }
        Command::Audit(cmd) => cli::audit::run(cli::common::load_config(config)?, cmd),
        Command::Store(cmd) => cli::store::run(cli::common::load_config(config)?, cmd),
        Command::Completions { shell } => cli::docs::completions(Cli::command(), shell),
        Command::Man => cli::docs::man(Cli::command()),
    }
}

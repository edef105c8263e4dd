//! What the operator's commands share: the configuration, the HSM and store they open, a
//! runtime to drive them, CSR files, and how a refusal reads on the terminal.

use std::path::Path;
use std::sync::Arc;

use signet::ca::CaError;
use signet::config::Config;
use signet::hsm::{Hsm, softhsm};
use signet::store::{SqliteStore, Store};

pub(crate) fn load_config(path: Option<&Path>) -> Result<Config, String> {
    let path = path.ok_or("no configuration: pass --config FILE or set SIGNET_CONFIG")?;
    let cfg = Config::load(path).map_err(|e| e.to_string())?;
    // `[log] level` applies unless RUST_LOG says otherwise.
    if let Some(level) = &cfg.log.level
        && std::env::var_os("RUST_LOG").is_none()
    {
        set_log_level(level)?;
    }
    Ok(cfg)
}

/// The HSM and store a command works with. The HSM is opened on this thread before the
/// runtime starts, because opening it sets the module's environment variables.
pub(crate) struct Parts {
    pub(crate) cfg: Config,
    pub(crate) hsm: Hsm,
    pub(crate) store: Arc<dyn Store>,
}

/// What `check-config` warns about, as log lines: the daemon and the ceremony say it too.
pub(crate) fn log_findings(cfg: &Config) -> Result<(), String> {
    for f in cfg.findings().map_err(|e| e.to_string())? {
        tracing::warn!(key = %f.key, "configuration: {}", f.problem);
    }
    Ok(())
}

pub(crate) fn open_parts(cfg: Config) -> Result<Parts, String> {
    let settings = cfg.hsm_settings().map_err(|e| e.to_string())?;
    let module = settings.module.clone();
    let hsm = Hsm::open(settings).map_err(|e| format!("HSM: {e}{}", softhsm_hint(&module)))?;
    let store = SqliteStore::open(&cfg.store_path()).map_err(|e| e.to_string())?;
    Ok(Parts {
        cfg,
        hsm,
        store: Arc::new(store),
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

pub(crate) fn describe(e: CaError) -> String {
    match &e {
        CaError::Invalid { .. } => format!("invalid request: {e}"),
        _ => e.to_string(),
    }
}

pub(crate) fn read_csr(path: &Path) -> Result<Vec<u8>, String> {
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

/// When SoftHSM lost a token to a kill during its login rewrite (an empty `token.object`),
/// say so and where the quick start keeps its copy; otherwise nothing.
fn softhsm_hint(module: &Path) -> String {
    if !softhsm::is_softhsm(module) {
        return String::new();
    }
    let Some(tokens) = softhsm::token_dir() else {
        return String::new();
    };
    let emptied = softhsm::emptied_tokens(&tokens);
    if emptied.is_empty() {
        return String::new();
    }
    let files: Vec<String> = emptied.iter().map(|p| p.display().to_string()).collect();
    format!(
        "\nSoftHSM left {} empty: a process was killed while SoftHSM rewrote the token at \
         login, and that token is gone. Restore the token directory {} from the copy the \
         quick start keeps under {} (see docs/softhsm.md).",
        files.join(", "),
        tokens.display(),
        backup_root(&tokens).display()
    )
}

/// Where copies of a SoftHSM token directory go: `backup/` beside it.
pub(crate) fn backup_root(tokens: &Path) -> std::path::PathBuf {
    tokens
        .parent()
        .map(|p| p.join("backup"))
        .unwrap_or_else(|| std::path::PathBuf::from("backup"))
}

/// Replaces the log filter of the running subscriber.
type LogFilterHook = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

static LOG_FILTER: std::sync::OnceLock<LogFilterHook> = std::sync::OnceLock::new();

/// Called once by `main` with the way to replace the log filter.
pub(crate) fn set_log_filter_hook(hook: LogFilterHook) {
    let _ = LOG_FILTER.set(hook);
}

/// Log from now on what `level` (`RUST_LOG` syntax) selects.
pub(crate) fn set_log_level(level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map_err(|e| format!("log level {level:?}: {e}"))?;
    match LOG_FILTER.get() {
        Some(hook) => hook(filter),
        None => Err("the log filter cannot be replaced".into()),
    }
}

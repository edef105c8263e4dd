//! `signet bench`'s options: which mode, how long, how many callers, which issuer, which
//! database (store mode and `--prefill`).

/// What `signet bench` loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Issue` calls over mutual-TLS gRPC.
    Issue,
    /// OCSP requests to `POST /ocsp`: kept answers, then freshly signed ones.
    Ocsp,
    /// Timestamp queries to `POST /tsa`.
    Tsa,
    /// No load: the HSM's direct rate and signet's HSM layer alone, for the issuer's key.
    Hsm,
    /// The store alone, as issuance uses it (no HSM, no daemon): pending record, then the
    /// certificate with its audit entry, each durable.
    Store,
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
    /// Store mode and --prefill: the SQLite database to use (store mode: default a fresh one
    /// in a temporary directory under var/bench; --prefill: default the configured store).
    #[arg(long)]
    pub(crate) db: Option<std::path::PathBuf>,
    /// Grow the store (--db, or the configured one) to this many certificates, one in ten
    /// of those added revoked, through the calls issuance and revocation make; then exit.
    #[arg(long, value_name = "N")]
    pub(crate) prefill: Option<u64>,
    /// Callers signing through signet's HSM layer when it is measured alone (default: twice
    /// the pool size, so a session never waits for its next request).
    #[arg(long)]
    pub(crate) layer_callers: Option<usize>,
}

impl BenchArgs {
    /// How many tasks sign through the HSM layer when it is measured alone.
    pub(crate) fn layer_callers(&self, pool: usize) -> usize {
        self.layer_callers.unwrap_or(2 * pool).max(1)
    }
}

//! `signet bench`: a load generator against a running daemon, with the raw HSM signing rate
//! of the key that does the signing (same key, same pool size) measured in the same run, so
//! that every figure is reported as a ratio to what the hardware can do. `--mode issue`
//! loads certificate issuance over mutual-TLS gRPC; `--mode ocsp` and `--mode tsa` load the
//! status service's OCSP responder and timestamp authority over HTTP/1.1 keep-alive
//! connections. `--mode store` loads the store alone as issuance uses it, without HSM or
//! daemon, and `--prefill N` grows a store to N certificates to measure at scale.

mod args;
mod common;
mod direct;
mod hsm;
mod http;
mod issue;
mod ocsp;
mod prefill;
mod raw;
mod store;
mod tsa;
mod workload;

pub use args::BenchArgs;

use signet::api::client::ClientSettings;
use signet::config::Config;

use args::Mode;

/// Run the benchmark `--mode` names. `client` gives the RA client settings, asked for only
/// by the modes that call the RA API (TSA mode needs none).
pub fn run(
    cfg: Config,
    a: &BenchArgs,
    client: impl FnOnce() -> Result<ClientSettings, String>,
) -> Result<(), String> {
    if let Some(n) = a.prefill {
        return prefill::run(cfg, a, n);
    }
    match a.mode {
        Mode::Issue => issue::run(cfg, client()?, a),
        Mode::Ocsp => ocsp::run(cfg, client()?, a),
        Mode::Tsa => tsa::run(cfg, a),
        Mode::Hsm => hsm::run(cfg, a),
        Mode::Store => store::run(cfg, a),
    }
}

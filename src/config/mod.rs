//! The operator's configuration: TOML read with serde (`deny_unknown_fields`), then checked as
//! a whole so that every mistake is reported with the key that holds it, before any HSM or
//! database is touched. Secrets never sit in the file: PINs come from a file or a variable.
//!
//! One module per section family of the file: `hsm` (`[hsm]`, `[store]`), `ca` (`[ca]`,
//! `[[issuer]]`), `profiles`, `api` (`[api]`, `[[ra]]`), `status` (`[http]`, `[crl]`,
//! `[ocsp]`), `token`, `services` (`[tsa]`, `[audit]`), each with its serde defaults and the
//! checks of its own keys; `load` holds `Config`, reads the file and checks what spans
//! sections; `advice` finds what loads but should not go to production (example OIDs,
//! Ed25519 where relying parties refuse it); `error` holds `ConfigError` and the helpers the
//! sections share; `tests` loads whole sample files.

mod advice;
mod api;
mod ca;
mod error;
mod hsm;
mod load;
mod profiles;
mod services;
mod status;
#[cfg(test)]
mod tests;
mod token;

pub use advice::Finding;
pub use api::{ApiConfig, RaConfig, RaOperation, server_name_san};
pub use ca::{CaConfig, IssuerConfig, IssuerSpec};
pub use error::ConfigError;
pub use hsm::{HsmConfig, StoreConfig};
pub use load::Config;
pub use profiles::ProfileConfig;
pub use services::{AuditConfig, ServiceKeySpec, TsaConfig};
pub use status::{CrlConfig, HttpConfig, LogConfig, MetricsConfig, OcspConfig, OcspSigner};
pub use token::{
    DEFAULT_LABEL_TEMPLATE, TokenConfig, TokenIssuerConfig, TokenModuleConfig, render_label,
};

//! The `signet` command line, one file per subcommand family: `serve` and `quickstart`, the
//! key `ceremony` (and `check-config`), the operator's local `issue`/`revoke`/`crl`
//! (`operator`), the reference RA client (`ra`), the token front desk (`token`), the `audit`
//! log and `bench`. This is the only part of signet that prints to the terminal; the library
//! reports through return values and `tracing`.

pub mod audit;
pub mod bench;
pub mod ceremony;
pub mod common;
pub mod docs;
pub mod operator;
pub mod ra;
pub mod serve;
pub mod store;
pub mod token;

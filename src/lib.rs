//! signet: a certificate-authority signing daemon whose keys live in PKCS#11 hardware.
//!
//! The crate is laid out by concept: [`pki`] is pure X.509 work, [`hsm`] talks PKCS#11,
//! [`store`] keeps what was issued, [`audit`] chains the record of it, [`ca`] ties them into
//! exactly-once issuance, and [`config`] reads and validates the operator's TOML.

pub mod api;
pub mod audit;
pub mod ca;
pub mod clock;
pub mod config;
pub mod escape;
pub mod hsm;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod secret;
pub mod store;
pub mod token;

/// What the fuzz targets in `fuzz/` reach that signet does not otherwise export: the
/// decoding of values read back from PKCS#11 tokens. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::hsm::keys::{ec_spki, ecdsa_raw_to_der, ed25519_spki, rsa_spki};
}

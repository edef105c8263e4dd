//! Fixtures shared by the integration tests.
#![allow(dead_code)]

pub use signet::pki::{KeyType, SignatureAlgorithm, alg};

pub mod soft_signer;

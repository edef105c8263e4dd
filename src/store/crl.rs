//! Published CRLs and the revocations a CRL lists.

use crate::pki::RevocationReason;

/// A CRL as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlRecord {
    /// The issuer's configured name.
    pub issuer: String,
    /// Its cRLNumber.
    pub number: u64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// The signed CRL, DER.
    pub der: Vec<u8>,
}

/// A revoked, unexpired certificate as a CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlRevocation {
    /// Serial number, lower-case hex of the DER content octets.
    pub serial: String,
    /// When the CA recorded the revocation, Unix seconds.
    pub revoked_at: i64,
    /// The RFC 5280 reason.
    pub reason: RevocationReason,
    /// When the subscriber reported it, Unix seconds.
    pub reported_at: Option<i64>,
}

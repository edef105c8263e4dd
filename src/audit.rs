//! The tamper-evident audit log: every signing and state change is an entry whose hash covers
//! the previous entry's hash, so an edited, deleted or reordered entry breaks the chain.
//! Entries are written by the store in the same transaction as the change they record.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who caused an entry.
pub const ACTOR_OPERATOR: &str = "operator";

/// What happened, before the store gives it a sequence number and a place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The RA identity (from its client certificate), `operator`, or `ceremony`.
    pub actor: String,
    /// What was done: `certificate.issued`, `ceremony.key_generated`, ...
    pub action: String,
    /// What it was done to: a certificate serial, a key label, an issuer name.
    pub object: String,
    /// SHA-256 (hex) of the request that caused it, when there was one.
    pub request_digest: Option<String>,
    /// Further facts worth keeping (profile, issuer, RA reference), as JSON text.
    pub detail: String,
}

/// An entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix time in seconds.
    pub at: i64,
    /// The event.
    pub event: AuditEvent,
    /// Hash of the previous entry (32 zero bytes for the first), hex.
    pub prev_hash: String,
    /// This entry's hash, hex.
    pub hash: String,
}

/// The hash that stands before the first entry.
pub fn genesis_hash() -> String {
    hex::encode([0u8; 32])
}

/// Hash an entry: SHA-256 over the previous hash and every field, each length-prefixed so
/// that no two different entries share an encoding.
pub fn entry_hash(prev_hash: &str, seq: i64, at: i64, e: &AuditEvent) -> String {
    let mut h = Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    put(b"signet-audit-v1");
    put(prev_hash.as_bytes());
    put(&seq.to_be_bytes());
    put(&at.to_be_bytes());
    put(e.actor.as_bytes());
    put(e.action.as_bytes());
    put(e.object.as_bytes());
    put(e.request_digest.as_deref().unwrap_or("").as_bytes());
    put(e.detail.as_bytes());
    hex::encode(h.finalize())
}

/// Check a run of entries: consecutive sequence numbers and an unbroken chain. Returns the
/// sequence number of the first bad entry.
pub fn verify_chain<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> Result<usize, i64> {
    let mut prev = genesis_hash();
    let mut n = 0;
    for (expect_seq, e) in (1..).zip(entries) {
        if e.seq != expect_seq
            || e.prev_hash != prev
            || entry_hash(&prev, e.seq, e.at, &e.event) != e.hash
        {
            return Err(expect_seq.min(e.seq));
        }
        prev = e.hash.clone();
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = genesis_hash();
        (1..=n)
            .map(|seq| {
                let event = AuditEvent {
                    actor: "ra-1".into(),
                    action: "certificate.issued".into(),
                    object: format!("{seq:x}"),
                    request_digest: None,
                    detail: "{}".into(),
                };
                let hash = entry_hash(&prev, seq, 1000 + seq, &event);
                let e = AuditEntry {
                    seq,
                    at: 1000 + seq,
                    event,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_is_found() {
        let c = chain(5);
        assert_eq!(verify_chain(&c), Ok(5));
        let mut edited = c.clone();
        edited[2].event.object = "forged".into();
        assert_eq!(verify_chain(&edited), Err(3));
        let mut deleted = c.clone();
        deleted.remove(1);
        assert_eq!(verify_chain(&deleted), Err(2));
        let mut swapped = c;
        swapped.swap(3, 4);
        assert_eq!(verify_chain(&swapped), Err(4));
    }
}

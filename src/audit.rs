//! The tamper-evident audit log: every signing and state change is an entry whose hash covers
//! the previous entry's hash, so an edited, deleted or reordered entry breaks the chain.
//! Entries are written by the store in the same transaction as the change they record; the
//! newest entry's hash is signed by the audit key in the HSM at intervals (checkpoints).
//!
//! Everything here is checkable with OpenSSL alone: an entry's hash is the SHA-256 of its
//! canonical text ([`entry_text`]), which names the previous entry's hash, and a checkpoint
//! is a short text ([`checkpoint_text`]) signed with ECDSA (`openssl dgst -verify`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Who caused an entry.
pub const ACTOR_OPERATOR: &str = "operator";
/// The actor of entries the daemon writes on its own (start, stop, usage counts).
pub const ACTOR_DAEMON: &str = "daemon";

/// What happened, before the store gives it a sequence number and a place in the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The RA identity (from its client certificate), `operator`, `ceremony` or `daemon`.
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

impl AuditEvent {
    /// An event the daemon records on its own behalf.
    pub fn daemon(action: &str, object: &str, detail: serde_json::Value) -> AuditEvent {
        AuditEvent {
            actor: ACTOR_DAEMON.into(),
            action: action.into(),
            object: object.into(),
            request_digest: None,
            detail: detail.to_string(),
        }
    }
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

impl AuditEntry {
    /// The canonical text this entry's hash is taken over.
    pub fn text(&self) -> String {
        entry_text(&self.prev_hash, self.seq, self.at, &self.event)
    }
}

/// The hash that stands before the first entry.
pub fn genesis_hash() -> String {
    hex::encode([0u8; 32])
}

/// A string field as a JSON string literal: quoted and escaped, so no value can forge a line.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The canonical text of an entry: one `name: value` line per field, strings as JSON
/// literals (so a newline inside a value cannot pass for a field), ending in a newline.
/// Its SHA-256 is the entry's hash; `openssl dgst -sha256` of the text gives it.
pub fn entry_text(prev_hash: &str, seq: i64, at: i64, e: &AuditEvent) -> String {
    format!(
        "{}{}prev_hash: {prev_hash}\n",
        entry_head(seq, at),
        event_lines(e)
    )
}

/// The lines of an entry's canonical text that come from its event alone (actor to detail).
/// They can be written before the entry has a place in the chain, so the store's database
/// thread only adds the sequence number, the time and the previous hash.
pub fn event_lines(e: &AuditEvent) -> String {
    format!(
        "actor: {}\naction: {}\nobject: {}\nrequest_digest: {}\ndetail: {}\n",
        quoted(&e.actor),
        quoted(&e.action),
        quoted(&e.object),
        e.request_digest
            .as_deref()
            .map(quoted)
            .unwrap_or_else(|| "null".into()),
        quoted(&e.detail),
    )
}

fn entry_head(seq: i64, at: i64) -> String {
    format!("signet-audit-entry-v2\nseq: {seq}\nat: {at}\n")
}

/// Hash an entry: SHA-256 (hex) of its canonical text.
pub fn entry_hash(prev_hash: &str, seq: i64, at: i64, e: &AuditEvent) -> String {
    entry_hash_of_lines(prev_hash, seq, at, &event_lines(e))
}

/// [`entry_hash`] from the event's lines as [`event_lines`] wrote them.
pub fn entry_hash_of_lines(prev_hash: &str, seq: i64, at: i64, lines: &str) -> String {
    let mut h = Sha256::new();
    h.update(entry_head(seq, at).as_bytes());
    h.update(lines.as_bytes());
    h.update(b"prev_hash: ");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    hex::encode(h.finalize())
}

/// The hash of an entry written in the first format (before entries had a canonical text):
/// SHA-256 over a domain tag and every field, each length-prefixed. Logs begun by an
/// earlier signet keep such entries at their start; [`ChainWalker`] accepts them there.
pub fn entry_hash_v1(prev_hash: &str, seq: i64, at: i64, e: &AuditEvent) -> String {
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

/// Where and why a chain stops verifying.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq}: {reason}")]
pub struct ChainBreak {
    /// The first sequence number that is not as it should be.
    pub seq: i64,
    /// What is wrong with it.
    pub reason: String,
}

/// Walks a chain entry by entry (from seq 1), so a log of any length is checked in pages.
#[derive(Clone, Debug)]
pub struct ChainWalker {
    prev: String,
    next_seq: i64,
    /// Set at the first entry in the canonical-text format; first-format entries may only
    /// come before it.
    text_format_seen: bool,
}

impl Default for ChainWalker {
    fn default() -> Self {
        ChainWalker {
            prev: genesis_hash(),
            next_seq: 1,
            text_format_seen: false,
        }
    }
}

impl ChainWalker {
    /// Check the next entry: it must carry the next sequence number, name the previous
    /// entry's hash, and hash to its own recorded hash.
    pub fn push(&mut self, e: &AuditEntry) -> Result<(), ChainBreak> {
        let expect = self.next_seq;
        if e.seq != expect {
            let reason = if e.seq > expect {
                format!(
                    "missing: the entry after {} is numbered {} (entries deleted)",
                    expect - 1,
                    e.seq
                )
            } else {
                format!("numbered {} where {expect} was expected (reordered)", e.seq)
            };
            return Err(ChainBreak {
                seq: expect,
                reason,
            });
        }
        if e.hash == entry_hash(&e.prev_hash, e.seq, e.at, &e.event) {
            self.text_format_seen = true;
        } else if self.text_format_seen
            || e.hash != entry_hash_v1(&e.prev_hash, e.seq, e.at, &e.event)
        {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "its contents do not match its hash (edited or moved)".into(),
            });
        }
        if e.prev_hash != self.prev {
            return Err(ChainBreak {
                seq: e.seq,
                reason: "it does not name the previous entry's hash (an entry before it was replaced, deleted or reordered)".into(),
            });
        }
        self.prev = e.hash.clone();
        self.next_seq += 1;
        Ok(())
    }

    /// How many entries were checked.
    pub fn count(&self) -> i64 {
        self.next_seq - 1
    }
}

/// Check a run of entries from seq 1: consecutive sequence numbers and an unbroken chain.
/// Returns the count, or where it breaks.
pub fn verify_chain<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<usize, ChainBreak> {
    let mut w = ChainWalker::default();
    for e in entries {
        w.push(e)?;
    }
    Ok(w.count() as usize)
}

/// A signed statement that the chain up to `seq` ends in `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The newest entry covered.
    pub seq: i64,
    /// That entry's hash, hex.
    pub hash: String,
    /// When the checkpoint was signed, Unix seconds.
    pub at: i64,
    /// CKA_LABEL of the audit key that signed it.
    pub key_label: String,
    /// The signature over [`checkpoint_text`] (DER Ecdsa-Sig-Value).
    pub signature: Vec<u8>,
}

impl Checkpoint {
    /// The text that was signed.
    pub fn text(&self) -> String {
        checkpoint_text(self.seq, &self.hash, self.at)
    }
}

/// The canonical text a checkpoint signs.
pub fn checkpoint_text(seq: i64, hash: &str, at: i64) -> String {
    format!("signet-audit-checkpoint-v1\nseq: {seq}\nhash: {hash}\nat: {at}\n")
}

/// Counts of frequent signatures (OCSP responses, timestamps), kept in memory and written
/// as one audit entry per (action, object) and period, instead of an entry per signature.
///
/// Call [`UsageCounter::record`] after each signature; the daemon calls
/// [`UsageCounter::take`] at every checkpoint interval and at shutdown and appends what it
/// returns. Each entry's detail is `{"count": N, "from": T0, "to": T1}` (Unix seconds).
#[derive(Debug)]
pub struct UsageCounter {
    state: Mutex<UsageState>,
}

#[derive(Debug)]
struct UsageState {
    since: i64,
    counts: BTreeMap<(String, String), u64>,
}

impl UsageCounter {
    /// A counter whose first period starts at `now` (Unix seconds).
    pub fn new(now: i64) -> UsageCounter {
        UsageCounter {
            state: Mutex::new(UsageState {
                since: now,
                counts: BTreeMap::new(),
            }),
        }
    }

    /// Count one use: `action` (e.g. `timestamp.issued`, `ocsp.responder_key_used`) of
    /// `object` (the key label or issuer).
    pub fn record(&self, action: &str, object: &str) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = s
            .counts
            .entry((action.to_owned(), object.to_owned()))
            .or_insert(0);
        *n = n.saturating_add(1);
    }

    /// End the period at `now`: the events to append (none if nothing was counted), and a
    /// fresh period starts. If appending fails, give them back with [`UsageCounter::restore`].
    pub fn take(&self, now: i64) -> Vec<AuditEvent> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = std::mem::take(&mut s.counts);
        let from = std::mem::replace(&mut s.since, now);
        counts
            .into_iter()
            .map(|((action, object), count)| {
                AuditEvent::daemon(
                    &action,
                    &object,
                    serde_json::json!({ "count": count, "from": from, "to": now }),
                )
            })
            .collect()
    }

    /// Put back counts that could not be written, so they go into the next period's entry.
    pub fn restore(&self, events: &[AuditEvent]) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in events {
            let v: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
            if let Some(from) = v["from"].as_i64() {
                s.since = s.since.min(from);
            }
            // The detail is text read back from an entry that was not written: a count
            // near the top of u64 stops there rather than wrapping (or panicking).
            let n = s
                .counts
                .entry((e.action.clone(), e.object.clone()))
                .or_insert(0);
            *n = n.saturating_add(v["count"].as_u64().unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_put_back_near_the_top_of_u64_saturate_instead_of_overflowing() {
        let counter = UsageCounter::new(0);
        let event = |count: u64| {
            AuditEvent::daemon(
                "timestamp.issued",
                "signet-tsa-p256",
                serde_json::json!({ "count": count, "from": 0, "to": 1 }),
            )
        };
        counter.restore(&[event(u64::MAX), event(2)]);
        counter.record("timestamp.issued", "signet-tsa-p256");
        let taken = counter.take(2);
        assert_eq!(taken.len(), 1);
        let detail: serde_json::Value = serde_json::from_str(&taken[0].detail).unwrap();
        assert_eq!(detail["count"].as_u64(), Some(u64::MAX));
    }

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
    fn the_hash_from_pre_written_lines_is_the_sha256_of_the_canonical_text() {
        let e = AuditEvent {
            actor: "ra-1".into(),
            action: "certificate.issued".into(),
            object: "7f01".into(),
            request_digest: Some("ab".repeat(32)),
            detail: "{\"subject\":\"CN=张三\\nx\"}".into(),
        };
        let prev = "cd".repeat(32);
        let text = entry_text(&prev, 42, 1_800_000_000, &e);
        let want = hex::encode(Sha256::digest(text.as_bytes()));
        assert_eq!(entry_hash(&prev, 42, 1_800_000_000, &e), want);
        assert_eq!(
            entry_hash_of_lines(&prev, 42, 1_800_000_000, &event_lines(&e)),
            want
        );
        assert!(
            text.starts_with("signet-audit-entry-v2\nseq: 42\nat: 1800000000\nactor: \"ra-1\"\n")
        );
        assert!(text.ends_with(&format!("prev_hash: {prev}\n")));
        // Another time or number is another hash.
        assert_ne!(
            entry_hash_of_lines(&prev, 43, 1_800_000_000, &event_lines(&e)),
            want
        );
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_is_found() {
        let c = chain(5);
        assert_eq!(verify_chain(&c), Ok(5));
        let mut edited = c.clone();
        edited[2].event.object = "forged".into();
        assert_eq!(verify_chain(&edited).unwrap_err().seq, 3);
        let mut deleted = c.clone();
        deleted.remove(1);
        let e = verify_chain(&deleted).unwrap_err();
        assert_eq!(e.seq, 2);
        assert!(e.reason.contains("deleted"), "{e}");
        // Rows swapped but each keeping its number: both contents and numbers disagree.
        let mut swapped = c.clone();
        swapped.swap(3, 4);
        assert_eq!(verify_chain(&swapped).unwrap_err().seq, 4);
        // Contents swapped under the original numbers.
        let mut moved = c;
        let (a, b) = (moved[1].seq, moved[3].seq);
        moved.swap(1, 3);
        moved[1].seq = a;
        moved[3].seq = b;
        assert_eq!(verify_chain(&moved).unwrap_err().seq, 2);
    }

    #[test]
    fn a_log_begun_in_the_first_format_verifies_and_continues_in_the_text_format() {
        let event = |action: &str| AuditEvent {
            actor: "ra-1".into(),
            action: action.into(),
            object: "0a".into(),
            request_digest: None,
            detail: "{}".into(),
        };
        let mut prev = genesis_hash();
        let mut log = Vec::new();
        for seq in 1..=4 {
            let e = event("certificate.issued");
            let hash = if seq <= 2 {
                entry_hash_v1(&prev, seq, 100 + seq, &e)
            } else {
                entry_hash(&prev, seq, 100 + seq, &e)
            };
            log.push(AuditEntry {
                seq,
                at: 100 + seq,
                event: e,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            });
            prev = hash;
        }
        assert_eq!(verify_chain(&log), Ok(4));
        // An edit of a first-format entry is found like any other.
        let mut edited = log.clone();
        edited[1].event.object = "0b".into();
        assert_eq!(verify_chain(&edited).unwrap_err().seq, 2);
        // A first-format entry after a text-format one is refused: nothing new is written
        // in the old format.
        let mut late = log.clone();
        let e = event("certificate.revoked");
        let hash = entry_hash_v1(&prev, 5, 105, &e);
        late.push(AuditEntry {
            seq: 5,
            at: 105,
            event: e,
            prev_hash: prev,
            hash,
        });
        assert_eq!(verify_chain(&late).unwrap_err().seq, 5);
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_text_and_a_value_cannot_forge_a_line() {
        let e = &chain(1)[0];
        assert_eq!(e.hash, hex::encode(Sha256::digest(e.text().as_bytes())));
        let mut forged = e.event.clone();
        forged.object = "x\nactor: \"operator\"".into();
        let text = entry_text(&e.prev_hash, 1, 1, &forged);
        assert_eq!(text.lines().count(), 9, "{text}");
    }

    #[test]
    fn usage_counts_become_one_entry_per_action_and_object_per_period() {
        let u = UsageCounter::new(100);
        for _ in 0..3 {
            u.record("timestamp.issued", "tsa-key");
        }
        u.record("ocsp.responder_key_used", "issuing-ec");
        let events = u.take(160);
        assert_eq!(events.len(), 2);
        let ts = events
            .iter()
            .find(|e| e.action == "timestamp.issued")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&ts.detail).unwrap();
        assert_eq!(
            (v["count"].as_u64(), v["from"].as_i64(), v["to"].as_i64()),
            (Some(3), Some(100), Some(160))
        );
        assert!(u.take(200).is_empty());
        u.restore(&events);
        let again = u.take(220);
        assert_eq!(again.len(), 2);
        assert!(again.iter().any(|e| e.detail.contains("\"from\":100")));
    }
}

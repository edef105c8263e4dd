//! Audit checkpoints and verification: every `checkpoint_interval_seconds` and at shutdown
//! the usage counts are appended and the newest entry's sequence number and hash are signed
//! by the audit key in the HSM; `signet audit verify` walks the whole chain and every
//! checkpoint and names the first entry where either breaks. The interval runs from the
//! latest recorded checkpoint, not from the start of the process: a daemon that starts when
//! the latest is older than the interval (or with none) signs one at once, so one that
//! restarts, or is killed, more often than the interval still checkpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use spki::SubjectPublicKeyInfoOwned;
use tokio::sync::watch;

use super::{Authority, CaError};
use crate::audit::{ChainBreak, ChainWalker, Checkpoint, checkpoint_text};
use crate::config::Config;
use crate::pki::verify::key_type_of;
use crate::pki::verify::verify_signature;
use crate::store::{Store, StoreError};

/// Entries read per page while verifying.
pub(super) const PAGE: usize = 5000;

/// Signs checkpoints with the audit key.
pub struct Checkpointer {
    authority: Arc<Authority>,
    key_label: String,
    spki: SubjectPublicKeyInfoOwned,
    /// What the audit key signs with (from its type).
    alg: crate::pki::SignatureAlgorithm,
    interval: Duration,
}

impl Checkpointer {
    /// The checkpointer of `cfg` (`None` without `[audit]`): the audit key must be in the
    /// HSM and be the key the ceremony recorded.
    pub async fn open(
        cfg: &Config,
        authority: Arc<Authority>,
    ) -> Result<Option<Checkpointer>, CaError> {
        let (Some(a), Some(spec)) = (
            &cfg.audit,
            cfg.audit_key()
                .map_err(|e| CaError::FailedPrecondition(e.to_string()))?,
        ) else {
            return Ok(None);
        };
        let spki = authority.hsm.public_key(&spec.key_label).await?;
        let recorded = recorded_key(authority.store.as_ref(), &spec.key_label).await?;
        if recorded != spki {
            return Err(CaError::FailedPrecondition(format!(
                "the audit key {:?} in the HSM is not the key the ceremony recorded",
                spec.key_label
            )));
        }
        let alg = key_type_of(&spki, "audit key")?.default_signature_algorithm();
        Ok(Some(Checkpointer {
            authority,
            key_label: spec.key_label,
            spki,
            alg,
            interval: Duration::from_secs(a.checkpoint_interval_seconds),
        }))
    }

    /// Append the usage counts of the period now ending, then sign a checkpoint over the
    /// newest entry (unless one already covers it). Returns the new checkpoint, if any.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, CaError> {
        let store = &self.authority.store;
        self.authority.flush_usage().await?;
        let Some(last) = store.last_audit_entry().await? else {
            return Ok(None);
        };
        if store
            .last_checkpoint()
            .await?
            .is_some_and(|c| c.seq >= last.seq)
        {
            return Ok(None);
        }
        let now = crate::clock::unix_now();
        let text = checkpoint_text(last.seq, &last.hash, now);
        let signature = self
            .authority
            .hsm
            .sign(&self.key_label, self.alg, text.as_bytes())
            .await?;
        verify_signature(
            &self.spki,
            &self.alg.algorithm_identifier(),
            text.as_bytes(),
            &signature,
            "audit checkpoint",
        )
        .map_err(|e| CaError::Internal(format!("the HSM's checkpoint signature: {e}")))?;
        let cp = Checkpoint {
            seq: last.seq,
            hash: last.hash,
            at: now,
            key_label: self.key_label.clone(),
            signature,
        };
        match store.record_checkpoint(cp.clone()).await {
            Ok(()) => {}
            // Another checkpoint of the same entry got there first: that one stands.
            Err(StoreError::Duplicate { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(seq = cp.seq, "audit checkpoint signed");
        crate::metrics::metrics().audit_checkpointed(now);
        Ok(Some(cp))
    }

    /// Checkpoint every interval until `shutdown` turns true, the first one at once if the
    /// latest recorded checkpoint is older than the interval (or there is none), otherwise
    /// when the interval since it has passed. (The shutdown checkpoint is the caller's,
    /// after the last entries are written.)
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let last = match self.authority.store.last_checkpoint().await {
            Ok(c) => c.map(|c| c.at),
            Err(e) => {
                tracing::warn!("reading the latest audit checkpoint: {e}; checkpointing now");
                None
            }
        };
        let mut wait = first_wait(last, crate::clock::unix_now(), self.interval);
        if !wait.is_zero() {
            tracing::debug!(
                seconds = wait.as_secs(),
                "the latest audit checkpoint is recent; the next is due in {} s",
                wait.as_secs()
            );
        }
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.checkpoint().await {
                tracing::error!("audit checkpoint failed: {e}");
            }
            wait = self.interval;
        }
    }
}

/// How long after start the first checkpoint is due, given when the latest recorded one was
/// signed (`last_at`, Unix seconds) and the clock (`now`): at once if there is none or it is
/// at least `interval` old; otherwise what is left of the interval (never more than the
/// interval, even when the clock reads earlier than the latest checkpoint).
fn first_wait(last_at: Option<i64>, now: i64, interval: Duration) -> Duration {
    let Some(at) = last_at else {
        return Duration::ZERO;
    };
    let age = Duration::from_secs(u64::try_from(now.saturating_sub(at)).unwrap_or(0));
    interval.saturating_sub(age)
}

/// The public key the ceremony recorded under `label`.
pub(super) async fn recorded_key(
    store: &dyn Store,
    label: &str,
) -> Result<SubjectPublicKeyInfoOwned, CaError> {
    use der::Decode;
    let rec = store.ca_key(label).await?.ok_or_else(|| {
        CaError::FailedPrecondition(format!(
            "no key labelled {label:?} was recorded by the ceremony"
        ))
    })?;
    SubjectPublicKeyInfoOwned::from_der(&rec.spki_der)
        .map_err(|e| CaError::Internal(format!("recorded key {label:?}: {e}")))
}

/// What `signet audit verify` found in an intact log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: i64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// The newest entry a checkpoint covers.
    pub covered_to: Option<i64>,
}

/// Walk the whole chain and check every checkpoint: it must name an existing entry and that
/// entry's hash, and its signature must verify with the recorded audit key. Returns the
/// report, or the first entry where something is wrong.
pub async fn verify_log(store: &dyn Store) -> Result<Result<VerifyReport, ChainBreak>, CaError> {
    let checkpoints = store.checkpoints().await?;
    let mut by_seq: BTreeMap<i64, &Checkpoint> = BTreeMap::new();
    let mut keys: BTreeMap<String, SubjectPublicKeyInfoOwned> = BTreeMap::new();
    for c in &checkpoints {
        by_seq.insert(c.seq, c);
        if !keys.contains_key(&c.key_label) {
            keys.insert(
                c.key_label.clone(),
                recorded_key(store, &c.key_label).await?,
            );
        }
    }
    let mut walker = ChainWalker::default();
    let mut from = 1;
    loop {
        let page = store.audit_entries(from, PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for e in &page {
            if let Err(b) = walker.push(e) {
                return Ok(Err(b));
            }
            if let Some(c) = by_seq.get(&e.seq) {
                if c.hash != e.hash {
                    return Ok(Err(ChainBreak {
                        seq: e.seq,
                        reason: "its hash differs from the one its signed checkpoint records"
                            .into(),
                    }));
                }
                let spki = &keys[&c.key_label];
                let alg = key_type_of(spki, "audit key")?.default_signature_algorithm();
                if verify_signature(
                    spki,
                    &alg.algorithm_identifier(),
                    c.text().as_bytes(),
                    &c.signature,
                    "audit checkpoint",
                )
                .is_err()
                {
                    return Ok(Err(ChainBreak {
                        seq: e.seq,
                        reason: format!(
                            "the checkpoint covering it does not verify with the audit key {:?}",
                            c.key_label
                        ),
                    }));
                }
            }
        }
    }
    let count = walker.count();
    if let Some((&seq, _)) = by_seq.range(count + 1..).next() {
        return Ok(Err(ChainBreak {
            seq: count + 1,
            reason: format!(
                "missing: the log ends at {count} but a signed checkpoint covers entry {seq} (entries deleted)"
            ),
        }));
    }
    Ok(Ok(VerifyReport {
        entries: count,
        checkpoints: checkpoints.len(),
        covered_to: checkpoints.last().map(|c| c.seq),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_checkpoint_is_due_an_interval_after_the_latest_recorded_one() {
        let hour = Duration::from_secs(3600);
        assert_eq!(first_wait(None, 10_000, hour), Duration::ZERO);
        assert_eq!(
            first_wait(Some(10_000 - 3600), 10_000, hour),
            Duration::ZERO
        );
        assert_eq!(
            first_wait(Some(10_000 - 7200), 10_000, hour),
            Duration::ZERO
        );
        assert_eq!(
            first_wait(Some(10_000 - 600), 10_000, hour),
            Duration::from_secs(3000)
        );
        // A checkpoint from the clock's future: a whole interval, no more.
        assert_eq!(first_wait(Some(20_000), 10_000, hour), hour);
    }
}

//! CRL publication: for each issuer, list its revoked, unexpired certificates, reserve the
//! next cRLNumber, sign in the HSM, check the signature, record the CRL, and keep its DER in
//! memory, so HTTP requests are answered without waiting for the HSM or the database. A
//! background task regenerates within `lag_seconds` of a revocation, hold or release (also
//! one made by another process on the same store, found by polling) and at least every
//! `interval_seconds`, and warns about any revocation not published within the lag.
//!
//! thisUpdate never goes back: while the clock reads earlier than the thisUpdate of an
//! issuer's latest recorded CRL (a clock stepped back), nothing is published for it, its
//! latest CRL is served instead, and health reports [`HEALTH_COMPONENT`] degraded until a
//! publication succeeds again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use der::Encode;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Authority, CaError, unix};
use crate::config::CrlConfig;
use crate::pki::crl::{self as pki_crl, CrlContent, CrlEntry};
use crate::store::{CrlRecord, RevocationWatch, UnpublishedRevocation};

/// After a failed publication, try again this soon, then twice as late each time up to
/// the lag (and [`RETRY_MAX`]); at once when the HSM becomes available again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between attempts after failed publications.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The component name under which a clock behind the latest CRL is reported.
pub const HEALTH_COMPONENT: &str = "crl";

/// What one publication produced.
#[derive(Clone, Debug)]
pub struct PublishedCrl {
    /// The issuer.
    pub issuer: String,
    /// Its cRLNumber.
    pub number: u64,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// How many certificates it lists.
    pub entries: usize,
}

/// Publishes the CRLs of every loaded issuer and holds the latest of each.
pub struct CrlPublisher {
    authority: Arc<Authority>,
    settings: CrlConfig,
    latest: RwLock<HashMap<String, Bytes>>,
    /// Issuers not published because the clock reads earlier than their latest CRL's
    /// thisUpdate (issuer -> why).
    behind: std::sync::Mutex<BTreeMap<String, String>>,
}

impl CrlPublisher {
    /// A publisher for `authority`'s issuers; nothing is published until asked.
    pub fn new(authority: Arc<Authority>, settings: &CrlConfig) -> CrlPublisher {
        CrlPublisher {
            authority,
            settings: settings.clone(),
            latest: RwLock::new(HashMap::new()),
            behind: std::sync::Mutex::default(),
        }
    }

    /// The latest CRL of `issuer`, DER, if one was published by this process.
    pub fn latest(&self, issuer: &str) -> Option<Bytes> {
        self.latest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(issuer)
            .cloned()
    }

    /// Publish a fresh CRL for `issuer`. Refused with FailedPrecondition, and the issuer's
    /// latest recorded CRL served instead, while the clock reads earlier than that CRL's
    /// thisUpdate.
    pub async fn publish(&self, issuer: &str) -> Result<PublishedCrl, CaError> {
        let a = &self.authority;
        let iss = a
            .issuers
            .get(issuer)
            .ok_or_else(|| CaError::NotFound(format!("no loaded issuer {issuer:?}")))?;
        let now = super::now_seconds();
        if let Some(prev) = a.store.latest_crl(issuer).await?
            && unix(now) < prev.this_update
        {
            return Err(self.clock_behind(issuer, prev, unix(now)));
        }
        let started = std::time::Instant::now();
        let revoked = a.store.revoked_for_crl(issuer, unix(now)).await?;
        let read = started.elapsed();
        let entries = revoked
            .iter()
            .map(|r| {
                Ok(CrlEntry {
                    serial: hex::decode(&r.serial).map_err(|e| {
                        CaError::Internal(format!("stored serial {}: {e}", r.serial))
                    })?,
                    revoked_at: crate::clock::from_unix(r.revoked_at),
                    reason: r.reason,
                    reported_at: r.reported_at.map(crate::clock::from_unix),
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let number = a.store.next_crl_number(issuer).await?;
        let next_update = now + Duration::from_secs(self.settings.next_update_hours * 3600);
        let content = CrlContent {
            number,
            this_update: now,
            next_update,
            entries: &entries,
        };
        let building = std::time::Instant::now();
        let tbs = pki_crl::build_tbs_crl(&iss.cert, iss.signature, &content)?;
        let tbs_der = tbs
            .to_der()
            .map_err(|e| CaError::Internal(format!("encoding TBSCertList: {e}")))?;
        let signature = a.hsm.sign(&iss.key_label, iss.signature, &tbs_der).await?;
        let crl = pki_crl::assemble_crl(tbs, &signature)?;
        pki_crl::check_crl_signed_by(&crl, &iss.spki).map_err(|e| {
            tracing::error!(issuer, "HSM signature over the CRL does not verify: {e}");
            CaError::Internal(format!("the CRL signature of {issuer} does not verify"))
        })?;
        let der = crl
            .to_der()
            .map_err(|e| CaError::Internal(format!("encoding CRL: {e}")))?;
        let built = building.elapsed();
        let recording = std::time::Instant::now();
        let record = CrlRecord {
            issuer: issuer.to_owned(),
            number,
            this_update: unix(now),
            next_update: unix(next_update),
            der: der.clone(),
        };
        let serials = revoked.into_iter().map(|r| r.serial).collect();
        let audit = crate::audit::AuditEvent::daemon(
            "crl.signed",
            issuer,
            serde_json::json!({
                "number": number,
                "this_update": unix(now),
                "next_update": unix(next_update),
                "entries": entries.len(),
                "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der)),
            }),
        );
        a.store.record_crl(record, serials, audit).await?;
        crate::metrics::metrics().crl(issuer, number, entries.len(), der.len(), unix(now));
        self.latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(issuer.to_owned(), Bytes::from(der));
        // How long each part took, so the cost of a large CRL can be read from the log.
        tracing::info!(
            issuer,
            number,
            entries = entries.len(),
            read_ms = read.as_millis() as u64,
            build_sign_ms = built.as_millis() as u64,
            record_ms = recording.elapsed().as_millis() as u64,
            "CRL published"
        );
        self.set_behind(issuer, None);
        Ok(PublishedCrl {
            issuer: issuer.to_owned(),
            number,
            this_update: unix(now),
            next_update: unix(next_update),
            entries: entries.len(),
        })
    }

    /// The clock reads `now`, earlier than thisUpdate of `prev`, the latest CRL recorded for
    /// `issuer`: a new CRL would claim to be older than one relying parties may already
    /// hold. Keep serving `prev`, report the publisher degraded, and say why.
    fn clock_behind(&self, issuer: &str, prev: CrlRecord, now: i64) -> CaError {
        let why = format!(
            "the system clock reads {}, earlier than thisUpdate {} of CRL number {} of {issuer}; no CRL of {issuer} is published until the clock passes it, and CRL number {} is served meanwhile",
            super::rfc3339(now),
            super::rfc3339(prev.this_update),
            prev.number,
            prev.number,
        );
        self.latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(issuer.to_owned(), Bytes::from(prev.der));
        self.set_behind(issuer, Some(why.clone()));
        CaError::FailedPrecondition(why)
    }

    /// Record whether `issuer` is held back by the clock (with why) and report the
    /// publisher's health from every issuer's.
    fn set_behind(&self, issuer: &str, why: Option<String>) {
        let mut behind = self
            .behind
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = match why {
            Some(w) => behind.insert(issuer.to_owned(), w).is_none(),
            None => behind.remove(issuer).is_some(),
        };
        if !changed {
            return;
        }
        if behind.contains_key(issuer) {
            tracing::error!(issuer, "CRL: {}", behind[issuer]);
        } else {
            tracing::info!(issuer, "CRL: the clock has caught up; publishing again");
        }
        let summary =
            (!behind.is_empty()).then(|| behind.values().cloned().collect::<Vec<_>>().join("; "));
        self.authority.set_degraded(HEALTH_COMPONENT, summary);
    }

    /// Publish every issuer's CRL at start-up, so the first request finds one. An issuer
    /// whose latest recorded CRL is later than the clock serves that CRL instead (and the
    /// publisher is degraded until the clock catches up); any other failure is returned.
    pub async fn publish_at_start(&self) -> Result<Vec<PublishedCrl>, CaError> {
        let mut names: Vec<String> = self.authority.issuers().map(|i| i.name.clone()).collect();
        names.sort();
        let mut done = Vec::with_capacity(names.len());
        for name in names {
            match self.publish(&name).await {
                Ok(p) => done.push(p),
                Err(_) if self.is_behind(&name) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn is_behind(&self, issuer: &str) -> bool {
        self.behind
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(issuer)
    }

    /// Publish a fresh CRL for every loaded issuer, in name order. Every issuer is tried;
    /// the first failure is returned after the others.
    pub async fn publish_all(&self) -> Result<Vec<PublishedCrl>, CaError> {
        let mut names: Vec<String> = self.authority.issuers().map(|i| i.name.clone()).collect();
        names.sort();
        let mut done = Vec::with_capacity(names.len());
        let mut first_error = None;
        for name in names {
            match self.publish(&name).await {
                Ok(p) => done.push(p),
                Err(e) => {
                    tracing::error!(issuer = %name, "CRL publication failed: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Regenerate until `shutdown` turns true: within `lag_seconds` of a revocation, hold or
    /// release (those arriving meanwhile share that CRL) and at least every
    /// `interval_seconds`. Changes made by another process on the same store (`signet
    /// revoke`) are noticed by polling the store every [`poll_period`]; a revocation that no
    /// published CRL lists `lag_seconds` after it was recorded is logged as a warning, once.
    /// A failed publication is retried after [`retry_delay`] (1 s, doubling up to the lag)
    /// and at once when the HSM becomes available again, so a revocation waits at most the
    /// lag plus one retry after the HSM is back.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let revocations = self.authority.revocations();
        let mut hsm_up = self.authority.hsm.availability();
        let lag = Duration::from_secs(self.settings.lag_seconds);
        let interval = Duration::from_secs(self.settings.interval_seconds);
        let poll = poll_period(lag);
        let mut seen = self.watch().await.map_or(0, |w| w.last_event);
        let mut regular = Instant::now() + interval;
        let mut due: Option<Instant> = None;
        let mut late = HashSet::new();
        // Publications failed in a row (0: the last one succeeded).
        let mut failures = 0u32;
        let mut watching_hsm = true;
        loop {
            let wake = due
                .map_or(regular, |d| d.min(regular))
                .min(Instant::now() + poll);
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = revocations.notified() => {
                    // Within the lag, or sooner if a retry is already due sooner.
                    let within_lag = Instant::now() + lag;
                    due = Some(due.map_or(within_lag, |d| d.min(within_lag)));
                    continue;
                }
                changed = hsm_up.changed(), if failures > 0 && watching_hsm => {
                    if changed.is_err() {
                        // No HSM left to watch: retries keep to their delays.
                        watching_hsm = false;
                        continue;
                    }
                    if !*hsm_up.borrow_and_update() {
                        continue;
                    }
                    // The HSM is back: retry what failed now, not at the next retry.
                    tracing::info!("HSM available again; retrying CRL publication");
                    let now = Instant::now();
                    due = due.map(|d| d.min(now));
                    regular = regular.min(now);
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let watched = self.watch().await.map(|w| {
                if w.last_event > seen {
                    // Recorded by another process up to a poll ago: publish within what is
                    // left of the lag.
                    due.get_or_insert(Instant::now() + lag.saturating_sub(poll));
                }
                self.warn_late(&w.unpublished, &mut late);
                w.last_event
            });
            let now = Instant::now();
            if due.is_none_or(|d| d > now) && regular > now {
                continue;
            }
            // Everything up to what the watch just saw goes into this publication.
            // Availability changes before this attempt say nothing about its outcome.
            hsm_up.borrow_and_update();
            match self.publish_all().await {
                Ok(_) => {
                    seen = watched.unwrap_or(seen);
                    due = None;
                    regular = Instant::now() + interval;
                    failures = 0;
                }
                Err(_) => {
                    // Keep `due` set: a revocation still waits, so try again after the
                    // retry delay (or when the HSM is back); regular publication too.
                    failures = failures.saturating_add(1);
                    let retry = Instant::now() + interval.min(retry_delay(failures, lag));
                    due = due.map(|_| retry);
                    regular = retry;
                }
            }
        }
    }

    /// The store's revocation watch, or `None` (logged) when the store cannot be read.
    async fn watch(&self) -> Option<RevocationWatch> {
        match self
            .authority
            .store
            .revocation_watch(crate::clock::unix_now())
            .await
        {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot check the store for revocations to publish: {e}");
                None
            }
        }
    }

    /// Warn, once per revocation, about each one still unpublished `lag_seconds` after it
    /// was recorded.
    fn warn_late(&self, unpublished: &[UnpublishedRevocation], late: &mut HashSet<String>) {
        let now = crate::clock::unix_now();
        let lag = i64::try_from(self.settings.lag_seconds).unwrap_or(i64::MAX);
        late.retain(|serial| unpublished.iter().any(|u| &u.serial == serial));
        for u in unpublished {
            let age = now - u.revoked_at;
            if age > lag && late.insert(u.serial.clone()) {
                tracing::warn!(
                    serial = %u.serial,
                    issuer = %u.issuer,
                    age_seconds = age,
                    lag_seconds = lag,
                    "revocation not yet in a published CRL {age} s after it was recorded (lag {lag} s)"
                );
            }
        }
    }
}

/// How long to wait after the `failures`-th failed publication in a row: 1 s, doubling each
/// time, up to the lag (at least 1 s) and never above 30 s.
pub fn retry_delay(failures: u32, lag: Duration) -> Duration {
    let cap = lag.clamp(RETRY_FIRST, RETRY_MAX);
    RETRY_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(cap)
}

/// How often the publisher polls the store for revocations made by other processes: a
/// quarter of the lag, between 200 ms and 5 s.
pub fn poll_period(lag: Duration) -> Duration {
    (lag / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_publications_are_retried_after_1_s_doubling_up_to_the_lag() {
        let lag = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(n, lag).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            retry_delay(3, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(1, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_delay(u32::MAX, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn the_store_is_polled_at_a_quarter_of_the_lag_between_200_ms_and_5_s() {
        assert_eq!(
            poll_period(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            poll_period(Duration::from_millis(400)),
            Duration::from_millis(200)
        );
        assert_eq!(poll_period(Duration::from_secs(60)), Duration::from_secs(5));
        assert_eq!(poll_period(Duration::from_secs(8)), Duration::from_secs(2));
    }
}

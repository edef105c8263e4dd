//! Readiness beyond reachability: every issuer key signs a test message, verified against
//! the issuer's certificate, at most once per interval. A key that stopped signing (deleted,
//! its usage changed, refused by the HSM) takes the daemon out of service within the
//! interval, while liveness (`/healthz`) stays a read of cached flags.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Authority;
use crate::pki::verify;

/// The latest test signature of one issuer key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCheck {
    /// The issuer.
    pub issuer: String,
    /// When it was made, Unix seconds.
    pub at: i64,
    /// What went wrong, if anything.
    pub problem: Option<String>,
}

/// The interval and the latest checks.
pub(super) struct Readiness {
    interval: Duration,
    checks: Mutex<BTreeMap<String, (Instant, KeyCheck)>>,
}

impl Readiness {
    pub(super) fn new(interval: Duration) -> Readiness {
        Readiness {
            interval: interval.max(Duration::from_secs(1)),
            checks: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Instant, KeyCheck)>> {
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Authority {
    /// Sign and verify a test message with each issuer key whose latest check is older
    /// than the interval (all of them the first time).
    pub(super) async fn check_keys(&self) {
        let due: Vec<String> = {
            let checks = self.readiness.lock();
            self.issuers
                .keys()
                .filter(|name| {
                    checks
                        .get(*name)
                        .is_none_or(|(at, _)| at.elapsed() >= self.readiness.interval)
                })
                .cloned()
                .collect()
        };
        for name in due {
            let Some(issuer) = self.issuers.get(&name) else {
                continue;
            };
            let now = crate::clock::unix_now();
            let message = format!("signet readiness probe of {name} at {now}");
            let problem = match self
                .hsm
                .sign(&issuer.key_label, issuer.signature, message.as_bytes())
                .await
            {
                Err(e) => Some(format!("cannot sign with key {:?}: {e}", issuer.key_label)),
                Ok(sig) => verify::verify_signature(
                    &issuer.spki,
                    &issuer.signature.algorithm_identifier(),
                    message.as_bytes(),
                    &sig,
                    "the readiness probe signature",
                )
                .err()
                .map(|e| {
                    format!(
                        "key {:?} signs, but not as the issuer certificate says: {e}",
                        issuer.key_label
                    )
                }),
            };
            if let Some(p) = &problem {
                tracing::error!(issuer = %name, "readiness: {p}");
            }
            let check = KeyCheck {
                issuer: name.clone(),
                at: now,
                problem,
            };
            self.readiness.lock().insert(name, (Instant::now(), check));
        }
    }

    /// The latest test signature of every issuer key checked so far.
    pub fn key_checks(&self) -> Vec<KeyCheck> {
        self.readiness
            .lock()
            .values()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// True unless an issuer key's latest test signature failed (a key not checked yet
    /// counts as ready: opening the authority found it).
    pub fn keys_ready(&self) -> bool {
        self.readiness
            .lock()
            .values()
            .all(|(_, c)| c.problem.is_none())
    }
}

//! The timestamp authority (RFC 3161): answer a DER TimeStampReq with a token signed in the
//! HSM by the TSA key the ceremony certified. Every outcome is a TimeStampResp: bad input is
//! a rejection naming the field (badAlg, badDataFormat, badRequest, unacceptedPolicy), a
//! clock that went backwards is timeNotAvailable, and an HSM or store failure is
//! systemFailure.
//!
//! Serial numbers come from blocks reserved in the store (a block is never handed out twice,
//! so a restart skips the rest of the last block rather than reusing it): one store write per
//! block, none per token. The time is the system clock, and it never goes back, also across a
//! crash: the store holds a time ceiling that no token passes. Before the TSA stamps a token
//! later than the ceiling it durably writes a new one, the clock plus
//! `time_window_seconds` (one write per window, under the same lock as the serials, so
//! concurrent requests never each write), and a graceful stop lowers it to the latest token's
//! time. At start the stored ceiling is the floor: while the clock reads earlier, or whenever
//! it reads earlier than the latest token, the TSA refuses to sign and reports itself
//! degraded until the clock has caught up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use const_oid::ObjectIdentifier;
use x509_cert::Certificate;

use super::{Authority, CaError, keys};
use crate::config::Config;
use crate::pki::SignatureAlgorithm;
use crate::pki::tsp::{self, Accuracy, FailureInfo, Rejection, TokenContent};

/// Serial numbers reserved per store write.
pub const SERIAL_BLOCK: u64 = 1000;
/// The audit action under which issued timestamps are counted.
pub const USAGE_ACTION: &str = "timestamp.issued";
/// The component name under which a backwards clock is reported.
pub const HEALTH_COMPONENT: &str = "tsa";

/// The serial block in use, the time floor and the durable time ceiling.
struct State {
    next: u64,
    end: u64,
    /// No token may be earlier: the latest token's time, or at start the stored ceiling.
    last_ms: i64,
    /// The ceiling as the store holds it: no token may be later without raising it first.
    ceiling_ms: i64,
}

/// Whether the clock reads at least the TSA's floor, and whether a task is watching for it
/// to catch up (so health recovers without waiting for a request).
struct ClockState {
    ok: AtomicBool,
    watching: AtomicBool,
}

impl ClockState {
    /// The clock has caught up: sign again, and say so once.
    fn caught_up(&self, authority: &Authority) {
        if !self.ok.swap(true, Ordering::SeqCst) {
            tracing::info!("TSA: the clock has caught up; signing again");
            authority.set_degraded(HEALTH_COMPONENT, None);
        }
    }
}

/// The timestamp authority.
pub struct Tsa {
    authority: Arc<Authority>,
    key_label: String,
    signature: SignatureAlgorithm,
    cert: Certificate,
    /// The signingCertificateV2 attribute every token carries (made once from `cert`).
    signing_certificate: x509_cert::attr::Attribute,
    cert_der: Vec<u8>,
    policy: ObjectIdentifier,
    accuracy: Accuracy,
    /// How far ahead of the clock a new ceiling is written.
    window_ms: i64,
    state: tokio::sync::Mutex<State>,
    clock: Arc<ClockState>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Tsa {
    /// Load the TSA of `cfg` (`None` without `[tsa]`): its key in the HSM, the certificate
    /// the ceremony made for that key, and the stored time ceiling, the floor of every
    /// token it signs from now on (until the clock passes it, the TSA is degraded).
    pub async fn open(cfg: &Config, authority: Arc<Authority>) -> Result<Option<Tsa>, CaError> {
        let (Some(t), Some(spec)) = (
            &cfg.tsa,
            cfg.tsa_key()
                .map_err(|e| CaError::FailedPrecondition(e.to_string()))?,
        ) else {
            return Ok(None);
        };
        let spki = authority.hsm.public_key(&spec.key_label).await?;
        let (cert_der, cert, _) =
            keys::service_certificate(&authority.store, keys::TSA, &spki, &spec.key_label).await?;
        let policy = cfg
            .ca
            .oids()
            .and_then(|oids| t.policy(&oids))
            .map_err(|e| CaError::FailedPrecondition(e.to_string()))?;
        let stored_ms = authority.store.tsa_last_time().await?.unwrap_or(0);
        let signing_certificate = tsp::signing_certificate_attribute(&cert)?;
        let tsa = Tsa {
            signing_certificate,
            authority,
            key_label: spec.key_label,
            signature: spec.signature,
            cert,
            cert_der,
            policy,
            accuracy: Accuracy {
                seconds: (t.accuracy_seconds > 0).then_some(t.accuracy_seconds),
                millis: (t.accuracy_millis > 0).then_some(t.accuracy_millis as u16),
                micros: None,
            },
            window_ms: i64::try_from(t.time_window_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            state: tokio::sync::Mutex::new(State {
                next: 0,
                end: 0,
                last_ms: stored_ms,
                ceiling_ms: stored_ms,
            }),
            clock: Arc::new(ClockState {
                ok: AtomicBool::new(true),
                watching: AtomicBool::new(false),
            }),
        };
        if now_ms() < stored_ms {
            tsa.clock_went_back(stored_ms);
        }
        Ok(Some(tsa))
    }

    /// The TSA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// False while the clock reads earlier than the TSA's floor (the latest token's time,
    /// or the ceiling recorded before the last start).
    pub fn clock_ok(&self) -> bool {
        self.clock.ok.load(Ordering::SeqCst)
    }

    /// The clock reads earlier than `floor_ms`: refuse, report degraded, and watch for the
    /// clock to pass it (checked every second, since the clock may be stepped).
    fn clock_went_back(&self, floor_ms: i64) {
        let why = format!(
            "the system clock reads earlier than {}, a time timestamps may already carry (the latest token's, or the ceiling recorded before the last start); refusing to sign timestamps until the clock passes it",
            super::rfc3339((floor_ms + 999) / 1000)
        );
        if self.clock.ok.swap(false, Ordering::SeqCst) {
            tracing::error!("TSA: {why}");
        }
        self.authority.set_degraded(HEALTH_COMPONENT, Some(why));
        if self.clock.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let clock = self.clock.clone();
        let authority = self.authority.clone();
        tokio::spawn(async move {
            loop {
                let behind = floor_ms - now_ms();
                if behind <= 0 {
                    clock.watching.store(false, Ordering::SeqCst);
                    clock.caught_up(&authority);
                    return;
                }
                let nap = u64::try_from(behind.min(1000)).unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(nap)).await;
            }
        });
    }

    /// The DER TimeStampResp for the DER request `der`. Never fails: errors become
    /// rejections.
    pub async fn respond(&self, der: &[u8]) -> Vec<u8> {
        let metrics = crate::metrics::metrics();
        let req = match tsp::parse_request(der, &self.policy) {
            Ok(r) => r,
            Err(rej) => {
                metrics.tsa("rejection");
                return tsp::rejection(&rej);
            }
        };
        match self.stamp(&req).await {
            Ok(resp) => {
                metrics.tsa("granted");
                resp
            }
            Err(rej) => {
                metrics.tsa("rejection");
                tsp::rejection(&rej)
            }
        }
    }

    /// Draw a serial and a time: the time must not be earlier than the floor, and must not
    /// be later than the durable ceiling, which is raised first (with the serial block, when
    /// that runs out too) if it would be.
    async fn draw(&self) -> Result<(u64, i64), Rejection> {
        let mut st = self.state.lock().await;
        let now = now_ms();
        if now < st.last_ms {
            self.clock_went_back(st.last_ms);
            return Err(Rejection::new(
                FailureInfo::TimeNotAvailable,
                "the TSA's clock is behind the time of its latest timestamp",
            ));
        }
        self.clock.caught_up(&self.authority);
        let store_failure = |what: &str, e: crate::store::StoreError| {
            tracing::error!("TSA: {e}");
            Rejection::new(
                FailureInfo::SystemFailure,
                format!("the TSA cannot record {what} now"),
            )
        };
        let ceiling = (now > st.ceiling_ms).then(|| now.saturating_add(self.window_ms));
        if st.next >= st.end {
            let first = self
                .authority
                .store
                .reserve_tsa_serials(SERIAL_BLOCK, ceiling.unwrap_or(st.ceiling_ms))
                .await
                .map_err(|e| store_failure("serial numbers", e))?;
            st.next = first;
            st.end = first + SERIAL_BLOCK;
        } else if let Some(c) = ceiling {
            self.authority
                .store
                .note_tsa_time(c)
                .await
                .map_err(|e| store_failure("its time", e))?;
        }
        if let Some(c) = ceiling {
            st.ceiling_ms = c;
        }
        let serial = st.next;
        st.next += 1;
        st.last_ms = now;
        Ok((serial, now))
    }

    async fn stamp(&self, req: &tsp::TimeStampReq) -> Result<Vec<u8>, Rejection> {
        let (serial, at_ms) = self.draw().await?;
        let failure = |e: CaError| {
            tracing::error!(serial, "TSA: {e}");
            Rejection::new(
                FailureInfo::SystemFailure,
                "the TSA cannot sign now; try again",
            )
        };
        let gen_time = UNIX_EPOCH + Duration::from_secs(u64::try_from(at_ms / 1000).unwrap_or(0));
        let content = TokenContent {
            policy: self.policy,
            request: req,
            serial,
            gen_time,
            accuracy: self.accuracy,
        };
        let prepared = tsp::prepare_token(&content, &self.signing_certificate, self.signature)
            .map_err(|e| failure(e.into()))?;
        let signature = self
            .authority
            .hsm
            .sign(&self.key_label, self.signature, prepared.to_be_signed())
            .await
            .map_err(|e| failure(e.into()))?;
        let resp = tsp::assemble_granted(
            prepared,
            &self.cert,
            self.signature,
            &signature,
            req.cert_req,
        )
        .map_err(|e| failure(e.into()))?;
        self.authority.usage.record(USAGE_ACTION, &self.key_label);
        Ok(resp)
    }

    /// At shutdown: lower the stored ceiling to the time of the latest token, so the next
    /// start only waits for the clock to pass a time a token really carries. A token stamped
    /// after this raises the ceiling again first.
    pub async fn close(&self) -> Result<(), CaError> {
        let mut st = self.state.lock().await;
        if st.last_ms > 0 && st.last_ms < st.ceiling_ms {
            self.authority
                .store
                .settle_tsa_time(st.ceiling_ms, st.last_ms)
                .await?;
            st.ceiling_ms = st.last_ms;
        }
        Ok(())
    }
}

//! The timestamp authority (RFC 3161): answer a DER TimeStampReq with a token signed in the
//! HSM by the TSA key the ceremony certified. Every outcome is a TimeStampResp: bad input is
//! a rejection naming the field (badAlg, badDataFormat, badRequest, unacceptedPolicy), a
//! clock that went backwards is timeNotAvailable, and an HSM or store failure is
//! systemFailure.
//!
//! Serial numbers come from blocks reserved in the store (a block is never handed out twice,
//! so a restart skips the rest of the last block rather than reusing it): one store write per
//! block, none per token. The time is the system clock; the time of the latest token is kept
//! in memory and recorded with each block reservation and at shutdown. If the clock ever
//! reads earlier than that, the TSA refuses to sign and reports itself degraded until the
//! clock has caught up.

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

/// The serial block in use and the time of the latest token.
struct State {
    next: u64,
    end: u64,
    last_ms: i64,
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
    state: tokio::sync::Mutex<State>,
    clock_ok: AtomicBool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Tsa {
    /// Load the TSA of `cfg` (`None` without `[tsa]`): its key in the HSM, the certificate
    /// the ceremony made for that key, and the time of the latest token, which must not be
    /// later than the clock.
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
        let policy = ObjectIdentifier::new(&t.policy_oid)
            .map_err(|e| CaError::FailedPrecondition(format!("tsa.policy_oid: {e}")))?;
        let last_ms = authority.store.tsa_last_time().await?.unwrap_or(0);
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
            state: tokio::sync::Mutex::new(State {
                next: 0,
                end: 0,
                last_ms,
            }),
            clock_ok: AtomicBool::new(true),
        };
        if now_ms() < last_ms {
            tsa.clock_went_back(last_ms);
        }
        Ok(Some(tsa))
    }

    /// The TSA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// False while the clock reads earlier than the latest token.
    pub fn clock_ok(&self) -> bool {
        self.clock_ok.load(Ordering::SeqCst)
    }

    fn clock_went_back(&self, last_ms: i64) {
        let why = format!(
            "the system clock reads earlier than the latest timestamp ({}); refusing to sign timestamps",
            super::rfc3339(last_ms / 1000)
        );
        if self.clock_ok.swap(false, Ordering::SeqCst) {
            tracing::error!("TSA: {why}");
        }
        self.authority.set_degraded(HEALTH_COMPONENT, Some(why));
    }

    /// The DER TimeStampResp for the DER request `der`. Never fails: errors become
    /// rejections.
    pub async fn respond(&self, der: &[u8]) -> Vec<u8> {
        let req = match tsp::parse_request(der, &self.policy) {
            Ok(r) => r,
            Err(rej) => return tsp::rejection(&rej),
        };
        match self.stamp(&req).await {
            Ok(resp) => resp,
            Err(rej) => tsp::rejection(&rej),
        }
    }

    /// Draw a serial and a time: the time must not be earlier than the latest token's.
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
        if !self.clock_ok.swap(true, Ordering::SeqCst) {
            tracing::info!("TSA: the clock has caught up; signing again");
            self.authority.set_degraded(HEALTH_COMPONENT, None);
        }
        if st.next >= st.end {
            let first = self
                .authority
                .store
                .reserve_tsa_serials(SERIAL_BLOCK, now)
                .await
                .map_err(|e| {
                    tracing::error!("TSA: {e}");
                    Rejection::new(
                        FailureInfo::SystemFailure,
                        "the TSA cannot record serial numbers now",
                    )
                })?;
            st.next = first;
            st.end = first + SERIAL_BLOCK;
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

    /// Record the time of the latest token (at shutdown), so the next start can tell
    /// whether the clock went backwards while signet was down.
    pub async fn close(&self) -> Result<(), CaError> {
        let last = self.state.lock().await.last_ms;
        if last > 0 {
            self.authority.store.note_tsa_time(last).await?;
        }
        Ok(())
    }
}

//! CRL publication: for each issuer, list its revoked, unexpired certificates, reserve the
//! next cRLNumber, sign in the HSM, check the signature, record the CRL, and keep its DER in
//! memory, so HTTP requests are answered without waiting for the HSM or the database. A
//! background task regenerates within `lag_seconds` of a revocation and at least every
//! `interval_seconds`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use der::Encode;
use tokio::sync::watch;

use super::{Authority, CaError, unix};
use crate::config::CrlConfig;
use crate::pki::crl::{self as pki_crl, CrlContent, CrlEntry};
use crate::store::CrlRecord;

/// After a failed publication, try again this soon (or at the interval, if shorter).
const RETRY: Duration = Duration::from_secs(30);

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
}

fn at(t: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0))
}

impl CrlPublisher {
    /// A publisher for `authority`'s issuers; nothing is published until asked.
    pub fn new(authority: Arc<Authority>, settings: &CrlConfig) -> CrlPublisher {
        CrlPublisher {
            authority,
            settings: settings.clone(),
            latest: RwLock::new(HashMap::new()),
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

    /// Publish a fresh CRL for `issuer`.
    pub async fn publish(&self, issuer: &str) -> Result<PublishedCrl, CaError> {
        let a = &self.authority;
        let iss = a
            .issuers
            .get(issuer)
            .ok_or_else(|| CaError::NotFound(format!("no loaded issuer {issuer:?}")))?;
        let now = super::now_seconds();
        let revoked = a.store.revoked_for_crl(issuer, unix(now)).await?;
        let entries = revoked
            .iter()
            .map(|r| {
                Ok(CrlEntry {
                    serial: hex::decode(&r.serial).map_err(|e| {
                        CaError::Internal(format!("stored serial {}: {e}", r.serial))
                    })?,
                    revoked_at: at(r.revoked_at),
                    reason: r.reason,
                    reported_at: r.reported_at.map(at),
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
        self.latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(issuer.to_owned(), Bytes::from(der));
        tracing::info!(issuer, number, entries = entries.len(), "CRL published");
        Ok(PublishedCrl {
            issuer: issuer.to_owned(),
            number,
            this_update: unix(now),
            next_update: unix(next_update),
            entries: entries.len(),
        })
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

    /// Regenerate until `shutdown` turns true: `lag_seconds` after a revocation (revocations
    /// arriving meanwhile share that CRL) and at least every `interval_seconds`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let revocations = self.authority.revocations();
        let lag = Duration::from_secs(self.settings.lag_seconds);
        let interval = Duration::from_secs(self.settings.interval_seconds);
        let mut wait = interval;
        loop {
            let revoked = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = revocations.notified() => true,
                _ = tokio::time::sleep(wait) => false,
            };
            if revoked {
                tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return,
                    _ = tokio::time::sleep(lag) => {}
                }
            }
            wait = match self.publish_all().await {
                Ok(_) => interval,
                Err(_) => interval.min(RETRY),
            };
        }
    }
}

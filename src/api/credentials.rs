//! Whether an RA office's client certificate still stands, checked on every call, not only
//! at the TLS handshake: a revoked, held, expired or not yet valid certificate is refused
//! (UNAUTHENTICATED) without a restart, also on a connection opened before the revocation.
//!
//! Certificates signet issued itself (by `[api] tls_issuer`) are looked up in its own store;
//! the answer is kept for at most `[crl] lag_seconds`, so a revocation by any process on the
//! store (`signet revoke`) takes effect within the lag. Certificates of another `client_ca`
//! are checked against the CRLs the operator names in `[api] client_crls` (files or
//! `http://` URLs), each verified against that CA's certificate and refreshed every
//! `client_crl_refresh_seconds`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::ca::rfc3339;
use crate::clock::unix_now;
use crate::pki::verify::verify_signature;
use crate::store::{CertStatus, Store};

/// Why a client certificate no longer stands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Its notAfter has passed.
    #[error("the client certificate {serial} expired at {not_after}")]
    Expired {
        /// Serial, hex.
        serial: String,
        /// RFC 3339.
        not_after: String,
    },
    /// Its notBefore has not come yet.
    #[error("the client certificate {serial} is not valid before {not_before}")]
    NotYetValid {
        /// Serial, hex.
        serial: String,
        /// RFC 3339.
        not_before: String,
    },
    /// Its issuer revoked it (or put it on hold).
    #[error("the client certificate {serial} was revoked at {at} ({reason})")]
    Revoked {
        /// Serial, hex.
        serial: String,
        /// RFC 3339 revocation time.
        at: String,
        /// The reason's name.
        reason: String,
    },
    /// It claims signet's TLS issuer but signet has no record of it.
    #[error("the client certificate {0} is not in the CA's records")]
    Unknown(String),
    /// Its standing could not be read (the store is down and nothing is known of it).
    #[error("the standing of client certificate {0} cannot be checked now")]
    Unchecked(String),
}

/// What the store said of one of signet's own client certificates, and when.
type Standing = (Result<(), Problem>, Instant);

/// A CRL of another client CA, as last loaded.
struct ForeignCrl {
    /// Where it comes from (a path or a URL), for the log.
    source: String,
    /// Revoked serials (DER content octets of each serial) with their revocation time.
    revoked: HashMap<Vec<u8>, i64>,
    /// nextUpdate, Unix seconds, when the CRL has one.
    next_update: Option<i64>,
}

/// The checker: one per daemon, shared by every call.
pub struct Credentials {
    store: Arc<dyn Store>,
    /// DER of the subject of each generation of signet's own TLS issuing CA.
    own_issuers: Vec<Vec<u8>>,
    fresh_for: Duration,
    cache: Mutex<HashMap<String, Standing>>,
    /// Trusted client CA certificates, to verify foreign CRLs with.
    client_cas: Vec<Certificate>,
    sources: Vec<String>,
    /// Foreign CRLs by the DER of their issuer's name.
    crls: RwLock<HashMap<Vec<u8>, ForeignCrl>>,
}

/// Why `[api] client_crls` could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("api.client_crls: {source_name}: {problem}")]
pub struct CrlLoadError {
    source_name: String,
    problem: String,
}

/// The serial as the store keys it: lower-case hex of its DER content octets.
fn serial_hex(cert: &Certificate) -> String {
    crate::pki::serial::serial_hex(cert.tbs_certificate().serial_number())
}

impl Credentials {
    /// A checker for certificates of `own_issuers` (signet's TLS issuing CA) against `store`,
    /// remembering each answer for `fresh_for`, and of `client_cas` against the CRLs at
    /// `sources`, which are loaded now: one that cannot be read or does not verify is an
    /// error naming it.
    pub async fn new(
        store: Arc<dyn Store>,
        own_issuers: &[Certificate],
        fresh_for: Duration,
        client_cas: Vec<Certificate>,
        sources: Vec<String>,
    ) -> Result<Credentials, CrlLoadError> {
        let own_issuers = own_issuers
            .iter()
            .map(|c| c.tbs_certificate().subject().to_der())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CrlLoadError {
                source_name: "api.tls_issuer".into(),
                problem: e.to_string(),
            })?;
        let checker = Credentials {
            store,
            own_issuers,
            fresh_for,
            cache: Mutex::new(HashMap::new()),
            client_cas,
            sources,
            crls: RwLock::new(HashMap::new()),
        };
        for source in checker.sources.clone() {
            let crl = checker.load(&source).await?;
            checker.install(crl)?;
        }
        Ok(checker)
    }

    /// Whether the client certificate `cert` stands now.
    pub async fn check(&self, cert: &Certificate) -> Result<(), Problem> {
        let serial = serial_hex(cert);
        let now = unix_now();
        let validity = cert.tbs_certificate().validity();
        let not_after = validity.not_after.to_unix_duration().as_secs() as i64;
        let not_before = validity.not_before.to_unix_duration().as_secs() as i64;
        if now > not_after {
            return Err(Problem::Expired {
                serial,
                not_after: rfc3339(not_after),
            });
        }
        if now < not_before {
            return Err(Problem::NotYetValid {
                serial,
                not_before: rfc3339(not_before),
            });
        }
        let issuer = cert.tbs_certificate().issuer().to_der().unwrap_or_default();
        if self.own_issuers.contains(&issuer) {
            return self.check_own(&serial).await;
        }
        let crls = self.crls.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(crl) = crls.get(&issuer)
            && let Some(at) = crl
                .revoked
                .get(cert.tbs_certificate().serial_number().as_bytes())
        {
            return Err(Problem::Revoked {
                serial,
                at: rfc3339(*at),
                reason: format!("listed in the CRL {}", crl.source),
            });
        }
        Ok(())
    }

    /// A certificate of signet's own TLS issuer: its status in the store, remembered for
    /// `fresh_for`. When the store cannot answer, the last answer stands (however old).
    async fn check_own(&self, serial: &str) -> Result<(), Problem> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(serial)
            .cloned();
        if let Some((answer, at)) = &cached
            && at.elapsed() < self.fresh_for
        {
            return answer.clone();
        }
        let answer = match self.store.certificate(serial).await {
            Ok(None) => Err(Problem::Unknown(serial.to_owned())),
            Ok(Some(r)) => match (r.status, r.revocation) {
                (CertStatus::Revoked, Some(rev)) => Err(Problem::Revoked {
                    serial: serial.to_owned(),
                    at: rfc3339(rev.revoked_at),
                    reason: rev.reason.to_string(),
                }),
                (CertStatus::Revoked, None) => Err(Problem::Revoked {
                    serial: serial.to_owned(),
                    at: "-".into(),
                    reason: "revoked".into(),
                }),
                (CertStatus::Pending, _) => Err(Problem::Unknown(serial.to_owned())),
                (CertStatus::Valid, _) => Ok(()),
            },
            Err(e) => {
                tracing::warn!(serial, "checking an RA client certificate: {e}");
                return match cached {
                    Some((answer, _)) => answer,
                    None => Err(Problem::Unchecked(serial.to_owned())),
                };
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(serial.to_owned(), (answer.clone(), Instant::now()));
        answer
    }

    /// Reload every configured CRL; one that fails keeps its last good copy (and is
    /// logged), so a CRL server that is down never lets revoked certificates back in.
    pub async fn refresh(&self) {
        for source in &self.sources {
            match self.load(source).await.and_then(|c| self.install(c)) {
                Ok(()) => tracing::debug!(source, "client CRL refreshed"),
                Err(e) => tracing::warn!("keeping the previous client CRL: {e}"),
            }
        }
        let now = unix_now();
        let crls = self.crls.read().unwrap_or_else(PoisonError::into_inner);
        for crl in crls.values() {
            if crl.next_update.is_some_and(|n| n < now) {
                tracing::warn!(
                    source = %crl.source,
                    "the client CRL is past its nextUpdate; its issuer has not published a newer one"
                );
            }
        }
    }

    /// Refresh the CRLs every `every`, for as long as the task runs.
    pub async fn maintain(self: Arc<Self>, every: Duration) {
        if self.sources.is_empty() {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            self.refresh().await;
        }
    }

    async fn load(&self, source: &str) -> Result<(String, LoadedCrl), CrlLoadError> {
        let fail = |problem: String| CrlLoadError {
            source_name: source.to_owned(),
            problem,
        };
        let bytes = if source.starts_with("http://") {
            fetch(source).await.map_err(fail)?
        } else {
            let path = source.to_owned();
            tokio::task::spawn_blocking(move || std::fs::read(path))
                .await
                .map_err(|e| fail(e.to_string()))?
                .map_err(|e| fail(e.to_string()))?
        };
        let der = if bytes.starts_with(b"-----BEGIN") {
            let (label, der) = der::pem::decode_vec(&bytes).map_err(|e| fail(e.to_string()))?;
            if label != "X509 CRL" {
                return Err(fail(format!("PEM label {label:?} is not X509 CRL")));
            }
            der
        } else {
            bytes
        };
        let crl = LoadedCrl::parse(&der).map_err(|e| fail(format!("not a CRL: {e}")))?;
        Ok((source.to_owned(), crl))
    }

    /// Verify a loaded CRL against the client CA that issued it and make it the current one
    /// for that issuer.
    fn install(&self, (source, crl): (String, LoadedCrl)) -> Result<(), CrlLoadError> {
        let fail = |problem: String| CrlLoadError {
            source_name: source.clone(),
            problem,
        };
        let list = &crl.tbs;
        let issuer = list.issuer.to_der().map_err(|e| fail(e.to_string()))?;
        let ca = self
            .client_cas
            .iter()
            .find(|c| {
                c.tbs_certificate()
                    .subject()
                    .to_der()
                    .is_ok_and(|s| s == issuer)
            })
            .ok_or_else(|| {
                fail(format!(
                    "issued by {}, which is not one of api.client_ca",
                    list.issuer
                ))
            })?;
        let spki = ca.tbs_certificate().subject_public_key_info();
        let signature = crl
            .signature
            .as_bytes()
            .ok_or_else(|| fail("the signature has unused bits".into()))?;
        verify_signature(spki, &crl.algorithm, &crl.signed, signature, "crl")
            .map_err(|e| fail(format!("its signature does not verify: {e}")))?;
        let mut revoked = HashMap::new();
        let mut seen = HashSet::new();
        for entry in list.revoked_certificates.iter().flatten() {
            let serial = entry.serial_number.as_bytes().to_vec();
            if seen.insert(serial.clone()) {
                revoked.insert(
                    serial,
                    entry.revocation_date.to_unix_duration().as_secs() as i64,
                );
            }
        }
        let next_update = list
            .next_update
            .map(|t| t.to_unix_duration().as_secs() as i64);
        tracing::info!(source, entries = revoked.len(), "client CRL loaded");
        self.crls
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                issuer,
                ForeignCrl {
                    source,
                    revoked,
                    next_update,
                },
            );
        Ok(())
    }
}

/// A CertificateList as signed: its TBS bytes exactly as they came (what the signature
/// covers), the signature, and the TBS decoded. A version 1 CRL (no version field, what
/// `openssl ca -gencrl` writes without CRL extensions) is decoded as if it carried v1.
struct LoadedCrl {
    signed: Vec<u8>,
    algorithm: spki::AlgorithmIdentifierOwned,
    signature: der::asn1::BitString,
    tbs: x509_cert::crl::TbsCertList,
}

/// CertificateList with its TBS kept as raw bytes.
#[derive(der::Sequence)]
struct RawCrl<'a> {
    tbs: der::asn1::AnyRef<'a>,
    algorithm: spki::AlgorithmIdentifierOwned,
    signature: der::asn1::BitString,
}

impl LoadedCrl {
    fn parse(der: &[u8]) -> Result<LoadedCrl, der::Error> {
        let raw = RawCrl::from_der(der)?;
        let signed = raw.tbs.to_der()?;
        let content = raw.tbs.value();
        let tbs = if content.first() == Some(&0x02) {
            x509_cert::crl::TbsCertList::from_der(&signed)?
        } else {
            let mut with_version = vec![0x02, 0x01, 0x00];
            with_version.extend_from_slice(content);
            let patched = der::asn1::AnyRef::new(der::Tag::Sequence, &with_version)?.to_der()?;
            x509_cert::crl::TbsCertList::from_der(&patched)?
        };
        Ok(LoadedCrl {
            signed,
            algorithm: raw.algorithm,
            signature: raw.signature,
            tbs,
        })
    }
}

/// GET an `http://` URL (a CRL distribution point): at most 8 MiB, within 30 s.
async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = uri.host().ok_or("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let work = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let request = hyper::Request::get(uri.clone())
            .header(hyper::header::HOST, host.as_str())
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), 8 << 20)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
}

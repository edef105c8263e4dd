//! Measurement for `signet bench`: the raw HSM signing rate of an issuer key (the ceiling),
//! subscriber CSRs made up front so the load generator spends nothing on them, and latency
//! statistics. The load itself goes over real mTLS gRPC to a running daemon.

use std::time::{Duration, Instant};

use der::asn1::BitString;
use der::{Decode, Encode};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

use signet::hsm::{Hsm, HsmError};
use signet::pki::SignatureAlgorithm;

/// What the raw signing run measured.
#[derive(Clone, Copy, Debug)]
pub struct RawRate {
    /// Signatures per second.
    pub per_second: f64,
}

/// Sign a certificate-sized message with `key_label` from `workers` concurrent tasks for
/// `duration`: the HSM's own rate for this key and pool, with no X.509 or database work.
pub async fn raw_signing_rate(
    hsm: &Hsm,
    key_label: &str,
    alg: SignatureAlgorithm,
    workers: usize,
    duration: Duration,
) -> Result<RawRate, HsmError> {
    // About the size of a subscriber TBSCertificate.
    let message = vec![0x5au8; 900];
    // One signature first, so a wrong label fails before the clock starts.
    hsm.sign(key_label, alg, &message).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let hsm = hsm.clone();
        let label = key_label.to_owned();
        let message = message.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < duration {
                hsm.sign(&label, alg, &message).await?;
                n += 1;
            }
            Ok::<u64, HsmError>(n)
        }));
    }
    let mut signatures = 0;
    for t in tasks {
        signatures += t.await.map_err(|e| HsmError::Unavailable {
            reason: format!("benchmark task failed: {e}"),
        })??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(RawRate {
        per_second: signatures as f64 / secs,
    })
}

/// `n` PKCS#10 requests (DER) for fresh P-256 keys, made in software. Only the benchmark
/// makes keys outside hardware: they belong to imaginary subscribers.
pub fn p256_csrs(n: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| format!("random number generator: {e}"))?;
        let Ok(key) = p256::ecdsa::SigningKey::from_slice(seed.as_ref()) else {
            continue;
        };
        let spki_der = key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| e.to_string())?;
        let info = CertReqInfo {
            version: Version::V1,
            subject: Name::default(),
            public_key: spki::SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
                .map_err(|e| e.to_string())?,
            attributes: Default::default(),
        };
        let info_der = info.to_der().map_err(|e| e.to_string())?;
        let sig: p256::ecdsa::Signature = key.sign(&info_der);
        let req = CertReq {
            info,
            algorithm: SignatureAlgorithm::EcdsaSha256.algorithm_identifier(),
            signature: BitString::from_bytes(sig.to_der().as_bytes()).map_err(|e| e.to_string())?,
        };
        out.push(req.to_der().map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Latency percentiles over a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

/// Percentiles of `samples` (sorted in place).
pub fn latency(samples: &mut [Duration]) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: samples[samples.len() - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_csrs_pass_the_csr_checks() {
        for der in p256_csrs(3).unwrap() {
            let c = signet::pki::csr::check_csr(&der).unwrap();
            assert_eq!(c.key_type, signet::pki::KeyType::P256);
        }
    }

    #[test]
    fn percentiles() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = latency(&mut s);
        assert_eq!(l.p50, Duration::from_millis(51));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(l.max, Duration::from_millis(100));
    }
}

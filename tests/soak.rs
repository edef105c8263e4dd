//! A bounded soak: the daemon under a steady load of issuance, revocation and OCSP for
//! `SIGNET_SOAK_SECONDS` (90 by default; set it to 3600 for the hour-long run), its resident
//! memory and open file descriptors sampled as it goes. Neither may keep
//! growing once the caches are warm.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::api::*;
use common::ca::make_csr;
use signet::api::pb;

/// Resident set (kB) and open file descriptors of process `pid`.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_descriptors_stay_flat_under_a_steady_load() {
    let seconds: u64 = std::env::var("SIGNET_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let ca = ApiCa::with_http("");
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let dir = ca.dir.join("soak");
    std::fs::create_dir_all(&dir).unwrap();
    let csr = make_csr(&dir, "p256");
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for caller in 0..8 {
        let mut c = d.client("ra-one").await;
        let (stop, issued, csr) = (stop.clone(), issued.clone(), csr.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .issue(issue_request(
                        &format!("s-{caller}-{n}"),
                        "server",
                        csr.clone(),
                    ))
                    .await
                    .expect("issue")
                    .into_inner();
                // One in fifty is revoked again, so CRLs grow and are republished.
                if n % 50 == 0 {
                    c.revoke(revoke_request(
                        &format!("sr-{caller}-{n}"),
                        &r.serial,
                        pb::RevocationReason::Superseded,
                    ))
                    .await
                    .expect("revoke");
                }
                n += 1;
                issued.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // OCSP and CRL fetches beside the issuance, over fresh connections each time.
    let fetcher = {
        let (stop, base, dir) = (stop.clone(), base.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (code, _) = common::status::curl(
                    &[&format!("{base}/crl/issuing-rsa.crl")],
                    &dir.join("c.crl"),
                );
                assert_eq!(code, 200);
                let (code, _) = common::status::curl(
                    &["--data-binary", "garbage", &format!("{base}/ocsp")],
                    &dir.join("o.der"),
                );
                assert_eq!(code, 200);
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };

    // Warm-up, then samples every 5 s.
    let warm = Duration::from_secs(seconds / 6);
    tokio::time::sleep(warm).await;
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) - warm {
        samples.push(footprint(d.pid()));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    samples.push(footprint(d.pid()));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let fetched = fetcher.await.unwrap();
    let total = issued.load(Ordering::Relaxed);
    eprintln!("{total} issued, {fetched} CRL+OCSP rounds; (rss kB, fds): {samples:?}");
    assert!(total > 1000, "the load issued only {total}");
    // Second half against first half: memory that keeps growing shows as a rise between
    // them; the caches (SQLite's, the kept OCSP answers) are full after the warm-up.
    let half = samples.len() / 2;
    let peak = |s: &[(u64, usize)]| s.iter().map(|x| x.0).max().unwrap_or(0);
    let (first, second) = (peak(&samples[..half]), peak(&samples[half..]));
    assert!(
        second <= first + 16 * 1024,
        "resident memory went from {first} kB to {second} kB: {samples:?}"
    );
    let fds: Vec<usize> = samples.iter().map(|x| x.1).collect();
    let (lo, hi) = (
        *fds.iter().min().unwrap_or(&0),
        *fds.iter().max().unwrap_or(&0),
    );
    assert!(
        hi <= lo + 16,
        "open descriptors moved from {lo} to {hi}: {fds:?}"
    );
}

//! The daemon against an HSM that stops answering or goes away (`signet serve` as a child
//! process, SoftHSM behind a `p11-kit server` the test freezes with SIGSTOP or kills): calls
//! give up with UNAVAILABLE at `[hsm] call_timeout_ms` and signing resumes at full pool size
//! after SIGCONT; SIGTERM ends the daemon within `[api] shutdown_grace_seconds` and the audit
//! log still verifies; and a revocation made while the HSM was gone reaches the HTTP CRL
//! within seconds of its return.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::api::*;
use common::status::{fetch, openssl};
use signet::api::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// The `[hsm] call_timeout_ms` of these tests.
const CALL_TIMEOUT: Duration = Duration::from_millis(2000);
/// The `[hsm] pool_size` of the test configuration.
const POOL_SIZE: usize = 2;

/// A fresh P-256 CSR (DER) under `dir`, distinct per `tag`.
fn csr(dir: &Path, tag: &str) -> Vec<u8> {
    let d = dir.join(format!("csr-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    common::ca::make_csr(&d, "p256")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_hsm_fails_calls_within_the_call_timeout_and_signing_resumes_at_full_pool_size() {
    let ca = ApiCa::behind_p11kit_with("call_timeout_ms = 2000", "", None);
    let server = ca.p11kit.as_ref().expect("p11-kit server");
    let d = Daemon::start(&ca);
    assert!(
        d.wait_health(ServingStatus::Serving, Duration::from_secs(10))
            .await,
        "{}",
        d.log_text()
    );
    let mut c = d.client("ra-one").await;
    c.issue(issue_request("fz-0", "server", csr(&ca.dir, "0")))
        .await
        .expect("issue while the HSM answers");

    // The HSM stops answering without closing its connection: a PKCS#11 call blocks.
    server.freeze();
    let frozen = issue_request("fz-1", "server", csr(&ca.dir, "1"));
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(20), c.issue(frozen.clone()))
        .await
        .unwrap_or_else(|_| panic!("Issue hung with the HSM frozen:\n{}", d.log_text()))
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}\n{}", d.log_text());
    assert!(!e.message().contains("CKR_"), "HSM internals leaked: {e:?}");
    assert!(
        took < CALL_TIMEOUT + Duration::from_secs(3),
        "UNAVAILABLE came after {took:?}, call_timeout is {CALL_TIMEOUT:?}"
    );
    assert!(
        d.wait_health(ServingStatus::NotServing, Duration::from_secs(10))
            .await,
        "{}",
        d.log_text()
    );
    // Reported unavailable, later calls fail at once instead of each waiting it out.
    let started = Instant::now();
    let e = c
        .issue(issue_request("fz-2", "server", csr(&ca.dir, "2")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        started.elapsed() < CALL_TIMEOUT,
        "a call waited {:?} while the HSM was known to be unavailable",
        started.elapsed()
    );
    let log = d.log_text();
    assert!(
        log.contains("did not answer within"),
        "no log line about the timed-out call:\n{log}"
    );

    // SIGCONT: the stuck calls return, their sessions are thrown away, the HSM comes back.
    server.thaw();
    assert!(
        d.wait_health(ServingStatus::Serving, Duration::from_secs(30))
            .await,
        "{}",
        d.log_text()
    );
    tokio::time::timeout(Duration::from_secs(20), c.issue(frozen))
        .await
        .expect("the retry hung")
        .expect("the request that timed out succeeds on retry");
    // No session or permit leaked: more calls in a row than the pool has sessions, then
    // twice the pool size at once.
    for i in 0..3 * POOL_SIZE {
        tokio::time::timeout(
            Duration::from_secs(20),
            c.issue(issue_request(
                &format!("fz-seq-{i}"),
                "server",
                csr(&ca.dir, &format!("seq-{i}")),
            )),
        )
        .await
        .unwrap_or_else(|_| panic!("call {i} after the thaw hung:\n{}", d.log_text()))
        .unwrap_or_else(|e| panic!("call {i} after the thaw: {e:?}"));
    }
    let mut tasks = Vec::new();
    for i in 0..2 * POOL_SIZE {
        let mut c = c.clone();
        let req = issue_request(
            &format!("fz-par-{i}"),
            "server",
            csr(&ca.dir, &format!("par-{i}")),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), c.issue(req)).await
        }));
    }
    for t in tasks {
        t.await
            .unwrap()
            .expect("a concurrent call after the thaw hung")
            .expect("a concurrent call after the thaw");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_frozen_hsm_exits_within_the_grace_period_and_the_audit_log_verifies() {
    let ca = ApiCa::behind_p11kit_with(
        "call_timeout_ms = 2000",
        "shutdown_grace_seconds = 5",
        Some(TSA_AND_AUDIT),
    );
    let server = ca.p11kit.as_ref().expect("p11-kit server");
    let mut d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    c.issue(issue_request("st-0", "server", csr(&ca.dir, "0")))
        .await
        .expect("issue while the HSM answers");

    server.freeze();
    // A call in flight when the signal comes.
    let in_flight = {
        let mut c = c.clone();
        let req = issue_request("st-1", "server", csr(&ca.dir, "1"));
        tokio::spawn(async move { c.issue(req).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    d.signal("TERM");
    // Grace plus a few seconds; the helper fails the test if the daemon is still running.
    let status = d.wait(Duration::from_secs(5 + 5));
    let took = started.elapsed();
    let log = d.log_text();
    let answered = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the call in flight was never answered")
        .unwrap();
    assert!(
        answered.is_err_and(|e| e.code() == Code::Unavailable),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("shutdown checkpoint was skipped")),
        "no ERROR line about the skipped checkpoint:\n{log}"
    );
    // Not a clean stop: the log is not covered by a final checkpoint.
    assert_eq!(status.code(), Some(1), "{status} after {took:?}\n{log}");

    // With the HSM answering again, the log (stop entry included) verifies.
    server.thaw();
    let (ok, out) = signet(&ca, &["audit", "verify"]);
    assert!(ok && out.contains("audit log OK"), "{out}");
    let db = ca.dir.join("signet.db");
    let o = common::ca::run(
        std::process::Command::new("sqlite3")
            .arg(&db)
            .arg("SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1"),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "daemon.stopped");
}

/// `openssl crl -text` of the DER CRL `der` in `dir`.
fn crl_text(dir: &Path, der: &str) -> String {
    let (ok, out) = openssl(
        &["crl", "-inform", "DER", "-in", der, "-noout", "-text"],
        dir,
    );
    assert!(ok, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_while_the_hsm_was_gone_is_in_the_http_crl_seconds_after_it_returns() {
    let mut ca = ApiCa::with_http_behind_p11kit("[crl]\nlag_seconds = 2\n");
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let dir = ca.dir.join("outage");
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = d.client("ra-one").await;
    let (serial, _) = issue_server_ec(&mut c, &dir, "out-a").await;

    ca.p11kit.as_mut().expect("p11-kit server").kill();
    c.revoke(revoke_request(
        "out-revoke",
        &serial,
        pb::RevocationReason::KeyCompromise,
    ))
    .await
    .expect("the store takes the revocation without the HSM");
    // Let the lag pass and publication fail (more than once) while the HSM is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !d.log_text().contains("CRL publication failed") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));

    ca.p11kit.as_mut().unwrap().restart();
    let back = Instant::now();
    let wanted = format!("Serial Number: {}", serial.to_uppercase());
    loop {
        let (code, _) = fetch(&format!("{base}/crl/issuing-ec.crl"), &dir.join("now.crl"));
        assert_eq!(code, 200);
        if crl_text(&dir, "now.crl").contains(&wanted) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no CRL listing {serial} 10 s after the HSM returned:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

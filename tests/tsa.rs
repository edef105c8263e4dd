//! The timestamp authority as relying parties meet it: `signet serve` as a child process
//! with `[tsa]`, queries made by `openssl ts -query`, posted with curl, and every token
//! checked by `openssl ts -verify` against the CA's root.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::api::*;
use common::ca::run;
use signet::pki::tsp::tst_info_of;

/// `openssl` with `args` in `dir`: whether it succeeded, and its output.
fn sh(dir: &Path, args: &[&str]) -> (bool, String) {
    common::status::openssl(args, dir)
}

/// Make a query for `data.txt` with `digest`, post it, and return the reply file name.
fn query(dir: &Path, base: &str, name: &str, digest: &str, nonce: bool, cert: bool) -> String {
    let q = format!("{name}.tsq");
    let mut args = vec!["ts", "-query", "-data", "data.txt", digest, "-out", &q];
    if !nonce {
        args.push("-no_nonce");
    }
    if cert {
        args.push("-cert");
    }
    let (ok, out) = sh(dir, &args);
    assert!(ok, "openssl ts -query: {out}");
    let reply = format!("{name}.tsr");
    let (code, ctype) = curl_post(
        &format!("{base}/tsa"),
        "application/timestamp-query",
        &dir.join(&q),
        &dir.join(&reply),
    );
    assert_eq!((code, ctype.as_str()), (200, "application/timestamp-reply"));
    reply
}

fn start() -> (ApiCa, Daemon, String) {
    let ca = ApiCa::with_http(TSA_AND_AUDIT);
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("http");
    (ca, d, base)
}

#[test]
fn openssl_ts_verifies_sha256_sha384_and_sha512_tokens_with_and_without_nonce_and_cert() {
    let (ca, _d, base) = start();
    let dir = ca.dir.join("ts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.txt"), "合同 contract no. 42\n").unwrap();
    let root = ca.dir.join("ca/root.pem");
    let tsa_chain = ca.dir.join("ca/tsa.pem");
    for digest in ["-sha256", "-sha384", "-sha512"] {
        for (nonce, cert) in [(true, true), (false, false), (true, false), (false, true)] {
            let name = format!("q{digest}-{nonce}-{cert}");
            let reply = query(&dir, &base, &name, digest, nonce, cert);
            let (ok, out) = sh(
                &dir,
                &[
                    "ts",
                    "-verify",
                    "-queryfile",
                    &format!("{name}.tsq"),
                    "-in",
                    &reply,
                    "-CAfile",
                    root.to_str().unwrap(),
                    "-untrusted",
                    tsa_chain.to_str().unwrap(),
                ],
            );
            assert!(ok && out.contains("Verification: OK"), "{name}: {out}");
            // What the token says, read by OpenSSL: policy, nonce, and the TSA's
            // certificate only when asked for.
            let (ok, text) = sh(&dir, &["ts", "-reply", "-in", &reply, "-text"]);
            assert!(ok, "{text}");
            assert!(text.contains("Status: Granted."), "{text}");
            assert!(text.contains("Policy OID: 1.3.6.1.4.1.99999.2.1"), "{text}");
            assert!(text.contains("Accuracy: 0x01 seconds"), "{text}");
            assert_eq!(!text.contains("Nonce: unspecified"), nonce, "{text}");
            let (ok, pk) = sh(
                &dir,
                &[
                    "ts",
                    "-reply",
                    "-in",
                    &reply,
                    "-token_out",
                    "-out",
                    "tok.der",
                ],
            );
            assert!(ok, "{pk}");
            let (_, certs) = sh(
                &dir,
                &[
                    "pkcs7",
                    "-inform",
                    "DER",
                    "-in",
                    "tok.der",
                    "-print_certs",
                    "-noout",
                ],
            );
            assert_eq!(certs.contains("Signet Test TSA"), cert, "{certs}");
        }
    }
    // The data changed: the same token no longer verifies.
    std::fs::write(dir.join("other.txt"), "contract no. 43\n").unwrap();
    let (ok, out) = sh(
        &dir,
        &[
            "ts",
            "-verify",
            "-data",
            "other.txt",
            "-in",
            "q-sha256-true-true.tsr",
            "-CAfile",
            root.to_str().unwrap(),
            "-untrusted",
            tsa_chain.to_str().unwrap(),
        ],
    );
    assert!(!ok && !out.contains("Verification: OK"), "{out}");
}

#[test]
fn md5_and_sha1_queries_and_garbage_get_a_rejection_not_a_token() {
    let (ca, _d, base) = start();
    let dir = ca.dir.join("ts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.txt"), "x").unwrap();
    for digest in ["-md5", "-sha1"] {
        let reply = query(&dir, &base, &format!("q{digest}"), digest, true, true);
        let (ok, text) = sh(&dir, &["ts", "-reply", "-in", &reply, "-text"]);
        assert!(ok, "{text}");
        assert!(text.contains("Status: Rejected"), "{text}");
        assert!(
            text.contains("unrecognized or unsupported algorithm identifier"),
            "{text}"
        );
        assert!(text.contains("messageImprint.hashAlgorithm"), "{text}");
        assert!(text.contains("TST info:\nNot included."), "{text}");
    }
    std::fs::write(dir.join("junk.tsq"), "not DER").unwrap();
    let (code, _) = curl_post(
        &format!("{base}/tsa"),
        "application/timestamp-query",
        &dir.join("junk.tsq"),
        &dir.join("junk.tsr"),
    );
    assert_eq!(code, 200);
    let (ok, text) = sh(&dir, &["ts", "-reply", "-in", "junk.tsr", "-text"]);
    assert!(ok && text.contains("Status: Rejected"), "{text}");
    assert!(text.contains("wrong format"), "{text}");
    // Right body, wrong content type: a rejection naming the header.
    let (code, _) = curl_post(
        &format!("{base}/tsa"),
        "text/plain",
        &dir.join("q-sha1.tsq"),
        &dir.join("ctype.tsr"),
    );
    assert_eq!(code, 200);
    let (ok, text) = sh(&dir, &["ts", "-reply", "-in", "ctype.tsr", "-text"]);
    assert!(ok && text.contains("Content-Type"), "{text}");
}

/// POST timestamp queries over one kept-alive connection; returns the replies.
fn post_many(base: &str, body: &[u8], n: usize) -> Vec<Vec<u8>> {
    let addr = base.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        // One write per request: a header and a body sent apart would wait out the
        // peer's delayed ACK (Nagle) on every request.
        let mut request = format!(
            "POST /tsa HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/timestamp-query\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        writer.write_all(&request).unwrap();
        let mut len = 0usize;
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut resp = vec![0u8; len];
        reader.read_exact(&mut resp).unwrap();
        out.push(resp);
    }
    out
}

#[test]
fn ten_thousand_timestamps_have_distinct_serials_across_a_restart() {
    let (ca, mut d, base) = start();
    let dir = ca.dir.join("ts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.txt"), "x").unwrap();
    let (ok, out) = sh(
        &dir,
        &[
            "ts", "-query", "-data", "data.txt", "-sha256", "-cert", "-out", "q.tsq",
        ],
    );
    assert!(ok, "{out}");
    let body = std::fs::read(dir.join("q.tsq")).unwrap();
    let mut serials = HashSet::new();
    let mut first_run_max = 0;
    let mut last_time = None;
    for r in post_many(&base, &body, 5000) {
        let tst = tst_info_of(&r).expect("a granted token");
        assert!(
            serials.insert(tst.serial_number),
            "serial {} twice",
            tst.serial_number
        );
        first_run_max = first_run_max.max(tst.serial_number);
        let t = tst.gen_time.to_unix_duration();
        assert!(last_time.is_none_or(|l| l <= t), "time went back");
        last_time = Some(t);
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    let d2 = Daemon::start(&ca);
    let base2 = d2.http.clone().expect("http");
    for r in post_many(&base2, &body, 5000) {
        let tst = tst_info_of(&r).expect("a granted token");
        assert!(
            serials.insert(tst.serial_number),
            "serial {} reused after the restart",
            tst.serial_number
        );
        assert!(tst.serial_number > first_run_max);
    }
    assert_eq!(serials.len(), 10_000);
    // The last of them still verifies with OpenSSL.
    let last = post_many(&base2, &body, 1).remove(0);
    std::fs::write(dir.join("last.tsr"), last).unwrap();
    let (ok, out) = sh(
        &dir,
        &[
            "ts",
            "-verify",
            "-queryfile",
            "q.tsq",
            "-in",
            "last.tsr",
            "-CAfile",
            ca.dir.join("ca/root.pem").to_str().unwrap(),
            "-untrusted",
            ca.dir.join("ca/tsa.pem").to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains("Verification: OK"), "{out}");
}

/// The gRPC health status of `service` once the daemon's health reporter has run (it
/// starts NOT_SERVING and reports within a second).
async fn grpc_health(d: &Daemon, service: &str) -> i32 {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = signet::api::client::connect(&d.settings("ra-one"))
        .await
        .unwrap();
    let health = HealthClient::new(channel);
    let check = |service: String| {
        let mut h = health.clone();
        async move {
            h.check(HealthCheckRequest { service })
                .await
                .expect("health check")
                .into_inner()
                .status
        }
    };
    // Wait for the RA service to turn SERVING: the reporter has then run once.
    for _ in 0..50 {
        if check("signet.v1.CertificateAuthority".into()).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check(service.into()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_behind_the_latest_token_means_time_not_available_and_degraded_health() {
    let (ca, mut d, base) = start();
    assert_eq!(grpc_health(&d, signet::api::TSA_HEALTH_NAME).await, 1);
    let dir = ca.dir.join("ts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.txt"), "x").unwrap();
    let reply = query(&dir, &base, "before", "-sha256", true, true);
    let (_, text) = sh(&dir, &["ts", "-reply", "-in", &reply, "-text"]);
    assert!(text.contains("Status: Granted."), "{text}");
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    // The recorded time of the latest token is now; make it a day ahead, as if the clock
    // had been set back a day while signet was down.
    let db = ca.dir.join("signet.db");
    let o = run(Command::new("sqlite3").arg(&db).arg(
        "UPDATE tsa_state SET last_time_ms = last_time_ms + 86400000; SELECT count(*) FROM tsa_state",
    ));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1");
    let d2 = Daemon::start(&ca);
    let base2 = d2.http.clone().expect("http");
    let reply = query(&dir, &base2, "after", "-sha256", true, true);
    let (_, text) = sh(&dir, &["ts", "-reply", "-in", &reply, "-text"]);
    assert!(text.contains("Status: Rejected"), "{text}");
    assert!(text.contains("time source"), "{text}");
    let o = run(Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("{base2}/healthz")));
    let health = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        health.ends_with("503") && health.contains("degraded: tsa"),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signet_bench_measures_timestamps_and_issuance_beside_the_raw_hsm_rate() {
    let (ca, d, base) = start();
    let s = d.settings("ra-one");
    let bench = |extra: &[&str]| {
        let o = run(Command::new(env!("CARGO_BIN_EXE_signet"))
            .arg("--config")
            .arg(&ca.config_path)
            .args([
                "bench",
                "--concurrency",
                "2",
                "--duration",
                "1",
                "--raw-seconds",
                "1",
            ])
            .args(extra)
            .env("RUST_LOG", "warn"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{text}");
        text
    };
    let text = bench(&["--mode", "tsa", "--http", &base]);
    assert!(
        text.contains("TSA key           test-tsa (p256, ecdsa-sha256)"),
        "{text}"
    );
    assert!(text.contains("errors            0"), "{text}");
    assert!(text.contains("% of the raw signing rate"), "{text}");
    // Both ceilings are shown: the HSM's own rate (a direct PKCS#11 loop) and signet's layer.
    assert!(text.contains("(2 sessions, direct PKCS#11 loop)"), "{text}");
    assert!(text.contains("signet HSM layer  "), "{text}");
    let n: u64 = text
        .split("timestamps        ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(n > 0, "{text}");
    let text = bench(&[
        "--issuer",
        "issuing-ec",
        "--connections",
        "1",
        "--endpoint",
        &s.endpoint,
        "--ca-cert",
        s.ca_cert.to_str().unwrap(),
        "--cert",
        s.cert.to_str().unwrap(),
        "--key",
        s.key.to_str().unwrap(),
    ]);
    assert!(text.contains("issued            "), "{text}");
    assert!(text.contains("errors            0"), "{text}");
}

/// genTime as OpenSSL prints it of the reply `file` in `dir`, as (year, month, day, hour,
/// minute, second), which orders like time.
fn openssl_gen_time(dir: &Path, file: &str) -> (u32, u32, u32, u32, u32, u32) {
    let (ok, text) = sh(dir, &["ts", "-reply", "-in", file, "-text"]);
    assert!(ok && text.contains("Status: Granted."), "{text}");
    common::status::openssl_date_after(&text, "Time stamp: ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_and_a_clock_set_back_the_tsa_waits_and_never_stamps_earlier() {
    // A short window, so the wait after the crash is short too.
    let ca = ApiCa::with_http(&TSA_AND_AUDIT.replace(
        "accuracy_seconds = 1\n",
        "accuracy_seconds = 1\ntime_window_seconds = 2\n",
    ));
    let mut d = Daemon::start(&ca);
    let base = d.http.clone().expect("http");
    let dir = ca.dir.join("ts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.txt"), "x").unwrap();
    let (ok, out) = sh(
        &dir,
        &[
            "ts", "-query", "-data", "data.txt", "-sha256", "-out", "q.tsq",
        ],
    );
    assert!(ok, "{out}");
    let body = std::fs::read(dir.join("q.tsq")).unwrap();

    // Stamp for ten seconds, a few tokens at a time (fewer than a serial block, so no block
    // reservation records a time after the first), then kill the daemon: no graceful stop
    // records anything.
    let started = std::time::Instant::now();
    let mut latest = Duration::ZERO;
    let mut tokens = 0;
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        for r in post_many(&base, &body, 5) {
            let t = tst_info_of(&r).expect("a granted token").gen_time;
            if t.to_unix_duration() >= latest {
                latest = t.to_unix_duration();
                std::fs::write(dir.join("latest-before.tsr"), &r).unwrap();
            }
            tokens += 1;
        }
    }
    d.signal("KILL");
    d.wait(Duration::from_secs(30));

    // The clock now reads six seconds behind: earlier than the latest token.
    let d2 = Daemon::start_with_clock(&ca, "-6s");
    let base2 = d2.http.clone().expect("http");
    let reply = query(&dir, &base2, "refused", "-sha256", true, true);
    let (_, text) = sh(&dir, &["ts", "-reply", "-in", &reply, "-text"]);
    assert!(
        text.contains("Status: Rejected") && text.contains("time source"),
        "right after the restart (latest token {latest:?}, {tokens} tokens): {text}"
    );
    let o = run(Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("{base2}/healthz")));
    let health = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        health.ends_with("503") && health.contains("degraded: tsa: "),
        "{health}"
    );
    // NOT_SERVING for the TSA; the RA API is unaffected.
    assert_eq!(grpc_health(&d2, signet::api::TSA_HEALTH_NAME).await, 2);

    // Refused until the clock passes the recorded ceiling; then every token is at least as
    // late as every token before the kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let first = loop {
        n += 1;
        let name = format!("after-{n}");
        let reply = query(&dir, &base2, &name, "-sha256", true, true);
        let (_, text) = sh(&dir, &["ts", "-reply", "-in", &reply, "-text"]);
        if text.contains("Status: Granted.") {
            break reply;
        }
        assert!(
            text.contains("Status: Rejected") && text.contains("time source"),
            "{text}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the TSA still refuses after 30 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        openssl_gen_time(&dir, &first) >= openssl_gen_time(&dir, "latest-before.tsr"),
        "a token after the restart is earlier than one before it"
    );
    let (ok, out) = sh(
        &dir,
        &[
            "ts",
            "-verify",
            "-queryfile",
            &format!("after-{n}.tsq"),
            "-in",
            &first,
            "-CAfile",
            ca.dir.join("ca/root.pem").to_str().unwrap(),
            "-untrusted",
            ca.dir.join("ca/tsa.pem").to_str().unwrap(),
        ],
    );
    assert!(ok && out.contains("Verification: OK"), "{out}");
    for r in post_many(&base2, &body, 200) {
        let t = tst_info_of(&r).expect("a granted token").gen_time;
        assert!(
            t.to_unix_duration() >= latest,
            "{t:?} is earlier than {latest:?}"
        );
    }
    // Healthy again (gRPC health follows within its probe interval).
    let o = run(Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("{base2}/healthz")));
    let health = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(health.ends_with("200"), "{health}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while grpc_health(&d2, signet::api::TSA_HEALTH_NAME).await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the TSA stays NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

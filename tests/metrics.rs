//! The operator's view of a real daemon: `GET /metrics` (`[metrics] listen`), scraped while
//! RA offices issue, judged by Prometheus's own `promtool check metrics`, and its values
//! checked against what the test did (issuances, a revocation, OCSP answers, CRLs, the HSM's
//! signatures); and `/readyz`, which test-signs with every issuer key.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use common::api::*;
use common::ca::make_csr;
use common::status::{ask_ocsp, curl, fetch_ca_pems};
use signet::api::pb;

const METRICS: &str = "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// Scrape `url` into `file`; the body, after checking status and content type.
fn scrape(url: &str, file: &Path) -> String {
    let (code, ctype) = curl(&[&format!("{url}/metrics")], file);
    assert_eq!(code, 200, "{ctype}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    std::fs::read_to_string(file).unwrap()
}

/// `promtool check metrics` on the exposition in `file`: no syntax error, no lint finding.
fn promtool_accepts(file: &Path) {
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("promtool (Debian's prometheus package) is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

/// The sum of the samples of `name` whose labels include every `key="value"` of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Whether a sample of `name` with all of `labels` exists.
fn has(text: &str, name: &str, labels: &[&str]) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') && labels.iter().all(|w| rest.contains(w)))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_during_load_pass_promtool_and_count_what_happened() {
    let ca = ApiCa::with_http(&format!("{METRICS}{TSA_AND_AUDIT}"));
    let d = Daemon::start(&ca);
    let url = d.metrics.clone().expect("metrics announced");
    let base = d.http.clone().expect("HTTP announced");
    let dir = ca.dir.join("metrics");
    std::fs::create_dir_all(&dir).unwrap();
    let keys: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let d = dir.join(format!("csr-{i}"));
            std::fs::create_dir_all(&d).unwrap();
            make_csr(&d, "p256")
        })
        .collect();

    // Eight callers issue while the listener is scraped.
    const CALLERS: usize = 8;
    const EACH: usize = 10;
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut c = d.client("ra-one").await;
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let mut serials = Vec::new();
            for n in 0..EACH {
                let req = issue_request(&format!("m-{caller}-{n}"), "server", keys[n % 4].clone());
                serials.push(c.issue(req).await.expect("issue").into_inner().serial);
            }
            serials
        }));
    }
    let during = tokio::task::block_in_place(|| {
        let file = dir.join("during.prom");
        let text = scrape(&url, &file);
        promtool_accepts(&file);
        text
    });
    assert!(has(&during, "signet_build_info", &["version="]), "{during}");
    let mut serials = BTreeSet::new();
    for t in tasks {
        serials.extend(t.await.unwrap());
    }
    let issued = (CALLERS * EACH) as f64;

    // A revocation, an OCSP question answered good, and one that is garbage.
    let mut c = d.client("ra-one").await;
    let victim = serials.iter().next().unwrap().clone();
    c.revoke(revoke_request(
        "m-revoke",
        &victim,
        pb::RevocationReason::KeyCompromise,
    ))
    .await
    .expect("revoke");
    fetch_ca_pems(&base, &dir, &["root", "issuing-ec"]);
    let (_, leaf) = issue_server_ec(&mut c, &dir, "m-ocsp").await;
    serials.insert("m-ocsp".into());
    let (ok, out) = ask_ocsp(
        &dir,
        &format!("{base}/ocsp"),
        "issuing-ec",
        &["-cert", leaf.to_str().unwrap()],
    );
    assert!(ok && out.contains(": good"), "{out}");
    let (code, _) = curl(
        &["--data-binary", "not DER", &format!("{base}/ocsp")],
        &dir.join("garbage.der"),
    );
    assert_eq!(code, 200);
    // A timestamp, granted.
    let o = common::ca::run(
        Command::new("openssl")
            .args([
                "ts",
                "-query",
                "-data",
                "garbage.der",
                "-sha256",
                "-out",
                "q.tsq",
            ])
            .current_dir(&dir),
    );
    assert!(o.status.success());
    let query = format!("@{}", dir.join("q.tsq").display());
    let (code, _) = curl(
        &[
            "-H",
            "Content-Type: application/timestamp-query",
            "--data-binary",
            &query,
            &format!("{base}/tsa"),
        ],
        &dir.join("q.tsr"),
    );
    assert_eq!(code, 200);

    let file = dir.join("after.prom");
    let text = tokio::task::block_in_place(|| {
        let text = scrape(&url, &file);
        promtool_accepts(&file);
        text
    });
    let profile = "profile=\"server\"";
    assert_eq!(
        sum(&text, "signet_certificates_issued_total", &[profile]),
        issued + 1.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "signet_grpc_requests_total",
            &["method=\"Issue\"", "code=\"OK\""]
        ),
        issued + 1.0
    );
    assert_eq!(
        sum(
            &text,
            "signet_grpc_request_duration_seconds_count",
            &["method=\"Issue\""]
        ),
        issued + 1.0
    );
    assert_eq!(
        sum(
            &text,
            "signet_certificates_revoked_total",
            &["reason=\"keyCompromise\""]
        ),
        1.0,
        "{text}"
    );
    // Every certificate (and every CRL) was signed in the HSM, each signature timed.
    let signed = sum(
        &text,
        "signet_hsm_operations_total",
        &["operation=\"sign\"", "outcome=\"ok\""],
    );
    assert!(signed >= issued + 1.0, "{signed}");
    assert_eq!(
        sum(&text, "signet_hsm_sign_duration_seconds_count", &[]),
        signed
    );
    assert_eq!(sum(&text, "signet_hsm_up", &[]), 1.0);
    assert!(sum(&text, "signet_hsm_sessions", &[]) >= 1.0);
    assert!(sum(&text, "signet_store_commit_duration_seconds_count", &[]) >= 1.0);
    assert!(sum(&text, "signet_store_database_bytes", &[]) > 0.0);
    assert!(sum(&text, "signet_audit_entries", &[]) > issued);
    // Answers by status and source.
    assert_eq!(
        sum(
            &text,
            "signet_ocsp_responses_total",
            &["status=\"good\"", "source=\"signed\""]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &text,
            "signet_ocsp_responses_total",
            &["status=\"malformedRequest\""]
        ),
        1.0
    );
    // CRLs published at start, for each issuer, and every certificate's time left.
    for issuer in ["issuing-rsa", "issuing-ec"] {
        let who = format!("issuer=\"{issuer}\"");
        assert!(sum(&text, "signet_crl_number", &[&who]) >= 1.0, "{text}");
        assert!(sum(&text, "signet_crl_bytes", &[&who]) > 0.0);
        assert!(has(&text, "signet_crl_age_seconds", &[&who]));
        let name = format!("name=\"{issuer}\"");
        assert!(
            sum(
                &text,
                "signet_certificate_expiry_seconds",
                &["role=\"issuer\"", &name]
            ) > 86400.0
        );
    }
    assert!(
        sum(
            &text,
            "signet_certificate_expiry_seconds",
            &["role=\"tls\""]
        ) > 0.0
    );
    assert!(
        sum(
            &text,
            "signet_certificate_expiry_seconds",
            &["role=\"ocsp_responder\"", "name=\"issuing-ec\""]
        ) > 0.0
    );
    dashboard_matches(&text, &dir);
    assert_eq!(
        sum(&text, "signet_tsa_responses_total", &["status=\"granted\""]),
        1.0,
        "{}",
        text.lines()
            .filter(|l| l.contains("tsa"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Labels are bounded: no serial and no request id is ever one.
    for serial in &serials {
        assert!(!text.contains(serial.as_str()), "{serial} in the metrics");
    }
    assert!(!text.contains("m-0-0"), "a request id in the metrics");
}

/// docs/grafana/signet-dashboard.json asks only what signet exports: every panel's query
/// parses as PromQL (`promtool check rules` on them as recording rules), and every metric it
/// names is in the scrape `text`.
fn dashboard_matches(text: &str, dir: &Path) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/signet-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 16, "{exprs:?}");
    let mut rules = String::from("groups:\n  - name: signet-dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: signet:panel_{i}\n        expr: '{}'\n",
            e.replace('\'', "''")
        ));
    }
    let file = dir.join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let Some(rest) = word.strip_prefix("signet_") else {
                continue;
            };
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| rest.strip_suffix(s))
                .unwrap_or(rest);
            assert!(
                text.contains(&format!("# TYPE signet_{base} ")),
                "the dashboard asks for {word}, which is not exported"
            );
        }
    }
}

/// GET `url`: status code and body.
fn get(url: &str, file: &Path) -> (u16, String) {
    let (code, _) = curl(&[url], file);
    (code, std::fs::read_to_string(file).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_signs_with_every_issuer_key_and_fails_when_one_is_removed() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let ca = ApiCa::with_http_and_edit("", &|t| {
        t.replace("[api]\n", "[api]\nreadiness_signature_seconds = 1\n")
    });
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let file = ca.dir.join("readyz.txt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (code, body) = loop {
        let (code, body) = get(&format!("{base}/readyz"), &file);
        // Ready once every key was test-signed (a health probe slowed by a loaded machine
        // may report the store late at first).
        let all = ["root", "issuing-rsa", "issuing-ec", "issuing-tls"]
            .iter()
            .all(|i| body.contains(&format!("issuer {i}: signs")));
        if (code == 200 && all) || std::time::Instant::now() > deadline {
            break (code, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
    for issuer in ["root", "issuing-rsa", "issuing-ec", "issuing-tls"] {
        assert!(body.contains(&format!("issuer {issuer}: signs")), "{body}");
    }
    assert!(body.contains("oldest CRL: "), "{body}");
    assert!(body.contains("nearest expiry: "), "{body}");

    // Another program deletes the EC issuing CA's private key from the token.
    let out = common::run_ok(ca.softhsm.pkcs11_tool("signet-ca").args([
        "--login",
        "--pin",
        common::ca::USER_PIN,
        "--delete-object",
        "--type",
        "privkey",
        "--label",
        "test-issuing-ec",
    ]));
    assert!(out.status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (code, body) = loop {
        let (code, body) = get(&format!("{base}/readyz"), &file);
        if body.contains("FAILING") || std::time::Instant::now() > deadline {
            break (code, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(code, 503, "{body}\n{}", d.log_text());
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(body.contains("issuer issuing-ec: FAILING"), "{body}");
    assert!(body.contains("issuer issuing-rsa: signs"), "{body}");
    assert!(
        d.wait_health(
            ServingStatus::NotServing,
            std::time::Duration::from_secs(10)
        )
        .await,
        "gRPC health still SERVING\n{}",
        d.log_text()
    );
    // Liveness is a read of cached flags and is not about the keys.
    let (code, body) = get(&format!("{base}/healthz"), &file);
    assert_eq!(code, 200, "{body}");
}

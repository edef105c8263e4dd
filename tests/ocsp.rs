//! The OCSP responder as relying parties meet it: `signet serve` as a child process with
//! `[http]`, asked with `openssl ocsp` and curl, responses judged by OpenSSL and pkilint.

mod common;

use std::path::Path;
use std::process::Command;

use common::api::*;
use common::ca::{USER_PIN, run};
use common::status::{ask_ocsp, curl, fetch_ca_pems, openssl, outcome};
use signet::api::pb;

/// Whether OpenSSL reads a DER OCSPResponse as malformedRequest.
fn is_malformed(dir: &Path, file: &str) -> bool {
    let (_, out) = openssl(&["ocsp", "-respin", file, "-resp_text", "-noverify"], dir);
    out.to_ascii_lowercase().contains("malformedrequest (1)")
}

fn lint(dir: &Path, file: &str) {
    let o = run(Command::new("lint_ocsp_response")
        .args(["lint", "-s", "ALL"])
        .arg(dir.join(file)));
    let report = outcome(&o).1;
    // At severity ALL pkilint names each validator it ran: the whole response decoded.
    assert!(
        report.contains("OCSPResponseDecodingValidator") && report.contains("responseExtensions"),
        "{report}"
    );
    assert!(
        !report.contains("ERROR") && !report.contains("FATAL") && !report.contains("Traceback"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_answers_good_revoked_unknown_over_post_and_get_and_survives_garbage() {
    let ca = ApiCa::with_http("[ocsp]\nvalidity_minutes = 30\n");
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let url = format!("{base}/ocsp");
    let dir = ca.dir.join("ocsp");
    fetch_ca_pems(&base, &dir, &["root", "issuing-ec"]);
    let mut c = d.client("ra-one").await;
    let (serial, leaf) = issue_server_ec(&mut c, &dir, "ocsp-a").await;
    let leaf = leaf.to_str().unwrap().to_owned();
    let ask = |extra: &[&str]| ask_ocsp(&dir, &url, "issuing-ec", extra);

    // Good, with the nonce OpenSSL sends and checks, with SHA-1 and SHA-256 CertIDs.
    let (ok, out) = ask(&["-cert", &leaf, "-respout", "good.der"]);
    assert!(
        ok && out.contains(": good") && out.contains("Response verify OK"),
        "{out}"
    );
    assert!(out.contains("OCSP Nonce"), "{out}");
    let (ok, out) = ask(&["-sha256", "-cert", &leaf, "-no_nonce"]);
    assert!(
        ok && out.contains(": good") && out.contains("Response verify OK"),
        "{out}"
    );
    assert!(!out.contains("OCSP Nonce"), "{out}");
    lint(&dir, "good.der");

    // A serial never issued is unknown.
    let (ok, out) = ask(&["-serial", "0x1234567890abcdef"]);
    assert!(
        ok && out.contains(": unknown") && out.contains("Response verify OK"),
        "{out}"
    );

    // GET with the request in base64 (standard alphabet, percent-encoded).
    let (ok, out) = ask(&["-cert", &leaf, "-reqout", "req.der", "-no_nonce"]);
    assert!(ok, "{out}");
    let b64 = run(Command::new("openssl")
        .args(["base64", "-A", "-in", "req.der"])
        .current_dir(&dir));
    let b64 = String::from_utf8_lossy(&b64.stdout)
        .trim()
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (code, ctype) = curl(&[&format!("{url}/{b64}")], &dir.join("get.der"));
    assert_eq!((code, ctype.as_str()), (200, "application/ocsp-response"));
    let (ok, out) = openssl(
        &[
            "ocsp",
            "-respin",
            "get.der",
            "-resp_text",
            "-CAfile",
            "root.pem",
        ],
        &dir,
    );
    assert!(
        ok && out.contains("Cert Status: good") && out.contains("Response verify OK"),
        "{out}"
    );

    // Revoked, with the reason.
    c.revoke(pb::RevokeRequest {
        comment: "lost".into(),
        ..revoke_request(
            "ocsp-revoke-1",
            &serial,
            pb::RevocationReason::KeyCompromise,
        )
    })
    .await
    .expect("revoke");
    let (ok, out) = ask(&["-cert", &leaf, "-respout", "revoked.der"]);
    assert!(
        ok && out.contains(": revoked") && out.contains("Response verify OK"),
        "{out}"
    );
    assert!(
        out.contains("Key Compromise") || out.contains("keyCompromise"),
        "{out}"
    );
    lint(&dir, "revoked.der");

    // Several CertIDs in one request: one signed response answers each.
    let (_, good_leaf) = issue_server_ec(&mut c, &dir, "ocsp-b").await;
    let (ok, out) = ask(&[
        "-cert",
        &leaf,
        "-cert",
        good_leaf.to_str().unwrap(),
        "-serial",
        "0x0badc0ffee0badc0ffee",
        "-respout",
        "several.der",
    ]);
    assert!(ok && out.contains("Response verify OK"), "{out}");
    assert_eq!(
        out.matches("Cert Status: ").count(),
        3,
        "three single responses: {out}"
    );
    for status in [": revoked", ": good", ": unknown"] {
        assert!(out.contains(status), "{status} missing: {out}");
    }
    lint(&dir, "several.der");

    // Garbage: malformedRequest with HTTP 200, and the daemon keeps serving.
    std::fs::write(
        dir.join("random.bin"),
        (0..300u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let req = std::fs::read(dir.join("req.der")).unwrap();
    std::fs::write(dir.join("truncated.bin"), &req[..req.len() / 2]).unwrap();
    std::fs::write(dir.join("empty.bin"), b"").unwrap();
    std::fs::write(dir.join("huge.bin"), vec![0x30u8; 1 << 20]).unwrap();
    for name in ["empty.bin", "truncated.bin", "random.bin", "huge.bin"] {
        let out = dir.join(format!("{name}.resp"));
        let (code, ctype) = curl(
            &[
                "-H",
                "Content-Type: application/ocsp-request",
                "--data-binary",
                &format!("@{}", dir.join(name).display()),
                &url,
            ],
            &out,
        );
        assert_eq!(
            (code, ctype.as_str()),
            (200, "application/ocsp-response"),
            "{name}"
        );
        assert!(is_malformed(&dir, out.to_str().unwrap()), "{name}");
    }
    let (code, _) = curl(&[&format!("{url}/not*base64")], &dir.join("bad-get.der"));
    assert_eq!(code, 200);
    assert!(is_malformed(&dir, "bad-get.der"));
    let (ok, out) = ask(&["-cert", &leaf]);
    assert!(ok && out.contains(": revoked"), "{out}");
}

/// The certificates a response carries, as PEM blocks (from `openssl ocsp -resp_text`).
fn response_certs(resp_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = resp_text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end = rest[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// A daemon with `[http]` (plus `tail`), the root and issuing-ec certificates fetched into
/// a directory of their own, and one server certificate issued there.
struct Served {
    ca: ApiCa,
    d: Daemon,
    url: String,
    dir: std::path::PathBuf,
    c: pb::certificate_authority_client::CertificateAuthorityClient<tonic::transport::Channel>,
    serial: String,
    leaf: String,
}

async fn served(tail: &str, sub: &str) -> Served {
    let ca = ApiCa::with_http(tail);
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let url = format!("{base}/ocsp");
    let dir = ca.dir.join(sub);
    fetch_ca_pems(&base, &dir, &["root", "issuing-ec"]);
    let mut c = d.client("ra-one").await;
    let (serial, leaf) = issue_server_ec(&mut c, &dir, &format!("{sub}-a")).await;
    let leaf = leaf.to_str().unwrap().to_owned();
    Served {
        ca,
        d,
        url,
        dir,
        c,
        serial,
        leaf,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegated_responder_in_the_hsm_signs_and_kept_answers_end_at_a_revocation() {
    let Served {
        ca,
        mut d,
        url,
        dir,
        mut c,
        serial,
        leaf,
        ..
    } = served("", "delegated").await;
    let ask = |extra: &[&str]| {
        ask_ocsp(
            &dir,
            &url,
            "issuing-ec",
            &[&["-cert", &leaf], extra].concat(),
        )
    };

    // The response is signed by a responder certificate of issuing-ec, not by its key.
    let (ok, out) = ask(&["-no_nonce", "-respout", "first.der"]);
    assert!(
        ok && out.contains(": good") && out.contains("Response verify OK"),
        "{out}"
    );
    let certs = response_certs(&out);
    assert_eq!(certs.len(), 2, "responder and issuer certificates: {out}");
    std::fs::write(dir.join("responder.pem"), &certs[0]).unwrap();
    let (ok, rtext) = openssl(&["x509", "-in", "responder.pem", "-noout", "-text"], &dir);
    assert!(ok, "{rtext}");
    assert!(
        rtext.contains("OCSP Signing") && rtext.contains("OCSP No Check"),
        "{rtext}"
    );
    assert!(
        rtext.contains("OCSP Responder"),
        "subject names the responder: {rtext}"
    );
    assert!(!rtext.contains("CA:TRUE"), "{rtext}");
    // Its life is the configured 30 days, and it chains to the root as an OCSP signer.
    let (ok, dates) = openssl(
        &[
            "x509",
            "-in",
            "responder.pem",
            "-noout",
            "-startdate",
            "-enddate",
            "-dateopt",
            "iso_8601",
        ],
        &dir,
    );
    assert!(ok, "{dates}");
    let valid_in_days = |file: &str, days: u64| {
        let seconds = (days * 86_400).to_string();
        openssl(
            &["x509", "-in", file, "-noout", "-checkend", &seconds],
            &dir,
        )
        .0
    };
    assert!(
        valid_in_days("responder.pem", 29),
        "still valid in 29 days: {dates}"
    );
    assert!(
        !valid_in_days("responder.pem", 31),
        "expired within 31 days: {dates}"
    );
    let (ok, out2) = openssl(
        &[
            "verify",
            "-x509_strict",
            "-purpose",
            "ocsphelper",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing-ec.pem",
            "responder.pem",
        ],
        &dir,
    );
    assert!(ok && out2.contains("responder.pem: OK"), "{out2}");
    let lint = run(Command::new("lint_pkix_cert")
        .args(["lint", "-s", "WARNING"])
        .arg(dir.join("responder.pem")));
    let report = outcome(&lint).1;
    assert!(
        !report.contains("(ERROR)") && !report.contains("(FATAL)") && !report.contains("Traceback"),
        "{report}"
    );
    // Its key lives in the HSM: sensitive, never extractable, generated there, sign only.
    let objects = run(ca.softhsm.pkcs11_tool("signet-ca").args([
        "--login",
        "--pin",
        USER_PIN,
        "--list-objects",
        "--type",
        "privkey",
    ]));
    let objects = outcome(&objects).1;
    let key = objects
        .split("Private Key Object")
        .find(|k| k.contains("label:      test-issuing-ec-ocsp"))
        .unwrap_or_else(|| panic!("no responder key in the HSM: {objects}"));
    assert!(
        key.contains("never extractable") && key.contains("sensitive") && key.contains("local"),
        "{key}"
    );
    assert!(
        key.contains("Usage:      sign") && !key.contains("decrypt"),
        "{key}"
    );

    // Without a nonce the signed answer is kept: the same bytes again. With a nonce it is
    // signed afresh and echoes it.
    let (ok, out) = ask(&["-no_nonce", "-respout", "second.der"]);
    assert!(ok && out.contains(": good"), "{out}");
    assert_eq!(
        std::fs::read(dir.join("first.der")).unwrap(),
        std::fs::read(dir.join("second.der")).unwrap()
    );
    let (ok, out) = ask(&["-respout", "nonce.der"]);
    assert!(
        ok && out.contains(": good") && out.contains("OCSP Nonce"),
        "{out}"
    );
    assert_ne!(
        std::fs::read(dir.join("first.der")).unwrap(),
        std::fs::read(dir.join("nonce.der")).unwrap()
    );

    // A revocation ends the kept answer at once: no wait for it to go stale.
    c.revoke(revoke_request(
        "delegated-revoke",
        &serial,
        pb::RevocationReason::Superseded,
    ))
    .await
    .expect("revoke");
    let (ok, out) = ask(&["-no_nonce"]);
    assert!(
        ok && out.contains(": revoked") && out.contains("Response verify OK"),
        "{out}"
    );
    assert!(
        out.contains("Superseded") || out.contains("superseded"),
        "{out}"
    );

    // The root answers for the issuing CAs it certified.
    let (ok, out) = ask_ocsp(&dir, &url, "root", &["-cert", "issuing-ec.pem"]);
    assert!(
        ok && out.contains(": good") && out.contains("Response verify OK"),
        "{out}"
    );

    // A daemon that finds its responder certificate with under a third of the configured
    // life left certifies the same HSM key anew at start: with 90 days configured, the
    // 30-day certificate is due.
    drop(c);
    // A graceful stop writes the period's count of responder signatures to the audit log:
    // one entry per key, not one per response.
    d.signal("TERM");
    assert!(d.wait(std::time::Duration::from_secs(20)).success());
    let (ok, counts) = outcome(&run(Command::new("sqlite3")
        .arg(ca.dir.join("signet.db"))
        .arg(
            "SELECT object, json_extract(detail, '$.count') FROM audit_log \
              WHERE action = 'ocsp.responder_key_used' ORDER BY object",
        )));
    assert!(ok, "{counts}");
    let ec: u64 = counts
        .lines()
        .find_map(|l| l.strip_prefix("test-issuing-ec-ocsp|"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count for the issuing-ec responder key: {counts}"));
    // At least the first kept answer, the nonce answer and the revoked answer were signed.
    assert!(ec >= 3, "{counts}");
    assert!(counts.contains("test-root-ocsp|1"), "{counts}");
    drop(d);
    let mut cfg = std::fs::read_to_string(&ca.config_path).unwrap();
    cfg.push_str("\n[ocsp]\nresponder_validity_days = 90\n");
    std::fs::write(&ca.config_path, cfg).unwrap();
    let d = Daemon::start(&ca);
    let url = format!("{}/ocsp", d.http.clone().expect("HTTP announced"));
    let (ok, out) = ask_ocsp(
        &dir,
        &url,
        "issuing-ec",
        &["-serial", "0x01020304050607080910"],
    );
    assert!(
        ok && out.contains(": unknown") && out.contains("Response verify OK"),
        "{out}"
    );
    let renewed = response_certs(&out);
    assert_ne!(renewed[0], certs[0], "a new responder certificate");
    std::fs::write(dir.join("renewed.pem"), &renewed[0]).unwrap();
    assert!(valid_in_days("renewed.pem", 89), "valid for 89 more days");
    let pubkey = |f: &str| openssl(&["x509", "-in", f, "-noout", "-pubkey"], &dir).1;
    assert_eq!(
        pubkey("renewed.pem"),
        pubkey("responder.pem"),
        "the same HSM key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signer_issuer_the_issuing_ca_signs_its_own_responses() {
    // Daemon and CA bound by name, so they live to the end of the test.
    let Served {
        ca: _ca,
        d: _d,
        url,
        dir,
        leaf,
        ..
    } = served(
        "[ocsp]\nsigner = \"issuer\"\ncache = false\n",
        "issuer-signed",
    )
    .await;
    let mut first = Vec::new();
    for round in 0..2 {
        let out_file = format!("r{round}.der");
        let (ok, out) = ask_ocsp(
            &dir,
            &url,
            "issuing-ec",
            &["-cert", &leaf, "-no_nonce", "-respout", &out_file],
        );
        assert!(
            ok && out.contains(": good") && out.contains("Response verify OK"),
            "{out}"
        );
        let certs = response_certs(&out);
        assert_eq!(certs.len(), 1, "only the issuer's certificate: {out}");
        assert!(!out.contains("OCSP Signing"), "{out}");
        let bytes = std::fs::read(dir.join(&out_file)).unwrap();
        if round == 0 {
            first = bytes;
        } else {
            // With the cache off, every answer is signed anew.
            assert_ne!(first, bytes);
        }
    }
}

#[test]
fn signet_bench_ocsp_measures_kept_and_signed_answers_beside_the_raw_rate() {
    let ca = ApiCa::with_http("");
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let o = run(Command::new(env!("CARGO_BIN_EXE_signet"))
        .arg("--config")
        .arg(&ca.config_path)
        .args([
            "bench",
            "--mode",
            "ocsp",
            "--issuer",
            "issuing-ec",
            "--profile",
            "server",
            "--duration",
            "1",
            "--raw-seconds",
            "1",
            "--concurrency",
            "4",
            "--http",
            &base,
        ])
        .env("SIGNET_RA_ENDPOINT", &d.endpoint)
        .env("SIGNET_RA_CA_CERT", ca.tls.pem("root"))
        .env("SIGNET_RA_CERT", ca.tls.pem("ra-one"))
        .env("SIGNET_RA_KEY", ca.tls.key("ra-one"))
        .envs(ca.child_env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn"));
    let out = outcome(&o).1;
    assert!(o.status.success(), "{out}");
    // Both phases answered every request with a successful, parsed OCSPResponse, and the
    // raw rate of the responder key was measured around them.
    for phase in ["kept (no nonce)", "signed (nonce)"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(phase))
            .unwrap_or_else(|| panic!("{phase} missing: {out}"));
        assert!(line.ends_with("; 0 errors"), "{line}");
        let rate: f64 = line[phase.len()..]
            .trim()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rate > 0.0, "{line}");
    }
    assert!(out.contains("responder key test-issuing-ec-ocsp"), "{out}");
    assert!(out.contains("raw HSM signing"), "{out}");
}

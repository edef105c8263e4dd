//! The OCSP responder as relying parties meet it: `signet serve` as a child process with
//! `[http]`, asked with `openssl ocsp` and curl, responses judged by OpenSSL and pkilint.

mod common;

use std::path::Path;
use std::process::Command;

use common::api::*;
use common::ca::{pem, run};
use signet::api::pb;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let o = run(Command::new("openssl").args(args).current_dir(dir));
    (o.status.success(), text(&o))
}

/// curl with `args`, the body written to `out`; returns the HTTP status and content type.
fn curl(args: &[&str], out: &Path) -> (u16, String) {
    let o = run(Command::new("curl")
        .args(["-s", "-o"])
        .arg(out)
        .args(["-w", "%{http_code} %{content_type}"])
        .args(args));
    let t = String::from_utf8_lossy(&o.stdout).into_owned();
    let (code, ctype) = t.split_once(' ').unwrap_or((&t, ""));
    (code.parse().unwrap_or(0), ctype.to_owned())
}

/// Whether OpenSSL reads a DER OCSPResponse as malformedRequest.
fn is_malformed(dir: &Path, file: &str) -> bool {
    let (_, out) = openssl(&["ocsp", "-respin", file, "-resp_text", "-noverify"], dir);
    out.to_ascii_lowercase().contains("malformedrequest (1)")
}

fn lint(dir: &Path, file: &str) {
    let o = run(Command::new("lint_ocsp_response")
        .args(["lint", "-s", "ALL"])
        .arg(dir.join(file)));
    let report = text(&o);
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
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["root", "issuing-ec"] {
        let der = dir.join(format!("{name}.der"));
        let (code, _) = curl(&[&format!("{base}/ca/{name}.crt")], &der);
        assert_eq!(code, 200);
        std::fs::write(
            dir.join(format!("{name}.pem")),
            pem(&std::fs::read(&der).unwrap()),
        )
        .unwrap();
    }
    let mut c = d.client("ra-one").await;
    let (serial, leaf) = issue_server_ec(&mut c, &dir, "ocsp-a").await;
    let leaf = leaf.to_str().unwrap().to_owned();
    let ask = |extra: &[&str]| {
        let mut args = vec![
            "ocsp",
            "-issuer",
            "issuing-ec.pem",
            "-url",
            &url,
            "-CAfile",
            "root.pem",
            "-resp_text",
        ];
        args.extend_from_slice(extra);
        openssl(&args, &dir)
    };

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
        request_id: "ocsp-revoke-1".into(),
        serial: serial.clone(),
        reason: pb::RevocationReason::KeyCompromise as i32,
        reported_at: None,
        comment: "lost".into(),
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

//! The public status service as relying parties meet it: `signet serve` as a child process
//! with `[http]`, fetched with curl, and every answer judged by checkers signet did not
//! write (OpenSSL, GnuTLS certtool, pkilint).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::api::*;
use common::ca::run;
use common::status::{
    crl_to_pem, fetch, fetch_ca_pems, fetch_crl_numbered_above, openssl, verify_with_crl,
};
use signet::api::pb;

fn crl_published_at(ca: &ApiCa, serial: &str) -> String {
    let o = run(Command::new("sqlite3")
        .arg(ca.dir.join("signet.db"))
        .arg(format!(
            "SELECT crl_published_at FROM certificates WHERE serial = '{serial}'"
        )));
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_the_crl_within_the_lag_and_openssl_gnutls_and_pkilint_accept_it() {
    let ca = ApiCa::with_http("[crl]\nlag_seconds = 1\n");
    let mut d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let dir = ca.dir.join("status");
    fetch_ca_pems(&base, &dir, &["root", "issuing-ec"]);
    let chain = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("root.pem")).unwrap(),
        std::fs::read_to_string(dir.join("issuing-ec.pem")).unwrap()
    );
    std::fs::write(dir.join("chain.pem"), chain).unwrap();

    // The CRL published at start-up verifies under the chain.
    let first = fetch_crl_numbered_above(&dir, &base, "crl-1.der", 0);
    let (ok, out) = openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "crl-1.der",
            "-CAfile",
            "chain.pem",
            "-noout",
        ],
        &dir,
    );
    assert!(ok && out.contains("verify OK"), "{out}");

    // Two certificates; one revoked for key compromise, reported just after it was issued.
    let mut c = d.client("ra-one").await;
    let (revoked, revoked_pem) = issue_server_ec(&mut c, &dir, "crl-a").await;
    let (kept, kept_pem) = issue_server_ec(&mut c, &dir, "crl-b").await;
    c.revoke(pb::RevokeRequest {
        reported_at: Some(prost_types::Timestamp {
            seconds: now_unix(),
            nanos: 0,
        }),
        comment: "lost laptop".into(),
        ..revoke_request(
            "crl-revoke-1",
            &revoked,
            pb::RevocationReason::KeyCompromise,
        )
    })
    .await
    .expect("revoke");
    let second = fetch_crl_numbered_above(&dir, &base, "crl-2.der", first);
    crl_to_pem(&dir, "crl-2.der", "crl-2.pem");
    let verify = |leaf: &Path| verify_with_crl(&dir, "crl-2.pem", leaf);
    let (ok, out) = verify(&revoked_pem);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify(&kept_pem);
    assert!(ok, "{out}");

    // pkilint finds no error; GnuTLS accepts the signature.
    let o = run(Command::new("lint_crl")
        .args(["lint", "-t", "CRL", "-p", "PKIX"])
        .arg(dir.join("crl-2.der")));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !report.contains("ERROR") && !report.contains("FATAL") && !report.contains("Traceback"),
        "{report}"
    );
    let o = run(Command::new("certtool")
        .args(["--verify-crl", "--load-ca-certificate"])
        .arg(dir.join("issuing-ec.pem"))
        .arg("--infile")
        .arg(dir.join("crl-2.pem")));
    assert!(
        o.status.success(),
        "certtool: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // The revocation notes when it first appeared in a CRL; the other has none.
    assert!(
        crl_published_at(&ca, &revoked).parse::<i64>().is_ok(),
        "crl_published_at of {revoked}"
    );
    assert_eq!(crl_published_at(&ca, &kept), "");

    // A restarted daemon publishes with a larger number.
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let third = fetch_crl_numbered_above(&dir, &base, "crl-3.der", second);
    assert!(third > second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_certificates_chain_and_health_are_served_and_unknown_issuers_are_404() {
    let ca = ApiCa::with_http("");
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let dir = ca.dir.join("status");
    std::fs::create_dir_all(&dir).unwrap();

    let (code, ctype) = fetch(&format!("{base}/ca/chain.p7b"), &dir.join("chain.p7b"));
    assert_eq!((code, ctype.as_str()), (200, "application/pkcs7-mime"));
    let (ok, out) = openssl(
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            "chain.p7b",
            "-print_certs",
            "-noout",
        ],
        &dir,
    );
    assert!(ok, "{out}");
    // root, issuing-rsa, issuing-ec, issuing-tls
    assert_eq!(out.matches("subject=").count(), 4, "{out}");

    let (code, _) = fetch(&format!("{base}/ca/issuing-ec.crt"), &dir.join("ec.der"));
    assert_eq!(code, 200);
    let (ok, out) = openssl(
        &[
            "x509", "-inform", "DER", "-in", "ec.der", "-noout", "-subject",
        ],
        &dir,
    );
    assert!(ok && out.contains("subject="), "{out}");
    assert!(out.contains("Signet Test EC Issuing CA"), "{out}");

    for path in [
        "/ca/nobody.crt",
        "/crl/nobody.crl",
        "/crl/issuing-ec",
        "/nothing",
    ] {
        let (code, _) = fetch(&format!("{base}{path}"), &dir.join("404"));
        assert_eq!(code, 404, "{path}");
    }
    let (code, _) = fetch(&format!("{base}/healthz"), &dir.join("health"));
    assert_eq!(code, 200);
    assert_eq!(
        std::fs::read_to_string(dir.join("health")).unwrap().trim(),
        "ok"
    );
}

#[test]
fn signet_crl_publishes_every_issuer_or_one_with_growing_numbers() {
    let (_softhsm, dir, config, _cfg) = common::ca::TestCa::prepare();
    let signet = |args: &[&str]| {
        run(Command::new(env!("CARGO_BIN_EXE_signet"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("RUST_LOG", "warn"))
    };
    let o = signet(&["ceremony"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = signet(&["crl"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    for issuer in ["root", "issuing-rsa", "issuing-ec"] {
        assert!(
            out.contains(&format!("{issuer}: CRL number 1, thisUpdate ")),
            "{out}"
        );
    }
    assert!(
        out.contains("nextUpdate ") && out.contains(", 0 entries"),
        "{out}"
    );
    let o = signet(&["crl", "--issuer", "issuing-rsa"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success() && out.starts_with("issuing-rsa: CRL number 2,"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    let o = signet(&["crl", "--issuer", "nobody"]);
    assert!(!o.status.success());

    // The recorded RSA CRL passes pkilint and verifies under its issuer with OpenSSL.
    let o = run(Command::new("sqlite3")
        .arg(dir.join("signet.db"))
        .arg(format!(
            "SELECT writefile('{}', der) FROM crls WHERE issuer = 'issuing-rsa' AND number = 2",
            dir.join("rsa.crl").display()
        )));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(Command::new("lint_crl")
        .args(["lint", "-t", "CRL", "-p", "PKIX"])
        .arg(dir.join("rsa.crl")));
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        !report.contains("ERROR") && !report.contains("FATAL"),
        "{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (ok, out) = openssl(
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "rsa.crl",
            "-CAfile",
            "ca/issuing-rsa.pem",
            "-noout",
        ],
        &dir,
    );
    assert!(ok && out.contains("verify OK"), "{out}");
}

/// thisUpdate (`Last Update`, as OpenSSL prints it) and number of the DER CRL `der` in `dir`.
fn crl_last_update(dir: &Path, der: &str) -> ((u32, u32, u32, u32, u32, u32), u64) {
    let (ok, text) = openssl(
        &["crl", "-inform", "DER", "-in", der, "-noout", "-text"],
        dir,
    );
    assert!(ok, "{text}");
    (
        common::status::openssl_date_after(&text, "Last Update: "),
        common::status::crl_number(dir, der),
    )
}

/// `/healthz` of `base`: the HTTP status and the body.
fn healthz(base: &str, dir: &Path) -> (u16, String) {
    let out = dir.join("healthz.txt");
    let (code, _) = fetch(&format!("{base}/healthz"), &out);
    (code, std::fs::read_to_string(out).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_never_yields_an_earlier_crl_and_degrades_health_until_it_catches_up()
{
    let ca = ApiCa::with_http("[crl]\nlag_seconds = 1\ninterval_seconds = 2\n");
    let mut d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    let dir = ca.dir.join("status");
    std::fs::create_dir_all(&dir).unwrap();
    let first = fetch_crl_numbered_above(&dir, &base, "crl-1.der", 0);
    let (first_update, _) = crl_last_update(&dir, "crl-1.der");
    assert_eq!(healthz(&base, &dir).0, 200);
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    // The number of the latest CRL recorded, read by sqlite3.
    let newest = || {
        let o = run(Command::new("sqlite3")
            .arg(ca.dir.join("signet.db"))
            .arg("SELECT max(number) FROM crls WHERE issuer = 'issuing-ec'"));
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let recorded = newest();
    assert!(recorded >= first);

    // An hour behind: the daemon starts, but serves the latest recorded CRL, publishes none
    // (its retries come every 2 s) and reports why.
    let d2 = Daemon::start_with_clock(&ca, "-1h");
    let base2 = d2.http.clone().expect("HTTP announced");
    for i in 0..4 {
        let name = format!("behind-{i}.der");
        let (code, _) = fetch(&format!("{base2}/crl/issuing-ec.crl"), &dir.join(&name));
        assert_eq!(code, 200);
        let (update, number) = crl_last_update(&dir, &name);
        assert!(
            update >= first_update,
            "{update:?} is before {first_update:?}"
        );
        assert_eq!(number, recorded);
        let (code, text) = healthz(&base2, &dir);
        assert!(
            code == 503 && text.contains("degraded: crl: ") && text.contains("issuing-ec"),
            "{code} {text}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        newest(),
        recorded,
        "a CRL was recorded with the clock behind"
    );
    // The operator's `signet crl` on the same clock refuses too, naming the clock.
    let o = run(Command::new(env!("CARGO_BIN_EXE_signet"))
        .arg("--config")
        .arg(&ca.config_path)
        .arg("crl")
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", "-1h")
        .env("RUST_LOG", "warn"));
    let (ok, out) = common::status::outcome(&o);
    assert!(!ok && out.contains("system clock"), "{out}");
    drop(d2);
    assert_eq!(newest(), recorded);

    // A clock eight seconds behind catches up: a fresh CRL, no earlier than the last one,
    // and health recovers.
    let mut d3 = Daemon::start(&ca);
    let base3 = d3.http.clone().expect("HTTP announced");
    let before = fetch_crl_numbered_above(&dir, &base3, "crl-3.der", recorded);
    let (before_update, _) = crl_last_update(&dir, "crl-3.der");
    d3.signal("TERM");
    assert!(d3.wait(Duration::from_secs(30)).success());
    let d4 = Daemon::start_with_clock(&ca, "-8s");
    let base4 = d4.http.clone().expect("HTTP announced");
    let (code, text) = healthz(&base4, &dir);
    assert!(
        code == 503 && text.contains("degraded: crl: "),
        "{code} {text}"
    );
    let after = fetch_crl_numbered_above(&dir, &base4, "crl-4.der", newest());
    assert!(after > before);
    let (after_update, _) = crl_last_update(&dir, "crl-4.der");
    assert!(
        after_update >= before_update,
        "{after_update:?} < {before_update:?}"
    );
    assert_eq!(healthz(&base4, &dir).0, 200);
}

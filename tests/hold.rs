//! Hold and release, revocation timeliness and the operator's `signet revoke`, as relying
//! parties and operators meet them: `signet serve` as a child process with `[http]`, status
//! asked with `openssl ocsp` and CRLs fetched over HTTP and read by OpenSSL, the store read
//! with sqlite3.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::*;
use common::ca::run;
use common::status::{
    ask_ocsp, crl_to_pem, fetch_ca_pems, fetch_crl_numbered_above, openssl, outcome,
    verify_with_crl,
};
use signet::api::pb;
use signet::api::pb::certificate_authority_client::CertificateAuthorityClient;
use tonic::Code;
use tonic::transport::Channel;

/// `openssl ocsp` for `leaf` against the daemon's responder; the response must verify.
fn ocsp(dir: &Path, base: &str, leaf: &Path) -> String {
    let url = format!("{base}/ocsp");
    let (ok, out) = ask_ocsp(dir, &url, "issuing-ec", &["-cert", leaf.to_str().unwrap()]);
    assert!(ok && out.contains("Response verify OK"), "{out}");
    out
}

/// The certificate status line `openssl ocsp` prints for `leaf`.
fn ocsp_status(out: &str, leaf: &Path) -> String {
    let prefix = format!("{}: ", leaf.display());
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no status line in {out}"))
        .trim()
        .to_owned()
}

/// `openssl crl -text` of a DER CRL in `dir`.
fn crl_text(dir: &Path, der: &str) -> String {
    let (ok, out) = openssl(
        &["crl", "-inform", "DER", "-in", der, "-noout", "-text"],
        dir,
    );
    assert!(ok, "{out}");
    out
}

/// The CRL entry `openssl crl -text` prints for `serial`, up to the next entry.
fn crl_entry(text: &str, serial: &str) -> Option<String> {
    let start = text.find(&format!("Serial Number: {}", serial.to_uppercase()))?;
    let rest = &text[start..];
    let end = rest[1..]
        .find("Serial Number:")
        .map_or(rest.len(), |e| e + 1);
    Some(rest[..end].to_owned())
}

fn sqlite(ca: &ApiCa, sql: &str) -> String {
    let o = run(Command::new("sqlite3")
        .arg(ca.dir.join("signet.db"))
        .arg(sql));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// `signet revoke` of `serial` for `reason`, with `more` options.
fn signet_revoke(ca: &ApiCa, serial: &str, reason: &str, more: &[&str]) -> (bool, String) {
    let mut args = vec!["revoke", "--serial", serial, "--reason", reason];
    args.extend_from_slice(more);
    signet(ca, &args)
}

/// `signet ra` as RA `name` against `d`.
fn signet_ra(d: &Daemon, name: &str, args: &[&str]) -> (bool, String) {
    let o = run(d.cli("ra", name).args(args).env("RUST_LOG", "warn"));
    outcome(&o)
}

/// Revoke `serial` for `reason` as request `id`, reported at the certificate's notBefore (the
/// earliest a report may be); the CA's answer.
async fn revoke(
    c: &mut CertificateAuthorityClient<Channel>,
    id: &str,
    serial: &str,
    reason: pb::RevocationReason,
) -> pb::RevokeResponse {
    let not_before = c
        .get_certificate(pb::GetCertificateRequest {
            serial: serial.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("get {serial}: {e:?}"))
        .into_inner()
        .not_before;
    c.revoke(pb::RevokeRequest {
        reported_at: not_before,
        comment: "token reported lost".into(),
        ..revoke_request(id, serial, reason)
    })
    .await
    .unwrap_or_else(|e| panic!("revoke {id}: {e:?}"))
    .into_inner()
}

fn release(id: &str, serial: &str, comment: &str) -> pb::ReleaseHoldRequest {
    pb::ReleaseHoldRequest {
        request_id: id.into(),
        serial: serial.into(),
        comment: comment.into(),
    }
}

/// The daemon of `ca`, its HTTP base, and a work directory `name` holding the CA
/// certificates fetched over HTTP.
async fn started(ca: &ApiCa, name: &str) -> (Daemon, String, PathBuf) {
    let d = Daemon::start(ca);
    let base = d.http.clone().expect("HTTP announced");
    let dir = ca.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    fetch_ca_pems(&base, &dir, &["root", "issuing-ec"]);
    (d, base, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_is_revoked_in_ocsp_and_the_crl_and_its_release_makes_it_good_and_leaves_the_next_crl()
 {
    let ca = ApiCa::with_http("[crl]\nlag_seconds = 1\n");
    let (d, base, dir) = started(&ca, "hold").await;
    let mut c = d.client("ra-one").await;
    let (held, held_pem) = issue_server_ec(&mut c, &dir, "hold-a").await;
    let (other, _) = issue_server_ec(&mut c, &dir, "hold-b").await;
    assert_eq!(
        ocsp_status(&ocsp(&dir, &base, &held_pem), &held_pem),
        "good"
    );
    let first = fetch_crl_numbered_above(&dir, &base, "crl-0.der", 0);
    // A second on, so the report (at notBefore) and the record of the hold differ.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Hold: OCSP says revoked with reason certificateHold within a second.
    let r = revoke(
        &mut c,
        "hold-1",
        &held,
        pb::RevocationReason::CertificateHold,
    )
    .await;
    let held_at = Instant::now();
    assert_eq!(r.status, pb::CertificateStatus::Revoked as i32);
    let out = ocsp(&dir, &base, &held_pem);
    eprintln!(
        "Revoke (hold) to openssl ocsp revoked: {:?}",
        held_at.elapsed()
    );
    assert!(held_at.elapsed() < Duration::from_secs(1), "{out}");
    assert_eq!(ocsp_status(&out, &held_pem), "revoked", "{out}");
    assert!(out.contains("Reason: certificateHold"), "{out}");

    // The next CRL lists it as Certificate Hold, and the store notes when it was published.
    let second = fetch_crl_numbered_above(&dir, &base, "crl-1.der", first);
    let entry = crl_entry(&crl_text(&dir, "crl-1.der"), &held).expect("held serial listed");
    assert!(entry.contains("Certificate Hold"), "{entry}");
    let published: i64 = sqlite(
        &ca,
        &format!("SELECT crl_published_at FROM certificates WHERE serial = '{held}'"),
    )
    .parse()
    .expect("crl_published_at set");

    // ListCertificates and `signet ra list` show reported, recorded and published times.
    let page = c
        .list_certificates(pb::ListCertificatesRequest {
            status: pb::CertificateStatus::Revoked as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let s = page
        .certificates
        .iter()
        .find(|s| s.serial == held)
        .expect("held listed");
    assert_eq!(s.reason, pb::RevocationReason::CertificateHold as i32);
    let reported = s.reported_at.as_ref().expect("reported_at").seconds;
    let recorded = s.revoked_at.as_ref().expect("revoked_at").seconds;
    assert_eq!(
        s.first_published_at.as_ref().map(|t| t.seconds),
        Some(published)
    );
    assert!(reported < recorded && recorded <= published, "{s:?}");
    let (ok, out) = signet_ra(&d, "ra-one", &["list", "--status", "revoked"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "certificateHold: reported {}, recorded {}, published {}",
            signet::ca::rfc3339(reported),
            signet::ca::rfc3339(recorded),
            signet::ca::rfc3339(published)
        )),
        "{out}"
    );

    // Release needs the revoke permission, and only a held certificate can be released.
    let mut auditor = d.client("auditor").await;
    let e = auditor
        .release_hold(release("rel-x", &held, "found"))
        .await
        .expect_err("auditor may only read");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = c
        .release_hold(release("rel-valid", &other, "found"))
        .await
        .expect_err("a valid certificate is not on hold");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("valid, not on hold"), "{e:?}");

    // Release: OCSP good at once; a retry answers the same; another body under the id is
    // refused.
    let r = c
        .release_hold(release("rel-1", &held, "token found"))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(r.status, pb::CertificateStatus::Valid as i32);
    let again = c
        .release_hold(release("rel-1", &held, "token found"))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again, r);
    let e = c
        .release_hold(release("rel-1", &held, "something else"))
        .await
        .expect_err("same id, other body");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let out = ocsp(&dir, &base, &held_pem);
    assert_eq!(ocsp_status(&out, &held_pem), "good", "{out}");

    // The next CRL no longer lists it, and OpenSSL accepts the certificate with it.
    fetch_crl_numbered_above(&dir, &base, "crl-2.der", second);
    assert!(crl_entry(&crl_text(&dir, "crl-2.der"), &held).is_none());
    crl_to_pem(&dir, "crl-2.der", "crl-2.pem");
    let (ok, out) = verify_with_crl(&dir, "crl-2.pem", &held_pem);
    assert!(ok, "{out}");

    // The history keeps the hold (with when it was published) and the release, and the
    // audit log has both, written with them.
    let got = c
        .get_certificate(pb::GetCertificateRequest {
            serial: held.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.status, pb::CertificateStatus::Valid as i32);
    let kinds: Vec<(i32, String)> = got
        .history
        .iter()
        .map(|e| (e.kind, e.request_id.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (pb::RevocationEventKind::Held as i32, "hold-1".to_owned()),
            (pb::RevocationEventKind::Released as i32, "rel-1".to_owned()),
        ]
    );
    assert_eq!(
        got.history[0]
            .first_published_at
            .as_ref()
            .map(|t| t.seconds),
        Some(published)
    );
    assert_eq!(got.history[1].comment, "token found");
    let (ok, out) = signet_ra(&d, "ra-one", &["get", "--serial", &held]);
    assert!(ok, "{out}");
    assert!(
        out.contains("history:      held certificateHold by desk-one (request hold-1)")
            && out.contains("history:      released  by desk-one (request rel-1)"),
        "{out}"
    );
    assert_eq!(
        sqlite(
            &ca,
            &format!(
                "SELECT group_concat(action, ' ') FROM (SELECT action FROM audit_log WHERE object = '{held}' ORDER BY seq)"
            )
        ),
        "certificate.issued certificate.held certificate.released"
    );

    // A held certificate revoked for keyCompromise is revoked for good: OCSP gives the new
    // reason, and its release is refused, naming the reason.
    revoke(
        &mut c,
        "hold-2",
        &other,
        pb::RevocationReason::CertificateHold,
    )
    .await;
    let r = revoke(&mut c, "kc-1", &other, pb::RevocationReason::KeyCompromise).await;
    assert!(!r.already_revoked, "{r:?}");
    let other_pem = dir.join("hold-b.pem");
    let out = ocsp(&dir, &base, &other_pem);
    assert_eq!(ocsp_status(&out, &other_pem), "revoked", "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");
    let e = c
        .release_hold(release("rel-kc", &other, "found"))
        .await
        .expect_err("keyCompromise is final");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("keyCompromise") && e.message().contains("final"),
        "{e:?}"
    );
    let (ok, out) = signet_ra(
        &d,
        "ra-one",
        &[
            "release-hold",
            "--serial",
            &other,
            "--request-id",
            "rel-kc2",
        ],
    );
    assert!(!ok && out.contains("FAILED_PRECONDITION"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signet_revoke_on_the_command_line_reaches_ocsp_and_the_http_crl_within_the_lag() {
    let ca = ApiCa::with_http("[crl]\nlag_seconds = 2\n");
    let (d, base, dir) = started(&ca, "cli").await;
    let mut c = d.client("ra-one").await;
    let (serial, leaf) = issue_server_ec(&mut c, &dir, "cli-a").await;
    let first = fetch_crl_numbered_above(&dir, &base, "crl-0.der", 0);

    // Bad input is refused, naming the flag or the problem, and changes nothing.
    let (ok, out) = signet_revoke(&ca, &serial, "lost", &[]);
    assert!(!ok && out.contains("--reason"), "{out}");
    let (ok, out) = signet_revoke(&ca, "0abc", "keyCompromise", &[]);
    assert!(
        !ok && out.contains("no certificate with serial 0abc"),
        "{out}"
    );
    let future = signet::ca::rfc3339(now_unix() + 3600);
    let (ok, out) = signet_revoke(&ca, &serial, "keyCompromise", &["--reported-at", &future]);
    assert!(!ok && out.contains("reported_at"), "{out}");
    assert_eq!(ocsp_status(&ocsp(&dir, &base, &leaf), &leaf), "good");

    // A report before the certificate existed is refused too.
    let early = signet::ca::rfc3339(now_unix() - 7200);
    let (ok, out) = signet_revoke(&ca, &serial, "keyCompromise", &["--reported-at", &early]);
    assert!(
        !ok && out.contains("reported_at") && out.contains("notBefore"),
        "{out}"
    );

    // The operator revokes from another process while the daemon runs.
    let reported = signet::ca::rfc3339(now_unix());
    let (ok, out) = signet_revoke(
        &ca,
        &serial,
        "keyCompromise",
        &[
            "--reported-at",
            &reported,
            "--comment",
            "key found on a public share",
        ],
    );
    let revoked_at = Instant::now();
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{serial}: revoked (keyCompromise) at "))
            && out.contains("by operator")
            && out.contains("publishes it within 2 s"),
        "{out}"
    );
    let out = ocsp(&dir, &base, &leaf);
    assert_eq!(ocsp_status(&out, &leaf), "revoked", "{out}");
    assert!(out.contains("Reason: keyCompromise"), "{out}");

    // The daemon notices it in the store and publishes a CRL listing it within the lag (and
    // a poll).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut above = first;
    let listed = loop {
        above = fetch_crl_numbered_above(&dir, &base, "crl-n.der", above);
        if let Some(entry) = crl_entry(&crl_text(&dir, "crl-n.der"), &serial) {
            break entry;
        }
        assert!(Instant::now() < deadline, "the CRL never listed {serial}");
    };
    let waited = revoked_at.elapsed();
    eprintln!("signet revoke to a CRL listing it over HTTP: {waited:?} (lag 2 s)");
    assert!(
        waited < Duration::from_secs(5),
        "published after {waited:?}"
    );
    assert!(listed.contains("Key Compromise"), "{listed}");
    assert!(listed.contains("Invalidity Date"), "{listed}");
    assert_eq!(
        sqlite(
            &ca,
            &format!(
                "SELECT revoked_by || ' ' || (crl_published_at IS NOT NULL) FROM certificates WHERE serial = '{serial}'"
            )
        ),
        "operator 1"
    );
    assert!(
        !d.log_text().contains("not yet in a published CRL"),
        "{}",
        d.log_text()
    );

    // `signet revoke --publish` signs fresh CRLs itself and prints them.
    let (second, _) = issue_server_ec(&mut c, &dir, "cli-b").await;
    let (ok, out) = signet_revoke(
        &ca,
        &second,
        "superseded",
        &["--request-id", "op-2", "--publish"],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{second}: revoked (superseded)"))
            && out.contains("request op-2")
            && out.contains(", 2 entries"),
        "{out}"
    );
    let (ok, again) = signet_revoke(&ca, &second, "superseded", &["--request-id", "op-2"]);
    assert!(ok, "{again}");
    assert!(
        !again.contains("already revoked"),
        "a retry gets the first answer: {again}"
    );

    // `signet crl` forces a regeneration and prints the number and dates.
    let (ok, out) = signet(&ca, &["crl", "--issuer", "issuing-ec"]);
    assert!(ok, "{out}");
    let number: u64 = out
        .strip_prefix("issuing-ec: CRL number ")
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(number > above, "{out}");
    assert!(
        out.contains(", thisUpdate 20")
            && out.contains(", nextUpdate 20")
            && out.contains(", 2 entries"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_not_published_within_the_lag_is_logged_as_a_warning() {
    let mut ca = ApiCa::with_http_behind_p11kit("[crl]\nlag_seconds = 1\n");
    let (d, _base, dir) = started(&ca, "late").await;
    let mut c = d.client("ra-one").await;
    let (serial, _) = issue_server_ec(&mut c, &dir, "late-a").await;

    // With the HSM gone, the revocation is recorded but no CRL can be signed.
    ca.p11kit.as_mut().expect("p11-kit server").kill();
    revoke(
        &mut c,
        "late-1",
        &serial,
        pb::RevocationReason::KeyCompromise,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let line = loop {
        let log = d.log_text();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("WARN") && l.contains("not yet in a published CRL"))
        {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "no warning:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        line.contains(&serial) && line.contains("issuing-ec") && line.contains("age_seconds"),
        "{line}"
    );
    assert_eq!(
        sqlite(
            &ca,
            &format!("SELECT crl_published_at IS NULL FROM certificates WHERE serial = '{serial}'")
        ),
        "1"
    );
}

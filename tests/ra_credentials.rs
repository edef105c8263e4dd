//! An RA office can be cut off without a restart: its client certificate revoked by signet
//! (checked against the store on every call, within `[crl] lag_seconds`, also on a
//! connection opened before the revocation and after a restart), listed in an operator's CRL
//! of a foreign client CA (refreshed), expired while a connection is open, or the office
//! suspended with `[[ra]] enabled = false` and SIGHUP. Each refusal names the office in the
//! log; a configuration file that does not load changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::*;
use common::ca::run;
use signet::api::client::ClientSettings;
use signet::api::pb;
use tonic::Code;

/// Two RA offices whose client certificates the ceremony makes from signet's TLS issuer,
/// beside the test's foreign-CA offices (desk-one, desk-two, auditor), with a CRL lag of
/// 2 s and the foreign CA's CRL file read every second.
fn ca_with_own_offices(crl_file: &Path) -> ApiCa {
    let crl_file = crl_file.to_owned();
    ApiCa::with_edit(&move |text: String| {
        let work = text
            .lines()
            .find_map(|l| l.strip_prefix("output_dir = \""))
            .and_then(|l| l.strip_suffix('"'))
            .and_then(|o| PathBuf::from(o).parent().map(Path::to_path_buf))
            .expect("output_dir in the test configuration");
        let own_ca = work.join("ca/issuing-tls.pem");
        let text = text
            .replace(
                "client_ca = [\"",
                &format!("client_ca = [\"{}\", \"", own_ca.display()),
            )
            .replace(
                "\n[[ra]]\nname = \"desk-one\"",
                &format!(
                    "client_crls = [\"{crl}\"]\nclient_crl_refresh_seconds = 1\n\n[[ra]]\nname = \"desk-one\"",
                    crl = crl_file.display()
                ),
            );
        format!(
            r#"{text}
[[ra]]
name = "office-a"
subject = "CN=Office A, O=测试注册机构, C=CN"
profiles = ["server"]
operations = ["issue", "read"]
client_cert = "{w}/own/office-a.pem"
client_key = "{w}/own/office-a.key"

[[ra]]
name = "office-b"
subject = "CN=Office B, O=测试注册机构, C=CN"
profiles = ["server"]
operations = ["issue", "read"]
client_cert = "{w}/own/office-b.pem"
client_key = "{w}/own/office-b.key"

[crl]
lag_seconds = 2
"#,
            w = work.display()
        )
    })
}

/// Connection settings for an office the ceremony certified.
fn own_settings(ca: &ApiCa, d: &Daemon, office: &str) -> ClientSettings {
    ClientSettings {
        endpoint: d.endpoint.clone(),
        ca_cert: ca.tls.pem("root"),
        cert: ca.dir.join(format!("own/{office}.pem")),
        key: ca.dir.join(format!("own/{office}.key")),
    }
}

/// A client of the daemon `d` authenticated as the office `office` certified by signet.
async fn own_client(
    ca: &ApiCa,
    d: &Daemon,
    office: &str,
) -> pb::certificate_authority_client::CertificateAuthorityClient<tonic::transport::Channel> {
    signet::api::client::connect(&own_settings(ca, d, office))
        .await
        .map(pb::certificate_authority_client::CertificateAuthorityClient::new)
        .unwrap_or_else(|e| panic!("{office} connects: {e}"))
}

/// The serial (hex) of the certificate in `pem`.
fn serial_of(pem: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// A CRL of the test's foreign client CA listing `revoked` (PEM files), via `openssl ca`.
fn foreign_crl(ca: &ApiCa, revoked: &[&str], out: &Path) {
    let dir = &ca.tls.dir;
    for name in revoked {
        let o = run(Command::new("openssl")
            .current_dir(dir)
            .env("TLS_DIR", dir)
            .args([
                "ca",
                "-batch",
                "-config",
                "openssl.cnf",
                "-cert",
                "issuing.pem",
            ])
            .args(["-keyfile", "issuing.key", "-revoke"])
            .arg(format!("{name}.pem"))
            .args(["-crl_reason", "keyCompromise"]));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = run(Command::new("openssl")
        .current_dir(dir)
        .env("TLS_DIR", dir)
        .args([
            "ca",
            "-batch",
            "-config",
            "openssl.cnf",
            "-cert",
            "issuing.pem",
        ])
        .args([
            "-keyfile",
            "issuing.key",
            "-gencrl",
            "-crldays",
            "1",
            "-md",
            "sha256",
        ])
        .arg("-out")
        .arg(out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

async fn list(
    c: &mut pb::certificate_authority_client::CertificateAuthorityClient<tonic::transport::Channel>,
) -> Result<(), tonic::Status> {
    c.list_certificates(pb::ListCertificatesRequest::default())
        .await
        .map(|_| ())
}

/// Call until the answer is an error with `code` (at most `limit`); the error.
async fn until_refused(
    c: &mut pb::certificate_authority_client::CertificateAuthorityClient<tonic::transport::Channel>,
    code: Code,
    limit: Duration,
) -> tonic::Status {
    let deadline = Instant::now() + limit;
    loop {
        match list(c).await {
            Err(s) if s.code() == code => return s,
            other => assert!(Instant::now() < deadline, "still {other:?} after {limit:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_office_is_refused_within_the_lag_on_an_open_connection_and_after_a_restart() {
    let crl_dir = tempfile::tempdir().unwrap();
    let crl = crl_dir.path().join("foreign.crl");
    let ca = ca_with_own_offices(&crl);
    foreign_crl(&ca, &[], &crl);
    let d = Daemon::start(&ca);
    let mut a = own_client(&ca, &d, "office-a").await;
    let mut b = own_client(&ca, &d, "office-b").await;
    list(&mut a).await.expect("office A works");
    list(&mut b).await.expect("office B works");

    // The operator revokes office A's certificate with signet's own CLI (another process).
    let serial = serial_of(&ca.dir.join("own/office-a.pem"));
    let (ok, text) = signet(
        &ca,
        &["revoke", "--serial", &serial, "--reason", "keyCompromise"],
    );
    assert!(ok, "{text}");
    let revoked_at = Instant::now();
    let refused = until_refused(&mut a, Code::Unauthenticated, Duration::from_secs(10)).await;
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
    assert!(
        revoked_at.elapsed() < Duration::from_secs(8),
        "refused {:?} after the revocation (lag 2 s)",
        revoked_at.elapsed()
    );
    // A new connection with the same certificate is refused too; office B goes on.
    let mut again = own_client(&ca, &d, "office-a").await;
    assert_eq!(
        list(&mut again).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    list(&mut b).await.expect("office B still works");
    let log = d.log_text();
    assert!(
        log.lines().any(|l| l.contains("office-a")
            && l.contains("refused the RA office")
            && l.contains("revoked")),
        "a log line names the refused office:\n{log}"
    );

    // After a restart too.
    d.signal("TERM");
    let mut d = d;
    d.wait(Duration::from_secs(60));
    let d = Daemon::start(&ca);
    let mut a = own_client(&ca, &d, "office-a").await;
    assert_eq!(
        list(&mut a).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_office_of_a_foreign_ca_listed_in_its_crl_is_refused_once_the_crl_is_read_again() {
    let crl_dir = tempfile::tempdir().unwrap();
    let crl = crl_dir.path().join("foreign.crl");
    let ca = ca_with_own_offices(&crl);
    foreign_crl(&ca, &[], &crl);
    let d = Daemon::start(&ca);
    let mut one = d.client("ra-one").await;
    list(&mut one)
        .await
        .expect("desk-one works while its CA's CRL lists nothing");
    // The foreign CA revokes desk-one's certificate; its new CRL replaces the file.
    foreign_crl(&ca, &["ra-one"], &crl);
    let refused = until_refused(&mut one, Code::Unauthenticated, Duration::from_secs(10)).await;
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
    // desk-two, of the same CA and not listed, goes on.
    let mut two = d.client("ra-two").await;
    two.list_certificates(pb::ListCertificatesRequest {
        profile: "device".into(),
        ..Default::default()
    })
    .await
    .expect("desk-two works");
    // A CRL that does not verify (its signature broken) is refused and the last good one
    // stays in force.
    let mut der = std::fs::read(&crl).unwrap();
    let text = String::from_utf8_lossy(&der).into_owned();
    if text.starts_with("-----BEGIN") {
        let out = run(Command::new("openssl")
            .args(["crl", "-outform", "DER", "-in"])
            .arg(&crl));
        der = out.stdout;
    }
    let last = der.len() - 1;
    der[last] ^= 0x01;
    std::fs::write(&crl, &der).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        list(&mut one).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(
        d.log_text().contains("keeping the previous client CRL"),
        "{}",
        d.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_office_is_refused_after_sighup_and_a_bad_file_changes_nothing() {
    let crl_dir = tempfile::tempdir().unwrap();
    let crl = crl_dir.path().join("foreign.crl");
    let ca = ca_with_own_offices(&crl);
    foreign_crl(&ca, &[], &crl);
    let d = Daemon::start(&ca);
    let mut b = own_client(&ca, &d, "office-b").await;
    list(&mut b).await.expect("office B works");
    let good = std::fs::read_to_string(&ca.config_path).unwrap();

    // A file that does not load: the reload is refused and nothing changes.
    std::fs::write(&ca.config_path, good.replace("[crl]", "[crl\n")).unwrap();
    d.signal("HUP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    list(&mut b)
        .await
        .expect("office B still works after a refused reload");
    assert!(
        d.log_text()
            .contains("configuration reload refused, nothing changed"),
        "{}",
        d.log_text()
    );

    // Office B suspended: refused from the reload on, on the open connection.
    let suspended = good.replace(
        "name = \"office-b\"\n",
        "name = \"office-b\"\nenabled = false\n",
    );
    assert_ne!(suspended, good);
    std::fs::write(&ca.config_path, &suspended).unwrap();
    d.signal("HUP");
    let refused = until_refused(&mut b, Code::PermissionDenied, Duration::from_secs(10)).await;
    assert!(
        refused.message().contains("suspended"),
        "{}",
        refused.message()
    );
    let mut one = d.client("ra-one").await;
    list(&mut one).await.expect("other offices go on");

    // Enabled again: back.
    std::fs::write(&ca.config_path, &good).unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while list(&mut b).await.is_err() {
        assert!(Instant::now() < deadline, "office B is not back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.signal("TERM");
    let mut d = d;
    d.wait(Duration::from_secs(60));
    // Each reload, refused or taken, is in the audit log, which verifies.
    let out = run(Command::new("sqlite3")
        .arg(ca.dir.join("signet.db"))
        .arg("SELECT action FROM audit_log WHERE action LIKE 'config.%' ORDER BY seq"));
    let actions = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        actions.lines().collect::<Vec<_>>(),
        [
            "config.reload_refused",
            "config.reloaded",
            "config.reloaded"
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, text) = signet(&ca, &["audit", "verify"]);
    assert!(ok && text.contains("audit log OK"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_while_its_connection_is_open_is_refused() {
    let crl_dir = tempfile::tempdir().unwrap();
    let crl = crl_dir.path().join("foreign.crl");
    let ca = ca_with_own_offices(&crl);
    foreign_crl(&ca, &[], &crl);
    // The daemon's clock comes from a file libfaketime reads on every call.
    let clock = ca.dir.join("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let d = Daemon::start_with_env(
        &ca,
        &[
            (
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            ),
            ("FAKETIME_TIMESTAMP_FILE", clock.to_str().unwrap()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let mut one = d.client("ra-one").await;
    list(&mut one).await.expect("desk-one works");
    // desk-one's certificate is valid for 365 days; the daemon's clock moves past that.
    std::fs::write(&clock, "+400d\n").unwrap();
    let refused = until_refused(&mut one, Code::Unauthenticated, Duration::from_secs(10)).await;
    assert!(
        refused.message().contains("expired"),
        "{}",
        refused.message()
    );
    std::fs::write(&clock, "+0\n").unwrap();
}

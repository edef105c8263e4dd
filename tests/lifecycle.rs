//! The certificate life cycle against a real SoftHSM token: renewal inside and outside the
//! profile's window (judged by `openssl x509` and `openssl verify`), revocation recorded at
//! once and idempotent per request id, listing with keyset pages and filters, and the audit
//! chain intact after all of it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signet::audit;
use signet::ca::{Authority, CaError, Issued, RenewRequest, RevokeRequest};
use signet::pki::{RevocationReason, San, SubjectSpec};
use signet::store::{BeginOutcome, CertFilter, CertStatus, SqliteStore, Store};

use common::ca::*;
use common::crash::Faulty;

/// A server profile whose renewal window (366 days) covers a fresh one-year certificate.
/// Without the CA/B rules, which would cut a TLS certificate to their validity limit
/// (tests/validators.rs): these tests renew for the years a request asks for.
const RENEWABLE: &str = r#"
[profiles.server_renewable]
kind = "server"
issuers = ["issuing-ec", "issuing-rsa"]
policy_oid = "1.3.6.1.4.1.99999.1.7"
liability = "100,000 CNY"
renewal_window_days = 366
cabf_requirements = false
"#;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn renewal(id: &str, serial: &str, csr: Option<Vec<u8>>) -> RenewRequest {
    RenewRequest {
        request_id: id.into(),
        serial: serial.into(),
        csr,
        validity_years: None,
        approval: request(id, "server", vec![]).approval,
    }
}

fn revocation(id: &str, serial: &str, reason: RevocationReason) -> RevokeRequest {
    RevokeRequest {
        request_id: id.into(),
        serial: serial.into(),
        reason,
        // Reported now: a report may not predate the certificate, issued moments ago.
        reported_at: Some(now()),
        comment: "申请人报告USB令牌丢失 / token reported lost".into(),
    }
}

/// Issue a certificate of `profile` (`server` or `server_renewable`, with a server's names)
/// as request `id`, for a fresh P-256 key.
async fn issue_fresh(t: &TestCa, id: &str, profile: &str) -> Issued {
    let dir = t.dir.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let csr = make_csr(&dir, "p256");
    let mut req = request(id, "server", csr);
    req.profile = profile.into();
    t.ca.issue("ra-test", req).await.unwrap()
}

/// A CA with the `server_renewable` profile, and one such certificate issued as "first".
async fn renewable_ca() -> (TestCa, Issued) {
    let t = TestCa::new_with(RENEWABLE).await;
    let old = issue_fresh(&t, "first", "server_renewable").await;
    (t, old)
}

fn write_pem(dir: &Path, name: &str, der: &[u8]) -> PathBuf {
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, pem(der)).unwrap();
    path
}

fn openssl_text(args: &[&str], file: &Path) -> String {
    let o = run(Command::new("openssl").args(args).arg(file));
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Subject and SANs as openssl prints them.
fn names(cert: &Path) -> String {
    openssl_text(
        &[
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "utf8,sep_comma_plus",
            "-ext",
            "subjectAltName",
            "-in",
        ],
        cert,
    )
}

fn cert_pubkey(cert: &Path) -> String {
    openssl_text(&["x509", "-noout", "-pubkey", "-in"], cert)
}

fn verify(t: &TestCa, issued: &Issued, path: &Path) {
    let (ok, text) = openssl_verify(
        &t.root_pem(),
        &t.issuer_pem(&issued.record.issuer),
        path,
        "sslserver",
    );
    assert!(ok, "openssl verify: {text}");
}

/// Check that `e` refuses the request as invalid, naming `field`.
fn assert_invalid(e: &CaError, field: &str) {
    assert!(
        matches!(e, CaError::Invalid { field: f, .. } if f == field),
        "{e}"
    );
}

fn utc_date(t: i64) -> String {
    der::DateTime::from_unix_duration(Duration::from_secs(t as u64))
        .unwrap()
        .to_string()[..10]
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_inside_the_window_keeps_names_profile_and_key_and_links_the_old_certificate() {
    let (t, old) = renewable_ca().await;
    let new =
        t.ca.renew("ra-test", renewal("renew-1", &old.record.serial, None))
            .await
            .unwrap();

    assert_ne!(new.record.serial, old.record.serial);
    assert_eq!(
        new.record.renewed_from.as_deref(),
        Some(old.record.serial.as_str())
    );
    assert_eq!(new.record.profile, "server_renewable");
    assert_eq!(new.record.issuer, old.record.issuer);
    assert_eq!(new.record.status, CertStatus::Valid);
    // Without a CSR the old record's CSR is kept as this record's.
    assert_eq!(new.record.csr_der, old.record.csr_der);
    // Validity starts now and runs the old certificate's one year.
    assert!(new.record.not_before >= old.record.not_before);
    assert!(new.record.not_after - new.record.not_before <= 366 * 86_400);

    let dir = t.dir.join("first");
    let old_pem = write_pem(&dir, "old", &old.cert_der);
    let new_pem = write_pem(&dir, "new", &new.cert_der);
    verify(&t, &new, &new_pem);
    let old_names = names(&old_pem);
    assert!(old_names.contains("DNS:www.example.cn"), "{old_names}");
    assert_eq!(names(&new_pem), old_names);
    assert_eq!(cert_pubkey(&new_pem), cert_pubkey(&old_pem));

    // The stored record says the same as the answer.
    let stored = t.ca.certificate(&new.record.serial).await.unwrap();
    assert_eq!(stored, new.record);

    // A renewed certificate renews like any other, keeping the names once more.
    let third =
        t.ca.renew("ra-test", renewal("renew-2", &new.record.serial, None))
            .await
            .unwrap();
    assert_eq!(
        third.record.renewed_from.as_deref(),
        Some(new.record.serial.as_str())
    );
    let third_pem = write_pem(&dir, "third", &third.cert_der);
    assert_eq!(names(&third_pem), old_names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_interrupted_before_commit_is_finished_by_a_retry_with_the_same_serial() {
    let (t, old) = renewable_ca().await;
    let crashing: Arc<dyn Store> = Arc::new(Faulty::before_commit(
        SqliteStore::open(&t.cfg.store_path()).unwrap(),
    ));
    let crashing_ca = Authority::open(&t.cfg, t.hsm.clone(), crashing)
        .await
        .unwrap();
    let req = renewal("renew-1", &old.record.serial, None);
    let e = crashing_ca.renew("ra-test", req.clone()).await.unwrap_err();
    assert!(matches!(e, CaError::Unavailable(_)), "{e:?}");
    let pending = t
        .store
        .certificate_by_request("ra-test", "renew-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.status, CertStatus::Pending);
    assert_eq!(
        pending.renewed_from.as_deref(),
        Some(old.record.serial.as_str())
    );
    // Pending records are not shown.
    assert!(matches!(
        t.ca.certificate(&pending.serial).await,
        Err(CaError::NotFound(_))
    ));
    let done = t.ca.renew("ra-test", req).await.unwrap();
    assert_eq!(done.record.serial, pending.serial);
    assert_eq!(done.record.renewed_from, pending.renewed_from);
    assert_eq!(t.issued_count().await, 2);
    let path = write_pem(&t.dir, "resumed", &done.cert_der);
    verify(&t, &done, &path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_a_new_csr_certifies_the_new_key() {
    let (t, old) = renewable_ca().await;
    let dir = t.dir.join("rekey");
    std::fs::create_dir_all(&dir).unwrap();
    let csr = make_csr(&dir, "rsa2048");
    let mut req = renewal("renew-rekey", &old.record.serial, Some(csr.clone()));
    req.validity_years = Some(2);
    let new = t.ca.renew("ra-test", req).await.unwrap();
    assert_eq!(new.record.csr_der, csr);

    let old_pem = write_pem(&dir, "old", &old.cert_der);
    let new_pem = write_pem(&dir, "new", &new.cert_der);
    verify(&t, &new, &new_pem);
    let csr_path = dir.join("rsa2048.csr");
    let csr_key = openssl_text(
        &["req", "-inform", "DER", "-noout", "-pubkey", "-in"],
        &csr_path,
    );
    assert_eq!(cert_pubkey(&new_pem), csr_key);
    assert_ne!(cert_pubkey(&new_pem), cert_pubkey(&old_pem));
    assert_eq!(names(&new_pem), names(&old_pem));
    assert!(new.record.not_after - new.record.not_before > 700 * 86_400);

    // A CSR whose self-signature is broken is refused as at issuance.
    let mut bad = csr;
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let e =
        t.ca.renew(
            "ra-test",
            renewal("renew-bad", &old.record.serial, Some(bad)),
        )
        .await
        .unwrap_err();
    assert_invalid(&e, "csr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_retried_with_the_same_request_id_returns_the_same_certificate() {
    let (t, old) = renewable_ca().await;
    let req = renewal("renew-1", &old.record.serial, None);
    let a = t.ca.renew("ra-test", req.clone()).await.unwrap();
    let b = t.ca.renew("ra-test", req.clone()).await.unwrap();
    assert_eq!(a.record.serial, b.record.serial);
    assert_eq!(a.cert_der, b.cert_der);
    // Still the same answer once the old certificate is revoked (superseded).
    t.ca.revoke(
        "ra-test",
        revocation("rev-1", &old.record.serial, RevocationReason::Superseded),
    )
    .await
    .unwrap();
    let c = t.ca.renew("ra-test", req.clone()).await.unwrap();
    assert_eq!(c.cert_der, a.cert_der);
    // The same id with another body is refused, naming the first certificate.
    let mut other = req;
    other.validity_years = Some(2);
    match t.ca.renew("ra-test", other).await {
        Err(CaError::AlreadyExists { serial, .. }) => assert_eq!(serial, a.record.serial),
        other => panic!("{other:?}"),
    }
    // One record per request: the issued, the renewed.
    assert_eq!(t.issued_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_outside_the_window_fails_naming_the_date_the_window_opens() {
    let t = TestCa::new().await;
    let old = issue_fresh(&t, "first", "server").await;
    let e =
        t.ca.renew("ra-test", renewal("renew-1", &old.record.serial, None))
            .await
            .unwrap_err();
    let opens = utc_date(old.record.not_after - 90 * 86_400);
    match &e {
        CaError::FailedPrecondition(m) => assert!(m.contains(&opens), "{opens} not in {m}"),
        other => panic!("{other:?}"),
    }
    // Nothing was recorded.
    assert_eq!(t.issued_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_revoked_unknown_or_stale_agreement_certificate_is_refused() {
    let (t, old) = renewable_ca().await;

    let mut stale = renewal("renew-stale", &old.record.serial, None);
    stale.approval.agreement_version = "2020-01".into();
    let e = t.ca.renew("ra-test", stale).await.unwrap_err();
    assert!(matches!(e, CaError::FailedPrecondition(_)), "{e}");

    t.ca.revoke(
        "ra-test",
        revocation("rev-1", &old.record.serial, RevocationReason::KeyCompromise),
    )
    .await
    .unwrap();
    let e =
        t.ca.renew("ra-test", renewal("renew-1", &old.record.serial, None))
            .await
            .unwrap_err();
    match &e {
        CaError::FailedPrecondition(m) => assert!(m.contains("revoked"), "{m}"),
        other => panic!("{other:?}"),
    }
    let e =
        t.ca.renew("ra-test", renewal("renew-2", "7fffffffffffffff01", None))
            .await
            .unwrap_err();
    assert!(matches!(e, CaError::NotFound(_)), "{e}");
    let e =
        t.ca.renew("ra-test", renewal("renew-3", "not hex", None))
            .await
            .unwrap_err();
    assert_invalid(&e, "serial");
    assert_eq!(t.issued_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_shows_at_once_with_reason_report_time_comment_and_actor() {
    let t = TestCa::new().await;
    let issued = issue_fresh(&t, "first", "server").await;
    let before = now();
    let req = revocation(
        "rev-1",
        &issued.record.serial,
        RevocationReason::KeyCompromise,
    );
    let r = t.ca.revoke("ra-office-2", req.clone()).await.unwrap();
    assert!(!r.already_revoked);

    let rec = t.ca.certificate(&issued.record.serial).await.unwrap();
    assert_eq!(rec, r.record);
    assert_eq!(rec.status, CertStatus::Revoked);
    let info = rec.revocation.expect("revocation recorded");
    assert_eq!(info.reason, RevocationReason::KeyCompromise);
    assert_eq!(info.reported_at, req.reported_at);
    assert_eq!(info.comment, req.comment);
    assert_eq!(info.revoked_by, "ra-office-2");
    assert!(info.revoked_at >= before && info.revoked_at <= now());

    // The serial as openssl prints it (upper case) names the same certificate.
    let upper = issued.record.serial.to_uppercase();
    assert_eq!(t.ca.certificate(&upper).await.unwrap().serial, rec.serial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_twice_is_idempotent_and_conflicting_or_bad_requests_are_refused() {
    let t = TestCa::new().await;
    let csr = make_csr(&t.dir, "p256");
    let a =
        t.ca.issue("ra-test", request("a", "server", csr.clone()))
            .await
            .unwrap();
    let b =
        t.ca.issue("ra-test", request("b", "server", csr))
            .await
            .unwrap();
    let req = revocation(
        "rev-1",
        &a.record.serial,
        RevocationReason::CessationOfOperation,
    );
    let first = t.ca.revoke("ra-test", req.clone()).await.unwrap();
    assert!(!first.already_revoked);

    // The same request again: the same answer.
    assert_eq!(t.ca.revoke("ra-test", req.clone()).await.unwrap(), first);

    // A new request for the revoked certificate: already revoked, record unchanged.
    let again = revocation("rev-2", &a.record.serial, RevocationReason::KeyCompromise);
    let second = t.ca.revoke("ra-test", again).await.unwrap();
    assert!(second.already_revoked);
    assert_eq!(second.record, first.record);
    assert_eq!(
        t.ca.certificate(&a.record.serial).await.unwrap(),
        first.record
    );

    // The same request id for another certificate.
    let mut other = req.clone();
    other.serial = b.record.serial.clone();
    match t.ca.revoke("ra-test", other).await {
        Err(CaError::AlreadyExists { serial, .. }) => assert_eq!(serial, a.record.serial),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        t.ca.certificate(&b.record.serial).await.unwrap().status,
        CertStatus::Valid
    );

    let e =
        t.ca.revoke(
            "ra-test",
            revocation("rev-3", "7fffffffffffffff01", RevocationReason::Unspecified),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CaError::NotFound(_)), "{e}");

    let mut future = revocation("rev-4", &b.record.serial, RevocationReason::KeyCompromise);
    future.reported_at = Some(now() + 86_400);
    let e = t.ca.revoke("ra-test", future).await.unwrap_err();
    assert_invalid(&e, "reported_at");
    let mut early = revocation("rev-4b", &b.record.serial, RevocationReason::KeyCompromise);
    early.reported_at = Some(b.record.not_before - 1);
    let e = t.ca.revoke("ra-test", early).await.unwrap_err();
    assert_invalid(&e, "reported_at");

    let mut long = revocation("rev-5", &b.record.serial, RevocationReason::KeyCompromise);
    long.comment = "x".repeat(1001);
    let e = t.ca.revoke("ra-test", long).await.unwrap_err();
    assert_invalid(&e, "comment");

    // Certificate hold is recorded like any other reason.
    let hold =
        t.ca.revoke(
            "ra-test",
            revocation("rev-6", &b.record.serial, RevocationReason::CertificateHold),
        )
        .await
        .unwrap();
    assert_eq!(
        hold.record.revocation.map(|r| r.reason),
        Some(RevocationReason::CertificateHold)
    );
}

/// What the test issued, to compute each filter's expected set independently of the store.
struct Made {
    profile: &'static str,
    ra: &'static str,
    cn: String,
    years: u32,
    revoked: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_return_every_issued_certificate_once_and_filters_return_exact_sets() {
    let t = TestCa::new().await;
    let csr = make_csr(&t.dir, "p256");
    let mut made: BTreeMap<String, Made> = BTreeMap::new();
    for i in 0..25u32 {
        let profile = if i % 2 == 0 { "personal" } else { "server" };
        let ra = if i % 3 == 0 { "ra-east" } else { "ra-west" };
        let years = if i % 4 == 0 { 2 } else { 1 };
        let mut req = request(&format!("list-{i}"), profile, csr.clone());
        let cn = if profile == "server" {
            let host = format!("www{i}.example.cn");
            req.sans = vec![San::Dns(host.clone())];
            host
        } else {
            req.sans = vec![];
            format!("张三{i}")
        };
        req.subject = SubjectSpec::from_pairs([("C", "CN"), ("CN", cn.as_str())]).unwrap();
        req.validity_years = years;
        let issued = t.ca.issue(ra, req).await.unwrap();
        let revoked = i % 5 == 0;
        if revoked {
            t.ca.revoke(
                ra,
                revocation(
                    &format!("rev-{i}"),
                    &issued.record.serial,
                    RevocationReason::AffiliationChanged,
                ),
            )
            .await
            .unwrap();
        }
        made.insert(
            issued.record.serial,
            Made {
                profile,
                ra,
                cn,
                years,
                revoked,
            },
        );
    }
    // A pending row, as a crash between recording and signing leaves one.
    let mut pending = t
        .store
        .certificate(made.keys().next().unwrap())
        .await
        .unwrap()
        .unwrap();
    pending.serial = "7e0000000000000000000000000000aa".into();
    pending.request_id = "crashed".into();
    pending.cert_der = None;
    pending.status = CertStatus::Pending;
    pending.revocation = None;
    assert!(matches!(
        t.store.begin_issuance(pending.clone()).await.unwrap(),
        BeginOutcome::Started(_)
    ));

    // Page through everything, seven at a time.
    let mut seen: Vec<String> = Vec::new();
    let mut token = None;
    loop {
        let page = t.ca.list(CertFilter::default(), token, 7).await.unwrap();
        assert!(page.records.len() <= 7);
        assert!(page.records.iter().all(|r| r.status != CertStatus::Pending));
        // Everything but signet's own delegated OCSP responder certificates.
        seen.extend(
            page.records
                .into_iter()
                .filter(|r| r.profile != "ocsp_responder")
                .map(|r| r.serial),
        );
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a record came twice");
    assert_eq!(
        unique,
        made.keys().collect::<BTreeSet<_>>(),
        "every issued record exactly once"
    );

    // Each filter returns exactly the set computed from what was issued.
    let list_all = |filter: CertFilter| {
        let ca = &t.ca;
        async move {
            let mut out = BTreeSet::new();
            let mut token = None;
            loop {
                let page = ca.list(filter.clone(), token, 7).await.unwrap();
                out.extend(
                    page.records
                        .into_iter()
                        .filter(|r| r.profile != "ocsp_responder")
                        .map(|r| r.serial),
                );
                match page.next_page_token {
                    Some(next) => token = Some(next),
                    None => return out,
                }
            }
        }
    };
    let expect = |pred: &dyn Fn(&Made) -> bool| -> BTreeSet<String> {
        made.iter()
            .filter(|(_, m)| pred(m))
            .map(|(s, _)| s.clone())
            .collect()
    };
    let f = CertFilter::default;

    let revoked = list_all(CertFilter {
        status: Some(CertStatus::Revoked),
        ..f()
    })
    .await;
    assert_eq!(revoked, expect(&|m| m.revoked));
    assert_eq!(revoked.len(), 5);
    let valid = list_all(CertFilter {
        status: Some(CertStatus::Valid),
        ..f()
    })
    .await;
    assert_eq!(valid, expect(&|m| !m.revoked));
    let pend = list_all(CertFilter {
        status: Some(CertStatus::Pending),
        ..f()
    })
    .await;
    assert_eq!(pend, BTreeSet::from([pending.serial.clone()]));

    let server = list_all(CertFilter {
        profile: Some("server".into()),
        ..f()
    })
    .await;
    assert_eq!(server, expect(&|m| m.profile == "server"));
    let allowed = list_all(CertFilter {
        profiles: Some(vec!["personal".into(), "device".into()]),
        ..f()
    })
    .await;
    assert_eq!(allowed, expect(&|m| m.profile == "personal"));

    let east = list_all(CertFilter {
        ra: Some("ra-east".into()),
        ..f()
    })
    .await;
    assert_eq!(east, expect(&|m| m.ra == "ra-east"));

    let subject = list_all(CertFilter {
        subject_contains: Some("张三1".into()),
        ..f()
    })
    .await;
    let want = expect(&|m| m.cn.contains("张三1"));
    assert_eq!(subject, want);
    assert!(!want.is_empty());

    let horizon = now() + 548 * 86_400; // about eighteen months
    let expiring = list_all(CertFilter {
        expiring_before: Some(horizon),
        ..f()
    })
    .await;
    assert_eq!(expiring, expect(&|m| m.years == 1));
    let expiring_valid = list_all(CertFilter {
        expiring_before: Some(horizon),
        status: Some(CertStatus::Valid),
        ra: Some("ra-west".into()),
        ..f()
    })
    .await;
    assert_eq!(
        expiring_valid,
        expect(&|m| m.years == 1 && !m.revoked && m.ra == "ra-west")
    );

    let e =
        t.ca.list(CertFilter::default(), Some("garbage".into()), 7)
            .await
            .unwrap_err();
    assert_invalid(&e, "page_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_verifies_after_renewals_and_revocations_and_names_them() {
    let (t, old) = renewable_ca().await;
    let new =
        t.ca.renew("ra-test", renewal("renew-1", &old.record.serial, None))
            .await
            .unwrap();
    t.ca.revoke(
        "ra-test",
        revocation("rev-1", &old.record.serial, RevocationReason::Superseded),
    )
    .await
    .unwrap();
    // Already revoked: no second entry.
    t.ca.revoke(
        "ra-test",
        revocation("rev-2", &old.record.serial, RevocationReason::KeyCompromise),
    )
    .await
    .unwrap();

    let log = t.store.audit_entries(1, 10_000).await.unwrap();
    assert_eq!(audit::verify_chain(&log), Ok(log.len()));
    let renewed: Vec<_> = log
        .iter()
        .filter(|e| e.event.action == "certificate.renewed")
        .collect();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].event.object, new.record.serial);
    assert!(renewed[0].event.detail.contains(&old.record.serial));
    let revoked: Vec<_> = log
        .iter()
        .filter(|e| e.event.action == "certificate.revoked")
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].event.object, old.record.serial);
    assert!(revoked[0].event.detail.contains("superseded"));
}

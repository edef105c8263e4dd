//! The RA API against the real daemon (`signet serve` as a child process on SoftHSM): mutual
//! TLS that refuses strangers at the handshake, RA identity and permissions, BadRequest
//! details, health and reflection, exactly-once issuance under concurrent retries, and a
//! clean stop (SIGTERM) and crash (SIGKILL) under load.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::api::*;
use common::ca::{make_csr, openssl_verify, pem, run};
use signet::api::pb;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;

/// A fresh P-256 CSR (DER) under `dir`, distinct per `tag`.
fn csr(dir: &std::path::Path, tag: &str) -> Vec<u8> {
    let d = dir.join(format!("csr-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    make_csr(&d, "p256")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_over_mutual_tls_gives_a_certificate_openssl_verifies_and_the_chain_matches() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let req = issue_request("it-1", "server", csr(&ca.dir, "1"));
    let r = c.issue(req.clone()).await.expect("issue").into_inner();
    assert!(!r.serial.is_empty());
    assert_eq!(r.chain.len(), 2, "issuing CA and root");
    let leaf = ca.dir.join("leaf.pem");
    let root = ca.dir.join("root.pem");
    let issuer = ca.dir.join("issuer.pem");
    std::fs::write(&leaf, pem(&r.certificate)).unwrap();
    std::fs::write(&issuer, pem(&r.chain[0])).unwrap();
    std::fs::write(&root, pem(&r.chain[1])).unwrap();
    let (ok, text) = openssl_verify(&root, &issuer, &leaf, "sslserver");
    assert!(ok, "{text}");

    // The same request id and body: the same certificate.
    let again = c.issue(req).await.expect("retry").into_inner();
    assert_eq!(again.certificate, r.certificate);

    // The chain of the whole hierarchy, and its .p7b, which openssl reads.
    let chain = c
        .get_ca_chain(pb::GetCaChainRequest::default())
        .await
        .expect("chain")
        .into_inner();
    assert_eq!(chain.certificates.len(), 4, "root and three issuing CAs");
    assert_eq!(chain.certificates[0], r.chain[1], "root first");
    let p7b = ca.dir.join("chain.p7b");
    std::fs::write(&p7b, &chain.p7b).unwrap();
    let o = run(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-noout", "-in"])
        .arg(&p7b));
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && listed.contains("Signet Test Root"),
        "{listed}"
    );
    let one = c
        .get_ca_chain(pb::GetCaChainRequest {
            issuer: "issuing-ec".into(),
        })
        .await
        .expect("chain of one issuer")
        .into_inner();
    assert_eq!(one.certificates.len(), 2);
    let e = c
        .get_ca_chain(pb::GetCaChainRequest {
            issuer: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// The names of the services that server reflection `$version` (`v1` or `v1alpha`) lists
/// over `$channel`.
macro_rules! reflected_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let mut refl = ServerReflectionClient::new($channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = refl
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect(concat!("reflection ", stringify!($version)))
            .into_inner();
        let resp = stream.message().await.unwrap().expect("a response");
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("not a service list: {resp:?}");
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_and_reflection_lists_the_service_on_the_mtls_port() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let channel = signet::api::client::connect(&d.settings("ra-one"))
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let mut serving = false;
    for _ in 0..50 {
        let r = health
            .check(HealthCheckRequest {
                service: "signet.v1.CertificateAuthority".into(),
            })
            .await
            .expect("health check")
            .into_inner();
        if r.status == ServingStatus::Serving as i32 {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serving, "health never became SERVING:\n{}", d.log_text());
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(overall.status, ServingStatus::Serving as i32);

    let names = reflected_services!(v1, channel.clone());
    assert!(
        names.contains(&"signet.v1.CertificateAuthority".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    let names = reflected_services!(v1alpha, channel);
    assert!(
        names
            .iter()
            .any(|name| name == "signet.v1.CertificateAuthority")
    );
}

/// Connect with `identity` (or none) trusting the test TLS root, and make one call. Returns
/// the error: connecting or calling must fail.
async fn call_with(d: &Daemon, identity: Option<(&str, &str)>) -> String {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&d.tls_root).unwrap()))
        .domain_name("127.0.0.1");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    let channel = match Endpoint::from_shared(d.endpoint.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
    {
        Ok(c) => c,
        Err(e) => return format!("connect: {e:?}"),
    };
    let mut c = pb::certificate_authority_client::CertificateAuthorityClient::new(channel);
    match c.get_ca_chain(pb::GetCaChainRequest::default()).await {
        Ok(_) => panic!("a call without an acceptable client certificate succeeded"),
        Err(s) => {
            assert_ne!(
                s.code(),
                Code::PermissionDenied,
                "refused after the handshake, not at it: {s:?}"
            );
            format!("call: {s:?}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_fails_without_a_client_certificate_or_with_a_foreign_expired_or_server_only_one_and_is_logged()
 {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let t = &ca.tls;
    let none = call_with(&d, None).await;
    let foreign = call_with(
        &d,
        Some((
            t.pem("foreign").to_str().unwrap(),
            t.key("foreign").to_str().unwrap(),
        )),
    )
    .await;
    let expired = call_with(
        &d,
        Some((
            t.pem("expired").to_str().unwrap(),
            t.key("expired").to_str().unwrap(),
        )),
    )
    .await;
    // A certificate for servers only (extendedKeyUsage serverAuth), from the trusted CA.
    let server_only = call_with(
        &d,
        Some((
            t.pem("server").to_str().unwrap(),
            t.key("server").to_str().unwrap(),
        )),
    )
    .await;
    eprintln!(
        "no certificate: {none}\nforeign: {foreign}\nexpired: {expired}\nserver only: {server_only}"
    );
    // When the client reads rustls' alert before the connection closes, it says why.
    for (got, alert) in [
        (&none, "CertificateRequired"),
        (&foreign, "UnknownCA"),
        (&expired, "CertificateExpired"),
    ] {
        assert!(
            !got.contains("alert") || got.contains(alert),
            "expected {alert}: {got}"
        );
    }
    // Each refusal leaves one log line with the peer's address and rustls' reason; the
    // same refusal from the same address again within 10 s leaves none.
    for _ in 0..3 {
        call_with(&d, None).await;
    }
    let reasons = [
        "no client certificate",
        "client certificate from an unknown CA",
        "client certificate expired",
        "certificate not for client authentication",
    ];
    let refusals = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("TLS handshake refused"))
            .map(str::to_owned)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = refusals(&d.log_text());
    while lines.len() < reasons.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lines = refusals(&d.log_text());
    }
    eprintln!("{lines:#?}");
    for reason in reasons {
        let with: Vec<&String> = lines.iter().filter(|l| l.contains(reason)).collect();
        assert_eq!(with.len(), 1, "{reason}: {lines:#?}");
        assert!(with[0].contains("peer=127.0.0.1:"), "{}", with[0]);
    }
    assert_eq!(lines.len(), reasons.len(), "{lines:#?}");
    // The daemon saw the handshakes fail; it never got as far as identifying an RA.
    let log = d.log_text();
    assert!(!log.contains("is not a configured RA"), "{log}");
    // A good RA still gets in afterwards.
    let mut c = d.client("ra-one").await;
    c.get_ca_chain(pb::GetCaChainRequest::default())
        .await
        .expect("a configured RA is served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_certificate_of_no_configured_ra_is_permission_denied() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    for who in ["stranger", "ra-two-other-key"] {
        let mut c = d.client(who).await;
        let e = c
            .issue(issue_request("x-1", "device", csr(&ca.dir, who)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{who}: {e:?}");
        assert!(e.message().contains("is not a configured RA"), "{e:?}");
    }
    assert_eq!(count_rows(&ca), 0);
    // desk-two matches by subject and key, the auditor by key alone.
    let mut two = d.client("ra-two").await;
    two.issue(issue_request("two-1", "device", csr(&ca.dir, "two")))
        .await
        .expect("desk-two issues a device certificate");
    let mut auditor = d.client("auditor").await;
    auditor
        .get_ca_chain(pb::GetCaChainRequest::default())
        .await
        .expect("the auditor reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ra_outside_its_profiles_or_operations_is_denied_and_nothing_is_stored() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut one = d.client("ra-one").await;
    let e = one
        .issue(issue_request("p-1", "device", csr(&ca.dir, "p1")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("device"), "{e:?}");
    let mut auditor = d.client("auditor").await;
    let e = auditor
        .issue(issue_request("p-2", "server", csr(&ca.dir, "p2")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(count_rows(&ca), 0, "a refused request leaves no row");
    let listed = auditor
        .list_certificates(pb::ListCertificatesRequest {
            status: pb::CertificateStatus::Pending as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.certificates.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_carry_a_bad_request_naming_the_field() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let field_of = |s: &tonic::Status| {
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        s.get_details_bad_request()
            .expect("BadRequest detail")
            .field_violations[0]
            .field
            .clone()
    };
    let mut req = issue_request("bad-1", "server", b"garbage".to_vec());
    let e = c.issue(req.clone()).await.unwrap_err();
    assert_eq!(field_of(&e), "csr");
    req.csr = csr(&ca.dir, "bad");
    req.subject.push(pb::SubjectAttribute {
        r#type: "XX".into(),
        value: "y".into(),
    });
    let e = c.issue(req.clone()).await.unwrap_err();
    assert_eq!(field_of(&e), "subject[1].type");
    req.subject.pop();
    req.sans[1] = pb::SubjectAltName {
        name: Some(pb::subject_alt_name::Name::Ip("not-an-ip".into())),
    };
    let e = c.issue(req.clone()).await.unwrap_err();
    assert_eq!(field_of(&e), "sans[1].ip");
    req.sans.truncate(1);
    req.validity_years = 5;
    let e = c.issue(req.clone()).await.unwrap_err();
    assert_eq!(field_of(&e), "validity_years");
    req.validity_years = 1;
    req.approval = None;
    let e = c.issue(req).await.unwrap_err();
    assert_eq!(field_of(&e), "approval");
    assert_eq!(count_rows(&ca), 0);
}

/// The fields a refusal's BadRequest names, in order; the code must be INVALID_ARGUMENT.
fn violated_fields(s: &tonic::Status) -> Vec<String> {
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    s.get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_of_a_request_is_named_in_one_bad_request() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    // Five fields wrong at once: two the API layer finds converting the message, three the
    // authority finds validating it.
    let mut req = issue_request("many-1", "server", b"garbage".to_vec());
    req.subject.push(pb::SubjectAttribute {
        r#type: "XX".into(),
        value: "y".into(),
    });
    req.sans[1] = pb::SubjectAltName {
        name: Some(pb::subject_alt_name::Name::Ip("not-an-ip".into())),
    };
    req.validity_years = 5;
    if let Some(a) = req.approval.as_mut() {
        a.officer.clear();
    }
    let e = c.issue(req).await.unwrap_err();
    let fields: BTreeSet<String> = violated_fields(&e).into_iter().collect();
    let want: BTreeSet<String> = [
        "subject[1].type",
        "sans[1].ip",
        "approval.officer",
        "csr",
        "validity_years",
    ]
    .map(String::from)
    .into();
    assert_eq!(fields, want, "{e:?}");
    assert!(e.message().contains("validity_years"), "{e:?}");

    // The same when every problem is the authority's to find.
    let mut req = issue_request("", "server", b"garbage".to_vec());
    req.validity_years = 3;
    req.issuer = "issuing-tls".into();
    let e = c.issue(req).await.unwrap_err();
    assert_eq!(
        violated_fields(&e),
        ["request_id", "issuer", "csr", "validity_years"],
        "{e:?}"
    );

    // Revocation, renewal and listing name every bad field too.
    let e = c
        .revoke(pb::RevokeRequest {
            reported_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..revoke_request("", "not hex", pb::RevocationReason::RemoveFromCrl)
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&e),
        ["reason", "reported_at", "request_id", "serial"],
        "{e:?}"
    );
    let e = c
        .renew(pb::RenewRequest {
            validate_only: false,
            request_id: "r\u{7}".into(),
            serial: String::new(),
            csr: Vec::new(),
            validity_years: None,
            approval: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&e),
        ["approval", "request_id", "serial"],
        "{e:?}"
    );
    let e = c
        .list_certificates(pb::ListCertificatesRequest {
            status: 42,
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&e), ["status", "page_size"], "{e:?}");
    assert_eq!(count_rows(&ca), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_profile_is_invalid_argument_and_a_profile_not_granted_is_permission_denied() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut one = d.client("ra-one").await;
    let mut req = issue_request("prof-1", "server", csr(&ca.dir, "prof"));
    req.profile = "vip".into();
    let e = one.issue(req.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&e), ["profile"], "{e:?}");
    // It names what the RA may use instead, and no more.
    assert!(
        e.message().contains("organization, personal, server") && !e.message().contains("device"),
        "{e:?}"
    );
    // With the request's other problems.
    req.approval = None;
    let e = one.issue(req.clone()).await.unwrap_err();
    assert_eq!(violated_fields(&e), ["approval", "profile"], "{e:?}");
    req.profile.clear();
    let e = one.issue(req).await.unwrap_err();
    assert_eq!(violated_fields(&e), ["approval", "profile"], "{e:?}");
    // A listing filtered by a profile that does not exist.
    let e = one
        .list_certificates(pb::ListCertificatesRequest {
            profile: "vip".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&e), ["profile"], "{e:?}");
    // A configured profile this RA was not granted stays PERMISSION_DENIED, bad fields or not.
    let mut req = issue_request("prof-2", "device", b"garbage".to_vec());
    req.approval = None;
    let e = one.issue(req).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = one
        .list_certificates(pb::ListCertificatesRequest {
            profile: "device".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_eq!(count_rows(&ca), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_chosen_text_is_escaped_in_the_log_and_denied_ras_are_named() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut one = d.client("ra-one").await;
    // A right-to-left override would reverse the rest of the line on a terminal; an escape
    // sequence would colour it; a newline would forge a line of its own.
    let id = "evil\u{202e}gpj.exe\u{1b}[31mred\nINFO forged";
    let e = one
        .issue(issue_request(id, "server", csr(&ca.dir, "evil")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A refused Revoke and a PERMISSION_DENIED are logged with the id as well.
    one.revoke(revoke_request(id, "01", pb::RevocationReason::Superseded))
        .await
        .unwrap_err();
    let mut auditor = d.client("auditor").await;
    let e = auditor
        .issue(issue_request(id, "server", csr(&ca.dir, "evil2")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = one
        .issue(issue_request("den-1", "device", csr(&ca.dir, "den")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    let log = d.log_text();
    let escaped = "evil\\u{202e}gpj.exe\\u{1b}[31mred\\u{a}INFO forged";
    assert!(log.matches(escaped).count() >= 3, "{log}");
    for raw in ['\u{202e}', '\u{1b}'] {
        assert!(!log.contains(raw), "raw {raw:?} in the log:\n{log}");
    }
    assert!(
        !log.lines().any(|l| l.starts_with("INFO forged")),
        "a forged line:\n{log}"
    );
    // PERMISSION_DENIED names the RA whose certificate matched: for the operation it lacks
    // and for the profile it lacks.
    let denied: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("PERMISSION_DENIED"))
        .collect();
    assert!(
        denied.iter().any(|l| l.contains("ra=auditor")),
        "{denied:#?}"
    );
    assert!(
        denied
            .iter()
            .any(|l| l.contains("ra=desk-one") && l.contains("den-1")),
        "{denied:#?}"
    );
    assert!(!denied.iter().any(|l| l.contains("ra=-")), "{denied:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_callers_retrying_eight_request_ids_get_one_certificate_per_id() {
    // Two calls at a time: the others wait for a slot rather than fail.
    let ca = ApiCa::with_api_settings("max_concurrent_requests = 2");
    let d = Daemon::start(&ca);
    let requests: Vec<pb::IssueRequest> = (0..8)
        .map(|i| {
            issue_request(
                &format!("conc-{i}"),
                "server",
                csr(&ca.dir, &format!("c{i}")),
            )
        })
        .collect();
    let mut tasks = Vec::new();
    for caller in 0..32 {
        let settings = d.settings("ra-one");
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = signet::api::client::ca_client(&settings).await.unwrap();
            let mut got = Vec::new();
            // Each caller sends every id twice, starting at a different one.
            for k in 0..16 {
                let req = requests[(caller + k) % 8].clone();
                let r = c.issue(req.clone()).await.expect("issue").into_inner();
                got.push((req.request_id, r.serial, r.certificate));
            }
            got
        }));
    }
    let mut by_id: BTreeMap<String, BTreeSet<(String, Vec<u8>)>> = BTreeMap::new();
    for t in tasks {
        for (id, serial, der) in t.await.unwrap() {
            by_id.entry(id).or_default().insert((serial, der));
        }
    }
    assert_eq!(by_id.len(), 8);
    for (id, answers) in &by_id {
        assert_eq!(
            answers.len(),
            1,
            "{id} got {} different answers",
            answers.len()
        );
    }
    let serials: BTreeSet<_> = by_id.values().flatten().map(|(s, _)| s.clone()).collect();
    assert_eq!(serials.len(), 8);
    assert_eq!(count_rows(&ca), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_deadline_gives_deadline_exceeded_and_a_later_retry_completes_exactly_once() {
    // The client sends no grpc-timeout; the daemon applies default_deadline_ms.
    let ca = ApiCa::with_api_settings("default_deadline_ms = 1");
    let mut d = Daemon::start(&ca);
    let req = issue_request("late-1", "server", csr(&ca.dir, "late"));
    {
        let mut c = d.client("ra-one").await;
        let e = c.issue(req.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    let text = std::fs::read_to_string(&ca.config_path).unwrap();
    std::fs::write(
        &ca.config_path,
        text.replace("default_deadline_ms = 1", "default_deadline_ms = 30000"),
    )
    .unwrap();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let r = c.issue(req.clone()).await.expect("retry").into_inner();
    let again = c.issue(req).await.expect("second retry").into_inner();
    assert_eq!(r.certificate, again.certificate);
    assert_eq!(count_rows(&ca), 1);
}

/// What one load caller saw: certificates received, and the first error (which ends it).
struct LoadResult {
    got: Vec<(String, String, Vec<u8>)>,
    error: Option<tonic::Status>,
    attempted: Vec<pb::IssueRequest>,
}

/// `callers` tasks issuing distinct requests back to back until their first error or
/// `stop` is set. CSRs are made up front (openssl is slow next to the CA).
fn start_load(
    d: &Daemon,
    ca: &ApiCa,
    callers: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Vec<tokio::task::JoinHandle<LoadResult>> {
    let keys: Vec<Vec<u8>> = (0..4).map(|i| csr(&ca.dir, &format!("load{i}"))).collect();
    (0..callers)
        .map(|caller| {
            let settings = d.settings("ra-one");
            let keys = keys.clone();
            let stop = stop.clone();
            let received = received.clone();
            tokio::spawn(async move {
                let mut out = LoadResult {
                    got: Vec::new(),
                    error: None,
                    attempted: Vec::new(),
                };
                let mut c = match signet::api::client::ca_client(&settings).await {
                    Ok(c) => c,
                    Err(e) => {
                        out.error = Some(tonic::Status::unavailable(e.to_string()));
                        return out;
                    }
                };
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let req = issue_request(
                        &format!("load-{caller}-{n}"),
                        "server",
                        keys[n % keys.len()].clone(),
                    );
                    out.attempted.push(req.clone());
                    match c.issue(req.clone()).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            out.got.push((req.request_id, r.serial, r.certificate));
                            received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(s) => {
                            out.error = Some(s);
                            break;
                        }
                    }
                }
                out
            })
        })
        .collect()
}

/// Every certificate a client received is stored as it was sent, verifies, and no serial
/// appears twice; every request id attempted can be completed and yields one row.
async fn check_after_restart(ca: &ApiCa, d: &Daemon, results: &[LoadResult]) {
    let mut c = d.client("ra-one").await;
    let mut serials = BTreeSet::new();
    let mut files = Vec::new();
    for (i, (_, serial, der)) in results.iter().flat_map(|r| &r.got).enumerate() {
        assert!(
            serials.insert(serial.clone()),
            "serial {serial} received twice"
        );
        let stored = c
            .get_certificate(pb::GetCertificateRequest {
                serial: serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("certificate {serial} a client received: {e:?}"))
            .into_inner();
        assert_eq!(
            &stored.certificate, der,
            "{serial} differs from what was sent"
        );
        let f = ca.dir.join(format!("got-{i}.pem"));
        std::fs::write(&f, pem(der)).unwrap();
        files.push(f);
    }
    assert!(
        !files.is_empty(),
        "the load run received no certificate at all"
    );
    let chain = c
        .get_ca_chain(pb::GetCaChainRequest {
            issuer: "issuing-rsa".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let root = ca.dir.join("v-root.pem");
    let issuer = ca.dir.join("v-issuer.pem");
    std::fs::write(&root, pem(&chain.certificates[1])).unwrap();
    std::fs::write(&issuer, pem(&chain.certificates[0])).unwrap();
    let o = run(Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&issuer)
        .args(&files));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(text.matches(": OK").count(), files.len());
    // Every request attempted, retried now, completes once: one row per request id.
    let attempted: Vec<&pb::IssueRequest> = results.iter().flat_map(|r| &r.attempted).collect();
    let received: BTreeSet<&str> = results
        .iter()
        .flat_map(|r| &r.got)
        .map(|(id, _, _)| id.as_str())
        .collect();
    let unanswered: Vec<_> = attempted
        .iter()
        .filter(|r| !received.contains(r.request_id.as_str()))
        .collect();
    eprintln!(
        "{} certificates received, {} requests unanswered; errors: {:?}",
        received.len(),
        unanswered.len(),
        results
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| (e.code(), e.message().to_owned())))
            .collect::<Vec<_>>()
    );
    // A request cut off between its record and its answer left a pending row with its
    // serial reserved; the retry finishes that row under that serial.
    let pending = pending_rows(ca);
    eprintln!("{} pending rows after the restart", pending.len());
    // An RA reconciling by request id sees a pending request as such, with its serial.
    for (id, serial) in &pending {
        let got = c
            .get_certificate(pb::GetCertificateRequest {
                request_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("a pending request by its id")
            .into_inner();
        assert_eq!(got.status, pb::CertificateStatus::Pending as i32);
        assert!(got.certificate.is_empty());
        assert_eq!(&got.serial, serial);
    }
    for req in unanswered {
        let r = c
            .issue((*req).clone())
            .await
            .expect("retry after restart")
            .into_inner();
        if let Some((_, serial)) = pending.iter().find(|(id, _)| *id == req.request_id) {
            assert_eq!(
                &r.serial, serial,
                "the retry of {} changed serial",
                req.request_id
            );
        }
        assert!(
            serials.insert(r.serial.clone()),
            "serial {} of a retry was already used",
            r.serial
        );
    }
    assert_eq!(count_rows(ca), attempted.len() as u64);
    assert_eq!(
        pending_rows(ca),
        Vec::new(),
        "pending rows left after the retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_calls_in_flight_and_exits_zero() {
    let ca = ApiCa::new();
    let mut d = Daemon::start(&ca);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks = start_load(&d, &ca, 12, stop.clone(), received);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    d.signal("TERM");
    let status = tokio::task::block_in_place(|| d.wait(Duration::from_secs(30)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let log = d.log_text();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("shutting down"), "{log}");
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    for r in &results {
        if let Some(s) = &r.error {
            assert!(
                matches!(s.code(), Code::Unavailable | Code::Cancelled),
                "a call failed other than cleanly: {s:?}"
            );
        }
    }
    let d = Daemon::start(&ca);
    check_after_restart(&ca, &d, &results).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_certificate_a_client_received_and_reuses_no_serial() {
    let ca = ApiCa::new();
    let mut d = Daemon::start(&ca);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks = start_load(&d, &ca, 16, stop.clone(), received.clone());
    // A few hundred answered issuances, then the kill in the middle of the load.
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        assert!(
            Instant::now() < deadline,
            "the load made no progress\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.signal("KILL");
    tokio::task::block_in_place(|| d.wait(Duration::from_secs(30)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let d = Daemon::start(&ca);
    check_after_restart(&ca, &d, &results).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_revoke_get_and_list_through_the_api_respect_each_ras_profiles() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut one = d.client("ra-one").await;
    let mut two = d.client("ra-two").await;
    let mut auditor = d.client("auditor").await;
    let server = one
        .issue(issue_request("s-1", "server", csr(&ca.dir, "s1")))
        .await
        .unwrap()
        .into_inner();
    let personal = one
        .issue(issue_request("p-1", "personal", csr(&ca.dir, "p1")))
        .await
        .unwrap()
        .into_inner();
    let device = two
        .issue(issue_request("d-1", "device", csr(&ca.dir, "d1")))
        .await
        .unwrap()
        .into_inner();
    let approval = Some(pb::Approval {
        officer: "王芳".into(),
        ra_reference: "RA-renew".into(),
        agreement_version: common::ca::AGREEMENT.into(),
    });

    // Renewal: inside the window it links the new certificate to the old one.
    let renew = pb::RenewRequest {
        validate_only: false,
        request_id: "r-1".into(),
        serial: personal.serial.clone(),
        csr: Vec::new(),
        validity_years: None,
        approval: approval.clone(),
    };
    let renewed = one.renew(renew.clone()).await.expect("renew").into_inner();
    assert_eq!(renewed.renewed_from, personal.serial);
    assert_ne!(renewed.serial, personal.serial);
    let again = one.renew(renew).await.expect("renew retry").into_inner();
    assert_eq!(again.certificate, renewed.certificate);
    let got = one
        .get_certificate(pb::GetCertificateRequest {
            serial: renewed.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.renewed_from, personal.serial);
    assert_eq!(got.certificate, renewed.certificate);
    assert_eq!(got.ra, "desk-one");
    assert_eq!(got.profile, "personal");
    // Outside the window (a fresh server certificate, 90-day window): FAILED_PRECONDITION.
    let e = one
        .renew(pb::RenewRequest {
            validate_only: false,
            request_id: "r-2".into(),
            serial: server.serial.clone(),
            csr: Vec::new(),
            validity_years: None,
            approval: approval.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Another RA's profile: neither revoke nor read.
    let revoke_device = revoke_request("x-1", &device.serial, pb::RevocationReason::KeyCompromise);
    let e = one.revoke(revoke_device.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = one
        .get_certificate(pb::GetCertificateRequest {
            serial: device.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // desk-two owns the profile but may not revoke at all.
    let e = two.revoke(revoke_device).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = one
        .get_certificate(pb::GetCertificateRequest {
            serial: "0123456789abcdef".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Revocation with reason, report time and comment; revoking again says so.
    // Reported now: a report may not predate the certificate, issued moments ago.
    let reported = common::api::now_unix();
    let r = one
        .revoke(pb::RevokeRequest {
            reported_at: Some(prost_types::Timestamp {
                seconds: reported,
                nanos: 0,
            }),
            comment: "token reported stolen".into(),
            ..revoke_request("v-1", &personal.serial, pb::RevocationReason::KeyCompromise)
        })
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(r.status, pb::CertificateStatus::Revoked as i32);
    assert!(!r.already_revoked);
    let r = one
        .revoke(revoke_request(
            "v-2",
            &personal.serial,
            pb::RevocationReason::Superseded,
        ))
        .await
        .expect("revoke again")
        .into_inner();
    assert!(r.already_revoked);
    let e = one
        .revoke(revoke_request(
            "v-3",
            &server.serial,
            pb::RevocationReason::RemoveFromCrl,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_details_bad_request().unwrap().field_violations[0].field,
        "reason"
    );
    let got = one
        .get_certificate(pb::GetCertificateRequest {
            serial: personal.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::CertificateStatus::Revoked as i32);
    assert_eq!(got.reason, pb::RevocationReason::KeyCompromise as i32);
    assert_eq!(got.reported_at.map(|t| t.seconds), Some(reported));
    assert!(got.revoked_at.is_some());
    assert_eq!(got.revocation_comment, "token reported stolen");

    // Listing: each RA sees only its profiles; paging covers everything once.
    let list =
        |status: pb::CertificateStatus, profile: &str, ra: &str, size: u32, token: String| {
            pb::ListCertificatesRequest {
                status: status as i32,
                profile: profile.into(),
                ra: ra.into(),
                subject_contains: String::new(),
                expiring_before: None,
                page_size: size,
                page_token: token,
                updated_since: None,
            }
        };
    use pb::CertificateStatus as S;
    let seen: BTreeSet<String> = one
        .list_certificates(list(S::Unspecified, "", "", 0, String::new()))
        .await
        .unwrap()
        .into_inner()
        .certificates
        .into_iter()
        .map(|s| s.serial)
        .collect();
    let expected: BTreeSet<String> = [&server.serial, &personal.serial, &renewed.serial]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        seen, expected,
        "desk-one sees its three, not desk-two's device"
    );
    let e = one
        .list_certificates(list(S::Unspecified, "device", "", 0, String::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let revoked = one
        .list_certificates(list(S::Revoked, "", "", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.certificates.len(), 1);
    assert_eq!(revoked.certificates[0].serial, personal.serial);
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = auditor
            .list_certificates(list(S::Unspecified, "", "", 1, token))
            .await
            .unwrap()
            .into_inner();
        assert!(page.certificates.len() <= 1);
        all.extend(page.certificates.into_iter().map(|s| s.serial));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all.len(), 4, "{all:?}");
    let by_two = auditor
        .list_certificates(list(S::Unspecified, "", "desk-two", 0, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_two.certificates.len(), 1);
    assert_eq!(by_two.certificates[0].serial, device.serial);
    // The auditor reads but never writes.
    let e = auditor
        .revoke(revoke_request(
            "a-1",
            &server.serial,
            pb::RevocationReason::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_generated_from_the_proto_issues_a_certificate_openssl_verifies() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let csr_der = csr(&ca.dir, "py");
    let csr_path = ca.dir.join("py.csr.der");
    std::fs::write(&csr_path, csr_der).unwrap();
    let out = ca.dir.join("py-cert.der");
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = run(Command::new("python3")
        .arg(manifest.join("tests/tools/ra_issue.py"))
        .arg("--proto-dir")
        .arg(manifest.join("proto"))
        .arg("--gen-dir")
        .arg(ca.dir.join("py-gen"))
        .arg("--target")
        .arg(format!("127.0.0.1:{}", d.port))
        .arg("--root")
        .arg(ca.tls.pem("root"))
        .arg("--cert")
        .arg(ca.tls.pem("ra-one"))
        .arg("--key")
        .arg(ca.tls.key("ra-one"))
        .arg("--csr")
        .arg(&csr_path)
        .arg("--agreement")
        .arg(common::ca::AGREEMENT)
        .arg("--out")
        .arg(&out));
    assert!(
        o.status.success(),
        "python client: {}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        d.log_text()
    );
    let serial = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let der = std::fs::read(&out).unwrap();
    let mut c = d.client("ra-one").await;
    let stored = c
        .get_certificate(pb::GetCertificateRequest {
            serial: serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.certificate, der);
    let chain = c
        .get_ca_chain(pb::GetCaChainRequest {
            issuer: stored.issuer.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let (leaf, issuer, root) = (
        ca.dir.join("py.pem"),
        ca.dir.join("py-issuer.pem"),
        ca.dir.join("py-root.pem"),
    );
    std::fs::write(&leaf, pem(&der)).unwrap();
    std::fs::write(&issuer, pem(&chain.certificates[0])).unwrap();
    std::fs::write(&root, pem(&chain.certificates[1])).unwrap();
    let (ok, text) = openssl_verify(&root, &issuer, &leaf, "sslclient");
    assert!(ok, "{text}");
}

/// `signet ra issue` arguments: a one-year certificate of `profile` for the CSR file `csr`
/// named `subject`, with the request id, officer and RA reference of `(id, officer,
/// reference)` and the current agreement, followed by `more`.
fn ra_issue_args<'a>(
    profile: &'a str,
    csr: &'a std::path::Path,
    subject: &'a str,
    (id, officer, reference): (&'a str, &'a str, &'a str),
    more: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "issue",
        "--profile",
        profile,
        "--csr",
        csr.to_str().unwrap(),
        "--subject",
        subject,
        "--validity",
        "1",
        "--request-id",
        id,
        "--officer",
        officer,
        "--ra-reference",
        reference,
        "--agreement-version",
        common::ca::AGREEMENT,
    ];
    args.extend_from_slice(more);
    args
}

#[test]
fn signet_ra_issues_gets_lists_revokes_and_fetches_the_chain_and_prints_refusals_with_their_field()
{
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let csr_path = ca.dir.join("cli.csr.der");
    std::fs::write(&csr_path, csr(&ca.dir, "cli")).unwrap();
    let ra = |args: &[&str]| {
        let o = run(Command::new(env!("CARGO_BIN_EXE_signet"))
            .arg("ra")
            .args(args)
            .env("SIGNET_RA_ENDPOINT", &d.endpoint)
            .env("SIGNET_RA_CA_CERT", ca.tls.pem("root"))
            .env("SIGNET_RA_CERT", ca.tls.pem("ra-one"))
            .env("SIGNET_RA_KEY", ca.tls.key("ra-one"))
            .env_remove("SIGNET_CONFIG")
            .env("RUST_LOG", "warn"));
        let (ok, text) = common::status::outcome(&o);
        (ok, String::from_utf8_lossy(&o.stdout).into_owned(), text)
    };
    let cert = ca.dir.join("cli.pem");
    let (ok, _, text) = ra(&ra_issue_args(
        "server",
        &csr_path,
        "CN=www.example.cn",
        ("cli-1", "王芳", "CLI-1"),
        &[
            "--san",
            "dns:www.example.cn",
            "--out",
            cert.to_str().unwrap(),
        ],
    ));
    assert!(ok, "{text}");
    let serial = text
        .split("issued serial ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .expect("serial in the output")
        .to_owned();
    let (ok, out, text) = ra(&["get", "--serial", &serial]);
    assert!(
        ok && out.contains("status:       valid") && out.contains("desk-one"),
        "{text}"
    );
    let (ok, out, text) = ra(&["list", "--profile", "server", "--page-size", "1"]);
    assert!(ok && out.contains(&serial), "{text}");
    let p7b = ca.dir.join("cli.p7b");
    let (ok, out, text) = ra(&["chain", "--p7b", p7b.to_str().unwrap()]);
    assert!(
        ok && out.matches("BEGIN CERTIFICATE").count() == 4,
        "{text}"
    );
    assert!(std::fs::metadata(&p7b).unwrap().len() > 0);
    // Now, written in Beijing time (not before the certificate's notBefore).
    let reported_now_in_beijing = signet::ca::rfc3339(now_unix() + 8 * 3600).replace('Z', "+08:00");
    let (ok, out, text) = ra(&[
        "revoke",
        "--serial",
        &serial,
        "--reason",
        "keyCompromise",
        "--request-id",
        "cli-r1",
        "--reported-at",
        &reported_now_in_beijing,
    ]);
    assert!(ok && out.contains("revoked"), "{text}");
    let (ok, out, text) = ra(&["get", "--serial", &serial]);
    assert!(ok && out.contains("keyCompromise"), "{text}");
    // A refusal: the gRPC code and the field at fault.
    let garbage = ca.dir.join("garbage.csr");
    std::fs::write(&garbage, b"garbage").unwrap();
    let (ok, _, text) = ra(&ra_issue_args(
        "server",
        &garbage,
        "CN=www.example.cn",
        ("cli-2", "王芳", "CLI-2"),
        &["--san", "dns:www.example.cn"],
    ));
    assert!(!ok, "{text}");
    assert!(
        text.contains("INVALID_ARGUMENT") && text.contains("field csr"),
        "{text}"
    );
    let (ok, _, text) = ra(&ra_issue_args(
        "device",
        &csr_path,
        "CN=d",
        ("cli-3", "x", "y"),
        &[],
    ));
    assert!(!ok && text.contains("PERMISSION_DENIED"), "{text}");
}

/// The outcome of one raw call: the code's name, the message and the fields its BadRequest
/// detail names.
struct RawOutcome {
    code: String,
    message: String,
    fields: Vec<String>,
}

/// Send each `(method, payload)` as the raw bytes of a request message from Python's grpcio
/// (its generic unary call: no generated code, no serializer), as RA `who`.
fn raw_calls(ca: &ApiCa, d: &Daemon, who: &str, calls: serde_json::Value) -> Vec<RawOutcome> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = ca.dir.join("raw-calls.json");
    std::fs::write(&input, calls.to_string()).unwrap();
    let o = run(Command::new("python3")
        .arg(manifest.join("tests/tools/raw_grpc.py"))
        .arg("--target")
        .arg(format!("127.0.0.1:{}", d.port))
        .arg("--root")
        .arg(ca.tls.pem("root"))
        .arg("--cert")
        .arg(ca.tls.pem(who))
        .arg("--key")
        .arg(ca.tls.key(who))
        .stdin(std::fs::File::open(&input).unwrap()));
    assert!(
        o.status.success(),
        "raw_grpc.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    out.into_iter()
        .map(|v| {
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            let details = hex::decode(text("status_details_hex")).unwrap();
            let fields = tonic::Status::with_details(Code::Unknown, "", details.into())
                .get_details_bad_request()
                .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
                .unwrap_or_default();
            RawOutcome {
                code: text("code"),
                message: text("details"),
                fields,
            }
        })
        .collect()
}

#[test]
fn malformed_messages_are_invalid_argument_and_oversized_ones_resource_exhausted() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    const ISSUE: &str = "/signet.v1.CertificateAuthority/Issue";
    // Field 4 (csr, bytes) of 5,000,000 bytes: the tag, the length as a varint, the bytes.
    let mut big_prefix = vec![0x22];
    prost::encoding::encode_varint(5_000_000, &mut big_prefix);
    let calls = serde_json::json!([
        // request_id (field 1) holding bytes that are not UTF-8
        {"method": ISSUE, "hex": "0a02fffe"},
        // request_id promises 10 bytes, 3 follow: the message is cut short
        {"method": ISSUE, "hex": "0a0a616263"},
        // request_id sent as a varint: the wrong wire type
        {"method": ISSUE, "hex": "0801"},
        // approval (field 8) whose officer (field 1) is not UTF-8
        {"method": ISSUE, "hex": "42040a02fffe"},
        // a tag with wire type 7, which does not exist
        {"method": ISSUE, "hex": "0f"},
        // over the 4 MiB limit
        {"method": ISSUE, "hex": hex::encode(&big_prefix), "repeat": ["00", 5_000_000]},
        // health and reflection sit behind the same listener
        {"method": "/grpc.health.v1.Health/Check", "hex": "0a02fffe"},
        // a well-formed message still works
        {"method": "/signet.v1.CertificateAuthority/GetCaChain", "hex": ""},
    ]);
    let got = raw_calls(&ca, &d, "ra-one", calls);
    let summary: Vec<(&str, Vec<String>)> = got
        .iter()
        .map(|o| (o.code.as_str(), o.fields.clone()))
        .collect();
    let f = |s: &str| vec![s.to_owned()];
    assert_eq!(
        summary,
        [
            ("INVALID_ARGUMENT", f("request_id")),
            ("INVALID_ARGUMENT", f("request_id")),
            ("INVALID_ARGUMENT", f("request_id")),
            ("INVALID_ARGUMENT", f("approval.officer")),
            ("INVALID_ARGUMENT", f("")),
            ("RESOURCE_EXHAUSTED", vec![]),
            ("INVALID_ARGUMENT", f("service")),
            ("OK", vec![]),
        ],
        "{:#?}",
        got.iter()
            .map(|o| format!("{} {}", o.code, o.message))
            .collect::<Vec<_>>()
    );
    assert!(got[0].message.contains("not UTF-8"), "{}", got[0].message);
    assert!(got[5].message.contains("4194304"), "{}", got[5].message);
    // Each refusal is logged as a call of the RA whose certificate it came with.
    let log = d.log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("does not decode") || l.contains("RESOURCE_EXHAUSTED"))
        .collect();
    eprintln!("{refused:#?}");
    assert_eq!(refused.len(), 7, "{log}");
    assert!(
        refused
            .iter()
            .all(|l| l.contains("ra=desk-one") && l.contains("peer=127.0.0.1:")),
        "{refused:#?}"
    );
    assert!(!log.contains("INTERNAL"), "{log}");
    assert_eq!(count_rows(&ca), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_not_serving_while_the_hsm_is_gone_and_back_when_it_returns() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut ca = ApiCa::behind_p11kit();
    let d = Daemon::start(&ca);
    assert!(
        d.wait_health(ServingStatus::Serving, Duration::from_secs(10))
            .await,
        "{}",
        d.log_text()
    );
    let mut c = d.client("ra-one").await;
    c.issue(issue_request("h-1", "server", csr(&ca.dir, "h1")))
        .await
        .expect("issue while the HSM is there");

    ca.p11kit.as_mut().unwrap().kill();
    assert!(
        d.wait_health(ServingStatus::NotServing, Duration::from_secs(10))
            .await,
        "{}",
        d.log_text()
    );
    let retried = issue_request("h-2", "server", csr(&ca.dir, "h2"));
    let e = c.issue(retried.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(!e.message().contains("CKR_"), "HSM internals leaked: {e:?}");

    ca.p11kit.as_mut().unwrap().restart();
    assert!(
        d.wait_health(ServingStatus::Serving, Duration::from_secs(30))
            .await,
        "{}",
        d.log_text()
    );
    c.issue(retried)
        .await
        .expect("the same request succeeds once the HSM is back");
}

/// notBefore of the certificate `pem` as Unix seconds, read by `openssl x509 -dateopt
/// iso_8601` and turned into seconds by `date`.
fn not_before(pem: &std::path::Path) -> i64 {
    let o = run(Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-startdate",
            "-dateopt",
            "iso_8601",
            "-in",
        ])
        .arg(pem));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let iso = text
        .trim()
        .strip_prefix("notBefore=")
        .unwrap_or_else(|| panic!("{text}"));
    let o = run(Command::new("date").args(["-u", "+%s", "-d", iso]));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_report_times_are_never_before_the_certificates_not_before() {
    let ca = ApiCa::new();
    let status_of = |s: &tonic::Status, code: Code| {
        assert_eq!(s.code(), code, "{s:?}");
        s.message().to_owned()
    };
    // Issued by a daemon whose clock runs an hour ahead: notBefore is an hour from now.
    let mut ahead = Daemon::start_with_clock(&ca, "+1h");
    let mut c = ahead.client("ra-one").await;
    let (future, future_pem) = issue_server_ec(&mut c, &ca.dir, "ahead-1").await;
    drop(c);
    ahead.signal("TERM");
    assert!(ahead.wait(Duration::from_secs(30)).success());
    assert!(not_before(&future_pem) > now_unix() + 3000);

    // With the right clock, the CA's clock reads before that notBefore: refused, naming the
    // clock, and nothing recorded.
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let e = c
        .revoke(revoke_request(
            "early-1",
            &future,
            pb::RevocationReason::KeyCompromise,
        ))
        .await
        .unwrap_err();
    let m = status_of(&e, Code::FailedPrecondition);
    assert!(m.contains("clock") && m.contains("notBefore"), "{m}");
    let got = c
        .get_certificate(pb::GetCertificateRequest {
            serial: future.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::CertificateStatus::Valid as i32);
    let o = run(Command::new("sqlite3")
        .arg(ca.dir.join("signet.db"))
        .arg(format!(
            "SELECT count(*) FROM revocation_events WHERE serial = '{}'",
            signet::ca::normalize_serial(&future).unwrap()
        )));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");

    // A report time before notBefore, or in the future, is bad input naming reported_at.
    let (serial, pem) = issue_server_ec(&mut c, &ca.dir, "now-1").await;
    let start = not_before(&pem);
    let at = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
    for (id, t) in [("r-early", start - 60), ("r-future", now_unix() + 86_400)] {
        let e = c
            .revoke(pb::RevokeRequest {
                reported_at: Some(at(t)),
                ..revoke_request(id, &serial, pb::RevocationReason::KeyCompromise)
            })
            .await
            .unwrap_err();
        status_of(&e, Code::InvalidArgument);
        assert_eq!(
            e.get_details_bad_request()
                .expect("BadRequest")
                .field_violations[0]
                .field,
            "reported_at",
            "{e:?}"
        );
    }
    // At notBefore itself: revoked, with that invalidity date.
    let r = c
        .revoke(pb::RevokeRequest {
            reported_at: Some(at(start)),
            ..revoke_request("r-ok", &serial, pb::RevocationReason::KeyCompromise)
        })
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(r.status, pb::CertificateStatus::Revoked as i32);
    let got = c
        .get_certificate(pb::GetCertificateRequest {
            serial,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.reported_at.map(|t| t.seconds), Some(start));
    assert!(got.revoked_at.is_some_and(|t| t.seconds >= start));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_is_refused_naming_the_clock_while_it_reads_before_the_issuers_not_before() {
    // RA client material valid from 500 days ago for a year, so that a daemon whose clock reads 400
    // days behind still takes the office's certificate (and reaches issuance).
    let old_dir = tempfile::tempdir().unwrap();
    let old = TlsMaterial::generate_with_clock(old_dir.path(), "-500d");
    let old_ca = old.pem("issuing");
    // The daemon trusts that material's CA beside its usual one.
    let ca = ApiCa::with_http_and_edit("", &|t| {
        t.replace(
            "client_ca = [",
            &format!("client_ca = [\"{}\", ", old_ca.display()),
        )
    });
    let d = Daemon::start_with_clock(&ca, "-400d");
    let settings = signet::api::client::ClientSettings {
        endpoint: d.endpoint.clone(),
        ca_cert: d.tls_root.clone(),
        cert: old.pem("ra-one"),
        key: old.key("ra-one"),
    };
    let mut c = signet::api::client::ca_client(&settings).await.unwrap();
    let e = c
        .issue(issue_request("early-1", "server", csr(&ca.dir, "early")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("clock") && e.message().contains("notBefore"),
        "{}",
        e.message()
    );
    assert_eq!(count_rows(&ca), 0, "nothing recorded");
    // Health says why: /healthz 503 naming the clock, gRPC NOT_SERVING.
    let base = d.http.clone().expect("HTTP announced");
    let o = run(Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(format!("{base}/healthz")));
    let health = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        health.ends_with("503")
            && health.contains("degraded: clock: ")
            && health.contains("notBefore"),
        "{health}"
    );
    {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let channel = signet::api::client::connect(&settings).await.unwrap();
        let mut h = HealthClient::new(channel);
        let status = h
            .check(HealthCheckRequest {
                service: "signet.v1.CertificateAuthority".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, 2, "NOT_SERVING");
    }
    drop(c);
    drop(d);

    // With the clock right, the same request is issued, starting after its issuer.
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    c.issue(issue_request("early-1", "server", csr(&ca.dir, "early")))
        .await
        .expect("issued once the clock is right");
    assert_eq!(count_rows(&ca), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_fields_of_each_event() {
    let ca = ApiCa::new();
    let d = Daemon::start_with_env(&ca, &[("SIGNET_LOG_FORMAT", "json")]);
    let mut c = d.client("ra-one").await;
    let issued = c
        .issue(issue_request("json-1", "server", csr(&ca.dir, "json")))
        .await
        .expect("issue")
        .into_inner();
    let log = d.log_text();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events.iter().all(|e| e["timestamp"].is_string()
            && e["level"].is_string()
            && e["target"].is_string())
    );
    let issued_event = events
        .iter()
        .find(|e| e["message"] == "certificate issued")
        .unwrap_or_else(|| panic!("no issuance event in\n{log}"));
    assert_eq!(issued_event["serial"], issued.serial.as_str());
    assert_eq!(issued_event["profile"], "server");
    let call = events
        .iter()
        .find(|e| e["message"] == "call" && e["rpc"] == "Issue")
        .unwrap_or_else(|| panic!("no call event in\n{log}"));
    assert_eq!(call["code"], "OK");
    assert_eq!(call["request_id"], "json-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_only_runs_every_check_and_records_nothing() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let mut req = issue_request("v-1", "personal", csr(&ca.dir, "v1"));
    req.validate_only = true;
    let seen = c.issue(req.clone()).await.expect("preview").into_inner();
    assert!(seen.validate_only && seen.certificate.is_empty() && seen.serial.is_empty());
    assert!(
        !seen.issuer.is_empty() && !seen.chain.is_empty(),
        "{seen:?}"
    );
    let (nb, na) = (seen.not_before.unwrap(), seen.not_after.unwrap());
    assert!(na.seconds - nb.seconds > 300 * 86_400, "{nb:?} {na:?}");
    assert_eq!(count_rows(&ca), 0, "a preview recorded a row");

    // A request at fault is refused as Issue would refuse it, naming the field.
    let mut bad = req.clone();
    bad.csr = b"garbage".to_vec();
    let e = c.issue(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("csr"), "{e:?}");

    // The real call afterwards issues what the preview said.
    req.validate_only = false;
    let issued = c.issue(req.clone()).await.expect("issue").into_inner();
    assert!(!issued.validate_only && !issued.certificate.is_empty());
    assert_eq!(
        (issued.issuer.as_str(), issued.subject.as_str()),
        (seen.issuer.as_str(), seen.subject.as_str())
    );
    assert_eq!(count_rows(&ca), 1);
    // A preview of a used id answers as a retry would; with another body, ALREADY_EXISTS.
    req.validate_only = true;
    let again = c
        .issue(req.clone())
        .await
        .expect("preview of a used id")
        .into_inner();
    assert_eq!(again.serial, issued.serial);
    assert_eq!(again.certificate, issued.certificate);
    req.validity_years = 2;
    let e = c.issue(req).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    // Renewal previews: the window and status checks run, nothing is recorded.
    let renew = |id: &str, validate_only: bool| pb::RenewRequest {
        request_id: id.into(),
        serial: issued.serial.clone(),
        csr: Vec::new(),
        validity_years: None,
        approval: Some(pb::Approval {
            officer: "王芳".into(),
            ra_reference: "RA-v".into(),
            agreement_version: common::ca::AGREEMENT.into(),
        }),
        validate_only,
    };
    let seen = c
        .renew(renew("vr-1", true))
        .await
        .expect("renew preview")
        .into_inner();
    assert!(seen.validate_only && seen.certificate.is_empty() && seen.serial.is_empty());
    assert_eq!(seen.renewed_from, issued.serial);
    assert_eq!(count_rows(&ca), 1, "a renewal preview recorded a row");
    let renewed = c
        .renew(renew("vr-1", false))
        .await
        .expect("renew")
        .into_inner();
    assert_eq!(renewed.renewed_from, issued.serial);
    assert_eq!(count_rows(&ca), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_log_level_and_a_bad_level_changes_nothing() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let good = std::fs::read_to_string(&ca.config_path).unwrap();
    let issue = |id: &'static str| issue_request(id, "server", csr(&ca.dir, id));
    let issued_lines = |d: &Daemon| d.log_text().matches("certificate issued").count();

    c.issue(issue("lv-1")).await.expect("issue");
    assert_eq!(issued_lines(&d), 1);

    // A level that does not parse: the reload is refused, the level stays.
    std::fs::write(
        &ca.config_path,
        format!("{good}\n[log]\nlevel = \"signet=loud\"\n"),
    )
    .unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("configuration reload refused") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(d.log_text().contains("log.level"), "{}", d.log_text());
    c.issue(issue("lv-2")).await.expect("issue");
    assert_eq!(issued_lines(&d), 2);

    // warn: issuances are no longer logged (they are still in the audit log).
    std::fs::write(
        &ca.config_path,
        format!("{good}\n[log]\nlevel = \"warn\"\n"),
    )
    .unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("log level set from [log] level") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.issue(issue("lv-3")).await.expect("issue");
    assert_eq!(issued_lines(&d), 2, "{}", d.log_text());

    // Back to info.
    std::fs::write(
        &ca.config_path,
        format!("{good}\n[log]\nlevel = \"info\"\n"),
    )
    .unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.issue(issue(if issued_lines(&d) == 2 {
            "lv-4"
        } else {
            "lv-5"
        }))
        .await
        .ok();
        if issued_lines(&d) > 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_what_a_profile_allows_and_refuses_structural_changes() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let good = std::fs::read_to_string(&ca.config_path).unwrap();
    let two_years = |id: &str| {
        let mut r = issue_request(id, "personal", csr(&ca.dir, id));
        r.validity_years = 2;
        r
    };
    c.issue(two_years("pr-1")).await.expect("2 years allowed");

    // Personal certificates for one year only, from the reload on.
    let one_year = good.replace(
        "[profiles.personal]\n",
        "[profiles.personal]\nvalidity_years = [1]\n",
    );
    assert_ne!(one_year, good);
    std::fs::write(&ca.config_path, &one_year).unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match c.issue(two_years("pr-2")).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(Instant::now() < deadline, "{}", d.log_text());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("validity_years"), "{refused:?}");
    let mut one = two_years("pr-3");
    one.validity_years = 1;
    c.issue(one).await.expect("one year still allowed");

    // A structural change (the profile's issuers) is refused whole: nothing changes.
    std::fs::write(
        &ca.config_path,
        one_year.replacen(
            "issuers = [\"issuing-rsa\", \"issuing-ec\"]",
            "issuers = [\"issuing-ec\"]",
            1,
        ),
    )
    .unwrap();
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("needs a restart") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = c.issue(two_years("pr-4")).await.unwrap_err();
    assert!(e.message().contains("validity_years"), "{e:?}");
    let out = run(Command::new("sqlite3").arg(ca.dir.join("signet.db")).arg(
        "SELECT action || ' ' || detail FROM audit_log WHERE action LIKE 'config.%' ORDER BY seq",
    ));
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].starts_with("config.reloaded "), "{log}");
    assert!(
        lines[0].contains("\"personal\":[\"validity_years\"]"),
        "{log}"
    );
    assert!(lines[1].starts_with("config.reload_refused "), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updated_since_lists_changes_in_the_order_they_happened_across_pages() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let mut serials = Vec::new();
    for id in ["u-1", "u-2", "u-3"] {
        let r = c
            .issue(issue_request(id, "server", csr(&ca.dir, id)))
            .await
            .expect("issue")
            .into_inner();
        serials.push(r.serial);
    }
    // The first certificate changes a second later: revoked.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.revoke(revoke_request(
        "u-r",
        &serials[0],
        pb::RevocationReason::Superseded,
    ))
    .await
    .expect("revoke");
    let list = |since: i64, token: String| pb::ListCertificatesRequest {
        updated_since: Some(prost_types::Timestamp {
            seconds: since,
            nanos: 0,
        }),
        page_size: 1,
        page_token: token,
        ..Default::default()
    };
    // Page by page, one summary each: every certificate once, the revoked one last.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_certificates(list(0, token))
            .await
            .expect("list")
            .into_inner();
        seen.extend(page.certificates);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let order: Vec<&str> = seen.iter().map(|s| s.serial.as_str()).collect();
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[2], serials[0], "{order:?}");
    let times: Vec<i64> = seen
        .iter()
        .map(|s| s.updated_at.as_ref().expect("updated_at").seconds)
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(times[2] > times[1], "{times:?}");
    // Since the revocation's second: only what changed then.
    let page = c
        .list_certificates(pb::ListCertificatesRequest {
            page_size: 10,
            ..list(times[2], String::new())
        })
        .await
        .expect("list")
        .into_inner();
    let since: Vec<&str> = page
        .certificates
        .iter()
        .map(|s| s.serial.as_str())
        .collect();
    assert_eq!(since, [serials[0].as_str()]);
    assert_eq!(
        page.certificates[0].status,
        pb::CertificateStatus::Revoked as i32
    );
    // A token of the listing by serial does not continue a listing by change.
    let by_serial = c
        .list_certificates(pb::ListCertificatesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let e = c
        .list_certificates(list(0, by_serial.next_page_token))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

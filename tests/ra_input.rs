//! What the RA API refuses in what an RA client sends, against the real daemon over mutual
//! TLS: wildcards over public suffixes and names that are not IDNA 2008 A-labels, invisible
//! and bidirectional characters in subjects, SANs and request ids, RSA keys with a small
//! public exponent, and revocation reasons only the CA itself may give. Each refusal is
//! INVALID_ARGUMENT with a BadRequest naming the field, and stores nothing.

mod common;

use std::path::Path;
use std::process::Command;

use common::api::*;
use common::ca::{make_csr, run};
use signet::api::pb;
use tonic::Code;
use tonic_types::StatusExt;

/// A fresh P-256 CSR (DER) under `dir`, distinct per `tag`.
fn csr(dir: &Path, tag: &str) -> Vec<u8> {
    let d = dir.join(format!("csr-{tag}"));
    std::fs::create_dir_all(&d).unwrap();
    make_csr(&d, "p256")
}

/// An RSA-2048 CSR (DER) for a key openssl generates with public exponent `exponent`.
fn rsa_csr(dir: &Path, exponent: &str) -> Vec<u8> {
    let d = dir.join(format!("rsa-e{exponent}"));
    std::fs::create_dir_all(&d).unwrap();
    let key = d.join("key.pem");
    let out = run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .arg("-pkeyopt")
        .arg(format!("rsa_keygen_pubexp:{exponent}"))
        .arg("-out")
        .arg(&key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csr = d.join("req.der");
    let out = run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-subj",
            "/CN=ignored",
            "-outform",
            "DER",
            "-key",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(csr).unwrap()
}

/// The field and description of an INVALID_ARGUMENT's first BadRequest violation.
fn bad_field(s: &tonic::Status) -> (String, String) {
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    let v = &s
        .get_details_bad_request()
        .expect("BadRequest detail")
        .field_violations[0];
    (v.field.clone(), v.description.clone())
}

/// Assert `s` is INVALID_ARGUMENT naming `field`, with `want` in its description.
fn assert_refused(s: &tonic::Status, field: &str, want: &str) {
    let (f, d) = bad_field(s);
    assert_eq!(f, field, "{d}");
    assert!(d.contains(want), "{field}: {d:?} does not say {want:?}");
}

fn dns(name: &str) -> pb::SubjectAltName {
    pb::SubjectAltName {
        name: Some(pb::subject_alt_name::Name::Dns(name.into())),
    }
}

/// A server request for the single dNSName `name`, with an empty subject.
fn server_for(dir: &Path, id: &str, name: &str) -> pb::IssueRequest {
    let mut r = issue_request(id, "server", csr(dir, id));
    r.subject.clear();
    r.sans = vec![dns(name)];
    r
}

/// The subjectAltName text `openssl x509 -text` prints for a DER certificate.
fn openssl_sans(dir: &Path, der: &[u8]) -> String {
    let f = dir.join("cert.der");
    std::fs::write(&f, der).unwrap();
    let o = run(Command::new("openssl")
        .args([
            "x509",
            "-inform",
            "DER",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(&f));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `signet check-config` on the test CA's configuration after `edit`: success and output.
fn check_config(ca: &ApiCa, edit: impl Fn(String) -> String) -> (bool, String) {
    let text = std::fs::read_to_string(&ca.config_path).unwrap();
    let path = ca.dir.join("edited.toml");
    std::fs::write(&path, edit(text)).unwrap();
    let o = run(Command::new(env!("CARGO_BIN_EXE_signet"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("RUST_LOG", "warn"));
    common::status::outcome(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_over_public_suffixes_bad_punycode_and_u_labels_are_refused_naming_the_san() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let refused = [
        ("*.com.cn", "public suffix \"com.cn\""),
        ("*.cn", "public suffix \"cn\""),
        ("*.xn--fiqs8s", "public suffix \"xn--fiqs8s\""),
        ("*.gov.cn", "public suffix \"gov.cn\""),
        ("*.xn--55qx5d.cn", "public suffix \"xn--55qx5d.cn\""),
        ("*.中国", "public suffix \"xn--fiqs8s\""),
        ("xn--zz.example.cn", "not valid Punycode"),
        ("xn--n3h.example.cn", "U+2603"),
        ("xn--ex-8tb.example.cn", "round-trip"),
        (
            "例子.中国",
            "send its A-label form \"xn--fsqu00a.xn--fiqs8s\"",
        ),
        ("www.*.example.cn", "whole leftmost label"),
        ("w*.example.cn", "whole leftmost label"),
        ("ab--cd.example.cn", "reserved for A-labels"),
    ];
    for (i, (name, want)) in refused.iter().enumerate() {
        let e = c
            .issue(server_for(&ca.dir, &format!("bad-{i}"), name))
            .await
            .expect_err(name);
        assert_refused(&e, "sans[0].dns", want);
    }
    // An IP SAN is an address, never a pattern.
    let mut ip = server_for(&ca.dir, "ip", "www.example.cn");
    ip.sans = vec![pb::SubjectAltName {
        name: Some(pb::subject_alt_name::Name::Ip("*.0.2.10".into())),
    }];
    let e = c.issue(ip).await.unwrap_err();
    assert_refused(&e, "sans[0].ip", "not an IPv4 or IPv6 address");
    assert_eq!(count_rows(&ca), 0, "nothing refused was stored");

    // A wildcard one label below a registrable domain, ASCII or IDN, is a server certificate.
    for (id, name) in [
        ("wild-1", "*.example.cn"),
        ("wild-2", "*.xn--fsqu00a.xn--fiqs8s"),
        ("wild-3", "*.example.com.cn"),
    ] {
        let r = c
            .issue(server_for(&ca.dir, id, name))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
            .into_inner();
        let sans = openssl_sans(&ca.dir, &r.certificate);
        assert!(sans.contains(&format!("DNS:{name}")), "{sans}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_only_in_profiles_that_allow_them_and_the_flag_is_checked_at_load() {
    let ca = ApiCa::with_edit(&|t| {
        t.replace(
            "[profiles.server]\n",
            "[profiles.server]\nallow_wildcards = false\n",
        )
        .replace(
            "profiles = [\"server\", \"organization\", \"personal\"]",
            "profiles = [\"server\", \"organization\", \"personal\", \"payment_gateway\"]",
        )
    });
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let e = c
        .issue(server_for(&ca.dir, "w-1", "*.example.cn"))
        .await
        .unwrap_err();
    assert_refused(&e, "sans[0]", "allow_wildcards = false");
    c.issue(server_for(&ca.dir, "w-2", "www.example.cn"))
        .await
        .expect("a plain name still issues");
    // payment_gateway takes no wildcard by default.
    let mut pay = issue_request("w-3", "payment_gateway", csr(&ca.dir, "w-3"));
    pay.sans.push(dns("*.example.cn"));
    let e = c.issue(pay).await.unwrap_err();
    assert_refused(&e, "sans[1]", "does not allow");
    c.issue(issue_request("w-4", "payment_gateway", csr(&ca.dir, "w-4")))
        .await
        .expect("payment gateway without a wildcard");
    assert_eq!(count_rows(&ca), 2);

    // A kind without dNSName SANs has no wildcards to allow.
    let (ok, out) = check_config(&ca, |t| {
        t.replace(
            "[profiles.personal]\n",
            "[profiles.personal]\nallow_wildcards = true\n",
        )
    });
    assert!(!ok, "{out}");
    assert!(out.contains("profiles.personal.allow_wildcards"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_and_bidirectional_characters_are_refused_naming_the_field_and_code_point() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;

    // Subject attribute values: personal is [C, CN], organization [C, O, orgId, CN].
    let cases = [
        (
            "personal",
            1,
            "张三\u{202E}gnp.exe",
            "U+202E RIGHT-TO-LEFT OVERRIDE (format character) is not allowed",
        ),
        (
            "personal",
            1,
            "张\u{200B}三",
            "U+200B ZERO WIDTH SPACE (format character)",
        ),
        ("personal", 1, "张三\u{FFFF}", "U+FFFF (noncharacter)"),
        (
            "personal",
            1,
            "张三\u{E000}",
            "U+E000 (private-use character)",
        ),
        ("personal", 1, "张三\u{FDD0}", "U+FDD0 (noncharacter)"),
        (
            "organization",
            1,
            "\u{2067}宁津县精神卫生中心\u{2069}",
            "U+2067 RIGHT-TO-LEFT ISOLATE",
        ),
        (
            "organization",
            3,
            "宁津县\u{FEFF}精神卫生中心",
            "U+FEFF ZERO WIDTH NO-BREAK SPACE",
        ),
    ];
    for (i, (profile, index, value, want)) in cases.iter().enumerate() {
        let mut r = issue_request(&format!("s-{i}"), profile, csr(&ca.dir, &format!("s-{i}")));
        r.subject[*index].value = (*value).into();
        let e = c.issue(r).await.expect_err(value);
        assert_refused(&e, &format!("subject[{index}].value"), want);
    }

    // SANs of each type.
    let e = c
        .issue(server_for(&ca.dir, "n-1", "www\u{200B}.example.cn"))
        .await
        .unwrap_err();
    assert_refused(
        &e,
        "sans[0].dns",
        "U+200B ZERO WIDTH SPACE (format character)",
    );
    let mut r = issue_request("n-2", "personal", csr(&ca.dir, "n-2"));
    r.sans = vec![pb::SubjectAltName {
        name: Some(pb::subject_alt_name::Name::Email(
            "zhangsan\u{202E}@example.cn".into(),
        )),
    }];
    let e = c.issue(r).await.unwrap_err();
    assert_refused(&e, "sans[0].email", "U+202E RIGHT-TO-LEFT OVERRIDE");

    // Request ids of every mutating call.
    let e = c
        .issue(issue_request(
            "order-\u{202E}1",
            "personal",
            csr(&ca.dir, "id-1"),
        ))
        .await
        .unwrap_err();
    assert_refused(&e, "request_id", "U+202E RIGHT-TO-LEFT OVERRIDE");
    assert_eq!(count_rows(&ca), 0, "nothing refused was stored");
    let cert = c
        .issue(issue_request("ok-1", "personal", csr(&ca.dir, "ok-1")))
        .await
        .expect("issue")
        .into_inner();
    let e = c
        .renew(pb::RenewRequest {
            validate_only: false,
            request_id: "renew-\u{2067}1\u{2069}".into(),
            serial: cert.serial.clone(),
            csr: Vec::new(),
            validity_years: None,
            approval: Some(pb::Approval {
                officer: "王芳".into(),
                ra_reference: "RA-renew".into(),
                agreement_version: common::ca::AGREEMENT.into(),
            }),
        })
        .await
        .unwrap_err();
    assert_refused(&e, "request_id", "U+2067 RIGHT-TO-LEFT ISOLATE");
    let e = c
        .revoke(revoke_request(
            "revoke\u{200B}1",
            &cert.serial,
            pb::RevocationReason::CertificateHold,
        ))
        .await
        .unwrap_err();
    assert_refused(&e, "request_id", "U+200B ZERO WIDTH SPACE");
    let e = c
        .release_hold(pb::ReleaseHoldRequest {
            request_id: "release\u{FFFF}".into(),
            serial: cert.serial.clone(),
            comment: String::new(),
        })
        .await
        .unwrap_err();
    assert_refused(&e, "request_id", "U+FFFF (noncharacter)");
    let got = c
        .get_certificate(pb::GetCertificateRequest {
            serial: cert.serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::CertificateStatus::Valid as i32);
    assert!(got.history.is_empty(), "{:?}", got.history);
    assert_eq!(count_rows(&ca), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_with_a_small_public_exponent_are_refused_naming_the_csr() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let e3 = rsa_csr(&ca.dir, "3");
    let e65539 = rsa_csr(&ca.dir, "65539");
    let e = c
        .issue(issue_request("e-1", "server", e3.clone()))
        .await
        .unwrap_err();
    assert_refused(&e, "csr", "RSA public exponent 3 is not accepted");
    let e = c
        .issue(issue_request("e-2", "server", e65539.clone()))
        .await
        .unwrap_err();
    assert_refused(&e, "csr", "RSA public exponent 65539");
    // 65537 issues, from the RSA issuing CA whose own key the daemon loaded.
    let mut ok = issue_request("e-3", "server", rsa_csr(&ca.dir, "65537"));
    ok.issuer = "issuing-rsa".into();
    c.issue(ok).await.expect("RSA-2048 with 65537");
    // A renewal with a new key is held to the same rule.
    let personal = c
        .issue(issue_request("e-4", "personal", csr(&ca.dir, "e-4")))
        .await
        .expect("issue")
        .into_inner();
    let e = c
        .renew(pb::RenewRequest {
            validate_only: false,
            request_id: "e-5".into(),
            serial: personal.serial,
            csr: e3.clone(),
            validity_years: None,
            approval: Some(pb::Approval {
                officer: "王芳".into(),
                ra_reference: "RA-renew".into(),
                agreement_version: common::ca::AGREEMENT.into(),
            }),
        })
        .await
        .unwrap_err();
    assert_refused(&e, "csr", "RSA public exponent 3");
    assert_eq!(count_rows(&ca), 2);

    // The rule is the CA's: checked when the configuration is loaded, naming the key.
    let (ok, out) = check_config(&ca, |t| t.replace("[ca]\n", "[ca]\nrsa_exponent = \"3\"\n"));
    assert!(!ok, "{out}");
    assert!(out.contains("ca.rsa_exponent"), "{out}");
    drop(d);
    let ca =
        ApiCa::with_edit(&|t| t.replace("[ca]\n", "[ca]\nrsa_exponent = \"odd-at-least-65537\"\n"));
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    c.issue(issue_request("o-1", "server", e65539))
        .await
        .expect("65539 under odd-at-least-65537");
    let e = c
        .issue(issue_request("o-2", "server", e3))
        .await
        .unwrap_err();
    assert_refused(&e, "csr", "an odd exponent of at least 65537");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ra_may_not_revoke_for_ca_or_aa_compromise_but_the_operator_may() {
    let ca = ApiCa::new();
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let cert = c
        .issue(issue_request("p-1", "personal", csr(&ca.dir, "p-1")))
        .await
        .expect("issue")
        .into_inner();
    for (id, reason, name) in [
        ("r-1", pb::RevocationReason::CaCompromise, "cACompromise"),
        ("r-2", pb::RevocationReason::AaCompromise, "aACompromise"),
    ] {
        let e = c
            .revoke(revoke_request(id, &cert.serial, reason))
            .await
            .unwrap_err();
        assert_refused(&e, "reason", &format!("{name} says"));
    }
    let get = pb::GetCertificateRequest {
        serial: cert.serial.clone(),
        ..Default::default()
    };
    let got = c.get_certificate(get.clone()).await.unwrap().into_inner();
    assert_eq!(got.status, pb::CertificateStatus::Valid as i32);

    // The operator is the CA, and may.
    let (ok, out) = signet(
        &ca,
        &[
            "revoke",
            "--serial",
            &cert.serial,
            "--reason",
            "cACompromise",
        ],
    );
    assert!(ok, "{out}");
    let got = c.get_certificate(get).await.unwrap().into_inner();
    assert_eq!(got.status, pb::CertificateStatus::Revoked as i32);
    assert_eq!(got.reason, pb::RevocationReason::CaCompromise as i32);
    assert_eq!(
        got.history.last().map(|h| h.actor.as_str()),
        Some("operator")
    );

    // No RA may take the operator's name.
    let (ok, out) = check_config(&ca, |t| {
        t.replace("name = \"desk-two\"", "name = \"operator\"")
    });
    assert!(!ok, "{out}");
    assert!(out.contains("ra[1].name"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_refuses_a_request_id_with_an_invisible_character_naming_the_code_point()
{
    let ca = ApiCa::new();
    // desk-one may also use the token service; the workstation personalises in-process.
    let text = std::fs::read_to_string(&ca.config_path).unwrap().replacen(
        r#"operations = ["issue", "renew", "revoke", "read"]"#,
        r#"operations = ["issue", "renew", "revoke", "read", "token"]"#,
        1,
    ) + &format!(
        "\n[token]\nactor = \"workstation-1\"\nmodules = [{{ path = \"{}\" }}]\n\n[token.issuer]\nkind = \"in-process\"\n",
        ca.softhsm.module.display()
    );
    std::fs::write(&ca.config_path, text).unwrap();
    let d = Daemon::start(&ca);
    let channel = signet::api::client::connect(&d.settings("ra-one"))
        .await
        .expect("connect");
    let mut t = pb::token_service_client::TokenServiceClient::new(channel);
    let names = issue_request("tok", "personal", Vec::new());
    for (id, want) in [
        (
            "tok-\u{202E}1",
            "U+202E RIGHT-TO-LEFT OVERRIDE (format character)",
        ),
        (
            "tok-\u{2066}2",
            "U+2066 LEFT-TO-RIGHT ISOLATE (format character)",
        ),
    ] {
        let e = t
            .personalize(pb::PersonalizeRequest {
                token_serial: "0123456789abcdef".into(),
                user_pin: "135790".into(),
                key_algorithm: pb::KeyAlgorithm::P256 as i32,
                profile: "personal".into(),
                issuer: String::new(),
                subject: names.subject.clone(),
                sans: names.sans.clone(),
                validity_years: 1,
                request_id: id.into(),
                approval: names.approval.clone(),
                label: "key-1".into(),
                token: String::new(),
            })
            .await
            .unwrap_err();
        assert_refused(&e, "request_id", want);
    }
}

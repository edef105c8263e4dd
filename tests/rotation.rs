//! Issuer rotation: `signet ceremony --rotate` gives an issuing CA a new key and certificate;
//! the daemon then issues and renews from the new generation while the old one keeps
//! answering OCSP and publishing CRLs for its certificates, judged by OpenSSL.

mod common;

use std::path::Path;
use std::time::Duration;

use common::api::*;
use common::ca::make_csr;
use common::status::{
    ask_ocsp, crl_to_pem, fetch_ca_pems, fetch_issuer_crl_numbered_above, openssl,
};
use signet::api::pb;

/// `openssl verify` of `leaf` from the root through `untrusted` (one PEM of intermediates),
/// with `crl` (a PEM CRL) checked when given.
fn verify(dir: &Path, untrusted: &str, crl: Option<&str>, leaf: &str) -> (bool, String) {
    let mut args = vec!["verify", "-CAfile", "root.pem", "-untrusted", untrusted];
    if let Some(crl) = crl {
        args.extend(["-crl_check", "-CRLfile", crl]);
    }
    args.push(leaf);
    openssl(&args, dir)
}

/// Issue a `profile` certificate for a fresh P-256 key, asking for `issuer`; the answer and
/// the PEM file it was written to.
async fn issue(
    c: &mut pb::certificate_authority_client::CertificateAuthorityClient<tonic::transport::Channel>,
    dir: &Path,
    id: &str,
    profile: &str,
    issuer: &str,
) -> pb::IssueResponse {
    let d = dir.join(format!("csr-{id}"));
    std::fs::create_dir_all(&d).unwrap();
    let mut req = issue_request(id, profile, make_csr(&d, "p256"));
    req.issuer = issuer.into();
    let r = c.issue(req).await.expect("issue").into_inner();
    std::fs::write(
        dir.join(format!("{id}.pem")),
        common::ca::pem(&r.certificate),
    )
    .unwrap();
    r
}

fn stop(mut d: Daemon) {
    d.signal("TERM");
    let status = tokio::task::block_in_place(|| d.wait(Duration::from_secs(30)));
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_issuer_issues_from_its_new_key_while_the_old_one_answers_for_its_certificates() {
    let ca = ApiCa::with_http("[crl]\nlag_seconds = 1\n");
    let dir = ca.dir.join("rotation");
    std::fs::create_dir_all(&dir).unwrap();

    // Before: a server and a personal certificate from issuing-ec (generation 1).
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let old_server = issue(&mut c, &dir, "before-s", "server", "issuing-ec").await;
    let old_personal = issue(&mut c, &dir, "before-p", "personal", "issuing-ec").await;
    assert_eq!(old_server.issuer, "issuing-ec");
    stop(d);

    // What cannot be rotated is refused, naming why; nothing is made.
    let (ok, out) = signet(&ca, &["ceremony", "--rotate", "root"]);
    assert!(
        !ok && out.contains("--rotate root") && out.contains("root"),
        "{out}"
    );
    let (ok, out) = signet(&ca, &["ceremony", "--rotate", "issuing-nope"]);
    assert!(!ok && out.contains("no [[issuer]] has this name"), "{out}");

    // The rotation: a new key in the HSM and its certificate under the same root.
    let (ok, out) = signet(&ca, &["ceremony", "--rotate", "issuing-ec"]);
    assert!(ok, "{out}");
    assert!(out.contains("created issuer issuing-ec-g2"), "{out}");
    let ca_out = ca.dir.join("ca");
    let g2_file = ca_out.join("issuing-ec-g2.pem");
    assert!(g2_file.exists(), "{out}");
    // The .p7b carries both generations.
    let (ok, p7) = openssl(
        &[
            "pkcs7",
            "-inform",
            "DER",
            "-in",
            ca_out.join("chain.p7b").to_str().unwrap(),
            "-print_certs",
            "-noout",
        ],
        &dir,
    );
    assert!(ok, "{p7}");
    assert_eq!(
        p7.matches("subject=C = CN, O = Signet Test CA, CN = Signet Test EC Issuing CA")
            .count(),
        2,
        "{p7}"
    );
    // The audit log says so and still verifies.
    let (ok, out) = signet(&ca, &["audit", "verify"]);
    assert!(ok, "{out}");
    let audit = std::process::Command::new("sqlite3")
        .arg(ca.dir.join("signet.db"))
        .arg("SELECT object FROM audit_log WHERE action = 'ceremony.issuer_rotated'")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&audit.stdout).trim(),
        "issuing-ec-g2"
    );

    // After: new certificates come from generation 2, whichever name the RA gives.
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("HTTP announced");
    fetch_ca_pems(&base, &dir, &["root", "issuing-ec", "issuing-ec-g2"]);
    let both = [
        std::fs::read_to_string(dir.join("issuing-ec.pem")).unwrap(),
        std::fs::read_to_string(dir.join("issuing-ec-g2.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("both.pem"), both).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("issuing-ec-g2.pem")).unwrap(),
        std::fs::read_to_string(&g2_file).unwrap()
    );
    let mut c = d.client("ra-one").await;
    let new_server = issue(&mut c, &dir, "after-s", "server", "issuing-ec").await;
    assert_eq!(new_server.issuer, "issuing-ec-g2");
    let by_generation = issue(&mut c, &dir, "after-g", "server", "issuing-ec-g2").await;
    assert_eq!(by_generation.issuer, "issuing-ec-g2");
    // Each certificate chains to its own generation: with both intermediates offered under
    // one name, OpenSSL picks each one's issuer by key identifier; with only the other
    // generation, it cannot.
    for (leaf, own, other) in [
        ("before-s.pem", "issuing-ec.pem", "issuing-ec-g2.pem"),
        ("after-s.pem", "issuing-ec-g2.pem", "issuing-ec.pem"),
    ] {
        let (ok, out) = verify(&dir, "both.pem", None, leaf);
        assert!(ok, "{leaf}: {out}");
        let (ok, out) = verify(&dir, own, None, leaf);
        assert!(ok, "{leaf}: {out}");
        let (ok, out) = verify(&dir, other, None, leaf);
        assert!(!ok, "{leaf} verified through the wrong generation: {out}");
    }

    // A renewal of a generation-1 certificate comes from generation 2.
    let renewed = c
        .renew(pb::RenewRequest {
            validate_only: false,
            request_id: "after-renew".into(),
            serial: old_personal.serial.clone(),
            csr: Vec::new(),
            validity_years: None,
            approval: issue_request("x", "personal", Vec::new()).approval,
        })
        .await
        .expect("renew")
        .into_inner();
    assert_eq!(renewed.issuer, "issuing-ec-g2");
    std::fs::write(
        dir.join("renewed.pem"),
        common::ca::pem(&renewed.certificate),
    )
    .unwrap();
    let (ok, out) = verify(&dir, "issuing-ec-g2.pem", None, "renewed.pem");
    assert!(ok, "{out}");

    // The old generation still answers for its certificates: a revocation of one is in its
    // OCSP answers and its next CRL; generation 2 answers for its own.
    let old_crl = fetch_issuer_crl_numbered_above(&dir, &base, "issuing-ec", "old-0.der", 0);
    c.revoke(revoke_request(
        "revoke-old",
        &old_server.serial,
        pb::RevocationReason::KeyCompromise,
    ))
    .await
    .expect("revoke");
    let url = format!("{base}/ocsp");
    let (ok, out) = ask_ocsp(&dir, &url, "issuing-ec", &["-cert", "before-s.pem"]);
    assert!(
        ok && out.contains(": revoked") && out.contains("Response verify OK"),
        "{out}"
    );
    let (ok, out) = ask_ocsp(&dir, &url, "issuing-ec-g2", &["-cert", "after-s.pem"]);
    assert!(
        ok && out.contains(": good") && out.contains("Response verify OK"),
        "{out}"
    );
    fetch_issuer_crl_numbered_above(&dir, &base, "issuing-ec", "old.der", old_crl);
    fetch_issuer_crl_numbered_above(&dir, &base, "issuing-ec-g2", "new.der", 0);
    crl_to_pem(&dir, "old.der", "old.pem");
    crl_to_pem(&dir, "new.der", "new.pem");
    let (ok, out) = verify(&dir, "both.pem", Some("old.pem"), "before-s.pem");
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = verify(&dir, "both.pem", Some("new.pem"), "after-s.pem");
    assert!(ok, "{out}");
    let (ok, out) = verify(&dir, "both.pem", Some("old.pem"), "before-p.pem");
    assert!(ok, "{out}");

    // The whole hierarchy, as the RA API lists it, has both generations.
    let all = c
        .get_ca_chain(pb::GetCaChainRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.certificates.len(), 5, "root, rsa, ec, ec-g2, tls");
    stop(d);

    // A second rotation makes generation 3; the daemon loads all three.
    let (ok, out) = signet(&ca, &["ceremony", "--rotate", "issuing-ec"]);
    assert!(ok && out.contains("created issuer issuing-ec-g3"), "{out}");
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let third = issue(&mut c, &dir, "third", "server", "issuing-ec").await;
    assert_eq!(third.issuer, "issuing-ec-g3");
    stop(d);
}

//! The CA side on SoftHSM and on kryoptic, two independent PKCS#11 soft tokens: the key
//! ceremony (run by the binary), issuance and revocation over the RA API, OCSP, CRL and
//! timestamps over the daemon's HTTP, each judged by OpenSSL. The kryoptic variant needs its
//! module (`tests/tools/build-kryoptic.sh`) and fails, saying so, when it is missing. What the
//! two modules do differently is signet's to handle, never the test's.

mod common;

use common::ModuleKind;
use common::api::{ApiCa, Daemon, TSA_AND_AUDIT, curl_post, issue_server_ec, revoke_request};
use common::status::verify_with_crl;
use common::status::{ask_ocsp, crl_to_pem, fetch_ca_pems, fetch_crl_numbered_above, openssl};
use signet::api::pb;

async fn ceremony_issue_revoke_ocsp_crl_and_timestamps_over_the_daemon(kind: ModuleKind) {
    common::trace();
    let ca = ApiCa::with_http_on(kind, &format!("{TSA_AND_AUDIT}\n[crl]\nlag_seconds = 1\n"));
    let d = Daemon::start(&ca);
    let base = d.http.clone().expect("the status service");
    let dir = ca.dir.join("smoke");
    std::fs::create_dir_all(&dir).unwrap();
    fetch_ca_pems(&base, &dir, &["root", "issuing-ec"]);

    // Issued over the RA API, signed in the HSM, verified by OpenSSL.
    let mut c = d.client("ra-one").await;
    let (serial, leaf) = issue_server_ec(&mut c, &dir, "smoke-1").await;
    let (ok, out) = openssl(
        &[
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing-ec.pem",
            leaf.to_str().unwrap(),
        ],
        &dir,
    );
    assert!(ok && out.contains(": OK"), "{out}");

    // OCSP: good, then revoked.
    let url = format!("{base}/ocsp");
    let leaf_arg = leaf.to_str().unwrap();
    let (ok, out) = ask_ocsp(&dir, &url, "issuing-ec", &["-cert", leaf_arg]);
    assert!(ok && out.contains("Response verify OK"), "{out}");
    assert!(out.contains(&format!("{leaf_arg}: good")), "{out}");
    c.revoke(revoke_request(
        "smoke-revoke",
        &serial,
        pb::RevocationReason::KeyCompromise,
    ))
    .await
    .expect("revoke");
    let (ok, out) = ask_ocsp(&dir, &url, "issuing-ec", &["-cert", leaf_arg]);
    assert!(ok && out.contains("Response verify OK"), "{out}");
    assert!(out.contains(&format!("{leaf_arg}: revoked")), "{out}");

    // The CRL, signed in the HSM, lists it.
    fetch_crl_numbered_above(&dir, &base, "ec.crl", 1);
    crl_to_pem(&dir, "ec.crl", "ec-crl.pem");
    let (ok, out) = verify_with_crl(&dir, "ec-crl.pem", &leaf);
    assert!(!ok && out.contains("certificate revoked"), "{out}");

    // A timestamp, signed in the HSM, verified by openssl ts.
    std::fs::write(dir.join("data.txt"), "合同 contract no. 42\n").unwrap();
    let (ok, out) = openssl(
        &[
            "ts", "-query", "-data", "data.txt", "-sha256", "-cert", "-out", "q.tsq",
        ],
        &dir,
    );
    assert!(ok, "{out}");
    let (code, ctype) = curl_post(
        &format!("{base}/tsa"),
        "application/timestamp-query",
        &dir.join("q.tsq"),
        &dir.join("r.tsr"),
    );
    assert_eq!((code, ctype.as_str()), (200, "application/timestamp-reply"));
    let (ok, out) = openssl(
        &[
            "ts",
            "-verify",
            "-queryfile",
            "q.tsq",
            "-in",
            "r.tsr",
            "-CAfile",
            ca.dir.join("ca/root.pem").to_str().unwrap(),
            "-untrusted",
            ca.dir.join("ca/tsa.pem").to_str().unwrap(),
        ],
        &dir,
    );
    assert!(ok && out.contains("Verification: OK"), "{out}");
}

mod softhsm {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ceremony_issue_revoke_ocsp_crl_and_timestamps_over_the_daemon() {
        super::ceremony_issue_revoke_ocsp_crl_and_timestamps_over_the_daemon(
            super::ModuleKind::SoftHsm,
        )
        .await
    }
}

mod kryoptic {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ceremony_issue_revoke_ocsp_crl_and_timestamps_over_the_daemon() {
        super::ceremony_issue_revoke_ocsp_crl_and_timestamps_over_the_daemon(
            super::ModuleKind::Kryoptic,
        )
        .await
    }
}

//! 国密 SM2 requests as OpenSSL 3.0 makes them: proof of possession under the GM/T 0009
//! default distinguishing ID or the empty ID OpenSSL signs with unless told otherwise, and
//! a request whose signature does not verify under either refused.

mod common;

use std::path::Path;
use std::process::Command;

use common::ca::run;
use signet::pki::KeyType;
use signet::pki::csr::check_csr;

/// An SM2 CSR for `subject` made by `openssl req` with an SM2 key in `dir`, signed with SM3
/// under `distid` (OpenSSL's own default, the empty ID, when `None`).
fn openssl_sm2_csr(dir: &Path, name: &str, distid: Option<&str>) -> Vec<u8> {
    let key = dir.join("sm2.pem");
    if !key.exists() {
        let o = run(Command::new("openssl")
            .args(["genpkey", "-algorithm", "SM2", "-out"])
            .arg(&key));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let out = dir.join(format!("{name}.der"));
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-new",
        "-sm3",
        "-subj",
        "/C=CN/CN=SM2 subscriber",
        "-outform",
        "DER",
    ])
    .arg("-key")
    .arg(&key)
    .arg("-out")
    .arg(&out);
    if let Some(id) = distid {
        cmd.args(["-sigopt", &format!("distid:{id}")]);
    }
    let o = run(&mut cmd);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

#[test]
fn sm2_requests_prove_possession_under_the_standard_or_openssls_empty_id_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    for (name, id) in [("standard", Some("1234567812345678")), ("empty", None)] {
        let der = openssl_sm2_csr(dir.path(), name, id);
        let checked = check_csr(&der).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(checked.key_type, KeyType::Sm2, "{name}");
    }
    // Signed under an ID signet does not try: the signature cannot be checked, so refused.
    let other = openssl_sm2_csr(dir.path(), "other", Some("ALICE123@YAHOO.COM"));
    let e = check_csr(&other).unwrap_err().to_string();
    assert!(e.contains("does not prove possession"), "{e}");
    // A changed byte in the signed part breaks the signature.
    let mut tampered = openssl_sm2_csr(dir.path(), "tampered", None);
    let at = tampered
        .windows(13)
        .position(|w| w == &b"SM2 subscriber"[..13])
        .unwrap();
    tampered[at] ^= 0x20;
    let e = check_csr(&tampered).unwrap_err().to_string();
    assert!(e.contains("does not prove possession"), "{e}");
}

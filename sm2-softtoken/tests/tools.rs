//! The module with outside tools: OpenSC's pkcs11-tool (another process writing while
//! cryptoki has the module open) and OpenSSL checking SM2 signatures and making SM2
//! ciphertexts the token decrypts.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use sm2_softtoken::vendor::{CKM_SM2_ENCRYPT, CKM_SM2_SM3};
use support::*;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn pkcs11_tool(dir: &Path) -> Command {
    let mut c = Command::new("pkcs11-tool");
    c.env("SIGNET_SM2_SOFTTOKEN_DIR", dir)
        .arg("--module")
        .arg(module_path());
    c
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pkcs11_tool_initialises_the_token_and_writes_a_certificate_signet_then_finds() {
    let f = Fixture::new();
    let dir = f.dir.path();
    let slots = stdout(&run(pkcs11_tool(dir).arg("--list-slots")));
    assert!(slots.contains("token state:   uninitialized"), "{slots}");

    run(pkcs11_tool(dir).args([
        "--slot",
        "0",
        "--init-token",
        "--label",
        "tool-made",
        "--so-pin",
        SO_PIN,
    ]));
    run(pkcs11_tool(dir).args([
        "--token-label",
        "tool-made",
        "--init-pin",
        "--login",
        "--login-type",
        "so",
        "--so-pin",
        SO_PIN,
        "--pin",
        USER_PIN,
    ]));
    let slots = stdout(&run(pkcs11_tool(dir).arg("--list-slots")));
    assert!(
        slots.contains("tool-made") && slots.contains("PIN initialized"),
        "{slots}"
    );
    let mechs = stdout(&run(pkcs11_tool(dir).args([
        "--token-label",
        "tool-made",
        "--list-mechanisms",
    ])));
    for m in [
        "mechtype-0x80008001",
        "mechtype-0x80008100",
        "mechtype-0x80008000",
        "mechtype-0x80008200",
        "ECDSA",
    ] {
        assert!(mechs.contains(m), "{m} missing from\n{mechs}");
    }

    // signet (this process) has the module loaded while pkcs11-tool writes a certificate.
    let slot = f.pkcs11.get_slots_with_initialized_token().expect("slots")[0];
    let session = f.user_session(slot);
    let cert = dir.join("cert.der");
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=sm2-softtoken test",
            "-days",
            "1",
            "-outform",
            "DER",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(&cert));
    run(pkcs11_tool(dir)
        .args([
            "--token-label",
            "tool-made",
            "--login",
            "--pin",
            USER_PIN,
            "--write-object",
        ])
        .arg(&cert)
        .args(["--type", "cert", "--id", "01", "--label", "tool-cert"]));
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(vec![1]),
        ])
        .expect("find");
    assert_eq!(
        found.len(),
        1,
        "the certificate another process wrote is found"
    );
    let value = session
        .get_attributes(found[0], &[AttributeType::Value])
        .expect("value");
    assert_eq!(
        value,
        vec![Attribute::Value(std::fs::read(&cert).expect("cert"))]
    );

    // And what signet generates, pkcs11-tool lists.
    sm2_key_pair(&session, &[2], "signet-sm2-key");
    let objects = stdout(&run(pkcs11_tool(dir).args([
        "--token-label",
        "tool-made",
        "--login",
        "--pin",
        USER_PIN,
        "--list-objects",
    ])));
    assert!(
        objects.contains("tool-cert") && objects.contains("signet-sm2-key"),
        "{objects}"
    );
    let wrong = pkcs11_tool(dir)
        .args([
            "--token-label",
            "tool-made",
            "--login",
            "--pin",
            "0000",
            "--list-objects",
        ])
        .output()
        .expect("run");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("CKR_PIN_INCORRECT"));
}

#[test]
fn openssl_verifies_a_token_sm2_signature_with_the_default_id() {
    let f = Fixture::new();
    let slot = f.token("sm2");
    let session = f.user_session(slot);
    let (public, private) = sm2_key_pair(&session, &[1], "openssl");
    let dir = f.dir.path();
    std::fs::write(
        dir.join("pub.pem"),
        sm2_spki_pem(&public_point(&session, public)),
    )
    .expect("pem");
    std::fs::write(dir.join("msg"), b"a TBSCertificate").expect("msg");
    let sig = session
        .sign(
            &vendor_mech::<u8>(CKM_SM2_SM3, None),
            private,
            b"a TBSCertificate",
        )
        .expect("sign");
    std::fs::write(dir.join("sig.der"), der_signature(&sig)).expect("sig");
    let verify = |msg: &str| {
        Command::new("openssl")
            .args([
                "pkeyutl", "-verify", "-pubin", "-inkey", "pub.pem", "-rawin", "-digest", "sm3",
            ])
            .args([
                "-in",
                msg,
                "-sigfile",
                "sig.der",
                "-pkeyopt",
                "distid:1234567812345678",
            ])
            .current_dir(dir)
            .output()
            .expect("openssl")
    };
    let ok = verify("msg");
    assert!(
        ok.status.success(),
        "{}{}",
        stdout(&ok),
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::write(dir.join("other"), b"another TBSCertificate").expect("other");
    assert!(
        !verify("other").status.success(),
        "OpenSSL refuses the signature for other bytes"
    );
}

#[test]
fn the_token_decrypts_what_openssl_encrypts_to_its_sm2_key() {
    let f = Fixture::new();
    let slot = f.token("sm2");
    let session = f.user_session(slot);
    let public = [
        Attribute::Token(true),
        Attribute::Label("enc".into()),
        Attribute::Encrypt(true),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Label("enc".into()),
        Attribute::Decrypt(true),
    ];
    let (public, private) = session
        .generate_key_pair(
            &vendor_mech::<u8>(sm2_softtoken::vendor::CKM_SM2_KEY_PAIR_GEN, None),
            &public,
            &private,
        )
        .expect("key pair");
    let dir = f.dir.path();
    std::fs::write(
        dir.join("pub.pem"),
        sm2_spki_pem(&public_point(&session, public)),
    )
    .expect("pem");
    std::fs::write(dir.join("plain"), b"an SM4 key here!").expect("plain");
    run(Command::new("openssl")
        .args([
            "pkeyutl", "-encrypt", "-pubin", "-inkey", "pub.pem", "-in", "plain", "-out", "ct",
        ])
        .current_dir(dir));
    let ct = std::fs::read(dir.join("ct")).expect("ciphertext");
    let plain = session
        .decrypt(&vendor_mech::<u8>(CKM_SM2_ENCRYPT, None), private, &ct)
        .expect("C_Decrypt");
    assert_eq!(plain, b"an SM4 key here!");
}

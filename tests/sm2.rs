//! 国密 SM2: requests as OpenSSL 3.0 makes them (proof of possession under the GM/T 0009
//! default distinguishing ID or the empty ID OpenSSL signs with unless told otherwise; any
//! other refused), and an SM2 hierarchy in the SM2 soft token whose certificates OpenSSL
//! checks link by link and BouncyCastle as a whole chain.

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

/// The SM2 soft token's module: `SIGNET_SM2_SOFTTOKEN_MODULE`, or the one the workspace's
/// test build wrote beside this binary, or the release build `softhsm-setup.sh` makes.
fn softtoken_module() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SIGNET_SM2_SOFTTOKEN_MODULE") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let target = deps.parent().unwrap().parent().unwrap();
    for candidate in [
        deps.join("libsm2_softtoken.so"),
        target.join("release").join("libsm2_softtoken.so"),
    ] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "libsm2_softtoken.so not found beside {} nor in {}/release: run ./softhsm-setup.sh",
        deps.display(),
        target.display()
    );
}

#[test]
fn an_sm2_hierarchy_in_the_soft_token_issues_certificates_openssl_and_bouncycastle_verify() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let module = softtoken_module();
    let tokens = dir.join("tokens");
    let tool = |args: &[&str]| {
        let o = run(Command::new("pkcs11-tool")
            .arg("--module")
            .arg(&module)
            .args(args)
            .env("SIGNET_SM2_SOFTTOKEN_DIR", &tokens));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    tool(&[
        "--slot",
        "0",
        "--init-token",
        "--label",
        "signet-sm2",
        "--so-pin",
        "13579246",
    ]);
    tool(&[
        "--token-label",
        "signet-sm2",
        "--init-pin",
        "--login",
        "--login-type",
        "so",
        "--so-pin",
        "13579246",
        "--pin",
        "246810",
    ]);
    let pin = dir.join("pin");
    std::fs::write(&pin, "246810\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut config = format!(
        r#"
[hsm]
module = "{module}"
module_env = {{ SIGNET_SM2_SOFTTOKEN_DIR = "{tokens}" }}
token_label = "signet-sm2"
pin_file = "{pin}"
sm2_mechanisms = "tass"

[store]
sqlite = "{dir}/signet.db"

[ca]
public_base_url = "http://127.0.0.1:8080"
agreement_version = "{agreement}"
output_dir = "{dir}/ca"
oid_arc = "1.3.6.1.4.1.99999"

[ocsp]
responder_key_type = "sm2"

[[issuer]]
name = "root-sm2"
key_label = "sm2-root"
key_type = "sm2"
subject = {{ C = "CN", O = "Signet Test CA", CN = "Signet Test SM2 Root" }}
validity_years = 20
path_len = 0

[[issuer]]
name = "issuing-sm2"
parent = "root-sm2"
key_label = "sm2-issuing"
key_type = "sm2"
subject = {{ C = "CN", O = "Signet Test CA", CN = "Signet Test SM2 Issuing CA" }}
validity_years = 10
path_len = 0
"#,
        module = module.display(),
        tokens = tokens.display(),
        pin = pin.display(),
        dir = dir.display(),
        agreement = common::ca::AGREEMENT,
    );
    config = config.replace("path_len = 0\n\n[[issuer]]", "path_len = 1\n\n[[issuer]]");
    config.push_str(
        "\n[profiles.organization]\nkind = \"organization\"\nissuers = [\"issuing-sm2\"]\npolicy_oid = \"1.3.6.1.4.1.99999.1.2\"\nliability = \"500,000 CNY\"\n",
    );
    let config_path = dir.join("signet.toml");
    std::fs::write(&config_path, config).unwrap();
    let signet = |args: &[&str]| {
        let o = run(Command::new(env!("CARGO_BIN_EXE_signet"))
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("RUST_LOG", "warn"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "signet {args:?}: {text}");
        text
    };
    signet(&["ceremony"]);
    // The keys are on the token, SM2, as pkcs11-tool sees them.
    let objects = tool(&[
        "--token-label",
        "signet-sm2",
        "--login",
        "--pin",
        "246810",
        "--list-objects",
    ]);
    assert!(
        objects.contains("sm2-root") && objects.contains("sm2-issuing"),
        "{objects}"
    );

    let csr = openssl_sm2_csr(dir, "subscriber", Some("1234567812345678"));
    std::fs::write(dir.join("subscriber.der"), &csr).unwrap();
    let leaf = dir.join("leaf.pem");
    signet(&[
        "issue",
        "--profile",
        "organization",
        "--csr",
        dir.join("subscriber.der").to_str().unwrap(),
        "--subject",
        "C=CN, O=宁津县精神卫生中心, organizationIdentifier=12371422MB2850001N, CN=宁津县精神卫生中心",
        "--validity",
        "1",
        "--request-id",
        "sm2-1",
        "--officer",
        "王芳",
        "--ra-reference",
        "SM2-0001",
        "--agreement-version",
        common::ca::AGREEMENT,
        "--out",
        leaf.to_str().unwrap(),
    ]);
    let ca = dir.join("ca");
    let text = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&leaf));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.contains("SM2-with-SM3") && text.contains("SM2"),
        "{text}"
    );
    // OpenSSL 3.0 checks SM2 chains one link at a time under the standard ID.
    for (cert, issuer) in [
        (leaf.clone(), ca.join("issuing-sm2.pem")),
        (ca.join("issuing-sm2.pem"), ca.join("root-sm2.pem")),
        (ca.join("root-sm2.pem"), ca.join("root-sm2.pem")),
    ] {
        let o = run(Command::new("openssl")
            .args([
                "verify",
                "-vfyopt",
                "distid:1234567812345678",
                "-partial_chain",
                "-CAfile",
            ])
            .arg(&issuer)
            .arg(&cert));
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success() && out.contains(": OK"),
            "{}: {out}",
            cert.display()
        );
    }
    // Under OpenSSL's own default, the empty ID, the same signature does not verify.
    let o = run(Command::new("openssl")
        .args(["verify", "-partial_chain", "-CAfile"])
        .arg(ca.join("issuing-sm2.pem"))
        .arg(&leaf));
    assert!(!o.status.success());

    // BouncyCastle checks the whole chain at once: every signature under the standard ID,
    // then PKIX path validation to the SM2 root; a leaf offered under the root directly does
    // not verify.
    let (ok, out) = bouncycastle(
        dir,
        &[&ca.join("root-sm2.pem"), &ca.join("issuing-sm2.pem"), &leaf],
    );
    assert!(ok && out.contains("PATH VALID"), "{out}");
    assert_eq!(out.matches("VERIFIED ").count(), 3, "{out}");
    let (ok, out) = bouncycastle(dir, &[&ca.join("root-sm2.pem"), &leaf]);
    assert!(!ok && out.contains("FAILED"), "{out}");
}

/// BouncyCastle's classpath (Debian's libbcprov-java and libbcpkix-java).
const BOUNCYCASTLE: &str = "/usr/share/java/bcprov.jar:/usr/share/java/bcpkix.jar";

/// tests/tools/Sm2ChainVerify.java, compiled into `dir`, run on `chain` (root first): whether
/// BouncyCastle accepted it, and what it printed.
fn bouncycastle(dir: &Path, chain: &[&Path]) -> (bool, String) {
    let classes = dir.join("java");
    if !classes.join("Sm2ChainVerify.class").exists() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/Sm2ChainVerify.java");
        let o = run(Command::new("javac")
            .args(["-cp", BOUNCYCASTLE, "-d"])
            .arg(&classes)
            .arg(src));
        assert!(
            o.status.success(),
            "javac (apt-get install openjdk-17-jdk-headless libbcprov-java libbcpkix-java): {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = run(Command::new("java")
        .arg("-cp")
        .arg(format!("{BOUNCYCASTLE}:{}", classes.display()))
        .arg("Sm2ChainVerify")
        .args(chain));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

//! The `signet` binary as an operator uses it: the ceremony makes a hierarchy that OpenSSL
//! accepts, keeps its keys in the HSM as non-extractable objects, never overwrites a key or a
//! certificate, and `signet issue` prints a certificate or a clear refusal.

mod common;

use std::path::Path;
use std::process::Command;

use common::ca::*;

fn pkcs11_objects(module: &Path, pin: &str) -> String {
    let o = run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(module)
        .args([
            "--token-label",
            "signet-ca",
            "--login",
            "--pin",
            pin,
            "--list-objects",
        ]));
    assert!(o.status.success(), "pkcs11-tool: {}", output_text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn ceremony_makes_a_hierarchy_openssl_accepts_with_keys_that_never_leave_the_hsm() {
    let (softhsm, _dir, config, cfg) = TestCa::prepare();
    let o = signet_with(&config, &["ceremony"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let out = cfg.output_dir();
    for issuer in ["issuing-rsa", "issuing-ec"] {
        let v = run(Command::new("openssl")
            .args(["verify", "-x509_strict", "-CAfile"])
            .arg(out.join("root.pem"))
            .arg(out.join(format!("{issuer}.pem"))));
        assert!(v.status.success(), "{issuer}: {}", output_text(&v));
    }
    // The .crt files are DER, as relying parties download them.
    let d = run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-subject", "-in"])
        .arg(out.join("root.crt")));
    assert!(
        d.status.success() && output_text(&d).contains("Signet Test Root"),
        "{}",
        output_text(&d)
    );
    // The certs-only .p7b lists the whole hierarchy.
    let p = run(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-noout", "-in"])
        .arg(out.join("chain.p7b")));
    let listed = output_text(&p);
    assert!(p.status.success(), "{listed}");
    for cn in [
        "Signet Test Root",
        "Signet Test RSA Issuing CA",
        "Signet Test EC Issuing CA",
    ] {
        assert!(listed.contains(cn), "{cn} missing from chain.p7b: {listed}");
    }
    let (ok, report) = pkilint(&[
        out.join("root.pem"),
        out.join("issuing-rsa.pem"),
        out.join("issuing-ec.pem"),
    ]);
    assert!(ok, "{report}");
    // Private keys in the HSM: sensitive, never extractable, generated on the token.
    let objects = pkcs11_objects(&softhsm.module, USER_PIN);
    let private_keys: Vec<&str> = objects.split("Private Key Object").skip(1).collect();
    // Three issuers, each with its delegated OCSP responder key.
    assert_eq!(private_keys.len(), 6, "{objects}");
    for k in private_keys {
        // pkcs11-tool prints CKA_SENSITIVE, CKA_NEVER_EXTRACTABLE and CKA_LOCAL as read from
        // the token: the value can never be read out, and the key was born there.
        assert!(
            k.contains("never extractable") && k.contains("sensitive") && k.contains("local"),
            "{k}"
        );
        assert!(
            k.contains("Usage:      sign") && !k.contains("decrypt") && !k.contains("unwrap"),
            "{k}"
        );
    }
    // A second run changes nothing.
    let before = std::fs::read(out.join("issuing-ec.pem")).unwrap();
    let o = signet_with(&config, &["ceremony"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("issuer issuing-ec already exists"),
        "{}",
        output_text(&o)
    );
    assert_eq!(std::fs::read(out.join("issuing-ec.pem")).unwrap(), before);
    assert_eq!(
        pkcs11_objects(&softhsm.module, USER_PIN)
            .matches("Private Key Object")
            .count(),
        6
    );
}

/// Add a TLS-only issuer, an `[api]` listening on `listen` and one RA office whose client
/// certificate the ceremony makes. Returns the directory of the TLS files.
fn add_api(config: &Path, dir: &Path, listen: &str) -> std::path::PathBuf {
    let tls = dir.join("tls");
    let mut toml = std::fs::read_to_string(config).unwrap();
    toml.push_str(&format!(
        r#"
[[issuer]]
name = "issuing-tls"
parent = "root"
key_label = "test-issuing-tls"
key_type = "p256"
subject = {{ CN = "Signet Test TLS Issuing CA" }}
validity_years = 10
path_len = 0

[api]
listen = "{listen}"
server_cert = "{t}/server.pem"
server_key = "{t}/server.key"
server_names = ["127.0.0.1", "ca.example.cn"]
tls_issuer = "issuing-tls"
client_ca = ["{d}/ca/issuing-tls.pem"]

[[ra]]
name = "desk-1"
subject = "CN=Desk 1, O=测试注册机构, C=CN"
profiles = ["personal", "organization"]
operations = ["issue", "read"]
client_cert = "{t}/desk-1.pem"
client_key = "{t}/desk-1.key"
"#,
        t = tls.display(),
        d = dir.display()
    ));
    std::fs::write(config, toml).unwrap();
    tls
}

#[test]
fn quickstart_serves_and_the_ra_line_it_prints_issues_a_certificate() {
    let (_softhsm, dir, config, cfg) = TestCa::prepare();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    add_api(&config, &dir, &format!("127.0.0.1:{port}"));
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_signet"))
        .arg("--config")
        .arg(&config)
        .arg("quickstart")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The announcement comes once the listener is up; the instructions precede it on stderr.
    let mut out = std::io::BufReader::new(daemon.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(
        line.contains(&format!("serving RA API on 127.0.0.1:{port}")),
        "{line:?}"
    );
    // Run the printed `signet ra` line (after `cargo run -q --`) against the daemon.
    let mut err = daemon.stderr.take().unwrap();
    let mut instructions = vec![0u8; 8192];
    let n = std::io::Read::read(&mut err, &mut instructions).unwrap();
    let instructions = String::from_utf8_lossy(&instructions[..n]).into_owned();
    let start = instructions
        .find("cargo run -q -- ")
        .expect("the quick start prints a signet ra line");
    let end = instructions[start..]
        .find("\n\n")
        .map_or(instructions.len(), |e| start + e);
    let printed = instructions[start + "cargo run -q -- ".len()..end].replace("\\\n", " ");
    let words = shell_words(&printed);
    let o = run(Command::new(env!("CARGO_BIN_EXE_signet"))
        .args(&words)
        .env("RUST_LOG", "warn"));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(daemon.id().to_string())
        .status();
    let status = daemon.wait().unwrap();
    assert!(o.status.success(), "{printed}: {}", output_text(&o));
    assert!(
        status.success(),
        "the daemon did not exit 0 on SIGTERM: {status}"
    );
    let first = dir.join("quickstart/first.pem");
    let (ok, t) = openssl_verify(
        &cfg.output_dir().join("root.pem"),
        &cfg.output_dir().join("chain.pem"),
        &first,
        "sslclient",
    );
    assert!(ok, "{t}");
}

/// Split a command line the way a POSIX shell does for plain words and single quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[test]
fn ceremony_issues_the_daemon_and_ra_tls_material_from_a_tls_only_issuer() {
    let (_softhsm, dir, config, _cfg) = TestCa::prepare();
    let tls = add_api(&config, &dir, "127.0.0.1:0");
    let o = signet_with(&config, &["ceremony"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let root = dir.join("ca/root.pem");
    for (name, purpose, subject) in [
        ("server", "sslserver", "CN=127.0.0.1"),
        ("desk-1", "sslclient", "CN=Desk 1"),
    ] {
        let chain = tls.join(format!("{name}.pem"));
        let key = tls.join(format!("{name}.key"));
        let (ok, t) = openssl_verify(&root, &chain, &chain, purpose);
        assert!(ok, "{name}: {t}");
        let s = run(Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-subject",
                "-nameopt",
                "utf8,sep_comma_plus",
                "-in",
            ])
            .arg(&chain));
        assert!(
            output_text(&s).contains(subject),
            "{name}: {}",
            output_text(&s)
        );
        // The key file is private and holds the certificate's key.
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
        let cert_pub = run(Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&chain));
        let key_pub = run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key));
        assert_eq!(
            cert_pub.stdout, key_pub.stdout,
            "{name}: key and certificate differ"
        );
        let leaf = tls.join(format!("{name}-leaf.pem"));
        assert!(
            run(Command::new("openssl")
                .args(["x509", "-out"])
                .arg(&leaf)
                .arg("-in")
                .arg(&chain))
            .status
            .success()
        );
        let (ok, report) = pkilint(&[leaf]);
        assert!(ok, "{name}: {report}");
    }
    // A second run keeps the material as it is.
    let before = std::fs::read(tls.join("server.key")).unwrap();
    assert!(signet_with(&config, &["ceremony"]).status.success());
    assert_eq!(std::fs::read(tls.join("server.key")).unwrap(), before);
    // Both certificates are recorded in the store.
    let n = run(Command::new("sqlite3").arg(dir.join("signet.db")).arg(
        "SELECT COUNT(*) FROM certificates WHERE issuer = 'issuing-tls' AND status = 'valid' \
         AND profile != 'ocsp_responder'",
    ));
    assert_eq!(String::from_utf8_lossy(&n.stdout).trim(), "2");
}

#[test]
fn ceremony_refuses_to_overwrite_a_key_it_did_not_make() {
    let (softhsm, _dir, config, _cfg) = TestCa::prepare();
    let g = run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&softhsm.module)
        .args([
            "--token-label",
            "signet-ca",
            "--login",
            "--pin",
            USER_PIN,
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "test-issuing-ec",
        ]));
    assert!(g.status.success(), "{}", output_text(&g));
    let o = signet_with(&config, &["ceremony"]);
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains("\"test-issuing-ec\" already exists in the HSM"),
        "{}",
        output_text(&o)
    );
}

#[test]
fn ceremony_refuses_to_overwrite_a_certificate_file() {
    let (_softhsm, _dir, config, cfg) = TestCa::prepare();
    std::fs::create_dir_all(cfg.output_dir()).unwrap();
    std::fs::write(cfg.output_dir().join("root.pem"), "somebody else's root").unwrap();
    let o = signet_with(&config, &["ceremony"]);
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains("refusing to overwrite a certificate"),
        "{}",
        output_text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(cfg.output_dir().join("root.pem")).unwrap(),
        "somebody else's root"
    );
}

#[test]
fn issue_command_prints_a_certificate_and_refuses_bad_input_naming_the_field() {
    let (_softhsm, dir, config, cfg) = TestCa::prepare();
    assert!(signet_with(&config, &["ceremony"]).status.success());
    make_csr(&dir, "p256");
    let csr = dir.join("p256.csr");
    let csr = csr.to_str().unwrap();
    let base = [
        "issue",
        "--profile",
        "server",
        "--csr",
        csr,
        "--san",
        "dns:www.example.cn",
        "--officer",
        "王芳",
        "--ra-reference",
        "RA-1",
        "--agreement-version",
        AGREEMENT,
    ];
    let mut args = base.to_vec();
    args.extend([
        "--subject",
        "CN=www.example.cn",
        "--request-id",
        "cli-1",
        "--issuer",
        "issuing-ec",
        "--validity",
        "1",
    ]);
    let o = signet_with(&config, &args);
    assert!(o.status.success(), "{}", output_text(&o));
    let leaf = dir.join("cli-1.pem");
    std::fs::write(&leaf, &o.stdout).unwrap();
    let (ok, t) = openssl_verify(
        &cfg.output_dir().join("root.pem"),
        &cfg.output_dir().join("issuing-ec.pem"),
        &leaf,
        "sslserver",
    );
    assert!(ok, "{t}");
    // The same request id again prints the same certificate.
    let again = signet_with(&config, &args);
    assert_eq!(again.stdout, o.stdout);

    let long_cn = format!("CN={}", "域".repeat(65));
    let mut bad = base.to_vec();
    bad.extend([
        "--subject",
        &long_cn,
        "--request-id",
        "cli-2",
        "--validity",
        "1",
    ]);
    let o = signet_with(&config, &bad);
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains("subject.CN"),
        "{}",
        output_text(&o)
    );

    let mut bad = base.to_vec();
    bad.extend([
        "--subject",
        "CN=www.example.cn",
        "--request-id",
        "cli-3",
        "--validity",
        "5",
    ]);
    let o = signet_with(&config, &bad);
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains("validity_years"),
        "{}",
        output_text(&o)
    );

    let db = cfg.store_path();
    let count = run(Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT COUNT(*) FROM certificates WHERE profile != 'ocsp_responder'"));
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "1");
}

#[test]
fn check_config_warns_about_example_oids_and_ed25519_and_production_refuses_example_oids() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("hsm-config");
    // The quick start keeps the example arc: a warning, and a configuration that loads.
    let o = signet_with(&samples.join("softhsm.toml"), &["check-config"]);
    let out = output_text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("warning: ca.oid_arc: 1.3.6.1.4.1.99999 is under the example arc"),
        "{out}"
    );
    // --production refuses it, naming every key that holds an example OID.
    for (file, keys) in [
        ("softhsm.toml", &["ca.oid_arc"][..]),
        (
            "production.toml",
            &[
                "ca.oid_arc",
                "tsa.policy_oid",
                "profiles.organization.policy_oid",
            ][..],
        ),
    ] {
        let o = signet_with(&samples.join(file), &["check-config", "--production"]);
        let out = output_text(&o);
        assert!(!o.status.success(), "{file}: {out}");
        for key in keys {
            assert!(
                out.contains(&format!("error: {key}: ")),
                "{file}: {key}: {out}"
            );
        }
        assert!(
            out.contains(&format!("not fit for production: {}", keys.join(", "))),
            "{file}: {out}"
        );
    }
    // The CA's own arc passes; Ed25519 enabled for a TLS profile is a warning naming it.
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("production.toml");
    let text_of = std::fs::read_to_string(samples.join("production.toml"))
        .unwrap()
        .replace("1.3.6.1.4.1.99999", "1.3.6.1.4.1.61234")
        .replace(
            "[profiles.server]\nkind = \"server\"\n",
            "[profiles.server]\nkind = \"server\"\nkey_types = [\"p256\", \"ed25519\"]\n",
        );
    std::fs::write(&own, text_of).unwrap();
    let o = signet_with(&own, &["check-config", "--production"]);
    let out = output_text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("example arc"), "{out}");
    assert!(
        out.contains("warning: profiles.server.key_types: ed25519 is enabled")
            && out.contains("NSS"),
        "{out}"
    );
}

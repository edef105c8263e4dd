//! The default profiles judged by what judges certificates in the field, none of it signet's:
//! pkilint's CA/B Forum linters (`lint_cabf_serverauth_cert`, `lint_cabf_smime_cert`, type
//! detected from the reserved policy OID), NSS's `vfychain` (the engine of Firefox and
//! Thunderbird) for each profile's usage, and Java's PKIX CertPathValidator with each
//! profile's extended key usages. Then the certificates the ceremony makes for signet itself:
//! the CA's policy in each, never anyPolicy, and an audit certificate that no TLS or S/MIME
//! verifier accepts. A missing tool fails the test, naming what to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use signet::pki::San;

use common::ca::*;

/// The public base URL of these tests' CA: a public name, as the CA/B rules want in CRL
/// distribution points and AIA (the shared test CA's 127.0.0.1 is an internal address).
const PUBLIC_BASE: &str = "http://pki.example.cn";

const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
const EMAIL_PROTECTION: &str = "1.3.6.1.5.5.7.3.4";

/// One certificate the tests issue: which default profile, whether the request names an
/// e-mail address, what pkilint must detect, the NSS usages (`vfychain -u`) and the
/// extended key usages (for Java) it must pass with.
struct Case {
    profile: &'static str,
    email: bool,
    cabf: Option<(&'static str, &'static str)>,
    nss_usages: &'static [(u8, &'static str)],
    ekus: &'static [&'static str],
}

const CASES: [Case; 7] = [
    Case {
        profile: "server",
        email: false,
        cabf: Some(("cabf-serverauth", "DV-FINAL-CERTIFICATE")),
        nss_usages: &[(1, "SSL server")],
        ekus: &[SERVER_AUTH],
    },
    Case {
        profile: "payment_gateway",
        email: false,
        cabf: Some(("cabf-serverauth", "OV-FINAL-CERTIFICATE")),
        nss_usages: &[(1, "SSL server"), (0, "SSL client")],
        ekus: &[SERVER_AUTH, CLIENT_AUTH],
    },
    Case {
        profile: "personal",
        email: true,
        cabf: Some(("cabf-smime", "INDIVIDUAL-MULTIPURPOSE")),
        nss_usages: &[(0, "SSL client"), (4, "email signer")],
        ekus: &[CLIENT_AUTH, EMAIL_PROTECTION],
    },
    Case {
        profile: "organization",
        email: true,
        cabf: Some(("cabf-smime", "ORGANIZATION-MULTIPURPOSE")),
        nss_usages: &[(0, "SSL client"), (4, "email signer")],
        ekus: &[CLIENT_AUTH, EMAIL_PROTECTION],
    },
    // Without an e-mail address: a client certificate, no S/MIME certificate.
    Case {
        profile: "organization",
        email: false,
        cabf: None,
        nss_usages: &[(0, "SSL client")],
        ekus: &[CLIENT_AUTH],
    },
    Case {
        profile: "device",
        email: false,
        cabf: None,
        nss_usages: &[(0, "SSL client")],
        ekus: &[CLIENT_AUTH],
    },
    Case {
        profile: "code_signing",
        email: false,
        cabf: None,
        nss_usages: &[(6, "object signer")],
        ekus: &[CODE_SIGNING],
    },
];

/// Subscriber keys of the default profiles (Ed25519 is none of theirs).
const KEYS: [&str; 3] = ["rsa2048", "p256", "p384"];
const ISSUERS: [&str; 2] = ["issuing-rsa", "issuing-ec"];

/// Run `cmd`, failing the test with `install` when the program is not there.
fn tool(cmd: &mut Command, install: &str) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} is not installed: {install} (./softhsm-setup.sh --with-test-tools installs it)",
            cmd.get_program()
        ),
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A certificate issued for a case: its PEM, the PEM of it followed by its issuing CA.
struct Leaf {
    case: &'static Case,
    id: String,
    issuer: &'static str,
    pem: PathBuf,
    chain: PathBuf,
}

/// The test CA with a public base URL and the shipped defaults of every profile.
async fn ca() -> TestCa {
    TestCa::new_edited("", &[], &|t| {
        t.replace(
            "public_base_url = \"http://127.0.0.1:8080\"",
            &format!("public_base_url = \"{PUBLIC_BASE}\""),
        )
    })
    .await
}

/// Every case × key × issuer, issued through the authority on SoftHSM.
async fn issue_all(t: &TestCa) -> Vec<Leaf> {
    let dir = t.dir.join("leaves");
    std::fs::create_dir_all(&dir).unwrap();
    let mut out = Vec::new();
    for key in KEYS {
        let csr = make_csr(&dir, key);
        for case in &CASES {
            for issuer in ISSUERS {
                let id = format!(
                    "{}{}-{key}-{issuer}",
                    case.profile,
                    if case.email { "-email" } else { "" }
                );
                let mut req = request(&id, case.profile, csr.clone());
                req.issuer = Some(issuer.into());
                if case.email && !req.sans.iter().any(|s| matches!(s, San::Email(_))) {
                    req.sans.push(San::Email("office@example.cn".into()));
                }
                let issued =
                    t.ca.issue("ra-test", req)
                        .await
                        .unwrap_or_else(|e| panic!("{id}: {e}"));
                let pem_path = dir.join(format!("{id}.pem"));
                std::fs::write(&pem_path, pem(&issued.cert_der)).unwrap();
                let chain = dir.join(format!("{id}-chain.pem"));
                std::fs::write(
                    &chain,
                    format!("{}{}", pem(&issued.cert_der), pem(&issued.chain[0])),
                )
                .unwrap();
                out.push(Leaf {
                    case,
                    id,
                    issuer,
                    pem: pem_path,
                    chain,
                });
            }
        }
    }
    out
}

/// pkilint's CA/B linter `linter` over `files`: (passed, report).
fn pkilint_cabf(linter: &str, files: &[&Path]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/pkilint_batch.py");
    let probe = tool(
        Command::new("python3").args(["-c", "import pkilint.bin.lint_cabf_smime_cert"]),
        "python3",
    );
    assert!(
        probe.status.success(),
        "pkilint is not installed: python3 -m pip install pkilint (./softhsm-setup.sh --with-test-tools)\n{}",
        text(&probe)
    );
    let o = tool(
        Command::new("python3")
            .arg(script)
            .args(["--linter", linter])
            .args(files),
        "python3",
    );
    (o.status.success(), text(&o))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_tls_and_email_profiles_pass_pkilints_cabf_linters_as_the_type_they_claim() {
    let t = ca().await;
    let leaves = issue_all(&t).await;
    for linter in ["cabf-serverauth", "cabf-smime"] {
        let linted: Vec<&Leaf> = leaves
            .iter()
            .filter(|l| l.case.cabf.is_some_and(|(name, _)| name == linter))
            .collect();
        assert_eq!(linted.len(), 2 * KEYS.len() * ISSUERS.len(), "{linter}");
        let files: Vec<&Path> = linted.iter().map(|l| l.pem.as_path()).collect();
        let (ok, report) = pkilint_cabf(linter, &files);
        assert!(ok, "{linter} found ERRORs:\n{report}");
        // The type pkilint detects from the reserved policy OID is the one the profile means.
        for l in linted {
            let (_, wanted) = l.case.cabf.unwrap_or_default();
            let line = format!("{}: type {wanted}", l.pem.display());
            assert!(report.contains(&line), "{}: {line} not in\n{report}", l.id);
        }
        println!("{report}");
    }
    // Without an e-mail address no emailProtection, so nothing for S/MIME linters to refuse.
    for l in leaves.iter().filter(|l| !l.case.email) {
        let o = tool(
            Command::new("openssl")
                .args(["x509", "-noout", "-ext", "extendedKeyUsage", "-in"])
                .arg(&l.pem),
            "apt-get install openssl",
        );
        assert!(
            !text(&o).contains("E-mail Protection"),
            "{}: {}",
            l.id,
            text(&o)
        );
    }
}

/// An NSS database trusting the test root for every usage, with the issuing CAs in it.
fn nss_db(t: &TestCa) -> PathBuf {
    let db = t.dir.join("nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let certutil = |args: &[&str]| {
        let o = tool(
            Command::new("certutil")
                .arg("-d")
                .arg(format!("sql:{}", db.display()))
                .args(args),
            "apt-get install libnss3-tools",
        );
        assert!(o.status.success(), "certutil {args:?}: {}", text(&o));
    };
    certutil(&["-N", "--empty-password"]);
    certutil(&[
        "-A",
        "-n",
        "root",
        "-t",
        "CT,C,C",
        "-i",
        t.root_pem().to_str().unwrap(),
    ]);
    for issuer in ISSUERS {
        // "c" (a valid CA, not a trust anchor) in the object-signing column: NSS takes an
        // intermediate for object signing only when it is marked so or names codeSigning
        // in an EKU of its own, which signet's issuing CAs, signing every profile, do not.
        certutil(&[
            "-A",
            "-n",
            issuer,
            "-t",
            ",,c",
            "-i",
            t.issuer_pem(issuer).to_str().unwrap(),
        ]);
    }
    db
}

/// `vfychain -pp` (NSS's libpkix) of a PEM leaf against the database for `usage`.
fn vfychain(db: &Path, usage: u8, leaf: &Path) -> (bool, String) {
    let o = tool(
        Command::new("vfychain")
            .arg("-d")
            .arg(format!("sql:{}", db.display()))
            .args(["-pp", "-u", &usage.to_string(), "-a"])
            .arg(leaf),
        "apt-get install libnss3-tools",
    );
    let out = text(&o);
    (o.status.success() && out.contains("Chain is good!"), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_default_profile_verifies_with_nss_vfychain_for_its_usage() {
    let t = ca().await;
    let leaves = issue_all(&t).await;
    let db = nss_db(&t);
    let mut failures = Vec::new();
    for l in &leaves {
        for (usage, what) in l.case.nss_usages {
            let (ok, out) = vfychain(&db, *usage, &l.pem);
            if !ok {
                failures.push(format!("{} as {what} (-u {usage}): {out}", l.id));
            }
        }
    }
    assert!(failures.is_empty(), "NSS refused:\n{}", failures.join("\n"));
}

/// Compile tests/tools/PkixValidate.java into `dir` with javac.
fn compile_java(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/PkixValidate.java");
    let o = tool(
        Command::new("javac").arg("-d").arg(dir).arg(src),
        "apt-get install openjdk-17-jdk-headless",
    );
    assert!(o.status.success(), "javac: {}", text(&o));
}

/// Java's PKIX validation of each `(chain, EKU OIDs)` against `root`: (all valid, output).
fn java_pkix(classes: &Path, root: &Path, chains: &[(PathBuf, String)]) -> (bool, String) {
    let o = tool(
        Command::new("java")
            .arg("-cp")
            .arg(classes)
            .arg("PkixValidate")
            .arg(root)
            .args(
                chains
                    .iter()
                    .map(|(c, ekus)| format!("{}={ekus}", c.display())),
            ),
        "apt-get install openjdk-17-jdk-headless",
    );
    (o.status.success(), text(&o))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_default_profile_validates_with_java_pkix_for_its_extended_key_usages() {
    let t = ca().await;
    let leaves = issue_all(&t).await;
    let classes = t.dir.join("java");
    compile_java(&classes);
    let chains: Vec<(PathBuf, String)> = leaves
        .iter()
        .map(|l| (l.chain.clone(), l.case.ekus.join(",")))
        .collect();
    let (ok, out) = java_pkix(&classes, &t.root_pem(), &chains);
    assert!(ok, "Java PKIX refused:\n{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains(": VALID ")).count(),
        leaves.len(),
        "{out}"
    );
    // Each leaf under the issuer that made it.
    for l in &leaves {
        assert!(
            out.contains(&format!("{}: VALID", l.chain.display())),
            "{} under {}",
            l.id,
            l.issuer
        );
    }
}

/// A CA whose ceremony also makes the daemon's TLS certificate, an RA office's client
/// certificate, the TSA's and the audit key's.
const OWN_CERTIFICATES: &str = r#"
[[issuer]]
name = "issuing-tls"
parent = "root"
key_label = "test-issuing-tls"
key_type = "p256"
subject = { CN = "Signet Test TLS Issuing CA" }
validity_years = 10
path_len = 0

[api]
listen = "127.0.0.1:0"
server_cert = "DIR/tls/server.pem"
server_key = "DIR/tls/server.key"
server_names = ["127.0.0.1"]
tls_issuer = "issuing-tls"
client_ca = ["DIR/ca/issuing-tls.pem"]

[[ra]]
name = "desk-1"
subject = "CN=Desk 1, O=测试注册机构, C=CN"
profiles = ["personal"]
operations = ["issue"]
client_cert = "DIR/tls/desk-1.pem"
client_key = "DIR/tls/desk-1.key"

[tsa]
issuer = "issuing-ec"
key_label = "test-tsa"
key_type = "p256"
subject = { C = "CN", O = "Signet Test CA", CN = "Signet Test TSA" }
accuracy_seconds = 1

[audit]
issuer = "issuing-ec"
key_label = "test-audit"
subject = { C = "CN", O = "Signet Test CA", CN = "Signet Test Audit Key" }
"#;

fn openssl_text(pem: &Path) -> String {
    let o = tool(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(pem),
        "apt-get install openssl",
    );
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceremonys_own_certificates_carry_the_cas_policy_and_the_audit_certificate_no_common_purpose()
 {
    let t = TestCa::new_edited("", &[], &|text| {
        let dir = text
            .lines()
            .find_map(|l| l.strip_prefix("output_dir = \""))
            .and_then(|d| d.strip_suffix("/ca\""))
            .expect("output_dir")
            .to_owned();
        text + &OWN_CERTIFICATES.replace("DIR", &dir)
    })
    .await;
    let out = t.cfg.output_dir();
    let tls = t.dir.join("tls");
    // The CA's policy for its own certificates: {oid_arc}.3.1.
    let service = "Policy: 1.3.6.1.4.1.99999.3.1";
    let mut own = vec![
        ("TLS server", tls.join("server.pem")),
        ("RA client", tls.join("desk-1.pem")),
        ("TSA", out.join("tsa.pem")),
        ("audit", out.join("audit.pem")),
    ];
    // The delegated OCSP responders' certificates, from the store.
    let responders = t
        .store
        .list_certificates(
            signet::store::CertFilter {
                profile: Some("ocsp_responder".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap()
        .records;
    assert_eq!(responders.len(), 4, "one per issuer");
    for r in &responders {
        let path = t.dir.join(format!("responder-{}.pem", r.issuer));
        std::fs::write(&path, pem(r.cert_der.as_deref().unwrap())).unwrap();
        own.push(("OCSP responder", path));
    }
    for (what, path) in &own {
        let text = openssl_text(path);
        assert!(text.contains(service), "{what}: no {service}:\n{text}");
        assert!(
            !text.contains("Any Policy"),
            "{what} carries anyPolicy:\n{text}"
        );
    }

    // The audit certificate: one critical extendedKeyUsage, the CA's own audit purpose
    // ({oid_arc}.3.2), which no TLS or S/MIME verifier takes.
    let audit = out.join("audit.pem");
    let text = openssl_text(&audit);
    assert!(
        text.contains(
            "X509v3 Extended Key Usage: critical\n                1.3.6.1.4.1.99999.3.2\n"
        ),
        "{text}"
    );
    let issuer = t.issuer_pem("issuing-ec");
    for purpose in ["sslserver", "sslclient", "smimesign"] {
        let (ok, out) = openssl_verify(&t.root_pem(), &issuer, &audit, purpose);
        assert!(
            !ok,
            "openssl verify -purpose {purpose} accepted the audit certificate:\n{out}"
        );
        assert!(
            out.contains("unsuitable certificate purpose"),
            "{purpose}: {out}"
        );
    }
    // The chain itself is sound: for no particular purpose it verifies.
    let (ok, out) = openssl_verify(&t.root_pem(), &issuer, &audit, "any");
    assert!(ok, "{out}");
    // NSS and Java refuse it as a TLS server, TLS client or e-mail signer too.
    let db = nss_db(&t);
    for (usage, what) in [(1, "SSL server"), (0, "SSL client"), (4, "email signer")] {
        let (ok, out) = vfychain(&db, usage, &audit);
        assert!(!ok, "NSS accepted the audit certificate as {what}:\n{out}");
    }
    let classes = t.dir.join("java");
    compile_java(&classes);
    // The audit certificate and its issuing CA (audit.pem goes on to the root).
    let chain = t.dir.join("audit-chain.pem");
    let end = "-----END CERTIFICATE-----\n";
    let pems: Vec<String> = std::fs::read_to_string(&audit)
        .unwrap()
        .split_inclusive(end)
        .map(str::to_owned)
        .collect();
    std::fs::write(&chain, pems[..2].concat()).unwrap();
    for eku in [SERVER_AUTH, CLIENT_AUTH, EMAIL_PROTECTION] {
        let (ok, out) = java_pkix(&classes, &t.root_pem(), &[(chain.clone(), eku.into())]);
        assert!(!ok, "Java accepted the audit certificate for {eku}:\n{out}");
    }
    let (ok, out) = java_pkix(&classes, &t.root_pem(), &[(chain, String::new())]);
    assert!(ok, "{out}");
}

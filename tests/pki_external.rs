//! Certificates built by `signet::pki` and signed with software test keys, checked by tools
//! signet did not write: `openssl verify -x509_strict`, pkilint (`lint_pkix_cert`), GnuTLS
//! `certtool --verify`, `openssl x509` name printing and `openssl pkcs7 -print_certs`.
//! Subscriber CSRs come from `openssl req -new`, as an applicant's tooling would make them.

#[path = "support/soft_signer.rs"]
mod soft_signer;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use const_oid::ObjectIdentifier;
use der::Encode;
use signet::pki::alg;
use signet::pki::cert::{
    CaRequest, IssuerRef, LeafRequest, Urls, assemble, build_ca_tbs, build_leaf_tbs,
    check_signed_by,
};
use signet::pki::csr::check_csr;
use signet::pki::pkcs7::{certs_only, pem};
use signet::pki::serial::random_serial;
use signet::pki::{KeyType, PkiError, Profile, ProfileKind, San, SignatureAlgorithm, SubjectSpec};
use soft_signer::SoftKey;
use x509_cert::Certificate;

const ORG_NAME: &str = "宁津县精神卫生中心";
const CREDIT_CODE: &str = "914403001922038216";

/// Run a command; its success and combined output.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write_pem(dir: &Path, name: &str, certs: &[&Certificate]) -> PathBuf {
    let path = dir.join(name);
    let text: String = certs
        .iter()
        .map(|c| pem("CERTIFICATE", &c.to_der().unwrap()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A CA for the tests: its key, the algorithm it signs with, its certificate.
struct Ca {
    name: &'static str,
    key: SoftKey,
    alg: SignatureAlgorithm,
    cert: Certificate,
    pem: PathBuf,
}

impl Ca {
    fn issuer(&self) -> IssuerRef<'_> {
        IssuerRef {
            name: self.name,
            cert: &self.cert,
            signature: self.alg,
        }
    }
}

/// A software root (P-384) and two intermediates under it: RSA-2048 and P-256.
struct Hierarchy {
    dir: TestDir,
    root: Ca,
    rsa: Ca,
    ec: Ca,
}

fn urls() -> Urls {
    Urls {
        base: "http://pki.signet.test".into(),
    }
}

fn start() -> SystemTime {
    // A little in the past, so a verifier's clock a moment behind still accepts it.
    SystemTime::now() - Duration::from_secs(300)
}

fn make_ca(
    name: &'static str,
    subject: &str,
    key: SoftKey,
    parent: Option<&Ca>,
    path_len: Option<u8>,
    years: u32,
    dir: &Path,
) -> Ca {
    let subject = SubjectSpec::parse(subject).unwrap();
    let spki = key.spki();
    let req = CaRequest {
        subject: &subject,
        spki: &spki,
        path_len,
        validity_years: years,
    };
    let alg = key.default_alg();
    let (sign_alg, issuer) = match parent {
        Some(p) => (p.alg, Some(p.issuer())),
        None => (alg, None),
    };
    let tbs = build_ca_tbs(
        issuer.as_ref(),
        sign_alg,
        &urls(),
        &req,
        random_serial(),
        start(),
    )
    .unwrap();
    let signer = parent.map_or(&key, |p| &p.key);
    let sig = signer.sign(sign_alg, &tbs.to_der().unwrap());
    let cert = assemble(tbs, &sig).unwrap();
    check_signed_by(&cert, &signer.spki()).unwrap();
    let pem = write_pem(dir, &format!("{name}.pem"), &[&cert]);
    Ca {
        name,
        key,
        alg,
        cert,
        pem,
    }
}

/// A temporary directory, kept for inspection when `SIGNET_KEEP_TEST_DIRS` is set.
struct TestDir {
    /// Deletes the directory on drop, unless kept.
    _guard: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    fn new() -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("signet-pki-")
            .tempdir()
            .unwrap();
        if std::env::var_os("SIGNET_KEEP_TEST_DIRS").is_some() {
            let path = dir.keep();
            println!("keeping {}", path.display());
            TestDir { _guard: None, path }
        } else {
            let path = dir.path().to_owned();
            TestDir {
                _guard: Some(dir),
                path,
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

fn hierarchy() -> Hierarchy {
    let dir = TestDir::new();
    let root = make_ca(
        "root",
        "C=CN, O=Signet Test CA, CN=Signet Test Root CA",
        SoftKey::p384(1),
        None,
        None,
        20,
        dir.path(),
    );
    let rsa = make_ca(
        "issuing-rsa",
        "C=CN, O=Signet Test CA, CN=Signet Test Issuing CA RSA",
        SoftKey::rsa2048(),
        Some(&root),
        Some(0),
        10,
        dir.path(),
    );
    let ec = make_ca(
        "issuing-ec",
        "C=CN, O=Signet Test CA, CN=Signet Test Issuing CA EC",
        SoftKey::p256(2),
        Some(&root),
        Some(0),
        10,
        dir.path(),
    );
    Hierarchy { dir, root, rsa, ec }
}

/// The `openssl req -newkey` argument for each subscriber key type tested.
fn newkey_args(key: KeyType) -> Vec<&'static str> {
    match key {
        KeyType::Rsa2048 => vec!["-newkey", "rsa:2048"],
        KeyType::P256 => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        KeyType::P384 => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        KeyType::Ed25519 => vec!["-newkey", "ed25519"],
        other => panic!("no openssl recipe for {other}"),
    }
}

/// A DER CSR made by `openssl req -new` with a fresh key.
fn openssl_csr(dir: &Path, tag: &str, newkey: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("{tag}.csr"));
    let (ok, text) = run(Command::new("openssl")
        .args(["req", "-new", "-nodes", "-subj", "/CN=applicant"])
        .args(newkey)
        .arg("-keyout")
        .arg(dir.join(format!("{tag}.key")))
        .args(["-outform", "DER", "-out"])
        .arg(&out));
    assert!(ok, "openssl req failed: {text}");
    std::fs::read(out).unwrap()
}

const SUBSCRIBER_KEYS: [KeyType; 4] = [
    KeyType::Rsa2048,
    KeyType::P256,
    KeyType::P384,
    KeyType::Ed25519,
];

fn profile(kind: ProfileKind) -> Profile {
    let liability = match kind {
        ProfileKind::Organization | ProfileKind::PaymentGateway => Some("500,000 CNY".to_owned()),
        ProfileKind::Device | ProfileKind::Server => Some("100,000 CNY".to_owned()),
        ProfileKind::Personal
        | ProfileKind::CodeSigning
        | ProfileKind::RaClient
        | ProfileKind::TimeStamping
        | ProfileKind::AuditSigning => None,
    };
    let arc = 1 + ProfileKind::ALL.iter().position(|k| *k == kind).unwrap();
    // The kind's defaults, but every key type: RFC 5280, openssl and certtool have nothing
    // against Ed25519 (relying parties that do are tested in tests/validators.rs).
    Profile {
        liability,
        key_types: KeyType::ALL.to_vec(),
        private_eku: (kind == ProfileKind::AuditSigning)
            .then(|| ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.3.2")),
        ..Profile::with_defaults(
            kind.name(),
            kind,
            ObjectIdentifier::new_unwrap(&format!("1.3.6.1.4.1.99999.1.{arc}")),
            vec!["issuing-rsa".into(), "issuing-ec".into()],
        )
    }
}

/// Subject and SANs an RA would send for each kind.
fn names(kind: ProfileKind) -> (SubjectSpec, Vec<San>) {
    let (subject, sans): (Vec<(&str, &str)>, Vec<&str>) = match kind {
        // With an e-mail address, a person's name as SN and GN too (CA/B S/MIME rules).
        ProfileKind::Personal => (
            vec![("C", "CN"), ("SN", "张"), ("GN", "三"), ("CN", "张三")],
            vec!["email:zhangsan@example.cn"],
        ),
        ProfileKind::Organization => (
            vec![
                ("C", "CN"),
                ("O", ORG_NAME),
                ("organizationIdentifier", CREDIT_CODE),
                ("CN", ORG_NAME),
            ],
            vec![],
        ),
        ProfileKind::Device => (
            vec![("CN", "device-0001"), ("serialNumber", "SN2026112400001")],
            vec![],
        ),
        ProfileKind::TimeStamping => (
            vec![
                ("C", "CN"),
                ("O", "Signet Test CA"),
                ("CN", "Signet Test TSA"),
            ],
            vec![],
        ),
        ProfileKind::AuditSigning => (
            vec![
                ("C", "CN"),
                ("O", "Signet Test CA"),
                ("CN", "Signet Test Audit Key"),
            ],
            vec![],
        ),
        ProfileKind::Server => (
            vec![("CN", "www.example.cn")],
            // A public address: the documentation ranges are reserved, which the CA/B rules
            // of the server profile refuse.
            vec!["dns:www.example.cn", "ip:198.41.0.4"],
        ),
        ProfileKind::CodeSigning => (vec![("C", "CN"), ("CN", "李四")], vec![]),
        ProfileKind::RaClient => (
            vec![
                ("C", "CN"),
                ("O", "示例注册机构"),
                ("CN", "RA Front Desk 1"),
            ],
            vec![],
        ),
        // An organisation's TLS certificate names where it is (CA/B TLS rules).
        ProfileKind::PaymentGateway => (
            vec![
                ("C", "CN"),
                ("ST", "广东省"),
                ("L", "深圳市"),
                ("O", "示例支付有限公司"),
                ("CN", "pay.example.cn"),
            ],
            vec!["dns:pay.example.cn"],
        ),
    };
    (
        SubjectSpec::from_pairs(subject).unwrap(),
        sans.into_iter().map(|s| s.parse().unwrap()).collect(),
    )
}

/// Issue a leaf of `kind` for the CSR under `ca`, as the CA layer would.
fn issue(ca: &Ca, kind: ProfileKind, csr: &[u8]) -> Certificate {
    let (subject, sans) = names(kind);
    issue_with(ca, ca.alg, kind, csr, &subject, &sans)
}

/// Issue with an explicit signature algorithm, subject and SANs.
fn issue_with(
    ca: &Ca,
    alg: SignatureAlgorithm,
    kind: ProfileKind,
    csr: &[u8],
    subject: &SubjectSpec,
    sans: &[San],
) -> Certificate {
    let checked = check_csr(csr).unwrap();
    let p = profile(kind);
    p.check_request(subject, sans, 1, checked.key_type).unwrap();
    let req = LeafRequest {
        profile: &p,
        subject,
        sans,
        spki: &checked.spki,
        key_type: checked.key_type,
        validity_years: 1,
    };
    let issuer = IssuerRef {
        signature: alg,
        ..ca.issuer()
    };
    let tbs = build_leaf_tbs(&issuer, &urls(), &req, random_serial(), start()).unwrap();
    let sig = ca.key.sign(alg, &tbs.to_der().unwrap());
    let cert = assemble(tbs, &sig).unwrap();
    check_signed_by(&cert, &ca.key.spki()).unwrap();
    cert
}

/// pkilint's findings at WARNING and above; fails the test on ERROR or FATAL.
fn pkilint(path: &Path) -> Vec<String> {
    let (_, text) = run(Command::new("lint_pkix_cert")
        .args(["lint", "-s", "WARNING"])
        .arg(path));
    assert!(
        !text.contains("(ERROR)") && !text.contains("(FATAL)") && !text.contains("Traceback"),
        "pkilint on {}:\n{text}",
        path.display()
    );
    text.lines()
        .filter(|l| l.contains("(WARNING)"))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Whether this openssl knows `-purpose name` (OpenSSL 3.0 has no `codesign`).
fn openssl_knows_purpose(name: &str) -> bool {
    let (_, text) = run(Command::new("openssl").args(["verify", "-help"]));
    text.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn openssl_verify(h: &Hierarchy, ca: &Ca, kind: ProfileKind, leaf: &Path) {
    let wanted = kind.openssl_purpose();
    let purpose = if openssl_knows_purpose(wanted) {
        wanted
    } else {
        // Fall back to chain checks with any purpose, and check the EKU by hand below.
        let (ok, text) = run(Command::new("openssl")
            .args(["x509", "-noout", "-ext", "extendedKeyUsage", "-in"])
            .arg(leaf));
        assert!(ok && text.contains("Code Signing"), "{text}");
        "any"
    };
    let (ok, text) = run(Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
        .arg(&h.root.pem)
        .arg("-untrusted")
        .arg(&ca.pem)
        .arg(leaf));
    assert!(
        ok && text.trim_end().ends_with(": OK"),
        "openssl verify -purpose {purpose} of a {kind} leaf under {}:\n{text}",
        ca.name
    );
}

fn certtool_verify(h: &Hierarchy, ca: &Ca, kind: ProfileKind, leaf: &Certificate) {
    let chain = write_pem(
        h.dir.path(),
        &format!("chain-{}-{kind}.pem", ca.name),
        &[leaf, &ca.cert],
    );
    let mut cmd = Command::new("certtool");
    cmd.arg("--verify")
        .arg("--load-ca-certificate")
        .arg(&h.root.pem);
    // The audit key's certificate carries no EKU: it is checked for any purpose.
    if let Some(eku) = kind.extended_key_usage().first() {
        cmd.arg(format!("--verify-purpose={eku}"));
    }
    let (ok, text) = run(cmd.arg("--infile").arg(&chain));
    assert!(
        ok && text.contains("Chain verification output: Verified."),
        "certtool --verify of a {kind} leaf under {}:\n{text}",
        ca.name
    );
}

/// Every profile kind for every subscriber key type under `ca`: openssl, pkilint, certtool.
fn every_profile_and_key_type(pick: fn(&Hierarchy) -> &Ca) {
    let h = hierarchy();
    let ca = pick(&h);
    let mut warnings = Vec::new();
    for key in SUBSCRIBER_KEYS {
        let csr = openssl_csr(h.dir.path(), key.name(), &newkey_args(key));
        assert_eq!(check_csr(&csr).unwrap().key_type, key);
        for kind in ProfileKind::ALL {
            let leaf = issue(ca, kind, &csr);
            let path = write_pem(
                h.dir.path(),
                &format!("{}-{kind}-{key}.pem", ca.name),
                &[&leaf],
            );
            openssl_verify(&h, ca, kind, &path);
            certtool_verify(&h, ca, kind, &leaf);
            for w in pkilint(&path) {
                warnings.push(format!("{kind}/{key}: {w}"));
            }
        }
    }
    // Shown with --no-capture; the report lists which warnings are left and why.
    for w in warnings {
        println!("pkilint warning: {w}");
    }
}

#[test]
fn every_profile_and_key_type_under_the_rsa_issuer_passes_openssl_pkilint_and_certtool() {
    every_profile_and_key_type(|h| &h.rsa);
}

#[test]
fn every_profile_and_key_type_under_the_ec_issuer_passes_openssl_pkilint_and_certtool() {
    every_profile_and_key_type(|h| &h.ec);
}

#[test]
fn rsa_pss_signed_and_empty_subject_leaves_pass_openssl_pkilint_and_certtool() {
    let h = hierarchy();
    let csr = openssl_csr(h.dir.path(), "p256", &newkey_args(KeyType::P256));
    let kind = ProfileKind::Server;
    let empty = SubjectSpec::default();
    let sans: Vec<San> = vec![
        "dns:api.example.cn".parse().unwrap(),
        "ip:2400:cb00::7".parse().unwrap(),
    ];
    let (subject, named_sans) = names(kind);
    let cases = [
        (
            "pss256",
            SignatureAlgorithm::RsaPssSha256,
            &subject,
            &named_sans,
        ),
        (
            "pss384",
            SignatureAlgorithm::RsaPssSha384,
            &subject,
            &named_sans,
        ),
        (
            "empty-subject",
            SignatureAlgorithm::RsaPkcs1Sha256,
            &empty,
            &sans,
        ),
    ];
    for (tag, alg, subject, sans) in cases {
        let leaf = issue_with(&h.rsa, alg, kind, &csr, subject, sans);
        let path = write_pem(h.dir.path(), &format!("{tag}.pem"), &[&leaf]);
        openssl_verify(&h, &h.rsa, kind, &path);
        certtool_verify(&h, &h.rsa, kind, &leaf);
        for w in pkilint(&path) {
            println!("pkilint warning: {tag}: {w}");
        }
    }
}

#[test]
fn root_and_intermediates_pass_pkilint_openssl_and_certtool() {
    let h = hierarchy();
    for ca in [&h.root, &h.rsa, &h.ec] {
        for w in pkilint(&ca.pem) {
            println!("pkilint warning: {}: {w}", ca.name);
        }
    }
    for ca in [&h.rsa, &h.ec] {
        let (ok, text) = run(Command::new("openssl")
            .args(["verify", "-x509_strict", "-CAfile"])
            .arg(&h.root.pem)
            .arg(&ca.pem));
        assert!(
            ok && text.trim_end().ends_with(": OK"),
            "{}: {text}",
            ca.name
        );
        let (ok, text) = run(Command::new("certtool")
            .arg("--verify")
            .arg("--load-ca-certificate")
            .arg(&h.root.pem)
            .arg("--infile")
            .arg(&ca.pem));
        assert!(
            ok && text.contains("Chain verification output: Verified."),
            "{}: {text}",
            ca.name
        );
    }
}

#[test]
fn organization_subject_shows_the_chinese_name_and_credit_code_exactly() {
    let h = hierarchy();
    let csr = openssl_csr(h.dir.path(), "org", &newkey_args(KeyType::P256));
    let leaf = issue(&h.ec, ProfileKind::Organization, &csr);
    let path = write_pem(h.dir.path(), "org.pem", &[&leaf]);
    let (ok, text) = run(Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-nameopt",
            "utf8,sep_comma_plus",
            "-in",
        ])
        .arg(&path));
    assert!(ok, "{text}");
    assert_eq!(
        text.trim(),
        // The credit code the RA sent, in the NTR form of EN 319 412-1 (org_id_form = "ntr").
        format!(
            "subject=C=CN,O={ORG_NAME},organizationIdentifier=NTRCN-{CREDIT_CODE},CN={ORG_NAME}"
        )
    );
}

#[test]
fn certs_only_p7b_lists_the_root_and_both_issuers() {
    let h = hierarchy();
    let p7b = certs_only(&[h.root.cert.clone(), h.rsa.cert.clone(), h.ec.cert.clone()]).unwrap();
    let path = h.dir.path().join("chain.p7b");
    std::fs::write(&path, &p7b).unwrap();
    let (ok, text) = run(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print_certs", "-noout", "-in"])
        .arg(&path));
    assert!(ok, "{text}");
    for cn in [
        "Signet Test Root CA",
        "Signet Test Issuing CA RSA",
        "Signet Test Issuing CA EC",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("subject=") && l.contains(cn)),
            "{cn} missing from:\n{text}"
        );
    }
    let (ok, text) = run(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print", "-noout", "-in"])
        .arg(&path));
    assert!(ok, "{text}");
    for expected in [
        "type: pkcs7-signedData",
        "version: 1",
        "md_algs:\n      <EMPTY>",
        "type: pkcs7-data (1.2.840.113549.1.7.1)\n      d.data: <ABSENT>",
        "crl:\n      <ABSENT>",
        "signer_info:\n      <EMPTY>",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    // OpenSSL parses and re-encodes it to the very same bytes: nothing non-canonical in it.
    let again = h.dir.path().join("again.p7b");
    let (ok, text) = run(Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-outform", "DER", "-in"])
        .arg(&path)
        .arg("-out")
        .arg(&again));
    assert!(ok, "{text}");
    assert_eq!(
        std::fs::read(&again).unwrap(),
        p7b,
        "openssl re-encodes differently"
    );
}

fn refusal(csr: &[u8]) -> String {
    match check_csr(csr) {
        Err(PkiError::Invalid { field, problem }) => {
            assert_eq!(field, "csr", "{problem}");
            problem
        }
        other => panic!("expected refusal naming csr, got {other:?}"),
    }
}

#[test]
fn bad_csrs_are_refused_with_errors_naming_csr() {
    let dir = tempfile::tempdir().unwrap();
    let p = refusal(b"this is not a certification request");
    assert!(p.contains("not a DER PKCS#10"), "{p}");

    let mut flipped = openssl_csr(dir.path(), "p256", &newkey_args(KeyType::P256));
    let n = flipped.len();
    flipped[n - 3] ^= 0x01;
    let p = refusal(&flipped);
    assert!(p.contains("possession"), "{p}");

    let rsa1024 = openssl_csr(dir.path(), "rsa1024", &["-newkey", "rsa:1024"]);
    assert_eq!(
        refusal(&rsa1024),
        "RSA key of 1024 bits; at least 2048 required"
    );

    let k1 = openssl_csr(
        dir.path(),
        "k1",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
    );
    let p = refusal(&k1);
    assert!(p.contains("secp256k1") && p.contains("not accepted"), "{p}");
}

#[test]
fn openssl_csrs_signed_with_pss_sha384_or_sha512_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str], KeyType); 4] = [
        (
            "pss",
            &[
                "-newkey",
                "rsa:2048",
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
            ],
            KeyType::Rsa2048,
        ),
        (
            "pss-digest-salt",
            &[
                "-newkey",
                "rsa:3072",
                "-sha384",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ],
            KeyType::Rsa3072,
        ),
        (
            "rsa-sha512",
            &["-newkey", "rsa:2048", "-sha512"],
            KeyType::Rsa2048,
        ),
        (
            "p256-sha512",
            &[
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-sha512",
            ],
            KeyType::P256,
        ),
    ];
    for (tag, args, key) in cases {
        let csr = openssl_csr(dir.path(), tag, args);
        let checked = check_csr(&csr).unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(checked.key_type, key, "{tag}");
    }
}

//! A certificate authority on a fresh SoftHSM token, built in layers: a token (`SoftHsm`), a
//! configuration for it, the ceremony's hierarchy, and an `Authority` ready to issue; plus
//! the external tools (openssl, pkilint) that judge what it produces.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use signet::ca::{Approval, Authority, IssueRequest, ceremony};
use signet::config::Config;
use signet::hsm::Hsm;
use signet::pki::{KeyType, San, SubjectSpec};
use signet::store::{SqliteStore, Store};

use super::SoftHsm;

/// The user PIN of the test HSM token.
pub const USER_PIN: &str = "246810";
/// The SO PIN of the test HSM token.
pub const SO_PIN: &str = "1357911";
/// The agreement version the test configuration accepts.
pub const AGREEMENT: &str = "2026-01";
/// A unified social credit code with a valid check character.
pub const CREDIT_CODE: &str = "914403001922038216";

/// The configuration of the test CA: a P-384 root, an RSA-2048 and a P-256 issuing CA, and
/// the six profiles, each signable by both issuing CAs.
pub fn config_text(hsm: &SoftHsm, dir: &Path, pin_file: &Path) -> String {
    let mut t = format!(
        r#"
[hsm]
module = "{module}"
module_env = {{ {conf_var} = "{conf}" }}
token_label = "signet-ca"
pin_file = "{pin}"
pool_size = 2
reconnect_initial_ms = 100
reconnect_max_ms = 1000

[store]
sqlite = "{dir}/signet.db"

[ca]
public_base_url = "http://127.0.0.1:8080"
agreement_version = "{AGREEMENT}"
output_dir = "{dir}/ca"
oid_arc = "1.3.6.1.4.1.99999"

[[issuer]]
name = "root"
key_label = "test-root"
key_type = "p384"
subject = {{ C = "CN", O = "Signet Test CA", CN = "Signet Test Root" }}
validity_years = 20
path_len = 1

[[issuer]]
name = "issuing-rsa"
parent = "root"
key_label = "test-issuing-rsa"
key_type = "rsa2048"
subject = {{ C = "CN", O = "Signet Test CA", CN = "Signet Test RSA Issuing CA" }}
validity_years = 10
path_len = 0

[[issuer]]
name = "issuing-ec"
parent = "root"
key_label = "test-issuing-ec"
key_type = "p256"
subject = {{ C = "CN", O = "Signet Test CA", CN = "Signet Test EC Issuing CA" }}
validity_years = 10
path_len = 0
"#,
        module = hsm.module.display(),
        conf = hsm.conf.display(),
        conf_var = hsm.kind.conf_var(),
        pin = pin_file.display(),
        dir = dir.display(),
    );
    for (i, kind) in [
        "personal",
        "organization",
        "device",
        "server",
        "code_signing",
        "payment_gateway",
    ]
    .iter()
    .enumerate()
    {
        let liability = match *kind {
            "organization" | "payment_gateway" => "liability = \"500,000 CNY\"\n",
            "device" | "server" => "liability = \"100,000 CNY\"\n",
            _ => "",
        };
        t.push_str(&format!(
            "\n[profiles.{kind}]\nkind = \"{kind}\"\nissuers = [\"issuing-rsa\", \"issuing-ec\"]\npolicy_oid = \"1.3.6.1.4.1.99999.1.{}\"\n{liability}",
            i + 1
        ));
    }
    t
}

/// A test CA: token, configuration, ceremony done, authority open.
pub struct TestCa {
    /// The SoftHSM token directory (kept alive for the test).
    pub softhsm: SoftHsm,
    /// Working directory for the store, CA files and test artefacts.
    pub dir: PathBuf,
    /// The configuration file.
    pub config_path: PathBuf,
    /// The loaded configuration.
    pub cfg: Config,
    /// The HSM.
    pub hsm: Hsm,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The authority.
    pub ca: Authority,
    /// Certificates the ceremony recorded for signet itself (delegated OCSP responders).
    pub own_certificates: u64,
}

impl TestCa {
    /// Token, configuration and open HSM and store, without the ceremony.
    pub fn prepare() -> (SoftHsm, PathBuf, PathBuf, Config) {
        Self::prepare_with("")
    }

    /// As [`TestCa::prepare`], with `extra` TOML (more profiles, say) appended to the
    /// configuration.
    pub fn prepare_with(extra: &str) -> (SoftHsm, PathBuf, PathBuf, Config) {
        Self::prepare_with_tokens(extra, &[])
    }

    /// As [`TestCa::prepare_with`], with more tokens `(label, so_pin, user_pin)` beside the
    /// CA's in the same SoftHSM (subscribers' tokens for personalisation tests).
    pub fn prepare_with_tokens(
        extra: &str,
        tokens: &[(&str, &str, &str)],
    ) -> (SoftHsm, PathBuf, PathBuf, Config) {
        Self::prepare_on(super::ModuleKind::from_env(), extra, tokens, &|t| t)
    }

    /// As [`TestCa::prepare_with_tokens`], on the module `kind`.
    pub fn prepare_with_tokens_on(
        kind: super::ModuleKind,
        extra: &str,
        tokens: &[(&str, &str, &str)],
    ) -> (SoftHsm, PathBuf, PathBuf, Config) {
        Self::prepare_on(kind, extra, tokens, &|t| t)
    }

    /// As [`TestCa::prepare_with_tokens`], with the whole configuration text passed through
    /// `edit` (to change a key of `[ca]`, say).
    pub fn prepare_edited(
        extra: &str,
        tokens: &[(&str, &str, &str)],
        edit: &dyn Fn(String) -> String,
    ) -> (SoftHsm, PathBuf, PathBuf, Config) {
        Self::prepare_on(super::ModuleKind::from_env(), extra, tokens, edit)
    }

    /// The configuration and tokens of a test CA on the module `kind`, its text passed
    /// through `edit`.
    pub fn prepare_on(
        kind: super::ModuleKind,
        extra: &str,
        tokens: &[(&str, &str, &str)],
        edit: &dyn Fn(String) -> String,
    ) -> (SoftHsm, PathBuf, PathBuf, Config) {
        let mut all = vec![("signet-ca", SO_PIN, USER_PIN)];
        all.extend_from_slice(tokens);
        let softhsm = SoftHsm::new_on(kind, &all);
        let dir = softhsm.dir.path().join("ca-work");
        std::fs::create_dir_all(&dir).unwrap();
        let pin_file = softhsm.pin_file(USER_PIN);
        let config_path = dir.join("signet.toml");
        let text = edit(config_text(&softhsm, &dir, &pin_file) + extra);
        std::fs::write(&config_path, text).unwrap();
        let cfg = Config::load(&config_path).unwrap();
        (softhsm, dir, config_path, cfg)
    }

    /// A CA with its hierarchy made by the ceremony.
    pub async fn new() -> TestCa {
        Self::new_with("").await
    }

    /// As [`TestCa::new`], with `extra` TOML appended to the configuration.
    pub async fn new_with(extra: &str) -> TestCa {
        Self::new_with_tokens(extra, &[]).await
    }

    /// As [`TestCa::new_with`], with subscribers' tokens beside the CA's.
    pub async fn new_with_tokens(extra: &str, tokens: &[(&str, &str, &str)]) -> TestCa {
        Self::new_on(super::ModuleKind::from_env(), extra, tokens, &|t| t).await
    }

    /// As [`TestCa::new_with_tokens`], on the module `kind`.
    pub async fn new_with_tokens_on(
        kind: super::ModuleKind,
        extra: &str,
        tokens: &[(&str, &str, &str)],
    ) -> TestCa {
        Self::new_on(kind, extra, tokens, &|t| t).await
    }

    /// As [`TestCa::new_with_tokens`], with the configuration text passed through `edit`.
    pub async fn new_edited(
        extra: &str,
        tokens: &[(&str, &str, &str)],
        edit: &dyn Fn(String) -> String,
    ) -> TestCa {
        Self::new_on(super::ModuleKind::from_env(), extra, tokens, edit).await
    }

    /// A CA on the module `kind` with its hierarchy made by the ceremony, the configuration
    /// text passed through `edit`.
    pub async fn new_on(
        kind: super::ModuleKind,
        extra: &str,
        tokens: &[(&str, &str, &str)],
        edit: &dyn Fn(String) -> String,
    ) -> TestCa {
        let (softhsm, dir, config_path, cfg) = Self::prepare_on(kind, extra, tokens, edit);
        let hsm = Hsm::open(cfg.hsm_settings().unwrap()).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&cfg.store_path()).unwrap());
        ceremony::run(&cfg, &hsm, &store).await.unwrap();
        let own_certificates = store.count_certificates().await.unwrap();
        let ca = Authority::open(&cfg, hsm.clone(), store.clone())
            .await
            .unwrap();
        TestCa {
            softhsm,
            dir,
            config_path,
            cfg,
            hsm,
            store,
            ca,
            own_certificates,
        }
    }

    /// Certificates issued since the ceremony (subscribers', not signet's own).
    pub async fn issued_count(&self) -> u64 {
        self.store.count_certificates().await.unwrap() - self.own_certificates
    }

    /// The root certificate (PEM file).
    pub fn root_pem(&self) -> PathBuf {
        self.cfg.output_dir().join("root.pem")
    }

    /// An issuing CA's certificate (PEM file).
    pub fn issuer_pem(&self, issuer: &str) -> PathBuf {
        self.cfg.output_dir().join(format!("{issuer}.pem"))
    }
}

/// Run a command and return its output; panics with stderr if it cannot start.
pub fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// `signet --config CONFIG ARGS...`, logging only warnings.
pub fn signet_with(config: &Path, args: &[&str]) -> std::process::Output {
    run(Command::new(env!("CARGO_BIN_EXE_signet"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn"))
}

/// A command's standard output followed by its standard error.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Make a subscriber key and DER CSR with openssl (the key stays outside signet, as on a
/// subscriber's machine).
pub fn make_csr(dir: &Path, key: &str) -> Vec<u8> {
    let key_args: Vec<&str> = match key {
        "rsa1024" => vec!["-newkey", "rsa:1024"],
        "rsa2048" => vec!["-newkey", "rsa:2048"],
        "p256" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "secp256k1" => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
        "ed25519" => vec!["-newkey", "ed25519"],
        other => panic!("no CSR recipe for {other}"),
    };
    let csr = dir.join(format!("{key}.csr"));
    let out = run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-nodes",
            "-outform",
            "DER",
            "-subj",
            "/CN=ignored",
        ])
        .args(&key_args)
        .arg("-keyout")
        .arg(dir.join(format!("{key}.key")))
        .arg("-out")
        .arg(&csr));
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(csr).unwrap()
}

/// The key-type names `make_csr` knows for the four accepted subscriber key types.
pub const SUBSCRIBER_KEYS: [(&str, KeyType); 4] = [
    ("rsa2048", KeyType::Rsa2048),
    ("p256", KeyType::P256),
    ("p384", KeyType::P384),
    ("ed25519", KeyType::Ed25519),
];

/// A valid subject and SANs for each profile.
pub fn names_for(profile: &str) -> (SubjectSpec, Vec<San>) {
    let s = |pairs: &[(&str, &str)]| SubjectSpec::from_pairs(pairs.iter().copied()).unwrap();
    match profile {
        // With an e-mail address, the person's name as SN and GN too (CA/B S/MIME rules).
        "personal" => (
            s(&[("C", "CN"), ("SN", "张"), ("GN", "三"), ("CN", "张三")]),
            vec![San::Email("zhangsan@example.cn".into())],
        ),
        "organization" => (
            s(&[
                ("C", "CN"),
                ("O", "宁津县精神卫生中心"),
                ("organizationIdentifier", CREDIT_CODE),
                ("CN", "宁津县精神卫生中心"),
            ]),
            vec![],
        ),
        "device" => (
            s(&[
                ("O", "示例物联网有限公司"),
                ("serialNumber", "DEV-0001"),
                ("CN", "device-0001"),
            ]),
            vec![],
        ),
        "server" => (
            s(&[("CN", "www.example.cn")]),
            vec![
                San::Dns("www.example.cn".into()),
                // A public address: the documentation ranges are reserved, which the CA/B
                // rules of the server profile refuse.
                San::Ip("198.41.0.4".parse().unwrap()),
            ],
        ),
        "code_signing" => (s(&[("C", "CN"), ("CN", "李四")]), vec![]),
        // An organisation's TLS certificate names where it is (CA/B TLS rules).
        "payment_gateway" => (
            s(&[
                ("C", "CN"),
                ("ST", "广东省"),
                ("L", "深圳市"),
                ("O", "示例支付有限公司"),
                ("CN", "pay.example.cn"),
            ]),
            vec![San::Dns("pay.example.cn".into())],
        ),
        other => panic!("unknown profile {other}"),
    }
}

/// A complete request with valid approval evidence.
pub fn request(id: &str, profile: &str, csr: Vec<u8>) -> IssueRequest {
    let (subject, sans) = names_for(profile);
    IssueRequest {
        request_id: id.into(),
        profile: profile.into(),
        issuer: None,
        csr,
        subject,
        sans,
        validity_years: 1,
        approval: Approval {
            officer: "王芳".into(),
            ra_reference: format!("RA-{id}"),
            agreement_version: AGREEMENT.into(),
        },
    }
}

/// PEM text of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    signet::pki::pkcs7::pem_certificate(der)
}

/// Run pkilint's RFC 5280 certificate linter over `files`; returns (passed, report).
pub fn pkilint(files: &[PathBuf]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/pkilint_batch.py");
    let out = run(Command::new("python3").arg(script).args(files));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// `openssl verify` of a leaf against the root and an issuing CA, strict, with a purpose.
pub fn openssl_verify(root: &Path, issuer: &Path, leaf: &Path, purpose: &str) -> (bool, String) {
    let out = run(Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", purpose, "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(issuer)
        .arg(leaf));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains(": OK"), text)
}

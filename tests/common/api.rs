//! The RA API as a client meets it: TLS material made by `openssl` (a TLS root and issuing
//! CA, a server certificate for 127.0.0.1/localhost, RA client certificates good, unknown,
//! expired and foreign), a CA whose configuration has `[api]` and `[[ra]]`, the ceremony run
//! by the real binary, and the daemon (`signet serve`) as a child process on a free port,
//! killed when the test ends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use signet::api::client::{ClientSettings, ca_client};
use signet::api::pb;
use signet::api::pb::certificate_authority_client::CertificateAuthorityClient;
use tonic::transport::Channel;

use super::SoftHsm;
use super::ca::{AGREEMENT, SO_PIN, USER_PIN, config_text, run};

/// The subject of the RA "desk-one" (matched by subject).
pub const RA_ONE_SUBJECT: &str = "CN=Test RA One, O=Signet Test RA, C=CN";
/// The subject of the RA "desk-two" (matched by subject and key).
pub const RA_TWO_SUBJECT: &str = "CN=Test RA Two, O=Signet Test RA, C=CN";

fn subj(text: &str) -> String {
    // "CN=a, O=b, C=CN" -> "/C=CN/O=b/CN=a"
    let mut parts: Vec<&str> = text.split(", ").collect();
    parts.reverse();
    format!("/{}", parts.join("/"))
}

const OPENSSL_CNF: &str = r#"
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca]
default_ca = test_ca
[test_ca]
database = $ENV::TLS_DIR/index.txt
new_certs_dir = $ENV::TLS_DIR
serial = $ENV::TLS_DIR/serial
default_md = sha256
policy = any
unique_subject = no
preserve = yes
email_in_dn = no
[any]
countryName = optional
organizationName = optional
commonName = supplied
"#;

/// TLS material for the API, made with openssl.
pub struct TlsMaterial {
    /// Where the files are.
    pub dir: PathBuf,
}

/// `openssl` in `dir`; under libfaketime when `dir` holds a `faketime` file (the offset,
/// written by [`TlsMaterial::generate_with_clock`]).
fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir).env("TLS_DIR", dir);
    if let Ok(offset) = std::fs::read_to_string(dir.join("faketime")) {
        cmd.env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", offset.trim())
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TlsMaterial {
    /// As [`TlsMaterial::generate`], with openssl's clock `offset` from the real one
    /// (libfaketime's relative form, "-800d"): every certificate starts then.
    pub fn generate_with_clock(dir: &Path, offset: &str) -> TlsMaterial {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: run ./softhsm-setup.sh --with-test-tools"
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("faketime"), offset).unwrap();
        Self::generate(dir)
    }

    /// Make everything in `dir`.
    pub fn generate(dir: &Path) -> TlsMaterial {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CNF).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        let t = TlsMaterial {
            dir: dir.to_owned(),
        };
        t.self_signed("root", "/CN=Signet Test TLS Root");
        t.self_signed("foreign-root", "/CN=Someone Else's Root");
        t.signed(
            "issuing",
            "/CN=Signet Test TLS Issuing CA",
            "root",
            "ca_ext",
        );
        t.signed("server", "/CN=localhost", "issuing", "server_ext");
        t.signed("ra-one", &subj(RA_ONE_SUBJECT), "issuing", "client_ext");
        t.signed("ra-two", &subj(RA_TWO_SUBJECT), "issuing", "client_ext");
        // Right subject, wrong key: desk-two is pinned to its key as well.
        t.signed(
            "ra-two-other-key",
            &subj(RA_TWO_SUBJECT),
            "issuing",
            "client_ext",
        );
        t.signed(
            "auditor",
            "/C=CN/O=Signet Test Audit/CN=Audit Office",
            "issuing",
            "client_ext",
        );
        t.signed(
            "stranger",
            "/C=CN/O=Signet Test RA/CN=Not An RA",
            "issuing",
            "client_ext",
        );
        t.signed(
            "foreign",
            &subj(RA_ONE_SUBJECT),
            "foreign-root",
            "client_ext",
        );
        // Expired: `openssl x509` of OpenSSL 3.0 cannot back-date, `openssl ca` can.
        t.key_and_csr("expired", &subj(RA_ONE_SUBJECT));
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                "openssl.cnf",
                "-notext",
                "-cert",
                "issuing.pem",
                "-keyfile",
                "issuing.key",
                "-in",
                "expired.csr",
                "-out",
                "expired.pem",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20210101000000Z",
                "-extensions",
                "client_ext",
                "-extfile",
                "openssl.cnf",
            ],
        );
        // The server presents its chain up to (not including) the root.
        let chain = format!(
            "{}{}",
            std::fs::read_to_string(dir.join("server.pem")).unwrap(),
            std::fs::read_to_string(dir.join("issuing.pem")).unwrap()
        );
        std::fs::write(dir.join("server-chain.pem"), chain).unwrap();
        t
    }

    fn key_and_csr(&self, name: &str, subject: &str) {
        self.new_p256_key(name, subject, &format!("{name}.csr"), &[]);
    }

    fn self_signed(&self, name: &str, subject: &str) {
        self.new_p256_key(
            name,
            subject,
            &format!("{name}.pem"),
            &["-x509", "-extensions", "ca_ext", "-days", "3650"],
        );
    }

    /// `openssl req -new` making the P-256 key `name`.key and writing `out` for `subject`,
    /// with `more` options (a CSR without them, a certificate with `-x509`).
    fn new_p256_key(&self, name: &str, subject: &str, out: &str, more: &[&str]) {
        let key = format!("{name}.key");
        let mut args = vec![
            "req",
            "-new",
            "-config",
            "openssl.cnf",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            out,
            "-subj",
            subject,
        ];
        args.extend_from_slice(more);
        openssl(&self.dir, &args);
    }

    fn signed(&self, name: &str, subject: &str, ca: &str, ext: &str) {
        self.key_and_csr(name, subject);
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-CAserial",
                &format!("{ca}.srl"),
                "-days",
                "365",
                "-extfile",
                "openssl.cnf",
                "-extensions",
                ext,
                "-out",
                &format!("{name}.pem"),
            ],
        );
    }

    /// A file of the material, e.g. `pem("ra-one")`.
    pub fn pem(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// A private key file.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo of `name`'s key.
    pub fn spki_sha256(&self, name: &str) -> String {
        let out = run(Command::new("openssl")
            .args(["pkey", "-pubout", "-outform", "DER", "-in"])
            .arg(self.key(name)));
        assert!(out.status.success());
        hex::encode(Sha256::digest(&out.stdout))
    }
}

/// A CA configured for the API: SoftHSM token, configuration, ceremony done (by the binary),
/// TLS material. The daemon is started separately.
pub struct ApiCa {
    /// The SoftHSM installation (kept alive for the test).
    pub softhsm: SoftHsm,
    /// Working directory.
    pub dir: PathBuf,
    /// The configuration file.
    pub config_path: PathBuf,
    /// The TLS material.
    pub tls: TlsMaterial,
    /// The p11-kit server between the daemon and SoftHSM, when there is one.
    pub p11kit: Option<super::P11KitServer>,
    /// Environment for the daemon and the ceremony (the p11-kit server's address).
    pub child_env: Vec<(String, String)>,
}

impl ApiCa {
    /// A CA with three RAs: desk-one (by subject; server, organization and personal; every
    /// operation), desk-two (by subject and key; device only; issue and read) and a read-only
    /// auditor (by key only; every profile).
    pub fn new() -> ApiCa {
        Self::with_api_settings("")
    }

    /// As [`ApiCa::new`], with extra `[api]` lines (e.g. `max_concurrent_requests = 4`).
    pub fn with_api_settings(extra: &str) -> ApiCa {
        Self::build(extra, "", false)
    }

    /// As [`ApiCa::new`], with the public HTTP status service on a free port and extra
    /// top-level configuration (e.g. a `[crl]` section).
    pub fn with_http(tail: &str) -> ApiCa {
        Self::build("", &http_section(tail), false)
    }

    /// As [`ApiCa::new`], with the HSM reached through a `p11-kit server` the test can kill.
    pub fn behind_p11kit() -> ApiCa {
        Self::build("", "", true)
    }

    /// As [`ApiCa::with_http`], with the HSM reached through a `p11-kit server` the test
    /// can kill.
    pub fn with_http_behind_p11kit(tail: &str) -> ApiCa {
        Self::build("", &http_section(tail), true)
    }

    /// With the HSM reached through a `p11-kit server` the test can kill or freeze, extra
    /// `[hsm]` and `[api]` lines, and the status service (followed by `http_tail`) when
    /// `http_tail` is given.
    pub fn behind_p11kit_with(hsm: &str, api: &str, http_tail: Option<&str>) -> ApiCa {
        let tail = http_tail.map(http_section).unwrap_or_default();
        Self::build_with(hsm, api, &tail, true, &|t| t)
    }

    /// As [`ApiCa::new`], with the configuration text passed through `edit` before the
    /// ceremony reads it (to set a key of `[ca]` or of a profile).
    pub fn with_edit(edit: &dyn Fn(String) -> String) -> ApiCa {
        Self::build_with("", "", "", false, edit)
    }

    /// As [`ApiCa::new`], on the module `kind` rather than the one `SIGNET_TEST_MODULE` names.
    pub fn new_on(kind: super::ModuleKind) -> ApiCa {
        Self::build_on(kind, "", "", "", false, &|t| t)
    }

    /// As [`ApiCa::with_http`], on the module `kind`.
    pub fn with_http_on(kind: super::ModuleKind, tail: &str) -> ApiCa {
        Self::build_on(kind, "", "", &http_section(tail), false, &|t| t)
    }

    /// As [`ApiCa::with_http`], with the configuration text passed through `edit` as well.
    pub fn with_http_and_edit(tail: &str, edit: &dyn Fn(String) -> String) -> ApiCa {
        Self::build_with("", "", &http_section(tail), false, edit)
    }

    fn build(extra: &str, tail: &str, via_p11kit: bool) -> ApiCa {
        Self::build_with("", extra, tail, via_p11kit, &|t| t)
    }

    fn build_with(
        hsm: &str,
        extra: &str,
        tail: &str,
        via_p11kit: bool,
        edit: &dyn Fn(String) -> String,
    ) -> ApiCa {
        Self::build_on(
            super::ModuleKind::from_env(),
            hsm,
            extra,
            tail,
            via_p11kit,
            edit,
        )
    }

    fn build_on(
        kind: super::ModuleKind,
        hsm: &str,
        extra: &str,
        tail: &str,
        via_p11kit: bool,
        edit: &dyn Fn(String) -> String,
    ) -> ApiCa {
        let softhsm = SoftHsm::new_on(kind, &[("signet-ca", SO_PIN, USER_PIN)]);
        let (p11kit, child_env) = if via_p11kit {
            let server = super::P11KitServer::start(&softhsm, "pkcs11:token=signet-ca");
            let env = vec![("P11_KIT_SERVER_ADDRESS".to_owned(), server.address())];
            (Some(server), env)
        } else {
            (None, Vec::new())
        };
        let dir = softhsm.dir.path().join("ca-work");
        std::fs::create_dir_all(&dir).unwrap();
        let tls = TlsMaterial::generate(&dir.join("tls"));
        let pin_file = softhsm.pin_file(USER_PIN);
        // Personal certificates may be renewed at once (a year's certificate is always
        // inside a 366-day window); the others keep the 90-day default.
        let mut text = config_text(&softhsm, &dir, &pin_file)
            .replace(
                "[profiles.personal]\n",
                "[profiles.personal]\nrenewal_window_days = 366\n",
            )
            .replace("\n[store]\n", &format!("{hsm}\n\n[store]\n"));
        text.push_str(&format!(
            r#"
[[issuer]]
name = "issuing-tls"
parent = "root"
key_label = "test-issuing-tls"
key_type = "p256"
subject = {{ C = "CN", O = "Signet Test CA", CN = "Signet Test TLS Issuing CA" }}
validity_years = 10
path_len = 0

[api]
listen = "127.0.0.1:0"
server_cert = "{server}"
server_key = "{server_key}"
server_names = ["127.0.0.1"]
tls_issuer = "issuing-tls"
client_ca = ["{client_ca}"]
{extra}

[[ra]]
name = "desk-one"
subject = "{RA_ONE_SUBJECT}"
profiles = ["server", "organization", "personal"]
operations = ["issue", "renew", "revoke", "read"]

[[ra]]
name = "desk-two"
subject = "{RA_TWO_SUBJECT}"
spki_sha256 = "{two_pin}"
profiles = ["device"]
operations = ["issue", "read"]

[[ra]]
name = "auditor"
spki_sha256 = "{auditor_pin}"
profiles = ["personal", "organization", "device", "server", "code_signing", "payment_gateway"]
operations = ["read"]
"#,
            server = tls.dir.join("server-chain.pem").display(),
            server_key = tls.key("server").display(),
            client_ca = tls.pem("issuing").display(),
            two_pin = tls.spki_sha256("ra-two"),
            auditor_pin = tls.spki_sha256("auditor"),
        ));
        text.push_str(tail);
        if via_p11kit {
            text = text.replace(
                &format!("module = \"{}\"", softhsm.module.display()),
                &format!("module = \"{}\"", super::P11KIT_CLIENT_MODULE),
            );
        }
        let config_path = dir.join("signet.toml");
        std::fs::write(&config_path, edit(text)).unwrap();
        let out = run(Command::new(env!("CARGO_BIN_EXE_signet"))
            .arg("--config")
            .arg(&config_path)
            .arg("ceremony")
            .envs(child_env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn"));
        assert!(
            out.status.success(),
            "ceremony: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ApiCa {
            softhsm,
            dir,
            config_path,
            tls,
            p11kit,
            child_env,
        }
    }
}

/// The status service on a free port, followed by `tail`.
fn http_section(tail: &str) -> String {
    format!("\n[http]\nlisten = \"127.0.0.1:0\"\n{tail}")
}

/// libfaketime, preloaded into a daemon to step its clock (`Daemon::start_with_clock`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `signet serve` as a child process. Killed (SIGKILL) on drop if still running.
pub struct Daemon {
    child: Option<Child>,
    /// Its process id, kept after it exits.
    pid: u32,
    /// Started under libfaketime, which leaves its shared memory behind when killed.
    faketime: bool,
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The port it listens on.
    pub port: u16,
    /// `http://127.0.0.1:PORT` of the status service, when `[http]` is configured.
    pub http: Option<String>,
    /// `http://127.0.0.1:PORT` of the metrics listener, when `[metrics]` is configured.
    pub metrics: Option<String>,
    /// Its standard error (the log).
    pub log: PathBuf,
    /// The TLS root a client trusts.
    pub tls_root: PathBuf,
    tls_dir: PathBuf,
}

impl Daemon {
    /// Start the daemon on `ca`'s configuration and wait (at most 60 s) until it announces
    /// its address.
    pub fn start(ca: &ApiCa) -> Daemon {
        Self::start_with_env(ca, &[])
    }

    /// As [`Daemon::start`], with the daemon's clock `offset` from the real one (libfaketime's
    /// relative form: "-8s", "+2h"); its clock runs on at the real pace from there. Monotonic
    /// time is left alone, so timers and deadlines behave.
    pub fn start_with_clock(ca: &ApiCa, offset: &str) -> Daemon {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: run ./softhsm-setup.sh --with-test-tools"
        );
        let mut d = Self::start_with_env(
            ca,
            &[
                ("LD_PRELOAD", LIBFAKETIME),
                ("FAKETIME", offset),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ],
        );
        d.faketime = true;
        d
    }

    /// As [`Daemon::start`], with `env` added to the daemon's environment.
    pub fn start_with_env(ca: &ApiCa, env: &[(&str, &str)]) -> Daemon {
        Self::launch(ca, env, &[], env!("CARGO_BIN_EXE_signet"))
    }

    /// As [`Daemon::start`], with `program` as the signet executable, run through `wrapper`
    /// (a command and its arguments, the executable and its arguments following).
    pub fn start_wrapped(ca: &ApiCa, wrapper: &[&str], program: &str) -> Daemon {
        Self::launch(ca, &[], wrapper, program)
    }

    fn launch(ca: &ApiCa, env: &[(&str, &str)], wrapper: &[&str], program: &str) -> Daemon {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = ca.dir.join(format!("daemon-{n}.log"));
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = cmd
            .arg("--config")
            .arg(&ca.config_path)
            .arg("serve")
            .envs(ca.child_env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .env("RUST_LOG", "signet=debug,info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start signet serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The HTTP service, when configured, is announced before the RA API.
                if let Some(addr) = line.strip_prefix("signet: serving HTTP on ") {
                    let _ = tx.send(format!("http {}", addr.trim()));
                }
                if let Some(addr) = line.strip_prefix("signet: serving metrics on ") {
                    let _ = tx.send(format!("metrics {}", addr.trim()));
                }
                if let Some(addr) = line.strip_prefix("signet: serving RA API on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let (mut http, mut metrics) = (None, None);
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(a) if a.starts_with("http ") => {
                    http = Some(format!("http://{}", &a["http ".len()..]));
                }
                Ok(a) if a.starts_with("metrics ") => {
                    metrics = Some(format!("http://{}", &a["metrics ".len()..]));
                }
                Ok(a) => break a,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "signet serve did not announce its address:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the announcement");
        Daemon {
            pid: child.id(),
            faketime: false,
            child: Some(child),
            endpoint: format!("https://127.0.0.1:{port}"),
            port,
            http,
            metrics,
            log,
            tls_root: ca.tls.pem("root"),
            tls_dir: ca.tls.dir.clone(),
        }
    }

    /// Connection settings for the RA whose certificate and key are `name`.pem/.key.
    pub fn settings(&self, name: &str) -> ClientSettings {
        ClientSettings {
            endpoint: self.endpoint.clone(),
            ca_cert: self.tls_root.clone(),
            cert: self.tls_dir.join(format!("{name}.pem")),
            key: self.tls_dir.join(format!("{name}.key")),
        }
    }

    /// `signet SUBCOMMAND` (`ra` or `token`) connecting to this daemon as the RA `name`;
    /// the caller adds the call's own arguments.
    pub fn cli(&self, subcommand: &str, name: &str) -> Command {
        let s = self.settings(name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_signet"));
        cmd.arg(subcommand)
            .arg("--endpoint")
            .arg(&s.endpoint)
            .arg("--ca-cert")
            .arg(&s.ca_cert)
            .arg("--cert")
            .arg(&s.cert)
            .arg("--key")
            .arg(&s.key);
        cmd
    }

    /// A client authenticated as `name` (e.g. "ra-one").
    pub async fn client(&self, name: &str) -> CertificateAuthorityClient<Channel> {
        ca_client(&self.settings(name))
            .await
            .unwrap_or_else(|e| panic!("connect as {name}: {e}"))
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// After the process has exited: remove what libfaketime leaves in /dev/shm when its
    /// process is killed, so a later process with the same id does not trip over it.
    fn exited(&mut self) {
        self.child = None;
        if self.faketime {
            let _ = std::fs::remove_file(format!("/dev/shm/faketime_shm_{}", self.pid));
            let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{}", self.pid));
        }
    }

    /// Send a signal by name (TERM, KILL, INT).
    pub fn signal(&self, sig: &str) {
        let out = run(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string()));
        assert!(out.status.success(), "kill -{sig}");
    }

    /// Wait (at most `limit`) for the daemon to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.exited();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon still running after {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll the daemon's gRPC health for the RA service until it is `want` (at most
    /// `limit`, each check within 2 s); whether it got there.
    pub async fn wait_health(
        &self,
        want: tonic_health::pb::health_check_response::ServingStatus,
        limit: Duration,
    ) -> bool {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let channel = signet::api::client::connect(&self.settings("ra-one"))
            .await
            .expect("connect for health");
        let mut health = HealthClient::new(channel);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_secs(2),
                health.check(HealthCheckRequest {
                    service: "signet.v1.CertificateAuthority".into(),
                }),
            )
            .await
                && r.into_inner().status == want as i32
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.exited();
        }
    }
}

/// A valid Issue request for `profile` (names from `common::ca::names_for`).
pub fn issue_request(id: &str, profile: &str, csr: Vec<u8>) -> pb::IssueRequest {
    use signet::pki::San;
    let (subject, sans) = super::ca::names_for(profile);
    pb::IssueRequest {
        validate_only: false,
        request_id: id.into(),
        profile: profile.into(),
        issuer: String::new(),
        csr,
        subject: subject
            .attrs()
            .iter()
            .map(|(a, v)| pb::SubjectAttribute {
                r#type: a.short_name().into(),
                value: v.clone(),
            })
            .collect(),
        sans: sans
            .iter()
            .map(|s| pb::SubjectAltName {
                name: Some(match s {
                    San::Dns(d) => pb::subject_alt_name::Name::Dns(d.clone()),
                    San::Ip(i) => pb::subject_alt_name::Name::Ip(i.to_string()),
                    San::Email(e) => pb::subject_alt_name::Name::Email(e.clone()),
                }),
            })
            .collect(),
        validity_years: 1,
        approval: Some(pb::Approval {
            officer: "王芳".into(),
            ra_reference: format!("RA-{id}"),
            agreement_version: AGREEMENT.into(),
        }),
    }
}

/// A revocation of `serial` for `reason` as request `id`, with no report time and no comment.
pub fn revoke_request(id: &str, serial: &str, reason: pb::RevocationReason) -> pb::RevokeRequest {
    pb::RevokeRequest {
        request_id: id.into(),
        serial: serial.into(),
        reason: reason as i32,
        reported_at: None,
        comment: String::new(),
    }
}

/// `signet` with `args` (after `--config` of `ca`).
pub fn signet(ca: &ApiCa, args: &[&str]) -> (bool, String) {
    let o = run(Command::new(env!("CARGO_BIN_EXE_signet"))
        .arg("--config")
        .arg(&ca.config_path)
        .args(args)
        .envs(ca.child_env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn"));
    super::status::outcome(&o)
}

/// Rows in the certificates table that RAs asked for (not signet's own delegated OCSP
/// responder certificates), counted by the sqlite3 tool.
pub fn count_rows(ca: &ApiCa) -> u64 {
    let out = run(Command::new("sqlite3")
        .arg(ca.dir.join("signet.db"))
        .arg("SELECT count(*) FROM certificates WHERE profile != 'ocsp_responder'"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// (request id, serial) of every certificate row still pending: recorded, not yet signed
/// and committed.
pub fn pending_rows(ca: &ApiCa) -> Vec<(String, String)> {
    let out = run(Command::new("sqlite3")
        .arg(ca.dir.join("signet.db"))
        .arg("SELECT request_id, serial FROM certificates WHERE status = 'pending' ORDER BY 1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(id, serial)| (id.to_owned(), serial.to_owned()))
        .collect()
}

/// Unix seconds of now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Issue a server certificate for a fresh P-256 key from the EC issuing CA over `c`; returns
/// its serial and the PEM file it was written to (in `dir`).
pub async fn issue_server_ec(
    c: &mut CertificateAuthorityClient<Channel>,
    dir: &Path,
    id: &str,
) -> (String, PathBuf) {
    let d = dir.join(format!("csr-{id}"));
    std::fs::create_dir_all(&d).unwrap();
    let mut req = issue_request(id, "server", super::ca::make_csr(&d, "p256"));
    req.issuer = "issuing-ec".into();
    let r = c.issue(req).await.expect("issue").into_inner();
    let leaf = dir.join(format!("{id}.pem"));
    std::fs::write(&leaf, super::ca::pem(&r.certificate)).unwrap();
    (r.serial, leaf)
}

/// Configuration of a TSA and an audit key under the EC issuing CA, for `ApiCa::with_http`.
pub const TSA_AND_AUDIT: &str = r#"
[tsa]
issuer = "issuing-ec"
key_label = "test-tsa"
key_type = "p256"
subject = { C = "CN", O = "Signet Test CA", CN = "Signet Test TSA" }
policy_oid = "1.3.6.1.4.1.99999.2.1"
accuracy_seconds = 1

[audit]
issuer = "issuing-ec"
key_label = "test-audit"
key_type = "p256"
subject = { C = "CN", O = "Signet Test CA", CN = "Signet Test Audit Key" }
checkpoint_interval_seconds = 3600
"#;

/// POST `body` to `url` with curl; returns the HTTP status, content type and the body.
pub fn curl_post(url: &str, content_type: &str, body: &Path, out: &Path) -> (u16, String) {
    let o = run(Command::new("curl")
        .args(["-s", "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg("-o")
        .arg(out)
        .args(["-w", "%{http_code} %{content_type}", url]));
    assert!(o.status.success(), "curl {url}");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (code, ctype) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), ctype.to_owned())
}

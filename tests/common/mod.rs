//! Fixtures shared by the integration tests: a SoftHSM2 token directory of the test's own,
//! a `p11-kit server` in front of it that a test can kill and restart, and `openssl` as the
//! independent checker of signatures signet produced.
//!
//! SoftHSM reads `SOFTHSM2_CONF` once, at `C_Initialize`, so each test needs its own process:
//! run them with `cargo nextest run`, which gives every test one.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod api;
pub mod ca;
pub mod crash;
pub mod status;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use der::Encode;
use signet::hsm::{HsmSettings, TokenSelector};
use signet::pki::SignatureAlgorithm;
use signet::secret::Secret;

/// The SoftHSM2 module as Debian and Ubuntu install it.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// p11-kit's client module, which forwards PKCS#11 calls to a `p11-kit server`.
pub const P11KIT_CLIENT_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

/// Run a command, panicking with its output if it cannot start or fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Set an environment variable of the test process.
///
/// `set_var` is unsafe because another thread could read the environment at the same
/// time. Tests call this before any PKCS#11 module is loaded and, under nextest, each test
/// is a process of its own, so nothing else reads the environment concurrently.
pub fn set_env(key: &str, value: impl AsRef<std::ffi::OsStr>) {
    // SAFETY: see above; no other thread of this test process reads the environment now.
    unsafe { std::env::set_var(key, value) }
}

/// A SoftHSM2 installation private to one test: its config file, its token directory, and
/// `SOFTHSM2_CONF` pointing at it for this process and every child it starts.
pub struct SoftHsm {
    /// Holds the config, the tokens and any files the test writes; removed on drop.
    pub dir: tempfile::TempDir,
    /// The softhsm2.conf written for this test.
    pub conf: PathBuf,
    /// The SoftHSM2 module path.
    pub module: PathBuf,
}

impl SoftHsm {
    /// Write a config and initialise one token per `(label, so_pin, user_pin)`.
    pub fn new(tokens: &[(&str, &str, &str)]) -> SoftHsm {
        let dir = tempfile::tempdir().expect("temp dir");
        let token_dir = dir.path().join("tokens");
        std::fs::create_dir_all(&token_dir).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                token_dir.display()
            ),
        )
        .expect("write softhsm2.conf");
        set_env("SOFTHSM2_CONF", &conf);
        let hsm = SoftHsm {
            dir,
            conf,
            module: PathBuf::from(SOFTHSM_MODULE),
        };
        for (label, so_pin, user_pin) in tokens {
            hsm.init_token(label, so_pin, user_pin);
        }
        hsm
    }

    /// Initialise a token labelled `label` in the first free slot, panicking if that fails.
    pub fn init_token(&self, label: &str, so_pin: &str, user_pin: &str) {
        run_ok(self.util().args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            so_pin,
            "--pin",
            user_pin,
        ]));
    }

    /// `softhsm2-util` pointed at this test's config.
    pub fn util(&self) -> Command {
        let mut cmd = Command::new("softhsm2-util");
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    /// `pkcs11-tool` on the token labelled `label`, pointed at this test's config.
    pub fn pkcs11_tool(&self, label: &str) -> Command {
        let mut cmd = Command::new("pkcs11-tool");
        cmd.env("SOFTHSM2_CONF", &self.conf)
            .arg("--module")
            .arg(&self.module)
            .args(["--token-label", label]);
        cmd
    }

    /// The serial number of the token labelled `label`, read from `softhsm2-util --show-slots`.
    pub fn token_serial(&self, label: &str) -> String {
        let out = run_ok(self.util().arg("--show-slots"));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut serial = None;
        for line in text.lines().map(str::trim) {
            if let Some(s) = line.strip_prefix("Serial number:") {
                serial = Some(s.trim().to_owned());
            } else if let Some(l) = line.strip_prefix("Label:") {
                if l.trim() == label {
                    if let Some(s) = serial.take().filter(|s| !s.is_empty()) {
                        return s;
                    }
                }
            } else if line.starts_with("Slot ") {
                serial = None;
            }
        }
        panic!("no token labelled {label:?} in:\n{text}");
    }

    /// Write `pin` to a file in the test directory (mode 0600) and return its path.
    pub fn pin_file(&self, pin: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.path().join(format!("pin-{n}"));
        std::fs::write(&path, format!("{pin}\n")).expect("write pin file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    /// Settings for an `Hsm` on the token labelled `label`, with short reconnect delays.
    pub fn settings(&self, label: &str, pin: &str) -> HsmSettings {
        HsmSettings {
            module: self.module.clone(),
            token: TokenSelector::Label(label.into()),
            pin: Secret::new(pin.into()),
            pool_size: 2,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// A `p11-kit server` exporting one token over a Unix socket, started in a process group of
/// its own. The server forks a `p11-kit-remote` per client connection, so stopping it for
/// real means killing the whole group; the group is killed on drop too.
pub struct P11KitServer {
    child: Option<Child>,
    /// The socket the server listens on.
    pub socket: PathBuf,
    provider: PathBuf,
    token_uri: String,
    conf: PathBuf,
}

impl P11KitServer {
    /// Start a server for `token_uri` (e.g. `pkcs11:token=signet-ca`) of the SoftHSM in
    /// `hsm`, listening on `<hsm.dir>/p11kit.sock`, and wait until the socket exists.
    pub fn start(hsm: &SoftHsm, token_uri: &str) -> P11KitServer {
        let mut server = P11KitServer {
            child: None,
            socket: hsm.dir.path().join("p11kit.sock"),
            provider: hsm.module.clone(),
            token_uri: token_uri.to_owned(),
            conf: hsm.conf.clone(),
        };
        server.restart();
        server
    }

    /// The value for `P11_KIT_SERVER_ADDRESS`.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// Start (again) on the same socket. Waits at most 10 s until the socket accepts a
    /// connection (the file appears at bind, a moment before the server listens).
    pub fn restart(&mut self) {
        use std::os::unix::process::CommandExt;
        self.kill();
        // A killed server leaves its socket file behind.
        let _ = std::fs::remove_file(&self.socket);
        let child = Command::new("p11-kit")
            .arg("server")
            .arg("-f")
            .arg("--provider")
            .arg(&self.provider)
            .arg("-n")
            .arg(&self.socket)
            .arg(&self.token_uri)
            .env("SOFTHSM2_CONF", &self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start p11-kit server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "p11-kit server accepted no connection in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freeze the server and every `p11-kit-remote` it forked (SIGSTOP to the process
    /// group): a network HSM that stops answering without closing its connections, so
    /// PKCS#11 calls through it block instead of failing.
    pub fn freeze(&self) {
        self.signal_group("STOP");
    }

    /// Let a frozen server run again (SIGCONT to the process group).
    pub fn thaw(&self) {
        self.signal_group("CONT");
    }

    fn signal_group(&self, sig: &str) {
        let child = self.child.as_ref().expect("p11-kit server running");
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg("--")
            .arg(format!("-{}", child.id()))
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{sig} of the p11-kit server's group"
        );
    }

    /// Kill the server and every `p11-kit-remote` it forked (SIGKILL to the process group).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for P11KitServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Check `signature` over `message` with `openssl`, against the public key `spki` (the
/// DER SubjectPublicKeyInfo the HSM gave). `work` holds the scratch files.
pub fn openssl_verifies(
    work: &Path,
    spki: &spki::SubjectPublicKeyInfoOwned,
    alg: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> bool {
    let der = work.join("pub.der");
    let pem = work.join("pub.pem");
    let msg = work.join("msg.bin");
    let sig = work.join("sig.bin");
    std::fs::write(&der, spki.to_der().expect("SPKI encodes")).expect("write key");
    std::fs::write(&msg, message).expect("write message");
    std::fs::write(&sig, signature).expect("write signature");
    // openssl parsing the SPKI is a check of its own.
    run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-inform", "DER", "-in"])
            .arg(&der)
            .arg("-out")
            .arg(&pem),
    );
    let mut cmd = Command::new("openssl");
    let digest = match alg.hash() {
        Some(h) if h.output_len() == 48 => "-sha384",
        _ => "-sha256",
    };
    match alg {
        SignatureAlgorithm::Ed25519 => {
            cmd.args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
                .arg(&pem)
                .arg("-in")
                .arg(&msg)
                .arg("-sigfile")
                .arg(&sig);
        }
        _ => {
            cmd.args(["dgst", digest, "-verify"])
                .arg(&pem)
                .arg("-signature")
                .arg(&sig);
            if matches!(
                alg,
                SignatureAlgorithm::RsaPssSha256 | SignatureAlgorithm::RsaPssSha384
            ) {
                let hash = &digest[1..];
                let salt = alg.hash().map_or(32, |h| h.output_len());
                cmd.args(["-sigopt", "rsa_padding_mode:pss"])
                    .args(["-sigopt", &format!("rsa_pss_saltlen:{salt}")])
                    .args(["-sigopt", &format!("rsa_mgf1_md:{hash}")]);
            }
            cmd.arg(&msg);
        }
    }
    let out = cmd.output().expect("run openssl");
    out.status.success()
}

/// Send the library's `tracing` output to the test's captured output (shown when a test
/// fails, or with `--no-capture`). Filter with `RUST_LOG`; the default shows signet's debug.
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("signet=debug")),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

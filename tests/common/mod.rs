//! Fixtures shared by the integration tests: a soft token installation of the test's own
//! (SoftHSM2, or kryoptic: `SIGNET_TEST_MODULE=kryoptic`, or a test that asks for it), a
//! `p11-kit server` in front of it that a test can kill and restart, and `openssl` as the
//! independent checker of signatures signet produced.
//!
//! SoftHSM reads `SOFTHSM2_CONF` and kryoptic `KRYOPTIC_CONF` once, at `C_Initialize`, so
//! each test needs its own process: run them with `cargo nextest run`, which gives every test
//! one.

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
/// kryoptic's module as `tests/tools/build-kryoptic.sh` builds it, relative to the project.
pub const KRYOPTIC_BUILT: &str = "var/kryoptic/lib/libkryoptic_pkcs11.so";
/// How many slots a test's kryoptic offers (each its own database; blank until initialised).
pub const KRYOPTIC_SLOTS: u64 = 6;

/// The PKCS#11 soft token a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// SoftHSM2 (Debian's softhsm2 package).
    SoftHsm,
    /// kryoptic, built from crates.io by `tests/tools/build-kryoptic.sh`.
    Kryoptic,
}

impl ModuleKind {
    /// `SIGNET_TEST_MODULE`: `softhsm` (the default) or `kryoptic`; anything else panics.
    pub fn from_env() -> ModuleKind {
        match std::env::var("SIGNET_TEST_MODULE").as_deref() {
            Err(_) | Ok("") | Ok("softhsm") => ModuleKind::SoftHsm,
            Ok("kryoptic") => ModuleKind::Kryoptic,
            Ok(other) => panic!("SIGNET_TEST_MODULE={other:?}: use softhsm or kryoptic"),
        }
    }

    /// The variable naming the module's configuration file.
    pub fn conf_var(self) -> &'static str {
        match self {
            ModuleKind::SoftHsm => "SOFTHSM2_CONF",
            ModuleKind::Kryoptic => "KRYOPTIC_CONF",
        }
    }

    /// The module's library. Panics, saying how to build it, when kryoptic's is missing:
    /// a kryoptic test never passes by skipping.
    pub fn module(self) -> PathBuf {
        match self {
            ModuleKind::SoftHsm => PathBuf::from(SOFTHSM_MODULE),
            ModuleKind::Kryoptic => kryoptic_module(),
        }
    }
}

/// kryoptic's module: `SIGNET_KRYOPTIC_MODULE`, else `$SIGNET_KRYOPTIC_DIR/lib/...`, else the
/// project's `var/kryoptic/lib/libkryoptic_pkcs11.so`. Panics with the way to build it.
pub fn kryoptic_module() -> PathBuf {
    let path = if let Some(p) = std::env::var_os("SIGNET_KRYOPTIC_MODULE") {
        PathBuf::from(p)
    } else if let Some(d) = std::env::var_os("SIGNET_KRYOPTIC_DIR") {
        PathBuf::from(d).join("lib/libkryoptic_pkcs11.so")
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(KRYOPTIC_BUILT)
    };
    assert!(
        path.is_file(),
        "kryoptic's PKCS#11 module is missing at {}: build it with tests/tools/build-kryoptic.sh \
         (./softhsm-setup.sh --with-test-tools runs it), or set SIGNET_KRYOPTIC_MODULE",
        path.display()
    );
    path
}

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

/// A soft token installation private to one test (SoftHSM2 or kryoptic, see [`ModuleKind`]):
/// its config file, its token directory, and the module's configuration variable
/// (`SOFTHSM2_CONF`, `KRYOPTIC_CONF`) pointing at it for this process and every child it
/// starts.
pub struct SoftHsm {
    /// Holds the config, the tokens and any files the test writes; removed on drop.
    pub dir: tempfile::TempDir,
    /// The softhsm2.conf (or kryoptic's token.conf) written for this test.
    pub conf: PathBuf,
    /// The module path.
    pub module: PathBuf,
    /// Which module this is.
    pub kind: ModuleKind,
}

impl SoftHsm {
    /// On the module `SIGNET_TEST_MODULE` names (SoftHSM by default): write a config and
    /// initialise one token per `(label, so_pin, user_pin)`.
    pub fn new(tokens: &[(&str, &str, &str)]) -> SoftHsm {
        Self::new_on(ModuleKind::from_env(), tokens)
    }

    /// As [`SoftHsm::new`], on the module `kind`.
    pub fn new_on(kind: ModuleKind, tokens: &[(&str, &str, &str)]) -> SoftHsm {
        let module = kind.module();
        let dir = tempfile::tempdir().expect("temp dir");
        let token_dir = dir.path().join("tokens");
        std::fs::create_dir_all(&token_dir).expect("token dir");
        let conf = match kind {
            ModuleKind::SoftHsm => {
                let conf = dir.path().join("softhsm2.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                        token_dir.display()
                    ),
                )
                .expect("write softhsm2.conf");
                conf
            }
            ModuleKind::Kryoptic => {
                let conf = dir.path().join("kryoptic.conf");
                let mut text = String::from("# kryoptic slots of one test, one database each\n");
                for slot in 1..=KRYOPTIC_SLOTS {
                    text.push_str(&format!(
                        "\n[[slots]]\nslot = {slot}\ndbtype = \"sqlite\"\ndbargs = \"{}\"\n",
                        token_dir.join(format!("slot-{slot}.sql")).display()
                    ));
                }
                std::fs::write(&conf, text).expect("write kryoptic.conf");
                conf
            }
        };
        set_env(kind.conf_var(), &conf);
        let hsm = SoftHsm {
            dir,
            conf,
            module,
            kind,
        };
        for (label, so_pin, user_pin) in tokens {
            hsm.init_token(label, so_pin, user_pin);
        }
        hsm
    }

    /// Initialise a token labelled `label` in the first free slot, panicking if that fails.
    pub fn init_token(&self, label: &str, so_pin: &str, user_pin: &str) {
        if self.kind == ModuleKind::Kryoptic {
            let slot = self
                .slots()
                .into_iter()
                .find(|s| !s.initialized)
                .unwrap_or_else(|| panic!("no blank kryoptic slot left for {label:?}"));
            self.init_slot(slot.id, label, so_pin);
            run_ok(self.pkcs11_tool(label).args([
                "--init-pin",
                "--login",
                "--login-type",
                "so",
                "--so-pin",
                so_pin,
                "--pin",
                user_pin,
            ]));
            return;
        }
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

    /// C_InitToken on the slot `slot` (pkcs11-tool), without a user PIN.
    pub fn init_slot(&self, slot: u64, label: &str, so_pin: &str) {
        run_ok(self.tool().args([
            "--slot",
            &slot.to_string(),
            "--init-token",
            "--label",
            label,
            "--so-pin",
            so_pin,
        ]));
    }

    /// The slots with a token, as `pkcs11-tool --list-token-slots` shows them.
    pub fn slots(&self) -> Vec<SlotView> {
        let out = run_ok(self.tool().arg("--list-token-slots"));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut slots: Vec<SlotView> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("Slot ") {
                // "Slot 0 (0x1): Kryoptic Slot"
                let id = rest
                    .split_once("(0x")
                    .and_then(|(_, r)| r.split_once(')'))
                    .and_then(|(hex, _)| u64::from_str_radix(hex, 16).ok())
                    .unwrap_or_else(|| panic!("slot line {line:?}"));
                slots.push(SlotView {
                    id,
                    initialized: true,
                    serial: String::new(),
                    label: String::new(),
                });
            } else if let Some(s) = slots.last_mut() {
                let line = line.trim();
                if let Some(v) = line.strip_prefix("token label") {
                    s.label = v.trim_start_matches([' ', ':']).trim().to_owned();
                } else if let Some(v) = line.strip_prefix("serial num") {
                    s.serial = v.trim_start_matches([' ', ':']).trim().to_owned();
                } else if line.contains("uninitialized") {
                    s.initialized = false;
                }
            }
        }
        slots
    }

    /// `pkcs11-tool` on the module, pointed at this test's config, no token chosen.
    pub fn tool(&self) -> Command {
        let mut cmd = Command::new("pkcs11-tool");
        cmd.env(self.kind.conf_var(), &self.conf)
            .arg("--module")
            .arg(&self.module);
        cmd
    }

    /// The labels of the initialised tokens.
    pub fn labels(&self) -> Vec<String> {
        self.slots()
            .into_iter()
            .filter(|s| s.initialized)
            .map(|s| s.label)
            .collect()
    }

    /// `softhsm2-util` pointed at this test's config.
    pub fn util(&self) -> Command {
        let mut cmd = Command::new("softhsm2-util");
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    /// `pkcs11-tool` on the token labelled `label`, pointed at this test's config.
    pub fn pkcs11_tool(&self, label: &str) -> Command {
        let mut cmd = self.tool();
        cmd.args(["--token-label", label]);
        cmd
    }

    /// Whether the module lists `mechanism` (pkcs11-tool's name for it, such as
    /// `EC-EDWARDS-KEY-PAIR-GEN`) for the token labelled `label`.
    pub fn has_mechanism(&self, label: &str, mechanism: &str) -> bool {
        let out = run_ok(self.pkcs11_tool(label).arg("--list-mechanisms"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim_start().starts_with(mechanism))
    }

    /// The serial number of the token labelled `label`, read from `softhsm2-util --show-slots`
    /// (SoftHSM) or `pkcs11-tool --list-token-slots`.
    pub fn token_serial(&self, label: &str) -> String {
        if self.kind == ModuleKind::Kryoptic {
            let slots = self.slots();
            return slots
                .iter()
                .find(|s| s.initialized && s.label == label && !s.serial.is_empty())
                .map(|s| s.serial.clone())
                .unwrap_or_else(|| panic!("no token labelled {label:?} in {slots:#?}"));
        }
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
            sm2: None,
        }
    }
}

/// One slot as `pkcs11-tool --list-token-slots` shows it.
#[derive(Clone, Debug)]
pub struct SlotView {
    /// The slot id.
    pub id: u64,
    /// Whether its token is initialised.
    pub initialized: bool,
    /// The token's serial (empty for a blank one that shows none).
    pub serial: String,
    /// The token's label.
    pub label: String,
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
    conf_var: &'static str,
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
            conf_var: hsm.kind.conf_var(),
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
            .env(self.conf_var, &self.conf)
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

/// Runs each named test, an `async fn NAME(kind: ModuleKind)` of the calling file, on SoftHSM
/// (`softhsm::NAME`) and on kryoptic (`kryoptic::NAME`); what differs between the two modules
/// is signet's business, never the test's. The calling file imports `ModuleKind`.
#[allow(unused_macros)]
macro_rules! on_both_modules {
    ($($name:ident),* $(,)?) => {
        mod softhsm {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::ModuleKind::SoftHsm).await
                }
            )*
        }
        mod kryoptic {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::ModuleKind::Kryoptic).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_modules;

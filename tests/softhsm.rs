//! What SoftHSM does differently, and what signet does about it: SoftHSM 2.6 rewrites a
//! token's `token.object` in place at every login, so a process killed at that moment
//! empties it and the token, CA keys included, is gone. The quick start keeps a copy of the
//! token directory that brings the CA back, signet says what happened when it meets an
//! emptied token, and it logs in once per process start (never per signature), so the
//! window is as small as it can be.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::api::*;
use common::ca::{make_csr, run};

fn signet_cmd(ca: &ApiCa) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signet"));
    cmd.arg("--config")
        .arg(&ca.config_path)
        .envs(ca.child_env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn");
    cmd
}

/// The folder of the token labelled `label` under SoftHSM's token directory.
fn token_folder(ca: &ApiCa, label: &str) -> PathBuf {
    let tokens = ca.softhsm.dir.path().join("tokens");
    for entry in std::fs::read_dir(&tokens).unwrap() {
        let dir = entry.unwrap().path();
        let object = std::fs::read(dir.join("token.object")).unwrap_or_default();
        if object.windows(label.len()).any(|w| w == label.as_bytes()) {
            return dir;
        }
    }
    panic!("no token labelled {label} under {}", tokens.display());
}

/// Every file under `dir`, relative, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            out.push((
                p.strip_prefix(dir).unwrap().to_owned(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn the_quick_start_keeps_a_copy_of_the_tokens_that_brings_the_ca_back_after_a_kill_during_login() {
    let ca = ApiCa::new();
    // The quick start (the ceremony is already done) copies the token directory, then serves.
    let mut quick = signet_cmd(&ca)
        .arg("quickstart")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(quick.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("serving RA API"), "{line:?}");
    run(Command::new("kill")
        .arg("-TERM")
        .arg(quick.id().to_string()));
    let o = quick.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    let backups = ca.softhsm.dir.path().join("backup");
    let copies: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap_or_else(|e| panic!("{}: {e}\n{said}", backups.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        said.contains(&copies[0].display().to_string()),
        "the quick start says where the copy is: {said}"
    );
    let folder = token_folder(&ca, "signet-ca");
    let copy = copies[0].join(folder.file_name().unwrap());
    // The key objects are in the copy, byte for byte.
    let keys: Vec<_> = files(&folder)
        .into_iter()
        .filter(|(p, _)| p != Path::new("token.object") && p != Path::new("token.lock"))
        .collect();
    assert!(keys.len() >= 8, "the CA's keys are files: {keys:?}");
    for (name, bytes) in &keys {
        assert_eq!(
            std::fs::read(copy.join(name)).ok().as_ref(),
            Some(bytes),
            "{}",
            name.display()
        );
    }

    // SoftHSM's failure, reproduced: kill signet at its first write to token.object (the
    // login's rewrite), as a SIGKILL during start-up would.
    let object = folder.join("token.object");
    let mut traced = Command::new("strace");
    traced
        .args(["-f", "-o", "/dev/null", "-P"])
        .arg(&object)
        .args(["-e", "trace=write", "-e", "inject=write:signal=KILL"])
        .arg(env!("CARGO_BIN_EXE_signet"))
        .arg("--config")
        .arg(&ca.config_path)
        .arg("crl")
        .env("RUST_LOG", "warn");
    let killed = run(&mut traced);
    assert!(!killed.status.success(), "signet was killed at the write");
    assert_eq!(
        std::fs::metadata(&object).unwrap().len(),
        0,
        "SoftHSM left token.object empty"
    );
    // signet meets the emptied token and says what happened and where the copy is.
    let o = run(signet_cmd(&ca).arg("crl"));
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(
        said.contains("empty") && said.contains(&backups.display().to_string()),
        "{said}"
    );
    // Restored from the copy, the CA signs again with the same keys.
    std::fs::remove_dir_all(&folder).unwrap();
    run(Command::new("cp").arg("-a").arg(&copy).arg(&folder));
    let o = run(signet_cmd(&ca).arg("crl"));
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("CRL number"), "{said}");
    let (ok, text) = signet(&ca, &["audit", "verify"]);
    assert!(ok && text.contains("audit log OK"), "{text}");
}

#[test]
fn softhsm_setup_backup_copies_the_token_directory() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("softhsm-setup.sh");
    let o = run(Command::new("bash")
        .arg(&setup)
        .arg("--dir")
        .arg(dir.path())
        .arg("--backup"));
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    let copies: Vec<PathBuf> = std::fs::read_dir(dir.path().join("backup"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(copies.len(), 1);
    assert!(said.contains(&copies[0].display().to_string()), "{said}");
    // Three tokens, each with its files, copied.
    let tokens = std::fs::read_dir(dir.path().join("tokens"))
        .unwrap()
        .count();
    let copied = std::fs::read_dir(&copies[0]).unwrap().count();
    assert_eq!((tokens, copied), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_in_once_however_many_signatures_it_makes() {
    // OpenSC's pkcs11-spy sits between signet and SoftHSM and writes down every call.
    let mut ca = ApiCa::with_http("");
    let spy_log = ca.dir.join("pkcs11-spy.log");
    let config = std::fs::read_to_string(&ca.config_path).unwrap();
    let spied = config.replace(
        &format!("module = \"{}\"", ca.softhsm.module.display()),
        "module = \"/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so\"",
    );
    assert_ne!(config, spied);
    std::fs::write(&ca.config_path, spied).unwrap();
    ca.child_env
        .push(("PKCS11SPY".into(), ca.softhsm.module.display().to_string()));
    ca.child_env
        .push(("PKCS11SPY_OUTPUT".into(), spy_log.display().to_string()));

    let mut d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let csr_dir = ca.dir.join("csr");
    std::fs::create_dir_all(&csr_dir).unwrap();
    let csr = make_csr(&csr_dir, "p256");
    for i in 0..20 {
        c.issue(issue_request(&format!("login-{i}"), "server", csr.clone()))
            .await
            .expect("issue through the spy");
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(60)).success());
    let log = std::fs::read_to_string(&spy_log).unwrap();
    let signs = log.lines().filter(|l| l.contains("C_Sign")).count();
    let logins = log.lines().filter(|l| l.contains("C_Login")).count();
    assert!(signs >= 20, "the spy saw the signatures ({signs})");
    assert_eq!(
        logins,
        1,
        "one C_Login for the daemon's life:\n{}",
        log.lines()
            .filter(|l| l.contains("C_Login") || l.contains("C_Logout"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

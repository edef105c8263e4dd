//! The store's file system fills up under a running daemon: issuance fails UNAVAILABLE with
//! nothing half-written, gRPC health and `/healthz` report the store NOT_SERVING, and both
//! recover once space returns; every certificate answered is in the store and the audit log
//! verifies.
//!
//! The store lives on a small tmpfs the test mounts (root, or `sudo -n`), filled with `dd`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::api::*;
use common::ca::{make_csr, run};
use tonic::Code;

/// A tmpfs of `size` mounted at `dir` for the test's life.
struct SmallFs {
    dir: PathBuf,
}

/// `cmd`, as root: directly when the test runs as root, else through `sudo -n`.
fn as_root(args: &[&str]) -> Command {
    let root = run(Command::new("id").arg("-u"));
    let mut cmd = if String::from_utf8_lossy(&root.stdout).trim() == "0" {
        Command::new(args[0])
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(args[0]);
        c
    };
    cmd.args(&args[1..]);
    cmd
}

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let d = dir.to_str().expect("UTF-8 path");
        let out = run(&mut as_root(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0777"),
            "tmpfs",
            d,
        ]));
        assert!(
            out.status.success(),
            "mounting a small tmpfs for the store (needs root or sudo -n): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs {
            dir: dir.to_owned(),
        }
    }

    /// Fill what is left with a file; true when the file system is full.
    fn fill(&self) -> bool {
        let out = run(Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", self.dir.join("filler").display()))
            .arg("bs=4k"));
        String::from_utf8_lossy(&out.stderr).contains("No space left")
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).expect("remove the filler");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = run(&mut as_root(&[
            "umount",
            "-l",
            self.dir.to_str().unwrap_or(""),
        ]));
    }
}

/// The HTTP status code of `GET /healthz`.
fn healthz(d: &Daemon) -> String {
    let base = d.http.as_deref().expect("[http] configured");
    let out = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{base}/healthz")));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = run(Command::new("sqlite3").arg(db).arg(sql));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_issuance_unavailable_turns_health_not_serving_and_both_recover() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let ca = ApiCa::with_http("");
    // Move the store (made by the ceremony) onto a 3 MiB file system of its own.
    let fs = SmallFs::mount(&ca.dir.join("small-fs"), "3m");
    let db = fs.dir.join("signet.db");
    let old = ca.dir.join("signet.db");
    sqlite(&old, "PRAGMA wal_checkpoint(TRUNCATE)");
    std::fs::copy(&old, &db).unwrap();
    let config = std::fs::read_to_string(&ca.config_path).unwrap();
    let moved = config.replace(
        &format!("sqlite = \"{}\"", old.display()),
        &format!("sqlite = \"{}\"", db.display()),
    );
    assert_ne!(config, moved, "the store path is in the configuration");
    std::fs::write(&ca.config_path, moved).unwrap();

    let d = Daemon::start(&ca);
    assert!(
        d.wait_health(ServingStatus::Serving, Duration::from_secs(10))
            .await
    );
    let mut c = d.client("ra-one").await;
    let csrs: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let dir = ca.dir.join(format!("csr-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            make_csr(&dir, "p256")
        })
        .collect();
    let mut answered = Vec::new();
    let first = c
        .issue(issue_request("disk-0", "server", csrs[0].clone()))
        .await
        .expect("issue before the disk fills");
    answered.push(first.into_inner());

    assert!(fs.fill(), "dd filled the small file system");
    // Issue until the store refuses: the write-ahead log may still have room for a few.
    let mut refused = None;
    for i in 1..200 {
        let req = issue_request(&format!("disk-{i}"), "server", csrs[i % 4].clone());
        match c.issue(req.clone()).await {
            Ok(r) => answered.push(r.into_inner()),
            Err(e) => {
                refused = Some((req, e));
                break;
            }
        }
    }
    let (refused_req, e) = refused.expect("issuance fails once the disk is full");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        !e.message().to_lowercase().contains("sqlite"),
        "database internals leaked: {e:?}"
    );
    assert!(
        d.wait_health(ServingStatus::NotServing, Duration::from_secs(10))
            .await,
        "gRPC health did not turn NOT_SERVING with the disk full:\n{}",
        d.log_text()
    );
    assert_eq!(healthz(&d), "503", "/healthz while the disk is full");

    fs.free();
    assert!(
        d.wait_health(ServingStatus::Serving, Duration::from_secs(30))
            .await,
        "gRPC health did not recover once space returned:\n{}",
        d.log_text()
    );
    assert_eq!(healthz(&d), "200", "/healthz once space returned");
    // The refused request, sent again with the same id, is issued once.
    let again = c
        .issue(refused_req.clone())
        .await
        .expect("the refused request succeeds once space returns");
    answered.push(again.into_inner());
    d.signal("TERM");
    let mut d = d;
    assert!(d.wait(Duration::from_secs(60)).success());

    // Every answered certificate is in the store, byte for byte, once; nothing pending.
    for a in &answered {
        let der = sqlite(
            &db,
            &format!(
                "SELECT hex(cert_der) FROM certificates WHERE serial = '{}'",
                a.serial
            ),
        );
        assert_eq!(der, hex::encode_upper(&a.certificate), "{}", a.serial);
    }
    let ids = sqlite(
        &db,
        "SELECT count(*), count(DISTINCT request_id) FROM certificates WHERE request_id LIKE 'disk-%'",
    );
    assert_eq!(
        ids,
        format!("{}|{}", answered.len(), answered.len()),
        "one certificate per request id"
    );
    let pending = sqlite(
        &db,
        "SELECT count(*) FROM certificates WHERE cert_der IS NULL AND request_id LIKE 'disk-%'",
    );
    // The refused request either left nothing or a pending row its retry finished.
    assert_eq!(pending, "0");
    let (ok, text) = signet(&ca, &["audit", "verify"]);
    assert!(ok && text.contains("audit log OK"), "{text}");
}

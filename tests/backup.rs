//! `signet store backup` while a daemon issues, and `signet store restore`: the restored
//! store passes `signet audit verify`, keeps every certificate answered before the backup,
//! and hands out no CRL number or timestamp serial that relying parties may already have
//! seen; a copy whose audit chain is broken, or a store in use, is refused and nothing
//! changes.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::api::*;
use common::ca::{make_csr, run};

fn sql(db: &Path, query: &str) -> String {
    let o = run(Command::new("sqlite3").arg(db).arg(query));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Timestamp one query through the daemon's TSA.
fn timestamp(d: &Daemon, dir: &Path) {
    std::fs::write(dir.join("data.txt"), "x").unwrap();
    let o = run(Command::new("openssl")
        .args([
            "ts", "-query", "-data", "data.txt", "-sha256", "-out", "q.tsq",
        ])
        .current_dir(dir));
    assert!(o.status.success());
    let o = run(Command::new("curl")
        .args(["-s", "-o", "r.tsr", "-w", "%{http_code}", "-H"])
        .arg("Content-Type: application/timestamp-query")
        .args(["--data-binary", "@q.tsq"])
        .arg(format!("{}/tsa", d.http.as_ref().unwrap()))
        .current_dir(dir));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_load_restores_verified_with_numbers_raised() {
    let ca = ApiCa::with_http(TSA_AND_AUDIT);
    let db = ca.dir.join("signet.db");
    let mut d = Daemon::start(&ca);
    let dir = ca.dir.join("backup");
    std::fs::create_dir_all(&dir).unwrap();
    timestamp(&d, &dir);
    let csr = make_csr(&dir, "p256");

    // Four callers issue until told to stop; the backup is taken in the middle.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for caller in 0..4 {
        let mut c = d.client("ra-one").await;
        let (stop, csr) = (stop.clone(), csr.clone());
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = issue_request(&format!("b-{caller}-{n}"), "server", csr.clone());
                let r = c.issue(req).await.expect("issue").into_inner();
                answered.push((std::time::Instant::now(), r.serial));
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copy = dir.join("signet-backup.db");
    let started = std::time::Instant::now();
    let (ok, out) = tokio::task::block_in_place(|| {
        signet(&ca, &["store", "backup", "--out", copy.to_str().unwrap()])
    });
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut before_backup = Vec::new();
    let mut total = 0;
    for t in tasks {
        for (at, serial) in t.await.unwrap() {
            total += 1;
            if at < started {
                before_backup.push(serial);
            }
        }
    }
    assert!(!before_backup.is_empty() && total > before_backup.len());
    // What relying parties have seen by now: CRL numbers and timestamp serials.
    timestamp(&d, &dir);
    let live_crl: i64 = sql(&db, "SELECT max(last) FROM crl_numbers")
        .parse()
        .unwrap();
    let live_tsa: i64 = sql(&db, "SELECT next_serial FROM tsa_state")
        .parse()
        .unwrap();

    // The backup is one file, every certificate answered before it began inside.
    assert!(!Path::new(&format!("{}-wal", copy.display())).exists());
    for serial in &before_backup {
        assert_eq!(
            sql(
                &copy,
                &format!("SELECT status FROM certificates WHERE serial = '{serial}'")
            ),
            "valid",
            "{serial} answered before the backup is not in it"
        );
    }

    // Refused while the daemon holds the store, and without --force.
    let from = copy.to_str().unwrap();
    let (ok, out) = signet(&ca, &["store", "restore", "--from", from, "--force"]);
    assert!(!ok && out.contains("in use"), "{out}");
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    let (ok, out) = signet(&ca, &["store", "restore", "--from", from]);
    assert!(!ok && out.contains("--force"), "{out}");

    // A copy with one audit entry altered is refused, and the store is left as it was.
    let broken = dir.join("broken.db");
    std::fs::copy(&copy, &broken).unwrap();
    sql(
        &broken,
        "UPDATE audit_log SET detail = detail || ' ' WHERE seq = 3",
    );
    let rows_before = count_rows(&ca);
    let (ok, out) = signet(
        &ca,
        &[
            "store",
            "restore",
            "--from",
            broken.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(!ok && out.contains("does not verify"), "{out}");
    assert_eq!(
        count_rows(&ca),
        rows_before,
        "a refused restore changed the store"
    );

    // The real restore.
    let (ok, out) = signet(&ca, &["store", "restore", "--from", from, "--force"]);
    assert!(ok && out.contains("verified"), "{out}");
    assert!(out.contains("kept as"), "{out}");
    let (ok, verify) = signet(&ca, &["audit", "verify"]);
    assert!(ok && verify.contains("audit log OK"), "{verify}");
    assert_eq!(
        sql(
            &db,
            "SELECT action FROM audit_log ORDER BY seq DESC LIMIT 1"
        ),
        "store.restored"
    );
    let restored_crl: i64 = sql(&db, "SELECT min(last) FROM crl_numbers")
        .parse()
        .unwrap();
    let restored_tsa: i64 = sql(&db, "SELECT next_serial FROM tsa_state")
        .parse()
        .unwrap();
    assert!(restored_crl > live_crl, "{restored_crl} <= {live_crl}");
    assert!(restored_tsa > live_tsa, "{restored_tsa} <= {live_tsa}");
    for serial in &before_backup {
        assert_eq!(
            sql(
                &db,
                &format!("SELECT status FROM certificates WHERE serial = '{serial}'")
            ),
            "valid"
        );
    }

    // The daemon serves from the restored store: a new CRL above every number seen, issuance.
    let d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    c.issue(issue_request("after-restore", "server", csr))
        .await
        .expect("issue after the restore");
    let published: i64 = sql(&db, "SELECT max(number) FROM crls").parse().unwrap();
    assert!(published > live_crl, "CRL number {published} <= {live_crl}");
}

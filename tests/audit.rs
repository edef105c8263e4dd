//! The audit log as an auditor meets it: a daemon runs a mixed workload (issue, revoke, CRLs,
//! timestamps, start and stop), `signet audit verify` passes, then entries edited, deleted,
//! swapped or cut off with sqlite3 are each caught at the first bad sequence number; and an
//! evidence bundle is checked by running exactly the commands of its README.txt with OpenSSL.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::api::*;
use common::ca::run;
use signet::api::pb;

/// `signet audit evidence` for the certificate `serial`, written to `out`.
fn evidence(ca: &ApiCa, serial: &str, out: &Path) -> (bool, String) {
    signet(
        ca,
        &[
            "audit",
            "evidence",
            "--serial",
            serial,
            "--out",
            out.to_str().unwrap(),
        ],
    )
}

fn sqlite(db: &Path, sql: &str) -> String {
    let o = run(Command::new("sqlite3").arg(db).arg(sql));
    assert!(
        o.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A CA with a TSA and an audit key; the daemon issued three certificates, revoked one,
/// published CRLs and stamped a query, then stopped. Returns the CA and the serials.
async fn after_a_workload() -> (ApiCa, Vec<String>) {
    let ca = ApiCa::with_http(TSA_AND_AUDIT);
    let mut d = Daemon::start(&ca);
    let mut c = d.client("ra-one").await;
    let mut serials = Vec::new();
    for i in 0..3 {
        let (serial, _) = issue_server_ec(&mut c, &ca.dir, &format!("work-{i}")).await;
        serials.push(serial);
    }
    c.revoke(pb::RevokeRequest {
        comment: "lost token".into(),
        ..revoke_request(
            "work-revoke",
            &serials[1],
            pb::RevocationReason::KeyCompromise,
        )
    })
    .await
    .expect("revoke");
    let dir = ca.dir.join("ts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data.txt"), "x").unwrap();
    let o = run(Command::new("openssl")
        .args([
            "ts", "-query", "-data", "data.txt", "-sha256", "-out", "q.tsq",
        ])
        .current_dir(&dir));
    assert!(o.status.success());
    for i in 0..3 {
        let (code, _) = curl_post(
            &format!("{}/tsa", d.http.as_ref().unwrap()),
            "application/timestamp-query",
            &dir.join("q.tsq"),
            &dir.join(format!("r{i}.tsr")),
        );
        assert_eq!(code, 200);
    }
    d.signal("TERM");
    assert!(d.wait(Duration::from_secs(30)).success());
    (ca, serials)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_after_a_workload_and_names_the_first_edited_deleted_or_swapped_entry() {
    let (ca, _) = after_a_workload().await;
    let db = ca.dir.join("signet.db");
    let actions = sqlite(&db, "SELECT group_concat(DISTINCT action) FROM audit_log");
    for a in [
        "ceremony.key_generated",
        "ceremony.issuer_certified",
        "certificate.issued",
        "certificate.revoked",
        "crl.signed",
        "timestamp.issued",
        "daemon.started",
        "daemon.stopped",
    ] {
        assert!(actions.contains(a), "{a} missing from {actions}");
    }
    let count: i64 = sqlite(&db, "SELECT count(*) FROM audit_log")
        .parse()
        .unwrap();
    // Timestamps are one counted entry, not one each.
    assert_eq!(
        sqlite(
            &db,
            "SELECT count(*), json_extract(detail, '$.count') FROM audit_log WHERE action = 'timestamp.issued'"
        ),
        "1|3"
    );
    // The shutdown checkpoint covers the stop entry, the newest.
    assert_eq!(
        sqlite(&db, "SELECT max(seq) FROM audit_checkpoints"),
        count.to_string()
    );
    let (ok, out) = signet(&ca, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("audit log OK: {count} entries (1 to {count})")),
        "{out}"
    );
    let backup = ca.dir.join("backup.db");
    sqlite(&db, &format!(".backup '{}'", backup.display()));
    let restore = || sqlite(&db, &format!(".restore '{}'", backup.display()));
    let cases = [
        (
            "edit",
            "UPDATE audit_log SET object = 'forged' WHERE seq = 5",
            5,
        ),
        ("delete", "DELETE FROM audit_log WHERE seq = 7", 7),
        (
            "swap",
            "UPDATE audit_log SET seq = -1 WHERE seq = 6; UPDATE audit_log SET seq = 6 WHERE seq = 9; UPDATE audit_log SET seq = 9 WHERE seq = -1",
            6,
        ),
        (
            "edit with a recomputed hash",
            "UPDATE audit_log SET hash = 'ab' || substr(hash, 3) WHERE seq = 4",
            4,
        ),
        (
            "cut off the newest",
            &format!("DELETE FROM audit_log WHERE seq = {count}"),
            count,
        ),
        (
            "forge the checkpoint",
            &format!("UPDATE audit_checkpoints SET at = at + 1 WHERE seq = {count}"),
            count,
        ),
    ];
    for (what, sql, bad) in cases {
        sqlite(&db, sql);
        let (ok, out) = signet(&ca, &["audit", "verify"]);
        assert!(!ok, "{what}: verify passed: {out}");
        assert!(
            out.contains(&format!("BROKEN at entry {bad}:")),
            "{what}: expected entry {bad}: {out}"
        );
        restore();
        let (ok, out) = signet(&ca, &["audit", "verify"]);
        assert!(ok, "after restoring from {what}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evidence_bundle_checks_out_with_the_openssl_commands_of_its_readme() {
    let (ca, serials) = after_a_workload().await;
    let out = ca.dir.join("evidence");
    let (ok, text) = evidence(&ca, &serials[0], &out);
    assert!(ok, "{text}");
    for f in [
        "request.json",
        "csr.pem",
        "certificate.pem",
        "chain.pem",
        "root.pem",
        "checkpoint.txt",
        "checkpoint.sig",
        "audit-cert.pem",
        "README.txt",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let request = std::fs::read_to_string(out.join("request.json")).unwrap();
    assert!(
        request.contains("王芳") && request.contains("RA-work-0"),
        "{request}"
    );
    let readme = std::fs::read_to_string(out.join("README.txt")).unwrap();
    let commands: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("$ "))
        .collect();
    assert!(commands.len() >= 8, "{readme}");
    let mut all = String::new();
    for cmd in &commands {
        let o = run(Command::new("sh").arg("-c").arg(cmd).current_dir(&out));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{cmd}: {text}");
        all.push_str(&text);
    }
    assert!(all.contains("certificate.pem: OK"), "{all}");
    assert!(all.contains("audit-cert.pem: OK"), "{all}");
    assert!(all.contains("Verified OK"), "{all}");
    assert!(all.contains("audit chain OK"), "{all}");
    assert!(all.contains("CSR key = certificate key"), "{all}");
    // A tampered entry file breaks the README's chain walk.
    let entries: Vec<_> = std::fs::read_dir(out.join("entries"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let victim = entries.iter().min().unwrap();
    let text = std::fs::read_to_string(victim).unwrap();
    std::fs::write(
        victim,
        text.replace("certificate.issued", "certificate.revoked"),
    )
    .unwrap();
    let walk = commands.iter().find(|c| c.contains("prev_hash")).unwrap();
    let o = run(Command::new("sh").arg("-c").arg(walk).current_dir(&out));
    assert!(!o.status.success(), "the walk passed a tampered entry");
    // The signature does not cover a changed checkpoint.
    let cp = std::fs::read_to_string(out.join("checkpoint.txt")).unwrap();
    std::fs::write(out.join("checkpoint.txt"), cp.replace("seq: ", "seq: 1")).unwrap();
    let dgst = commands.iter().find(|c| c.contains("dgst")).unwrap();
    let o = run(Command::new("sh").arg("-c").arg(dgst).current_dir(&out));
    assert!(!o.status.success(), "a changed checkpoint verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_waits_for_a_checkpoint_and_signet_audit_checkpoint_signs_one() {
    let (ca, _) = after_a_workload().await;
    // Issued locally by the operator after the daemon's last checkpoint: not covered yet.
    let d = ca.dir.join("local");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("x.csr"), common::ca::make_csr(&d, "p256")).unwrap();
    let (ok, text) = signet(
        &ca,
        &[
            "issue",
            "--profile",
            "server",
            "--csr",
            d.join("x.csr").to_str().unwrap(),
            "--subject",
            "CN=local.example.cn",
            "--san",
            "dns:local.example.cn",
            "--validity",
            "1",
            "--request-id",
            "local-1",
            "--officer",
            "李雷",
            "--ra-reference",
            "LOCAL-1",
            "--agreement-version",
            common::ca::AGREEMENT,
            "--issuer",
            "issuing-ec",
        ],
    );
    assert!(ok, "{text}");
    let serial = text
        .split("issued serial ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned();
    let out = ca.dir.join("evidence-local");
    let (ok, text) = evidence(&ca, &serial, &out);
    assert!(
        !ok && text.contains("no signed checkpoint covers"),
        "{text}"
    );
    let (ok, _) = signet(&ca, &["audit", "verify"]);
    assert!(ok);
    let (ok, text) = signet(&ca, &["audit", "checkpoint"]);
    assert!(
        ok && text.contains("checkpoint signed over entry"),
        "{text}"
    );
    let (ok, text) = signet(&ca, &["audit", "checkpoint"]);
    assert!(ok && text.contains("already covered"), "{text}");
    let (ok, text) = evidence(&ca, &serial, &out);
    assert!(ok, "{text}");
    let request = std::fs::read_to_string(out.join("request.json")).unwrap();
    assert!(
        request.contains("\"ra\": \"operator\"") && request.contains("LOCAL-1"),
        "{request}"
    );
    let (ok, text) = signet(&ca, &["audit", "verify"]);
    assert!(ok && text.contains("the newest entry is covered"), "{text}");
}

/// The sequence number the newest checkpoint covers and that of the newest entry with
/// `action`, read with sqlite3.
fn covered_and_newest(ca: &ApiCa, action: &str) -> (i64, i64) {
    let db = ca.dir.join("signet.db");
    let covered = sqlite(&db, "SELECT coalesce(max(seq), 0) FROM audit_checkpoints");
    let newest = sqlite(
        &db,
        &format!("SELECT coalesce(max(seq), 0) FROM audit_log WHERE action = '{action}'"),
    );
    (covered.parse().unwrap(), newest.parse().unwrap())
}

/// Wait (at most 15 s) until a checkpoint covers the newest `daemon.started` entry.
fn wait_for_start_checkpoint(ca: &ApiCa) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (covered, started) = covered_and_newest(ca, "daemon.started");
        if started > 0 && covered >= started {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint covers the start (entry {started}); the newest covers {covered}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_starting_after_the_interval_signs_a_checkpoint_at_once_also_after_a_kill() {
    // The interval is an hour (TSA_AND_AUDIT).
    let ca = ApiCa::with_http(TSA_AND_AUDIT);
    // No checkpoint yet: the first start signs one at once.
    let mut d = Daemon::start(&ca);
    wait_for_start_checkpoint(&ca);
    let mut c = d.client("ra-one").await;
    issue_server_ec(&mut c, &ca.dir, "before-kill").await;
    drop(c);
    d.signal("KILL");
    d.wait(Duration::from_secs(30));
    // More entries while it is down: the operator publishes CRLs.
    let (ok, out) = signet(&ca, &["crl"]);
    assert!(ok, "{out}");
    let (ok, out) = signet(&ca, &["audit", "verify"]);
    assert!(ok && out.contains("after it not yet"), "{out}");
    let (_, crl_entry) = covered_and_newest(&ca, "crl.signed");

    // Two hours later (libfaketime): the latest checkpoint is older than the interval, so
    // the daemon signs one at start, covering the killed run's and the operator's entries.
    let _d2 = Daemon::start_with_clock(&ca, "+2h");
    wait_for_start_checkpoint(&ca);
    let (covered, _) = covered_and_newest(&ca, "daemon.started");
    assert!(covered > crl_entry, "{covered} <= {crl_entry}");
    let (ok, out) = signet(&ca, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "entries 1 to {covered} covered by a signed checkpoint"
        )) || out.contains("the newest entry is covered"),
        "{out}"
    );
}

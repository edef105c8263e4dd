//! `signet bench --prefill N`: grow a store to N certificates, one in ten of the new ones
//! revoked, through the same store calls issuance and revocation make (so every record,
//! revocation event and audit entry is as the daemon writes it, and `signet audit verify`
//! passes afterwards). It is how a store of a million certificates is made to measure at
//! scale; the certificates are real-sized and real-shaped, their signatures placeholders.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use signet::config::Config;
use signet::store::{RevokeOutcome, SqliteStore, Store};

use super::args::BenchArgs;
use super::common::run_id;
use super::store::issue_one;
use super::workload::Workload;

/// One in this many new certificates is revoked.
const REVOKE_EVERY: u64 = 10;

/// Grow the store at `--db` (default: the configured store) to `target` certificates.
pub(crate) fn run(cfg: Config, a: &BenchArgs, target: u64) -> Result<(), String> {
    let path = a.db.clone().unwrap_or_else(|| cfg.store_path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(prefill(&cfg, a, &path, target))
}

async fn prefill(cfg: &Config, a: &BenchArgs, path: &Path, target: u64) -> Result<(), String> {
    let store = SqliteStore::open(path).map_err(|e| e.to_string())?;
    let have = store
        .count_certificates()
        .await
        .map_err(|e| e.to_string())?;
    if have >= target {
        println!(
            "{}: {have} certificates already, nothing to add",
            path.display()
        );
        return Ok(());
    }
    let todo = target - have;
    let work = Arc::new(
        Workload::new(
            cfg,
            &store,
            &a.issuer,
            &a.profile,
            format!("prefill-{}", run_id()),
        )
        .await?,
    );
    eprintln!(
        "{}: {have} certificates; adding {todo} of issuer {}, one in {REVOKE_EVERY} revoked",
        path.display(),
        work.issuer()
    );
    let next = Arc::new(AtomicU64::new(0));
    let revoked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (store, work, next, revoked) =
            (store.clone(), work.clone(), next.clone(), revoked.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= todo {
                    return Ok::<(), String>(());
                }
                let one = work.issuance(n)?;
                issue_one(&store, &one).await?;
                if n % REVOKE_EVERY == REVOKE_EVERY - 1 {
                    let (rev, audit) = work.revocation(&one.pending);
                    match store.revoke(rev, audit).await.map_err(|e| e.to_string())? {
                        RevokeOutcome::Revoked(_) => {
                            revoked.fetch_add(1, Ordering::Relaxed);
                        }
                        other => return Err(format!("revoking {}: {other:?}", one.pending.serial)),
                    }
                }
                if n % 100_000 == 99_999 {
                    eprintln!(
                        "  {} added in {:.0} s",
                        n + 1,
                        start.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("prefill task: {e}"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = store
        .count_certificates()
        .await
        .map_err(|e| e.to_string())?;
    let bytes = store.footprint().await.map_err(|e| e.to_string())?;
    println!(
        "{}: added {todo} certificates ({} revoked) in {secs:.1} s ({:.0}/s); {total} in all, \
         {bytes} bytes ({:.0} per certificate)",
        path.display(),
        revoked.load(Ordering::Relaxed),
        todo as f64 / secs,
        bytes as f64 / total.max(1) as f64
    );
    Ok(())
}

//! `signet bench --mode store`: the store alone, as issuance uses it and with no HSM.
//! `--concurrency` callers each record a pending certificate (`begin_issuance`), then commit
//! it with its audit entry (`complete_issuance`), durably as the daemon does, for
//! `--duration` seconds. It reports durable issuances per second, their latency, the CPU
//! the database thread spent per issuance and the database bytes per certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use signet::config::Config;
use signet::store::{BeginOutcome, SqliteStore, Store};

use super::args::BenchArgs;
use super::common::{Errors, ms, run_id};
use super::workload::{Issuance, Workload};

/// The name of the store's database thread (see `store::sqlite`).
const DATABASE_THREAD: &str = "signet-sqlite";

/// Store mode: open the database (`--db`, or a fresh one in a temporary directory), load
/// it and print the figures.
pub(crate) fn run(cfg: Config, a: &BenchArgs) -> Result<(), String> {
    let (path, scratch) = match &a.db {
        Some(p) => (p.clone(), None),
        None => {
            let dir = scratch_dir()?;
            (dir.join("bench.sqlite"), Some(dir))
        }
    };
    let result = bench(&cfg, a, &path);
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn bench(cfg: &Config, a: &BenchArgs, path: &Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = SqliteStore::open(path).map_err(|e| e.to_string())?;
        let work = Arc::new(
            Workload::new(cfg, &store, &a.issuer, &a.profile, run_id().to_string()).await?,
        );
        // One issuance first, so the caches are warm and a broken setup fails early.
        issue_one(&store, &work.issuance(0)?).await?;
        let certs_before = store.count_certificates().await.map_err(|e| e.to_string())?;
        let bytes_before = store.footprint().await.map_err(|e| e.to_string())?;
        let cpu = ThreadCpu::find(DATABASE_THREAD)?;
        let cpu_before = cpu.nanos()?;
        let errors = Errors::default();
        let counter = Arc::new(AtomicU64::new(1));
        let duration = Duration::from_secs(a.duration.max(1));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..a.concurrency.max(1) {
            let (store, work, errors, counter) =
                (store.clone(), work.clone(), errors.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                while start.elapsed() < duration {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let one = match work.issuance(n) {
                        Ok(one) => one,
                        Err(e) => {
                            errors.record(e);
                            break;
                        }
                    };
                    let t = Instant::now();
                    match issue_one(&store, &one).await {
                        Ok(()) => samples.push(t.elapsed()),
                        Err(e) => errors.record(e),
                    }
                }
                samples
            }));
        }
        let report = errors.report(tasks, start).await?;
        let cpu_after = cpu.nanos()?;
        let certs_after = store.count_certificates().await.map_err(|e| e.to_string())?;
        let bytes_after = store.footprint().await.map_err(|e| e.to_string())?;
        let added = certs_after.saturating_sub(certs_before).max(1);
        let cpu_us = (cpu_after.saturating_sub(cpu_before)) as f64 / 1000.0 / report.done.max(1) as f64;
        println!("store             {}", path.display());
        println!(
            "certificates      {certs_before} before, {certs_after} after (issuer {})",
            work.issuer()
        );
        println!(
            "callers           {}, {} s, each issuance answered after its commit is durable",
            a.concurrency, a.duration
        );
        println!(
            "issuances         {} ({:.0}/s durable)",
            report.done,
            report.rate()
        );
        println!("errors            {}", report.errors);
        println!(
            "latency           p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (begin + complete)",
            ms(report.latency.p50),
            ms(report.latency.p99),
            ms(report.latency.max)
        );
        println!(
            "database thread   {cpu_us:.1} µs CPU per issuance ({:.2} s of CPU in {:.1} s)",
            (cpu_after.saturating_sub(cpu_before)) as f64 / 1e9,
            report.elapsed.as_secs_f64()
        );
        println!(
            "database size     {:.0} bytes per certificate added ({} bytes in all, {:.0} per certificate)",
            bytes_after.saturating_sub(bytes_before) as f64 / added as f64,
            bytes_after,
            bytes_after as f64 / certs_after.max(1) as f64
        );
        if let Some(e) = &report.first_error {
            println!("first error       {e}");
        }
        Ok(())
    })
}

/// What issuance asks of the store for one certificate: record it pending, then commit it
/// with its audit entry.
pub(crate) async fn issue_one(store: &SqliteStore, one: &Issuance) -> Result<(), String> {
    match store
        .begin_issuance(one.pending.clone())
        .await
        .map_err(|e| e.to_string())?
    {
        BeginOutcome::Started(_) => {}
        other => return Err(format!("begin_issuance: {other:?}")),
    }
    store
        .complete_issuance(
            &one.pending.serial,
            &one.cert_der,
            signet::clock::unix_now(),
            one.audit.clone(),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A thread of this process, found by name, whose CPU time can be read.
struct ThreadCpu {
    dir: PathBuf,
}

impl ThreadCpu {
    /// The newest thread of this process named `name`.
    fn find(name: &str) -> Result<ThreadCpu, String> {
        let mut found = None;
        for entry in std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc: {e}"))? {
            let dir = entry.map_err(|e| e.to_string())?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let tid: u64 = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if comm.trim_end() == name && found.as_ref().is_none_or(|(t, _)| tid > *t) {
                found = Some((tid, dir));
            }
        }
        found
            .map(|(_, dir)| ThreadCpu { dir })
            .ok_or_else(|| format!("no thread named {name} in this process"))
    }

    /// Nanoseconds of CPU the thread has used: the scheduler's own count
    /// (`schedstat`), or user + system time in clock ticks where that is missing.
    fn nanos(&self) -> Result<u64, String> {
        if let Ok(s) = std::fs::read_to_string(self.dir.join("schedstat"))
            && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok())
        {
            return Ok(ns);
        }
        let stat = std::fs::read_to_string(self.dir.join("stat")).map_err(|e| e.to_string())?;
        // The fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or("unreadable thread stat")?;
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        // Linux reports these in USER_HZ, 100 per second.
        Ok(ticks * 10_000_000)
    }
}

/// A fresh temporary directory for a throw-away database, on the same file system as the
/// working directory's `var/` (so the figures are those of the disk signet runs on).
fn scratch_dir() -> Result<PathBuf, String> {
    let base = std::env::current_dir()
        .map_err(|e| e.to_string())?
        .join("var")
        .join("bench");
    let dir = base.join(format!("store-{}-{}", std::process::id(), run_id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

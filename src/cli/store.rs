//! `signet store`: an online backup of the SQLite store, and a restore that checks the copy
//! (schema, audit chain) and raises the numbers relying parties have seen before it replaces
//! anything.

use std::path::PathBuf;

use clap::Subcommand;
use sha2::Digest;
use signet::audit::AuditEvent;
use signet::config::Config;
use signet::store::sqlite::backup;
use signet::store::{SqliteStore, Store};

use super::common::{describe, runtime};

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Write a consistent copy of the store to a new file while the daemon keeps serving
    /// (one read transaction: the copy is the store as of one commit).
    Backup {
        /// The file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace the store with a backup: the copy's schema is brought up to date, its audit
    /// chain must verify, every issuer's CRL number and the TSA's serial are raised above
    /// anything issued since the backup, and the restore is an audit entry. The store must
    /// not be in use (stop the daemon); the database it replaces is kept beside it.
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing store (kept as `<store>.replaced-<unix time>`).
        #[arg(long)]
        force: bool,
    },
}

/// `signet store ...`.
pub(crate) fn run(cfg: Config, cmd: StoreCommand) -> Result<(), String> {
    let db = cfg.store_path();
    match cmd {
        StoreCommand::Backup { out } => {
            let bytes = backup::backup(&db, &out).map_err(|e| e.to_string())?;
            println!(
                "backup of {} written to {} ({bytes} bytes)",
                db.display(),
                out.display()
            );
            Ok(())
        }
        StoreCommand::Restore { from, force } => restore(&db, &from, force),
    }
}

fn restore(db: &std::path::Path, from: &std::path::Path, force: bool) -> Result<(), String> {
    let digest = hex::encode(sha2::Sha256::digest(
        std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?,
    ));
    let _hold = backup::exclusive(db).map_err(|e| e.to_string())?;
    if db.exists() && !force {
        return Err(format!(
            "{} exists; give --force to replace it (it is kept beside the restored store)",
            db.display()
        ));
    }
    let mut work = db.as_os_str().to_owned();
    work.push(".restore-work");
    let work = PathBuf::from(work);
    backup::stage(from, &work).map_err(|e| e.to_string())?;
    let rt = runtime()?;
    // The copy's schema is brought up to date by opening it; its chain must verify.
    let report = {
        let store = SqliteStore::open(&work).map_err(|e| e.to_string())?;
        let found = rt
            .block_on(signet::ca::checkpoint::verify_log(&store))
            .map_err(describe)?;
        match found {
            Ok(r) => r,
            Err(b) => {
                return Err(format!(
                    "the backup's audit log does not verify: entry {}: {}; nothing was replaced",
                    b.seq, b.reason
                ));
            }
        }
    };
    let now = signet::clock::unix_now();
    let floors =
        backup::raise_floors(&work, now.saturating_mul(1000)).map_err(|e| e.to_string())?;
    {
        let store = SqliteStore::open(&work).map_err(|e| e.to_string())?;
        let detail = serde_json::json!({
            "backup": from.display().to_string(),
            "backup_sha256": digest,
            "entries_verified": report.entries,
            "crl_numbers": floors.crl_numbers.iter().map(|(i, n)| (i.clone(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "tsa_next_serial": floors.tsa_next_serial,
        });
        rt.block_on(store.append_audit(AuditEvent::daemon(
            "store.restored",
            &db.display().to_string(),
            detail,
        )))
        .map_err(|e| e.to_string())?;
    }
    let kept = backup::swap_in(&work, db, now).map_err(|e| e.to_string())?;
    println!(
        "restored {} from {} (sha256 {digest}): audit log of {} entries verified",
        db.display(),
        from.display(),
        report.entries
    );
    for (issuer, last) in &floors.crl_numbers {
        println!("  {issuer}: the next CRL is number {}", last + 1);
    }
    if let Some(s) = floors.tsa_next_serial {
        println!("  TSA: the next timestamp serial is {s}");
    }
    if let Some(k) = kept {
        println!("  the store it replaced is kept as {}", k.display());
    }
    println!(
        "  certificates issued after the backup are not in it: have the RA offices reconcile their requests since then (GetCertificate by request id)"
    );
    Ok(())
}

//! `signet audit`: verify the chain and its checkpoints, sign a checkpoint now, or write a
//! certificate's evidence bundle.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use signet::ca::{Authority, CaError};
use signet::config::Config;
use signet::store::SqliteStore;

use super::common::{describe, open_parts, runtime};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Walk the whole chain and every checkpoint: prints OK with the count and range, or the
    /// first entry where the chain breaks (and exits non-zero). Reads the store only.
    Verify,
    /// Append the usage counts and sign a checkpoint over the newest entry now, with the
    /// audit key in the HSM.
    Checkpoint,
    /// Write the evidence bundle of one certificate into a directory: request and approval,
    /// CSR, certificate and chain, audit entries up to a signed checkpoint, and README.txt
    /// with the OpenSSL commands that check each part.
    Evidence {
        /// The certificate's serial number (hex).
        #[arg(long)]
        serial: String,
        /// The directory to write (created; must not hold a bundle already).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `signet audit ...`.
pub(crate) fn run(cfg: Config, cmd: AuditCommand) -> Result<(), String> {
    if let AuditCommand::Verify = cmd {
        let store = SqliteStore::open(&cfg.store_path()).map_err(|e| e.to_string())?;
        let rt = runtime()?;
        let found = rt
            .block_on(signet::ca::checkpoint::verify_log(&store))
            .map_err(describe)?;
        return match found {
            Ok(r) => {
                println!(
                    "audit log OK: {} entries (1 to {}), {} checkpoints verified{}",
                    r.entries,
                    r.entries,
                    r.checkpoints,
                    match r.covered_to {
                        Some(s) if s == r.entries => ", the newest entry is covered".to_owned(),
                        Some(s) => format!(
                            ", entries 1 to {s} covered by a signed checkpoint, {} after it not yet",
                            r.entries - s
                        ),
                        None => ", no entry is covered by a signed checkpoint yet".to_owned(),
                    }
                );
                Ok(())
            }
            Err(b) => Err(format!("audit log BROKEN at entry {}: {}", b.seq, b.reason)),
        };
    }
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let authority =
            Arc::new(Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone()).await?);
        match cmd {
            AuditCommand::Verify => unreachable!("handled above"),
            AuditCommand::Checkpoint => {
                let cp = signet::ca::checkpoint::Checkpointer::open(&parts.cfg, authority)
                    .await?
                    .ok_or_else(|| {
                        CaError::FailedPrecondition(
                            "the configuration has no [audit] section".into(),
                        )
                    })?;
                Ok(match cp.checkpoint().await? {
                    Some(c) => format!("checkpoint signed over entry {} ({})", c.seq, c.hash),
                    None => "the newest entry is already covered by a checkpoint".to_owned(),
                })
            }
            AuditCommand::Evidence { serial, out } => {
                let b = signet::ca::evidence::write_bundle(&authority, &serial, &out).await?;
                Ok(format!(
                    "wrote {}: audit entries {} to {}, checkpoint over {}; see README.txt there",
                    b.dir.display(),
                    b.entries.0,
                    b.entries.1,
                    b.checkpoint_seq
                ))
            }
        }
    });
    parts.hsm.close();
    println!("{}", result.map_err(describe)?);
    Ok(())
}

//! `signet ceremony` and `signet check-config`: the key ceremony in the HSM and what a
//! configuration defines.

use signet::ca::ceremony;
use signet::config::Config;

use super::common::{Parts, open_parts, runtime};

/// `signet ceremony`: generate the configured keys and certify the hierarchy; with
/// `rotate`, give that issuing CA a new generation.
pub(crate) fn run(cfg: Config, rotate: Option<&str>) -> Result<(), String> {
    super::common::log_findings(&cfg)?;
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    match rotate {
        None => {
            hold_ceremony(&parts, &rt)?;
        }
        Some(family) => {
            let report = rt
                .block_on(ceremony::rotate(
                    &parts.cfg,
                    &parts.hsm,
                    &parts.store,
                    family,
                ))
                .map_err(|e| e.to_string())?;
            print_report(&report);
            eprintln!(
                "restart the daemon (or send it SIGTERM and start it again) for new certificates of {family} to come from the new generation"
            );
        }
    }
    parts.hsm.close();
    Ok(())
}

/// Run the ceremony with an open HSM and store, and print what it made and found.
pub(crate) fn hold_ceremony(
    parts: &Parts,
    rt: &tokio::runtime::Runtime,
) -> Result<ceremony::CeremonyReport, String> {
    let report = rt
        .block_on(ceremony::run(&parts.cfg, &parts.hsm, &parts.store))
        .map_err(|e| e.to_string())?;
    print_report(&report);
    Ok(report)
}

/// `signet check-config`: the issuers and profiles a loaded configuration defines, then a
/// warning per finding on standard error; with `production`, findings that block production
/// are errors and the command fails naming their keys.
pub(crate) fn check_config(cfg: &Config, production: bool) -> Result<(), String> {
    let specs = cfg.issuer_specs().map_err(|e| e.to_string())?;
    for s in specs {
        println!(
            "issuer {} ({} key {:?}, {}){}",
            s.name,
            s.key_type,
            s.key_label,
            s.signature,
            s.parent.map(|p| format!(" under {p}")).unwrap_or_default()
        );
    }
    for (name, p) in cfg.profiles().map_err(|e| e.to_string())? {
        println!(
            "profile {name}: {} by {} for {:?} years",
            p.kind,
            p.issuers.join(", "),
            p.validity_years
        );
    }
    let findings = cfg.findings().map_err(|e| e.to_string())?;
    let mut blocking = Vec::new();
    for f in &findings {
        if production && f.blocks_production {
            eprintln!("error: {}: {}", f.key, f.problem);
            blocking.push(f.key.as_str());
        } else {
            eprintln!("warning: {}: {}", f.key, f.problem);
        }
    }
    if !blocking.is_empty() {
        return Err(format!(
            "not fit for production: {} (see above)",
            blocking.join(", ")
        ));
    }
    Ok(())
}

/// What the ceremony made and found, on standard error.
pub(crate) fn print_report(r: &ceremony::CeremonyReport) {
    for n in &r.created {
        eprintln!("created issuer {n}");
    }
    for n in &r.existing {
        eprintln!("issuer {n} already exists; left untouched");
    }
    for f in &r.files {
        eprintln!("wrote {}", f.display());
    }
    for o in &r.responders {
        eprintln!("OCSP responder of {o}");
    }
}

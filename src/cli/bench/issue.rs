//! `signet bench --mode issue`: concurrent `Issue` calls over mutual-TLS gRPC beside the
//! issuer key's raw rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use signet::api::client::{ClientSettings, connect, describe_status};
use signet::api::pb::certificate_authority_client::CertificateAuthorityClient;
use signet::config::Config;

use super::args::BenchArgs;
use super::common::{
    Errors, Key, Report, issue_request, issuer_spec, measure, print_figures, run_id,
};
use super::raw::p256_csrs;

/// Issue mode: raw rate of the issuer key, issuance load, raw rate again.
pub(crate) fn run(cfg: Config, client: ClientSettings, a: &BenchArgs) -> Result<(), String> {
    let spec = issuer_spec(&cfg, a)?;
    let agreement = cfg.ca.agreement_version.clone();
    let key = Key {
        label: spec.key_label.clone(),
        signature: spec.signature,
    };
    let m = measure(&cfg, &key, a, || load(&client, a, &agreement))?;
    println!(
        "issuer            {} ({}, {})",
        a.issuer, spec.key_type, spec.signature
    );
    println!(
        "callers           {} over {} connections, {} s",
        a.concurrency, a.connections, a.duration
    );
    print_figures("issued", &m);
    Ok(())
}

async fn load(client: &ClientSettings, a: &BenchArgs, agreement: &str) -> Result<Report, String> {
    let csrs = Arc::new(p256_csrs(64)?);
    let mut clients = Vec::new();
    for _ in 0..a.connections.max(1) {
        let ch = connect(client).await.map_err(|e| e.to_string())?;
        clients.push(CertificateAuthorityClient::new(ch));
    }
    // Request ids unique to this run, so a second run issues anew.
    let run_id = run_id();
    let errors = Errors::default();
    let duration = Duration::from_secs(a.duration.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let mut c = clients[w % clients.len()].clone();
        let csrs = csrs.clone();
        let errors = errors.clone();
        let (issuer, profile, agreement) =
            (a.issuer.clone(), a.profile.clone(), agreement.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = 0usize;
            while start.elapsed() < duration {
                let req = issue_request(
                    &format!("bench-{run_id}-{w}-{i}"),
                    &profile,
                    &issuer,
                    csrs[(w + i) % csrs.len()].clone(),
                    &format!("bench-{w}-{i}.example.cn"),
                    &agreement,
                );
                let t = Instant::now();
                match c.issue(req).await {
                    Ok(_) => samples.push(t.elapsed()),
                    Err(status) => errors.record(describe_status(&status)),
                }
                i += 1;
            }
            samples
        }));
    }
    errors.report(tasks, start).await
}

//! `signet bench --mode hsm`: the HSM's direct signing rate and signet's HSM layer alone, for
//! the issuer key, with no daemon, X.509 or database work: what the layer itself costs.

use signet::config::Config;

use super::args::BenchArgs;
use super::common::{Key, issuer_spec, measure, print_raw};

/// HSM mode: direct rate, layer rate, direct and layer again (the load in between is empty).
pub(crate) fn run(cfg: Config, a: &BenchArgs) -> Result<(), String> {
    let spec = issuer_spec(&cfg, a)?;
    let key = Key {
        label: spec.key_label.clone(),
        signature: spec.signature,
    };
    let m = measure(&cfg, &key, a, || async { Ok::<(), String>(()) })?;
    println!(
        "issuer            {} ({}, {})",
        a.issuer, spec.key_type, spec.signature
    );
    print_raw(&m);
    Ok(())
}

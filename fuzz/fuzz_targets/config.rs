//! The configuration loader: TOML text to a checked `Config`, without touching the HSM, the
//! environment or any file. The daemon trusts what loading accepted, so a configuration
//! that loads must give every derived setting without error (the hierarchy, profiles, the
//! TSA and audit keys, the token selector, the policy OIDs, the exponent rule), and load the
//! same way twice.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use signet::config::Config;

const BASE: &str = "/nonexistent/signet-fuzz/etc";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new(BASE);
    let Ok(cfg) = Config::from_toml(text, base) else {
        return;
    };
    let again = Config::from_toml(text, base).expect("a configuration loads the same way twice");
    assert_eq!(format!("{again:?}"), format!("{cfg:?}"));
    let specs = cfg.issuer_specs().expect("accepted issuers check");
    assert_eq!(specs.len(), cfg.issuers.len());
    let profiles = cfg.profiles().expect("accepted profiles check");
    assert_eq!(profiles.len(), cfg.profiles.len());
    cfg.tsa_key().expect("an accepted [tsa] key checks");
    cfg.audit_key().expect("an accepted [audit] key checks");
    cfg.token_selector()
        .expect("an accepted [hsm] names its token");
    cfg.ca.oids().expect("accepted OIDs derive");
    cfg.ca
        .rsa_exponent_rule()
        .expect("an accepted exponent rule reads");
    for p in [cfg.store_path(), cfg.output_dir()] {
        assert!(p.is_absolute(), "{} is not resolved", p.display());
    }
    assert!(!cfg.public_base_url().ends_with('/'));
});

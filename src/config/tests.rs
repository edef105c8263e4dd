//! Whole-configuration tests: a sample file, loaded with one mistake at a time, must fail with
//! the key that holds the mistake.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::load::Config;
use crate::pki::{KeyType, SignatureAlgorithm};

const GOOD: &str = r#"
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "signet-ca"
pin_env = "SIGNET_HSM_PIN"

[store]
sqlite = "signet.db"

[ca]
public_base_url = "http://127.0.0.1:8080/"
agreement_version = "2026-01"
output_dir = "ca"
oid_arc = "1.3.6.1.4.1.99999"

[[issuer]]
name = "root"
key_label = "root-key"
key_type = "p384"
subject = { C = "CN", O = "Signet", CN = "Signet Root" }
validity_years = 20
path_len = 1

[[issuer]]
name = "issuing-ec"
parent = "root"
key_label = "ec-key"
key_type = "p256"
subject = { CN = "Signet EC CA" }
validity_years = 10
path_len = 0

[profiles.server]
kind = "server"
issuers = ["issuing-ec"]
policy_oid = "1.3.6.1.4.1.99999.1.4"
liability = "100,000 CNY"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("/etc/signet"))
}

#[test]
fn good_config_loads_with_defaults() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.hsm.pool_size, 2);
    assert_eq!(c.public_base_url(), "http://127.0.0.1:8080");
    assert_eq!(c.store_path(), PathBuf::from("/etc/signet/signet.db"));
    let p = &c.profiles().unwrap()["server"];
    assert_eq!(p.validity_years, vec![1, 2]);
    let specs = c.issuer_specs().unwrap();
    assert_eq!(specs[0].name, "root");
    assert_eq!(specs[1].signature, SignatureAlgorithm::EcdsaSha256);
}

fn err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

const TSA: &str = r#"
[tsa]
issuer = "issuing-ec"
key_label = "tsa-key"
key_type = "p256"
subject = { CN = "Signet TSA" }
policy_oid = "1.3.6.1.4.1.99999.2.1"

[audit]
issuer = "issuing-ec"
key_label = "audit-key"
subject = { CN = "Signet Audit" }
"#;

#[test]
fn tsa_and_audit_settings_default_and_are_checked_by_key() {
    let c = load(&format!("{GOOD}{TSA}")).unwrap();
    let t = c.tsa.as_ref().unwrap();
    assert_eq!(
        (
            t.accuracy_seconds,
            t.accuracy_millis,
            t.validity_years,
            t.time_window_seconds
        ),
        (1, 0, 2, 10)
    );
    assert_eq!(c.audit.as_ref().unwrap().checkpoint_interval_seconds, 3600);
    assert_eq!(c.audit_key().unwrap().unwrap().key_type, KeyType::P256);
    for (from, to, key) in [
        (
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"",
            "policy_oid = \"tsa\"",
            "tsa.policy_oid:",
        ),
        (
            "issuer = \"issuing-ec\"\nkey_label = \"tsa-key\"",
            "issuer = \"root\"\nkey_label = \"tsa-key\"",
            "tsa.issuer:",
        ),
        (
            "key_label = \"tsa-key\"",
            "key_label = \"ec-key\"",
            "tsa.key_label:",
        ),
        (
            "key_type = \"p256\"",
            "key_type = \"ed25519\"",
            "tsa.key_type:",
        ),
        (
            "subject = { CN = \"Signet TSA\" }",
            "subject = { O = \"Signet\" }",
            "tsa.subject:",
        ),
        (
            "key_label = \"audit-key\"",
            "key_label = \"tsa-key\"",
            "audit.key_label:",
        ),
        (
            "key_label = \"audit-key\"",
            "key_label = \"audit-key\"\nkey_type = \"rsa2048\"",
            "audit.key_type:",
        ),
        (
            "key_label = \"audit-key\"",
            "key_label = \"audit-key\"\ncheckpoint_interval_seconds = 1",
            "audit.checkpoint_interval_seconds:",
        ),
        (
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"",
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"\naccuracy_millis = 1000",
            "tsa.accuracy_millis:",
        ),
        (
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"",
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"\naccuracy_seconds = 0",
            "tsa.accuracy_seconds:",
        ),
        (
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"",
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"\ntime_window_seconds = 0",
            "tsa.time_window_seconds:",
        ),
        (
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"",
            "policy_oid = \"1.3.6.1.4.1.99999.2.1\"\ntime_window_seconds = 301",
            "tsa.time_window_seconds:",
        ),
    ] {
        let text = format!("{GOOD}{}", TSA.replacen(from, to, 1));
        let e = err(&text);
        assert!(e.starts_with(key), "{key}: {e}");
    }
}

#[test]
fn http_and_crl_settings_default_and_are_checked_by_key() {
    let c = load(GOOD).unwrap();
    assert!(c.http.is_none());
    assert_eq!(
        (
            c.crl.lag_seconds,
            c.crl.interval_seconds,
            c.crl.next_update_hours
        ),
        (60, 21_600, 24)
    );
    let c = load(&format!(
        "{GOOD}\n[http]\nlisten = \"127.0.0.1:8080\"\n[crl]\nlag_seconds = 1\n"
    ))
    .unwrap();
    assert_eq!(c.http.map(|h| h.listen.port()), Some(8080));
    let e = err(&format!("{GOOD}\n[ocsp]\nvalidity_minutes = 0\n"));
    assert!(e.starts_with("ocsp.validity_minutes:"), "{e}");
    let e = err(&format!("{GOOD}\n[ocsp]\nresponder_validity_days = 91\n"));
    assert!(e.starts_with("ocsp.responder_validity_days:"), "{e}");
    let e = err(&format!(
        "{GOOD}\n[ocsp]\nresponder_validity_days = 1\nvalidity_minutes = 1440\n"
    ));
    assert!(e.contains("must outlast ocsp.validity_minutes"), "{e}");
    let e = err(&format!("{GOOD}\n[ocsp]\nsigner = \"root\"\n"));
    assert!(e.contains("signer"), "{e}");
    let e = err(&format!("{GOOD}\n[crl]\nnext_update_hours = 25\n"));
    assert!(e.starts_with("crl.next_update_hours:"), "{e}");
    let e = err(&format!("{GOOD}\n[crl]\ninterval_seconds = 86400\n"));
    assert!(e.starts_with("crl.interval_seconds:"), "{e}");
    let e = err(&format!("{GOOD}\n[crl]\nlag_seconds = 0\n"));
    assert!(e.starts_with("crl.lag_seconds:"), "{e}");
    let e = err(&format!("{GOOD}\n[http]\nlisten = \"nowhere\"\n"));
    assert!(e.contains("listen"), "{e}");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let e = err(&GOOD
        .replace("pool_size", "x")
        .replace("[store]", "[store]\nsqllite = 1"));
    assert!(e.contains("sqllite"), "{e}");
}

#[test]
fn errors_name_the_key() {
    let e = err(&GOOD.replace(
        r#"policy_oid = "1.3.6.1.4.1.99999.1.4""#,
        r#"policy_oid = "x.1"
validity_years = [3]"#,
    ));
    assert!(e.starts_with("profiles.server.validity_years"), "{e}");
    let e = err(&GOOD.replace(r#"issuers = ["issuing-ec"]"#, r#"issuers = ["nope"]"#));
    assert!(e.starts_with("profiles.server.issuers"), "{e}");
    let e = err(&GOOD.replace(r#"parent = "root""#, r#"parent = "toor""#));
    assert!(e.starts_with("issuer[1].parent"), "{e}");
    let e = err(&GOOD.replace(r#"pin_env = "SIGNET_HSM_PIN""#, ""));
    assert!(e.contains("pin_file, pin_env"), "{e}");
    let e = err(&GOOD.replace(
        r#"key_type = "p256""#,
        r#"key_type = "p256"
signature = "rsa-pss-sha256""#,
    ));
    assert!(e.starts_with("issuer[1].signature"), "{e}");
    let e = err(&GOOD.replace("http://127.0.0.1:8080/", "ftp://x"));
    assert!(e.starts_with("ca.public_base_url"), "{e}");
    let e = err(&GOOD.replace(r#"issuers = ["issuing-ec"]"#, r#"issuers = ["root"]"#));
    assert!(e.contains("root"), "{e}");
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let c = Config::from_toml(GOOD, Path::new("hsm-config")).unwrap();
    assert_eq!(
        c.resolve(Path::new("../var/signet.db")),
        PathBuf::from("var/signet.db")
    );
    assert_eq!(c.resolve(Path::new("./x")), PathBuf::from("hsm-config/x"));
}

#[test]
fn shipped_configurations_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hsm-config");
    for f in ["softhsm.toml", "production.toml"] {
        let c = Config::load(&dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(c.profiles().unwrap().len(), 6, "{f}");
        assert_eq!(c.issuer_specs().unwrap().len(), 4, "{f}");
    }
}

#[test]
fn token_section_mistakes_name_their_key() {
    let token = |tries: &str, issuer: &str| {
        format!(
            "{GOOD}\n[token]\nactor = \"ws-1\"\nmodules = [{{ path = \"/usr/lib/x.so\" }}]\nmax_pin_tries = {tries}\n\n[token.issuer]\n{issuer}\n"
        )
    };
    assert!(Config::from_toml(&token("5", "kind = \"in-process\""), Path::new(".")).is_ok());
    let e = err(&token("0", "kind = \"in-process\""));
    assert!(e.contains("token.max_pin_tries"), "{e}");
    let e = err(&token("5", "kind = \"cloud\""));
    assert!(e.contains("token.issuer.kind"), "{e}");
    let e = err(&token("5", "kind = \"remote\""));
    assert!(e.contains("token.issuer.endpoint"), "{e}");
    let e = err(&token("5", "kind = \"in-process\"\npin = \"1234\""));
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn a_pin_written_inline_is_not_a_key() {
    let e = err(&GOOD.replace(r#"pin_env = "SIGNET_HSM_PIN""#, r#"pin = "1234""#));
    assert!(e.contains("unknown field") && e.contains("pin"), "{e}");
}

#[test]
fn hsm_call_timeout_defaults_and_is_checked_by_key() {
    assert_eq!(load(GOOD).unwrap().hsm.call_timeout_ms, 10_000);
    for bad in ["0", "99", "600001"] {
        let e = err(&GOOD.replace("[store]", &format!("call_timeout_ms = {bad}\n\n[store]")));
        assert!(e.starts_with("hsm.call_timeout_ms"), "{e}");
    }
}

#[test]
fn shutdown_grace_defaults_and_is_checked_by_key() {
    const API: &str = r#"
[[issuer]]
name = "issuing-tls"
parent = "root"
key_label = "tls-key"
key_type = "p256"
subject = { CN = "Signet TLS CA" }
validity_years = 10
path_len = 0

[api]
listen = "127.0.0.1:8443"
server_cert = "tls/server.pem"
server_key = "tls/server.key"
server_names = ["127.0.0.1"]
tls_issuer = "issuing-tls"
client_ca = ["ca/issuing-tls.pem"]
"#;
    let c = load(&format!("{GOOD}{API}")).unwrap();
    assert_eq!(c.api.as_ref().unwrap().shutdown_grace_seconds, 30);
    for bad in ["0", "3601"] {
        let e = err(&format!("{GOOD}{API}shutdown_grace_seconds = {bad}\n"));
        assert!(e.starts_with("api.shutdown_grace_seconds"), "{e}");
    }
}

#[test]
fn rsa_exponent_and_wildcards_default_and_are_checked_by_key() {
    use crate::pki::verify::RsaExponent;
    let c = load(GOOD).unwrap();
    assert_eq!(c.ca.rsa_exponent_rule().unwrap(), RsaExponent::F4);
    assert!(c.profiles().unwrap()["server"].allow_wildcards);
    let odd = GOOD.replace(
        "output_dir = \"ca\"",
        "output_dir = \"ca\"\nrsa_exponent = \"odd-at-least-65537\"",
    );
    let c = load(&odd).unwrap();
    assert_eq!(
        c.ca.rsa_exponent_rule().unwrap(),
        RsaExponent::OddAtLeast65537
    );
    let e = err(&GOOD.replace(
        "output_dir = \"ca\"",
        "output_dir = \"ca\"\nrsa_exponent = \"3\"",
    ));
    assert!(e.starts_with("ca.rsa_exponent:"), "{e}");
    let off = GOOD.replace(
        "liability = \"100,000 CNY\"",
        "liability = \"100,000 CNY\"\nallow_wildcards = false",
    );
    assert!(!load(&off).unwrap().profiles().unwrap()["server"].allow_wildcards);
    let personal = format!(
        "{GOOD}\n[profiles.personal]\nkind = \"personal\"\nissuers = [\"issuing-ec\"]\npolicy_oid = \"1.3.6.1.4.1.99999.1.1\"\nallow_wildcards = true\n"
    );
    let e = err(&personal);
    assert!(e.starts_with("profiles.personal.allow_wildcards:"), "{e}");
}

#[test]
fn oids_derive_from_the_cas_arc_and_example_arcs_are_found_by_key() {
    use crate::pki::{EmailProtection, OrgIdForm, ProfileKind};
    let own = GOOD
        .replace(
            "oid_arc = \"1.3.6.1.4.1.99999\"",
            "oid_arc = \"1.3.6.1.4.1.61234\"",
        )
        .replace("policy_oid = \"1.3.6.1.4.1.99999.1.4\"\n", "");
    let with_tsa = format!(
        "{own}{}",
        TSA.replace("policy_oid = \"1.3.6.1.4.1.99999.2.1\"\n", "")
    );
    let c = load(&with_tsa).unwrap();
    let oids = c.ca.oids().unwrap();
    let p = &c.profiles().unwrap()["server"];
    assert_eq!(p.policy_oid.to_string(), "1.3.6.1.4.1.61234.1.4");
    assert_eq!(
        c.tsa.as_ref().unwrap().policy(&oids).unwrap().to_string(),
        "1.3.6.1.4.1.61234.2.1"
    );
    assert_eq!(oids.service_policy().to_string(), "1.3.6.1.4.1.61234.3.1");
    assert_eq!(
        oids.audit_key_purpose().to_string(),
        "1.3.6.1.4.1.61234.3.2"
    );
    // Defaults of the new profile keys.
    assert!(p.cabf);
    assert_eq!(p.org_id_form, OrgIdForm::Ntr);
    assert_eq!(p.email_protection, EmailProtection::IfEmailSan);
    assert_eq!(p.key_types, ProfileKind::Server.default_key_types());
    assert!(
        c.findings().unwrap().iter().all(|f| !f.blocks_production),
        "{:?}",
        c.findings()
    );

    // The example arc, and explicit OIDs under it, are findings that block production.
    let c = load(&format!("{GOOD}{TSA}")).unwrap();
    let keys: Vec<(String, bool)> = c
        .findings()
        .unwrap()
        .into_iter()
        .map(|f| (f.key, f.blocks_production))
        .collect();
    for key in ["ca.oid_arc", "tsa.policy_oid", "profiles.server.policy_oid"] {
        assert!(keys.contains(&(key.to_owned(), true)), "{key}: {keys:?}");
    }

    // A missing arc, anyPolicy and the CA/B arc are refused by key.
    let e = err(&GOOD.replace("oid_arc = \"1.3.6.1.4.1.99999\"\n", ""));
    assert!(e.starts_with("ca.oid_arc: missing"), "{e}");
    let e = err(&GOOD.replace(
        "policy_oid = \"1.3.6.1.4.1.99999.1.4\"",
        "policy_oid = \"2.5.29.32.0\"",
    ));
    assert!(
        e.starts_with("profiles.server.policy_oid: anyPolicy"),
        "{e}"
    );
    let e = err(&GOOD.replace(
        "policy_oid = \"1.3.6.1.4.1.99999.1.4\"",
        "policy_oid = \"2.23.140.1.2.1\"",
    ));
    assert!(
        e.starts_with("profiles.server.policy_oid:") && e.contains("CA/Browser Forum"),
        "{e}"
    );
}

#[test]
fn new_profile_keys_are_checked_by_key() {
    let profile =
        |body: &str| format!("{GOOD}\n[profiles.p]\nissuers = [\"issuing-ec\"]\n{body}\n");
    // signet's own kinds are the ceremony's.
    let e = err(&profile("kind = \"audit_signing\""));
    assert!(e.starts_with("profiles.p.kind:"), "{e}");
    let e = err(&profile(
        "kind = \"server\"\nemail_protection = \"require-email-san\"",
    ));
    assert!(e.starts_with("profiles.p.email_protection:"), "{e}");
    let e = err(&profile("kind = \"device\"\ncabf_requirements = true"));
    assert!(e.starts_with("profiles.p.cabf_requirements:"), "{e}");
    let e = err(&profile("kind = \"organization\"\norg_id_form = \"bare\""));
    assert!(e.starts_with("profiles.p.org_id_form:"), "{e}");
    let c = load(&profile(
        "kind = \"organization\"\norg_id_form = \"serial-number\"\ncabf_requirements = false\nemail_protection = \"require-email-san\"",
    ))
    .unwrap();
    let p = &c.profiles().unwrap()["p"];
    assert!(!p.cabf);
    assert_eq!(p.org_id_form, crate::pki::OrgIdForm::SerialNumber);
    // Ed25519 where it is enabled: a warning naming the profile's key_types.
    let c = load(&profile(
        "kind = \"personal\"\nkey_types = [\"p256\", \"ed25519\"]",
    ))
    .unwrap();
    let f = c.findings().unwrap();
    let ed = f
        .iter()
        .find(|f| f.key == "profiles.p.key_types")
        .unwrap_or_else(|| panic!("{f:?}"));
    assert!(
        !ed.blocks_production && ed.problem.contains("NSS"),
        "{ed:?}"
    );
}

#[test]
fn sm2_keys_need_the_modules_sm2_numbers_which_are_vendor_defined() {
    let sm2_issuer = GOOD.replacen(r#"key_type = "p256""#, r#"key_type = "sm2""#, 1);
    let e = err(&sm2_issuer);
    assert!(
        e.contains("key_type") && e.contains("sm2_mechanisms"),
        "{e}"
    );
    let with = |table: &str| {
        sm2_issuer.replace(
            r#"pin_env = "SIGNET_HSM_PIN""#,
            &format!("pin_env = \"SIGNET_HSM_PIN\"\nsm2_mechanisms = {table}"),
        )
    };
    let c = Config::from_toml(&with(r#""tass""#), Path::new(".")).unwrap();
    let sm2 = c.hsm_sm2().unwrap().unwrap();
    assert_eq!(sm2.mechanisms.keygen, 0x8000_8001);
    assert_eq!(sm2.id, crate::hsm::sm2::DEFAULT_ID);
    let e = err(&with(r#""acme""#));
    assert!(
        e.starts_with("hsm.sm2_mechanisms") && e.contains("tass"),
        "{e}"
    );
    let e = err(&with(
        "{ key_type = 0x80000004, keygen = 0x1040, sign = 0x80008100 }",
    ));
    assert!(
        e.starts_with("hsm.sm2_mechanisms.keygen") && e.contains("vendor-defined"),
        "{e}"
    );
    let e = err(&with(
        "{ key_type = 0x80000004, keygen = 0x80008001, z = \"host\" }",
    ));
    assert!(e.starts_with("hsm.sm2_mechanisms.digest_sign"), "{e}");
    let c = Config::from_toml(
        &with("{ key_type = 0x80000004, keygen = 0x80008001, digest_sign = 0x80008000, signature = \"der\" }"),
        Path::new("."),
    )
    .unwrap();
    let m = c.hsm_sm2().unwrap().unwrap().mechanisms;
    assert_eq!(m.z, crate::hsm::sm2::ZComputed::Host);
    assert_eq!(m.signature, crate::hsm::sm2::SignatureFormat::Der);
}

//! `signet bench --prefill` and `--mode store` as an operator runs them: a store grown to N
//! certificates through the real CLI holds exactly N, one in ten of the added ones revoked,
//! keeps no TBS beside a signed certificate, verifies with `signet audit verify`, and its
//! issuer's next CRL lists every revocation.

mod common;

use common::ca::*;

#[test]
fn prefill_grows_the_store_to_n_with_a_tenth_revoked_an_audit_chain_that_verifies_and_a_crl_listing_them()
 {
    let (_softhsm, _dir, config, cfg) = TestCa::prepare();
    let o = signet_with(&config, &["ceremony"]);
    assert!(o.status.success(), "{}", output_text(&o));
    // The ceremony's own certificates (the daemon's TLS, the RA office's) are there already.
    let before: i64 = rusqlite::Connection::open(cfg.store_path())
        .unwrap()
        .query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))
        .unwrap();
    let target = (before + 230).to_string();
    let o = signet_with(
        &config,
        &[
            "bench",
            "--prefill",
            &target,
            "--issuer",
            "issuing-ec",
            "--concurrency",
            "8",
        ],
    );
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("added 230 certificates (23 revoked)"),
        "{}",
        output_text(&o)
    );
    // Growing to what it holds already adds nothing.
    let o = signet_with(&config, &["bench", "--prefill", &target]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("nothing to add"),
        "{}",
        output_text(&o)
    );

    let db = rusqlite::Connection::open(cfg.store_path()).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM certificates WHERE ra = 'bench' AND issuer = 'issuing-ec'"),
        230
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM certificates WHERE ra = 'bench' AND status = 'revoked'"),
        23
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM certificates WHERE status <> 'pending' AND length(tbs_der) > 0"
        ),
        0,
        "a signed certificate keeps no TBS beside it"
    );
    // Each certificate is a real-sized DER certificate carrying its own serial.
    let (serial, der): (String, Vec<u8>) = db
        .query_row(
            "SELECT serial, cert_der FROM certificates WHERE ra = 'bench' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(der.len() > 600, "{} bytes", der.len());
    let cert = <x509_cert::Certificate as der::Decode>::from_der(&der).unwrap();
    assert_eq!(
        hex::encode(cert.tbs_certificate().serial_number().as_bytes()),
        serial
    );
    drop(db);

    let o = signet_with(&config, &["audit", "verify"]);
    assert!(
        o.status.success() && output_text(&o).contains("audit log OK"),
        "{}",
        output_text(&o)
    );
    let o = signet_with(&config, &["crl", "--issuer", "issuing-ec"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("23 entries"),
        "{}",
        output_text(&o)
    );
}

#[test]
fn store_bench_reports_durable_issuances_database_cpu_and_bytes_per_certificate() {
    let (_softhsm, dir, config, _cfg) = TestCa::prepare();
    let db = dir.join("bench.sqlite");
    let o = signet_with(
        &config,
        &[
            "bench",
            "--mode",
            "store",
            "--duration",
            "1",
            "--concurrency",
            "4",
            "--db",
            db.to_str().unwrap(),
        ],
    );
    let out = output_text(&o);
    assert!(o.status.success(), "{out}");
    for line in [
        "/s durable",
        "errors            0",
        "µs CPU per issuance",
        "bytes per certificate added",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    // The issuances are in the database, committed, with their audit entries.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (valid, audited): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM certificates WHERE status = 'valid'), \
             (SELECT COUNT(*) FROM audit_log WHERE action = 'certificate.issued')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(valid > 10, "{valid}");
    assert_eq!(valid, audited);
}

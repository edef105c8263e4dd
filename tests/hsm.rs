//! Integration tests of `signet::hsm` against real SoftHSM2 and kryoptic tokens, with
//! `openssl` and `pkcs11-tool` as the independent checkers, and `p11-kit server` as a device
//! that can be pulled and put back.

mod common;

use std::time::{Duration, Instant};

use common::{ModuleKind, P11KitServer, SoftHsm, openssl_verifies, run_ok};
use sha1::Digest;
use signet::hsm::{Hsm, HsmError, TokenSelector};
use signet::pki::{KeyType, SignatureAlgorithm};
use signet::secret::Secret;

const LABEL: &str = "signet-ca";
const SO_PIN: &str = "12345678";
const PIN: &str = "87654321";

fn softhsm(kind: ModuleKind) -> SoftHsm {
    common::trace();
    SoftHsm::new_on(kind, &[(LABEL, SO_PIN, PIN)])
}

fn open(hsm: &SoftHsm) -> Hsm {
    Hsm::open(hsm.settings(LABEL, PIN)).expect("open the HSM")
}

/// pkcs11-tool's name for Ed25519 key generation: a module without it (kryoptic built
/// without EdDSA) is tested on the other key types.
const EDDSA_KEYGEN: &str = "EC-EDWARDS-KEY-PAIR-GEN";

const MESSAGE: &[u8] = b"tbsCertificate stand-in: \xe5\xae\x81\xe6\xb4\xa5 CA test message";

/// Sign MESSAGE with the key `label` under `alg` and check that openssl verifies the
/// signature against `spki`; `what` says which call failed.
async fn assert_signs_verifiably(
    soft: &SoftHsm,
    hsm: &Hsm,
    label: &str,
    spki: &spki::SubjectPublicKeyInfoOwned,
    alg: SignatureAlgorithm,
    what: &str,
) {
    let sig = hsm
        .sign(label, alg, MESSAGE)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        openssl_verifies(soft.dir.path(), spki, alg, MESSAGE, &sig),
        "{what}: openssl rejects the {alg} signature"
    );
}

async fn every_algorithm_signs_what_openssl_verifies(kind: ModuleKind) {
    let soft = softhsm(kind);
    let hsm = open(&soft);
    let eddsa = soft.has_mechanism(LABEL, EDDSA_KEYGEN);
    let mut cases = vec![
        (KeyType::Rsa2048, SignatureAlgorithm::RsaPkcs1Sha256),
        (KeyType::Rsa2048, SignatureAlgorithm::RsaPkcs1Sha384),
        (KeyType::Rsa2048, SignatureAlgorithm::RsaPssSha256),
        (KeyType::Rsa2048, SignatureAlgorithm::RsaPssSha384),
        (KeyType::P256, SignatureAlgorithm::EcdsaSha256),
        (KeyType::P384, SignatureAlgorithm::EcdsaSha384),
    ];
    let mut key_types = vec![KeyType::Rsa2048, KeyType::P256, KeyType::P384];
    if eddsa {
        cases.push((KeyType::Ed25519, SignatureAlgorithm::Ed25519));
        key_types.push(KeyType::Ed25519);
    }
    for key_type in key_types {
        let generated = hsm.generate_key(key_type.name(), key_type).await.unwrap();
        assert_eq!(hsm.public_key(key_type.name()).await.unwrap(), generated);
    }
    for (key_type, alg) in cases {
        let spki = hsm.public_key(key_type.name()).await.unwrap();
        let sig = hsm.sign(key_type.name(), alg, MESSAGE).await.unwrap();
        assert!(
            openssl_verifies(soft.dir.path(), &spki, alg, MESSAGE, &sig),
            "openssl rejects the {alg} signature"
        );
        // The check has teeth: a different message must not verify.
        assert!(
            !openssl_verifies(soft.dir.path(), &spki, alg, b"another message", &sig),
            "openssl accepts the {alg} signature over the wrong message"
        );
    }
    hsm.close();
}

/// pkcs11-tool's description of one object: its header line and attribute lines.
fn object_block(listing: &str, kind: &str, label: &str) -> Vec<String> {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in listing.lines() {
        if !line.starts_with(' ') && !line.starts_with('\t') {
            blocks.push(vec![line.to_owned()]);
        } else if let Some(b) = blocks.last_mut() {
            b.push(line.trim().to_owned());
        }
    }
    blocks
        .into_iter()
        .find(|b| {
            b[0].starts_with(kind)
                && b.iter()
                    .any(|l| l.strip_prefix("label:").map(str::trim) == Some(label))
        })
        .unwrap_or_else(|| panic!("no {kind} labelled {label} in:\n{listing}"))
}

fn field<'a>(block: &'a [String], name: &str) -> &'a str {
    block
        .iter()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {block:?}"))
}

async fn generated_keys_are_sensitive_sign_only_and_linked_by_sha1_id(kind: ModuleKind) {
    let soft = softhsm(kind);
    let hsm = open(&soft);
    let mut ids = Vec::new();
    let mut key_types = vec![KeyType::Rsa2048, KeyType::P256];
    if soft.has_mechanism(LABEL, EDDSA_KEYGEN) {
        key_types.push(KeyType::Ed25519);
    }
    for key_type in key_types {
        let spki = hsm.generate_key(key_type.name(), key_type).await.unwrap();
        ids.push((
            key_type.name(),
            hex::encode(sha1::Sha1::digest(spki.subject_public_key.raw_bytes())),
        ));
    }
    hsm.close();

    let out = run_ok(
        soft.pkcs11_tool(LABEL)
            .args(["--login", "--pin", PIN, "--list-objects"]),
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    for (label, id) in ids {
        let private = object_block(&listing, "Private Key Object", label);
        assert_eq!(field(&private, "Usage:"), "sign", "{private:?}");
        assert_eq!(
            field(&private, "Access:"),
            "sensitive, always sensitive, never extractable, local",
            "{private:?}"
        );
        assert_eq!(field(&private, "ID:"), id, "{private:?}");
        let public = object_block(&listing, "Public Key Object", label);
        assert_eq!(field(&public, "Usage:"), "verify", "{public:?}");
        assert_eq!(field(&public, "ID:"), id, "{public:?}");
    }
}

async fn generate_key_refuses_a_label_already_in_use(kind: ModuleKind) {
    let soft = softhsm(kind);
    let hsm = open(&soft);
    assert!(!hsm.key_exists("ca-2026").await.unwrap());
    hsm.generate_key("ca-2026", KeyType::P256).await.unwrap();
    assert!(hsm.key_exists("ca-2026").await.unwrap());
    let err = hsm
        .generate_key("ca-2026", KeyType::P384)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HsmError::KeyExists { label } if label == "ca-2026"),
        "{err}"
    );
    // The refused call left the original key alone.
    let spki = hsm.public_key("ca-2026").await.unwrap();
    let alg = SignatureAlgorithm::EcdsaSha256;
    assert_signs_verifiably(&soft, &hsm, "ca-2026", &spki, alg, "the original key").await;
}

async fn token_selected_by_serial_or_uri_finds_the_same_key(kind: ModuleKind) {
    common::trace();
    let soft = SoftHsm::new_on(kind, &[("other-token", SO_PIN, PIN), (LABEL, SO_PIN, PIN)]);
    let by_label = open(&soft);
    let spki = by_label.generate_key("ca", KeyType::P256).await.unwrap();

    let serial = soft.token_serial(LABEL);
    let mut settings = soft.settings(LABEL, PIN);
    settings.token = TokenSelector::parse_uri(&format!("pkcs11:serial={serial}")).unwrap();
    assert_eq!(settings.token, TokenSelector::Serial(serial));
    // A second Hsm on the same module shares its context (one per module per process).
    let by_serial = Hsm::open(settings).expect("open by serial");
    assert_eq!(by_serial.public_key("ca").await.unwrap(), spki);
    assert!(by_serial.key_exists("ca").await.unwrap());

    let mut settings = soft.settings(LABEL, PIN);
    settings.token = TokenSelector::parse_uri("pkcs11:token=signet%2Dca;object=ca").unwrap();
    let by_uri = Hsm::open(settings).expect("open by URI");
    assert_eq!(by_uri.public_key("ca").await.unwrap(), spki);

    // Closing one leaves the others working.
    by_serial.close();
    by_uri
        .sign("ca", SignatureAlgorithm::EcdsaSha256, MESSAGE)
        .await
        .unwrap();
    by_label
        .sign("ca", SignatureAlgorithm::EcdsaSha256, MESSAGE)
        .await
        .unwrap();
    assert!(matches!(
        by_serial
            .sign("ca", SignatureAlgorithm::EcdsaSha256, MESSAGE)
            .await,
        Err(HsmError::Closed)
    ));
}

async fn missing_token_key_and_wrong_algorithm_are_final_errors(kind: ModuleKind) {
    let soft = softhsm(kind);
    let mut settings = soft.settings("no-such-token", PIN);
    let err = Hsm::open(settings.clone()).expect_err("no token");
    assert!(matches!(err, HsmError::TokenNotFound { .. }), "{err}");

    settings.token = TokenSelector::Label(LABEL.into());
    let hsm = Hsm::open(settings).unwrap();
    let err = hsm
        .sign("absent", SignatureAlgorithm::EcdsaSha256, MESSAGE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, HsmError::KeyNotFound { label } if label == "absent"),
        "{err}"
    );

    // A key of another family than the algorithm's: RSA asked to sign ECDSA.
    hsm.generate_key("rsa", KeyType::Rsa2048).await.unwrap();
    let err = hsm
        .sign("rsa", SignatureAlgorithm::EcdsaSha256, MESSAGE)
        .await
        .unwrap_err();
    assert!(matches!(err, HsmError::Mechanism { .. }), "{err}");
    assert!(hsm.is_available());
}

async fn wrong_pin_is_pin_incorrect_and_never_shown(kind: ModuleKind) {
    let soft = softhsm(kind);
    let mut settings = soft.settings(LABEL, PIN);
    settings.pin = Secret::from_file(&soft.pin_file("11112222")).unwrap();
    let err = Hsm::open(settings).expect_err("wrong PIN must fail");
    assert!(matches!(err, HsmError::PinIncorrect), "{err}");
    assert!(!format!("{err} {err:?}").contains("11112222"));
    // A failed open leaves the module usable for the next one.
    let hsm = open(&soft);
    assert!(hsm.is_available());
}

async fn stale_sessions_are_replaced_and_the_signature_retried_once(kind: ModuleKind) {
    let soft = softhsm(kind);
    let hsm = open(&soft);
    let spki = hsm.generate_key("ca", KeyType::P256).await.unwrap();
    // Warm the key-handle caches of both pooled sessions (two calls at once take both).
    for _ in 0..4 {
        let (a, b) = tokio::join!(
            hsm.sign("ca", SignatureAlgorithm::EcdsaSha256, MESSAGE),
            hsm.sign("ca", SignatureAlgorithm::EcdsaSha256, MESSAGE)
        );
        a.unwrap();
        b.unwrap();
    }
    for round in 0..2 {
        hsm.invalidate_sessions_for_test();
        // The next call meets CKR_SESSION_HANDLE_INVALID on a logged-out token; the repair
        // drops every stale session, logs in again and retries on a fresh one.
        for _ in 0..3 {
            let alg = SignatureAlgorithm::EcdsaSha256;
            let what = format!("round {round}");
            assert_signs_verifiably(&soft, &hsm, "ca", &spki, alg, &what).await;
        }
        assert!(hsm.is_available());
    }
}

async fn a_lost_login_is_restored_instead_of_reporting_the_key_missing(kind: ModuleKind) {
    let soft = softhsm(kind);
    let hsm = open(&soft);
    let spki = hsm.generate_key("ca", KeyType::P384).await.unwrap();
    hsm.logout_for_test();
    // Logged out, the private key is invisible to C_FindObjects; the pool logs in again.
    assert!(hsm.key_exists("ca").await.unwrap());
    hsm.logout_for_test();
    let alg = SignatureAlgorithm::EcdsaSha384;
    assert_signs_verifiably(&soft, &hsm, "ca", &spki, alg, "logged out").await;
    // A key that really is absent is still reported as absent.
    assert!(!hsm.key_exists("nope").await.unwrap());
}

async fn concurrent_signing_shares_the_pool_without_errors(kind: ModuleKind) {
    let soft = softhsm(kind);
    let hsm = open(&soft);
    hsm.generate_key("ca", KeyType::P256).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let hsm = hsm.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                hsm.sign("ca", SignatureAlgorithm::EcdsaSha256, MESSAGE)
                    .await?;
            }
            Ok::<_, HsmError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

/// What the signing loop in the recovery test saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    unavailable: usize,
    other: Vec<String>,
    slowest: Duration,
}

async fn signing_recovers_after_the_p11kit_server_dies_and_returns(kind: ModuleKind) {
    let soft = softhsm(kind);
    let mut server = P11KitServer::start(&soft, "pkcs11:token=signet-ca");
    common::set_env("P11_KIT_SERVER_ADDRESS", server.address());
    let mut settings = soft.settings(LABEL, PIN);
    settings.module = common::P11KIT_CLIENT_MODULE.into();
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(settings))
        .await
        .unwrap()
        .expect("open through p11-kit");
    let spki = hsm.generate_key("ca", KeyType::P256).await.unwrap();
    let alg = SignatureAlgorithm::EcdsaSha256;

    // Sign continuously from a task, every call bounded by a timeout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signer = {
        let (hsm, stop) = (hsm.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tally = Tally::default();
            let deadline = Instant::now() + Duration::from_secs(90);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let started = Instant::now();
                match tokio::time::timeout(Duration::from_secs(5), hsm.sign("ca", alg, MESSAGE))
                    .await
                {
                    Ok(Ok(_)) => tally.ok += 1,
                    Ok(Err(e)) if e.is_unavailable() => tally.unavailable += 1,
                    Ok(Err(e)) => tally.other.push(e.to_string()),
                    Err(_) => tally.other.push("a sign call took over 5 s".into()),
                }
                tally.slowest = tally.slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tally
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hsm.is_available());

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while hsm.is_available() {
        assert!(
            Instant::now() < deadline,
            "still available 10 s after the server died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While the device is gone, calls fail fast with Unavailable.
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), hsm.sign("ca", alg, MESSAGE))
        .await
        .expect("sign returns promptly while unavailable")
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // Let a few reconnect attempts fail against the missing server.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!hsm.is_available());

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let sig = loop {
        assert!(
            Instant::now() < deadline,
            "signing did not resume within 30 s"
        );
        match tokio::time::timeout(Duration::from_secs(5), hsm.sign("ca", alg, MESSAGE)).await {
            Ok(Ok(sig)) => break sig,
            Ok(Err(e)) => assert!(e.is_unavailable(), "unexpected error while recovering: {e}"),
            Err(_) => panic!("a sign call hung while recovering"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(hsm.is_available());
    assert!(openssl_verifies(soft.dir.path(), &spki, alg, MESSAGE, &sig));
    // The key and its public half are the same through the new connection.
    assert_eq!(hsm.public_key("ca").await.unwrap(), spki);

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let tally = signer.await.unwrap();
    assert!(tally.other.is_empty(), "{tally:?}");
    assert!(tally.unavailable > 0, "{tally:?}");
    assert!(tally.ok > 0, "{tally:?}");
    assert!(tally.slowest < Duration::from_secs(5), "{tally:?}");
    hsm.close();
}

async fn a_replaced_key_is_found_again_instead_of_using_the_stale_handle(kind: ModuleKind) {
    let soft = softhsm(kind);
    let hsm = open(&soft);
    hsm.generate_key("ca", KeyType::P256).await.unwrap();
    for _ in 0..4 {
        hsm.sign("ca", SignatureAlgorithm::EcdsaSha256, MESSAGE)
            .await
            .unwrap();
    }
    // Another process deletes the key pair; a new one takes its label.
    for kind in ["privkey", "pubkey"] {
        run_ok(soft.pkcs11_tool(LABEL).args([
            "--login",
            "--pin",
            PIN,
            "--delete-object",
            "--type",
            kind,
            "--label",
            "ca",
        ]));
    }
    // The pooled session that signed above still caches the old handle.
    let spki = hsm.generate_key("ca", KeyType::P256).await.unwrap();
    for _ in 0..4 {
        let alg = SignatureAlgorithm::EcdsaSha256;
        assert_signs_verifiably(&soft, &hsm, "ca", &spki, alg, "the new key").await;
    }
}

async fn calls_to_a_frozen_hsm_give_up_at_the_call_timeout_and_the_pool_is_whole_after_the_thaw(
    kind: ModuleKind,
) {
    let soft = softhsm(kind);
    let server = P11KitServer::start(&soft, "pkcs11:token=signet-ca");
    common::set_env("P11_KIT_SERVER_ADDRESS", server.address());
    let mut settings = soft.settings(LABEL, PIN);
    settings.module = common::P11KIT_CLIENT_MODULE.into();
    settings.call_timeout = Duration::from_millis(1000);
    let pool_size = settings.pool_size;
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(settings))
        .await
        .unwrap()
        .expect("open through p11-kit");
    let spki = hsm.generate_key("ca", KeyType::P256).await.unwrap();
    let alg = SignatureAlgorithm::EcdsaSha256;
    let mut availability = hsm.availability();
    assert!(*availability.borrow_and_update());

    // Twice as many calls as sessions: some hang in C_Sign, the others queue for a session.
    server.freeze();
    let started = Instant::now();
    let calls: Vec<_> = (0..2 * pool_size)
        .map(|_| {
            let hsm = hsm.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), hsm.sign("ca", alg, MESSAGE)).await
            })
        })
        .collect();
    for c in calls {
        let e = c
            .await
            .unwrap()
            .expect("a call hung past the call timeout")
            .unwrap_err();
        assert!(e.is_unavailable(), "{e}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "{:?}",
        started.elapsed()
    );
    assert!(!hsm.is_available());
    assert!(!*availability.borrow_and_update());

    // After SIGCONT the reconnect gets through and says so; every session can sign at once.
    server.thaw();
    tokio::time::timeout(Duration::from_secs(30), availability.wait_for(|up| *up))
        .await
        .expect("the HSM was not available again 30 s after the thaw")
        .unwrap();
    let calls: Vec<_> = (0..3 * pool_size)
        .map(|_| {
            let hsm = hsm.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), hsm.sign("ca", alg, MESSAGE)).await
            })
        })
        .collect();
    for c in calls {
        let sig = c
            .await
            .unwrap()
            .expect("a call after the thaw hung")
            .expect("a call after the thaw");
        assert!(openssl_verifies(soft.dir.path(), &spki, alg, MESSAGE, &sig));
    }
    assert!(hsm.close_within(Duration::from_secs(10)));
}

common::on_both_modules!(
    every_algorithm_signs_what_openssl_verifies,
    generated_keys_are_sensitive_sign_only_and_linked_by_sha1_id,
    generate_key_refuses_a_label_already_in_use,
    token_selected_by_serial_or_uri_finds_the_same_key,
    missing_token_key_and_wrong_algorithm_are_final_errors,
    wrong_pin_is_pin_incorrect_and_never_shown,
    stale_sessions_are_replaced_and_the_signature_retried_once,
    a_lost_login_is_restored_instead_of_reporting_the_key_missing,
    concurrent_signing_shares_the_pool_without_errors,
    signing_recovers_after_the_p11kit_server_dies_and_returns,
    a_replaced_key_is_found_again_instead_of_using_the_stale_handle,
    calls_to_a_frozen_hsm_give_up_at_the_call_timeout_and_the_pool_is_whole_after_the_thaw,
);

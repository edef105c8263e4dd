//! Token personalisation against real SoftHSM tokens: subscriber keys generated on the token,
//! certified by the CA and written back, judged by `pkcs11-tool`, `openssl` and `sqlite3`;
//! nothing half-done after a refusal or a failure after issuance; PIN lock, unblock and
//! change; initialisation refused while a valid certificate is on the token.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use common::ca::{AGREEMENT, TestCa, names_for};
use common::status::outcome;
use common::{ModuleKind, SoftHsm};
use signet::ca::{Approval, Authority, IssueRequest};
use signet::hsm::address::TokenAddress;
use signet::pki::KeyType;
use signet::secret::Secret;
use signet::store::Store;
use signet::token::{
    CertificateIssuer, InProcessIssuer, InitializeRequest, IssueError, IssuedCert,
    PersonalizeRequest, TokenError, TokenName, TokenPolicy, Workstation,
};

const USB: &str = "signet-usb-1";
const USB_SO: &str = "87654321";
const USB_PIN: &str = "135790";
const ACTOR: &str = "workstation-1";

/// `[token]` of the desk: the workstation serves the tokens of the CA's own module.
fn token_toml(module: &Path) -> String {
    format!(
        r#"
[token]
actor = "workstation-1"
max_pin_tries = 3
modules = [{{ path = "{}" }}]

[token.issuer]
kind = "in-process"
"#,
        module.display()
    )
}

/// A CA with a subscriber token beside it, and a workstation issuing through it.
struct Desk {
    softhsm: SoftHsm,
    dir: PathBuf,
    db: PathBuf,
    authority: Arc<Authority>,
    store: Arc<dyn Store>,
    station: Workstation,
    serial: String,
}

impl Desk {
    /// A workstation on the tokens `module` serves, sharing this desk's store.
    fn station_with(
        &self,
        module: &Path,
        issuer: Arc<dyn CertificateIssuer>,
        policy: TokenPolicy,
    ) -> Workstation {
        Workstation::new(
            vec![Arc::new(signet::hsm::token::TokenModule::open(module))],
            self.store.clone(),
            issuer,
            policy,
            ACTOR,
        )
    }

    /// Check that the CA recorded `cert_der` for the request `id`.
    async fn assert_recorded(&self, id: &str, cert_der: &[u8]) {
        let record = self
            .store
            .certificate_by_request(ACTOR, id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the CA's record of {id}"));
        assert_eq!(record.cert_der.as_deref(), Some(cert_der));
    }
}

async fn desk(kind: ModuleKind) -> Desk {
    desk_with(kind, "").await
}

/// As [`desk`], with `extra` TOML (another profile, say) in the CA's configuration.
async fn desk_with(kind: ModuleKind, extra: &str) -> Desk {
    common::trace();
    let ca = TestCa::new_with_tokens_on(
        kind,
        &format!("{}{extra}", token_toml(&kind.module())),
        &[(USB, USB_SO, USB_PIN)],
    )
    .await;
    let TestCa {
        softhsm,
        dir,
        cfg,
        store,
        ca,
        ..
    } = ca;
    let authority = Arc::new(ca);
    let station = Workstation::from_config(
        &cfg,
        store.clone(),
        signet::api::remote_issuer::workstation_issuer(&cfg, Some(authority.clone()))
            .expect("the in-process issuer"),
    )
    .expect("workstation from [token]");
    let serial = softhsm.token_serial(USB);
    Desk {
        db: cfg.store_path(),
        softhsm,
        dir,
        authority,
        store,
        station,
        serial,
    }
}

fn request(desk: &Desk, id: &str, key_type: KeyType) -> PersonalizeRequest {
    request_for(&desk.serial, id, key_type)
}

/// Run `cmd`; whether it succeeded, and its standard output followed by its standard error.
fn run(cmd: &mut Command) -> (bool, String) {
    outcome(&common::ca::run(cmd))
}

/// `pkcs11-tool --list-objects` (logged in) split into one block per object.
fn objects(softhsm: &SoftHsm, pin: &str) -> Vec<String> {
    let (ok, text) =
        run(softhsm
            .pkcs11_tool(USB)
            .args(["--login", "--pin", pin, "--list-objects"]));
    assert!(ok, "pkcs11-tool --list-objects failed:\n{text}");
    let mut blocks: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(b) = blocks.last_mut() {
                b.push('\n');
                b.push_str(line.trim());
            }
        } else if line.contains("Object") {
            blocks.push(line.trim().to_owned());
        }
    }
    blocks
}

fn field<'a>(block: &'a str, name: &str) -> Option<&'a str> {
    block.lines().find_map(|l| {
        l.strip_prefix(name)
            .map(|v| v.trim_start_matches(':').trim())
    })
}

fn with_id<'a>(blocks: &'a [String], kind: &str, id: &str) -> Vec<&'a String> {
    blocks
        .iter()
        .filter(|b| b.starts_with(kind) && field(b, "ID") == Some(id))
        .collect()
}

/// How many private keys `blocks` (from [`objects`]) holds.
fn private_keys(blocks: &[String]) -> usize {
    blocks
        .iter()
        .filter(|b| b.starts_with("Private Key Object"))
        .count()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Everything "What must be shown" asks of a personalised token, for one key type.
async fn personalise_and_check(desk: &Desk, id: &str, key_type: KeyType) {
    let bench = Bench {
        softhsm: &desk.softhsm,
        dir: &desk.dir,
        serial: &desk.serial,
    };
    personalise_and_check_with(&desk.station, &bench, id, key_type).await;
}

/// What a check needs besides the workstation: the token's SoftHSM, a scratch directory and
/// the token's serial.
struct Bench<'a> {
    softhsm: &'a SoftHsm,
    dir: &'a Path,
    serial: &'a str,
}

fn request_for(serial: &str, id: &str, key_type: KeyType) -> PersonalizeRequest {
    request_for_profile(serial, id, key_type, "personal")
}

/// A personal certificate's request under `profile` (a profile of the personal kind).
fn request_for_profile(
    serial: &str,
    id: &str,
    key_type: KeyType,
    profile: &str,
) -> PersonalizeRequest {
    let (subject, sans) = names_for("personal");
    PersonalizeRequest {
        token: serial.into(),
        user_pin: Secret::new(USB_PIN.into()),
        key_type,
        label: format!("{id}-key"),
        profile: profile.into(),
        issuer: None,
        subject,
        sans,
        validity_years: 1,
        request_id: id.into(),
        approval: Approval {
            officer: "王芳".into(),
            ra_reference: format!("RA-{id}"),
            agreement_version: AGREEMENT.into(),
        },
    }
}

async fn personalise_and_check_with(
    station: &Workstation,
    desk: &Bench<'_>,
    id: &str,
    key_type: KeyType,
) {
    personalise_and_check_profile(station, desk, id, key_type, "personal").await;
}

/// As [`personalise_and_check_with`], under `profile` (of the personal kind).
async fn personalise_and_check_profile(
    station: &Workstation,
    desk: &Bench<'_>,
    id: &str,
    key_type: KeyType,
    profile: &str,
) {
    let done = station
        .personalize(request_for_profile(desk.serial, id, key_type, profile))
        .await
        .unwrap_or_else(|e| panic!("{key_type}: {e}"));
    let hex_id = hex::encode(&done.key_id);
    let label = format!("{id}-key");
    let work = desk.dir.join(id);
    std::fs::create_dir_all(&work).unwrap();

    // One ID and one label for private key, public key and certificate.
    let blocks = objects(desk.softhsm, USB_PIN);
    for kind in [
        "Private Key Object",
        "Public Key Object",
        "Certificate Object",
    ] {
        let found = with_id(&blocks, kind, &hex_id);
        assert_eq!(found.len(), 1, "{kind} with ID {hex_id}:\n{blocks:#?}");
        assert_eq!(
            field(found[0], "label"),
            Some(label.as_str()),
            "{}",
            found[0]
        );
    }
    let private = with_id(&blocks, "Private Key Object", &hex_id)[0];
    let usage = field(private, "Usage").unwrap_or_default();
    assert!(usage.contains("sign"), "{private}");
    assert!(!usage.contains("decrypt"), "sign only: {private}");
    let access = field(private, "Access").unwrap_or_default();
    for flag in ["sensitive", "never extractable", "local"] {
        assert!(access.contains(flag), "{flag} missing: {private}");
    }

    // The private key cannot be read off the token: pkcs11-tool gets nothing out. (OpenSC's
    // pkcs11-tool declines private keys outright; the token's own word is the "sensitive,
    // never extractable" above.)
    let stolen = work.join("private.der");
    let (ok, text) = run(desk
        .softhsm
        .pkcs11_tool(USB)
        .args([
            "--login",
            "--pin",
            USB_PIN,
            "--read-object",
            "--type",
            "privkey",
        ])
        .args(["--id", &hex_id, "--output-file"])
        .arg(&stolen));
    let got = std::fs::read(&stolen).unwrap_or_default();
    assert!(
        got.is_empty() && (!ok || text.contains("not (yet) supported")),
        "reading the private key must fail:\n{text}"
    );

    // A signature made on the token verifies with the certificate's public key.
    let cert = write(&work, "leaf.der", &done.cert_der);
    let (ok, text) = run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&cert)
        .args(["-noout", "-pubkey", "-out"])
        .arg(work.join("pub.pem")));
    assert!(ok, "{text}");
    let message = write(
        &work,
        "msg.bin",
        "申请人 signs at the front desk".as_bytes(),
    );
    let (hash, mech) = match key_type {
        KeyType::P384 => ("-sha384", "ECDSA"),
        KeyType::P256 => ("-sha256", "ECDSA"),
        KeyType::Ed25519 => ("", "EDDSA"),
        _ => ("-sha256", "SHA256-RSA-PKCS"),
    };
    let to_sign = if mech == "ECDSA" {
        // SoftHSM offers raw CKM_ECDSA only: hash first, as signet does.
        let (ok, text) = run(Command::new("openssl")
            .args(["dgst", hash, "-binary", "-out"])
            .arg(work.join("digest.bin"))
            .arg(&message));
        assert!(ok, "{text}");
        work.join("digest.bin")
    } else {
        message.clone()
    };
    let sig = work.join("sig.bin");
    let (ok, text) = run(desk
        .softhsm
        .pkcs11_tool(USB)
        .args([
            "--login", "--pin", USB_PIN, "--sign", "--id", &hex_id, "-m", mech,
        ])
        .args(["--signature-format", "openssl", "--input-file"])
        .arg(&to_sign)
        .arg("--output-file")
        .arg(&sig));
    assert!(ok, "pkcs11-tool --sign: {text}");
    let (ok, text) = if key_type == KeyType::Ed25519 {
        // Ed25519 signs the message itself: openssl verifies it raw.
        run(Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
            .arg(work.join("pub.pem"))
            .arg("-in")
            .arg(&message)
            .arg("-sigfile")
            .arg(&sig))
    } else {
        run(Command::new("openssl")
            .args(["dgst", hash, "-verify"])
            .arg(work.join("pub.pem"))
            .arg("-signature")
            .arg(&sig)
            .arg(&message))
    };
    assert!(
        ok && (text.contains("Verified OK") || text.contains("Signature Verified Successfully")),
        "openssl verify of the token's signature: {text}"
    );

    // The chain's CA certificates are on the token; the certificate verifies against them.
    let mut pems = Vec::new();
    for (i, ca) in done.chain.iter().enumerate() {
        let ca_cert = x509_cert::Certificate::from_der(ca).unwrap();
        let subject = ca_cert.tbs_certificate().subject().to_string();
        let cn = subject
            .split(',')
            .find_map(|p| p.trim().strip_prefix("CN="))
            .unwrap()
            .to_owned();
        let certs: Vec<&String> = blocks
            .iter()
            .filter(|b| b.starts_with("Certificate Object") && field(b, "label") == Some(&cn))
            .collect();
        assert_eq!(
            certs.len(),
            1,
            "CA certificate {cn} on the token:\n{blocks:#?}"
        );
        let der = work.join(format!("ca{i}.der"));
        let (ok, text) = run(desk
            .softhsm
            .pkcs11_tool(USB)
            .args([
                "--read-object",
                "--type",
                "cert",
                "--label",
                &cn,
                "--output-file",
            ])
            .arg(&der));
        assert!(ok, "{text}");
        let pem = work.join(format!("ca{i}.pem"));
        let (ok, text) = run(Command::new("openssl")
            .args(["x509", "-inform", "DER", "-in"])
            .arg(&der)
            .arg("-out")
            .arg(&pem));
        assert!(ok, "{text}");
        pems.push(pem);
    }
    assert_eq!(pems.len(), 2, "issuing CA and root");
    let leaf_pem = work.join("leaf.pem");
    let (ok, text) = run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&cert)
        .arg("-out")
        .arg(&leaf_pem));
    assert!(ok, "{text}");
    let (ok, text) = run(Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(&pems[1])
        .arg("-untrusted")
        .arg(&pems[0])
        .arg(&leaf_pem));
    assert!(ok && text.contains(": OK"), "openssl verify: {text}");
}

use der::Decode;

async fn personalised_token_holds_a_linked_sign_only_key_and_a_verifiable_certificate_for_rsa_p256_p384(
    kind: ModuleKind,
) {
    let desk = desk(kind).await;
    personalise_and_check(&desk, "rsa-1", KeyType::Rsa2048).await;
    personalise_and_check(&desk, "p256-1", KeyType::P256).await;
    personalise_and_check(&desk, "p384-1", KeyType::P384).await;

    // GnuTLS's p11tool reads CKA_CERTIFICATE_CATEGORY: authority for the chain, not for
    // the subscriber's own certificates.
    let (ok, text) = run(Command::new("p11tool")
        .env(kind.conf_var(), &desk.softhsm.conf)
        .arg("--provider")
        .arg(&desk.softhsm.module)
        .args(["--list-all-certs", &format!("pkcs11:token={USB}")]));
    assert!(ok, "{text}");
    let certs: Vec<&str> = text.split("Object ").skip(1).collect();
    assert_eq!(
        certs.len(),
        5,
        "three subscriber certificates and two CAs:\n{text}"
    );
    for c in certs {
        let is_ca = c.contains("Label: Signet Test");
        assert_eq!(
            c.contains("CKA_CERTIFICATE_CATEGORY=CA"),
            is_ca,
            "category of:\n{c}"
        );
    }

    // ListTokens: the token, its PIN state and its three certificates.
    let tokens = desk.station.list_tokens().await.unwrap();
    let usb = tokens
        .iter()
        .find(|t| t.info.serial == desk.serial)
        .expect("the USB token is listed");
    assert_eq!(usb.info.label, USB);
    assert!(usb.info.initialized && usb.info.user_pin_initialized);
    assert!(
        !tokens.iter().any(|t| t.info.label == "signet-ca"),
        "the CA's own HSM token is never listed: {tokens:#?}"
    );
    assert!(!usb.pin_locked);
    let subscriber: Vec<_> = usb.certificates.iter().filter(|c| !c.is_ca).collect();
    assert_eq!(subscriber.len(), 3, "{:#?}", usb.certificates);

    // The audit log says so, without a PIN.
    let (ok, text) = run(Command::new("sqlite3").arg(&desk.db).arg(
        "SELECT object, detail FROM audit_log WHERE action = 'token.personalized' ORDER BY seq",
    ));
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains(&desk.serial), "{text}");
    assert!(!text.contains(USB_PIN), "{text}");

    // A retry of a finished request answers the same without writing anything.
    let again = desk
        .station
        .personalize(request(&desk, "p256-1", KeyType::P256))
        .await
        .unwrap();
    let blocks = objects(&desk.softhsm, USB_PIN);
    assert_eq!(
        with_id(&blocks, "Certificate Object", &hex::encode(&again.key_id)).len(),
        1
    );
}

async fn a_ca_refusal_after_key_generation_leaves_no_key_on_the_token(kind: ModuleKind) {
    let desk = desk(kind).await;
    let mut req = request(&desk, "refused-1", KeyType::P256);
    req.approval.agreement_version = "1999-01".into();
    let err = desk.station.personalize(req).await.unwrap_err();
    assert!(matches!(err, TokenError::Refused(_)), "{err}");
    let blocks = objects(&desk.softhsm, USB_PIN);
    assert!(
        !blocks.iter().any(|b| b.contains("Key Object")),
        "no key may be left on the token:\n{blocks:#?}"
    );
    // The request id, corrected, may be used again.
    let done = desk
        .station
        .personalize(request(&desk, "refused-1", KeyType::P256))
        .await
        .unwrap();
    assert_eq!(done.label, "refused-1-key");
}

/// An issuer whose first answer is lost after the CA issued: the failure between issuance
/// and the write to the token.
struct LosesFirstAnswer {
    inner: InProcessIssuer,
    lost: AtomicBool,
}

#[async_trait]
impl CertificateIssuer for LosesFirstAnswer {
    async fn issue(&self, req: IssueRequest) -> Result<IssuedCert, IssueError> {
        let issued = self.inner.issue(req).await?;
        if !self.lost.swap(true, Ordering::SeqCst) {
            return Err(IssueError::Unavailable("the answer was lost".into()));
        }
        Ok(issued)
    }
    async fn is_revoked(&self, serial: &str) -> Result<bool, IssueError> {
        self.inner.is_revoked(serial).await
    }
}

async fn a_failure_after_issuance_is_finished_by_a_retry_with_one_certificate_per_request_id(
    kind: ModuleKind,
) {
    let desk = desk(kind).await;
    let station = desk.station_with(
        &desk.softhsm.module,
        Arc::new(LosesFirstAnswer {
            inner: InProcessIssuer::new(desk.authority.clone(), ACTOR),
            lost: AtomicBool::new(false),
        }),
        desk.station.policy().clone(),
    );
    let err = station
        .personalize(request(&desk, "lost-1", KeyType::P384))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Unavailable(_)), "{err}");
    let blocks = objects(&desk.softhsm, USB_PIN);
    assert_eq!(
        private_keys(&blocks),
        1,
        "the key stays for the retry:\n{blocks:#?}"
    );
    assert!(!blocks.iter().any(|b| b.starts_with("Certificate Object")));

    let done = station
        .personalize(request(&desk, "lost-1", KeyType::P384))
        .await
        .unwrap();
    desk.assert_recorded("lost-1", &done.cert_der).await;
    let (ok, text) = run(Command::new("sqlite3")
        .arg(&desk.db)
        .arg("SELECT COUNT(*) FROM certificates WHERE request_id = 'lost-1'"));
    assert!(ok, "{text}");
    assert_eq!(
        text.trim(),
        "1",
        "exactly one certificate for the request id"
    );
    let blocks = objects(&desk.softhsm, USB_PIN);
    let certs = with_id(&blocks, "Certificate Object", &hex::encode(&done.key_id));
    assert_eq!(certs.len(), 1, "{blocks:#?}");
    assert_eq!(private_keys(&blocks), 1);
}

async fn wrong_pin_until_locked_then_unblock_with_the_so_pin_then_personalise(kind: ModuleKind) {
    let desk = desk(kind).await;
    let mut wrong = request(&desk, "pin-1", KeyType::P256);
    wrong.user_pin = Secret::new("000000".into());
    match desk.station.personalize(wrong.clone()).await.unwrap_err() {
        TokenError::WrongPin {
            field, tries_left, ..
        } => {
            assert_eq!(field, "user_pin");
            assert_eq!(tries_left, Some(2));
        }
        other => panic!("{other}"),
    }
    match desk.station.personalize(wrong.clone()).await.unwrap_err() {
        TokenError::WrongPin {
            tries_left,
            final_try,
            ..
        } => {
            assert_eq!(tries_left, Some(1));
            assert!(final_try);
        }
        other => panic!("{other}"),
    }
    let locked = desk.station.personalize(wrong).await.unwrap_err();
    assert!(matches!(locked, TokenError::PinLocked { .. }), "{locked}");
    assert!(locked.to_string().contains("UnblockPin"), "{locked}");
    // Even the right PIN is refused now, and ListTokens shows the lock.
    let right = desk
        .station
        .personalize(request(&desk, "pin-1", KeyType::P256))
        .await
        .unwrap_err();
    assert!(matches!(right, TokenError::PinLocked { .. }), "{right}");
    let tokens = desk.station.list_tokens().await.unwrap();
    assert!(
        tokens
            .iter()
            .any(|t| t.info.serial == desk.serial && t.pin_locked)
    );

    let new_pin = "864209";
    desk.station
        .unblock_pin(
            &desk.serial,
            &Secret::new(USB_SO.into()),
            &Secret::new(new_pin.into()),
        )
        .await
        .unwrap();
    let mut req = request(&desk, "pin-1", KeyType::P256);
    req.user_pin = Secret::new(new_pin.into());
    desk.station.personalize(req).await.unwrap();
    let (ok, text) =
        run(desk
            .softhsm
            .pkcs11_tool(USB)
            .args(["--login", "--pin", new_pin, "--list-objects"]));
    assert!(ok && text.contains("Certificate Object"), "{text}");
    let (ok, text) = run(Command::new("sqlite3")
        .arg(&desk.db)
        .arg("SELECT COUNT(*) FROM audit_log WHERE action = 'token.pin_unblocked'"));
    assert!(ok && text.trim() == "1", "{text}");
}

async fn change_pin_then_the_new_pin_logs_in_and_the_old_one_fails(kind: ModuleKind) {
    let desk = desk(kind).await;
    let new_pin = "975310";
    let short = desk
        .station
        .change_pin(
            &desk.serial,
            &Secret::new(USB_PIN.into()),
            &Secret::new("12".into()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&short, TokenError::Invalid { field, .. } if field == "new_pin"),
        "{short}"
    );
    desk.station
        .change_pin(
            &desk.serial,
            &Secret::new(USB_PIN.into()),
            &Secret::new(new_pin.into()),
        )
        .await
        .unwrap();
    let (ok, text) =
        run(desk
            .softhsm
            .pkcs11_tool(USB)
            .args(["--login", "--pin", new_pin, "--list-objects"]));
    assert!(ok, "the new PIN logs in: {text}");
    let (ok, text) =
        run(desk
            .softhsm
            .pkcs11_tool(USB)
            .args(["--login", "--pin", USB_PIN, "--list-objects"]));
    assert!(
        !ok && text.contains("CKR_PIN_INCORRECT"),
        "the old PIN fails: {text}"
    );
}

async fn initialising_a_token_with_a_valid_certificate_is_refused_without_force(kind: ModuleKind) {
    let desk = desk(kind).await;
    desk.station
        .personalize(request(&desk, "init-1", KeyType::P256))
        .await
        .unwrap();
    let init = |token: &str, request_id: &str, force: bool| InitializeRequest {
        token: token.into(),
        so_pin: Secret::new(USB_SO.into()),
        label: "fresh".into(),
        user_pin: Secret::new(USB_PIN.into()),
        force,
        request_id: request_id.into(),
    };
    // The CA's own HSM token (served by the same module) is out of the workstation's reach.
    let ca_serial = desk.softhsm.token_serial("signet-ca");
    let hands_off = desk
        .station
        .initialize_token(init(&ca_serial, "init-ca", true))
        .await
        .unwrap_err();
    assert!(
        matches!(&hands_off, TokenError::Invalid { field, .. } if field == "token_serial"),
        "{hands_off}"
    );
    let refused = desk
        .station
        .initialize_token(init(&desk.serial, "init-refused", false))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, TokenError::FailedPrecondition(_)),
        "{refused}"
    );
    // Nothing changed.
    let blocks = objects(&desk.softhsm, USB_PIN);
    assert!(blocks.iter().any(|b| b.starts_with("Private Key Object")));

    let done = desk
        .station
        .initialize_token(init(&desk.serial, "init-forced", true))
        .await
        .unwrap();
    // What holds on every module: the answer names the token's serial now (SoftHSM keeps
    // the old one, kryoptic draws a new one), the token is found by it, relabelled, empty,
    // and its new user PIN works.
    assert_eq!(done.previous_serial, desk.serial);
    assert!(!done.serial.is_empty(), "{done:?}");
    assert_eq!(desk.softhsm.token_serial("fresh"), done.serial);
    let tokens = desk.station.list_tokens().await.unwrap();
    let usb = tokens
        .iter()
        .find(|t| t.info.serial == done.serial)
        .expect("the token is listed under the serial the answer gave");
    assert_eq!(usb.info.label, "fresh");
    assert!(usb.info.user_pin_initialized, "{usb:#?}");
    assert!(usb.certificates.is_empty());
    let (ok, text) = run(desk.softhsm.pkcs11_tool("fresh").args([
        "--login",
        "--pin",
        USB_PIN,
        "--list-objects",
    ]));
    assert!(ok, "the new user PIN logs in: {text}");
    let (ok, text) = run(Command::new("sqlite3")
        .arg(&desk.db)
        .arg("SELECT object, detail FROM audit_log WHERE action = 'token.initialized'"));
    assert!(ok && text.contains("\"force\":true"), "{text}");
    assert!(
        text.contains(&format!("\"previous_serial\":\"{}\"", desk.serial))
            && text.contains(&format!("\"serial\":\"{}\"", done.serial)),
        "the audit entry names the serial before and after: {text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    // The same request again answers the same, without wiping again.
    let again = desk
        .station
        .initialize_token(init(&desk.serial, "init-forced", true))
        .await
        .unwrap();
    assert_eq!(again.serial, done.serial);
    assert_eq!(desk.softhsm.token_serial("fresh"), done.serial);
}

async fn the_remote_issuer_personalises_through_a_second_signet_serve_over_mtls(kind: ModuleKind) {
    common::trace();
    let ca = common::api::ApiCa::new_on(kind);
    // The subscriber's token sits in the same SoftHSM as the central CA's, which runs in
    // its own process; the workstation (this process) only opens the USB token.
    ca.softhsm.init_token(USB, USB_SO, USB_PIN);
    let serial = ca.softhsm.token_serial(USB);
    let daemon = common::api::Daemon::start(&ca);
    let journal: Arc<dyn Store> =
        Arc::new(signet::store::SqliteStore::open(&ca.dir.join("workstation.db")).unwrap());
    let station = Workstation::new(
        vec![Arc::new(signet::hsm::token::TokenModule::open(
            &ca.softhsm.module,
        ))],
        journal.clone(),
        Arc::new(signet::api::remote_issuer::RemoteIssuer::new(
            daemon.settings("ra-one"),
        )),
        TokenPolicy {
            pin_min_len: 6,
            pin_max_len: 32,
            max_pin_tries: 3,
            key_types: vec![KeyType::Rsa2048, KeyType::P256, KeyType::P384],
            label_template: signet::config::DEFAULT_LABEL_TEMPLATE.into(),
        },
        ACTOR,
    );
    let bench = Bench {
        softhsm: &ca.softhsm,
        dir: &ca.dir,
        serial: &serial,
    };
    personalise_and_check_with(&station, &bench, "remote-rsa", KeyType::Rsa2048).await;
    personalise_and_check_with(&station, &bench, "remote-p256", KeyType::P256).await;
    personalise_and_check_with(&station, &bench, "remote-p384", KeyType::P384).await;

    // The central CA recorded each once, for the RA the workstation's certificate names.
    let db = ca.dir.join("signet.db");
    let (ok, text) = run(Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT ra, COUNT(*) FROM certificates WHERE request_id LIKE 'remote-%' GROUP BY ra"));
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "desk-one|3", "{text}");

    // A refusal by the remote CA also leaves no key behind.
    let mut refused = request_for(&serial, "remote-refused", KeyType::P256);
    refused.profile = "device".into();
    let err = station.personalize(refused).await.unwrap_err();
    assert!(matches!(err, TokenError::Refused(_)), "{err}");
    let blocks = objects(&ca.softhsm, USB_PIN);
    assert_eq!(private_keys(&blocks), 3, "{blocks:#?}");
}

/// `signet token ARGS` as the RA `who`, with `stdin` as standard input (the PINs).
fn token_cli(
    daemon: &common::api::Daemon,
    who: &str,
    args: &[&str],
    stdin: &str,
) -> (bool, String) {
    use std::io::Write;
    let mut child = daemon
        .cli("token", who)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start signet token");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write PINs");
    outcome(&child.wait_with_output().expect("signet token"))
}

async fn signet_serve_offers_the_token_service_to_the_cli_of_a_desk_granted_token(
    kind: ModuleKind,
) {
    common::trace();
    let ca = common::api::ApiCa::new_on(kind);
    ca.softhsm.init_token(USB, USB_SO, USB_PIN);
    let serial = ca.softhsm.token_serial(USB);
    // desk-one may also use the token service; the workstation personalises in-process.
    let text = std::fs::read_to_string(&ca.config_path).unwrap().replacen(
        r#"operations = ["issue", "renew", "revoke", "read"]"#,
        r#"operations = ["issue", "renew", "revoke", "read", "token"]"#,
        1,
    ) + &format!(
        "\n[token]\nactor = \"{ACTOR}\"\nmax_pin_tries = 2\nmodules = [{{ path = \"{}\" }}]\n\n[token.issuer]\nkind = \"in-process\"\n",
        ca.softhsm.module.display()
    );
    std::fs::write(&ca.config_path, text).unwrap();
    let daemon = common::api::Daemon::start(&ca);

    let (ok, text) = token_cli(&daemon, "ra-one", &["list"], "");
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("token {serial} label=\"{USB}\"")),
        "{text}"
    );

    // Deny by default: desk-two was not granted `token`.
    let (ok, text) = token_cli(&daemon, "ra-two", &["list"], "");
    assert!(!ok && text.contains("PERMISSION_DENIED"), "{text}");

    let cert = ca.dir.join("cli-leaf.pem");
    let personalize = |id: &'static str| {
        vec![
            "personalize",
            "--serial",
            &serial,
            "--key-type",
            "p256",
            "--profile",
            "personal",
            "--subject",
            "CN=张三, C=CN",
            "--validity",
            "1",
            "--request-id",
            id,
            "--officer",
            "王芳",
            "--ra-reference",
            "RA-cli",
            "--agreement-version",
            AGREEMENT,
            "--out",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([cert.display().to_string()])
        .collect::<Vec<String>>()
    };
    let args = personalize("cli-1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = token_cli(&daemon, "ra-one", &args, &format!("{USB_PIN}\n"));
    assert!(ok, "{text}");
    let (ok, text) = run(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&cert));
    assert!(ok && text.contains("CN"), "{text}");
    let blocks = objects(&ca.softhsm, USB_PIN);
    assert_eq!(
        blocks
            .iter()
            .filter(|b| b.starts_with("Certificate Object"))
            .count(),
        3,
        "the certificate and two CA certificates:\n{blocks:#?}"
    );

    // A wrong PIN names user_pin and the tries left; the limit locks it, naming UnblockPin.
    let args2 = personalize("cli-2");
    let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
    let (ok, text) = token_cli(&daemon, "ra-one", &args2, "999999\n");
    assert!(!ok && text.contains("INVALID_ARGUMENT"), "{text}");
    assert!(
        text.contains("field user_pin") && text.contains("1 tries left"),
        "{text}"
    );
    let (ok, text) = token_cli(&daemon, "ra-one", &args2, "999999\n");
    assert!(
        !ok && text.contains("FAILED_PRECONDITION") && text.contains("UnblockPin"),
        "{text}"
    );
    let (ok, text) = token_cli(
        &daemon,
        "ra-one",
        &["unblock", "--serial", &serial],
        &format!("{USB_SO}\n246802\n"),
    );
    assert!(ok, "{text}");
    let (ok, text) = token_cli(
        &daemon,
        "ra-one",
        &["change-pin", "--serial", &serial],
        "246802\n864200\n",
    );
    assert!(ok, "{text}");
    let (ok, text) = token_cli(&daemon, "ra-one", &args2, "864200\n");
    assert!(ok, "{text}");

    let pin_file = ca.softhsm.pin_file("864200");
    let (ok, text) = token_cli(
        &daemon,
        "ra-one",
        &[
            "read",
            "--serial",
            &serial,
            "--user-pin-file",
            &pin_file.display().to_string(),
        ],
        "",
    );
    assert!(ok, "{text}");
    assert_eq!(text.matches("private key").count(), 2, "{text}");
    assert!(
        text.contains("sensitive=true") && text.contains("decrypt=false"),
        "{text}"
    );

    // Initialising over valid certificates needs --force.
    let (ok, text) = token_cli(
        &daemon,
        "ra-one",
        &["init", "--serial", &serial, "--label", "blank"],
        &format!("{USB_SO}\n{USB_PIN}\n"),
    );
    assert!(!ok && text.contains("FAILED_PRECONDITION"), "{text}");
    // No PIN ever reaches the daemon's log.
    let log = daemon.log_text();
    for secret in [USB_PIN, USB_SO, "246802", "864200", "999999"] {
        assert!(!log.contains(secret), "{secret} in the daemon log");
    }
}

/// An issuer that pulls the token out (kills the p11-kit server in front of it) right after
/// the CA issued: the write-back then finds no token.
struct PullsTheToken {
    inner: InProcessIssuer,
    server: std::sync::Mutex<common::P11KitServer>,
    pulled: AtomicBool,
}

#[async_trait]
impl CertificateIssuer for PullsTheToken {
    async fn issue(&self, req: IssueRequest) -> Result<IssuedCert, IssueError> {
        let issued = self.inner.issue(req).await?;
        if !self.pulled.swap(true, Ordering::SeqCst) {
            self.server.lock().unwrap().kill();
        }
        Ok(issued)
    }
    async fn is_revoked(&self, serial: &str) -> Result<bool, IssueError> {
        self.inner.is_revoked(serial).await
    }
}

async fn a_token_pulled_out_mid_way_gives_a_clear_error_and_a_retry_finishes_once_it_is_back(
    kind: ModuleKind,
) {
    let desk = desk(kind).await;
    // The workstation reaches the USB token through p11-kit (a second module, like a
    // vendor's library beside the HSM's); killing the server is pulling the token.
    let server = common::P11KitServer::start(&desk.softhsm, &format!("pkcs11:token={USB}"));
    common::set_env("P11_KIT_SERVER_ADDRESS", server.address());
    let puller = Arc::new(PullsTheToken {
        inner: InProcessIssuer::new(desk.authority.clone(), ACTOR),
        server: std::sync::Mutex::new(server),
        pulled: AtomicBool::new(false),
    });
    let station = desk.station_with(
        Path::new(common::P11KIT_CLIENT_MODULE),
        puller.clone(),
        desk.station.policy().clone(),
    );
    let err = station
        .personalize(request(&desk, "pulled-1", KeyType::P256))
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::Absent { .. }), "{err}");
    assert!(
        err.to_string().contains(&desk.serial) && err.to_string().contains("retry"),
        "{err}"
    );
    // While it is out, the same retry says so again.
    let again = station
        .personalize(request(&desk, "pulled-1", KeyType::P256))
        .await
        .unwrap_err();
    assert!(matches!(again, TokenError::Absent { .. }), "{again}");

    puller.server.lock().unwrap().restart();
    let done = station
        .personalize(request(&desk, "pulled-1", KeyType::P256))
        .await
        .unwrap();
    desk.assert_recorded("pulled-1", &done.cert_der).await;
    let blocks = objects(&desk.softhsm, USB_PIN);
    assert_eq!(
        with_id(&blocks, "Certificate Object", &hex::encode(&done.key_id)).len(),
        1,
        "{blocks:#?}"
    );
    assert_eq!(private_keys(&blocks), 1);
}

async fn ed25519_keys_are_personalised_where_the_token_and_the_policy_allow_them(kind: ModuleKind) {
    // The CA's profiles leave Ed25519 out by default; this one enables it.
    let desk = desk_with(
        kind,
        "\n[profiles.personal_ed25519]\nkind = \"personal\"\nissuers = [\"issuing-ec\"]\nkey_types = [\"p256\", \"ed25519\"]\n",
    )
    .await;
    let mut policy = desk.station.policy().clone();
    // The [token] of this test allows the default three only.
    let refused = desk
        .station
        .personalize(request(&desk, "ed-0", KeyType::Ed25519))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, TokenError::Invalid { field, .. } if field == "key_type"),
        "{refused}"
    );
    policy.key_types.push(KeyType::Ed25519);
    let station = desk.station_with(
        &desk.softhsm.module,
        Arc::new(InProcessIssuer::new(desk.authority.clone(), ACTOR)),
        policy,
    );
    let bench = Bench {
        softhsm: &desk.softhsm,
        dir: &desk.dir,
        serial: &desk.serial,
    };
    let (ok, mechanisms) = run(desk.softhsm.pkcs11_tool(USB).arg("--list-mechanisms"));
    assert!(ok, "{mechanisms}");
    if mechanisms.contains("EC-EDWARDS-KEY-PAIR-GEN") {
        personalise_and_check_profile(
            &station,
            &bench,
            "ed-1",
            KeyType::Ed25519,
            "personal_ed25519",
        )
        .await;
    } else {
        // A token without Ed25519 (kryoptic built with ecc_min): refused naming key_type,
        // nothing left on the token.
        let err = station
            .personalize(request_for_profile(
                &desk.serial,
                "ed-1",
                KeyType::Ed25519,
                "personal_ed25519",
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TokenError::Invalid { field, .. } if field == "key_type"),
            "{err}"
        );
        assert_eq!(private_keys(&objects(&desk.softhsm, USB_PIN)), 0);
    }
}

async fn a_key_that_demands_a_login_per_signature_gets_the_context_specific_login(
    kind: ModuleKind,
) {
    let softhsm = SoftHsm::new_on(kind, &[(USB, USB_SO, USB_PIN)]);
    let serial = softhsm.token_serial(USB);
    // pkcs11-tool makes the key with CKA_ALWAYS_AUTHENTICATE, as some smart cards do.
    let (ok, text) = run(softhsm.pkcs11_tool(USB).args([
        "--login",
        "--pin",
        USB_PIN,
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "a1",
        "--label",
        "always",
        "--always-auth",
    ]));
    assert!(ok, "{text}");
    let module = signet::hsm::token::TokenModule::open(&softhsm.module);
    let pin = Secret::new(USB_PIN.into());
    let message = b"one login per signature".to_vec();
    let (m, p) = (message.clone(), pin.clone());
    let signature = module
        .with_session(&TokenAddress::Serial(serial.clone()), move |t| {
            t.login_user(&p)?;
            t.sign(
                &[0xa1],
                signet::pki::SignatureAlgorithm::EcdsaSha256,
                &m,
                &p,
            )
        })
        .expect("signed after the context-specific login");
    let work = softhsm.dir.path();
    let (ok, text) = run(softhsm
        .pkcs11_tool(USB)
        .args([
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            "a1",
            "--output-file",
        ])
        .arg(work.join("always.der")));
    assert!(ok, "{text}");
    let (ok, text) = run(Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-in"])
        .arg(work.join("always.der"))
        .arg("-out")
        .arg(work.join("always.pem")));
    assert!(ok, "{text}");
    let msg = write(work, "always.msg", &message);
    let sig = write(work, "always.sig", &signature);
    let (ok, text) = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(work.join("always.pem"))
        .arg("-signature")
        .arg(&sig)
        .arg(&msg));
    assert!(ok && text.contains("Verified OK"), "{text}");
}

/// An issuer for workstations that only list and initialise tokens: nothing is issued, and
/// no certificate counts as revoked.
struct NoIssuer;

#[async_trait]
impl CertificateIssuer for NoIssuer {
    async fn issue(&self, _: IssueRequest) -> Result<IssuedCert, IssueError> {
        Err(IssueError::Unavailable(
            "this workstation issues nothing".into(),
        ))
    }
    async fn is_revoked(&self, _: &str) -> Result<bool, IssueError> {
        Ok(false)
    }
}

fn policy() -> TokenPolicy {
    TokenPolicy {
        pin_min_len: 6,
        pin_max_len: 32,
        max_pin_tries: 3,
        key_types: vec![KeyType::Rsa2048, KeyType::P256, KeyType::P384],
        label_template: signet::config::DEFAULT_LABEL_TEMPLATE.into(),
    }
}

async fn a_blank_token_is_initialised_by_its_slot_handle_and_personalised_under_its_cn_and_profile(
    kind: ModuleKind,
) {
    let desk = desk(kind).await;
    let tokens = desk.station.list_tokens().await.unwrap();
    let blank = tokens
        .iter()
        .find(|t| !t.info.initialized)
        .unwrap_or_else(|| panic!("a blank slot is listed: {tokens:#?}"));
    assert!(blank.handle.starts_with("slot:0:"), "{blank:#?}");
    let done = desk
        .station
        .initialize_token(InitializeRequest {
            token: TokenName::new(blank.handle.clone(), "token"),
            so_pin: Secret::new(USB_SO.into()),
            label: "blank-now-zhang".into(),
            user_pin: Secret::new(USB_PIN.into()),
            force: false,
            request_id: "blank-1".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("initialising {blank:#?}: {e}"));
    assert_eq!(done.previous_serial, blank.info.serial);
    assert!(!done.serial.is_empty(), "{done:?}");
    assert_eq!(desk.softhsm.token_serial("blank-now-zhang"), done.serial);
    // The handle named the blank slot; the slot changed, so it names nothing now.
    let stale = desk
        .station
        .read_token(TokenName::new(blank.handle.clone(), "token"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&stale, TokenError::FailedPrecondition(m) if m.contains("list the tokens again")),
        "{stale}"
    );

    // Personalised by its URI, without a label: the pair and the certificate are labelled
    // with the subject's CN and the profile, as certificate pickers show them.
    let uri = desk
        .station
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.info.serial == done.serial)
        .expect("listed under its new serial")
        .uri;
    assert!(uri.contains(&format!("serial={}", done.serial)), "{uri}");
    let mut req = request_for(&done.serial, "blank-p256", KeyType::P256);
    req.token = TokenName::new(uri.clone(), "token");
    req.label = String::new();
    let made = desk.station.personalize(req).await.unwrap();
    assert_eq!(made.label, "张三 (personal)");
    let (ok, text) = run(desk.softhsm.pkcs11_tool("blank-now-zhang").args([
        "--login",
        "--pin",
        USB_PIN,
        "--list-objects",
    ]));
    assert!(ok, "{text}");
    assert_eq!(
        text.matches("label:      张三 (personal)").count(),
        3,
        "private key, public key and certificate:\n{text}"
    );
    // A second certificate of the same person and profile gets the next free label.
    let mut again = request_for(&done.serial, "blank-p384", KeyType::P384);
    again.label = String::new();
    assert_eq!(
        desk.station.personalize(again).await.unwrap().label,
        "张三 (personal) (2)"
    );

    // ReadToken: certificates, keys and data objects only (kryoptic also answers an empty
    // search with a CKO_MECHANISM object per mechanism).
    let objects = desk
        .station
        .read_token(&done.serial, Some(Secret::new(USB_PIN.into())))
        .await
        .unwrap();
    let count = |class: &str| objects.iter().filter(|o| o.class == class).count();
    assert_eq!(
        (
            count("private key"),
            count("public key"),
            count("certificate")
        ),
        (2, 2, 4),
        "{objects:#?}"
    );
    assert_eq!(objects.len(), 8, "nothing else is listed: {objects:#?}");
}

async fn an_interrupted_initialisation_is_finished_by_a_retry_and_never_repeated(kind: ModuleKind) {
    let desk = desk(kind).await;
    let journal = signet::store::SqliteStore::open(&desk.dir.join("workstation.db")).unwrap();
    let store: Arc<dyn Store> = Arc::new(common::crash::Faulty::init_journal(
        journal,
        signet::store::TokenInitState::Wiped,
    ));
    let station = Workstation::new(
        vec![Arc::new(signet::hsm::token::TokenModule::open(
            &desk.softhsm.module,
        ))],
        store,
        Arc::new(InProcessIssuer::new(desk.authority.clone(), ACTOR)),
        policy(),
        ACTOR,
    );
    let init = || InitializeRequest {
        token: desk.serial.as_str().into(),
        so_pin: Secret::new(USB_SO.into()),
        label: "again".into(),
        user_pin: Secret::new("975310".into()),
        force: false,
        request_id: "init-interrupted".into(),
    };
    // The process "dies" right after C_InitToken: the token is wiped, no user PIN yet.
    let err = station.initialize_token(init()).await.unwrap_err();
    assert!(matches!(err, TokenError::Unavailable(_)), "{err}");
    let wiped = desk.softhsm.token_serial("again");
    let (ok, text) = run(desk.softhsm.pkcs11_tool("again").args([
        "--login",
        "--pin",
        "975310",
        "--list-objects",
    ]));
    assert!(!ok, "no user PIN yet: {text}");

    // The retry finishes it on the same token, without a second C_InitToken (which on
    // kryoptic would have drawn yet another serial).
    let done = station.initialize_token(init()).await.unwrap();
    assert_eq!(done.serial, wiped);
    assert_eq!(done.previous_serial, desk.serial);
    assert_eq!(desk.softhsm.token_serial("again"), wiped);
    let (ok, text) = run(desk.softhsm.pkcs11_tool("again").args([
        "--login",
        "--pin",
        "975310",
        "--list-objects",
    ]));
    assert!(ok, "the user PIN is set: {text}");
    let (ok, text) = run(Command::new("sqlite3")
        .arg(desk.dir.join("workstation.db"))
        .arg("SELECT object, detail FROM audit_log WHERE action = 'token.initialized'"));
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 1, "one audit entry: {text}");
    assert!(
        text.contains(&format!("\"previous_serial\":\"{}\"", desk.serial))
            && text.contains(&format!("\"serial\":\"{wiped}\"")),
        "{text}"
    );
    // The same request id for another token is another request.
    let mut other = init();
    other.label = "other".into();
    let refused = station.initialize_token(other).await.unwrap_err();
    assert!(matches!(refused, TokenError::AlreadyExists(_)), "{refused}");
}

async fn a_token_initialised_by_another_program_is_found_without_a_restart(kind: ModuleKind) {
    common::trace();
    let softhsm = SoftHsm::new_on(kind, &[(USB, USB_SO, USB_PIN)]);
    let store: Arc<dyn Store> = Arc::new(
        signet::store::SqliteStore::open(&softhsm.dir.path().join("workstation.db")).unwrap(),
    );
    // A workstation whose token module serves no CA, so it may re-read the module.
    let station = Workstation::new(
        vec![Arc::new(signet::hsm::token::TokenModule::open(
            &softhsm.module,
        ))],
        store,
        Arc::new(NoIssuer),
        policy(),
        ACTOR,
    );
    let before = station.list_tokens().await.unwrap();
    assert_eq!(
        before.iter().filter(|t| t.info.initialized).count(),
        1,
        "{before:#?}"
    );
    // Another program initialises a token while the workstation runs.
    softhsm.init_token("elsewhere", USB_SO, USB_PIN);
    let serial = softhsm.token_serial("elsewhere");
    let objects = station
        .read_token(&serial, Some(Secret::new(USB_PIN.into())))
        .await
        .unwrap_or_else(|e| panic!("token {serial} initialised elsewhere: {e}"));
    assert!(objects.is_empty(), "{objects:#?}");
    let after = station.list_tokens().await.unwrap();
    let t = after
        .iter()
        .find(|t| t.info.serial == serial)
        .unwrap_or_else(|| panic!("listed: {after:#?}"));
    assert!(t.info.initialized && t.info.user_pin_initialized, "{t:#?}");
    assert_eq!(t.info.label, "elsewhere");
}

// Every test above runs on SoftHSM (`softhsm::NAME`) and on kryoptic (`kryoptic::NAME`).
common::on_both_modules!(
    personalised_token_holds_a_linked_sign_only_key_and_a_verifiable_certificate_for_rsa_p256_p384,
    a_ca_refusal_after_key_generation_leaves_no_key_on_the_token,
    a_failure_after_issuance_is_finished_by_a_retry_with_one_certificate_per_request_id,
    wrong_pin_until_locked_then_unblock_with_the_so_pin_then_personalise,
    change_pin_then_the_new_pin_logs_in_and_the_old_one_fails,
    initialising_a_token_with_a_valid_certificate_is_refused_without_force,
    the_remote_issuer_personalises_through_a_second_signet_serve_over_mtls,
    signet_serve_offers_the_token_service_to_the_cli_of_a_desk_granted_token,
    a_token_pulled_out_mid_way_gives_a_clear_error_and_a_retry_finishes_once_it_is_back,
    ed25519_keys_are_personalised_where_the_token_and_the_policy_allow_them,
    a_key_that_demands_a_login_per_signature_gets_the_context_specific_login,
    a_blank_token_is_initialised_by_its_slot_handle_and_personalised_under_its_cn_and_profile,
    an_interrupted_initialisation_is_finished_by_a_retry_and_never_repeated,
    a_token_initialised_by_another_program_is_found_without_a_restart,
);

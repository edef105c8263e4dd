//! The module through cryptoki, as signet uses it: tokens and PINs, SM2 signatures checked
//! by the sm2 crate, sensitive attributes, persistence, concurrency, certificates.

mod support;

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, CertificateType, ObjectClass};
use cryptoki::session::{SessionState, UserType};
use cryptoki::types::AuthPin;
use sm2::dsa::signature::Verifier;
use sm2_softtoken::vendor::{self, CKM_SM2, CKM_SM2_ENCRYPT, CKM_SM2_SM3};
use support::*;

fn rv(e: Error) -> RvError {
    match e {
        Error::Pkcs11(rv, _) => rv,
        other => panic!("not a PKCS#11 error: {other}"),
    }
}

#[test]
fn a_token_is_made_in_the_free_slot_and_its_pins_are_checked() {
    let f = Fixture::new();
    assert_eq!(
        f.pkcs11.get_slots_with_token().expect("slots").len(),
        1,
        "one free slot"
    );
    let slot = f.token("signet-sm2");
    let slots = f.pkcs11.get_slots_with_token().expect("slots");
    assert_eq!(slots.len(), 2, "the token's slot and a new free slot");
    let info = f.pkcs11.get_token_info(slot).expect("token info");
    assert_eq!(info.label(), "signet-sm2");
    assert!(
        info.token_initialized()
            && info.user_pin_initialized()
            && info.login_required()
            && info.rng()
    );
    assert_eq!(info.serial_number().len(), 16);

    let session = f.pkcs11.open_rw_session(slot).expect("session");
    let wrong = session.login(UserType::User, Some(&AuthPin::new("user-9999".into())));
    assert_eq!(rv(wrong.expect_err("wrong PIN")), RvError::PinIncorrect);
    session
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .expect("login");
    let again = session.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())));
    assert_eq!(
        rv(again.expect_err("second login")),
        RvError::UserAlreadyLoggedIn
    );

    // The login belongs to the application: a second session is logged in too.
    let other = f.pkcs11.open_ro_session(slot).expect("second session");
    assert_eq!(
        other.get_session_info().expect("info").session_state(),
        SessionState::RoUser
    );

    session
        .set_pin(
            &AuthPin::new(USER_PIN.into()),
            &AuthPin::new("new-user-pin".into()),
        )
        .expect("C_SetPIN");
    session.logout().expect("logout");
    let old = session.login(UserType::User, Some(&AuthPin::new(USER_PIN.into())));
    assert_eq!(rv(old.expect_err("old PIN")), RvError::PinIncorrect);
    session
        .login(UserType::User, Some(&AuthPin::new("new-user-pin".into())))
        .expect("new PIN");
}

#[test]
fn an_sm2_sm3_signature_verifies_with_the_sm2_crate_and_the_default_id() {
    let f = Fixture::new();
    let slot = f.token("sm2");
    let session = f.user_session(slot);
    let (public, private) = sm2_key_pair(&session, &[1], "ca-key");
    let point = public_point(&session, public);

    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::KeyType,
                AttributeType::EcParams,
                AttributeType::Local,
            ],
        )
        .expect("attributes");
    assert!(attrs.contains(&Attribute::KeyType(sm2_key_type())));
    assert!(attrs.contains(&Attribute::EcParams(vendor::SM2P256V1_PARAMS.to_vec())));
    assert!(attrs.contains(&Attribute::Local(true)));

    let tbs = b"TBSCertificate bytes";
    let sig = session
        .sign(&vendor_mech::<u8>(CKM_SM2_SM3, None), private, tbs)
        .expect("C_Sign");
    assert_eq!(sig.len(), 64, "raw r||s");
    let vk = sm2::dsa::VerifyingKey::from_sec1_bytes("1234567812345678", &point).expect("key");
    vk.verify(tbs, &sm2::dsa::Signature::from_slice(&sig).expect("sig"))
        .expect("sm2 crate verifies");

    // A distinguishing ID given as the mechanism parameter.
    let id = b"alice@example.cn";
    let sig = session
        .sign(&vendor_mech(CKM_SM2_SM3, Some(id)), private, tbs)
        .expect("C_Sign with ID");
    let vk = sm2::dsa::VerifyingKey::from_sec1_bytes("alice@example.cn", &point).expect("key");
    vk.verify(tbs, &sm2::dsa::Signature::from_slice(&sig).expect("sig"))
        .expect("verifies with the ID");

    // The token verifies too, and multi-part signing gives a valid signature.
    session
        .sign_init(&vendor_mech::<u8>(CKM_SM2_SM3, None), private)
        .expect("C_SignInit");
    session.sign_update(b"TBSCertificate ").expect("update");
    session.sign_update(b"bytes").expect("update");
    let sig = session.sign_final().expect("C_SignFinal");
    session
        .verify(&vendor_mech::<u8>(CKM_SM2_SM3, None), public, tbs, &sig)
        .expect("C_Verify");
    let mut bad = sig.clone();
    bad[10] ^= 1;
    let refused = session.verify(&vendor_mech::<u8>(CKM_SM2_SM3, None), public, tbs, &bad);
    assert_eq!(
        rv(refused.expect_err("tampered")),
        RvError::SignatureInvalid
    );
}

#[test]
fn raw_sm2_signs_an_e_computed_on_the_host() {
    let f = Fixture::new();
    let slot = f.token("sm2");
    let session = f.user_session(slot);
    let (public, private) = sm2_key_pair(&session, &[2], "raw");
    let point: [u8; 65] = public_point(&session, public).try_into().expect("65 bytes");
    use sm3::Digest;
    let za = sm2_softtoken::mechanisms::sm2_za(vendor::DEFAULT_SM2_ID, &point).expect("ZA");
    let e = sm3::Sm3::new()
        .chain_update(za)
        .chain_update(b"message")
        .finalize();
    let sig = session
        .sign(&vendor_mech::<u8>(CKM_SM2, None), private, &e)
        .expect("C_Sign CKM_SM2");
    let vk = sm2::dsa::VerifyingKey::from_sec1_bytes("1234567812345678", &point).expect("key");
    vk.verify(
        b"message",
        &sm2::dsa::Signature::from_slice(&sig).expect("sig"),
    )
    .expect("a raw signature over the host's e is the SM2 signature of the message");
    let short = session.sign(&vendor_mech::<u8>(CKM_SM2, None), private, &e[..31]);
    assert_eq!(rv(short.expect_err("31 bytes")), RvError::DataLenRange);
}

#[test]
fn private_key_material_is_sensitive_and_absent_attributes_are_invalid() {
    let f = Fixture::new();
    let slot = f.token("sm2");
    let session = f.user_session(slot);
    let (_, private) = sm2_key_pair(&session, &[3], "k");
    let info = session
        .get_attribute_info(
            private,
            &[
                AttributeType::Value,
                AttributeType::Modulus,
                AttributeType::Label,
            ],
        )
        .expect("C_GetAttributeValue");
    assert!(
        matches!(
            info.as_slice(),
            [
                AttributeInfo::Sensitive,
                AttributeInfo::TypeInvalid,
                AttributeInfo::Available(1)
            ]
        ),
        "{info:?}"
    );
    let attrs = session
        .get_attributes(
            private,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ],
        )
        .expect("flags");
    assert_eq!(
        attrs,
        vec![
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::AlwaysSensitive(true),
            Attribute::NeverExtractable(true)
        ]
    );
    // Private keys are not imported: keys are born on the token.
    let import = session.create_object(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(sm2_key_type()),
        Attribute::Value(vec![7; 32]),
    ]);
    assert_eq!(
        rv(import.expect_err("import")),
        RvError::AttributeValueInvalid
    );
}

#[test]
fn keys_persist_across_initialize_and_are_unusable_without_login() {
    let mut f = Fixture::new();
    let slot = f.token("sm2");
    let point = {
        let session = f.user_session(slot);
        let (public, _) = sm2_key_pair(&session, &[4], "persistent");
        public_point(&session, public)
    };
    f.reload();
    let session = f.pkcs11.open_rw_session(slot).expect("session");
    assert!(
        find(&session, ObjectClass::PRIVATE_KEY, "persistent").is_empty(),
        "private objects hidden before login"
    );
    assert_eq!(
        find(&session, ObjectClass::PUBLIC_KEY, "persistent").len(),
        1
    );
    session
        .login(UserType::User, Some(&AuthPin::new(USER_PIN.into())))
        .expect("login");
    let private = find(&session, ObjectClass::PRIVATE_KEY, "persistent");
    assert_eq!(private.len(), 1);
    let sig = session
        .sign(&vendor_mech::<u8>(CKM_SM2_SM3, None), private[0], b"m")
        .expect("sign after restart");
    let vk = sm2::dsa::VerifyingKey::from_sec1_bytes("1234567812345678", &point).expect("key");
    vk.verify(b"m", &sm2::dsa::Signature::from_slice(&sig).expect("sig"))
        .expect("same key");
    session.logout().expect("logout");
    let refused = session.sign(&vendor_mech::<u8>(CKM_SM2_SM3, None), private[0], b"m");
    assert_eq!(
        rv(refused.expect_err("logged out")),
        RvError::UserNotLoggedIn
    );

    // At rest the key is sealed: nonce (12) + AES-GCM of the 32-byte scalar + tag (16).
    let db =
        rusqlite::Connection::open(f.dir.path().join(sm2_softtoken::store::DB_FILE)).expect("db");
    let sealed: Vec<Vec<u8>> = db
        .prepare("SELECT secret FROM objects WHERE secret IS NOT NULL")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("secrets");
    assert_eq!(
        sealed.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![12 + 32 + 16]
    );
}

#[test]
fn two_threads_sign_concurrently() {
    let f = Fixture::new();
    let slot = f.token("sm2");
    // The login lives as long as one session does (as signet keeps one open).
    let login = f.user_session(slot);
    let (public, private) = sm2_key_pair(&login, &[5], "shared");
    let point = public_point(&login, public);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let pkcs11 = f.pkcs11.clone();
            std::thread::spawn(move || {
                let session = pkcs11.open_rw_session(slot).expect("session");
                (0..50)
                    .map(|i| {
                        let msg = format!("thread {t} message {i}").into_bytes();
                        let sig = session
                            .sign(&vendor_mech::<u8>(CKM_SM2_SM3, None), private, &msg)
                            .expect("sign");
                        (msg, sig)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let vk = sm2::dsa::VerifyingKey::from_sec1_bytes("1234567812345678", &point).expect("key");
    for t in threads {
        for (msg, sig) in t.join().expect("thread") {
            vk.verify(&msg, &sm2::dsa::Signature::from_slice(&sig).expect("sig"))
                .expect("verifies");
        }
    }
}

#[test]
fn certificates_are_created_found_relabelled_and_destroyed() {
    let f = Fixture::new();
    let slot = f.token("sm2");
    let cert = [
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Id(vec![9]),
        Attribute::Label("ca-cert".into()),
        Attribute::Value(b"not parsed by the token".to_vec()),
    ];
    let ro = f.pkcs11.open_ro_session(slot).expect("ro session");
    assert_eq!(
        rv(ro.create_object(&cert).expect_err("read-only")),
        RvError::SessionReadOnly
    );
    let session = f.pkcs11.open_rw_session(slot).expect("session");
    let handle = session.create_object(&cert).expect("C_CreateObject");
    assert_eq!(
        ro.find_objects(&[Attribute::Id(vec![9])]).expect("find"),
        vec![handle]
    );
    session
        .update_attributes(handle, &[Attribute::Label("renamed".into())])
        .expect("C_SetAttributeValue");
    assert_eq!(find(&ro, ObjectClass::CERTIFICATE, "renamed"), vec![handle]);
    let value = session
        .get_attributes(handle, &[AttributeType::Value])
        .expect("value");
    assert_eq!(
        value,
        vec![Attribute::Value(b"not parsed by the token".to_vec())]
    );
    session.destroy_object(handle).expect("C_DestroyObject");
    assert!(
        ro.find_objects(&[Attribute::Id(vec![9])])
            .expect("find")
            .is_empty()
    );
}

#[test]
fn sm2_encryption_round_trips() {
    let f = Fixture::new();
    let slot = f.token("sm2");
    let session = f.user_session(slot);
    let public = [Attribute::Token(false), Attribute::Encrypt(true)];
    let private = [Attribute::Token(false), Attribute::Decrypt(true)];
    let (public, private) = session
        .generate_key_pair(
            &vendor_mech::<u8>(vendor::CKM_SM2_KEY_PAIR_GEN, None),
            &public,
            &private,
        )
        .expect("session key pair");
    let ct = session
        .encrypt(
            &vendor_mech::<u8>(CKM_SM2_ENCRYPT, None),
            public,
            b"sm4 key 16 bytes",
        )
        .expect("encrypt");
    assert_eq!(ct[0], 0x30, "GM/T 0009 DER SM2Cipher");
    let pt = session
        .decrypt(&vendor_mech::<u8>(CKM_SM2_ENCRYPT, None), private, &ct)
        .expect("decrypt");
    assert_eq!(pt, b"sm4 key 16 bytes");
}

#[test]
fn p256_and_rsa_keys_sign_and_verify() {
    let f = Fixture::new();
    let slot = f.token("mixed");
    let session = f.user_session(slot);
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::EcParams(vendor::PRIME256V1_PARAMS.to_vec()),
                Attribute::Verify(true),
            ],
            &[Attribute::Sign(true)],
        )
        .expect("P-256 key pair");
    let sig = session
        .sign(&Mechanism::EcdsaSha256, private, b"tbs")
        .expect("ECDSA-SHA256");
    session
        .verify(&Mechanism::EcdsaSha256, public, b"tbs", &sig)
        .expect("verifies");
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            &[Attribute::Sign(true)],
        )
        .expect("RSA key pair");
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, private, b"tbs")
        .expect("SHA256-RSA-PKCS");
    assert_eq!(sig.len(), 256);
    session
        .verify(&Mechanism::Sha256RsaPkcs, public, b"tbs", &sig)
        .expect("verifies");
}

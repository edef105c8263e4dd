//! Test fixtures: the built module, a private token store per test, an initialised token.
//!
//! The module reads `SIGNET_SM2_SOFTTOKEN_DIR` at C_Initialize and keeps one state per
//! process, like SoftHSM: tests run one per process under cargo-nextest (signet's test
//! command); under plain `cargo test` they serialise on [`LOCK`].
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sm2_softtoken::vendor;
use tempfile::TempDir;

/// PINs of the fixture token.
pub const SO_PIN: &str = "so-pin-12345678";
/// See [`SO_PIN`].
pub const USER_PIN: &str = "user-1234";

static LOCK: Mutex<()> = Mutex::new(());

/// The module's path: `SM2_SOFTTOKEN_TEST_MODULE` if set, else the cdylib Cargo built
/// with the library these tests link (the crate is both an rlib and a cdylib, and one rustc
/// run writes both into `<target>/<profile>/deps/`, so the module is never older than the
/// tests), else `<target>/<profile>/libsm2_softtoken.so` from a `cargo build`. If neither
/// exists, it is built once with `cargo build -p sm2-softtoken --lib` into the same target
/// directory and profile.
pub fn module_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("SM2_SOFTTOKEN_TEST_MODULE") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // <target>/<profile>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("profile directory");
        let beside_rlib = profile_dir.join("deps").join("libsm2_softtoken.so");
        if beside_rlib.exists() {
            return beside_rlib;
        }
        let so = profile_dir.join("libsm2_softtoken.so");
        if !so.exists() {
            let target = profile_dir.parent().expect("target directory");
            let profile = profile_dir
                .file_name()
                .and_then(|p| p.to_str())
                .expect("profile name");
            let profile = if profile == "debug" { "dev" } else { profile };
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-p",
                    "sm2-softtoken",
                    "--lib",
                    "--profile",
                    profile,
                    "--target-dir",
                ])
                .arg(target)
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build -p sm2-softtoken failed");
        }
        assert!(so.exists(), "{} missing", so.display());
        so
    })
    .clone()
}

/// A loaded, initialised module over a fresh store.
pub struct Fixture {
    /// The PKCS#11 context.
    pub pkcs11: Pkcs11,
    /// The store directory.
    pub dir: TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Fixture {
    /// Loads the module over a new empty store.
    pub fn new() -> Fixture {
        let serial = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = tempfile::tempdir().expect("temp dir");
        // SAFETY: the tests of this process hold LOCK, and no other thread of the test
        // reads the environment while it is set.
        unsafe { std::env::set_var("SIGNET_SM2_SOFTTOKEN_DIR", dir.path()) };
        let pkcs11 = load();
        Fixture {
            pkcs11,
            dir,
            _serial: serial,
        }
    }

    /// Finalises and loads the module again (a restart of the application).
    pub fn reload(&mut self) {
        let old = std::mem::replace(&mut self.pkcs11, load_uninitialised());
        old.finalize().expect("C_Finalize");
        self.pkcs11
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize again");
    }

    /// Initialises a token in the free slot with the fixture PINs; returns its slot.
    pub fn token(&self, label: &str) -> Slot {
        let free = self
            .pkcs11
            .get_slots_with_token()
            .expect("slots")
            .into_iter()
            .find(|s| {
                !self
                    .pkcs11
                    .get_token_info(*s)
                    .expect("token info")
                    .token_initialized()
            })
            .expect("a free slot");
        self.pkcs11
            .init_token(free, &AuthPin::new(SO_PIN.into()), label)
            .expect("C_InitToken");
        let session = self.pkcs11.open_rw_session(free).expect("session");
        session
            .login(UserType::So, Some(&AuthPin::new(SO_PIN.into())))
            .expect("SO login");
        session
            .init_pin(&AuthPin::new(USER_PIN.into()))
            .expect("C_InitPIN");
        session.logout().expect("logout");
        free
    }

    /// A read/write session logged in as the user.
    pub fn user_session(&self, slot: Slot) -> Session {
        let session = self.pkcs11.open_rw_session(slot).expect("session");
        match session.login(UserType::User, Some(&AuthPin::new(USER_PIN.into()))) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("user login: {e}"),
        }
        session
    }
}

fn load_uninitialised() -> Pkcs11 {
    Pkcs11::new(module_path()).expect("load libsm2_softtoken.so")
}

fn load() -> Pkcs11 {
    let p = load_uninitialised();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    p
}

/// A vendor mechanism, with an optional parameter.
pub fn vendor_mech<T>(m: cryptoki_sys::CK_MECHANISM_TYPE, param: Option<&T>) -> Mechanism<'_> {
    let t = MechanismType::new_vendor_defined(m).expect("vendor mechanism");
    Mechanism::VendorDefined(VendorDefinedMechanism::new(t, param))
}

/// The SM2 key type.
pub fn sm2_key_type() -> KeyType {
    KeyType::new_vendor_defined(vendor::CKK_SM2).expect("vendor key type")
}

/// Generates an SM2 key pair on the token (both halves token objects).
pub fn sm2_key_pair(session: &Session, id: &[u8], label: &str) -> (ObjectHandle, ObjectHandle) {
    let public = [
        Attribute::Token(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.into()),
        Attribute::Verify(true),
        Attribute::EcParams(vendor::SM2P256V1_PARAMS.to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.into()),
        Attribute::Sign(true),
    ];
    session
        .generate_key_pair(
            &vendor_mech::<u8>(vendor::CKM_SM2_KEY_PAIR_GEN, None),
            &public,
            &private,
        )
        .expect("C_GenerateKeyPair SM2")
}

/// The uncompressed point of an EC/SM2 public key object.
pub fn public_point(session: &Session, public: ObjectHandle) -> Vec<u8> {
    let attrs = session
        .get_attributes(public, &[AttributeType::EcPoint])
        .expect("CKA_EC_POINT");
    let Some(Attribute::EcPoint(der)) = attrs.first() else {
        panic!("no CKA_EC_POINT")
    };
    assert_eq!(&der[..2], &[0x04, 65], "DER OCTET STRING of 65 bytes");
    der[2..].to_vec()
}

/// Finds objects by class and label.
pub fn find(session: &Session, class: ObjectClass, label: &str) -> Vec<ObjectHandle> {
    session
        .find_objects(&[Attribute::Class(class), Attribute::Label(label.into())])
        .expect("C_FindObjects")
}

/// The SubjectPublicKeyInfo (PEM) of an SM2 point, for OpenSSL.
pub fn sm2_spki_pem(point: &[u8]) -> String {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, sm2p256v1 }, BIT STRING 04‖x‖y }
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    ];
    der.extend_from_slice(vendor::SM2P256V1_PARAMS);
    der.extend_from_slice(&[0x03, 0x42, 0x00]);
    der.extend_from_slice(point);
    let b64 = base64(&der);
    let lines: Vec<_> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// DER ECDSA-Sig-Value of a raw r‖s signature (what OpenSSL verifies).
pub fn der_signature(raw: &[u8]) -> Vec<u8> {
    fn integer(x: &[u8]) -> Vec<u8> {
        let start = x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1);
        let mut v = x[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    let body = [integer(&raw[..32]), integer(&raw[32..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

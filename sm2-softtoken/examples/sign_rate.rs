//! Measures the module's direct signing rate through cryptoki (C_SignInit + C_Sign, as
//! signet calls it): CKM_SM2_SM3 and CKM_SM2 on one and two threads, one session each.
//!
//! cargo build --release -p sm2-softtoken && \
//!   cargo run --release -p sm2-softtoken --example sign_rate -- [path/to/libsm2_softtoken.so] [seconds]

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sm2_softtoken::vendor;

fn mech(m: cryptoki_sys::CK_MECHANISM_TYPE) -> Mechanism<'static> {
    let t = MechanismType::new_vendor_defined(m).expect("vendor mechanism");
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<u8>(t, None))
}

fn rate(
    pkcs11: &Pkcs11,
    slot: Slot,
    key: ObjectHandle,
    m: cryptoki_sys::CK_MECHANISM_TYPE,
    threads: usize,
    secs: f64,
) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let pkcs11 = pkcs11.clone();
            std::thread::spawn(move || {
                let session = pkcs11.open_rw_session(slot).expect("session");
                let input = [0x5au8; 32];
                let mut n = 0u64;
                let until = Instant::now() + Duration::from_secs_f64(secs);
                while Instant::now() < until {
                    session.sign(&mech(m), key, &input).expect("sign");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let module = args
        .next()
        .unwrap_or_else(|| "target/release/libsm2_softtoken.so".into());
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let dir = tempfile::tempdir().expect("temp dir");
    // SAFETY: set before the module is loaded and before any thread starts.
    unsafe { std::env::set_var("SIGNET_SM2_SOFTTOKEN_DIR", dir.path()) };
    let pkcs11 = Pkcs11::new(&module).expect("load module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = pkcs11.get_slots_with_token().expect("slots")[0];
    pkcs11
        .init_token(slot, &AuthPin::new("so-pin-1234".into()), "rate")
        .expect("init token");
    let login = pkcs11.open_rw_session(slot).expect("session");
    login
        .login(UserType::So, Some(&AuthPin::new("so-pin-1234".into())))
        .expect("so login");
    login
        .init_pin(&AuthPin::new("user-1234".into()))
        .expect("init pin");
    login.logout().expect("logout");
    login
        .login(UserType::User, Some(&AuthPin::new("user-1234".into())))
        .expect("login");
    let (_, key) = login
        .generate_key_pair(
            &mech(vendor::CKM_SM2_KEY_PAIR_GEN),
            &[Attribute::Token(true)],
            &[Attribute::Token(true), Attribute::Sign(true)],
        )
        .expect("key pair");
    for (name, m) in [
        ("CKM_SM2_SM3", vendor::CKM_SM2_SM3),
        ("CKM_SM2", vendor::CKM_SM2),
    ] {
        for threads in [1, 2] {
            let r = rate(&pkcs11, slot, key, m, threads, secs);
            println!("{name:12} {threads} thread(s): {r:8.0} signatures/s");
        }
    }
}

//! The HSM's own signing rate, the ceiling every figure of `signet bench` is a ratio to:
//! a direct loop on the PKCS#11 API (cryptoki), one OS thread per session, `C_SignInit` and
//! `C_Sign` in a tight loop over a certificate-sized message (hashed once, where the
//! mechanism takes a digest), with no async runtime and no signet layer in between. Only the
//! mechanism table is signet's, so the loop signs exactly what signet signs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

use signet::hsm::HsmSettings;
use signet::pki::SignatureAlgorithm;

/// Signatures per second made by `sessions` OS threads, each with a session of its own on
/// the token `settings` names, signing with the private key labelled `key_label` for
/// `duration`. The module is initialised for this run and finalised after it, so no other
/// context of this process may be open meanwhile.
pub fn direct_signing_rate(
    settings: &HsmSettings,
    key_label: &str,
    alg: SignatureAlgorithm,
    sessions: usize,
    duration: Duration,
) -> Result<f64, String> {
    let pkcs11 = Pkcs11::new(&settings.module)
        .map_err(|e| format!("loading {}: {e}", settings.module.display()))?;
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| format!("C_Initialize: {e}"))?;
    let result = run(&pkcs11, settings, key_label, alg, sessions.max(1), duration);
    pkcs11.finalize().map_err(|e| format!("C_Finalize: {e}"))?;
    result
}

fn run(
    pkcs11: &Pkcs11,
    settings: &HsmSettings,
    key_label: &str,
    alg: SignatureAlgorithm,
    sessions: usize,
    duration: Duration,
) -> Result<f64, String> {
    let slot = pkcs11
        .get_slots_with_token()
        .map_err(|e| format!("C_GetSlotList: {e}"))?
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .is_ok_and(|t| settings.token.matches(t.label(), t.serial_number()))
        })
        .ok_or_else(|| {
            format!(
                "no token {} in {}",
                settings.token,
                settings.module.display()
            )
        })?;
    // One session holds the login for the application; each thread signs in its own.
    let login = pkcs11
        .open_ro_session(slot)
        .map_err(|e| format!("C_OpenSession: {e}"))?;
    login
        .login(
            UserType::User,
            Some(&AuthPin::new(settings.pin.expose().into())),
        )
        .map_err(|e| format!("C_Login: {e}"))?;
    let mut workers: Vec<(cryptoki::session::Session, ObjectHandle)> = Vec::new();
    for _ in 0..sessions {
        let session = pkcs11
            .open_ro_session(slot)
            .map_err(|e| format!("C_OpenSession: {e}"))?;
        let key = find_key(&session, key_label)?;
        workers.push((session, key));
    }
    // About the size of a subscriber TBSCertificate; a digest-taking mechanism gets its
    // digest once, outside the loop.
    let message = vec![0x5au8; 900];
    let sm2 = settings.sm2.as_ref();
    let point = match sm2 {
        Some(s) if alg == SignatureAlgorithm::Sm2Sm3 && s.needs_public_point() => {
            Some(sm2_point(&login, key_label)?)
        }
        _ => None,
    };
    let data = signet::hsm::mechanism(alg, &message, sm2, point.as_deref())?
        .1
        .into_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let signed = Arc::new(AtomicU64::new(0));
    let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for (session, key) in workers.drain(..) {
            let (stop, signed, failure) = (stop.clone(), signed.clone(), failure.clone());
            let data = &data;
            let point = point.as_deref();
            scope.spawn(move || {
                // The mechanism alone (its parameters do not depend on the message).
                let Ok((mechanism, _)) = signet::hsm::mechanism(alg, &[], sm2, point) else {
                    return;
                };
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Err(e) = session.sign(&mechanism, key, data) {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert_with(|| format!("C_Sign: {e}"));
                        }
                        break;
                    }
                    n += 1;
                }
                signed.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    drop(login);
    Ok(signed.load(Ordering::Relaxed) as f64 / elapsed)
}

/// The uncompressed point (04 ‖ x ‖ y) of the SM2 public key labelled `label`, for Z.
fn sm2_point(session: &cryptoki::session::Session, label: &str) -> Result<Vec<u8>, String> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| format!("C_FindObjects: {e}"))?;
    let handle = found
        .first()
        .ok_or_else(|| format!("no public key labelled {label:?}"))?;
    let attrs = session
        .get_attributes(*handle, &[AttributeType::EcPoint])
        .map_err(|e| format!("C_GetAttributeValue: {e}"))?;
    match attrs.first() {
        // DER OCTET STRING of 65 bytes, or the bare point.
        Some(Attribute::EcPoint(p)) if p.len() == 67 && p[..2] == [0x04, 0x41] => {
            Ok(p[2..].to_vec())
        }
        Some(Attribute::EcPoint(p)) if p.len() == 65 => Ok(p.clone()),
        _ => Err(format!("the public key {label:?} has no SM2 point")),
    }
}

fn find_key(session: &cryptoki::session::Session, label: &str) -> Result<ObjectHandle, String> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| format!("C_FindObjects: {e}"))?;
    found
        .first()
        .copied()
        .ok_or_else(|| format!("no private key labelled {label:?}"))
}

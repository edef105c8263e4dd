//! The PKCS#11 C API: every exported function, and the only code that touches a caller's
//! raw pointers.
//!
//! Each entry point checks its pointers and lengths (CKR_ARGUMENTS_BAD), runs the safe code
//! in [`crate::token`] inside `catch_unwind` (a panic becomes CKR_GENERAL_ERROR and never
//! crosses into C), and writes results back with PKCS#11's length-query conventions.
//! Functions the token does not offer return CKR_FUNCTION_NOT_SUPPORTED.
//!
//! Safety contract of every `unsafe extern "C"` function here: PKCS#11's. Pointers the
//! caller passes are null or valid for the lengths it gives, for the duration of the call.
#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use cryptoki_sys::*;

use crate::mechanisms;
use crate::objects::{SENSITIVE_ATTRS, Template};
use crate::token::{self, MAX_PIN_LEN, MIN_PIN_LEN, lock};

/// Runs an entry point's body: errors become their CK_RV, a panic CKR_GENERAL_ERROR.
fn guard(f: impl FnOnce() -> Result<(), CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

fn len(n: CK_ULONG) -> Result<usize, CK_RV> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= isize::MAX as usize)
        .ok_or(CKR_ARGUMENTS_BAD)
}

/// The caller's input bytes; null is allowed only with length 0.
unsafe fn bytes<'a>(p: *const CK_BYTE, n: CK_ULONG) -> Result<&'a [u8], CK_RV> {
    let n = len(n)?;
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, and the caller vouches for `n` readable bytes (PKCS#11 contract).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A PIN: the protected authentication path (null PIN) is not offered.
unsafe fn pin<'a>(p: *const CK_UTF8CHAR, n: CK_ULONG) -> Result<&'a [u8], CK_RV> {
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: as for `bytes`.
    unsafe { bytes(p, n) }
}

/// An output structure the caller provides.
unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T, CK_RV> {
    // SAFETY: the caller vouches that a non-null pointer is valid and writable.
    unsafe { p.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)
}

/// Copies an input template out of the caller's memory.
unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Template, CK_RV> {
    let n = len(n)?;
    if n == 0 {
        return Ok(Template::default());
    }
    if p.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-null, and the caller vouches for `n` attributes.
    let attrs = unsafe { std::slice::from_raw_parts(p, n) };
    let mut t = Template(Vec::with_capacity(n));
    for a in attrs {
        // SAFETY: as for `bytes`, per attribute.
        let v = unsafe { bytes(a.pValue as *const u8, a.ulValueLen) }?;
        t.0.push((a.type_, v.to_vec()));
    }
    Ok(t)
}

/// A mechanism and its parameter bytes.
unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<(CK_MECHANISM_TYPE, Vec<u8>), CK_RV> {
    // SAFETY: the caller vouches that a non-null pointer is a valid CK_MECHANISM.
    let m = unsafe { p.as_ref() }.ok_or(CKR_ARGUMENTS_BAD)?;
    // SAFETY: as for `bytes`.
    let param = unsafe { bytes(m.pParameter as *const u8, m.ulParameterLen) }?;
    Ok((m.mechanism, param.to_vec()))
}

/// Writes a list with PKCS#11's conventions: null list = count only; too short =
/// CKR_BUFFER_TOO_SMALL with the count needed.
unsafe fn write_list<T: Copy>(
    list: *mut T,
    count: *mut CK_ULONG,
    items: &[T],
) -> Result<(), CK_RV> {
    // SAFETY: caller-provided output.
    let count = unsafe { out(count) }?;
    let have = len(*count);
    *count = items.len() as CK_ULONG;
    if list.is_null() {
        return Ok(());
    }
    if have? < items.len() {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: `list` is non-null and the caller said it holds `have` >= items.len() entries.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), list, items.len()) };
    Ok(())
}

/// Writes an output buffer with PKCS#11's conventions. `Ok(true)` when the bytes were
/// written (the operation is over); `Ok(false)` for a length query and
/// `Err(CKR_BUFFER_TOO_SMALL)` for a short buffer (the operation goes on).
unsafe fn write_output(
    buf: *mut CK_BYTE,
    buf_len: *mut CK_ULONG,
    data: &[u8],
) -> Result<bool, CK_RV> {
    // SAFETY: caller-provided output.
    let buf_len = unsafe { out(buf_len) }?;
    let have = *buf_len;
    *buf_len = data.len() as CK_ULONG;
    if buf.is_null() {
        return Ok(false);
    }
    if len(have)? < data.len() {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: `buf` is non-null and holds `have` >= data.len() bytes (caller's word).
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
    Ok(true)
}

/// Ends a single-part output (C_Sign, C_Encrypt, ...) the PKCS#11 way: the operation
/// survives a length query and a short buffer, and ends on anything else.
fn finish<Op>(
    slot: &mut Option<Op>,
    buf: *mut CK_BYTE,
    buf_len: *mut CK_ULONG,
    compute: impl FnOnce(&mut Op) -> Result<&[u8], CK_RV>,
) -> Result<(), CK_RV> {
    let op = slot.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
    // SAFETY: the entry point's caller provided `buf` and `buf_len`.
    let result = compute(op).and_then(|data| unsafe { write_output(buf, buf_len, data) });
    if !matches!(result, Ok(false) | Err(CKR_BUFFER_TOO_SMALL)) {
        *slot = None;
    }
    result.map(|_| ())
}

/// A blank-padded fixed-size PKCS#11 string.
fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let n = s.len().min(N);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

const VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

// ---------------------------------------------------------------------------------------
// General purpose
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Initialize(args: *mut c_void) -> CK_RV {
    guard(|| {
        // SAFETY: null or a CK_C_INITIALIZE_ARGS, per PKCS#11.
        if let Some(a) = unsafe { (args as *const CK_C_INITIALIZE_ARGS).as_ref() } {
            if !a.pReserved.is_null() {
                return Err(CKR_ARGUMENTS_BAD);
            }
            let given = [
                a.CreateMutex.is_some(),
                a.DestroyMutex.is_some(),
                a.LockMutex.is_some(),
                a.UnlockMutex.is_some(),
            ];
            if given.contains(&true) && given.contains(&false) {
                return Err(CKR_ARGUMENTS_BAD);
            }
            // Only the operating system's locks are used: mutex callbacks without
            // CKF_OS_LOCKING_OK cannot be honoured.
            if given[0] && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(CKR_CANT_LOCK);
            }
        }
        token::initialize()
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Finalize(reserved: *mut c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        token::finalize()
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    guard(|| {
        token::module()?;
        // SAFETY: caller-provided output.
        let info = unsafe { out(info) }?;
        *info = CK_INFO {
            cryptokiVersion: CK_VERSION {
                major: 2,
                minor: 40,
            },
            manufacturerID: padded("signet"),
            flags: 0,
            libraryDescription: padded("signet SM2 soft token"),
            libraryVersion: VERSION,
        };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        // SAFETY: caller-provided output.
        let list = unsafe { out(list) }?;
        // Callers only read the table (PKCS#11: it must not be modified).
        *list = &FUNCTION_LIST as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Slots and tokens
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSlotList(
    _token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let slots = token::module()?.slot_list()?;
        // SAFETY: caller-provided outputs.
        unsafe { write_list(list, count, &slots) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        if !token::module()?.slot_exists(slot)? {
            return Err(CKR_SLOT_ID_INVALID);
        }
        // SAFETY: caller-provided output.
        let info = unsafe { out(info) }?;
        *info = CK_SLOT_INFO {
            slotDescription: padded("signet SM2 soft token slot"),
            manufacturerID: padded("signet"),
            flags: CKF_TOKEN_PRESENT,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
        };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    guard(|| {
        let status = token::module()?.token_status(slot)?;
        // SAFETY: caller-provided output.
        let info = unsafe { out(info) }?;
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED;
        let (mut label, mut serial) = ([b' '; 32], [b' '; 16]);
        if let Some(t) = &status.token {
            flags |= CKF_TOKEN_INITIALIZED;
            if t.user_wrap.is_some() {
                flags |= CKF_USER_PIN_INITIALIZED;
            }
            label = t.label;
            serial = padded(&t.serial);
        }
        *info = CK_TOKEN_INFO {
            label,
            manufacturerID: padded("signet"),
            model: padded("sm2-softtoken"),
            serialNumber: serial,
            flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: status.sessions as CK_ULONG,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: status.rw_sessions as CK_ULONG,
            ulMaxPinLen: MAX_PIN_LEN as CK_ULONG,
            ulMinPinLen: MIN_PIN_LEN as CK_ULONG,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
            utcTime: [b' '; 16],
        };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        if !token::module()?.slot_exists(slot)? {
            return Err(CKR_SLOT_ID_INVALID);
        }
        let types: Vec<_> = mechanisms::mechanism_list()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        // SAFETY: caller-provided outputs.
        unsafe { write_list(list, count, &types) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        if !token::module()?.slot_exists(slot)? {
            return Err(CKR_SLOT_ID_INVALID);
        }
        let found = mechanisms::mechanism_list()
            .into_iter()
            .find(|(t, _)| *t == mech);
        let (_, i) = found.ok_or(CKR_MECHANISM_INVALID)?;
        // SAFETY: caller-provided output.
        *unsafe { out(info) }? = i;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_InitToken(
    slot: CK_SLOT_ID,
    so_pin: *mut CK_UTF8CHAR,
    so_pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        let so_pin = unsafe { pin(so_pin, so_pin_len) }?;
        if label.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: PKCS#11 defines the label as exactly 32 bytes, blank-padded.
        let label: [u8; 32] = unsafe { std::slice::from_raw_parts(label, 32) }
            .try_into()
            .map_err(|_| CKR_ARGUMENTS_BAD)?;
        m.init_token(slot, so_pin, &label)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_InitPIN(
    h: CK_SESSION_HANDLE,
    p: *mut CK_UTF8CHAR,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        m.init_pin(h, unsafe { pin(p, n) }?)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SetPIN(
    h: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided inputs.
        let (old, new) = unsafe { (pin(old, old_len)?, pin(new, new_len)?) };
        m.set_pin(h, old, new)
    })
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut c_void,
    _notify: CK_NOTIFY,
    h: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided output.
        let h = unsafe { out(h) }?;
        *h = m.open_session(slot, flags)?;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::module()?.close_session(h))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| token::module()?.close_all_sessions(slot))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetSessionInfo(
    h: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    guard(|| {
        let (slotID, state, flags) = token::module()?.session_info(h)?;
        // SAFETY: caller-provided output.
        *unsafe { out(info) }? = CK_SESSION_INFO {
            slotID,
            state,
            flags,
            ulDeviceError: 0,
        };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    p: *mut CK_UTF8CHAR,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        m.login(h, user, unsafe { pin(p, n) }?)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::module()?.logout(h))
}

// ---------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input and output.
        let (t, object) = unsafe { (template(t, n)?, out(object)?) };
        *object = m.create_object(h, &t)?;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DestroyObject(h: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> CK_RV {
    guard(|| token::module()?.destroy_object(h, object))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let (attrs, private_key) = token::module()?.attributes(h, object)?;
        let n = len(n)?;
        if n == 0 {
            return Ok(());
        }
        if t.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: non-null, and the caller vouches for `n` writable attributes.
        let t = unsafe { std::slice::from_raw_parts_mut(t, n) };
        let mut rv = CKR_OK;
        for a in t {
            if private_key && SENSITIVE_ATTRS.contains(&a.type_) {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_ATTRIBUTE_SENSITIVE;
                continue;
            }
            let Some(v) = attrs.get(&a.type_) else {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_ATTRIBUTE_TYPE_INVALID;
                continue;
            };
            if a.pValue.is_null() {
                a.ulValueLen = v.len() as CK_ULONG;
            } else if len(a.ulValueLen)? >= v.len() {
                // SAFETY: the caller says pValue holds ulValueLen >= v.len() bytes.
                unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len()) };
                a.ulValueLen = v.len() as CK_ULONG;
            } else {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_BUFFER_TOO_SMALL;
            }
        }
        if rv == CKR_OK { Ok(()) } else { Err(rv) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        let t = unsafe { template(t, n) }?;
        m.set_attributes(h, object, &t)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjectsInit(
    h: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        let t = unsafe { template(t, n) }?;
        m.find_init(h, &t)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    list: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        let max = len(max)?;
        // SAFETY: caller-provided output.
        let count = unsafe { out(count) }?;
        if list.is_null() && max > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let found = m.find_next(h, max)?;
        // SAFETY: the caller said `list` holds `max` >= found.len() handles.
        unsafe { std::ptr::copy_nonoverlapping(found.as_ptr(), list, found.len()) };
        *count = found.len() as CK_ULONG;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::module()?.find_final(h))
}

// ---------------------------------------------------------------------------------------
// Keys, signatures, encryption, digests
// ---------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    pub_t: *mut CK_ATTRIBUTE,
    pub_n: CK_ULONG,
    priv_t: *mut CK_ATTRIBUTE,
    priv_n: CK_ULONG,
    pub_h: *mut CK_OBJECT_HANDLE,
    priv_h: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided inputs and outputs.
        let (mech, pub_t, priv_t, pub_h, priv_h) = unsafe {
            (
                mechanism(mech)?,
                template(pub_t, pub_n)?,
                template(priv_t, priv_n)?,
                out(pub_h)?,
                out(priv_h)?,
            )
        };
        if !mech.1.is_empty() {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        (*pub_h, *priv_h) = m.generate_key_pair(h, mech.0, &pub_t, &priv_t)?;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SignInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        let (mech, param) = unsafe { mechanism(mech) }?;
        m.sign_init(h, mech, &param, key)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Sign(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        // SAFETY: caller-provided input.
        let data = unsafe { bytes(data, data_len) }?;
        let mut state = lock(&s.state);
        if state.sign.as_ref().is_some_and(|op| op.multipart) {
            return Err(CKR_OPERATION_ACTIVE);
        }
        finish(&mut state.sign, sig, sig_len, |op| op.signature(data))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SignUpdate(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        // SAFETY: caller-provided input.
        let data = unsafe { bytes(data, data_len) }?;
        let mut state = lock(&s.state);
        let op = state.sign.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let r = op.update(data);
        if r.is_err() {
            state.sign = None;
        }
        r
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        let mut state = lock(&s.state);
        finish(&mut state.sign, sig, sig_len, |op| op.signature(&[]))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_VerifyInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        let (mech, param) = unsafe { mechanism(mech) }?;
        m.verify_init(h, mech, &param, key)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Verify(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        let op = lock(&s.state)
            .verify
            .take()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        // SAFETY: caller-provided inputs.
        let (data, sig) = unsafe { (bytes(data, data_len)?, bytes(sig, sig_len)?) };
        op.verify(data, sig)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_VerifyUpdate(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        // SAFETY: caller-provided input.
        let data = unsafe { bytes(data, data_len) }?;
        let mut state = lock(&s.state);
        let op = state.verify.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let r = op.update(data);
        if r.is_err() {
            state.verify = None;
        }
        r
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_VerifyFinal(
    h: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        let op = lock(&s.state)
            .verify
            .take()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        // SAFETY: caller-provided input.
        op.verify(&[], unsafe { bytes(sig, sig_len) }?)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_EncryptInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        let (mech, param) = unsafe { mechanism(mech) }?;
        m.encrypt_init(h, mech, &param, key)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Encrypt(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out_buf: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        // SAFETY: caller-provided input.
        let data = unsafe { bytes(data, data_len) }?;
        let mut state = lock(&s.state);
        finish(&mut state.encrypt, out_buf, out_len, |op| op.output(data))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DecryptInit(
    h: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        let (mech, param) = unsafe { mechanism(mech) }?;
        m.decrypt_init(h, mech, &param, key)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Decrypt(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    out_buf: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        // SAFETY: caller-provided input.
        let data = unsafe { bytes(data, data_len) }?;
        let mut state = lock(&s.state);
        finish(&mut state.decrypt, out_buf, out_len, |op| op.output(data))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DigestInit(h: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM) -> CK_RV {
    guard(|| {
        let m = token::module()?;
        // SAFETY: caller-provided input.
        let (mech, param) = unsafe { mechanism(mech) }?;
        m.digest_init(h, mech, &param)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_Digest(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        // SAFETY: caller-provided input.
        let data = unsafe { bytes(data, data_len) }?;
        let mut state = lock(&s.state);
        if state.digest.as_ref().is_some_and(|op| op.multipart) {
            return Err(CKR_OPERATION_ACTIVE);
        }
        finish(&mut state.digest, digest, digest_len, |op| op.output(data))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DigestUpdate(
    h: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        // SAFETY: caller-provided input.
        let data = unsafe { bytes(data, data_len) }?;
        let mut state = lock(&s.state);
        state
            .digest
            .as_mut()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?
            .update(data)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_DigestFinal(
    h: CK_SESSION_HANDLE,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let s = token::module()?.session(h)?;
        let mut state = lock(&s.state);
        finish(&mut state.digest, digest, digest_len, |op| op.output(&[]))
    })
}

/// C_UnwrapKey: the GM/T 0009 SM2 envelope will be unwrapped here (see
/// [`token::Module::unwrap_key`]); until then CKR_FUNCTION_NOT_SUPPORTED.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_UnwrapKey(
    h: CK_SESSION_HANDLE,
    _mech: *mut CK_MECHANISM,
    _unwrapping_key: CK_OBJECT_HANDLE,
    _wrapped: *mut CK_BYTE,
    _wrapped_len: CK_ULONG,
    _t: *mut CK_ATTRIBUTE,
    _n: CK_ULONG,
    _key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| token::module()?.unwrap_key(h).map(|_| ()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GenerateRandom(
    h: CK_SESSION_HANDLE,
    buf: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::module()?.session(h)?;
        let n = len(n)?;
        if n == 0 {
            return Ok(());
        }
        if buf.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: non-null, and the caller vouches for `n` writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf, n) };
        crate::keywrap::random(buf)
    })
}

/// C_SeedRandom: randomness comes from the operating system, which takes no seed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_SeedRandom(
    h: CK_SESSION_HANDLE,
    seed: *mut CK_BYTE,
    n: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::module()?.session(h)?;
        // SAFETY: caller-provided input (checked, then ignored).
        unsafe { bytes(seed, n) }?;
        Err(CKR_RANDOM_SEED_NOT_SUPPORTED)
    })
}

// ---------------------------------------------------------------------------------------
// Not offered
// ---------------------------------------------------------------------------------------

/// Defines functions that only say CKR_FUNCTION_NOT_SUPPORTED, with the C signature the
/// function list needs.
macro_rules! not_supported {
    ($($name:ident($($arg:ty),*);)*) => {$(
        unsafe extern "C" fn $name($(_: $arg),*) -> CK_RV {
            CKR_FUNCTION_NOT_SUPPORTED
        }
    )*};
}

not_supported! {
    no_get_operation_state(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    no_set_operation_state(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE);
    no_copy_object(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    no_get_object_size(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, *mut CK_ULONG);
    no_update(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    no_final(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    no_digest_key(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
    no_recover_init(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    no_generate_key(CK_SESSION_HANDLE, *mut CK_MECHANISM, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    no_wrap_key(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    no_derive_key(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    no_function_status(CK_SESSION_HANDLE);
    no_wait_for_slot_event(CK_FLAGS, *mut CK_SLOT_ID, *mut c_void);
}

/// The PKCS#11 v2.40 function table C_GetFunctionList hands out.
static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION {
        major: 2,
        minor: 40,
    },
    C_Initialize: Some(C_Initialize),
    C_Finalize: Some(C_Finalize),
    C_GetInfo: Some(C_GetInfo),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(C_GetSlotList),
    C_GetSlotInfo: Some(C_GetSlotInfo),
    C_GetTokenInfo: Some(C_GetTokenInfo),
    C_GetMechanismList: Some(C_GetMechanismList),
    C_GetMechanismInfo: Some(C_GetMechanismInfo),
    C_InitToken: Some(C_InitToken),
    C_InitPIN: Some(C_InitPIN),
    C_SetPIN: Some(C_SetPIN),
    C_OpenSession: Some(C_OpenSession),
    C_CloseSession: Some(C_CloseSession),
    C_CloseAllSessions: Some(C_CloseAllSessions),
    C_GetSessionInfo: Some(C_GetSessionInfo),
    C_GetOperationState: Some(no_get_operation_state),
    C_SetOperationState: Some(no_set_operation_state),
    C_Login: Some(C_Login),
    C_Logout: Some(C_Logout),
    C_CreateObject: Some(C_CreateObject),
    C_CopyObject: Some(no_copy_object),
    C_DestroyObject: Some(C_DestroyObject),
    C_GetObjectSize: Some(no_get_object_size),
    C_GetAttributeValue: Some(C_GetAttributeValue),
    C_SetAttributeValue: Some(C_SetAttributeValue),
    C_FindObjectsInit: Some(C_FindObjectsInit),
    C_FindObjects: Some(C_FindObjects),
    C_FindObjectsFinal: Some(C_FindObjectsFinal),
    C_EncryptInit: Some(C_EncryptInit),
    C_Encrypt: Some(C_Encrypt),
    C_EncryptUpdate: Some(no_update),
    C_EncryptFinal: Some(no_final),
    C_DecryptInit: Some(C_DecryptInit),
    C_Decrypt: Some(C_Decrypt),
    C_DecryptUpdate: Some(no_update),
    C_DecryptFinal: Some(no_final),
    C_DigestInit: Some(C_DigestInit),
    C_Digest: Some(C_Digest),
    C_DigestUpdate: Some(C_DigestUpdate),
    C_DigestKey: Some(no_digest_key),
    C_DigestFinal: Some(C_DigestFinal),
    C_SignInit: Some(C_SignInit),
    C_Sign: Some(C_Sign),
    C_SignUpdate: Some(C_SignUpdate),
    C_SignFinal: Some(C_SignFinal),
    C_SignRecoverInit: Some(no_recover_init),
    C_SignRecover: Some(no_update),
    C_VerifyInit: Some(C_VerifyInit),
    C_Verify: Some(C_Verify),
    C_VerifyUpdate: Some(C_VerifyUpdate),
    C_VerifyFinal: Some(C_VerifyFinal),
    C_VerifyRecoverInit: Some(no_recover_init),
    C_VerifyRecover: Some(no_update),
    C_DigestEncryptUpdate: Some(no_update),
    C_DecryptDigestUpdate: Some(no_update),
    C_SignEncryptUpdate: Some(no_update),
    C_DecryptVerifyUpdate: Some(no_update),
    C_GenerateKey: Some(no_generate_key),
    C_GenerateKeyPair: Some(C_GenerateKeyPair),
    C_WrapKey: Some(no_wrap_key),
    C_UnwrapKey: Some(C_UnwrapKey),
    C_DeriveKey: Some(no_derive_key),
    C_SeedRandom: Some(C_SeedRandom),
    C_GenerateRandom: Some(C_GenerateRandom),
    C_GetFunctionStatus: Some(no_function_status),
    C_CancelFunction: Some(no_function_status),
    C_WaitForSlotEvent: Some(no_wait_for_slot_event),
};

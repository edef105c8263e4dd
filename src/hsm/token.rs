//! Subscribers' PKCS#11 tokens (USB tokens and smart cards) as a personalisation workstation
//! sees them: enumerated and named by serial, initialised, their PINs set and unblocked, key
//! pairs generated on them, certificates written to them, their objects listed.
//!
//! The module's context comes from the same process-wide registry as the CA's HSM
//! (`module.rs`): in the quick start one `libsofthsm2.so` serves both, and a second
//! `C_Initialize` in one process would be wrong. Each operation opens a session of its own
//! on the token, holds the module's read guard while it runs (so no finalise can pull the
//! context away), and closes the session afterwards; nothing here touches the CA's pool.
//! When the device is gone the context is finalised, so the next call re-initialises it and
//! finds the token again once it is back.
//!
//! Tokens are addressed by [`TokenAddress`]: serial, `pkcs11:` URI, or a slot handle for
//! tokens without a serial. Modules differ in what they keep across `C_InitToken` (SoftHSM
//! keeps the serial, kryoptic draws a new one) and in when they notice changes made by other
//! processes (kryoptic reads token state once per `C_Initialize`): [`TokenModule::init_token`]
//! reads the token back from the slot it initialised, and [`TokenModule::refresh`]
//! re-initialises a context that serves no CA.

use std::path::Path;
use std::sync::Arc;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use spki::SubjectPublicKeyInfoOwned;

use super::address::{TokenAddress, TokenFields};
use super::error::{Failure, HsmError};
use super::keys::{self, FoundKey};
use super::module::Module;
use crate::pki::alg::{KeyType, SignatureAlgorithm};
use crate::secret::Secret;

/// What a token says about itself (CK_TOKEN_INFO), PIN state included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// The slot the token sits in, in the module's current context (slot ids change when a
    /// token is re-plugged, or on some modules re-initialised: never a lasting name).
    pub slot: u64,
    /// The serial number, the token's stable name; empty for a blank token that reports
    /// none (kryoptic's report 16 spaces).
    pub serial: String,
    /// The label set when it was initialised.
    pub label: String,
    /// The manufacturer id.
    pub manufacturer: String,
    /// The model.
    pub model: String,
    /// CKF_TOKEN_INITIALIZED.
    pub initialized: bool,
    /// CKF_USER_PIN_INITIALIZED.
    pub user_pin_initialized: bool,
    /// CKF_USER_PIN_COUNT_LOW: a wrong user PIN was entered since the last good one.
    pub user_pin_count_low: bool,
    /// CKF_USER_PIN_FINAL_TRY: one more wrong user PIN locks it.
    pub user_pin_final_try: bool,
    /// CKF_USER_PIN_LOCKED.
    pub user_pin_locked: bool,
    /// The shortest PIN the token accepts.
    pub min_pin_len: usize,
    /// The longest PIN the token accepts.
    pub max_pin_len: usize,
}

impl TokenInfo {
    /// The fields a token is named and recognised by.
    pub fn fields(&self) -> TokenFields<'_> {
        TokenFields {
            serial: &self.serial,
            label: &self.label,
            manufacturer: &self.manufacturer,
            model: &self.model,
            initialized: self.initialized,
        }
    }

    /// The token's RFC 7512 URI (model, manufacturer, serial, label).
    pub fn uri(&self) -> String {
        self.fields().uri()
    }

    /// The digest of what the slot holds, for a slot handle.
    pub fn fingerprint(&self) -> String {
        self.fields().fingerprint(self.slot)
    }

    /// How to find this token again: by serial when it has one, else by its slot.
    pub fn address(&self) -> TokenAddress {
        if self.serial.is_empty() {
            TokenAddress::InSlot {
                slot: self.slot,
                serial: String::new(),
            }
        } else {
            TokenAddress::Serial(self.serial.clone())
        }
    }
}

/// One object on a token, as `ReadToken` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenObject {
    /// `private key`, `public key`, `secret key`, `certificate` or `data`.
    pub class: String,
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID, which links a key pair and its certificate.
    pub id: Vec<u8>,
    /// CKA_VALUE of a certificate (DER); empty for keys.
    pub value: Vec<u8>,
    /// For keys: CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_SIGN, CKA_DECRYPT as read; empty otherwise.
    pub flags: Vec<(String, bool)>,
}

/// Which CKA_CERTIFICATE_CATEGORY a certificate object gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateCategory {
    /// 1: the token owner's own certificate.
    User,
    /// 2: a CA certificate of the chain.
    Authority,
}

/// A PKCS#11 module that serves subscribers' tokens. Cheap to share behind an `Arc`.
pub struct TokenModule {
    module: Arc<Module>,
    /// The module's SM2 numbers, when it has them.
    sm2: Option<super::sm2::Sm2Settings>,
}

impl std::fmt::Debug for TokenModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenModule")
            .field("module", &self.module.path())
            .finish()
    }
}

impl Drop for TokenModule {
    fn drop(&mut self) {
        self.module.release();
    }
}

fn ck<T>(op: &'static str, r: cryptoki::error::Result<T>) -> Result<T, HsmError> {
    r.map_err(|e| Failure::from_ck(op, e).into_error())
}

impl TokenModule {
    /// Register as a user of the module at `path` (loaded and initialised on first use,
    /// shared with any `Hsm` of the process on the same file).
    pub fn open(path: &Path) -> TokenModule {
        TokenModule::open_with_sm2(path, None)
    }

    /// As [`TokenModule::open`], for a module with SM2 under the vendor numbers `sm2`.
    pub fn open_with_sm2(path: &Path, sm2: Option<super::sm2::Sm2Settings>) -> TokenModule {
        TokenModule {
            module: Module::acquire(path),
            sm2,
        }
    }

    /// The module's path, for messages.
    pub fn path(&self) -> &Path {
        self.module.path()
    }

    /// Run `f` with the live context; finalise it if the device turned out to be gone, so
    /// the next call starts afresh. Blocking.
    fn with_context<T>(
        &self,
        f: impl FnOnce(&Pkcs11) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let (pkcs11, generation) = self.module.context().map_err(Failure::into_error)?;
        let result = {
            let state = self.module.read();
            if state.generation != generation || state.pkcs11.is_none() {
                Err(HsmError::Unavailable {
                    reason: "the module was finalised meanwhile".into(),
                })
            } else {
                f(&pkcs11)
            }
        };
        if matches!(result, Err(HsmError::Unavailable { .. })) {
            self.module.finalise(generation);
        }
        result
    }

    /// Every token present in the module's slots. Blocking.
    ///
    /// A module that shows no token at all is finalised afterwards: a context initialised
    /// while the device was away (p11-kit's client whose server is down) never sees it
    /// come back, so the next call must initialise afresh. A module that shows other tokens
    /// (the CA's, when one SoftHSM serves both) is left alone.
    pub fn list(&self) -> Result<Vec<TokenInfo>, HsmError> {
        let found = self.list_once()?;
        if found.is_empty() {
            let generation = self.module.read().generation;
            self.module.finalise(generation);
        }
        Ok(found)
    }

    fn list_once(&self) -> Result<Vec<TokenInfo>, HsmError> {
        self.with_context(|p| {
            let mut out = Vec::new();
            for slot in ck("C_GetSlotList", p.get_slots_with_token())? {
                match p.get_token_info(slot) {
                    Ok(info) => out.push(token_info(slot, &info)),
                    Err(CkError::Pkcs11(RvError::TokenNotPresent, _)) => continue,
                    Err(e) => return Err(Failure::from_ck("C_GetTokenInfo", e).into_error()),
                }
            }
            Ok(out)
        })
    }

    /// The tokens `address` names, if present (more than one only for a loose URI).
    /// Blocking.
    pub fn find(&self, address: &TokenAddress) -> Result<Vec<TokenInfo>, HsmError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|t| address.matches(t.slot, &t.fields()))
            .collect())
    }

    /// Re-initialise the module's context so that its slots and tokens are read afresh on
    /// the next call, unless a CA's HSM uses the same module (its signing sessions would
    /// die). Returns whether it was done. Blocking: waits for calls in flight.
    pub fn refresh(&self) -> bool {
        self.module.refresh()
    }

    /// C_InitToken: wipe the token `address` names and give it `label`; the SO PIN must be
    /// the token's (or, on a blank token, becomes it). Returns the token as the same slot
    /// shows it afterwards: its serial may be new (kryoptic draws one at every C_InitToken),
    /// so the slot, not the old serial, finds it. Blocking.
    pub fn init_token(
        &self,
        address: &TokenAddress,
        so_pin: &Secret,
        label: &str,
    ) -> Result<TokenInfo, HsmError> {
        self.with_context(|p| {
            let slot = slot_of(p, address)?;
            let pin = AuthPin::new(so_pin.expose().into());
            ck("C_InitToken", p.init_token(slot, &pin, label))?;
            let info = ck("C_GetTokenInfo", p.get_token_info(slot))?;
            Ok(token_info(slot, &info))
        })
    }

    /// Open a read-write session on the token `address` names, run `f`, close the
    /// session. Blocking.
    pub fn with_session<T>(
        &self,
        address: &TokenAddress,
        f: impl FnOnce(&TokenSession) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        self.with_context(|p| {
            let slot = slot_of(p, address)?;
            let session = ck("C_OpenSession", p.open_rw_session(slot))?;
            let s = TokenSession {
                session,
                module: self.module.path(),
                sm2: self.sm2.as_ref(),
            };
            f(&s)
        })
    }
}

/// The slot of the first token `address` names, in this context.
fn slot_of(p: &Pkcs11, address: &TokenAddress) -> Result<Slot, HsmError> {
    for slot in ck("C_GetSlotList", p.get_slots_with_token())? {
        let info = match p.get_token_info(slot) {
            Ok(info) => token_info(slot, &info),
            // A token pulled between the two calls is simply not the one.
            Err(CkError::Pkcs11(RvError::TokenNotPresent, _)) => continue,
            Err(e) => return Err(Failure::from_ck("C_GetTokenInfo", e).into_error()),
        };
        if address.matches(info.slot, &info.fields()) {
            return Ok(slot);
        }
    }
    Err(HsmError::TokenNotFound {
        selector: format!("token {address}"),
    })
}

fn token_info(slot: Slot, info: &cryptoki::slot::TokenInfo) -> TokenInfo {
    TokenInfo {
        slot: slot.id(),
        serial: info.serial_number().trim().to_owned(),
        label: info.label().trim().to_owned(),
        manufacturer: info.manufacturer_id().trim().to_owned(),
        model: info.model().trim().to_owned(),
        initialized: info.token_initialized(),
        user_pin_initialized: info.user_pin_initialized(),
        user_pin_count_low: info.user_pin_count_low(),
        user_pin_final_try: info.user_pin_final_try(),
        user_pin_locked: info.user_pin_locked(),
        min_pin_len: info.min_pin_length(),
        max_pin_len: info.max_pin_length(),
    }
}

/// A read-write session on one token, for one operation.
pub struct TokenSession<'a> {
    session: Session,
    module: &'a Path,
    sm2: Option<&'a super::sm2::Sm2Settings>,
}

fn login_as(session: &Session, user: UserType, pin: &Secret) -> Result<(), HsmError> {
    let pin = AuthPin::new(pin.expose().into());
    match session.login(user, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(Failure::from_ck("C_Login", e).into_error()),
    }
}

fn class_name(c: ObjectClass) -> &'static str {
    match c {
        ObjectClass::PRIVATE_KEY => "private key",
        ObjectClass::PUBLIC_KEY => "public key",
        ObjectClass::SECRET_KEY => "secret key",
        ObjectClass::CERTIFICATE => "certificate",
        ObjectClass::DATA => "data",
        _ => "other",
    }
}

impl TokenSession<'_> {
    /// Log the user in (an existing login counts as success).
    pub fn login_user(&self, pin: &Secret) -> Result<(), HsmError> {
        login_as(&self.session, UserType::User, pin)
    }

    /// Log the security officer in.
    pub fn login_so(&self, pin: &Secret) -> Result<(), HsmError> {
        login_as(&self.session, UserType::So, pin)
    }

    /// Log out whoever is logged in; a session nobody logged into is fine.
    pub fn logout(&self) {
        if let Err(e) = self.session.logout() {
            tracing::debug!(error = %e, "C_Logout");
        }
    }

    /// C_InitPIN: set a new user PIN (the SO must be logged in). Unblocks a locked PIN.
    pub fn init_pin(&self, new_pin: &Secret) -> Result<(), HsmError> {
        let pin = AuthPin::new(new_pin.expose().into());
        ck("C_InitPIN", self.session.init_pin(&pin))
    }

    /// C_SetPIN: change the PIN of whoever is logged in (or the user's, if nobody is).
    pub fn set_pin(&self, old: &Secret, new: &Secret) -> Result<(), HsmError> {
        let old = AuthPin::new(old.expose().into());
        let new = AuthPin::new(new.expose().into());
        ck("C_SetPIN", self.session.set_pin(&old, &new))
    }

    /// Generate a key pair on the token labelled `label`, every attribute set explicitly
    /// (token, private, sensitive, never extractable, sign only), CKA_ID the SHA-1 of the
    /// public key. Returns the public key and the CKA_ID.
    pub fn generate(
        &self,
        label: &str,
        key_type: KeyType,
    ) -> Result<(SubjectPublicKeyInfoOwned, Vec<u8>), HsmError> {
        let spki = keys::generate(&self.session, label, key_type, self.sm2)
            .map_err(Failure::into_error)?;
        let id = keys::key_id(&spki);
        Ok((spki, id))
    }

    fn find(&self, class: ObjectClass, id: &[u8]) -> Result<Vec<ObjectHandle>, HsmError> {
        ck(
            "C_FindObjects",
            self.session
                .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())]),
        )
    }

    /// Whether a private key with this CKA_ID is on the token (the user must be logged in).
    pub fn has_private_key(&self, id: &[u8]) -> Result<bool, HsmError> {
        Ok(!self.find(ObjectClass::PRIVATE_KEY, id)?.is_empty())
    }

    /// Destroy the key pair (and any certificate) with this CKA_ID; returns how many
    /// objects went.
    pub fn destroy_id(&self, id: &[u8]) -> Result<usize, HsmError> {
        let handles = ck(
            "C_FindObjects",
            self.session.find_objects(&[Attribute::Id(id.to_vec())]),
        )?;
        for h in &handles {
            ck("C_DestroyObject", self.session.destroy_object(*h))?;
        }
        Ok(handles.len())
    }

    /// Sign `message` with the private key whose CKA_ID is `id`. Logs in again if the
    /// token dropped the login (some do right after key generation), and gives the
    /// context-specific login a key with CKA_ALWAYS_AUTHENTICATE demands.
    pub fn sign(
        &self,
        id: &[u8],
        alg: SignatureAlgorithm,
        message: &[u8],
        pin: &Secret,
    ) -> Result<Vec<u8>, HsmError> {
        let key = self.private_key(id)?;
        let label = hex::encode(id);
        let always = ck(
            "C_GetAttributeValue",
            self.session
                .get_attributes(key.handle, &[AttributeType::AlwaysAuthenticate]),
        )?
        .iter()
        .any(|a| matches!(a, Attribute::AlwaysAuthenticate(true)));
        if always {
            return self.sign_context_login(&label, key, alg, message, pin);
        }
        match keys::sign(&self.session, &label, key, alg, message, self.sm2) {
            Err(Failure::Session(_)) if !self.user_logged_in() => {
                tracing::info!("the token dropped the login; logging in again");
                self.login_user(pin)?;
                keys::sign(&self.session, &label, key, alg, message, self.sm2)
                    .map_err(Failure::into_error)
            }
            other => other.map_err(Failure::into_error),
        }
    }

    fn user_logged_in(&self) -> bool {
        self.session.get_session_info().is_ok_and(|i| {
            matches!(
                i.session_state(),
                SessionState::RoUser | SessionState::RwUser
            )
        })
    }

    fn private_key(&self, id: &[u8]) -> Result<FoundKey, HsmError> {
        let handle = *self
            .find(ObjectClass::PRIVATE_KEY, id)?
            .first()
            .ok_or_else(|| HsmError::KeyNotFound {
                label: format!("id {}", hex::encode(id)),
            })?;
        let label = hex::encode(id);
        keys::found_key(&self.session, handle, &label, self.sm2, || {
            let public = *self
                .find(ObjectClass::PUBLIC_KEY, id)
                .map_err(Failure::Final)?
                .first()
                .ok_or_else(|| {
                    Failure::Final(HsmError::KeyNotFound {
                        label: format!("public key of id {label}"),
                    })
                })?;
            keys::public_key_of(&self.session, public, &label, self.sm2)
        })
        .map_err(Failure::into_error)
    }

    /// C_SignInit, C_Login(CKU_CONTEXT_SPECIFIC), C_Sign: the order PKCS#11 prescribes for
    /// keys with CKA_ALWAYS_AUTHENTICATE. cryptoki's `sign` would call C_SignInit again, so
    /// C_Sign goes through the raw function list.
    fn sign_context_login(
        &self,
        label: &str,
        key: FoundKey,
        alg: SignatureAlgorithm,
        message: &[u8],
        pin: &Secret,
    ) -> Result<Vec<u8>, HsmError> {
        if matches!(
            alg,
            SignatureAlgorithm::RsaPssSha256 | SignatureAlgorithm::RsaPssSha384
        ) {
            return Err(HsmError::Mechanism {
                mechanism: alg.to_string(),
                label: "subscriber key".into(),
                reason: "not offered for keys that demand a login per signature".into(),
            });
        }
        keys::check_kind(label, key, alg).map_err(Failure::into_error)?;
        let (mechanism, data) = keys::mechanism(
            alg,
            message,
            self.sm2,
            key.sm2_point.as_ref().map(|p| p.as_slice()),
        )
        .map_err(|reason| HsmError::Mechanism {
            mechanism: alg.to_string(),
            label: label.to_owned(),
            reason,
        })?;
        ck("C_SignInit", self.session.sign_init(&mechanism, key.handle))?;
        login_as(&self.session, UserType::ContextSpecific, pin)?;
        // SAFETY: the module is the one this process already loaded (the loader hands back
        // the same library), the session handle is live for as long as `self`, and the
        // buffers are sized by the first C_Sign call as PKCS#11 prescribes.
        let raw = unsafe {
            let lib = RawModule::load(self.module)?;
            let c_sign = lib.function("C_Sign", |l| l.C_Sign)?;
            let mut len: cryptoki_sys::CK_ULONG = 0;
            let rv = c_sign(
                self.session.handle(),
                data.as_ptr() as *mut u8,
                data.len() as cryptoki_sys::CK_ULONG,
                std::ptr::null_mut(),
                &mut len,
            );
            check_rv("C_Sign", rv)?;
            let mut out = vec![0u8; len as usize];
            let rv = c_sign(
                self.session.handle(),
                data.as_ptr() as *mut u8,
                data.len() as cryptoki_sys::CK_ULONG,
                out.as_mut_ptr(),
                &mut len,
            );
            check_rv("C_Sign", rv)?;
            out.truncate(len as usize);
            out
        };
        keys::finish_signature(alg, raw, self.sm2).map_err(Failure::into_error)
    }

    /// Write an X.509 certificate object (CKA_ID, CKA_LABEL, CKA_SUBJECT, CKA_ISSUER,
    /// CKA_SERIAL_NUMBER, CKA_VALUE, CKA_CERTIFICATE_CATEGORY), unless one with the same
    /// value is already there. Returns whether it wrote one.
    pub fn write_certificate(
        &self,
        label: &str,
        id: &[u8],
        cert_der: &[u8],
        category: CertificateCategory,
    ) -> Result<bool, HsmError> {
        let existing = ck(
            "C_FindObjects",
            self.session.find_objects(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Value(cert_der.to_vec()),
            ]),
        )?;
        if !existing.is_empty() {
            return Ok(false);
        }
        let parts = CertParts::of(cert_der)?;
        let category: cryptoki_sys::CK_ULONG = match category {
            CertificateCategory::User => 1,
            CertificateCategory::Authority => 2,
        };
        // cryptoki 0.12 names no CKA_CERTIFICATE_CATEGORY; its raw-attribute variant carries
        // the standard type number and the CK_ULONG value as the module expects them.
        let category = Attribute::VendorDefined((
            AttributeType::VendorDefined(cryptoki_sys::CKA_CERTIFICATE_CATEGORY),
            category.to_ne_bytes().to_vec(),
        ));
        ck(
            "C_CreateObject",
            self.session.create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(cryptoki::object::CertificateType::X_509),
                category,
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Modifiable(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
                Attribute::Subject(parts.subject),
                Attribute::Issuer(parts.issuer),
                Attribute::SerialNumber(parts.serial),
                Attribute::Value(cert_der.to_vec()),
            ]),
        )?;
        Ok(true)
    }

    /// The certificates, keys and data objects the session can see (private objects only
    /// when logged in). Searched class by class: an empty template also finds what a module
    /// keeps beside them (kryoptic answers with a CKO_MECHANISM object per mechanism).
    pub fn objects(&self) -> Result<Vec<TokenObject>, HsmError> {
        let mut handles = Vec::new();
        for class in [
            ObjectClass::CERTIFICATE,
            ObjectClass::PRIVATE_KEY,
            ObjectClass::PUBLIC_KEY,
            ObjectClass::SECRET_KEY,
            ObjectClass::DATA,
        ] {
            handles.extend(ck(
                "C_FindObjects",
                self.session.find_objects(&[Attribute::Class(class)]),
            )?);
        }
        let mut out = Vec::new();
        for h in handles {
            let attrs = ck(
                "C_GetAttributeValue",
                self.session.get_attributes(
                    h,
                    &[
                        AttributeType::Class,
                        AttributeType::Label,
                        AttributeType::Id,
                    ],
                ),
            )?;
            let mut obj = TokenObject {
                class: String::new(),
                label: String::new(),
                id: Vec::new(),
                value: Vec::new(),
                flags: Vec::new(),
            };
            let mut class = None;
            for a in attrs {
                match a {
                    Attribute::Class(c) => class = Some(c),
                    Attribute::Label(l) => obj.label = String::from_utf8_lossy(&l).into_owned(),
                    Attribute::Id(i) => obj.id = i,
                    _ => {}
                }
            }
            let Some(class) = class else { continue };
            obj.class = class_name(class).to_owned();
            if class == ObjectClass::CERTIFICATE {
                for a in ck(
                    "C_GetAttributeValue",
                    self.session.get_attributes(h, &[AttributeType::Value]),
                )? {
                    if let Attribute::Value(v) = a {
                        obj.value = v;
                    }
                }
            } else if class == ObjectClass::PRIVATE_KEY {
                for a in ck(
                    "C_GetAttributeValue",
                    self.session.get_attributes(
                        h,
                        &[
                            AttributeType::Sensitive,
                            AttributeType::Extractable,
                            AttributeType::Sign,
                            AttributeType::Decrypt,
                        ],
                    ),
                )? {
                    match a {
                        Attribute::Sensitive(b) => obj.flags.push(("sensitive".into(), b)),
                        Attribute::Extractable(b) => obj.flags.push(("extractable".into(), b)),
                        Attribute::Sign(b) => obj.flags.push(("sign".into(), b)),
                        Attribute::Decrypt(b) => obj.flags.push(("decrypt".into(), b)),
                        _ => {}
                    }
                }
            }
            out.push(obj);
        }
        Ok(out)
    }
}

/// The module's own function list (C_GetFunctionList), for the calls cryptoki 0.12 does not
/// offer. Modules such as p11-kit's client export only C_GetFunctionList, so the functions
/// are taken from the list rather than looked up by symbol.
struct RawModule {
    /// Keeps the library (and so the list) loaded while in use.
    _lib: cryptoki_sys::Pkcs11,
    list: *const cryptoki_sys::CK_FUNCTION_LIST,
}

impl RawModule {
    /// Load the module at `path` (the process already has it loaded: the loader hands
    /// back the same library) and fetch its function list.
    ///
    /// # Safety
    /// `path` must be a PKCS#11 module already initialised in this process.
    unsafe fn load(path: &Path) -> Result<RawModule, HsmError> {
        let module_err = |reason: String| HsmError::Module {
            path: path.display().to_string(),
            reason,
        };
        // SAFETY: loading a library the process has already loaded runs no initialiser.
        let lib =
            unsafe { cryptoki_sys::Pkcs11::new(path) }.map_err(|e| module_err(e.to_string()))?;
        // The same entry point cryptoki took: PKCS#11 3.0's default interface if there is
        // one (p11-kit's client hands out a separate instance per entry point), whose list
        // begins with the 2.40 functions in the same order.
        if lib.C_GetInterface.is_ok() {
            let mut iface: *mut cryptoki_sys::CK_INTERFACE = std::ptr::null_mut();
            // SAFETY: null name and version ask for the default interface; `iface` is a
            // valid out pointer.
            let rv = unsafe {
                lib.C_GetInterface(std::ptr::null_mut(), std::ptr::null_mut(), &mut iface, 0)
            };
            check_rv("C_GetInterface", rv)?;
            if !iface.is_null() {
                // SAFETY: non-null, written by the module.
                let list =
                    unsafe { (*iface).pFunctionList } as *const cryptoki_sys::CK_FUNCTION_LIST;
                if !list.is_null() {
                    return Ok(RawModule { _lib: lib, list });
                }
            }
        }
        if lib.C_GetFunctionList.is_err() {
            return Err(module_err("it exports no C_GetFunctionList".into()));
        }
        let mut list = std::ptr::null_mut();
        // SAFETY: the symbol exists (checked above) and `list` is a valid out pointer.
        check_rv("C_GetFunctionList", unsafe {
            lib.C_GetFunctionList(&mut list)
        })?;
        if list.is_null() {
            return Err(module_err("C_GetFunctionList returned no list".into()));
        }
        Ok(RawModule { _lib: lib, list })
    }

    /// One function of the list, or an error naming it if the module leaves it out.
    fn function<F>(
        &self,
        name: &'static str,
        pick: impl FnOnce(&cryptoki_sys::CK_FUNCTION_LIST) -> Option<F>,
    ) -> Result<F, HsmError> {
        // SAFETY: `list` came non-null from C_GetFunctionList and stays valid while the
        // library is loaded, which `_lib` guarantees.
        pick(unsafe { &*self.list }).ok_or(HsmError::Pkcs11 {
            op: name,
            rv: "the module does not implement it".into(),
        })
    }
}

fn check_rv(op: &'static str, rv: cryptoki_sys::CK_RV) -> Result<(), HsmError> {
    match cryptoki::error::Rv::from(rv) {
        cryptoki::error::Rv::Ok => Ok(()),
        cryptoki::error::Rv::Error(e) => Err(Failure::from_rv(op, e).into_error()),
    }
}

/// The DER pieces of a certificate that PKCS#11 certificate objects repeat as attributes.
struct CertParts {
    subject: Vec<u8>,
    issuer: Vec<u8>,
    serial: Vec<u8>,
}

impl CertParts {
    fn of(cert_der: &[u8]) -> Result<CertParts, HsmError> {
        use der::{Decode, Encode};
        let bad = |e: der::Error| HsmError::Pkcs11 {
            op: "C_CreateObject",
            rv: format!("the certificate does not parse: {e}"),
        };
        let cert = x509_cert::Certificate::from_der(cert_der).map_err(bad)?;
        let tbs = cert.tbs_certificate();
        Ok(CertParts {
            subject: tbs.subject().to_der().map_err(bad)?,
            issuer: tbs.issuer().to_der().map_err(bad)?,
            serial: tbs.serial_number().to_der().map_err(bad)?,
        })
    }
}

//! The token as PKCS#11 sees it: slots, sessions, the login shared by an application's
//! sessions, objects (token objects in the store, session objects in memory), and the
//! cache of decrypted private keys that makes signing fast.
//!
//! Everything here is safe Rust taking slices and returning `Result<_, CK_RV>`; [`crate::ffi`]
//! turns C pointers into those. Locks are taken in one order (session table, one session,
//! logins, store, session objects), and none is held while a signature is computed except
//! the signing session's own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::keywrap::{self, TokenKey};
use crate::mechanisms::{self, Hasher, PrivateKey, PublicKey, SignOp, VerifyOp};
use crate::objects::{self, Attrs, SENSITIVE_ATTRS, SETTABLE_ATTRS, Template};
use crate::store::{Store, TokenRow};

/// The environment variable naming the store directory.
pub const ENV_DIR: &str = "SIGNET_SM2_SOFTTOKEN_DIR";
/// Session-object handles start here, far above any store row id.
const SESSION_OBJECT_BASE: CK_OBJECT_HANDLE = 1 << 40;
/// Shortest and longest PINs accepted.
pub const MIN_PIN_LEN: usize = 4;
/// See [`MIN_PIN_LEN`].
pub const MAX_PIN_LEN: usize = 255;

/// The module's state between C_Initialize and C_Finalize.
static MODULE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

/// Locks a mutex; a panic caught at the FFI boundary must not make the token unusable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// C_Initialize: opens the store named by `SIGNET_SM2_SOFTTOKEN_DIR`.
pub fn initialize() -> Result<(), CK_RV> {
    let mut global = MODULE.write().unwrap_or_else(PoisonError::into_inner);
    if global.is_some() {
        return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
    }
    let Some(dir) = std::env::var_os(ENV_DIR).filter(|d| !d.is_empty()) else {
        eprintln!("sm2-softtoken: {ENV_DIR} is not set; it names the token store directory");
        return Err(CKR_GENERAL_ERROR);
    };
    let store = Store::open(&PathBuf::from(dir))?;
    *global = Some(Arc::new(Module {
        store: Mutex::new(store),
        logins: Mutex::new(HashMap::new()),
        sessions: RwLock::new(HashMap::new()),
        session_objects: Mutex::new(BTreeMap::new()),
        next_session: AtomicU64::new(1),
        next_object: AtomicU64::new(SESSION_OBJECT_BASE),
    }));
    Ok(())
}

/// C_Finalize: drops every session, login and cached key (keys wipe themselves).
pub fn finalize() -> Result<(), CK_RV> {
    let module = MODULE
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let module = module.ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)?;
    module
        .sessions
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    lock(&module.logins).clear();
    lock(&module.session_objects).clear();
    Ok(())
}

/// The initialised module.
pub fn module() -> Result<Arc<Module>, CK_RV> {
    MODULE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .ok_or(CKR_CRYPTOKI_NOT_INITIALIZED)
}

/// The login state of one token, shared by all of the application's sessions on it.
#[derive(Default)]
struct Login {
    user: Option<CK_USER_TYPE>,
    token_key: Option<TokenKey>,
    serial: String,
    /// Decrypted private keys by handle, with their attributes (dropped = wiped at logout).
    keys: HashMap<CK_OBJECT_HANDLE, (Attrs, Arc<PrivateKey>)>,
}

/// An open session.
pub struct SessionEntry {
    /// Its slot.
    pub slot: CK_SLOT_ID,
    /// Whether it is read/write.
    pub rw: bool,
    /// Its operations.
    pub state: Mutex<Session>,
}

/// The operations of a session.
#[derive(Default)]
pub struct Session {
    find: Option<VecDeque<CK_OBJECT_HANDLE>>,
    /// Active signature.
    pub sign: Option<SignOp>,
    /// Active verification.
    pub verify: Option<VerifyOp>,
    /// Active encryption.
    pub encrypt: Option<CryptOp>,
    /// Active decryption.
    pub decrypt: Option<CryptOp>,
    /// Active digest.
    pub digest: Option<DigestOp>,
}

/// An SM2 encryption or decryption between its Init and its end.
pub struct CryptOp {
    key: CryptKey,
    /// The output, computed once and kept across a length query.
    pub pending: Option<Zeroizing<Vec<u8>>>,
}

enum CryptKey {
    Public(PublicKey),
    Private(Arc<PrivateKey>),
}

impl CryptOp {
    /// Computes the output for `input` (once).
    pub fn output(&mut self, input: &[u8]) -> Result<&[u8], CK_RV> {
        if self.pending.is_none() {
            self.pending = Some(match &self.key {
                CryptKey::Public(k) => Zeroizing::new(mechanisms::sm2_encrypt(k, input)?),
                CryptKey::Private(k) => mechanisms::sm2_decrypt(k, input)?,
            });
        }
        self.pending
            .as_deref()
            .map(Vec::as_slice)
            .ok_or(CKR_GENERAL_ERROR)
    }
}

/// A digest between C_DigestInit and its end.
pub struct DigestOp {
    hasher: Option<Hasher>,
    /// The digest, computed once and kept across a length query.
    pub pending: Option<Vec<u8>>,
    /// Whether C_DigestUpdate was called (C_Digest is then refused).
    pub multipart: bool,
}

impl DigestOp {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) -> Result<(), CK_RV> {
        self.multipart = true;
        self.hasher
            .as_mut()
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?
            .update(data);
        Ok(())
    }

    /// The digest over what was fed plus `data` (once).
    pub fn output(&mut self, data: &[u8]) -> Result<&[u8], CK_RV> {
        if self.pending.is_none() {
            let mut h = self.hasher.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            h.update(data);
            self.pending = Some(h.finish());
        }
        self.pending.as_deref().ok_or(CKR_GENERAL_ERROR)
    }
}

/// An object that lives only as long as its session.
struct SessionObject {
    slot: CK_SLOT_ID,
    session: CK_SESSION_HANDLE,
    attrs: Attrs,
    key: Option<Arc<PrivateKey>>,
}

/// What C_GetTokenInfo needs to know.
pub struct TokenStatus {
    /// The token, if initialised.
    pub token: Option<TokenRow>,
    /// Sessions open on it.
    pub sessions: usize,
    /// Read/write sessions open on it.
    pub rw_sessions: usize,
}

/// The module: store, logins, sessions and session objects.
pub struct Module {
    store: Mutex<Store>,
    logins: Mutex<HashMap<CK_SLOT_ID, Login>>,
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<SessionEntry>>>,
    session_objects: Mutex<BTreeMap<CK_OBJECT_HANDLE, SessionObject>>,
    next_session: AtomicU64,
    next_object: AtomicU64,
}

fn so_aad(serial: &str) -> Vec<u8> {
    [b"sm2-softtoken so pin ", serial.as_bytes()].concat()
}

fn user_aad(serial: &str) -> Vec<u8> {
    [b"sm2-softtoken user pin ", serial.as_bytes()].concat()
}

fn key_aad(serial: &str) -> Vec<u8> {
    [b"sm2-softtoken key ", serial.as_bytes()].concat()
}

fn check_pin_len(pin: &[u8]) -> Result<(), CK_RV> {
    if (MIN_PIN_LEN..=MAX_PIN_LEN).contains(&pin.len()) {
        Ok(())
    } else {
        Err(CKR_PIN_LEN_RANGE)
    }
}

fn is_private_key(attrs: &Attrs) -> bool {
    objects::get_ulong(attrs, CKA_CLASS) == Some(CKO_PRIVATE_KEY)
}

/// Where an object lives.
enum Found {
    Token,
    Session,
}

impl Module {
    fn sessions_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<CK_SESSION_HANDLE, Arc<SessionEntry>>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session with this handle.
    pub fn session(&self, h: CK_SESSION_HANDLE) -> Result<Arc<SessionEntry>, CK_RV> {
        self.sessions_read()
            .get(&h)
            .cloned()
            .ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    fn user(&self, slot: CK_SLOT_ID) -> Option<CK_USER_TYPE> {
        lock(&self.logins).get(&slot).and_then(|l| l.user)
    }

    fn visible(&self, slot: CK_SLOT_ID, attrs: &Attrs) -> bool {
        !objects::get_bool(attrs, CKA_PRIVATE) || self.user(slot) == Some(CKU_USER)
    }

    fn count_sessions(&self, slot: CK_SLOT_ID) -> (usize, usize) {
        let sessions = self.sessions_read();
        let on_slot = sessions.values().filter(|s| s.slot == slot);
        let all = on_slot.clone().count();
        (all, on_slot.filter(|s| s.rw).count())
    }

    // ----------------------------------------------------------------------------------
    // Slots and tokens
    // ----------------------------------------------------------------------------------

    /// Slots: one per initialised token, then one free slot where C_InitToken makes a new one.
    pub fn slot_list(&self) -> Result<Vec<CK_SLOT_ID>, CK_RV> {
        let tokens = lock(&self.store).tokens()?;
        let mut slots: Vec<_> = tokens.iter().map(|t| t.slot).collect();
        slots.push(free_slot(&tokens));
        Ok(slots)
    }

    /// Whether `slot` exists now.
    pub fn slot_exists(&self, slot: CK_SLOT_ID) -> Result<bool, CK_RV> {
        Ok(self.slot_list()?.contains(&slot))
    }

    /// The token in `slot` and its session counts; CKR_SLOT_ID_INVALID if no such slot.
    pub fn token_status(&self, slot: CK_SLOT_ID) -> Result<TokenStatus, CK_RV> {
        let (token, tokens) = {
            let store = lock(&self.store);
            (store.token(slot)?, store.tokens()?)
        };
        if token.is_none() && slot != free_slot(&tokens) {
            return Err(CKR_SLOT_ID_INVALID);
        }
        let (sessions, rw_sessions) = self.count_sessions(slot);
        Ok(TokenStatus {
            token,
            sessions,
            rw_sessions,
        })
    }

    /// C_InitToken: makes a token in the free slot, or re-initialises one (SO PIN checked):
    /// every object destroyed, a new token key, no user PIN.
    pub fn init_token(
        &self,
        slot: CK_SLOT_ID,
        so_pin: &[u8],
        label: &[u8; 32],
    ) -> Result<(), CK_RV> {
        check_pin_len(so_pin)?;
        let existing = lock(&self.store).token(slot)?;
        if let Some(t) = existing {
            if self.count_sessions(slot).0 > 0 {
                return Err(CKR_SESSION_EXISTS);
            }
            keywrap::unwrap_token_key(so_pin, &t.so_wrap, &so_aad(&t.serial))?;
            let key = keywrap::new_token_key()?;
            let so_wrap = keywrap::wrap_token_key(so_pin, &key, &so_aad(&t.serial))?;
            lock(&self.store).reinit_token(slot, label, &so_wrap)?;
            lock(&self.logins).remove(&slot);
            return Ok(());
        }
        if slot != free_slot(&lock(&self.store).tokens()?) {
            return Err(CKR_SLOT_ID_INVALID);
        }
        let mut serial = [0u8; 8];
        keywrap::random(&mut serial)?;
        let serial: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        let key = keywrap::new_token_key()?;
        let so_wrap = keywrap::wrap_token_key(so_pin, &key, &so_aad(&serial))?;
        lock(&self.store).create_token(&TokenRow {
            slot,
            serial,
            label: *label,
            so_wrap,
            user_wrap: None,
        })
    }

    // ----------------------------------------------------------------------------------
    // Sessions and login
    // ----------------------------------------------------------------------------------

    /// C_OpenSession.
    pub fn open_session(
        &self,
        slot: CK_SLOT_ID,
        flags: CK_FLAGS,
    ) -> Result<CK_SESSION_HANDLE, CK_RV> {
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        let status = self.token_status(slot)?;
        if status.token.is_none() {
            return Err(CKR_TOKEN_NOT_RECOGNIZED);
        }
        let rw = flags & CKF_RW_SESSION != 0;
        if !rw && self.user(slot) == Some(CKU_SO) {
            return Err(CKR_SESSION_READ_WRITE_SO_EXISTS);
        }
        let h = self.next_session.fetch_add(1, Ordering::Relaxed) as CK_SESSION_HANDLE;
        let entry = Arc::new(SessionEntry {
            slot,
            rw,
            state: Mutex::new(Session::default()),
        });
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(h, entry);
        Ok(h)
    }

    /// C_CloseSession: its session objects go; closing the last session of a slot logs out.
    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
        let entry = self
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&h)
            .ok_or(CKR_SESSION_HANDLE_INVALID)?;
        lock(&self.session_objects).retain(|_, o| o.session != h);
        if self.count_sessions(entry.slot).0 == 0 {
            lock(&self.logins).remove(&entry.slot);
        }
        Ok(())
    }

    /// C_CloseAllSessions.
    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<(), CK_RV> {
        if !self.slot_exists(slot)? {
            return Err(CKR_SLOT_ID_INVALID);
        }
        let handles: Vec<_> = self
            .sessions_read()
            .iter()
            .filter(|(_, s)| s.slot == slot)
            .map(|(h, _)| *h)
            .collect();
        for h in handles {
            // A session closed meanwhile by another thread is fine.
            let _ = self.close_session(h);
        }
        lock(&self.logins).remove(&slot);
        Ok(())
    }

    /// C_GetSessionInfo: (slot, state, flags).
    pub fn session_info(
        &self,
        h: CK_SESSION_HANDLE,
    ) -> Result<(CK_SLOT_ID, CK_STATE, CK_FLAGS), CK_RV> {
        let s = self.session(h)?;
        let state = match (self.user(s.slot), s.rw) {
            (Some(CKU_SO), _) => CKS_RW_SO_FUNCTIONS,
            (Some(_), true) => CKS_RW_USER_FUNCTIONS,
            (Some(_), false) => CKS_RO_USER_FUNCTIONS,
            (None, true) => CKS_RW_PUBLIC_SESSION,
            (None, false) => CKS_RO_PUBLIC_SESSION,
        };
        let flags = CKF_SERIAL_SESSION | if s.rw { CKF_RW_SESSION } else { 0 };
        Ok((s.slot, state, flags))
    }

    fn token_row(&self, slot: CK_SLOT_ID) -> Result<TokenRow, CK_RV> {
        lock(&self.store).token(slot)?.ok_or(CKR_TOKEN_NOT_PRESENT)
    }

    /// C_Login: the PIN unwraps the token key, which stays in memory until logout.
    pub fn login(
        &self,
        h: CK_SESSION_HANDLE,
        user_type: CK_USER_TYPE,
        pin: &[u8],
    ) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        match user_type {
            CKU_SO | CKU_USER => {}
            // No key here needs CKA_ALWAYS_AUTHENTICATE.
            CKU_CONTEXT_SPECIFIC => return Err(CKR_OPERATION_NOT_INITIALIZED),
            _ => return Err(CKR_USER_TYPE_INVALID),
        }
        let check_free =
            |logins: &HashMap<CK_SLOT_ID, Login>| match logins.get(&s.slot).and_then(|l| l.user) {
                Some(u) if u == user_type => Err(CKR_USER_ALREADY_LOGGED_IN),
                Some(_) => Err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
                None => Ok(()),
            };
        check_free(&lock(&self.logins))?;
        if user_type == CKU_SO
            && self
                .sessions_read()
                .values()
                .any(|x| x.slot == s.slot && !x.rw)
        {
            return Err(CKR_SESSION_READ_ONLY_EXISTS);
        }
        let t = self.token_row(s.slot)?;
        let key = if user_type == CKU_SO {
            keywrap::unwrap_token_key(pin, &t.so_wrap, &so_aad(&t.serial))?
        } else {
            let wrap = t.user_wrap.as_ref().ok_or(CKR_USER_PIN_NOT_INITIALIZED)?;
            keywrap::unwrap_token_key(pin, wrap, &user_aad(&t.serial))?
        };
        let mut logins = lock(&self.logins);
        check_free(&logins)?;
        logins.insert(
            s.slot,
            Login {
                user: Some(user_type),
                token_key: Some(key),
                serial: t.serial,
                keys: HashMap::new(),
            },
        );
        Ok(())
    }

    /// C_Logout: forgets the token key and every decrypted key of the slot.
    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let login = lock(&self.logins).remove(&s.slot);
        match login {
            Some(Login { user: Some(_), .. }) => Ok(()),
            _ => Err(CKR_USER_NOT_LOGGED_IN),
        }
    }

    /// C_InitPIN (SO logged in, R/W session): wraps the token key under the new user PIN.
    pub fn init_pin(&self, h: CK_SESSION_HANDLE, pin: &[u8]) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        if !s.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        check_pin_len(pin)?;
        let (key, serial) = {
            let logins = lock(&self.logins);
            let login = logins
                .get(&s.slot)
                .filter(|l| l.user == Some(CKU_SO))
                .ok_or(CKR_USER_NOT_LOGGED_IN)?;
            (
                login.token_key.clone().ok_or(CKR_USER_NOT_LOGGED_IN)?,
                login.serial.clone(),
            )
        };
        let wrap = keywrap::wrap_token_key(pin, &key, &user_aad(&serial))?;
        lock(&self.store).set_user_wrap(s.slot, &wrap)
    }

    /// C_SetPIN: the SO's PIN when the SO is logged in, else the user's.
    pub fn set_pin(&self, h: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        if !s.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        check_pin_len(new)?;
        let so = self.user(s.slot) == Some(CKU_SO);
        let t = self.token_row(s.slot)?;
        let store = lock(&self.store);
        if so {
            let key = keywrap::unwrap_token_key(old, &t.so_wrap, &so_aad(&t.serial))?;
            store.set_so_wrap(
                s.slot,
                &keywrap::wrap_token_key(new, &key, &so_aad(&t.serial))?,
            )
        } else {
            let wrap = t.user_wrap.as_ref().ok_or(CKR_USER_PIN_NOT_INITIALIZED)?;
            let key = keywrap::unwrap_token_key(old, wrap, &user_aad(&t.serial))?;
            store.set_user_wrap(
                s.slot,
                &keywrap::wrap_token_key(new, &key, &user_aad(&t.serial))?,
            )
        }
    }

    // ----------------------------------------------------------------------------------
    // Objects
    // ----------------------------------------------------------------------------------

    /// An object's attributes, if it exists on the session's slot and is visible to it.
    fn find_object(&self, s: &SessionEntry, h: CK_OBJECT_HANDLE) -> Result<(Found, Attrs), CK_RV> {
        let found = if h >= SESSION_OBJECT_BASE {
            lock(&self.session_objects)
                .get(&h)
                .filter(|o| o.slot == s.slot)
                .map(|o| (Found::Session, o.attrs.clone()))
        } else {
            lock(&self.store)
                .object(h)?
                .filter(|o| o.slot == s.slot)
                .map(|o| (Found::Token, o.attrs))
        };
        match found {
            Some((f, attrs)) if self.visible(s.slot, &attrs) => Ok((f, attrs)),
            _ => Err(CKR_OBJECT_HANDLE_INVALID),
        }
    }

    /// The attributes C_GetAttributeValue reads, and whether the object is a private key
    /// (whose key material is sensitive).
    pub fn attributes(
        &self,
        h: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<(Attrs, bool), CK_RV> {
        let s = self.session(h)?;
        let (_, attrs) = self.find_object(&s, object)?;
        let private = is_private_key(&attrs);
        Ok((attrs, private))
    }

    fn check_writable(&self, s: &SessionEntry, token: bool, private: bool) -> Result<(), CK_RV> {
        if token && !s.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        if private && self.user(s.slot) != Some(CKU_USER) {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        Ok(())
    }

    fn add_session_object(
        &self,
        s: CK_SESSION_HANDLE,
        slot: CK_SLOT_ID,
        attrs: Attrs,
        key: Option<Arc<PrivateKey>>,
    ) -> CK_OBJECT_HANDLE {
        let handle = self.next_object.fetch_add(1, Ordering::Relaxed) as CK_OBJECT_HANDLE;
        lock(&self.session_objects).insert(
            handle,
            SessionObject {
                slot,
                session: s,
                attrs,
                key,
            },
        );
        handle
    }

    /// C_CreateObject: certificates, data objects and public keys. Private and secret keys
    /// are refused: keys are born on this token (C_GenerateKeyPair), as on the HSMs it
    /// stands in for.
    pub fn create_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE, CK_RV> {
        let s = self.session(h)?;
        template.check_sizes()?;
        let mut attrs: Attrs = template.0.iter().cloned().collect();
        let class = template
            .get_ulong(CKA_CLASS)?
            .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
        if attrs
            .get(&CKA_LOCAL)
            .is_some_and(|v| v != &objects::bbool(false))
        {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
        match class {
            CKO_CERTIFICATE => {
                let cert_type = template
                    .get_ulong(CKA_CERTIFICATE_TYPE)?
                    .ok_or(CKR_TEMPLATE_INCOMPLETE)?;
                if cert_type != CKC_X_509 {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                }
                if template.get(CKA_VALUE).is_none_or(<[u8]>::is_empty) {
                    return Err(CKR_TEMPLATE_INCOMPLETE);
                }
                for t in [CKA_ID, CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL_NUMBER] {
                    attrs.entry(t).or_default();
                }
                attrs
                    .entry(CKA_TRUSTED)
                    .or_insert_with(|| objects::bbool(false));
                attrs
                    .entry(CKA_CERTIFICATE_CATEGORY)
                    .or_insert_with(|| objects::ulong(0));
            }
            CKO_DATA => {
                attrs.entry(CKA_APPLICATION).or_default();
                attrs.entry(CKA_VALUE).or_default();
            }
            CKO_PUBLIC_KEY => {
                if template.get_ulong(CKA_KEY_TYPE)?.is_none() {
                    return Err(CKR_TEMPLATE_INCOMPLETE);
                }
                PublicKey::check_attrs(&attrs)?;
                let key_type = objects::get_ulong(&attrs, CKA_KEY_TYPE);
                if key_type == Some(CKK_RSA) && !attrs.contains_key(&CKA_MODULUS_BITS) {
                    let n = attrs
                        .get(&CKA_MODULUS)
                        .map(|n| trimmed_bits(n))
                        .unwrap_or(0);
                    attrs.insert(CKA_MODULUS_BITS, objects::ulong(n));
                }
                let encrypt = key_type != Some(CKK_EC);
                public_key_defaults(&mut attrs, encrypt, false);
            }
            _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
        }
        objects::storage_defaults(&mut attrs, false);
        let token = objects::get_bool(&attrs, CKA_TOKEN);
        self.check_writable(&s, token, objects::get_bool(&attrs, CKA_PRIVATE))?;
        if token {
            let handles = lock(&self.store).insert_objects(s.slot, &[(&attrs, None)])?;
            handles.first().copied().ok_or(CKR_GENERAL_ERROR)
        } else {
            Ok(self.add_session_object(h, s.slot, attrs, None))
        }
    }

    /// C_DestroyObject.
    pub fn destroy_object(
        &self,
        h: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let (found, attrs) = self.find_object(&s, object)?;
        if !objects::get_bool(&attrs, CKA_DESTROYABLE) && attrs.contains_key(&CKA_DESTROYABLE) {
            return Err(CKR_ACTION_PROHIBITED);
        }
        match found {
            Found::Session => {
                lock(&self.session_objects).remove(&object);
            }
            Found::Token => {
                self.check_writable(&s, true, false)?;
                lock(&self.store).delete_object(object)?;
                if let Some(l) = lock(&self.logins).get_mut(&s.slot) {
                    l.keys.remove(&object);
                }
            }
        }
        Ok(())
    }

    /// C_SetAttributeValue: labels, ids and subjects of modifiable objects.
    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let (found, mut attrs) = self.find_object(&s, object)?;
        if attrs.contains_key(&CKA_MODIFIABLE) && !objects::get_bool(&attrs, CKA_MODIFIABLE) {
            return Err(CKR_ACTION_PROHIBITED);
        }
        for (t, v) in &template.0 {
            if !SETTABLE_ATTRS.contains(t) {
                return Err(CKR_ATTRIBUTE_READ_ONLY);
            }
            attrs.insert(*t, v.clone());
        }
        match found {
            Found::Session => {
                if let Some(o) = lock(&self.session_objects).get_mut(&object) {
                    o.attrs = attrs;
                }
            }
            Found::Token => {
                self.check_writable(&s, true, false)?;
                lock(&self.store).update_attrs(object, &attrs)?;
                if let Some(l) = lock(&self.logins).get_mut(&s.slot) {
                    if let Some(entry) = l.keys.get_mut(&object) {
                        entry.0 = attrs;
                    }
                }
            }
        }
        Ok(())
    }

    /// C_FindObjectsInit: the matching objects are listed now (reading the store, so
    /// objects written by other processes are found).
    pub fn find_init(&self, h: CK_SESSION_HANDLE, template: &Template) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let mut state = lock(&s.state);
        if state.find.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let mut found = VecDeque::new();
        for o in lock(&self.store).objects(s.slot)? {
            if template.matches(&o.attrs) && self.visible(s.slot, &o.attrs) {
                found.push_back(o.handle);
            }
        }
        for (handle, o) in lock(&self.session_objects).iter() {
            if o.slot == s.slot && template.matches(&o.attrs) && self.visible(s.slot, &o.attrs) {
                found.push_back(*handle);
            }
        }
        state.find = Some(found);
        Ok(())
    }

    /// C_FindObjects: up to `max` more handles.
    pub fn find_next(
        &self,
        h: CK_SESSION_HANDLE,
        max: usize,
    ) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
        let s = self.session(h)?;
        let mut state = lock(&s.state);
        let found = state.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let n = max.min(found.len());
        Ok(found.drain(..n).collect())
    }

    /// C_FindObjectsFinal.
    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        lock(&s.state)
            .find
            .take()
            .map(|_| ())
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)
    }

    // ----------------------------------------------------------------------------------
    // Keys
    // ----------------------------------------------------------------------------------

    /// C_GenerateKeyPair. The private half is always sensitive, never extractable and
    /// private; its material is sealed under the token key before it is stored.
    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        public_template: &Template,
        private_template: &Template,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), CK_RV> {
        let s = self.session(h)?;
        public_template.check_sizes()?;
        private_template.check_sizes()?;
        if private_template.get_bool(CKA_SENSITIVE)? == Some(false)
            || private_template.get_bool(CKA_EXTRACTABLE)? == Some(true)
            || private_template.get_bool(CKA_PRIVATE)? == Some(false)
        {
            return Err(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        for (t, class) in [
            (public_template, CKO_PUBLIC_KEY),
            (private_template, CKO_PRIVATE_KEY),
        ] {
            if t.get_ulong(CKA_CLASS)?.is_some_and(|c| c != class) {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            if t.0
                .iter()
                .any(|(a, _)| SENSITIVE_ATTRS.contains(a) || *a == CKA_LOCAL)
            {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
        }
        let pub_token = public_template.get_bool(CKA_TOKEN)?.unwrap_or(false);
        let priv_token = private_template.get_bool(CKA_TOKEN)?.unwrap_or(false);
        self.check_writable(&s, pub_token || priv_token, true)?;
        let (token_key, serial) = {
            let logins = lock(&self.logins);
            let l = logins.get(&s.slot).ok_or(CKR_USER_NOT_LOGGED_IN)?;
            (
                l.token_key.clone().ok_or(CKR_USER_NOT_LOGGED_IN)?,
                l.serial.clone(),
            )
        };

        let pair = mechanisms::generate(mechanism, public_template)?;
        let key_type = pair.key.key_type();
        for t in [public_template, private_template] {
            if t.get_ulong(CKA_KEY_TYPE)?.is_some_and(|k| k != key_type) {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
        }
        let crypt = key_type != CKK_EC;

        let mut public: Attrs = public_template.0.iter().cloned().collect();
        public.extend(pair.public);
        public.insert(CKA_CLASS, objects::ulong(CKO_PUBLIC_KEY));
        public_key_defaults(&mut public, crypt, true);
        objects::storage_defaults(&mut public, false);

        let mut private: Attrs = private_template.0.iter().cloned().collect();
        private.extend(pair.private);
        for (t, v) in [
            (CKA_CLASS, objects::ulong(CKO_PRIVATE_KEY)),
            (CKA_PRIVATE, objects::bbool(true)),
            (CKA_SENSITIVE, objects::bbool(true)),
            (CKA_ALWAYS_SENSITIVE, objects::bbool(true)),
            (CKA_EXTRACTABLE, objects::bbool(false)),
            (CKA_NEVER_EXTRACTABLE, objects::bbool(true)),
            (CKA_LOCAL, objects::bbool(true)),
        ] {
            private.insert(t, v);
        }
        for (t, v) in [
            (CKA_SIGN, true),
            (CKA_DECRYPT, crypt),
            (CKA_SIGN_RECOVER, false),
            (CKA_UNWRAP, false),
            (CKA_DERIVE, false),
            (CKA_ALWAYS_AUTHENTICATE, false),
            (CKA_WRAP_WITH_TRUSTED, false),
        ] {
            private.entry(t).or_insert_with(|| objects::bbool(v));
        }
        for t in [CKA_ID, CKA_SUBJECT] {
            private.entry(t).or_default();
        }
        objects::storage_defaults(&mut private, true);

        let key = Arc::new(pair.key);
        let sealed = keywrap::seal(token_key.as_ref(), &key_aad(&serial), &pair.secret)?;
        let mut handles = [0; 2];
        let mut to_store = Vec::new();
        if pub_token {
            to_store.push((&public, None));
        }
        if priv_token {
            to_store.push((&private, Some(sealed.as_slice())));
        }
        let stored = lock(&self.store).insert_objects(s.slot, &to_store)?;
        let mut stored = stored.into_iter();
        handles[0] = match pub_token {
            true => stored.next().ok_or(CKR_GENERAL_ERROR)?,
            false => self.add_session_object(h, s.slot, public, None),
        };
        handles[1] = match priv_token {
            true => {
                let handle = stored.next().ok_or(CKR_GENERAL_ERROR)?;
                if let Some(l) = lock(&self.logins).get_mut(&s.slot) {
                    l.keys.insert(handle, (private, key));
                }
                handle
            }
            false => self.add_session_object(h, s.slot, private, Some(key)),
        };
        Ok((handles[0], handles[1]))
    }

    /// A private key for C_SignInit / C_DecryptInit: from the cache, or unsealed from the
    /// store with the token key and cached until logout.
    fn private_key(
        &self,
        s: &SessionEntry,
        object: CK_OBJECT_HANDLE,
    ) -> Result<(Attrs, Arc<PrivateKey>), CK_RV> {
        if object >= SESSION_OBJECT_BASE {
            let objects = lock(&self.session_objects);
            let o = objects
                .get(&object)
                .filter(|o| o.slot == s.slot)
                .ok_or(CKR_KEY_HANDLE_INVALID)?;
            if !self.visible(s.slot, &o.attrs) {
                return Err(CKR_USER_NOT_LOGGED_IN);
            }
            let key = o.key.clone().ok_or(CKR_KEY_TYPE_INCONSISTENT)?;
            return Ok((o.attrs.clone(), key));
        }
        let (token_key, serial) = {
            let logins = lock(&self.logins);
            let l = logins
                .get(&s.slot)
                .filter(|l| l.user == Some(CKU_USER))
                .ok_or(CKR_USER_NOT_LOGGED_IN)?;
            if let Some((attrs, key)) = l.keys.get(&object) {
                return Ok((attrs.clone(), key.clone()));
            }
            (
                l.token_key.clone().ok_or(CKR_USER_NOT_LOGGED_IN)?,
                l.serial.clone(),
            )
        };
        let row = lock(&self.store)
            .object(object)?
            .filter(|o| o.slot == s.slot)
            .ok_or(CKR_KEY_HANDLE_INVALID)?;
        if !is_private_key(&row.attrs) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        let sealed = row.secret.ok_or(CKR_DEVICE_ERROR)?;
        let plain = keywrap::open(token_key.as_ref(), &key_aad(&serial), &sealed)?
            .ok_or(CKR_DEVICE_ERROR)?;
        let key_type = objects::get_ulong(&row.attrs, CKA_KEY_TYPE).ok_or(CKR_DEVICE_ERROR)?;
        let key = Arc::new(PrivateKey::from_secret(key_type, &plain)?);
        if let Some(l) = lock(&self.logins).get_mut(&s.slot) {
            l.keys.insert(object, (row.attrs.clone(), key.clone()));
        }
        Ok((row.attrs, key))
    }

    fn public_key(
        &self,
        s: &SessionEntry,
        object: CK_OBJECT_HANDLE,
    ) -> Result<(Attrs, PublicKey), CK_RV> {
        let (_, attrs) = self
            .find_object(s, object)
            .map_err(|_| CKR_KEY_HANDLE_INVALID)?;
        if objects::get_ulong(&attrs, CKA_CLASS) != Some(CKO_PUBLIC_KEY) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        let key = PublicKey::from_attrs(&attrs)?;
        Ok((attrs, key))
    }

    /// C_SignInit.
    pub fn sign_init(
        &self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
        key: CK_OBJECT_HANDLE,
    ) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let mut state = lock(&s.state);
        if state.sign.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let (attrs, key) = self.private_key(&s, key)?;
        if !objects::get_bool(&attrs, CKA_SIGN) {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        state.sign = Some(SignOp::new(mechanism, param, key)?);
        Ok(())
    }

    /// C_VerifyInit.
    pub fn verify_init(
        &self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
        key: CK_OBJECT_HANDLE,
    ) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let mut state = lock(&s.state);
        if state.verify.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let (attrs, key) = self.public_key(&s, key)?;
        if !objects::get_bool(&attrs, CKA_VERIFY) {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        state.verify = Some(VerifyOp::new(mechanism, param, key)?);
        Ok(())
    }

    /// C_EncryptInit (CKM_SM2_ENCRYPT with an SM2 public key).
    pub fn encrypt_init(
        &self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
        key: CK_OBJECT_HANDLE,
    ) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let mut state = lock(&s.state);
        if state.encrypt.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let (attrs, key) = self.public_key(&s, key)?;
        if !objects::get_bool(&attrs, CKA_ENCRYPT) {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        let key_type =
            objects::get_ulong(&attrs, CKA_KEY_TYPE).unwrap_or(CK_UNAVAILABLE_INFORMATION);
        mechanisms::check_crypt(mechanism, param, key_type)?;
        state.encrypt = Some(CryptOp {
            key: CryptKey::Public(key),
            pending: None,
        });
        Ok(())
    }

    /// C_DecryptInit (CKM_SM2_ENCRYPT with an SM2 private key).
    pub fn decrypt_init(
        &self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
        key: CK_OBJECT_HANDLE,
    ) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let mut state = lock(&s.state);
        if state.decrypt.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let (attrs, key) = self.private_key(&s, key)?;
        if !objects::get_bool(&attrs, CKA_DECRYPT) {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        mechanisms::check_crypt(mechanism, param, key.key_type())?;
        state.decrypt = Some(CryptOp {
            key: CryptKey::Private(key),
            pending: None,
        });
        Ok(())
    }

    /// C_DigestInit (CKM_SM3, CKM_SHA256).
    pub fn digest_init(
        &self,
        h: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        param: &[u8],
    ) -> Result<(), CK_RV> {
        let s = self.session(h)?;
        let mut state = lock(&s.state);
        if state.digest.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        if !param.is_empty() {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        let hasher = Hasher::for_digest(mechanism)?;
        state.digest = Some(DigestOp {
            hasher: Some(hasher),
            pending: None,
            multipart: false,
        });
        Ok(())
    }

    /// C_UnwrapKey. The place for the GM/T 0009 SM2 envelope (SM2EnvelopedKey: an SM4 key
    /// under SM2, the private key under SM4) that brings a KMC-escrowed encryption key
    /// into the token; not implemented yet.
    pub fn unwrap_key(&self, h: CK_SESSION_HANDLE) -> Result<CK_OBJECT_HANDLE, CK_RV> {
        self.session(h)?;
        Err(CKR_FUNCTION_NOT_SUPPORTED)
    }
}

/// The free slot: one past the highest token slot.
fn free_slot(tokens: &[TokenRow]) -> CK_SLOT_ID {
    tokens.iter().map(|t| t.slot + 1).max().unwrap_or(0)
}

fn trimmed_bits(n: &[u8]) -> CK_ULONG {
    let Some(pos) = n.iter().position(|b| *b != 0) else {
        return 0;
    };
    ((n.len() - pos) * 8 - n[pos].leading_zeros() as usize) as CK_ULONG
}

fn public_key_defaults(attrs: &mut Attrs, crypt: bool, local: bool) {
    for (t, v) in [
        (CKA_VERIFY, true),
        (CKA_ENCRYPT, crypt),
        (CKA_VERIFY_RECOVER, false),
        (CKA_WRAP, false),
        (CKA_DERIVE, false),
        (CKA_TRUSTED, false),
        (CKA_LOCAL, local),
    ] {
        attrs.entry(t).or_insert_with(|| objects::bbool(v));
    }
    if local {
        attrs.insert(CKA_LOCAL, objects::bbool(true));
    }
    for t in [CKA_ID, CKA_SUBJECT] {
        attrs.entry(t).or_default();
    }
}

//! The connection to one token: the long-lived session that holds the login, and the signing
//! sessions, opened up front and each taken by one signer thread, with its own cache of key
//! handles.
//!
//! Signing sessions are read-only: signing writes nothing, and a module may do more work per
//! operation in a read-write session (SoftHSM 2.6 signs P-256 at about half the rate in one).
//! Key generation, the one write, gets a read-write session of its own for that operation.
//!
//! Sessions are opened "no drop": cryptoki never closes them behind signet's back. A session
//! is closed only while its context is known to be live; one from a dead context, or one
//! whose handle the module no longer knows, is dropped without `C_CloseSession`, since its
//! number may by now belong to a newer session.

use std::collections::HashMap;
use std::sync::Arc;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::error::{Failure, HsmError};
use super::keys::{self, FoundKey};
use super::sm2::Sm2Settings;
use super::uri::TokenSelector;
use crate::secret::Secret;

/// One signing session and the key handles found through it.
pub(crate) struct Worker {
    /// The read-only session, used by one operation at a time.
    pub(crate) session: Session,
    /// The context and slot, for the read-write session a write needs.
    pkcs11: Pkcs11,
    slot: Slot,
    /// The module generation the session was opened in.
    generation: u64,
    /// Private-key handles by label, found once through this session.
    keys: HashMap<String, FoundKey>,
    /// The module's SM2 numbers, when it has them.
    sm2: Option<Arc<Sm2Settings>>,
}

impl Worker {
    /// The module generation the session belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn new(
        session: Session,
        pkcs11: Pkcs11,
        slot: Slot,
        generation: u64,
        sm2: Option<Arc<Sm2Settings>>,
    ) -> Worker {
        Worker {
            session,
            pkcs11,
            slot,
            generation,
            keys: HashMap::new(),
            sm2,
        }
    }

    /// The module's SM2 numbers, when it has them.
    pub(crate) fn sm2(&self) -> Option<&Sm2Settings> {
        self.sm2.as_deref()
    }

    /// The module's SM2 numbers, to move into a closure.
    pub(crate) fn sm2_settings(&self) -> Option<Arc<Sm2Settings>> {
        self.sm2.clone()
    }

    /// Run `write` in a read-write session opened for it and closed after it.
    pub(crate) fn with_rw_session<T>(
        &self,
        write: impl FnOnce(&Session) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let session = self
            .pkcs11
            .open_rw_session_no_drop(self.slot)
            .map_err(|e| Failure::from_ck("C_OpenSession", e))?;
        let result = write(&session);
        // A device failure took the context with it: the session is dropped unclosed.
        if !matches!(result, Err(Failure::Device(_))) {
            close(session);
        }
        result
    }

    /// The private key labelled `label`, found once and then served from the cache.
    pub(crate) fn private_key(&mut self, label: &str) -> Result<FoundKey, Failure> {
        if let Some(key) = self.keys.get(label) {
            return Ok(*key);
        }
        self.find_private_key(label)
    }

    /// Look the key up on the token even if cached; a re-found handle replaces the old one.
    pub(crate) fn find_private_key(&mut self, label: &str) -> Result<FoundKey, Failure> {
        match keys::find_private_key(&self.session, label, self.sm2.as_deref()) {
            Ok(key) => {
                tracing::debug!(label, handle = %key.handle, "key handle found and cached");
                self.keys.insert(label.to_owned(), key);
                Ok(key)
            }
            Err(e) => {
                self.keys.remove(label);
                Err(e)
            }
        }
    }
}

/// The token as reached through one generation of the module's context.
pub(crate) struct Live {
    /// The module context the sessions belong to.
    pkcs11: Pkcs11,
    /// The slot the token was found in (looked up again on every reconnect).
    slot: Slot,
    /// The module generation of `pkcs11`.
    generation: u64,
    /// Holds the login for the whole application; never used to sign, never logged out.
    login: Option<Session>,
    /// The module's SM2 numbers, handed to every worker.
    sm2: Option<Arc<Sm2Settings>>,
    /// Sessions opened and not yet taken by a signer thread.
    idle: Vec<Worker>,
    /// The configured pool size.
    pool_size: usize,
}

/// Whether a session's handle is still known to the module (and its state if so).
fn probe(session: &Session) -> Option<SessionState> {
    session.get_session_info().ok().map(|i| i.session_state())
}

fn logged_in(state: SessionState) -> bool {
    matches!(state, SessionState::RoUser | SessionState::RwUser)
}

fn login(session: &Session, pin: &Secret) -> Result<(), Failure> {
    let pin = AuthPin::new(pin.expose().into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(Failure::from_ck("C_Login", e)),
    }
}

/// Close a session whose context is live and whose handle is known to be ours.
fn close(session: Session) {
    if let Err(e) = session.close() {
        tracing::debug!(error = %e, "C_CloseSession failed");
    }
}

/// A leaving signer thread's session: closed if `module` is still the context it was opened
/// in and the module still knows it, dropped unclosed if not (see the module comment).
pub(crate) fn retire(module: &super::module::ModuleState, worker: Worker) {
    if module.pkcs11.is_some()
        && module.generation == worker.generation
        && probe(&worker.session).is_some()
    {
        close(worker.session);
    }
}

/// The slot holding the selected token.
pub(crate) fn find_token(pkcs11: &Pkcs11, selector: &TokenSelector) -> Result<Slot, Failure> {
    let slots = pkcs11
        .get_slots_with_token()
        .map_err(|e| Failure::from_ck("C_GetSlotList", e))?;
    for slot in slots {
        let info = match pkcs11.get_token_info(slot) {
            Ok(info) => info,
            // A token pulled between the two calls is simply not the one.
            Err(CkError::Pkcs11(RvError::TokenNotPresent, _)) => continue,
            Err(e) => return Err(Failure::from_ck("C_GetTokenInfo", e)),
        };
        if selector.matches(info.label(), info.serial_number()) {
            return Ok(slot);
        }
    }
    Err(Failure::Final(HsmError::TokenNotFound {
        selector: selector.to_string(),
    }))
}

impl Live {
    /// Find the token, open the login session and log in, and open `pool_size` signing
    /// sessions. The caller holds the module's read guard for `generation`.
    pub(crate) fn connect(
        pkcs11: Pkcs11,
        generation: u64,
        selector: &TokenSelector,
        pin: &Secret,
        pool_size: usize,
        sm2: Option<Arc<Sm2Settings>>,
    ) -> Result<Live, Failure> {
        let slot = find_token(&pkcs11, selector)?;
        let mut live = Live {
            pkcs11,
            slot,
            generation,
            login: None,
            sm2,
            idle: Vec::with_capacity(pool_size),
            pool_size,
        };
        match live.fill(pin) {
            Ok(()) => Ok(live),
            Err(f) => {
                if !matches!(f, Failure::Device(_)) {
                    live.close();
                }
                Err(f)
            }
        }
    }

    fn fill(&mut self, pin: &Secret) -> Result<(), Failure> {
        self.ensure_login(pin)?;
        while self.idle.len() < self.pool_size {
            let w = self.open_worker()?;
            self.idle.push(w);
        }
        Ok(())
    }

    /// The generation of the module context these sessions belong to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The token's slot (for the test hook that closes every session underneath).
    pub(crate) fn slot(&self) -> Slot {
        self.slot
    }

    fn open_session(&self) -> Result<Session, Failure> {
        self.pkcs11
            .open_rw_session_no_drop(self.slot)
            .map_err(|e| Failure::from_ck("C_OpenSession", e))
    }

    fn open_worker(&self) -> Result<Worker, Failure> {
        let session = self
            .pkcs11
            .open_ro_session_no_drop(self.slot)
            .map_err(|e| Failure::from_ck("C_OpenSession", e))?;
        Ok(Worker::new(
            session,
            self.pkcs11.clone(),
            self.slot,
            self.generation,
            self.sm2.clone(),
        ))
    }

    /// Make sure the application is logged in: keep the login session if it is still valid
    /// and logged in, log it in again if it is valid but public, replace it if it is gone.
    fn ensure_login(&mut self, pin: &Secret) -> Result<(), Failure> {
        if let Some(session) = self.login.take() {
            match probe(&session) {
                Some(state) if logged_in(state) => {
                    self.login = Some(session);
                    return Ok(());
                }
                Some(_) => {
                    let r = login(&session, pin);
                    self.login = Some(session);
                    return r;
                }
                // Unknown handle: drop it unclosed (see the module comment).
                None => drop(session),
            }
        }
        let session = self.open_session()?;
        match login(&session, pin) {
            Ok(()) => {
                self.login = Some(session);
                Ok(())
            }
            Err(f) => {
                close(session);
                Err(f)
            }
        }
    }

    /// A session for a signer thread that has none (at its first operation, after a
    /// reconnect, or after its session was discarded): one opened up front, or a new one.
    pub(crate) fn checkout(&mut self) -> Result<Worker, Failure> {
        match self.idle.pop() {
            Some(w) => Ok(w),
            None => self.open_worker(),
        }
    }

    /// True when the application is no longer logged in (someone logged out, or the login
    /// session is gone): private keys then look absent rather than failing.
    pub(crate) fn login_lost(&self) -> bool {
        !self.login.as_ref().and_then(probe).is_some_and(logged_in)
    }

    /// Log the application out through the login session (test hook only).
    pub(crate) fn logout_for_test(&self) {
        if let Some(s) = &self.login {
            if let Err(e) = s.logout() {
                tracing::debug!(error = %e, "C_Logout for test failed");
            }
        }
    }

    /// Throw a worker away after its session failed again: close it if the module still
    /// knows it, drop it unclosed if not.
    pub(crate) fn discard(&mut self, worker: Worker) {
        if worker.generation == self.generation && probe(&worker.session).is_some() {
            close(worker.session);
        }
    }

    /// After a session-class failure on `failed`: drop sessions the module no longer knows
    /// (closing the failed one properly if it is still valid), make sure of the login, and
    /// return a fresh worker with an empty key cache so the key is found again.
    pub(crate) fn replace(&mut self, failed: Worker, pin: &Secret) -> Result<Worker, Failure> {
        self.discard(failed);
        // Probe everything before opening anything, so no stale number can alias a new session.
        self.idle.retain(|w| probe(&w.session).is_some());
        self.ensure_login(pin)?;
        self.open_worker()
    }

    /// Close every session (which also ends the login). The caller holds the module's read
    /// guard and knows this generation is live.
    pub(crate) fn close(self) {
        for w in self.idle {
            close(w.session);
        }
        if let Some(s) = self.login {
            close(s);
        }
    }
}

//! One PKCS#11 context per module per process. Every `Hsm` on the same module shares it:
//! `C_Initialize` must not run twice, and `C_Finalize` must not run while any thread is inside
//! another call, so cryptoki calls hold a read guard and (re-)initialising or finalising takes
//! the write guard.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, Weak};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::error::{Failure, HsmError};

/// A loaded PKCS#11 module, shared by every `Hsm` that uses it.
pub(crate) struct Module {
    path: PathBuf,
    state: RwLock<ModuleState>,
}

/// The module's context, if initialised, and which incarnation of it this is.
pub(crate) struct ModuleState {
    /// The initialised context, `None` after a finalise until the next initialise.
    pub(crate) pkcs11: Option<Pkcs11>,
    /// Bumped on every finalise: sessions and handles from an older generation are void.
    pub(crate) generation: u64,
    /// How many open `Hsm`s and token modules use the module; the last to close finalises it.
    users: usize,
    /// How many of them are a CA's `Hsm` (a session pool that signs): while there is one, a
    /// token module never re-initialises the context to see tokens changed elsewhere.
    ca_users: usize,
}

type Registry = Mutex<HashMap<PathBuf, Weak<Module>>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Module {
    /// The process's module at `path`, registered as used by one more `Hsm`. Loading and
    /// initialising happen in [`Module::context`].
    pub(crate) fn acquire(path: &Path) -> Arc<Module> {
        // Two spellings of one file are one module: the loader would hand back the same library.
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let mut reg = registry().lock().unwrap_or_else(PoisonError::into_inner);
        reg.retain(|_, m| m.strong_count() > 0);
        let module = match reg.get(&key).and_then(Weak::upgrade) {
            Some(m) => m,
            None => {
                let m = Arc::new(Module {
                    path: path.to_owned(),
                    state: RwLock::new(ModuleState {
                        pkcs11: None,
                        generation: 0,
                        users: 0,
                        ca_users: 0,
                    }),
                });
                reg.insert(key, Arc::downgrade(&m));
                m
            }
        };
        module.write().users += 1;
        module
    }

    /// As [`Module::acquire`], for a CA's `Hsm`: the context is then never re-initialised
    /// by [`Module::refresh`] while the `Hsm` is open. Release with [`Module::release_ca`].
    pub(crate) fn acquire_ca(path: &Path) -> Arc<Module> {
        let module = Self::acquire(path);
        module.write().ca_users += 1;
        module
    }

    /// The module path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Shared access for cryptoki calls: no finalise can run while the guard lives.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, ModuleState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ModuleState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The initialised context and its generation, loading and initialising the module
    /// (with OS locking) if no context is live.
    pub(crate) fn context(&self) -> Result<(Pkcs11, u64), Failure> {
        let mut state = self.write();
        if state.users == 0 {
            // Every Hsm on the module closed (a reconnect thread lost the race with close).
            return Err(Failure::Final(HsmError::Closed));
        }
        if let Some(p) = &state.pkcs11 {
            return Ok((p.clone(), state.generation));
        }
        let pkcs11 = Pkcs11::new(&self.path).map_err(|e| match e {
            CkError::LibraryLoading(e) => Failure::Final(HsmError::Module {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            }),
            other => Failure::from_ck("C_GetFunctionList", other),
        })?;
        match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => {}
            // Someone else in the process initialised the library outside this registry
            // (or a finalise failed): the context is usable all the same.
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                tracing::warn!(module = %self.path.display(), "module was already initialised");
            }
            Err(e) => return Err(Failure::from_ck("C_Initialize", e)),
        }
        state.pkcs11 = Some(pkcs11.clone());
        Ok((pkcs11, state.generation))
    }

    /// Finalise the context of `generation`, if it is still the live one. Waits for every
    /// cryptoki call in flight (they hold read guards). Sessions of that generation become
    /// void; their owners must drop them without closing.
    pub(crate) fn finalise(&self, generation: u64) {
        let mut state = self.write();
        if state.generation != generation {
            return;
        }
        Self::finalise_locked(&mut state, &self.path);
    }

    fn finalise_locked(state: &mut ModuleState, path: &Path) {
        if let Some(pkcs11) = state.pkcs11.take() {
            if let Err(e) = pkcs11.finalize() {
                // A dead device often fails C_Finalize too; the context is gone either way.
                tracing::debug!(module = %path.display(), error = %e, "C_Finalize failed");
            }
        }
        state.generation += 1;
    }

    /// Re-initialise the context so that the module reads its slots and tokens afresh
    /// (kryoptic, for one, reads token state once per `C_Initialize`, so a token initialised
    /// by another process stays invisible until then). Done only while no CA `Hsm` uses the
    /// module: its signing sessions would die with the context. Waits for calls in flight.
    /// Returns whether the context was finalised (the next call initialises it again).
    pub(crate) fn refresh(&self) -> bool {
        let mut state = self.write();
        if state.ca_users > 0 {
            tracing::debug!(module = %self.path.display(), "module serves the CA's HSM: not re-initialised");
            return false;
        }
        if state.pkcs11.is_none() {
            return true;
        }
        tracing::debug!(module = %self.path.display(), "re-initialising the token module to rescan its slots");
        Self::finalise_locked(&mut state, &self.path);
        true
    }

    /// A CA's `Hsm` stops using the module.
    pub(crate) fn release_ca(&self) {
        {
            let mut state = self.write();
            state.ca_users = state.ca_users.saturating_sub(1);
        }
        self.release();
    }

    /// One `Hsm` stops using the module; the last one finalises it.
    pub(crate) fn release(&self) {
        let mut state = self.write();
        state.users = state.users.saturating_sub(1);
        if state.users == 0 {
            Self::finalise_locked(&mut state, &self.path);
        }
    }
}

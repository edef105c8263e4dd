//! PKCS#11 HSM access: one context per module, a held login, a pool of sessions, cached key
//! handles, signing mechanisms, and recovery when the device goes away.
//!
//! Every cryptoki call runs on a signer thread, never on the async executor: one OS thread
//! per pooled session, each owning its session and that session's cache of key handles, all
//! fed by one queue (`call.rs`). A thread takes the next operation as soon as it is done with
//! one, so under load a session never waits for a caller, and an operation costs a queue
//! push and a reply, with no lock on the pool. Failures fall into three classes (see
//! `error.rs`): a stale session, handle or login is repaired and the operation retried once;
//! a lost device marks the HSM unavailable, finalises the module and reconnects in a
//! background thread with exponential backoff, while calls fail fast with
//! [`HsmError::Unavailable`]; anything else is returned as it is.
//!
//! An HSM can also stop answering without failing (a network HSM whose peer froze): its
//! calls then block. The wait in the queue and the operation itself are each bounded by the
//! call timeout (`call.rs`). An operation that overruns it is abandoned: the caller gets
//! [`HsmError::Unavailable`], the HSM is reported unavailable and reconnected like a lost
//! device, and when the stuck thread finally returns, its session is discarded rather than
//! kept. That thread keeps its read guard on the module until then, so at most `pool_size`
//! threads can hang, the reconnect's C_Finalize waits for them, and once it is through
//! every thread serves the queue again: signing resumes at full pool size.
//!
//! The module's context is shared by every `Hsm` on it in the process (`module.rs`), so a
//! device-class failure seen by one finalises it for all; the others notice the new
//! generation on their next call and reconnect the same way.
//!
//! What p11-kit's client module does when its server dies (found with `p11-kit server` 0.24
//! in front of SoftHSM 2.6, and what `tests/hsm.rs` exercises): the server forks a
//! `p11-kit-remote` per connection, so only killing that process group cuts the link. Calls
//! in flight and every later call on the old context (C_SignInit, C_GetSlotList,
//! C_CloseSession) then return CKR_DEVICE_ERROR at once; there is no hang. The context never
//! reconnects by itself. C_Finalize succeeds; C_Initialize succeeds even while the server is
//! down, but then lists no slots (so the token is "not found"). Once the server is back on
//! the same socket, C_Finalize + C_Initialize reconnects and the token, the login and the
//! keys are there again. Hence recovery here always finalises and re-initialises, treats
//! "token not found" during recovery as "not back yet", and finalises again before the next
//! attempt.
//!
//! A frozen server (its process group stopped with SIGSTOP, what `tests/frozen_hsm.rs`
//! does) is the other case: calls block in the client until SIGCONT, then complete as if
//! nothing happened; C_CloseSession and C_Finalize block too. Hence the call timeout above,
//! and a close at shutdown that is given up on (`Hsm::close_within`).

pub mod address;
mod call;
mod error;
pub(crate) mod keys;
mod module;
mod pool;
pub mod sm2;
pub mod softhsm;
pub mod token;
mod uri;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use spki::SubjectPublicKeyInfoOwned;
use tokio::sync::watch;

pub use error::HsmError;
pub use keys::mechanism;
pub use uri::TokenSelector;

use call::{Call, Queue};
use error::Failure;
use module::Module;
use pool::{Live, Worker};

/// What a signer thread holds between operations: its session, once it has taken one.
type Slot = Option<Worker>;

use crate::pki::alg::{KeyType, SignatureAlgorithm};
use crate::secret::Secret;

/// How to reach the HSM.
#[derive(Clone, Debug)]
pub struct HsmSettings {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The token holding the keys, by label or serial; never a slot id, as SoftHSM renumbers slots.
    pub token: TokenSelector,
    /// The user PIN.
    pub pin: Secret,
    /// How many signing sessions to keep open, one per concurrent worker (at least 1).
    pub pool_size: usize,
    /// The first wait before reconnecting after the device went away.
    pub reconnect_initial: Duration,
    /// The longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// The longest wait for a free session, and separately for one PKCS#11 operation (for
    /// key generation, at least a minute). A call that waits longer fails with
    /// [`HsmError::Unavailable`]; an operation that overruns it also marks the HSM
    /// unavailable and starts a reconnect.
    pub call_timeout: Duration,
    /// The module's vendor-defined SM2 numbers and the distinguishing ID to sign with, when
    /// it has SM2.
    pub sm2: Option<sm2::Sm2Settings>,
}

/// A handle on the HSM. Cheap to clone; the last clone dropped closes the sessions and
/// finalises the module (if no other `Hsm` uses it).
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

struct Inner {
    /// The process-wide context of the module, shared with other `Hsm`s on it.
    module: Arc<Module>,
    /// The token the keys live on.
    token: TokenSelector,
    /// The user PIN, kept for logging in again after a reconnect or a lost login.
    pin: Secret,
    /// How many signing sessions the pool keeps.
    pool_size: usize,
    /// First reconnect delay.
    reconnect_initial: Duration,
    /// Longest reconnect delay.
    reconnect_max: Duration,
    /// The bound on the wait for a session and on one operation.
    call_timeout: Duration,
    /// The module's SM2 numbers, when it has them.
    sm2: Option<Arc<sm2::Sm2Settings>>,
    /// The operations waiting for a signer thread (one thread per pooled session).
    queue: Arc<Queue<Slot>>,
    /// The token's sessions, `None` while the device is unavailable or after close.
    live: Mutex<Option<Live>>,
    /// False from a device-class failure until the reconnect succeeds.
    available: AtomicBool,
    /// `available`, for those who wait for it to change (see [`Hsm::availability`]).
    availability: watch::Sender<bool>,
    /// Set once by close(); nothing is reopened afterwards.
    closed: AtomicBool,
    /// True while a reconnect thread runs (at most one).
    recovering: AtomicBool,
    /// Why the HSM went unavailable, for the errors returned meanwhile.
    down_reason: Mutex<String>,
    /// This value itself, for the reconnect thread (weak, so dropping the last `Hsm` ends it).
    me: Weak<Inner>,
}

/// The shortest wait between reconnection attempts, whatever the settings say.
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(10);
/// The shortest call timeout, whatever the settings say.
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(10);
/// The shortest bound on generating a key pair: an RSA-4096 key takes seconds, and more on
/// a busy HSM, so key generation may run this long even with a shorter call timeout.
const MIN_KEY_GENERATION_TIMEOUT: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.inner.module.path())
            .field("token", &self.inner.token)
            .field("pool_size", &self.inner.pool_size)
            .field("available", &self.is_available())
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Load the module (one context per module per process, initialised with OS locking),
    /// find the token by label or serial, open a long-lived login session (an existing login
    /// counts as success) and `pool_size` signing sessions. Blocking; call at startup.
    pub fn open(settings: HsmSettings) -> Result<Hsm, HsmError> {
        let pool_size = settings.pool_size.max(1);
        let module = Module::acquire_ca(&settings.module);
        let inner = Arc::new_cyclic(|me| Inner {
            module,
            token: settings.token,
            pin: settings.pin,
            pool_size,
            // A zero delay would make the reconnect loop spin.
            reconnect_initial: settings.reconnect_initial.max(MIN_RECONNECT_DELAY),
            reconnect_max: settings
                .reconnect_max
                .max(settings.reconnect_initial)
                .max(MIN_RECONNECT_DELAY),
            call_timeout: settings.call_timeout.max(MIN_CALL_TIMEOUT),
            sm2: settings.sm2.map(Arc::new),
            queue: Arc::new(Queue::new()),
            live: Mutex::new(None),
            available: AtomicBool::new(false),
            availability: watch::Sender::new(false),
            closed: AtomicBool::new(false),
            recovering: AtomicBool::new(false),
            down_reason: Mutex::new("not connected yet".into()),
            me: me.clone(),
        });
        match inner.connect() {
            Ok(live) => {
                *lock(&inner.live) = Some(live);
                if let Err(e) = inner.start_signers() {
                    inner.close();
                    return Err(HsmError::Pkcs11 {
                        op: "starting signer threads",
                        rv: e.to_string(),
                    });
                }
                inner.set_available(true);
                crate::metrics::metrics().hsm_sessions(pool_size);
                tracing::info!(
                    module = %inner.module.path().display(),
                    token = %inner.token,
                    pool_size,
                    "HSM session pool open"
                );
                Ok(Hsm { inner })
            }
            Err(f) => {
                inner.close();
                Err(f.into_error())
            }
        }
    }

    /// Sign `message` with the private key labelled `key_label`, returning the bytes that go
    /// into an X.509 signature BIT STRING (DER Ecdsa-Sig-Value for ECDSA).
    pub async fn sign(
        &self,
        key_label: &str,
        alg: SignatureAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let started = Instant::now();
        let label = key_label.to_owned();
        let message = message.to_vec();
        let signed = self
            .blocking(self.inner.call_timeout, move |inner, call, slot| {
                inner.run(call, slot, |w| {
                    let key = w.private_key(&label)?;
                    keys::sign(&w.session, &label, key, alg, &message, w.sm2())
                })
            })
            .await;
        let m = crate::metrics::metrics();
        match &signed {
            Ok(_) => {
                m.hsm_operation(key_label, "sign", "ok");
                m.hsm_signed(key_label, started.elapsed());
            }
            Err(e) => m.hsm_operation(key_label, "sign", e.class()),
        }
        signed
    }

    /// The public key of the key pair labelled `key_label`.
    pub async fn public_key(&self, key_label: &str) -> Result<SubjectPublicKeyInfoOwned, HsmError> {
        let label = key_label.to_owned();
        self.blocking(self.inner.call_timeout, move |inner, call, slot| {
            inner.run(call, slot, |w| {
                keys::public_key(&w.session, &label, w.sm2())
            })
        })
        .await
    }

    /// Whether a private key with this label exists on the token.
    pub async fn key_exists(&self, key_label: &str) -> Result<bool, HsmError> {
        let label = key_label.to_owned();
        self.blocking(self.inner.call_timeout, move |inner, call, slot| {
            // KeyNotFound passes through run(), which tells a lost login from a missing key.
            match inner.run(call, slot, |w| w.find_private_key(&label).map(|_| true)) {
                Err(HsmError::KeyNotFound { .. }) => Ok(false),
                other => other,
            }
        })
        .await
    }

    /// Generate a key pair on the token under `key_label`, refusing a label already in use.
    /// Every attribute is set explicitly; CKA_ID is the SHA-1 of the public key bits.
    pub async fn generate_key(
        &self,
        key_label: &str,
        key_type: KeyType,
    ) -> Result<SubjectPublicKeyInfoOwned, HsmError> {
        let label = key_label.to_owned();
        let limit = self.inner.call_timeout.max(MIN_KEY_GENERATION_TIMEOUT);
        let generated = self
            .blocking(limit, move |inner, call, slot| {
                inner.run(call, slot, |w| {
                    let sm2 = w.sm2_settings();
                    w.with_rw_session(|session| {
                        keys::generate(session, &label, key_type, sm2.as_deref())
                    })
                })
            })
            .await;
        let outcome = generated.as_ref().map_or_else(HsmError::class, |_| "ok");
        crate::metrics::metrics().hsm_operation(key_label, "generate", outcome);
        generated
    }

    /// True while the module is initialised and the token reachable; false while recovering.
    pub fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::SeqCst) && !self.inner.closed.load(Ordering::SeqCst)
    }

    /// A watch of [`Hsm::is_available`]: it turns false when a failure or a call overrunning
    /// its timeout takes the HSM down (and at close), and true when the reconnect succeeds.
    pub fn availability(&self) -> watch::Receiver<bool> {
        self.inner.availability.subscribe()
    }

    /// Close the sessions and, if no other `Hsm` uses the module, finalise it. Later calls
    /// return [`HsmError::Closed`]. Also happens when the last clone is dropped. Makes a few
    /// blocking PKCS#11 calls (C_CloseSession, C_Finalize), which wait for operations still
    /// running and hang with a hung HSM: see [`Hsm::close_within`].
    pub fn close(&self) {
        self.inner.close();
    }

    /// [`Hsm::close`] on a thread of its own, waiting at most `limit` for it. Returns false
    /// if it did not finish in time (an operation or C_Finalize hangs): the thread is then
    /// abandoned, and calls made meanwhile already get [`HsmError::Closed`].
    pub fn close_within(&self, limit: Duration) -> bool {
        let (done, finished) = std::sync::mpsc::channel();
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("signet-hsm-close".into())
            .spawn(move || {
                inner.close();
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => finished.recv_timeout(limit).is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a thread to close the HSM");
                false
            }
        }
    }

    /// Close every session of the token underneath the pool (raw `C_CloseAllSessions`), so
    /// the next operation meets CKR_SESSION_HANDLE_INVALID. For tests of the session-class
    /// retry only.
    #[doc(hidden)]
    pub fn invalidate_sessions_for_test(&self) {
        let module = self.inner.module.read();
        let live = lock(&self.inner.live);
        let Some(live) = live.as_ref() else { return };
        if module.generation != live.generation() || module.pkcs11.is_none() {
            return;
        }
        // SAFETY: the path is the module already loaded by this process, so the loader hands
        // back the same library. Its function list is asked for (some modules export only
        // C_GetFunctionList), and C_CloseAllSessions from it takes a plain slot id; the
        // module's read guard keeps C_Finalize from running meanwhile.
        unsafe {
            let lib = match cryptoki_sys::Pkcs11::new(self.inner.module.path()) {
                Ok(lib) => lib,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load module for test hook");
                    return;
                }
            };
            let mut list: cryptoki_sys::CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
            let rv = lib.C_GetFunctionList(&mut list);
            match list.as_ref().and_then(|l| l.C_CloseAllSessions) {
                Some(close_all) if rv == cryptoki_sys::CKR_OK => {
                    let rv = close_all(live.slot().id());
                    tracing::debug!(rv, "C_CloseAllSessions for test");
                }
                _ => tracing::warn!(rv, "the module lists no C_CloseAllSessions"),
            }
        }
    }

    /// Log the application out underneath the pool (C_Logout), so private keys vanish from
    /// the next search. For tests of the lost-login retry only.
    #[doc(hidden)]
    pub fn logout_for_test(&self) {
        let module = self.inner.module.read();
        if let Some(live) = lock(&self.inner.live).as_ref() {
            if module.pkcs11.is_some() && module.generation == live.generation() {
                live.logout_for_test();
            }
        }
    }

    /// Run `f` on a signer thread: the wait in the queue is bounded by the call timeout (and
    /// ends early if the HSM goes away meanwhile), `f` itself by `limit`. Fails fast, without
    /// queueing, while the HSM is unavailable.
    async fn blocking<T, F>(&self, limit: Duration, f: F) -> Result<T, HsmError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &Call, &mut Slot) -> Result<T, HsmError> + Send + 'static,
    {
        self.inner.check_usable()?;
        let on_thread = Arc::clone(&self.inner);
        let inner = Arc::clone(&self.inner);
        call::run_queued(
            &self.inner.queue,
            self.inner.call_timeout,
            limit,
            &self.inner.availability,
            move |call, slot| f(&on_thread, call, slot),
            move |call| inner.overran(call, limit),
        )
        .await
    }
}

impl Inner {
    /// Set `available` (and its watch); returns what it was.
    fn set_available(&self, up: bool) -> bool {
        let was = self.available.swap(up, Ordering::SeqCst);
        // At close the pool is not "down": only reachability changes count as outages.
        if !self.closed.load(Ordering::SeqCst) {
            crate::metrics::metrics().hsm_availability(up, was != up);
        }
        self.availability
            .send_if_modified(|v| std::mem::replace(v, up) != up);
        was
    }

    /// One signer thread per pooled session, each leaving with its session closed (if its
    /// context is still live) when the queue closes.
    fn start_signers(&self) -> std::io::Result<()> {
        for i in 0..self.pool_size {
            let module = Arc::clone(&self.module);
            call::spawn_signer(
                format!("signet-hsm-{i}"),
                Arc::clone(&self.queue),
                move |slot: Slot| {
                    if let Some(worker) = slot {
                        pool::retire(&module.read(), worker);
                    }
                },
            )?;
        }
        Ok(())
    }

    /// An operation overran the call timeout. Unless it finished at that very moment, it is
    /// abandoned: the HSM is reported unavailable and reconnected. Runs on the async side,
    /// so it takes no lock a stuck PKCS#11 call may hold.
    fn overran(&self, call: &Call, limit: Duration) -> HsmError {
        let ms = limit.as_millis();
        if !call.abandon() {
            return HsmError::Unavailable {
                reason: format!("the HSM answered only after the call timeout ({ms} ms)"),
            };
        }
        let reason = format!("a call to the HSM did not answer within {ms} ms");
        if self.closed.load(Ordering::SeqCst) {
            return HsmError::Unavailable { reason };
        }
        *lock(&self.down_reason) = reason.clone();
        if self.set_available(false) {
            tracing::error!(
                timeout_ms = ms,
                "an HSM call did not answer within {ms} ms: its session is abandoned, the HSM is reported unavailable and reconnected in the background"
            );
        } else {
            tracing::warn!(
                timeout_ms = ms,
                "another HSM call did not answer within {ms} ms"
            );
        }
        self.start_recovery(call.generation());
        HsmError::Unavailable { reason }
    }

    fn check_usable(&self) -> Result<(), HsmError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(HsmError::Closed);
        }
        if !self.available.load(Ordering::SeqCst) {
            return Err(HsmError::Unavailable {
                reason: lock(&self.down_reason).clone(),
            });
        }
        Ok(())
    }

    /// (Re-)initialise the module if needed and connect to the token.
    fn connect(&self) -> Result<Live, Failure> {
        let (pkcs11, generation) = self.module.context()?;
        let module = self.module.read();
        if module.generation != generation {
            return Err(Failure::Device("the module was finalised meanwhile".into()));
        }
        Live::connect(
            pkcs11,
            generation,
            &self.token,
            &self.pin,
            self.pool_size,
            self.sm2.clone(),
        )
    }

    /// Run one operation on the signer thread's session (taking one from the pool if the
    /// thread has none yet, or only one of a finalised context): retry once on a fresh
    /// session after a session-class failure, go into recovery after a device-class one. The
    /// thread keeps the session only if `call` was not abandoned meanwhile.
    fn run<T>(
        &self,
        call: &Call,
        slot: &mut Slot,
        op: impl Fn(&mut Worker) -> Result<T, Failure>,
    ) -> Result<T, HsmError> {
        self.check_usable()?;
        let module = self.module.read();
        if call.is_abandoned() {
            // Given up on while waiting for the module: nobody waits for the answer.
            return Err(HsmError::Unavailable {
                reason: "the call was abandoned at its timeout".into(),
            });
        }
        let kept = slot
            .take()
            .filter(|w| module.pkcs11.is_some() && w.generation() == module.generation);
        let (mut worker, generation) = if let Some(w) = kept {
            call.set_generation(module.generation);
            (w, module.generation)
        } else {
            // A session of a finalised context (if any) died with it: dropped unclosed.
            let mut live = lock(&self.live);
            let Some(l) = live.as_mut() else {
                drop(live);
                return self.check_usable().and(Err(HsmError::Closed));
            };
            let generation = l.generation();
            call.set_generation(generation);
            if module.pkcs11.is_none() || module.generation != generation {
                drop(live);
                drop(module);
                return Err(self.outage(
                    generation,
                    "the module was finalised by another user".into(),
                ));
            }
            match l.checkout() {
                Ok(w) => (w, generation),
                Err(f) => {
                    drop(live);
                    drop(module);
                    return Err(self.fail(generation, f));
                }
            }
        };
        let mut retried = false;
        loop {
            let mut outcome = op(&mut worker);
            if let Err(Failure::Device(reason)) = &outcome {
                // Some modules answer a handle gone stale or a login lost with
                // CKR_GENERAL_ERROR (kryoptic 1.x does). A device that still answers on this
                // very session has not gone away: repair the session and retry once, and a
                // second such failure is the operation's answer, not an outage.
                if worker.session.get_session_info().is_ok() {
                    let e = HsmError::Pkcs11 {
                        op: "operation",
                        rv: format!("{reason} while the token still answers"),
                    };
                    outcome = Err(if retried {
                        Failure::Final(e)
                    } else {
                        Failure::Session(e)
                    });
                }
            }
            if let Err(Failure::Final(e @ HsmError::KeyNotFound { .. })) = outcome {
                // Without a login, private keys are invisible: that is a session-class
                // failure (CKR_USER_NOT_LOGGED_IN in disguise), not a missing key.
                let lost = lock(&self.live).as_ref().is_some_and(Live::login_lost);
                outcome = Err(if lost && !retried {
                    Failure::Session(e)
                } else {
                    Failure::Final(e)
                });
            }
            match outcome {
                Ok(v) => {
                    self.give_back(call, worker, slot);
                    return Ok(v);
                }
                Err(Failure::Session(e)) if !retried && !call.is_abandoned() => {
                    retried = true;
                    tracing::warn!(error = %e, "HSM session, handle or login went stale; replacing the session and retrying once");
                    let replaced = {
                        let mut live = lock(&self.live);
                        match live.as_mut() {
                            Some(l) if l.generation() == generation => l.replace(worker, &self.pin),
                            _ => Err(Failure::Device("the HSM connection was torn down".into())),
                        }
                    };
                    match replaced {
                        Ok(w) => worker = w,
                        Err(f) => {
                            drop(module);
                            return Err(self.fail(generation, f));
                        }
                    }
                }
                Err(Failure::Session(e)) => {
                    // Stale again on a fresh session: give up on this call, keep the pool clean.
                    if let Some(l) = lock(&self.live).as_mut() {
                        if l.generation() == generation {
                            l.discard(worker);
                        }
                    }
                    return Err(e);
                }
                Err(Failure::Device(reason)) => {
                    // The worker's session died with its context: drop it unclosed.
                    drop(worker);
                    drop(module);
                    return Err(self.outage(generation, reason));
                }
                Err(f) => {
                    self.give_back(call, worker, slot);
                    return Err(f.into_error());
                }
            }
        }
    }

    /// Keep a worker after an operation for the thread's next one, or, if the caller gave up
    /// on the operation at its timeout, close and throw it away (its session hung once).
    fn give_back(&self, call: &Call, worker: Worker, slot: &mut Slot) {
        if call.finish() {
            *slot = Some(worker);
            return;
        }
        tracing::debug!("an abandoned HSM call returned; its session is discarded");
        if let Some(l) = lock(&self.live).as_mut() {
            l.discard(worker);
        }
    }

    /// Turn a failure outside an operation (opening or repairing sessions) into the error to
    /// return, starting recovery if the device is gone.
    fn fail(&self, generation: u64, f: Failure) -> HsmError {
        match f {
            Failure::Device(reason) => self.outage(generation, reason),
            other => other.into_error(),
        }
    }

    /// The device is gone: mark the HSM unavailable and make sure a reconnect thread runs.
    fn outage(&self, generation: u64, reason: String) -> HsmError {
        if lock(&self.live)
            .as_ref()
            .is_some_and(|l| l.generation() != generation)
        {
            // A late report about a context already replaced: the new one is fine.
            return HsmError::Unavailable { reason };
        }
        *lock(&self.down_reason) = reason.clone();
        if self.set_available(false) {
            tracing::warn!(%reason, "HSM unavailable; reconnecting in the background");
        }
        self.start_recovery(Some(generation));
        HsmError::Unavailable { reason }
    }

    /// Make sure a reconnect thread runs, tearing down `generation` (or, if unknown, the
    /// module's current one) first.
    fn start_recovery(&self, generation: Option<u64>) {
        if self.closed.load(Ordering::SeqCst) || self.recovering.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("signet-hsm-reconnect".into())
            .spawn(move || reconnect_loop(me, generation));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the HSM reconnect thread");
            self.recovering.store(false, Ordering::SeqCst);
        }
    }

    /// Drop the sessions of a dead context (unclosed) and finalise it.
    fn tear_down(&self, generation: u64) {
        let old = {
            let mut live = lock(&self.live);
            match live.as_ref() {
                Some(l) if l.generation() != generation => None,
                _ => live.take(),
            }
        };
        drop(old);
        self.module.finalise(generation);
    }

    /// Close the sessions of `live` properly if its context is still the module's live one;
    /// otherwise they died with their context and are dropped unclosed.
    fn close_live(&self, live: Live) {
        let module = self.module.read();
        if module.pkcs11.is_some() && module.generation == live.generation() {
            live.close();
        }
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.set_available(false);
        self.queue.close();
        let live = lock(&self.live).take();
        if let Some(live) = live {
            self.close_live(live);
        }
        self.module.release_ca();
        tracing::debug!(module = %self.module.path().display(), "HSM closed");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reconnect with exponential backoff until the token is back, the `Hsm` is closed or
/// dropped, or the token refuses the PIN (retrying would lock it). `failed_generation` is
/// the context to tear down first; `None` (a call that hung before it knew) means the
/// current one, which waits for every operation still running in it.
fn reconnect_loop(me: Weak<Inner>, failed_generation: Option<u64>) {
    let (mut generation, mut delay) = match me.upgrade() {
        Some(inner) => (
            failed_generation.unwrap_or_else(|| inner.module.read().generation),
            inner.reconnect_initial,
        ),
        None => return,
    };
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let Some(inner) = me.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            inner.recovering.store(false, Ordering::SeqCst);
            return;
        }
        inner.tear_down(generation);
        attempt += 1;
        match inner.connect() {
            Ok(live) => {
                *lock(&inner.live) = Some(live);
                if inner.closed.load(Ordering::SeqCst) {
                    // close() ran while this attempt connected: undo it.
                    if let Some(live) = lock(&inner.live).take() {
                        inner.close_live(live);
                    }
                    inner.recovering.store(false, Ordering::SeqCst);
                    return;
                }
                inner.recovering.store(false, Ordering::SeqCst);
                inner.set_available(true);
                crate::metrics::metrics().hsm_reconnected();
                tracing::warn!(
                    attempt,
                    after = ?started.elapsed(),
                    "HSM reachable again; signing resumes"
                );
                return;
            }
            Err(Failure::Final(e @ (HsmError::PinIncorrect | HsmError::PinLocked))) => {
                tracing::error!(error = %e, "HSM reconnect stopped: the token refuses the PIN");
                *lock(&inner.down_reason) = e.to_string();
                inner.recovering.store(false, Ordering::SeqCst);
                return;
            }
            Err(f) => {
                let e = f.into_error();
                *lock(&inner.down_reason) = e.to_string();
                tracing::warn!(attempt, error = %e, retry_in = ?delay, "HSM still unavailable");
                // Whatever context this attempt initialised is finalised before the next one:
                // p11-kit's client only reconnects on a fresh C_Initialize.
                generation = inner.module.read().generation;
            }
        }
        let (initial, max) = (inner.reconnect_initial, inner.reconnect_max);
        drop(inner);
        // Sleep in slices so close() or the last drop ends the thread promptly.
        let wake = Instant::now() + delay;
        while Instant::now() < wake {
            std::thread::sleep(Duration::from_millis(50).min(wake - Instant::now()));
            match me.upgrade() {
                Some(i) if !i.closed.load(Ordering::SeqCst) => {}
                Some(i) => {
                    i.recovering.store(false, Ordering::SeqCst);
                    return;
                }
                None => return,
            }
        }
        delay = (delay * 2).max(initial).min(max);
    }
}

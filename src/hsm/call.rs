//! The deadline on one blocking PKCS#11 operation. A C call cannot be cancelled: when the
//! deadline passes, the awaiting side stops waiting and the operation is marked abandoned,
//! so that whatever its thread returns later (a session, a result) is thrown away instead of
//! going back to the pool. If the awaiting future is dropped before the deadline (the
//! caller's own, shorter deadline), a small task keeps watching, so an operation that hangs
//! is always noticed.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::HsmError;

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;
const UNKNOWN_GENERATION: u64 = u64::MAX;

/// What the awaiting side and the blocking thread of one operation agree on: which of them
/// decides the fate of its session, and which module generation it runs in.
pub(crate) struct Call {
    state: AtomicU8,
    generation: AtomicU64,
}

impl Default for Call {
    fn default() -> Call {
        Call {
            state: AtomicU8::new(RUNNING),
            generation: AtomicU64::new(UNKNOWN_GENERATION),
        }
    }
}

impl Call {
    /// Record the module generation the operation runs in (once it holds the module guard).
    pub(crate) fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::SeqCst);
    }

    /// The module generation the operation runs in, if it got that far.
    pub(crate) fn generation(&self) -> Option<u64> {
        match self.generation.load(Ordering::SeqCst) {
            UNKNOWN_GENERATION => None,
            g => Some(g),
        }
    }

    /// The blocking side is done: true if its session may go back to the pool, false if
    /// the awaiting side gave up on it first.
    pub(crate) fn finish(&self) -> bool {
        match self
            .state
            .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(state) => state == DONE,
        }
    }

    /// The deadline passed: true if the operation is now abandoned, false if it finished
    /// just before (its session is back in the pool and nothing is wrong).
    pub(crate) fn abandon(&self) -> bool {
        self.state
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// True once the awaiting side gave up on the operation.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.state.load(Ordering::SeqCst) == ABANDONED
    }
}

/// A blocking operation awaited until `deadline`; `overrun` runs if the deadline passes
/// first, whether or not anyone still awaits the result.
pub(crate) struct Deadline<T, F>
where
    T: Send + 'static,
    F: FnOnce() -> HsmError + Send + 'static,
{
    handle: Option<JoinHandle<T>>,
    deadline: Instant,
    overrun: Option<F>,
}

impl<T, F> Deadline<T, F>
where
    T: Send + 'static,
    F: FnOnce() -> HsmError + Send + 'static,
{
    pub(crate) fn new(handle: JoinHandle<T>, deadline: Instant, overrun: F) -> Self {
        Deadline {
            handle: Some(handle),
            deadline,
            overrun: Some(overrun),
        }
    }

    /// The operation's result, or the error `overrun` makes of a passed deadline.
    pub(crate) async fn wait(mut self) -> Result<T, HsmError> {
        let outcome = match self.handle.as_mut() {
            Some(handle) => tokio::time::timeout_at(self.deadline, handle).await,
            None => return Err(HsmError::Closed),
        };
        self.handle = None;
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(HsmError::Pkcs11 {
                op: "blocking task",
                rv: e.to_string(),
            }),
            Err(_) => Err(match self.overrun.take() {
                Some(f) => f(),
                None => HsmError::Closed,
            }),
        }
    }
}

impl<T, F> Drop for Deadline<T, F>
where
    T: Send + 'static,
    F: FnOnce() -> HsmError + Send + 'static,
{
    fn drop(&mut self) {
        // Dropped while the operation runs: keep watching it until the deadline.
        let (Some(handle), Some(overrun)) = (self.handle.take(), self.overrun.take()) else {
            return;
        };
        let deadline = self.deadline;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if tokio::time::timeout_at(deadline, handle).await.is_err() {
                    let _ = overrun();
                }
            });
        }
    }
}

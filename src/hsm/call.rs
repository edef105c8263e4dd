//! How one PKCS#11 operation reaches a session and comes back: a queue served by one signer
//! thread per pooled session, and the deadlines on the wait. Each signer thread owns its
//! session (and its cache of key handles) for as long as the session lives, and takes the
//! next operation from the queue as soon as it is done with one, so a session never waits
//! for a caller while work is queued.
//!
//! A C call cannot be cancelled. A call waits in the queue at most the call timeout; one
//! still queued then is cancelled and its thread skips it. Once an operation runs, it may
//! run for its own limit; when that passes, the awaiting side stops waiting and the
//! operation is marked abandoned, so that whatever its thread returns later (a session, a
//! result) is thrown away instead of being kept. If the awaiting future is dropped first (the
//! caller's own, shorter deadline), a queued operation is cancelled and a running one is
//! watched by a small task until its limit, so an operation that hangs is always noticed.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::error::HsmError;

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const ABANDONED: u8 = 3;
const CANCELLED: u8 = 4;
const UNKNOWN: u64 = u64::MAX;

/// The instant call start times are counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// What the awaiting side and the signer thread of one operation agree on: whether it still
/// waits in the queue, runs, is done or was given up on; when it started; and which module
/// generation it runs in.
pub(crate) struct Call {
    state: AtomicU8,
    generation: AtomicU64,
    started_nanos: AtomicU64,
}

impl Default for Call {
    fn default() -> Call {
        Call {
            state: AtomicU8::new(QUEUED),
            generation: AtomicU64::new(UNKNOWN),
            started_nanos: AtomicU64::new(UNKNOWN),
        }
    }
}

impl Call {
    /// The signer thread takes the operation: false if the caller cancelled it meanwhile.
    fn start(&self) -> bool {
        let nanos = u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(UNKNOWN - 1);
        self.started_nanos.store(nanos, Ordering::SeqCst);
        self.state
            .compare_exchange(QUEUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// When the operation started running (the moment of the call if it has not).
    fn started(&self) -> Instant {
        match self.started_nanos.load(Ordering::SeqCst) {
            UNKNOWN => Instant::now(),
            n => epoch() + Duration::from_nanos(n),
        }
    }

    /// The caller stops waiting for a queued operation: true if it was still queued (its
    /// thread will skip it), false if it already runs or ran.
    fn cancel(&self) -> bool {
        self.state
            .compare_exchange(QUEUED, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Record the module generation the operation runs in (once it holds the module guard).
    pub(crate) fn set_generation(&self, generation: u64) {
        self.generation.store(generation, Ordering::SeqCst);
    }

    /// The module generation the operation runs in, if it got that far.
    pub(crate) fn generation(&self) -> Option<u64> {
        match self.generation.load(Ordering::SeqCst) {
            UNKNOWN => None,
            g => Some(g),
        }
    }

    /// The signer thread is done: true if its session may be kept, false if the awaiting
    /// side gave up on the operation first.
    pub(crate) fn finish(&self) -> bool {
        match self
            .state
            .compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(state) => state == DONE,
        }
    }

    /// The limit passed: true if the operation is now abandoned, false if it finished just
    /// before (its session was kept and nothing is wrong).
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

/// A signer thread counted busy in the metrics while this lives (a panicking operation is
/// counted out too).
struct Busy;

impl Busy {
    fn start() -> Busy {
        crate::metrics::metrics().hsm_busy(true);
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        crate::metrics::metrics().hsm_busy(false);
    }
}

/// One operation for a signer thread, given the thread's own slot (its session, if any).
pub(crate) type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// The operations waiting for a signer thread.
pub(crate) struct Queue<S> {
    state: Mutex<QueueState<S>>,
    ready: Condvar,
}

struct QueueState<S> {
    jobs: VecDeque<Job<S>>,
    /// Set once: no more jobs are taken, and threads leave when the queue is empty.
    closed: bool,
    /// Threads waiting for a job (so a push wakes one only when one sleeps).
    idle: usize,
}

impl<S> Queue<S> {
    pub(crate) fn new() -> Queue<S> {
        Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
                idle: 0,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `job`; false (and the job dropped) once the queue is closed.
    fn push(&self, job: Job<S>) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.jobs.push_back(job);
        let wake = state.idle > 0;
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    fn pop(&self) -> Option<Job<S>> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state.idle += 1;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.idle -= 1;
        }
    }

    /// Take no more jobs; the threads run what is queued and leave.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Start a signer thread named `name` serving `queue` with a slot of its own; `leave` gets
/// the slot when the queue is closed and drained. A job that panics loses its slot (its
/// session's state is unknown), not the thread.
pub(crate) fn spawn_signer<S: Default + Send + 'static>(
    name: String,
    queue: Arc<Queue<S>>,
    leave: impl FnOnce(S) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name(name).spawn(move || {
        let mut slot = S::default();
        while let Some(job) = queue.pop() {
            if catch_unwind(AssertUnwindSafe(|| job(&mut slot))).is_err() {
                tracing::error!("an HSM operation panicked; its session is dropped");
                slot = S::default();
            }
        }
        leave(slot);
    })?;
    Ok(())
}

/// Queue `op` for a signer thread and wait for its result: at most `queue_limit` in the
/// queue (less if `availability` turns false meanwhile), then at most `limit` from the
/// moment it starts (`limit` is never shorter than `queue_limit`: the run is looked at
/// only when the queue limit has passed). `overrun` makes the error of an operation that ran past its limit
/// (it is called whether or not anyone still awaits the result).
pub(crate) async fn run_queued<S, T, F>(
    queue: &Queue<S>,
    queue_limit: Duration,
    limit: Duration,
    availability: &watch::Sender<bool>,
    op: impl FnOnce(&Call, &mut S) -> Result<T, HsmError> + Send + 'static,
    overrun: F,
) -> Result<T, HsmError>
where
    S: 'static,
    T: Send + 'static,
    F: FnOnce(&Call) -> HsmError + Send + 'static,
{
    let limit = limit.max(queue_limit);
    let call = Arc::new(Call::default());
    let (reply, answer) = oneshot::channel();
    let on_thread = Arc::clone(&call);
    let job: Job<S> = Box::new(move |slot: &mut S| {
        if !on_thread.start() {
            return;
        }
        let busy = Busy::start();
        let result = op(&on_thread, slot);
        drop(busy);
        on_thread.finish();
        let _ = reply.send(result);
    });
    if !queue.push(job) {
        return Err(HsmError::Closed);
    }
    let pending = Pending {
        answer: Some(answer),
        call,
        queue_limit,
        limit,
        overrun: Some(overrun),
    };
    pending
        .wait(Instant::now() + queue_limit, availability.subscribe())
        .await
}

/// An operation queued or running, awaited by its caller.
struct Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Call) -> HsmError + Send + 'static,
{
    answer: Option<oneshot::Receiver<Result<T, HsmError>>>,
    call: Arc<Call>,
    queue_limit: Duration,
    limit: Duration,
    overrun: Option<F>,
}

fn lost_answer() -> HsmError {
    HsmError::Unavailable {
        reason: "the HSM operation ended without an answer".into(),
    }
}

impl<T, F> Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Call) -> HsmError + Send + 'static,
{
    async fn wait(
        mut self,
        queued_until: Instant,
        mut availability: watch::Receiver<bool>,
    ) -> Result<T, HsmError> {
        let Some(mut answer) = self.answer.take() else {
            return Err(HsmError::Closed);
        };
        // While queued: the answer, the queue limit, or the HSM going away.
        let mut watch_availability = true;
        loop {
            tokio::select! {
                biased;
                got = &mut answer => return got.unwrap_or_else(|_| Err(lost_answer())),
                () = tokio::time::sleep_until(queued_until) => break,
                down = availability.wait_for(|up| !*up), if watch_availability => {
                    if down.is_ok() && self.call.cancel() {
                        return Err(HsmError::Unavailable {
                            reason: "the HSM went away while the call waited for a session".into(),
                        });
                    }
                    // Already running (or the watch is gone): only its own limit counts now.
                    watch_availability = false;
                }
            }
        }
        if self.call.cancel() {
            let ms = self.queue_limit.as_millis();
            tracing::warn!(
                timeout_ms = ms,
                "no HSM session became free within the call timeout"
            );
            return Err(HsmError::Unavailable {
                reason: format!("no HSM session became free within {ms} ms"),
            });
        }
        // Running (or just done): wait until its own limit.
        let deadline = self.call.started() + self.limit;
        match tokio::time::timeout_at(deadline, &mut answer).await {
            Ok(got) => got.unwrap_or_else(|_| Err(lost_answer())),
            Err(_) => Err(match self.overrun.take() {
                Some(f) => f(&self.call),
                None => HsmError::Closed,
            }),
        }
    }
}

impl<T, F> Drop for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Call) -> HsmError + Send + 'static,
{
    fn drop(&mut self) {
        // Dropped while queued: the thread skips it. While running: watch it until its limit.
        let (Some(answer), Some(overrun)) = (self.answer.take(), self.overrun.take()) else {
            return;
        };
        if self.call.cancel() {
            return;
        }
        let (call, limit) = (Arc::clone(&self.call), self.limit);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let deadline = call.started() + limit;
                if tokio::time::timeout_at(deadline, answer).await.is_err() {
                    let _ = overrun(&call);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_with_threads(n: usize) -> Arc<Queue<u32>> {
        let queue = Arc::new(Queue::new());
        for i in 0..n {
            spawn_signer(format!("test-signer-{i}"), Arc::clone(&queue), |_| {}).unwrap();
        }
        queue
    }

    #[tokio::test]
    async fn each_thread_keeps_its_slot_across_jobs() {
        let queue = queue_with_threads(1);
        let (up, _) = watch::channel(true);
        for expected in 1..=3u32 {
            let seen = run_queued(
                &queue,
                Duration::from_secs(5),
                Duration::from_secs(5),
                &up,
                |_, slot: &mut u32| {
                    *slot += 1;
                    Ok(*slot)
                },
                |_| HsmError::Closed,
            )
            .await
            .unwrap();
            assert_eq!(seen, expected);
        }
        queue.close();
    }

    #[tokio::test]
    async fn a_call_still_queued_at_the_call_timeout_is_cancelled_and_skipped() {
        let queue = queue_with_threads(1);
        let (up, _) = watch::channel(true);
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let blocked = Arc::new(Mutex::new(blocked));
        // Occupy the only thread.
        let hold = {
            let queue = Arc::clone(&queue);
            let up = up.clone();
            tokio::spawn(async move {
                run_queued(
                    &queue,
                    Duration::from_secs(5),
                    Duration::from_secs(5),
                    &up,
                    move |_, _| {
                        let _ = blocked.lock().unwrap().recv();
                        Ok(())
                    },
                    |_| HsmError::Closed,
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ran = Arc::new(AtomicU8::new(0));
        let r = Arc::clone(&ran);
        let e = run_queued(
            &queue,
            Duration::from_millis(50),
            Duration::from_secs(5),
            &up,
            move |_, _| {
                r.store(1, Ordering::SeqCst);
                Ok(())
            },
            |_| HsmError::Closed,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no HSM session became free"), "{e}");
        release.send(()).unwrap();
        hold.await.unwrap().unwrap();
        // The cancelled job was skipped by the thread, never run.
        queue.close();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_operation_past_its_limit_is_abandoned_and_reported() {
        let queue = queue_with_threads(1);
        let (up, _) = watch::channel(true);
        let e = run_queued(
            &queue,
            Duration::from_millis(50),
            Duration::from_millis(50),
            &up,
            |call, _| {
                std::thread::sleep(Duration::from_millis(300));
                // The thread learns it was given up on.
                assert!(!call.finish());
                Ok(())
            },
            |call| {
                assert!(call.abandon());
                HsmError::Unavailable {
                    reason: "overran".into(),
                }
            },
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("overran"), "{e}");
        queue.close();
    }

    #[tokio::test]
    async fn a_queued_call_ends_when_the_hsm_goes_away() {
        let queue = queue_with_threads(0);
        let (up, _) = watch::channel(true);
        let down = up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            down.send_replace(false);
        });
        let e = run_queued(
            &queue,
            Duration::from_secs(30),
            Duration::from_secs(30),
            &up,
            |_, _: &mut u32| Ok(()),
            |_| HsmError::Closed,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("went away"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_calls_and_its_threads_leave_with_their_slots() {
        let queue: Arc<Queue<u32>> = Arc::new(Queue::new());
        let (left, leaving) = std::sync::mpsc::channel();
        spawn_signer("test-signer".into(), Arc::clone(&queue), move |slot| {
            let _ = left.send(slot);
        })
        .unwrap();
        let (up, _) = watch::channel(true);
        run_queued(
            &queue,
            Duration::from_secs(5),
            Duration::from_secs(5),
            &up,
            |_, slot: &mut u32| {
                *slot = 7;
                Ok(())
            },
            |_| HsmError::Closed,
        )
        .await
        .unwrap();
        queue.close();
        assert_eq!(leaving.recv_timeout(Duration::from_secs(5)).unwrap(), 7);
        let e = run_queued(
            &queue,
            Duration::from_secs(5),
            Duration::from_secs(5),
            &up,
            |_, _| Ok(()),
            |_| HsmError::Closed,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HsmError::Closed), "{e}");
    }
}

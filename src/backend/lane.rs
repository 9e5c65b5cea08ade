//! The device lane: the few threads on which blocking PKCS#11 calls run, off the async runtime.
//!
//! A device call must not run on a runtime worker: a call that hangs would stall every request
//! that worker holds, and the runtime's I/O driver with it (docs/performance.md, "Tried and not
//! kept: short device calls on the serving worker"). Tokio's blocking pool keeps the runtime
//! free, but it wakes a sleeping thread for every call whenever one is idle, and after a burst it
//! holds dozens of them. At c=32 that cost a context switch or two per request on top of the
//! call (SoftHSM2's is ~20 µs), and the woken thread preempted a runtime worker. The lane keeps
//! the guarantee and drops most of that cost (decision 0029):
//!
//! - at most `max_threads` threads, the size of the session pool (more could not run a call);
//!   made when first needed, never more than one woken per queued call;
//! - a call queued while another thread is in a short call waits for that thread instead of
//!   waking one: it is picked up as soon as the call ends, without a wake-up;
//! - a call is given a thread of its own when the short calls running have all run for
//!   [`STALL`] (a hung device), or when recent short calls take [`LONG_CALL`] or more (a network
//!   HSM, whose calls wait rather than compute, so they gain from running side by side). A queued
//!   caller checks this again every [`STALL`] while it waits, so a call that hangs never holds up
//!   a call behind it for long when another session is free;
//! - a call its caller knows to be long ([`Expect::Long`]: a re-wrap chunk) always gets a thread
//!   of its own, and no call waits for it;
//! - the most recently idle thread is woken first, so its caches are warm.
//!
//! The caller's span is entered around the call, as [`crate::telemetry::run_blocking`] does.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::Span;

/// When every call running has run this long, calls behind them get another thread (a hung
/// device, or a long call such as a re-wrap chunk).
pub const STALL: Duration = Duration::from_millis(1);

/// When the recent calls take this long on average, every queued call gets a thread of its own,
/// as on a plain pool.
pub const LONG_CALL: Duration = Duration::from_micros(250);

type Job = Box<dyn FnOnce() + Send>;

/// How long a call is expected to take, as its caller knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One or two device operations: a call behind it may wait for its thread.
    Short,
    /// Many operations in one call (a re-wrap chunk): no call waits for it.
    Long,
}

/// Why a call on the lane did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The call panicked; the lane goes on.
    #[error("device call panicked")]
    Panicked,
    /// No thread could run it: the lane stopped, or it had no thread and none could be made.
    #[error("device lane has no thread to run the call: {0}")]
    NoThread(String),
}

/// The threads of one device. Dropping the lane ends them once the calls queued have run.
pub struct DeviceLane {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DeviceLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLane")
            .field("name", &self.shared.name)
            .field("max_threads", &self.shared.max_threads)
            .finish_non_exhaustive()
    }
}

struct Shared {
    name: String,
    max_threads: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(Expect, Job)>,
    /// Parked threads, the most recently idle last.
    idle: Vec<(u64, Thread)>,
    /// Threads alive.
    threads: usize,
    /// Threads awake and not in a call: each will look at the queue before it parks.
    free: usize,
    /// The threads in a call: when each call started, and what it was expected to take.
    running: Vec<(u64, Instant, Expect)>,
    /// The mean duration of recent short calls (an exponentially weighted mean, 1/8 per call).
    mean_call: Duration,
    next_id: u64,
    stopping: bool,
}

impl State {
    /// Whether a queued call needs one more thread awake, at `now`.
    fn wake_needed(&self, now: Instant) -> bool {
        if self.queue.len() <= self.free {
            // Enough threads are awake to take every queued call.
            return false;
        }
        let newest = self
            .running
            .iter()
            .filter(|(_, _, expect)| *expect == Expect::Short)
            .map(|(_, started, _)| *started)
            .max();
        let Some(newest) = newest else {
            // Nobody is in a short call, so nobody will come back to the queue soon unless woken.
            return self.free == 0;
        };
        self.mean_call >= LONG_CALL || now.saturating_duration_since(newest) >= STALL
    }

    fn note_call(&mut self, took: Duration) {
        self.mean_call = (self.mean_call * 7 + took) / 8;
    }
}

/// What [`Shared::wake`] decided: a parked thread to unpark once the lock is released, or a
/// thread to make.
enum Wake {
    Unpark(Thread),
    Spawn(u64),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more thread awake (the most recently idle one, or a new one if none is idle
    /// and the lane has room) and says which; `None` when every thread is already awake.
    fn wake(&self, st: &mut State) -> Option<Wake> {
        if let Some((_, thread)) = st.idle.pop() {
            st.free += 1;
            return Some(Wake::Unpark(thread));
        }
        if st.threads < self.max_threads {
            st.threads += 1;
            st.free += 1;
            st.next_id += 1;
            return Some(Wake::Spawn(st.next_id));
        }
        None
    }

    /// Carries out a [`Wake`], outside the lock.
    fn carry_out(self: &Arc<Self>, wake: Option<Wake>) -> Result<(), LaneError> {
        match wake {
            None => Ok(()),
            Some(Wake::Unpark(thread)) => {
                thread.unpark();
                Ok(())
            }
            Some(Wake::Spawn(id)) => {
                let shared = Arc::clone(self);
                let spawned = std::thread::Builder::new()
                    .name(self.name.clone())
                    .spawn(move || shared.work(id));
                match spawned {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let mut st = self.lock();
                        st.threads -= 1;
                        st.free -= 1;
                        tracing::error!(lane = %self.name, threads = st.threads, error = %e, "a device thread could not be started");
                        if st.threads == 0 {
                            // Nothing would ever run the queue: fail what is in it.
                            st.queue.clear();
                            return Err(LaneError::NoThread(e.to_string()));
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// Queues `job` and wakes a thread if it needs one. Returns whether the job was left waiting
    /// for a call to end (so its caller should check for a stall while it waits).
    fn submit(self: &Arc<Self>, expect: Expect, job: Job) -> Result<bool, LaneError> {
        let (wake, behind) = {
            let mut st = self.lock();
            if st.stopping {
                return Err(LaneError::NoThread("the lane has stopped".into()));
            }
            st.queue.push_back((expect, job));
            let long = expect == Expect::Long && st.queue.len() > st.free;
            let wake = if long || st.wake_needed(Instant::now()) {
                self.wake(&mut st)
            } else {
                None
            };
            // Not enough threads awake for the queue: the job waits for a call to end (even one
            // just taken by a thread woken for an earlier job), so its caller watches for a stall.
            let behind = st.queue.len() > st.free;
            (wake, behind)
        };
        self.carry_out(wake).map(|()| behind)
    }

    /// Called by a caller still waiting after [`STALL`]: wakes a thread if the calls running
    /// have stalled.
    fn nudge(self: &Arc<Self>) {
        let wake = {
            let mut st = self.lock();
            if st.wake_needed(Instant::now()) {
                self.wake(&mut st)
            } else {
                None
            }
        };
        if let Err(e) = self.carry_out(wake) {
            tracing::error!(lane = %self.name, error = %e, "device lane has no thread");
        }
    }

    /// A thread's loop: take a queued call, run it, and park when the queue is empty.
    fn work(self: Arc<Self>, id: u64) {
        let mut st = self.lock();
        loop {
            if let Some((expect, job)) = st.queue.pop_front() {
                st.free -= 1;
                let started = Instant::now();
                st.running.push((id, started, expect));
                // Long calls run side by side: pass what is left to another thread.
                let wake = if st.wake_needed(started) {
                    self.wake(&mut st)
                } else {
                    None
                };
                drop(st);
                if let Err(e) = self.carry_out(wake) {
                    tracing::error!(lane = %self.name, error = %e, "device lane has no thread");
                }
                job();
                let took = started.elapsed();
                st = self.lock();
                st.running.retain(|(i, _, _)| *i != id);
                st.free += 1;
                if expect == Expect::Short {
                    st.note_call(took);
                }
                continue;
            }
            st.free -= 1;
            if st.stopping {
                st.threads -= 1;
                return;
            }
            st.idle.push((id, std::thread::current()));
            drop(st);
            loop {
                std::thread::park();
                st = self.lock();
                // Whoever woke us took us off the idle list and counted us free; any other
                // return from `park` is spurious.
                if !st.idle.iter().any(|(i, _)| *i == id) {
                    break;
                }
                drop(st);
            }
        }
    }
}

impl DeviceLane {
    /// A lane of at most `max_threads` threads (at least one), named `name`. No thread is made
    /// before the first call.
    pub fn new(name: &str, max_threads: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                max_threads: max_threads.max(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Runs `f` on one of the lane's threads inside the caller's span and awaits its result.
    /// If the caller goes away, the call still runs to its end.
    ///
    /// # Errors
    /// [`LaneError::Panicked`] when `f` panicked; [`LaneError::NoThread`] when no thread could
    /// run it.
    pub async fn run<F, T>(&self, f: F) -> Result<T, LaneError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_as(Expect::Short, f).await
    }

    /// [`DeviceLane::run`] for a call expected to take as long as `expect` says.
    ///
    /// # Errors
    /// As [`DeviceLane::run`].
    pub async fn run_as<F, T>(&self, expect: Expect, f: F) -> Result<T, LaneError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, mut rx) = oneshot::channel();
        let span = Span::current();
        let job: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(|| span.in_scope(f)));
            // The caller may have gone away (its deadline passed); nothing to do then.
            let _ = tx.send(result.map_err(|_| LaneError::Panicked));
        });
        let stopped = || LaneError::NoThread("the call was dropped unrun".into());
        if !self.shared.submit(expect, job)? {
            return rx.await.unwrap_or_else(|_| Err(stopped()));
        }
        loop {
            tokio::select! {
                result = &mut rx => return result.unwrap_or_else(|_| Err(stopped())),
                () = tokio::time::sleep(STALL) => self.shared.nudge(),
            }
        }
    }

    /// Threads alive.
    pub fn threads(&self) -> usize {
        self.shared.lock().threads
    }
}

impl Drop for DeviceLane {
    fn drop(&mut self) {
        let parked = {
            let mut st = self.shared.lock();
            st.stopping = true;
            let parked: Vec<Thread> = st.idle.drain(..).map(|(_, t)| t).collect();
            st.free += parked.len();
            parked
        };
        for thread in parked {
            thread.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(queued: usize, free: usize, running: &[Instant]) -> State {
        let mut st = State::default();
        for _ in 0..queued {
            st.queue.push_back((Expect::Short, Box::new(|| {})));
        }
        st.free = free;
        st.running = (0u64..)
            .zip(running.iter().copied())
            .map(|(id, started)| (id, started, Expect::Short))
            .collect();
        st
    }

    #[test]
    fn a_call_waits_for_a_thread_in_a_short_call_instead_of_waking_one() {
        let now = Instant::now();
        let mut st = state(3, 0, &[now]);
        st.mean_call = Duration::from_micros(20);
        assert!(!st.wake_needed(now));
        // The same queue behind a call that has run for STALL: another thread is woken.
        assert!(st.wake_needed(now + STALL));
        // Behind long calls (a network HSM): at once.
        st.mean_call = LONG_CALL;
        assert!(st.wake_needed(now));
        // Two calls running, one of them stalled: the other will come back soon.
        let mut st = state(1, 0, &[now, now + STALL]);
        st.mean_call = Duration::from_micros(20);
        assert!(!st.wake_needed(now + STALL));
        assert!(st.wake_needed(now + STALL * 2));
        // Behind a long call that has just started (a re-wrap chunk): at once.
        let mut st = state(1, 0, &[]);
        st.running.push((9, now, Expect::Long));
        assert!(st.wake_needed(now));
    }

    #[test]
    fn a_call_wakes_a_thread_only_when_no_awake_thread_will_take_it() {
        let now = Instant::now();
        // Nobody awake: wake one.
        assert!(state(1, 0, &[]).wake_needed(now));
        // One awake and free for each queued call: no wake, even for long calls.
        let mut st = state(2, 2, &[now]);
        st.mean_call = LONG_CALL;
        assert!(!st.wake_needed(now));
        // A thread woken but not yet in a call takes the queue in turn.
        assert!(!state(3, 1, &[]).wake_needed(now + STALL));
        // An empty queue never wakes.
        assert!(!state(0, 0, &[now; 4]).wake_needed(now + STALL));
    }

    #[tokio::test]
    async fn calls_return_their_results_and_a_panic_is_an_error() {
        let lane = DeviceLane::new("test-lane", 2);
        assert_eq!(lane.threads(), 0);
        assert_eq!(lane.run(|| 6 * 7).await.ok(), Some(42));
        let panicked = lane.run(|| -> u8 { panic!("in a device call") }).await;
        assert!(matches!(panicked, Err(LaneError::Panicked)));
        assert_eq!(lane.run(|| "after").await.ok(), Some("after"));
    }

    #[tokio::test]
    async fn calls_one_after_another_use_one_thread() {
        let lane = DeviceLane::new("test-lane", 4);
        for i in 0..200u32 {
            assert_eq!(lane.run(move || i + 1).await.ok(), Some(i + 1));
        }
        assert_eq!(lane.threads(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_callers_at_once_are_all_served_within_the_bound() {
        let lane = Arc::new(DeviceLane::new("test-lane", 3));
        let callers = (0..32u64).map(|c| {
            let lane = Arc::clone(&lane);
            tokio::spawn(async move {
                let mut sum = 0;
                for i in 0..50u64 {
                    sum += lane.run(move || c * 1000 + i).await.unwrap_or(0);
                }
                sum
            })
        });
        let sums = futures_util::future::join_all(callers).await;
        for (c, sum) in (0..32u64).zip(sums) {
            assert_eq!(sum.ok(), Some(c * 50_000 + (0..50).sum::<u64>()));
        }
        assert!(lane.threads() <= 3, "{} threads", lane.threads());
    }

    /// A call that blocks until released, and a channel to release it.
    fn hanging_call(
        lane: &Arc<DeviceLane>,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<bool>) {
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let lane2 = Arc::clone(lane);
        let hung = tokio::spawn(async move {
            lane2
                .run(move || {
                    let _ = started_tx.send(());
                    hold.recv().is_ok()
                })
                .await
                .unwrap_or(false)
        });
        assert!(
            started_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the call never started"
        );
        (release, hung)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_call_does_not_hold_up_the_call_behind_it() {
        let lane = Arc::new(DeviceLane::new("test-lane", 2));
        let (release, hung) = hanging_call(&lane);
        // Submitted just after the hung call started: queued behind it, then rescued.
        let behind = tokio::time::timeout(Duration::from_secs(5), lane.run(|| "served")).await;
        assert_eq!(behind.ok().and_then(Result::ok), Some("served"));
        assert!(!hung.is_finished());
        release.send(()).ok();
        assert_eq!(hung.await.ok(), Some(true));
        assert_eq!(lane.threads(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_queued_for_a_thread_just_woken_is_rescued_when_that_thread_hangs() {
        let lane = DeviceLane::new("test-lane", 2);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hung = lane.run(move || hold.recv().is_ok());
        tokio::pin!(hung);
        // Both are submitted before the lane's first thread has started: the thread woken for
        // the first takes it and hangs, the second was left for that same thread.
        let behind = lane.run(|| "served");
        let served = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::select! {
                biased;
                _ = &mut hung => None,
                served = behind => served.ok(),
            }
        })
        .await;
        assert_eq!(served.ok().flatten(), Some("served"));
        release.send(()).ok();
        assert_eq!(hung.await.ok(), Some(true));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_one_thread_the_call_behind_a_hung_one_waits_for_it() {
        let lane = Arc::new(DeviceLane::new("test-lane", 1));
        let (release, hung) = hanging_call(&lane);
        let lane2 = Arc::clone(&lane);
        let mut behind = tokio::spawn(async move { lane2.run(|| "served").await.ok() });
        let early = tokio::time::timeout(Duration::from_millis(100), &mut behind).await;
        assert!(early.is_err(), "served with its only thread hung");
        release.send(()).ok();
        assert_eq!(hung.await.ok(), Some(true));
        assert_eq!(behind.await.ok().flatten(), Some("served"));
    }

    #[tokio::test]
    async fn dropping_the_lane_ends_its_threads() {
        let lane = DeviceLane::new("test-lane", 2);
        assert_eq!(lane.run(|| 1).await.ok(), Some(1));
        let shared = Arc::clone(&lane.shared);
        assert_eq!(shared.lock().threads, 1);
        drop(lane);
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.lock().threads > 0 {
            assert!(Instant::now() < deadline, "a lane thread outlived its lane");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

//! The work queue: keys (workloads, or Pods whose owner is not known yet) waiting to be worked on.
//!
//! The queue holds keys, not events: a reconcile reads the workload's state when it runs, so a
//! burst of events for one Deployment needs one run. What it promises:
//!
//! - A key pushed again before it is taken is taken once (debounce).
//! - A key is never handed out twice at once. One pushed while it is being worked on is taken
//!   again after `done`: the change that pushed it is never lost.
//! - Delayed keys (`push_after`, `retry`) wait here, in one map ordered by due time, not in a
//!   sleeping task each. A key delayed twice keeps the earlier due time.
//! - `retry` backs off per key: the delay doubles from the first retry delay up to ten times it,
//!   and each delay is up to a fifth shorter at random, so that keys that failed together (a
//!   registry down) do not all come back in the same instant. `forget` starts a key over.
//!
//! The queue does not bound how many keys are worked on at once; the operator runs every key it
//! takes at once (see `operator::run`). What is costly is bounded where it happens (analyses by
//! `--concurrency` and per registry), and a reconcile whose images are known reads nothing and
//! writes only a changed status: a worker pool would make reports of analyzed images wait behind
//! workloads whose images are still being analyzed.
//!
//! Time is tokio's, so tests run on its paused clock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Keys waiting to be worked on; see the module docs for what it promises.
pub struct Queue<K> {
    state: Mutex<State<K>>,
    wake: Notify,
    backoff: Backoff,
}

struct State<K> {
    /// Keys ready to be taken, oldest first; `queued` holds the same keys, for lookups.
    ready: VecDeque<K>,
    queued: HashSet<K>,
    /// Keys taken and not `done` yet.
    active: HashSet<K>,
    /// Keys pushed while active: ready again at `done`.
    again: HashSet<K>,
    /// Delayed keys by due time (a sequence number keeps equal times apart); `due` is the
    /// reverse map.
    delayed: BTreeMap<(Instant, u64), K>,
    due: HashMap<K, (Instant, u64)>,
    sequence: u64,
    /// Failed attempts in a row, per key.
    failures: HashMap<K, u32>,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        Self {
            ready: VecDeque::new(),
            queued: HashSet::new(),
            active: HashSet::new(),
            again: HashSet::new(),
            delayed: BTreeMap::new(),
            due: HashMap::new(),
            sequence: 0,
            failures: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> State<K> {
    /// Makes `key` ready (or ready again after `done`); `true` when a taker should look.
    fn make_ready(&mut self, key: K) -> bool {
        if self.active.contains(&key) {
            self.again.insert(key);
            false
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
            true
        } else {
            false
        }
    }

    fn delay(&mut self, key: K, at: Instant) {
        if let Some(&earlier) = self.due.get(&key) {
            if earlier.0 <= at {
                return;
            }
            self.delayed.remove(&earlier);
        }
        self.sequence += 1;
        let slot = (at, self.sequence);
        self.delayed.insert(slot, key.clone());
        self.due.insert(key, slot);
    }

    /// Makes every delayed key due by `now` ready.
    fn release_due(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.due.remove(&key);
            self.make_ready(key);
        }
    }

    fn take(&mut self) -> Option<K> {
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.active.insert(key.clone());
        Some(key)
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.keys().next().map(|(at, _)| *at)
    }
}

impl<K: Clone + Eq + Hash> Queue<K> {
    pub fn new(backoff: Backoff) -> Self {
        Self {
            state: Mutex::default(),
            wake: Notify::new(),
            backoff,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().expect("queue lock")
    }

    /// Queues `key` now.
    pub fn push(&self, key: K) {
        if self.state().make_ready(key) {
            self.wake.notify_one();
        }
    }

    /// Queues `key` once `delay` has passed (or earlier, if it is already delayed less).
    pub fn push_after(&self, key: K, delay: Duration) {
        self.state().delay(key, Instant::now() + delay);
        // A taker asleep until a later due time must look again.
        self.wake.notify_one();
    }

    /// Queues `key` again after its next backoff delay (counting one more failure); returns the
    /// delay.
    pub fn retry(&self, key: K) -> Duration {
        let failures = {
            let mut state = self.state();
            let n = state.failures.entry(key.clone()).or_default();
            *n = (*n + 1).min(Backoff::MAX_DOUBLINGS);
            *n
        };
        let delay = self.backoff.delay(failures);
        self.push_after(key, delay);
        delay
    }

    /// Forgets `key`'s failures: its next retry starts from the first delay.
    pub fn forget(&self, key: &K) {
        self.state().failures.remove(key);
    }

    /// The next ready key, waiting for one if need be; it is not handed out again until `done`.
    pub async fn next(&self) -> K {
        loop {
            let next_due = {
                let mut state = self.state();
                state.release_due(Instant::now());
                if let Some(key) = state.take() {
                    return key;
                }
                state.next_due()
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// Marks `key` worked on; if it was pushed meanwhile, it is ready again.
    pub fn done(&self, key: &K) {
        let mut state = self.state();
        state.active.remove(key);
        let ready = state.again.remove(key) && state.make_ready(key.clone());
        drop(state);
        if ready {
            self.wake.notify_one();
        }
    }
}

/// Retry delays: doubling from `first` up to ten times it, each up to a fifth shorter at random.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    first: Duration,
    /// A number in `[0, 1)`: how much of the allowed jitter a delay gets.
    jitter: fn() -> f64,
}

impl Backoff {
    /// Doublings stop counting here (the cap is reached long before).
    const MAX_DOUBLINGS: u32 = 10;
    /// The share of a delay that jitter may take off.
    const JITTER: f64 = 0.2;

    pub fn new(first: Duration) -> Self {
        Self {
            first,
            jitter: random_fraction,
        }
    }

    /// The longest delay: ten times the first.
    pub fn cap(&self) -> Duration {
        self.first * 10
    }

    /// The delay after `failures` failures in a row (at least one).
    pub fn delay(&self, failures: u32) -> Duration {
        let doubled = self
            .first
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
            .min(self.cap());
        doubled.mul_f64(1.0 - Self::JITTER * (self.jitter)())
    }
}

/// A random number in `[0, 1)`; std's hasher keys are random, which is all jitter needs.
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(0u8) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn no_jitter() -> f64 {
        0.0
    }

    fn queue() -> Queue<&'static str> {
        Queue::new(Backoff {
            first: SECOND,
            jitter: no_jitter,
        })
    }

    /// The next key if one is ready within `within` (of paused time), else `None`.
    async fn next_within(q: &Queue<&'static str>, within: Duration) -> Option<&'static str> {
        tokio::time::timeout(within, q.next()).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_pushed_twice_before_it_is_taken_is_taken_once() {
        let q = queue();
        q.push("web");
        q.push("api");
        q.push("web");
        assert_eq!(q.next().await, "web");
        assert_eq!(q.next().await, "api");
        assert_eq!(next_within(&q, Duration::from_secs(3600)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_pushed_while_worked_on_is_taken_again_after_done_and_never_twice_at_once() {
        let q = queue();
        q.push("web");
        assert_eq!(q.next().await, "web");
        q.push("web");
        q.push("web");
        assert_eq!(
            next_within(&q, Duration::from_secs(3600)).await,
            None,
            "still being worked on"
        );
        q.done(&"web");
        assert_eq!(
            q.next().await,
            "web",
            "the push during the work is not lost"
        );
        q.done(&"web");
        assert_eq!(next_within(&q, Duration::from_secs(3600)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_wakes_a_waiting_taker() {
        let q = std::sync::Arc::new(queue());
        let taker = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.push("web");
        assert_eq!(taker.await.expect("taker"), "web");
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_key_is_taken_when_due_and_not_before() {
        let q = queue();
        let start = Instant::now();
        q.push_after("web", 5 * SECOND);
        q.push_after("api", 2 * SECOND);
        assert_eq!(q.next().await, "api");
        assert_eq!(start.elapsed(), 2 * SECOND);
        assert_eq!(q.next().await, "web");
        assert_eq!(start.elapsed(), 5 * SECOND);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_delayed_twice_keeps_the_earlier_due_time_and_is_taken_once() {
        let q = queue();
        let start = Instant::now();
        q.push_after("web", 30 * SECOND);
        q.push_after("web", 3 * SECOND);
        q.push_after("web", 10 * SECOND);
        assert_eq!(q.next().await, "web");
        assert_eq!(start.elapsed(), 3 * SECOND);
        q.done(&"web");
        assert_eq!(next_within(&q, Duration::from_secs(3600)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_due_while_worked_on_waits_for_done() {
        let q = queue();
        q.push("web");
        assert_eq!(q.next().await, "web");
        q.push_after("web", SECOND);
        assert_eq!(next_within(&q, 10 * SECOND).await, None);
        q.done(&"web");
        assert_eq!(q.next().await, "web");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_double_up_to_ten_times_the_first_delay_until_forgotten() {
        let q = queue();
        let delays: Vec<u64> = (0..6).map(|_| q.retry("web").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(q.retry("api").as_secs(), 1, "per key");
        q.forget(&"web");
        assert_eq!(q.retry("web").as_secs(), 1, "forgotten: from the start");
        let start = Instant::now();
        assert_eq!(q.next().await, "web");
        assert_eq!(
            start.elapsed(),
            SECOND,
            "the retry is queued after its delay"
        );
    }

    #[test]
    fn jitter_shortens_a_delay_by_at_most_a_fifth_and_spreads_retries() {
        let backoff = Backoff::new(SECOND);
        for failures in [1, 3, 10, 50] {
            let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(failures)).collect();
            let full = SECOND
                .saturating_mul(2u32.pow(failures.min(10) - 1))
                .min(backoff.cap());
            assert!(
                delays.iter().all(|d| *d <= full && *d >= full.mul_f64(0.8)),
                "{failures} failures: {delays:?}"
            );
            let distinct: HashSet<Duration> = delays.into_iter().collect();
            assert!(distinct.len() > 100, "spread: {}", distinct.len());
        }
    }
}

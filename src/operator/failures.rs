//! Images whose analysis failed, each tried again at most once per backoff period, however many
//! Pod events ask for it meanwhile.
//!
//! Without this, every reconcile of a workload whose image failed would download it again: a
//! tenant relabelling a Pod in a loop would have a decompression bomb downloaded and unpacked
//! each time. A failure is remembered per image key (digest and platform) with its delay:
//! doubling from the first retry delay, up to ten times it for failures that may pass (a
//! registry down) and up to `PERMANENT_CAP` for those that will not by themselves (a bomb,
//! an invalid manifest). Within the delay, the remembered failure stands in for an attempt, its
//! message saying when the next one comes (the same text for the whole period, so the report
//! is not rewritten for it). A success forgets the image; a failure nobody asked about for a
//! whole cap is forgotten too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::analyze::ContainerFailure;

/// The longest delay for a failure that will not pass by itself.
pub const PERMANENT_CAP: Duration = Duration::from_secs(3600);

/// Entries kept at most; beyond, the one due soonest goes.
const MAX_ENTRIES: usize = 4096;

struct Failed {
    failures: u32,
    retry_at: Instant,
    /// The failure as reported: the original, with when the next attempt comes.
    failure: ContainerFailure,
}

/// Failed images by image key.
pub struct FailedImages {
    first: Duration,
    entries: Mutex<HashMap<String, Failed>>,
}

impl FailedImages {
    /// `first`: the delay after one failure (`--retry-seconds`).
    pub fn new(first: Duration) -> Self {
        Self {
            first: first.max(Duration::from_secs(1)),
            entries: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failed>> {
        self.entries.lock().expect("failed images lock")
    }

    /// The delay after `failures` failures in a row.
    fn delay(&self, failures: u32, transient: bool) -> Duration {
        let cap = if transient {
            self.first * 10
        } else {
            PERMANENT_CAP.max(self.first * 10)
        };
        self.first
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)))
            .min(cap)
    }

    /// If the image failed and its next attempt is not due: the failure to report instead, and
    /// how long until the attempt is due.
    pub fn pending(&self, key: &str) -> Option<(ContainerFailure, Duration)> {
        let entries = self.map();
        let failed = entries.get(key)?;
        let left = failed.retry_at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| (failed.failure.clone(), left))
    }

    /// Records a failed attempt; returns the failure as the report shows it and the delay until
    /// the next attempt.
    pub fn record(&self, key: &str, failure: ContainerFailure) -> (ContainerFailure, Duration) {
        let mut entries = self.map();
        let failures = entries.get(key).map_or(0, |f| f.failures) + 1;
        let delay = self.delay(failures, failure.transient);
        let shown = ContainerFailure {
            message: format!("retrying in {} after: {}", human(delay), failure.message),
            ..failure
        };
        if !entries.contains_key(key) && entries.len() >= MAX_ENTRIES {
            make_room(&mut entries);
        }
        entries.insert(
            key.to_string(),
            Failed {
                failures,
                retry_at: Instant::now() + delay,
                failure: shown.clone(),
            },
        );
        (shown, delay)
    }

    /// Forgets an image that was analyzed.
    pub fn succeeded(&self, key: &str) {
        self.map().remove(key);
    }

    /// Forgets failures whose next attempt has been due for longer than the longest delay
    /// (nobody asks for the image any more); returns how many.
    pub fn prune(&self) -> usize {
        let mut entries = self.map();
        let before = entries.len();
        let now = Instant::now();
        entries.retain(|_, f| now.saturating_duration_since(f.retry_at) < PERMANENT_CAP);
        before - entries.len()
    }

    /// Images remembered as failed.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops the entry due soonest (the cheapest to lose: its attempt is allowed soonest anyway).
fn make_room(entries: &mut HashMap<String, Failed>) {
    let soonest = entries
        .iter()
        .min_by_key(|(_, f)| f.retry_at)
        .map(|(k, _)| k.clone());
    if let Some(k) = soonest {
        entries.remove(&k);
    }
}

/// `40s`, `5m20s`, `1h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn bomb() -> ContainerFailure {
        ContainerFailure {
            reason: "LayerTooLarge".into(),
            message: "image r/bomb@sha256:1: layer expands past 64 GiB".into(),
            transient: false,
        }
    }

    fn unreachable() -> ContainerFailure {
        ContainerFailure {
            reason: "RegistryUnreachable".into(),
            message: "connection refused".into(),
            transient: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_image_is_attempted_once_per_backoff_period_whatever_the_events() {
        let failed = FailedImages::new(10 * SECOND);
        let key = "r/bomb@sha256:1|linux/amd64";
        assert!(failed.pending(key).is_none(), "never failed: attempt");
        let (mut shown, delay) = failed.record(key, bomb());
        assert_eq!(delay, 10 * SECOND);
        let mut attempts = 1;
        // A Pod relabelled every second for a minute.
        for _ in 0..60 {
            tokio::time::advance(SECOND).await;
            match failed.pending(key) {
                Some((f, _)) => assert_eq!(f.message, shown.message, "one text per period"),
                None => {
                    attempts += 1;
                    shown = failed.record(key, bomb()).0;
                }
            }
        }
        // Attempts at 0 s, 10 s, 30 s (after 20 s); the next is due at 70 s.
        assert_eq!(attempts, 3);
        let (f, left) = failed.pending(key).expect("in backoff");
        assert_eq!(left, 10 * SECOND);
        assert_eq!(
            f.message,
            "retrying in 40s after: image r/bomb@sha256:1: layer expands past 64 GiB"
        );
        assert_eq!((f.reason.as_str(), f.transient), ("LayerTooLarge", false));
    }

    #[tokio::test(start_paused = true)]
    async fn delays_double_up_to_ten_times_the_first_or_an_hour_for_lasting_failures() {
        let failed = FailedImages::new(10 * SECOND);
        let delays = |failure: fn() -> ContainerFailure| -> Vec<u64> {
            (0..10)
                .map(|_| failed.record("k", failure()).1.as_secs())
                .collect()
        };
        assert_eq!(
            delays(unreachable),
            [10, 20, 40, 80, 100, 100, 100, 100, 100, 100]
        );
        failed.succeeded("k");
        assert_eq!(
            delays(bomb),
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_or_a_long_silence_forgets_the_failure() {
        let failed = FailedImages::new(10 * SECOND);
        failed.record("a", unreachable());
        failed.record("b", bomb());
        failed.succeeded("a");
        assert!(failed.pending("a").is_none());
        assert_eq!(failed.len(), 1);
        tokio::time::advance(10 * SECOND + PERMANENT_CAP - SECOND).await;
        assert_eq!(failed.prune(), 0, "not silent for a whole cap yet");
        tokio::time::advance(SECOND).await;
        assert_eq!(failed.prune(), 1);
        assert!(failed.is_empty());
    }

    #[test]
    fn delays_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(40)), "40s");
        assert_eq!(human(Duration::from_secs(320)), "5m20s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::ZERO), "0s");
    }
}

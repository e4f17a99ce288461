//! The findings of every image the operator has analyzed, by image key (repository@digest and
//! platform), each analyzed once however many workloads ask at the same time (single flight).
//!
//! Entries live as long as a workload uses them: a cluster that deploys new digests all day would
//! otherwise keep every image it ever ran. A workload's reconcile records the keys it used; an
//! entry that no workload records and nobody asked for during `idle` is dropped by `prune`. That
//! rule (kept while in use, however long) is no eviction policy of a cache crate's: an idle or
//! size-bound eviction would drop findings a running workload still reports, and analyze again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// One image's findings, filled once.
pub type Cell<T> = Arc<OnceCell<Arc<T>>>;

/// Cells by image key (the findings type is a parameter only so tests need no real findings).
pub struct ImageCache<T> {
    entries: Mutex<HashMap<String, (Cell<T>, Instant)>>,
    /// The keys each workload's last reconcile used.
    used_by: Mutex<HashMap<(String, String), Vec<String>>>,
}

impl<T> Default for ImageCache<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            used_by: Mutex::default(),
        }
    }
}

impl<T> ImageCache<T> {
    /// The cell for an image key (created empty when new); marks it used now.
    pub fn cell(&self, key: &str) -> Cell<T> {
        let mut entries = self.entries.lock().expect("image cache lock");
        let (cell, used) = entries
            .entry(key.to_string())
            .or_insert_with(|| (Arc::new(OnceCell::new()), Instant::now()));
        *used = Instant::now();
        cell.clone()
    }

    /// The findings under a key, if analyzed (marks it used); creates nothing.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        let mut entries = self.entries.lock().expect("image cache lock");
        let (cell, used) = entries.get_mut(key)?;
        let found = cell.get()?.clone();
        *used = Instant::now();
        Some(found)
    }

    /// Records the keys a workload uses now (replacing what it used before).
    pub fn used_by(&self, workload: (String, String), keys: Vec<String>) {
        self.used_by
            .lock()
            .expect("image users lock")
            .insert(workload, keys);
    }

    /// Forgets a workload that is gone.
    pub fn release(&self, workload: &(String, String)) {
        self.used_by
            .lock()
            .expect("image users lock")
            .remove(workload);
    }

    /// Drops entries that no workload uses, nobody asked for during `idle` and nobody holds (an
    /// analysis in flight holds its cell); returns how many. Failed analyses leave an empty cell,
    /// which goes the same way.
    pub fn prune(&self, idle: Duration) -> usize {
        let live: HashSet<String> = self
            .used_by
            .lock()
            .expect("image users lock")
            .values()
            .flatten()
            .cloned()
            .collect();
        let mut entries = self.entries.lock().expect("image cache lock");
        let before = entries.len();
        entries.retain(|key, (cell, used)| {
            Arc::strong_count(cell) > 1 || live.contains(key) || used.elapsed() < idle
        });
        before - entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("image cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings() -> Arc<String> {
        Arc::new("findings".into())
    }

    fn workload(name: &str) -> (String, String) {
        ("shop".into(), format!("Deployment/{name}"))
    }

    #[test]
    fn an_image_no_workload_uses_is_dropped_once_idle() {
        let cache = ImageCache::<String>::default();
        cache
            .cell("r/app@sha256:1|linux/amd64")
            .set(findings())
            .unwrap();
        cache
            .cell("r/app@sha256:2|linux/amd64")
            .set(findings())
            .unwrap();
        cache.used_by(workload("web"), vec!["r/app@sha256:2|linux/amd64".into()]);
        // Recently asked for: kept even without a user.
        assert_eq!(cache.prune(Duration::from_secs(600)), 0);
        // Idle and unused: dropped; the used one stays.
        assert_eq!(cache.prune(Duration::ZERO), 1);
        assert_eq!(cache.len(), 1);
        assert!(cache.cell("r/app@sha256:2|linux/amd64").get().is_some());
        // The workload goes: its image goes at the next prune.
        cache.release(&workload("web"));
        assert_eq!(cache.prune(Duration::ZERO), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn get_finds_only_analyzed_entries_and_creates_none() {
        let cache = ImageCache::<String>::default();
        assert_eq!(cache.get("r/app@sha256:1|*"), None);
        assert!(cache.is_empty(), "a miss creates nothing");
        let cell = cache.cell("r/app@sha256:1|*");
        assert_eq!(cache.get("r/app@sha256:1|*"), None, "not analyzed yet");
        cell.set(findings()).unwrap();
        assert_eq!(
            cache.get("r/app@sha256:1|*").as_deref().map(String::as_str),
            Some("findings")
        );
    }

    #[test]
    fn an_analysis_in_flight_is_never_dropped_a_failed_one_is() {
        let cache = ImageCache::<String>::default();
        let cell = cache.cell("r/big@sha256:3|linux/amd64");
        assert_eq!(cache.prune(Duration::ZERO), 0, "held: in flight");
        assert_eq!(cache.len(), 1);
        drop(cell);
        // Never filled (the analysis failed) and nobody holds it.
        assert_eq!(cache.prune(Duration::ZERO), 1);
    }

    #[test]
    fn a_workload_that_moves_to_a_new_digest_releases_the_old_one() {
        let cache = ImageCache::<String>::default();
        cache
            .cell("r/app@sha256:1|linux/amd64")
            .set(findings())
            .unwrap();
        cache.used_by(workload("web"), vec!["r/app@sha256:1|linux/amd64".into()]);
        cache
            .cell("r/app@sha256:2|linux/amd64")
            .set(findings())
            .unwrap();
        cache.used_by(workload("web"), vec!["r/app@sha256:2|linux/amd64".into()]);
        assert_eq!(cache.prune(Duration::ZERO), 1);
        assert!(cache.cell("r/app@sha256:2|linux/amd64").get().is_some());
    }
}

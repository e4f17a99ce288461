//! Tags recently resolved to digests, for Pods the kubelet has not reported on yet.
//!
//! A rollout's new Pods all ask for the same tag at once; one HEAD request answers them all.
//! Each answer is trusted for a fixed time only, so a moved tag shows within that time (and the
//! kubelet's `imageID` wins as soon as it is there). The map stays small: when it reaches
//! `PRUNE_AT` entries, expired ones are dropped, then, if a burst of new tags filled it within
//! one TTL, the oldest (tags come from Pod specs: any number of them). Time is tokio's, so tests run on its paused
//! clock; that, and its size (a map and a time per entry), is why this is not a cache crate's
//! TTL cache, whose clock a test cannot move.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Entries at which expired ones are dropped; never more are kept.
const PRUNE_AT: usize = 1024;

/// Tag reference → digest, each entry trusted for `ttl`.
pub struct TagCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl TagCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The digest `reference` resolved to, if resolved less than `ttl` ago.
    pub fn get(&self, reference: &str) -> Option<String> {
        let entries = self.entries.lock().expect("tag cache lock");
        let (digest, at) = entries.get(reference)?;
        (at.elapsed() < self.ttl).then(|| digest.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("tag cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert(&self, reference: String, digest: String) {
        let mut entries = self.entries.lock().expect("tag cache lock");
        if entries.len() >= PRUNE_AT && !entries.contains_key(&reference) {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            while entries.len() >= PRUNE_AT {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(reference, (digest, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_resolved_tag_is_trusted_for_its_ttl_only() {
        let tags = TagCache::new(Duration::from_secs(30));
        tags.insert("r/app:1".into(), "sha256:aa".into());
        assert_eq!(tags.get("r/app:1").as_deref(), Some("sha256:aa"));
        assert_eq!(tags.get("r/app:2"), None);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(tags.get("r/app:1").as_deref(), Some("sha256:aa"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(tags.get("r/app:1"), None, "expired");
        tags.insert("r/app:1".into(), "sha256:bb".into());
        assert_eq!(
            tags.get("r/app:1").as_deref(),
            Some("sha256:bb"),
            "moved tag"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_new_tags_never_grows_the_map_past_its_bound() {
        let tags = TagCache::new(Duration::from_secs(30));
        for i in 0..PRUNE_AT + 10 {
            tags.insert(format!("r/app:{i}"), "sha256:aa".into());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(tags.len(), PRUNE_AT);
        assert_eq!(tags.get("r/app:0"), None, "the oldest went");
        assert!(tags.get(&format!("r/app:{}", PRUNE_AT + 9)).is_some());
    }
}

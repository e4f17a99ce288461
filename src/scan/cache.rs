//! Layer indexes by digest, shared by every scan of one process.
//!
//! A layer's index depends only on its bytes, so one read serves every image that contains the
//! layer: the operator scans many tags of one base, and reads each shared layer once. A read in
//! flight is shared per (origin, digest): concurrent requests for one layer from one registry wait
//! for a single read, but a registry that serves a layer slowly never holds up a scan that gets the
//! same layer from another registry — each reads its own, and the first verified index serves
//! everyone after. The byte budget bounds memory in a long-running operator; what falls out is
//! read again when next needed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::analysis::LayerIndex;

/// Layer indexes by digest, shared across scans. Concurrent requests for one layer from one
/// origin wait for a single read; a failed read is retried by the next request. Indexes beyond a byte budget are
/// dropped oldest first (a later image with that layer reads it again).
#[derive(Clone)]
pub struct LayerCache {
    inner: Arc<Mutex<CacheInner>>,
    budget: usize,
    hits: Arc<AtomicU64>,
}

#[derive(Default)]
struct CacheInner {
    /// Verified indexes by layer digest, whichever origin they were read from.
    indexes: HashMap<String, Arc<LayerIndex>>,
    /// Reads in flight by (origin, digest).
    reading: HashMap<(String, String), Arc<LayerCell>>,
    /// Indexes in the order they were made, with their heap bytes.
    order: VecDeque<(String, usize)>,
    bytes: usize,
}

/// One layer's index, filled once.
type LayerCell = tokio::sync::OnceCell<Arc<LayerIndex>>;

impl Default for LayerCache {
    fn default() -> Self {
        Self::with_budget(usize::MAX)
    }
}

impl LayerCache {
    /// A cache that keeps at most about `budget` bytes of indexes.
    pub fn with_budget(budget: usize) -> Self {
        LayerCache {
            inner: Arc::default(),
            budget,
            hits: Arc::default(),
        }
    }

    pub fn get(&self, digest: &str) -> Option<Arc<LayerIndex>> {
        let inner = self.inner.lock().expect("layer cache lock");
        inner.indexes.get(digest).cloned()
    }

    /// Indexes held.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("layer cache lock").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Heap bytes held by the indexes.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("layer cache lock").bytes
    }

    /// The index of layer `digest`: from the cache, or made by `read` from `origin` (once per
    /// origin, however many ask at the same time). A failed read leaves nothing behind, so the
    /// next request reads again.
    pub(super) async fn get_or_index<F, Fut, E>(
        &self,
        origin: &str,
        digest: &str,
        read: F,
    ) -> Result<Arc<LayerIndex>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<LayerIndex>, E>>,
    {
        let key = (origin.to_string(), digest.to_string());
        let cell = {
            let mut inner = self.inner.lock().expect("layer cache lock");
            if let Some(index) = inner.indexes.get(digest) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(index.clone());
            }
            inner.reading.entry(key.clone()).or_default().clone()
        };
        let mut filled = false;
        let result = cell
            .get_or_try_init(|| {
                filled = true;
                read()
            })
            .await
            .cloned();
        let mut inner = self.inner.lock().expect("layer cache lock");
        if inner
            .reading
            .get(&key)
            .is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            inner.reading.remove(&key);
        }
        let index = result?;
        if !filled {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else if !inner.indexes.contains_key(digest) {
            let size = index.heap_bytes();
            inner.indexes.insert(digest.to_string(), index.clone());
            inner.order.push_back((digest.to_string(), size));
            inner.bytes += size;
            while inner.bytes > self.budget && inner.order.len() > 1 {
                let (old, size) = inner.order.pop_front().expect("non-empty");
                inner.indexes.remove(&old);
                inner.bytes -= size;
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::layer::EntryKind;

    fn index(files: usize) -> Arc<LayerIndex> {
        let names: Vec<String> = (0..files).map(|i| format!("f{i:05}")).collect();
        Arc::new(LayerIndex::from_entries(
            names
                .iter()
                .map(|n| (n.as_bytes(), &b""[..], EntryKind::File, 1)),
        ))
    }

    #[tokio::test]
    async fn layer_cache_reads_each_layer_once_and_stays_within_its_budget() {
        let one = index(1000).heap_bytes();
        let cache = LayerCache::with_budget(one * 2 + one / 2);
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, ()>(index(1000))
        };
        for digest in ["a", "a", "b", "a"] {
            cache.get_or_index("r", digest, read).await.unwrap();
        }
        assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(cache.hits(), 2);
        cache.get_or_index("r", "c", read).await.unwrap();
        // Three indexes do not fit: the oldest ("a") went.
        assert_eq!(cache.len(), 2);
        assert!(cache.bytes() <= one * 2 + one / 2);
        assert!(cache.get("a").is_none() && cache.get("c").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_registry_never_holds_up_the_same_layer_from_another_registry() {
        let cache = LayerCache::default();
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_index("slow.example", "a", || {
                        std::future::pending::<Result<_, ()>>()
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        // The same layer from another registry is read there, not waited for.
        let fast = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            cache.get_or_index("fast.example", "a", || async { Ok::<_, ()>(index(3)) }),
        )
        .await
        .expect("not held up by the slow registry's read")
        .unwrap();
        assert_eq!(fast.len(), 3);
        // Once verified, the index serves every origin, the slow one included.
        let again = cache
            .get_or_index("slow.example", "a", || async {
                Err::<Arc<LayerIndex>, _>(())
            })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&fast, &again));
        assert_eq!(cache.hits(), 1);
        slow.abort();
    }
}

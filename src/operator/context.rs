//! What every reconcile shares, grouped by what it is for: the cluster as the watches see it,
//! what is known of images, how many analyses may run at once, and the statuses last written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use super::access::AccessCache;
use super::failures::FailedImages;
use super::index::PodIndex;
use super::namespaces::NamespaceFilter;
use super::tags::TagCache;
use super::workload::{self, Workload};
use super::{Config, OperatorError, images};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::report::ImageFindings;
use crate::report::crd::ImageReportStatus;
use crate::scan::LayerCache;

/// How long a tag's digest is trusted without asking the registry again. Only Pods without an
/// `imageID` use it (the kubelet's word wins as soon as it is there), so a moved tag shows within
/// this time or at the next Pod status, whichever comes first.
const TAG_TTL: Duration = Duration::from_secs(30);

/// Everything the reconciles share.
pub struct Context {
    pub config: Config,
    pub client: Client,
    /// Events on workloads (`kubectl describe`): analyzed, or why not.
    pub recorder: Recorder,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub cluster: Cluster,
    pub images: Images,
    pub slots: AnalysisSlots,
    pub written: WrittenStatuses,
    /// What each workload runs, for the fleet view (`fleet`).
    pub fleet: super::fleet::FleetState,
    /// Checked right before every write: with election, valid only while this replica leads.
    pub leadership: super::leader::Leadership,
}

impl Context {
    /// The shared state of a starting operator, with empty watch caches (fill them through the
    /// returned writers).
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        namespaces: NamespaceFilter,
    ) -> Result<(Self, StoreWriters), OperatorError> {
        let registry = Registry::new(config.registry.clone())
            .map_err(|e| OperatorError::Setup(e.to_string()))?
            .with_observer(metrics.clone());
        let reporter = Reporter {
            controller: "imagebloat".into(),
            instance: Some(config.identity.clone()),
        };
        let (cluster, writers) = Cluster::new(namespaces);
        let ctx = Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            registry,
            metrics,
            cluster,
            images: Images::new(config.layer_cache_bytes, config.retry),
            slots: AnalysisSlots::new(config.concurrency, config.per_registry),
            written: WrittenStatuses::default(),
            fleet: Default::default(),
            leadership: Default::default(),
            config,
        };
        Ok((ctx, writers))
    }
}

/// The cluster as the watches see it, and the index from workloads to their Pods.
pub struct Cluster {
    /// Pods, Nodes: only the fields the controller reads (see `slim`). ReplicaSets and Jobs:
    /// metadata only (owner references), watched as such so the API server sends no more.
    pub pods: Store<Pod>,
    pub replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    pub jobs: Store<PartialObjectMeta<Job>>,
    pub nodes: Store<Node>,
    /// Live Pods by workload, and the workload of each.
    pod_index: Mutex<PodIndex>,
    pub namespaces: NamespaceFilter,
}

/// The write ends of the watch caches, for the watches that fill them.
pub struct StoreWriters {
    pub pods: Writer<Pod>,
    pub replicasets: Writer<PartialObjectMeta<ReplicaSet>>,
    pub jobs: Writer<PartialObjectMeta<Job>>,
    pub nodes: Writer<Node>,
}

impl Cluster {
    fn new(namespaces: NamespaceFilter) -> (Self, StoreWriters) {
        let (pods, pods_writer) = reflector::store();
        let (replicasets, replicasets_writer) = reflector::store();
        let (jobs, jobs_writer) = reflector::store();
        let (nodes, nodes_writer) = reflector::store();
        let cluster = Cluster {
            pods,
            replicasets,
            jobs,
            nodes,
            pod_index: Mutex::default(),
            namespaces,
        };
        let writers = StoreWriters {
            pods: pods_writer,
            replicasets: replicasets_writer,
            jobs: jobs_writer,
            nodes: nodes_writer,
        };
        (cluster, writers)
    }

    /// Owner references of a ReplicaSet or Job from the watch caches.
    fn owners_of(&self, kind: &str, namespace: &str, name: &str) -> Option<Vec<OwnerReference>> {
        let owners = match kind {
            "ReplicaSet" => self
                .replicasets
                .get(&ObjectRef::new(name).within(namespace))?
                .metadata
                .owner_references
                .clone(),
            "Job" => self
                .jobs
                .get(&ObjectRef::new(name).within(namespace))?
                .metadata
                .owner_references
                .clone(),
            _ => return None,
        };
        Some(owners.unwrap_or_default())
    }

    pub fn workload_of(&self, pod: &Pod) -> Result<Workload, workload::Unresolved> {
        workload::resolve(pod, |k, ns, n| self.owners_of(k, ns, n))
    }

    /// The workload's live Pods (not being deleted), from the index: no scan of every Pod.
    pub fn pods_of(&self, w: &Workload) -> Vec<Arc<Pod>> {
        let refs = self.index().pods_of(w);
        refs.iter()
            .filter_map(|r| self.pods.get(r))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// The Node a Pod is bound to, if it is and the Node is known.
    pub fn node_of(&self, pod: &Pod) -> Option<Arc<Node>> {
        let node_name = pod.spec.as_ref()?.node_name.as_ref()?;
        self.nodes.get(&ObjectRef::new(node_name))
    }

    /// Locks the Pod index.
    pub fn index(&self) -> std::sync::MutexGuard<'_, PodIndex> {
        self.pod_index.lock().expect("pod index lock")
    }
}

/// What is known of images: each analyzed image's findings, recently resolved tags, the layer
/// indexes images share, who proved access to which repository, and which images failed.
pub struct Images {
    /// Findings by image key (reference with digest, and platform): each analyzed once.
    pub findings: images::ImageCache<ImageFindings>,
    pub tags: TagCache,
    pub layers: LayerCache,
    /// Pull access proven per (repository, credential set): no findings without it.
    pub access: AccessCache,
    /// Images whose analysis failed, waiting out their backoff.
    pub failures: FailedImages,
    /// Layer cache hits already counted in the metrics.
    layer_hits_counted: AtomicU64,
}

impl Images {
    fn new(layer_cache_bytes: usize, retry: Duration) -> Self {
        Self {
            findings: Default::default(),
            tags: TagCache::new(TAG_TTL),
            layers: LayerCache::with_budget(layer_cache_bytes),
            access: AccessCache::default(),
            failures: FailedImages::new(retry),
            layer_hits_counted: AtomicU64::new(0),
        }
    }

    /// Seeds the findings with those of a stored report (restart without downloads).
    pub fn remember(&self, key: String, findings: Arc<ImageFindings>) {
        let _ = self.findings.cell(&key).set(findings);
    }

    /// Layer cache hits since the last call (the cache counts them in total).
    pub fn new_layer_hits(&self) -> u64 {
        let hits = self.layers.hits();
        let counted = self.layer_hits_counted.swap(hits, Ordering::Relaxed);
        hits.saturating_sub(counted)
    }
}

/// How many analyses run at once: overall (`--concurrency`) and per registry (`--per-registry`).
///
/// A registry's slot is taken first, the overall one only then: analyses queued behind a slow
/// registry wait for that registry's slots and hold none of the overall ones, so they cannot
/// stall analyses of images on other registries. A registry's semaphore exists only while an
/// analysis holds or waits for it (registry names come from Pod specs: any number of them).
pub struct AnalysisSlots {
    overall: Semaphore,
    per_registry_limit: usize,
    per_registry: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A held slot; dropping it frees it.
pub struct AnalysisSlot<'a> {
    _overall: SemaphorePermit<'a>,
    _registry: OwnedSemaphorePermit,
}

type RegistrySlots = HashMap<String, Arc<Semaphore>>;

impl AnalysisSlots {
    fn new(overall: usize, per_registry: usize) -> Self {
        Self {
            overall: Semaphore::new(overall.max(1)),
            per_registry_limit: per_registry.max(1),
            per_registry: Mutex::default(),
        }
    }

    /// Waits for a free slot at `registry`, then for one overall.
    pub async fn acquire(&self, registry: &str) -> AnalysisSlot<'_> {
        let semaphore = {
            let mut slots = self.registry_slots();
            // Held or waited for: referenced by a permit or a waiter besides the map.
            slots.retain(|_, s| Arc::strong_count(s) > 1);
            slots
                .entry(registry.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_registry_limit)))
                .clone()
        };
        let registry = semaphore.acquire_owned().await.expect("semaphore open");
        AnalysisSlot {
            _overall: self.overall.acquire().await.expect("semaphore open"),
            _registry: registry,
        }
    }

    fn registry_slots(&self) -> std::sync::MutexGuard<'_, RegistrySlots> {
        self.per_registry.lock().expect("slots lock")
    }

    /// Registries with a semaphore (held or waited for at the last acquire).
    pub fn registries(&self) -> usize {
        self.registry_slots().len()
    }
}

/// A workload's report, as bookkeeping keys it: its namespace and `Kind/uid`.
pub type ReportKey = (String, String);

pub fn report_key(namespace: &str, kind: &str, uid: &str) -> ReportKey {
    (namespace.to_string(), format!("{kind}/{uid}"))
}

/// The status last written per report, to skip writes that change nothing.
#[derive(Default)]
pub struct WrittenStatuses(Mutex<HashMap<ReportKey, ImageReportStatus>>);

impl WrittenStatuses {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ReportKey, ImageReportStatus>> {
        self.0.lock().expect("written statuses lock")
    }

    pub fn get(&self, key: &ReportKey) -> Option<ImageReportStatus> {
        self.map().get(key).cloned()
    }

    pub fn insert(&self, key: ReportKey, status: ImageReportStatus) {
        self.map().insert(key, status);
    }

    pub fn remove(&self, key: &ReportKey) {
        self.map().remove(key);
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn slots() -> AnalysisSlots {
        AnalysisSlots::new(2, 1)
    }

    #[tokio::test(start_paused = true)]
    async fn analyses_waiting_for_a_slow_registry_hold_no_overall_slot() {
        let slots = Arc::new(slots());
        let slow = slots.acquire("slow.example").await;
        // Three more for the slow registry queue behind it.
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move {
                    let _slot = slots.acquire("slow.example").await;
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Another registry still gets the last overall slot at once.
        let other = tokio::time::timeout(Duration::from_secs(1), slots.acquire("good.example"))
            .await
            .expect("not stalled behind the slow registry");
        drop((slow, other));
        for w in waiting {
            w.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_registrys_semaphore_is_dropped_once_nobody_holds_or_waits_for_it() {
        let slots = slots();
        for i in 0..100 {
            drop(slots.acquire(&format!("r{i}.example")).await);
        }
        let held = slots.acquire("kept.example").await;
        assert_eq!(slots.registries(), 1, "only the held one");
        drop(held);
        drop(slots.acquire("next.example").await);
        assert_eq!(slots.registries(), 1);
    }
}

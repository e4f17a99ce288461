//! The operator: Pods in, `ImageReport`s and metrics out.
//!
//! Watches Pods (and the ReplicaSets, Jobs and Nodes needed to understand them), groups them by
//! workload, and for each workload analyzes every container's exact image — each distinct
//! manifest once, layers shared across images — then writes one report next to the workload
//! with server-side apply. Work is keyed by workload and deduplicated: a burst of Pod events for
//! one Deployment is one reconcile.

pub mod images;
pub mod index;
pub mod leader;
pub mod reconcile;
pub mod slim;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::{Mutex, Notify, Semaphore};

use crate::analysis::LayerLimits;
use crate::metrics::Metrics;
use crate::registry::{Keyring, Platform, Registry, RegistryOptions};
use crate::report::ImageFindings;
use crate::report::crd::{ImageReport, ImageReportStatus};
use crate::scan::LayerCache;
use workload::Workload;

/// How the operator runs (from `imagebloat run`'s flags).
#[derive(Clone)]
pub struct Config {
    /// Namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    /// Namespace globs never watched (`kube-*`).
    pub exclude_namespaces: Vec<String>,
    pub metrics_addr: SocketAddr,
    pub registry: RegistryOptions,
    /// Operator-wide credentials, tried after the Pod's own pull secrets.
    pub keyring: Keyring,
    /// Registry host → mirror host to pull from instead.
    pub mirrors: BTreeMap<String, String>,
    /// Platform for Pods not yet on a Node.
    pub default_platform: Platform,
    /// Images analyzed at once.
    pub concurrency: usize,
    /// Images analyzed at once per registry.
    pub per_registry: usize,
    pub limits: LayerLimits,
    /// Leader election; `None` runs without (a single replica).
    pub lease: Option<leader::LeaseConfig>,
    /// This replica's name (the Pod's), in leases and as the reporting instance of its Events.
    pub identity: String,
    /// First retry delay after a failed analysis (doubles up to ten times that).
    pub retry: Duration,
    /// Bytes of layer indexes kept for images that share layers.
    pub layer_cache_bytes: usize,
}

/// Everything the reconciles share.
pub struct Context {
    pub client: Client,
    /// Events on workloads (`kubectl describe`): analyzed, or why not.
    pub recorder: kube::runtime::events::Recorder,
    pub config: Config,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    pub layers: LayerCache,
    /// Findings by image key (reference with digest, and platform): each analyzed once.
    images: images::ImageCache<ImageFindings>,
    /// Pods, Nodes: only the fields the controller reads (see `slim`). ReplicaSets and Jobs:
    /// metadata only (owner references), watched as such so the API server sends no more.
    pods: Store<Pod>,
    replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    jobs: Store<PartialObjectMeta<Job>>,
    nodes: Store<Node>,
    analysis_slots: Semaphore,
    registry_slots: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The status last written per report, to skip writes that change nothing.
    written: Mutex<HashMap<(String, String), ImageReportStatus>>,
    /// Failures per workload, for backoff.
    failures: std::sync::Mutex<HashMap<Workload, u32>>,
    /// Layer cache hits already counted in the metrics.
    layer_hits_reported: std::sync::atomic::AtomicU64,
    /// Live Pods by workload, and the workload of each.
    pod_index: std::sync::Mutex<index::PodIndex>,
    namespaces: NamespaceFilter,
    /// Tags recently resolved to digests, for Pods the kubelet has not reported on yet.
    tags: TagCache,
}

impl Context {
    /// Owner references of a ReplicaSet or Job from the watch caches.
    fn owners_of(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>> {
        match kind {
            "ReplicaSet" => self
                .replicasets
                .get(&reflector::ObjectRef::new(name).within(namespace))
                .map(|rs| rs.metadata.owner_references.clone().unwrap_or_default()),
            "Job" => self
                .jobs
                .get(&reflector::ObjectRef::new(name).within(namespace))
                .map(|j| j.metadata.owner_references.clone().unwrap_or_default()),
            _ => None,
        }
    }

    pub fn workload_of(&self, pod: &Pod) -> Result<Workload, workload::Unresolved> {
        workload::resolve(pod, |k, ns, n| self.owners_of(k, ns, n))
    }

    /// The workload's live Pods (not being deleted), from the index: no scan of every Pod.
    pub fn pods_of(&self, w: &Workload) -> Vec<Arc<Pod>> {
        let refs = self.pod_index.lock().expect("pod index lock").pods_of(w);
        refs.iter()
            .filter_map(|r| self.pods.get(r))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    fn registry_slot(&self, registry: &str) -> Arc<Semaphore> {
        let mut slots = self.registry_slots.lock().expect("slots lock");
        slots
            .entry(registry.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.per_registry.max(1))))
            .clone()
    }

    /// Seeds the image cache with findings from a stored report (restart without downloads).
    fn remember(&self, key: String, findings: Arc<ImageFindings>) {
        let _ = self.images.cell(&key).set(findings);
    }
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("leadership lost: {0}")]
    LeaderLost(kube::Error),
}

/// How often, and after how long unused, findings of images no workload runs are dropped.
const IMAGE_PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// How long a tag's digest is trusted without asking the registry again. Only Pods without an
/// `imageID` use it (the kubelet's word wins as soon as it is there), so a moved tag shows within
/// this time or at the next Pod status, whichever comes first.
const TAG_TTL: Duration = Duration::from_secs(30);

/// Tag → digest, each entry trusted for a fixed time.
struct TagCache {
    ttl: Duration,
    entries: std::sync::Mutex<HashMap<String, (String, std::time::Instant)>>,
}

impl TagCache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Default::default(),
        }
    }

    fn get(&self, reference: &str) -> Option<String> {
        let entries = self.entries.lock().expect("tag cache lock");
        let (digest, at) = entries.get(reference)?;
        (at.elapsed() < self.ttl).then(|| digest.clone())
    }

    fn insert(&self, reference: String, digest: String) {
        let mut entries = self.entries.lock().expect("tag cache lock");
        if entries.len() >= 1024 {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
        }
        entries.insert(reference, (digest, std::time::Instant::now()));
    }
}

/// Work keyed by workload: a key queued twice before it is taken runs once.
#[derive(Default)]
struct Queue {
    pending: std::sync::Mutex<(BTreeSet<Workload>, HashSet<Workload>)>,
    notify: Notify,
}

impl Queue {
    fn push(&self, w: Workload) {
        let mut p = self.pending.lock().expect("queue lock");
        p.0.insert(w);
        drop(p);
        self.notify.notify_one();
    }

    /// The next key not already being worked on.
    async fn next(&self) -> Workload {
        loop {
            {
                let mut p = self.pending.lock().expect("queue lock");
                let (pending, active) = &mut *p;
                if let Some(w) = pending.iter().find(|w| !active.contains(*w)).cloned() {
                    pending.remove(&w);
                    active.insert(w.clone());
                    return w;
                }
            }
            self.notify.notified().await;
        }
    }

    fn done(&self, w: &Workload) {
        let mut p = self.pending.lock().expect("queue lock");
        p.1.remove(w);
        drop(p);
        self.notify.notify_one();
    }
}

/// Which namespaces' Pods are watched: listed (or no list), and matching no exclusion glob.
/// Built once; asked on every Pod event.
struct NamespaceFilter {
    include: HashSet<String>,
    exclude: globset::GlobSet,
}

impl NamespaceFilter {
    fn new(config: &Config) -> Result<Self, OperatorError> {
        let mut exclude = globset::GlobSetBuilder::new();
        for g in &config.exclude_namespaces {
            exclude.add(
                globset::Glob::new(g)
                    .map_err(|e| OperatorError::Setup(format!("--exclude-namespaces {g}: {e}")))?,
            );
        }
        Ok(Self {
            include: config.namespaces.iter().cloned().collect(),
            exclude: exclude
                .build()
                .map_err(|e| OperatorError::Setup(format!("--exclude-namespaces: {e}")))?,
        })
    }

    fn watches(&self, namespace: &str) -> bool {
        (self.include.is_empty() || self.include.contains(namespace))
            && !self.exclude.is_match(namespace)
    }
}

/// Runs the operator until it fails or loses leadership.
pub async fn run(config: Config) -> Result<(), OperatorError> {
    let namespaces = NamespaceFilter::new(&config)?;
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|source| OperatorError::Serve {
            addr: config.metrics_addr,
            source,
        })?;
    tracing::info!(addr = %config.metrics_addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(serve(listener, metrics.clone(), ready.clone()));

    let elector = config
        .lease
        .clone()
        .map(|l| leader::Elector::new(client.clone(), l));
    if let Some(e) = &elector {
        // Standing by counts as ready: the replica is healthy, only not the writer.
        ready.store(true, Ordering::Relaxed);
        e.acquire().await?;
        ready.store(false, Ordering::Relaxed);
    }

    let registry = Registry::new(config.registry.clone())
        .map_err(|e| OperatorError::Setup(e.to_string()))?
        .with_observer(Arc::new(RegistryMetrics(metrics.clone())));

    let (pods, pod_writer) = reflector::store::<Pod>();
    let (replicasets, rs_writer) = reflector::store::<PartialObjectMeta<ReplicaSet>>();
    let (jobs, job_writer) = reflector::store::<PartialObjectMeta<Job>>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let reporter = kube::runtime::events::Reporter {
        controller: "imagebloat".into(),
        instance: Some(config.identity.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: kube::runtime::events::Recorder::new(client.clone(), reporter),
        client: client.clone(),
        registry,
        metrics: metrics.clone(),
        layers: LayerCache::with_budget(config.layer_cache_bytes),
        images: Default::default(),
        pods,
        replicasets,
        jobs,
        nodes,
        analysis_slots: Semaphore::new(config.concurrency.max(1)),
        registry_slots: Default::default(),
        written: Default::default(),
        failures: Default::default(),
        pod_index: Default::default(),
        layer_hits_reported: Default::default(),
        namespaces,
        tags: TagCache::new(TAG_TTL),
        config,
    });

    let watch = watcher::Config::default().any_semantic();
    let mut side = tokio::task::JoinSet::new();
    side.spawn(owner_cache::<ReplicaSet>(&client, &watch, rs_writer));
    side.spawn(owner_cache::<Job>(&client, &watch, job_writer));
    side.spawn(drain(
        watcher(Api::<Node>::all(client.clone()), watch.clone())
            .default_backoff()
            .modify(slim::node)
            .reflect(node_writer),
    ));
    tokio::try_join!(
        ctx.replicasets.wait_until_ready(),
        ctx.jobs.wait_until_ready(),
        ctx.nodes.wait_until_ready(),
    )
    .map_err(|e| OperatorError::Setup(format!("watch caches: {e}")))?;

    reconcile::seed_from_reports(&ctx).await?;

    let queue = Arc::new(Queue::default());
    let pod_api: Api<Pod> = match ctx.config.namespaces.as_slice() {
        [one] => Api::namespaced(client.clone(), one),
        _ => Api::all(client.clone()),
    };
    let pod_events = {
        let ctx = ctx.clone();
        let queue = queue.clone();
        async move {
            let mut stream = Box::pin(
                watcher(pod_api, watch)
                    .default_backoff()
                    .modify(slim::pod)
                    .reflect(pod_writer),
            );
            while let Some(event) = stream.next().await {
                let (pod, deleted) = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => (pod, false),
                    Ok(watcher::Event::Delete(pod)) => (pod, true),
                    Ok(watcher::Event::InitDone) => {
                        // After a (re)list: Pods deleted while the watch was down left no event.
                        let live = ctx
                            .pods
                            .state()
                            .iter()
                            .filter_map(|p| p.metadata.uid.clone())
                            .collect();
                        let gone = ctx
                            .pod_index
                            .lock()
                            .expect("pod index lock")
                            .retain_live(&live);
                        gone.into_iter().for_each(|w| queue.push(w));
                        continue;
                    }
                    Ok(watcher::Event::Init) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch error");
                        continue;
                    }
                };
                let namespace = pod.metadata.namespace.clone().unwrap_or_default();
                if !ctx.namespaces.watches(&namespace) {
                    continue;
                }
                enqueue_pod(&ctx, &queue, &pod, deleted);
            }
        }
    };
    side.spawn(pod_events);
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|e| OperatorError::Setup(e.to_string()))?;
    ready.store(true, Ordering::Relaxed);
    tracing::info!("watching pods");

    let workers = {
        let ctx = ctx.clone();
        let queue = queue.clone();
        // Reconciles run concurrently, unbounded: what is costly is bounded where it happens
        // (analyses by `--concurrency` and per registry), and a reconcile whose images are known
        // reads nothing and writes only a changed status. A worker pool would make reports of
        // analyzed images wait behind workloads whose images are still being analyzed.
        async move {
            loop {
                let w = queue.next().await;
                let ctx = ctx.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let retry = reconcile::reconcile(&ctx, &w).await;
                    queue.done(&w);
                    if let Some(delay) = retry {
                        let queue = queue.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            queue.push(w);
                        });
                    }
                });
            }
        }
    };
    side.spawn(workers);
    side.spawn({
        let ctx = ctx.clone();
        async move {
            let mut every = tokio::time::interval(IMAGE_PRUNE_INTERVAL);
            loop {
                every.tick().await;
                let dropped = ctx.images.prune(IMAGE_PRUNE_INTERVAL);
                if dropped > 0 {
                    tracing::debug!(
                        dropped,
                        kept = ctx.images.len(),
                        "findings of unused images dropped"
                    );
                }
            }
        }
    });

    match elector {
        Some(e) => Err(OperatorError::LeaderLost(e.hold().await)),
        None => {
            side.join_next().await;
            Err(OperatorError::Setup("a watch stopped".into()))
        }
    }
}

fn enqueue_pod(ctx: &Arc<Context>, queue: &Arc<Queue>, pod: &Pod, deleted: bool) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if deleted {
        // The owner chain may already be gone: use what the Pod resolved to while it lived.
        let known = ctx.pod_index.lock().expect("pod index lock").remove(&uid);
        if let Some(w) = known.or_else(|| ctx.workload_of(pod).ok()) {
            queue.push(w);
        }
        return;
    }
    match ctx.workload_of(pod) {
        Ok(w) => {
            ctx.pod_index.lock().expect("pod index lock").insert(
                uid,
                w.clone(),
                reflector::ObjectRef::from_obj(pod),
            );
            queue.push(w);
        }
        Err(workload::Unresolved::Missing { kind, name }) => {
            // The owner's watch has not delivered it yet: look again shortly.
            tracing::debug!(kind, name, "owner not cached yet");
            let (ctx, queue, pod) = (ctx.clone(), queue.clone(), pod.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if ctx
                    .pods
                    .get(&reflector::ObjectRef::from_obj(&pod))
                    .is_some()
                {
                    enqueue_pod(&ctx, &queue, &pod, false);
                }
            });
        }
        Err(workload::Unresolved::Incomplete) => {}
    }
}

/// Keeps a metadata-only cache of `K` (ReplicaSets, Jobs): their owner references are all the
/// controller reads, so the API server sends nothing else.
fn owner_cache<K>(
    client: &Client,
    config: &watcher::Config,
    writer: reflector::store::Writer<PartialObjectMeta<K>>,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    drain(
        watcher(
            Api::<PartialObjectMeta<K>>::all(client.clone()),
            config.clone(),
        )
        .default_backoff()
        .modify(|o| slim::meta(&mut o.metadata))
        .reflect(writer),
    )
}

async fn drain<S: futures_util::Stream + Send + 'static>(stream: S) {
    let mut stream = Box::pin(stream);
    while stream.next().await.is_some() {}
}

struct RegistryMetrics(Arc<Metrics>);

impl crate::registry::Observer for RegistryMetrics {
    fn request(&self, registry: &str, status: Option<u16>) {
        let status = status.map(|s| s.to_string());
        self.0
            .registry_requests
            .with_label_values(&[registry, status.as_deref().unwrap_or("error")])
            .inc();
    }

    fn blob_bytes(&self, registry: &str, bytes: u64) {
        self.0
            .registry_bytes
            .with_label_values(&[registry])
            .inc_by(bytes);
    }
}

async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

/// Lists existing reports (for seeding); shared with tests.
pub async fn list_reports(
    client: &Client,
    namespaces: &[String],
) -> Result<Vec<ImageReport>, kube::Error> {
    let mut out = Vec::new();
    if namespaces.is_empty() {
        out.extend(
            Api::<ImageReport>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items,
        );
    } else {
        for ns in namespaces {
            out.extend(
                Api::<ImageReport>::namespaced(client.clone(), ns)
                    .list(&ListParams::default())
                    .await?
                    .items,
            );
        }
    }
    Ok(out)
}

/// The API version of reports (`imagebloat.dev/v1alpha1`).
pub fn report_api_version() -> String {
    ImageReport::api_version(&()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(include: &[&str], exclude: &[&str]) -> Config {
        Config {
            namespaces: include.iter().map(|s| s.to_string()).collect(),
            exclude_namespaces: exclude.iter().map(|s| s.to_string()).collect(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            registry: RegistryOptions::default(),
            keyring: Keyring::default(),
            mirrors: BTreeMap::new(),
            default_platform: Platform::default(),
            concurrency: 1,
            per_registry: 1,
            limits: LayerLimits::default(),
            lease: None,
            identity: "test".into(),
            retry: Duration::from_secs(1),
            layer_cache_bytes: 1,
        }
    }

    fn filter(include: &[&str], exclude: &[&str]) -> NamespaceFilter {
        NamespaceFilter::new(&config(include, exclude)).expect("valid globs")
    }

    #[test]
    fn namespaces_are_filtered_by_list_and_exclusion_globs() {
        let f = filter(&[], &["kube-*", "istio-system"]);
        assert!(f.watches("shop"));
        assert!(!f.watches("kube-system"));
        assert!(!f.watches("istio-system"));
        let f = filter(&["shop", "kube-public"], &["kube-*"]);
        assert!(f.watches("shop"));
        assert!(!f.watches("billing"));
        assert!(!f.watches("kube-public"), "exclusion wins");
        assert!(filter(&[], &[]).watches("anything"));
    }

    #[test]
    fn a_resolved_tag_is_trusted_for_its_ttl_only() {
        let tags = TagCache::new(Duration::from_millis(50));
        tags.insert("r/app:1".into(), "sha256:aa".into());
        assert_eq!(tags.get("r/app:1").as_deref(), Some("sha256:aa"));
        assert_eq!(tags.get("r/app:2"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(tags.get("r/app:1"), None, "expired");
        tags.insert("r/app:1".into(), "sha256:bb".into());
        assert_eq!(
            tags.get("r/app:1").as_deref(),
            Some("sha256:bb"),
            "moved tag"
        );
    }

    #[test]
    fn an_invalid_exclusion_glob_is_an_error_naming_it() {
        let err = NamespaceFilter::new(&config(&[], &["team-[a"]))
            .err()
            .expect("invalid glob");
        assert!(
            err.to_string().contains("--exclude-namespaces team-[a"),
            "{err}"
        );
    }
}

//! The operator: Pods in, `ImageReport`s and metrics out.
//!
//! Watches Pods (and the ReplicaSets, Jobs and Nodes needed to understand them), groups them by
//! workload, and for each workload analyzes every container's exact image — each distinct
//! manifest once, layers shared across images — then writes one report next to the workload
//! with server-side apply. Work is keyed by workload and deduplicated: a burst of Pod events for
//! one Deployment is one reconcile.
//!
//! A Pod event, followed: `watch` resolves the Pod to its workload (`workload`, `index`) and
//! pushes it onto the `queue`; `run`'s workers take it to `reconcile`, which picks the Pod that
//! stands for the workload, has `analyze` find each container's findings (cached in `images`),
//! makes the status (`status`), sets the gauges (`crate::metrics`) and, when the status changed,
//! writes the report and its Event (`publish`). Before `analyze` uses any findings, `access`
//! proves the workload could pull the image itself; an image whose analysis failed waits out a
//! backoff in `failures`. `context` holds what reconciles share; `seed` reads existing reports
//! back at start; `gone` tells workloads without Pods that they were deleted; `server` answers
//! `/metrics` and the probes.
//!
//! With leader election (`leader`), only the leader runs the watches and workers, and every
//! write checks its `Leadership` right before it is sent (`publish`): a leader whose renew
//! deadline passed writes nothing more, and `run` returns `LeaderLost` so the process exits and
//! restarts as a standby. On SIGTERM the leader stops writing and releases the Lease first.

pub mod access;
pub mod analyze;
pub mod context;
pub mod failures;
pub mod fleet;
pub mod gone;
pub mod growth;
pub mod images;
pub mod index;
pub mod leader;
pub mod namespaces;
pub mod publish;
pub mod queue;
pub mod reconcile;
pub mod seed;
pub mod server;
pub mod slim;
pub mod status;
pub mod tags;
pub mod watch;
pub mod workload;

pub use seed::list_reports;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::{Client, Resource};
use tokio::task::JoinSet;

use crate::analysis::LayerLimits;
use crate::metrics::Metrics;
use crate::registry::{Keyring, Platform, RegistryOptions};
use crate::report::crd::ImageReport;
use context::Context;
use namespaces::NamespaceFilter;
use queue::{Backoff, Queue};
use reconcile::Action;
use server::Readiness;
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
    /// Index eStargz and zstd:chunked layers from their tables of contents (`--no-lazy`: off).
    pub lazy: bool,
    /// The longest one image analysis may take before it counts as a transient failure.
    pub analysis_timeout: Duration,
    /// Leader election; `None` runs without (a single replica).
    pub lease: Option<leader::LeaseConfig>,
    /// This replica's name (the Pod's), in leases and as the reporting instance of its Events.
    pub identity: String,
    /// First retry delay after a failed analysis (doubles up to ten times that; see `queue`).
    pub retry: Duration,
    /// Bytes of layer indexes kept for images that share layers.
    pub layer_cache_bytes: usize,
    /// When the fleet view is computed, and how long an unused image keeps its cluster report.
    pub fleet: fleet::FleetConfig,
    /// A container's pull size growing by more than this share (0.1 = 10%) when its image
    /// changes makes an `ImageGrew` Event (see `growth`).
    pub growth_threshold: f64,
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

/// Runs the operator until `shutdown` completes (then `Ok`: a leader first stops writing and
/// releases its Lease), or until it fails or loses leadership (then the error; the process exits
/// and, restarted, stands by).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), OperatorError> {
    let namespaces = NamespaceFilter::new(&config.namespaces, &config.exclude_namespaces)?;
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let readiness = server::start(config.metrics_addr, metrics.clone()).await?;
    let elector = config
        .lease
        .clone()
        .map(|lease| Arc::new(leader::Elector::new(client.clone(), lease)));
    let operate = operate(
        client,
        config,
        metrics,
        namespaces,
        &readiness,
        elector.clone(),
    );
    tokio::select! {
        result = operate => result,
        () = shutdown => {
            if let Some(e) = elector {
                e.release().await;
            }
            Ok(())
        }
    }
}

async fn operate(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    namespaces: NamespaceFilter,
    readiness: &Readiness,
    elector: Option<Arc<leader::Elector>>,
) -> Result<(), OperatorError> {
    if let Some(e) = &elector {
        lead(e, readiness).await;
    }
    let (mut ctx, stores) = Context::new(client, config, metrics, namespaces)?;
    if let Some(e) = &elector {
        ctx.leadership = e.leadership();
    }
    let ctx = Arc::new(ctx);
    let mut tasks = JoinSet::new();
    watch::owners_and_nodes(
        &ctx,
        stores.replicasets,
        stores.jobs,
        stores.nodes,
        &readiness.watches,
        &mut tasks,
    )
    .await?;
    reconcile::seed_from_reports(&ctx).await?;
    let work = Arc::new(Queue::new(Backoff::new(ctx.config.retry)));
    watch::pods(&ctx, stores.pods, &work, &readiness.watches, &mut tasks).await?;
    readiness.set(true);
    tracing::info!("watching pods");
    tasks.spawn(gone::follow_report_deletions(ctx.clone(), work.clone()));
    tasks.spawn(reconcile_workloads(ctx.clone(), work));
    tasks.spawn(fleet::maintain(ctx.clone()));
    tasks.spawn(prune_unused_images(ctx));
    until_stopped(elector, tasks).await
}

/// Waits until this replica leads; standing by counts as ready (the replica is healthy, only not
/// the writer).
async fn lead(elector: &leader::Elector, readiness: &Readiness) {
    readiness.set(true);
    elector.acquire().await;
    readiness.set(false);
}

/// Takes workloads off the queue and reconciles each at once (see `queue` for why there is no
/// worker pool); after each, requeues it as the reconcile asks.
async fn reconcile_workloads(ctx: Arc<Context>, work: Arc<Queue<Workload>>) {
    loop {
        let w = work.next().await;
        let (ctx, work) = (ctx.clone(), work.clone());
        tokio::spawn(async move {
            let action = reconcile::reconcile(&ctx, &w).await;
            work.done(&w);
            match action {
                Action::Await => work.forget(&w),
                Action::RequeueAfter(delay) => work.push_after(w, delay),
                Action::Retry => {
                    work.retry(w);
                }
            }
        });
    }
}

/// Drops, every `IMAGE_PRUNE_INTERVAL`, the findings of images no workload has used for as long,
/// expired proofs of access, and failures nobody asked about for a long time.
async fn prune_unused_images(ctx: Arc<Context>) {
    let images = &ctx.images;
    let mut every = tokio::time::interval(IMAGE_PRUNE_INTERVAL);
    loop {
        every.tick().await;
        let dropped = images.findings.prune(IMAGE_PRUNE_INTERVAL);
        if dropped > 0 {
            tracing::debug!(
                dropped,
                kept = images.findings.len(),
                "findings of unused images dropped"
            );
        }
        images.access.prune();
        images.failures.prune();
        ctx.metrics.backoff_images.set(images.failures.len() as i64);
    }
}

/// Runs until leadership is lost or, without election, until a watch stops.
async fn until_stopped(
    elector: Option<Arc<leader::Elector>>,
    mut tasks: JoinSet<()>,
) -> Result<(), OperatorError> {
    match elector {
        Some(e) => Err(OperatorError::LeaderLost(e.hold().await)),
        None => {
            tasks.join_next().await;
            Err(OperatorError::Setup("a watch stopped".into()))
        }
    }
}

/// The API version of reports (`imagebloat.dev/v1alpha1`).
pub fn report_api_version() -> String {
    ImageReport::api_version(&()).to_string()
}

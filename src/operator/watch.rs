//! The watches: caches of the owners and Nodes a reconcile reads, and the Pod watch that turns
//! Pod events into workload keys on the work queue.
//!
//! Every watch retries on its own (with backoff); each error is logged with the resource and
//! counted in `WatchHealth`, which `/readyz` reads (see `server`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::task::JoinSet;

use super::context::Context;
use super::queue::{Backoff, Queue};
use super::server::WatchHealth;
use super::workload::{Unresolved, Workload};
use super::{OperatorError, slim};

/// How long before a Pod whose owner is not cached yet is looked at again.
const OWNER_WAIT: Duration = Duration::from_secs(1);

fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

/// Starts the ReplicaSet, Job and Node watches on `tasks`; returns once their caches are filled.
pub async fn owners_and_nodes(
    ctx: &Context,
    replicasets: Writer<PartialObjectMeta<ReplicaSet>>,
    jobs: Writer<PartialObjectMeta<Job>>,
    nodes: Writer<Node>,
    health: &WatchHealth,
    tasks: &mut JoinSet<()>,
) -> Result<(), OperatorError> {
    tasks.spawn(owner_cache(&ctx.client, replicasets, "replicasets", health));
    tasks.spawn(owner_cache(&ctx.client, jobs, "jobs", health));
    tasks.spawn(follow_errors(
        "nodes",
        health.clone(),
        watcher(Api::<Node>::all(ctx.client.clone()), watch_config())
            .default_backoff()
            .modify(slim::node)
            .reflect(nodes),
    ));
    tokio::try_join!(
        ctx.cluster.replicasets.wait_until_ready(),
        ctx.cluster.jobs.wait_until_ready(),
        ctx.cluster.nodes.wait_until_ready(),
    )
    .map_err(|e| OperatorError::Setup(format!("watch caches: {e}")))?;
    Ok(())
}

/// Keeps a metadata-only cache of `K` (ReplicaSets, Jobs): their owner references are all the
/// controller reads, so the API server sends nothing else.
fn owner_cache<K>(
    client: &Client,
    writer: Writer<PartialObjectMeta<K>>,
    resource: &'static str,
    health: &WatchHealth,
) -> impl Future<Output = ()> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    follow_errors(
        resource,
        health.clone(),
        watcher(
            Api::<PartialObjectMeta<K>>::all(client.clone()),
            watch_config(),
        )
        .default_backoff()
        .modify(|o| slim::meta(&mut o.metadata))
        .reflect(writer),
    )
}

/// Runs a cache's watch (the reflector does the work), logging its errors with `resource` and
/// telling `health` whether it works.
async fn follow_errors<S, K>(resource: &'static str, health: WatchHealth, stream: S)
where
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut stream = Box::pin(stream);
    while let Some(event) = stream.next().await {
        watched(resource, &health, event.as_ref().err());
    }
}

/// Logs a watch's error with its resource, and tells `health`.
fn watched(resource: &'static str, health: &WatchHealth, error: Option<&watcher::Error>) {
    match error {
        Some(e) => {
            tracing::warn!(resource, error = %e, "watch error; retrying");
            health.failed(resource);
        }
        None => health.works(resource),
    }
}

/// Starts the Pod watch on `tasks`, pushing the workload of every Pod event onto `work`; returns
/// once the Pod cache is filled.
pub async fn pods(
    ctx: &Arc<Context>,
    writer: Writer<Pod>,
    work: &Arc<Queue<Workload>>,
    health: &WatchHealth,
    tasks: &mut JoinSet<()>,
) -> Result<(), OperatorError> {
    let events = Arc::new(PodEvents {
        ctx: ctx.clone(),
        work: work.clone(),
        health: health.clone(),
        owner_pending: Queue::new(Backoff::new(OWNER_WAIT)),
    });
    let api: Api<Pod> = match ctx.config.namespaces.as_slice() {
        [one] => Api::namespaced(ctx.client.clone(), one),
        _ => Api::all(ctx.client.clone()),
    };
    let stream = watcher(api, watch_config())
        .default_backoff()
        .modify(slim::pod)
        .reflect(writer);
    tasks.spawn(events.clone().follow(stream));
    tasks.spawn(events.revisit_owner_pending());
    ctx.cluster
        .pods
        .wait_until_ready()
        .await
        .map_err(|e| OperatorError::Setup(e.to_string()))
}

/// Turns Pod events into workload keys.
struct PodEvents {
    ctx: Arc<Context>,
    work: Arc<Queue<Workload>>,
    health: WatchHealth,
    /// Pods whose owner was not cached yet when their event came, to look at again shortly.
    owner_pending: Queue<ObjectRef<Pod>>,
}

impl PodEvents {
    async fn follow<S>(self: Arc<Self>, stream: S)
    where
        S: futures_util::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Send,
    {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            watched("pods", &self.health, event.as_ref().err());
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    self.pod_changed(&pod, false)
                }
                Ok(watcher::Event::Delete(pod)) => self.pod_changed(&pod, true),
                Ok(watcher::Event::InitDone) => self.relisted(),
                Ok(watcher::Event::Init) | Err(_) => {}
            }
        }
    }

    /// After a (re)list: Pods deleted while the watch was down left no event.
    fn relisted(&self) {
        let cluster = &self.ctx.cluster;
        let live: HashSet<String> = cluster
            .pods
            .state()
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let gone = cluster.index().retain_live(&live);
        gone.into_iter().for_each(|w| self.work.push(w));
    }

    fn pod_changed(&self, pod: &Pod, deleted: bool) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        if !self.ctx.cluster.namespaces.watches(namespace) {
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let cluster = &self.ctx.cluster;
        if deleted {
            // The owner chain may already be gone: use what the Pod resolved to while it lived.
            let known = cluster.index().remove(&uid);
            if let Some(w) = known.or_else(|| cluster.workload_of(pod).ok()) {
                self.work.push(w);
            }
            return;
        }
        match cluster.workload_of(pod) {
            Ok(w) => {
                cluster
                    .index()
                    .insert(uid, w.clone(), ObjectRef::from_obj(pod));
                self.work.push(w);
            }
            Err(Unresolved::Missing { kind, name }) => {
                // The owner's watch has not delivered it yet: look again shortly.
                tracing::debug!(kind, name, "owner not cached yet");
                self.owner_pending
                    .push_after(ObjectRef::from_obj(pod), OWNER_WAIT);
            }
            Err(Unresolved::Incomplete) => {}
        }
    }

    /// Looks again at Pods whose owner was missing, as long as they exist.
    async fn revisit_owner_pending(self: Arc<Self>) {
        loop {
            let pod_ref = self.owner_pending.next().await;
            if let Some(pod) = self.ctx.cluster.pods.get(&pod_ref) {
                self.pod_changed(&pod, false);
            }
            self.owner_pending.done(&pod_ref);
        }
    }
}

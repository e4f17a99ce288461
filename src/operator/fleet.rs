//! The fleet view in the operator: what each workload runs, gathered as it is reconciled; the
//! `ClusterImageReport`s and the fleet gauges computed from it (`crate::fleet`) and written.
//!
//! Writes are bounded by changes, not by Pod events: reconciles only mark the view stale; it is
//! computed again once no reconcile changed it for a whole `--fleet-interval-seconds` (so a burst
//! of reconciles, as at start, is one computation), or at the latest after `QUIET_WAIT_INTERVALS`
//! intervals under constant churn; and a report is applied only when its content differs from
//! what was last written (a hash per report). Cluster-scoped reports
//! have no namespaced owner to be garbage-collected with, so a report whose image no workload
//! runs any more is deleted here, once it has stayed unused for `--cluster-report-grace-seconds`
//! (an image that comes back within the grace keeps its report). Reports found at start are
//! remembered the same way: a restart rewrites nothing unchanged and deletes what is no longer
//! used, after the grace.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::context::{Context, ReportKey};
use super::publish::MANAGER;
use super::workload::Workload;
use crate::fleet::{self, FleetInput, ImageFacts, ImageReportParts, WorkloadRun};
use crate::report::ImageFindings;
use crate::report::cluster::{ClusterImageReport, WorkloadName};

/// Under constant churn, the view is computed at least once per this many intervals.
const QUIET_WAIT_INTERVALS: u32 = 5;

/// What each workload runs, as its last reconcile found it.
pub struct FleetState {
    inner: Mutex<Runs>,
    stale: AtomicBool,
    /// When a reconcile last marked the view stale.
    changed: Mutex<Instant>,
}

impl Default for FleetState {
    fn default() -> Self {
        FleetState {
            inner: Mutex::default(),
            stale: AtomicBool::new(false),
            changed: Mutex::new(Instant::now()),
        }
    }
}

#[derive(Default)]
struct Runs {
    /// Workload -> (the workload, the manifest digests of its analyzed images).
    workloads: HashMap<ReportKey, (Workload, BTreeSet<String>)>,
    /// Facts by manifest digest, kept once however many workloads run the image.
    images: HashMap<String, Arc<ImageFacts>>,
}

impl FleetState {
    /// Records the images a workload's containers run (those analyzed), and marks the view
    /// stale.
    pub fn record<'a>(
        &self,
        key: ReportKey,
        w: &Workload,
        findings: impl Iterator<Item = &'a ImageFindings>,
    ) {
        let mut runs = self.runs();
        let mut digests = BTreeSet::new();
        for f in findings {
            digests.insert(f.digest.clone());
            if !runs.images.contains_key(&f.digest) {
                runs.images
                    .insert(f.digest.clone(), Arc::new(ImageFacts::of(f)));
            }
        }
        runs.workloads.insert(key, (w.clone(), digests));
        drop(runs);
        self.mark_stale();
    }

    /// Forgets a workload that is gone.
    pub fn forget(&self, key: &ReportKey) {
        self.runs().workloads.remove(key);
        self.mark_stale();
    }

    pub fn mark_stale(&self) {
        *self.changed.lock().expect("fleet clock lock") = Instant::now();
        self.stale.store(true, Ordering::Relaxed);
    }

    fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// Whether the view is due: stale and quiet for `quiet` (no change since), or stale and
    /// last computed `overdue` ago. Takes the stale mark when due.
    fn take_due(&self, quiet: Duration, since_computed: Duration, overdue: Duration) -> bool {
        if !self.stale.load(Ordering::Relaxed) {
            return false;
        }
        let changed = *self.changed.lock().expect("fleet clock lock");
        let due = changed.elapsed() >= quiet || since_computed >= overdue;
        due && self.stale.swap(false, Ordering::Relaxed)
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.inner.lock().expect("fleet lock")
    }

    /// The input of the fleet computation, each workload on the Nodes `nodes_of` gives; drops
    /// the facts of images no workload runs any more.
    fn input(&self, nodes_of: impl Fn(&Workload) -> BTreeSet<String>) -> FleetInput {
        let mut runs = self.runs();
        let used: BTreeSet<&String> = runs.workloads.values().flat_map(|(_, d)| d).collect();
        let unused: Vec<String> = runs
            .images
            .keys()
            .filter(|d| !used.contains(d))
            .cloned()
            .collect();
        for d in unused {
            runs.images.remove(&d);
        }
        FleetInput {
            images: runs
                .images
                .iter()
                .map(|(d, f)| (d.clone(), f.clone()))
                .collect(),
            workloads: runs
                .workloads
                .values()
                .map(|(w, images)| WorkloadRun {
                    name: WorkloadName {
                        namespace: w.namespace.clone(),
                        kind: w.kind.clone(),
                        name: w.name.clone(),
                    },
                    images: images.clone(),
                    nodes: nodes_of(w),
                })
                .collect(),
        }
    }
}

/// When the view is computed and when unused reports go.
#[derive(Debug, Clone, Copy)]
pub struct FleetConfig {
    /// At most one computation (and round of writes) per interval.
    pub interval: Duration,
    /// How long an image no workload runs keeps its report.
    pub grace: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            interval: Duration::from_secs(10),
            grace: Duration::from_secs(900),
        }
    }
}

/// The reports this replica knows of: the hash of what each holds, and since when it is unused.
#[derive(Default)]
struct Written {
    hashes: HashMap<String, u64>,
    unused_since: HashMap<String, Instant>,
}

/// Keeps the fleet gauges and the cluster reports up to date, until the operator stops.
pub async fn maintain(ctx: Arc<Context>) {
    let api: Api<ClusterImageReport> = Api::all(ctx.client.clone());
    let mut written = existing_reports(&api).await;
    let interval = ctx.config.fleet.interval;
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut computed = Instant::now();
    loop {
        every.tick().await;
        let due = ctx.fleet.take_due(
            interval,
            computed.elapsed(),
            interval * QUIET_WAIT_INTERVALS,
        );
        // Deletions only on an up-to-date view (just computed, or nothing changed since): an
        // image used again in the meantime keeps its report.
        if due {
            computed = Instant::now();
            refresh(&ctx, &api, &mut written).await;
            delete_unused(&ctx, &api, &mut written).await;
        } else if !written.unused_since.is_empty() && !ctx.fleet.is_stale() {
            delete_unused(&ctx, &api, &mut written).await;
        }
    }
}

/// Computes the view, sets the gauges, applies the reports that changed and marks those the view
/// no longer has as unused.
async fn refresh(ctx: &Context, api: &Api<ClusterImageReport>, written: &mut Written) {
    let input = ctx.fleet.input(|w| nodes_of(ctx, w));
    let view = fleet::compute(&input);
    ctx.metrics.fleet.computations.inc();
    ctx.metrics.fleet.set(&view);
    let mut current = BTreeSet::new();
    for parts in view.reports.values() {
        let name = fleet::report_name(&parts.spec.image, &parts.spec.digest);
        written.unused_since.remove(&name);
        current.insert(name.clone());
        let hash = content_hash(parts);
        if written.hashes.get(&name) == Some(&hash) {
            continue;
        }
        match apply(ctx, api, &name, parts).await {
            Ok(()) => {
                written.hashes.insert(name, hash);
            }
            Err(e) => {
                tracing::warn!(report = %name, image = %parts.spec.image, error = %e, "cannot write cluster image report");
                ctx.fleet.mark_stale();
            }
        }
    }
    let now = Instant::now();
    for name in written.hashes.keys() {
        if !current.contains(name) {
            written.unused_since.entry(name.clone()).or_insert(now);
        }
    }
}

/// The Nodes the workload's live Pods are bound to.
fn nodes_of(ctx: &Context, w: &Workload) -> BTreeSet<String> {
    ctx.cluster
        .pods_of(w)
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect()
}

/// Reports already in the cluster, with the hash of their content (so an unchanged one is not
/// written again) and unused from now on until the view names them.
async fn existing_reports(api: &Api<ClusterImageReport>) -> Written {
    let mut written = Written::default();
    let now = Instant::now();
    let mut params = ListParams::default().limit(100);
    loop {
        let list = match api.list(&params).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list cluster image reports; unchanged ones are written again");
                return written;
            }
        };
        for r in list.items {
            let Some(name) = r.metadata.name.clone() else {
                continue;
            };
            if let Some(status) = r.status {
                let parts = ImageReportParts {
                    spec: r.spec,
                    status,
                };
                written.hashes.insert(name.clone(), content_hash(&parts));
            } else {
                written.hashes.insert(name.clone(), 0);
            }
            written.unused_since.insert(name, now);
        }
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return written,
        }
    }
}

/// A hash of a report's content, as JSON (so a report read back hashes as the one written).
fn content_hash(parts: &ImageReportParts) -> u64 {
    let value = json!({"spec": parts.spec, "status": parts.status});
    let mut h = DefaultHasher::new();
    value.to_string().hash(&mut h);
    h.finish()
}

/// Server-side apply of the report (the object, then its status).
async fn apply(
    ctx: &Context,
    api: &Api<ClusterImageReport>,
    name: &str,
    parts: &ImageReportParts,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(MANAGER).force();
    let mut report = ClusterImageReport::new(name, parts.spec.clone());
    report.metadata.labels = Some(
        [(
            "app.kubernetes.io/managed-by".to_string(),
            "imagebloat".to_string(),
        )]
        .into(),
    );
    let result = async {
        still_leader(ctx)?;
        api.patch(name, &params, &Patch::Apply(&report)).await?;
        let body = json!({
            "apiVersion": crate::operator::report_api_version(),
            "kind": "ClusterImageReport",
            "status": parts.status,
        });
        still_leader(ctx)?;
        api.patch_status(name, &params, &Patch::Apply(&body)).await
    }
    .await;
    count(ctx, result.is_ok());
    result.map(drop)
}

/// Deletes the reports unused for the whole grace (a report already gone counts as deleted).
async fn delete_unused(ctx: &Context, api: &Api<ClusterImageReport>, written: &mut Written) {
    let grace = ctx.config.fleet.grace;
    let due: Vec<String> = written
        .unused_since
        .iter()
        .filter(|(_, since)| since.elapsed() >= grace)
        .map(|(name, _)| name.clone())
        .collect();
    for name in due {
        if still_leader(ctx).is_err() {
            return;
        }
        let result = match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                ctx.metrics.fleet.cluster_reports_deleted.inc();
                tracing::info!(report = %name, "no workload runs the image any more: cluster image report deleted");
                written.unused_since.remove(&name);
                written.hashes.remove(&name);
            }
            Err(e) => {
                tracing::warn!(report = %name, error = %e, "cannot delete cluster image report")
            }
        }
    }
}

fn count(ctx: &Context, ok: bool) {
    ctx.metrics
        .fleet
        .cluster_reports_written
        .with_label_values(&[if ok { "success" } else { "error" }])
        .inc();
}

fn still_leader(ctx: &Context) -> Result<(), kube::Error> {
    if ctx.leadership.holds() {
        Ok(())
    } else {
        Err(kube::Error::Service(
            "not the leader any more: write skipped".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(digest: &str) -> ImageFindings {
        serde_json::from_value(json!({
            "image": format!("r/{digest}:1"), "digest": digest, "platform": "linux/amd64",
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "analyzerVersion": "1",
            "pullBytes": 10, "sizeBytes": 20, "finalBytes": 20, "wastedBytes": 0,
            "reclaimableBytes": 0, "reclaimablePullBytes": 0, "efficiency": 1.0,
            "junkBytes": 0, "layers": [], "hiddenFileCount": 0, "hiddenFiles": [],
            "categories": [], "recommendations": [], "notes": []
        }))
        .expect("valid findings")
    }

    fn workload(name: &str) -> Workload {
        Workload {
            namespace: "shop".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    #[test]
    fn an_image_is_kept_once_while_a_workload_runs_it() {
        let state = FleetState::default();
        let (a, b) = (findings("sha256:a"), findings("sha256:b"));
        let key = |n: &str| ("shop".to_string(), format!("Deployment/uid-{n}"));
        state.record(key("web"), &workload("web"), [&a, &b].into_iter());
        state.record(key("api"), &workload("api"), [&a].into_iter());
        let (zero, long) = (Duration::ZERO, Duration::from_secs(3600));
        assert!(!state.take_due(long, zero, long), "changed just now");
        assert!(state.take_due(long, long, long), "overdue under churn");
        assert!(!state.take_due(zero, zero, long), "taken once");
        let input = state.input(|_| BTreeSet::from(["n1".to_string()]));
        assert_eq!(input.images.len(), 2);
        assert_eq!(input.workloads.len(), 2);
        state.forget(&key("web"));
        assert!(
            state.take_due(Duration::ZERO, Duration::ZERO, long),
            "quiet"
        );
        let input = state.input(|_| BTreeSet::new());
        assert_eq!(
            input.images.keys().collect::<Vec<_>>(),
            ["sha256:a"],
            "b is run by no one"
        );
    }

    #[test]
    fn a_report_read_back_hashes_as_the_one_written() {
        let input = FleetInput {
            images: [(
                "sha256:a".to_string(),
                Arc::new(ImageFacts::of(&findings("sha256:a"))),
            )]
            .into(),
            workloads: vec![WorkloadRun {
                name: WorkloadName {
                    namespace: "shop".into(),
                    kind: "Deployment".into(),
                    name: "web".into(),
                },
                images: ["sha256:a".to_string()].into(),
                nodes: ["n1".to_string()].into(),
            }],
        };
        let parts = fleet::compute(&input).reports["sha256:a"].clone();
        let stored: ClusterImageReport = serde_json::from_value(json!({
            "apiVersion": "imagebloat.dev/v1alpha1", "kind": "ClusterImageReport",
            "metadata": {"name": "a"},
            "spec": parts.spec, "status": parts.status,
        }))
        .unwrap();
        let read_back = ImageReportParts {
            spec: stored.spec,
            status: stored.status.unwrap(),
        };
        assert_eq!(content_hash(&read_back), content_hash(&parts));
    }
}

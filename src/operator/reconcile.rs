//! One workload's reconcile: its Pods' containers → their images' findings → its report, Event
//! and metrics.
//!
//! Read top to bottom, `reconcile_workload` is the whole story: pick the Pod that stands for the
//! workload, its platform, the containers and the digests they run, analyze them, make the
//! status, set the gauges, and write the report and its Event when the status changed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

use super::analyze::{self, PullCredentials, Unanalyzed};
use super::context::{Context, ReportKey, report_key};
use super::status::{self, FailedContainer};
use super::workload::{Workload, digest_from_image_id};
use super::{growth, publish};
use crate::metrics::{ContainerSeries, WorkloadLabels};
use crate::registry::{Platform, Reference};
use crate::report::crd::{ContainerReport, ImageReportStatus};

pub use super::seed::seed_from_reports;

/// What the work queue does with a workload after its reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next Pod event; past failures are forgotten.
    Await,
    /// Look again after this long (a Pod not scheduled yet, an image's backoff running out).
    RequeueAfter(Duration),
    /// Something failed that may pass: try again after the workload's next backoff delay.
    Retry,
}

/// Reconciles one workload; a failed API call is logged, counted and retried.
pub async fn reconcile(ctx: &Arc<Context>, w: &Workload) -> Action {
    match reconcile_workload(ctx, w).await {
        Ok(action) => action,
        Err(e) => {
            tracing::warn!(namespace = %w.namespace, workload = %w.name, error = %e, "reconcile failed");
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[error_reason(&e)])
                .inc();
            Action::Retry
        }
    }
}

fn error_reason(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 404 => "NotFound",
        kube::Error::Api(s) if s.code == 403 => "Forbidden",
        kube::Error::Api(s) if s.code == 409 => "Conflict",
        kube::Error::Api(_) => "ApiError",
        _ => "ClientError",
    }
}

async fn reconcile_workload(ctx: &Context, w: &Workload) -> Result<Action, kube::Error> {
    let pods = ctx.cluster.pods_of(w);
    let Some(pod) = representative_pod(&pods) else {
        return Ok(without_pods(ctx, w).await);
    };
    if let Some(wait) = wait_for_scheduling(&pod, Timestamp::now()) {
        // A Pod is normally bound within moments, and only then is its platform known: a report
        // for the default platform now could name the wrong manifest of a multi-arch image.
        tracing::debug!(namespace = %w.namespace, workload = %w.name, "no Pod scheduled yet");
        return Ok(Action::RequeueAfter(wait));
    }
    let platform = ctx
        .cluster
        .node_of(&pod)
        .and_then(|node| node_platform(&node))
        .unwrap_or_else(|| ctx.config.default_platform.clone());
    let wanted = wanted_containers(&pod, &pods);
    // Before any request, so that the registry metrics name these registries.
    ctx.metrics
        .set_registries(&labels(w), registries_of(ctx, &wanted));
    let outcome = analyze_containers(ctx, &pod, &wanted, &platform).await;

    let key = report_key(&w.namespace, &w.kind, &w.uid);
    ctx.images.findings.used_by(key.clone(), outcome.used);
    ctx.fleet.record(
        key.clone(),
        w,
        outcome
            .containers
            .iter()
            .filter_map(|c| c.findings.as_ref()),
    );
    let previous = ctx.written.get(&key);
    let mut containers = outcome.containers;
    let changes = growth::track(&mut containers, previous.as_ref(), Timestamp::now());
    let status = status::new_status(
        containers,
        &outcome.failed,
        previous.as_ref(),
        Timestamp::now(),
    );
    ctx.metrics
        .set_workload(&labels(w), &container_series(&wanted, &status));
    if previous.as_ref() != Some(&status) {
        publish::write_report(ctx, w, &status).await?;
        publish::publish_event(ctx, w, &status, &outcome.failed).await;
        growth::publish(ctx, w, &changes).await;
        ctx.written.insert(key, status);
    }

    Ok(after_failures(&outcome.failed, &outcome.retry_in))
}

/// What to do after a reconcile whose failed containers are `failed`, `retry_in` giving for
/// each whether its image waits out a backoff (see `failures`) and how long: failures that may
/// pass are retried — when an image's backoff says, or else on the workload's own backoff —,
/// the others wait for the next Pod event.
fn after_failures(failed: &[FailedContainer], retry_in: &[Option<Duration>]) -> Action {
    let transient = || {
        failed
            .iter()
            .zip(retry_in)
            .filter(|(f, _)| f.failure.transient)
    };
    if transient().any(|(_, r)| r.is_none()) {
        return Action::Retry;
    }
    match transient().filter_map(|(_, r)| *r).min() {
        Some(due) => Action::RequeueAfter(due),
        None => Action::Await,
    }
}

fn labels(w: &Workload) -> WorkloadLabels {
    WorkloadLabels {
        namespace: w.namespace.clone(),
        kind: w.kind.clone(),
        name: w.name.clone(),
        uid: w.uid.clone(),
    }
}

/// The registries the operator contacts for these containers (a mirror instead of the registry
/// it stands for), as the registry client names them in metrics.
fn registries_of(ctx: &Context, wanted: &[WantedContainer]) -> Vec<String> {
    wanted
        .iter()
        .filter_map(|c| c.image.parse::<Reference>().ok())
        .map(|r| analyze::pull_from(ctx, &r).resolve_registry().to_string())
        .collect()
}

/// The Pod that stands for the workload: the newest scheduled one (during a rollout, the new
/// template once it runs somewhere), whose Node tells the platform; only when none is scheduled,
/// the newest.
fn representative_pod(pods: &[Arc<Pod>]) -> Option<Arc<Pod>> {
    let created = |p: &&Arc<Pod>| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    pods.iter()
        .filter(|p| scheduled(p))
        .max_by_key(created)
        .or_else(|| pods.iter().max_by_key(created))
        .cloned()
}

/// A workload without live Pods: if it still exists (scaled to zero, or its Pods are being
/// replaced), nothing until a Pod event wakes it, or its report's deletion tells it is gone
/// (`gone`); if it is gone, forget its series, status and images.
async fn without_pods(ctx: &Context, w: &Workload) -> Action {
    if !workload_exists(ctx, w).await {
        forget(ctx, w);
    }
    Action::Await
}

/// Forgets everything kept for a workload that is gone. Its series go only if they are still its
/// own: a workload recreated under the same name (a new uid) keeps the series it set.
pub fn forget(ctx: &Context, w: &Workload) {
    let key: ReportKey = report_key(&w.namespace, &w.kind, &w.uid);
    ctx.metrics.remove_workload(&labels(w));
    ctx.written.remove(&key);
    ctx.images.findings.release(&key);
    ctx.fleet.forget(&key);
    tracing::info!(namespace = %w.namespace, workload = %w.name, kind = %w.kind, "workload gone; its series are removed");
}

/// A container of the representative Pod and the image it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WantedContainer {
    name: String,
    init: bool,
    /// The image as the Pod names it.
    image: String,
    /// The digest a kubelet reports it runs, if one does yet.
    digest: Option<String>,
}

/// The representative Pod's init containers, then its containers, with the digests they run.
fn wanted_containers(pod: &Pod, pods: &[Arc<Pod>]) -> Vec<WantedContainer> {
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.unwrap_or_default();
    init.into_iter()
        .map(|c| (c, true))
        .chain(spec.containers.into_iter().map(|c| (c, false)))
        .map(|(c, init)| {
            let image = c.image.unwrap_or_default();
            let digest = reported_digest(pods, init, &c.name, &image);
            WantedContainer {
                name: c.name,
                init,
                image,
                digest,
            }
        })
        .collect()
}

/// The digest the container `name` (an init container if `init`) runs `image` as, from the first
/// of `pods` whose kubelet reported one for a container of that name and image: from the
/// representative Pod or, when it has none yet (just created), from a sibling running the same
/// image. No registry round trip for the tag. A status whose `image` names another image than
/// the spec (a Pod's image changed in place, the kubelet has not restarted the container yet)
/// still reports the old image's digest: it is not used.
fn reported_digest(pods: &[Arc<Pod>], init: bool, name: &str, image: &str) -> Option<String> {
    pods.iter().find_map(|p| {
        let runs_image = containers_of(p, init)
            .iter()
            .any(|c| c.name == name && c.image.as_deref() == Some(image));
        let status = statuses_of(p, init).iter().find(|s| s.name == name)?;
        let digest = digest_from_image_id(&status.image_id)?;
        (runs_image && may_be_the_same_image(image, &status.image)).then(|| digest.to_string())
    })
}

/// Whether a container status's `image` may be the spec's `image`: false only when both parse
/// as references and name another registry or repository, another tag (neither pinned by
/// digest) or another digest. Runtimes write the name normalised (`docker.io/library/nginx:latest`
/// for `nginx`) or, for some, an image ID: anything that does not parse is given the benefit of
/// the doubt.
fn may_be_the_same_image(spec: &str, status: &str) -> bool {
    // An image ID (`sha256:…`) would parse as the repository `sha256`.
    if status.is_empty() || status.starts_with("sha256:") {
        return true;
    }
    let (Ok(a), Ok(b)) = (spec.parse::<Reference>(), status.parse::<Reference>()) else {
        return true;
    };
    if a.registry() != b.registry() || a.repository() != b.repository() {
        return false;
    }
    match (a.digest(), b.digest()) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.tag() == b.tag(),
        _ => true,
    }
}

fn containers_of(pod: &Pod, init: bool) -> &[Container] {
    let Some(spec) = &pod.spec else { return &[] };
    if init {
        spec.init_containers.as_deref().unwrap_or_default()
    } else {
        &spec.containers
    }
}

fn statuses_of(pod: &Pod, init: bool) -> &[ContainerStatus] {
    let Some(status) = &pod.status else {
        return &[];
    };
    let statuses = if init {
        &status.init_container_statuses
    } else {
        &status.container_statuses
    };
    statuses.as_deref().unwrap_or_default()
}

/// What analyzing a workload's containers gave: each one's entry in the report, the failed ones,
/// and the image keys the workload uses.
struct ContainersOutcome {
    containers: Vec<ContainerReport>,
    failed: Vec<FailedContainer>,
    /// For each of `failed`: how long until its image's next attempt, if it waits out a backoff.
    retry_in: Vec<Option<Duration>>,
    used: Vec<String>,
}

/// Analyzes every wanted container's image at once (each distinct image once).
async fn analyze_containers(
    ctx: &Context,
    pod: &Pod,
    wanted: &[WantedContainer],
    platform: &Platform,
) -> ContainersOutcome {
    let credentials = PullCredentials::new(ctx, pod);
    let analyses = wanted.iter().map(|c| {
        analyze::analyze_container(ctx, &c.image, c.digest.as_deref(), platform, &credentials)
    });
    let results = futures_util::future::join_all(analyses).await;
    let mut outcome = ContainersOutcome {
        containers: Vec::with_capacity(wanted.len()),
        failed: Vec::new(),
        retry_in: Vec::new(),
        used: Vec::with_capacity(wanted.len()),
    };
    for (c, result) in wanted.iter().zip(results) {
        let mut report = ContainerReport {
            name: c.name.clone(),
            init: c.init,
            findings: None,
            error: None,
            reason: None,
            previous: None,
        };
        match result {
            Ok(analyzed) => {
                report.findings = Some((*analyzed.findings).clone());
                outcome.used.push(analyzed.key);
            }
            Err(Unanalyzed { failure, retry_in }) => {
                report.error = Some(failure.message.clone());
                report.reason = Some(failure.reason.clone());
                outcome.failed.push(FailedContainer {
                    name: c.name.clone(),
                    failure,
                });
                outcome.retry_in.push(retry_in);
            }
        }
        outcome.containers.push(report);
    }
    outcome
}

/// The gauges' view of a status: each analyzed container with the image as the Pod names it.
fn container_series<'a>(
    wanted: &'a [WantedContainer],
    status: &'a ImageReportStatus,
) -> Vec<ContainerSeries<'a>> {
    wanted
        .iter()
        .zip(&status.containers)
        .filter_map(|(c, report)| {
            let findings = report.findings.as_ref()?;
            Some(ContainerSeries {
                container: &c.name,
                image: &c.image,
                analysis: &findings.analysis,
                pull_growth_bytes: report
                    .previous
                    .as_ref()
                    .map_or(0.0, |p| p.pull_bytes_delta as f64),
            })
        })
        .collect()
}

/// How long a Pod may wait for a Node before the default platform stands in for its Node's:
/// long enough for any scheduler, short enough that a Pod that cannot be scheduled (no room,
/// no matching Node) still gets a report.
pub const SCHEDULING_GRACE: Duration = Duration::from_secs(10);

fn scheduled(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
}

/// Whether a kubelet already reported an image for any container: then no Node is coming that
/// is not already known, and waiting would only delay the report.
fn reported_running(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.container_statuses
            .iter()
            .chain(s.init_container_statuses.iter())
            .flatten()
            .any(|c| !c.image_id.is_empty())
    })
}

/// For a Pod not yet bound to a Node: how much longer to wait for it, or `None` once the grace
/// is over (then the default platform is used).
fn unscheduled_wait(pod: &Pod, now: Timestamp) -> Option<Duration> {
    let created = pod.metadata.creation_timestamp.as_ref()?.0;
    let age = now.duration_since(created);
    let age = Duration::try_from(age).unwrap_or_default();
    SCHEDULING_GRACE
        .checked_sub(age)
        .filter(|left| !left.is_zero())
}

/// How long to wait for the Pod to be scheduled, if at all: not when it is, nor when a kubelet
/// already reported an image (then no Node is coming that is not already known).
fn wait_for_scheduling(pod: &Pod, now: Timestamp) -> Option<Duration> {
    if scheduled(pod) || reported_running(pod) {
        return None;
    }
    unscheduled_wait(pod, now)
}

/// The platform of a Node: its reported OS and architecture (or their well-known labels), and
/// the variant from the `imagebloat.dev/arch-variant` label.
fn node_platform(node: &Node) -> Option<Platform> {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
    let os = info
        .map(|i| i.operating_system.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| labels.get("kubernetes.io/os").cloned())?;
    let arch = info
        .map(|i| i.architecture.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| labels.get("kubernetes.io/arch").cloned())?;
    let variant = labels
        .get("imagebloat.dev/arch-variant")
        .map(String::as_str);
    Some(Platform::new(&os, &arch, variant))
}

/// Whether the workload object still exists (with the same uid).
async fn workload_exists(ctx: &Context, w: &Workload) -> bool {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &w.namespace, &api_resource(w));
    match api.get_opt(&w.name).await {
        // Being deleted counts as gone: its Pods will not come back.
        Ok(Some(o)) => {
            o.metadata.uid.as_deref() == Some(w.uid.as_str())
                && o.metadata.deletion_timestamp.is_none()
        }
        Ok(None) => false,
        // Unknown: keep the series rather than drop live data.
        Err(_) => true,
    }
}

/// The API resource of a workload's kind at its API version: the plural from the Kubernetes
/// types for the kinds a Pod's owner chain leads to, else kube's guess from the kind.
fn api_resource(w: &Workload) -> ApiResource {
    let (group, version) = w
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", &w.api_version));
    let gvk = GroupVersionKind::gvk(group, version, &w.kind);
    let known = [
        ApiResource::erase::<Deployment>(&()),
        ApiResource::erase::<StatefulSet>(&()),
        ApiResource::erase::<DaemonSet>(&()),
        ApiResource::erase::<ReplicaSet>(&()),
        ApiResource::erase::<Job>(&()),
        ApiResource::erase::<CronJob>(&()),
        ApiResource::erase::<Pod>(&()),
    ];
    match known.iter().find(|r| r.group == group && r.kind == w.kind) {
        Some(r) => ApiResource::from_gvk_with_plural(&gvk, &r.plural),
        None => ApiResource::from_gvk(&gvk),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(created: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": created},
            "spec": {"containers": [], "nodeName": node}
        }))
        .expect("a valid Pod")
    }

    #[test]
    fn an_unscheduled_pod_is_waited_for_during_the_grace_only() {
        let now: Timestamp = "2026-11-28T10:00:10Z".parse().unwrap();
        let fresh = pod("2026-11-28T10:00:07Z", None);
        assert!(!scheduled(&fresh));
        assert_eq!(unscheduled_wait(&fresh, now), Some(Duration::from_secs(7)));
        let stuck = pod("2026-11-28T09:59:00Z", None);
        assert_eq!(
            unscheduled_wait(&stuck, now),
            None,
            "grace over: default platform"
        );
        let exactly = pod("2026-11-28T10:00:00Z", None);
        assert_eq!(unscheduled_wait(&exactly, now), None);
        // A clock behind the API server's: the whole grace, never more.
        let future = pod("2026-11-28T10:05:00Z", None);
        assert_eq!(unscheduled_wait(&future, now), Some(SCHEDULING_GRACE));
        assert!(scheduled(&pod("2026-11-28T10:00:07Z", Some("node-a"))));
    }

    #[test]
    fn a_status_of_another_image_gives_no_digest() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let running = |spec: &str, status: &str| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "app", "image": spec}]},
                    "status": {"containerStatuses": [{"name": "app", "image": status,
                        "imageID": format!("docker.io/library/app@{d}"), "ready": true,
                        "restartCount": 0}]}
                }))
                .unwrap(),
            )
        };
        let digest = |spec: &str, status: &str| {
            reported_digest(&[running(spec, status)], false, "app", spec)
        };
        // The same image, however the runtime writes its name.
        for (spec, status) in [
            ("app:1", "app:1"),
            ("app:1", "docker.io/library/app:1"),
            ("app", "docker.io/library/app:latest"),
            ("app:1", ""),
            ("app:1", "sha256:0123456789abcdef"),
            (&format!("app@{d}"), "docker.io/library/app:1"),
        ] {
            assert_eq!(
                digest(spec, status),
                Some(d.to_string()),
                "{spec} / {status}"
            );
        }
        // The spec changed in place; the container still runs the old image.
        for (spec, status) in [
            ("app:2", "app:1"),
            ("other:1", "app:1"),
            ("registry.example/app:1", "app:1"),
        ] {
            assert_eq!(digest(spec, status), None, "{spec} / {status}");
        }
    }

    #[test]
    fn a_pod_with_a_reported_image_is_not_waited_for() {
        let mut p = pod("2026-11-28T10:00:07Z", None);
        assert!(!reported_running(&p));
        p.status = Some(
            serde_json::from_value(json!({"containerStatuses": [
                {"name": "app", "image": "app:1", "imageID": "", "ready": false, "restartCount": 0}
            ]}))
            .unwrap(),
        );
        assert!(!reported_running(&p), "an empty imageID is no report");
        p.status = Some(
            serde_json::from_value(json!({"initContainerStatuses": [
                {"name": "init", "image": "init:1", "imageID": "init@sha256:aa",
                 "ready": false, "restartCount": 0}
            ]}))
            .unwrap(),
        );
        assert!(reported_running(&p));
    }

    fn running(pod: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(pod).expect("a valid Pod"))
    }

    #[test]
    fn wanted_containers_are_init_first_with_the_digest_any_pod_reports_for_the_same_image() {
        let d = |n: u8| format!("sha256:{}", format!("{n:02x}").repeat(32));
        let new = running(json!({
            "metadata": {"name": "web-new"},
            "spec": {"initContainers": [{"name": "migrate", "image": "r/migrate:1"}],
                     "containers": [{"name": "app", "image": "r/app:2"},
                                    {"name": "side", "image": "r/side:1"}]}
        }));
        let old = running(json!({
            "metadata": {"name": "web-old"},
            "spec": {"initContainers": [{"name": "migrate", "image": "r/migrate:1"}],
                     "containers": [{"name": "app", "image": "r/app:1"},
                                    {"name": "side", "image": "r/side:1"}]},
            "status": {
                "initContainerStatuses": [{"name": "migrate", "image": "r/migrate:1",
                    "imageID": format!("r/migrate@{}", d(1)), "ready": false, "restartCount": 0}],
                "containerStatuses": [
                    {"name": "app", "image": "r/app:1", "imageID": format!("r/app@{}", d(2)),
                     "ready": true, "restartCount": 0},
                    {"name": "side", "image": "r/side:1", "imageID": format!("r/side@{}", d(3)),
                     "ready": true, "restartCount": 0}]
            }
        }));
        let wanted = wanted_containers(&new, &[new.clone(), old]);
        let want = |name: &str, init, image: &str, digest: Option<String>| WantedContainer {
            name: name.into(),
            init,
            image: image.into(),
            digest,
        };
        assert_eq!(
            wanted,
            vec![
                want("migrate", true, "r/migrate:1", Some(d(1))),
                want("app", false, "r/app:2", None),
                want("side", false, "r/side:1", Some(d(3))),
            ],
            "the old Pod's app runs another image: its digest is not taken"
        );
    }

    fn failed(transient: bool) -> FailedContainer {
        FailedContainer {
            name: "main".into(),
            failure: analyze::ContainerFailure {
                reason: "R".into(),
                message: "m".into(),
                transient,
            },
        }
    }

    #[test]
    fn a_failure_that_may_pass_is_retried_when_its_images_backoff_is_over() {
        let secs = Duration::from_secs;
        assert_eq!(after_failures(&[], &[]), Action::Await);
        assert_eq!(
            after_failures(&[failed(false)], &[Some(secs(40))]),
            Action::Await,
            "a bomb waits for the next Pod event (and then its backoff)"
        );
        assert_eq!(
            after_failures(
                &[failed(true), failed(true)],
                &[Some(secs(40)), Some(secs(5))]
            ),
            Action::RequeueAfter(secs(5)),
            "the image due soonest"
        );
        assert_eq!(
            after_failures(&[failed(true), failed(true)], &[Some(secs(40)), None]),
            Action::Retry,
            "a registry that could not prove access: the workload's own backoff"
        );
    }

    fn workload(api_version: &str, kind: &str) -> Workload {
        Workload {
            namespace: "shop".into(),
            api_version: api_version.into(),
            kind: kind.into(),
            name: "web".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn a_workloads_resource_has_its_kinds_plural_at_its_api_version() {
        let r = api_resource(&workload("apps/v1", "StatefulSet"));
        assert_eq!((r.group.as_str(), r.version.as_str()), ("apps", "v1"));
        assert_eq!(r.plural, "statefulsets");
        let r = api_resource(&workload("batch/v1beta1", "CronJob"));
        assert_eq!(
            (r.api_version.as_str(), r.plural.as_str()),
            ("batch/v1beta1", "cronjobs")
        );
        let r = api_resource(&workload("v1", "Pod"));
        assert_eq!((r.group.as_str(), r.plural.as_str()), ("", "pods"));
        let r = api_resource(&workload("example.com/v1", "Rollout"));
        assert_eq!(
            (r.group.as_str(), r.plural.as_str()),
            ("example.com", "rollouts")
        );
        let r = api_resource(&workload("example.com/v1", "Policy"));
        assert_eq!(
            r.plural, "policies",
            "kube's plural rules for unknown kinds"
        );
    }
}

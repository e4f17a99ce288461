//! One workload's reconcile: its Pods' containers → their images' findings → its report and
//! metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::workload::{Workload, digest_from_image_id};
use super::{Context, OperatorError};
use crate::analysis::ANALYZER_VERSION;
use crate::metrics::WorkloadLabels;
use crate::registry::{Credential, Keyring, Platform, Reference};
use crate::report::crd::{
    Condition, ContainerReport, ImageReport, ImageReportSpec, ImageReportStatus, ReportSummary,
};
use crate::report::{ImageFindings, fit_report};
use crate::scan::{self, ImageSource, ScanOptions};
use crate::table::human;

/// The field manager of every write.
pub const MANAGER: &str = "imagebloat";
/// Reports are kept below this many bytes of status (the API server allows about 1.5 MB).
pub const REPORT_BUDGET: usize = 60 << 10;

const LABEL_KIND: &str = "imagebloat.dev/workload-kind";
const LABEL_NAME: &str = "imagebloat.dev/workload-name";

fn image_key(reference: &Reference, platform: &Platform) -> String {
    format!("{}|{platform}", reference.whole())
}

/// The key of a single-platform manifest's findings, whatever platform was asked for: a plain
/// manifest is the same image on every Node, so a Node of another platform (or the default
/// platform of a Pod not yet scheduled) finds it too, after a restart as well.
fn any_platform_key(reference: &Reference) -> String {
    format!("{}|*", reference.whole())
}

/// Reads existing reports: their findings go into the image cache (when made by this analyzer
/// version), their statuses into the written-cache, so a restart downloads and writes nothing
/// that is already reported.
pub async fn seed_from_reports(ctx: &Context) -> Result<(), OperatorError> {
    let reports = super::list_reports(&ctx.client, &ctx.config.namespaces).await?;
    let mut seeded = 0;
    for report in &reports {
        let Some(status) = &report.status else {
            continue;
        };
        for c in &status.containers {
            let Some(f) = &c.findings else { continue };
            if f.analyzer_version != ANALYZER_VERSION {
                continue;
            }
            let (Ok(reference), Ok(platform)) =
                (f.image.parse::<Reference>(), f.platform.parse::<Platform>())
            else {
                continue;
            };
            let findings = Arc::new(f.clone());
            if f.index_digest.is_none() {
                let r = Reference::with_digest(
                    reference.registry().to_string(),
                    reference.repository().to_string(),
                    f.digest.clone(),
                );
                ctx.remember(any_platform_key(&r), findings.clone());
            }
            for digest in std::iter::once(&f.digest).chain(f.index_digest.as_ref()) {
                let r = Reference::with_digest(
                    reference.registry().to_string(),
                    reference.repository().to_string(),
                    digest.clone(),
                );
                ctx.remember(image_key(&r, &platform), findings.clone());
                seeded += 1;
            }
        }
        if let (Some(ns), Some(uid)) = (
            &report.metadata.namespace,
            &report.spec.workload.uid.clone().into(),
        ) {
            let key = (ns.clone(), format!("{}/{}", report.spec.workload.kind, uid));
            ctx.written.lock().await.insert(key, status.clone());
        }
    }
    tracing::info!(
        reports = reports.len(),
        images = seeded,
        "seeded from existing reports"
    );
    Ok(())
}

/// Reconciles one workload; returns when to try again, if it should be.
pub async fn reconcile(ctx: &Arc<Context>, w: &Workload) -> Option<Duration> {
    match reconcile_inner(ctx, w).await {
        Ok(retry) => retry,
        Err(e) => {
            tracing::warn!(namespace = %w.namespace, workload = %w.name, error = %e, "reconcile failed");
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[error_reason(&e)])
                .inc();
            Some(next_backoff(ctx, w))
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

fn next_backoff(ctx: &Context, w: &Workload) -> Duration {
    let mut failures = ctx.failures.lock().expect("failures lock");
    let n = failures.entry(w.clone()).or_default();
    *n = (*n + 1).min(10);
    let base = ctx.config.retry;
    (base * 2u32.saturating_pow(*n - 1)).min(base * 10)
}

async fn reconcile_inner(
    ctx: &Arc<Context>,
    w: &Workload,
) -> Result<Option<Duration>, kube::Error> {
    let labels = WorkloadLabels {
        namespace: w.namespace.clone(),
        kind: w.kind.clone(),
        name: w.name.clone(),
    };
    let pods = ctx.pods_of(w);
    let written_key = (w.namespace.clone(), format!("{}/{}", w.kind, w.uid));
    // The newest scheduled Pod stands for the workload (during a rollout, the new template once
    // it runs somewhere): its Node tells the platform. Only when none is scheduled, the newest.
    let created = |p: &&Arc<Pod>| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let Some(pod) = pods
        .iter()
        .filter(|p| scheduled(p))
        .max_by_key(created)
        .or_else(|| pods.iter().max_by_key(created))
        .cloned()
    else {
        if workload_exists(ctx, w).await {
            // Scaled to zero, or its Pods are being replaced: look again later.
            return Ok(Some(Duration::from_secs(30)));
        }
        ctx.metrics.remove_workload(&labels);
        ctx.written.lock().await.remove(&written_key);
        ctx.images.release(&written_key);
        tracing::info!(namespace = %w.namespace, workload = %w.name, kind = %w.kind, "workload gone; its series are removed");
        return Ok(None);
    };

    if !scheduled(&pod)
        && !reported_running(&pod)
        && let Some(wait) = unscheduled_wait(&pod, Timestamp::now())
    {
        // A Pod is normally bound within moments, and only then is its platform known: a report
        // for the default platform now could name the wrong manifest of a multi-arch image.
        tracing::debug!(namespace = %w.namespace, workload = %w.name, "no Pod scheduled yet");
        return Ok(Some(wait));
    }
    let platform = node_platform(ctx, &pod).unwrap_or_else(|| ctx.config.default_platform.clone());
    let keyring = PullCredentials::new(ctx, &pod);
    let spec = pod.spec.clone().unwrap_or_default();
    // The digest a container runs, from the representative Pod or, when it has none yet (just
    // created), from any sibling running the same image: no registry round trip for the tag.
    let image_ids = |init: bool, name: &str, image: &str| {
        pods.iter().find_map(|p| {
            let spec = p.spec.as_ref()?;
            let containers = if init {
                spec.init_containers.as_ref()?
            } else {
                &spec.containers
            };
            let same_image = containers
                .iter()
                .any(|c| c.name == name && c.image.as_deref() == Some(image));
            let status = p.status.as_ref()?;
            let statuses = if init {
                status.init_container_statuses.as_ref()
            } else {
                status.container_statuses.as_ref()
            };
            let id = &statuses?.iter().find(|c| c.name == name)?.image_id;
            (same_image && digest_from_image_id(id).is_some()).then(|| id.clone())
        })
    };
    let wanted: Vec<(String, bool, String, Option<String>)> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)))
        .map(|(c, init)| {
            let image = c.image.clone().unwrap_or_default();
            let digest = image_ids(init, &c.name, &image)
                .as_deref()
                .and_then(digest_from_image_id)
                .map(str::to_string);
            (c.name.clone(), init, image, digest)
        })
        .collect();

    let mut analyses = Vec::with_capacity(wanted.len());
    for (_, _, image, digest) in &wanted {
        analyses.push(analyze_container(
            ctx,
            image,
            digest.as_deref(),
            &platform,
            &keyring,
        ));
    }
    let results = futures_util::future::join_all(analyses).await;

    let mut containers = Vec::with_capacity(wanted.len());
    let mut failed: Vec<(String, ContainerFailure)> = Vec::new();
    let mut used = Vec::with_capacity(wanted.len());
    for ((name, init, _, _), result) in wanted.iter().zip(results) {
        match result {
            Ok((key, findings)) => {
                used.push(key);
                containers.push(ContainerReport {
                    name: name.clone(),
                    init: *init,
                    findings: Some((*findings).clone()),
                    error: None,
                    reason: None,
                });
            }
            Err(f) => {
                containers.push(ContainerReport {
                    name: name.clone(),
                    init: *init,
                    findings: None,
                    error: Some(f.message.clone()),
                    reason: Some(f.reason.clone()),
                });
                failed.push((name.clone(), f));
            }
        }
    }

    ctx.images.used_by(written_key.clone(), used);

    let previous = ctx.written.lock().await.get(&written_key).cloned();
    let mut new_status = ImageReportStatus {
        summary: Some(summarize(&containers)),
        containers,
        conditions: vec![ready_condition(&failed, previous.as_ref())],
    };
    fit_report(&mut new_status, REPORT_BUDGET);

    let series: Vec<(&str, &ImageFindings)> = new_status
        .containers
        .iter()
        .filter_map(|c| c.findings.as_ref().map(|f| (c.name.as_str(), f)))
        .collect();
    // Metric labels show the image as the Pod names it.
    let by_pod_image: Vec<(String, ImageFindings)> = series
        .iter()
        .map(|(name, f)| {
            let pod_image = wanted
                .iter()
                .find(|(n, ..)| n == name)
                .map(|(_, _, image, _)| image.clone())
                .unwrap_or_else(|| f.image.clone());
            let mut f = (*f).clone();
            f.image = pod_image;
            (name.to_string(), f)
        })
        .collect();
    ctx.metrics.set_workload(
        &labels,
        &by_pod_image
            .iter()
            .map(|(n, f)| (n.as_str(), f))
            .collect::<Vec<_>>(),
    );

    if previous.as_ref() != Some(&new_status) {
        write_report(ctx, w, &new_status).await?;
        publish_event(ctx, w, &new_status, &failed).await;
        ctx.written.lock().await.insert(written_key, new_status);
    }

    if failed.iter().any(|(_, f)| f.transient) {
        return Ok(Some(next_backoff(ctx, w)));
    }
    ctx.failures.lock().expect("failures lock").remove(w);
    Ok(None)
}

/// Tells the workload's readers (`kubectl describe`, `kubectl events`) what its new report says:
/// the figures, or which containers could not be analyzed and why. Only when the report changed.
async fn publish_event(
    ctx: &Context,
    w: &Workload,
    status: &ImageReportStatus,
    failed: &[(String, ContainerFailure)],
) {
    use kube::runtime::events::{Event, EventType};
    let event = workload_event(w, status, failed);
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(w.api_version.clone()),
        kind: Some(w.kind.clone()),
        name: Some(w.name.clone()),
        namespace: Some(w.namespace.clone()),
        uid: Some(w.uid.clone()),
        ..Default::default()
    };
    let event = Event {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason.into(),
        note: Some(event.note),
        action: "Analyze".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &regarding).await {
        tracing::warn!(namespace = %w.namespace, workload = %w.name, error = %e, "cannot publish event");
    }
}

struct WorkloadEvent {
    warning: bool,
    reason: &'static str,
    note: String,
}

/// The event for a new report: `Analyzed` with the totals, or `AnalysisFailed` naming each
/// failed container (at most 1 KiB, as the API allows).
fn workload_event(
    w: &Workload,
    status: &ImageReportStatus,
    failed: &[(String, ContainerFailure)],
) -> WorkloadEvent {
    let report = format!("imagereport/{}", w.report_name());
    let mut event = if !failed.is_empty() {
        WorkloadEvent {
            warning: true,
            reason: "AnalysisFailed",
            note: failed
                .iter()
                .map(|(name, f)| format!("container {name}: {}: {}", f.reason, f.message))
                .collect::<Vec<_>>()
                .join("; "),
        }
    } else if let Some(s) = &status.summary {
        WorkloadEvent {
            warning: false,
            reason: "Analyzed",
            note: format!(
                "{} {}: pull {}, reclaimable {}, efficiency {} ({report})",
                s.images,
                if s.images == 1 { "image" } else { "images" },
                s.pull_size,
                s.reclaimable,
                s.efficiency_percent
            ),
        }
    } else {
        WorkloadEvent {
            warning: false,
            reason: "Analyzed",
            note: format!("no images ({report})"),
        }
    };
    if event.note.len() > 1024 {
        let mut end = 1021;
        while !event.note.is_char_boundary(end) {
            end -= 1;
        }
        event.note.truncate(end);
        event.note.push_str("...");
    }
    event
}

async fn write_report(
    ctx: &Context,
    w: &Workload,
    status: &ImageReportStatus,
) -> Result<(), kube::Error> {
    let api: Api<ImageReport> = Api::namespaced(ctx.client.clone(), &w.namespace);
    let name = w.report_name();
    let mut report = ImageReport::new(
        &name,
        ImageReportSpec {
            workload: w.reference(),
        },
    );
    report.metadata.namespace = Some(w.namespace.clone());
    report.metadata.owner_references = Some(vec![w.owner_reference()]);
    report.metadata.labels = Some(BTreeMap::from([
        (LABEL_KIND.to_string(), label_value(&w.kind)),
        (LABEL_NAME.to_string(), label_value(&w.name)),
    ]));
    let params = PatchParams::apply(MANAGER).force();
    let result = async {
        api.patch(&name, &params, &Patch::Apply(&report)).await?;
        let body = json!({
            "apiVersion": super::report_api_version(),
            "kind": "ImageReport",
            "status": status,
        });
        api.patch_status(&name, &params, &Patch::Apply(&body)).await
    }
    .await;
    ctx.metrics
        .reports_written
        .with_label_values(&[if result.is_ok() { "success" } else { "error" }])
        .inc();
    result.map(drop)
}

/// A label value: at most 63 characters, starting and ending alphanumeric.
fn label_value(s: &str) -> String {
    let cut: String = s.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Totals over distinct images (by manifest digest).
fn summarize(containers: &[ContainerReport]) -> ReportSummary {
    let mut distinct: BTreeMap<&str, &ImageFindings> = BTreeMap::new();
    for c in containers {
        if let Some(f) = &c.findings {
            distinct.entry(f.digest.as_str()).or_insert(f);
        }
    }
    let mut s = ReportSummary {
        images: distinct.len() as u32,
        ..Default::default()
    };
    for f in distinct.values() {
        let a = &f.analysis;
        s.pull_bytes += a.pull_bytes;
        s.size_bytes += a.size_bytes;
        s.final_bytes += a.final_bytes;
        s.wasted_bytes += a.wasted_bytes;
        s.reclaimable_bytes += a.reclaimable_bytes;
        s.reclaimable_pull_bytes += a.reclaimable_pull_bytes;
    }
    s.efficiency = if s.size_bytes == 0 {
        1.0
    } else {
        s.final_bytes as f64 / s.size_bytes as f64
    };
    s.pull_size = human(s.pull_bytes);
    s.reclaimable = human(s.reclaimable_bytes);
    s.wasted = human(s.wasted_bytes);
    s.efficiency_percent = format!("{:.1}%", s.efficiency * 100.0);
    s
}

fn ready_condition(
    failed: &[(String, ContainerFailure)],
    previous: Option<&ImageReportStatus>,
) -> Condition {
    let (status, reason, message) = match failed.first() {
        None => (
            "True".to_string(),
            "Analyzed".to_string(),
            "every container's image was analyzed".to_string(),
        ),
        Some((_, first)) => (
            "False".to_string(),
            first.reason.clone(),
            failed
                .iter()
                .map(|(name, f)| format!("container {name}: {}", f.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let kept_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone());
    Condition {
        type_: "Ready".into(),
        status,
        reason,
        message,
        last_transition_time: kept_time.unwrap_or_else(|| Timestamp::now().to_string()),
    }
}

/// Why a container's image has no findings: the condition's reason, a message naming the image
/// and the problem, and whether trying again later may help.
#[derive(Debug, Clone)]
struct ContainerFailure {
    reason: String,
    message: String,
    transient: bool,
}

/// A Pod's pull credentials, read from the API (ServiceAccount, Secrets) only once a container
/// needs the registry: a reconcile whose images are all analyzed already reads nothing.
struct PullCredentials<'a> {
    ctx: &'a Context,
    pod: &'a Pod,
    keyring: tokio::sync::OnceCell<Keyring>,
}

impl<'a> PullCredentials<'a> {
    fn new(ctx: &'a Context, pod: &'a Pod) -> Self {
        Self {
            ctx,
            pod,
            keyring: tokio::sync::OnceCell::new(),
        }
    }

    /// The credentials matching an image, in the kubelet's order.
    async fn for_image(&self, reference: &Reference) -> Vec<Credential> {
        self.keyring
            .get_or_init(|| pull_keyring(self.ctx, self.pod))
            .await
            .lookup(reference.registry(), reference.repository())
            .into_iter()
            .cloned()
            .collect()
    }
}

async fn analyze_container(
    ctx: &Context,
    image: &str,
    digest: Option<&str>,
    platform: &Platform,
    keyring: &PullCredentials<'_>,
) -> Result<(String, Arc<ImageFindings>), ContainerFailure> {
    let reference: Reference = image.parse().map_err(|e| ContainerFailure {
        reason: "InvalidReference".into(),
        message: format!("{image}: not a valid image reference: {e}"),
        transient: false,
    })?;
    let fetch_from = |r: &Reference| match ctx.config.mirrors.get(r.registry()) {
        Some(mirror) => match r.digest() {
            Some(d) => Reference::with_digest(mirror.clone(), r.repository().into(), d.into()),
            None => Reference::with_tag(
                mirror.clone(),
                r.repository().into(),
                r.tag().unwrap_or("latest").into(),
            ),
        },
        None => r.clone(),
    };
    let registry_failure = |e: crate::registry::RegistryError| ContainerFailure {
        reason: e.reason().to_string(),
        transient: e.is_transient(),
        message: e.to_string(),
    };
    // Key by digest: from the kubelet when the container runs, else resolved from the tag now
    // (a HEAD request, remembered briefly: a rollout's new Pods ask at once).
    let digest = match digest.or(reference.digest()) {
        Some(d) => d.to_string(),
        None => {
            let source = fetch_from(&reference);
            let key = source.whole();
            match ctx.tags.get(&key) {
                Some(d) => d,
                None => {
                    let tag = reference.tag().unwrap_or("latest");
                    let credentials = keyring.for_image(&reference).await;
                    let creds: Vec<_> = credentials.iter().collect();
                    let d = ctx
                        .registry
                        .resolve_tag(&source, tag, &creds)
                        .await
                        .map_err(registry_failure)?;
                    ctx.tags.insert(key, d.clone());
                    d
                }
            }
        }
    };
    let target = Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        digest,
    );
    let key = image_key(&target, platform);
    let any_key = any_platform_key(&target);
    for k in [&key, &any_key] {
        if let Some(f) = ctx.images.get(k) {
            ctx.metrics.cache_hits.with_label_values(&["image"]).inc();
            return Ok((k.clone(), f));
        }
    }
    let cell = ctx.images.cell(&key);
    cell.get_or_try_init(|| async {
        let credentials = keyring.for_image(&reference).await;
        let _global = ctx.analysis_slots.acquire().await.expect("semaphore open");
        let _per_registry = ctx
            .registry_slot(target.registry())
            .acquire_owned()
            .await
            .expect("semaphore open");
        let started = Instant::now();
        let source = ImageSource::Registry {
            registry: ctx.registry.clone(),
            reference: fetch_from(&target),
            credentials,
        };
        let options = ScanOptions {
            platform: platform.clone(),
            limits: ctx.config.limits,
            layer_concurrency: 2,
            progress: None,
        };
        let result = scan::scan(&source, &options, &ctx.layers).await;
        let hits = ctx.layers.hits();
        let reported = ctx.layer_hits_reported.swap(hits, std::sync::atomic::Ordering::Relaxed);
        ctx.metrics
            .cache_hits
            .with_label_values(&["layer"])
            .inc_by(hits.saturating_sub(reported));
        let outcome = if result.is_ok() { "success" } else { "error" };
        ctx.metrics.analyses.with_label_values(&[outcome]).inc();
        ctx.metrics
            .analysis_duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(mut scanned) => {
                scanned.image = target.whole();
                tracing::info!(image = %scanned.image, platform = %platform, seconds = started.elapsed().as_secs_f64(), "analyzed");
                let findings = Arc::new(ImageFindings::new(&scanned));
                if findings.index_digest.is_none() {
                    let _ = ctx.images.cell(&any_key).set(findings.clone());
                }
                Ok(findings)
            }
            Err(e) => {
                tracing::warn!(error = %e, "analysis failed");
                let transient = match &e.kind {
                    scan::ScanErrorKind::Registry(r) => r.is_transient(),
                    scan::ScanErrorKind::Layer(crate::analysis::LayerError::Source(_)) => true,
                    _ => false,
                };
                Err(ContainerFailure {
                    reason: e.kind.reason().to_string(),
                    message: e.to_string(),
                    transient,
                })
            }
        }
    })
    .await
    .map(|f| (key, f.clone()))
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

/// The platform of the Pod's Node, if it is scheduled and the Node is known.
fn node_platform(ctx: &Context, pod: &Pod) -> Option<Platform> {
    let node_name = pod.spec.as_ref()?.node_name.as_ref()?;
    let node = ctx.nodes.get(&ObjectRef::new(node_name))?;
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

/// Credentials for a Pod's images, as the kubelet would use them: the Pod's imagePullSecrets,
/// then its ServiceAccount's, then the operator-wide configuration.
async fn pull_keyring(ctx: &Context, pod: &Pod) -> Keyring {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut names: Vec<String> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.clone())
        .collect();
    let sa_name = spec
        .service_account_name
        .unwrap_or_else(|| "default".into());
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    match sas.get_opt(&sa_name).await {
        Ok(Some(sa)) => names.extend(
            sa.image_pull_secrets
                .iter()
                .flatten()
                .map(|s| s.name.clone()),
        ),
        Ok(None) => {}
        Err(e) => tracing::debug!(namespace, sa_name, error = %e, "cannot read service account"),
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut ring = Keyring::default();
    for name in names {
        let secret = match secrets.get_opt(&name).await {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(namespace, secret = name, error = %e, "cannot read pull secret");
                continue;
            }
        };
        let data = secret.data.unwrap_or_default();
        let Some(bytes) = data
            .get(".dockerconfigjson")
            .or_else(|| data.get(".dockercfg"))
        else {
            continue;
        };
        match Keyring::from_docker_config(&bytes.0) {
            Ok(k) => ring.extend(&k),
            // The secret's content is never logged, only its name.
            Err(e) => {
                tracing::warn!(namespace, secret = name, error = %e, "unreadable pull secret")
            }
        }
    }
    ring.extend(&ctx.config.keyring);
    ring
}

/// Whether the workload object still exists (with the same uid).
async fn workload_exists(ctx: &Context, w: &Workload) -> bool {
    let (group, version) = w
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", &w.api_version));
    let plural = match w.kind.as_str() {
        "Deployment" => "deployments".to_string(),
        "StatefulSet" => "statefulsets".to_string(),
        "DaemonSet" => "daemonsets".to_string(),
        "ReplicaSet" => "replicasets".to_string(),
        "Job" => "jobs".to_string(),
        "CronJob" => "cronjobs".to_string(),
        "Pod" => "pods".to_string(),
        other => format!("{}s", other.to_ascii_lowercase()),
    };
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, &w.kind), &plural);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &w.namespace, &resource);
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

#[cfg(test)]
mod tests {
    use super::*;

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

    fn web() -> Workload {
        Workload {
            namespace: "shop".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn events_say_what_the_report_says() {
        let summary = ReportSummary {
            images: 2,
            pull_size: "38.7 MB".into(),
            reclaimable: "12.0 MB".into(),
            efficiency_percent: "91.5%".into(),
            ..Default::default()
        };
        let status = ImageReportStatus {
            summary: Some(summary),
            containers: vec![],
            conditions: vec![],
        };
        let e = workload_event(&web(), &status, &[]);
        assert!(!e.warning);
        assert_eq!(e.reason, "Analyzed");
        assert_eq!(
            e.note,
            "2 images: pull 38.7 MB, reclaimable 12.0 MB, efficiency 91.5% \
             (imagereport/deployment-web)"
        );

        let failure = |reason: &str, message: &str| ContainerFailure {
            reason: reason.into(),
            message: message.into(),
            transient: true,
        };
        let failed = vec![(
            "app".to_string(),
            failure(
                "RegistryUnreachable",
                "manifest r/app:1: connection refused",
            ),
        )];
        let e = workload_event(&web(), &status, &failed);
        assert!(e.warning);
        assert_eq!(e.reason, "AnalysisFailed");
        assert_eq!(
            e.note,
            "container app: RegistryUnreachable: manifest r/app:1: connection refused"
        );

        // The API takes at most 1 KiB of note; multi-byte text is cut on a character boundary.
        let long = vec![("app".to_string(), failure("X", &"é".repeat(2000)))];
        let e = workload_event(&web(), &status, &long);
        assert!(
            e.note.len() <= 1024 && e.note.ends_with("..."),
            "{}",
            e.note.len()
        );
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
}

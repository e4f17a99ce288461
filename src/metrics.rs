//! The metric families and the lifecycle of per-workload series.
//!
//! Image gauges carry `namespace`, `workload_kind`, `workload`, `container`, `image`. A workload's
//! series are remembered as it is reported, replaced wholesale on the next report (a container
//! whose image changed leaves no stale series behind), and removed when the workload is gone —
//! only by the workload that set them: a workload deleted and recreated under the same name (a
//! new uid) keeps the series its new incarnation set, whichever reconcile runs last.
//!
//! Every label value comes from live workloads, so the number of series stays bounded by them:
//! the registry counters' `registry` label names a registry only while a live workload's image
//! is pulled from it (counted from the workload's reconcile on, before its first request); a
//! request to any other registry (one whose last workload just went) counts under `other`, and
//! a registry's series are removed with its last workload.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use crate::analysis::ImageAnalysis;

pub mod fleet;
use crate::registry::Observer;

const IMAGE_LABELS: &[&str] = &[
    "namespace",
    "workload_kind",
    "workload",
    "container",
    "image",
];

/// The registry label of requests to a registry no live workload pulls from.
pub const OTHER_REGISTRY: &str = "other";

/// Identifies a workload's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// Not a label: tells a recreated workload's series from those of the one it replaced.
    pub uid: String,
}

impl WorkloadLabels {
    fn key(&self) -> (String, String, String) {
        (self.namespace.clone(), self.kind.clone(), self.name.clone())
    }
}

/// What is kept of one workload (by namespace, kind and name): which incarnation set it, its
/// image series' labels, and the registries its images are pulled from.
#[derive(Default)]
struct WorkloadEntry {
    uid: String,
    series: Vec<Vec<String>>,
    registries: BTreeSet<String>,
}

/// A registry in the `registry` label: how many workloads pull from it, and the statuses its
/// series have (for their removal).
#[derive(Default)]
struct RegistryUse {
    workloads: usize,
    statuses: BTreeSet<String>,
}

#[derive(Default)]
struct SeriesState {
    workloads: HashMap<(String, String, String), WorkloadEntry>,
    registries: HashMap<String, RegistryUse>,
}

/// One container's image as its series show it.
pub struct ContainerSeries<'a> {
    pub container: &'a str,
    /// The image as the Pod names it (the `image` label).
    pub image: &'a str,
    pub analysis: &'a ImageAnalysis,
    /// Pull bytes now minus those of the image the container ran before (0 while none is known).
    pub pull_growth_bytes: f64,
}

/// All metrics of the operator.
pub struct Metrics {
    registry: Registry,
    pub image_pull_bytes: GaugeVec,
    pub image_size_bytes: GaugeVec,
    pub image_wasted_bytes: GaugeVec,
    pub image_reclaimable_bytes: GaugeVec,
    pub image_efficiency_ratio: GaugeVec,
    pub image_layers: GaugeVec,
    pub image_reclaimable_category_bytes: GaugeVec,
    pub image_pull_growth_bytes: GaugeVec,
    /// Analyses by result (`success`, `error`, `reused`).
    pub analyses: IntCounterVec,
    pub analysis_duration: HistogramVec,
    /// Registry requests by registry and HTTP status (`error` for transport failures).
    pub registry_requests: IntCounterVec,
    /// Compressed bytes downloaded from registries.
    pub registry_bytes: IntCounterVec,
    /// Cache hits by cache (`image`, `layer`, `report`).
    pub cache_hits: IntCounterVec,
    /// Failed reconciles by reason.
    pub reconcile_errors: IntCounterVec,
    /// Reports written (server-side apply requests).
    pub reports_written: IntCounterVec,
    /// Images whose last analysis failed, each waiting out its backoff.
    pub backoff_images: IntGauge,
    /// Analyses not attempted because the image's backoff was not over.
    pub analyses_skipped: IntCounter,
    /// Proofs of pull access by result (`granted`, `refused`, `error`).
    pub access_checks: IntCounterVec,
    /// The fleet view's Node, cluster and per-image gauges (`metrics::fleet`).
    pub fleet: fleet::FleetMetrics,
    state: Mutex<SeriesState>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn analysis_duration(registry: &Registry) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "imagebloat_analysis_duration_seconds",
            "Time to analyze one image (manifest, config and every layer not already cached)",
        )
        .buckets(vec![
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ]),
        &["result"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let m = metric.expect("valid metric");
    registry
        .register(Box::new(m.clone()))
        .expect("unique metric");
    m
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let image_gauge = |name, help| gauge(&r, name, help, IMAGE_LABELS);
        let mut category_labels = IMAGE_LABELS.to_vec();
        category_labels.push("category");
        let m = Metrics {
            image_pull_bytes: image_gauge(
                "imagebloat_image_pull_bytes",
                "Compressed bytes a node downloads for the image",
            ),
            image_size_bytes: image_gauge(
                "imagebloat_image_size_bytes",
                "Bytes of regular files shipped in all layers of the image",
            ),
            image_wasted_bytes: image_gauge(
                "imagebloat_image_wasted_bytes",
                "Bytes shipped in one layer and hidden by a later one",
            ),
            image_reclaimable_bytes: image_gauge(
                "imagebloat_image_reclaimable_bytes",
                "Wasted bytes plus junk in the final filesystem",
            ),
            image_efficiency_ratio: image_gauge(
                "imagebloat_image_efficiency_ratio",
                "Final bytes divided by shipped bytes",
            ),
            image_layers: image_gauge("imagebloat_image_layers", "Layers of the image"),
            image_pull_growth_bytes: image_gauge(
                "imagebloat_image_pull_growth_bytes",
                "Pull bytes of the image minus those of the image the container ran before \
                 (negative when it shrank; 0 while no earlier image is known)",
            ),
            image_reclaimable_category_bytes: gauge(
                &r,
                "imagebloat_image_reclaimable_category_bytes",
                "Junk bytes in the final filesystem by category",
                &category_labels,
            ),
            analyses: counter(
                &r,
                "imagebloat_analyses_total",
                "Image analyses by result",
                &["result"],
            ),
            analysis_duration: analysis_duration(&r),
            registry_requests: counter(
                &r,
                "imagebloat_registry_requests_total",
                "Registry HTTP requests by registry and status",
                &["registry", "status"],
            ),
            registry_bytes: counter(
                &r,
                "imagebloat_registry_bytes_downloaded_total",
                "Compressed blob bytes downloaded by registry",
                &["registry"],
            ),
            cache_hits: counter(
                &r,
                "imagebloat_cache_hits_total",
                "Analyses or layers served from cache, by cache",
                &["cache"],
            ),
            reconcile_errors: counter(
                &r,
                "imagebloat_reconcile_errors_total",
                "Failed reconciles by reason",
                &["reason"],
            ),
            reports_written: counter(
                &r,
                "imagebloat_reports_written_total",
                "ImageReport writes (server-side apply)",
                &["result"],
            ),
            backoff_images: registered(
                &r,
                IntGauge::new(
                    "imagebloat_analysis_backoff_images",
                    "Images whose last analysis failed; each is tried again at most once per \
                     backoff period",
                ),
            ),
            analyses_skipped: registered(
                &r,
                IntCounter::new(
                    "imagebloat_analyses_skipped_total",
                    "Analyses not attempted because the image's backoff after a failure was not over",
                ),
            ),
            access_checks: counter(
                &r,
                "imagebloat_access_checks_total",
                "Proofs that a workload could pull its image (manifest HEAD with its own \
                 credentials), by result",
                &["result"],
            ),
            fleet: fleet::FleetMetrics::register(&r),
            state: Mutex::default(),
            registry: r,
        };
        m.start_known_values_at_zero();
        m
    }

    /// Known label values start at zero, so rates and dashboards have a series from the start
    /// rather than "no data" until the first event.
    fn start_known_values_at_zero(&self) {
        for result in ["success", "error"] {
            self.analyses.with_label_values(&[result]);
            self.reports_written.with_label_values(&[result]);
        }
        for cache in ["image", "layer"] {
            self.cache_hits.with_label_values(&[cache]);
        }
        for result in ["granted", "refused", "error"] {
            self.access_checks.with_label_values(&[result]);
        }
        for reason in [
            "NotFound",
            "Forbidden",
            "Conflict",
            "ApiError",
            "ClientError",
        ] {
            self.reconcile_errors.with_label_values(&[reason]);
        }
    }

    /// Counts one finished analysis (`success` or `error`) and its duration, and the layer cache
    /// hits it had.
    pub fn analyzed(&self, success: bool, seconds: f64, layer_hits: u64) {
        self.cache_hits
            .with_label_values(&["layer"])
            .inc_by(layer_hits);
        let result = if success { "success" } else { "error" };
        self.analyses.with_label_values(&[result]).inc();
        self.analysis_duration
            .with_label_values(&[result])
            .observe(seconds);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SeriesState> {
        self.state.lock().expect("metrics lock")
    }

    /// Records the registries a workload's images are pulled from now (replacing those before):
    /// they name their requests in the registry counters while a workload records them.
    pub fn set_registries(&self, w: &WorkloadLabels, registries: Vec<String>) {
        let registries: BTreeSet<String> = registries.into_iter().collect();
        let mut state = self.state();
        let entry = state.workloads.entry(w.key()).or_default();
        entry.uid = w.uid.clone();
        let old = std::mem::replace(&mut entry.registries, registries.clone());
        for r in &registries {
            state.registries.entry(r.clone()).or_default().workloads += 1;
        }
        self.release_registries(&mut state, &old);
    }

    /// One workload fewer for each of `registries`; the series of those left without any go.
    fn release_registries(&self, state: &mut SeriesState, registries: &BTreeSet<String>) {
        for r in registries {
            let Some(used) = state.registries.get_mut(r) else {
                continue;
            };
            used.workloads = used.workloads.saturating_sub(1);
            if used.workloads == 0 {
                for status in &used.statuses {
                    let _ = self.registry_requests.remove_label_values(&[r, status]);
                }
                let _ = self.registry_bytes.remove_label_values(&[r]);
                state.registries.remove(r);
            }
        }
    }

    /// The `registry` label for a request to `registry` with this status label (counted while
    /// `state` is held, so a registry's series cannot come back after their removal).
    fn registry_label<'a>(
        state: &mut SeriesState,
        registry: &'a str,
        status: Option<&str>,
    ) -> &'a str {
        match state.registries.get_mut(registry) {
            Some(used) => {
                if let Some(status) = status {
                    used.statuses.insert(status.to_string());
                }
                registry
            }
            None => OTHER_REGISTRY,
        }
    }

    /// Replaces a workload's image series with these containers'.
    pub fn set_workload(&self, w: &WorkloadLabels, containers: &[ContainerSeries<'_>]) {
        let mut state = self.state();
        let entry = state.workloads.entry(w.key()).or_default();
        entry.uid = w.uid.clone();
        let old = std::mem::take(&mut entry.series);
        self.remove_series(&old);
        entry.series = containers
            .iter()
            .map(|c| {
                let labels = [
                    w.namespace.as_str(),
                    w.kind.as_str(),
                    w.name.as_str(),
                    c.container,
                    c.image,
                ];
                self.image_pull_growth_bytes
                    .with_label_values(&labels)
                    .set(c.pull_growth_bytes);
                self.set_container(labels, c.analysis)
            })
            .collect();
    }

    /// Sets one container's series; returns their labels (the image labels, then each category)
    /// for their removal.
    fn set_container(&self, labels: [&str; 5], a: &ImageAnalysis) -> Vec<String> {
        for (gauge, value) in [
            (&self.image_pull_bytes, a.totals.pull_bytes as f64),
            (&self.image_size_bytes, a.totals.size_bytes as f64),
            (&self.image_wasted_bytes, a.totals.wasted_bytes as f64),
            (
                &self.image_reclaimable_bytes,
                a.totals.reclaimable_bytes as f64,
            ),
            (&self.image_efficiency_ratio, a.totals.efficiency),
            (&self.image_layers, a.layers.len() as f64),
        ] {
            gauge.with_label_values(&labels).set(value);
        }
        let mut owned: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
        for c in &a.categories {
            let mut l = labels.to_vec();
            l.push(c.category.as_str());
            self.image_reclaimable_category_bytes
                .with_label_values(&l)
                .set(c.bytes as f64);
            owned.push(c.category.as_str().to_string());
        }
        owned
    }

    /// Removes every series of a workload that is gone, unless a workload recreated under its
    /// name (another uid) set them since.
    pub fn remove_workload(&self, w: &WorkloadLabels) {
        let mut state = self.state();
        let key = w.key();
        if state.workloads.get(&key).is_none_or(|e| e.uid != w.uid) {
            return;
        }
        let entry = state.workloads.remove(&key).expect("checked above");
        self.remove_series(&entry.series);
        self.release_registries(&mut state, &entry.registries);
    }

    /// Workloads with series or registries recorded.
    pub fn workloads(&self) -> usize {
        self.state().workloads.len()
    }

    fn remove_series(&self, old: &[Vec<String>]) {
        for owned in old {
            let labels: Vec<&str> = owned[..5].iter().map(String::as_str).collect();
            for g in [
                &self.image_pull_bytes,
                &self.image_size_bytes,
                &self.image_wasted_bytes,
                &self.image_reclaimable_bytes,
                &self.image_efficiency_ratio,
                &self.image_layers,
                &self.image_pull_growth_bytes,
            ] {
                let _ = g.remove_label_values(&labels);
            }
            for category in &owned[5..] {
                let mut l = labels.clone();
                l.push(category);
                let _ = self
                    .image_reclaimable_category_bytes
                    .remove_label_values(&l);
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}

/// Registry requests and downloads, as the registry client reports them.
impl Observer for Metrics {
    fn request(&self, registry: &str, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        let mut state = self.state();
        let registry = Self::registry_label(&mut state, registry, Some(&status));
        self.registry_requests
            .with_label_values(&[registry, &status])
            .inc();
    }

    fn blob_bytes(&self, registry: &str, bytes: u64) {
        let mut state = self.state();
        let registry = Self::registry_label(&mut state, registry, None);
        self.registry_bytes
            .with_label_values(&[registry])
            .inc_by(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An analysis with these pull bytes and junk categories (bytes each).
    fn analysis(pull_bytes: u64, categories: &[(&str, u64)]) -> ImageAnalysis {
        serde_json::from_value(serde_json::json!({
            "pullBytes": pull_bytes, "sizeBytes": 300, "finalBytes": 200, "wastedBytes": 100,
            "reclaimableBytes": 150, "reclaimablePullBytes": 60, "efficiency": 0.5,
            "junkBytes": 50, "layers": [], "hiddenFileCount": 0, "hiddenFiles": [],
            "categories": categories.iter().map(|(category, bytes)| serde_json::json!(
                {"category": category, "bytes": bytes, "files": 1, "examples": []}
            )).collect::<Vec<_>>(),
            "recommendations": []
        }))
        .expect("a valid analysis")
    }

    fn web() -> WorkloadLabels {
        WorkloadLabels {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            uid: "uid-web".into(),
        }
    }

    fn api() -> WorkloadLabels {
        WorkloadLabels {
            name: "api".into(),
            ..web()
        }
    }

    /// The series of a family: each one's labels (`name=value`, by name) and value.
    fn series(m: &Metrics, family: &str) -> Vec<(String, f64)> {
        let families = m.registry.gather();
        let Some(f) = families.iter().find(|f| f.name() == family) else {
            return vec![];
        };
        let gauge = f.get_field_type() == prometheus::proto::MetricType::GAUGE;
        let mut out: Vec<(String, f64)> = f
            .get_metric()
            .iter()
            .map(|metric| {
                let labels: BTreeMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let value = if gauge {
                    metric.get_gauge().get_value()
                } else {
                    metric.get_counter().get_value()
                };
                (labels.join(","), value)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn labels(workload: &str, container: &str, image: &str) -> String {
        format!(
            "container={container},image={image},namespace=shop,workload={workload},\
             workload_kind=Deployment"
        )
    }

    #[test]
    fn setting_a_workloads_containers_creates_a_series_per_container_and_category() {
        let m = Metrics::new();
        let (app, side) = (analysis(1000, &[("docs", 40)]), analysis(500, &[]));
        m.set_workload(
            &web(),
            &[
                ContainerSeries {
                    container: "app",
                    image: "r/app:1",
                    analysis: &app,
                    pull_growth_bytes: -250.0,
                },
                ContainerSeries {
                    container: "side",
                    image: "r/side:1",
                    analysis: &side,
                    pull_growth_bytes: 0.0,
                },
            ],
        );
        assert_eq!(
            series(&m, "imagebloat_image_pull_bytes"),
            [
                (labels("web", "app", "r/app:1"), 1000.0),
                (labels("web", "side", "r/side:1"), 500.0)
            ]
        );
        assert_eq!(
            series(&m, "imagebloat_image_pull_growth_bytes"),
            [
                (labels("web", "app", "r/app:1"), -250.0),
                (labels("web", "side", "r/side:1"), 0.0)
            ]
        );
        for family in [
            "imagebloat_image_size_bytes",
            "imagebloat_image_wasted_bytes",
            "imagebloat_image_reclaimable_bytes",
            "imagebloat_image_efficiency_ratio",
        ] {
            assert_eq!(series(&m, family).len(), 2, "{family}");
        }
        assert_eq!(
            series(&m, "imagebloat_image_reclaimable_category_bytes"),
            [(
                format!("category=docs,{}", labels("web", "app", "r/app:1")),
                40.0
            )]
        );
    }

    #[test]
    fn a_later_set_without_a_container_or_with_a_new_image_removes_the_old_series() {
        let m = Metrics::new();
        let a = analysis(1000, &[("docs", 40)]);
        let series_of = |container, image| ContainerSeries {
            container,
            image,
            analysis: &a,
            pull_growth_bytes: 0.0,
        };
        m.set_workload(
            &web(),
            &[series_of("app", "r/app:1"), series_of("side", "r/side:1")],
        );
        m.set_workload(&web(), &[series_of("app", "r/app:2")]);
        for family in [
            "imagebloat_image_pull_bytes",
            "imagebloat_image_pull_growth_bytes",
        ] {
            assert_eq!(
                series(&m, family)
                    .into_iter()
                    .map(|(l, _)| l)
                    .collect::<Vec<_>>(),
                [labels("web", "app", "r/app:2")],
                "{family}"
            );
        }
        assert_eq!(
            series(&m, "imagebloat_image_reclaimable_category_bytes"),
            [(
                format!("category=docs,{}", labels("web", "app", "r/app:2")),
                40.0
            )]
        );
    }

    #[test]
    fn removing_a_workload_removes_all_its_series_and_only_its() {
        let m = Metrics::new();
        let a = analysis(1000, &[("docs", 40), ("temp", 5)]);
        let app = ContainerSeries {
            container: "app",
            image: "r/app:1",
            analysis: &a,
            pull_growth_bytes: 0.0,
        };
        m.set_workload(&web(), std::slice::from_ref(&app));
        m.set_workload(&api(), &[app]);
        m.remove_workload(&web());
        assert_eq!(
            series(&m, "imagebloat_image_layers"),
            [(labels("api", "app", "r/app:1"), 0.0)]
        );
        assert_eq!(
            series(&m, "imagebloat_image_reclaimable_category_bytes").len(),
            2
        );
        m.remove_workload(&api());
        assert!(series(&m, "imagebloat_image_pull_bytes").is_empty());
        assert!(series(&m, "imagebloat_image_pull_growth_bytes").is_empty());
        assert!(series(&m, "imagebloat_image_reclaimable_category_bytes").is_empty());
    }

    #[test]
    fn known_label_values_start_at_zero() {
        let m = Metrics::new();
        let zero = |labels: &[&str]| -> Vec<(String, f64)> {
            labels.iter().map(|l| (l.to_string(), 0.0)).collect()
        };
        assert_eq!(
            series(&m, "imagebloat_analyses_total"),
            zero(&["result=error", "result=success"])
        );
        assert_eq!(
            series(&m, "imagebloat_reports_written_total"),
            zero(&["result=error", "result=success"])
        );
        assert_eq!(
            series(&m, "imagebloat_cache_hits_total"),
            zero(&["cache=image", "cache=layer"])
        );
        assert_eq!(
            series(&m, "imagebloat_access_checks_total"),
            zero(&["result=error", "result=granted", "result=refused"])
        );
        assert_eq!(
            series(&m, "imagebloat_reconcile_errors_total"),
            zero(&[
                "reason=ApiError",
                "reason=ClientError",
                "reason=Conflict",
                "reason=Forbidden",
                "reason=NotFound"
            ])
        );
        assert!(series(&m, "imagebloat_image_pull_bytes").is_empty());
    }

    #[test]
    fn a_recreated_workload_keeps_its_series_when_the_old_ones_removal_comes_last() {
        let m = Metrics::new();
        let a = analysis(1000, &[("docs", 40)]);
        let app = ContainerSeries {
            container: "app",
            image: "r/app:1",
            analysis: &a,
            pull_growth_bytes: 0.0,
        };
        m.set_workload(&web(), std::slice::from_ref(&app));
        let recreated = WorkloadLabels {
            uid: "uid-web-2".into(),
            ..web()
        };
        m.set_workload(&recreated, &[app]);
        // The old workload's deletion is reconciled after the new one's first report.
        m.remove_workload(&web());
        assert_eq!(
            series(&m, "imagebloat_image_pull_bytes"),
            [(labels("web", "app", "r/app:1"), 1000.0)]
        );
        assert_eq!(m.workloads(), 1);
        m.remove_workload(&recreated);
        assert!(series(&m, "imagebloat_image_pull_bytes").is_empty());
        assert!(series(&m, "imagebloat_image_reclaimable_category_bytes").is_empty());
        assert_eq!(m.workloads(), 0, "nothing kept for a gone workload");
    }

    #[test]
    fn the_registry_label_names_only_registries_a_live_workload_pulls_from() {
        let m = Metrics::new();
        m.set_registries(&web(), vec!["good.example".into(), "good.example".into()]);
        m.set_registries(&api(), vec!["good.example".into(), "mirror.example".into()]);
        m.request("good.example", Some(200));
        m.request("mirror.example", None);
        m.request("random-42.attacker.example", Some(404));
        m.blob_bytes("good.example", 10);
        m.blob_bytes("random-43.attacker.example", 5);
        assert_eq!(
            series(&m, "imagebloat_registry_requests_total"),
            [
                ("registry=good.example,status=200".to_string(), 1.0),
                ("registry=mirror.example,status=error".to_string(), 1.0),
                ("registry=other,status=404".to_string(), 1.0),
            ]
        );
        assert_eq!(
            series(&m, "imagebloat_registry_bytes_downloaded_total"),
            [
                ("registry=good.example".to_string(), 10.0),
                ("registry=other".to_string(), 5.0),
            ]
        );
        // api moves off the mirror: its series go; good.example stays while web pulls from it.
        m.set_registries(&api(), vec!["good.example".into()]);
        m.remove_workload(&web());
        let registries =
            |family| -> Vec<String> { series(&m, family).into_iter().map(|(l, _)| l).collect() };
        assert_eq!(
            registries("imagebloat_registry_requests_total"),
            [
                "registry=good.example,status=200",
                "registry=other,status=404"
            ]
        );
        m.remove_workload(&api());
        assert_eq!(
            registries("imagebloat_registry_requests_total"),
            ["registry=other,status=404"]
        );
        assert_eq!(
            registries("imagebloat_registry_bytes_downloaded_total"),
            ["registry=other"]
        );
    }
}

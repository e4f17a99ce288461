//! The one place that turns an analysis into what users read: the object `scan --output json`
//! prints, which is also one container's entry in an `ImageReport`.
//!
//! Lists are capped here (largest first) so a report of a pathological image stays small: the
//! totals always cover everything, the lists show what matters most.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::{ANALYZER_VERSION, ImageAnalysis};
use crate::format::truncate;
use crate::scan::ScannedImage;

pub mod cluster;

/// Hidden files listed (the count covers all of them).
pub const MAX_HIDDEN_FILES: usize = 20;
/// Recommendations listed.
pub const MAX_RECOMMENDATIONS: usize = 10;
/// Parts of a recommendation's saving listed.
pub const MAX_COUNTED: usize = 16;
/// Layers listed with full detail; beyond this they are folded into the totals.
pub const MAX_LAYERS: usize = 128;
/// Characters kept of a history line.
pub const MAX_CREATED_BY: usize = 256;
/// Characters kept of a path.
pub const MAX_PATH: usize = 512;
/// Characters kept of an image reference (the image, its base image).
pub const MAX_REFERENCE: usize = 512;
/// Characters kept of a short field: digests, media types, platforms, os-release values, kinds.
pub const MAX_FIELD: usize = 128;
/// Characters kept of a sentence: a recommendation, a note, a skipped layer's reason.
pub const MAX_MESSAGE: usize = 512;
/// Notes listed.
pub const MAX_NOTES: usize = 8;
/// Example paths listed per junk category.
pub const MAX_EXAMPLES: usize = 5;
/// Characters kept of a container's error.
pub const MAX_ERROR: usize = 1000;
/// Characters kept of a condition's message.
pub const MAX_CONDITION_MESSAGE: usize = 2048;

/// Findings for one image, as printed by `scan` and stored per container in reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageFindings {
    /// The image as referenced (normalised).
    pub image: String,
    /// Digest of the platform's image manifest.
    pub digest: String,
    /// Digest of the index the manifest was chosen from, for multi-platform images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// `os/architecture[/variant]` of the image.
    pub platform: String,
    /// Media type of the image manifest (OCI or Docker schema 2).
    pub media_type: String,
    /// Version of the analyzer that produced these findings.
    pub analyzer_version: String,
    /// Bytes of layer blobs this analysis actually fetched: whole blobs on the full read, a few
    /// ranges (footer, table of contents, small files) for eStargz and zstd:chunked layers read
    /// from their tables of contents; layers already indexed for another image cost nothing.
    /// Compare with `pullBytes`, what a node downloads.
    #[serde(default)]
    pub downloaded_bytes: u64,
    #[serde(flatten)]
    pub analysis: ImageAnalysis,
}

impl ImageFindings {
    pub fn new(scanned: &ScannedImage) -> Self {
        ImageFindings {
            image: scanned.image.clone(),
            digest: scanned.digest.clone(),
            index_digest: scanned.index_digest.clone(),
            platform: scanned.platform.clone(),
            media_type: scanned.media_type.clone(),
            analyzer_version: ANALYZER_VERSION.to_string(),
            downloaded_bytes: scanned.downloaded_bytes,
            analysis: scanned.analysis.clone(),
        }
        .capped()
    }

    /// These findings with every string and list capped (see the `MAX_` constants).
    pub fn capped(mut self) -> Self {
        cap_findings(&mut self);
        self
    }
}

fn cap(a: &mut ImageAnalysis) {
    a.hidden_files.truncate(MAX_HIDDEN_FILES);
    for h in &mut a.hidden_files {
        truncate(&mut h.path, MAX_PATH);
        truncate(&mut h.reason, MAX_FIELD);
    }
    a.recommendations.truncate(MAX_RECOMMENDATIONS);
    for r in &mut a.recommendations {
        truncate(&mut r.kind, MAX_FIELD);
        truncate(&mut r.message, MAX_MESSAGE);
        truncate_opt(&mut r.created_by, MAX_CREATED_BY);
        r.counted.truncate(MAX_COUNTED);
        for c in &mut r.counted {
            truncate(&mut c.name, MAX_FIELD);
        }
    }
    a.layers.truncate(MAX_LAYERS);
    for l in &mut a.layers {
        truncate(&mut l.digest, MAX_FIELD);
        truncate(&mut l.media_type, MAX_FIELD);
        truncate_opt(&mut l.created_by, MAX_CREATED_BY);
        truncate_opt(&mut l.skipped, MAX_MESSAGE);
    }
    for c in &mut a.categories {
        c.examples.truncate(MAX_EXAMPLES);
        for e in &mut c.examples {
            truncate(e, MAX_PATH);
        }
    }
    if let Some(os) = &mut a.os {
        truncate(&mut os.id, MAX_FIELD);
        truncate_opt(&mut os.version_id, MAX_FIELD);
        truncate_opt(&mut os.version_codename, MAX_FIELD);
        truncate_opt(&mut os.pretty_name, MAX_FIELD);
    }
    if let Some(base) = &mut a.base_image {
        truncate_opt(&mut base.name, MAX_REFERENCE);
        truncate_opt(&mut base.digest, MAX_FIELD);
    }
    a.notes.truncate(MAX_NOTES);
    for n in &mut a.notes {
        truncate(n, MAX_MESSAGE);
    }
}

/// Caps every string and list of stored findings, whatever made them (a scan, a cache, a report
/// read back at start): what a registry or an image's author wrote is never trusted to be short.
fn cap_findings(f: &mut ImageFindings) {
    truncate(&mut f.image, MAX_REFERENCE);
    truncate(&mut f.digest, MAX_FIELD);
    truncate_opt(&mut f.index_digest, MAX_FIELD);
    truncate(&mut f.platform, MAX_FIELD);
    truncate(&mut f.media_type, MAX_FIELD);
    truncate(&mut f.analyzer_version, MAX_FIELD);
    cap(&mut f.analysis);
}

fn truncate_opt(s: &mut Option<String>, max: usize) {
    if let Some(s) = s {
        truncate(s, max);
    }
}

/// The `ImageReport` custom resource: one per workload, next to it.
pub mod crd {
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::ImageFindings;
    use crate::analysis::Totals;
    use crate::format;

    /// The CRD as YAML: what `imagebloat crd` prints and `crds/` holds.
    pub fn crd_yaml() -> String {
        use kube::CustomResourceExt;
        let mut yaml = String::from(
            "# Generated by `imagebloat crd`; do not edit (a test fails when this file drifts).\n",
        );
        let crd = crate::crd_schema::explainable(ImageReport::crd());
        yaml.push_str(&serde_yaml::to_string(&crd).expect("CRD serializes"));
        yaml
    }

    /// Names the workload a report describes.
    #[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "imagebloat.dev",
        version = "v1alpha1",
        kind = "ImageReport",
        plural = "imagereports",
        shortname = "ir",
        namespaced,
        status = "ImageReportStatus",
        doc = "How much of a workload's container images is dead weight, and how to cut it.",
        printcolumn = r#"{"name":"Images","type":"integer","jsonPath":".status.summary.images","description":"Distinct images the workload runs"}"#,
        printcolumn = r#"{"name":"Pull Size","type":"string","jsonPath":".status.summary.pullSize","description":"Compressed bytes a node downloads"}"#,
        printcolumn = r#"{"name":"Reclaimable","type":"string","jsonPath":".status.summary.reclaimable","description":"Wasted plus junk bytes"}"#,
        printcolumn = r#"{"name":"Efficiency","type":"string","jsonPath":".status.summary.efficiencyPercent","description":"Final bytes / shipped bytes"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
        printcolumn = r#"{"name":"Wasted","type":"string","priority":1,"jsonPath":".status.summary.wasted","description":"Bytes hidden by later layers"}"#,
        printcolumn = r#"{"name":"Status","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
    )]
    #[serde(rename_all = "camelCase")]
    pub struct ImageReportSpec {
        /// The workload: the owner a Pod resolves to (Deployment, StatefulSet, DaemonSet,
        /// CronJob, Job, or the Pod itself).
        pub workload: WorkloadRef,
    }

    /// The workload: the owner a Pod resolves to (Deployment, StatefulSet, DaemonSet, CronJob,
    /// Job, or the Pod itself).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct WorkloadRef {
        /// The workload's API version (`apps/v1`, `batch/v1beta1` …), as its Pods' owner
        /// reference names it.
        pub api_version: String,
        /// The workload's kind (`Deployment`, `CronJob` …).
        pub kind: String,
        /// The workload's name, in the report's namespace.
        pub name: String,
        /// The workload's uid: a workload deleted and created again under the same name is
        /// another workload.
        pub uid: String,
    }

    /// Findings for every container of the workload.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct ImageReportStatus {
        /// Totals over the workload's distinct images.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub summary: Option<ReportSummary>,
        /// One entry per container, init containers included.
        #[serde(default)]
        pub containers: Vec<ContainerReport>,
        /// `Ready` is true when every container's image was analyzed; otherwise its reason says
        /// why not (`RegistryUnreachable`, `Unauthorized`, `InvalidLayer` …).
        #[serde(default)]
        pub conditions: Vec<Condition>,
    }

    /// A condition, as Kubernetes conventions shape them.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Condition {
        /// `Ready`.
        #[serde(rename = "type")]
        pub type_: String,
        /// `True`, `False` or `Unknown`.
        pub status: String,
        /// CamelCase reason (`Analyzed`, `RegistryUnreachable`, `Unauthorized` …).
        pub reason: String,
        /// What happened, in words.
        pub message: String,
        /// RFC 3339 time of the last change of `status`.
        pub last_transition_time: String,
    }

    /// Totals over the distinct images of the workload (an image used by two containers is
    /// pulled once and counted once).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    #[schemars(transform = summary_totals_schema)]
    pub struct ReportSummary {
        /// Distinct images analyzed.
        pub images: u32,
        #[serde(flatten)]
        pub totals: Totals,
        /// `pullBytes`, human-readable (SI units).
        pub pull_size: String,
        /// `reclaimableBytes`, human-readable.
        pub reclaimable: String,
        /// `wastedBytes`, human-readable.
        pub wasted: String,
        /// `efficiency` as a percentage.
        pub efficiency_percent: String,
    }

    impl ReportSummary {
        /// The summary of `images` distinct images whose totals add up to `totals`, with the
        /// human-readable figures the printer columns show.
        pub fn new(images: u32, totals: Totals) -> Self {
            ReportSummary {
                images,
                pull_size: format::size(totals.pull_bytes),
                reclaimable: format::size(totals.reclaimable_bytes),
                wasted: format::size(totals.wasted_bytes),
                efficiency_percent: format::percent(totals.efficiency),
                totals,
            }
        }
    }

    /// The totals read as the summary's own fields (`summary.sizeBytes`), as they appear in
    /// the resource, each described as the sum it is over the distinct images.
    fn summary_totals_schema(schema: &mut schemars::Schema) {
        let totals = schemars::schema_for!(Totals);
        let (Some(totals), Some(properties)) = (
            totals.get("properties").and_then(|p| p.as_object()),
            schema.get_mut("properties").and_then(|p| p.as_object_mut()),
        ) else {
            return;
        };
        for (name, total) in totals {
            let Some(property) = properties.get_mut(name).and_then(|p| p.as_object_mut()) else {
                continue;
            };
            let description = if name == "efficiency" {
                "`finalBytes / sizeBytes` over the distinct images (1.0 when nothing ships).".into()
            } else {
                let one = total
                    .get("description")
                    .and_then(|d| d.as_str())
                    .unwrap_or_default();
                format!("{one} Summed over the workload's distinct images.")
                    .trim_start()
                    .to_string()
            };
            property.insert("description".into(), description.into());
        }
    }

    /// One container's image and what was found in it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct ContainerReport {
        /// The container's name.
        pub name: String,
        /// Whether it is an init container.
        #[serde(default)]
        pub init: bool,
        /// The findings, once analyzed: the same fields `imagebloat scan --output json` prints.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        pub findings: Option<ImageFindings>,
        /// Why the image could not be analyzed, when it could not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub error: Option<String>,
        /// Machine-readable form of `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reason: Option<String>,
        /// The image the container ran before this one, and how the change moved its figures
        /// (kept until the image changes again).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub previous: Option<PreviousImage>,
    }

    /// The image a container ran before its current one: its figures then, and the change.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct PreviousImage {
        /// The previous image as referenced (normalised).
        pub image: String,
        /// Digest of the previous image's manifest.
        pub digest: String,
        /// The previous image's `pullBytes`.
        pub pull_bytes: u64,
        /// The previous image's `sizeBytes`.
        pub size_bytes: u64,
        /// The previous image's `reclaimableBytes`.
        pub reclaimable_bytes: u64,
        /// The previous image's `reclaimablePullBytes`.
        pub reclaimable_pull_bytes: u64,
        /// `pullBytes` now minus `pullBytes` before: what a node downloads more (negative when
        /// the image shrank).
        pub pull_bytes_delta: i64,
        /// `reclaimableBytes` now minus `reclaimableBytes` before.
        pub reclaimable_bytes_delta: i64,
        /// `reclaimablePullBytes` now minus `reclaimablePullBytes` before.
        pub reclaimable_pull_bytes_delta: i64,
        /// RFC 3339 time the operator first saw the container run its current image.
        pub changed_at: String,
    }
}

/// Shortens a report, least useful first, until its status serializes to at most `budget` bytes
/// (for any budget above a few KiB): every string is capped, then the lists of each container's
/// findings are shortened, and last, containers beyond the first that fit are left out, which a
/// `Truncated` condition states with their number. The summary is never touched, so it keeps
/// covering every container.
pub fn fit_report(status: &mut crd::ImageReportStatus, budget: usize) {
    for c in &mut status.containers {
        cap_container(c);
    }
    for c in &mut status.conditions {
        truncate(&mut c.type_, MAX_FIELD);
        truncate(&mut c.status, MAX_FIELD);
        truncate(&mut c.reason, MAX_FIELD);
        truncate(&mut c.message, MAX_CONDITION_MESSAGE);
        truncate(&mut c.last_transition_time, MAX_FIELD);
    }
    type Step = fn(&mut ImageFindings);
    let steps: [Step; 8] = [
        |f| f.analysis.hidden_files.truncate(5),
        |f| {
            f.analysis
                .categories
                .iter_mut()
                .for_each(|c| c.examples.truncate(1))
        },
        |f| f.analysis.recommendations.truncate(5),
        |f| {
            for l in &mut f.analysis.layers {
                truncate_opt(&mut l.created_by, 80);
                truncate_opt(&mut l.skipped, 80);
            }
        },
        |f| f.analysis.hidden_files.clear(),
        |f| f.analysis.layers.truncate(16),
        |f| f.analysis.recommendations.truncate(1),
        |f| f.analysis.notes.truncate(1),
    ];
    for step in steps {
        if serialized_len_within(status, budget).is_some() {
            return;
        }
        for c in &mut status.containers {
            if let Some(f) = &mut c.findings {
                step(f);
            }
        }
    }
    if serialized_len_within(status, budget).is_none() {
        keep_containers_that_fit(status, budget);
    }
}

/// The type of the condition that says containers were left out of a report.
pub const TRUNCATED_CONDITION: &str = "Truncated";

/// Keeps the first containers that fit in `budget` along with everything else, and a
/// `Truncated` condition with how many were left out.
fn keep_containers_that_fit(status: &mut crd::ImageReportStatus, budget: usize) {
    let total = status.containers.len();
    let containers = std::mem::take(&mut status.containers);
    // Counted with `total` for both numbers: the real condition is never longer.
    status
        .conditions
        .push(truncated_condition(total, total, status));
    let mut used = serialized_len_within(status, budget).unwrap_or(usize::MAX);
    let mut kept = 0;
    let mut containers = containers;
    if let Some(first) = containers.first()
        && serialized_len_within(first, budget.saturating_sub(used)).is_none()
    {
        // Even one container is too large (multi-byte or escaped text): its lists go, its
        // totals stay.
        containers.iter_mut().for_each(only_totals);
    }
    for c in &containers {
        let room = budget.saturating_sub(used);
        match serialized_len_within(c, room.saturating_sub(1)) {
            // One byte more for the comma between entries.
            Some(len) => used += len + 1,
            None => break,
        }
        kept += 1;
    }
    status.conditions.pop();
    status.containers = containers;
    status.containers.truncate(kept);
    if kept < total {
        let condition = truncated_condition(kept, total, status);
        status.conditions.push(condition);
    }
}

/// Leaves findings with their totals and single fields only.
fn only_totals(c: &mut crd::ContainerReport) {
    if let Some(f) = &mut c.findings {
        let a = &mut f.analysis;
        a.layers.clear();
        a.hidden_files.clear();
        a.recommendations.clear();
        a.notes.clear();
        a.categories.iter_mut().for_each(|c| c.examples.clear());
    }
}

fn truncated_condition(
    kept: usize,
    total: usize,
    status: &crd::ImageReportStatus,
) -> crd::Condition {
    let time = status
        .conditions
        .first()
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_default();
    crd::Condition {
        type_: TRUNCATED_CONDITION.into(),
        status: "True".into(),
        reason: "TooManyContainers".into(),
        message: format!(
            "{} of {total} containers left out to keep the report small; the summary covers all",
            total - kept
        ),
        last_transition_time: time,
    }
}

fn cap_container(c: &mut crd::ContainerReport) {
    truncate(&mut c.name, MAX_FIELD);
    if let Some(p) = &mut c.previous {
        truncate(&mut p.image, MAX_REFERENCE);
        truncate(&mut p.digest, MAX_FIELD);
        truncate(&mut p.changed_at, MAX_FIELD);
    }
    truncate_opt(&mut c.error, MAX_ERROR);
    truncate_opt(&mut c.reason, MAX_FIELD);
    if let Some(f) = &mut c.findings {
        cap_findings(f);
    }
}

/// The bytes `value` serializes to as JSON, or `None` when more than `limit` (serializing stops
/// there, so a check costs at most `limit` bytes of work however large the value).
pub fn serialized_len_within<T: Serialize>(value: &T, limit: usize) -> Option<usize> {
    struct Counter {
        written: usize,
        limit: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written += buf.len();
            if self.written > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { written: 0, limit };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.written)
}

#[cfg(test)]
mod tests {
    use super::crd::{ContainerReport, ImageReportStatus};
    use super::*;
    use crate::analysis::{HiddenFile, LayerSummary, Recommendation, Totals};

    fn pathological(n: usize) -> ImageFindings {
        let long = "x".repeat(400);
        let analysis = ImageAnalysis {
            totals: Totals::of_image(1, 2, 1, 0, 1),
            junk_bytes: 0,
            layers: (0..n)
                .map(|i| LayerSummary {
                    index: i as u32,
                    digest: format!("sha256:{i:064}"),
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    pull_bytes: 1,
                    uncompressed_bytes: 1,
                    size_bytes: 1,
                    file_count: 1,
                    wasted_bytes: 0,
                    junk_bytes: 0,
                    created_by: Some(long.clone()),
                    skipped: None,
                })
                .collect(),
            hidden_file_count: n as u64,
            hidden_files: (0..n)
                .map(|i| HiddenFile {
                    path: format!("/{long}/{i}"),
                    size_bytes: 1,
                    layer: 0,
                    hidden_by_layer: 1,
                    reason: "deleted".into(),
                })
                .collect(),
            categories: vec![],
            recommendations: (0..n)
                .map(|i| Recommendation {
                    kind: "cleanup-in-same-layer".into(),
                    message: format!("{long} {i}"),
                    saved_bytes: 1,
                    layer: Some(0),
                    created_by: Some(long.clone()),
                    counted: Vec::new(),
                })
                .collect(),
            os: None,
            base_image: None,
            notes: vec![],
        };
        let mut f = ImageFindings {
            image: "registry.example/app@sha256:0".into(),
            digest: "sha256:0".into(),
            index_digest: None,
            platform: "linux/amd64".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            analyzer_version: ANALYZER_VERSION.into(),
            downloaded_bytes: 0,
            analysis,
        };
        cap(&mut f.analysis);
        f
    }

    #[test]
    fn a_report_of_pathological_images_stays_under_64_kib() {
        let mut status = ImageReportStatus {
            containers: (0..8)
                .map(|i| ContainerReport {
                    name: format!("c{i}"),
                    init: false,
                    findings: Some(pathological(500)),
                    error: None,
                    reason: None,
                    previous: None,
                })
                .collect(),
            ..Default::default()
        };
        let before = serde_json::to_vec(&status).unwrap().len();
        assert!(
            before > 64 << 10,
            "the fixture is large to begin with: {before}"
        );
        fit_report(&mut status, 60 << 10);
        let after = serde_json::to_vec(&status).unwrap().len();
        assert!(after <= 60 << 10, "{after} bytes");
        // Totals are kept whatever the lists lose.
        let f = status.containers[0].findings.as_ref().unwrap();
        assert_eq!(
            (f.analysis.totals.size_bytes, f.analysis.hidden_file_count),
            (2, 500)
        );
    }
}

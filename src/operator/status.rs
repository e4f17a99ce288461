//! A report's status from its containers' outcomes: the totals over distinct images and the
//! `Ready` condition. Pure: the time is a parameter.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::analyze::ContainerFailure;
use crate::report::crd::{Condition, ContainerReport, ImageReportStatus, ReportSummary};
use crate::report::{ImageFindings, MAX_CONDITION_MESSAGE, MAX_ERROR, fit_report};

/// Reports are kept below this many bytes of status (the API server allows about 1.5 MB).
pub const REPORT_BUDGET: usize = 60 << 10;

/// A container whose image could not be analyzed, and why.
#[derive(Debug, Clone)]
pub struct FailedContainer {
    pub name: String,
    pub failure: ContainerFailure,
}

/// The status for these containers (fit to `REPORT_BUDGET`), keeping the previous `Ready`
/// condition's time when its status stays.
pub fn new_status(
    containers: Vec<ContainerReport>,
    failed: &[FailedContainer],
    previous: Option<&ImageReportStatus>,
    now: Timestamp,
) -> ImageReportStatus {
    let mut status = ImageReportStatus {
        summary: Some(summarize(&containers)),
        containers,
        conditions: vec![ready_condition(failed, previous, now)],
    };
    fit_report(&mut status, REPORT_BUDGET);
    status
}

/// Totals over distinct images (by manifest digest): an image two containers run is pulled once
/// and counted once. Containers without findings count nothing.
pub fn summarize(containers: &[ContainerReport]) -> ReportSummary {
    let mut distinct: BTreeMap<&str, &ImageFindings> = BTreeMap::new();
    for c in containers {
        if let Some(f) = &c.findings {
            distinct.entry(f.digest.as_str()).or_insert(f);
        }
    }
    ReportSummary::new(
        distinct.len() as u32,
        distinct.values().map(|f| &f.analysis.totals).sum(),
    )
}

/// `Ready`: `True` when every container's image was analyzed, else `False` with the first
/// failure's reason and every failure's message. The transition time is `now` unless the previous
/// `Ready` had the same status.
pub fn ready_condition(
    failed: &[FailedContainer],
    previous: Option<&ImageReportStatus>,
    now: Timestamp,
) -> Condition {
    let (status, reason, message) = match failed.first() {
        None => (
            "True".to_string(),
            "Analyzed".to_string(),
            "every container's image was analyzed".to_string(),
        ),
        Some(first) => (
            "False".to_string(),
            first.failure.reason.clone(),
            failures_message(failed),
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
        last_transition_time: kept_time.unwrap_or_else(|| now.to_string()),
    }
}

/// `container <name>: <message>` for each failure, joined by `; `, built no longer than a
/// condition's message is kept (a Pod may have a thousand failing containers).
fn failures_message(failed: &[FailedContainer]) -> String {
    let mut message = String::new();
    for f in failed {
        if message.len() > MAX_CONDITION_MESSAGE * 4 {
            break;
        }
        if !message.is_empty() {
            message.push_str("; ");
        }
        let text: String = f.failure.message.chars().take(MAX_ERROR).collect();
        message.push_str(&format!("container {}: {text}", f.name));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Findings of an image with these totals (`reclaimable` = `wasted`; no junk).
    fn findings(digest: &str, pull: u64, size: u64, final_bytes: u64) -> ImageFindings {
        let wasted = size - final_bytes;
        serde_json::from_value(json!({
            "image": format!("r/app@{digest}"), "digest": digest, "platform": "linux/amd64",
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "analyzerVersion": "1",
            "pullBytes": pull, "sizeBytes": size, "finalBytes": final_bytes,
            "wastedBytes": wasted, "reclaimableBytes": wasted, "reclaimablePullBytes": wasted / 2,
            "efficiency": final_bytes as f64 / size as f64, "junkBytes": 0, "layers": [],
            "hiddenFileCount": 0, "hiddenFiles": [], "categories": [], "recommendations": []
        }))
        .expect("valid findings")
    }

    fn analyzed(name: &str, findings: ImageFindings) -> ContainerReport {
        ContainerReport {
            name: name.into(),
            init: false,
            findings: Some(findings),
            error: None,
            reason: None,
            previous: None,
        }
    }

    fn failed(name: &str, reason: &str, message: &str) -> FailedContainer {
        FailedContainer {
            name: name.into(),
            failure: ContainerFailure {
                reason: reason.into(),
                message: message.into(),
                transient: true,
            },
        }
    }

    fn unanalyzed(f: &FailedContainer) -> ContainerReport {
        ContainerReport {
            name: f.name.clone(),
            init: false,
            findings: None,
            error: Some(f.failure.message.clone()),
            reason: Some(f.failure.reason.clone()),
            previous: None,
        }
    }

    fn time(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn the_summary_counts_each_distinct_image_once_and_failed_containers_not_at_all() {
        let down = failed("sidecar", "RegistryUnreachable", "connection refused");
        let containers = vec![
            analyzed(
                "app",
                findings("sha256:aa", 40_000_000, 100_000_000, 80_000_000),
            ),
            analyzed(
                "worker",
                findings("sha256:aa", 40_000_000, 100_000_000, 80_000_000),
            ),
            analyzed(
                "init",
                findings("sha256:bb", 10_000_000, 100_000_000, 60_000_000),
            ),
            unanalyzed(&down),
        ];
        let s = summarize(&containers);
        assert_eq!(s.images, 2);
        assert_eq!(s.totals.pull_bytes, 50_000_000);
        assert_eq!(s.totals.size_bytes, 200_000_000);
        assert_eq!(s.totals.final_bytes, 140_000_000);
        assert_eq!(s.totals.wasted_bytes, 60_000_000);
        assert_eq!(s.totals.reclaimable_bytes, 60_000_000);
        assert_eq!(s.totals.reclaimable_pull_bytes, 30_000_000);
        assert_eq!(s.totals.efficiency, 0.7);
        assert_eq!(s.efficiency_percent, "70.0%");
        assert_eq!(
            (
                s.pull_size.as_str(),
                s.reclaimable.as_str(),
                s.wasted.as_str()
            ),
            ("50.0 MB", "60.0 MB", "60.0 MB")
        );
    }

    #[test]
    fn a_workload_without_analyzed_images_is_fully_efficient() {
        let down = failed("app", "Unauthorized", "401");
        let s = summarize(&[unanalyzed(&down)]);
        assert_eq!(
            (s.images, s.totals.size_bytes, s.totals.efficiency),
            (0, 0, 1.0)
        );
        assert_eq!(s.efficiency_percent, "100.0%");
    }

    #[test]
    fn ready_is_false_with_the_first_reason_and_every_failed_containers_message() {
        let now = time("2026-11-30T10:00:00Z");
        let failures = [
            failed("app", "Unauthorized", "r/app:1: 401"),
            failed(
                "sidecar",
                "RegistryUnreachable",
                "r/side:2: connection refused",
            ),
        ];
        let c = ready_condition(&failures, None, now);
        assert_eq!((c.type_.as_str(), c.status.as_str()), ("Ready", "False"));
        assert_eq!(c.reason, "Unauthorized");
        assert_eq!(
            c.message,
            "container app: r/app:1: 401; container sidecar: r/side:2: connection refused"
        );
        assert_eq!(c.last_transition_time, now.to_string());

        let c = ready_condition(&[], None, now);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("True", "Analyzed", "every container's image was analyzed")
        );
    }

    #[test]
    fn ready_keeps_its_transition_time_while_its_status_stays_and_takes_now_when_it_changes() {
        let first = time("2026-11-30T10:00:00Z");
        let later = time("2026-11-30T11:00:00Z");
        let previous = |failures: &[FailedContainer]| new_status(vec![], failures, None, first);
        let down = [failed("app", "RegistryUnreachable", "connection refused")];
        let other = [failed("app", "Unauthorized", "401")];

        let still_ready = ready_condition(&[], Some(&previous(&[])), later);
        assert_eq!(still_ready.last_transition_time, first.to_string());
        let still_failing = ready_condition(&other, Some(&previous(&down)), later);
        assert_eq!(
            still_failing.last_transition_time,
            first.to_string(),
            "a new reason is no transition"
        );
        assert_eq!(still_failing.reason, "Unauthorized");

        let recovered = ready_condition(&[], Some(&previous(&down)), later);
        assert_eq!(recovered.last_transition_time, later.to_string());
        let broke = ready_condition(&down, Some(&previous(&[])), later);
        assert_eq!(broke.last_transition_time, later.to_string());
    }
}

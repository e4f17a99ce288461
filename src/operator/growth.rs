//! Regressions: when a container's image changes, its report keeps what it ran before (digest
//! and figures) and the change, and the workload gets an Event: `ImageGrew` (Warning) when the
//! pull size grew by more than `--growth-threshold`, `ImageShrank` when it shrank.
//!
//! The history lives in the report: the previous figures come from the status last written
//! (read back from the cluster at start), so a restart keeps them. A change is announced once,
//! in the reconcile that first writes its digest pair; a restart finds the pair in the report and
//! announces nothing again.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::context::Context;
use super::workload::Workload;
use crate::format;
use crate::report::ImageFindings;
use crate::report::crd::{ContainerReport, ImageReportStatus, PreviousImage};

/// The event reason of a pull size that grew past the threshold.
pub const IMAGE_GREW: &str = "ImageGrew";
/// The event reason of a pull size that shrank.
pub const IMAGE_SHRANK: &str = "ImageShrank";

/// A container's change of image, first seen in this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub container: String,
    /// What it ran before, and the deltas.
    pub previous: PreviousImage,
    /// Digest of the image it runs now.
    pub digest: String,
    /// `pullBytes` of the image it runs now.
    pub pull_bytes: u64,
    /// `reclaimableBytes` of the image it runs now.
    pub reclaimable_bytes: u64,
}

impl Change {
    /// How much the pull size grew, as a share of what it was (`0.25` for +25%; negative when it
    /// shrank; infinite when an empty image became a non-empty one).
    pub fn pull_growth(&self) -> f64 {
        growth(self.previous.pull_bytes, self.pull_bytes)
    }
}

/// `(after - before) / before`; 0 when both are 0, infinite when only `before` is.
pub fn growth(before: u64, after: u64) -> f64 {
    match (before, after) {
        (0, 0) => 0.0,
        (0, _) => f64::INFINITY,
        _ => (after as f64 - before as f64) / before as f64,
    }
}

/// Fills each container's `previous` from the status last written (`before`), and returns the
/// changes this reconcile sees first: a container whose image has another digest than the one
/// last reported for it, on the same platform (a Pod moved to a Node of another architecture
/// runs the same image). Otherwise the container keeps the previous image it had.
pub fn track(
    containers: &mut [ContainerReport],
    before: Option<&ImageReportStatus>,
    now: Timestamp,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let Some(before) = before else {
        return changes;
    };
    for c in containers {
        let Some(prior) = before.containers.iter().find(|p| p.name == c.name) else {
            continue;
        };
        c.previous = prior.previous.clone();
        let (Some(then), Some(current)) = (&prior.findings, &c.findings) else {
            continue;
        };
        if then.digest == current.digest || then.platform != current.platform {
            continue;
        }
        let previous = previous_image(then, current, now);
        c.previous = Some(previous.clone());
        let totals = &current.analysis.totals;
        changes.push(Change {
            container: c.name.clone(),
            previous,
            digest: current.digest.clone(),
            pull_bytes: totals.pull_bytes,
            reclaimable_bytes: totals.reclaimable_bytes,
        });
    }
    changes
}

fn delta(before: u64, after: u64) -> i64 {
    let d = i128::from(after) - i128::from(before);
    d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn previous_image(then: &ImageFindings, now: &ImageFindings, at: Timestamp) -> PreviousImage {
    let (a, b) = (&then.analysis.totals, &now.analysis.totals);
    PreviousImage {
        image: then.image.clone(),
        digest: then.digest.clone(),
        pull_bytes: a.pull_bytes,
        size_bytes: a.size_bytes,
        reclaimable_bytes: a.reclaimable_bytes,
        reclaimable_pull_bytes: a.reclaimable_pull_bytes,
        pull_bytes_delta: delta(a.pull_bytes, b.pull_bytes),
        reclaimable_bytes_delta: delta(a.reclaimable_bytes, b.reclaimable_bytes),
        reclaimable_pull_bytes_delta: delta(a.reclaimable_pull_bytes, b.reclaimable_pull_bytes),
        changed_at: at.to_string(),
    }
}

/// An Event to publish on the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowthEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The Events for these changes: one `ImageGrew` (Warning) naming every container whose pull
/// size grew by more than `threshold` (a share: 0.1 is 10%), one `ImageShrank` naming every
/// container whose pull size shrank. Notes end with the report's name; at most 1 KiB each.
pub fn events(changes: &[Change], threshold: f64, report_name: &str) -> Vec<GrowthEvent> {
    let grew: Vec<&Change> = changes
        .iter()
        .filter(|c| c.pull_growth() > threshold)
        .collect();
    let shrank: Vec<&Change> = changes
        .iter()
        .filter(|c| c.previous.pull_bytes_delta < 0)
        .collect();
    [(true, IMAGE_GREW, grew), (false, IMAGE_SHRANK, shrank)]
        .into_iter()
        .filter(|(_, _, list)| !list.is_empty())
        .map(|(warning, reason, list)| {
            let mut note = list
                .iter()
                .map(|c| describe(c))
                .collect::<Vec<_>>()
                .join("; ");
            note.push_str(&format!(" (imagereport/{report_name})"));
            format::truncate_bytes(&mut note, 1024);
            GrowthEvent {
                warning,
                reason,
                note,
            }
        })
        .collect()
}

/// `container app: pull 1.0 MB -> 1.5 MB (+500.0 kB, +50.0%), reclaimable 0 B -> 400.0 kB;
/// sha256:0123456789ab -> sha256:ba9876543210`.
fn describe(c: &Change) -> String {
    let p = &c.previous;
    let growth = c.pull_growth();
    let percent = if growth.is_finite() {
        format!(
            ", {}{}",
            if growth >= 0.0 { "+" } else { "" },
            format::percent(growth)
        )
    } else {
        String::new()
    };
    format!(
        "container {}: pull {} -> {} ({}{percent}), reclaimable {} -> {}; {} -> {}",
        c.container,
        format::size(p.pull_bytes),
        format::size(c.pull_bytes),
        signed_size(p.pull_bytes_delta),
        format::size(p.reclaimable_bytes),
        format::size(c.reclaimable_bytes),
        short_digest(&p.digest),
        short_digest(&c.digest),
    )
}

fn signed_size(bytes: i64) -> String {
    let sign = if bytes < 0 { "-" } else { "+" };
    format!("{sign}{}", format::size(bytes.unsigned_abs()))
}

/// `sha256:` and the first 12 hex digits.
fn short_digest(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

/// Publishes the Events of these changes on the workload, each a new Event (two changes in a row
/// are two Events, each with its own note). Failures are logged: the report has the change.
pub async fn publish(ctx: &Context, w: &Workload, changes: &[Change]) {
    if changes.is_empty() {
        return;
    }
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &w.namespace);
    for e in events(changes, ctx.config.growth_threshold, &w.report_name()) {
        let now = Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name(&w.name, now)),
                namespace: Some(w.namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(e.reason.into()),
            note: Some(e.note),
            action: Some("Analyze".into()),
            reporting_controller: Some("imagebloat".into()),
            reporting_instance: Some(ctx.config.identity.clone()),
            regarding: Some(ObjectReference {
                api_version: Some(w.api_version.clone()),
                kind: Some(w.kind.clone()),
                name: Some(w.name.clone()),
                namespace: Some(w.namespace.clone()),
                uid: Some(w.uid.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        if !ctx.leadership.holds() {
            return;
        }
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(namespace = %w.namespace, workload = %w.name, reason = e.reason, %error, "cannot publish event");
        }
    }
}

/// `NAME.HEX` (the time in nanoseconds), as client-go names Events, with the workload's name cut
/// so that the whole is a valid object name.
fn event_name(workload: &str, at: Timestamp) -> String {
    let suffix = format!("{:x}", at.as_nanosecond());
    let keep = super::workload::MAX_OBJECT_NAME - suffix.len() - 1;
    let start: String = workload.chars().take(keep).collect();
    let start = start.trim_end_matches(['.', '-']);
    if start.is_empty() {
        suffix
    } else {
        format!("{start}.{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn findings(digest: &str, pull: u64, reclaimable: u64) -> ImageFindings {
        serde_json::from_value(json!({
            "image": format!("r/app@{digest}"), "digest": digest, "platform": "linux/amd64",
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "analyzerVersion": "1",
            "pullBytes": pull, "sizeBytes": pull * 2, "finalBytes": pull * 2 - reclaimable,
            "wastedBytes": reclaimable, "reclaimableBytes": reclaimable,
            "reclaimablePullBytes": reclaimable / 2, "efficiency": 0.5, "junkBytes": 0,
            "layers": [], "hiddenFileCount": 0, "hiddenFiles": [], "categories": [],
            "recommendations": []
        }))
        .expect("valid findings")
    }

    fn container(name: &str, f: Option<ImageFindings>) -> ContainerReport {
        ContainerReport {
            name: name.into(),
            init: false,
            findings: f,
            error: None,
            reason: None,
            previous: None,
        }
    }

    fn status(containers: Vec<ContainerReport>) -> ImageReportStatus {
        ImageReportStatus {
            containers,
            ..Default::default()
        }
    }

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_digest_keeps_the_previous_figures_and_the_deltas_then_carries_them() {
        let t1 = at("2026-11-30T10:00:00Z");
        let before = status(vec![container("app", Some(findings(A, 1_000, 100)))]);
        let mut now = vec![container("app", Some(findings(B, 1_500, 400)))];
        let changes = track(&mut now, Some(&before), t1);
        assert_eq!(changes.len(), 1);
        let p = now[0].previous.clone().unwrap();
        assert_eq!(
            (
                p.digest.as_str(),
                p.pull_bytes,
                p.reclaimable_bytes,
                p.size_bytes
            ),
            (A, 1_000, 100, 2_000)
        );
        assert_eq!(
            (
                p.pull_bytes_delta,
                p.reclaimable_bytes_delta,
                p.reclaimable_pull_bytes_delta
            ),
            (500, 300, 150)
        );
        assert_eq!(p.changed_at, "2026-11-30T10:00:00Z");
        assert_eq!(changes[0].pull_growth(), 0.5);

        // The next reconcile (same digest; or a restart reading the report back) keeps the
        // history and sees no new change.
        let written = status(now);
        let mut again = vec![container("app", Some(findings(B, 1_500, 400)))];
        let later = at("2026-11-30T11:00:00Z");
        assert!(track(&mut again, Some(&written), later).is_empty());
        assert_eq!(again[0].previous.as_ref(), Some(&p));
        // Nor while the image cannot be analyzed.
        let mut failing = vec![container("app", None)];
        assert!(track(&mut failing, Some(&written), later).is_empty());
        assert_eq!(failing[0].previous.as_ref(), Some(&p));

        // Another change replaces it.
        let mut next = vec![container("app", Some(findings(C, 500, 0)))];
        let changes = track(&mut next, Some(&written), later);
        let p = next[0].previous.clone().unwrap();
        assert_eq!(
            (p.digest.as_str(), p.pull_bytes, p.pull_bytes_delta),
            (B, 1_500, -1_000)
        );
        assert_eq!(p.reclaimable_bytes_delta, -400);
        assert!((changes[0].pull_growth() + 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn no_history_no_change_and_another_platform_is_no_change() {
        let mut now = vec![container("app", Some(findings(B, 1, 0)))];
        assert!(track(&mut now, None, Timestamp::UNIX_EPOCH).is_empty());
        assert!(now[0].previous.is_none());
        // A new container has no history either.
        let before = status(vec![container("other", Some(findings(A, 1, 0)))]);
        assert!(track(&mut now, Some(&before), Timestamp::UNIX_EPOCH).is_empty());
        // The arm64 manifest of the same image is not a new image.
        let mut arm = findings(A, 1, 0);
        arm.platform = "linux/arm64".into();
        let before = status(vec![container("app", Some(arm))]);
        assert!(track(&mut now, Some(&before), Timestamp::UNIX_EPOCH).is_empty());
    }

    fn change(before: u64, after: u64) -> Change {
        let mut now = vec![container("app", Some(findings(B, after, 0)))];
        let before = status(vec![container("app", Some(findings(A, before, 0)))]);
        track(&mut now, Some(&before), Timestamp::UNIX_EPOCH)
            .pop()
            .unwrap()
    }

    #[test]
    fn grew_past_the_threshold_is_a_warning_and_any_shrink_is_normal() {
        let reasons = |c: Change, threshold: f64| -> Vec<(&'static str, bool)> {
            events(&[c], threshold, "deployment-web")
                .into_iter()
                .map(|e| (e.reason, e.warning))
                .collect()
        };
        assert_eq!(reasons(change(1_000, 1_101), 0.1), [(IMAGE_GREW, true)]);
        assert_eq!(
            reasons(change(1_000, 1_100), 0.1),
            [],
            "exactly 10% is not past 10%"
        );
        assert_eq!(reasons(change(1_000, 1_050), 0.1), []);
        assert_eq!(reasons(change(1_000, 1_050), 0.0), [(IMAGE_GREW, true)]);
        assert_eq!(reasons(change(1_000, 999), 0.1), [(IMAGE_SHRANK, false)]);
        assert_eq!(reasons(change(0, 10), 0.1), [(IMAGE_GREW, true)]);
        assert_eq!(reasons(change(1_000, 1_000), 0.0), []);
    }

    #[test]
    fn event_names_are_valid_object_names_whatever_the_workloads_name() {
        use crate::operator::workload::is_dns_subdomain;
        let t = at("2026-11-30T10:00:00Z");
        assert_eq!(event_name("web", t), format!("web.{:x}", t.as_nanosecond()));
        for name in [
            "a".repeat(253),
            format!("{}.b", "a".repeat(240)),
            "x-".repeat(120),
        ] {
            let e = event_name(&name, t);
            assert!(is_dns_subdomain(&e), "{e}");
        }
    }

    #[test]
    fn the_note_gives_both_sizes_the_change_and_the_digests() {
        let e = events(&[change(1_000_000, 1_500_000)], 0.1, "deployment-web");
        assert_eq!(
            e[0].note,
            "container app: pull 1.0 MB -> 1.5 MB (+500.0 kB, +50.0%), reclaimable 0 B -> 0 B; \
             sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb (imagereport/deployment-web)"
        );
        let e = events(&[change(2_000_000, 500_000)], 0.1, "deployment-web");
        assert!(
            e[0].note
                .contains("pull 2.0 MB -> 500.0 kB (-1.5 MB, -75.0%)"),
            "{}",
            e[0].note
        );
        let many: Vec<Change> = (0..100).map(|_| change(1, 1_000)).collect();
        let e = events(&many, 0.1, "deployment-web");
        assert!(e[0].note.len() <= 1024);
    }
}

//! What a reconcile tells the cluster when a workload's report changed: the `ImageReport`
//! (server-side apply, owned by the workload) and an Event on the workload.
//!
//! Every write (the report, its status, the Event) first checks `ctx.leadership`: with leader
//! election, a replica whose renew deadline passed without a successful renew writes nothing
//! more, so a rollout or a stalled leader never makes two writers (see `leader`).

use std::collections::BTreeMap;

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::context::Context;
use super::status::FailedContainer;
use super::workload::Workload;
use crate::report::crd::{ImageReport, ImageReportSpec, ImageReportStatus};

/// The field manager of every write.
pub const MANAGER: &str = "imagebloat";

const LABEL_KIND: &str = "imagebloat.dev/workload-kind";
const LABEL_NAME: &str = "imagebloat.dev/workload-name";

/// Writes the workload's report with server-side apply (the object, then its status); counts
/// the write in the metrics.
pub async fn write_report(
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
        still_leader(ctx)?;
        api.patch(&name, &params, &Patch::Apply(&report)).await?;
        let body = json!({
            "apiVersion": crate::operator::report_api_version(),
            "kind": "ImageReport",
            "status": status,
        });
        still_leader(ctx)?;
        api.patch_status(&name, &params, &Patch::Apply(&body)).await
    }
    .await;
    ctx.metrics
        .reports_written
        .with_label_values(&[if result.is_ok() { "success" } else { "error" }])
        .inc();
    result.map(drop)
}

/// An error unless this replica may write now.
fn still_leader(ctx: &Context) -> Result<(), kube::Error> {
    if ctx.leadership.holds() {
        Ok(())
    } else {
        Err(kube::Error::Service(
            "not the leader any more: write skipped".into(),
        ))
    }
}

/// A label value: at most 63 characters, starting and ending alphanumeric.
fn label_value(s: &str) -> String {
    let cut: String = s.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Tells the workload's readers (`kubectl describe`, `kubectl events`) what its new report says:
/// the figures, or which containers could not be analyzed and why. Only when the report changed.
pub async fn publish_event(
    ctx: &Context,
    w: &Workload,
    status: &ImageReportStatus,
    failed: &[FailedContainer],
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
    if still_leader(ctx).is_err() {
        return;
    }
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
    failed: &[FailedContainer],
) -> WorkloadEvent {
    let report = format!("imagereport/{}", w.report_name());
    let mut event = if !failed.is_empty() {
        WorkloadEvent {
            warning: true,
            reason: "AnalysisFailed",
            note: failed
                .iter()
                .map(|f| {
                    let (name, f) = (&f.name, &f.failure);
                    format!("container {name}: {}: {}", f.reason, f.message)
                })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::analyze::ContainerFailure;
    use crate::report::crd::ReportSummary;

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

        let failure = |reason: &str, message: &str| FailedContainer {
            name: "app".into(),
            failure: ContainerFailure {
                reason: reason.into(),
                message: message.into(),
                transient: true,
            },
        };
        let failed = vec![failure(
            "RegistryUnreachable",
            "manifest r/app:1: connection refused",
        )];
        let e = workload_event(&web(), &status, &failed);
        assert!(e.warning);
        assert_eq!(e.reason, "AnalysisFailed");
        assert_eq!(
            e.note,
            "container app: RegistryUnreachable: manifest r/app:1: connection refused"
        );

        // The API takes at most 1 KiB of note; multi-byte text is cut on a character boundary.
        let long = vec![failure("X", &"é".repeat(2000))];
        let e = workload_event(&web(), &status, &long);
        assert!(
            e.note.len() <= 1024 && e.note.ends_with("..."),
            "{}",
            e.note.len()
        );
    }
}

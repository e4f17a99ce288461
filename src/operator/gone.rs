//! How a workload without Pods learns that it is gone, without polling.
//!
//! A workload scaled to zero has no Pod events; asking the API server every so often whether it
//! still exists would cost a request per such workload forever. Its report, though, is owned by
//! the workload (an owner reference), so when the workload is deleted the garbage collector
//! deletes the report: one metadata-only watch of ImageReports (names, owners; no findings)
//! tells of every workload that went, whatever its kind, for one watch connection in total.
//! A deleted report's workload is put on the work queue after forgetting its written status:
//! its reconcile finds it gone and forgets it, or, if it still has Pods (someone deleted only
//! the report), writes the report again.
//!
//! Watching the workload kinds themselves would need a watch per kind (and RBAC for each,
//! including custom kinds), for the same answer.

use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};

use super::context::{Context, report_key};
use super::queue::Queue;
use super::workload::{Workload, controller_of};
use crate::report::crd::ImageReport;

/// Follows report deletions until the process ends, pushing each report's workload onto `work`.
pub async fn follow_report_deletions(ctx: Arc<Context>, work: Arc<Queue<Workload>>) {
    let api: Api<PartialObjectMeta<ImageReport>> = match ctx.config.namespaces.as_slice() {
        [one] => Api::namespaced(ctx.client.clone(), one),
        _ => Api::all(ctx.client.clone()),
    };
    let config = watcher::Config::default().any_semantic();
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Delete(report)) => {
                if let Some(w) = owner_of(&report) {
                    if !ctx.cluster.namespaces.watches(&w.namespace) {
                        continue;
                    }
                    tracing::debug!(namespace = %w.namespace, workload = %w.name, "report deleted");
                    ctx.written
                        .remove(&report_key(&w.namespace, &w.kind, &w.uid));
                    work.push(w);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(resource = "imagereports", error = %e, "watch error"),
        }
    }
}

/// The workload a report belongs to: its controlling owner.
fn owner_of(report: &PartialObjectMeta<ImageReport>) -> Option<Workload> {
    let owner = controller_of(report.metadata.owner_references.as_ref())?;
    Some(Workload {
        namespace: report.metadata.namespace.clone()?,
        api_version: owner.api_version.clone(),
        kind: owner.kind.clone(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reports_workload_is_its_controlling_owner() {
        let report: PartialObjectMeta<ImageReport> = serde_json::from_value(json!({
            "apiVersion": "imagebloat.dev/v1alpha1", "kind": "ImageReport",
            "metadata": {"name": "deployment-web", "namespace": "shop", "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u0"},
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u1",
                 "controller": true}
            ]}
        }))
        .unwrap();
        assert_eq!(
            owner_of(&report),
            Some(Workload {
                namespace: "shop".into(),
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                uid: "u1".into(),
            })
        );
        let mut orphan = report;
        orphan.metadata.owner_references = None;
        assert_eq!(owner_of(&orphan), None);
    }
}

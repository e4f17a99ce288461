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
//!
//! A deletion while the watch was down comes as no event: the watch's next listing is compared
//! with the reports it knew (a workload per report), and those missing count as deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};

use super::context::{Context, ReportKey, report_key};
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
    let mut reports = KnownReports::default();
    while let Some(event) = events.next().await {
        let deleted = match event {
            Ok(watcher::Event::Init) => {
                reports.listing();
                vec![]
            }
            Ok(watcher::Event::InitApply(r)) => {
                reports.listed(owner_of(&r));
                vec![]
            }
            Ok(watcher::Event::Apply(r)) => {
                reports.applied(owner_of(&r));
                vec![]
            }
            Ok(watcher::Event::InitDone) => reports.listing_done(),
            Ok(watcher::Event::Delete(r)) => reports.deleted(owner_of(&r)),
            Err(e) => {
                tracing::warn!(resource = "imagereports", error = %e, "watch error");
                vec![]
            }
        };
        for w in deleted {
            if !ctx.cluster.namespaces.watches(&w.namespace) {
                continue;
            }
            tracing::debug!(namespace = %w.namespace, workload = %w.name, "report deleted");
            ctx.written
                .remove(&report_key(&w.namespace, &w.kind, &w.uid));
            work.push(w);
        }
    }
}

/// The workload of each report the watch knows, and, during a listing, those listed so far.
#[derive(Default)]
struct KnownReports {
    known: HashMap<ReportKey, Workload>,
    listed: HashSet<ReportKey>,
}

fn key_of(w: &Workload) -> ReportKey {
    report_key(&w.namespace, &w.kind, &w.uid)
}

impl KnownReports {
    fn listing(&mut self) {
        self.listed.clear();
    }

    fn listed(&mut self, w: Option<Workload>) {
        if let Some(w) = w {
            self.listed.insert(key_of(&w));
            self.known.insert(key_of(&w), w);
        }
    }

    fn applied(&mut self, w: Option<Workload>) {
        if let Some(w) = w {
            self.known.insert(key_of(&w), w);
        }
    }

    /// The workloads of known reports the listing did not have (deleted while unwatched).
    fn listing_done(&mut self) -> Vec<Workload> {
        let listed = std::mem::take(&mut self.listed);
        let gone: Vec<ReportKey> = self
            .known
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        gone.iter().filter_map(|k| self.known.remove(k)).collect()
    }

    fn deleted(&mut self, w: Option<Workload>) -> Vec<Workload> {
        let Some(w) = w else { return vec![] };
        self.known.remove(&key_of(&w));
        vec![w]
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

    fn web(uid: &str) -> Workload {
        Workload {
            namespace: "shop".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: format!("web-{uid}"),
            uid: uid.into(),
        }
    }

    #[test]
    fn a_report_deleted_while_the_watch_was_down_counts_as_deleted_at_the_next_listing() {
        let mut reports = KnownReports::default();
        reports.listing();
        reports.listed(Some(web("a")));
        reports.listed(Some(web("b")));
        assert_eq!(reports.listing_done(), [], "the first listing");
        reports.applied(Some(web("c")));
        assert_eq!(reports.deleted(Some(web("c"))), [web("c")]);
        // The watch restarts; "b" went meanwhile.
        reports.listing();
        reports.listed(Some(web("a")));
        assert_eq!(reports.listing_done(), [web("b")]);
        assert_eq!(reports.known.len(), 1, "only what exists is kept");
        assert!(reports.listed.is_empty());
    }

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

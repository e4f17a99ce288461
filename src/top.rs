//! `imagebloat top`: the ranked list a person acts on, read from the reports through the current
//! kubeconfig context (no access to the operator needed): each image, how many workloads and
//! Nodes run it, the download bytes a cleanup saves over the fleet, and the one recommendation
//! that saves the most, with its bytes times the Nodes that would stop downloading them.
//!
//! Cluster-wide, it reads `ClusterImageReport`s (cluster-level readers). With `--namespace`, it
//! reads that namespace's `ImageReport`s only (what a namespace user with the `view` role may
//! read): Nodes are not known there, so each workload counts as one download of each of its
//! images, and the figures are the namespace's share, not the fleet's.
//!
//! The same binary is the kubectl plugin `kubectl-imagebloat` (`kubectl imagebloat top`).

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::format;
use crate::report::cluster::ClusterImageReport;
use crate::report::crd::ImageReport;

/// What the list is sorted by, largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// The download bytes a cleanup saves over the fleet (the default: "fix first").
    FleetReclaimable,
    /// The compressed size of one copy of the image.
    Pull,
    /// How much the image grew when a workload moved to it (`previous.pullBytesDelta` of the
    /// ImageReports); images with no recorded change last.
    Growth,
}

/// One image in the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopRow {
    /// The `ClusterImageReport` the row comes from (cluster-wide only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    pub image: String,
    pub digest: String,
    /// Workloads running the image.
    pub workloads: u32,
    /// Nodes running the image; `None` when reading one namespace's reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Compressed bytes of one copy.
    pub pull_bytes: u64,
    /// Bytes the Nodes download for the image (namespace: one copy per workload).
    pub fleet_pull_bytes: u64,
    /// The reclaimable share of `fleetPullBytes`: what a cleanup of the image saves.
    pub fleet_reclaimable_pull_bytes: u64,
    /// The largest change of pull bytes recorded when a container moved to this image from
    /// another (`status.containers[].previous.pullBytesDelta` of the ImageReports; negative when
    /// it shrank); absent when no report records a change to it, or the reader may not list
    /// ImageReports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<TopAdvice>,
}

/// The recommendation that saves the most in one copy, and over every copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopAdvice {
    pub kind: String,
    pub message: String,
    /// Bytes one copy of the image saves.
    pub saved_bytes: u64,
    /// The copies that save it: Nodes (cluster) or workloads (namespace).
    pub copies: u32,
    /// `savedBytes × copies`.
    pub total_saved_bytes: u64,
}

fn advice(kind: &str, message: &str, saved: u64, copies: u32) -> TopAdvice {
    TopAdvice {
        kind: kind.to_string(),
        message: message.to_string(),
        saved_bytes: saved,
        copies,
        total_saved_bytes: saved.saturating_mul(copies as u64),
    }
}

/// A row per cluster report (reports without a status yet are left out).
pub fn rows_from_cluster(reports: &[ClusterImageReport]) -> Vec<TopRow> {
    reports
        .iter()
        .filter_map(|r| {
            let s = r.status.as_ref()?;
            Some(TopRow {
                report: r.metadata.name.clone(),
                image: r.spec.image.clone(),
                digest: r.spec.digest.clone(),
                workloads: s.workload_count,
                nodes: Some(s.nodes),
                pull_bytes: s.totals.pull_bytes,
                fleet_pull_bytes: s.fleet.pull_bytes,
                fleet_reclaimable_pull_bytes: s.fleet.reclaimable_pull_bytes,
                growth_bytes: None,
                recommendation: s
                    .top_recommendation
                    .as_ref()
                    .map(|t| advice(&t.kind, &t.message, t.saved_bytes, s.nodes)),
            })
        })
        .collect()
}

/// A row per distinct image (manifest digest) of one namespace's reports: each workload running
/// it counts as one copy.
pub fn rows_from_namespace(reports: &[ImageReport]) -> Vec<TopRow> {
    let mut rows: BTreeMap<String, TopRow> = BTreeMap::new();
    for r in reports {
        let Some(status) = &r.status else { continue };
        let mut seen = std::collections::BTreeSet::new();
        for f in status.containers.iter().filter_map(|c| c.findings.as_ref()) {
            if !seen.insert(f.digest.clone()) {
                continue;
            }
            let t = &f.analysis.totals;
            let row = rows.entry(f.digest.clone()).or_insert_with(|| TopRow {
                report: None,
                image: f.image.clone(),
                digest: f.digest.clone(),
                workloads: 0,
                nodes: None,
                pull_bytes: t.pull_bytes,
                fleet_pull_bytes: 0,
                fleet_reclaimable_pull_bytes: 0,
                growth_bytes: None,
                recommendation: f
                    .analysis
                    .recommendations
                    .iter()
                    .max_by_key(|r| r.saved_bytes)
                    .map(|r| advice(&r.kind, &r.message, r.saved_bytes, 0)),
            });
            row.workloads += 1;
            row.fleet_pull_bytes = row.fleet_pull_bytes.saturating_add(t.pull_bytes);
            row.fleet_reclaimable_pull_bytes = row
                .fleet_reclaimable_pull_bytes
                .saturating_add(t.reclaimable_pull_bytes);
            if let Some(a) = &mut row.recommendation {
                a.copies = row.workloads;
                a.total_saved_bytes = a.saved_bytes.saturating_mul(a.copies as u64);
            }
        }
    }
    let mut rows: Vec<TopRow> = rows.into_values().collect();
    add_growth(&mut rows, reports);
    rows
}

/// Each image's growth from the ImageReports: the largest `previous.pullBytesDelta` among the
/// containers now running it.
pub fn add_growth(rows: &mut [TopRow], reports: &[ImageReport]) {
    let mut growth: BTreeMap<&str, i64> = BTreeMap::new();
    let containers = reports
        .iter()
        .filter_map(|r| r.status.as_ref())
        .flat_map(|s| &s.containers);
    for c in containers {
        if let (Some(f), Some(p)) = (&c.findings, &c.previous) {
            let g = growth
                .entry(f.digest.as_str())
                .or_insert(p.pull_bytes_delta);
            *g = (*g).max(p.pull_bytes_delta);
        }
    }
    for row in rows {
        row.growth_bytes = growth.get(row.digest.as_str()).copied();
    }
}

/// Sorts largest first by `key`, then by image for a stable order.
pub fn sort(rows: &mut [TopRow], key: SortKey) {
    let value = |r: &TopRow| match key {
        SortKey::FleetReclaimable => i128::from(r.fleet_reclaimable_pull_bytes),
        SortKey::Pull => i128::from(r.pull_bytes),
        SortKey::Growth => r.growth_bytes.map_or(i128::MIN, i128::from),
    };
    rows.sort_by(|a, b| value(b).cmp(&value(a)).then_with(|| a.image.cmp(&b.image)));
}

/// The list as an aligned text table.
pub fn table(rows: &[TopRow]) -> String {
    let header = [
        "IMAGE",
        "WORKLOADS",
        "NODES",
        "FLEET RECLAIMABLE",
        "FLEET PULL",
        "PULL",
        "GROWTH",
        "TOP RECOMMENDATION",
    ];
    let mut lines: Vec<[String; 8]> = vec![header.map(str::to_string)];
    for r in rows {
        let advice = match &r.recommendation {
            Some(a) => {
                let copies = match r.nodes {
                    Some(_) => format::count(a.copies as u64, "Node"),
                    None => format::count(a.copies as u64, "workload"),
                };
                format!(
                    "{} × {copies} = {}: {}",
                    format::size(a.saved_bytes),
                    format::size(a.total_saved_bytes),
                    format::fit(&a.message, 80)
                )
            }
            None => "-".to_string(),
        };
        lines.push([
            short_image(&r.image),
            r.workloads.to_string(),
            r.nodes.map_or("-".into(), |n| n.to_string()),
            format::size(r.fleet_reclaimable_pull_bytes),
            format::size(r.fleet_pull_bytes),
            format::size(r.pull_bytes),
            r.growth_bytes.map_or("-".into(), signed_size),
            advice,
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 7 {
                    cell.clone()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// A change of size with its sign: `+1.2 MB`, `-300 kB`, `0 B`.
fn signed_size(delta: i64) -> String {
    let size = format::size(delta.unsigned_abs());
    match delta.signum() {
        1 => format!("+{size}"),
        -1 => format!("-{size}"),
        _ => size,
    }
}

/// The image with its digest cut to 12 hex digits (the JSON output keeps it whole).
fn short_image(image: &str) -> String {
    match image.split_once("@sha256:") {
        Some((repository, hex)) if hex.len() > 12 => {
            format!("{repository}@sha256:{}", &hex[..12])
        }
        _ => image.to_string(),
    }
}

/// Reads the rows through `client`: the cluster reports, or one namespace's reports.
pub async fn fetch(client: Client, namespace: Option<&str>) -> Result<Vec<TopRow>, kube::Error> {
    match namespace {
        None => {
            let api: Api<ClusterImageReport> = Api::all(client.clone());
            let mut rows = rows_from_cluster(&list_all(&api).await?);
            // Growth lives in the ImageReports: a reader who may list the cluster reports but
            // not every namespace's ImageReports gets the list without it.
            match list_all(&Api::<ImageReport>::all(client)).await {
                Ok(reports) => add_growth(&mut rows, &reports),
                Err(kube::Error::Api(e)) if e.code == 403 => {}
                Err(e) => return Err(e),
            }
            Ok(rows)
        }
        Some(ns) => {
            let api: Api<ImageReport> = Api::namespaced(client, ns);
            Ok(rows_from_namespace(&list_all(&api).await?))
        }
    }
}

/// Every object, in pages of 100.
async fn list_all<K>(api: &Api<K>) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(100);
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image_report(name: &str, images: &[(&str, u64, u64, u64)]) -> ImageReport {
        let containers: Vec<_> = images
            .iter()
            .enumerate()
            .map(|(i, (digest, pull, reclaimable, saved))| {
                json!({
                    "name": format!("c{i}"), "image": format!("r/{digest}:1"), "digest": digest,
                    "platform": "linux/amd64", "mediaType": "m", "analyzerVersion": "1",
                    "pullBytes": pull, "sizeBytes": 1, "finalBytes": 1, "wastedBytes": 0,
                    "reclaimableBytes": 0, "reclaimablePullBytes": reclaimable, "efficiency": 1.0,
                    "junkBytes": 0, "layers": [], "hiddenFileCount": 0, "hiddenFiles": [],
                    "categories": [],
                    "recommendations": [
                        {"kind": "small", "message": "a little", "savedBytes": 1},
                        {"kind": "multi-stage-build", "message": "move the compiler out",
                         "savedBytes": saved}
                    ]
                })
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "imagebloat.dev/v1alpha1", "kind": "ImageReport",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"workload": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                  "uid": name}},
            "status": {"containers": containers, "conditions": []}
        }))
        .expect("a valid report")
    }

    #[test]
    fn a_namespace_counts_each_workload_as_one_copy_of_each_of_its_images() {
        let reports = [
            // Two containers on one image count once for the workload.
            image_report(
                "web",
                &[("sha256:a", 100, 40, 30), ("sha256:a", 100, 40, 30)],
            ),
            image_report(
                "api",
                &[("sha256:a", 100, 40, 30), ("sha256:b", 500, 10, 5)],
            ),
        ];
        let mut rows = rows_from_namespace(&reports);
        sort(&mut rows, SortKey::FleetReclaimable);
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.digest.as_str(),
                    r.workloads,
                    r.fleet_reclaimable_pull_bytes,
                )
            })
            .collect();
        assert_eq!(summary, [("sha256:a", 2, 80), ("sha256:b", 1, 10)]);
        let a = rows[0].recommendation.as_ref().unwrap();
        assert_eq!(
            (
                a.kind.as_str(),
                a.saved_bytes,
                a.copies,
                a.total_saved_bytes
            ),
            ("multi-stage-build", 30, 2, 60)
        );
        assert_eq!(rows[0].nodes, None);
        sort(&mut rows, SortKey::Pull);
        assert_eq!(rows[0].digest, "sha256:b");
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("IMAGE"), "{text}");
        assert!(lines[1].starts_with("r/sha256:b:1"), "{text}");
        assert!(
            lines[2].ends_with("30 B × 2 workloads = 60 B: move the compiler out"),
            "{text}"
        );
        let json = serde_json::to_value(&rows[1]).unwrap();
        assert_eq!(json["fleetReclaimablePullBytes"], 80);
        assert!(json.get("nodes").is_none());
        assert_eq!(
            short_image(&format!("r/app@sha256:{}", "ab".repeat(32))),
            "r/app@sha256:abababababab"
        );
        assert_eq!(short_image("r/app:1"), "r/app:1");
    }

    #[test]
    fn growth_is_the_largest_recorded_change_to_each_image_and_sorts_last_when_unknown() {
        let mut reports = [
            image_report("web", &[("sha256:a", 100, 40, 30)]),
            image_report("api", &[("sha256:a", 100, 40, 30)]),
            image_report("db", &[("sha256:b", 500, 10, 5)]),
            image_report("jobs", &[("sha256:c", 50, 0, 0)]),
        ];
        let previous = |delta: i64| {
            serde_json::from_value(json!({
                "image": "r/old:1", "digest": "sha256:old", "pullBytes": 1, "sizeBytes": 1,
                "reclaimableBytes": 0, "reclaimablePullBytes": 0, "pullBytesDelta": delta,
                "reclaimableBytesDelta": 0, "reclaimablePullBytesDelta": 0,
                "changedAt": "2026-11-30T00:00:00Z"
            }))
            .expect("a valid previous image")
        };
        reports[0].status.as_mut().unwrap().containers[0].previous = Some(previous(20));
        reports[1].status.as_mut().unwrap().containers[0].previous = Some(previous(70));
        reports[2].status.as_mut().unwrap().containers[0].previous = Some(previous(-300));
        let mut rows = rows_from_namespace(&reports);
        sort(&mut rows, SortKey::Growth);
        let growth: Vec<_> = rows
            .iter()
            .map(|r| (r.digest.as_str(), r.growth_bytes))
            .collect();
        assert_eq!(
            growth,
            [
                ("sha256:a", Some(70)),
                ("sha256:b", Some(-300)),
                ("sha256:c", None)
            ]
        );
        let text = table(&rows);
        let cells = |line: usize| -> Vec<String> {
            text.lines()
                .nth(line)
                .unwrap()
                .split("   ")
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect()
        };
        assert_eq!(cells(0)[6], "GROWTH", "{text}");
        assert_eq!(cells(1)[6], "+70 B", "{text}");
        assert_eq!(cells(2)[6], "-300 B", "{text}");
        assert_eq!(cells(3)[6], "-", "{text}");
        assert_eq!(serde_json::to_value(&rows[1]).unwrap()["growthBytes"], -300);
        assert!(
            serde_json::to_value(&rows[2])
                .unwrap()
                .get("growthBytes")
                .is_none()
        );
    }
}

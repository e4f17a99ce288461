//! The fleet view's metrics (see `crate::fleet` for what each figure means).
//!
//! Labels stay bounded: one series per Node running something, one per distinct image some
//! workload runs, and the cluster's own; never one per layer. Each set replaces the last
//! wholesale, so a Node that goes (or runs nothing) and an image no workload runs lose their
//! series at the next computation.

use std::collections::BTreeSet;
use std::sync::Mutex;

use prometheus::{GaugeVec, IntGauge, Opts, Registry};

use crate::fleet::Fleet;

/// The fleet gauges.
pub struct FleetMetrics {
    /// Per Node: compressed bytes of the distinct layers its running images need.
    pub node_pull_bytes: GaugeVec,
    /// Per Node: their reclaimable share.
    pub node_reclaimable_pull_bytes: GaugeVec,
    /// Distinct layers of every running image, each once.
    pub cluster_distinct_pull_bytes: IntGauge,
    /// The sum over Nodes of `node_pull_bytes`.
    pub cluster_node_pull_bytes: IntGauge,
    /// The naive per-workload sum.
    pub cluster_workload_pull_bytes: IntGauge,
    /// The sum over Nodes of `node_reclaimable_pull_bytes`.
    pub cluster_reclaimable_pull_bytes: IntGauge,
    /// Per image (`image`, `digest`): its fleet cost and the reclaimable share of it.
    pub image_fleet_pull_bytes: GaugeVec,
    pub image_fleet_reclaimable_pull_bytes: GaugeVec,
    /// Cluster report writes (server-side apply), by result.
    pub cluster_reports_written: prometheus::IntCounterVec,
    /// Cluster reports deleted because no workload runs their image any more.
    pub cluster_reports_deleted: prometheus::IntCounter,
    /// Computations of the fleet view.
    pub computations: prometheus::IntCounter,
    /// Label sets set last, to remove the ones that disappear.
    last: Mutex<LastSet>,
}

/// The Nodes and the (image, digest) pairs set last.
type LastSet = (BTreeSet<String>, BTreeSet<(String, String)>);

fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl FleetMetrics {
    pub fn register(r: &Registry) -> Self {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let int =
            |name: &str, help: &str| register(r, IntGauge::new(name, help).expect("valid metric"));
        let written = register(
            r,
            prometheus::IntCounterVec::new(
                Opts::new(
                    "imagebloat_cluster_reports_written_total",
                    "ClusterImageReport writes (server-side apply), by result",
                ),
                &["result"],
            )
            .expect("valid metric"),
        );
        for result in ["success", "error"] {
            written.with_label_values(&[result]);
        }
        FleetMetrics {
            node_pull_bytes: gauge(
                "imagebloat_node_pull_bytes",
                "Compressed bytes of the distinct layers of the images running on the Node \
                 (a layer shared by several images counted once)",
                &["node"],
            ),
            node_reclaimable_pull_bytes: gauge(
                "imagebloat_node_reclaimable_pull_bytes",
                "Reclaimable share of imagebloat_node_pull_bytes",
                &["node"],
            ),
            cluster_distinct_pull_bytes: int(
                "imagebloat_cluster_distinct_pull_bytes",
                "Compressed bytes of the distinct layers of every running image, each once",
            ),
            cluster_node_pull_bytes: int(
                "imagebloat_cluster_node_pull_bytes",
                "Sum over Nodes of imagebloat_node_pull_bytes: what Nodes download",
            ),
            cluster_workload_pull_bytes: int(
                "imagebloat_cluster_workload_pull_bytes",
                "Naive sum over running workloads of their distinct images' pull bytes",
            ),
            cluster_reclaimable_pull_bytes: int(
                "imagebloat_cluster_reclaimable_pull_bytes",
                "Sum over Nodes of imagebloat_node_reclaimable_pull_bytes: what cleaning every \
                 image would save the Nodes' downloads",
            ),
            image_fleet_pull_bytes: gauge(
                "imagebloat_image_fleet_pull_bytes",
                "Bytes Nodes download for the image: over the Nodes running it, its layers no \
                 other image on the Node has",
                &["image", "digest"],
            ),
            image_fleet_reclaimable_pull_bytes: gauge(
                "imagebloat_image_fleet_reclaimable_pull_bytes",
                "Reclaimable share of imagebloat_image_fleet_pull_bytes",
                &["image", "digest"],
            ),
            cluster_reports_written: written,
            cluster_reports_deleted: register(
                r,
                prometheus::IntCounter::new(
                    "imagebloat_cluster_reports_deleted_total",
                    "ClusterImageReports deleted once no workload had run their image for the grace",
                )
                .expect("valid metric"),
            ),
            computations: register(
                r,
                prometheus::IntCounter::new(
                    "imagebloat_fleet_computations_total",
                    "Computations of the fleet view (each after workloads changed)",
                )
                .expect("valid metric"),
            ),
            last: Mutex::default(),
        }
    }

    /// Sets every fleet series from `fleet`, removing those it no longer has.
    pub fn set(&self, fleet: &Fleet) {
        let mut last = self.last.lock().expect("fleet metrics lock");
        let nodes: BTreeSet<String> = fleet.nodes.keys().cloned().collect();
        for gone in last.0.difference(&nodes) {
            let _ = self.node_pull_bytes.remove_label_values(&[gone]);
            let _ = self
                .node_reclaimable_pull_bytes
                .remove_label_values(&[gone]);
        }
        for (node, cost) in &fleet.nodes {
            self.node_pull_bytes
                .with_label_values(&[node])
                .set(cost.pull_bytes as f64);
            self.node_reclaimable_pull_bytes
                .with_label_values(&[node])
                .set(cost.reclaimable_pull_bytes as f64);
        }
        let images: BTreeSet<(String, String)> = fleet
            .reports
            .values()
            .map(|r| (r.spec.image.clone(), r.spec.digest.clone()))
            .collect();
        for (image, digest) in last.1.difference(&images) {
            let _ = self
                .image_fleet_pull_bytes
                .remove_label_values(&[image, digest]);
            let _ = self
                .image_fleet_reclaimable_pull_bytes
                .remove_label_values(&[image, digest]);
        }
        for r in fleet.reports.values() {
            let labels = [r.spec.image.as_str(), r.spec.digest.as_str()];
            let f = &r.status.fleet;
            self.image_fleet_pull_bytes
                .with_label_values(&labels)
                .set(f.pull_bytes as f64);
            self.image_fleet_reclaimable_pull_bytes
                .with_label_values(&labels)
                .set(f.reclaimable_pull_bytes as f64);
        }
        let c = &fleet.cluster;
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.cluster_distinct_pull_bytes
            .set(int(c.distinct_pull_bytes));
        self.cluster_node_pull_bytes.set(int(c.node_pull_bytes));
        self.cluster_workload_pull_bytes
            .set(int(c.workload_pull_bytes));
        self.cluster_reclaimable_pull_bytes
            .set(int(c.reclaimable_pull_bytes));
        *last = (nodes, images);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{ClusterCost, NodeCost};

    fn node_series(m: &FleetMetrics) -> Vec<String> {
        let mut v: Vec<String> = m
            .node_pull_bytes
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|s| s.get_label()[0].value().to_string())
            .collect();
        v.sort();
        v
    }

    use prometheus::core::Collector;

    #[test]
    fn a_node_that_runs_nothing_loses_its_series() {
        let m = FleetMetrics::register(&Registry::new());
        let mut fleet = Fleet::default();
        for n in ["n1", "n2"] {
            fleet.nodes.insert(
                n.into(),
                NodeCost {
                    pull_bytes: 7,
                    reclaimable_pull_bytes: 1,
                },
            );
        }
        fleet.cluster = ClusterCost {
            distinct_pull_bytes: 7,
            node_pull_bytes: 14,
            workload_pull_bytes: 14,
            reclaimable_pull_bytes: 2,
            running_images: 1,
        };
        m.set(&fleet);
        assert_eq!(node_series(&m), ["n1", "n2"]);
        assert_eq!(m.cluster_node_pull_bytes.get(), 14);
        fleet.nodes.remove("n2");
        m.set(&fleet);
        assert_eq!(node_series(&m), ["n1"]);
    }
}

//! The fleet view, PURE: which images run where, in, every image's cluster report and the Node
//! and cluster figures out. No Kubernetes, no clock: the operator (`operator::fleet`) gathers the
//! input from its caches and writes what comes out.
//!
//! The model. A workload runs its images (those its `ImageReport` lists, init containers
//! included) on every Node one of its live Pods is bound to. A Node downloads each distinct
//! layer (by digest) once, whatever number of images or Pods have it. So:
//!
//! - a Node's figure is the union of the layers of the images running on it: `pullBytes` is the
//!   sum of their compressed sizes, `reclaimablePullBytes` that of their reclaimable shares;
//! - the cluster's `distinct` figure is the union over every running image (what one shared
//!   cache of layers would hold), `nodes` the sum of the Nodes' figures (what Nodes download),
//!   `workloads` the naive sum that per-workload reports add up to: over every workload with a
//!   Pod on a Node, the pull bytes of each of its distinct images (per workload, not per Pod: a
//!   workload's replicas count once). `nodes - distinct` is what no sharing across Nodes could
//!   save; `workloads - nodes` is, roughly, what layers shared on a Node save;
//! - an image's fleet cost (`FleetCost`) is, over every Node running it, the layers of the image
//!   that no other image running on that Node has: what the Nodes would stop downloading if the
//!   image went. A layer two images share on a Node is charged to neither, so a shared base layer
//!   shows only where one image brings it alone, and the images' figures add up to at most the
//!   Nodes' own.
//!
//! A layer's reclaimable share is its wasted and junk bytes at its compression ratio. It can
//! differ between images (a later layer of one image may hide files of a shared layer); where a
//! Node has the layer through several images, the largest share counts.
//!
//! Layers are those the findings list (the first `report::MAX_LAYERS`): an image with more
//! layers is undercounted by the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::analysis::Totals;
use crate::format;
use crate::report::ImageFindings;
use crate::report::cluster::{
    ClusterImageReportSpec, ClusterImageReportStatus, ClusterLayer, FleetCost,
    MAX_CLUSTER_WORKLOADS, TopRecommendation, WorkloadName,
};

/// What the fleet view needs of one analyzed image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFacts {
    pub image: String,
    pub digest: String,
    pub platform: String,
    pub totals: Totals,
    /// The image's layers in order (a digest listed twice is downloaded once).
    pub layers: Vec<LayerCost>,
    pub top_recommendation: Option<TopRecommendation>,
}

/// One layer of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerCost {
    pub digest: String,
    /// Compressed bytes (the descriptor size).
    pub pull_bytes: u64,
    /// The layer's wasted and junk bytes at its compression ratio, at most `pull_bytes`.
    pub reclaimable_pull_bytes: u64,
}

impl ImageFacts {
    pub fn of(f: &ImageFindings) -> Self {
        let layers = f
            .analysis
            .layers
            .iter()
            .map(|l| {
                let reclaimable = (l.wasted_bytes + l.junk_bytes) as u128;
                let share = match l.uncompressed_bytes {
                    0 => 0,
                    u => (reclaimable * l.pull_bytes as u128 / u as u128).min(l.pull_bytes as u128)
                        as u64,
                };
                LayerCost {
                    digest: l.digest.clone(),
                    pull_bytes: l.pull_bytes,
                    reclaimable_pull_bytes: share,
                }
            })
            .collect();
        let top_recommendation = f
            .analysis
            .recommendations
            .iter()
            .max_by_key(|r| r.saved_bytes)
            .map(|r| TopRecommendation {
                kind: r.kind.clone(),
                message: r.message.clone(),
                saved_bytes: r.saved_bytes,
            });
        ImageFacts {
            image: f.image.clone(),
            digest: f.digest.clone(),
            platform: f.platform.clone(),
            totals: f.analysis.totals,
            layers,
            top_recommendation,
        }
    }

    /// The image's distinct layers by digest.
    fn distinct_layers(&self) -> impl Iterator<Item = &LayerCost> {
        let mut seen = HashSet::new();
        self.layers
            .iter()
            .filter(move |l| seen.insert(l.digest.as_str()))
    }
}

/// A workload: the images it runs (manifest digests) and the Nodes its live Pods are bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRun {
    pub name: WorkloadName,
    pub images: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
}

/// Everything the fleet view is computed from.
#[derive(Debug, Clone, Default)]
pub struct FleetInput {
    /// Facts by manifest digest; images no workload names are ignored.
    pub images: BTreeMap<String, Arc<ImageFacts>>,
    pub workloads: Vec<WorkloadRun>,
}

/// One Node's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCost {
    /// Compressed bytes of the distinct layers of the images running on the Node.
    pub pull_bytes: u64,
    /// Their reclaimable share.
    pub reclaimable_pull_bytes: u64,
}

/// The cluster's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCost {
    /// Distinct layers of every running image, each once.
    pub distinct_pull_bytes: u64,
    /// The sum of the Nodes' `pull_bytes`.
    pub node_pull_bytes: u64,
    /// The naive sum: per workload with a Pod on a Node, its distinct images' pull bytes.
    pub workload_pull_bytes: u64,
    /// The sum of the Nodes' `reclaimable_pull_bytes`: what cleaning every image would save the
    /// Nodes' downloads.
    pub reclaimable_pull_bytes: u64,
    /// Distinct images running on at least one Node.
    pub running_images: u64,
}

/// One image's cluster report.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageReportParts {
    pub spec: ClusterImageReportSpec,
    pub status: ClusterImageReportStatus,
}

/// The fleet view: a report per image some workload runs (by digest), the Nodes, the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    pub reports: BTreeMap<String, ImageReportParts>,
    pub nodes: BTreeMap<String, NodeCost>,
    pub cluster: ClusterCost,
}

/// Computes the fleet view (see the module docs for every figure).
pub fn compute(input: &FleetInput) -> Fleet {
    let known = |d: &String| input.images.contains_key(d);
    // Images on each Node, and the workloads of each image.
    let mut on_node: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut workloads_of: BTreeMap<&str, BTreeSet<&WorkloadName>> = BTreeMap::new();
    let mut workload_pull_bytes = 0u64;
    for w in &input.workloads {
        for d in w.images.iter().filter(|d| known(d)) {
            workloads_of.entry(d).or_default().insert(&w.name);
            if !w.nodes.is_empty() {
                workload_pull_bytes =
                    workload_pull_bytes.saturating_add(input.images[d].totals.pull_bytes);
            }
            for n in &w.nodes {
                on_node.entry(n).or_default().insert(d);
            }
        }
    }
    let facts = |d: &str| &input.images[d];

    // Every running image's layers: how many images have each layer, and the cluster's union.
    let running: BTreeSet<&str> = on_node.values().flatten().copied().collect();
    let mut images_with_layer: HashMap<&str, u32> = HashMap::new();
    let mut distinct: HashMap<&str, u64> = HashMap::new();
    for d in &running {
        for l in facts(d).distinct_layers() {
            *images_with_layer.entry(&l.digest).or_default() += 1;
            distinct.insert(&l.digest, l.pull_bytes);
        }
    }

    let mut nodes = BTreeMap::new();
    let mut charged: BTreeMap<&str, (u64, u64, u32)> = BTreeMap::new();
    for (node, images) in &on_node {
        // Layer -> (pull bytes, largest reclaimable share, images on this Node that have it).
        let mut layers: HashMap<&str, (u64, u64, u32)> = HashMap::new();
        for d in images {
            for l in facts(d).distinct_layers() {
                let e = layers.entry(&l.digest).or_insert((l.pull_bytes, 0, 0));
                e.1 = e.1.max(l.reclaimable_pull_bytes);
                e.2 += 1;
            }
        }
        nodes.insert(
            node.to_string(),
            NodeCost {
                pull_bytes: total(layers.values().map(|l| l.0)),
                reclaimable_pull_bytes: total(layers.values().map(|l| l.1)),
            },
        );
        for d in images {
            let c = charged.entry(d).or_default();
            c.2 += 1;
            for l in facts(d).distinct_layers() {
                if layers[l.digest.as_str()].2 == 1 {
                    c.0 = c.0.saturating_add(l.pull_bytes);
                    c.1 = c.1.saturating_add(l.reclaimable_pull_bytes);
                }
            }
        }
    }

    let reports = workloads_of
        .iter()
        .map(|(d, users)| {
            let f = facts(d);
            let (pull, reclaimable, node_count) = charged.get(d).copied().unwrap_or_default();
            let shared = |l: &str| {
                let with = images_with_layer.get(l).copied().unwrap_or(0);
                with.saturating_sub(u32::from(running.contains(d)))
            };
            let status = ClusterImageReportStatus {
                totals: f.totals,
                pull_size: format::size(f.totals.pull_bytes),
                efficiency_percent: format::percent(f.totals.efficiency),
                layers: f
                    .layers
                    .iter()
                    .map(|l| ClusterLayer {
                        digest: l.digest.clone(),
                        pull_bytes: l.pull_bytes,
                        shared_with: shared(&l.digest),
                    })
                    .collect(),
                workloads: users
                    .iter()
                    .take(MAX_CLUSTER_WORKLOADS)
                    .map(|w| (*w).clone())
                    .collect(),
                workload_count: users.len() as u32,
                nodes: node_count,
                fleet: FleetCost {
                    pull_bytes: pull,
                    reclaimable_pull_bytes: reclaimable,
                    pull_size: format::size(pull),
                    reclaimable_pull: format::size(reclaimable),
                },
                top_recommendation: f.top_recommendation.clone(),
            };
            let spec = ClusterImageReportSpec {
                image: f.image.clone(),
                digest: f.digest.clone(),
                platform: f.platform.clone(),
            };
            (d.to_string(), ImageReportParts { spec, status })
        })
        .collect();

    let cluster = ClusterCost {
        distinct_pull_bytes: total(distinct.values().copied()),
        node_pull_bytes: total(nodes.values().map(|n: &NodeCost| n.pull_bytes)),
        workload_pull_bytes,
        reclaimable_pull_bytes: total(nodes.values().map(|n| n.reclaimable_pull_bytes)),
        running_images: running.len() as u64,
    };
    Fleet {
        reports,
        nodes,
        cluster,
    }
}

/// A sum of byte counts that stops at `u64::MAX` (sizes come from registries: never trusted to
/// add up).
fn total(bytes: impl Iterator<Item = u64>) -> u64 {
    bytes.fold(0, u64::saturating_add)
}

/// The name of an image's cluster report: the repository's last path segment (for people) and
/// the first 20 hex digits of the manifest digest (for uniqueness), a valid object name.
pub fn report_name(image: &str, digest: &str) -> String {
    let repository = image.split(['@']).next().unwrap_or(image);
    let last = repository.rsplit('/').next().unwrap_or(repository);
    let last = last.split(':').next().unwrap_or(last);
    let mut readable: String = last
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    readable = readable.trim_matches('-').to_string();
    let hex: String = digest
        .rsplit(':')
        .next()
        .unwrap_or(digest)
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .take(20)
        .collect();
    match (readable.is_empty(), hex.is_empty()) {
        (false, false) => format!("{readable}-{hex}"),
        (true, false) => format!("image-{hex}"),
        (false, true) => readable,
        (true, true) => "image".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    fn layer(digest: &str, pull: u64, reclaimable: u64) -> LayerCost {
        LayerCost {
            digest: digest.into(),
            pull_bytes: pull,
            reclaimable_pull_bytes: reclaimable,
        }
    }

    fn image(name: &str, layers: Vec<LayerCost>) -> Arc<ImageFacts> {
        let pull = layers.iter().map(|l| l.pull_bytes).sum();
        let reclaimable = layers.iter().map(|l| l.reclaimable_pull_bytes).sum();
        Arc::new(ImageFacts {
            image: format!("registry.example/{name}:1"),
            digest: format!("sha256:{name}"),
            platform: "linux/amd64".into(),
            totals: Totals::of_image(pull, 2 * pull, pull, 0, reclaimable),
            layers,
            top_recommendation: None,
        })
    }

    fn run(name: &str, images: &[&str], nodes: &[&str]) -> WorkloadRun {
        WorkloadRun {
            name: WorkloadName {
                namespace: "shop".into(),
                kind: "Deployment".into(),
                name: name.into(),
            },
            images: images.iter().map(|i| format!("sha256:{i}")).collect(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// Three images on one 50 MB base layer (5 MB of it reclaimable), run by six workloads on
    /// three Nodes: n1 runs api and web, n2 web and worker, n3 worker only.
    fn three_images() -> FleetInput {
        let base = || layer("sha256:base", 50 * MB, 5 * MB);
        let images = [
            image("api", vec![base(), layer("sha256:api", 10 * MB, 4 * MB)]),
            image("web", vec![base(), layer("sha256:web", 20 * MB, 0)]),
            image(
                "worker",
                vec![
                    base(),
                    layer("sha256:worker", 30 * MB, 3 * MB),
                    layer("sha256:tools", 7 * MB, 7 * MB),
                ],
            ),
        ];
        FleetInput {
            images: images.into_iter().map(|i| (i.digest.clone(), i)).collect(),
            workloads: vec![
                run("api", &["api"], &["n1"]),
                run("api-canary", &["api"], &["n1"]),
                run("web", &["web"], &["n1", "n2"]),
                run("worker", &["worker"], &["n2", "n3"]),
                run("batch", &["worker"], &["n3"]),
                // Scaled to zero: its image is reported, on no Node.
                run("idle", &["web"], &[]),
            ],
        }
    }

    #[test]
    fn shared_base_layers_count_once_per_node_and_are_charged_to_no_image_that_shares_them() {
        let fleet = compute(&three_images());
        // n1: base + api + web; n2: base + web + worker + tools; n3: base + worker + tools.
        assert_eq!(
            fleet.nodes["n1"],
            NodeCost {
                pull_bytes: 80 * MB,
                reclaimable_pull_bytes: 9 * MB
            }
        );
        assert_eq!(
            fleet.nodes["n2"],
            NodeCost {
                pull_bytes: 107 * MB,
                reclaimable_pull_bytes: 15 * MB
            }
        );
        assert_eq!(
            fleet.nodes["n3"],
            NodeCost {
                pull_bytes: 87 * MB,
                reclaimable_pull_bytes: 15 * MB
            }
        );
        assert_eq!(fleet.nodes.len(), 3);

        let fleet_of = |d: &str| {
            let s = &fleet.reports[&format!("sha256:{d}")].status;
            (
                s.fleet.pull_bytes,
                s.fleet.reclaimable_pull_bytes,
                s.nodes,
                s.workload_count,
            )
        };
        // api on n1 shares the base with web: charged its own layer.
        assert_eq!(fleet_of("api"), (10 * MB, 4 * MB, 1, 2));
        // web: its own layer on n1 and n2 (the base is shared on both).
        assert_eq!(fleet_of("web"), (40 * MB, 0, 2, 2));
        // worker: own layers on n2; own layers and the base on n3, where it runs alone.
        assert_eq!(
            fleet_of("worker"),
            (37 * MB + 87 * MB, 10 * MB + 15 * MB, 2, 2)
        );

        assert_eq!(
            fleet.cluster,
            ClusterCost {
                distinct_pull_bytes: 117 * MB,
                node_pull_bytes: 274 * MB,
                // api 60 twice, web 70 once (idle runs nowhere), worker 87 twice.
                workload_pull_bytes: 2 * 60 * MB + 70 * MB + 2 * 87 * MB,
                reclaimable_pull_bytes: 39 * MB,
                running_images: 3,
            }
        );
        // The images' charges never exceed what the Nodes download.
        let charged: u64 = fleet
            .reports
            .values()
            .map(|r| r.status.fleet.pull_bytes)
            .sum();
        assert!(charged <= fleet.cluster.node_pull_bytes);
    }

    #[test]
    fn each_layer_says_how_many_other_running_images_have_it() {
        let fleet = compute(&three_images());
        let shared = |d: &str| -> Vec<(String, u32)> {
            fleet.reports[&format!("sha256:{d}")]
                .status
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.shared_with))
                .collect()
        };
        assert_eq!(
            shared("api"),
            vec![("sha256:base".into(), 2), ("sha256:api".into(), 0)]
        );
        assert_eq!(
            shared("worker"),
            vec![
                ("sha256:base".into(), 2),
                ("sha256:worker".into(), 0),
                ("sha256:tools".into(), 0)
            ]
        );
    }

    #[test]
    fn workloads_are_listed_by_name_counted_all_and_an_image_on_no_node_costs_nothing() {
        let mut input = three_images();
        for i in 0..30 {
            input
                .workloads
                .push(run(&format!("cron-{i:02}"), &["api"], &[]));
        }
        input
            .images
            .insert("sha256:old".into(), image("old", vec![layer("l", 1, 1)]));
        input.workloads.push(run("legacy", &["old"], &[]));
        let fleet = compute(&input);
        let api = &fleet.reports["sha256:api"].status;
        assert_eq!(api.workload_count, 32);
        assert_eq!(api.workloads.len(), MAX_CLUSTER_WORKLOADS);
        assert_eq!(api.workloads[0].name, "api");
        assert_eq!(api.workloads[1].name, "api-canary");
        let old = &fleet.reports["sha256:old"].status;
        assert_eq!(
            (old.nodes, old.fleet.pull_bytes, old.layers[0].shared_with),
            (0, 0, 0)
        );
        assert_eq!(
            fleet.cluster.running_images, 3,
            "not running: not in the totals"
        );
        assert_eq!(fleet.reports.len(), 4);
        // An image no workload names gets no report.
        input.workloads.retain(|w| w.name.name != "legacy");
        assert!(!compute(&input).reports.contains_key("sha256:old"));
    }

    #[test]
    fn a_layer_an_image_lists_twice_is_downloaded_once() {
        let input = FleetInput {
            images: [image(
                "dup",
                vec![layer("sha256:a", 5, 1), layer("sha256:a", 5, 1)],
            )]
            .into_iter()
            .map(|i| (i.digest.clone(), i))
            .collect(),
            workloads: vec![run("dup", &["dup"], &["n1"])],
        };
        let fleet = compute(&input);
        assert_eq!(fleet.nodes["n1"].pull_bytes, 5);
        assert_eq!(fleet.reports["sha256:dup"].status.fleet.pull_bytes, 5);
        assert_eq!(fleet.cluster.distinct_pull_bytes, 5);
    }

    #[test]
    fn the_largest_cluster_report_stays_under_64_kib() {
        use crate::report::{MAX_FIELD, MAX_LAYERS, MAX_MESSAGE, MAX_REFERENCE};
        let layers = (0..MAX_LAYERS)
            .map(|i| {
                layer(
                    &format!("{i:0>width$}", width = MAX_FIELD),
                    u64::MAX / 1024,
                    1,
                )
            })
            .collect();
        let mut facts = (*image("big", layers)).clone();
        facts.image = "i".repeat(MAX_REFERENCE);
        facts.digest = "d".repeat(MAX_FIELD);
        facts.platform = "p".repeat(MAX_FIELD);
        facts.top_recommendation = Some(TopRecommendation {
            kind: "k".repeat(MAX_FIELD),
            message: "m".repeat(MAX_MESSAGE),
            saved_bytes: u64::MAX,
        });
        let digest = facts.digest.clone();
        // Object names: namespaces of 63 characters, workload names of 253.
        let workloads = (0..100)
            .map(|i| WorkloadRun {
                name: WorkloadName {
                    namespace: format!("{i:0>63}"),
                    kind: "StatefulSet".into(),
                    name: format!("{i:0>253}"),
                },
                images: [digest.clone()].into(),
                nodes: [format!("{i:0>253}")].into(),
            })
            .collect();
        let input = FleetInput {
            images: [(digest.clone(), Arc::new(facts))].into(),
            workloads,
        };
        let fleet = compute(&input);
        let r = &fleet.reports[&digest];
        let len = serde_json::to_vec(&(&r.spec, &r.status)).unwrap().len();
        assert!(len < 60 << 10, "{len} bytes");
        assert_eq!(r.status.workload_count, 100);
    }

    #[test]
    fn report_names_are_valid_object_names_for_any_image() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            report_name("registry.example:5000/team/Web_App:1.2", &d),
            "web-app-abababababababababab"
        );
        assert_eq!(
            report_name("r/app@sha256:ff", &d),
            "app-abababababababababab"
        );
        assert_eq!(report_name("", ""), "image");
        let long = format!("r/{}", "x".repeat(300));
        assert!(report_name(&long, &d).len() <= 61);
    }
}

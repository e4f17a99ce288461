//! The fleet view end to end, on the real test bed (`scripts/kube-testenv.sh`, the plain test
//! registry): three images sharing a base layer, run by six workloads on three Nodes of the
//! test's own, the operator running as the chart's ServiceAccount. Every figure is computed here
//! from the pushed images' own bytes (layer blobs and descriptor sizes), independently of the
//! operator: each ClusterImageReport, each Node's gauge and the cluster totals; then one image
//! stops being used and its cluster report goes; `kubectl get cir` and `imagebloat top` (as the
//! kubectl plugin) show the ranked list; a namespace user with the built-in `view` role reads
//! its namespace's ImageReports and no cluster report.

mod common;
#[allow(dead_code)]
#[path = "operator/fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use common::*;
use fixture::*;
use imagebloat::report::cluster::ClusterImageReport;
use imagebloat::testkit::Image;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// One layer as this test computes it from the pushed blob.
#[derive(Debug, Clone, Copy)]
struct Costs {
    pull: u64,
    reclaimable: u64,
}

/// The layer `i` of `image`: its compressed size, and its reclaimable share computed as the
/// contract states (reclaimable file bytes × compressed / uncompressed, rounded down).
fn layer_costs(image: &Image, i: usize, reclaimable_files: u64) -> Costs {
    let (_, blob) = &image.blobs[i];
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .expect("a gzip layer");
    let pull = image.layer_sizes[i];
    assert_eq!(pull, blob.len() as u64);
    let share = (reclaimable_files as u128 * pull as u128 / tar.len() as u128) as u64;
    Costs {
        pull,
        reclaimable: share.min(pull),
    }
}

fn layer_digest(image: &Image, i: usize) -> &str {
    &image.blobs[i].0
}

/// The cluster reports of these digests that name workloads of namespace `ns` (a report of the
/// same image from an earlier run may be there until the operator deletes it), once they have
/// the figures `done` accepts.
async fn cluster_reports(
    api: &Api<ClusterImageReport>,
    digests: &[&str],
    ns: &str,
    op: &Operator,
    done: impl Fn(&BTreeMap<String, ClusterImageReport>) -> bool,
) -> BTreeMap<String, ClusterImageReport> {
    let found = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            if let Ok(list) = api.list(&ListParams::default()).await {
                let mine: BTreeMap<String, ClusterImageReport> = list
                    .items
                    .into_iter()
                    .filter(|r| digests.contains(&r.spec.digest.as_str()))
                    .filter(|r| {
                        r.status
                            .as_ref()
                            .is_some_and(|s| s.workloads.iter().all(|w| w.namespace == ns))
                    })
                    .map(|r| (r.spec.digest.clone(), r))
                    .collect();
                if done(&mine) {
                    return mine;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "cluster reports not as expected; operator log:\n{}",
            op.log()
        )
    })
}

#[tokio::test]
async fn three_images_on_a_shared_base_across_three_nodes_cost_exactly_their_unshared_layers() {
    let cluster = Cluster::new("e2e-fleet").await;
    // The operator runs with the chart's RBAC; the chart's aggregated roles exist too.
    let release = cluster.install_chart("e2e-fleet-chart", &[]).await;

    // The base: 200 kB of library and 50 kB of apt lists (package-cache junk) in every image.
    let base = || {
        Layer::new("ADD base")
            .sized("usr/lib/libbase.so", 200_000)
            .sized("var/lib/apt/lists/base", 50_000)
    };
    let api_image = ImageBuilder::new(vec![
        base(),
        Layer::new("ADD api").sized("bin/api", 100_000),
    ])
    .build();
    let web_image = ImageBuilder::new(vec![
        base(),
        Layer::new("ADD web")
            .sized("bin/web", 120_000)
            .sized("tmp/web.tgz", 100_000),
    ])
    .build();
    let worker_image = ImageBuilder::new(vec![
        base(),
        Layer::new("ADD worker").sized("bin/worker", 90_000),
    ])
    .build();
    for other in [&web_image, &worker_image] {
        assert_eq!(
            layer_digest(other, 0),
            layer_digest(&api_image, 0),
            "the base layer is the same blob in every image"
        );
    }
    let b = layer_costs(&api_image, 0, 50_000);
    let a = layer_costs(&api_image, 1, 0);
    let w = layer_costs(&web_image, 1, 100_000);
    let k = layer_costs(&worker_image, 1, 0);
    assert!(b.reclaimable > 0 && w.reclaimable > 0);

    let api_ref = push("e2e-fleet-api", &api_image).await;
    let web_ref = push("e2e-fleet-web", &web_image).await;
    let worker_ref = push("e2e-fleet-worker", &worker_image).await;
    let (n1, n2, n3) = (
        cluster.own_node("n1").await,
        cluster.own_node("n2").await,
        cluster.own_node("n3").await,
    );
    let op = cluster.start_operator_with_env(
        &[
            "--fleet-interval-seconds",
            "1",
            "--cluster-report-grace-seconds",
            "3",
        ],
        &[("KUBECONFIG", &release.kubeconfig.path)],
    );

    // Six workloads: n1 and n2 run api and web, n3 runs worker alone.
    let placement: [(&str, &Pushed, &[&str]); 6] = [
        ("api", &api_ref, &[&n1]),
        ("api-canary", &api_ref, &[&n2]),
        ("web", &web_ref, &[&n1, &n2]),
        ("web-admin", &web_ref, &[&n2]),
        ("worker", &worker_ref, &[&n3]),
        ("batch", &worker_ref, &[&n3]),
    ];
    let pods: Api<Pod> = cluster.api();
    for (name, image, nodes) in placement {
        cluster
            .create_deployment(deployment(
                name,
                nodes.len() as i32,
                &[],
                &[("main", &image.reference)],
            ))
            .await;
        let selector = format!("app={name}");
        let created = wait_for("the deployment's pods", Duration::from_secs(60), || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            (list.items.len() == nodes.len()).then_some(list.items)
        })
        .await;
        for (pod, node) in created.iter().zip(nodes) {
            cluster
                .run_pod_on(pod, node, &[("main", &image.image_id())])
                .await;
        }
    }
    for (name, _, _) in placement {
        cluster.report(&format!("deployment-{name}"), &op).await;
    }

    let digests = [
        api_ref.digest.as_str(),
        web_ref.digest.as_str(),
        worker_ref.digest.as_str(),
    ];
    let cirs: Api<ClusterImageReport> = Api::all(cluster.client.clone());
    let reports = cluster_reports(&cirs, &digests, &cluster.ns, &op, |m| {
        m.len() == 3
            && m.values().all(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.workload_count == 2 && s.nodes > 0)
            })
            && m[&worker_ref.digest].status.as_ref().unwrap().nodes == 1
            && m[&web_ref.digest].status.as_ref().unwrap().nodes == 2
    })
    .await;
    let fleet = |d: &str| {
        let s = reports[d].status.as_ref().unwrap();
        (s.fleet.pull_bytes, s.fleet.reclaimable_pull_bytes, s.nodes)
    };
    // api: on n1 and n2 the base comes with web too; only its own layer is charged.
    assert_eq!(fleet(&api_ref.digest), (2 * a.pull, 0, 2));
    // web: its own layer (with its /tmp junk) on n1 and n2.
    assert_eq!(fleet(&web_ref.digest), (2 * w.pull, 2 * w.reclaimable, 2));
    // worker: alone on n3, so the base is its own there.
    assert_eq!(
        fleet(&worker_ref.digest),
        (b.pull + k.pull, b.reclaimable, 1)
    );
    let api_status = reports[&api_ref.digest].status.as_ref().unwrap();
    assert_eq!(reports[&api_ref.digest].spec.platform, "linux/amd64");
    assert_eq!(api_status.totals.pull_bytes, b.pull + a.pull);
    let layers: Vec<(&str, u64, u32)> = api_status
        .layers
        .iter()
        .map(|l| (l.digest.as_str(), l.pull_bytes, l.shared_with))
        .collect();
    assert_eq!(
        layers,
        [
            (layer_digest(&api_image, 0), b.pull, 2),
            (layer_digest(&api_image, 1), a.pull, 0)
        ]
    );
    let names: Vec<&str> = api_status
        .workloads
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(names, ["api", "api-canary"]);
    assert_eq!(api_status.workloads[0].namespace, cluster.ns);

    // The gauges: each Node's distinct layers, and the cluster's three sums.
    let n12 = b.pull + a.pull + w.pull;
    let expected_nodes = [
        (&n1, n12, b.reclaimable + w.reclaimable),
        (&n2, n12, b.reclaimable + w.reclaimable),
        (&n3, b.pull + k.pull, b.reclaimable),
    ];
    let scrape = op
        .scrape_until("the Node gauges", Duration::from_secs(30), |s| {
            series(s, "imagebloat_node_pull_bytes", &[("node", &n3)]).is_some()
        })
        .await;
    for (node, pull, reclaimable) in expected_nodes {
        let labels = [("node", node.as_str())];
        assert_eq!(
            series(&scrape, "imagebloat_node_pull_bytes", &labels),
            Some(pull as f64),
            "{node}"
        );
        assert_eq!(
            series(&scrape, "imagebloat_node_reclaimable_pull_bytes", &labels),
            Some(reclaimable as f64),
            "{node}"
        );
    }
    let gauge = |name: &str| series(&scrape, name, &[]).unwrap_or(-1.0) as u64;
    assert_eq!(
        gauge("imagebloat_cluster_distinct_pull_bytes"),
        b.pull + a.pull + w.pull + k.pull
    );
    assert_eq!(
        gauge("imagebloat_cluster_node_pull_bytes"),
        2 * n12 + b.pull + k.pull
    );
    // Per workload, each once whatever its replicas: api, api-canary, web, web-admin, worker,
    // batch.
    assert_eq!(
        gauge("imagebloat_cluster_workload_pull_bytes"),
        2 * (b.pull + a.pull) + 2 * (b.pull + w.pull) + 2 * (b.pull + k.pull)
    );
    assert_eq!(
        gauge("imagebloat_cluster_reclaimable_pull_bytes"),
        2 * (b.reclaimable + w.reclaimable) + b.reclaimable
    );

    // The dashboard's fleet row, evaluated by a real Prometheus scraping the operator: the
    // cluster lines give exactly these figures.
    let prometheus = Prometheus::scraping(&op.metrics);
    let row: Vec<String> = dashboard_queries()
        .into_iter()
        .filter(|q| q.contains("imagebloat_cluster_") || q.contains("imagebloat_node_"))
        .collect();
    assert_eq!(row.len(), 6, "{row:?}");
    let expected_by_metric = [
        (
            "imagebloat_cluster_distinct_pull_bytes",
            b.pull + a.pull + w.pull + k.pull,
        ),
        (
            "imagebloat_cluster_node_pull_bytes",
            2 * n12 + b.pull + k.pull,
        ),
        (
            "imagebloat_cluster_workload_pull_bytes",
            2 * (b.pull + a.pull) + 2 * (b.pull + w.pull) + 2 * (b.pull + k.pull),
        ),
        (
            "imagebloat_cluster_reclaimable_pull_bytes",
            2 * (b.reclaimable + w.reclaimable) + b.reclaimable,
        ),
        // topk over Nodes: the largest Node first.
        ("imagebloat_node_pull_bytes", n12),
    ];
    for q in &row {
        let (_, want) = expected_by_metric
            .iter()
            .find(|(m, _)| q.contains(m))
            .unwrap();
        let got = wait_for(q, Duration::from_secs(30), || async {
            prometheus.value(q).await.filter(|v| *v as u64 == *want)
        })
        .await;
        assert_eq!(got as u64, *want, "{q}");
    }

    // Pod churn that changes no figure writes nothing: a third web replica on n1 (web is there
    // already) comes and goes.
    let writes = |s: &str| {
        series(
            s,
            "imagebloat_cluster_reports_written_total",
            &[("result", "success")],
        )
        .unwrap()
    };
    let computations = |s: &str| series(s, "imagebloat_fleet_computations_total", &[]).unwrap();
    let scrape = op.scrape().await;
    let (before, computed_before) = (writes(&scrape), computations(&scrape));
    cluster.scale_deployment("web", 3).await;
    let extra = wait_for("the third web pod", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_none()))
    })
    .await;
    cluster
        .run_pod_on(&extra, &n1, &[("main", &web_ref.image_id())])
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.scale_deployment("web", 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scrape = op.scrape().await;
    assert!(
        computations(&scrape) > computed_before,
        "the churn was seen: the view was computed again"
    );
    assert_eq!(writes(&scrape), before, "{}", op.log());

    // `kubectl get cir`, sorted fix first (ascending: the largest last).
    let out = kubectl(&["get", "cir", "--sort-by=.status.fleet.reclaimablePullBytes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "IMAGE",
            "WORKLOADS",
            "NODES",
            "PULL",
            "FLEET",
            "RECLAIMABLE",
            "EFFICIENCY",
            "AGE"
        ],
        "{text}"
    );
    let name = |image: &Pushed| reports[&image.digest].metadata.name.clone().unwrap();
    let position = |image: &Pushed| {
        let name = name(image);
        text.lines()
            .position(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no row {name}:\n{text}"))
    };
    let worker_row: Vec<&str> = text
        .lines()
        .nth(position(&worker_ref))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(worker_row[2..4], ["2", "1"], "{text}");
    let mut expected = [
        (0, &api_ref),
        (2 * w.reclaimable, &web_ref),
        (b.reclaimable, &worker_ref),
    ];
    expected.sort_by_key(|(reclaimable, _)| *reclaimable);
    let rows: Vec<usize> = expected.iter().map(|(_, i)| position(i)).collect();
    assert!(
        rows.is_sorted(),
        "rows in ascending fleet reclaimable order:\n{text}"
    );

    // `kubectl imagebloat top`: the binary installed as a kubectl plugin, run by a real kubectl.
    let plugin = Plugin::install();
    let json = plugin.top(&["--output", "json", "--limit", "0"], None);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("a JSON list");
    let names: Vec<String> = reports
        .values()
        .map(|r| r.metadata.name.clone().unwrap())
        .collect();
    let mine: Vec<(&str, u64, u64, u64)> = rows
        .iter()
        .filter(|r| names.iter().any(|n| r["report"] == n.as_str()))
        .map(|r| {
            (
                r["digest"].as_str().unwrap(),
                u(r, "workloads"),
                u(r, "nodes"),
                u(r, "fleetReclaimablePullBytes"),
            )
        })
        .collect();
    let mut expected: Vec<(&str, u64, u64, u64)> = vec![
        (&api_ref.digest, 2, 2, 0),
        (&web_ref.digest, 2, 2, 2 * w.reclaimable),
        (&worker_ref.digest, 2, 1, b.reclaimable),
    ];
    expected.sort_by_key(|e| std::cmp::Reverse(e.3));
    assert_eq!(mine, expected, "largest fleet reclaimable first:\n{json}");
    let web_name = reports[&web_ref.digest].metadata.name.clone().unwrap();
    let web_row = rows
        .iter()
        .find(|r| r["report"] == web_name.as_str())
        .unwrap_or_else(|| panic!("no row for {web_name}:\n{json}"));
    let advice = &web_row["recommendation"];
    // /tmp left behind: one copy saves its 100 kB, on each of two Nodes.
    assert_eq!(advice["kind"], "remove-temp-files", "{web_row}");
    assert_eq!(u(advice, "savedBytes"), 100_000, "{web_row}");
    assert_eq!(u(advice, "copies"), 2, "{web_row}");
    assert_eq!(u(advice, "totalSavedBytes"), 200_000);
    let text = plugin.top(&["--sort", "pull"], None);
    assert!(
        text.lines().next().unwrap().starts_with("IMAGE")
            && text.contains("FLEET RECLAIMABLE")
            && text.contains(&format!(
                "{}@{}",
                web_ref.reference.rsplit_once(':').unwrap().0,
                &web_ref.digest[..19]
            )),
        "{text}"
    );

    // A namespace user with the built-in view role reads the namespace's ImageReports, and no
    // cluster report.
    let out = kubectl(&[
        "create",
        "rolebinding",
        "fleet-viewer",
        "--clusterrole=view",
        "--user=fleet-viewer",
        "-n",
        &cluster.ns,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let viewer = Kubeconfig::impersonating("fleet-viewer");
    let as_viewer = |args: &[&str]| kubectl(&[args, &["--kubeconfig", &viewer.path]].concat());
    let reads = wait_for(
        "the view role aggregates ImageReports",
        Duration::from_secs(30),
        || async {
            let out = as_viewer(&["get", "imagereports", "-n", &cluster.ns]);
            out.status.success().then_some(out)
        },
    )
    .await;
    assert!(String::from_utf8_lossy(&reads.stdout).contains("deployment-api-canary"));
    let out = as_viewer(&["get", "clusterimagereports"]);
    assert!(
        !out.status.success(),
        "a namespace user reads cluster reports"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    // The same user's `top` for the namespace: each workload one copy of its image.
    let json = plugin.top(&["-n", &cluster.ns, "--output", "json"], Some(&viewer.path));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("a JSON list");
    let web_row = rows
        .iter()
        .find(|r| r["digest"] == web_ref.digest.as_str())
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(u(web_row, "workloads"), 2);
    assert!(web_row.get("nodes").is_none(), "{web_row}");
    assert_eq!(
        u(web_row, "fleetReclaimablePullBytes"),
        2 * (b.reclaimable + w.reclaimable)
    );
    let refused = plugin.run(&["top"], Some(&viewer.path));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot list ClusterImageReports"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // api stops being used: its cluster report goes after the grace; the rest is recomputed.
    for name in ["api", "api-canary"] {
        cluster.delete_deployment_only(name).await;
    }
    let reports = cluster_reports(&cirs, &digests, &cluster.ns, &op, |m| {
        m.len() == 2
            && m.get(&web_ref.digest).is_some_and(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| s.fleet.pull_bytes == 2 * (b.pull + w.pull))
            })
    })
    .await;
    assert!(!reports.contains_key(&api_ref.digest));
    let web_layers = &reports[&web_ref.digest].status.as_ref().unwrap().layers;
    assert_eq!(
        web_layers[0].shared_with, 1,
        "only worker shares the base now"
    );
    let scrape = op
        .scrape_until("n1 without api", Duration::from_secs(30), |s| {
            series(s, "imagebloat_node_pull_bytes", &[("node", &n1)])
                == Some((b.pull + w.pull) as f64)
        })
        .await;
    assert_eq!(
        series(&scrape, "imagebloat_cluster_distinct_pull_bytes", &[]),
        Some((b.pull + w.pull + k.pull) as f64)
    );
    assert!(
        !op.log().contains("Forbidden") && !op.log().contains("cannot write"),
        "{}",
        op.log()
    );
    helm(&["uninstall", &release.name, "-n", &release.namespace]);
}

/// `imagebloat` installed as the kubectl plugin `kubectl-imagebloat` in a directory of its own,
/// run through the test bed's kubectl with that directory first on `PATH`.
struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    fn install() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubectl-imagebloat");
        std::fs::copy(env!("CARGO_BIN_EXE_imagebloat"), &path).unwrap();
        Plugin { dir }
    }

    /// `kubectl imagebloat ARGS` (with `--kubeconfig` when given).
    fn run(&self, args: &[&str], kubeconfig: Option<&str>) -> std::process::Output {
        let path = format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = std::process::Command::new(env("IMAGEBLOAT_TEST_KUBECTL"));
        cmd.arg("imagebloat").args(args).env("PATH", path);
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        cmd.output().expect("kubectl imagebloat")
    }

    /// `kubectl imagebloat top ARGS`, which must succeed; its standard output.
    fn top(&self, args: &[&str], kubeconfig: Option<&str>) -> String {
        let out = self.run(&[&["top"], args].concat(), kubeconfig);
        assert!(
            out.status.success(),
            "kubectl imagebloat top {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

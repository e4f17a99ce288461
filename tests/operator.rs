//! `imagebloat run` against a real kube-apiserver and kube-controller-manager
//! (`scripts/kube-testenv.sh`), with images in the real test registry. The tests play the
//! scheduler and the kubelet: they bind Pods to Nodes and set `containerStatuses[].imageID`.
//!
//! The same suite runs against an existing cluster (`IMAGEBLOAT_TEST_KUBECONFIG`): its Pods name a
//! scheduler that does not exist and are bound to Nodes the tests create, so no real scheduler or
//! kubelet touches them, and everything it creates is labelled for clean-up.
//!
//! Each test states its scenario; what every scenario stands on is in `operator/fixture.rs`.

mod common;
#[path = "operator/fixture.rs"]
mod fixture;

use std::time::Duration;

use common::*;
use fixture::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;

#[tokio::test]
async fn deployment_with_init_and_two_containers_gets_one_exact_report_and_gauges() {
    let cluster = Cluster::new("e2e-deploy").await;
    let app = ImageBuilder::new(vec![
        Layer::new("ADD rootfs")
            .sized("bin/app", 100_000)
            .sized("tmp/build.tgz", 50_000),
        Layer::new("RUN rm /tmp/build.tgz").whiteout("tmp/build.tgz"),
    ])
    .build();
    let sidecar =
        ImageBuilder::new(vec![Layer::new("ADD proxy").sized("bin/proxy", 70_000)]).build();
    let init = ImageBuilder::new(vec![
        Layer::new("ADD migrate")
            .sized("bin/migrate", 30_000)
            .sized("var/lib/apt/lists/x", 20_000),
    ])
    .build();
    let app_ref = push("e2e-app", &app).await;
    let sidecar_ref = push("e2e-sidecar", &sidecar).await;
    let init_ref = push("e2e-init", &init).await;
    let op = cluster.start_operator(&[]);

    let d = cluster
        .create_deployment(deployment(
            "web",
            2,
            &[("migrate", &init_ref.reference)],
            &[
                ("app", &app_ref.reference),
                ("proxy", &sidecar_ref.reference),
            ],
        ))
        .await;
    for pod in cluster.pods(2).await {
        let running: [(&str, &str); 3] = [
            ("app", &app_ref.image_id()),
            ("proxy", &sidecar_ref.image_id()),
            ("migrate", &init_ref.image_id()),
        ];
        cluster.run_pod(&pod, &running).await;
    }

    let r = cluster.report("deployment-web", &op).await;
    let owner = &r.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(owner.uid, d.metadata.uid.clone().unwrap());
    assert_eq!(owner.block_owner_deletion, Some(false));
    let labels = r.metadata.labels.clone().unwrap();
    assert_eq!(labels["imagebloat.dev/workload-kind"], "Deployment");
    assert_eq!(labels["imagebloat.dev/workload-name"], "web");
    assert_eq!(r.spec.workload.uid, d.metadata.uid.clone().unwrap());

    let status = r.status.unwrap();
    let by_name = |n: &str| status.containers.iter().find(|c| c.name == n).unwrap();
    let migrate = by_name("migrate");
    assert!(migrate.init);
    let (a, s, m) = (
        &by_name("app").findings.as_ref().unwrap().analysis,
        &by_name("proxy").findings.as_ref().unwrap().analysis,
        &migrate.findings.as_ref().unwrap().analysis,
    );
    assert_eq!(
        (
            a.totals.size_bytes,
            a.totals.final_bytes,
            a.totals.wasted_bytes
        ),
        (150_000, 100_000, 50_000)
    );
    assert_eq!(a.totals.pull_bytes, app.pull_bytes());
    assert_eq!((s.totals.size_bytes, s.totals.wasted_bytes), (70_000, 0));
    assert_eq!(
        (m.totals.size_bytes, m.totals.reclaimable_bytes),
        (50_000, 20_000)
    );
    assert_eq!(
        by_name("app").findings.as_ref().unwrap().digest,
        app_ref.digest
    );
    let summary = status.summary.as_ref().unwrap();
    assert_eq!(summary.images, 3);
    assert_eq!(summary.totals.size_bytes, 270_000);
    assert_eq!(summary.totals.wasted_bytes, 50_000);
    assert_eq!(
        summary.totals.pull_bytes,
        app.pull_bytes() + sidecar.pull_bytes() + init.pull_bytes()
    );
    // `kubectl describe deployment web` says it too.
    assert_eq!(
        cluster.event_note("web", "Analyzed").await,
        format!(
            "3 images: pull {}, reclaimable {}, efficiency {} (imagereport/deployment-web)",
            summary.pull_size, summary.reclaimable, summary.efficiency_percent
        )
    );

    let scrape = op
        .scrape_until("gauges on /metrics", Duration::from_secs(10), |s| {
            s.contains("imagebloat_image_wasted_bytes")
        })
        .await;
    let labels = [
        ("namespace", cluster.ns.as_str()),
        ("workload_kind", "Deployment"),
        ("workload", "web"),
        ("container", "app"),
    ];
    assert_eq!(
        series(&scrape, "imagebloat_image_wasted_bytes", &labels),
        Some(50_000.0)
    );
    assert_eq!(
        series(&scrape, "imagebloat_image_size_bytes", &labels),
        Some(150_000.0)
    );
    assert_eq!(
        series(&scrape, "imagebloat_image_pull_bytes", &labels),
        Some(app.pull_bytes() as f64)
    );
    let migrate_labels = [
        ("workload", "web"),
        ("container", "migrate"),
        ("category", "package-cache"),
    ];
    assert_eq!(
        series(
            &scrape,
            "imagebloat_image_reclaimable_category_bytes",
            &migrate_labels
        ),
        Some(20_000.0)
    );
    assert!(
        scrape.contains(&format!("image=\"{}\"", app_ref.reference)),
        "labelled with the Pod's image"
    );

    // Deleting the workload: the controller-manager collects the report, the operator drops
    // the series.
    cluster.delete_deployment("web").await;
    cluster
        .wait_for_report(
            "report garbage-collected",
            "deployment-web",
            Duration::from_secs(90),
            |r| r.is_none().then_some(()),
        )
        .await;
    op.scrape_until("series removed", Duration::from_secs(30), |s| {
        !s.is_empty() && series(s, "imagebloat_image_wasted_bytes", &labels).is_none()
    })
    .await;
}

#[tokio::test]
async fn one_image_used_by_fifty_workloads_is_downloaded_once() {
    let cluster = Cluster::new("e2e-shared").await;
    let image = ImageBuilder::new(vec![
        Layer::new("ADD base").sized("usr/lib/base.so", 200_000),
        Layer::new("COPY app").sized("app/bin", 30_000),
    ])
    .build();
    let image = push("e2e-shared", &image).await;
    let op = cluster.start_operator(&[]);
    for i in 0..50 {
        cluster.deploy_running(&format!("svc-{i:02}"), &image).await;
    }
    for i in 0..50 {
        let r = cluster.report(&format!("deployment-svc-{i:02}"), &op).await;
        assert_eq!(
            r.status.unwrap().summary.unwrap().totals.size_bytes,
            230_000
        );
    }
    // Two layer blobs and the config, each fetched exactly once.
    assert_eq!(image.blob_gets(), 3);
}

#[tokio::test]
async fn a_tag_is_resolved_by_head_until_the_kubelet_reports_the_digest_which_wins() {
    let cluster = Cluster::new("e2e-tag").await;
    let first = ImageBuilder::new(vec![Layer::new("v1").sized("app", 10_000)]).build();
    let second = ImageBuilder::new(vec![Layer::new("v2").sized("app", 20_000)]).build();
    let first = push("e2e-tag", &first).await;
    let op = cluster.start_operator(&[]);
    cluster
        .create_deployment(deployment("tagged", 1, &[], &[("main", &first.reference)]))
        .await;
    // Bound, but no image reported yet (the kubelet is still pulling).
    let pod = cluster.pods(1).await.remove(0);
    cluster.run_pod(&pod, &[]).await;
    let r = cluster.report("deployment-tagged", &op).await;
    let findings = r.status.unwrap().containers[0].findings.clone().unwrap();
    assert_eq!(findings.digest, first.digest);
    assert_eq!(findings.analysis.totals.size_bytes, 10_000);
    assert!(first.manifest_requests("HEAD") >= 1);
    assert_eq!(
        first.manifest_requests("GET"),
        0,
        "the tag is resolved without fetching its manifest"
    );

    // The tag moves and the kubelet reports running the new digest: its word wins at once, though
    // the operator still remembers the tag's old digest.
    let second = push_to(&first.reference, &second).await;
    let bound = cluster
        .api::<Pod>()
        .get(pod.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    cluster
        .run_pod(&bound, &[("main", &second.image_id())])
        .await;
    let size = cluster
        .wait_for_report(
            "the report of the new digest",
            "deployment-tagged",
            Duration::from_secs(20),
            |r| {
                let f = r?.status?.containers.first()?.findings.clone()?;
                (f.digest == second.digest).then_some(f.analysis.totals.size_bytes)
            },
        )
        .await;
    assert_eq!(size, 20_000);
}

#[tokio::test]
async fn operator_restart_reuses_reports_without_downloading() {
    let cluster = Cluster::new("e2e-restart").await;
    let image = ImageBuilder::new(vec![Layer::new("ADD x").sized("x", 12_345)]).build();
    let image = push("e2e-restart", &image).await;
    // A single-platform image built for another architecture than its Node's: its findings are
    // those of its one manifest whatever the Node, and are found again after the restart too.
    let other = ImageBuilder::new(vec![Layer::new("ADD y").sized("y", 5_432)])
        .platform("arm64", Some("v8"))
        .build();
    let other = push("e2e-restart-other", &other).await;
    let first = cluster.start_operator(&[]);
    cluster.deploy_running("api", &image).await;
    cluster.deploy_running("edge", &other).await;
    let before = cluster.report("deployment-api", &first).await;
    let edge = cluster.report("deployment-edge", &first).await;
    let edge = edge.status.unwrap().containers[0].findings.clone().unwrap();
    assert_eq!(edge.platform, "linux/arm64/v8");
    assert_eq!(edge.analysis.totals.size_bytes, 5_432);
    let fetched = image.blob_gets();
    assert_eq!(fetched, 2, "layer and config");
    assert_eq!(other.blob_gets(), 2, "layer and config");
    drop(first);

    let second = cluster.start_operator(&[]);
    // The restarted operator serves the same figures, from the report it found.
    let size_of = |s: &str, workload: &str| {
        series(s, "imagebloat_image_size_bytes", &[("workload", workload)])
    };
    let scrape = second
        .scrape_until("gauges after restart", Duration::from_secs(30), |s| {
            size_of(s, "api").is_some()
        })
        .await;
    assert_eq!(size_of(&scrape, "api"), Some(12_345.0));
    assert!(
        series(
            &scrape,
            "imagebloat_cache_hits_total",
            &[("cache", "image")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(image.blob_gets(), fetched, "no blob downloaded again");
    second
        .scrape_until(
            "the other image's gauges after restart",
            Duration::from_secs(30),
            |s| size_of(s, "edge") == Some(5_432.0),
        )
        .await;
    assert_eq!(other.blob_gets(), 2, "nor the other image's");
    let after = cluster
        .report_within("deployment-api", &second, Duration::from_secs(10))
        .await;
    assert_eq!(after.status, before.status);
}

#[tokio::test]
async fn private_image_is_pulled_with_the_service_accounts_pull_secret() {
    let cluster = Cluster::new("e2e-private").await;
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_AUTH");
    let (user, password) = (
        env("IMAGEBLOAT_TEST_REGISTRY_USER"),
        env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD"),
    );
    let image = ImageBuilder::new(vec![Layer::new("ADD secret-app").sized("app", 4_242)]).build();
    let reference = format!("{reg}/private/e2e:{}", std::process::id());
    let image = Pushed {
        digest: Pusher::basic_auth().push(&image, &reference).await,
        reference,
    };

    cluster
        .give_the_default_service_account_a_pull_secret(&reg, &user, &password)
        .await;
    let op = cluster.start_operator(&["--insecure-registry", &reg]);
    cluster.deploy_running("private", &image).await;
    let status = cluster
        .report("deployment-private", &op)
        .await
        .status
        .unwrap();
    assert_eq!(status.summary.as_ref().unwrap().totals.size_bytes, 4_242);
    let text = serde_json::to_string(&status).unwrap();
    assert!(!text.contains(&password), "no secret in the report");
    assert!(!op.log().contains(&password), "no secret in the log");
}

/// The basic-auth registry's access-log lines for blob GETs in `repository` (its log sits next
/// to the plain registry's).
fn auth_registry_blob_gets(repository: &str) -> usize {
    let log =
        std::path::Path::new(&env("IMAGEBLOAT_TEST_REGISTRY_LOG")).with_file_name("registry-b.log");
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/{repository}/blobs/")))
        .count()
}

#[tokio::test]
async fn a_private_digest_run_in_another_namespace_without_its_pull_secret_gets_no_findings() {
    let owner = Cluster::new("e2e-iso-owner").await;
    let other = Cluster::new("e2e-iso-other").await;
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_AUTH");
    let (user, password) = (
        env("IMAGEBLOAT_TEST_REGISTRY_USER"),
        env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD"),
    );
    let image =
        ImageBuilder::new(vec![Layer::new("ADD secret-app").sized("secret", 7_777)]).build();
    let repository = format!("private/iso-{}", std::process::id());
    let reference = format!("{reg}/{repository}:1");
    let image = Pushed {
        digest: Pusher::basic_auth().push(&image, &reference).await,
        reference,
    };
    owner
        .give_the_default_service_account_a_pull_secret(&reg, &user, &password)
        .await;
    let op = owner.start_operator(&["--insecure-registry", &reg, "--namespaces", &other.ns]);
    owner.deploy_running("private", &image).await;
    let status = owner
        .report("deployment-private", &op)
        .await
        .status
        .unwrap();
    assert_eq!(status.summary.unwrap().totals.size_bytes, 7_777);
    let downloaded = auth_registry_blob_gets(&repository);
    assert!(downloaded >= 1, "the owner's analysis downloaded the image");

    // The same tag and digest (the kubelet's imageID) in a namespace without the pull secret.
    other.deploy_running("thief", &image).await;
    let container = other
        .wait_for_report(
            "a report without findings",
            "deployment-thief",
            Duration::from_secs(60),
            |r| {
                let c = r?.status?.containers.into_iter().next()?;
                c.reason.is_some().then_some(c)
            },
        )
        .await;
    assert_eq!(container.reason.as_deref(), Some("Unauthorized"));
    assert!(container.findings.is_none(), "no files, history or advice");
    let report = other
        .api::<imagebloat::report::crd::ImageReport>()
        .get("deployment-thief")
        .await
        .unwrap();
    let text = serde_json::to_string(&report).unwrap();
    assert!(
        !text.contains("secret-app") && !text.contains("7777"),
        "{text}"
    );
    assert_eq!(
        auth_registry_blob_gets(&repository),
        downloaded,
        "no blob downloaded for the namespace without the secret"
    );
    // The owner's report is untouched.
    let status = owner
        .report("deployment-private", &op)
        .await
        .status
        .unwrap();
    assert_eq!(status.summary.unwrap().totals.size_bytes, 7_777);
}

#[tokio::test]
async fn relabelling_a_pod_in_a_loop_downloads_a_failing_image_once_per_backoff_period() {
    let cluster = Cluster::new("e2e-backoff").await;
    let image = ImageBuilder::new(vec![Layer::new("ADD big").sized("big", 100_000)]).build();
    let image = push("e2e-backoff", &image).await;
    // The suite retries after 1 s: attempts 0 s, 1 s, 3 s, 7 s... after the first failure.
    let op = cluster.start_operator(&["--max-layer-bytes", "10KiB"]);
    cluster.deploy_running("bomb", &image).await;
    let message = cluster
        .wait_for_report(
            "a failure condition",
            "deployment-bomb",
            Duration::from_secs(60),
            |r| {
                let c = r?
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (c.status == "False").then_some(c.message)
            },
        )
        .await;
    assert!(message.contains("retrying in 1s after: "), "{message}");
    let per_attempt = wait_for(
        "the attempt's downloads",
        Duration::from_secs(10),
        || async {
            let n = image.blob_gets();
            (n >= 1).then_some(n)
        },
    )
    .await;

    // Relabelled for 2.5 s: without a backoff, each relabel would download the image again.
    let pods = cluster.api::<Pod>();
    let pod = cluster.pods(1).await.remove(0);
    let name = pod.metadata.name.as_deref().unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(2_500);
    let mut relabels = 0;
    while std::time::Instant::now() < until {
        let labels = serde_json::json!({"metadata": {"labels": {"churn": relabels.to_string()}}});
        pods.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(labels),
        )
        .await
        .unwrap();
        relabels += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(relabels >= 20, "{relabels}");
    // Series without labels.
    let value = |s: &str, name: &str| -> Option<f64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    op.scrape_until("skipped attempts", Duration::from_secs(30), |s| {
        value(s, "imagebloat_analyses_skipped_total").unwrap_or(0.0) >= 1.0
            && value(s, "imagebloat_analysis_backoff_images") == Some(1.0)
    })
    .await;
    let attempts = image.blob_gets() / per_attempt;
    assert!(attempts <= 3, "{attempts} attempts for {relabels} relabels");
}

#[tokio::test]
async fn multi_arch_image_on_an_arm64_node_reports_the_arm64_manifest() {
    let cluster = Cluster::on_arch("e2e-arm", "arm64").await;
    let amd = ImageBuilder::new(vec![Layer::new("amd").sized("bin/amd", 1_000)]).build();
    let arm = ImageBuilder::new(vec![Layer::new("arm").sized("bin/arm", 2_000)])
        .platform("arm64", Some("v8"))
        .build();
    let reference = format!("{}:multi", repo("e2e-multi"));
    let index = Pushed {
        digest: Pusher::plain()
            .push_index(
                &[
                    (&amd, "linux", "amd64", None),
                    (&arm, "linux", "arm64", Some("v8")),
                ],
                &reference,
            )
            .await,
        reference,
    };
    let op = cluster.start_operator(&[]);
    // The kubelet reports the index digest it pulled.
    cluster.deploy_running("edge", &index).await;
    let status = cluster.report("deployment-edge", &op).await.status.unwrap();
    let f = status.containers[0].findings.as_ref().unwrap();
    assert_eq!(f.platform, "linux/arm64/v8");
    assert_eq!(f.digest, arm.digest());
    assert_eq!(f.index_digest.as_deref(), Some(index.digest.as_str()));
    assert_eq!(f.analysis.totals.size_bytes, 2_000);
}

#[tokio::test]
async fn kubectl_get_imagereports_shows_the_human_columns() {
    let cluster = Cluster::new("e2e-kubectl").await;
    let image = ImageBuilder::new(vec![
        Layer::new("ADD")
            .sized("a", 1_000_000)
            .sized("tmp/t", 500_000),
        Layer::new("RUN rm").whiteout("tmp/t"),
    ])
    .build();
    let image = push("e2e-kubectl", &image).await;
    let op = cluster.start_operator(&[]);
    cluster.deploy_running("shop", &image).await;
    cluster.report("deployment-shop", &op).await;

    let out = kubectl(&["get", "imagereports", "-n", &cluster.ns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "IMAGES",
            "PULL",
            "SIZE",
            "RECLAIMABLE",
            "EFFICIENCY",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..2], ["deployment-shop", "1"]);
    assert_eq!(row[4..6], ["500.0", "kB"], "{text}");
    assert_eq!(row[6], "66.7%", "{text}");

    let out = kubectl(&["get", "ir", "-n", &cluster.ns, "-o", "wide"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().next().unwrap().contains("WASTED") && text.contains("Analyzed"),
        "{text}"
    );
}

#[tokio::test]
async fn with_two_replicas_exactly_one_writes() {
    let cluster = Cluster::new("e2e-leader").await;
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized("a", 777)]).build();
    let image = push("e2e-leader", &image).await;
    let lease = ["--leader-elect", "--lease-namespace", cluster.ns.as_str()];
    let a = cluster.start_operator(&[&lease[..], &["--identity", "replica-a"]].concat());
    let b = cluster.start_operator(&[&lease[..], &["--identity", "replica-b"]].concat());
    cluster.deploy_running("one", &image).await;
    cluster.report("deployment-one", &a).await;
    let writes = async |op: &Operator| {
        op.gauge("imagebloat_reports_written_total", &[("result", "success")])
            .await
            .unwrap_or(0.0)
    };
    let (writes_a, writes_b) = (writes(&a).await, writes(&b).await);
    assert!(
        (writes_a > 0.0) != (writes_b > 0.0),
        "exactly one replica writes: a={writes_a} b={writes_b}"
    );
    let holder = cluster
        .api::<Lease>()
        .get("imagebloat-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    let leader_writes = if holder == "replica-a" {
        writes_a
    } else {
        writes_b
    };
    assert!(
        leader_writes > 0.0,
        "the Lease holder ({holder}) is the writer"
    );
}

#[tokio::test]
async fn registry_down_shows_a_condition_then_a_correct_report_once_it_is_back() {
    let cluster = Cluster::new("e2e-down").await;
    let mut own = OwnRegistry::start();
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized("srv", 9_999)]).build();
    let image = push_to(&format!("{}/flaky/app:1", own.addr()), &image).await;
    own.stop();

    let addr = own.addr();
    let op = cluster.start_operator(&[
        "--insecure-registry",
        &addr,
        "--retries",
        "0",
        "--timeout",
        "2",
    ]);
    cluster.deploy_running("flaky", &image).await;
    let condition = cluster
        .wait_for_report(
            "a failure condition",
            "deployment-flaky",
            Duration::from_secs(60),
            |r| {
                let c = r?
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (c.status == "False").then_some(c)
            },
        )
        .await;
    assert_eq!(condition.reason, "RegistryUnreachable");
    assert!(
        condition.message.contains("container main"),
        "{}",
        condition.message
    );
    let note = cluster.event_note("flaky", "AnalysisFailed").await;
    assert!(
        note.starts_with("container main: RegistryUnreachable: "),
        "{note}"
    );

    own.resume();
    let status = cluster
        .report("deployment-flaky", &op)
        .await
        .status
        .unwrap();
    assert_eq!(status.summary.unwrap().totals.size_bytes, 9_999);
    assert!(status.containers[0].error.is_none());
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_prometheus_scraping_the_operator() {
    let cluster = Cluster::new("e2e-prom").await;
    let good = ImageBuilder::new(vec![
        Layer::new("ADD")
            .sized("bin/app", 80_000)
            .sized("var/lib/apt/lists/p", 30_000),
        Layer::new("RUN rm")
            .whiteout("bin/app")
            .sized("bin/app", 81_000),
    ])
    .build();
    let good = push("e2e-prom", &good).await;
    let op = cluster.start_operator(&["--fleet-interval-seconds", "1"]);
    let prometheus = Prometheus::scraping(&op.metrics);
    cluster.deploy_running("good", &good).await;
    // A second workload whose image is missing: errors show on the dashboard too.
    let missing = Pushed {
        reference: format!("{}:missing", repo("e2e-prom-missing")),
        digest: sha256(b"no such manifest"),
    };
    cluster.deploy_running("broken", &missing).await;
    cluster.report("deployment-good", &op).await;

    // Wait until Prometheus has several scrapes with the image series in them.
    wait_for(
        "scrapes with image series",
        Duration::from_secs(60),
        || async {
            prometheus
                .value("count_over_time(imagebloat_image_pull_bytes{workload=\"good\"}[1m])")
                .await
                .filter(|n| *n >= 3.0)
        },
    )
    .await;
    // And with the fleet view's series (computed apart from the reconciles).
    wait_for(
        "scrapes with fleet series",
        Duration::from_secs(60),
        || async {
            prometheus
                .value("count_over_time(imagebloat_image_fleet_pull_bytes[1m])")
                .await
                .filter(|n| *n >= 2.0)
        },
    )
    .await;

    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut empty = Vec::new();
    for q in &queries {
        let a = prometheus.query(q).await;
        assert_eq!(a["status"], "success", "{q}: {a}");
        if !has_data(&a) {
            empty.push(q.clone());
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );

    // Every alert expression evaluates (firing or not) against the same series.
    let mut alerts = 0;
    for expr in alert_expressions() {
        let a = prometheus.query(&expr).await;
        assert_eq!(a["status"], "success", "{expr}: {a}");
        alerts += 1;
    }
    assert_eq!(alerts, 6);
}

#[tokio::test]
async fn the_operator_does_its_whole_job_with_only_the_charts_rbac() {
    let cluster = Cluster::new("e2e-chart-apps").await;
    let apps = cluster.ns.as_str();
    // The operator under test runs here, as the chart's identity; the chart's own Pod is not needed.
    let ChartRelease {
        name,
        namespace: release_ns,
        kubeconfig,
    } = cluster
        .install_chart("e2e-chart", &["leaderElection.enabled=true"])
        .await;

    let image = ImageBuilder::new(vec![
        Layer::new("ADD").sized("srv", 64_000).sized("tmp/x", 6_000),
        Layer::new("RUN rm").whiteout("tmp/x"),
    ])
    .build();
    let image = push("e2e-chart", &image).await;
    // The flags the chart's Deployment passes for leader election.
    let lease = format!("{name}-leader");
    let op = cluster.start_operator_with_env(
        &[
            "--leader-elect",
            "--lease-namespace",
            &release_ns,
            "--lease-name",
            &lease,
            "--identity",
            "chart-replica",
        ],
        &[("KUBECONFIG", &kubeconfig.path)],
    );
    cluster.deploy_running("svc", &image).await;
    let r = cluster.report("deployment-svc", &op).await;
    assert_eq!(
        r.status.unwrap().summary.unwrap().totals.wasted_bytes,
        6_000
    );
    assert!(
        !op.log().contains("Forbidden"),
        "no call outside the role:\n{}",
        op.log()
    );

    // Anything outside the role is refused for that identity.
    for forbidden in [
        vec!["delete", "pods", "--all", "-n", apps],
        vec!["get", "configmaps", "-n", apps],
        vec!["create", "namespace", "not-allowed"],
    ] {
        let out = kubectl(&[&forbidden[..], &["--kubeconfig", &kubeconfig.path]].concat());
        assert!(!out.status.success(), "{forbidden:?} should be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("forbidden") || err.contains("Forbidden"),
            "{forbidden:?}: {err}"
        );
    }

    // The release's cluster-scoped parts (ClusterRole and binding) leave with it.
    helm(&["uninstall", &name, "-n", &release_ns]);
}

/// The API server of the test bed (1.20) publishes only OpenAPI v2, where a `nullable` object
/// hides every field beneath it: `kubectl explain` reaches every field of every CRD the binary
/// generates all the same, and prints that field's own description.
#[tokio::test]
async fn kubectl_explain_prints_every_fields_own_description() {
    let _cluster = Cluster::new("e2e-explain").await;
    let yaml = imagebloat::report::crd::crd_yaml();
    let mut fields: Vec<(String, String)> = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let crd: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
        let singular = crd["spec"]["names"]["singular"].as_str().unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        explainable_fields(singular, schema, &mut fields);
    }
    assert!(fields.len() >= 84, "{} fields", fields.len());
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let explain = |path: &str| {
        let out = kubectl(&["explain", path]);
        assert!(
            out.status.success(),
            "kubectl explain {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // What kubectl prints between DESCRIPTION: and FIELDS: (or the end).
        let description = text
            .split_once("DESCRIPTION:")
            .map(|(_, d)| d.split("FIELDS:").next().unwrap_or_default())
            .unwrap_or_default();
        words(description)
    };
    // The API server publishes a new CRD's schema a moment after it is established.
    let (path, wanted) = fields
        .iter()
        .find(|(p, _)| p == "imagereport.status.summary.pullBytes")
        .expect("status.summary.pullBytes in the schema");
    wait_for(
        "the CRD's schema published",
        Duration::from_secs(30),
        || {
            let found = explain(path);
            async move { found.starts_with(&words(wanted)).then_some(()) }
        },
    )
    .await;
    assert!(!words(wanted).contains("Findings for every container"));

    let wrong: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = fields
            .chunks(fields.len().div_ceil(4))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|(path, wanted)| {
                            let got = explain(path);
                            (!got.starts_with(&words(wanted))).then(|| {
                                format!("{path}: wanted {wanted:?}, kubectl printed {got:?}")
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        wrong.is_empty(),
        "{} of {} fields not explained:\n{}",
        wrong.len(),
        fields.len(),
        wrong.join("\n")
    );
}

/// Every field beneath `schema` as `kubectl explain` names it (`a.b.c`, arrays without `[]`),
/// with its description in the schema.
fn explainable_fields(path: &str, schema: &serde_yaml::Value, out: &mut Vec<(String, String)>) {
    if let Some(properties) = schema["properties"].as_mapping() {
        for (name, field) in properties {
            let path = format!("{path}.{}", name.as_str().unwrap());
            let description = field["description"].as_str().unwrap_or_default();
            out.push((path.clone(), description.to_string()));
            explainable_fields(&path, field, out);
        }
    }
    if schema["items"].is_mapping() {
        explainable_fields(path, &schema["items"], out);
    }
}

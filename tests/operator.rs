//! `imagebloat run` against a real kube-apiserver and kube-controller-manager
//! (`scripts/kube-testenv.sh`), with images in the real test registry. The tests play the
//! scheduler and the kubelet: they bind Pods to Nodes and set `containerStatuses[].imageID`.
//!
//! The same suite runs against an existing cluster (`IMAGEBLOAT_TEST_KUBECONFIG`): its Pods name a
//! scheduler that does not exist and are bound to Nodes the tests create, so no real scheduler or
//! kubelet touches them, and everything it creates carries [`E2E_LABEL`] for clean-up.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use imagebloat::report::crd::ImageReport;

/// The label on every namespace and Node the suite creates (`kube-testenv.sh down` deletes them).
const E2E_LABEL: &str = "imagebloat.dev/e2e";

/// The scheduler the suite's Pods ask for: none runs by that name, the tests bind them.
const E2E_SCHEDULER: &str = "imagebloat-e2e";

async fn client() -> Client {
    env("KUBECONFIG");
    Client::try_default()
        .await
        .expect("kube client from KUBECONFIG")
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&imagebloat::report::crd::crd_yaml()).unwrap();
    crds.patch(
        "imagereports.imagebloat.dev",
        &PatchParams::apply("imagebloat-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    wait_for("CRD established", Duration::from_secs(30), || async {
        let c = crds.get("imagereports.imagebloat.dev").await.ok()?;
        c.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A namespace of this test's own, ready for Pods.
async fn namespace(client: &Client, name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ns = format!("{name}-{}", nanos % 100_000);
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {E2E_LABEL: "true"}}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "default service account",
        Duration::from_secs(30),
        || async { sas.get_opt("default").await.ok().flatten().map(|_| ()) },
    )
    .await;
    ns
}

async fn node(client: &Client, name: &str, arch: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await.unwrap().is_none() {
        let created = nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {
                        "kubernetes.io/arch": arch, "kubernetes.io/os": "linux", E2E_LABEL: "true"}}
                }))
                .unwrap(),
            )
            .await;
        match created {
            // Tests run in parallel: another one may have created it in between.
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => panic!("create node {name}: {e}"),
        }
    }
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"nodeInfo": {
                "architecture": arch, "operatingSystem": "linux",
                "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                "kubeletVersion": "", "machineID": "", "osImage": "", "systemUUID": ""
            }}})),
        )
        .await
        .unwrap();
}

/// Binds a Pod to a Node and reports its containers running the given image IDs, as a kubelet.
async fn run_pod(client: &Client, ns: &str, pod: &Pod, node: &str, image_ids: &[(&str, &str)]) {
    let name = pod.metadata.name.clone().unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .is_none()
    {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}
        });
        let request = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&binding).unwrap())
            .unwrap();
        client.request::<Value>(request).await.expect("bind pod");
    }
    let spec = pod.spec.clone().unwrap();
    let statuses = |containers: &Vec<k8s_openapi::api::core::v1::Container>| -> Vec<Value> {
        containers
            .iter()
            .map(|c| {
                let id = image_ids
                    .iter()
                    .find(|(n, _)| *n == c.name)
                    .map(|(_, id)| id.to_string())
                    .unwrap_or_default();
                json!({"name": c.name, "image": c.image, "imageID": id, "ready": true,
                       "restartCount": 0, "state": {"running": {}}})
            })
            .collect()
    };
    let init = spec.init_containers.clone().unwrap_or_default();
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Running",
            "containerStatuses": statuses(&spec.containers),
            "initContainerStatuses": statuses(&init),
        }})),
    )
    .await
    .expect("patch pod status");
}

/// The operator as a child process, stopped when dropped.
struct Operator {
    child: Child,
    pub metrics: String,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(namespace: &str, extra: &[&str]) -> Self {
        Self::start_with(namespace, extra, &[])
    }

    fn start_with(namespace: &str, extra: &[&str], vars: &[(&str, &str)]) -> Self {
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("imagebloat-operator-{namespace}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let reg = registry();
        let mut args = vec![
            "run",
            "--metrics-addr",
            &metrics,
            "--insecure-registry",
            &reg,
            "--namespaces",
            namespace,
            "--retry-seconds",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagebloat"));
        cmd.args(&args)
            .env("IMAGEBLOAT_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start imagebloat run");
        Operator {
            child,
            metrics,
            log,
        }
    }

    async fn scrape(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.metrics)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of one series in a scrape, matched by all the given label pairs.
fn series(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (label_text, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

async fn report(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    op: &Operator,
) -> ImageReport {
    let api: Api<ImageReport> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(r)) = api.get_opt(name).await
            && let Some(s) = &r.status
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "report {ns}/{name} not ready within {timeout:?}; operator log:\n{}",
            op.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn pods_of(client: &Client, ns: &str, count: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(
        "pods created by the controller-manager",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            (list.items.len() >= count).then_some(list.items)
        },
    )
    .await
}

/// The note of the operator's newest event with `reason` about a workload (`kubectl describe`).
async fn event_note(client: &Client, ns: &str, workload: &str, reason: &str) -> String {
    use k8s_openapi::api::events::v1::Event;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("a {reason} event on {workload}"),
        Duration::from_secs(30),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.reporting_controller.as_deref() == Some("imagebloat")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(workload)
                })
                .max_by_key(|e| e.event_time.as_ref().map(|t| t.0))
                .and_then(|e| e.note)
        },
    )
    .await
}

fn deployment(
    name: &str,
    replicas: i32,
    init: &[(&str, &str)],
    containers: &[(&str, &str)],
) -> Deployment {
    let c = |list: &[(&str, &str)]| -> Vec<Value> {
        list.iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect()
    };
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "schedulerName": E2E_SCHEDULER,
                    "initContainers": c(init),
                    "containers": c(containers)
                }
            }
        }
    }))
    .unwrap()
}

fn image_id(reference: &str, digest: &str) -> String {
    let repo = reference
        .rsplit_once(':')
        .map(|(r, _)| r)
        .unwrap_or(reference);
    format!("{repo}@{digest}")
}

#[tokio::test]
async fn deployment_with_init_and_two_containers_gets_one_exact_report_and_gauges() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-deploy").await;

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
    let app_ref = format!("{}:1", repo("e2e-app"));
    let sidecar_ref = format!("{}:1", repo("e2e-sidecar"));
    let init_ref = format!("{}:1", repo("e2e-init"));
    let pusher = Pusher::plain();
    let app_digest = pusher.push(&app, &app_ref).await;
    let sidecar_digest = pusher.push(&sidecar, &sidecar_ref).await;
    let init_digest = pusher.push(&init, &init_ref).await;

    let op = Operator::start(&ns, &[]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deployments
        .create(
            &PostParams::default(),
            &deployment(
                "web",
                2,
                &[("migrate", &init_ref)],
                &[("app", &app_ref), ("proxy", &sidecar_ref)],
            ),
        )
        .await
        .unwrap();
    for pod in pods_of(&client, &ns, 2).await {
        run_pod(
            &client,
            &ns,
            &pod,
            "e2e-amd64",
            &[
                ("app", &image_id(&app_ref, &app_digest)),
                ("proxy", &image_id(&sidecar_ref, &sidecar_digest)),
                ("migrate", &image_id(&init_ref, &init_digest)),
            ],
        )
        .await;
    }

    let r = report(&client, &ns, "deployment-web", Duration::from_secs(60), &op).await;
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
        (a.size_bytes, a.final_bytes, a.wasted_bytes),
        (150_000, 100_000, 50_000)
    );
    assert_eq!(a.pull_bytes, app.pull_bytes());
    assert_eq!((s.size_bytes, s.wasted_bytes), (70_000, 0));
    assert_eq!((m.size_bytes, m.reclaimable_bytes), (50_000, 20_000));
    assert_eq!(by_name("app").findings.as_ref().unwrap().digest, app_digest);
    assert_eq!(status.summary.as_ref().unwrap().images, 3);
    assert_eq!(status.summary.as_ref().unwrap().size_bytes, 270_000);
    assert_eq!(status.summary.as_ref().unwrap().wasted_bytes, 50_000);
    assert_eq!(
        status.summary.as_ref().unwrap().pull_bytes,
        app.pull_bytes() + sidecar.pull_bytes() + init.pull_bytes()
    );
    // `kubectl describe deployment web` says it too.
    let note = event_note(&client, &ns, "web", "Analyzed").await;
    let summary = status.summary.as_ref().unwrap();
    assert_eq!(
        note,
        format!(
            "3 images: pull {}, reclaimable {}, efficiency {} (imagereport/deployment-web)",
            summary.pull_size, summary.reclaimable, summary.efficiency_percent
        )
    );

    let scrape = wait_for("gauges on /metrics", Duration::from_secs(10), || async {
        let s = op.scrape().await;
        s.contains("imagebloat_image_wasted_bytes").then_some(s)
    })
    .await;
    let labels = [
        ("namespace", ns.as_str()),
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
        scrape.contains(&format!("image=\"{app_ref}\"")),
        "labelled with the Pod's image"
    );

    // Deleting the workload: the controller-manager collects the report, the operator drops
    // the series.
    deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        let _ = pods
            .delete(
                &p.metadata.name.unwrap(),
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
    }
    let reports: Api<ImageReport> = Api::namespaced(client.clone(), &ns);
    wait_for(
        "report garbage-collected",
        Duration::from_secs(90),
        || async {
            reports
                .get_opt("deployment-web")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    wait_for("series removed", Duration::from_secs(30), || async {
        let s = op.scrape().await;
        (!s.is_empty() && series(&s, "imagebloat_image_wasted_bytes", &labels).is_none())
            .then_some(())
    })
    .await;
}

/// Creates a one-container Deployment and plays the kubelet for its Pods.
async fn deploy_running(
    client: &Client,
    ns: &str,
    name: &str,
    image: &str,
    digest: &str,
    node: &str,
) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment(name, 1, &[], &[("main", image)]),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("app={name}");
    let pod = wait_for("pod of the deployment", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    run_pod(
        client,
        ns,
        &pod,
        node,
        &[("main", &image_id(image, digest))],
    )
    .await;
}

/// Blob GETs the registry served for a repository, from its access log.
fn blob_gets(reference: &str) -> usize {
    let repo_path = reference.split_once('/').unwrap().1;
    let repo_path = repo_path
        .rsplit_once(':')
        .map(|(r, _)| r)
        .unwrap_or(repo_path);
    registry_log(&format!("\"GET /v2/{repo_path}/blobs/"))
        .iter()
        .filter(|l| l.contains("\" 200 "))
        .count()
}

#[tokio::test]
async fn one_image_used_by_fifty_workloads_is_downloaded_once() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-shared").await;
    let image = ImageBuilder::new(vec![
        Layer::new("ADD base").sized("usr/lib/base.so", 200_000),
        Layer::new("COPY app").sized("app/bin", 30_000),
    ])
    .build();
    let reference = format!("{}:1", repo("e2e-shared"));
    let digest = Pusher::plain().push(&image, &reference).await;
    let op = Operator::start(&ns, &[]);
    for i in 0..50 {
        deploy_running(
            &client,
            &ns,
            &format!("svc-{i:02}"),
            &reference,
            &digest,
            "e2e-amd64",
        )
        .await;
    }
    for i in 0..50 {
        let r = report(
            &client,
            &ns,
            &format!("deployment-svc-{i:02}"),
            Duration::from_secs(60),
            &op,
        )
        .await;
        let summary = r.status.unwrap().summary.unwrap();
        assert_eq!(summary.size_bytes, 230_000);
    }
    // Two layer blobs and the config, each fetched exactly once.
    assert_eq!(blob_gets(&reference), 3);
}

/// Registry A's access-log lines for `METHOD /v2/<repo>/manifests/<tag>` of a `repo:tag` reference.
fn manifest_requests(method: &str, reference: &str) -> usize {
    let (repo_path, tag) = reference
        .split_once('/')
        .unwrap()
        .1
        .rsplit_once(':')
        .unwrap();
    registry_log(&format!("\"{method} /v2/{repo_path}/manifests/{tag} ")).len()
}

#[tokio::test]
async fn a_tag_is_resolved_by_head_until_the_kubelet_reports_the_digest_which_wins() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-tag").await;
    let first = ImageBuilder::new(vec![Layer::new("v1").sized("app", 10_000)]).build();
    let second = ImageBuilder::new(vec![Layer::new("v2").sized("app", 20_000)]).build();
    let reference = format!("{}:1", repo("e2e-tag"));
    let first_digest = Pusher::plain().push(&first, &reference).await;
    let op = Operator::start(&ns, &[]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment("tagged", 1, &[], &[("main", &reference)]),
        )
        .await
        .unwrap();
    // Bound, but no image reported yet (the kubelet is still pulling).
    let pod = pods_of(&client, &ns, 1).await.remove(0);
    run_pod(&client, &ns, &pod, "e2e-amd64", &[]).await;
    let r = report(
        &client,
        &ns,
        "deployment-tagged",
        Duration::from_secs(60),
        &op,
    )
    .await;
    let findings = r.status.unwrap().containers[0].findings.clone().unwrap();
    assert_eq!(findings.digest, first_digest);
    assert_eq!(findings.analysis.size_bytes, 10_000);
    assert!(manifest_requests("HEAD", &reference) >= 1);
    assert_eq!(
        manifest_requests("GET", &reference),
        0,
        "the tag is resolved without fetching its manifest"
    );

    // The tag moves and the kubelet reports running the new digest: its word wins at once, though
    // the operator still remembers the tag's old digest.
    let second_digest = Pusher::plain().push(&second, &reference).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let bound = pods
        .get(pod.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    run_pod(
        &client,
        &ns,
        &bound,
        "e2e-amd64",
        &[("main", &image_id(&reference, &second_digest))],
    )
    .await;
    let reports: Api<ImageReport> = Api::namespaced(client.clone(), &ns);
    let size = wait_for(
        "the report of the new digest",
        Duration::from_secs(20),
        || async {
            let r = reports.get_opt("deployment-tagged").await.ok()??;
            let f = r.status?.containers.first()?.findings.clone()?;
            (f.digest == second_digest).then_some(f.analysis.size_bytes)
        },
    )
    .await;
    assert_eq!(size, 20_000);
}

#[tokio::test]
async fn operator_restart_reuses_reports_without_downloading() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-restart").await;
    let image = ImageBuilder::new(vec![Layer::new("ADD x").sized("x", 12_345)]).build();
    let reference = format!("{}:1", repo("e2e-restart"));
    let digest = Pusher::plain().push(&image, &reference).await;
    // A single-platform image built for another architecture than its Node's: its findings are
    // those of its one manifest whatever the Node, and are found again after the restart too.
    let other = ImageBuilder::new(vec![Layer::new("ADD y").sized("y", 5_432)])
        .platform("arm64", Some("v8"))
        .build();
    let other_ref = format!("{}:1", repo("e2e-restart-other"));
    let other_digest = Pusher::plain().push(&other, &other_ref).await;
    let first = Operator::start(&ns, &[]);
    deploy_running(&client, &ns, "api", &reference, &digest, "e2e-amd64").await;
    deploy_running(&client, &ns, "edge", &other_ref, &other_digest, "e2e-amd64").await;
    let before = report(
        &client,
        &ns,
        "deployment-api",
        Duration::from_secs(60),
        &first,
    )
    .await;
    let edge = report(
        &client,
        &ns,
        "deployment-edge",
        Duration::from_secs(60),
        &first,
    )
    .await;
    let edge = edge.status.unwrap().containers[0].findings.clone().unwrap();
    assert_eq!(edge.platform, "linux/arm64/v8");
    assert_eq!(edge.analysis.size_bytes, 5_432);
    let fetched = blob_gets(&reference);
    assert_eq!(fetched, 2, "layer and config");
    assert_eq!(blob_gets(&other_ref), 2, "layer and config");
    drop(first);

    let second = Operator::start(&ns, &[]);
    // The restarted operator serves the same figures, from the report it found.
    let scrape = wait_for("gauges after restart", Duration::from_secs(30), || async {
        let s = second.scrape().await;
        series(&s, "imagebloat_image_size_bytes", &[("workload", "api")]).map(|_| s)
    })
    .await;
    assert_eq!(
        series(
            &scrape,
            "imagebloat_image_size_bytes",
            &[("workload", "api")]
        ),
        Some(12_345.0)
    );
    assert!(
        series(
            &scrape,
            "imagebloat_cache_hits_total",
            &[("cache", "image")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(blob_gets(&reference), fetched, "no blob downloaded again");
    wait_for(
        "the other image's gauges after restart",
        Duration::from_secs(30),
        || async {
            let s = second.scrape().await;
            series(&s, "imagebloat_image_size_bytes", &[("workload", "edge")])
                .filter(|v| *v == 5_432.0)
        },
    )
    .await;
    assert_eq!(blob_gets(&other_ref), 2, "nor the other image's");
    let after = report(
        &client,
        &ns,
        "deployment-api",
        Duration::from_secs(10),
        &second,
    )
    .await;
    assert_eq!(after.status, before.status);
}

#[tokio::test]
async fn private_image_is_pulled_with_the_service_accounts_pull_secret() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-private").await;
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_AUTH");
    let (user, password) = (
        env("IMAGEBLOAT_TEST_REGISTRY_USER"),
        env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD"),
    );
    let image = ImageBuilder::new(vec![Layer::new("ADD secret-app").sized("app", 4_242)]).build();
    let reference = format!("{reg}/private/e2e:{}", std::process::id());
    let digest = Pusher::basic_auth().push(&image, &reference).await;

    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = json!({"auths": {reg.clone(): {"auth": auth}}}).to_string();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "regcred"},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": config}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    sas.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(json!({"imagePullSecrets": [{"name": "regcred"}]})),
    )
    .await
    .unwrap();

    let op = Operator::start(&ns, &["--insecure-registry", &reg]);
    deploy_running(&client, &ns, "private", &reference, &digest, "e2e-amd64").await;
    let r = report(
        &client,
        &ns,
        "deployment-private",
        Duration::from_secs(60),
        &op,
    )
    .await;
    let status = r.status.unwrap();
    assert_eq!(status.summary.as_ref().unwrap().size_bytes, 4_242);
    let text = serde_json::to_string(&status).unwrap();
    assert!(!text.contains(&password), "no secret in the report");
    assert!(!op.log().contains(&password), "no secret in the log");
}

#[tokio::test]
async fn multi_arch_image_on_an_arm64_node_reports_the_arm64_manifest() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-arm64", "arm64").await;
    let ns = namespace(&client, "e2e-arm").await;
    let amd = ImageBuilder::new(vec![Layer::new("amd").sized("bin/amd", 1_000)]).build();
    let arm = ImageBuilder::new(vec![Layer::new("arm").sized("bin/arm", 2_000)])
        .platform("arm64", Some("v8"))
        .build();
    let reference = format!("{}:multi", repo("e2e-multi"));
    let index = Pusher::plain()
        .push_index(
            &[
                (&amd, "linux", "amd64", None),
                (&arm, "linux", "arm64", Some("v8")),
            ],
            &reference,
        )
        .await;
    let op = Operator::start(&ns, &[]);
    // The kubelet reports the index digest it pulled.
    deploy_running(&client, &ns, "edge", &reference, &index, "e2e-arm64").await;
    let r = report(
        &client,
        &ns,
        "deployment-edge",
        Duration::from_secs(60),
        &op,
    )
    .await;
    let status = r.status.unwrap();
    let f = status.containers[0].findings.as_ref().unwrap();
    assert_eq!(f.platform, "linux/arm64/v8");
    assert_eq!(f.digest, arm.digest());
    assert_eq!(f.index_digest.as_deref(), Some(index.as_str()));
    assert_eq!(f.analysis.size_bytes, 2_000);
}

#[tokio::test]
async fn kubectl_get_imagereports_shows_the_human_columns() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-kubectl").await;
    let image = ImageBuilder::new(vec![
        Layer::new("ADD")
            .sized("a", 1_000_000)
            .sized("tmp/t", 500_000),
        Layer::new("RUN rm").whiteout("tmp/t"),
    ])
    .build();
    let reference = format!("{}:1", repo("e2e-kubectl"));
    let digest = Pusher::plain().push(&image, &reference).await;
    let op = Operator::start(&ns, &[]);
    deploy_running(&client, &ns, "shop", &reference, &digest, "e2e-amd64").await;
    report(
        &client,
        &ns,
        "deployment-shop",
        Duration::from_secs(60),
        &op,
    )
    .await;

    let kubectl = env("IMAGEBLOAT_TEST_KUBECTL");
    let out = Command::new(&kubectl)
        .args(["get", "imagereports", "-n", &ns])
        .output()
        .unwrap();
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

    let out = Command::new(&kubectl)
        .args(["get", "ir", "-n", &ns, "-o", "wide"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().next().unwrap().contains("WASTED") && text.contains("Analyzed"),
        "{text}"
    );
}

#[tokio::test]
async fn with_two_replicas_exactly_one_writes() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-leader").await;
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized("a", 777)]).build();
    let reference = format!("{}:1", repo("e2e-leader"));
    let digest = Pusher::plain().push(&image, &reference).await;
    let lease = ["--leader-elect", "--lease-namespace", ns.as_str()];
    let a = Operator::start(&ns, &[&lease[..], &["--identity", "replica-a"]].concat());
    let b = Operator::start(&ns, &[&lease[..], &["--identity", "replica-b"]].concat());
    deploy_running(&client, &ns, "one", &reference, &digest, "e2e-amd64").await;
    report(&client, &ns, "deployment-one", Duration::from_secs(60), &a).await;
    let writes = |s: &str| {
        series(
            s,
            "imagebloat_reports_written_total",
            &[("result", "success")],
        )
        .unwrap_or(0.0)
    };
    let (sa, sb) = (a.scrape().await, b.scrape().await);
    assert!(
        (writes(&sa) > 0.0) != (writes(&sb) > 0.0),
        "exactly one replica writes: a={} b={}",
        writes(&sa),
        writes(&sb)
    );
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns);
    let holder = leases
        .get("imagebloat-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    let leader_writes = if holder == "replica-a" {
        writes(&sa)
    } else {
        writes(&sb)
    };
    assert!(
        leader_writes > 0.0,
        "the Lease holder ({holder}) is the writer"
    );
}

/// A registry of this test's own, to stop and start again.
struct OwnRegistry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl OwnRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut r = OwnRegistry {
            dir,
            port: free_port(),
            child: None,
        };
        r.resume();
        r
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let config = self.dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {}\n",
                self.dir.path().join("data").display(),
                self.addr()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn registry_down_shows_a_condition_then_a_correct_report_once_it_is_back() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-down").await;
    let mut own = OwnRegistry::start();
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized("srv", 9_999)]).build();
    let reference = format!("{}/flaky/app:1", own.addr());
    let digest = Pusher::plain().push(&image, &reference).await;
    own.stop();

    let addr = own.addr();
    let op = Operator::start(
        &ns,
        &[
            "--insecure-registry",
            &addr,
            "--retries",
            "0",
            "--timeout",
            "2",
        ],
    );
    deploy_running(&client, &ns, "flaky", &reference, &digest, "e2e-amd64").await;
    let reports: Api<ImageReport> = Api::namespaced(client.clone(), &ns);
    let condition = wait_for("a failure condition", Duration::from_secs(60), || async {
        let r = reports.get_opt("deployment-flaky").await.ok()??;
        let c = r
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (c.status == "False").then_some(c)
    })
    .await;
    assert_eq!(condition.reason, "RegistryUnreachable");
    assert!(
        condition.message.contains("container main"),
        "{}",
        condition.message
    );
    let note = event_note(&client, &ns, "flaky", "AnalysisFailed").await;
    assert!(
        note.starts_with("container main: RegistryUnreachable: "),
        "{note}"
    );

    own.resume();
    let r = report(
        &client,
        &ns,
        "deployment-flaky",
        Duration::from_secs(60),
        &op,
    )
    .await;
    let status = r.status.unwrap();
    assert_eq!(status.summary.unwrap().size_bytes, 9_999);
    assert!(status.containers[0].error.is_none());
}

/// A real Prometheus on loopback scraping the operator every second, stopped when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: imagebloat\n    honor_labels: true\n    static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`; scripts/chart-check.sh installs it)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    async fn query(&self, expr: &str) -> Value {
        let url = format!("http://{}/api/v1/query", self.addr);
        let body = reqwest::Client::new()
            .get(url)
            .query(&[("query", expr)])
            .send()
            .await
            .expect("prometheus answers")
            .bytes()
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has_data(answer: &Value) -> bool {
    match answer["data"]["resultType"].as_str() {
        Some("vector") | Some("matrix") => answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        Some("scalar") => true,
        _ => false,
    }
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_prometheus_scraping_the_operator() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let ns = namespace(&client, "e2e-prom").await;
    let good = ImageBuilder::new(vec![
        Layer::new("ADD")
            .sized("bin/app", 80_000)
            .sized("var/lib/apt/lists/p", 30_000),
        Layer::new("RUN rm")
            .whiteout("bin/app")
            .sized("bin/app", 81_000),
    ])
    .build();
    let reference = format!("{}:1", repo("e2e-prom"));
    let digest = Pusher::plain().push(&good, &reference).await;
    let op = Operator::start(&ns, &[]);
    let prometheus = Prometheus::scraping(&op.metrics);
    deploy_running(&client, &ns, "good", &reference, &digest, "e2e-amd64").await;
    // A second workload whose image is missing: errors show on the dashboard too.
    let missing = format!("{}:missing", repo("e2e-prom-missing"));
    let fake_digest = sha256(b"no such manifest");
    deploy_running(&client, &ns, "broken", &missing, &fake_digest, "e2e-amd64").await;
    report(
        &client,
        &ns,
        "deployment-good",
        Duration::from_secs(60),
        &op,
    )
    .await;

    // Wait until Prometheus has several scrapes with the image series in them.
    wait_for(
        "scrapes with image series",
        Duration::from_secs(60),
        || async {
            let a = prometheus
                .query("count_over_time(imagebloat_image_pull_bytes{workload=\"good\"}[1m])")
                .await;
            a["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|n| *n >= 3.0)
        },
    )
    .await;

    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/dashboard-queries.py"
        ))
        .output()
        .expect("dashboard-queries.py");
    assert!(out.status.success());
    let queries: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
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
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/prometheus/imagebloat-rules.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            let a = prometheus.query(expr).await;
            assert_eq!(a["status"], "success", "{expr}: {a}");
            alerts += 1;
        }
    }
    assert_eq!(alerts, 5);
}

#[tokio::test]
async fn the_operator_does_its_whole_job_with_only_the_charts_rbac() {
    let client = client().await;
    install_crd(&client).await;
    node(&client, "e2e-amd64", "amd64").await;
    let release_ns = namespace(&client, "e2e-chart").await;
    let apps = namespace(&client, "e2e-chart-apps").await;
    let name = format!("ib-{release_ns}");
    let helm = env("IMAGEBLOAT_TEST_HELM");
    let out = Command::new(&helm)
        .args([
            "install",
            &name,
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/imagebloat"),
        ])
        .args([
            "-n",
            &release_ns,
            "--set",
            &format!("fullnameOverride={name}"),
        ])
        .args(["--set", "leaderElection.enabled=true"])
        // The operator under test runs here, as that identity; the chart's own Pod is not needed.
        .args(["--set", "replicaCount=0"])
        .args(["--set", &format!("operator.namespaces={{{apps}}}")])
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The admin kubeconfig, self-contained (any cluster's: relative paths and several contexts
    // resolved by kubectl), impersonating the chart's ServiceAccount.
    let kubectl = env("IMAGEBLOAT_TEST_KUBECTL");
    let flat = Command::new(&kubectl)
        .args(["config", "view", "--raw", "--flatten", "--minify"])
        .output()
        .expect("kubectl config view");
    assert!(flat.status.success(), "kubectl config view failed");
    let mut kubeconfig: serde_yaml::Value = serde_yaml::from_slice(&flat.stdout).unwrap();
    let identity = format!("system:serviceaccount:{release_ns}:{name}");
    kubeconfig["users"][0]["user"]["as"] = serde_yaml::Value::String(identity.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    let kubeconfig_path = path.to_str().unwrap().to_string();

    let image = ImageBuilder::new(vec![
        Layer::new("ADD").sized("srv", 64_000).sized("tmp/x", 6_000),
        Layer::new("RUN rm").whiteout("tmp/x"),
    ])
    .build();
    let reference = format!("{}:1", repo("e2e-chart"));
    let digest = Pusher::plain().push(&image, &reference).await;
    // The flags the chart's Deployment passes for leader election.
    let lease = format!("{name}-leader");
    let op = Operator::start_with(
        &apps,
        &[
            "--leader-elect",
            "--lease-namespace",
            &release_ns,
            "--lease-name",
            &lease,
            "--identity",
            "chart-replica",
        ],
        &[("KUBECONFIG", &kubeconfig_path)],
    );
    deploy_running(&client, &apps, "svc", &reference, &digest, "e2e-amd64").await;
    let r = report(
        &client,
        &apps,
        "deployment-svc",
        Duration::from_secs(60),
        &op,
    )
    .await;
    assert_eq!(r.status.unwrap().summary.unwrap().wasted_bytes, 6_000);
    assert!(
        !op.log().contains("Forbidden"),
        "no call outside the role:\n{}",
        op.log()
    );

    // Anything outside the role is refused for that identity.
    for forbidden in [
        vec!["delete", "pods", "--all", "-n", apps.as_str()],
        vec!["get", "configmaps", "-n", apps.as_str()],
        vec!["create", "namespace", "not-allowed"],
    ] {
        let out = Command::new(&kubectl)
            .args(&forbidden)
            .args(["--kubeconfig", &kubeconfig_path])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{forbidden:?} should be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("forbidden") || err.contains("Forbidden"),
            "{forbidden:?}: {err}"
        );
    }

    // The release's cluster-scoped parts (ClusterRole and binding) leave with it.
    let out = Command::new(&helm)
        .args(["uninstall", &name, "-n", &release_ns])
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

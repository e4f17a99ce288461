//! What every operator scenario stands on, so that a test states only its own given, when and
//! then: a [`Cluster`] (client, CRD, Node, a namespace of the test's own, and the kubelet's part
//! for its Pods), an [`Operator`] process, images [`Pushed`] to the test registry, and the servers
//! a few scenarios bring along ([`OwnRegistry`], [`Prometheus`], helm and kubectl).

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use imagebloat::report::crd::ImageReport;

use crate::common::{Image, Pusher, env, registry, registry_log, repo};

/// The label on every namespace and Node the suite creates (`kube-testenv.sh down` deletes them).
const E2E_LABEL: &str = "imagebloat.dev/e2e";

/// The scheduler the suite's Pods ask for: none runs by that name, the tests bind them.
const E2E_SCHEDULER: &str = "imagebloat-e2e";

/// How long a workload's report may take to become Ready, unless a scenario says otherwise.
const REPORT_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `f` every 250 ms until it gives a value; fails the test naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
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

/// One test's place in the cluster: the CRD installed, a Node of the given architecture, and a
/// fresh labelled namespace whose `default` ServiceAccount exists. The test plays the scheduler
/// and the kubelet for the Pods in it, on that Node.
pub struct Cluster {
    pub client: Client,
    pub ns: String,
    node: String,
    _control_plane: ControlPlane,
}

/// A lock on the test bed's control plane, held for a [`Cluster`]'s lifetime: shared by the
/// ordinary scenarios, exclusive for one that kills the API server (no other test sees that).
struct ControlPlane {
    _lock: std::fs::File,
}

impl ControlPlane {
    fn lock(exclusive: bool) -> Self {
        let path = format!("{}.lock", env("KUBECONFIG"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        }
        .expect("lock the control plane");
        ControlPlane { _lock: file }
    }
}

impl Cluster {
    /// A namespace named after `prefix`, with its Pods on the amd64 Node.
    pub async fn new(prefix: &str) -> Self {
        Self::on_arch(prefix, "amd64").await
    }

    /// A namespace named after `prefix`, with its Pods on the Node `e2e-ARCH`.
    pub async fn on_arch(prefix: &str, arch: &str) -> Self {
        Self::locked(prefix, arch, false).await
    }

    /// [`new`](Self::new), once no other test uses the control plane and until this one ends:
    /// for a scenario that stops or restarts the API server.
    #[allow(dead_code)] // tests/hostile_operator.rs
    pub async fn with_the_control_plane_to_itself(prefix: &str) -> Self {
        Self::locked(prefix, "amd64", true).await
    }

    async fn locked(prefix: &str, arch: &str, exclusive: bool) -> Self {
        let lock = {
            env("KUBECONFIG");
            tokio::task::spawn_blocking(move || ControlPlane::lock(exclusive))
                .await
                .unwrap()
        };
        let client = Client::try_default()
            .await
            .expect("kube client from KUBECONFIG");
        install_crd(&client).await;
        let node = format!("e2e-{arch}");
        create_node(&client, &node, arch).await;
        let ns = create_namespace(&client, prefix).await;
        Cluster {
            client,
            ns,
            node,
            _control_plane: lock,
        }
    }

    /// Another fresh namespace of this test's own.
    pub async fn namespace(&self, prefix: &str) -> String {
        create_namespace(&self.client, prefix).await
    }

    /// The chart installed into a fresh release namespace (`prefix`), watching this test's
    /// namespace, with `settings` (`--set KEY=VALUE` each) and no operator Pod: the test runs the
    /// operator itself, as the chart's ServiceAccount through the release's kubeconfig.
    pub async fn install_chart(&self, prefix: &str, settings: &[&str]) -> ChartRelease {
        let namespace = self.namespace(prefix).await;
        let name = format!("ib-{namespace}");
        let mut args = vec![
            "install".to_string(),
            name.clone(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/imagebloat").to_string(),
            "-n".to_string(),
            namespace.clone(),
        ];
        let fixed = [
            format!("fullnameOverride={name}"),
            "replicaCount=0".to_string(),
            format!("operator.namespaces={{{}}}", self.ns),
        ];
        for setting in fixed
            .iter()
            .map(String::as_str)
            .chain(settings.iter().copied())
        {
            args.extend(["--set".to_string(), setting.to_string()]);
        }
        helm(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let kubeconfig =
            Kubeconfig::impersonating(&format!("system:serviceaccount:{namespace}:{name}"));
        ChartRelease {
            name,
            namespace,
            kubeconfig,
        }
    }

    /// The API of a namespaced kind, in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// `imagebloat run` watching this namespace, with the suite's flags and then `flags`.
    pub fn start_operator(&self, flags: &[&str]) -> Operator {
        Operator::start(&self.ns, flags, &[])
    }

    /// [`start_operator`](Self::start_operator) with extra environment variables.
    pub fn start_operator_with_env(&self, flags: &[&str], vars: &[(&str, &str)]) -> Operator {
        Operator::start(&self.ns, flags, vars)
    }

    pub async fn create_deployment(&self, deployment: Deployment) -> Deployment {
        self.api::<Deployment>()
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap()
    }

    /// The namespace's Pods once the controller-manager has created at least `count`.
    pub async fn pods(&self, count: usize) -> Vec<Pod> {
        let pods = self.api::<Pod>();
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

    /// As the scheduler and the kubelet: binds `pod` to the Node (unless bound already) and
    /// reports its containers running, each with the image ID given for its name (else none).
    pub async fn run_pod(&self, pod: &Pod, image_ids: &[(&str, &str)]) {
        self.run_pod_on(pod, &self.node, image_ids).await
    }

    /// A labelled amd64 Node of this test's own, named after its namespace and `suffix`.
    #[allow(dead_code)] // tests/fleet.rs
    pub async fn own_node(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.ns);
        create_node(&self.client, &name, "amd64").await;
        name
    }

    /// [`run_pod`](Self::run_pod) on the Node `node`.
    pub async fn run_pod_on(&self, pod: &Pod, node: &str, image_ids: &[(&str, &str)]) {
        let name = pod.metadata.name.clone().unwrap();
        let spec = pod.spec.clone().unwrap();
        if spec.node_name.is_none() {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}
            });
            let request = http::Request::post(format!(
                "/api/v1/namespaces/{}/pods/{name}/binding",
                self.ns
            ))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&binding).unwrap())
            .unwrap();
            self.client
                .request::<Value>(request)
                .await
                .expect("bind pod");
        }
        let statuses = |containers: &[Container]| -> Vec<Value> {
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
        self.api::<Pod>()
            .patch_status(
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

    /// A one-container (`main`) Deployment of `image`, whose Pod runs the pushed digest.
    pub async fn deploy_running(&self, name: &str, image: &Pushed) {
        self.create_deployment(deployment(name, 1, &[], &[("main", &image.reference)]))
            .await;
        let pods = self.api::<Pod>();
        let selector = format!("app={name}");
        let pod = wait_for("pod of the deployment", Duration::from_secs(60), || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            list.items.into_iter().next()
        })
        .await;
        self.run_pod(&pod, &[("main", &image.image_id())]).await;
    }

    /// Deletes a Deployment in the foreground, and every Pod of the namespace with grace period 0
    /// (without a kubelet, a bound Pod never finishes a graceful delete).
    pub async fn delete_deployment(&self, name: &str) {
        self.api::<Deployment>()
            .delete(name, &DeleteParams::foreground())
            .await
            .unwrap();
        let pods = self.api::<Pod>();
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
    }

    /// Sets a Deployment's replicas.
    #[allow(dead_code)] // tests/fleet.rs
    pub async fn scale_deployment(&self, name: &str, replicas: i32) {
        self.api::<Deployment>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .unwrap();
    }

    /// Deletes a Deployment and its Pods (label `app=NAME`) with grace period 0, leaving the
    /// namespace's other Pods alone.
    #[allow(dead_code)] // tests/fleet.rs
    pub async fn delete_deployment_only(&self, name: &str) {
        self.api::<Deployment>()
            .delete(name, &DeleteParams::background())
            .await
            .unwrap();
        let pods = self.api::<Pod>();
        let selector = format!("app={name}");
        for p in pods
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
        {
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
    }

    /// The report `name` once its Ready condition is True (within a minute); on failure the
    /// message carries `op`'s log.
    pub async fn report(&self, name: &str, op: &Operator) -> ImageReport {
        self.report_within(name, op, REPORT_TIMEOUT).await
    }

    pub async fn report_within(&self, name: &str, op: &Operator, timeout: Duration) -> ImageReport {
        let api = self.api::<ImageReport>();
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
                "report {}/{name} not ready within {timeout:?}; operator log:\n{}",
                self.ns,
                op.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls the report `name` (None while it does not exist) until `f` gives a value.
    pub async fn wait_for_report<T>(
        &self,
        what: &str,
        name: &str,
        timeout: Duration,
        f: impl Fn(Option<ImageReport>) -> Option<T>,
    ) -> T {
        let api = self.api::<ImageReport>();
        wait_for(what, timeout, || async { f(api.get_opt(name).await.ok()?) }).await
    }

    /// A `kubernetes.io/dockerconfigjson` Secret with `user`'s credentials for `registry`, named
    /// in the `imagePullSecrets` of the namespace's `default` ServiceAccount.
    pub async fn give_the_default_service_account_a_pull_secret(
        &self,
        registry: &str,
        user: &str,
        password: &str,
    ) {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let config = json!({"auths": {registry: {"auth": auth}}}).to_string();
        self.api::<Secret>()
            .create(
                &PostParams::default(),
                &from_json(json!({
                    "metadata": {"name": "regcred"},
                    "type": "kubernetes.io/dockerconfigjson",
                    "stringData": {".dockerconfigjson": config}
                })),
            )
            .await
            .unwrap();
        self.api::<ServiceAccount>()
            .patch(
                "default",
                &PatchParams::default(),
                &Patch::Merge(json!({"imagePullSecrets": [{"name": "regcred"}]})),
            )
            .await
            .unwrap();
    }

    /// The note of the operator's newest event with `reason` about a workload (`kubectl describe`).
    pub async fn event_note(&self, workload: &str, reason: &str) -> String {
        let events = self.api::<Event>();
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
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some(workload)
                    })
                    .max_by_key(|e| e.event_time.as_ref().map(|t| t.0))
                    .and_then(|e| e.note)
            },
        )
        .await
    }
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (name, yaml) in [
        (
            "imagereports.imagebloat.dev",
            imagebloat::report::crd::crd_yaml(),
        ),
        (
            "clusterimagereports.imagebloat.dev",
            imagebloat::report::cluster::cluster_crd_yaml(),
        ),
    ] {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        crds.patch(
            name,
            &PatchParams::apply("imagebloat-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
        wait_for("CRD established", Duration::from_secs(30), || async {
            let c = crds.get(name).await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

/// A labelled namespace `PREFIX-N`, ready for Pods.
async fn create_namespace(client: &Client, prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ns = format!("{prefix}-{}", nanos % 100_000);
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": {"name": ns, "labels": {E2E_LABEL: "true"}}
        })),
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

/// The labelled Node `name` with a Linux `arch` node info, shared by the tests that ask for it.
async fn create_node(client: &Client, name: &str, arch: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await.unwrap().is_none() {
        let created = nodes
            .create(
                &PostParams::default(),
                &from_json(json!({
                    "metadata": {"name": name, "labels": {
                        "kubernetes.io/arch": arch, "kubernetes.io/os": "linux", E2E_LABEL: "true"}}
                })),
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

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// A Deployment for the suite's scheduler, with `(name, image)` init and app containers.
pub fn deployment(
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
    from_json(json!({
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
}

/// An image in a registry: the reference a Pod names (`REPO:TAG`) and the digest a kubelet
/// reports for it.
pub struct Pushed {
    pub reference: String,
    pub digest: String,
}

/// Pushes `image` to a repository of this run's own in the plain test registry, as tag `1`.
pub async fn push(name: &str, image: &Image) -> Pushed {
    push_to(&format!("{}:1", repo(name)), image).await
}

/// Pushes `image` to `reference` (no credentials, plain HTTP).
pub async fn push_to(reference: &str, image: &Image) -> Pushed {
    Pushed {
        reference: reference.to_string(),
        digest: Pusher::plain().push(image, reference).await,
    }
}

impl Pushed {
    /// `REPO@DIGEST`, as a kubelet writes `containerStatuses[].imageID`.
    pub fn image_id(&self) -> String {
        let repo = self
            .reference
            .rsplit_once(':')
            .map(|(r, _)| r)
            .unwrap_or(&self.reference);
        format!("{repo}@{}", self.digest)
    }

    /// Blob GETs the plain registry served for this repository, from its access log.
    pub fn blob_gets(&self) -> usize {
        let (repo_path, _) = self.repo_and_tag();
        registry_log(&format!("\"GET /v2/{repo_path}/blobs/"))
            .iter()
            .filter(|l| l.contains("\" 200 "))
            .count()
    }

    /// The plain registry's access-log lines for `METHOD /v2/REPO/manifests/TAG`.
    pub fn manifest_requests(&self, method: &str) -> usize {
        let (repo_path, tag) = self.repo_and_tag();
        registry_log(&format!("\"{method} /v2/{repo_path}/manifests/{tag} ")).len()
    }

    fn repo_and_tag(&self) -> (&str, &str) {
        let path = self.reference.split_once('/').unwrap().1;
        path.rsplit_once(':').unwrap()
    }
}

/// A child process, killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `imagebloat run` as a child process, stopped when dropped.
pub struct Operator {
    _process: Process,
    /// The address of its `/metrics`.
    pub metrics: String,
    log: std::path::PathBuf,
}

impl Operator {
    /// Watches `namespace` through the plain test registry, retrying after a second; `flags`
    /// come after the suite's own (so a repeated flag adds to or overrides them).
    fn start(namespace: &str, flags: &[&str], vars: &[(&str, &str)]) -> Self {
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("imagebloat-operator-{namespace}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let reg = registry();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagebloat"));
        cmd.args([
            "run",
            "--metrics-addr",
            &metrics,
            "--insecure-registry",
            &reg,
        ])
        .args(["--namespaces", namespace, "--retry-seconds", "1"])
        .args(flags)
        .env("IMAGEBLOAT_LOG", "info,kube=warn")
        .stdout(Stdio::null())
        .stderr(file);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        Operator {
            _process: Process(cmd.spawn().expect("start imagebloat run")),
            metrics,
            log,
        }
    }

    /// Its `/metrics` text, empty while it does not answer.
    pub async fn scrape(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.metrics)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The first scrape that `ready` accepts, polling for at most `timeout`.
    pub async fn scrape_until(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        wait_for(what, timeout, || async {
            let s = self.scrape().await;
            ready(&s).then_some(s)
        })
        .await
    }

    /// The value of one series in a fresh scrape (see [`series`]).
    pub async fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        series(&self.scrape().await, name, labels)
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process ID.
    #[allow(dead_code)] // tests/hostile_operator.rs
    pub fn pid(&self) -> u32 {
        self._process.0.id()
    }

    /// Its peak resident memory so far in KiB (`VmHWM` in /proc/PID/status).
    #[allow(dead_code)] // tests/hostile_operator.rs
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the operator is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT` …) to the process.
    #[allow(dead_code)] // tests/hostile_operator.rs
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }
}

/// The value of one series in a scrape, matched by all the given label pairs.
pub fn series(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        // A series without labels is `NAME VALUE`.
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registry of this test's own, to stop and start again.
pub struct OwnRegistry {
    process: Option<Process>,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnRegistry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut r = OwnRegistry {
            process: None,
            dir,
            port: free_port(),
        };
        r.resume();
        r
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same address and storage; returns once it accepts connections.
    pub fn resume(&mut self) {
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
        self.process = Some(Process(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        self.process = None;
    }
}

/// A real Prometheus on loopback scraping the operator every second, stopped when dropped.
pub struct Prometheus {
    _process: Process,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn scraping(target: &str) -> Self {
        Self::start(target, None)
    }

    /// [`scraping`](Self::scraping), evaluating the alerting rules of `rules` (a Prometheus rules
    /// file) every second.
    #[allow(dead_code)] // tests/operator_lifecycle.rs
    pub fn scraping_with_rules(target: &str, rules: &str) -> Self {
        Self::start(target, Some(rules))
    }

    fn start(target: &str, rules: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let mut text = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: imagebloat\n    honor_labels: true\n    static_configs: [{{targets: ['{target}']}}]\n"
        );
        if let Some(rules) = rules {
            let file = dir.path().join("rules.yaml");
            std::fs::write(&file, rules).unwrap();
            text.push_str(&format!("rule_files: ['{}']\n", file.display()));
        }
        std::fs::write(&config, text).unwrap();
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
            _process: Process(child),
            addr,
            _dir: dir,
        }
    }

    /// The JSON answer of an instant query.
    pub async fn query(&self, expr: &str) -> Value {
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

    /// The value of the first sample of an instant query, if any.
    pub async fn value(&self, expr: &str) -> Option<f64> {
        let answer = self.query(expr).await;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

/// Whether a query answer holds a sample: a non-empty vector or matrix, or a scalar.
pub fn has_data(answer: &Value) -> bool {
    match answer["data"]["resultType"].as_str() {
        Some("vector") | Some("matrix") => answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        Some("scalar") => true,
        _ => false,
    }
}

/// Every query of the Grafana dashboard (`scripts/dashboard-queries.py`).
pub fn dashboard_queries() -> Vec<String> {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/dashboard-queries.py"
        ))
        .output()
        .expect("dashboard-queries.py");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The expression of every alert in `deploy/prometheus/imagebloat-rules.yaml`.
pub fn alert_expressions() -> Vec<String> {
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/prometheus/imagebloat-rules.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_string());
        }
    }
    exprs
}

/// Runs the test bed's kubectl (admin unless `--kubeconfig` says otherwise).
pub fn kubectl(args: &[&str]) -> Output {
    Command::new(env("IMAGEBLOAT_TEST_KUBECTL"))
        .args(args)
        .output()
        .expect("kubectl")
}

/// A release of the chart made by [`Cluster::install_chart`].
pub struct ChartRelease {
    pub name: String,
    pub namespace: String,
    /// Impersonates the release's ServiceAccount.
    pub kubeconfig: Kubeconfig,
}

/// Runs the test bed's helm and insists on success.
pub fn helm(args: &[&str]) {
    let out = Command::new(env("IMAGEBLOAT_TEST_HELM"))
        .args(args)
        .output()
        .expect("helm");
    assert!(
        out.status.success(),
        "helm {}: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The admin kubeconfig, self-contained (any cluster's: relative paths and several contexts
/// resolved by kubectl), impersonating `identity`; deleted when dropped.
pub struct Kubeconfig {
    _dir: tempfile::TempDir,
    pub path: String,
}

impl Kubeconfig {
    pub fn impersonating(identity: &str) -> Self {
        let flat = kubectl(&["config", "view", "--raw", "--flatten", "--minify"]);
        assert!(flat.status.success(), "kubectl config view failed");
        let mut kubeconfig: serde_yaml::Value = serde_yaml::from_slice(&flat.stdout).unwrap();
        kubeconfig["users"][0]["user"]["as"] = serde_yaml::Value::String(identity.to_string());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
        Kubeconfig {
            path: path.to_str().unwrap().to_string(),
            _dir: dir,
        }
    }
}

//! Scale benchmark of `imagebloat run` on a real kube-apiserver (issue #3 item 5).
//!
//!     scripts/scale-bench.sh [--workloads 50 ...]   starts the servers, builds, runs this, stops them
//!     cargo bench --bench scale -- --help           the knobs
//!
//! Default shape: 5,000 Pods in 500 Deployments (10 replicas each) over 50 images pushed to the
//! real test registry. Playing the scheduler and the kubelet, it binds every Pod to a Node and
//! patches its status with `containerStatuses[].imageID = REPO@DIGEST`, waits until every
//! workload's ImageReport is Ready, and prints:
//!   * the time from the first Deployment create until every report exists and is Ready (and
//!     from the first and the last Pod status patch), and per workload the latency from its first
//!     Pod (and first status patch) to its Ready report, p50/p90/p99/max;
//!   * report writes per workload (the operator's `imagebloat_reports_written_total`), API write
//!     requests for imagereports and single-object reads per workload (the API server's own
//!     `apiserver_request_total`);
//!   * the operator's peak memory (VmHWM, target <= 200 MiB), CPU time and RSS growth per Pod;
//!   * registry blob bytes served for the bench's repositories (the registry's access log) vs the
//!     unique blob bytes pushed, target <= 1.05x.
//!
//! Exit status 0 when every report is Ready and both targets are met, 1 otherwise, 130 when
//! interrupted (the operator is stopped and what the bench made is deleted first). The results
//! are also written as JSON.
//!
//! Needs the environments of scripts/testenv.sh and scripts/kube-testenv.sh (sourced): the
//! cluster is driven with kube (`KUBECONFIG`), the images are written with `imagebloat::testkit`,
//! and metrics are read with prometheus-parse.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, Namespace, Node, Pod, PodCondition,
    PodStatus, ServiceAccount,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use prometheus_parse::{Sample, Scrape, Value as MetricValue};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use imagebloat::report::crd::ImageReport;
use imagebloat::testkit::{
    Compression, Content, ImageBuilder, Kind, Layer, LayerBlob, Pusher, Rng,
};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const REPO_PREFIX: &str = "scalebench";
const TAG: &str = "v1";
/// What only the operator reads one by one: pull credentials, and workloads it checks still exist.
const OPERATOR_READS: [&str; 3] = ["serviceaccounts", "secrets", "deployments"];

#[derive(Parser, Debug)]
#[command(about = "Scale benchmark of `imagebloat run` on a real API server")]
struct Args {
    /// The imagebloat binary [default: target/release/imagebloat]
    #[arg(long)]
    operator: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    workloads: usize,
    #[arg(long, default_value_t = 10)]
    replicas: usize,
    #[arg(long, default_value_t = 50)]
    images: usize,
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Concurrent requests playing the kubelet
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Seconds to wait for every report
    #[arg(long, default_value_t = 1200.0)]
    timeout: f64,
    /// Seconds to keep watching once every Pod runs and every report is Ready (late writes,
    /// memory with every Pod cached)
    #[arg(long, default_value_t = 15.0)]
    settle: f64,
    #[arg(long, default_value = "imagebloat-scale-1")]
    seed: String,
    /// Multiplies every file size
    #[arg(long, default_value_t = 1.0)]
    layer_scale: f64,
    #[arg(long)]
    namespace: Option<String>,
    /// Leave the namespace and Nodes in place
    #[arg(long)]
    keep: bool,
    /// Write the results as JSON here [default: results.json in $SCALE_BENCH_WORKDIR]
    #[arg(long)]
    results: Option<PathBuf>,
    /// An extra flag for `imagebloat run` (repeatable)
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    #[arg(long, default_value_t = 200.0)]
    mem_target_mib: f64,
    #[arg(long, default_value_t = 1.05)]
    ratio_target: f64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Once set (the first Deployment create), every log line shows the seconds since.
static T0: OnceLock<Instant> = OnceLock::new();

macro_rules! log {
    ($($arg:tt)*) => { log_line(&format!($($arg)*)) };
}

fn log_line(msg: &str) {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400;
    let rel = T0
        .get()
        .map(|t| format!(" +{:7.1}s", t.elapsed().as_secs_f64()))
        .unwrap_or_default();
    println!(
        "{:02}:{:02}:{:02}{rel} scale-bench: {msg}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

fn since_t0(t: Instant) -> f64 {
    T0.get()
        .map_or(0.0, |t0| t.saturating_duration_since(*t0).as_secs_f64())
}

fn human(n: f64) -> String {
    if n.abs() < 1024.0 {
        return format!("{n:.0} B");
    }
    let mut v = n;
    for unit in ["KiB", "MiB", "GiB"] {
        v /= 1024.0;
        if v.abs() < 1024.0 || unit == "GiB" {
            return format!("{v:.1} {unit}");
        }
    }
    unreachable!()
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
        format!("${name} is not set: source $(scripts/testenv.sh env) and $(scripts/kube-testenv.sh env)").into()
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        run(args).await.unwrap_or_else(|e| {
            log!("error: {e}");
            ExitCode::from(2)
        })
    })
}

/// What the environment gives the run.
struct Setup {
    operator: PathBuf,
    registry: String,
    registry_log: PathBuf,
    client: Client,
    ns: String,
    nodes: Vec<String>,
    workdir: PathBuf,
}

impl Setup {
    async fn new(args: &Args) -> Result<Self> {
        let default_operator =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/imagebloat");
        let unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let workdir = std::env::var_os("SCALE_BENCH_WORKDIR").map_or_else(
            || std::env::temp_dir().join(format!("imagebloat-scale-bench-{}", std::process::id())),
            PathBuf::from,
        );
        std::fs::create_dir_all(&workdir)?;
        env("KUBECONFIG")?;
        Ok(Setup {
            operator: args.operator.clone().unwrap_or(default_operator),
            registry: env("IMAGEBLOAT_TEST_REGISTRY")?,
            registry_log: env("IMAGEBLOAT_TEST_REGISTRY_LOG")?.into(),
            client: Client::try_default().await?,
            ns: args
                .namespace
                .clone()
                .unwrap_or_else(|| format!("scalebench-{}", unix % 100_000)),
            nodes: (0..args.nodes)
                .map(|n| format!("scalebench-node-{n}"))
                .collect(),
            workdir,
        })
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    let setup = Setup::new(&args).await?;
    let (ns, workdir) = (&setup.ns, &setup.workdir);
    log!(
        "{} pods in {} deployments x {} replicas over {} images; namespace {ns}; operator {}; work dir {}",
        args.workloads * args.replicas,
        args.workloads,
        args.replicas,
        args.images,
        setup.operator.display(),
        workdir.display()
    );
    let images = push_images(&args, &setup.registry).await?;
    let unique: BTreeMap<&str, u64> = images
        .iter()
        .flat_map(|im| im.blobs.iter().map(|(d, s)| (d.as_str(), *s)))
        .collect();
    let unique_bytes: u64 = unique.values().sum();
    let mut layers_per_image = BTreeMap::new();
    for im in &images {
        *layers_per_image.entry(im.layers).or_insert(0) += 1;
    }
    let image_bytes: u64 = images
        .iter()
        .flat_map(|im| im.blobs.iter().map(|b| b.1))
        .sum();
    log!(
        "{} images, {} unique blobs, {} unique blob bytes; layers per image {layers_per_image:?}; sum of image sizes {}",
        images.len(),
        unique.len(),
        human(unique_bytes as f64),
        human(image_bytes as f64)
    );
    prepare_cluster(&setup.client, &setup.operator, ns, &setup.nodes).await?;

    let Some(observed) = observe(&args, &setup, &images).await? else {
        log!("interrupted");
        return Ok(ExitCode::from(130));
    };
    let figures = Figures {
        args: &args,
        operator: &setup.operator,
        images: images.len(),
        unique_blobs: unique.len(),
        unique_bytes,
        blobs: unique.keys().map(|d| d.to_string()).collect(),
        served: registry_served(&setup.registry_log, observed.registry_offset, REPO_PREFIX)?,
        log: summarize_log(&observed.log_path, 12),
        nodes: setup.nodes.len(),
        observed,
    };
    let (ok, results) = figures.print();
    let path = args
        .results
        .clone()
        .unwrap_or_else(|| workdir.join("results.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&results)?)?;
    println!("results: {}", path.display());
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What one run of the operator showed.
struct Observed {
    run: RunResults,
    final_metrics: Vec<Sample>,
    api_before: Vec<Sample>,
    api_after: Vec<Sample>,
    registry_offset: u64,
    proc: ProcStats,
    log_path: PathBuf,
    alive: bool,
}

/// Starts the operator, runs the benchmark, stops the operator and deletes what the run made;
/// nothing when interrupted.
async fn observe(args: &Args, setup: &Setup, images: &[PushedImage]) -> Result<Option<Observed>> {
    let (client, ns, nodes) = (&setup.client, setup.ns.as_str(), setup.nodes.as_slice());
    let api_before = parse_metrics(&apiserver_metrics(client).await);
    let registry_offset = std::fs::metadata(&setup.registry_log)?.len();
    let log_path = setup.workdir.join("operator.log");
    let mut op = Operator::start(
        &setup.operator,
        ns,
        &setup.registry,
        &log_path,
        &args.operator_args,
    )?;
    let measured = tokio::select! {
        r = async {
            let ready = op.wait_ready().await?;
            let rss = op.proc.lock().unwrap().sample(op.pid());
            log!("operator ready after {ready:.1}s (metrics on {}); RSS {:.1} MiB", op.metrics_addr, rss as f64 / 1024.0);
            let mut run = run_bench(args, client, ns, nodes, images, &mut op).await?;
            run.operator_ready_s = ready;
            run.rss_at_ready_kib = rss;
            Ok::<_, Box<dyn Error + Send + Sync>>(run)
        } => Some(r),
        _ = interrupted() => None,
    };
    let alive = op.alive();
    let final_metrics = if alive {
        op.scrape().await
    } else {
        String::new()
    };
    op.stop();
    // The registry writes its access log line when a response completes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let api_after = parse_metrics(&apiserver_metrics(client).await);
    if args.keep {
        log!("--keep: namespace {ns} and nodes {nodes:?} left in place");
    } else if matches!(&measured, Some(Ok(r)) if r.api_server_lost) {
        log!("API server lost: no cleanup");
    } else {
        cleanup(client, ns, nodes).await;
    }
    let Some(run) = measured else { return Ok(None) };
    Ok(Some(Observed {
        run: run?,
        final_metrics: parse_metrics(&final_metrics),
        api_before,
        api_after,
        registry_offset,
        proc: op.proc.lock().unwrap().clone(),
        log_path,
        alive,
    }))
}

async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

// ------------------------------------------------------------------------------------------------
// Images: generated deterministically from the seed with the testkit, pushed with its Pusher.
// ------------------------------------------------------------------------------------------------

struct LayerPlan {
    name: String,
    created_by: String,
    /// (path, size, what the content looks like), sorted by path.
    files: Vec<(String, u64, Kind)>,
    /// Paths of lower layers this layer deletes (wasted bytes in the image).
    whiteouts: Vec<String>,
}

struct ImagePlan {
    /// Indexes into the shared layers (a base, maybe a runtime), bottom first.
    shared: Vec<usize>,
    /// The image's own app layers, on top.
    own: Vec<LayerPlan>,
}

fn layer_plan(name: String, created_by: String, mut files: Vec<(String, u64, Kind)>) -> LayerPlan {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    LayerPlan {
        name,
        created_by,
        files,
        whiteouts: Vec::new(),
    }
}

/// The image set: shared base layers, shared runtime layers, per-image app layers (2-4 layers per
/// image); some app layers delete files of lower layers (waste) or leave junk.
fn image_plan(n_images: usize, scale: f64) -> (Vec<LayerPlan>, Vec<ImagePlan>) {
    let sz = |kib: f64| ((kib * 1024.0 * scale) as u64).max(1);
    let n_bases = (n_images / 10).clamp(1, 5);
    let n_runtimes = (n_images / 5).clamp(1, 10);
    let mut shared = Vec::new();
    for b in 0..n_bases {
        let mut files: Vec<_> = (0..900)
            .map(|k| {
                (
                    format!("usr/lib/x86_64-linux-gnu/lib{b}-{k:04}.so"),
                    sz((3 + (k * 7) % 9) as f64),
                    Kind::Binary,
                )
            })
            .collect();
        files.extend((0..300).map(|k| {
            (
                format!("usr/share/doc/pkg{k:03}/changelog.gz"),
                sz(2.0),
                Kind::Random,
            )
        }));
        files.extend((0..4).map(|k| {
            (
                format!("var/lib/apt/lists/deb.debian.org_dists_bookworm_{k}"),
                sz(200.0),
                Kind::Text,
            )
        }));
        files.push((
            "usr/lib/locale/locale-archive".into(),
            sz(1200.0),
            Kind::Binary,
        ));
        shared.push(layer_plan(
            format!("base-{b}"),
            format!("/bin/sh -c #(nop) ADD file:base{b} in / "),
            files,
        ));
    }
    for r in 0..n_runtimes {
        let mut files: Vec<_> = (0..250)
            .map(|k| {
                (
                    format!("opt/runtime{r}/lib/module{k:03}.py"),
                    sz(6.0),
                    Kind::Text,
                )
            })
            .collect();
        files.push((
            format!("opt/runtime{r}/bin/runtime"),
            sz(1800.0),
            Kind::Binary,
        ));
        files.extend((0..3).map(|k| {
            (
                format!("root/.cache/pip/wheels/w{k}.whl"),
                sz(150.0),
                Kind::Random,
            )
        }));
        shared.push(layer_plan(
            format!("runtime-{r}"),
            format!("RUN /bin/sh -c install-runtime {r}"),
            files,
        ));
    }
    let images = (0..n_images)
        .map(|i| {
            let n_layers = 2 + i % 3;
            let with_runtime = n_layers >= 3;
            let mut plan = ImagePlan {
                shared: vec![i % n_bases],
                own: Vec::new(),
            };
            if with_runtime {
                plan.shared.push(n_bases + i % n_runtimes);
            }
            let n_app = n_layers - plan.shared.len();
            for a in 0..n_app {
                let last = a == n_app - 1;
                let mut files = vec![(
                    format!("app/{i}/bin/service-{a}"),
                    sz((1500 + 97 * (i % 11)) as f64),
                    Kind::Binary,
                )];
                files.extend((0..60).map(|k| {
                    (
                        format!("app/{i}/assets/a{a}-{k:03}.json"),
                        sz(8.0),
                        Kind::Text,
                    )
                }));
                if last && i % 5 == 0 {
                    files.push((format!("tmp/build-{i}.tar"), sz(400.0), Kind::Random)); // junk left in the image
                }
                let mut layer = layer_plan(
                    format!("app-{i}-{a}"),
                    format!("COPY app{i}/part{a} /app/{i}/ # buildkit"),
                    files,
                );
                if last && i % 2 == 0 {
                    layer.whiteouts.push(format!(
                        "var/lib/apt/lists/deb.debian.org_dists_bookworm_{}",
                        i % 4
                    ));
                    if with_runtime {
                        layer
                            .whiteouts
                            .push(format!("root/.cache/pip/wheels/w{}.whl", i % 3));
                    }
                }
                plan.own.push(layer);
            }
            plan
        })
        .collect();
    (shared, images)
}

fn write_layer<W: std::io::Write>(mut layer: Layer<W>, plan: &LayerPlan, seed: &str) -> Layer<W> {
    layer = layer.with_parents();
    for (path, size, kind) in &plan.files {
        let rng = Rng::from_name(&format!("{seed}:{}:{path}", plan.name));
        layer = layer.file_from(path, 0o644, *size, Content::new(rng.0, *kind, *size));
    }
    for path in &plan.whiteouts {
        layer = layer.whiteout(path);
    }
    layer
}

/// A shared layer, written once: its blob and its descriptor.
fn shared_blob(plan: &LayerPlan, seed: &str) -> (Vec<u8>, LayerBlob) {
    let layer = Layer::blob(&plan.created_by, Compression::Gzip, Vec::new());
    write_layer(layer, plan, seed)
        .finish_blob()
        .expect("a layer written to memory")
}

struct PushedImage {
    /// REGISTRY/REPO:TAG
    reference: String,
    digest: String,
    /// (digest, size) of every blob: layers and config.
    blobs: Vec<(String, u64)>,
    layers: usize,
}

async fn push_images(args: &Args, registry: &str) -> Result<Vec<PushedImage>> {
    let started = Instant::now();
    let (shared, plans) = image_plan(args.images, args.layer_scale);
    let seed: Arc<str> = args.seed.as_str().into();
    let shared: Arc<Vec<(Vec<u8>, LayerBlob)>> = Arc::new(
        stream::iter(shared)
            .map(|plan| {
                let seed = seed.clone();
                tokio::task::spawn_blocking(move || shared_blob(&plan, &seed))
            })
            .buffered(2)
            .try_collect::<Vec<_>>()
            .await?,
    );
    let pusher = Arc::new(Pusher::plain());
    let images = stream::iter(plans.into_iter().enumerate())
        .map(|(i, plan)| {
            let (seed, shared, pusher) = (seed.clone(), shared.clone(), pusher.clone());
            let reference = format!("{registry}/{REPO_PREFIX}/app-{i:02}:{TAG}");
            async move {
                let layers = plan.shared.len() + plan.own.len();
                let shared_layers = plan.shared.clone();
                let shared_for_build = shared.clone();
                let mut image = tokio::task::spawn_blocking(move || {
                    let mut builder = ImageBuilder::new(Vec::new())
                        .created("2024-01-01T00:00:00Z")
                        .config(json!({
                            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                            "Cmd": [format!("/app/{i}/bin/service-0")],
                        }));
                    for &s in &plan.shared {
                        builder = builder.written(shared_for_build[s].1.clone());
                    }
                    for own in &plan.own {
                        builder = builder.layer(write_layer(Layer::new(&own.created_by), own, &seed));
                    }
                    builder.build()
                })
                .await?;
                // The shared layers were written once; the push sends them like the others.
                let mut blobs: Vec<_> =
                    shared_layers.iter().map(|&s| (shared[s].1.digest.clone(), shared[s].0.clone())).collect();
                blobs.append(&mut image.blobs);
                image.blobs = blobs;
                let digest = pusher.push(&image, &reference).await;
                let blobs = image.blobs.iter().map(|(d, b)| (d.clone(), b.len() as u64)).collect();
                Ok::<_, Box<dyn Error + Send + Sync>>(PushedImage { reference, digest, blobs, layers })
            }
        })
        .buffered(2)
        .try_collect::<Vec<_>>()
        .await?;
    log!(
        "built and pushed {} images in {:.1}s",
        images.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(images)
}

// ------------------------------------------------------------------------------------------------
// The cluster: objects that exist before the operator starts, and what the bench leaves behind.
// ------------------------------------------------------------------------------------------------

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

async fn prepare_cluster(
    client: &Client,
    operator: &Path,
    ns: &str,
    nodes: &[String],
) -> Result<()> {
    // The CRD as the operator under test prints it.
    let out = Command::new(operator)
        .arg("crd")
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("{} crd failed: {}", operator.display(), out.status).into());
    }
    // Every CRD it prints (ImageReport, ClusterImageReport), one YAML document each.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for document in serde_yaml::Deserializer::from_slice(&out.stdout) {
        let crd = CustomResourceDefinition::deserialize(document)?;
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("imagebloat-scale-bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| format!("CRD {name} not Established within 60s"))??;
    }

    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    // A new namespace refuses Pods until its default ServiceAccount exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    while accounts.get_opt("default").await?.is_none() {
        if Instant::now() > deadline {
            return Err("the namespace's default ServiceAccount did not appear within 60s".into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let api: Api<Node> = Api::all(client.clone());
    for n in nodes {
        let node: Node = serde_json::from_value(json!({"metadata": {"name": n, "labels": {
            "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "imagebloat.dev/scale-bench": "true"}}}))?;
        if let Err(e) = api.create(&PostParams::default(), &node).await
            && api_code(&e) != Some(409)
        {
            return Err(format!("create node {n}: {e}").into());
        }
        let info = json!({"status": {"nodeInfo": {
            "architecture": "amd64", "operatingSystem": "linux", "bootID": "", "containerRuntimeVersion": "",
            "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "osImage": "",
            "systemUUID": ""}}});
        api.patch_status(n, &PatchParams::default(), &Patch::Merge(&info))
            .await?;
    }
    Ok(())
}

/// Deletes the bench's Deployments, Pods (grace 0: no kubelet finishes them), namespace and Nodes.
async fn cleanup(client: &Client, ns: &str, nodes: &[String]) {
    log!("cleaning up namespace {ns}");
    let started = Instant::now();
    let background = DeleteParams::background();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::background()
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = deployments
        .delete_collection(&background, &ListParams::default())
        .await;
    let _ = namespaces.delete(ns, &background).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let _ = pods.delete_collection(&now, &ListParams::default()).await;
        match namespaces.get_opt(ns).await {
            Ok(None) => break,
            Err(e) => {
                log!("cleanup failed: {e}");
                return;
            }
            Ok(Some(_)) if Instant::now() > deadline => {
                log!(
                    "namespace {ns} still terminating after 300s; left for the namespace controller"
                );
                break;
            }
            Ok(Some(_)) => tokio::time::sleep(Duration::from_secs(3)).await,
        }
    }
    let api: Api<Node> = Api::all(client.clone());
    for n in nodes {
        let _ = api.delete(n, &DeleteParams::default()).await;
    }
    log!("cleaned up in {:.1}s", started.elapsed().as_secs_f64());
}

// ------------------------------------------------------------------------------------------------
// The operator process and its observation.
// ------------------------------------------------------------------------------------------------

/// The operator's memory and CPU, sampled from /proc once a second.
#[derive(Clone, Default)]
struct ProcStats {
    hwm_kib: u64,
    rss_kib: u64,
    peak_rss_kib: u64,
    peak_at: Option<Instant>,
    cpu_s: f64,
    threads: u64,
    /// (time, RSS KiB, CPU seconds)
    samples: Vec<(Instant, u64, f64)>,
}

impl ProcStats {
    /// Reads /proc/PID; returns the RSS in KiB (0 once the process is gone).
    fn sample(&mut self, pid: u32) -> u64 {
        let (Ok(status), Ok(stat)) = (
            std::fs::read_to_string(format!("/proc/{pid}/status")),
            std::fs::read_to_string(format!("/proc/{pid}/stat")),
        ) else {
            return 0;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        let now = Instant::now();
        self.hwm_kib = self.hwm_kib.max(field("VmHWM:").unwrap_or(0));
        self.rss_kib = field("VmRSS:").unwrap_or(0);
        if self.rss_kib > self.peak_rss_kib {
            self.peak_rss_kib = self.rss_kib;
            self.peak_at = Some(now);
        }
        self.threads = field("Threads:").unwrap_or(0);
        // utime and stime: fields 14 and 15, i.e. 12th and 13th after the command's ")".
        let ticks: Vec<f64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // SAFETY: sysconf reads a constant of the system.
        let clock_ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        self.cpu_s = ticks.iter().sum::<f64>() / clock_ticks;
        self.samples.push((now, self.rss_kib, self.cpu_s));
        self.rss_kib
    }
}

struct Operator {
    child: Child,
    metrics_addr: String,
    log_path: PathBuf,
    started: Instant,
    proc: Arc<Mutex<ProcStats>>,
    sampler: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

impl Operator {
    fn start(
        binary: &Path,
        ns: &str,
        registry: &str,
        log_path: &Path,
        extra: &[String],
    ) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let level = std::env::var("IMAGEBLOAT_LOG").unwrap_or_else(|_| "info".into());
        let log = std::fs::File::create(log_path)?;
        let mut cmd = Command::new(binary);
        cmd.args([
            "run",
            "--metrics-addr",
            metrics_addr.as_str(),
            "--insecure-registry",
            registry,
            "--namespaces",
            ns,
        ])
        .args(extra)
        .env("IMAGEBLOAT_LOG", &level)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        log!(
            "starting operator: {cmd:?} (IMAGEBLOAT_LOG={level}, log {})",
            log_path.display()
        );
        let child = cmd.spawn()?;
        let proc = Arc::new(Mutex::new(ProcStats::default()));
        proc.lock().unwrap().sample(child.id());
        let (watched, pid) = (proc.clone(), child.id());
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if watched.lock().unwrap().sample(pid) == 0 {
                    return;
                }
            }
        });
        Ok(Operator {
            child,
            metrics_addr,
            log_path: log_path.to_path_buf(),
            started: Instant::now(),
            proc,
            sampler,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = self
            .http
            .get(format!("http://{}{path}", self.metrics_addr))
            .send()
            .await
            .ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    }

    /// Seconds from the start until /readyz answers 200.
    async fn wait_ready(&mut self) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "operator exited with {status}; see {}",
                    self.log_path.display()
                )
                .into());
            }
            if matches!(self.get("/readyz").await, Some((200, _))) {
                return Ok(self.started.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "operator not ready within 120s; see {}",
            self.log_path.display()
        )
        .into())
    }

    async fn scrape(&self) -> String {
        match self.get("/metrics").await {
            Some((200, body)) => body,
            _ => String::new(),
        }
    }

    /// SIGTERM (a graceful shutdown), SIGKILL after 15 s.
    fn stop(&mut self) {
        self.proc.lock().unwrap().sample(self.pid());
        self.sampler.abort();
        if !self.alive() {
            return;
        }
        // SAFETY: signals our own child, which has not been reaped (it is alive).
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------------------------
// The run: Deployments created, Pods bound and started as a kubelet would, reports watched.
// ------------------------------------------------------------------------------------------------

/// What a report looked like in the watch.
struct ReportSeen {
    ready: bool,
    reason: String,
    /// ADDED and MODIFIED events seen.
    events: u64,
    ready_at: Option<Instant>,
}

#[derive(Default)]
struct Live {
    seen: HashSet<String>,
    submitted: HashSet<String>,
    patched: usize,
    errors: BTreeMap<String, u64>,
    first_patch: Option<Instant>,
    last_patch: Option<Instant>,
    last_pod_created: Option<Instant>,
    wl_first_pod: HashMap<String, Instant>,
    wl_first_patch: HashMap<String, Instant>,
    reports: HashMap<String, ReportSeen>,
    next_node: usize,
}

/// The report name of the workload a Pod belongs to: `wl-007-…` -> `deployment-wl-007`.
fn workload_of(pod: &str) -> String {
    let mut parts = pod.splitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("wl"), Some(n), Some(_)) => format!("deployment-wl-{n}"),
        _ => pod.to_string(),
    }
}

/// Times of the run, from T0 (the first Deployment create).
#[derive(Default)]
struct Timeline {
    deployments_created: Option<Instant>,
    all_pods_created: Option<Instant>,
    first_status_patch: Option<Instant>,
    last_status_patch: Option<Instant>,
    first_report: Option<Instant>,
    all_reports: Option<Instant>,
    all_ready: Option<Instant>,
    settled: Option<Instant>,
    /// (Pods seen, RSS KiB) at a fifth of the Pods: RSS per Pod is the slope from here.
    rss_mark: Option<(usize, u64)>,
}

#[derive(Default)]
struct RunResults {
    timeline: Timeline,
    api_server_lost: bool,
    operator_ready_s: f64,
    rss_at_ready_kib: u64,
    pods_patched: usize,
    pods_seen: usize,
    loads: Vec<f64>,
    reports: usize,
    ready: usize,
    digest_ok: usize,
    not_ready: BTreeMap<String, u64>,
    kubelet_retries: BTreeMap<String, u64>,
    lag_first_pod: Vec<f64>,
    lag_first_patch: Vec<f64>,
    ready_times: Vec<f64>,
    events_histogram: BTreeMap<u64, u64>,
    pod_json_bytes: f64,
    pod_managed_fields_bytes: f64,
    report_status_bytes: f64,
}

fn deployment(name: &str, image: &str, replicas: usize) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "scale-bench"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image,
                                         "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                         "terminationGracePeriodSeconds": 0},
            },
        },
    }))?)
}

/// The kubelet's part for one Pod: bind it to `node`, then report its containers running with
/// the image digests. Returns false when the Pod was deleted meanwhile.
async fn start_pod(
    pods: &Api<Pod>,
    pod: &Pod,
    node: &str,
    image_ids: &HashMap<String, String>,
) -> kube::Result<bool> {
    let name = pod.name_any();
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_none()
    {
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                             "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        match pods
            .create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
            .await
        {
            Err(e) if api_code(&e) == Some(404) => return Ok(false),
            Err(e) if api_code(&e) != Some(409) => return Err(e),
            _ => {}
        }
    }
    let now = Time(Timestamp::now());
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let status = PodStatus {
        phase: Some("Running".into()),
        start_time: Some(now.clone()),
        conditions: Some(
            ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
                .iter()
                .map(|t| PodCondition {
                    type_: t.to_string(),
                    status: "True".into(),
                    last_transition_time: Some(now.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
        container_statuses: Some(
            containers
                .iter()
                .map(|c| {
                    let image = c.image.clone().unwrap_or_default();
                    ContainerStatus {
                        name: c.name.clone(),
                        image_id: image_ids.get(&image).cloned().unwrap_or_default(),
                        image,
                        ready: true,
                        started: Some(true),
                        restart_count: 0,
                        state: Some(ContainerState {
                            running: Some(ContainerStateRunning {
                                started_at: Some(now.clone()),
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                })
                .collect(),
        ),
        ..Default::default()
    };
    let patch = Patch::Strategic(json!({"status": status}));
    match pods
        .patch_status(&name, &PatchParams::default(), &patch)
        .await
    {
        Err(e) if api_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e),
        Ok(_) => Ok(true),
    }
}

fn on_pod(pod: Pod, ctx: &Arc<KubeletCtx>) {
    let name = pod.name_any();
    let node = {
        let mut l = ctx.live.lock().unwrap();
        if l.seen.insert(name.clone()) {
            let now = Instant::now();
            l.last_pod_created = Some(now);
            l.wl_first_pod.entry(workload_of(&name)).or_insert(now);
        }
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
            || !l.submitted.insert(name.clone())
        {
            return;
        }
        l.next_node += 1;
        ctx.nodes[l.next_node % ctx.nodes.len()].clone()
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = ctx.workers.acquire().await;
        for attempt in 0..8u32 {
            match start_pod(&ctx.pods, &pod, &node, &ctx.image_ids).await {
                Ok(started) => {
                    if started {
                        let now = Instant::now();
                        let mut l = ctx.live.lock().unwrap();
                        l.wl_first_patch.entry(workload_of(&name)).or_insert(now);
                        l.patched += 1;
                        l.first_patch.get_or_insert(now);
                        l.last_patch = Some(now);
                    }
                    return;
                }
                Err(e) => {
                    let key = match &e {
                        kube::Error::Api(s) => format!("Api:{}", s.code),
                        other => other.to_string().chars().take(60).collect(),
                    };
                    *ctx.live.lock().unwrap().errors.entry(key).or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt + 1))).await;
                }
            }
        }
    });
}

fn ready_condition(r: &ImageReport) -> Option<&imagebloat::report::crd::Condition> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn on_report(report: ImageReport, deleted: bool, live: &Mutex<Live>) {
    let name = report.name_any();
    let mut l = live.lock().unwrap();
    if deleted {
        l.reports.remove(&name);
        return;
    }
    let c = ready_condition(&report);
    let ready = c.is_some_and(|c| c.status == "True");
    let reason = c.map_or("no status".to_string(), |c| c.reason.clone());
    let seen = l.reports.entry(name).or_insert(ReportSeen {
        ready,
        reason: String::new(),
        events: 0,
        ready_at: None,
    });
    seen.events += 1;
    seen.ready = ready;
    seen.reason = reason;
    if ready && seen.ready_at.is_none() {
        seen.ready_at = Some(Instant::now());
    }
}

/// What every kubelet task shares.
struct KubeletCtx {
    pods: Api<Pod>,
    nodes: Vec<String>,
    image_ids: HashMap<String, String>,
    workers: Semaphore,
    live: Arc<Mutex<Live>>,
}

/// Health of a watch: whether its first list is through, and when its current streak of
/// failures began.
#[derive(Default)]
struct WatchHealth {
    synced: bool,
    errors: u64,
    failing_since: Option<Instant>,
}

impl WatchHealth {
    fn record<K>(
        &mut self,
        what: &str,
        r: &std::result::Result<watcher::Event<K>, watcher::Error>,
    ) {
        match r {
            Ok(event) => {
                self.failing_since = None;
                self.synced |= matches!(event, watcher::Event::InitDone);
            }
            Err(e) => {
                self.errors += 1;
                self.failing_since.get_or_insert_with(Instant::now);
                if self.errors < 5 || self.errors.is_multiple_of(50) {
                    log!("watch {what}: {e}");
                }
            }
        }
    }
}

type Health = Arc<Mutex<[WatchHealth; 2]>>;

/// Aborts the watch tasks when the run ends, however it ends.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.iter().for_each(|t| t.abort());
    }
}

/// Watches Pods (each new one is started as a kubelet would) and reports; returns once both
/// watches have listed (at most 30 s).
async fn watch(client: &Client, ns: &str, ctx: &Arc<KubeletCtx>) -> (Tasks, Health) {
    let health: Health = Arc::default();
    let pod_watch = {
        let (ctx, health) = (ctx.clone(), health.clone());
        let stream = watcher(ctx.pods.clone(), watcher::Config::default()).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                health.lock().unwrap()[0].record("pods", &event);
                if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event {
                    on_pod(pod, &ctx);
                }
            }
        })
    };
    let report_watch = {
        let (live, health) = (ctx.live.clone(), health.clone());
        let api: Api<ImageReport> = Api::namespaced(client.clone(), ns);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                health.lock().unwrap()[1].record("imagereports", &event);
                match event {
                    Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) => {
                        on_report(r, false, &live)
                    }
                    Ok(watcher::Event::Delete(r)) => on_report(r, true, &live),
                    _ => {}
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !health.lock().unwrap().iter().all(|h| h.synced) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (Tasks(vec![pod_watch, report_watch]), health)
}

async fn create_deployments(
    args: &Args,
    client: &Client,
    ns: &str,
    images: &[PushedImage],
) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    stream::iter(0..args.workloads)
        .map(|k| {
            let (deployments, im) = (deployments.clone(), &images[k % images.len()]);
            async move {
                let d = deployment(&format!("wl-{k:03}"), &im.reference, args.replicas)?;
                deployments.create(&PostParams::default(), &d).await?;
                Ok::<_, Box<dyn Error + Send + Sync>>(())
            }
        })
        .buffer_unordered(args.workers)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn run_bench(
    args: &Args,
    client: &Client,
    ns: &str,
    nodes: &[String],
    images: &[PushedImage],
    op: &mut Operator,
) -> Result<RunResults> {
    let image_ids = images
        .iter()
        .map(|im| {
            let repo = im
                .reference
                .rsplit_once(':')
                .map_or(im.reference.as_str(), |(r, _)| r);
            (im.reference.clone(), format!("{repo}@{}", im.digest))
        })
        .collect();
    let ctx = Arc::new(KubeletCtx {
        pods: Api::namespaced(client.clone(), ns),
        nodes: nodes.to_vec(),
        image_ids,
        workers: Semaphore::new(args.workers),
        live: Arc::default(),
    });
    let (tasks, health) = watch(client, ns, &ctx).await;

    let t0 = *T0.get_or_init(Instant::now);
    create_deployments(args, client, ns, images).await?;
    let mut run = RunResults::default();
    run.timeline.deployments_created = Some(Instant::now());
    log!(
        "{} deployments created in {:.1}s",
        args.workloads,
        t0.elapsed().as_secs_f64()
    );
    watch_until_done(args, &ctx.live, &health, op, &mut run).await;
    drop(tasks);
    // Kubelet tasks still running finish before the figures are taken.
    let _ = ctx.workers.acquire_many(args.workers as u32).await;

    look_at_reports(client, ns, args.workloads, images, &mut run).await;
    {
        let l = ctx.live.lock().unwrap();
        let lags = |first: &HashMap<String, Instant>| -> Vec<f64> {
            let lag = |(wl, t): (&String, &Instant)| {
                Some(l.reports.get(wl)?.ready_at?.saturating_duration_since(*t))
            };
            first
                .iter()
                .filter_map(lag)
                .map(|d| d.as_secs_f64())
                .collect()
        };
        run.lag_first_pod = lags(&l.wl_first_pod);
        run.lag_first_patch = lags(&l.wl_first_patch);
        run.ready_times = l
            .reports
            .values()
            .filter_map(|r| Some(since_t0(r.ready_at?)))
            .collect();
        for r in l.reports.values() {
            *run.events_histogram.entry(r.events).or_default() += 1;
        }
        run.timeline.first_status_patch = l.first_patch;
        run.pods_patched = l.patched;
        run.pods_seen = l.seen.len();
        run.kubelet_retries = l.errors.clone();
    }
    // Pod objects as the operator receives them (sizes explain the operator's memory per Pod).
    match ctx.pods.list(&ListParams::default().limit(50)).await {
        Ok(sample) => {
            let size = |v: serde_json::Result<Vec<u8>>| v.map_or(0, |v| v.len());
            run.pod_json_bytes = mean(sample.items.iter().map(|p| size(serde_json::to_vec(p))));
            let managed = sample
                .items
                .iter()
                .map(|p| size(serde_json::to_vec(&p.metadata.managed_fields)));
            run.pod_managed_fields_bytes = mean(managed);
        }
        Err(e) => log!("pod sample failed: {e}"),
    }
    Ok(run)
}

/// Logs progress every 10 s until every Pod runs and every report is Ready (then `--settle`
/// seconds more), the timeout, the operator's exit, or the loss of the API server.
async fn watch_until_done(
    args: &Args,
    live: &Mutex<Live>,
    health: &Health,
    op: &mut Operator,
    run: &mut RunResults,
) {
    let (w, n_pods) = (args.workloads, args.workloads * args.replicas);
    let t0 = *T0.get().expect("T0 is set before the run");
    let deadline = t0 + Duration::from_secs_f64(args.timeout);
    let (mut last_print, mut load_at): (Option<Instant>, Option<Instant>) = (None, None);
    let tl = &mut run.timeline;
    loop {
        let now = Instant::now();
        let (seen, patched, ready, n_reports, last_ready, mut progress) = {
            let l = live.lock().unwrap();
            if l.seen.len() >= n_pods && tl.all_pods_created.is_none() {
                tl.all_pods_created = l.last_pod_created;
            }
            if l.patched >= n_pods && tl.last_status_patch.is_none() {
                tl.last_status_patch = l.last_patch;
            }
            let mut not_ready: BTreeMap<&str, u64> = BTreeMap::new();
            for r in l.reports.values().filter(|r| !r.ready) {
                *not_ready.entry(r.reason.as_str()).or_default() += 1;
            }
            let ready = l.reports.len() - not_ready.values().sum::<u64>() as usize;
            let mut progress = format!(
                "pods created {}/{n_pods}, running {}; reports {}, Ready {ready}",
                l.seen.len(),
                l.patched,
                l.reports.len()
            );
            if !not_ready.is_empty() {
                progress += &format!(" (not Ready: {not_ready:?})");
            }
            let last_ready = l.reports.values().filter_map(|r| r.ready_at).max();
            (
                l.seen.len(),
                l.patched,
                ready,
                l.reports.len(),
                last_ready,
                progress,
            )
        };
        let p = op.proc.lock().unwrap().clone();
        progress += &format!(
            "; operator RSS {:.0} MiB (HWM {:.0}), CPU {:.0}s",
            p.rss_kib as f64 / 1024.0,
            p.hwm_kib as f64 / 1024.0,
            p.cpu_s
        );
        if seen >= n_pods / 5 && tl.rss_mark.is_none() {
            tl.rss_mark = Some((seen, p.rss_kib));
        }
        if n_reports > 0 && tl.first_report.is_none() {
            tl.first_report = Some(now);
        }
        if n_reports >= w && tl.all_reports.is_none() {
            tl.all_reports = Some(now);
        }
        if ready >= w && tl.all_ready.is_none() {
            tl.all_ready = last_ready;
            log!("every report is Ready ({w}); pods running {patched}/{n_pods}");
        }
        let done = ready >= w && patched >= n_pods;
        if done && tl.settled.is_none() {
            tl.settled = Some(now + Duration::from_secs_f64(args.settle));
            log!(
                "every Pod runs and every report is Ready: watching {:.0}s more for late writes",
                args.settle
            );
        }
        let settled = tl.settled.is_some_and(|s| now >= s);
        if last_print.is_none_or(|t| now - t >= Duration::from_secs(10)) || settled {
            last_print = Some(now);
            let errors = live.lock().unwrap().errors.clone();
            if !errors.is_empty() {
                progress += &format!("; kubelet retries {errors:?}");
            }
            log!("{progress}");
        }
        if settled {
            break;
        }
        if let Ok(Some(status)) = op.child.try_wait() {
            log!("operator exited with {status}");
            break;
        }
        if now > deadline {
            log!("timeout after {:.0}s", args.timeout);
            break;
        }
        let down: Vec<Instant> = health
            .lock()
            .unwrap()
            .iter()
            .filter_map(|h| h.failing_since)
            .collect();
        if down.len() == 2 && down.iter().all(|t| now - *t > Duration::from_secs(30)) {
            log!(
                "the API server has been unreachable for 30 s (restarted by someone else's `kube-testenv.sh up`?): giving up; use --private-env for a control plane of the bench's own"
            );
            run.api_server_lost = true;
            break;
        }
        if load_at.is_none_or(|t| now - t >= Duration::from_secs(5)) {
            load_at = Some(now);
            let load = std::fs::read_to_string("/proc/loadavg").ok();
            if let Some(load) = load.and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            {
                run.loads.push(load);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A last consistent look at the reports (the watch is the timing source, the list the truth).
async fn look_at_reports(
    client: &Client,
    ns: &str,
    workloads: usize,
    images: &[PushedImage],
    run: &mut RunResults,
) {
    let reports: Api<ImageReport> = Api::namespaced(client.clone(), ns);
    let listed = reports
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_else(|e| {
            log!("final list of reports failed: {e}");
            Vec::new()
        });
    let expected: HashMap<String, &str> = (0..workloads)
        .map(|k| {
            (
                format!("deployment-wl-{k:03}"),
                images[k % images.len()].digest.as_str(),
            )
        })
        .collect();
    for r in &listed {
        match ready_condition(r) {
            Some(c) if c.status == "True" => run.ready += 1,
            c => {
                *run.not_ready
                    .entry(c.map_or("no status".into(), |c| c.reason.clone()))
                    .or_default() += 1
            }
        }
        let status = r.status.as_ref();
        let digest = status
            .and_then(|s| s.containers.first()?.findings.as_ref())
            .map(|f| f.digest.as_str());
        if digest.is_some() && digest == expected.get(&r.name_any()).copied() {
            run.digest_ok += 1;
        }
    }
    run.reports = listed.len();
    run.report_status_bytes = mean(
        listed
            .iter()
            .map(|r| serde_json::to_vec(&r.status).map_or(0, |v| v.len())),
    );
}

fn mean(values: impl Iterator<Item = usize>) -> f64 {
    let (sum, n) = values.fold((0usize, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum as f64 / n as f64 }
}

/// The values at the given percentiles (nearest rank below), or nothing without values.
fn percentiles(values: &[f64], ps: &[usize]) -> Option<Vec<f64>> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| {
        ps.iter()
            .map(|p| v[(v.len() * p / 100).min(v.len() - 1)])
            .collect()
    })
}

// ------------------------------------------------------------------------------------------------
// Metrics (Prometheus text format), the registry's access log, the operator's log.
// ------------------------------------------------------------------------------------------------

async fn apiserver_metrics(client: &Client) -> String {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    client.request_text(request).await.unwrap_or_default()
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .map_or_else(|_| Vec::new(), |s| s.samples)
}

fn sample_value(s: &Sample) -> f64 {
    match s.value {
        MetricValue::Counter(v) | MetricValue::Gauge(v) | MetricValue::Untyped(v) => v,
        _ => 0.0,
    }
}

/// The sum of `name`'s series by the value of `label`.
fn sum_by(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.metric == name) {
        *out.entry(s.labels.get(label).unwrap_or_default().to_string())
            .or_default() += sample_value(s);
    }
    out
}

fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| s.metric == name)
        .map(sample_value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Non-read requests for imagereports, by (verb, subresource, code), from apiserver_request_total.
fn apiserver_writes(samples: &[Sample]) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for s in samples
        .iter()
        .filter(|s| s.metric == "apiserver_request_total")
    {
        let label = |k: &str| s.labels.get(k).unwrap_or_default().to_string();
        let verb = label("verb");
        if label("resource") != "imagereports"
            || ["GET", "LIST", "WATCH", "WATCHLIST", "CONNECT"].contains(&verb.as_str())
        {
            continue;
        }
        *out.entry((verb, label("subresource"), label("code")))
            .or_default() += sample_value(s);
    }
    out
}

/// Single-object GET requests (not LIST or WATCH) per resource the operator reads one by one.
fn apiserver_gets(samples: &[Sample]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = OPERATOR_READS
        .iter()
        .map(|r| (r.to_string(), 0.0))
        .collect();
    for s in samples
        .iter()
        .filter(|s| s.metric == "apiserver_request_total")
    {
        let resource = s.labels.get("resource").unwrap_or_default();
        if s.labels.get("verb") == Some("GET")
            && s.labels.get("subresource").unwrap_or_default().is_empty()
            && let Some(v) = out.get_mut(resource)
        {
            *v += sample_value(s);
        }
    }
    out
}

/// What the registry sent for repositories under the bench's prefix.
#[derive(Default)]
struct Served {
    blob_bytes: u64,
    manifest_bytes: u64,
    /// GETs and bytes per blob digest.
    gets: BTreeMap<String, (u64, u64)>,
    /// Requests by (method, kind, status).
    statuses: BTreeMap<String, u64>,
}

/// One access-log line: `… "GET /v2/REPO/blobs/REF HTTP/1.1" 200 1234 …` as (method, repo, kind,
/// reference, status, size).
fn access_line(line: &str) -> Option<(&str, &str, &str, &str, &str, &str)> {
    let start = line
        .find("\"GET /v2/")
        .or_else(|| line.find("\"HEAD /v2/"))?;
    let (request, after) = line[start + 1..].split_once('"')?;
    let mut request = request.split(' ');
    let (method, path) = (request.next()?, request.next()?.strip_prefix("/v2/")?);
    let mut after = after.split_whitespace();
    let (status, size) = (after.next()?, after.next()?);
    let (repo_kind, reference) = path.rsplit_once('/')?;
    let (repo, kind) = repo_kind.rsplit_once('/')?;
    matches!(kind, "blobs" | "manifests").then_some((method, repo, kind, reference, status, size))
}

fn registry_served(log: &Path, offset: u64, prefix: &str) -> Result<Served> {
    let bytes = std::fs::read(log)?;
    let text = String::from_utf8_lossy(&bytes[(offset as usize).min(bytes.len())..]);
    let mut served = Served::default();
    for (method, repo, kind, reference, status, size) in text.lines().filter_map(access_line) {
        if !repo.starts_with(&format!("{prefix}/")) {
            continue;
        }
        let kind = match kind {
            "manifests" if reference.starts_with("sha256:") => "manifests(digest)",
            "manifests" => "manifests(tag)",
            k => k,
        };
        *served
            .statuses
            .entry(format!("{method}/{kind}/{status}"))
            .or_default() += 1;
        let Ok(size) = size.parse::<u64>() else {
            continue;
        };
        if method != "GET" {
            continue;
        }
        if kind == "blobs" {
            served.blob_bytes += size;
            let e = served.gets.entry(reference.to_string()).or_default();
            e.0 += 1;
            e.1 += size;
        } else {
            served.manifest_bytes += size;
        }
    }
    Ok(served)
}

/// Log lines by level, and the most frequent warn/error messages (numbers and digests masked),
/// each with one example.
fn summarize_log(path: &Path, limit: usize) -> (BTreeMap<String, u64>, Vec<(u64, String)>) {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut levels = BTreeMap::new();
    let mut messages: HashMap<String, (u64, String)> = HashMap::new();
    for raw in text.lines() {
        let line = strip_ansi(raw);
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(w));
        let level = at.map_or("OTHER", |i| words[i]);
        *levels.entry(level.to_string()).or_default() += 1;
        if matches!(level, "WARN" | "ERROR" | "OTHER") {
            let body = words[at.map_or(0, |i| i + 1)..]
                .iter()
                .map(|w| mask(w))
                .collect::<Vec<_>>()
                .join(" ");
            let key: String = format!("{level} {body}").chars().take(220).collect();
            let e = messages
                .entry(key)
                .or_insert_with(|| (0, line.chars().take(400).collect()));
            e.0 += 1;
        }
    }
    let mut top: Vec<(u64, String)> = messages.into_values().collect();
    top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    top.truncate(limit);
    (levels, top)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// A word with its digests and numbers replaced, so that messages differing only there group.
fn mask(word: &str) -> String {
    if let Some(i) = word.find("sha256:") {
        return format!("{}sha256:…", &word[..i]);
    }
    let mut out = String::new();
    for c in word.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// The figures.
// ------------------------------------------------------------------------------------------------

struct Figures<'a> {
    args: &'a Args,
    operator: &'a Path,
    images: usize,
    unique_blobs: usize,
    unique_bytes: u64,
    blobs: Vec<String>,
    served: Served,
    log: (BTreeMap<String, u64>, Vec<(u64, String)>),
    nodes: usize,
    observed: Observed,
}

/// Rows of name, value, target and verdict, printed in aligned columns.
#[derive(Default)]
struct Table(Vec<[String; 4]>);

impl Table {
    fn info(&mut self, name: &str, value: impl Into<String>) {
        self.0
            .push([name.into(), value.into(), String::new(), String::new()]);
    }

    fn target(&mut self, name: &str, value: impl Into<String>, target: &str, pass: bool) {
        let verdict = if pass { "PASS" } else { "MISS" };
        self.0
            .push([name.into(), value.into(), target.into(), verdict.into()]);
    }

    fn print(&self) {
        let width = |i: usize| {
            self.0
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (wn, wv, wt) = (width(0), width(1), width(2));
        for [name, value, target, verdict] in &self.0 {
            println!("{name:<wn$}  {value:<wv$}  {target:<wt$}  {verdict}");
        }
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.1} s"))
}

fn joined(values: &[f64], decimals: usize) -> String {
    let v: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    format!("{} s", v.join(" / "))
}

/// `after - before` per key.
fn delta<K: Ord + Clone>(after: BTreeMap<K, f64>, before: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
    after
        .into_iter()
        .map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0.0)))
        .collect()
}

impl Figures<'_> {
    /// Prints the table and the details; returns whether every target is met, and the results.
    fn print(&self) -> (bool, Value) {
        let (args, o) = (self.args, &self.observed);
        let (run, t, m, p) = (&o.run, &o.run.timeline, &o.final_metrics, &o.proc);
        let (w, n_pods, wf) = (
            args.workloads,
            args.workloads * args.replicas,
            args.workloads as f64,
        );
        let written = sum_by(m, "imagebloat_reports_written_total", "result");
        let report_writes: f64 = written.values().sum();
        let mut api_delta = delta(
            apiserver_writes(&o.api_after),
            &apiserver_writes(&o.api_before),
        );
        api_delta.retain(|_, n| *n > 0.0);
        let api_writes: f64 = api_delta.values().sum();
        let reads = delta(apiserver_gets(&o.api_after), &apiserver_gets(&o.api_before));
        let served = &self.served;
        let ratio = served.blob_bytes as f64 / self.unique_bytes as f64;
        let mut dup: Vec<_> = served.gets.iter().filter(|(_, g)| g.0 > 1).collect();
        dup.sort_by_key(|d| std::cmp::Reverse(d.1.0));
        let never = self
            .blobs
            .iter()
            .filter(|d| !served.gets.contains_key(*d))
            .count();
        let hwm_mib = p.hwm_kib as f64 / 1024.0;
        let all_ready = run.ready >= w;
        let at = |i: Option<Instant>| i.map(since_t0);
        let to_ready = at(t.all_ready).filter(|_| all_ready);
        let minus = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        let from_first_patch = minus(to_ready, at(t.first_status_patch));
        let from_last_patch = minus(to_ready, at(t.last_status_patch));

        let now = Timestamp::now().strftime("%Y-%m-%d %H:%M:%S UTC");
        println!("\n{}", "=".repeat(78));
        println!("imagebloat scale benchmark — {now}");
        println!(
            "operator binary: {}\n{}",
            self.operator.display(),
            "=".repeat(78)
        );
        let mut table = Table::default();
        table.info(
            "pods",
            format!("{} / {n_pods} bound and running", run.pods_patched),
        );
        table.info("workloads (Deployments)", w.to_string());
        let unique = human(self.unique_bytes as f64);
        table.info(
            "images (distinct)",
            format!(
                "{} ({} unique blobs, {unique})",
                self.images, self.unique_blobs
            ),
        );
        table.info("nodes", self.nodes.to_string());
        table.info(
            "operator start -> /readyz",
            secs(Some(run.operator_ready_s)),
        );
        table.info("deployments created", secs(at(t.deployments_created)));
        table.info(
            "all pods created (controller-manager)",
            secs(at(t.all_pods_created)),
        );
        table.info(
            "all pods bound + status patched",
            secs(at(t.last_status_patch)),
        );
        let rate = at(t.all_pods_created)
            .map_or("—".into(), |s| format!("{:.1} pods/s", n_pods as f64 / s));
        table.info("pod creation rate (controller-manager)", rate);
        table.info("first report exists", secs(at(t.first_report)));
        table.info("all reports exist", secs(at(t.all_reports)));
        table.target(
            "time to all reports Ready (from T0)",
            secs(to_ready),
            &format!("{w} Ready"),
            all_ready,
        );
        table.info("  from first Pod status patch", secs(from_first_patch));
        table.info(
            "  from last Pod status patch (<0: before it)",
            secs(from_last_patch),
        );
        let per_s = from_first_patch.map_or("—".into(), |s| format!("{:.2}", wf / s));
        table.info("reports/s (first status patch -> all Ready)", per_s);
        let lag_pod = percentiles(&run.lag_first_pod, &[50, 90, 99, 100]);
        let lag_patch = percentiles(&run.lag_first_patch, &[50, 90, 99, 100]);
        if let Some(p) = &lag_pod {
            table.info(
                "per workload: first Pod created -> report Ready (p50/p90/p99/max)",
                joined(p, 2),
            );
        }
        if let Some(p) = &lag_patch {
            table.info(
                "per workload: first status patch -> report Ready (p50/p90/p99/max)",
                joined(p, 2),
            );
        }
        let ready_pct = percentiles(&run.ready_times, &[10, 50, 90, 100]);
        if let Some(p) = &ready_pct {
            table.info("report Ready at (p10/p50/p90/p100 from T0)", joined(p, 0));
        }
        table.info(
            "reports Ready / exist",
            format!("{} / {}", run.ready, run.reports),
        );
        table.info(
            "reports with the expected digest",
            format!("{} / {}", run.digest_ok, run.reports),
        );
        let wpw = report_writes / wf;
        let by_result: BTreeMap<_, u64> = written.iter().map(|(k, v)| (k, *v as u64)).collect();
        let writes = format!("{wpw:.2} ({} writes: {by_result:?})", report_writes as u64);
        if report_writes == 0.0 {
            table.0.push([
                "report writes per workload (metric)".into(),
                writes,
                "~1".into(),
                "?".into(),
            ]);
        } else {
            table.target(
                "report writes per workload (metric)",
                writes,
                "~1",
                wpw <= 1.0 + 1e-9,
            );
        }
        // The fleet view: one cluster report per distinct image, computed once the workloads
        // are quiet for the fleet interval (10 s) or at the latest every five intervals under
        // churn, and written only when its content changed. So writes are bounded by the images
        // and the run's duration, never by Pod events: at most one write per image per
        // computation, at most one computation per 50 s of churn (plus the last one).
        let cluster_writes = sum(m, "imagebloat_cluster_reports_written_total").unwrap_or(0.0);
        let computations = sum(m, "imagebloat_fleet_computations_total").unwrap_or(0.0);
        let run_secs = since_t0(Instant::now());
        let max_computations = (run_secs / 50.0).ceil() + 1.0;
        // Writes happen only in computations (one per changed report), so the bound that can
        // fail is the number of computations below; the writes are shown for scale.
        table.info(
            "cluster report writes (metric)",
            format!(
                "{} for {} images and {n_pods} Pods ({} fleet computations in {run_secs:.0} s)",
                cluster_writes as u64, args.images, computations as u64
            ),
        );
        table.target(
            "fleet computations (metric)",
            format!("{}", computations as u64),
            &format!("<= {max_computations:.0} (1 per 50 s)"),
            computations <= max_computations,
        );
        let api = format!(
            "{:.2} ({} for imagereports, all clients)",
            api_writes / wf,
            api_writes as u64
        );
        table.0.push([
            "API write requests per workload (apiserver)".into(),
            api,
            "~2 (apply + status)".into(),
            "".into(),
        ]);
        let each: Vec<String> = reads
            .iter()
            .map(|(k, v)| format!("{k} {}", *v as i64))
            .collect();
        let reads_total: f64 = reads.values().sum();
        table.info(
            "API single-object reads per workload (GET)",
            format!("{:.2} ({})", reads_total / wf, each.join(", ")),
        );
        let mem_target = format!("<= {:.0} MiB", args.mem_target_mib);
        table.target(
            "operator peak memory (VmHWM)",
            format!("{hwm_mib:.1} MiB"),
            &mem_target,
            hwm_mib <= args.mem_target_mib,
        );
        table.info("operator CPU time", format!("{:.1} s", p.cpu_s));
        if !run.loads.is_empty() {
            let mean = run.loads.iter().sum::<f64>() / run.loads.len() as f64;
            let max = run.loads.iter().copied().fold(0.0, f64::max);
            let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
            table.info(
                "machine load (1-min avg) during the run",
                format!("mean {mean:.1}, max {max:.1} on {cpus} CPUs"),
            );
        }
        let gets: u64 = served.gets.values().map(|g| g.0).sum();
        let bytes = format!(
            "{} ({} B, {gets} GETs)",
            human(served.blob_bytes as f64),
            served.blob_bytes
        );
        table.info("registry blob bytes served", bytes);
        table.info(
            "unique blob bytes pushed",
            format!("{unique} ({} B)", self.unique_bytes),
        );
        let ratio_target = format!("<= {:.2}x", args.ratio_target);
        table.target(
            "served / unique ratio",
            format!("{ratio:.3}x"),
            &ratio_target,
            ratio <= args.ratio_target,
        );
        table.info("manifest bytes served", human(served.manifest_bytes as f64));
        table.print();
        println!("{}", "-".repeat(78));

        println!("operator metrics at the end:");
        for (name, label) in [
            ("imagebloat_analyses_total", "result"),
            ("imagebloat_cache_hits_total", "cache"),
            ("imagebloat_reconcile_errors_total", "reason"),
            ("imagebloat_registry_requests_total", "status"),
        ] {
            let by: BTreeMap<_, u64> = sum_by(m, name, label)
                .into_iter()
                .map(|(k, v)| (k, v as u64))
                .collect();
            println!("  {name}: {by:?}");
        }
        let downloaded = sum(m, "imagebloat_registry_bytes_downloaded_total");
        let downloaded = downloaded.map_or("—".into(), |v| (v as u64).to_string());
        println!("  imagebloat_registry_bytes_downloaded_total: {downloaded}");
        let count = sum(m, "imagebloat_analysis_duration_seconds_count").unwrap_or(0.0);
        let total = sum(m, "imagebloat_analysis_duration_seconds_sum").unwrap_or(0.0);
        if count > 0.0 {
            println!(
                "  analysis duration: {count} analyses, mean {:.2} s",
                total / count
            );
        }
        let peak_at = p
            .peak_at
            .map_or(String::new(), |at| format!(" at +{:.0}s", since_t0(at)));
        println!(
            "  operator alive at the end: {}; threads {}; RSS at end {:.1} MiB; peak sampled RSS {:.1} MiB{peak_at}",
            o.alive,
            p.threads,
            p.rss_kib as f64 / 1024.0,
            p.peak_rss_kib as f64 / 1024.0,
        );
        let hits = sum_by(m, "imagebloat_cache_hits_total", "cache")
            .get("image")
            .copied()
            .unwrap_or(0.0);
        let requested = hits
            + sum_by(m, "imagebloat_analyses_total", "result")
                .values()
                .sum::<f64>();
        println!(
            "container analyses requested (image cache hits + analyses; one per container per reconcile): {requested} = {:.1} per workload",
            requested / wf
        );
        if run.pod_json_bytes > 0.0 {
            let (json, managed) = (
                human(run.pod_json_bytes),
                human(run.pod_managed_fields_bytes),
            );
            println!(
                "Pod object size (JSON, sample of 50): mean {json}, of which managedFields {managed}"
            );
        }
        let rss_per_pod = t.rss_mark.filter(|m| run.pods_seen > m.0).map(|(seen, rss)| {
            let per_pod = (p.rss_kib as f64 - rss as f64) / (run.pods_seen - seen) as f64;
            println!(
                "operator RSS growth per Pod: {per_pod:.1} KiB (from {seen} Pods at {:.0} MiB to {} at {:.0} MiB)",
                rss as f64 / 1024.0,
                run.pods_seen,
                p.rss_kib as f64 / 1024.0
            );
            per_pod
        });
        println!(
            "report watch events per report (ADDED+MODIFIED; 2 = create + one status): {:?}; mean status size {}",
            run.events_histogram,
            human(run.report_status_bytes)
        );
        if !run.kubelet_retries.is_empty() {
            println!("kubelet-play retries: {:?}", run.kubelet_retries);
        }
        let writes: Vec<String> = api_delta
            .iter()
            .map(|((v, s, c), n)| format!("{v}/{s}/{c}: {}", *n as u64))
            .collect();
        println!(
            "apiserver imagereports writes during the run (verb/subresource/code): {}",
            writes.join(", ")
        );
        println!(
            "registry requests for {REPO_PREFIX}/*: {:?}",
            served.statuses
        );
        if !dup.is_empty() {
            let top: Vec<String> = dup
                .iter()
                .take(8)
                .map(|(d, (n, b))| {
                    format!("{}… x{n} ({})", d.get(7..19).unwrap_or(d), human(*b as f64))
                })
                .collect();
            println!(
                "blobs fetched more than once: {}; top: {}",
                dup.len(),
                top.join(", ")
            );
        }
        if never > 0 {
            println!("blobs never fetched: {never}");
        }
        println!(
            "operator log: {}: lines by level {:?}",
            o.log_path.display(),
            self.log.0
        );
        for (n, example) in &self.log.1 {
            println!("  {n:6} x {example}");
        }
        println!("{}", "=".repeat(78));

        let ok = all_ready && hwm_mib <= args.mem_target_mib && ratio <= args.ratio_target;
        let results = json!({
            "pods": n_pods, "workloads": w, "images": self.images,
            "operator_ready_s": run.operator_ready_s, "rss_at_ready_kib": run.rss_at_ready_kib,
            "pods_patched": run.pods_patched, "pods_seen": run.pods_seen, "reports": run.reports,
            "ready": run.ready, "digest_ok": run.digest_ok, "not_ready": run.not_ready,
            "kubelet_retries": run.kubelet_retries,
            "timeline_s": {
                "deployments_created": at(t.deployments_created), "all_pods_created": at(t.all_pods_created),
                "first_status_patch": at(t.first_status_patch), "last_status_patch": at(t.last_status_patch),
                "first_report": at(t.first_report), "all_reports": at(t.all_reports), "all_ready": at(t.all_ready),
            },
            "lag_first_pod_to_ready_s": lag_pod, "lag_first_status_patch_to_ready_s": lag_patch,
            "ready_percentiles_s": ready_pct, "time_to_all_ready_s": to_ready,
            "from_first_status_patch_s": from_first_patch, "from_last_status_patch_s": from_last_patch,
            "report_writes": report_writes, "report_writes_per_workload": wpw,
            "apiserver_writes": api_writes, "apiserver_reads": reads,
            "operator_hwm_mib": hwm_mib, "operator_cpu_s": p.cpu_s, "rss_growth_per_pod_kib": rss_per_pod,
            "registry_blob_bytes_served": served.blob_bytes, "unique_blob_bytes": self.unique_bytes,
            "ratio": ratio, "duplicate_blob_fetches": dup.len(), "log_levels": self.log.0,
            "pod_json_bytes_mean": run.pod_json_bytes,
            "pod_managed_fields_bytes_mean": run.pod_managed_fields_bytes,
            "report_status_bytes_mean": run.report_status_bytes,
            "memory_samples": p.samples.iter().map(|(t, rss, cpu)| json!([since_t0(*t), rss, cpu])).collect::<Vec<_>>(),
        });
        (ok, results)
    }
}

//! The `imagebloat` command.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};

use imagebloat::analysis::LayerLimits;
use imagebloat::registry::{Keyring, Platform, Reference, Registry, RegistryOptions};
use imagebloat::report::ImageFindings;
use imagebloat::scan::{self, ImageSource, LayerCache, ScanOptions};
use imagebloat::{format, table};

#[derive(Parser)]
#[command(
    name = "imagebloat",
    version,
    about = "How much of a container image is dead weight, and how to cut it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Analyze one image straight from its registry (or a local OCI layout or archive).
    ///
    /// Exit status: 0 when every threshold passes, 1 when one fails, 2 when the image could not
    /// be analyzed.
    Scan(ScanArgs),
    /// Run the operator: watch Pods, write ImageReports, serve metrics.
    Run(RunArgs),
    /// The images to fix first: each image, the workloads and Nodes running it, the download
    /// bytes a cleanup saves over the fleet, and the recommendation that saves the most.
    ///
    /// Reads ClusterImageReports (or, with --namespace, that namespace's ImageReports) through
    /// the current kubeconfig context. Also runs as the kubectl plugin `kubectl imagebloat top`
    /// when installed as `kubectl-imagebloat`.
    Top(TopArgs),
    /// Print the ImageReport and ClusterImageReport CustomResourceDefinitions (YAML), as in crds/.
    Crd,
}

#[derive(Args)]
struct TopArgs {
    /// Only this namespace's workloads, from its ImageReports (no cluster-level access needed;
    /// each workload counts as one download of each of its images).
    #[arg(short, long, value_name = "NS")]
    namespace: Option<String>,
    /// Largest first by this figure.
    #[arg(long, value_enum, default_value_t = TopSort::FleetReclaimable)]
    sort: TopSort,
    /// Show only this many images (0 for all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    limit: usize,
    #[arg(short, long, value_enum, default_value_t = TopOutput::Table)]
    output: TopOutput,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TopSort {
    /// Download bytes a cleanup saves over the fleet.
    FleetReclaimable,
    /// Compressed size of one copy.
    Pull,
    /// Pull bytes an image grew by when a workload moved to it.
    Growth,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TopOutput {
    Table,
    Json,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Namespaces to watch (comma-separated; default all).
    #[arg(long, value_delimiter = ',', value_name = "NS,...")]
    namespaces: Vec<String>,
    /// Namespaces never watched (comma-separated globs, e.g. `kube-*`).
    #[arg(long, value_delimiter = ',', value_name = "GLOB,...")]
    exclude_namespaces: Vec<String>,
    /// Pull from a mirror instead: REGISTRY=MIRROR (repeatable).
    #[arg(long, value_name = "REGISTRY=MIRROR")]
    mirror: Vec<String>,
    /// Images analyzed at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Images analyzed at once per registry.
    #[arg(long, default_value_t = 2)]
    per_registry_concurrency: usize,
    /// Elect a leader on a Lease, so that only one replica writes.
    #[arg(long, default_value_t = false)]
    leader_elect: bool,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long)]
    lease_namespace: Option<String>,
    #[arg(long, default_value = "imagebloat-leader")]
    lease_name: String,
    /// This replica's name in the Lease and on its Events (default: $POD_NAME, else the host
    /// name and PID).
    #[arg(long)]
    identity: Option<String>,
    /// First delay before retrying a failed analysis, in seconds (doubles, up to ten times).
    #[arg(long, default_value_t = 10)]
    retry_seconds: u64,
    #[command(flatten)]
    limits: LimitArgs,
    /// Give up on an image analysis after this many seconds (it is retried with backoff, as a
    /// transient failure): no registry, however slow, holds an analysis slot longer.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    analysis_timeout: u64,
    /// Memory for layer indexes kept for images that share layers.
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    layer_cache: ByteSize,
    /// Compute the fleet view (ClusterImageReports, Node and cluster gauges) once no workload
    /// changed for this many seconds (at the latest after five times as long under churn).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    fleet_interval_seconds: u64,
    /// Delete a ClusterImageReport once no workload has run its image for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    cluster_report_grace_seconds: u64,
    /// When a container's image changes and its pull size grows by more than this share (0.1 is
    /// 10%), an `ImageGrew` Warning Event goes on the workload (a shrink: `ImageShrank`).
    #[arg(long, value_name = "RATIO", default_value_t = 0.1)]
    growth_threshold: f64,
}

/// Registry access flags shared by every command that reads registries.
#[derive(Args, Clone)]
struct RegistryArgs {
    /// Registry reached over plain HTTP (HOST:PORT); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registry: Vec<String>,
    /// Docker config JSON with registry credentials (default: $DOCKER_CONFIG/config.json, then
    /// ~/.docker/config.json).
    #[arg(long = "registry-config", value_name = "FILE")]
    registry_config: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for registries; repeatable.
    #[arg(long = "ca-file", value_name = "FILE")]
    ca_file: Vec<PathBuf>,
    /// Platform to pick from a multi-platform image.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", default_value = "linux/amd64")]
    platform: Platform,
    /// Retries for transient registry errors (429, 502-504, connection failures).
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// Connect timeout, and the longest silence while reading, in seconds.
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// Deadline of one registry request (manifest, config, token, the headers of a blob), from
    /// sending it to its last byte, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    request_timeout: u64,
    /// A blob download fails when it delivers less than 64 KiB in this many seconds of waiting
    /// for the registry (a slow-loris registry cannot hold a download open forever).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    blob_stall_timeout: u64,
    /// Read every layer in full, even eStargz and zstd:chunked layers whose table of contents
    /// gives the same index from a few ranges of the blob.
    #[arg(long)]
    no_lazy: bool,
}

/// Caps on what one layer may cost, shared by `scan` and `run`: together they bound the memory
/// of a layer's index whatever the layer holds.
#[derive(Args, Clone)]
struct LimitArgs {
    /// Refuse layers that decompress to more than this (decompression bombs).
    #[arg(long, value_name = "SIZE", default_value = "64GiB")]
    max_layer_bytes: ByteSize,
    /// Refuse layers with more tar entries than this.
    #[arg(long, value_name = "N", default_value_t = LayerLimits::default().max_entries)]
    max_layer_entries: u64,
    /// Refuse layers whose paths (and hard-link targets) add up to more than this.
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    max_layer_path_bytes: ByteSize,
}

impl LimitArgs {
    fn limits(&self) -> LayerLimits {
        LayerLimits {
            max_uncompressed_bytes: self.max_layer_bytes.as_u64(),
            max_entries: self.max_layer_entries,
            max_path_bytes: self.max_layer_path_bytes.as_u64(),
        }
    }
}

#[derive(Args)]
struct ScanArgs {
    /// Image reference (`nginx`, `registry.example:5000/team/app:1.2`, `app@sha256:…`).
    #[arg(value_name = "REF", required_unless_present_any = ["oci_layout", "archive"])]
    image: Option<String>,
    /// Analyze an OCI image layout directory instead of a registry image.
    #[arg(long = "oci-layout", value_name = "DIR[:TAG]", conflicts_with_all = ["image", "archive"])]
    oci_layout: Option<String>,
    /// Analyze a `docker save` tarball or an OCI archive.
    #[arg(long, value_name = "FILE[:TAG]", conflicts_with = "image")]
    archive: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Fail (exit 1) when the compressed pull size exceeds this (`200MB`, `1.5GiB`).
    #[arg(long, value_name = "SIZE")]
    max_pull_bytes: Option<ByteSize>,
    /// Fail when bytes hidden by later layers exceed this.
    #[arg(long, value_name = "SIZE")]
    max_wasted_bytes: Option<ByteSize>,
    /// Fail when wasted plus junk bytes exceed this.
    #[arg(long, value_name = "SIZE")]
    max_reclaimable_bytes: Option<ByteSize>,
    /// Fail when efficiency (final / shipped) is below this (`0.95` or `95%`).
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    min_efficiency: Option<f64>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Layers downloaded and decompressed at once.
    #[arg(long, value_name = "N", default_value_t = 2)]
    layer_concurrency: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let (number, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a ratio such as 0.95 or 95%"))?;
    let v = v / scale;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} is outside 0..1 (0%..100%)"))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMAGEBLOAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // Usage errors exit here, with clap's message and status 2.
    let cli = parse_cli();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Error::OperatorStopped(message) = &e {
                tracing::error!("{message}");
            }
            if let Some(message) = e.message() {
                eprintln!("error: {message}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// The command line; as the kubectl plugin (`kubectl-imagebloat`, which kubectl runs for
/// `kubectl imagebloat ARGS`), the same commands, named as kubectl users type them.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let plugin = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_stem().map(|s| s == "kubectl-imagebloat"))
        .unwrap_or(false);
    if !plugin {
        return Cli::parse();
    }
    let matches = Cli::command().bin_name("kubectl imagebloat").get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Why a command stopped early. `main` prints it, once, and exits with its code.
#[derive(Debug)]
enum Error {
    /// The command could not do its job: a bad flag or file, an image that could not be
    /// analyzed. Exit status 2, as `scan --help` documents.
    Failed(String),
    /// The operator ran and then failed. Exit status 1.
    OperatorStopped(String),
    /// Standard output went away (a closed pipe): exit status 2, and nothing left to say.
    StdoutClosed,
}

impl Error {
    fn exit_code(&self) -> u8 {
        match self {
            Error::Failed(_) | Error::StdoutClosed => 2,
            Error::OperatorStopped(_) => 1,
        }
    }

    fn message(&self) -> Option<&str> {
        match self {
            Error::Failed(m) | Error::OperatorStopped(m) => Some(m),
            Error::StdoutClosed => None,
        }
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Failed(message)
    }
}

fn run(cli: Cli) -> Result<ExitCode, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    match cli.command {
        Command::Scan(args) => runtime.block_on(run_scan(args)),
        Command::Run(args) => runtime.block_on(run_operator(args)),
        Command::Top(args) => runtime.block_on(run_top(args)),
        Command::Crd => {
            print!("{}", imagebloat::report::crd::crd_yaml());
            print!("---\n{}", imagebloat::report::cluster::cluster_crd_yaml());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Splits `PATH[:TAG]`, so paths with colons still work when no tag is given. The tag may be a
/// whole name (`localhost/app:1`, as podman records it) when the path before it exists;
/// otherwise it is a plain name (no `/`).
fn split_tag(spec: &str) -> (PathBuf, Option<String>) {
    if Path::new(spec).exists() {
        return (PathBuf::from(spec), None);
    }
    for (i, _) in spec.match_indices(':') {
        let (path, tag) = (&spec[..i], &spec[i + 1..]);
        if !tag.is_empty() && Path::new(path).exists() {
            return (PathBuf::from(path), Some(tag.to_string()));
        }
    }
    match spec.rsplit_once(':') {
        Some((path, tag)) if !tag.is_empty() && !tag.contains('/') => {
            (PathBuf::from(path), Some(tag.to_string()))
        }
        _ => (PathBuf::from(spec), None),
    }
}

fn load_keyring(explicit: Option<&Path>) -> Result<Keyring, String> {
    if let Some(path) = explicit {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("--registry-config {}: {e}", path.display()))?;
        return Keyring::from_docker_config(&bytes)
            .map_err(|e| format!("--registry-config {}: {e}", path.display()));
    }
    let implicit = std::env::var_os("DOCKER_CONFIG")
        .map(|d| PathBuf::from(d).join("config.json"))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")));
    match implicit {
        Some(path) if path.exists() => match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| Keyring::from_docker_config(&b).map_err(|e| e.to_string()))
        {
            Ok(k) => Ok(k),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                Ok(Keyring::default())
            }
        },
        _ => Ok(Keyring::default()),
    }
}

/// How to reach registries, from the flags `scan` and `run` share.
fn registry_options(args: &RegistryArgs) -> Result<RegistryOptions, String> {
    let mut ca_pem = Vec::new();
    for f in &args.ca_file {
        ca_pem.push(std::fs::read(f).map_err(|e| format!("--ca-file {}: {e}", f.display()))?);
    }
    let timeout = Duration::from_secs(args.timeout.max(1));
    Ok(RegistryOptions {
        insecure: args.insecure_registry.iter().cloned().collect(),
        ca_pem,
        connect_timeout: timeout,
        read_timeout: timeout,
        max_retries: args.retries,
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        blob_stall_window: Duration::from_secs(args.blob_stall_timeout.max(1)),
        ..Default::default()
    })
}

fn source_for(args: &ScanArgs) -> Result<ImageSource, String> {
    if let Some(spec) = &args.oci_layout {
        let (dir, tag) = split_tag(spec);
        return Ok(ImageSource::Layout { dir, tag });
    }
    if let Some(spec) = &args.archive {
        let (file, tag) = split_tag(spec);
        return Ok(ImageSource::Archive { file, tag });
    }
    let name = args.image.as_deref().expect("clap requires REF");
    let reference: Reference = name
        .parse()
        .map_err(|e| format!("{name}: not a valid image reference: {e}"))?;
    let keyring = load_keyring(args.registry.registry_config.as_deref())?;
    let credentials = keyring
        .lookup(reference.registry(), reference.repository())
        .into_iter()
        .cloned()
        .collect();
    Ok(ImageSource::Registry {
        registry: Registry::new(registry_options(&args.registry)?).map_err(|e| e.to_string())?,
        reference,
        credentials,
    })
}

async fn run_scan(args: ScanArgs) -> Result<ExitCode, Error> {
    let source = source_for(&args)?;
    let interactive = std::io::stderr().is_terminal();
    let options = ScanOptions {
        platform: args.registry.platform.clone(),
        limits: args.limits.limits(),
        layer_concurrency: args.layer_concurrency,
        progress: interactive.then(progress_line),
        lazy: !args.registry.no_lazy,
    };
    let result = scan::scan(&source, &options, &LayerCache::default()).await;
    if interactive {
        eprint!("\r\x1b[2K");
    }
    let findings = ImageFindings::new(&result.map_err(|e| e.to_string())?);
    print_findings(&findings, args.output)?;
    let failures = gate(&args, &findings);
    for f in &failures {
        eprintln!("FAIL: {f}");
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Progress on one terminal line, rewritten as layers finish.
fn progress_line() -> Arc<dyn Fn(scan::Progress) + Send + Sync> {
    Arc::new(|p: scan::Progress| {
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2Kanalyzing: {}/{} layers, {} of {}",
            p.layers_done,
            p.layers_total,
            format::size(p.bytes_done),
            format::size(p.bytes_total)
        );
        let _ = err.flush();
    })
}

async fn run_top(args: TopArgs) -> Result<ExitCode, Error> {
    use imagebloat::top;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the cluster of the current kubeconfig context: {e}"))?;
    let what = match &args.namespace {
        Some(ns) => format!("ImageReports in namespace {ns}"),
        None => "ClusterImageReports".to_string(),
    };
    let mut rows = top::fetch(client, args.namespace.as_deref())
        .await
        .map_err(|e| format!("cannot list {what}: {e}"))?;
    let key = match args.sort {
        TopSort::FleetReclaimable => top::SortKey::FleetReclaimable,
        TopSort::Pull => top::SortKey::Pull,
        TopSort::Growth => top::SortKey::Growth,
    };
    top::sort(&mut rows, key);
    if args.limit > 0 {
        rows.truncate(args.limit);
    }
    let text = match args.output {
        TopOutput::Table if rows.is_empty() => format!("No {what} found.\n"),
        TopOutput::Table => top::table(&rows),
        TopOutput::Json => serde_json::to_string_pretty(&rows)
            .map(|s| s + "\n")
            .map_err(|e| format!("cannot print the list: {e}"))?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|_| Error::StdoutClosed)?;
    Ok(ExitCode::SUCCESS)
}

fn print_findings(findings: &ImageFindings, output: Output) -> Result<(), Error> {
    let text = match output {
        Output::Table => Ok(table::render(findings, terminal_width())),
        Output::Json => serde_json::to_string_pretty(findings)
            .map(|s| s + "\n")
            .map_err(|e| e.to_string()),
        Output::Yaml => serde_yaml::to_string(findings).map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("cannot print the findings: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|_| Error::StdoutClosed)
}

async fn run_operator(args: RunArgs) -> Result<ExitCode, Error> {
    let config = operator_config(args)?;
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    imagebloat::operator::run(config, stop)
        .await
        .map_err(|e| Error::OperatorStopped(e.to_string()))?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn operator_config(args: RunArgs) -> Result<imagebloat::operator::Config, String> {
    let registry = registry_options(&args.registry)?;
    let mut mirrors = std::collections::BTreeMap::new();
    for m in &args.mirror {
        let (from, to) = m
            .split_once('=')
            .ok_or_else(|| format!("--mirror {m}: expected REGISTRY=MIRROR"))?;
        mirrors.insert(from.to_string(), to.to_string());
    }
    let identity = args
        .identity
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
    let lease = args
        .leader_elect
        .then(|| imagebloat::operator::leader::LeaseConfig {
            namespace: args
                .lease_namespace
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
            name: args.lease_name,
            identity: identity.clone(),
            timing: Default::default(),
        });
    if !(args.growth_threshold.is_finite() && args.growth_threshold >= 0.0) {
        return Err(format!(
            "--growth-threshold {}: expected a share of 0 or more (0.1 is 10%)",
            args.growth_threshold
        ));
    }
    Ok(imagebloat::operator::Config {
        namespaces: args.namespaces,
        exclude_namespaces: args.exclude_namespaces,
        metrics_addr: args.metrics_addr,
        registry,
        keyring: load_keyring(args.registry.registry_config.as_deref())?,
        mirrors,
        default_platform: args.registry.platform,
        concurrency: args.concurrency,
        per_registry: args.per_registry_concurrency,
        limits: args.limits.limits(),
        lazy: !args.registry.no_lazy,
        analysis_timeout: Duration::from_secs(args.analysis_timeout.max(1)),
        lease,
        identity,
        retry: Duration::from_secs(args.retry_seconds.max(1)),
        layer_cache_bytes: usize::try_from(args.layer_cache.as_u64()).unwrap_or(usize::MAX),
        fleet: imagebloat::operator::fleet::FleetConfig {
            interval: Duration::from_secs(args.fleet_interval_seconds.max(1)),
            grace: Duration::from_secs(args.cluster_report_grace_seconds),
        },
        growth_threshold: args.growth_threshold,
    })
}

/// The CI thresholds that fail, each named with the flag that set it.
fn gate(args: &ScanArgs, f: &ImageFindings) -> Vec<String> {
    let a = &f.analysis.totals;
    let mut failures = Vec::new();
    let over = |name: &str, flag: &str, value: u64, limit: Option<ByteSize>| {
        limit.filter(|l| value > l.as_u64()).map(|l| {
            format!(
                "{name} {} ({value} bytes) exceeds {flag} {} ({} bytes)",
                format::size(value),
                format::size(l.as_u64()),
                l.as_u64()
            )
        })
    };
    failures.extend(over(
        "pullBytes",
        "--max-pull-bytes",
        a.pull_bytes,
        args.max_pull_bytes,
    ));
    failures.extend(over(
        "wastedBytes",
        "--max-wasted-bytes",
        a.wasted_bytes,
        args.max_wasted_bytes,
    ));
    failures.extend(over(
        "reclaimableBytes",
        "--max-reclaimable-bytes",
        a.reclaimable_bytes,
        args.max_reclaimable_bytes,
    ));
    if let Some(min) = args.min_efficiency
        && a.efficiency < min
    {
        failures.push(format!(
            "efficiency {:.4} is below --min-efficiency {min:.4}",
            a.efficiency
        ));
    }
    failures
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120)
}

//! The operator against hostile tenants and real faults, on the real test bed: each case starts
//! its own operator, puts one hostile workload (or fault) into its own namespace, and proves
//! what the workload's report and Events say, that another workload's report still arrives
//! within [`OTHERS_BOUND`], and that the operator's peak RSS stays under the chart's memory limit.
//!
//! Registry faults come from a fault proxy of the test's own (`scripts/fault_proxy.py`) in front
//! of the plain registry; hostile layers are generated streaming (the tar is never in memory).
//! Each case writes one JSON line to `$IMAGEBLOAT_TESTENV_DIR/hostile-results.jsonl`;
//! `scripts/hostile-table.sh` renders them as the README's table.

mod common;
#[allow(dead_code)]
#[path = "operator/fixture.rs"]
mod fixture;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fixture::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use imagebloat::report::crd::ImageReport;

/// The chart's defaults (charts/imagebloat/values.yaml): the memory limit the operator must stay
/// under, and the limits it runs with, which the values file sizes to fit under it.
struct ChartDefaults {
    memory_limit_kib: u64,
    flags: Vec<String>,
}

fn chart_defaults() -> &'static ChartDefaults {
    static DEFAULTS: std::sync::OnceLock<ChartDefaults> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/imagebloat/values.yaml");
        let values: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let memory = values["resources"]["limits"]["memory"].as_str().unwrap();
        let mib: u64 = memory
            .strip_suffix("Mi")
            .expect("a limit in Mi")
            .parse()
            .unwrap();
        let op = &values["operator"];
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
        ChartDefaults {
            memory_limit_kib: mib * 1024,
            flags: vec![
                format!("--concurrency={}", text(&op["concurrency"])),
                format!("--max-layer-bytes={}", text(&op["maxLayerBytes"])),
                format!("--max-layer-entries={}", text(&op["maxLayerEntries"])),
                format!("--max-layer-path-bytes={}", text(&op["maxLayerPathBytes"])),
                format!("--layer-cache={}", text(&op["layerCache"])),
            ],
        }
    })
}

/// How long another workload's report may take while a hostile one is being handled.
const OTHERS_BOUND: Duration = Duration::from_secs(30);

/// How long a hostile workload may take to get its report.
const CASE_BOUND: Duration = Duration::from_secs(150);

/// The lease duration of `imagebloat run --leader-elect` (src/main.rs).
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// One row of the matrix, written to the results file when dropped (also when the case fails).
struct Row {
    case: &'static str,
    input: String,
    sees: String,
    peak_rss_kib: Option<u64>,
    report_seconds: Option<f64>,
    others_seconds: Option<f64>,
}

impl Row {
    fn new(case: &'static str, input: &str) -> Self {
        Row {
            case,
            input: input.to_string(),
            sees: String::new(),
            peak_rss_kib: None,
            report_seconds: None,
            others_seconds: None,
        }
    }

    /// Records the operator's peak RSS and insists it is under the chart's limit.
    fn peak_rss(&mut self, op: &Operator) {
        let kib = op.peak_rss_kib();
        self.peak_rss_kib = Some(kib.max(self.peak_rss_kib.unwrap_or(0)));
        assert!(
            kib < chart_defaults().memory_limit_kib,
            "{}: peak RSS {kib} KiB is over the chart's limit",
            self.case
        );
    }
}

impl Drop for Row {
    fn drop(&mut self) {
        let line = json!({
            "case": self.case,
            "input": self.input,
            "sees": self.sees,
            "peakRssKiB": self.peak_rss_kib,
            "reportSeconds": self.report_seconds,
            "othersSeconds": self.others_seconds,
            "passed": !std::thread::panicking(),
        });
        let path = results_file();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // One write per line: cases finishing at once do not interleave.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

fn results_file() -> PathBuf {
    std::env::var_os("IMAGEBLOAT_TESTENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join("hostile-results.jsonl")
}

/// The report once it has a Ready condition (whatever its status), or None after `timeout`.
async fn settled(cluster: &Cluster, name: &str, timeout: Duration) -> Option<ImageReport> {
    let api = cluster.api::<ImageReport>();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(r)) = api.get_opt(name).await
            && r.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready"))
        {
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn tail(log: &str) -> &str {
    &log[log.len().saturating_sub(8_000)..]
}

/// `(status, reason, message)` of the Ready condition.
fn ready(r: &ImageReport) -> (String, String, String) {
    let c = r
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("a Ready condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// `text` with `image`'s references written `IMAGE` and digests cut to 12 characters.
fn readable(text: &str, image: &Pushed) -> String {
    let mut text = text
        .replace(&image.image_id(), "IMAGE")
        .replace(&image.reference, "IMAGE");
    let mut from = 0;
    while let Some(at) = text[from..].find("sha256:") {
        let start = from + at + "sha256:".len();
        let end = (start + 64).min(text.len());
        if text[start..end].bytes().all(|b| b.is_ascii_hexdigit()) && end - start == 64 {
            text.replace_range(start + 5..end, "…");
        }
        from = start;
    }
    text
}

/// What `kubectl get imagereport` and `kubectl describe` tell the owner of `image`'s workload.
async fn what_the_user_sees(
    cluster: &Cluster,
    workload: &str,
    r: &ImageReport,
    image: &Pushed,
) -> String {
    let (status, reason, message) = ready(r);
    let message = readable(&message, image);
    let event = if status == "True" {
        "Analyzed"
    } else {
        "AnalysisFailed"
    };
    let note = readable(&cluster.event_note(workload, event).await, image);
    format!(
        "Ready={status} {reason}: {}; Event {event}: {}",
        shorten(&message, 200),
        shorten(&note, 120)
    )
}

/// A benign workload created now gets its Ready report within [`OTHERS_BOUND`]; its latency.
async fn others_keep_getting_reports(cluster: &Cluster, op: &Operator, name: &str) -> f64 {
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized(name, 1_234)]).build();
    let image = push(&format!("e2e-benign-{name}"), &image).await;
    let started = Instant::now();
    cluster.deploy_running(name, &image).await;
    let r = cluster
        .report_within(&format!("deployment-{name}"), op, OTHERS_BOUND)
        .await;
    assert_eq!(r.status.unwrap().summary.unwrap().totals.size_bytes, 1_234);
    started.elapsed().as_secs_f64()
}

/// The hostile workload `hostile` running `image` beside a benign one, under an operator with
/// `flags`: its settled report, with the row filled in.
async fn hostile_workload(
    row: &mut Row,
    cluster: &Cluster,
    op: &Operator,
    image: &Pushed,
) -> ImageReport {
    hostile_workload_within(row, cluster, op, image, CASE_BOUND).await
}

async fn hostile_workload_within(
    row: &mut Row,
    cluster: &Cluster,
    op: &Operator,
    image: &Pushed,
    bound: Duration,
) -> ImageReport {
    let started = Instant::now();
    cluster.deploy_running("hostile", image).await;
    row.others_seconds = Some(others_keep_getting_reports(cluster, op, "benign").await);
    let report = settled(cluster, "deployment-hostile", bound).await;
    let Some(report) = report else {
        row.peak_rss_kib = Some(op.peak_rss_kib());
        row.sees = format!("no report within {bound:?}");
        panic!(
            "{}/deployment-hostile has no Ready condition within {bound:?}; operator log:\n{}",
            cluster.ns,
            tail(&op.log())
        );
    };
    row.report_seconds = Some(started.elapsed().as_secs_f64());
    row.sees = what_the_user_sees(cluster, "hostile", &report, image).await;
    row.peak_rss(op);
    report
}

/// Asserts the report says the image was not analyzed, for `reason` (one of), with no findings.
fn refused(r: &ImageReport, reasons: &[&str], op: &Operator) {
    let (status, reason, message) = ready(r);
    assert_eq!(status, "False", "{reason}: {message}");
    assert!(
        reasons.contains(&reason.as_str()),
        "reason {reason} ({message}) not one of {reasons:?}; log:\n{}",
        tail(&op.log())
    );
    let containers = &r.status.as_ref().unwrap().containers;
    assert!(containers.iter().all(|c| c.findings.is_none()));
}

/// A small image pushed to the plain registry, its layer's digest and compressed size.
async fn small_image(name: &str) -> (Pushed, String, u64) {
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized("app/bin", 50_000)]).build();
    let layer = image.blobs[0].0.clone();
    let size = image.layer_sizes[0];
    (push(name, &image).await, layer, size)
}

/// `scripts/fault_proxy.py` of the test's own in front of the plain registry, with `faults`
/// armed; stopped when dropped.
struct FaultProxy {
    _process: Process,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    fn start(tls: bool, faults: &[Value]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("python3");
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/fault_proxy.py"
        ))
        .args([
            "--listen-port",
            &port.to_string(),
            "--upstream",
            &registry(),
        ])
        .arg("--log")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if tls {
            let tls_dir = PathBuf::from(env("IMAGEBLOAT_TESTENV_DIR")).join("tls");
            cmd.arg("--tls-cert")
                .arg(tls_dir.join("server.pem"))
                .arg("--tls-key")
                .arg(tls_dir.join("server.key"));
        }
        for f in faults {
            cmd.args(["--arm", &f.to_string()]);
        }
        let process = Process(cmd.spawn().expect("python3 scripts/fault_proxy.py"));
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "fault proxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        FaultProxy {
            _process: process,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The image as pulled through this proxy.
    fn serving(&self, image: &Pushed) -> Pushed {
        Pushed {
            reference: image.reference.replacen(&registry(), &self.addr, 1),
            digest: image.digest.clone(),
        }
    }

    /// Its access-log lines containing `needle` (e.g. `"GET /token`).
    fn requests(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// A fault the proxy answers itself, for every matching request.
fn respond(path_contains: &str, status: u16, headers: Value, body_bytes: Option<u64>) -> Value {
    json!({"mode": "respond", "pathContains": path_contains, "count": 1_000_000, "method": "GET",
           "status": status, "headers": headers, "bodyBytes": body_bytes})
}

const GIB: u64 = 1 << 30;

#[tokio::test]
async fn a_slow_loris_blob_fails_the_workload_not_the_operator() {
    let mut row = Row::new("slow-loris blob", "a layer blob sent 1 byte every 20 s");
    let (image, layer, size) = small_image("e2e-loris").await;
    let mut fault = respond(
        &format!("/blobs/{layer}"),
        200,
        json!({"Content-Type": "application/octet-stream"}),
        Some(size),
    );
    fault["trickleSeconds"] = json!(20);
    let proxy = FaultProxy::start(false, &[fault]);
    let cluster = Cluster::new("e2e-loris").await;
    // The default silence timeout (30 s) never fires: the blob progress rule must.
    let op = cluster.start_operator(&["--insecure-registry", &proxy.addr]);
    let r = hostile_workload(&mut row, &cluster, &op, &proxy.serving(&image)).await;
    refused(&r, &["RegistryTooSlow", "BlobReadFailed"], &op);
}

#[tokio::test]
async fn an_endless_manifest_is_refused_at_its_cap() {
    let mut row = Row::new("endless manifest", "a manifest response that never ends");
    let (image, _, _) = small_image("e2e-endless").await;
    let proxy = FaultProxy::start(
        false,
        &[respond(
            "/manifests/",
            200,
            json!({"Content-Type": "application/vnd.oci.image.manifest.v1+json"}),
            None,
        )],
    );
    let cluster = Cluster::new("e2e-endless").await;
    let op = cluster.start_operator(&["--insecure-registry", &proxy.addr]);
    let r = hostile_workload(&mut row, &cluster, &op, &proxy.serving(&image)).await;
    refused(&r, &["InvalidManifest"], &op);
}

#[tokio::test]
async fn a_1_gib_error_body_is_read_only_up_to_its_cap() {
    let mut row = Row::new(
        "1 GiB error body",
        "a manifest request answered 500 with 1 GiB",
    );
    let (image, _, _) = small_image("e2e-errbody").await;
    let proxy = FaultProxy::start(
        false,
        &[respond(
            "/manifests/",
            500,
            json!({"Content-Type": "application/json"}),
            Some(GIB),
        )],
    );
    let cluster = Cluster::new("e2e-errbody").await;
    let op = cluster.start_operator(&["--insecure-registry", &proxy.addr, "--retries", "1"]);
    let r = hostile_workload(&mut row, &cluster, &op, &proxy.serving(&image)).await;
    refused(&r, &["RegistryError", "RegistryRefused"], &op);
}

/// A bearer challenge on every registry request, with the token service at `realm`.
fn challenge(realm: &str) -> Value {
    json!({"mode": "respond", "pathContains": "/v2/", "count": 1_000_000, "status": 401,
           "headers": {"WWW-Authenticate":
               format!("Bearer realm=\"{realm}\",service=\"hostile\""),
               "Content-Type": "application/json"},
           "bodyBytes": 0})
}

#[tokio::test]
async fn a_huge_token_response_is_refused_at_its_cap() {
    let mut row = Row::new("huge token response", "a token service answering 1 GiB");
    let (image, _, _) = small_image("e2e-token").await;
    let proxy = FaultProxy::start(
        false,
        &[
            respond(
                "/token",
                200,
                json!({"Content-Type": "application/json"}),
                Some(GIB),
            ),
            challenge("http://{proxy}/token"),
        ],
    );
    let cluster = Cluster::new("e2e-token").await;
    let op = cluster.start_operator(&["--insecure-registry", &proxy.addr]);
    let r = hostile_workload(&mut row, &cluster, &op, &proxy.serving(&image)).await;
    refused(&r, &["Unauthorized"], &op);
    assert!(proxy.requests("GET /token") > 0, "the token was asked for");
}

#[tokio::test]
async fn a_redirect_loop_ends_after_a_bounded_number_of_hops() {
    let mut row = Row::new("redirect loop", "a manifest redirecting to itself");
    let (image, _, _) = small_image("e2e-loop").await;
    let proxy = FaultProxy::start(
        false,
        &[respond(
            "/manifests/",
            307,
            json!({"Location": "http://{proxy}{path}"}),
            Some(0),
        )],
    );
    let cluster = Cluster::new("e2e-loop").await;
    let op = cluster.start_operator(&["--insecure-registry", &proxy.addr]);
    let r = hostile_workload(&mut row, &cluster, &op, &proxy.serving(&image)).await;
    refused(
        &r,
        &["RegistryRefused", "RegistryUnreachable", "RegistryError"],
        &op,
    );
    let hops = proxy.requests("GET /v2/");
    assert!(hops < 200, "{hops} requests: the loop is cut short");
}

#[tokio::test]
async fn a_redirect_from_https_to_plain_http_is_not_followed() {
    let mut row = Row::new(
        "redirect to plain HTTP",
        "an HTTPS registry redirecting a blob to http://",
    );
    let (image, layer, _) = small_image("e2e-downgrade").await;
    let proxy = FaultProxy::start(
        true,
        &[respond(
            &format!("/blobs/{layer}"),
            307,
            json!({"Location": format!("http://{}{{path}}", registry())}),
            Some(0),
        )],
    );
    let cluster = Cluster::new("e2e-downgrade").await;
    let op = cluster.start_operator(&["--ca-file", &env("IMAGEBLOAT_TEST_CA_FILE")]);
    let r = hostile_workload(&mut row, &cluster, &op, &proxy.serving(&image)).await;
    refused(&r, &["RegistryRefused", "RegistryError"], &op);
    assert!(
        registry_log(&format!("\"GET /v2/{}/blobs/{layer}", repo_path(&image))).is_empty(),
        "the plain-HTTP location was never fetched"
    );
}

/// The repository path of an image pushed to the plain registry.
fn repo_path(image: &Pushed) -> &str {
    let path = image.reference.split_once('/').unwrap().1;
    path.rsplit_once(':').unwrap().0
}

#[tokio::test]
async fn a_token_realm_on_plain_http_is_not_contacted() {
    let mut row = Row::new(
        "realm on plain HTTP",
        "an HTTPS registry whose token realm is http://",
    );
    let (image, _, _) = small_image("e2e-realm").await;
    let realm = FaultProxy::start(false, &[]);
    let proxy = FaultProxy::start(true, &[challenge(&format!("http://{}/token", realm.addr))]);
    let cluster = Cluster::new("e2e-realm").await;
    let op = cluster.start_operator(&["--ca-file", &env("IMAGEBLOAT_TEST_CA_FILE")]);
    let r = hostile_workload(&mut row, &cluster, &op, &proxy.serving(&image)).await;
    refused(&r, &["Unauthorized", "RegistryRefused"], &op);
    assert_eq!(realm.requests("/token"), 0, "no request to the plain realm");
}

/// A writer that hashes what passes through (the layer's diff ID).
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A one-layer image whose tar `write_tar` streams through the compressor: only the compressed
/// blob is held in memory.
fn streamed_image(
    compression: Compression,
    write_tar: impl FnOnce(&mut tar::Builder<&mut dyn Write>) -> io::Result<()>,
) -> Image {
    let (blob, diff_id) = match compression {
        Compression::Zstd => {
            let encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            let mut hashing = Hashing {
                inner: encoder,
                hasher: Sha256::new(),
            };
            tar_into(&mut hashing, write_tar);
            let diff_id = format!("sha256:{:x}", hashing.hasher.finalize());
            (hashing.inner.finish().unwrap(), diff_id)
        }
        _ => {
            let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let mut hashing = Hashing {
                inner: encoder,
                hasher: Sha256::new(),
            };
            tar_into(&mut hashing, write_tar);
            let diff_id = format!("sha256:{:x}", hashing.hasher.finalize());
            (hashing.inner.finish().unwrap(), diff_id)
        }
    };
    let media = layer_media_type(Flavor::Oci, compression);
    let digest = sha256(&blob);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "ADD hostile.tar /"}],
    }))
    .unwrap();
    let config_digest = sha256(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": media, "digest": digest, "size": blob.len()}],
    });
    Image {
        layer_sizes: vec![blob.len() as u64],
        blobs: vec![(digest, blob), (config_digest, config)],
        manifest: serde_json::to_vec(&manifest).unwrap(),
        manifest_media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        platform: imagebloat::testkit::Platform::linux("amd64", None),
    }
}

fn tar_into(
    out: &mut dyn Write,
    write_tar: impl FnOnce(&mut tar::Builder<&mut dyn Write>) -> io::Result<()>,
) {
    let mut builder = tar::Builder::new(out);
    write_tar(&mut builder).unwrap();
    builder.finish().unwrap();
}

fn file_header(path: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// One file of `bytes` zeros: a layer that decompresses about a thousand times its size.
fn zeros(builder: &mut tar::Builder<&mut dyn Write>, bytes: u64) -> io::Result<()> {
    builder.append(&file_header("zeros", bytes), io::repeat(0).take(bytes))
}

/// Runs a hostile layer's case: pushes `image` to the plain registry, runs it beside a benign
/// workload under the operator with the chart's default limits.
async fn hostile_layer(row: &mut Row, prefix: &str, image: Image, bound: Duration) -> ImageReport {
    let image = push(prefix, &image).await;
    let cluster = Cluster::new(prefix).await;
    let flags: Vec<&str> = chart_defaults().flags.iter().map(String::as_str).collect();
    let op = cluster.start_operator(&flags);
    hostile_workload_within(row, &cluster, &op, &image, bound).await
}

/// A bomb case: a layer of `compression` that inflates to 2 GiB of zeros.
async fn bomb(case: &'static str, what: &'static str, prefix: &str, compression: Compression) {
    let mut row = Row::new(case, what);
    let image =
        tokio::task::spawn_blocking(move || streamed_image(compression, |b| zeros(b, 2 * GIB)))
            .await
            .unwrap();
    hostile_layer(&mut row, prefix, image, CASE_BOUND).await;
}

#[tokio::test]
async fn a_gzip_bomb_is_analyzed_or_refused_within_the_memory_limit() {
    let what = "a 20 MB gzip layer that inflates to 2 GiB of zeros";
    bomb("gzip bomb", what, "e2e-gzbomb", Compression::Gzip).await;
}

#[tokio::test]
async fn a_zstd_bomb_is_analyzed_or_refused_within_the_memory_limit() {
    let what = "a 66 kB zstd layer that inflates to 2 GiB of zeros";
    bomb("zstd bomb", what, "e2e-zstdbomb", Compression::Zstd).await;
}

#[tokio::test]
async fn a_layer_of_five_million_entries_stays_within_the_memory_limit() {
    let mut row = Row::new("5M-entry layer", "a layer of 5,000,000 empty files");
    let image = tokio::task::spawn_blocking(|| {
        streamed_image(Compression::Zstd, |b| {
            for i in 0..5_000_000u32 {
                b.append(&file_header(&format!("d{}/f{i}", i % 1000), 0), io::empty())?;
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    // The chart's entry cap refuses the layer long before its end.
    let r = hostile_layer(&mut row, "e2e-entries", image, CASE_BOUND).await;
    let (status, reason, message) = ready(&r);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidLayer"),
        "{message}"
    );
    assert!(message.contains("--max-layer-entries"), "{message}");
}

#[tokio::test]
async fn a_100_mb_long_name_is_refused_before_it_is_buffered() {
    let mut row = Row::new("100 MB long name", "a GNU long-name record of 100 MB");
    const LEN: u64 = 100_000_000;
    let image = tokio::task::spawn_blocking(|| {
        streamed_image(Compression::Gzip, |b| {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::GNULongName);
            h.set_size(LEN);
            h.set_cksum();
            b.append(&h, io::repeat(b'a').take(LEN))?;
            b.append(&file_header("a", 5), &b"hello"[..])
        })
    })
    .await
    .unwrap();
    let r = hostile_layer(&mut row, "e2e-longname", image, CASE_BOUND).await;
    let (status, _, _) = ready(&r);
    assert_eq!(status, "False", "the layer is refused, not analyzed");
}

/// Blob GETs the basic-auth registry (B) served for `repository`, from its log.
fn private_blob_gets(repository: &str) -> usize {
    let log = PathBuf::from(env("IMAGEBLOAT_TESTENV_DIR")).join("log/registry-b.log");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"GET /v2/{repository}/blobs/")) && l.contains("\" 200 "))
        .count()
}

/// An image pushed to the basic-auth registry (B) as `private/NAME-PID:1`, and its repository.
async fn private_image(name: &str) -> (Pushed, String) {
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_AUTH");
    let image =
        ImageBuilder::new(vec![Layer::new("ADD secret-app").sized("secret", 4_242)]).build();
    let repository = format!("private/{name}-{}", std::process::id());
    let reference = format!("{reg}/{repository}:1");
    let digest = Pusher::basic_auth().push(&image, &reference).await;
    (Pushed { reference, digest }, repository)
}

#[tokio::test]
async fn a_namespace_without_the_pull_secret_gets_unauthorized_for_a_private_digest() {
    let mut row = Row::new(
        "private digest from another namespace",
        "a Pod in namespace B naming namespace A's private digest, without a secret",
    );
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_AUTH");
    let (image, repository) = private_image("tenant").await;
    let owner = Cluster::new("e2e-tenant-a").await;
    let intruder = Cluster::new("e2e-tenant-b").await;
    owner
        .give_the_default_service_account_a_pull_secret(
            &reg,
            &env("IMAGEBLOAT_TEST_REGISTRY_USER"),
            &env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD"),
        )
        .await;
    let op = owner.start_operator(&["--insecure-registry", &reg, "--namespaces", &intruder.ns]);
    owner.deploy_running("owner", &image).await;
    let mine = owner.report("deployment-owner", &op).await;
    assert_eq!(
        mine.status.unwrap().summary.unwrap().totals.size_bytes,
        4_242
    );
    let downloads = private_blob_gets(&repository);

    let r = hostile_workload(&mut row, &intruder, &op, &image).await;
    refused(&r, &["Unauthorized"], &op);
    let text = serde_json::to_string(&r.status).unwrap();
    assert!(!text.contains("secret-app"), "no build history: {text}");
    assert_eq!(
        private_blob_gets(&repository),
        downloads,
        "no blob downloaded for namespace B"
    );
}

#[tokio::test]
async fn a_malformed_pull_secret_is_named_and_its_value_is_in_no_log_line() {
    let mut row = Row::new(
        "malformed pull secret",
        "a dockerconfigjson whose auths entry is the credentials as a string",
    );
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_AUTH");
    let password = env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD");
    let value = format!("{}:{password}", env("IMAGEBLOAT_TEST_REGISTRY_USER"));
    let (image, _) = private_image("malformed").await;
    let cluster = Cluster::new("e2e-badsecret").await;
    cluster
        .api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "broken"},
                "type": "kubernetes.io/dockerconfigjson",
                "stringData": {".dockerconfigjson": json!({"auths": {&reg: value}}).to_string()}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    cluster
        .api::<ServiceAccount>()
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"imagePullSecrets": [{"name": "broken"}]})),
        )
        .await
        .unwrap();
    let op = cluster.start_operator(&["--insecure-registry", &reg]);
    let r = hostile_workload(&mut row, &cluster, &op, &image).await;
    refused(&r, &["Unauthorized"], &op);
    let log = op.log();
    assert!(!log.contains(&password), "the secret's value is in the log");
    assert!(
        !serde_json::to_string(&r).unwrap().contains(&password),
        "the secret's value is in the report"
    );
    let events = cluster.api::<Event>().list(&ListParams::default()).await;
    assert!(
        !serde_json::to_string(&events.unwrap().items)
            .unwrap()
            .contains(&password)
    );
    assert!(
        log.contains("broken"),
        "the log names the Secret:\n{}",
        tail(&log)
    );
}

#[tokio::test]
async fn reports_converge_without_duplicates_when_the_api_server_is_killed_and_restarted() {
    if std::env::var("IMAGEBLOAT_TEST_KUBE_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("an existing cluster: its API server is not ours to kill");
        return;
    }
    let mut row = Row::new(
        "kube-apiserver killed and restarted",
        "SIGKILL of kube-apiserver while reports are being written",
    );
    let cluster = Cluster::with_the_control_plane_to_itself("e2e-apiserver").await;
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized("srv", 3_333)]).build();
    let image = push("e2e-apiserver", &image).await;
    let op = cluster.start_operator(&[]);
    let started = Instant::now();
    let names: Vec<String> = (0..12).map(|i| format!("svc-{i:02}")).collect();
    for name in &names[..6] {
        cluster
            .create_deployment(deployment(name, 1, &[], &[("main", &image.reference)]))
            .await;
    }
    let restart = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/kube-testenv.sh"
    ))
    .arg("restart-apiserver")
    .output()
    .expect("kube-testenv.sh restart-apiserver");
    assert!(
        restart.status.success(),
        "{}",
        String::from_utf8_lossy(&restart.stderr)
    );
    for name in &names[6..] {
        cluster
            .create_deployment(deployment(name, 1, &[], &[("main", &image.reference)]))
            .await;
    }
    for pod in cluster.pods(names.len()).await {
        cluster
            .run_pod(&pod, &[("main", image.image_id().as_str())])
            .await;
    }
    for name in &names {
        let r = cluster
            .report_within(&format!("deployment-{name}"), &op, CASE_BOUND)
            .await;
        assert_eq!(r.status.unwrap().summary.unwrap().totals.size_bytes, 3_333);
    }
    row.report_seconds = Some(started.elapsed().as_secs_f64());
    let reports = cluster
        .api::<ImageReport>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut workloads: Vec<String> = reports
        .iter()
        .map(|r| r.spec.workload.name.clone())
        .collect();
    workloads.sort();
    assert_eq!(workloads, names, "one report per workload, none lost");
    row.others_seconds = Some(others_keep_getting_reports(&cluster, &op, "after").await);
    row.sees = format!(
        "{} of {} reports Ready after the restart, none duplicated",
        names.len(),
        names.len()
    );
    row.peak_rss(&op);
}

#[tokio::test]
async fn without_rbac_on_imagereports_the_failure_is_counted_then_reports_recover() {
    let mut row = Row::new(
        "RBAC on imagereports removed then restored",
        "the operator's ClusterRole loses imagereports, then gets it back",
    );
    let cluster = Cluster::new("e2e-rbac-apps").await;
    let ChartRelease {
        name,
        namespace: release_ns,
        kubeconfig,
    } = cluster.install_chart("e2e-rbac", &[]).await;
    let op = cluster.start_operator_with_env(&[], &[("KUBECONFIG", &kubeconfig.path)]);
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized("srv", 4_444)]).build();
    let image = push("e2e-rbac", &image).await;
    cluster.deploy_running("before", &image).await;
    cluster.report("deployment-before", &op).await;

    // Revoked while the operator runs.
    let roles: Api<ClusterRole> = Api::all(cluster.client.clone());
    let granted = roles.get(&name).await.unwrap();
    let mut revoked = granted.clone();
    if let Some(rules) = &mut revoked.rules {
        rules.retain(|rule| {
            !rule
                .resources
                .iter()
                .flatten()
                .any(|r| r.starts_with("imagereports"))
        });
    }
    revoked.metadata.managed_fields = None;
    roles
        .replace(&name, &PostParams::default(), &revoked)
        .await
        .unwrap();
    let started = Instant::now();
    cluster.deploy_running("svc", &image).await;
    let failed = op
        .scrape_until(
            "a failed report write on /metrics",
            Duration::from_secs(90),
            |s| {
                series(
                    s,
                    "imagebloat_reports_written_total",
                    &[("result", "error")],
                )
                .is_some_and(|v| v > 0.0)
                    || series(
                        s,
                        "imagebloat_reconcile_errors_total",
                        &[("reason", "Forbidden")],
                    )
                    .is_some_and(|v| v > 0.0)
            },
        )
        .await;
    let readyz = reqwest::get(format!("http://{}/readyz", op.metrics))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);

    let latest = roles.get(&name).await.unwrap();
    let mut restored = granted.clone();
    restored.metadata = latest.metadata;
    restored.metadata.managed_fields = None;
    roles
        .replace(&name, &PostParams::default(), &restored)
        .await
        .unwrap();
    let r = cluster
        .report_within("deployment-svc", &op, Duration::from_secs(90))
        .await;
    row.report_seconds = Some(started.elapsed().as_secs_f64());
    assert_eq!(r.status.unwrap().summary.unwrap().totals.size_bytes, 4_444);
    row.others_seconds = Some(others_keep_getting_reports(&cluster, &op, "after").await);
    let errors = series(
        &failed,
        "imagebloat_reconcile_errors_total",
        &[("reason", "Forbidden")],
    )
    .or_else(|| {
        series(
            &failed,
            "imagebloat_reports_written_total",
            &[("result", "error")],
        )
    })
    .unwrap_or(0.0);
    row.sees = format!(
        "while revoked: {errors} Forbidden errors on /metrics, /readyz {readyz}; restored: report Ready"
    );
    row.peak_rss(&op);
    helm(&["uninstall", &name, "-n", &release_ns]);
}

/// Two replicas electing a leader on a Lease in the test's namespace, and which one holds it
/// once the first report is written.
async fn two_replicas(cluster: &Cluster) -> (Operator, Operator, Pushed) {
    let image = ImageBuilder::new(vec![Layer::new("ADD").sized("a", 5_555)]).build();
    let image = push("e2e-failover", &image).await;
    let lease = ["--leader-elect", "--lease-namespace", cluster.ns.as_str()];
    let a = cluster.start_operator(&[&lease[..], &["--identity", "replica-a"]].concat());
    let b = cluster.start_operator(&[&lease[..], &["--identity", "replica-b"]].concat());
    cluster.deploy_running("first", &image).await;
    cluster.report("deployment-first", &a).await;
    let holder = holder(cluster).await;
    if holder == "replica-a" {
        (a, b, image)
    } else {
        (b, a, image)
    }
}

async fn holder(cluster: &Cluster) -> String {
    cluster
        .api::<Lease>()
        .get("imagebloat-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap_or_default()
}

async fn writes(op: &Operator) -> f64 {
    op.gauge("imagebloat_reports_written_total", &[("result", "success")])
        .await
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_killed_leader_is_replaced_by_a_standby_within_the_lease_duration() {
    let mut row = Row::new("leader SIGKILLed", "SIGKILL of the Lease holder");
    let cluster = Cluster::new("e2e-kill").await;
    let (leader, standby, image) = two_replicas(&cluster).await;
    leader.signal("KILL");
    let killed = Instant::now();
    cluster.deploy_running("second", &image).await;
    let bound = LEASE_DURATION + Duration::from_secs(5);
    cluster
        .report_within(
            "deployment-second",
            &standby,
            bound.saturating_sub(killed.elapsed()),
        )
        .await;
    let took = killed.elapsed();
    row.report_seconds = Some(took.as_secs_f64());
    assert!(writes(&standby).await > 0.0, "the standby wrote it");
    row.others_seconds = Some(others_keep_getting_reports(&cluster, &standby, "after").await);
    row.sees = format!(
        "the standby holds the Lease and writes {:.1} s after the kill",
        took.as_secs_f64()
    );
    row.peak_rss(&standby);
}

#[tokio::test]
async fn a_stopped_leader_writes_nothing_once_the_standby_has_taken_over() {
    let mut row = Row::new(
        "leader SIGSTOPped",
        "SIGSTOP of the Lease holder, SIGCONT after the take-over",
    );
    let cluster = Cluster::new("e2e-stop").await;
    let (leader, standby, image) = two_replicas(&cluster).await;
    let standby_name = if holder(&cluster).await == "replica-a" {
        "replica-b"
    } else {
        "replica-a"
    };
    let before = writes(&leader).await;
    leader.signal("STOP");
    let stopped = Instant::now();
    cluster.deploy_running("second", &image).await;
    let bound = LEASE_DURATION + Duration::from_secs(5);
    cluster
        .report_within(
            "deployment-second",
            &standby,
            bound.saturating_sub(stopped.elapsed()),
        )
        .await;
    let took = stopped.elapsed();
    assert_eq!(holder(&cluster).await, standby_name);

    // Woken up long after its renew deadline, the old leader must not write before it has
    // seen that it lost the Lease.
    leader.signal("CONT");
    cluster.deploy_running("third", &image).await;
    cluster.report("deployment-third", &standby).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = leader.scrape().await;
    let old_writes = series(
        &after,
        "imagebloat_reports_written_total",
        &[("result", "success")],
    );
    assert!(
        old_writes.is_none_or(|w| w == before),
        "the stopped leader wrote after it was woken: {before} -> {old_writes:?}"
    );
    let fields: Vec<String> = cluster
        .api::<ImageReport>()
        .get("deployment-third")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.manager.unwrap_or_default())
        .collect();
    row.report_seconds = Some(took.as_secs_f64());
    row.others_seconds = Some(others_keep_getting_reports(&cluster, &standby, "after").await);
    row.sees = format!(
        "the standby takes over in {:.1} s; the woken leader writes nothing ({}); field managers {fields:?}",
        took.as_secs_f64(),
        if old_writes.is_none() {
            "it exited"
        } else {
            "its write count is unchanged"
        }
    );
    row.peak_rss(&standby);
}

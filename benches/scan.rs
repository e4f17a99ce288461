//! Scan throughput and memory against the cost of decompression alone (issue #2, item 7).
//!
//!     cargo bench --bench scan                 # every image
//!     cargo bench --bench scan -- big          # only images whose name contains "big"
//!     scripts/bench.sh                         # starts the test env, builds, runs this, stops it
//!
//! For each image it measures, with warm page cache:
//!   * decompress-only: every layer blob read from the OCI layout and inflated with
//!     `flate2::read::MultiGzDecoder` (zlib-rs, runtime SIMD detection, as the crate is
//!     configured) into a sink; one thread, layers in order; and two threads, two layers at once;
//!   * `imagebloat scan --oci-layout DIR:TAG --output json` (the real release binary, as a child
//!     process): wall time and the child's peak RSS (`ru_maxrss` from `wait4` for that child);
//!   * the same scan through a registry (`--insecure-registry`), when `IMAGEBLOAT_TEST_REGISTRY`
//!     is set (`source "$(scripts/testenv.sh env)"`): the image is pushed with skopeo first.
//!
//!   * the same layout scan on one core (`taskset -c 0`), for the one-core ratio next to the
//!     two-core one;
//!   * `lazy`: the realistic image converted to each lazy-pull format (scripts/lazy-images.sh:
//!     `IMAGEBLOAT_TEST_LAZY_LAYOUT` or the cache), pushed with its digests kept, scanned from the
//!     registry on the table-of-contents path and with `--no-lazy`: layer bytes fetched (the
//!     scan's `downloadedBytes`) and wall time of each. Targets: < 2% of the layer bytes fetched,
//!     at least 20x faster. The same again through the fault proxy (`IMAGEBLOAT_TEST_FAULT_PROXY`)
//!     emulating two links (`LAZY_LINKS`): on loopback a download costs almost nothing.
//!
//! Each measurement is the median of `IMAGEBLOAT_BENCH_REPEATS` runs (default 3). Targets:
//! scan / decompress-only (1 thread) <= 1.25, peak RSS <= 100 MiB. This is a benchmark: it
//! reports MISS, it never fails because of a number (only when a scan itself fails).
//!
//! Images:
//!   * `realistic`: the Debian image of scripts/realistic-image.sh, from
//!     `IMAGEBLOAT_TEST_DEBIAN_LAYOUT` (DIR:TAG) or the cache
//!     `${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-testenv/realistic-v1:bookworm-changeset`;
//!     skipped, with a message, when absent;
//!   * `big`: a generated image of about `IMAGEBLOAT_BENCH_BIG_MIB` MiB uncompressed (default
//!     1024): four gzip layers, ~40 000 small files plus large ones, text-like, binary-like and
//!     incompressible content, then deletions, directory whiteouts, an opaque directory and
//!     overwrites. Written with `imagebloat::testkit`, streamed to disk, once
//!     (deterministically) into `${XDG_CACHE_HOME:-$HOME/.cache}/imagebloat-bench/big-v2-<MiB>m`
//!     and reused.
//!
//! Other knobs: `IMAGEBLOAT_BENCH_BIN` (the imagebloat binary; default: `imagebloat` beside this
//! bench's target directory, i.e. `target/release/imagebloat`; build it with
//! `cargo build --release` first).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use imagebloat::testkit::{
    Compression, Content, ImageBuilder, Kind, LayerBlob, OciLayout, Rng, compress,
};
use serde_json::{Value, json};

const RATIO_TARGET: f64 = 1.25;
/// The table-of-contents path: at most this share of the layer bytes fetched, at least this
/// many times faster than the full read.
const LAZY_FETCH_TARGET: f64 = 0.02;
const LAZY_SPEEDUP_TARGET: f64 = 20.0;
/// Links the lazy bench emulates through the fault proxy (`POST /_link`): label, bytes per
/// second shared by every response, milliseconds of round trip before each request.
const LAZY_LINKS: &[(&str, u64, u64)] = &[
    ("1 Gbit/s, 1 ms round trip", 125_000_000, 1),
    ("100 Mbit/s, 10 ms round trip", 12_500_000, 10),
];
/// The realistic image in each lazy-pull format (tags of scripts/lazy-images.sh's layout).
const LAZY_TAGS: &[&str] = &[
    "debian-estargz",
    "debian-zstd-chunked-ctr",
    "debian-zstd-chunked",
];
const RSS_TARGET_MIB: f64 = 100.0;
/// Bump when the generated image's recipe changes (the cache directory is named after it).
const BIG_RECIPE_VERSION: u32 = 2;
/// The generated image's timestamps: entries' mtime, the config's and the history's `created`.
const MTIME: u64 = 1_717_171_717;
const CREATED: &str = "2024-05-31T16:08:37Z";
const BIG_TAG: &str = "big";
const REALISTIC_TAG: &str = "bookworm-changeset";
const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let repeats: usize = env_parse("IMAGEBLOAT_BENCH_REPEATS").unwrap_or(3).max(1);
    let big_mib: u64 = env_parse("IMAGEBLOAT_BENCH_BIG_MIB")
        .unwrap_or(1024)
        .max(16);

    let bin = match imagebloat_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench scan: {e}");
            std::process::exit(2);
        }
    };
    let registry = std::env::var("IMAGEBLOAT_TEST_REGISTRY")
        .ok()
        .filter(|r| !r.is_empty());

    println!("imagebloat scan benchmark");
    println!("  binary:   {}", bin.display());
    println!(
        "  machine:  {} CPUs, load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!("  repeats:  {repeats} (median reported)");
    println!(
        "  sha-256:  sha2 0.10, runtime-detected SHA extensions; this CPU {} them (/proc/cpuinfo sha_ni)",
        if sha_ni() { "has" } else { "does NOT have" }
    );
    match &registry {
        Some(r) => println!("  registry: {r} (IMAGEBLOAT_TEST_REGISTRY)"),
        None => println!(
            "  registry: none (IMAGEBLOAT_TEST_REGISTRY unset: source \"$(scripts/testenv.sh env)\" to add registry scans)"
        ),
    }
    println!();

    let mut images = Vec::new();
    if wanted("realistic") {
        match realistic_layout() {
            Some(img) => images.push(img),
            None => println!(
                "realistic: SKIPPED: no IMAGEBLOAT_TEST_DEBIAN_LAYOUT and no cached layout at {}; \
                 run `scripts/testenv.sh up && scripts/realistic-image.sh` (or scripts/bench.sh)\n",
                cache_home()
                    .join("imagebloat-testenv/realistic-v1")
                    .display()
            ),
        }
    }
    if wanted("big") {
        match big_fixture(big_mib) {
            Ok(img) => images.push(img),
            Err(e) => {
                eprintln!("bench scan: cannot make the generated image: {e}");
                std::process::exit(2);
            }
        }
    }
    if images.is_empty() {
        println!("no image selected");
        return;
    }

    let mut results = Vec::new();
    let mut failed = false;
    for img in &images {
        match measure(img, &bin, registry.as_deref(), repeats) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("bench scan: {}: {e}", img.name);
                failed = true;
            }
        }
    }
    print_report(&results);
    if wanted("lazy") {
        match &registry {
            Some(host) => {
                let loopback = "from the registry on loopback";
                if let Err(e) = lazy_bench(&bin, host, host, loopback, repeats) {
                    eprintln!("bench scan: lazy: {e}");
                    failed = true;
                }
                // The same through the fault proxy emulating real links: on loopback a
                // download costs almost nothing, which is not what a node pulling from a
                // registry sees.
                match std::env::var("IMAGEBLOAT_TEST_FAULT_PROXY") {
                    Ok(proxy) => {
                        for &(label, rate, latency_ms) in LAZY_LINKS {
                            let title = format!("through an emulated link of {label}");
                            let run = set_link(&proxy, rate, latency_ms)
                                .and_then(|()| lazy_bench(&bin, host, &proxy, &title, repeats));
                            let reset = set_link(&proxy, 0, 0);
                            if let Err(e) = run.and(reset) {
                                eprintln!("bench scan: lazy ({label}): {e}");
                                failed = true;
                            }
                        }
                    }
                    Err(_) => println!(
                        "\nlazy over emulated links: SKIPPED: no IMAGEBLOAT_TEST_FAULT_PROXY"
                    ),
                }
            }
            None => println!(
                "\nlazy: SKIPPED: the TOC path reads from a registry (IMAGEBLOAT_TEST_REGISTRY)"
            ),
        }
    }
    if failed {
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Images and their layers
// ---------------------------------------------------------------------------------------------

struct Image {
    name: String,
    layout: PathBuf,
    tag: String,
    layers: Vec<PathBuf>,
    compressed_bytes: u64,
    /// Expected numbers, when known independently of the scanner.
    expected: Option<Expected>,
}

#[derive(Clone, Copy)]
struct Expected {
    size_bytes: u64,
    final_bytes: u64,
    source: &'static str,
}

fn cache_home() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
        })
}

fn realistic_layout() -> Option<Image> {
    let (dir, tag) = match std::env::var("IMAGEBLOAT_TEST_DEBIAN_LAYOUT") {
        Ok(spec) if !spec.is_empty() => match spec.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') => (PathBuf::from(d), t.to_string()),
            _ => (PathBuf::from(spec), REALISTIC_TAG.to_string()),
        },
        _ => (
            cache_home().join("imagebloat-testenv/realistic-v1"),
            REALISTIC_TAG.to_string(),
        ),
    };
    if !dir.join("index.json").is_file() {
        return None;
    }
    let mut img = match open_layout("realistic", &dir, &tag) {
        Ok(i) => i,
        Err(e) => {
            println!("realistic: SKIPPED: {}: {e}\n", dir.display());
            return None;
        }
    };
    // scripts/realistic-image.sh writes numbers counted by an independent script.
    if let Ok(path) = std::env::var("IMAGEBLOAT_TEST_DEBIAN_EXPECTED")
        && let Ok(text) = fs::read_to_string(path)
        && let Ok(v) = serde_json::from_str::<Value>(&text)
        && let (Some(s), Some(f)) = (v["sizeBytes"].as_u64(), v["finalBytes"].as_u64())
    {
        img.expected = Some(Expected {
            size_bytes: s,
            final_bytes: f,
            source: "scripts/independent_count.py",
        });
    }
    Some(img)
}

/// Reads an OCI layout's manifest for `tag` and lists its (gzip) layer blobs.
fn open_layout(name: &str, dir: &Path, tag: &str) -> Result<Image, String> {
    let read_json = |p: PathBuf| -> Result<Value, String> {
        let text = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let blob = |digest: &str| -> Result<PathBuf, String> {
        let (alg, hex) = digest
            .split_once(':')
            .ok_or_else(|| format!("bad digest {digest}"))?;
        Ok(dir.join("blobs").join(alg).join(hex))
    };
    let index = read_json(dir.join("index.json"))?;
    let entry = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .ok_or_else(|| format!("no manifest tagged {tag:?} in index.json"))?;
    let mut manifest = read_json(blob(entry["digest"].as_str().unwrap_or_default())?)?;
    if manifest.get("manifests").is_some() {
        return Err("the tag names an index; the bench wants a single-platform image".into());
    }
    let mut layers = Vec::new();
    let mut compressed_bytes = 0;
    for layer in manifest["layers"].as_array_mut().into_iter().flatten() {
        let media = layer["mediaType"].as_str().unwrap_or_default();
        if !media.contains("gzip") {
            return Err(format!(
                "layer media type {media}: only gzip layers are benchmarked"
            ));
        }
        let path = blob(layer["digest"].as_str().unwrap_or_default())?;
        compressed_bytes += fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        layers.push(path);
    }
    Ok(Image {
        name: name.to_string(),
        layout: dir.to_path_buf(),
        tag: tag.to_string(),
        layers,
        compressed_bytes,
        expected: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

struct Results {
    name: String,
    layers: usize,
    uncompressed_bytes: u64,
    compressed_bytes: u64,
    decompress_1t: Samples,
    decompress_2t: Samples,
    layout: ScanResult,
    /// The layout scan pinned to one core (`taskset -c 0`).
    layout_1core: ScanResult,
    registry: Option<Result<ScanResult, String>>,
    expected: Option<Expected>,
}

#[derive(Default)]
struct ScanResult {
    wall: Samples,
    peak_rss_kib: Vec<u64>,
    findings: Value,
}

impl ScanResult {
    fn add(&mut self, run: ChildRun) -> Result<(), String> {
        self.wall.push((run.wall, run.cpu));
        self.peak_rss_kib.push(run.max_rss_kib);
        self.findings = serde_json::from_slice(&run.stdout)
            .map_err(|e| format!("imagebloat output is not JSON: {e}"))?;
        Ok(())
    }

    fn peak_rss_mib(&self) -> f64 {
        // The worst run: a memory target is about the peak, not the typical run.
        self.peak_rss_kib.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    }
}

/// Wall-clock samples, each with the CPU time it used.
#[derive(Default)]
struct Samples(Vec<(Duration, Duration)>);

impl Samples {
    fn push(&mut self, s: (Duration, Duration)) {
        self.0.push(s);
    }
    fn median_of(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }
    fn secs(&self) -> f64 {
        Self::median_of(self.0.iter().map(|s| s.0).collect()).as_secs_f64()
    }
    fn cpu_secs(&self) -> f64 {
        Self::median_of(self.0.iter().map(|s| s.1).collect()).as_secs_f64()
    }
    fn list(&self) -> String {
        Self::fmt(self.0.iter().map(|s| s.0))
    }
    fn cpu_list(&self) -> String {
        Self::fmt(self.0.iter().map(|s| s.1))
    }
    fn fmt(v: impl Iterator<Item = Duration>) -> String {
        v.map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Runs `f`, returning its wall time and the CPU time this process used meanwhile.
fn timed<T>(f: impl FnOnce() -> Result<T, String>) -> Result<(Duration, Duration), String> {
    let cpu = sys::self_cpu();
    let t = Instant::now();
    f()?;
    Ok((t.elapsed(), sys::self_cpu().saturating_sub(cpu)))
}

fn measure(
    img: &Image,
    bin: &Path,
    registry: Option<&str>,
    repeats: usize,
) -> Result<Results, String> {
    println!(
        "{}: {} layers, {:.1} MiB compressed, {}:{}",
        img.name,
        img.layers.len(),
        img.compressed_bytes as f64 / MIB,
        img.layout.display(),
        img.tag
    );
    // Warm the page cache (and check the blobs inflate) before anything is timed.
    let uncompressed_bytes = decompress_all(&img.layers, 1)?;
    // What verifying the blobs costs on its own: it runs beside decompression, on the async side.
    let hashing = timed(|| hash_all(&img.layers))?;
    println!(
        "  sha-256 of every layer blob, 1 thread: {:.3} s ({:.0} MiB/s)",
        hashing.0.as_secs_f64(),
        img.compressed_bytes as f64 / MIB / hashing.0.as_secs_f64().max(1e-9)
    );

    let layout_spec = format!("{}:{}", img.layout.display(), img.tag);
    let layout_args = ["scan", "--oci-layout", &layout_spec, "--output", "json"];
    let registry_ref: Option<Result<(&str, String), String>> = registry.map(|host| {
        let reference = format!("{host}/bench/{}:{}", img.name, sanitize_tag(&img.tag));
        push(&img.layout, &img.tag, &reference).map(|()| (host, reference))
    });

    // Interleaved, so that load from other processes hits every variant alike.
    let mut d1 = Samples::default();
    let mut d2 = Samples::default();
    let mut layout = ScanResult::default();
    let mut layout_1core = ScanResult::default();
    let mut registry: Option<Result<ScanResult, String>> = registry_ref.as_ref().map(|r| {
        r.as_ref()
            .map(|_| ScanResult::default())
            .map_err(Clone::clone)
    });
    for _ in 0..repeats {
        d1.push(timed(|| decompress_all(&img.layers, 1))?);
        d2.push(timed(|| decompress_all(&img.layers, 2))?);
        layout.add(run_child(bin, &layout_args)?)?;
        layout_1core.add(run_child_one_core(bin, &layout_args)?)?;
        if let (Some(Ok((host, reference))), Some(Ok(r))) = (&registry_ref, &mut registry) {
            let args = [
                "scan",
                "--insecure-registry",
                host,
                reference.as_str(),
                "--output",
                "json",
            ];
            if let Err(e) = run_child(bin, &args).and_then(|run| r.add(run)) {
                registry = Some(Err(e));
            }
        }
    }
    println!(
        "  decompress-only, 1 thread   wall (s): {}   cpu (s): {}",
        d1.list(),
        d1.cpu_list()
    );
    println!(
        "  decompress-only, 2 threads  wall (s): {}   cpu (s): {}",
        d2.list(),
        d2.cpu_list()
    );
    println!(
        "  scan --oci-layout           wall (s): {}   cpu (s): {}   peak RSS (MiB): {}",
        layout.wall.list(),
        layout.wall.cpu_list(),
        rss_list(&layout.peak_rss_kib)
    );
    println!(
        "  scan --oci-layout, 1 core   wall (s): {}   cpu (s): {}   peak RSS (MiB): {}",
        layout_1core.wall.list(),
        layout_1core.wall.cpu_list(),
        rss_list(&layout_1core.peak_rss_kib)
    );
    if let (Some(Ok((_, reference))), Some(Ok(r))) = (&registry_ref, &registry) {
        println!(
            "  scan (registry)             wall (s): {}   cpu (s): {}   peak RSS (MiB): {}   {reference}",
            r.wall.list(),
            r.wall.cpu_list(),
            rss_list(&r.peak_rss_kib)
        );
    }
    println!();
    Ok(Results {
        name: img.name.clone(),
        layers: img.layers.len(),
        uncompressed_bytes,
        compressed_bytes: img.compressed_bytes,
        decompress_1t: d1,
        decompress_2t: d2,
        layout,
        layout_1core,
        registry,
        expected: img.expected,
    })
}

/// The lazy-pull layout of scripts/lazy-images.sh.
fn lazy_layout() -> PathBuf {
    std::env::var_os("IMAGEBLOAT_TEST_LAZY_LAYOUT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_home().join("imagebloat-testenv/lazy-v2"))
}

/// The realistic image in each lazy-pull format, pushed to the registry `host` and scanned from
/// `scan_host` (the registry itself, or the fault proxy in front of it): the table-of-contents
/// path against `--no-lazy`.
fn lazy_bench(
    bin: &Path,
    host: &str,
    scan_host: &str,
    title: &str,
    repeats: usize,
) -> Result<(), String> {
    let layout = lazy_layout();
    if !layout.join("index.json").is_file() {
        println!(
            "\nlazy: SKIPPED: no lazy-format layout at {} (run scripts/lazy-images.sh)",
            layout.display()
        );
        return Ok(());
    }
    println!(
        "\nTable-of-contents path vs full read (--no-lazy), {title}. Targets: fetched < {:.0}% \
         of the layer bytes, >= {LAZY_SPEEDUP_TARGET:.0}x faster. Times are medians in seconds.",
        LAZY_FETCH_TARGET * 100.0
    );
    let mut rows: Vec<Vec<String>> = vec![
        [
            "image",
            "layer MiB",
            "TOC fetched",
            "share",
            "TOC s",
            "full fetched",
            "full s",
            "speedup",
            "TOC RSS",
            "same figures",
            "verdict",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for tag in LAZY_TAGS {
        push(&layout, tag, &format!("{host}/bench/lazy:{tag}"))?;
        let reference = format!("{scan_host}/bench/lazy:{tag}");
        let lazy_args = [
            "scan",
            "--insecure-registry",
            scan_host,
            &reference,
            "--output",
            "json",
        ];
        let mut full_args = lazy_args.to_vec();
        full_args.push("--no-lazy");
        let (mut lazy, mut full) = (ScanResult::default(), ScanResult::default());
        for _ in 0..repeats {
            lazy.add(run_child(bin, &lazy_args)?)?;
            full.add(run_child(bin, &full_args)?)?;
        }
        let n = |f: &Value, k: &str| f[k].as_u64().unwrap_or(0);
        let pull = n(&full.findings, "pullBytes");
        let (fetched, full_fetched) = (
            n(&lazy.findings, "downloadedBytes"),
            n(&full.findings, "downloadedBytes"),
        );
        let share = fetched as f64 / pull.max(1) as f64;
        let speedup = full.wall.secs() / lazy.wall.secs();
        let strip = |f: &Value| {
            let mut f = f.clone();
            if let Some(o) = f.as_object_mut() {
                o.remove("downloadedBytes");
                o.remove("notes");
            }
            f
        };
        let same = strip(&lazy.findings) == strip(&full.findings);
        let from_toc = fetched < pull;
        let ok = same && share < LAZY_FETCH_TARGET && speedup >= LAZY_SPEEDUP_TARGET;
        println!(
            "  {tag}: TOC path wall (s): {}   full read wall (s): {}",
            lazy.wall.list(),
            full.wall.list()
        );
        if !from_toc {
            for note in lazy.findings["notes"].as_array().into_iter().flatten() {
                println!("    note: {}", note.as_str().unwrap_or_default());
            }
        }
        rows.push(vec![
            tag.to_string(),
            format!("{:.1}", pull as f64 / MIB),
            fetched.to_string(),
            format!("{:.3}%", share * 100.0),
            format!("{:.3}", lazy.wall.secs()),
            full_fetched.to_string(),
            format!("{:.3}", full.wall.secs()),
            format!("{speedup:.1}x"),
            format!("{:.1}", lazy.peak_rss_mib()),
            if same { "yes" } else { "NO" }.to_string(),
            if !from_toc {
                "read in full (see the notes)".to_string()
            } else if ok {
                "PASS".to_string()
            } else {
                "MISS".to_string()
            },
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// Sets the fault proxy's emulated link (`POST /_link`; 0 and 0: no limit).
fn set_link(proxy: &str, bytes_per_second: u64, latency_ms: u64) -> Result<(), String> {
    use std::io::{Read, Write};
    let body = format!(r#"{{"bytesPerSecond": {bytes_per_second}, "latencyMs": {latency_ms}}}"#);
    let request = format!(
        "POST /_link HTTP/1.1\r\nHost: {proxy}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(proxy)
        .map_err(|e| format!("cannot reach the fault proxy {proxy}: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("fault proxy {proxy}: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("fault proxy {proxy}: {e}"))?;
    if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!(
            "fault proxy {proxy} refused the link: {}",
            answer.lines().next().unwrap_or_default()
        ))
    }
}

fn rss_list(kib: &[u64]) -> String {
    kib.iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sanitize_tag(tag: &str) -> String {
    tag.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Inflates every layer into a sink with `threads` workers, each taking the next layer in
/// order; returns the uncompressed bytes.
fn decompress_all(layers: &[PathBuf], threads: usize) -> Result<u64, String> {
    let next = AtomicUsize::new(0);
    let total = Mutex::new(Ok(0u64));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = layers.get(i) else { break };
                    let r = decompress_one(path).map_err(|e| format!("{}: {e}", path.display()));
                    let mut t = total.lock().unwrap();
                    *t = match (t.clone(), r) {
                        (Ok(a), Ok(b)) => Ok(a + b),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    };
                }
            });
        }
    });
    total.into_inner().unwrap()
}

/// Hashes every layer blob with the crate's SHA-256 (as the registry stream verifies them).
fn hash_all(layers: &[PathBuf]) -> Result<(), String> {
    use sha2::Digest as _;
    let mut buf = vec![0u8; 256 << 10];
    for path in layers {
        let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut hasher = sha2::Sha256::new();
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        std::hint::black_box(hasher.finalize());
    }
    Ok(())
}

fn sha_ni() -> bool {
    fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.split_whitespace().any(|w| w == "sha_ni"))
}

fn decompress_one(path: &Path) -> io::Result<u64> {
    let mut decoder = flate2::read::MultiGzDecoder::new(File::open(path)?);
    // A large output buffer: inflate's fast path wants room; io::copy's 8 KiB is slower.
    let mut buf = vec![0u8; 256 << 10];
    let mut sink = io::sink();
    let mut n = 0u64;
    loop {
        match decoder.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => {
                sink.write_all(&buf[..k])?;
                n += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

struct ChildRun {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
    stdout: Vec<u8>,
}

/// Runs the binary and reaps it with `wait4`, which reports that one child's own peak RSS
/// (`ru_maxrss`, KiB on Linux) and CPU time, measured by the kernel: no sampling, no
/// dependence on `/usr/bin/time`.
fn run_child(bin: &Path, args: &[&str]) -> Result<ChildRun, String> {
    run_command(Command::new(bin), bin, args)
}

/// [`run_child`] pinned to CPU 0: `taskset` execs the binary in its own process, so `wait4`
/// still measures the scanner itself.
fn run_child_one_core(bin: &Path, args: &[&str]) -> Result<ChildRun, String> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(bin);
    run_command(cmd, bin, args)
}

fn run_command(mut cmd: Command, bin: &Path, args: &[&str]) -> Result<ChildRun, String> {
    let what = || format!("{} {}", bin.display(), args.join(" "));
    let start = Instant::now();
    let mut child = cmd
        .args(args)
        .env("IMAGEBLOAT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", what()))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).map(|_| v)
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let (status, usage) = sys::wait4(child.id() as i32).map_err(|e| format!("wait4: {e}"))?;
    let wall = start.elapsed();
    // The child is reaped: std must not wait for it again (dropping `Child` does not).
    drop(child);
    let stdout = reader.join().expect("reader").map_err(|e| e.to_string())?;
    let stderr = err_reader.join().expect("reader");
    if !sys::exited_ok(status) {
        return Err(format!(
            "{} failed (wait status {status:#x}): {}",
            what(),
            String::from_utf8_lossy(&stderr).trim()
        ));
    }
    Ok(ChildRun {
        wall,
        cpu: usage.cpu,
        max_rss_kib: usage.max_rss_kib,
        stdout,
    })
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::time::Duration;

    pub struct Usage {
        pub cpu: Duration,
        pub max_rss_kib: u64,
    }

    /// Reaps `pid`: its wait status and its own resource usage.
    pub fn wait4(pid: i32) -> io::Result<(i32, Usage)> {
        let mut status = 0;
        // SAFETY: rusage is plain data, all zeros is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: valid pointers to live values of the types wait4 expects.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok((
            status,
            Usage {
                cpu: cpu_of(&ru),
                max_rss_kib: ru.ru_maxrss as u64,
            },
        ))
    }

    fn cpu_of(ru: &libc::rusage) -> Duration {
        let tv = |t: &libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(&ru.ru_utime) + tv(&ru.ru_stime)
    }

    /// CPU time (user + system) of this process, all threads.
    pub fn self_cpu() -> Duration {
        // SAFETY: as in wait4.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to a live rusage.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        cpu_of(&ru)
    }

    /// Exited with status 0 (exit 1 is a failed CI gate; none is set here).
    pub fn exited_ok(status: i32) -> bool {
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    compile_error!("the scan bench measures peak RSS with Linux's wait4");
}

fn push(layout: &Path, tag: &str, reference: &str) -> Result<(), String> {
    let t = Instant::now();
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--insecure-policy",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .map_err(|e| format!("skopeo (apt-get install skopeo): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "skopeo copy to {reference}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    println!(
        "  pushed to {reference} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn imagebloat_binary() -> Result<PathBuf, String> {
    if let Some(b) = std::env::var_os("IMAGEBLOAT_BENCH_BIN") {
        return Ok(PathBuf::from(b));
    }
    // This bench runs from <target>/release/deps/scan-HASH; the CLI is <target>/release/imagebloat.
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("imagebloat")));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = beside
        .filter(|p| p.is_file())
        .unwrap_or_else(|| manifest.join("target/release/imagebloat"));
    if !bin.is_file() {
        return Err(format!(
            "{} is missing: run `cargo build --release` first (scripts/bench.sh does)",
            bin.display()
        ));
    }
    // Warn when sources are newer than the binary: the numbers would be of old code.
    let built = fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let newest = newest_mtime(&manifest.join("src"))
        .into_iter()
        .chain(["Cargo.toml", "Cargo.lock"].iter().filter_map(|f| {
            fs::metadata(manifest.join(f))
                .and_then(|m| m.modified())
                .ok()
        }))
        .max();
    if let (Some(b), Some(n)) = (built, newest)
        && n > b
    {
        eprintln!(
            "bench scan: WARNING: {} is older than the sources; run `cargo build --release` for current numbers",
            bin.display()
        );
    }
    Ok(bin)
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn print_report(results: &[Results]) {
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "Targets: scan / decompress-only (1 thread) <= {RATIO_TARGET:.2}, peak RSS <= {RSS_TARGET_MIB:.0} MiB. \
         Times are medians in seconds; RSS is the highest of the runs."
    );
    let header = [
        "image",
        "layers",
        "uncompr MiB",
        "compr MiB",
        "decomp 1T",
        "decomp 2T",
        "scan layout",
        "ratio",
        "1 core",
        "ratio",
        "RSS MiB",
        "scan registry",
        "ratio",
        "RSS MiB",
        "verdict",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in results {
        let base = r.decompress_1t.secs();
        let ratio = r.layout.wall.secs() / base;
        let ratio_1core = r.layout_1core.wall.secs() / base;
        let rss = r.layout.peak_rss_mib().max(r.layout_1core.peak_rss_mib());
        let mut ok = vec![
            ratio <= RATIO_TARGET,
            ratio_1core <= RATIO_TARGET,
            rss <= RSS_TARGET_MIB,
        ];
        let mut verdicts = vec![
            format!("layout ratio {}", verdict(ok[0])),
            format!("layout 1-core ratio {}", verdict(ok[1])),
            format!("layout RSS {}", verdict(ok[2])),
        ];
        let (reg_time, reg_ratio, reg_rss) = match &r.registry {
            Some(Ok(s)) => {
                let ratio = s.wall.secs() / base;
                let rss = s.peak_rss_mib();
                ok.push(ratio <= RATIO_TARGET);
                ok.push(rss <= RSS_TARGET_MIB);
                verdicts.push(format!("registry ratio {}", verdict(ratio <= RATIO_TARGET)));
                verdicts.push(format!("registry RSS {}", verdict(rss <= RSS_TARGET_MIB)));
                (
                    format!("{:.3}", s.wall.secs()),
                    format!("{ratio:.2}"),
                    format!("{rss:.1}"),
                )
            }
            Some(Err(_)) => ("error".into(), "-".into(), "-".into()),
            None => ("-".into(), "-".into(), "-".into()),
        };
        rows.push(vec![
            r.name.clone(),
            r.layers.to_string(),
            format!("{:.1}", r.uncompressed_bytes as f64 / MIB),
            format!("{:.1}", r.compressed_bytes as f64 / MIB),
            format!("{base:.3}"),
            format!("{:.3}", r.decompress_2t.secs()),
            format!("{:.3}", r.layout.wall.secs()),
            format!("{ratio:.2}"),
            format!("{:.3}", r.layout_1core.wall.secs()),
            format!("{ratio_1core:.2}"),
            format!("{rss:.1}"),
            reg_time,
            reg_ratio,
            reg_rss,
            if ok.iter().all(|o| *o) {
                "PASS".into()
            } else {
                format!("MISS ({})", verdicts.join(", "))
            },
        ]);
    }
    print_table(&rows);
    println!();

    println!(
        "CPU time (medians, s; user + system). 'contention' is decompress-1T wall / cpu: well above \
         1.00 means other processes took the CPU and the wall times above are unreliable."
    );
    let mut rows: Vec<Vec<String>> = vec![
        [
            "image",
            "decomp 1T",
            "decomp 2T",
            "scan layout",
            "cpu ratio",
            "scan registry",
            "cpu ratio",
            "contention",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for r in results {
        let base = r.decompress_1t.cpu_secs();
        let (reg, reg_ratio) = match &r.registry {
            Some(Ok(s)) => (
                format!("{:.3}", s.wall.cpu_secs()),
                format!("{:.2}", s.wall.cpu_secs() / base),
            ),
            _ => ("-".into(), "-".into()),
        };
        rows.push(vec![
            r.name.clone(),
            format!("{base:.3}"),
            format!("{:.3}", r.decompress_2t.cpu_secs()),
            format!("{:.3}", r.layout.wall.cpu_secs()),
            format!("{:.2}", r.layout.wall.cpu_secs() / base),
            reg,
            reg_ratio,
            format!("{:.2}", r.decompress_1t.secs() / base),
        ]);
    }
    print_table(&rows);
    println!();

    println!("What the scans reported (from --output json; the last run of each):");
    for r in results {
        let mut sources = vec![("layout", &r.layout.findings)];
        if let Some(Ok(s)) = &r.registry {
            sources.push(("registry", &s.findings));
        }
        for (how, f) in sources {
            let n = |k: &str| f[k].as_u64().unwrap_or(0);
            println!(
                "  {:<10} {:<8} pullBytes={} sizeBytes={} finalBytes={} wastedBytes={} efficiency={:.4} hiddenFiles={} layers={}",
                r.name,
                how,
                n("pullBytes"),
                n("sizeBytes"),
                n("finalBytes"),
                n("wastedBytes"),
                f["efficiency"].as_f64().unwrap_or(0.0),
                n("hiddenFileCount"),
                f["layers"].as_array().map_or(0, |l| l.len()),
            );
        }
        if let Some(e) = r.expected {
            let f = &r.layout.findings;
            let same = f["sizeBytes"].as_u64() == Some(e.size_bytes)
                && f["finalBytes"].as_u64() == Some(e.final_bytes);
            println!(
                "  {:<10} expected sizeBytes={} finalBytes={} wastedBytes={} ({}): {}",
                r.name,
                e.size_bytes,
                e.final_bytes,
                e.size_bytes - e.final_bytes,
                e.source,
                if same { "matches" } else { "DIFFERS" }
            );
        }
        if let Some(Err(e)) = &r.registry {
            println!("  {:<10} registry scan failed: {e}", r.name);
        }
    }
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 || c + 1 == cols {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("{}", line.join("  ").trim_end());
        if i == 0 {
            println!(
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generated image
// ---------------------------------------------------------------------------------------------

/// One entry of a generated layer; the testkit writes each entry's parent directories.
enum Op {
    File {
        path: String,
        size: u64,
        kind: Kind,
        seed: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        target: String,
    },
    /// A whiteout of this path.
    Delete(String),
    /// An opaque marker in this directory.
    Opaque(String),
}

/// The plan of a layer.
struct LayerPlan {
    created_by: String,
    ops: Vec<Op>,
}

/// Builds the layers' entry lists while keeping an independent model of the final tree, so the
/// scanner's sizeBytes and finalBytes can be checked.
struct Planner {
    rng: Rng,
    scale: f64,
    layers: Vec<LayerPlan>,
    /// Live regular files: path -> size.
    live: BTreeMap<String, u64>,
    size_bytes: u64,
    seed: u64,
}

impl Planner {
    fn layer(&mut self, created_by: &str) {
        self.layers.push(LayerPlan {
            created_by: created_by.to_string(),
            ops: Vec::new(),
        });
    }

    fn cur(&mut self) -> &mut LayerPlan {
        self.layers.last_mut().expect("a layer")
    }

    fn file(&mut self, path: String, size: u64, kind: Kind) {
        self.seed += 1;
        let seed = self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
        self.size_bytes += size;
        self.live.insert(path.clone(), size);
        self.cur().ops.push(Op::File {
            path,
            size,
            kind,
            seed,
        });
    }

    /// Files of one kind until `mib` (scaled) is reached; `name(i)` gives the i-th path.
    fn group(
        &mut self,
        mib: f64,
        lo: u64,
        hi: u64,
        kind: Kind,
        name: impl Fn(usize) -> String,
    ) -> Vec<String> {
        let budget = (mib * self.scale * MIB) as u64;
        let mut used = 0;
        let mut paths = Vec::new();
        while used < budget {
            let size = self.rng.log_uniform(lo, hi).min(budget - used).max(1);
            let path = name(paths.len());
            self.file(path.clone(), size, kind);
            paths.push(path);
            used += size;
        }
        paths
    }

    fn symlink(&mut self, path: String, target: String) {
        self.cur().ops.push(Op::Symlink { path, target });
    }

    fn hard_link(&mut self, path: String, target: String) {
        self.cur().ops.push(Op::HardLink { path, target });
    }

    /// `.wh.NAME` beside `path`: removes it and everything under it.
    fn delete(&mut self, path: &str) {
        self.cur().ops.push(Op::Delete(path.to_string()));
        let under = format!("{path}/");
        self.live.retain(|p, _| p != path && !p.starts_with(&under));
    }

    /// `DIR/.wh..wh..opq`: hides every lower-layer entry under DIR (emitted before this layer
    /// adds anything there).
    fn opaque(&mut self, dir: &str) {
        self.cur().ops.push(Op::Opaque(dir.to_string()));
        let under = format!("{dir}/");
        self.live.retain(|p, _| !p.starts_with(&under));
    }
}

/// The recipe. Budgets are MiB at the default 1 GiB size; `scale` stretches them.
fn plan_big(total_mib: u64) -> Planner {
    let mut p = Planner {
        rng: Rng(0xB16_1A6E),
        scale: total_mib as f64 / 1024.0,
        layers: Vec::new(),
        live: BTreeMap::new(),
        size_bytes: 0,
        seed: 0,
    };
    const LANGS: [&str; 12] = [
        "de", "fr", "es", "it", "ja", "pt", "ru", "zh_CN", "pl", "nl", "sv", "ko",
    ];

    // Layer 0: a base system.
    p.layer("bench: base system (docs, man pages, locales, python modules, libraries, tools)");
    p.group(30.0, 400, 24 << 10, Kind::Text, |i| {
        format!("usr/share/doc/pkg{}/copyright{}", i / 3, i % 3)
    });
    p.group(20.0, 300, 40 << 10, Kind::Random, |i| {
        format!("usr/share/doc/pkg{}/changelog{}.gz", i / 2, i % 2)
    });
    p.group(15.0, 400, 12 << 10, Kind::Random, |i| {
        format!("usr/share/man/man{}/cmd{i}.1.gz", 1 + i % 8)
    });
    p.group(40.0, 1 << 10, 120 << 10, Kind::Binary, |i| {
        format!(
            "usr/share/locale/{}/LC_MESSAGES/dom{}.mo",
            LANGS[i % LANGS.len()],
            i / LANGS.len()
        )
    });
    let py = p.group(60.0, 300, 40 << 10, Kind::Text, |i| {
        format!(
            "usr/lib/python3/dist-packages/mod{}/file{}.py",
            i / 25,
            i % 25
        )
    });
    let libs = p.group(110.0, 16 << 10, 3 << 20, Kind::Binary, |i| {
        format!("usr/lib/x86_64-linux-gnu/lib{i}.so.1.0")
    });
    let tools = p.group(55.0, 8 << 10, 3 << 19, Kind::Binary, |i| {
        format!("usr/bin/tool{i}")
    });
    p.group(1.0, 100, 4 << 10, Kind::Text, |i| {
        format!("etc/app/app{i}.conf")
    });
    for (i, lib) in libs.iter().enumerate().take(100) {
        let name = lib.rsplit('/').next().unwrap().to_string();
        p.symlink(format!("usr/lib/x86_64-linux-gnu/lib{i}.so"), name);
    }
    for (i, tool) in tools.iter().enumerate().take(20) {
        p.hard_link(format!("usr/bin/tool{i}-alias"), tool.clone());
    }

    // Layer 1: dependencies, with the package cache and a data set left behind.
    p.layer("bench: install dependencies (apt cache and lists left, node_modules, model, corpus)");
    p.group(50.0, 20 << 10, 8 << 20, Kind::Random, |i| {
        format!("var/cache/apt/archives/pkg{i}.deb")
    });
    p.group(80.0, 50 << 10, 6 << 20, Kind::Text, |i| {
        format!("var/lib/apt/lists/list{i}_Packages")
    });
    p.group(80.0, 200, 30 << 10, Kind::Text, |i| {
        format!("opt/app/node_modules/m{}/lib/f{}.js", i / 40, i % 40)
    });
    let model_size = (120.0 * p.scale * MIB) as u64;
    p.file("opt/app/models/model.bin".into(), model_size, Kind::Binary);
    p.file(
        "opt/app/data/corpus.txt".into(),
        (70.0 * p.scale * MIB) as u64,
        Kind::Text,
    );

    // Layer 2: a build step that cleans up too late and rewrites the model.
    p.layer("bench: build; rm -rf /var/cache/apt/archives /opt/app/data/corpus.txt /usr/share/doc; retrain model");
    p.delete("var/cache/apt/archives");
    p.delete("opt/app/data/corpus.txt");
    p.delete("usr/share/doc");
    p.file("opt/app/models/model.bin".into(), model_size, Kind::Binary);
    p.group(90.0, 1 << 10, 400 << 10, Kind::Text, |i| {
        format!("opt/app/dist/chunk{i}.js")
    });
    p.group(30.0, 5 << 10, 600 << 10, Kind::Random, |i| {
        format!("opt/app/dist/assets/img{i}.png")
    });

    // Layer 3: final touches: an opaque config directory, patched modules, logs, removed libs.
    p.layer("bench: replace /etc/app, patch python modules, remove unused libraries, logs");
    p.opaque("etc/app");
    p.group(0.5, 100, 4 << 10, Kind::Text, |i| {
        format!("etc/app/app{i}.conf")
    });
    let patch = (py.len() / 10).max(1);
    for path in py.iter().step_by(py.len() / patch) {
        let size = p.rng.log_uniform(300, 40 << 10);
        p.file(path.clone(), size, Kind::Text);
    }
    // Libraries 100.. have no symlink pointing at them.
    for lib in libs.iter().skip(100).step_by(4) {
        p.delete(lib);
    }
    p.group(40.0, 1 << 20, 10 << 20, Kind::Text, |i| {
        format!("var/log/app{i}.log")
    });
    p
}

/// Writes one layer into the layout: tar -> sha256 (diff ID) -> gzip -> sha256 -> blob file.
fn write_layer(plan: &LayerPlan, layout: &OciLayout) -> io::Result<LayerBlob> {
    let mut layer = layout
        .layer(&plan.created_by, Compression::Gzip)?
        .mtime(MTIME)
        .with_parents();
    for op in &plan.ops {
        layer = match op {
            Op::File {
                path,
                size,
                kind,
                seed,
            } => {
                let mode = if path.starts_with("usr/bin/") {
                    0o755
                } else {
                    0o644
                };
                layer.file_from(path, mode, *size, Content::new(*seed, *kind, *size))
            }
            Op::Symlink { path, target } => layer.symlink(path, target),
            Op::HardLink { path, target } => layer.hardlink(path, target),
            Op::Delete(path) => layer.whiteout(path),
            Op::Opaque(dir) => layer.opaque(dir),
        };
    }
    layout.finish_layer(layer)
}

fn big_fixture(total_mib: u64) -> Result<Image, String> {
    let root = cache_home().join("imagebloat-bench");
    let dir = root.join(format!("big-v{BIG_RECIPE_VERSION}-{total_mib}m"));
    let meta_path = dir.join("imagebloat-bench.json");
    if !meta_path.is_file() {
        generate_big(&root, &dir, total_mib).map_err(|e| format!("{}: {e}", dir.display()))?;
    } else {
        println!("big: using the cached image {}", dir.display());
    }
    let meta: Value = serde_json::from_slice(&fs::read(&meta_path).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut img = open_layout("big", &dir, BIG_TAG)?;
    img.expected = Some(Expected {
        size_bytes: meta["sizeBytes"].as_u64().unwrap_or(0),
        final_bytes: meta["finalBytes"].as_u64().unwrap_or(0),
        source: "the generator's own overlay model",
    });
    Ok(img)
}

fn generate_big(root: &Path, dir: &Path, total_mib: u64) -> io::Result<()> {
    let started = Instant::now();
    println!(
        "big: generating a ~{total_mib} MiB image into {} (once; about a minute per GiB on 2 cores)",
        dir.display()
    );
    fs::create_dir_all(root)?;
    let work = root.join(format!(".build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let mut layout = OciLayout::create(&work)?;

    for kind in [Kind::Text, Kind::Binary, Kind::Random] {
        let mut sample = Vec::new();
        Content::new(7, kind, 8 << 20).read_to_end(&mut sample)?;
        let ratio = sample.len() as f64 / compress(&sample, Compression::Gzip).len() as f64;
        println!("big: {kind:?} content compresses {ratio:.2}x with gzip -6");
    }
    let plan = plan_big(total_mib);
    let final_bytes: u64 = plan.live.values().sum();

    // Two layers at a time; results in layer order.
    let next = AtomicUsize::new(0);
    let written: Mutex<Vec<Option<io::Result<LayerBlob>>>> =
        Mutex::new((0..plan.layers.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(layer) = plan.layers.get(i) else {
                        break;
                    };
                    let r = write_layer(layer, &layout);
                    written.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    let mut layers = Vec::new();
    for r in written.into_inner().unwrap() {
        layers.push(r.expect("every layer written")?);
    }

    let image = layers
        .iter()
        .fold(ImageBuilder::new(vec![]), |image, layer| {
            image.written(layer.clone())
        })
        .created(CREATED)
        .config(json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/usr/bin/tool0"],
        }))
        .build();
    layout.add_image(&image, BIG_TAG)?;
    let files: usize = plan
        .layers
        .iter()
        .map(|l| {
            l.ops
                .iter()
                .filter(|o| matches!(o, Op::File { .. }))
                .count()
        })
        .sum();
    let meta = json!({
        "recipeVersion": BIG_RECIPE_VERSION,
        "targetMiB": total_mib,
        "files": files,
        "sizeBytes": plan.size_bytes,
        "finalBytes": final_bytes,
        "wastedBytes": plan.size_bytes - final_bytes,
        "layers": layers.iter().map(|l| json!({"digest": l.digest, "diffId": l.diff_id, "size": l.size})).collect::<Vec<_>>(),
    });
    fs::write(
        work.join("imagebloat-bench.json"),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&work, dir)?;
    println!(
        "big: {} files in {} layers, {:.1} MiB of file content, {:.1} MiB compressed, generated in {:.1} s",
        files,
        layers.len(),
        plan.size_bytes as f64 / MIB,
        image.pull_bytes() as f64 / MIB,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

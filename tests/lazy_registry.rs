//! `imagebloat scan` of eStargz and zstd:chunked images in a real registry: the table-of-contents
//! path (a few `Range` requests per layer) gives every figure the full read gives, and the
//! registry's own access log shows what each path fetched, equal to `downloadedBytes`.
//!
//! The images are the real producers' (scripts/lazy-images.sh: skopeo's zstd:chunked,
//! ctr-remote's eStargz and zstd:chunked, the realistic Debian image converted to each), pushed
//! to the test registry by skopeo with their digests (and so their annotations) preserved. When
//! the TOC cannot be used (a registry that ignores `Range`, a TOC that fails the digest the
//! manifest names, a name the TOC cannot carry, no uncompressed size in the descriptor) the
//! layer is read in full, with a note, and the figures are still the same.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The manifest of the layout image tagged `tag`.
fn manifest(tag: &str) -> Value {
    let layout = lazy_layout();
    let index = read_json(layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no image tagged {tag}: run scripts/lazy-images.sh"));
    let (_, hex) = desc["digest"].as_str().unwrap().split_once(':').unwrap();
    read_json(layout.join("blobs/sha256").join(hex))
}

/// Pushes the layout image `tag` to `reference` as it is (no recompression: the digests, and
/// with them the layers' annotations, are kept), with the real skopeo.
fn push(tag: &str, reference: &str) {
    let source = format!("oci:{}:{tag}", lazy_layout().display());
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--preserve-digests"])
        .args(["--dest-tls-verify=false", &source])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {source} to {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The registry log's length now: what a scan adds is read from there.
fn log_mark() -> u64 {
    std::fs::metadata(env("IMAGEBLOAT_TEST_REGISTRY_LOG"))
        .unwrap()
        .len()
}

/// `(status, bytes written)` of each layer blob GET of `repository` that the registry logged
/// after `mark`, once their sum is `expected` (the log is written after each response, so it is
/// polled for a few seconds); the config blob is left out.
fn logged_layer_reads(mark: u64, repository: &str, config: &str, expected: u64) -> Vec<(u16, u64)> {
    // logrus quotes the URI when it holds a `:` (a digest does).
    let needle = format!("/v2/{repository}/blobs/");
    let started = Instant::now();
    loop {
        let log = std::fs::read(env("IMAGEBLOAT_TEST_REGISTRY_LOG")).unwrap();
        let reads: Vec<(u16, u64)> = String::from_utf8_lossy(&log[mark as usize..])
            .lines()
            .filter(|l| l.contains("msg=\"response completed\""))
            .filter(|l| l.contains("http.request.method=GET") && l.contains(&needle))
            .filter(|l| !l.contains(config))
            .map(|l| {
                (
                    field(l, "http.response.status="),
                    field(l, "http.response.written="),
                )
            })
            .map(|(s, w)| (s as u16, w))
            .collect();
        let sum: u64 = reads.iter().map(|r| r.1).sum();
        if sum == expected || started.elapsed() > Duration::from_secs(10) {
            return reads;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn field(line: &str, key: &str) -> u64 {
    let start = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A scan's JSON and how long it took.
fn timed_scan(reference: &str, extra: &[&str]) -> (Value, Duration) {
    let started = Instant::now();
    let json = scan_ok(reference, extra);
    (json, started.elapsed())
}

/// The findings without what depends on how they were read (and, for images that differ only
/// in their manifest, which manifest).
fn figures(findings: &Value, drop: &[&str]) -> Value {
    let mut f = findings.clone();
    for key in ["downloadedBytes", "notes"].iter().chain(drop) {
        f.as_object_mut().unwrap().remove(*key);
    }
    f
}

fn assert_same_figures(what: &str, lazy: &Value, full: &Value, drop: &[&str]) {
    let (lazy, full) = (figures(lazy, drop), figures(full, drop));
    if lazy != full {
        let keys: Vec<&String> = full
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| lazy.get(k.as_str()) != full.get(k.as_str()))
            .collect();
        panic!(
            "{what}: the TOC path and the full read differ in {keys:?}\nTOC path: {lazy}\nfull read: {full}"
        );
    }
}

fn notes(findings: &Value) -> Vec<String> {
    findings["notes"]
        .as_array()
        .map(|n| n.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// What the two scans of one pushed image showed.
struct Compared {
    lazy: Value,
    full: Value,
    /// `(status, bytes)` of the TOC path's layer requests, as the registry logged them.
    lazy_reads: Vec<(u16, u64)>,
}

/// Pushes the layout image `tag`, scans it on the TOC path and with `--no-lazy`, and checks that
/// every figure is the same and that the registry's log of layer reads adds up to each scan's
/// `downloadedBytes` (the full read: every layer blob once, with 200).
fn compare(tag: &str) -> Compared {
    let manifest = manifest(tag);
    let config = manifest["config"]["digest"].as_str().unwrap().to_string();
    let reference = format!("{}:{tag}", repo(&tag.replace('-', "")));
    let repository = reference
        .split_once('/')
        .unwrap()
        .1
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    push(tag, &reference);

    let mark = log_mark();
    let (lazy, lazy_time) = timed_scan(&reference, &[]);
    let lazy_reads = logged_layer_reads(mark, &repository, &config, u(&lazy, "downloadedBytes"));
    let mark = log_mark();
    let (full, full_time) = timed_scan(&reference, &["--no-lazy"]);
    let full_reads = logged_layer_reads(mark, &repository, &config, u(&full, "downloadedBytes"));

    assert_same_figures(tag, &lazy, &full, &[]);
    let pull = u(&full, "pullBytes");
    assert_eq!(u(&lazy, "pullBytes"), pull, "{tag}: pullBytes");
    assert_eq!(
        u(&full, "downloadedBytes"),
        pull,
        "{tag}: the full read fetches every layer blob once"
    );
    assert!(
        full_reads.iter().all(|&(status, _)| status == 200),
        "{tag}: the full read's layer requests: {full_reads:?}"
    );
    assert_eq!(
        full_reads.len(),
        manifest["layers"].as_array().unwrap().len()
    );
    for (path, reads, findings) in [
        ("TOC path", &lazy_reads, &lazy),
        ("full read", &full_reads, &full),
    ] {
        let logged: u64 = reads.iter().map(|r| r.1).sum();
        assert_eq!(
            logged,
            u(findings, "downloadedBytes"),
            "{tag}: the registry logged {reads:?} for the {path}'s layer reads"
        );
    }
    println!(
        "{tag}: TOC path {} requests, {} bytes ({:.3}% of {pull}) in {lazy_time:.2?}; \
         full read {} requests, {} bytes in {full_time:.2?}",
        lazy_reads.len(),
        u(&lazy, "downloadedBytes"),
        100.0 * u(&lazy, "downloadedBytes") as f64 / pull as f64,
        full_reads.len(),
        u(&full, "downloadedBytes"),
    );
    Compared {
        lazy,
        full,
        lazy_reads,
    }
}

/// Every layer came from its TOC: one note saying so, no fallback, only 206 answers.
fn assert_all_from_toc(tag: &str, c: &Compared) {
    let notes = notes(&c.lazy);
    let layers = c.full["layers"].as_array().unwrap().len();
    assert_eq!(notes.len(), 1, "{tag}: {notes:?}");
    assert!(
        notes[0].starts_with(&format!(
            "{layers} layer(s) indexed from their eStargz / zstd:chunked tables of contents"
        )),
        "{tag}: {notes:?}"
    );
    assert!(notes[0].contains("the rest of those blobs was neither downloaded nor checked"));
    assert!(
        c.full["notes"].is_null(),
        "{tag}: the full read has no note"
    );
    assert!(
        c.lazy_reads.iter().all(|&(status, _)| status == 206),
        "{tag}: {:?}",
        c.lazy_reads
    );
}

/// The realistic image: the TOC path fetches under 2% of the layer bytes.
fn assert_realistic(tag: &str, c: &Compared) {
    assert_all_from_toc(tag, c);
    let (fetched, pull) = (u(&c.lazy, "downloadedBytes"), u(&c.lazy, "pullBytes"));
    assert!(
        (fetched as f64) < 0.02 * pull as f64,
        "{tag}: the TOC path fetched {fetched} of {pull} bytes"
    );
    assert!(u(&c.lazy, "wastedBytes") > 0 && u(&c.lazy, "reclaimablePullBytes") > 0);
    assert!(
        c.lazy["os"].is_object(),
        "{tag}: os-release was read from its range"
    );
}

#[test]
fn ctr_remote_estargz_debian_image_by_ranges_has_the_full_reads_figures() {
    let c = compare("debian-estargz");
    assert_realistic("debian-estargz", &c);
}

#[test]
fn ctr_remote_zstd_chunked_debian_image_by_ranges_has_the_full_reads_figures() {
    let c = compare("debian-zstd-chunked-ctr");
    assert_realistic("debian-zstd-chunked-ctr", &c);
}

#[test]
fn every_entry_kind_by_ranges_has_the_full_reads_figures() {
    for tag in ["edge-estargz", "edge-zstd-chunked-ctr"] {
        let c = compare(tag);
        assert_all_from_toc(tag, &c);
        assert!(u(&c.lazy, "downloadedBytes") < u(&c.lazy, "pullBytes") / 100);
    }
}

/// skopeo's zstd:chunked (containers/storage's writer) states no uncompressed size, which a
/// layer's `uncompressedBytes` and the image's `reclaimablePullBytes` need: it comes from the
/// TOC's file sizes plus the tar headers in the frames between the files' data, fetched as
/// multipart `Range` answers (a few thousand small ranges, 128 per request). The two large layers
/// come from their TOCs; the sub-kilobyte last layer costs less read in full, and says so.
#[test]
fn skopeo_zstd_chunked_layers_get_their_exact_size_from_the_header_frames() {
    let c = compare("debian-zstd-chunked");
    let (fetched, pull) = (u(&c.lazy, "downloadedBytes"), u(&c.lazy, "pullBytes"));
    assert!(
        (fetched as f64) < 0.02 * pull as f64,
        "the TOC path fetched {fetched} of {pull} bytes"
    );
    let multipart = c.lazy_reads.iter().filter(|r| r.0 == 206).count();
    assert!(multipart > 10, "{:?}", c.lazy_reads);
    let notes = notes(&c.lazy);
    let layer2 = c.full["layers"][2]["digest"].as_str().unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0]
            .starts_with("2 layer(s) indexed from their eStargz / zstd:chunked tables of contents"),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with(&format!(
            "layer 2 ({layer2}) was read in full, its table of contents not used: "
        )) && notes[1].contains("cost about as much as the whole blob"),
        "{notes:?}"
    );
    assert!(u(&c.lazy["layers"][0], "uncompressedBytes") > 0);
    assert!(c.lazy["os"].is_object());
}

/// The every-entry-kind image from skopeo: the 5 MiB layer from its TOC (its big file's data in
/// one frame, its headers in a handful), the tiny second layer in full.
#[test]
fn skopeo_zstd_chunked_every_entry_kind_has_the_full_reads_figures() {
    let c = compare("edge-zstd-chunked");
    let notes = notes(&c.lazy);
    assert!(
        notes[0].starts_with("1 layer(s) indexed from their"),
        "{notes:?}"
    );
    assert!(u(&c.lazy, "downloadedBytes") < u(&c.lazy, "pullBytes") / 100);
}

/// A file name that is not UTF-8 cannot be in a JSON TOC: the full read, with a note.
#[test]
fn a_name_the_toc_cannot_carry_sends_the_layer_to_the_full_read() {
    for tag in ["names-estargz", "names-zstd-chunked-ctr"] {
        let c = compare(tag);
        let notes = notes(&c.lazy);
        assert_eq!(notes.len(), 1, "{tag}: {notes:?}");
        assert!(
            notes[0].contains("was read in full") && notes[0].contains("not UTF-8"),
            "{tag}: {notes:?}"
        );
        // The footer and the TOC were fetched before the entry was refused, then the blob.
        assert!(
            u(&c.lazy, "downloadedBytes") > u(&c.lazy, "pullBytes"),
            "{tag}"
        );
    }
}

/// A manifest whose TOC digest annotation is wrong (pushed here, over the producer's blobs):
/// the TOC fails its check and the layer is read in full, with the same figures as the
/// producer's own manifest read in full.
#[tokio::test]
async fn a_toc_that_fails_the_manifests_digest_sends_the_layer_to_the_full_read() {
    for (tag, annotation) in [
        ("edge-estargz", "containerd.io/snapshot/stargz/toc.digest"),
        (
            "edge-zstd-chunked-ctr",
            "io.containers.zstd-chunked.manifest-checksum",
        ),
    ] {
        let base = repo(&format!("bad{}", tag.replace('-', "")));
        let good = format!("{base}:good");
        push(tag, &good);
        let mut bad = manifest(tag);
        let wrong = sha256(b"not the table of contents");
        bad["layers"][0]["annotations"][annotation] = json!(wrong);
        let bytes = serde_json::to_vec(&bad).unwrap();
        let reference = format!("{base}:bad");
        Pusher::plain()
            .push_manifest(
                &reference.parse().unwrap(),
                &bytes,
                bad["mediaType"]
                    .as_str()
                    .unwrap_or("application/vnd.oci.image.manifest.v1+json"),
            )
            .await;

        let (lazy, full) = tokio::task::spawn_blocking(move || {
            (scan_ok(&reference, &[]), scan_ok(&good, &["--no-lazy"]))
        })
        .await
        .unwrap();
        assert_same_figures(tag, &lazy, &full, &["image", "digest"]);
        let notes = notes(&lazy);
        let digest = bad["layers"][0]["digest"].as_str().unwrap();
        assert!(
            notes.iter().any(|n| n.starts_with(&format!(
                "layer 0 ({digest}) was read in full, its table of contents not used: "
            )) && n.contains(&format!("the annotation says {wrong}"))),
            "{tag}: {notes:?}"
        );
        assert!(
            notes[0].starts_with("1 layer(s) indexed from their"),
            "{tag}: layer 1 still comes from its TOC: {notes:?}"
        );
        let layer0 = u(&bad["layers"][0], "size");
        assert!(
            u(&lazy, "downloadedBytes") > layer0,
            "{tag}: layer 0 whole, plus its footer and TOC and layer 1's ranges"
        );
    }
}

/// A proxy in front of the registry drops the `Range` header of the first request for layer 0:
/// the registry answers 200 with the whole blob, the client does not read that body and reads
/// the layer in full instead, with a note; layer 1 still comes from its TOC.
#[tokio::test]
async fn a_registry_that_ignores_range_gets_the_full_read() {
    let tag = "edge-estargz";
    let reference = format!("{}:{tag}", repo("norange"));
    push(tag, &reference);
    let manifest = manifest(tag);
    let layer0 = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    fault(json!({"mode": "no-range", "pathContains": format!("/blobs/{layer0}"), "count": 1}))
        .await;

    let proxy = env("IMAGEBLOAT_TEST_FAULT_PROXY");
    let via_proxy = reference.replacen(&registry(), &proxy, 1);
    let direct = reference.clone();
    let (lazy, full) = tokio::task::spawn_blocking(move || {
        let (code, lazy, stderr) = scan_json(&["--insecure-registry", &proxy, &via_proxy]);
        assert_eq!(code, 0, "{stderr}");
        (lazy, scan_ok(&direct, &["--no-lazy"]))
    })
    .await
    .unwrap();
    assert_same_figures(tag, &lazy, &full, &["image"]);
    let log = fault_log().await;
    assert!(
        log.iter()
            .any(|r| r["fault"] == "no-range" && r["status"] == 200),
        "the proxy stripped a Range header: {log:?}"
    );
    let notes = notes(&lazy);
    assert!(
        notes.iter().any(|n| n.starts_with(&format!(
            "layer 0 ({layer0}) was read in full, its table of contents not used: the registry does not serve ranges (HTTP 200"
        ))),
        "{notes:?}"
    );
    assert!(
        notes[0].starts_with("1 layer(s) indexed from their"),
        "{notes:?}"
    );
    let layer0_size = u(&manifest["layers"][0], "size");
    let layer1_size = u(&manifest["layers"][1], "size");
    let downloaded = u(&lazy, "downloadedBytes");
    assert!(
        downloaded > layer0_size && downloaded < layer0_size + layer1_size,
        "layer 0 in full (the ignored answer's body unread), layer 1 by ranges: {downloaded}"
    );
}

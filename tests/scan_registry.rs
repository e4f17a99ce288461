//! `imagebloat scan` against real registries: exact numbers for images built here, every
//! compression and media-type flavour, platforms, auth, TLS, rate limits and bad blobs.

mod common;

use common::*;
use serde_json::{Value, json};

const OS_RELEASE: &[u8] = b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n";

/// Three layers with every kind of waste, and junk in the final filesystem:
/// - layer 0 ships 618,000 bytes plus os-release, including a hard link (adds nothing);
/// - layer 1 deletes `tmp/build.tar.gz` (300,000 wasted) and rewrites `etc/config`
///   (70,000 wasted, 75,000 shipped);
/// - layer 2 makes `var/cache` opaque (40,000 wasted) and adds 5,000 bytes.
///
/// So S = 698,000 + os-release, W = 410,000, F = S - W; junk: apt lists 100,000 and docs 7,000
/// (the copyright file is kept).
fn bloated_layers() -> Vec<Layer> {
    vec![
        Layer::new("/bin/sh -c #(nop) ADD file:rootfs in /")
            .dir("etc")
            .file("etc/os-release", OS_RELEASE)
            .sized("usr/bin/app", 100_000)
            .hardlink("usr/bin/app2", "usr/bin/app")
            .sized("tmp/build.tar.gz", 300_000)
            .dir("var/lib/apt/lists")
            .sized("var/lib/apt/lists/deb.debian.org_Packages", 100_000)
            .sized("usr/share/doc/x/changelog.gz", 7_000)
            .sized("usr/share/doc/x/copyright", 1_000)
            .sized("etc/config", 70_000)
            .sized("var/cache/old", 40_000),
        Layer::new("/bin/sh -c rm /tmp/build.tar.gz && configure")
            .whiteout("tmp/build.tar.gz")
            .sized("etc/config", 75_000),
        Layer::new("/bin/sh -c rm -rf /var/cache && mkdir /var/cache && touch new")
            .opaque("var/cache")
            .sized("var/cache/new", 5_000),
    ]
}

const OS_LEN: u64 = OS_RELEASE.len() as u64;
const S: u64 = 698_000 + OS_LEN;
const W: u64 = 410_000;

fn hidden(json: &Value) -> Vec<(String, u64, u64, u64, String)> {
    let mut v: Vec<_> = json["hiddenFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                u(h, "sizeBytes"),
                u(h, "layer"),
                u(h, "hiddenByLayer"),
                h["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn assert_bloated_numbers(json: &Value, image: &Image) {
    assert_eq!(u(json, "pullBytes"), image.pull_bytes());
    assert_eq!(u(json, "sizeBytes"), S);
    assert_eq!(u(json, "finalBytes"), S - W);
    assert_eq!(u(json, "wastedBytes"), W);
    assert_eq!(
        json["efficiency"].as_f64().unwrap(),
        (S - W) as f64 / S as f64
    );
    assert_eq!(u(json, "reclaimableBytes"), W + 107_000);
    assert_eq!(json["digest"], json!(image.digest()));
    assert_eq!(json["platform"], "linux/amd64");
}

#[tokio::test]
async fn gzip_oci_image_has_exact_waste_attribution_junk_and_history() {
    let image = ImageBuilder::new(bloated_layers()).build();
    let r = format!("{}:v1", repo("bloated"));
    Pusher::plain().push(&image, &r).await;
    let json = scan_ok(&r, &[]);
    assert_bloated_numbers(&json, &image);

    assert_eq!(
        hidden(&json),
        vec![
            ("/etc/config".into(), 70_000, 0, 1, "overwritten".into()),
            ("/tmp/build.tar.gz".into(), 300_000, 0, 1, "deleted".into()),
            ("/var/cache/old".into(), 40_000, 0, 2, "opaque".into()),
        ]
    );
    assert_eq!(u(&json, "hiddenFileCount"), 3);

    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(
        [
            u(&layers[0], "sizeBytes"),
            u(&layers[1], "sizeBytes"),
            u(&layers[2], "sizeBytes")
        ],
        [618_000 + OS_LEN, 75_000, 5_000]
    );
    assert_eq!(
        [
            u(&layers[0], "wastedBytes"),
            u(&layers[1], "wastedBytes"),
            u(&layers[2], "wastedBytes")
        ],
        [410_000, 0, 0]
    );
    assert_eq!(
        layers[1]["createdBy"],
        "/bin/sh -c rm /tmp/build.tar.gz && configure"
    );
    for (l, size) in layers.iter().zip(&image.layer_sizes) {
        assert_eq!(u(l, "pullBytes"), *size);
    }

    let categories: Vec<(String, u64, u64)> = json["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["category"].as_str().unwrap().into(),
                u(c, "bytes"),
                u(c, "files"),
            )
        })
        .collect();
    assert_eq!(
        categories,
        vec![
            ("package-cache".into(), 100_000, 1),
            ("docs".into(), 7_000, 1)
        ]
    );
    assert_eq!(json["os"]["id"], "debian");
    assert_eq!(json["os"]["versionCodename"], "bookworm");

    // The largest saving first: the deleted tarball should have been removed in layer 0's step.
    let first = &json["recommendations"][0];
    assert_eq!(first["kind"], "cleanup-in-same-layer");
    assert_eq!(u(first, "savedBytes"), 300_000);
    assert_eq!(u(first, "layer"), 0);
    let kinds: Vec<&str> = json["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"package-manager-cache"), "{kinds:?}");
    assert!(kinds.contains(&"avoid-rewriting-files"), "{kinds:?}");
}

#[tokio::test]
async fn every_compression_and_media_type_flavour_gives_the_same_numbers() {
    for flavor in [Flavor::Oci, Flavor::Docker] {
        for compression in [Compression::Plain, Compression::Gzip, Compression::Zstd] {
            let image = ImageBuilder::new(bloated_layers())
                .flavor(flavor)
                .compression(compression)
                .build();
            let r = format!("{}:{flavor:?}-{compression:?}", repo("flavours")).to_lowercase();
            Pusher::plain().push(&image, &r).await;
            let json = scan_ok(&r, &[]);
            assert_bloated_numbers(&json, &image);
            assert_eq!(json["mediaType"], json!(image.manifest_media_type));
            let expected_layer_type = layer_media_type(flavor, compression);
            assert_eq!(json["layers"][0]["mediaType"], expected_layer_type);
        }
    }
}

#[tokio::test]
async fn yaml_output_is_the_same_object() {
    let image = ImageBuilder::new(bloated_layers()).build();
    let r = format!("{}:yaml", repo("yaml"));
    Pusher::plain().push(&image, &r).await;
    let reg = registry();
    let out = imagebloat(&["scan", "-o", "yaml", "--insecure-registry", &reg, &r]);
    assert!(out.status.success());
    let yaml: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(yaml, scan_ok(&r, &[]));
}

#[tokio::test]
async fn table_output_names_sizes_layers_and_advice() {
    let image = ImageBuilder::new(bloated_layers()).build();
    let r = format!("{}:table", repo("table"));
    Pusher::plain().push(&image, &r).await;
    let reg = registry();
    let out = imagebloat(&["scan", "--insecure-registry", &reg, &r]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let wasted = text.lines().find(|l| l.starts_with("Wasted")).unwrap();
    assert!(wasted.contains("410.0 kB"), "{wasted}");
    for needle in [
        "rm /tmp/build.tar.gz && configure",
        "/tmp/build.tar.gz",
        "package-cache",
        "cleanup-in-same-layer",
        "Debian GNU/Linux 12 (bookworm)",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

fn single(len: usize, tag: &str) -> Image {
    ImageBuilder::new(vec![Layer::new(tag).sized(&format!("bin/{tag}"), len)]).build()
}

#[tokio::test]
async fn multi_arch_index_picks_the_requested_platform_and_variant() {
    let amd = single(1_000, "amd64");
    let arm64 = ImageBuilder::new(vec![Layer::new("arm64").sized("bin/arm64", 2_000)])
        .platform("arm64", Some("v8"))
        .build();
    let armv7 = ImageBuilder::new(vec![Layer::new("armv7").sized("bin/armv7", 3_000)])
        .platform("arm", Some("v7"))
        .build();
    let r = format!("{}:multi", repo("multiarch"));
    let index_digest = Pusher::plain()
        .push_index(
            &[
                (&amd, "linux", "amd64", None),
                (&armv7, "linux", "arm", Some("v7")),
                (&arm64, "linux", "arm64", Some("v8")),
            ],
            &r,
        )
        .await;

    let json = scan_ok(&r, &["--platform", "linux/arm64/v8"]);
    assert_eq!(u(&json, "sizeBytes"), 2_000);
    assert_eq!(json["platform"], "linux/arm64/v8");
    assert_eq!(json["digest"], json!(arm64.digest()));
    assert_eq!(json["indexDigest"], json!(index_digest));

    let json = scan_ok(&r, &[]);
    assert_eq!(u(&json, "sizeBytes"), 1_000, "linux/amd64 is the default");

    let json = scan_ok(&r, &["--platform", "linux/arm/v7"]);
    assert_eq!(u(&json, "sizeBytes"), 3_000);

    let err = scan_fails(&r, &["--platform", "linux/s390x"]);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
    assert!(
        err.contains("linux/arm64/v8"),
        "the offered platforms are listed: {err}"
    );
}

#[tokio::test]
async fn digest_reference_scans_that_exact_manifest() {
    let image = single(4_321, "bydigest");
    let base = repo("bydigest");
    let digest = Pusher::plain().push(&image, &format!("{base}:t")).await;
    let json = scan_ok(&format!("{base}@{digest}"), &[]);
    assert_eq!(u(&json, "sizeBytes"), 4_321);
    assert_eq!(json["digest"], json!(digest));
}

#[tokio::test]
async fn missing_image_is_a_clear_error() {
    let err = scan_fails(&format!("{}:nope", repo("missing")), &[]);
    assert!(err.contains("not found"), "{err}");
    assert!(err.contains(":nope"), "names the image: {err}");
}

#[tokio::test]
async fn basic_auth_registry_needs_the_credentials_from_a_docker_config() {
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_AUTH");
    let (user, password) = (
        env("IMAGEBLOAT_TEST_REGISTRY_USER"),
        env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD"),
    );
    let image = single(7_000, "private");
    let r = format!("{reg}/private/app:1");
    Pusher::basic_auth().push(&image, &r).await;

    let (code, _, stderr) = scan_json(&["--insecure-registry", &reg, "--retries", "0", &r]);
    assert_eq!(code, 2);
    assert!(stderr.contains("access denied"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let auth = base64_encode(&format!("{user}:{password}"));
    std::fs::write(
        &config,
        json!({"auths": {reg.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let (code, json, stderr) = scan_json(&[
        "--insecure-registry",
        &reg,
        "--registry-config",
        config.to_str().unwrap(),
        &r,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&json, "sizeBytes"), 7_000);
    assert!(!json.to_string().contains(&password) && !stderr.contains(&password));

    // The same file found through DOCKER_CONFIG, as docker finds it.
    let out = imagebloat_with(
        &["scan", "-o", "json", "--insecure-registry", &reg, &r],
        &[("DOCKER_CONFIG", dir.path().to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A wrong password is refused, and the password is not echoed.
    std::fs::write(
        &config,
        json!({"auths": {reg.clone(): {"username": user, "password": "wrong-secret"}}}).to_string(),
    )
    .unwrap();
    let (code, _, stderr) = scan_json(&[
        "--insecure-registry",
        &reg,
        "--registry-config",
        config.to_str().unwrap(),
        "--retries",
        "0",
        &r,
    ]);
    assert_eq!(code, 2);
    assert!(!stderr.contains("wrong-secret"), "{stderr}");
}

#[tokio::test]
async fn a_tag_resolves_to_its_digest_with_a_head_request_and_through_auth() {
    use imagebloat::registry::{Credential, Reference, Registry, RegistryOptions};
    let plain = registry();
    let image = single(3_000, "resolve");
    let repository = repo("resolve");
    let path = repository
        .strip_prefix(&format!("{plain}/"))
        .unwrap()
        .to_string();
    let r = format!("{repository}:1");
    let digest = Pusher::plain().push(&image, &r).await;
    let client = Registry::new(RegistryOptions {
        insecure: [plain.clone()].into(),
        ..Default::default()
    })
    .unwrap();
    let reference: Reference = r.parse().unwrap();
    let got = client.resolve_tag(&reference, "1", &[]).await.unwrap();
    assert_eq!(got, digest);
    // One HEAD, and the manifest itself never fetched by tag (no body, no pull counted).
    let manifests = format!("/v2/{path}/manifests/1");
    assert_eq!(registry_log(&format!("\"HEAD {manifests} ")).len(), 1);
    assert!(registry_log(&format!("\"GET {manifests} ")).is_empty());

    // A missing tag is a NotFound naming it.
    let err = client
        .resolve_tag(&reference, "nope", &[])
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "NotFound", "{err}");
    assert!(err.to_string().contains(&format!("{path}:nope")), "{err}");

    // Behind basic auth: the HEAD's 401 challenge is answered with the credentials.
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_AUTH");
    let (user, password) = (
        env("IMAGEBLOAT_TEST_REGISTRY_USER"),
        env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD"),
    );
    let r = format!("{reg}/private/resolve-{}:1", std::process::id());
    let digest = Pusher::basic_auth().push(&image, &r).await;
    let client = Registry::new(RegistryOptions {
        insecure: [reg.clone()].into(),
        max_retries: 0,
        ..Default::default()
    })
    .unwrap();
    let reference: Reference = r.parse().unwrap();
    let err = client.resolve_tag(&reference, "1", &[]).await.unwrap_err();
    assert_eq!(err.reason(), "Unauthorized", "{err}");
    let credential = Credential::basic(&user, &password);
    let got = client
        .resolve_tag(&reference, "1", &[&credential])
        .await
        .unwrap();
    assert_eq!(got, digest);
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn tls_registry_is_trusted_with_the_test_ca_only() {
    let reg = env("IMAGEBLOAT_TEST_REGISTRY_TLS");
    let ca = env("IMAGEBLOAT_TEST_CA_FILE");
    let image = single(9_000, "tls");
    let r = format!("{reg}/secure/app:1");
    let cert = oci_client::client::Certificate {
        encoding: oci_client::client::CertificateEncoding::Pem,
        data: std::fs::read(&ca).unwrap(),
    };
    Pusher::with(
        oci_client::client::ClientProtocol::Https,
        oci_client::secrets::RegistryAuth::Anonymous,
        vec![cert],
    )
    .push(&image, &r)
    .await;

    let (code, json, stderr) = scan_json(&["--ca-file", &ca, &r]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&json, "sizeBytes"), 9_000);

    let (code, _, stderr) = scan_json(&["--retries", "0", &r]);
    assert_eq!(code, 2, "an unknown CA is refused: {stderr}");
}

/// The fault proxy sits in front of the plain registry; tests that arm it run one at a time.
static PROXY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn via_proxy(reference: &str) -> String {
    reference.replacen(&registry(), &env("IMAGEBLOAT_TEST_FAULT_PROXY"), 1)
}

#[tokio::test]
async fn rate_limited_blobs_are_retried_after_the_servers_retry_after() {
    let _guard = PROXY.lock().await;
    let image = single(5_000, "ratelimited");
    let r = format!("{}:1", repo("ratelimited"));
    Pusher::plain().push(&image, &r).await;
    fault(json!({"status": 429, "retryAfter": "1", "count": 2, "pathContains": "/blobs/"})).await;
    let proxy = env("IMAGEBLOAT_TEST_FAULT_PROXY");
    let (code, json, stderr) = scan_json(&["--insecure-registry", &proxy, &via_proxy(&r)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&json, "sizeBytes"), 5_000);
    let log = fault_log().await;
    let blobs: Vec<&Value> = log
        .iter()
        .filter(|e| e["path"].as_str().unwrap_or("").contains("/blobs/"))
        .collect();
    assert_eq!(blobs[0]["status"], 429);
    assert_eq!(blobs[1]["status"], 429);
    let gap = blobs[1]["t"].as_f64().unwrap() - blobs[0]["t"].as_f64().unwrap();
    assert!(gap >= 0.95, "waited {gap:.2}s; Retry-After said 1s");
    assert!(blobs[2..].iter().all(|e| e["status"] == 200), "{blobs:?}");
    fault(Value::Null).await;
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_is_an_error_naming_the_layer() {
    let _guard = PROXY.lock().await;
    let image = single(50_000, "corrupted");
    let r = format!("{}:1", repo("corrupted"));
    Pusher::plain().push(&image, &r).await;
    let layer_digest = &image.blobs[0].0;
    let proxy = env("IMAGEBLOAT_TEST_FAULT_PROXY");
    fault(json!({"mode": "corrupt", "count": 10, "pathContains": layer_digest})).await;
    let (code, json, stderr) = scan_json(&[
        "--insecure-registry",
        &proxy,
        "--retries",
        "0",
        &via_proxy(&r),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(json, Value::Null, "no result is printed for a bad blob");
    assert!(stderr.contains("digest mismatch"), "{stderr}");
    assert!(
        stderr.contains(&format!("layer 0 ({layer_digest})")),
        "{stderr}"
    );

    fault(json!({"mode": "truncate", "count": 10, "pathContains": layer_digest})).await;
    let (code, _, stderr) = scan_json(&[
        "--insecure-registry",
        &proxy,
        "--retries",
        "0",
        &via_proxy(&r),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("layer 0 ({layer_digest})")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    fault(Value::Null).await;
}

#[tokio::test]
async fn ci_gate_fails_with_exit_1_names_the_threshold_and_still_prints_json() {
    let image = ImageBuilder::new(bloated_layers()).build();
    let r = format!("{}:gate", repo("gate"));
    Pusher::plain().push(&image, &r).await;
    let reg = registry();
    let base = ["--insecure-registry", reg.as_str()];

    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.push(&r);
        scan_json(&args)
    };
    let (code, json, stderr) = run(&["--max-wasted-bytes", "100kB"]);
    assert_eq!(code, 1);
    assert_eq!(u(&json, "wastedBytes"), W);
    assert!(stderr.contains("--max-wasted-bytes"), "{stderr}");

    let (code, _, _) = run(&["--max-wasted-bytes", "410kB"]);
    assert_eq!(code, 0, "equal to the limit passes");

    let (code, _, stderr) = run(&["--min-efficiency", "50%", "--max-pull-bytes", "1.5GiB"]);
    assert_eq!(code, 1, "efficiency is {:.3}", (S - W) as f64 / S as f64);
    assert!(
        stderr.contains("--min-efficiency") && !stderr.contains("--max-pull-bytes"),
        "{stderr}"
    );

    let (code, _, _) = run(&["--min-efficiency", "0.3", "--max-reclaimable-bytes", "1MB"]);
    assert_eq!(code, 0);
    let (code, _, stderr) = run(&[
        "--max-reclaimable-bytes",
        "500000",
        "--max-pull-bytes",
        "1kB",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("--max-reclaimable-bytes") && stderr.contains("--max-pull-bytes"),
        "{stderr}"
    );
}

#[test]
fn realistic_debian_image_matches_an_independent_count() {
    let expected: Value =
        serde_json::from_slice(&std::fs::read(env("IMAGEBLOAT_TEST_DEBIAN_EXPECTED")).unwrap())
            .unwrap();
    let check = |json: &Value, what: &str| {
        for key in ["sizeBytes", "finalBytes", "wastedBytes"] {
            assert_eq!(json[key], expected[key], "{what}: {key}");
        }
        assert_eq!(
            json["efficiency"].as_f64(),
            expected["efficiency"].as_f64(),
            "{what}"
        );
        let ours: Vec<u64> = json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| u(l, "sizeBytes"))
            .collect();
        let theirs: Vec<u64> = expected["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| u(l, "sizeBytes"))
            .collect();
        assert_eq!(ours, theirs, "{what}: per-layer sizes");
    };
    let oci = scan_ok(&env("IMAGEBLOAT_TEST_DEBIAN_IMAGE"), &[]);
    check(&oci, "registry, OCI media types");
    assert_eq!(oci["pullBytes"], expected["pullBytes"]);
    assert!(
        u(&oci, "wastedBytes") > 10_000_000,
        "the change set deletes real files"
    );
    assert!(
        oci["categories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["category"] == "package-cache")
    );
    assert_eq!(oci["os"]["id"], "debian");

    let v2s2 = scan_ok(&env("IMAGEBLOAT_TEST_DEBIAN_IMAGE_V2S2"), &[]);
    check(&v2s2, "registry, Docker media types");

    let layout = env("IMAGEBLOAT_TEST_DEBIAN_LAYOUT");
    let (code, local, stderr) = scan_json(&["--oci-layout", &layout]);
    assert_eq!(code, 0, "{stderr}");
    check(&local, "OCI layout");
    assert_eq!(local["digest"], oci["digest"]);

    // The same layout packed as an OCI archive.
    let (dir, tag) = layout.rsplit_once(':').unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("image.tar");
    let status = std::process::Command::new("tar")
        .args(["-cf", archive.to_str().unwrap(), "-C", dir, "."])
        .status()
        .unwrap();
    assert!(status.success());
    let (code, packed, stderr) = scan_json(&["--archive", &format!("{}:{tag}", archive.display())]);
    assert_eq!(code, 0, "{stderr}");
    check(&packed, "OCI archive");
}

#[test]
fn legacy_docker_save_archive_is_analyzed_from_its_manifest_json() {
    let layers: Vec<(Vec<u8>, String)> =
        bloated_layers().into_iter().map(Layer::into_tar).collect();
    let diff_ids: Vec<String> = layers.iter().map(|(t, _)| sha256(t)).collect();
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|(_, c)| json!({"created_by": c})).collect::<Vec<_>>(),
    })
    .to_string();
    let mut outer = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        outer.append_data(&mut h, name, data).unwrap();
    };
    let config_name = format!("{}.json", &sha256(config.as_bytes())[7..]);
    add(&config_name, config.as_bytes());
    let mut layer_names = Vec::new();
    for (i, (t, _)) in layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        add(&name, t);
        layer_names.push(name);
    }
    let manifest =
        json!([{"Config": config_name, "RepoTags": ["example/app:1"], "Layers": layer_names}]);
    add("manifest.json", manifest.to_string().as_bytes());
    let bytes = outer.into_inner().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("saved.tar");
    std::fs::write(&file, bytes).unwrap();

    let (code, json, stderr) = scan_json(&["--archive", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&json, "sizeBytes"), S);
    assert_eq!(u(&json, "wastedBytes"), W);
    let tars: u64 = layers.iter().map(|(t, _)| t.len() as u64).sum();
    assert_eq!(
        u(&json, "pullBytes"),
        tars,
        "uncompressed layers: pull size is the tar size"
    );
}

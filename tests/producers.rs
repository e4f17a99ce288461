//! `scan --archive` and `scan --oci-layout` read what every real image producer writes to the
//! same figures, and those figures are an independent implementation's.
//!
//! One image, built with `buildah bud --layers` from a Dockerfile on a slim debootstrap Debian
//! base (a file deleted in a later layer, an overwritten file, whiteouts of directories), written
//! by skopeo, podman and buildah in each format they write, plus the two docker-save shapes no
//! Debian package writes (gzip-compressed layer files as kaniko writes them; Docker 25+'s archive
//! holding both `index.json` and `manifest.json`). All come from scripts/producer-images.sh, with
//! the expected figures computed by scripts/independent_count.py.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use common::{registry, scan_json, scan_ok, sha256, u};
use serde_json::{Value, json};

/// Where scripts/producer-images.sh wrote every producer's output.
fn dir() -> PathBuf {
    let dir = std::env::var_os("IMAGEBLOAT_TEST_PRODUCERS_DIR").map(PathBuf::from);
    match dir {
        Some(d) if d.join("expected.json").is_file() => d,
        _ => panic!(
            "IMAGEBLOAT_TEST_PRODUCERS_DIR is not set or has no expected.json: run \
             scripts/producer-images.sh after scripts/testenv.sh up (scripts/test.sh does both)"
        ),
    }
}

fn path(name: &str) -> String {
    dir().join(name).to_str().unwrap().to_string()
}

fn expected() -> Value {
    let file = dir().join("expected.json");
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

/// Scans a local source (`--archive` or `--oci-layout`) and insists on success.
fn scan_local(flag: &str, spec: &str) -> Value {
    let (code, json, stderr) = scan_json(&[flag, spec]);
    assert_eq!(code, 0, "scan {flag} {spec} failed: {stderr}");
    json
}

fn layers(json: &Value) -> &Vec<Value> {
    json["layers"].as_array().unwrap()
}

/// The figures the independent count gives, taken from a scan; per layer, by position.
fn independent_view(json: &Value) -> Value {
    let mut hidden: Vec<Value> = json["hiddenFiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| json!({"path": h["path"], "sizeBytes": h["sizeBytes"], "layer": h["layer"]}))
        .collect();
    hidden.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    json!({
        "sizeBytes": json["sizeBytes"],
        "finalBytes": json["finalBytes"],
        "wastedBytes": json["wastedBytes"],
        "efficiency": json["efficiency"],
        "hiddenFileCount": json["hiddenFileCount"],
        "hiddenFiles": hidden,
        "layers": layers(json).iter().map(|l| json!({
            "sizeBytes": l["sizeBytes"],
            "fileCount": l["fileCount"],
            "wastedBytes": l["wastedBytes"],
        })).collect::<Vec<_>>(),
    })
}

/// Everything a scan says that does not depend on how the layers were compressed or packed:
/// what two producers' outputs of one image must agree on beyond the independent figures.
fn content_view(json: &Value) -> Value {
    json!({
        "independent": independent_view(json),
        "reclaimableBytes": json["reclaimableBytes"],
        "junkBytes": json["junkBytes"],
        "hiddenFiles": json["hiddenFiles"],
        "categories": json["categories"],
        "os": json["os"],
        "platform": json["platform"],
        "layers": layers(json).iter().map(|l| json!({
            "uncompressedBytes": l["uncompressedBytes"],
            "junkBytes": l["junkBytes"],
            "createdBy": l["createdBy"],
        })).collect::<Vec<_>>(),
    })
}

/// The scan equals the independent count, and the registry scan of buildah's push in everything
/// that does not depend on packing.
fn check(json: &Value, what: &str) {
    let expected = expected();
    let mut theirs = json!({
        "sizeBytes": expected["sizeBytes"],
        "finalBytes": expected["finalBytes"],
        "wastedBytes": expected["wastedBytes"],
        "efficiency": expected["efficiency"],
        "hiddenFileCount": expected["hiddenFileCount"],
        "hiddenFiles": expected["hiddenFiles"],
        "layers": layers(&expected).iter().map(|l| json!({
            "sizeBytes": l["sizeBytes"],
            "fileCount": l["fileCount"],
            "wastedBytes": l["wastedBytes"],
        })).collect::<Vec<_>>(),
    });
    // The efficiency is F / S in both; compare it as a number, not as JSON text.
    let ours = independent_view(json);
    assert_eq!(
        ours["efficiency"].as_f64(),
        theirs["efficiency"].as_f64(),
        "{what}: efficiency"
    );
    theirs["efficiency"] = ours["efficiency"].clone();
    assert_eq!(
        ours, theirs,
        "{what}: figures differ from the independent count"
    );
    assert!(
        u(json, "wastedBytes") > 600_000 && u(json, "hiddenFileCount") >= 10,
        "{what}: the image hides real files"
    );
    assert_eq!(
        layers(json).len(),
        4,
        "{what}: base + COPY + two RUN layers"
    );

    let reference = scan_ok(&reference_image(), &[]);
    assert_eq!(
        content_view(json),
        content_view(&reference),
        "{what}: differs from the registry scan of buildah's push"
    );
}

fn reference_image() -> String {
    let image = std::env::var("IMAGEBLOAT_TEST_PRODUCERS_IMAGE").unwrap_or_else(|_| {
        panic!("IMAGEBLOAT_TEST_PRODUCERS_IMAGE is not set: run scripts/producer-images.sh")
    });
    assert!(image.starts_with(&registry()), "{image}");
    image
}

/// Layers as compressed blobs (OCI layouts, OCI archives, registries): the pull size is what the
/// manifest lists, the same blobs the independent count read.
fn check_compressed_pull(json: &Value, what: &str) {
    let expected = expected();
    let digests =
        |v: &Value| -> Vec<Value> { layers(v).iter().map(|l| l["digest"].clone()).collect() };
    assert_eq!(digests(json), digests(&expected), "{what}: layer digests");
    assert_eq!(
        json["pullBytes"], expected["pullBytes"],
        "{what}: pullBytes"
    );
    for l in layers(json) {
        let media_type = l["mediaType"].as_str().unwrap();
        assert!(media_type.ends_with("gzip"), "{what}: {l}");
    }
}

/// Member sizes of a tar archive, by name.
fn member_sizes(archive: &str) -> HashMap<String, u64> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().to_str().unwrap().to_string(), e.size())
        })
        .collect()
}

/// A `docker save` archive: the pull size of a layer is the size of its file in the archive, and
/// the layer is named by its diff ID.
fn check_saved_pull(json: &Value, archive: &str, what: &str) {
    let sizes = member_sizes(archive);
    let raw = read_member(archive, "manifest.json");
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    let files: Vec<u64> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| sizes[n.as_str().unwrap()])
        .collect();
    let ours: Vec<u64> = layers(json).iter().map(|l| u(l, "pullBytes")).collect();
    assert_eq!(
        ours, files,
        "{what}: per-layer pullBytes are the layer files' sizes"
    );
    assert_eq!(u(json, "pullBytes"), files.iter().sum::<u64>(), "{what}");
    let config: Value = serde_json::from_slice(&read_member(
        archive,
        manifest[0]["Config"].as_str().unwrap(),
    ))
    .unwrap();
    let diff_ids: Vec<Value> = layers(json).iter().map(|l| l["digest"].clone()).collect();
    assert_eq!(
        json!(diff_ids),
        config["rootfs"]["diff_ids"],
        "{what}: layers named by diff ID"
    );
}

fn read_member(archive: &str, name: &str) -> Vec<u8> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut out = Vec::new();
            e.read_to_end(&mut out).unwrap();
            return out;
        }
    }
    panic!("{archive} has no member {name}");
}

#[test]
fn buildah_push_to_a_registry() {
    let json = scan_ok(&reference_image(), &[]);
    check(&json, "buildah push docker://");
    check_compressed_pull(&json, "buildah push docker://");
}

#[test]
fn buildah_push_to_an_oci_archive() {
    let file = path("buildah-oci.tar");
    let json = scan_local("--archive", &file);
    check(&json, "buildah push oci-archive:");
    check_compressed_pull(&json, "buildah push oci-archive:");
    let tagged = scan_local("--archive", &format!("{file}:producers"));
    assert_eq!(tagged["digest"], json["digest"]);
}

#[test]
fn skopeo_copy_to_a_docker_archive() {
    let file = path("skopeo-docker.tar");
    let json = scan_local("--archive", &file);
    check(&json, "skopeo docker-archive:");
    check_saved_pull(&json, &file, "skopeo docker-archive:");
    // Selected by its RepoTags entry, whole or by tag.
    for spec in [format!("{file}:localhost/producers:1"), format!("{file}:1")] {
        assert_eq!(
            scan_local("--archive", &spec)["digest"],
            json["digest"],
            "{spec}"
        );
    }
}

#[test]
fn skopeo_copy_to_an_oci_archive() {
    let file = path("skopeo-oci.tar");
    let json = scan_local("--archive", &file);
    check(&json, "skopeo oci-archive:");
    check_compressed_pull(&json, "skopeo oci-archive:");
}

#[test]
fn skopeo_copy_to_an_oci_layout() {
    let layout = path("skopeo-oci");
    let json = scan_local("--oci-layout", &layout);
    check(&json, "skopeo oci:");
    check_compressed_pull(&json, "skopeo oci:");
    let tagged = scan_local("--oci-layout", &format!("{layout}:producers"));
    assert_eq!(tagged["digest"], json["digest"]);
}

#[test]
fn podman_save_docker_archive() {
    let file = path("podman-docker.tar");
    let json = scan_local("--archive", &file);
    check(&json, "podman save --format docker-archive");
    check_saved_pull(&json, &file, "podman save --format docker-archive");
}

#[test]
fn podman_save_oci_archive() {
    let file = path("podman-oci.tar");
    let json = scan_local("--archive", &file);
    check(&json, "podman save --format oci-archive");
    check_compressed_pull(&json, "podman save --format oci-archive");
    // podman names the manifest `localhost/producers:1`: selected whole or by its tag.
    for spec in [format!("{file}:localhost/producers:1"), format!("{file}:1")] {
        assert_eq!(
            scan_local("--archive", &spec)["digest"],
            json["digest"],
            "{spec}"
        );
    }
}

#[test]
fn podman_save_oci_dir() {
    let layout = path("podman-oci");
    let json = scan_local("--oci-layout", &layout);
    check(&json, "podman save --format oci-dir");
    check_compressed_pull(&json, "podman save --format oci-dir");
    let tagged = scan_local("--oci-layout", &format!("{layout}:localhost/producers:1"));
    assert_eq!(tagged["digest"], json["digest"]);
}

/// A docker-save archive whose layer files are compressed: the same layers (by diff ID) and
/// findings as the uncompressed archive of the same image, the files' compression in the media
/// types.
fn check_compressed_docker_save(name: &str, media_type: &str, what: &str) {
    let file = path(name);
    let json = scan_local("--archive", &file);
    check(&json, what);
    check_saved_pull(&json, &file, what);
    for l in layers(&json) {
        assert_eq!(l["mediaType"], media_type, "{what}: {l}");
    }
    let plain = scan_local("--archive", &path("skopeo-docker.tar"));
    assert_eq!(content_view(&json), content_view(&plain), "{what}");
    let digests =
        |v: &Value| -> Vec<Value> { layers(v).iter().map(|l| l["digest"].clone()).collect() };
    assert_eq!(digests(&json), digests(&plain), "{what}");

    // Decompressed by the source, the layer still counts against the uncompressed limit
    // (layer 0 is 4.4 MB uncompressed, 2 MB compressed).
    let (code, _, stderr) = scan_json(&["--max-layer-bytes", "3MB", "--archive", &file]);
    assert_eq!(code, 2, "{what}: {stderr}");
    assert!(
        stderr.contains("layer 0 (") && stderr.contains("exceeds the limit of 3000000 bytes"),
        "{what}: {stderr}"
    );
}

#[test]
fn docker_save_archive_with_gzip_layer_files() {
    check_compressed_docker_save(
        "docker-gzip.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "docker-save archive, gzip layers (kaniko --tarPath)",
    );
}

#[test]
fn docker_save_archive_with_zstd_layer_files() {
    check_compressed_docker_save(
        "docker-zstd.tar",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "docker-save archive, zstd layers",
    );
}

#[test]
fn docker_25_archive_with_index_json_and_manifest_json() {
    let file = path("docker25.tar");
    let names = member_sizes(&file);
    assert!(names.contains_key("index.json") && names.contains_key("manifest.json"));
    let json = scan_local("--archive", &file);
    check(&json, "Docker 25 archive");
    // Read through index.json: the OCI manifest the archive holds, uncompressed layers whose
    // digests are their diff IDs and whose pull sizes are the files' sizes.
    let index: Value = serde_json::from_slice(&read_member(&file, "index.json")).unwrap();
    assert_eq!(json["digest"], index["manifests"][0]["digest"]);
    assert_eq!(
        json["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    check_saved_pull(&json, &file, "Docker 25 archive");
    for spec in [format!("{file}:1"), format!("{file}:localhost/producers:1")] {
        assert_eq!(
            scan_local("--archive", &spec)["digest"],
            json["digest"],
            "{spec}"
        );
    }
}

/// A gzip layer file whose uncompressed tar is not what the config's diff ID says (the file is
/// a valid gzip of a valid tar, and its name matches its own digest, as a real producer would
/// write it): refused, naming the image, the layer and both digests.
#[test]
fn gzip_layer_that_does_not_match_its_diff_id_is_refused() {
    let source = path("docker-gzip.tar");
    let manifest: Value = serde_json::from_slice(&read_member(&source, "manifest.json")).unwrap();
    let config_name = manifest[0]["Config"].as_str().unwrap().to_string();
    let config: Value = serde_json::from_slice(&read_member(&source, &config_name)).unwrap();
    let layer_names: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();

    // Layer 1 (the COPY) with one byte of settings.conf changed: the tar stays valid.
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&read_member(&source, &layer_names[1])[..])
        .read_to_end(&mut tar)
        .unwrap();
    let at = tar
        .windows(10)
        .position(|w| w == b"setting=1\n")
        .expect("settings.conf in the COPY layer");
    tar[at + 8] = b'X';
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let tampered = gz.finish().unwrap();
    let tampered_name = format!("{}.tar.gz", &sha256(&tampered)["sha256:".len()..]);

    let mut names = layer_names.clone();
    names[1] = tampered_name.clone();
    let new_manifest = json!([{
        "Config": config_name,
        "RepoTags": manifest[0]["RepoTags"],
        "Layers": names,
    }]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tampered.tar");
    let mut out = tar::Builder::new(std::fs::File::create(&file).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, &read_member(&source, &config_name));
    for (i, name) in names.iter().enumerate() {
        if i == 1 {
            add(name, &tampered);
        } else {
            add(name, &read_member(&source, name));
        }
    }
    add("manifest.json", new_manifest.to_string().as_bytes());
    out.finish().unwrap();

    let file = file.to_str().unwrap();
    let (code, json, stderr) = scan_json(&["--archive", file]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(json, Value::Null);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let diff_id = config["rootfs"]["diff_ids"][1].as_str().unwrap();
    for needle in [
        file.to_string(),
        format!("layer 1 ({diff_id})"),
        format!("diff_id mismatch in layer file {tampered_name} (Gzip)"),
        format!("the config's diff_id is {diff_id}"),
        format!("the uncompressed content hashes to {}", sha256(&tar)),
    ] {
        assert!(stderr.contains(&needle), "missing {needle:?} in: {stderr}");
    }
}

/// skopeo's docker-archive also holds the legacy `ID/layer.tar` entries (symlinks to the layer
/// files), which a `manifest.json` written by Docker before 25 names instead: the same archive
/// with its manifest.json naming them reads to the same figures.
#[test]
fn docker_save_archive_naming_legacy_layer_symlinks() {
    let source = path("skopeo-docker.tar");
    let manifest: Value = serde_json::from_slice(&read_member(&source, "manifest.json")).unwrap();
    let mut links = HashMap::new();
    let mut tar_in = tar::Archive::new(std::fs::File::open(&source).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("legacy.tar");
    let mut out = tar::Builder::new(std::fs::File::create(&file).unwrap());
    for e in tar_in.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_str().unwrap().to_string();
        if name == "manifest.json" {
            continue;
        }
        if e.header().entry_type().is_symlink() {
            let target = e.link_name().unwrap().unwrap();
            let target = target
                .to_str()
                .unwrap()
                .trim_start_matches("../")
                .to_string();
            links.insert(target, name.clone());
        }
        let mut header = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.append_data(&mut header, &name, &data[..]).unwrap();
    }
    let legacy: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| links[n.as_str().unwrap()].clone())
        .collect();
    assert!(
        legacy.iter().all(|n| n.ends_with("/layer.tar")),
        "{legacy:?}"
    );
    let rewritten = json!([{
        "Config": manifest[0]["Config"],
        "RepoTags": manifest[0]["RepoTags"],
        "Layers": legacy,
    }]);
    let bytes = rewritten.to_string().into_bytes();
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    out.append_data(&mut h, "manifest.json", &bytes[..])
        .unwrap();
    out.finish().unwrap();
    drop(out);

    let json = scan_local("--archive", file.to_str().unwrap());
    check(&json, "docker-save archive naming ID/layer.tar symlinks");
    let plain = scan_local("--archive", &source);
    assert_eq!(json["pullBytes"], plain["pullBytes"]);
    assert_eq!(content_view(&json), content_view(&plain));
}

//! Hostile and broken input: every case ends with exit 2 and a message that names the image,
//! the layer and the problem. No panic, no partial report.

mod common;

use std::io::{Read, Write};

use common::*;
use imagebloat::analysis::{self, Compression as C, LayerLimits};
use imagebloat::testkit::{OCI_MANIFEST, OciLayout};
use serde_json::json;

/// Pushes a one-layer image whose layer blob is `blob` as given (its digest is correct, its
/// content is not) and returns (reference, layer digest).
async fn push_raw_layer(name: &str, blob: Vec<u8>, media_type: &str) -> (String, String) {
    let mut image = ImageBuilder::new(vec![Layer::new("placeholder").sized("x", 10)]).build();
    let digest = sha256(&blob);
    image.blobs[0] = (digest.clone(), blob.clone());
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["layers"][0] = json!({"mediaType": media_type, "digest": digest, "size": blob.len()});
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    let r = format!("{}:1", repo(name));
    Pusher::plain().push(&image, &r).await;
    (r, digest)
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn assert_names_layer(stderr: &str, reference: &str, digest: &str) {
    assert!(stderr.contains(reference), "names the image: {stderr}");
    assert!(
        stderr.contains(&format!("layer 0 ({digest})")),
        "names the layer: {stderr}"
    );
}

#[tokio::test]
async fn corrupt_gzip_is_an_error_naming_the_layer() {
    let mut blob = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    blob.extend(noise(4096, 7));
    let (r, digest) = push_raw_layer("corrupt-gzip", blob, GZIP).await;
    let err = scan_fails(&r, &[]);
    assert_names_layer(&err, &r, &digest);
    assert!(err.contains("corrupt gzip stream"), "{err}");
}

#[tokio::test]
async fn truncated_gzip_stream_is_an_error_naming_the_layer() {
    let (tar, _) = Layer::new("t").sized("big", 200_000).into_tar();
    let mut gz = compress(&tar, Compression::Gzip);
    gz.truncate(gz.len() / 2);
    let (r, digest) = push_raw_layer("truncated-gzip", gz, GZIP).await;
    let err = scan_fails(&r, &[]);
    assert_names_layer(&err, &r, &digest);
    assert!(err.contains("corrupt gzip stream"), "{err}");
}

#[tokio::test]
async fn gzip_bomb_stops_at_the_uncompressed_cap() {
    // 256 MB of zeros compresses to about 250 kB.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::best(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(256 << 20);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, "zeros", std::io::repeat(0).take(256 << 20))
        .unwrap();
    let blob = tar.into_inner().unwrap().finish().unwrap();
    assert!(blob.len() < 1 << 20);
    let (r, digest) = push_raw_layer("bomb", blob, GZIP).await;
    let err = scan_fails(&r, &["--max-layer-bytes", "64MiB"]);
    assert_names_layer(&err, &r, &digest);
    assert!(err.contains("exceeds the limit of 67108864 bytes"), "{err}");
    // Under a cap it fits, it is an ordinary (if silly) layer.
    let json = scan_ok(&r, &["--max-layer-bytes", "1GiB"]);
    assert_eq!(u(&json, "sizeBytes"), 256 << 20);
}

#[tokio::test]
async fn path_climbing_out_of_the_root_is_refused() {
    let (tar, _) = Layer::new("evil")
        .file("ok", b"fine")
        .raw_name(b"../../etc/passwd", b"root::0:0::/:/bin/sh\n")
        .into_tar();
    let (r, digest) = push_raw_layer("climb", compress(&tar, Compression::Gzip), GZIP).await;
    let err = scan_fails(&r, &[]);
    assert_names_layer(&err, &r, &digest);
    assert!(
        err.contains("../../etc/passwd") && err.contains("climbs out of the root"),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_instead_of_a_tar_is_an_error_naming_the_layer() {
    let (r, digest) = push_raw_layer(
        "not-tar",
        noise(10_000, 3),
        "application/vnd.oci.image.layer.v1.tar",
    )
    .await;
    let err = scan_fails(&r, &[]);
    assert_names_layer(&err, &r, &digest);
    assert!(err.contains("invalid tar stream"), "{err}");
}

#[tokio::test]
async fn unsupported_layer_media_type_is_named() {
    let (tar, _) = Layer::new("x").sized("a", 100).into_tar();
    let (r, digest) = push_raw_layer(
        "wasm",
        compress(&tar, Compression::Gzip),
        "application/vnd.wasm.content.layer.v1+wasm",
    )
    .await;
    let err = scan_fails(&r, &[]);
    assert_names_layer(&err, &r, &digest);
    assert!(
        err.contains("unsupported media type \"application/vnd.wasm.content.layer.v1+wasm\""),
        "{err}"
    );
}

/// An OCI layout in a temporary directory, for manifests a registry would refuse to store.
struct Layout {
    _dir: tempfile::TempDir,
    layout: OciLayout,
}

impl Layout {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        Layout { _dir: dir, layout }
    }

    fn blob(&self, bytes: &[u8]) -> (String, usize) {
        (self.layout.write_blob(bytes).unwrap(), bytes.len())
    }

    fn tag(&mut self, manifest: &[u8], tag: &str) -> String {
        self.layout.tag(manifest, OCI_MANIFEST, tag, None).unwrap();
        self.layout.spec(tag)
    }

    fn config(&self) -> serde_json::Value {
        let (d, n) = self.blob(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        json!({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": n})
    }
}

fn scan_layout_fails(spec: &str) -> String {
    let (code, json, stderr) = scan_json(&["--oci-layout", spec]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(json, serde_json::Value::Null);
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn malformed_manifests_are_clear_errors() {
    let mut l = Layout::new();
    let spec = l.tag(b"{not json", "garbage");
    assert!(scan_layout_fails(&spec).contains("invalid manifest"));

    let config = l.config();
    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": config, "layers": "nope"});
    let spec = l.tag(m.to_string().as_bytes(), "layers-not-a-list");
    let err = scan_layout_fails(&spec);
    assert!(
        err.contains("invalid manifest") && err.contains("layers-not-a-list"),
        "{err}"
    );

    let m = json!({"schemaVersion": 1, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": config, "layers": []});
    let spec = l.tag(m.to_string().as_bytes(), "schema1");
    assert!(scan_layout_fails(&spec).contains("schemaVersion 1"));

    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": config,
                   "layers": [{"mediaType": GZIP, "digest": "sha256:1234", "size": 10}]});
    let spec = l.tag(m.to_string().as_bytes(), "bad-digest");
    assert!(scan_layout_fails(&spec).contains("invalid digest \"sha256:1234\""));

    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": config,
                   "layers": [{"mediaType": GZIP, "digest": sha256(b"x"), "size": -5}]});
    let spec = l.tag(m.to_string().as_bytes(), "negative");
    assert!(scan_layout_fails(&spec).contains("negative size -5"));
}

#[test]
fn config_that_is_not_json_is_a_clear_error() {
    let mut l = Layout::new();
    let (d, n) = l.blob(b"\x00\x01 not a config");
    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d, "size": n},
                   "layers": []});
    let spec = l.tag(m.to_string().as_bytes(), "badconfig");
    assert!(scan_layout_fails(&spec).contains("invalid image config"));
}

#[test]
fn a_local_blob_that_does_not_match_its_digest_is_refused() {
    let mut l = Layout::new();
    let (tar, _) = Layer::new("x").sized("a", 1000).into_tar();
    let (d, n) = l.blob(&tar);
    // Replace the blob's content behind its name.
    let mut tampered = tar.clone();
    tampered[600] ^= 0xff;
    std::fs::write(l.layout.blob_path(&d), &tampered).unwrap();
    let config = l.config();
    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": config,
                   "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}]});
    let spec = l.tag(m.to_string().as_bytes(), "tampered");
    let err = scan_layout_fails(&spec);
    assert!(
        err.contains(&format!("layer 0 ({d})")) && err.contains("digest mismatch"),
        "{err}"
    );
}

#[test]
fn non_distributable_layers_are_noted_not_fatal() {
    let mut l = Layout::new();
    let (tar, _) = Layer::new("app").sized("app/bin", 1234).into_tar();
    let (d, n) = l.blob(&tar);
    let foreign = json!({
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "digest": sha256(b"windows base"), "size": 5000,
        "urls": ["https://example.invalid/base.tar.gz"]
    });
    let config = l.config();
    let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": config,
                   "layers": [foreign, {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}]});
    let spec = l.tag(m.to_string().as_bytes(), "foreign");
    let (code, json, stderr) = scan_json(&["--oci-layout", &spec]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(u(&json, "sizeBytes"), 1234);
    assert_eq!(u(&json, "pullBytes"), 5000 + n as u64);
    assert!(
        json["layers"][0]["skipped"]
            .as_str()
            .unwrap()
            .contains("non-distributable")
    );
    assert!(json["notes"][0].as_str().unwrap().contains("layer 0"));
}

/// A plain tar of `n` empty files, produced on the fly (never held in memory).
struct ManyEntries {
    n: u64,
    next: u64,
    block: [u8; 512],
    pos: usize,
    trailer: usize,
}

impl ManyEntries {
    fn new(n: u64) -> Self {
        ManyEntries {
            n,
            next: 0,
            block: [0; 512],
            pos: 512,
            trailer: 1024,
        }
    }
}

impl Read for ManyEntries {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == 512 {
            if self.next < self.n {
                let mut h = tar::Header::new_ustar();
                h.set_path(format!("d{:03}/f{:07}", self.next % 1000, self.next))
                    .unwrap();
                h.set_size(0);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                self.block.copy_from_slice(h.as_bytes());
                self.next += 1;
                self.pos = 0;
            } else if self.trailer > 0 {
                let n = buf.len().min(self.trailer);
                buf[..n].fill(0);
                self.trailer -= n;
                return Ok(n);
            } else {
                return Ok(0);
            }
        }
        let n = buf.len().min(512 - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn a_million_tiny_entries_index_in_bounded_memory() {
    const N: u64 = 1_000_000;
    let index = analysis::index_layer(ManyEntries::new(N), C::Plain, &LayerLimits::default())
        .expect("a large but valid layer");
    assert_eq!(index.len() as u64, N);
    assert_eq!(index.uncompressed_bytes, N * 512 + 1024);
    // 24 bytes of record plus the 13-byte path per entry, with vector slack: well under 64.
    let per_entry = index.heap_bytes() as f64 / N as f64;
    assert!(per_entry < 64.0, "{per_entry:.1} bytes per entry");

    let layer = analysis::LayerInput {
        digest: "sha256:x".into(),
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        pull_bytes: index.uncompressed_bytes,
        index: Some(&index),
        skipped: None,
    };
    let a = analysis::analyze(&analysis::ImageInput {
        layers: vec![layer],
        ..Default::default()
    });
    assert_eq!(
        (
            a.totals.size_bytes,
            a.totals.final_bytes,
            a.totals.efficiency
        ),
        (0, 0, 1.0)
    );
    assert_eq!(a.layers[0].file_count, N);
}

#[test]
fn more_entries_than_the_cap_is_a_clear_error() {
    let limits = LayerLimits {
        max_entries: 1000,
        ..Default::default()
    };
    let err = analysis::index_layer(ManyEntries::new(5000), C::Plain, &limits).unwrap_err();
    assert!(err.to_string().contains("more than 1000 entries"), "{err}");
}

#[test]
fn gzip_with_trailing_garbage_is_refused() {
    let (tar, _) = Layer::new("x").sized("a", 100).into_tar();
    let mut gz = compress(&tar, Compression::Gzip);
    gz.write_all(b"trailing junk that is not gzip").unwrap();
    let err = analysis::index_layer(&gz[..], C::Gzip, &LayerLimits::default()).unwrap_err();
    assert!(err.to_string().contains("corrupt gzip stream"), "{err}");
}

#[test]
fn multi_member_gzip_is_one_layer() {
    let (tar, _) = Layer::new("x").sized("a", 3000).sized("b", 5000).into_tar();
    let (first, second) = tar.split_at(1024);
    let mut gz = compress(first, Compression::Gzip);
    gz.extend(compress(second, Compression::Gzip));
    let index = analysis::index_layer(&gz[..], C::Gzip, &LayerLimits::default()).unwrap();
    assert_eq!(index.size_bytes, 8000);
    assert_eq!(index.uncompressed_bytes, tar.len() as u64);
}

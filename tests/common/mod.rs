//! Test images built byte by byte, pushed to the real registries that `scripts/testenv.sh`
//! starts, and the `imagebloat` binary run against them.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Output};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A variable set by `scripts/testenv.sh`; the tests cannot run without the real registries.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts the registries")
    })
}

pub fn registry() -> String {
    env("IMAGEBLOAT_TEST_REGISTRY")
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic bytes that do not compress (so compressed sizes are realistic).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    Oci,
    Docker,
}

/// One layer's tar stream, written entry by entry.
pub struct Layer {
    tar: tar::Builder<Vec<u8>>,
    pub created_by: String,
}

impl Layer {
    pub fn new(created_by: &str) -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Layer {
            tar,
            created_by: created_by.to_string(),
        }
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        h
    }

    pub fn file(mut self, path: &str, content: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, content.len() as u64);
        self.tar.append_data(&mut h, path, content).unwrap();
        self
    }

    /// A regular file of `len` incompressible bytes.
    pub fn sized(self, path: &str, len: usize) -> Self {
        let seed = path.len() as u64 * 31 + len as u64;
        self.file(path, &noise(len, seed))
    }

    pub fn dir(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, 0);
        self.tar.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    /// `.wh.NAME` removing `path` from lower layers.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"")
    }

    /// `.wh..wh..opq` making `dir` opaque.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    /// An entry whose name is written into the header as it is, bypassing the tar writer's own
    /// checks (for hostile names such as `../x`).
    pub fn raw_name(mut self, name: &[u8], content: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, content.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.tar.append(&h, content).unwrap();
        self
    }

    pub fn into_tar(self) -> (Vec<u8>, String) {
        (self.tar.into_inner().unwrap(), self.created_by)
    }
}

pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::Plain => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

pub fn layer_media_type(f: Flavor, c: Compression) -> &'static str {
    match (f, c) {
        (Flavor::Oci, Compression::Plain) => "application/vnd.oci.image.layer.v1.tar",
        (Flavor::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Flavor::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (Flavor::Docker, Compression::Plain) => "application/vnd.docker.image.rootfs.diff.tar",
        (Flavor::Docker, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (Flavor::Docker, Compression::Zstd) => "application/vnd.docker.image.rootfs.diff.tar.zstd",
    }
}

/// An image ready to push: blobs and a manifest.
pub struct Image {
    pub blobs: Vec<(String, Vec<u8>)>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    /// Compressed layer sizes in order.
    pub layer_sizes: Vec<u64>,
}

impl Image {
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn pull_bytes(&self) -> u64 {
        self.layer_sizes.iter().sum()
    }
}

pub struct ImageBuilder {
    pub layers: Vec<Layer>,
    pub compression: Compression,
    pub flavor: Flavor,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    /// Overrides the media type of every layer.
    pub layer_media_type: Option<String>,
    pub annotations: Option<Value>,
}

impl ImageBuilder {
    pub fn new(layers: Vec<Layer>) -> Self {
        ImageBuilder {
            layers,
            compression: Compression::Gzip,
            flavor: Flavor::Oci,
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            layer_media_type: None,
            annotations: None,
        }
    }

    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    pub fn flavor(mut self, f: Flavor) -> Self {
        self.flavor = f;
        self
    }

    pub fn platform(mut self, arch: &str, variant: Option<&str>) -> Self {
        self.architecture = arch.into();
        self.variant = variant.map(str::to_string);
        self
    }

    pub fn build(self) -> Image {
        let mut blobs = Vec::new();
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        let mut history = Vec::new();
        let mut layer_sizes = Vec::new();
        let media = self
            .layer_media_type
            .clone()
            .unwrap_or_else(|| layer_media_type(self.flavor, self.compression).to_string());
        for layer in self.layers {
            let (tar, created_by) = layer.into_tar();
            diff_ids.push(sha256(&tar));
            let blob = compress(&tar, self.compression);
            let digest = sha256(&blob);
            descriptors.push(json!({"mediaType": media, "digest": digest, "size": blob.len()}));
            layer_sizes.push(blob.len() as u64);
            history.push(json!({"created_by": created_by}));
            blobs.push((digest, blob));
        }
        let mut config = json!({
            "architecture": self.architecture,
            "os": self.os,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
            "config": {},
        });
        if let Some(v) = &self.variant {
            config["variant"] = json!(v);
        }
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = sha256(&config);
        let (manifest_type, config_type) = match self.flavor {
            Flavor::Oci => (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            ),
            Flavor::Docker => (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            ),
        };
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        });
        if let Some(a) = self.annotations {
            manifest["annotations"] = a;
        }
        blobs.push((config_digest, config));
        Image {
            blobs,
            manifest: serde_json::to_vec(&manifest).unwrap(),
            manifest_media_type: manifest_type.to_string(),
            layer_sizes,
        }
    }
}

/// Pushes with oci-client, as a build tool would.
pub struct Pusher {
    client: Client,
    auth: RegistryAuth,
}

impl Pusher {
    pub fn plain() -> Self {
        Self::with(ClientProtocol::Http, RegistryAuth::Anonymous, vec![])
    }

    /// Pushes to the basic-auth registry (B) with its test user.
    pub fn basic_auth() -> Self {
        Self::with(
            ClientProtocol::Http,
            RegistryAuth::Basic(
                env("IMAGEBLOAT_TEST_REGISTRY_USER"),
                env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD"),
            ),
            vec![],
        )
    }

    pub fn with(
        protocol: ClientProtocol,
        auth: RegistryAuth,
        ca: Vec<oci_client::client::Certificate>,
    ) -> Self {
        let client = Client::new(ClientConfig {
            protocol,
            extra_root_certificates: ca,
            ..Default::default()
        });
        Pusher { client, auth }
    }

    pub async fn push(&self, image: &Image, reference: &str) -> String {
        let r: Reference = reference.parse().unwrap();
        self.client
            .auth(&r, &self.auth, RegistryOperation::Push)
            .await
            .expect("registry auth for push");
        for (digest, blob) in &image.blobs {
            self.client
                .push_blob(&r, blob.clone(), digest)
                .await
                .unwrap_or_else(|e| panic!("push blob {digest} to {reference}: {e}"));
        }
        self.push_manifest(&r, &image.manifest, &image.manifest_media_type)
            .await;
        image.digest()
    }

    pub async fn push_manifest(&self, r: &Reference, bytes: &[u8], media_type: &str) {
        self.client
            .push_manifest_raw(r, bytes.to_vec(), media_type.parse().unwrap())
            .await
            .unwrap_or_else(|e| panic!("push manifest to {}: {e}", r.whole()));
    }

    /// Pushes several images and an index over them under `reference`.
    pub async fn push_index(
        &self,
        images: &[(&Image, &str, &str, Option<&str>)],
        reference: &str,
    ) -> String {
        let r: Reference = reference.parse().unwrap();
        let mut entries = Vec::new();
        for (image, os, arch, variant) in images {
            let digest = image.digest();
            let by_digest = format!("{}/{}@{digest}", r.registry(), r.repository());
            self.push(image, &by_digest).await;
            let mut platform = json!({"os": os, "architecture": arch});
            if let Some(v) = variant {
                platform["variant"] = json!(v);
            }
            entries.push(json!({
                "mediaType": image.manifest_media_type,
                "digest": digest,
                "size": image.manifest.len(),
                "platform": platform,
            }));
        }
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .unwrap();
        self.push_manifest(&r, &index, "application/vnd.oci.image.index.v1+json")
            .await;
        sha256(&index)
    }
}

/// Lines of the plain registry's (A's) access log that contain `needle`, e.g.
/// `"GET /v2/REPO/blobs/`.
pub fn registry_log(needle: &str) -> Vec<String> {
    std::fs::read_to_string(env("IMAGEBLOAT_TEST_REGISTRY_LOG"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A repository name unique to this test run.
pub fn repo(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}/test/{name}-{}-{nanos}", registry(), std::process::id())
}

pub fn imagebloat(args: &[&str]) -> Output {
    imagebloat_with(args, &[])
}

/// Runs the binary with no docker config of the user's, plus the given variables.
pub fn imagebloat_with(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagebloat"));
    cmd.args(args)
        .env("IMAGEBLOAT_LOG", "warn")
        .env_remove("DOCKER_CONFIG")
        .env("HOME", std::env::temp_dir());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run imagebloat")
}

/// Runs `scan --output json` and returns (exit code, JSON or Null, stderr).
pub fn scan_json(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["scan", "--output", "json"];
    all.extend_from_slice(args);
    let out = imagebloat(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// Scans a plain-HTTP test registry image and insists on success.
pub fn scan_ok(reference: &str, extra: &[&str]) -> Value {
    let reg = registry();
    let mut args = vec!["--insecure-registry", reg.as_str()];
    args.extend_from_slice(extra);
    args.push(reference);
    let (code, json, stderr) = scan_json(&args);
    assert_eq!(code, 0, "scan {reference} failed: {stderr}");
    json
}

/// Scans and expects exit 2; returns stderr.
pub fn scan_fails(reference: &str, extra: &[&str]) -> String {
    let reg = registry();
    let mut args = vec!["--insecure-registry", reg.as_str(), "--retries", "1"];
    args.extend_from_slice(extra);
    args.push(reference);
    let (code, _, stderr) = scan_json(&args);
    assert_eq!(
        code, 2,
        "scan {reference} should fail with exit 2; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    stderr
}

pub fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

//! The tests' side of the test environment: the real registries that `scripts/testenv.sh`
//! starts, test images pushed to them (written with `imagebloat::testkit`, re-exported here),
//! and the `imagebloat` binary run against them.
#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

// Test images are written by the crate's testkit; each test binary uses a part of it.
#[allow(unused_imports)]
pub use imagebloat::testkit::{
    Compression, Flavor, Image, ImageBuilder, Layer, Pusher, compress, layer_media_type, noise,
    sha256,
};

/// A variable set by `scripts/testenv.sh`; the tests cannot run without the real registries.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh, which starts the registries")
    })
}

pub fn registry() -> String {
    env("IMAGEBLOAT_TEST_REGISTRY")
}

/// The test env's basic-auth registry (B) as a [`Pusher`] sees it.
pub trait BasicAuthPusher {
    /// Pushes to the basic-auth registry with its test user.
    fn basic_auth() -> Self;
}

impl BasicAuthPusher for Pusher {
    fn basic_auth() -> Self {
        Pusher::basic(
            &env("IMAGEBLOAT_TEST_REGISTRY_USER"),
            &env("IMAGEBLOAT_TEST_REGISTRY_PASSWORD"),
        )
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

/// The OCI layout of scripts/lazy-images.sh (the realistic image and edge cases in eStargz and
/// zstd:chunked, written by skopeo and ctr-remote): `IMAGEBLOAT_TEST_LAZY_LAYOUT` or the cache.
pub fn lazy_layout() -> std::path::PathBuf {
    use std::path::PathBuf;
    let dir = match std::env::var_os("IMAGEBLOAT_TEST_LAZY_LAYOUT") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .expect("HOME or XDG_CACHE_HOME");
            cache.join("imagebloat-testenv/lazy-v2")
        }
    };
    assert!(
        dir.join("index.json").is_file(),
        "no lazy-format images at {}: run scripts/lazy-images.sh (or set IMAGEBLOAT_TEST_LAZY_LAYOUT)",
        dir.display()
    );
    dir
}

/// A JSON file, which must exist and parse.
pub fn read_json(path: impl AsRef<std::path::Path>) -> Value {
    let path = path.as_ref();
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Resets the fault proxy (`IMAGEBLOAT_TEST_FAULT_PROXY`: faults and its request log), then
/// arms `body` (scripts/fault_proxy.py documents the faults); a null body only resets.
pub async fn fault(body: Value) {
    let proxy = env("IMAGEBLOAT_TEST_FAULT_PROXY");
    let client = reqwest::Client::new();
    client
        .post(format!("http://{proxy}/_fault/reset"))
        .send()
        .await
        .unwrap();
    if !body.is_null() {
        let r = client
            .post(format!("http://{proxy}/_fault"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

/// The fault proxy's log of the requests since its last reset.
pub async fn fault_log() -> Vec<Value> {
    let proxy = env("IMAGEBLOAT_TEST_FAULT_PROXY");
    let body = reqwest::get(format!("http://{proxy}/_fault/log"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).expect("fault proxy log is JSON")
}

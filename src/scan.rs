//! The one analysis entry point: an image source in, an [`ImageAnalysis`] out.
//!
//! Used by `imagebloat scan` and by the operator alike. It resolves the manifest (choosing a
//! platform from an index), reads the config for the history, and streams each layer exactly
//! once into [`index_layer`] on a blocking thread, while the async side downloads and hashes the
//! blob on the other core. Layer indexes go into a [`LayerCache`] keyed by digest, so images
//! that share layers share the work, and concurrent requests for one layer wait for one read.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use serde::Deserialize;

use crate::analysis::{
    self, HistoryEntry, ImageAnalysis, ImageInput, LayerIndex, LayerInput, LayerLimits,
    LayerMediaType,
};
use crate::digest::{Digest, VerifyingReader};
use crate::registry::{Credential, Platform, RawManifest, Reference, Registry, RegistryError};

const INDEX_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const IMAGE_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Image configs larger than this are refused.
const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// Where an image comes from.
#[derive(Clone)]
pub enum ImageSource {
    /// A registry, with the credentials that apply to this image (most specific first).
    Registry {
        registry: Registry,
        reference: Reference,
        credentials: Vec<Credential>,
    },
    /// An OCI image layout directory; `tag` picks a manifest by its ref name annotation.
    Layout { dir: PathBuf, tag: Option<String> },
    /// A `docker save` tarball or an OCI archive (an OCI layout in a tar).
    Archive { file: PathBuf, tag: Option<String> },
}

impl ImageSource {
    /// How the image is named in findings and errors.
    pub fn display_name(&self) -> String {
        match self {
            ImageSource::Registry { reference, .. } => reference.whole(),
            ImageSource::Layout { dir, tag } | ImageSource::Archive { file: dir, tag } => match tag
            {
                Some(t) => format!("{}:{t}", dir.display()),
                None => dir.display().to_string(),
            },
        }
    }
}

/// How to scan.
#[derive(Clone)]
pub struct ScanOptions {
    pub platform: Platform,
    pub limits: LayerLimits,
    /// Layers read at once (each takes one blocking thread for decompression).
    pub layer_concurrency: usize,
    /// Told about each layer as it finishes.
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            platform: Platform::default(),
            limits: LayerLimits::default(),
            layer_concurrency: 2,
            progress: None,
        }
    }
}

/// A progress event.
#[derive(Debug, Clone)]
pub struct Progress {
    pub layers_done: usize,
    pub layers_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The result of one scan.
#[derive(Debug, Clone)]
pub struct ScannedImage {
    /// The image as named by the user, normalised (`docker.io/library/nginx:latest`).
    pub image: String,
    /// The digest of the platform's image manifest.
    pub digest: String,
    /// The digest of the index the manifest was chosen from, if any.
    pub index_digest: Option<String>,
    /// `os/architecture[/variant]` from the image config.
    pub platform: String,
    pub media_type: String,
    pub analysis: ImageAnalysis,
}

/// Why a scan failed. The message names the image, the layer when one is at fault, and what
/// was wrong.
#[derive(Debug)]
pub struct ScanError {
    pub image: String,
    /// `(position, digest)` of the layer at fault.
    pub layer: Option<(usize, String)>,
    pub kind: ScanErrorKind,
}

/// The part of a [`ScanError`] that says what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ScanErrorKind {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Layer(#[from] analysis::LayerError),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("invalid image config: {0}")]
    Config(String),
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("no manifest for platform {wanted}; the index offers: {available}")]
    NoPlatform { wanted: String, available: String },
    #[error("{0}")]
    Local(String),
}

impl ScanErrorKind {
    /// A short machine-readable reason (conditions, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            ScanErrorKind::Registry(e) => e.reason(),
            ScanErrorKind::Layer(analysis::LayerError::Source(_)) => "BlobReadFailed",
            ScanErrorKind::Layer(_) => "InvalidLayer",
            ScanErrorKind::Manifest(_) => "InvalidManifest",
            ScanErrorKind::Config(_) => "InvalidConfig",
            ScanErrorKind::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ScanErrorKind::NoPlatform { .. } => "NoMatchingPlatform",
            ScanErrorKind::Local(_) => "LocalImageError",
        }
    }
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.image)?;
        if let Some((i, digest)) = &self.layer {
            write!(f, ": layer {i} ({digest})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for ScanError {}

/// Layer indexes by digest, shared across scans. Concurrent requests for one layer wait for a
/// single read; a failed read is retried by the next request. Indexes beyond a byte budget are
/// dropped oldest first (a later image with that layer reads it again).
#[derive(Clone)]
pub struct LayerCache {
    inner: Arc<std::sync::Mutex<CacheInner>>,
    budget: usize,
    hits: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct CacheInner {
    cells: HashMap<String, Arc<LayerCell>>,
    /// Filled cells in the order they were filled, with their heap bytes.
    order: std::collections::VecDeque<(String, usize)>,
    bytes: usize,
}

/// One layer's index, filled once.
type LayerCell = tokio::sync::OnceCell<Arc<LayerIndex>>;

impl Default for LayerCache {
    fn default() -> Self {
        Self::with_budget(usize::MAX)
    }
}

impl LayerCache {
    /// A cache that keeps at most about `budget` bytes of indexes.
    pub fn with_budget(budget: usize) -> Self {
        LayerCache {
            inner: Arc::default(),
            budget,
            hits: Arc::default(),
        }
    }

    pub fn get(&self, digest: &str) -> Option<Arc<LayerIndex>> {
        let inner = self.inner.lock().expect("layer cache lock");
        inner.cells.get(digest)?.get().cloned()
    }

    /// Indexes held.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("layer cache lock").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Heap bytes held by the indexes.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("layer cache lock").bytes
    }

    async fn get_or_index<F, Fut, E>(&self, digest: &str, read: F) -> Result<Arc<LayerIndex>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<LayerIndex>, E>>,
    {
        let cell = {
            let mut inner = self.inner.lock().expect("layer cache lock");
            inner.cells.entry(digest.to_string()).or_default().clone()
        };
        let mut filled = false;
        let index = cell
            .get_or_try_init(|| {
                filled = true;
                read()
            })
            .await?
            .clone();
        if !filled {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            let mut inner = self.inner.lock().expect("layer cache lock");
            let size = index.heap_bytes();
            inner.order.push_back((digest.to_string(), size));
            inner.bytes += size;
            while inner.bytes > self.budget && inner.order.len() > 1 {
                let (old, size) = inner.order.pop_front().expect("non-empty");
                inner.cells.remove(&old);
                inner.bytes -= size;
            }
        }
        Ok(index)
    }
}

#[derive(Debug, Default, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    history: Vec<HistoryEntry>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Debug, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Scans one image.
pub async fn scan(
    source: &ImageSource,
    options: &ScanOptions,
    cache: &LayerCache,
) -> Result<ScannedImage, ScanError> {
    let image = source.display_name();
    let fail = |kind: ScanErrorKind| ScanError {
        image: image.clone(),
        layer: None,
        kind,
    };
    let opened = Opened::open(source).await.map_err(&fail)?;
    let root = opened.root_manifest().await.map_err(&fail)?;

    let (manifest_raw, index_digest) =
        if INDEX_MEDIA_TYPES.contains(&root.media_type.as_str()) || looks_like_index(&root.bytes) {
            let index: OciImageIndex = serde_json::from_slice(&root.bytes)
                .map_err(|e| fail(ScanErrorKind::Manifest(format!("index: {e}"))))?;
            let entry = options.platform.choose(&index.manifests).ok_or_else(|| {
                fail(ScanErrorKind::NoPlatform {
                    wanted: options.platform.to_string(),
                    available: Platform::list(&index.manifests).join(", "),
                })
            })?;
            let size = descriptor_size(entry.size).map_err(&fail)?;
            let m = opened
                .manifest_by_digest(&entry.digest, size)
                .await
                .map_err(&fail)?;
            (m, Some(root.digest.clone()))
        } else {
            (root, None)
        };
    if !IMAGE_MEDIA_TYPES.contains(&manifest_raw.media_type.as_str()) {
        return Err(fail(if manifest_raw.media_type.is_empty() {
            ScanErrorKind::Manifest("no mediaType, and not an image manifest".into())
        } else {
            ScanErrorKind::UnsupportedMediaType(manifest_raw.media_type.clone())
        }));
    }
    let manifest: OciImageManifest = serde_json::from_slice(&manifest_raw.bytes)
        .map_err(|e| fail(ScanErrorKind::Manifest(e.to_string())))?;
    if manifest.schema_version != 2 {
        return Err(fail(ScanErrorKind::Manifest(format!(
            "schemaVersion {} (only 2 is supported)",
            manifest.schema_version
        ))));
    }

    let config_size = descriptor_size(manifest.config.size).map_err(&fail)?;
    if config_size > MAX_CONFIG_BYTES {
        return Err(fail(ScanErrorKind::Config(format!(
            "{config_size} bytes is more than the {MAX_CONFIG_BYTES} accepted"
        ))));
    }
    let config_bytes = opened
        .small_blob(&manifest.config.digest, config_size)
        .await
        .map_err(&fail)?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| fail(ScanErrorKind::Config(e.to_string())))?;

    // Check every layer before reading any.
    let mut plan = Vec::with_capacity(manifest.layers.len());
    for (i, layer) in manifest.layers.iter().enumerate() {
        let at_layer = |kind| ScanError {
            image: image.clone(),
            layer: Some((i, layer.digest.clone())),
            kind,
        };
        let media = LayerMediaType::parse(&layer.media_type).ok_or_else(|| {
            at_layer(ScanErrorKind::UnsupportedMediaType(
                layer.media_type.clone(),
            ))
        })?;
        let size = descriptor_size(layer.size).map_err(at_layer)?;
        Digest::parse(&layer.digest)
            .map_err(|e| at_layer(ScanErrorKind::Manifest(e.to_string())))?;
        plan.push((layer, media, size));
    }

    let bytes_total: u64 = plan.iter().map(|(_, _, s)| *s).sum();
    let layers_total = plan.len();
    let tally = Tally {
        done: std::sync::Mutex::new((0, 0)),
        layers_total,
        bytes_total,
    };
    let mut reads = Vec::with_capacity(plan.len());
    for (i, &(layer, media, size)) in plan.iter().enumerate() {
        reads.push(read_layer(
            &opened, cache, options, &tally, &image, i, layer, media, size,
        ));
    }
    let indexes: Vec<Option<Arc<LayerIndex>>> = futures_util::stream::iter(reads)
        .buffered(options.layer_concurrency.max(1))
        .try_collect()
        .await?;

    let input = ImageInput {
        layers: plan
            .iter()
            .zip(&indexes)
            .map(|((layer, media, size), index)| LayerInput {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                pull_bytes: *size,
                index: index.as_deref(),
                skipped: media.non_distributable.then(|| {
                    "foreign or non-distributable layer: not fetched, its files are not counted"
                        .to_string()
                }),
            })
            .collect(),
        history: config.history.clone(),
        annotations: manifest
            .annotations
            .clone()
            .map(|a| a.into_iter().collect::<BTreeMap<_, _>>())
            .unwrap_or_default(),
    };
    if let Some(rootfs) = &config.rootfs
        && !rootfs.diff_ids.is_empty()
        && rootfs.diff_ids.len() != plan.len()
    {
        return Err(fail(ScanErrorKind::Config(format!(
            "rootfs lists {} layers, the manifest {}",
            rootfs.diff_ids.len(),
            plan.len()
        ))));
    }
    let analysis = analysis::analyze(&input);
    let platform = Platform::new(
        config.os.as_deref().unwrap_or("unknown"),
        config.architecture.as_deref().unwrap_or("unknown"),
        config.variant.as_deref(),
    );
    Ok(ScannedImage {
        image,
        digest: manifest_raw.digest,
        index_digest,
        platform: platform.to_string(),
        media_type: manifest_raw.media_type,
        analysis,
    })
}

/// Reads (or finds in the cache) one layer's index; `None` for layers that are not fetched.
#[allow(clippy::too_many_arguments)]
async fn read_layer(
    opened: &Opened<'_>,
    cache: &LayerCache,
    options: &ScanOptions,
    tally: &Tally,
    image: &str,
    position: usize,
    layer: &OciDescriptor,
    media: LayerMediaType,
    size: u64,
) -> Result<Option<Arc<LayerIndex>>, ScanError> {
    if media.non_distributable {
        return Ok(None);
    }
    let index = cache
        .get_or_index(&layer.digest, || {
            opened.index_layer(&layer.digest, size, media.compression, options.limits)
        })
        .await
        .map_err(|kind| ScanError {
            image: image.to_string(),
            layer: Some((position, layer.digest.clone())),
            kind,
        })?;
    if let Some(report) = &options.progress {
        let (layers_done, bytes_done) = {
            let mut done = tally.done.lock().expect("progress lock");
            done.0 += 1;
            done.1 += size;
            *done
        };
        report(Progress {
            layers_done,
            layers_total: tally.layers_total,
            bytes_done,
            bytes_total: tally.bytes_total,
        });
    }
    Ok(Some(index))
}

/// Progress across the layers of one scan.
struct Tally {
    done: std::sync::Mutex<(usize, u64)>,
    layers_total: usize,
    bytes_total: u64,
}

fn looks_like_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some() && v.get("layers").is_none())
}

fn descriptor_size(size: i64) -> Result<u64, ScanErrorKind> {
    u64::try_from(size).map_err(|_| ScanErrorKind::Manifest(format!("negative size {size}")))
}

/// A source made ready to read: for archives, the member offsets.
enum Opened<'a> {
    Registry {
        registry: &'a Registry,
        reference: &'a Reference,
        credentials: Vec<&'a Credential>,
    },
    Layout {
        dir: &'a Path,
        tag: Option<&'a str>,
    },
    Archive {
        file: &'a Path,
        tag: Option<&'a str>,
        members: HashMap<String, (u64, u64)>,
        /// Legacy docker save: member path by digest (layers by diff ID, and the config).
        legacy_members: std::sync::Mutex<HashMap<String, String>>,
    },
}

impl<'a> Opened<'a> {
    async fn open(source: &'a ImageSource) -> Result<Opened<'a>, ScanErrorKind> {
        Ok(match source {
            ImageSource::Registry {
                registry,
                reference,
                credentials,
            } => Opened::Registry {
                registry,
                reference,
                credentials: credentials.iter().collect(),
            },
            ImageSource::Layout { dir, tag } => Opened::Layout {
                dir,
                tag: tag.as_deref(),
            },
            ImageSource::Archive { file, tag } => {
                let path = file.clone();
                let members = tokio::task::spawn_blocking(move || archive_members(&path))
                    .await
                    .map_err(|e| ScanErrorKind::Local(e.to_string()))??;
                Opened::Archive {
                    file,
                    tag: tag.as_deref(),
                    members,
                    legacy_members: Default::default(),
                }
            }
        })
    }

    async fn root_manifest(&self) -> Result<RawManifest, ScanErrorKind> {
        match self {
            Opened::Registry {
                registry,
                reference,
                credentials,
            } => {
                let r = reference
                    .digest()
                    .or(reference.tag())
                    .unwrap_or("latest")
                    .to_string();
                Ok(registry.manifest(reference, &r, credentials).await?)
            }
            Opened::Layout { tag, .. } | Opened::Archive { tag, .. } => {
                if let Opened::Archive { members, .. } = self
                    && !members.contains_key("index.json")
                {
                    return self.docker_save_manifest(*tag).await;
                }
                let index_bytes = self.read_local("index.json", None, 1 << 20).await?;
                let index: OciImageIndex = serde_json::from_slice(&index_bytes)
                    .map_err(|e| ScanErrorKind::Manifest(format!("index.json: {e}")))?;
                fn named(e: &oci_client::manifest::ImageIndexEntry) -> Option<&str> {
                    e.annotations
                        .as_ref()
                        .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                        .map(String::as_str)
                }
                let entry = match tag {
                    Some(t) => index.manifests.iter().find(|e| named(e) == Some(*t)),
                    None if index.manifests.len() == 1 => index.manifests.first(),
                    None => None,
                };
                let Some(entry) = entry else {
                    let names: Vec<&str> = index.manifests.iter().filter_map(named).collect();
                    return Err(ScanErrorKind::Local(format!(
                        "no manifest named {:?} in index.json (it has: {})",
                        tag.unwrap_or(""),
                        if names.is_empty() {
                            "no names".to_string()
                        } else {
                            names.join(", ")
                        }
                    )));
                };
                let size = descriptor_size(entry.size)?;
                let mut m = self.manifest_by_digest(&entry.digest, size).await?;
                if m.media_type.is_empty() {
                    m.media_type = entry.media_type.clone();
                }
                Ok(m)
            }
        }
    }

    async fn manifest_by_digest(
        &self,
        digest: &str,
        size: u64,
    ) -> Result<RawManifest, ScanErrorKind> {
        match self {
            Opened::Registry {
                registry,
                reference,
                credentials,
            } => Ok(registry.manifest(reference, digest, credentials).await?),
            _ => {
                if size > crate::registry::MAX_MANIFEST_BYTES as u64 {
                    return Err(ScanErrorKind::Manifest(format!("{digest} is {size} bytes")));
                }
                let bytes = self.small_blob(digest, size).await?;
                let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                Ok(RawManifest {
                    bytes,
                    digest: digest.to_string(),
                    media_type,
                })
            }
        }
    }

    /// A whole blob (configs, manifests), verified.
    async fn small_blob(&self, digest: &str, size: u64) -> Result<Bytes, ScanErrorKind> {
        let expected = Digest::parse(digest).map_err(|e| ScanErrorKind::Manifest(e.to_string()))?;
        match self {
            Opened::Registry {
                registry,
                reference,
                credentials,
            } => {
                let mut stream =
                    Box::pin(registry.blob(reference, digest, size, credentials).await?);
                let mut out = Vec::with_capacity(size as usize);
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk?);
                }
                Ok(out.into())
            }
            _ => {
                let name = self.blob_member(&expected);
                self.read_local(&name, Some((&expected, size)), size).await
            }
        }
    }

    /// Reads a small member of a layout or archive.
    async fn read_local(
        &self,
        name: &str,
        verify: Option<(&Digest, u64)>,
        max: u64,
    ) -> Result<Bytes, ScanErrorKind> {
        let mut reader = self.open_local(name)?;
        let mut out = Vec::new();
        match verify {
            Some((d, size)) => VerifyingReader::new(reader, d, Some(size))
                .take(max + 1)
                .read_to_end(&mut out),
            None => (&mut reader).take(max + 1).read_to_end(&mut out),
        }
        .map_err(|e| ScanErrorKind::Local(format!("{name}: {e}")))?;
        if out.len() as u64 > max {
            return Err(ScanErrorKind::Local(format!(
                "{name} is larger than {max} bytes"
            )));
        }
        Ok(out.into())
    }

    fn open_local(&self, name: &str) -> Result<Box<dyn Read + Send>, ScanErrorKind> {
        match self {
            Opened::Layout { dir, .. } => {
                let path = dir.join(name);
                let f = File::open(&path)
                    .map_err(|e| ScanErrorKind::Local(format!("{}: {e}", path.display())))?;
                Ok(Box::new(BufReader::with_capacity(256 << 10, f)))
            }
            Opened::Archive { file, members, .. } => {
                let &(offset, len) = members.get(name).ok_or_else(|| {
                    ScanErrorKind::Local(format!("{} has no member {name}", file.display()))
                })?;
                let mut f = File::open(file)
                    .map_err(|e| ScanErrorKind::Local(format!("{}: {e}", file.display())))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| ScanErrorKind::Local(format!("{}: {e}", file.display())))?;
                Ok(Box::new(BufReader::with_capacity(256 << 10, f).take(len)))
            }
            Opened::Registry { .. } => unreachable!("registry blobs are not local files"),
        }
    }

    /// A legacy `docker save` archive (no index.json): synthesise a Docker v2 manifest from its
    /// manifest.json. Its layers are plain tars named by path, verified against the config's
    /// diff IDs (the digest of an uncompressed layer is its diff ID).
    async fn docker_save_manifest(&self, tag: Option<&str>) -> Result<RawManifest, ScanErrorKind> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let raw = self.read_local("manifest.json", None, 1 << 20).await?;
        let entries: Vec<Entry> = serde_json::from_slice(&raw)
            .map_err(|e| ScanErrorKind::Manifest(format!("manifest.json: {e}")))?;
        let entry = match tag {
            Some(t) => entries.iter().find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|r| r == t || r.rsplit_once(':').map(|(_, x)| x) == Some(t))
            }),
            None if entries.len() == 1 => entries.first(),
            None => None,
        }
        .ok_or_else(|| {
            ScanErrorKind::Local(format!(
                "manifest.json has {} images and none is tagged {:?}",
                entries.len(),
                tag.unwrap_or("")
            ))
        })?;
        let config = self
            .read_local(&entry.config, None, MAX_CONFIG_BYTES)
            .await?;
        let parsed: ImageConfig =
            serde_json::from_slice(&config).map_err(|e| ScanErrorKind::Config(e.to_string()))?;
        let diff_ids = parsed.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != entry.layers.len() {
            return Err(ScanErrorKind::Config(format!(
                "rootfs lists {} layers, manifest.json {}",
                diff_ids.len(),
                entry.layers.len()
            )));
        }
        let Opened::Archive {
            members,
            legacy_members,
            ..
        } = self
        else {
            unreachable!("docker save archives only")
        };
        let mut legacy = legacy_members.lock().expect("legacy layer map");
        let layers = entry
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(path, diff_id)| {
                let (_, len) = members.get(path.as_str()).ok_or_else(|| {
                    ScanErrorKind::Local(format!("manifest.json names missing member {path}"))
                })?;
                legacy.insert(diff_id.clone(), path.clone());
                Ok(OciDescriptor {
                    media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
                    digest: diff_id.clone(),
                    size: *len as i64,
                    ..Default::default()
                })
            })
            .collect::<Result<Vec<_>, ScanErrorKind>>()?;
        let config_digest = Digest::sha256_of(&config).to_string();
        legacy.insert(config_digest.clone(), entry.config.clone());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers,
        });
        let bytes: Bytes = serde_json::to_vec(&manifest).expect("json").into();
        Ok(RawManifest {
            digest: Digest::sha256_of(&bytes).to_string(),
            bytes,
            media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
        })
    }

    /// Streams one layer into a new index on a blocking thread.
    async fn index_layer(
        &self,
        digest: &str,
        size: u64,
        compression: analysis::Compression,
        limits: LayerLimits,
    ) -> Result<Arc<LayerIndex>, ScanErrorKind> {
        let expected = Digest::parse(digest).map_err(|e| ScanErrorKind::Manifest(e.to_string()))?;
        let reader: Box<dyn Read + Send> = match self {
            Opened::Registry {
                registry,
                reference,
                credentials,
            } => {
                let stream = registry.blob(reference, digest, size, credentials).await?;
                Box::new(ChannelReader::spawn(stream))
            }
            Opened::Layout { .. } | Opened::Archive { .. } => {
                let name = self.blob_member(&expected);
                Box::new(VerifyingReader::new(
                    self.open_local(&name)?,
                    &expected,
                    Some(size),
                ))
            }
        };
        let index = tokio::task::spawn_blocking(move || {
            analysis::index_layer(reader, compression, &limits)
        })
        .await
        .map_err(|e| ScanErrorKind::Local(format!("layer reader stopped: {e}")))??;
        Ok(Arc::new(index))
    }

    /// Where a blob lives in a layout or archive: `blobs/ALG/HEX`, or for a legacy docker save
    /// archive the member its manifest.json names.
    fn blob_member(&self, digest: &Digest) -> String {
        if let Opened::Archive { legacy_members, .. } = self
            && let Some(path) = legacy_members
                .lock()
                .expect("legacy member map")
                .get(&digest.to_string())
        {
            return path.clone();
        }
        format!("blobs/{}/{}", digest.algorithm(), digest.hex())
    }
}

/// Offsets and sizes of the members of an uncompressed tar archive.
fn archive_members(path: &Path) -> Result<HashMap<String, (u64, u64)>, ScanErrorKind> {
    let local = |e: io::Error| ScanErrorKind::Local(format!("{}: {e}", path.display()));
    let file = File::open(path).map_err(local)?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut members = HashMap::new();
    for entry in archive.entries().map_err(local)? {
        let entry = entry.map_err(local)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        members.insert(name, (entry.raw_file_position(), entry.size()));
    }
    Ok(members)
}

/// Bridges an async byte stream to a blocking `Read`: a task forwards chunks through a small
/// bounded channel, so at most a few chunks are in memory while the reader decompresses.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    done: bool,
}

impl ChannelReader {
    fn spawn<S>(stream: S) -> Self
    where
        S: futures_util::Stream<Item = Result<Bytes, RegistryError>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            while let Some(item) = stream.next().await {
                let item = item.map_err(|e| io::Error::other(e.to_string()));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        ChannelReader {
            rx,
            current: Bytes::new(),
            done: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::layer::EntryKind;

    fn index(files: usize) -> Arc<LayerIndex> {
        let names: Vec<String> = (0..files).map(|i| format!("f{i:05}")).collect();
        Arc::new(LayerIndex::from_entries(
            names
                .iter()
                .map(|n| (n.as_bytes(), &b""[..], EntryKind::File, 1)),
        ))
    }

    #[tokio::test]
    async fn layer_cache_reads_each_layer_once_and_stays_within_its_budget() {
        let one = index(1000).heap_bytes();
        let cache = LayerCache::with_budget(one * 2 + one / 2);
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let read = || async {
            reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, ()>(index(1000))
        };
        for digest in ["a", "a", "b", "a"] {
            cache.get_or_index(digest, read).await.unwrap();
        }
        assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(cache.hits(), 2);
        cache.get_or_index("c", read).await.unwrap();
        // Three indexes do not fit: the oldest ("a") went.
        assert_eq!(cache.len(), 2);
        assert!(cache.bytes() <= one * 2 + one / 2);
        assert!(cache.get("a").is_none() && cache.get("c").is_some());
    }
}

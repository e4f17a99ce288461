//! [`scan`]: one image from its source to its analysis.
//!
//! The steps run in the order that fails cheapest first. Everything that can be checked from
//! the manifest and the config (media types, sizes, digests, the config's layer count) is
//! checked before the first layer is requested, so a malformed image costs two small reads, not
//! gigabytes of downloads. Only then are the layers read, a few at a time, each streamed once
//! into [`analysis::index_layer`] on a blocking thread while the async side downloads and hashes
//! the next bytes.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use serde::Deserialize;

use super::cache::LayerCache;
use super::lazy::{self, Fallback, TocRead};
use super::source::Opened;
use super::{ImageSource, Progress, ScanError, ScanErrorKind, ScanOptions, ScannedImage};
use crate::analysis::toc::LazyLayer;
use crate::analysis::{
    self, Compression, HistoryEntry, ImageAnalysis, ImageInput, LayerIndex, LayerInput,
    LayerMediaType,
};
use crate::digest::Digest;
use crate::registry::{Platform, RawManifest};

const INDEX_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const IMAGE_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Image configs larger than this are refused.
pub(super) const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// Why a foreign layer has no findings.
const NOT_FETCHED: &str =
    "foreign or non-distributable layer: not fetched, its files are not counted";

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
    let (manifest_raw, index_digest) = image_manifest(&opened, &options.platform)
        .await
        .map_err(&fail)?;
    let manifest = parse_manifest(&manifest_raw).map_err(&fail)?;
    let config = read_config(&opened, &manifest).await.map_err(&fail)?;
    // Everything checkable without layer bytes is checked before the first layer is read.
    let plan = plan_layers(&manifest).map_err(|(position, kind)| ScanError {
        image: image.clone(),
        layer: Some((position, manifest.layers[position].digest.clone())),
        kind,
    })?;
    check_layer_count(&config, plan.len()).map_err(&fail)?;

    let reader = LayerReader {
        opened: &opened,
        cache,
        options,
        image: &image,
        progress: Tally::new(&plan),
        fetched: Fetched::default(),
    };
    // The futures are collected first: a stream over a mapping closure would make `scan`'s
    // future fail to be `Send` (the operator spawns it).
    let reads: Vec<_> = plan.iter().map(|layer| reader.read(layer)).collect();
    // The image's indexes together get the memory one layer's may take: a hostile image cannot
    // multiply the per-layer bound by its number of layers. While they are read, at most
    // `layer_concurrency` more are in flight, so an analysis holds at most
    // (1 + layer_concurrency) x `LayerLimits::max_index_bytes` of indexes.
    let budget = options.limits.max_index_bytes();
    let mut held = 0u64;
    let indexes: Vec<Option<Arc<LayerIndex>>> = futures_util::stream::iter(reads)
        .buffered(options.layer_concurrency.max(1))
        .try_fold(Vec::with_capacity(plan.len()), |mut indexes, index| {
            held += index.as_deref().map_or(0, |i| i.heap_bytes() as u64);
            let position = indexes.len();
            let result = if held > budget {
                Err(ScanError {
                    image: image.clone(),
                    layer: Some((position, manifest.layers[position].digest.clone())),
                    kind: ScanErrorKind::ImageTooLarge { limit: budget },
                })
            } else {
                indexes.push(index);
                Ok(indexes)
            };
            std::future::ready(result)
        })
        .await?;

    let mut analysis = analyze(&manifest, &config, &plan, &indexes);
    analysis.notes.extend(reader.fetched.notes());
    Ok(ScannedImage {
        analysis,
        downloaded_bytes: reader.fetched.bytes.load(Ordering::Relaxed),
        image,
        digest: manifest_raw.digest,
        index_digest,
        platform: config.platform().to_string(),
        media_type: manifest_raw.media_type,
    })
}

/// The analysis of the layers read, with the history and annotations of the image.
fn analyze(
    manifest: &OciImageManifest,
    config: &ImageConfig,
    plan: &[PlannedLayer<'_>],
    indexes: &[Option<Arc<LayerIndex>>],
) -> ImageAnalysis {
    analysis::analyze(&ImageInput {
        layers: plan
            .iter()
            .zip(indexes)
            .map(|(layer, index)| layer.input(index.as_deref()))
            .collect(),
        history: config.history.clone(),
        annotations: manifest
            .annotations
            .clone()
            .map(|a| a.into_iter().collect::<BTreeMap<_, _>>())
            .unwrap_or_default(),
    })
}

/// The image manifest to scan, and the digest of the index it was chosen from (by platform)
/// when the source names an index.
async fn image_manifest(
    opened: &Opened<'_>,
    platform: &Platform,
) -> Result<(RawManifest, Option<String>), ScanErrorKind> {
    let root = opened.root_manifest().await?;
    if !INDEX_MEDIA_TYPES.contains(&root.media_type.as_str()) && !looks_like_index(&root.bytes) {
        return Ok((root, None));
    }
    let index: OciImageIndex = serde_json::from_slice(&root.bytes)
        .map_err(|e| ScanErrorKind::Manifest(format!("index: {e}")))?;
    let entry = platform
        .choose(&index.manifests)
        .ok_or_else(|| ScanErrorKind::NoPlatform {
            wanted: platform.to_string(),
            available: Platform::list(&index.manifests).join(", "),
        })?;
    let size = descriptor_size(entry.size)?;
    let manifest = opened.manifest_by_digest(&entry.digest, size).await?;
    Ok((manifest, Some(root.digest)))
}

fn looks_like_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some() && v.get("layers").is_none())
}

/// An image manifest of a media type and schema version this scanner reads.
fn parse_manifest(raw: &RawManifest) -> Result<OciImageManifest, ScanErrorKind> {
    if !IMAGE_MEDIA_TYPES.contains(&raw.media_type.as_str()) {
        return Err(if raw.media_type.is_empty() {
            ScanErrorKind::Manifest("no mediaType, and not an image manifest".into())
        } else {
            ScanErrorKind::UnsupportedMediaType(raw.media_type.clone())
        });
    }
    let manifest: OciImageManifest =
        serde_json::from_slice(&raw.bytes).map_err(|e| ScanErrorKind::Manifest(e.to_string()))?;
    if manifest.schema_version != 2 {
        return Err(ScanErrorKind::Manifest(format!(
            "schemaVersion {} (only 2 is supported)",
            manifest.schema_version
        )));
    }
    Ok(manifest)
}

/// The parts of an image config the scan uses.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ImageConfig {
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

impl ImageConfig {
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, ScanErrorKind> {
        serde_json::from_slice(bytes).map_err(|e| ScanErrorKind::Config(e.to_string()))
    }

    /// The digests of the uncompressed layers, bottom first (empty when the config has none).
    pub(super) fn diff_ids(self) -> Vec<String> {
        self.rootfs.map(|r| r.diff_ids).unwrap_or_default()
    }

    /// `os/architecture[/variant]`, `unknown` for what the config leaves out.
    fn platform(&self) -> Platform {
        Platform::new(
            self.os.as_deref().unwrap_or("unknown"),
            self.architecture.as_deref().unwrap_or("unknown"),
            self.variant.as_deref(),
        )
    }
}

async fn read_config(
    opened: &Opened<'_>,
    manifest: &OciImageManifest,
) -> Result<ImageConfig, ScanErrorKind> {
    let size = descriptor_size(manifest.config.size)?;
    if size > MAX_CONFIG_BYTES {
        return Err(ScanErrorKind::Config(format!(
            "{size} bytes is more than the {MAX_CONFIG_BYTES} accepted"
        )));
    }
    ImageConfig::parse(&opened.small_blob(&manifest.config.digest, size).await?)
}

/// A descriptor's size, refused when negative.
pub(super) fn descriptor_size(size: i64) -> Result<u64, ScanErrorKind> {
    u64::try_from(size).map_err(|_| ScanErrorKind::Manifest(format!("negative size {size}")))
}

/// One layer, checked and ready to read.
struct PlannedLayer<'m> {
    position: usize,
    descriptor: &'m OciDescriptor,
    digest: Digest,
    media: LayerMediaType,
    size: u64,
}

impl PlannedLayer<'_> {
    fn input<'i>(&self, index: Option<&'i LayerIndex>) -> LayerInput<'i> {
        LayerInput {
            digest: self.descriptor.digest.clone(),
            media_type: self.descriptor.media_type.clone(),
            pull_bytes: self.size,
            index,
            skipped: self
                .media
                .non_distributable
                .then(|| NOT_FETCHED.to_string()),
        }
    }
}

/// Checks each layer's descriptor (media type, size, digest) before any layer is read; an error
/// names the position of the layer at fault.
fn plan_layers(
    manifest: &OciImageManifest,
) -> Result<Vec<PlannedLayer<'_>>, (usize, ScanErrorKind)> {
    manifest
        .layers
        .iter()
        .enumerate()
        .map(|(position, descriptor)| {
            let at = |kind| (position, kind);
            let media = LayerMediaType::parse(&descriptor.media_type).ok_or_else(|| {
                at(ScanErrorKind::UnsupportedMediaType(
                    descriptor.media_type.clone(),
                ))
            })?;
            let size = descriptor_size(descriptor.size).map_err(at)?;
            let digest = Digest::parse(&descriptor.digest)
                .map_err(|e| at(ScanErrorKind::Manifest(e.to_string())))?;
            Ok(PlannedLayer {
                position,
                descriptor,
                digest,
                media,
                size,
            })
        })
        .collect()
}

/// A config that lists layers must list as many as the manifest has.
fn check_layer_count(config: &ImageConfig, layers: usize) -> Result<(), ScanErrorKind> {
    match &config.rootfs {
        Some(rootfs) if !rootfs.diff_ids.is_empty() && rootfs.diff_ids.len() != layers => {
            Err(ScanErrorKind::Config(format!(
                "rootfs lists {} layers, the manifest {layers}",
                rootfs.diff_ids.len(),
            )))
        }
        _ => Ok(()),
    }
}

/// What reading the layers of one scan shares.
struct LayerReader<'a> {
    opened: &'a Opened<'a>,
    cache: &'a LayerCache,
    options: &'a ScanOptions,
    image: &'a str,
    progress: Tally,
    fetched: Fetched,
}

/// What the layers of one scan fetched, and how: blob bytes, and the notes that say which
/// layers came from their tables of contents and which could not.
#[derive(Default)]
struct Fetched {
    bytes: AtomicU64,
    /// Layers indexed from their TOC: (bytes fetched, blob size).
    toc: Mutex<Vec<(u64, u64)>>,
    /// `(position, note)` for each layer whose TOC was not used.
    fallbacks: Mutex<Vec<(usize, String)>>,
}

impl Fetched {
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let toc = self.toc.lock().expect("fetched lock");
        if !toc.is_empty() {
            let (fetched, blobs) = toc
                .iter()
                .fold((0, 0), |(f, b), (fetched, blob)| (f + fetched, b + blob));
            notes.push(format!(
                "{} layer(s) indexed from their eStargz / zstd:chunked tables of contents, \
                 fetching {fetched} of their {blobs} bytes; the tables of contents are checked \
                 against the digests the manifest names, the rest of those blobs was neither \
                 downloaded nor checked (--no-lazy reads every layer in full)",
                toc.len()
            ));
        }
        let mut fallbacks = self.fallbacks.lock().expect("fetched lock").clone();
        fallbacks.sort();
        notes.extend(fallbacks.into_iter().map(|(_, note)| note));
        notes
    }
}

/// Counts the bytes a reader hands out into a scan's [`Fetched`] total.
struct Counting<'a, R> {
    inner: R,
    bytes: &'a AtomicU64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl LayerReader<'_> {
    /// Reads (or finds in the cache) one layer's index; `None` for layers that are not fetched.
    async fn read(&self, layer: &PlannedLayer<'_>) -> Result<Option<Arc<LayerIndex>>, ScanError> {
        if layer.media.non_distributable {
            return Ok(None);
        }
        let index = self
            .cache
            .get_or_index(self.opened.origin(), &layer.descriptor.digest, || {
                self.index(layer)
            })
            .await
            .map_err(|kind| ScanError {
                image: self.image.to_string(),
                layer: Some((layer.position, layer.descriptor.digest.clone())),
                kind,
            })?;
        if let Some(report) = &self.options.progress {
            report(self.progress.layer_done(layer.size));
        }
        Ok(Some(index))
    }

    /// Indexes one layer: from its table of contents when it has one (and the source is a
    /// registry, and `--no-lazy` is not given), else, or when that fails, by streaming the whole
    /// layer on a blocking thread.
    async fn index(&self, layer: &PlannedLayer<'_>) -> Result<Arc<LayerIndex>, ScanErrorKind> {
        if self.options.lazy && self.opened.is_remote() {
            match self.toc_index(layer).await {
                Some(Ok(read)) => {
                    self.fetched
                        .bytes
                        .fetch_add(read.fetched, Ordering::Relaxed);
                    self.fetched
                        .toc
                        .lock()
                        .expect("fetched lock")
                        .push((read.fetched, layer.size));
                    return Ok(Arc::new(read.index));
                }
                Some(Err(fallback)) => {
                    self.fetched
                        .bytes
                        .fetch_add(fallback.fetched, Ordering::Relaxed);
                    tracing::info!(
                        image = self.image,
                        layer = %layer.descriptor.digest,
                        why = %fallback.why,
                        "table of contents not used; reading the layer in full"
                    );
                    self.fetched.fallbacks.lock().expect("fetched lock").push((
                        layer.position,
                        format!(
                            "layer {} ({}) was read in full, its table of contents not used: {}",
                            layer.position, layer.descriptor.digest, fallback.why
                        ),
                    ));
                }
                None => {}
            }
        }
        let blob = self.opened.layer_reader(&layer.digest, layer.size).await?;
        let compression = if blob.decompressed {
            Compression::Plain
        } else {
            layer.media.compression
        };
        let limits = self.options.limits;
        // Bytes the analysis read from the source, counted even when the read fails.
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = bytes.clone();
        let index = tokio::task::spawn_blocking(move || {
            let reader = Counting {
                inner: blob.reader,
                bytes: &counter,
            };
            analysis::index_layer(reader, compression, &limits)
        })
        .await
        .map_err(|e| ScanErrorKind::Local(format!("layer reader stopped: {e}")));
        self.fetched
            .bytes
            .fetch_add(bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        Ok(Arc::new(index??))
    }

    /// The layer's index from its table of contents; `None` for a layer without one.
    async fn toc_index(&self, layer: &PlannedLayer<'_>) -> Option<Result<TocRead, Fallback>> {
        let annotations = layer
            .descriptor
            .annotations
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()));
        let lazy = match LazyLayer::detect(&layer.descriptor.digest, layer.size, annotations) {
            Ok(Some(lazy)) => lazy,
            Ok(None) => return None,
            Err(e) => {
                return Some(Err(Fallback {
                    why: e.to_string(),
                    fetched: 0,
                }));
            }
        };
        Some(
            lazy::index_from_toc(
                self.opened,
                &layer.digest,
                &lazy,
                layer.media.compression,
                &self.options.limits,
            )
            .await,
        )
    }
}

/// Progress across the layers of one scan.
struct Tally {
    /// Layers and bytes done so far.
    done: Mutex<(usize, u64)>,
    layers_total: usize,
    bytes_total: u64,
}

impl Tally {
    fn new(plan: &[PlannedLayer<'_>]) -> Self {
        Tally {
            done: Mutex::new((0, 0)),
            layers_total: plan.len(),
            bytes_total: plan.iter().map(|l| l.size).sum(),
        }
    }

    fn layer_done(&self, size: u64) -> Progress {
        let (layers_done, bytes_done) = {
            let mut done = self.done.lock().expect("progress lock");
            done.0 += 1;
            done.1 += size;
            *done
        };
        Progress {
            layers_done,
            layers_total: self.layers_total,
            bytes_done,
            bytes_total: self.bytes_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    /// Writes `bytes` as a blob of the OCI layout in `dir`; returns its digest and size.
    fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
        let digest = Digest::sha256_of(bytes);
        let path = dir.join("blobs/sha256").join(digest.hex());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        (digest.to_string(), bytes.len())
    }

    #[tokio::test]
    async fn a_config_with_the_wrong_number_of_layers_fails_before_any_layer_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let diff_ids = [b"one", b"two"].map(|b| Digest::sha256_of(b).to_string());
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let (config, config_size) = blob(dir.path(), config.to_string().as_bytes());
        // The layer's blob is not in the layout: reading it would fail with another error.
        let layer = Digest::sha256_of(b"never written").to_string();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config,
                "size": config_size,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer,
                "size": 100,
            }],
        });
        let (manifest, manifest_size) = blob(dir.path(), manifest.to_string().as_bytes());
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest,
                "size": manifest_size,
            }],
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();

        let source = ImageSource::Layout {
            dir: dir.path().to_path_buf(),
            tag: None,
        };
        let cache = LayerCache::default();
        let err = scan(&source, &ScanOptions::default(), &cache)
            .await
            .unwrap_err();
        assert_eq!(err.layer, None);
        assert_eq!(
            err.kind.to_string(),
            "invalid image config: rootfs lists 2 layers, the manifest 1"
        );
        assert!(cache.is_empty());
    }
}

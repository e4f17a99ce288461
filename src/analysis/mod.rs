//! The pure core: layer streams in, findings out. No network, no Kubernetes, no files.
//!
//! [`layer::index_layer`] reads one layer blob once and keeps a compact [`LayerIndex`];
//! [`analyze`] combines the indexes of one image with its manifest and config facts into an
//! [`ImageAnalysis`]: the waste math of DESIGN.md, junk by category, and advice.

pub mod advice;
pub mod layer;
pub mod overlay;
pub mod path;
pub mod rules;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use layer::{Compression, LayerError, LayerIndex, LayerLimits, LayerMediaType, index_layer};
pub use overlay::{HideReason, Overlay};
pub use rules::{Category, Classifier, Tool};

/// Bumped whenever the same layers could produce different findings, so stored reports made by
/// an older analyzer are recomputed rather than reused.
pub const ANALYZER_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+a1");

/// One layer of the manifest as the analysis sees it.
#[derive(Debug, Clone)]
pub struct LayerInput<'a> {
    pub digest: String,
    pub media_type: String,
    /// The descriptor's size: compressed bytes a node downloads.
    pub pull_bytes: u64,
    /// The layer's index; `None` when the layer was not read (see `skipped`).
    pub index: Option<&'a LayerIndex>,
    /// Why the layer was not read (foreign or non-distributable layers).
    pub skipped: Option<String>,
}

/// One `history` entry of the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HistoryEntry {
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: Option<bool>,
}

/// Everything [`analyze`] needs about one image.
#[derive(Debug, Clone, Default)]
pub struct ImageInput<'a> {
    pub layers: Vec<LayerInput<'a>>,
    pub history: Vec<HistoryEntry>,
    /// Manifest annotations (OCI base-image annotations among them).
    pub annotations: BTreeMap<String, String>,
}

/// The findings for one image (one platform's manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageAnalysis {
    /// Sum of the layer descriptors' sizes: what a node downloads.
    pub pull_bytes: u64,
    /// Bytes of every regular file in every layer: what the image ships.
    pub size_bytes: u64,
    /// Bytes of the regular files in the final filesystem.
    pub final_bytes: u64,
    /// `sizeBytes - finalBytes`: shipped in one layer, hidden by a later one.
    pub wasted_bytes: u64,
    /// `wastedBytes` plus junk left in the final filesystem.
    pub reclaimable_bytes: u64,
    /// Estimated download saving: each layer's reclaimable bytes at its compression ratio.
    pub reclaimable_pull_bytes: u64,
    /// `finalBytes / sizeBytes` (1.0 for an empty image).
    pub efficiency: f64,
    /// Bytes of junk per category.
    pub junk_bytes: u64,
    pub layers: Vec<LayerSummary>,
    /// Number of hidden files in all (the list below may be shortened).
    pub hidden_file_count: u64,
    /// Hidden files, largest first.
    pub hidden_files: Vec<HiddenFile>,
    pub categories: Vec<CategorySummary>,
    /// Advice, largest saving first.
    pub recommendations: Vec<Recommendation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OsInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<BaseImage>,
    /// Things the reader should know about this analysis (skipped layers …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One layer's share of the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerSummary {
    pub index: u32,
    pub digest: String,
    pub media_type: String,
    /// Compressed bytes (descriptor size).
    pub pull_bytes: u64,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_bytes: u64,
    /// Bytes of regular files this layer ships.
    pub size_bytes: u64,
    pub file_count: u64,
    /// Bytes this layer ships that a later layer (or a later entry of its own) hides.
    pub wasted_bytes: u64,
    /// Bytes this layer ships that are junk in the final filesystem.
    pub junk_bytes: u64,
    /// The history line that made this layer (Dockerfile instruction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Why the layer was not analyzed, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// A file that ships but is not in the final filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HiddenFile {
    pub path: String,
    pub size_bytes: u64,
    /// The layer that shipped it.
    pub layer: u32,
    /// The layer that hid it.
    pub hidden_by_layer: u32,
    /// `overwritten`, `deleted` or `opaque`.
    pub reason: String,
}

/// Junk of one category in the final filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategorySummary {
    pub category: Category,
    pub bytes: u64,
    pub files: u64,
    /// The largest files of the category.
    pub examples: Vec<String>,
}

/// One piece of advice and what it saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// Stable identifier of the kind of advice (`cleanup-in-same-layer`, `multi-stage-build` …).
    pub kind: String,
    /// What to change, in one or two sentences.
    pub message: String,
    /// Uncompressed bytes the change removes from the image.
    pub saved_bytes: u64,
    /// The layer the advice concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
    /// That layer's history line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// The operating system of the final filesystem, from `os-release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OsInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_codename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
}

/// The base image named by the OCI annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaseImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// `history` lines that made layers, one per layer in order (entries with `empty_layer` skipped).
/// `None` where the config has fewer non-empty entries than the manifest has layers.
pub fn layer_history(history: &[HistoryEntry], layers: usize) -> Vec<Option<String>> {
    let mut lines = history
        .iter()
        .filter(|h| h.empty_layer != Some(true))
        .map(|h| {
            h.created_by
                .clone()
                .or_else(|| h.comment.clone())
                .map(|s| s.trim().to_string())
        });
    (0..layers).map(|_| lines.next().flatten()).collect()
}

/// Analyzes one image: the waste math, junk, advice.
pub fn analyze(input: &ImageInput<'_>) -> ImageAnalysis {
    analyze_with(input, &Classifier::new())
}

/// As [`analyze`], with a classifier built once by the caller.
pub fn analyze_with(input: &ImageInput<'_>, classifier: &Classifier) -> ImageAnalysis {
    let created_by = layer_history(&input.history, input.layers.len());
    let present: Vec<(usize, &LayerIndex)> = input
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.index.map(|ix| (i, ix)))
        .collect();
    let overlay = Overlay::apply(present.iter().map(|(_, ix)| *ix));
    // Overlay positions count only analyzed layers; map them back to manifest positions.
    let manifest_pos = |overlay_layer: usize| present[overlay_layer].0;
    let index_of = |overlay_layer: usize| present[overlay_layer].1;

    let n = input.layers.len();
    let mut wasted_by_layer = vec![0u64; n];
    let mut junk_by_layer = vec![0u64; n];
    let mut hidden_files = Vec::new();
    for c in overlay.contents() {
        if let (Some(h), false) = (c.hidden, c.is_visible()) {
            let layer = manifest_pos(c.layer);
            wasted_by_layer[layer] += c.size;
            hidden_files.push(HiddenFile {
                path: path::display(index_of(c.layer).entry(c.entry).path),
                size_bytes: c.size,
                layer: layer as u32,
                hidden_by_layer: manifest_pos(h.by_layer) as u32,
                reason: h.reason.as_str().to_string(),
            });
        }
    }
    hidden_files.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.path.cmp(&b.path)));

    // Junk: each visible content once, under the first of its names in byte order.
    let mut seen = vec![false; overlay.contents().len()];
    let mut scratch = Vec::new();
    let mut junk: BTreeMap<Category, JunkTally> = BTreeMap::new();
    let mut junk_by_tool: BTreeMap<(usize, Category, Tool), u64> = BTreeMap::new();
    for (p, c) in overlay.visible_files() {
        if std::mem::replace(&mut seen[c as usize], true) {
            continue;
        }
        let content = &overlay.contents()[c as usize];
        if content.size == 0 {
            continue;
        }
        if let Some((category, tool)) = classifier.classify(p, &mut scratch) {
            let layer = manifest_pos(content.layer);
            junk_by_layer[layer] += content.size;
            *junk_by_tool.entry((layer, category, tool)).or_default() += content.size;
            junk.entry(category).or_default().add(p, content.size);
        }
    }

    let size_bytes = overlay.size_bytes();
    let final_bytes = overlay.final_bytes();
    let wasted_bytes = size_bytes - final_bytes;
    let junk_bytes: u64 = junk_by_layer.iter().sum();
    let pull_bytes = input.layers.iter().map(|l| l.pull_bytes).sum();

    let mut reclaimable_pull_bytes = 0u64;
    let mut layers = Vec::with_capacity(n);
    let mut notes = Vec::new();
    for (i, l) in input.layers.iter().enumerate() {
        let (uncompressed, size, files) = l
            .index
            .map(|ix| (ix.uncompressed_bytes, ix.size_bytes, ix.file_count))
            .unwrap_or_default();
        let reclaimable = wasted_by_layer[i] + junk_by_layer[i];
        if uncompressed > 0 {
            // Compressed share of the layer's reclaimable bytes, at the layer's own ratio.
            let share = (reclaimable as u128 * l.pull_bytes as u128) / uncompressed as u128;
            reclaimable_pull_bytes += share.min(l.pull_bytes as u128) as u64;
        }
        if let Some(why) = &l.skipped {
            notes.push(format!("layer {i} ({}) was not analyzed: {why}", l.digest));
        }
        layers.push(LayerSummary {
            index: i as u32,
            digest: l.digest.clone(),
            media_type: l.media_type.clone(),
            pull_bytes: l.pull_bytes,
            uncompressed_bytes: uncompressed,
            size_bytes: size,
            file_count: files,
            wasted_bytes: wasted_by_layer[i],
            junk_bytes: junk_by_layer[i],
            created_by: created_by[i].clone(),
            skipped: l.skipped.clone(),
        });
    }

    let categories = junk
        .into_iter()
        .map(|(category, t)| t.into_summary(category))
        .collect();

    let os = read_os_release(&overlay, &present);
    let base_image = base_image(&input.annotations);

    let mut analysis = ImageAnalysis {
        pull_bytes,
        size_bytes,
        final_bytes,
        wasted_bytes,
        reclaimable_bytes: wasted_bytes + junk_bytes,
        reclaimable_pull_bytes,
        efficiency: if size_bytes == 0 {
            1.0
        } else {
            final_bytes as f64 / size_bytes as f64
        },
        junk_bytes,
        layers,
        hidden_file_count: hidden_files.len() as u64,
        hidden_files,
        categories,
        recommendations: Vec::new(),
        os,
        base_image,
        notes,
    };
    analysis.recommendations = advice::advise(&advice::Facts {
        analysis: &analysis,
        junk_by_tool: &junk_by_tool,
        base_layer_final_bytes: base_layer_final_bytes(&overlay, &present),
    });
    analysis
}

#[derive(Default)]
struct JunkTally {
    bytes: u64,
    files: u64,
    largest: Vec<(u64, String)>,
}

const CATEGORY_EXAMPLES: usize = 5;

impl JunkTally {
    fn add(&mut self, p: &[u8], size: u64) {
        self.bytes += size;
        self.files += 1;
        if self.largest.len() < CATEGORY_EXAMPLES || size > self.largest[CATEGORY_EXAMPLES - 1].0 {
            self.largest.push((size, path::display(p)));
            self.largest
                .sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            self.largest.truncate(CATEGORY_EXAMPLES);
        }
    }

    fn into_summary(self, category: Category) -> CategorySummary {
        CategorySummary {
            category,
            bytes: self.bytes,
            files: self.files,
            examples: self.largest.into_iter().map(|(_, p)| p).collect(),
        }
    }
}

/// Visible bytes that the first analyzed layer contributes to the final filesystem.
fn base_layer_final_bytes(overlay: &Overlay<'_>, present: &[(usize, &LayerIndex)]) -> Option<u64> {
    if present.first()?.0 != 0 {
        return None;
    }
    Some(
        overlay
            .contents()
            .iter()
            .filter(|c| c.layer == 0 && c.is_visible())
            .map(|c| c.size)
            .sum(),
    )
}

/// Reads `os-release` as the final filesystem has it (following the usual
/// `etc/os-release -> ../usr/lib/os-release` symlink by trying both names).
fn read_os_release(overlay: &Overlay<'_>, present: &[(usize, &LayerIndex)]) -> Option<OsInfo> {
    for name in [&b"etc/os-release"[..], b"usr/lib/os-release"] {
        let Some(c) = overlay.content_at(name) else {
            continue;
        };
        let content = &overlay.contents()[c as usize];
        let layer = present[content.layer].1;
        let Some(captured) = layer.captured.iter().find(|f| f.entry == content.entry) else {
            continue;
        };
        if let Some(info) = parse_os_release(&captured.content) {
            return Some(info);
        }
    }
    None
}

/// Parses the `KEY=value` lines of an os-release file.
pub fn parse_os_release(text: &[u8]) -> Option<OsInfo> {
    let text = String::from_utf8_lossy(text);
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        fields.insert(k.trim().to_string(), v.to_string());
    }
    Some(OsInfo {
        id: fields.remove("ID")?,
        version_id: fields.remove("VERSION_ID"),
        version_codename: fields.remove("VERSION_CODENAME"),
        pretty_name: fields.remove("PRETTY_NAME"),
    })
}

fn base_image(annotations: &BTreeMap<String, String>) -> Option<BaseImage> {
    let name = annotations
        .get("org.opencontainers.image.base.name")
        .cloned();
    let digest = annotations
        .get("org.opencontainers.image.base.digest")
        .cloned();
    (name.is_some() || digest.is_some()).then_some(BaseImage { name, digest })
}

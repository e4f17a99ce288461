//! The pure core: layer streams in, findings out. No network, no Kubernetes, no files.
//!
//! [`layer::index_layer`] reads one layer blob once and keeps a compact [`LayerIndex`];
//! [`analyze`] combines the indexes of one image with its manifest and config facts into an
//! [`ImageAnalysis`]: the waste math (docs/architecture.md), junk by category, and advice.

pub mod advice;
pub mod layer;
pub mod overlay;
pub mod packages;
pub mod path;
pub mod rules;
pub mod toc;
mod totals;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use layer::{Compression, LayerError, LayerIndex, LayerLimits, LayerMediaType, index_layer};
pub use overlay::{HideReason, Overlay};
pub use rules::{Category, Classifier, Tool};
pub use totals::Totals;

/// Bumped whenever the same layers could produce different findings, so stored reports made by
/// an older analyzer are recomputed rather than reused.
pub const ANALYZER_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+a2");

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
    #[serde(flatten)]
    pub totals: Totals,
    /// Bytes of junk per category.
    pub junk_bytes: u64,
    /// Each layer of the manifest, bottom first, with what it ships, wastes and downloads.
    pub layers: Vec<LayerSummary>,
    /// Number of hidden files in all (the list below may be shortened).
    pub hidden_file_count: u64,
    /// Hidden files, largest first.
    pub hidden_files: Vec<HiddenFile>,
    /// Junk left in the final filesystem, by category (caches, docs, build tools …).
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
    /// Position in the manifest, 0 for the bottom layer.
    pub index: u32,
    /// Digest of the layer blob, as the manifest names it.
    pub digest: String,
    /// Media type of the layer blob (its compression: gzip, zstd, none).
    pub media_type: String,
    /// Compressed bytes (descriptor size).
    pub pull_bytes: u64,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_bytes: u64,
    /// Bytes of regular files this layer ships.
    pub size_bytes: u64,
    /// Regular files this layer ships.
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
    /// Path in the image, without a leading `/`.
    pub path: String,
    /// Bytes of the file.
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
    /// Bytes of the category's files in the final filesystem.
    pub bytes: u64,
    /// Files of the category in the final filesystem.
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
    /// What `savedBytes` counts, largest first (the multi-stage advice lists the packages the
    /// build step installed and the bytes of each; the list is bounded, its last entries fold
    /// the rest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counted: Vec<Counted>,
}

/// One part of a recommendation's saving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counted {
    /// A package name, or what else was counted in parentheses.
    pub name: String,
    /// Bytes of this part in the image (regular files' sizes, uncompressed).
    pub bytes: u64,
}

/// The operating system of the final filesystem, from `os-release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OsInfo {
    /// `ID` (`debian`, `alpine` …).
    pub id: String,
    /// `VERSION_ID` (`12`, `3.20.1` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// `VERSION_CODENAME` (`bookworm` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_codename: Option<String>,
    /// `PRETTY_NAME` (`Debian GNU/Linux 12 (bookworm)` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
}

/// The base image named by the OCI annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BaseImage {
    /// `org.opencontainers.image.base.name`: the base image's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `org.opencontainers.image.base.digest`: the base image's manifest digest.
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
    let present: Vec<(usize, &LayerIndex)> = input
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.index.map(|ix| (i, ix)))
        .collect();
    let stack = Stack {
        overlay: Overlay::apply(present.iter().map(|(_, ix)| *ix)),
        present,
    };
    let n = input.layers.len();
    let mut wasted_by_layer = vec![0u64; n];
    let mut junk_by_layer = vec![0u64; n];
    let hidden_files = stack.hidden_files(&mut wasted_by_layer);
    let junk = stack.junk(classifier, &mut junk_by_layer);
    let junk_bytes: u64 = junk_by_layer.iter().sum();
    let mut shares = LayerShares::of(input, &wasted_by_layer, &junk_by_layer);
    let layer_indexes: Vec<&LayerIndex> = stack.present.iter().map(|(_, ix)| *ix).collect();
    for (pos, ix) in &stack.present {
        if ix.captures_skipped > 0 {
            shares.notes.push(format!(
                "layer {pos} holds more package metadata than the {} MiB read per layer ({} files not read): advice that counts installed packages may count less",
                layer::MAX_PACKAGE_METADATA_BYTES >> 20,
                ix.captures_skipped
            ));
        }
    }
    let build_stages: BTreeMap<usize, packages::BuildStage> = junk
        .by_tool
        .keys()
        .filter(|(_, c, _)| *c == Category::BuildTools)
        .map(|(layer, _, _)| *layer)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|layer| {
            let j = stack.present.iter().position(|(pos, _)| *pos == layer)?;
            let stage = packages::build_stage(&stack.overlay, &layer_indexes, j, classifier)?;
            Some((layer, stage))
        })
        .collect();

    let mut analysis = ImageAnalysis {
        totals: Totals::of_image(
            input.layers.iter().map(|l| l.pull_bytes).sum(),
            stack.overlay.size_bytes(),
            stack.overlay.final_bytes(),
            junk_bytes,
            shares.reclaimable_pull_bytes,
        ),
        junk_bytes,
        layers: shares.layers,
        hidden_file_count: hidden_files.len() as u64,
        hidden_files,
        categories: junk
            .by_category
            .into_iter()
            .map(|(category, t)| t.into_summary(category))
            .collect(),
        recommendations: Vec::new(),
        os: read_os_release(&stack.overlay, &stack.present),
        base_image: base_image(&input.annotations),
        notes: shares.notes,
    };
    analysis.recommendations = advice::advise(&advice::Facts {
        analysis: &analysis,
        junk_by_tool: &junk.by_tool,
        build_stages: &build_stages,
        classifier,
        base_layer_final_bytes: base_layer_final_bytes(&stack.overlay, &stack.present),
    });
    analysis
}

/// The analyzed layers of one image stacked: what each path holds in the end, and where each
/// analyzed layer sits in the manifest (skipped layers have no index and no place here).
struct Stack<'a> {
    overlay: Overlay<'a>,
    /// Manifest position and index of each analyzed layer, bottom first.
    present: Vec<(usize, &'a LayerIndex)>,
}

/// Junk in the final filesystem.
struct Junk {
    by_category: BTreeMap<Category, JunkTally>,
    /// Bytes by (manifest position, category, tool), for advice.
    by_tool: BTreeMap<(usize, Category, Tool), u64>,
}

impl Stack<'_> {
    /// Overlay positions count only analyzed layers; this maps one back to the manifest.
    fn manifest_pos(&self, overlay_layer: usize) -> usize {
        self.present[overlay_layer].0
    }

    /// Files shipped but hidden by a later layer, largest first; adds each to its layer's
    /// `wasted_by_layer`.
    fn hidden_files(&self, wasted_by_layer: &mut [u64]) -> Vec<HiddenFile> {
        let mut hidden_files = Vec::new();
        for c in self.overlay.contents() {
            if let (Some(h), false) = (c.hidden, c.is_visible()) {
                let layer = self.manifest_pos(c.layer);
                wasted_by_layer[layer] += c.size;
                hidden_files.push(HiddenFile {
                    path: path::display(self.present[c.layer].1.entry(c.entry).path),
                    size_bytes: c.size,
                    layer: layer as u32,
                    hidden_by_layer: self.manifest_pos(h.by_layer) as u32,
                    reason: h.reason.as_str().to_string(),
                });
            }
        }
        hidden_files.sort_by(|a, b| b.size_bytes.cmp(&a.size_bytes).then(a.path.cmp(&b.path)));
        hidden_files
    }

    /// Junk in the final filesystem: each visible content once, under the first of its names
    /// in byte order; adds each to its layer's `junk_by_layer`.
    fn junk(&self, classifier: &Classifier, junk_by_layer: &mut [u64]) -> Junk {
        let contents = self.overlay.contents();
        let mut seen = vec![false; contents.len()];
        let mut scratch = Vec::new();
        let mut junk = Junk {
            by_category: BTreeMap::new(),
            by_tool: BTreeMap::new(),
        };
        for (p, c) in self.overlay.visible_files() {
            if std::mem::replace(&mut seen[c as usize], true) {
                continue;
            }
            let content = &contents[c as usize];
            if content.size == 0 {
                continue;
            }
            if let Some((category, tool)) = classifier.classify(p, &mut scratch) {
                let layer = self.manifest_pos(content.layer);
                junk_by_layer[layer] += content.size;
                *junk.by_tool.entry((layer, category, tool)).or_default() += content.size;
                junk.by_category
                    .entry(category)
                    .or_default()
                    .add(p, content.size);
            }
        }
        junk
    }
}

/// Each layer's share of the image.
struct LayerShares {
    layers: Vec<LayerSummary>,
    /// The download a cleanup saves: each layer's reclaimable bytes at its own compression
    /// ratio.
    reclaimable_pull_bytes: u64,
    /// One per layer that was not analyzed.
    notes: Vec<String>,
}

impl LayerShares {
    fn of(input: &ImageInput<'_>, wasted_by_layer: &[u64], junk_by_layer: &[u64]) -> Self {
        let created_by = layer_history(&input.history, input.layers.len());
        let mut shares = LayerShares {
            layers: Vec::with_capacity(input.layers.len()),
            reclaimable_pull_bytes: 0,
            notes: Vec::new(),
        };
        for (i, l) in input.layers.iter().enumerate() {
            let (uncompressed, size, files) = l
                .index
                .map(|ix| (ix.uncompressed_bytes, ix.size_bytes, ix.file_count))
                .unwrap_or_default();
            let reclaimable = wasted_by_layer[i] + junk_by_layer[i];
            if uncompressed > 0 {
                let share = (reclaimable as u128 * l.pull_bytes as u128) / uncompressed as u128;
                shares.reclaimable_pull_bytes += share.min(l.pull_bytes as u128) as u64;
            }
            if let Some(why) = &l.skipped {
                shares
                    .notes
                    .push(format!("layer {i} ({}) was not analyzed: {why}", l.digest));
            }
            shares.layers.push(LayerSummary {
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
        shares
    }
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

#[cfg(test)]
mod tests {
    use super::layer::EntryKind::{self, *};
    use super::*;

    fn index(entries: &[(&str, EntryKind, u64)]) -> LayerIndex {
        LayerIndex::from_entries(
            entries
                .iter()
                .map(|(p, k, s)| (p.as_bytes(), &b""[..], *k, *s)),
        )
    }

    fn image<'a>(layers: &'a [(LayerIndex, &str, u64)]) -> ImageInput<'a> {
        ImageInput {
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, (ix, _, pull))| LayerInput {
                    digest: format!("sha256:{i}"),
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    pull_bytes: *pull,
                    index: Some(ix),
                    skipped: None,
                })
                .collect(),
            history: layers
                .iter()
                .flat_map(|(_, created_by, _)| {
                    [
                        HistoryEntry {
                            created_by: Some(created_by.to_string()),
                            ..Default::default()
                        },
                        // Metadata-only steps do not make layers.
                        HistoryEntry {
                            created_by: Some("/bin/sh -c #(nop) ENV X=1".into()),
                            empty_layer: Some(true),
                            ..Default::default()
                        },
                    ]
                })
                .collect(),
            annotations: BTreeMap::new(),
        }
    }

    fn with_uncompressed(mut ix: LayerIndex, n: u64) -> LayerIndex {
        ix.uncompressed_bytes = n;
        ix
    }

    #[test]
    fn a_layer_with_more_package_metadata_than_its_budget_says_so() {
        let mut ix = index(&[("var/lib/dpkg/info/a.list", File, 10)]);
        ix.captures_skipped = 3;
        let layers = [(ix, "RUN apt-get install -y everything", 1)];
        let a = analyze(&image(&layers));
        assert_eq!(a.notes.len(), 1, "{:?}", a.notes);
        assert!(
            a.notes[0].starts_with("layer 0 holds more package metadata than the 16 MiB")
                && a.notes[0].contains("3 files not read"),
            "{}",
            a.notes[0]
        );
    }

    #[test]
    fn history_lines_map_to_layers_skipping_empty_ones() {
        let layers = [
            (index(&[("a", File, 1)]), "ADD rootfs", 1),
            (index(&[("b", File, 1)]), "RUN make", 1),
        ];
        let a = analyze(&image(&layers));
        assert_eq!(a.layers[0].created_by.as_deref(), Some("ADD rootfs"));
        assert_eq!(a.layers[1].created_by.as_deref(), Some("RUN make"));
    }

    #[test]
    fn reclaimable_pull_bytes_use_each_layers_compression_ratio() {
        // Layer 0: 4 MB uncompressed, 1 MB pulled; 2 MB of it deleted later -> 0.5 MB.
        // Layer 1: 1 MB of apt lists, 1 MB uncompressed, 0.25 MB pulled -> 0.25 MB.
        let layers = [
            (
                with_uncompressed(
                    index(&[("tmp/x", File, 2_000_000), ("bin/y", File, 2_000_000)]),
                    4_000_000,
                ),
                "ADD x",
                1_000_000,
            ),
            (
                with_uncompressed(
                    index(&[
                        ("tmp/x", Whiteout, 0),
                        ("var/lib/apt/lists/p", File, 1_000_000),
                    ]),
                    1_000_000,
                ),
                "RUN apt-get update && rm /tmp/x",
                250_000,
            ),
        ];
        let a = analyze(&image(&layers));
        assert_eq!(a.totals.wasted_bytes, 2_000_000);
        assert_eq!(a.junk_bytes, 1_000_000);
        assert_eq!(a.totals.reclaimable_bytes, 3_000_000);
        assert_eq!(a.totals.reclaimable_pull_bytes, 750_000);
        assert_eq!(a.totals.pull_bytes, 1_250_000);
    }

    fn kinds(a: &ImageAnalysis) -> Vec<(&str, u64, Option<u32>)> {
        a.recommendations
            .iter()
            .map(|r| (r.kind.as_str(), r.saved_bytes, r.layer))
            .collect()
    }

    #[test]
    fn build_tools_in_the_final_image_recommend_a_multi_stage_build() {
        let layers = [
            (index(&[("usr/bin/ls", File, 100_000)]), "ADD rootfs", 1),
            (
                index(&[
                    ("usr/lib/gcc/x86_64-linux-gnu/12/cc1", File, 30_000_000),
                    ("usr/include/stdio.h", File, 1_000_000),
                    ("usr/lib/x86_64-linux-gnu/libc.a", File, 5_000_000),
                    ("app/server", File, 8_000_000),
                ]),
                "/bin/sh -c apt-get install -y build-essential && make",
                1,
            ),
        ];
        let a = analyze(&image(&layers));
        assert_eq!(kinds(&a), vec![("multi-stage-build", 36_000_000, Some(1))]);
        assert!(a.recommendations[0].message.contains("FROM … AS build"));
    }

    #[test]
    fn a_source_copy_before_a_dependency_install_recommends_reordering() {
        let layers = [
            (index(&[("usr/bin/node", File, 100)]), "ADD rootfs", 1),
            (
                index(&[("app/src/index.js", File, 100)]),
                "COPY . . # buildkit",
                1,
            ),
            (
                index(&[("app/node_modules/x/index.js", File, 5_000_000)]),
                "RUN /bin/sh -c npm ci --omit=dev # buildkit",
                1,
            ),
        ];
        let a = analyze(&image(&layers));
        let r = &a.recommendations[0];
        assert_eq!(
            (r.kind.as_str(), r.saved_bytes, r.layer),
            ("layer-order", 5_000_000, Some(2))
        );
        assert!(
            r.message.contains("package.json and package-lock.json"),
            "{}",
            r.message
        );
    }

    #[test]
    fn dependencies_installed_before_the_copy_need_no_reordering() {
        let layers = [
            (
                index(&[("app/package.json", File, 100)]),
                "COPY package.json package-lock.json ./",
                1,
            ),
            (
                index(&[("app/node_modules/x/index.js", File, 5_000_000)]),
                "RUN npm ci",
                1,
            ),
            (index(&[("app/src/index.js", File, 100)]), "COPY . .", 1),
        ];
        assert!(analyze(&image(&layers)).recommendations.is_empty());
    }

    #[test]
    fn a_heavy_debian_base_recommends_the_slim_variant() {
        let os = b"ID=debian\nVERSION_CODENAME=bookworm\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        let mut base = index(&[
            ("etc/os-release", File, os.len() as u64),
            ("usr/lib/big", File, 120_000_000),
        ]);
        base.captured.push(layer::CapturedFile {
            entry: 0,
            content: os.to_vec(),
        });
        let layers = [(base, "ADD rootfs", 1)];
        let a = analyze(&image(&layers));
        assert_eq!(a.os.as_ref().unwrap().id, "debian");
        let r = &a.recommendations[0];
        assert_eq!(r.kind, "slimmer-base");
        assert!(r.message.contains("debian:bookworm-slim"), "{}", r.message);
        assert_eq!(r.saved_bytes, 120_000_000 + os.len() as u64 - 75_000_000);
    }

    #[test]
    fn a_slim_base_gets_no_base_advice() {
        let os = b"ID=debian\nVERSION_CODENAME=bookworm\n";
        let mut base = index(&[
            ("etc/os-release", File, os.len() as u64),
            ("usr/lib/x", File, 74_000_000),
        ]);
        base.captured.push(layer::CapturedFile {
            entry: 0,
            content: os.to_vec(),
        });
        let layers = [(base, "ADD rootfs", 1)];
        assert!(analyze(&image(&layers)).recommendations.is_empty());
    }

    #[test]
    fn package_cache_advice_names_the_tool_and_the_layer() {
        let layers = [
            (index(&[("bin/sh", File, 1)]), "ADD rootfs", 1),
            (
                index(&[
                    ("root/.cache/pip/http/a", File, 3_000_000),
                    ("var/cache/apk/APKINDEX.tar.gz", File, 2_000_000),
                ]),
                "RUN apk add python3 && pip install flask",
                1,
            ),
        ];
        let a = analyze(&image(&layers));
        assert_eq!(
            kinds(&a),
            vec![
                ("package-manager-cache", 3_000_000, Some(1)),
                ("package-manager-cache", 2_000_000, Some(1))
            ]
        );
        assert!(a.recommendations[0].message.contains("--no-cache-dir"));
        assert!(a.recommendations[1].message.contains("apk add --no-cache"));
    }

    #[test]
    fn chown_in_a_later_layer_recommends_copy_chown() {
        let layers = [
            (
                index(&[("app/data.bin", File, 10_000_000)]),
                "COPY data /app",
                1,
            ),
            (
                index(&[("app/data.bin", File, 10_000_000)]),
                "/bin/sh -c chown -R app /app",
                1,
            ),
        ];
        let a = analyze(&image(&layers));
        let r = &a.recommendations[0];
        assert_eq!(
            (r.kind.as_str(), r.saved_bytes, r.layer),
            ("avoid-rewriting-files", 10_000_000, Some(0))
        );
        assert!(r.message.contains("COPY --chown"), "{}", r.message);
    }
}

//! The one place that turns an analysis into what users read: the object `scan --output json`
//! prints, which is also one container's entry in an `ImageReport`.
//!
//! Lists are capped here (largest first) so a report of a pathological image stays small: the
//! totals always cover everything, the lists show what matters most.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::analysis::{ANALYZER_VERSION, ImageAnalysis};
use crate::scan::ScannedImage;

/// Hidden files listed (the count covers all of them).
pub const MAX_HIDDEN_FILES: usize = 20;
/// Recommendations listed.
pub const MAX_RECOMMENDATIONS: usize = 10;
/// Layers listed with full detail; beyond this they are folded into the totals.
pub const MAX_LAYERS: usize = 128;
/// Characters kept of a history line.
pub const MAX_CREATED_BY: usize = 256;
/// Characters kept of a path.
pub const MAX_PATH: usize = 512;

/// Findings for one image, as printed by `scan` and stored per container in reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageFindings {
    /// The image as referenced (normalised).
    pub image: String,
    /// Digest of the platform's image manifest.
    pub digest: String,
    /// Digest of the index the manifest was chosen from, for multi-platform images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// `os/architecture[/variant]` of the image.
    pub platform: String,
    pub media_type: String,
    /// Version of the analyzer that produced these findings.
    pub analyzer_version: String,
    #[serde(flatten)]
    pub analysis: ImageAnalysis,
}

impl ImageFindings {
    pub fn new(scanned: &ScannedImage) -> Self {
        let mut analysis = scanned.analysis.clone();
        cap(&mut analysis);
        ImageFindings {
            image: scanned.image.clone(),
            digest: scanned.digest.clone(),
            index_digest: scanned.index_digest.clone(),
            platform: scanned.platform.clone(),
            media_type: scanned.media_type.clone(),
            analyzer_version: ANALYZER_VERSION.to_string(),
            analysis,
        }
    }
}

fn cap(a: &mut ImageAnalysis) {
    a.hidden_files.truncate(MAX_HIDDEN_FILES);
    for h in &mut a.hidden_files {
        truncate_chars(&mut h.path, MAX_PATH);
    }
    a.recommendations.truncate(MAX_RECOMMENDATIONS);
    for r in &mut a.recommendations {
        if let Some(c) = &mut r.created_by {
            truncate_chars(c, MAX_CREATED_BY);
        }
    }
    a.layers.truncate(MAX_LAYERS);
    for l in &mut a.layers {
        if let Some(c) = &mut l.created_by {
            truncate_chars(c, MAX_CREATED_BY);
        }
    }
    for c in &mut a.categories {
        for e in &mut c.examples {
            truncate_chars(e, MAX_PATH);
        }
    }
}

fn truncate_chars(s: &mut String, max: usize) {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
        s.push('…');
    }
}

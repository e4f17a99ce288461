//! The one analysis entry point: an image source in, a [`ScannedImage`] out.
//!
//! Used by `imagebloat scan` and by the operator alike. One job per file:
//!
//! - `pipeline`: [`scan`] itself. It resolves the manifest (choosing a platform from an index),
//!   reads the config, checks everything that needs no layer bytes, then streams each layer
//!   exactly once into [`crate::analysis::index_layer`] and analyzes the image.
//! - `cache`: the [`LayerCache`]. Layer indexes are keyed by digest, so images that share layers
//!   share the work, and concurrent requests for one layer wait for one read.
//! - `source`: one face over where blobs come from, so the pipeline does not care whether it
//!   reads a registry or a file.
//! - `layout` and `archive`: the local sources: an OCI image layout (a directory, or the same in
//!   a tar), and the legacy `docker save` archive.
//!
//! This file holds the types callers use.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::analysis::{self, ImageAnalysis, LayerLimits};
use crate::registry::{Credential, Platform, Reference, Registry, RegistryError};

mod archive;
mod cache;
mod layout;
mod lazy;
mod pipeline;
mod saved_layer;
mod source;

pub use cache::LayerCache;
pub use pipeline::scan;

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
    /// Index eStargz and zstd:chunked layers of registry images from their tables of contents
    /// (a few ranges of the blob) instead of reading them in full (`--no-lazy` turns it off).
    pub lazy: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            platform: Platform::default(),
            limits: LayerLimits::default(),
            layer_concurrency: 2,
            progress: None,
            lazy: true,
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
    /// Layer blob bytes this scan fetched (whole blobs, or ranges on the table-of-contents
    /// path); layers found in the cache cost nothing.
    pub downloaded_bytes: u64,
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
    #[error("analysis gave up after {} s (--analysis-timeout)", .0.as_secs())]
    TimedOut(std::time::Duration),
    #[error(
        "the image's layer indexes exceed {limit} bytes of memory together (the bound of one \
         layer under --max-layer-entries and --max-layer-path-bytes)"
    )]
    ImageTooLarge { limit: u64 },
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
            ScanErrorKind::TimedOut(_) => "AnalysisTimedOut",
            ScanErrorKind::ImageTooLarge { .. } => "ImageTooLarge",
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

//! The table-of-contents path: a layer in eStargz or zstd:chunked indexed from a few ranges of
//! its blob (footer, TOC, the small files the advice reads) instead of the whole blob.
//!
//! [`crate::analysis::toc`] does the parsing and checking; this file fetches. Whatever goes wrong
//! (the registry ignores `Range`, the TOC fails its digest or a bound, an entry the full read
//! would see differently) ends in a [`Fallback`] that says why, and the pipeline reads the layer
//! in full, so a figure never depends on which path built the index.

use bytes::Bytes;

use super::source::Opened;
use crate::analysis::toc::{BlobRange, LazyFormat, LazyLayer};
use crate::analysis::{Compression, LayerIndex, LayerLimits};
use crate::digest::Digest;
use crate::registry::RangeRead;

/// A layer indexed from its table of contents.
pub(super) struct TocRead {
    pub index: LayerIndex,
    /// Blob bytes fetched (footer, TOC, captured files' ranges).
    pub fetched: u64,
}

/// Why a layer's table of contents was not used; the layer is read in full.
pub(super) struct Fallback {
    pub why: String,
    /// Blob bytes fetched before giving up.
    pub fetched: u64,
}

/// Indexes one layer from its table of contents.
pub(super) async fn index_from_toc(
    opened: &Opened<'_>,
    digest: &Digest,
    layer: &LazyLayer,
    compression: Compression,
    limits: &LayerLimits,
) -> Result<TocRead, Fallback> {
    let refuse = |why: String| Fallback { why, fetched: 0 };
    let expected = match layer.format {
        LazyFormat::Estargz => Compression::Gzip,
        LazyFormat::ZstdChunked => Compression::Zstd,
    };
    if compression != expected {
        return Err(refuse(format!(
            "{} annotations on a layer whose media type says {compression:?}",
            layer.format
        )));
    }
    // The layer's uncompressed size is one of its figures (and scales its reclaimable pull
    // bytes); the TOC does not give it, so without the annotation only the full read is exact.
    let Some(uncompressed) = layer.uncompressed_size() else {
        return Err(refuse(
            "the descriptor does not state the uncompressed size \
             (io.containers.estargz.uncompressed-size), which the layer's figures need"
                .into(),
        ));
    };
    if uncompressed > limits.max_uncompressed_bytes {
        return Err(refuse(format!(
            "the stated uncompressed size {uncompressed} exceeds the layer limit"
        )));
    }
    let mut fetcher = Fetcher {
        opened,
        digest,
        size: layer.size,
        fetched: 0,
    };
    match read(&mut fetcher, layer, limits).await {
        Ok(index) => Ok(TocRead {
            index,
            fetched: fetcher.fetched,
        }),
        Err(why) => Err(Fallback {
            why,
            fetched: fetcher.fetched,
        }),
    }
}

async fn read(
    fetcher: &mut Fetcher<'_, '_>,
    layer: &LazyLayer,
    limits: &LayerLimits,
) -> Result<LayerIndex, String> {
    let tail = fetcher.get(layer.footer_range()).await?;
    let footer = layer.parse_footer(&tail).map_err(|e| e.to_string())?;
    let toc = fetcher.get(footer.toc_range()).await?;
    let (parsing, limits) = (layer.clone(), *limits);
    // Decompressing and parsing a TOC of ten thousand entries takes milliseconds of CPU.
    let lazy = tokio::task::spawn_blocking(move || parsing.parse_toc(&footer, &toc, &limits))
        .await
        .map_err(|e| format!("TOC parser stopped: {e}"))?
        .map_err(|e| e.to_string())?;
    let mut captured = Vec::with_capacity(lazy.captures.len());
    for capture in &lazy.captures {
        let mut ranges = Vec::with_capacity(capture.chunks.len());
        for range in capture.ranges() {
            ranges.push(fetcher.get(range).await?);
        }
        let slices: Vec<&[u8]> = ranges.iter().map(|b| b.as_ref()).collect();
        captured.push(capture.decode(&slices).map_err(|e| e.to_string())?);
    }
    Ok(lazy.finish(captured, layer.size))
}

/// Range reads of one blob, counted.
struct Fetcher<'a, 'o> {
    opened: &'a Opened<'o>,
    digest: &'a Digest,
    size: u64,
    fetched: u64,
}

impl Fetcher<'_, '_> {
    async fn get(&mut self, range: BlobRange) -> Result<Bytes, String> {
        let answer = self
            .opened
            .blob_range(self.digest, self.size, range.offset, range.len)
            .await
            .ok_or("the source serves no ranges")?;
        match answer.map_err(|e| e.to_string())? {
            RangeRead::Bytes(bytes) => {
                self.fetched += bytes.len() as u64;
                Ok(bytes)
            }
            RangeRead::Ignored { status } => Err(format!(
                "the registry does not serve ranges (HTTP {status} to a Range request)"
            )),
        }
    }
}

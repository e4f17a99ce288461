//! The table-of-contents path: a layer in eStargz or zstd:chunked indexed from a few ranges of
//! its blob (footer, TOC, the small files the advice reads; for containers/storage's
//! zstd:chunked, which does not state its uncompressed size, also the frames of tar headers
//! between the files' data) instead of the whole blob.
//!
//! [`crate::analysis::toc`] does the parsing and checking; this file fetches. Whatever goes wrong
//! (the registry ignores `Range`, the TOC fails its digest or a bound, an entry the full read
//! would see differently) ends in a [`Fallback`] that says why, and the pipeline reads the layer
//! in full, so a figure never depends on which path built the index.

use bytes::Bytes;
use futures_util::StreamExt;

use super::source::Opened;
use crate::analysis::toc::{BlobRange, LazyFormat, LazyLayer};
use crate::analysis::{Compression, LayerIndex, LayerLimits};
use crate::digest::Digest;
use crate::registry::{MAX_RANGE_BYTES, MAX_RANGES_PER_REQUEST, RangeRead, RangesRead};

/// What one part of a multipart answer costs beyond its bytes (delimiter and headers), for the
/// decision whether ranges are cheaper than the whole blob.
const PART_FRAMING_BYTES: u64 = 160;
/// Range requests of one layer in flight at once.
const CONCURRENT_REQUESTS: usize = 4;

/// A layer indexed from its table of contents.
pub(super) struct TocRead {
    pub index: LayerIndex,
    /// Blob bytes fetched (footer, TOC, captured files' ranges, header frames with their
    /// multipart framing): what the registry sent.
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
    // bytes). The TOC does not give it: the descriptor states it (stargz-snapshotter), or, for
    // containers/storage's zstd:chunked, the frames between the files' data give it; an eStargz
    // layer without it is read in full.
    let uncompressed = layer.uncompressed_size();
    if uncompressed.is_none() && layer.format == LazyFormat::Estargz {
        return Err(refuse(
            "the descriptor does not state the uncompressed size \
             (io.containers.estargz.uncompressed-size), which the layer's figures need"
                .into(),
        ));
    }
    if let Some(uncompressed) = uncompressed
        && uncompressed > limits.max_uncompressed_bytes
    {
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
    let mut lazy = tokio::task::spawn_blocking(move || parsing.parse_toc(&footer, &toc, &limits))
        .await
        .map_err(|e| format!("TOC parser stopped: {e}"))?
        .map_err(|e| e.to_string())?;
    if let Some(frames) = lazy.header_frames.take() {
        let ranges: Vec<(u64, u64)> = frames.ranges.iter().map(|r| (r.offset, r.len)).collect();
        let cost = frames.compressed_bytes() + ranges.len() as u64 * PART_FRAMING_BYTES;
        if cost.saturating_add(fetcher.fetched) >= layer.size / 2 {
            return Err(format!(
                "the tar headers between the files' data ({} ranges, {} bytes) cost about as \
                 much as the whole blob",
                ranges.len(),
                frames.compressed_bytes()
            ));
        }
        let fetched = fetcher.get_many(&ranges).await?;
        let slices: Vec<&[u8]> = fetched.iter().map(|b| b.as_ref()).collect();
        let size = frames
            .count(&slices, limits.max_uncompressed_bytes)
            .map_err(|e| e.to_string())?;
        lazy.uncompressed_bytes = Some(size);
    }
    // Every captured file's ranges in one go (batched, coalesced), then each file decoded from
    // its own slices.
    let ranges: Vec<(u64, u64)> = lazy
        .captures
        .iter()
        .flat_map(|c| c.ranges())
        .map(|r| (r.offset, r.len))
        .collect();
    let mut fetched = fetcher.get_many(&ranges).await?.into_iter();
    let mut captured = Vec::with_capacity(lazy.captures.len());
    for capture in &lazy.captures {
        let parts: Vec<Bytes> = fetched.by_ref().take(capture.ranges().count()).collect();
        let slices: Vec<&[u8]> = parts.iter().map(|b| b.as_ref()).collect();
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
            RangeRead::Ignored { status } => Err(ignored(status)),
        }
    }

    /// Many ranges (any order, overlaps allowed), each answered with its own bytes: ranges
    /// closer than a multipart part's framing are fetched as one (which costs fewer bytes than
    /// two parts), the rest in batches per request (a lone range as a plain one), a few
    /// requests at once.
    async fn get_many(&mut self, ranges: &[(u64, u64)]) -> Result<Vec<Bytes>, String> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let (merged, within) = coalesce(ranges, PART_FRAMING_BYTES);
        let fetched = self.get_batched(&merged).await?;
        Ok(within
            .iter()
            .zip(ranges)
            .map(|(&(i, start), &(_, len))| {
                let start = start as usize;
                fetched[i].slice(start..start + len as usize)
            })
            .collect())
    }

    /// Ranges in batches per request (a lone range as a plain one), a few requests at once.
    async fn get_batched(&mut self, ranges: &[(u64, u64)]) -> Result<Vec<Bytes>, String> {
        let mut batches = Vec::new();
        let mut rest = ranges;
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len()
                && n < MAX_RANGES_PER_REQUEST
                && bytes + rest[n].1 <= MAX_RANGE_BYTES
            {
                bytes += rest[n].1;
                n += 1;
            }
            let (batch, after) = rest.split_at(n.max(1));
            batches.push(batch);
            rest = after;
        }
        let (opened, digest, size) = (self.opened, self.digest, self.size);
        // The futures are collected first: a stream over a mapping closure would make the
        // scan's future fail to be `Send` (the operator spawns it).
        let requests: Vec<_> = batches
            .into_iter()
            .map(|batch| async move {
                let unserved = "the source serves no ranges";
                if let [(offset, len)] = batch {
                    let answer = opened.blob_range(digest, size, *offset, *len).await;
                    return match answer.ok_or(unserved)?.map_err(|e| e.to_string())? {
                        RangeRead::Bytes(b) => {
                            let n = b.len() as u64;
                            Ok((vec![b], n))
                        }
                        RangeRead::Ignored { status } => Err(ignored(status)),
                    };
                }
                let answer = opened.blob_ranges(digest, size, batch).await;
                match answer.ok_or(unserved)?.map_err(|e| e.to_string())? {
                    RangesRead::Parts { parts, fetched } => Ok((parts, fetched)),
                    RangesRead::Ignored { status } => Err(ignored(status)),
                }
            })
            .collect();
        let answers: Vec<Result<(Vec<Bytes>, u64), String>> = futures_util::stream::iter(requests)
            .buffered(CONCURRENT_REQUESTS)
            .collect()
            .await;
        let mut out = Vec::with_capacity(ranges.len());
        let mut failed = None;
        for answer in answers {
            match answer {
                Ok((parts, fetched)) => {
                    self.fetched += fetched;
                    out.extend(parts);
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Merges ranges (offset, length) whose gap is at most `gap` bytes (overlapping ones too) into
/// ranges sorted by offset; for each input range, the merged range holding it and where it
/// starts there.
/// A range of a blob: offset and length.
type Span = (u64, u64);

fn coalesce(ranges: &[Span], gap: u64) -> (Vec<Span>, Vec<(usize, u64)>) {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i]);
    let mut merged: Vec<Span> = Vec::new();
    let mut within = vec![(0, 0); ranges.len()];
    for i in order {
        let (offset, len) = ranges[i];
        let last = merged.len().wrapping_sub(1);
        let end = offset.saturating_add(len);
        match merged.last_mut() {
            Some((start, merged_len))
                if offset <= start.saturating_add(*merged_len).saturating_add(gap) =>
            {
                *merged_len = (*merged_len).max(end - *start);
                within[i] = (last, offset - *start);
            }
            _ => {
                merged.push((offset, len));
                within[i] = (merged.len() - 1, 0);
            }
        }
    }
    (merged, within)
}

fn ignored(status: u16) -> String {
    format!("the registry does not serve ranges (HTTP {status} to a Range request)")
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn ranges_closer_than_the_gap_are_fetched_as_one_and_each_keeps_its_place() {
        // Out of order, one overlapping, one touching, one inside another, one far away.
        let ranges = [
            (1_000, 10),
            (0, 100),
            (150, 50),
            (100, 10),
            (160, 5),
            (90, 20),
        ];
        let (merged, within) = coalesce(&ranges, 50);
        assert_eq!(merged, [(0, 200), (1_000, 10)]);
        assert_eq!(
            within,
            [(1, 0), (0, 0), (0, 150), (0, 100), (0, 160), (0, 90)]
        );
        // No gap allowed: only overlapping or touching ranges merge.
        let (merged, _) = coalesce(&[(0, 10), (10, 10), (21, 1)], 0);
        assert_eq!(merged, [(0, 20), (21, 1)]);
    }
}

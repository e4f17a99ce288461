//! Layer indexes read from a lazy-pull table of contents instead of the whole blob.
//!
//! eStargz (stargz-snapshotter, BuildKit, nerdctl) and zstd:chunked (containers/storage: Podman,
//! Buildah, skopeo; stargz-snapshotter's `--zstdchunked`) layers are ordinary tar+gzip / tar+zstd
//! blobs that also carry, near their end, a JSON list of every tar entry with its type, size, link
//! target and where its bytes sit in the blob. Reading that list costs a few kilobytes where the
//! streaming path ([`index_layer`](super::index_layer)) decompresses the whole layer.
//!
//! This module is pure: bytes in, values out. The caller fetches, in order,
//! 1. the blob's tail ([`LazyLayer::footer_range`]) and parses it ([`LazyLayer::parse_footer`]),
//! 2. the TOC bytes the footer names ([`Footer::toc_range`]), checked against the digest the
//!    layer descriptor's annotation names and parsed ([`LazyLayer::parse_toc`]),
//! 3. the few compressed ranges holding the files whose content the analysis reads
//!    ([`LazyIndex::captures`]), decoded with [`CaptureRequest::decode`],
//!
//! and [`LazyIndex::finish`] gives the [`LayerIndex`] the streaming path would have built from the
//! same blob: same entries in tar order, whiteouts and opaque markers as entries, the TOC's own tar
//! entry and stargz's landmark files included (the streaming path sees them as regular files).
//!
//! What is trusted: the TOC, pinned by the annotation's digest, which the manifest's digest pins in
//! turn; the captured files, checked against the per-file digest the TOC lists. What is not checked:
//! that the rest of the blob agrees with its TOC. One figure the TOC cannot give is the byte count of
//! the uncompressed tar stream; [`LazyIndex::uncompressed_bytes`] says when it is known.

use std::fmt;
use std::io::{self, Read};

use serde::Deserialize;

use super::layer::{self, CapturedFile, EntryKind, LayerIndex, LayerLimits};
use super::path;
use crate::digest::Digest;

/// eStargz: the TOC's digest (of the uncompressed JSON).
pub const ESTARGZ_TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The uncompressed tar size, written by stargz-snapshotter's converter (eStargz and its
/// zstd:chunked alike; containers/storage does not write it).
pub const ESTARGZ_UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// zstd:chunked: the digest of the compressed manifest bytes.
pub const ZSTD_CHUNKED_CHECKSUM_ANNOTATION: &str = "io.containers.zstd-chunked.manifest-checksum";
/// zstd:chunked: `offset:compressedLength:uncompressedLength:type` of the manifest.
pub const ZSTD_CHUNKED_POSITION_ANNOTATION: &str = "io.containers.zstd-chunked.manifest-position";

/// The name of the TOC's own tar entry in an eStargz blob.
pub const ESTARGZ_TOC_NAME: &str = "stargz.index.json";

/// The most TOC bytes read (compressed and uncompressed alike). The Debian base layer's TOC is
/// about 1 MiB of JSON for 10,000 entries; 64 MiB allows layers of several hundred thousand.
pub const MAX_TOC_BYTES: u64 = 64 << 20;
/// The most compressed bytes fetched for one captured file's chunk.
pub const MAX_CAPTURE_RANGE_BYTES: u64 = 4 << 20;

const ESTARGZ_FOOTER_BYTES: u64 = 51;
const ESTARGZ_LEGACY_FOOTER_BYTES: u64 = 47;
/// containers/storage writes 40 bytes of footer in a skippable frame; newer versions add the
/// tar-split position (64 bytes).
const ZSTD_FOOTER_BYTES: u64 = 8 + 40;
const ZSTD_FOOTER_WITH_TAR_SPLIT_BYTES: u64 = 8 + 64;
const ZSTD_CHUNKED_MAGIC: &[u8; 8] = b"GnUlInUx";
const ZSTD_SKIPPABLE_MAGIC: u32 = 0x184D_2A50;
const ZSTD_MANIFEST_TYPE_CRFS: u64 = 1;

/// Which lazy-pull format a layer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LazyFormat {
    Estargz,
    ZstdChunked,
}

impl fmt::Display for LazyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LazyFormat::Estargz => "eStargz",
            LazyFormat::ZstdChunked => "zstd:chunked",
        })
    }
}

/// Why a layer's TOC could not be used. The caller falls back to the full read.
#[derive(Debug)]
pub struct TocError {
    pub layer: String,
    pub format: LazyFormat,
    pub problem: TocProblem,
}

#[derive(Debug)]
pub enum TocProblem {
    /// The annotation naming the TOC's digest is missing or not a digest.
    BadAnnotation {
        annotation: &'static str,
        value: Option<String>,
    },
    /// The blob's tail is not the format's footer.
    BadFooter(String),
    /// The footer points outside the blob or names a TOC larger than [`MAX_TOC_BYTES`].
    BadTocPosition {
        offset: u64,
        len: u64,
        blob_size: u64,
    },
    /// The TOC bytes do not hash to the annotation's digest.
    DigestMismatch {
        expected: String,
        actual: String,
    },
    /// The TOC could not be decompressed or parsed.
    BadToc(String),
    /// An entry the streaming path would refuse or read differently.
    BadEntry {
        name: String,
        why: String,
    },
    TooManyEntries {
        limit: u64,
    },
    /// A captured file's fetched bytes do not decode to its content.
    BadCapture {
        path: String,
        why: String,
    },
}

impl fmt::Display for TocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} TOC of layer {}: ", self.format, self.layer)?;
        match &self.problem {
            TocProblem::BadAnnotation {
                annotation,
                value: None,
            } => {
                write!(f, "annotation {annotation} is missing")
            }
            TocProblem::BadAnnotation {
                annotation,
                value: Some(v),
            } => write!(f, "annotation {annotation} has an invalid value {v:?}"),
            TocProblem::BadFooter(why) => write!(f, "invalid footer: {why}"),
            TocProblem::BadTocPosition {
                offset,
                len,
                blob_size,
            } => write!(
                f,
                "TOC of {len} bytes at offset {offset} does not fit a {blob_size}-byte blob (or exceeds {MAX_TOC_BYTES} bytes)"
            ),
            TocProblem::DigestMismatch { expected, actual } => {
                write!(f, "TOC digest is {actual}, the annotation says {expected}")
            }
            TocProblem::BadToc(why) => write!(f, "invalid TOC: {why}"),
            TocProblem::BadEntry { name, why } => write!(f, "entry {name:?}: {why}"),
            TocProblem::TooManyEntries { limit } => write!(f, "more than {limit} entries"),
            TocProblem::BadCapture { path, why } => write!(f, "content of {path:?}: {why}"),
        }
    }
}

impl std::error::Error for TocError {}

/// A byte range of the compressed blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRange {
    pub offset: u64,
    pub len: u64,
}

/// A layer descriptor the TOC path can read: its digest, size and annotations.
#[derive(Debug, Clone)]
pub struct LazyLayer {
    pub digest: String,
    pub size: u64,
    pub format: LazyFormat,
    /// The digest the TOC bytes must have.
    toc_digest: Digest,
    /// zstd:chunked's `manifest-position` annotation, when present.
    position: Option<(u64, u64, u64)>,
    /// The uncompressed-size annotation, when present.
    uncompressed_size: Option<u64>,
}

impl LazyLayer {
    /// Recognises a lazy-pull layer from its descriptor's annotations; `Ok(None)` for an ordinary
    /// layer, an error when an annotation is there but unusable.
    pub fn detect<'a>(
        digest: &str,
        size: u64,
        annotations: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<Option<Self>, TocError> {
        let get = |key: &str| {
            annotations
                .clone()
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
        };
        let (format, annotation) = if get(ZSTD_CHUNKED_CHECKSUM_ANNOTATION).is_some() {
            (LazyFormat::ZstdChunked, ZSTD_CHUNKED_CHECKSUM_ANNOTATION)
        } else if get(ESTARGZ_TOC_DIGEST_ANNOTATION).is_some() {
            (LazyFormat::Estargz, ESTARGZ_TOC_DIGEST_ANNOTATION)
        } else {
            return Ok(None);
        };
        let err = |annotation, value: Option<&str>| TocError {
            layer: digest.to_string(),
            format,
            problem: TocProblem::BadAnnotation {
                annotation,
                value: value.map(str::to_string),
            },
        };
        let value = get(annotation);
        let toc_digest = value
            .and_then(|v| Digest::parse(v).ok())
            .ok_or_else(|| err(annotation, value))?;
        let position = match (format, get(ZSTD_CHUNKED_POSITION_ANNOTATION)) {
            (LazyFormat::ZstdChunked, Some(v)) => {
                let parts: Vec<Option<u64>> = v.split(':').map(|p| p.parse().ok()).collect();
                match parts.as_slice() {
                    [Some(o), Some(c), Some(u), Some(_)] => Some((*o, *c, *u)),
                    _ => return Err(err(ZSTD_CHUNKED_POSITION_ANNOTATION, Some(v))),
                }
            }
            _ => None,
        };
        let uncompressed_size = match get(ESTARGZ_UNCOMPRESSED_SIZE_ANNOTATION) {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| err(ESTARGZ_UNCOMPRESSED_SIZE_ANNOTATION, Some(v)))?,
            ),
            None => None,
        };
        Ok(Some(LazyLayer {
            digest: digest.to_string(),
            size,
            format,
            toc_digest,
            position,
            uncompressed_size,
        }))
    }

    /// The uncompressed tar size the descriptor states
    /// ([`ESTARGZ_UNCOMPRESSED_SIZE_ANNOTATION`]), when it does: the TOC itself cannot give it.
    pub fn uncompressed_size(&self) -> Option<u64> {
        self.uncompressed_size
    }

    fn error(&self, problem: TocProblem) -> TocError {
        TocError {
            layer: self.digest.clone(),
            format: self.format,
            problem,
        }
    }

    /// The blob's tail to fetch: enough for every footer variant of the format.
    pub fn footer_range(&self) -> BlobRange {
        let want = match self.format {
            LazyFormat::Estargz => ESTARGZ_FOOTER_BYTES,
            LazyFormat::ZstdChunked => ZSTD_FOOTER_WITH_TAR_SPLIT_BYTES,
        };
        let len = want.min(self.size);
        BlobRange {
            offset: self.size - len,
            len,
        }
    }

    /// Parses the blob's tail (the bytes of [`footer_range`](Self::footer_range)).
    pub fn parse_footer(&self, tail: &[u8]) -> Result<Footer, TocError> {
        let bad = |why: &str| self.error(TocProblem::BadFooter(why.to_string()));
        if tail.len() as u64 != self.footer_range().len {
            return Err(bad("the tail has the wrong length"));
        }
        let (offset, end, uncompressed) = match self.format {
            LazyFormat::Estargz => {
                let (offset, footer_len) = parse_estargz_footer(tail).ok_or_else(|| {
                    bad("not an eStargz footer (a gzip member whose extra field is %016xSTARGZ)")
                })?;
                (offset, self.size - footer_len, None)
            }
            LazyFormat::ZstdChunked => {
                let (offset, compressed, uncompressed) =
                    parse_zstd_chunked_footer(tail).map_err(bad)?;
                if let Some(position) = self.position
                    && position != (offset, compressed, uncompressed)
                {
                    return Err(bad(
                        "the footer disagrees with the manifest-position annotation",
                    ));
                }
                (
                    offset,
                    offset.saturating_add(compressed),
                    Some(uncompressed),
                )
            }
        };
        if offset >= end || end > self.size {
            return Err(self.error(TocProblem::BadTocPosition {
                offset,
                len: end.saturating_sub(offset),
                blob_size: self.size,
            }));
        }
        let len = end - offset;
        if len > MAX_TOC_BYTES || uncompressed.is_some_and(|u| u > MAX_TOC_BYTES) {
            return Err(self.error(TocProblem::BadTocPosition {
                offset,
                len,
                blob_size: self.size,
            }));
        }
        Ok(Footer {
            toc: BlobRange { offset, len },
            tail_bytes: tail.len() as u64,
        })
    }

    /// Checks the TOC bytes (those of [`Footer::toc_range`]) against the annotation's digest,
    /// decompresses and parses them, and builds the layer's index.
    pub fn parse_toc(
        &self,
        footer: &Footer,
        toc_bytes: &[u8],
        limits: &LayerLimits,
    ) -> Result<LazyIndex, TocError> {
        if toc_bytes.len() as u64 != footer.toc.len {
            return Err(self.error(TocProblem::BadToc(format!(
                "{} bytes given for a {}-byte TOC",
                toc_bytes.len(),
                footer.toc.len
            ))));
        }
        let json = match self.format {
            LazyFormat::Estargz => {
                let json =
                    estargz_toc_json(toc_bytes).map_err(|e| self.error(TocProblem::BadToc(e)))?;
                self.verify(&json)?;
                json
            }
            LazyFormat::ZstdChunked => {
                self.verify(toc_bytes)?;
                let mut json = Vec::new();
                zstd::stream::read::Decoder::new(toc_bytes)
                    .and_then(|d| d.take(MAX_TOC_BYTES + 1).read_to_end(&mut json))
                    .map_err(|e| self.error(TocProblem::BadToc(format!("zstd: {e}"))))?;
                if json.len() as u64 > MAX_TOC_BYTES {
                    return Err(self.error(TocProblem::BadToc("too large".into())));
                }
                json
            }
        };
        let toc: TocJson = serde_json::from_slice(&json)
            .map_err(|e| self.error(TocProblem::BadToc(format!("JSON: {e}"))))?;
        let (mut entries, captures, captures_skipped) =
            read_entries(self, footer, &toc.entries, limits)?;
        if self.format == LazyFormat::Estargz {
            // The TOC's own tar entry, last in the stream, is a regular file to a full read.
            entries.push((
                ESTARGZ_TOC_NAME.into(),
                Vec::new(),
                EntryKind::File,
                json.len() as u64,
            ));
        }
        let header_frames = match (self.format, self.uncompressed_size) {
            // A TOC whose frames cannot give the size is still a good index: the problem is kept
            // for whoever needs the size.
            (LazyFormat::ZstdChunked, None) => Some(
                header_frames(self, footer, &toc.entries).unwrap_or_else(|e| HeaderFrames {
                    ranges: Vec::new(),
                    file_bytes: 0,
                    layer: self.digest.clone(),
                    problem: Some(e.to_string()),
                }),
            ),
            _ => None,
        };
        let mut index = LayerIndex::from_entries(
            entries
                .iter()
                .map(|(p, l, k, s)| (p.as_slice(), l.as_slice(), *k, *s)),
        );
        index.captures_skipped = captures_skipped;
        Ok(LazyIndex {
            index,
            captures,
            uncompressed_bytes: self.uncompressed_size,
            fetched_bytes: footer.tail_bytes + footer.toc.len,
            header_frames,
        })
    }

    fn verify(&self, bytes: &[u8]) -> Result<(), TocError> {
        let actual = self.toc_digest.same_algorithm_of(bytes);
        if actual != self.toc_digest {
            return Err(self.error(TocProblem::DigestMismatch {
                expected: self.toc_digest.to_string(),
                actual: actual.to_string(),
            }));
        }
        Ok(())
    }
}

/// Where the TOC sits, from the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    toc: BlobRange,
    tail_bytes: u64,
}

impl Footer {
    /// The compressed TOC bytes to fetch: eStargz's TOC gzip member, zstd:chunked's compressed
    /// manifest.
    pub fn toc_range(&self) -> BlobRange {
        self.toc
    }
}

/// `(toc offset, footer length)` of an eStargz (51 bytes) or legacy stargz (47 bytes) footer at
/// the end of `tail`.
fn parse_estargz_footer(tail: &[u8]) -> Option<(u64, u64)> {
    for footer_len in [ESTARGZ_FOOTER_BYTES, ESTARGZ_LEGACY_FOOTER_BYTES] {
        let Some(footer) = tail
            .len()
            .checked_sub(footer_len as usize)
            .map(|s| &tail[s..])
        else {
            continue;
        };
        // gzip magic, deflate, FEXTRA set.
        if footer[..3] != [0x1f, 0x8b, 8] || footer[3] & 4 == 0 {
            continue;
        }
        let xlen = u16::from_le_bytes([footer[10], footer[11]]) as usize;
        let Some(extra) = footer.get(12..12 + xlen) else {
            continue;
        };
        let payload = match extra {
            // eStargz: one subfield `SG` of 22 bytes.
            [b'S', b'G', 22, 0, rest @ ..] if rest.len() == 22 => rest,
            // Legacy stargz: the payload is the whole extra field.
            _ if xlen == 22 && footer_len == ESTARGZ_LEGACY_FOOTER_BYTES => extra,
            _ => continue,
        };
        let (hex, magic) = payload.split_at(16);
        if magic != b"STARGZ" {
            continue;
        }
        let offset = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())?;
        return Some((offset, footer_len));
    }
    None
}

/// `(offset, compressed length, uncompressed length)` of the manifest, from containers/storage's
/// footer: a zstd skippable frame holding little-endian u64s and the magic `GnUlInUx` last.
fn parse_zstd_chunked_footer(tail: &[u8]) -> Result<(u64, u64, u64), &'static str> {
    if tail.len() < ZSTD_FOOTER_BYTES as usize || !tail.ends_with(ZSTD_CHUNKED_MAGIC) {
        return Err("no zstd:chunked magic at the end of the blob");
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    for frame_len in [ZSTD_FOOTER_WITH_TAR_SPLIT_BYTES, ZSTD_FOOTER_BYTES] {
        let Some(frame) = tail
            .len()
            .checked_sub(frame_len as usize)
            .map(|s| &tail[s..])
        else {
            continue;
        };
        if u32_at(frame, 0) != ZSTD_SKIPPABLE_MAGIC || u32_at(frame, 4) as u64 != frame_len - 8 {
            continue;
        }
        let data = &frame[8..];
        if u64_at(data, 24) != ZSTD_MANIFEST_TYPE_CRFS {
            return Err("unknown manifest type");
        }
        return Ok((u64_at(data, 0), u64_at(data, 8), u64_at(data, 16)));
    }
    Err("the magic is not inside a zstd skippable frame of a known size")
}

/// The `stargz.index.json` JSON from the TOC's gzip member (a tar holding that one entry).
fn estargz_toc_json(member: &[u8]) -> Result<Vec<u8>, String> {
    let gz = flate2::read::GzDecoder::new(member).take(MAX_TOC_BYTES + 4096);
    let mut archive = tar::Archive::new(gz);
    let entries = archive.entries().map_err(|e| format!("tar: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("tar: {e}"))?;
        if entry.path_bytes().as_ref() != ESTARGZ_TOC_NAME.as_bytes() {
            continue;
        }
        if entry.size() > MAX_TOC_BYTES {
            return Err("too large".into());
        }
        let mut json = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut json)
            .map_err(|e| format!("gzip: {e}"))?;
        return Ok(json);
    }
    Err(format!("no {ESTARGZ_TOC_NAME} in the TOC member"))
}

#[derive(Deserialize)]
struct TocJson {
    #[serde(default)]
    entries: Vec<TocEntry>,
}

/// The fields both formats share (eStargz's `TOCEntry`, containers/storage's `FileMetadata`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TocEntry {
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    link_name: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    end_offset: u64,
    #[serde(default)]
    inner_offset: u64,
    #[serde(default)]
    chunk_offset: u64,
    #[serde(default)]
    chunk_size: u64,
}

/// One compressed piece of a captured file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureChunk {
    /// The compressed bytes to fetch (a gzip member, or zstd frames).
    pub range: BlobRange,
    /// Bytes to skip in the decompressed range before the chunk starts.
    inner_offset: u64,
    /// Where the chunk sits in the file, and its length.
    file_offset: u64,
    len: u64,
}

/// A file whose content the analysis reads, and where its compressed bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    /// Position of the file's entry in the index.
    pub entry: u32,
    pub path: Vec<u8>,
    pub size: u64,
    pub chunks: Vec<CaptureChunk>,
    /// The file's digest as the TOC lists it (checked by [`decode`](Self::decode)).
    digest: Option<Digest>,
    format: LazyFormat,
    layer: String,
}

impl CaptureRequest {
    /// The ranges to fetch, in the order [`decode`](Self::decode) wants them.
    pub fn ranges(&self) -> impl Iterator<Item = BlobRange> + '_ {
        self.chunks.iter().map(|c| c.range)
    }

    /// The file's content from the fetched bytes of [`ranges`](Self::ranges), checked against
    /// the TOC's digest for the file.
    pub fn decode(&self, fetched: &[&[u8]]) -> Result<CapturedFile, TocError> {
        let bad = |why: String| TocError {
            layer: self.layer.clone(),
            format: self.format,
            problem: TocProblem::BadCapture {
                path: String::from_utf8_lossy(&self.path).into_owned(),
                why,
            },
        };
        if fetched.len() != self.chunks.len() {
            return Err(bad(format!(
                "{} ranges given for {} chunks",
                fetched.len(),
                self.chunks.len()
            )));
        }
        let mut content = Vec::with_capacity(self.size as usize);
        for (chunk, bytes) in self.chunks.iter().zip(fetched) {
            if bytes.len() as u64 != chunk.range.len {
                return Err(bad(format!(
                    "{} bytes given for a {}-byte range",
                    bytes.len(),
                    chunk.range.len
                )));
            }
            if chunk.file_offset != content.len() as u64 {
                return Err(bad("chunks are not contiguous".into()));
            }
            let mut decoder: Box<dyn Read + '_> = match self.format {
                LazyFormat::Estargz => Box::new(flate2::read::MultiGzDecoder::new(*bytes)),
                LazyFormat::ZstdChunked => Box::new(
                    zstd::stream::read::Decoder::new(*bytes).map_err(|e| bad(e.to_string()))?,
                ),
            };
            io::copy(
                &mut (&mut decoder).take(chunk.inner_offset),
                &mut io::sink(),
            )
            .map_err(|e| bad(e.to_string()))?;
            let before = content.len();
            (&mut decoder)
                .take(chunk.len)
                .read_to_end(&mut content)
                .map_err(|e| bad(e.to_string()))?;
            if (content.len() - before) as u64 != chunk.len {
                return Err(bad(
                    "the range decompresses to fewer bytes than the chunk".into()
                ));
            }
        }
        if content.len() as u64 != self.size {
            return Err(bad("the chunks do not cover the file".into()));
        }
        if let Some(digest) = &self.digest {
            let actual = digest.same_algorithm_of(&content);
            if &actual != digest {
                return Err(bad(format!("digest is {actual}, the TOC says {digest}")));
            }
        }
        Ok(CapturedFile {
            entry: self.entry,
            content,
        })
    }
}

/// A layer's index as read from its TOC, before the captured files' contents are attached.
#[derive(Debug, Clone)]
pub struct LazyIndex {
    index: LayerIndex,
    /// The files whose content the analysis reads, with where to fetch them.
    pub captures: Vec<CaptureRequest>,
    /// The uncompressed tar size when the descriptor says it
    /// ([`ESTARGZ_UNCOMPRESSED_SIZE_ANNOTATION`]); `None` leaves
    /// [`LayerIndex::uncompressed_bytes`] at 0, and the caller decides (the TOC cannot give it).
    pub uncompressed_bytes: Option<u64>,
    /// Bytes of the blob read so far: footer and TOC.
    pub fetched_bytes: u64,
    /// For a zstd:chunked layer whose descriptor does not state its uncompressed size: where the
    /// tar stream's headers and padding are, the one part of the size the TOC does not give.
    pub header_frames: Option<HeaderFrames>,
}

/// containers/storage writes each regular file's data in zstd frames of its own, which the TOC
/// locates (`offset`..`endOffset`), and everything else of the tar stream (headers, padding, the
/// end-of-archive blocks) in the frames between them. The uncompressed tar size is the files'
/// sizes, from the TOC, plus what those frames decompress to: a few bytes per entry, fetched
/// with [`ranges`](Self::ranges) and counted by [`count`](Self::count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFrames {
    /// The compressed ranges between file data, in blob order.
    pub ranges: Vec<BlobRange>,
    /// Sum of the regular files' sizes.
    file_bytes: u64,
    layer: String,
    /// Why the TOC's frames cannot give the size (then `ranges` is empty).
    problem: Option<String>,
}

impl HeaderFrames {
    /// Compressed bytes to fetch.
    pub fn compressed_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }

    /// The uncompressed tar size from the fetched bytes of every range (in order): at most
    /// `limit`, else an error.
    pub fn count(&self, fetched: &[&[u8]], limit: u64) -> Result<u64, TocError> {
        let bad = |why: String| TocError {
            layer: self.layer.clone(),
            format: LazyFormat::ZstdChunked,
            problem: TocProblem::BadToc(format!("tar headers between the files' frames: {why}")),
        };
        if let Some(problem) = &self.problem {
            return Err(bad(problem.clone()));
        }
        if fetched.len() != self.ranges.len() {
            return Err(bad(format!(
                "{} ranges given for {}",
                fetched.len(),
                self.ranges.len()
            )));
        }
        let mut total = self.file_bytes;
        let last = self.ranges.len().saturating_sub(1);
        for (i, (range, bytes)) in self.ranges.iter().zip(fetched).enumerate() {
            if bytes.len() as u64 != range.len {
                return Err(bad(format!(
                    "{} bytes given for a {}-byte range",
                    bytes.len(),
                    range.len
                )));
            }
            // The last range ends where the TOC's bytes start: inside the skippable frame that
            // holds them, whose 8-byte header (magic, length) it carries but not the content.
            let mut bytes: &[u8] = bytes;
            if i == last
                && let Some(head) = bytes.len().checked_sub(8)
                && bytes[head..head + 4] == ZSTD_SKIPPABLE_MAGIC.to_le_bytes()
            {
                bytes = &bytes[..head];
            }
            let room = limit.saturating_sub(total);
            let decoder = zstd::stream::read::Decoder::new(bytes)
                .map_err(|e| bad(format!("at offset {}: {e}", range.offset)))?;
            let n = io::copy(&mut decoder.take(room + 1), &mut io::sink())
                .map_err(|e| bad(format!("at offset {}: {e}", range.offset)))?;
            if n > room {
                return Err(bad(format!(
                    "the layer decompresses to more than {limit} bytes"
                )));
            }
            total += n;
        }
        Ok(total)
    }
}

/// The frames between the files' data frames, from the TOC entries' `offset`..`endOffset`.
fn header_frames(
    layer: &LazyLayer,
    footer: &Footer,
    toc: &[TocEntry],
) -> Result<HeaderFrames, TocError> {
    let bad = |why: String| layer.error(TocProblem::BadToc(why));
    let mut data: Vec<(u64, u64)> = Vec::new();
    let mut file_bytes = 0u64;
    for e in toc {
        if e.kind == "reg" {
            file_bytes = file_bytes.saturating_add(e.size);
        }
        if matches!(e.kind.as_str(), "reg" | "chunk") && e.end_offset > e.offset {
            data.push((e.offset, e.end_offset));
        } else if e.kind == "reg" && e.size > 0 {
            return Err(bad(format!("file {:?} has data but no frame", e.name)));
        }
    }
    data.sort_unstable();
    let mut ranges = Vec::new();
    let mut at = 0u64;
    for (start, end) in data {
        if start < at {
            return Err(bad("file data frames overlap".into()));
        }
        if start > at {
            ranges.push(BlobRange {
                offset: at,
                len: start - at,
            });
        }
        at = end;
    }
    let toc_start = footer.toc.offset;
    if at > toc_start {
        return Err(bad("file data runs into the TOC".into()));
    }
    if toc_start > at {
        ranges.push(BlobRange {
            offset: at,
            len: toc_start - at,
        });
    }
    Ok(HeaderFrames {
        ranges,
        file_bytes,
        layer: layer.digest.clone(),
        problem: None,
    })
}

impl LazyIndex {
    /// Bytes of the blob the TOC path reads in all: footer, TOC, every captured range and the
    /// header frames when it needs them.
    pub fn total_fetch_bytes(&self) -> u64 {
        self.fetched_bytes
            + self
                .header_frames
                .as_ref()
                .map_or(0, HeaderFrames::compressed_bytes)
            + self
                .captures
                .iter()
                .flat_map(|c| c.ranges())
                .map(|r| r.len)
                .sum::<u64>()
    }

    /// The layer's index, with the captured contents (one per [`captures`](Self::captures),
    /// decoded) attached as the streaming path attaches them.
    pub fn finish(self, captured: Vec<CapturedFile>, compressed_bytes: u64) -> LayerIndex {
        let mut index = self.index;
        index.captured = captured;
        index.compressed_bytes = compressed_bytes;
        index.uncompressed_bytes = self.uncompressed_bytes.unwrap_or(0);
        index
    }
}

/// An index entry: canonical path, canonical hard-link target, kind, size.
type OwnedEntry = (Vec<u8>, Vec<u8>, EntryKind, u64);

/// The streaming path's reading of the TOC's entries, in order, and the files to capture.
fn read_entries(
    layer: &LazyLayer,
    footer: &Footer,
    toc: &[TocEntry],
    limits: &LayerLimits,
) -> Result<(Vec<OwnedEntry>, Vec<CaptureRequest>, u32), TocError> {
    let bad = |name: &str, why: String| {
        layer.error(TocProblem::BadEntry {
            name: name.to_string(),
            why,
        })
    };
    let mut entries: Vec<OwnedEntry> = Vec::new();
    let mut captures: Vec<Option<CaptureRequest>> = Vec::new();
    let mut capture_at: std::collections::HashMap<Vec<u8>, usize> =
        std::collections::HashMap::new();
    let mut capture = layer::CapturePolicy::default();
    let mut total_size = 0u64;
    // Compressed offsets where data starts, sorted: eStargz ranges end at the next one.
    let mut starts: Vec<u64> = toc.iter().map(|e| e.offset).filter(|&o| o > 0).collect();
    starts.sort_unstable();
    starts.dedup();
    let toc_start = footer.toc.offset;

    for (i, e) in toc.iter().enumerate() {
        let kind = match e.kind.as_str() {
            "reg" => EntryKind::File,
            "hardlink" => EntryKind::HardLink,
            "dir" => EntryKind::Dir,
            "symlink" => EntryKind::Symlink,
            "char" | "block" | "fifo" => EntryKind::Other,
            // Further pieces of the previous regular file.
            "chunk" => continue,
            other => return Err(bad(&e.name, format!("unknown entry type {other:?}"))),
        };
        if entries.len() as u64 >= limits.max_entries {
            return Err(layer.error(TocProblem::TooManyEntries {
                limit: limits.max_entries,
            }));
        }
        // JSON cannot carry names that are not UTF-8: the producer replaced their bytes.
        if e.name.contains('\u{FFFD}') || e.link_name.contains('\u{FFFD}') {
            return Err(bad(
                &e.name,
                "a name that is not UTF-8 in the tar (the TOC cannot carry it)".into(),
            ));
        }
        let canonical = |raw: &str| {
            path::canonical(raw.as_bytes()).map_err(|error| bad(&e.name, error.to_string()))
        };
        let Some(path_buf) = canonical(&e.name)? else {
            continue; // the root directory itself
        };

        let (parent, name) = path::split_parent(&path_buf);
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                entries.push((parent.to_vec(), Vec::new(), EntryKind::Opaque, 0));
            } else if !hidden.is_empty() && !hidden.starts_with(b".wh.") {
                let mut target = parent.to_vec();
                if !parent.is_empty() {
                    target.push(b'/');
                }
                target.extend_from_slice(hidden);
                entries.push((target, Vec::new(), EntryKind::Whiteout, 0));
            }
            continue;
        }

        let link = if kind == EntryKind::HardLink {
            canonical(&e.link_name)?.unwrap_or_default()
        } else {
            Vec::new()
        };
        let size = if kind == EntryKind::File { e.size } else { 0 };
        total_size = total_size
            .checked_add(size)
            .filter(|&t| t <= limits.max_uncompressed_bytes)
            .ok_or_else(|| bad(&e.name, "file sizes exceed the layer size limit".into()))?;

        let id = entries.len() as u32;
        if kind == EntryKind::File && capture.take(&path_buf, size) {
            let chunks = capture_chunks(layer, &starts, toc_start, toc, i)
                .map_err(|why| bad(&e.name, why))?;
            let digest = (!e.digest.is_empty())
                .then(|| Digest::parse(&e.digest))
                .transpose()
                .map_err(|err| bad(&e.name, err.to_string()))?;
            // A later entry of the same path replaces the earlier one (and goes last).
            if let Some(i) = capture_at.insert(path_buf.clone(), captures.len()) {
                captures[i] = None;
            }
            captures.push(Some(CaptureRequest {
                entry: id,
                path: path_buf.clone(),
                size,
                chunks,
                digest,
                format: layer.format,
                layer: layer.digest.clone(),
            }));
        }
        entries.push((path_buf, link, kind, size));
    }
    let captures = captures.into_iter().flatten().collect();
    Ok((entries, captures, capture.skipped))
}

/// The compressed ranges of the regular file at `toc[i]` and its `chunk` entries.
fn capture_chunks(
    layer: &LazyLayer,
    starts: &[u64],
    toc_start: u64,
    toc: &[TocEntry],
    i: usize,
) -> Result<Vec<CaptureChunk>, String> {
    let file = &toc[i];
    if file.size == 0 {
        return Ok(Vec::new());
    }
    let pieces = std::iter::once(file).chain(
        toc[i + 1..]
            .iter()
            .take_while(|c| c.kind == "chunk" && c.name == file.name),
    );
    let mut chunks = Vec::new();
    for piece in pieces {
        let file_offset = piece.chunk_offset;
        let len = if piece.chunk_size > 0 {
            piece.chunk_size
        } else {
            file.size.saturating_sub(file_offset)
        };
        if file_offset
            .checked_add(len)
            .is_none_or(|end| end > file.size)
        {
            return Err("a chunk lies outside the file".into());
        }
        let start = piece.offset;
        let end = if piece.end_offset > 0 {
            piece.end_offset
        } else {
            // eStargz: the gzip member runs to the next entry's data, or to the TOC.
            let next = starts.partition_point(|&s| s <= start);
            starts
                .get(next)
                .copied()
                .unwrap_or(toc_start)
                .min(toc_start)
        };
        if start == 0 || start >= end || end > toc_start.min(layer.size) {
            return Err(format!(
                "data range {start}..{end} is outside the blob's data (which ends at {toc_start})"
            ));
        }
        if end - start > MAX_CAPTURE_RANGE_BYTES {
            return Err(format!(
                "data range of {} bytes exceeds {MAX_CAPTURE_RANGE_BYTES}",
                end - start
            ));
        }
        chunks.push(CaptureChunk {
            range: BlobRange {
                offset: start,
                len: end - start,
            },
            inner_offset: piece.inner_offset,
            file_offset,
            len,
        });
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    const LAYER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn estargz_footer(toc_offset: u64) -> Vec<u8> {
        let mut f = vec![
            0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
        ];
        f.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
        f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(f.len() as u64, ESTARGZ_FOOTER_BYTES);
        f
    }

    /// A TOC member: gzip of a tar holding `stargz.index.json`.
    fn estargz_toc_member(json: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(json.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, ESTARGZ_TOC_NAME, json)
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    /// An eStargz blob: `data` (any bytes), the TOC member and the footer; and its layer.
    fn estargz(data: &[u8], json: &[u8]) -> (Vec<u8>, LazyLayer) {
        let mut blob = data.to_vec();
        let toc_offset = blob.len() as u64;
        blob.extend(estargz_toc_member(json));
        blob.extend(estargz_footer(toc_offset));
        let digest = Digest::sha256_of(json).to_string();
        let layer = LazyLayer::detect(
            LAYER,
            blob.len() as u64,
            [(ESTARGZ_TOC_DIGEST_ANNOTATION, digest.as_str())],
        )
        .unwrap()
        .unwrap();
        (blob, layer)
    }

    fn zstd_chunked_footer(offset: u64, compressed: u64, uncompressed: u64, kind: u64) -> Vec<u8> {
        let mut f = ZSTD_SKIPPABLE_MAGIC.to_le_bytes().to_vec();
        f.extend_from_slice(&40u32.to_le_bytes());
        for v in [offset, compressed, uncompressed, kind] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(ZSTD_CHUNKED_MAGIC);
        f
    }

    /// A zstd:chunked blob: `data`, the manifest in a skippable frame, the footer; and its layer.
    fn zstd_chunked(data: &[u8], json: &[u8]) -> (Vec<u8>, LazyLayer) {
        let manifest = zstd::encode_all(json, 3).unwrap();
        let mut blob = data.to_vec();
        blob.extend_from_slice(&ZSTD_SKIPPABLE_MAGIC.to_le_bytes());
        blob.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        let offset = blob.len() as u64;
        blob.extend_from_slice(&manifest);
        blob.extend(zstd_chunked_footer(
            offset,
            manifest.len() as u64,
            json.len() as u64,
            ZSTD_MANIFEST_TYPE_CRFS,
        ));
        let digest = Digest::sha256_of(&manifest).to_string();
        let layer = LazyLayer::detect(
            LAYER,
            blob.len() as u64,
            [(ZSTD_CHUNKED_CHECKSUM_ANNOTATION, digest.as_str())],
        )
        .unwrap()
        .unwrap();
        (blob, layer)
    }

    fn slice(blob: &[u8], r: BlobRange) -> &[u8] {
        &blob[r.offset as usize..(r.offset + r.len) as usize]
    }

    fn read(blob: &[u8], layer: &LazyLayer) -> Result<LazyIndex, TocError> {
        let footer = layer.parse_footer(slice(blob, layer.footer_range()))?;
        layer.parse_toc(
            &footer,
            slice(blob, footer.toc_range()),
            &LayerLimits::default(),
        )
    }

    fn entries(index: LazyIndex) -> Vec<(String, EntryKind, u64)> {
        index
            .finish(Vec::new(), 0)
            .entries()
            .map(|e| (String::from_utf8_lossy(e.path).into_owned(), e.kind, e.size))
            .collect()
    }

    const TOC: &[u8] = br#"{"version":1,"entries":[
        {"name":"./etc/","type":"dir"},
        {"name":"etc/passwd","type":"reg","size":10,"offset":1},
        {"name":"etc/.wh.shadow","type":"reg","size":0},
        {"name":"var/.wh..wh..opq","type":"reg"},
        {"name":"bin/sh","type":"hardlink","linkName":"/bin/bash"},
        {"name":".no.prefetch.landmark","type":"reg","size":1,"offset":2}]}"#;

    #[test]
    fn estargz_toc_reads_whiteouts_opaque_markers_landmarks_and_its_own_tar_entry() {
        let (blob, layer) = estargz(b"xxxx", TOC);
        let got = entries(read(&blob, &layer).unwrap());
        assert_eq!(
            got,
            [
                ("etc".into(), EntryKind::Dir, 0),
                ("etc/passwd".into(), EntryKind::File, 10),
                ("etc/shadow".into(), EntryKind::Whiteout, 0),
                ("var".into(), EntryKind::Opaque, 0),
                ("bin/sh".into(), EntryKind::HardLink, 0),
                (".no.prefetch.landmark".into(), EntryKind::File, 1),
                (ESTARGZ_TOC_NAME.into(), EntryKind::File, TOC.len() as u64),
            ]
        );
    }

    #[test]
    fn zstd_chunked_manifest_reads_the_same_entries_without_a_tar_entry_of_its_own() {
        let (blob, layer) = zstd_chunked(b"xxxx", TOC);
        let got = entries(read(&blob, &layer).unwrap());
        assert_eq!(got.len(), 6);
        assert_eq!(got[2], ("etc/shadow".into(), EntryKind::Whiteout, 0));
    }

    #[test]
    fn a_zstd_chunked_layer_without_a_stated_size_gets_it_from_the_frames_between_its_files() {
        let headers = zstd::encode_all(&[b'H'; 512][..], 3).unwrap();
        let data = zstd::encode_all(&b"hello"[..], 3).unwrap();
        let trailer = zstd::encode_all(&[0u8; 1531][..], 3).unwrap();
        let start = headers.len();
        let end = start + data.len();
        let blob_data = [headers.as_slice(), &data, &trailer].concat();
        let json = format!(
            r#"{{"version":1,"entries":[{{"type":"reg","name":"f","size":5,"offset":{start},"endOffset":{end}}}]}}"#
        );
        let (blob, layer) = zstd_chunked(&blob_data, json.as_bytes());
        let lazy = read(&blob, &layer).unwrap();
        let frames = lazy.header_frames.clone().unwrap();
        assert_eq!(frames.ranges.len(), 2);
        assert_eq!(
            frames.ranges[0],
            BlobRange {
                offset: 0,
                len: start as u64
            }
        );
        // The second range runs to the TOC, over the skippable frame's 8-byte header.
        let toc_start = blob_data.len() as u64 + 8;
        assert_eq!(frames.ranges[1].offset + frames.ranges[1].len, toc_start);
        let fetched: Vec<&[u8]> = frames.ranges.iter().map(|r| slice(&blob, *r)).collect();
        assert_eq!(frames.count(&fetched, 1 << 20).unwrap(), 512 + 5 + 1531);
        let err = frames.count(&fetched, 1000).unwrap_err();
        assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
        assert_eq!(
            lazy.total_fetch_bytes(),
            lazy.fetched_bytes + frames.compressed_bytes()
        );
    }

    #[test]
    fn a_zstd_chunked_file_with_data_but_no_frame_gives_no_size() {
        let (blob, layer) = zstd_chunked(b"xxxx", TOC);
        let frames = read(&blob, &layer).unwrap().header_frames.unwrap();
        assert!(frames.ranges.is_empty());
        let err = frames.count(&[], 1 << 20).unwrap_err();
        assert!(err.to_string().contains("has data but no frame"), "{err}");
    }

    #[test]
    fn a_layer_without_lazy_annotations_is_not_lazy() {
        let detected = LazyLayer::detect(LAYER, 10, [("org.example", "x")]).unwrap();
        assert!(detected.is_none());
    }

    #[test]
    fn an_annotation_that_is_not_a_digest_is_an_error_naming_the_layer() {
        let err = LazyLayer::detect(LAYER, 10, [(ESTARGZ_TOC_DIGEST_ANNOTATION, "sha256:zz")])
            .unwrap_err();
        assert!(err.to_string().contains(LAYER), "{err}");
        assert!(matches!(err.problem, TocProblem::BadAnnotation { .. }));
    }

    #[test]
    fn a_toc_that_fails_its_digest_is_refused() {
        let (blob, _) = estargz(b"xxxx", TOC);
        let other = Digest::sha256_of(b"other").to_string();
        let layer = LazyLayer::detect(
            LAYER,
            blob.len() as u64,
            [(ESTARGZ_TOC_DIGEST_ANNOTATION, other.as_str())],
        )
        .unwrap()
        .unwrap();
        let err = read(&blob, &layer).unwrap_err();
        assert!(
            matches!(err.problem, TocProblem::DigestMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_blob_has_no_footer() {
        let (blob, _) = estargz(b"", TOC);
        for len in [0, 1, 20, 46, 50] {
            let short = &blob[blob.len() - len..];
            let layer = LazyLayer {
                size: len as u64,
                ..estargz(b"", TOC).1
            };
            let err = read(short, &layer).unwrap_err();
            assert!(
                matches!(err.problem, TocProblem::BadFooter(_)),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn a_footer_with_the_wrong_magic_is_refused() {
        let (mut blob, layer) = estargz(b"xxxx", TOC);
        let n = blob.len();
        blob[n - 14] = b'X'; // inside "STARGZ"
        assert!(matches!(
            read(&blob, &layer).unwrap_err().problem,
            TocProblem::BadFooter(_)
        ));
        let (mut blob, layer) = zstd_chunked(b"xxxx", TOC);
        let n = blob.len();
        blob[n - 1] = b'X';
        assert!(matches!(
            read(&blob, &layer).unwrap_err().problem,
            TocProblem::BadFooter(_)
        ));
    }

    #[test]
    fn a_toc_offset_past_the_end_is_refused() {
        let (mut blob, layer) = estargz(b"xxxx", TOC);
        let n = blob.len();
        blob.truncate(n - 51);
        blob.extend(estargz_footer(u64::MAX / 2));
        let err = read(&blob, &layer).unwrap_err();
        assert!(
            matches!(err.problem, TocProblem::BadTocPosition { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_zstd_chunked_manifest_larger_than_the_bound_is_refused_before_it_is_fetched() {
        let (mut blob, layer) = zstd_chunked(b"xxxx", TOC);
        let n = blob.len();
        blob.truncate(n - 48);
        blob.extend(zstd_chunked_footer(8, 16, MAX_TOC_BYTES + 1, 1));
        let err = read(&blob, &layer).unwrap_err();
        assert!(
            matches!(err.problem, TocProblem::BadTocPosition { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_footer_that_disagrees_with_the_position_annotation_is_refused() {
        let (blob, layer) = zstd_chunked(b"xxxx", TOC);
        let layer = LazyLayer {
            position: Some((1, 2, 3)),
            ..layer
        };
        assert!(matches!(
            read(&blob, &layer).unwrap_err().problem,
            TocProblem::BadFooter(_)
        ));
    }

    #[test]
    fn file_sizes_beyond_the_layer_limit_are_refused() {
        let json = br#"{"entries":[{"name":"a","type":"reg","size":18446744073709551615},
            {"name":"b","type":"reg","size":18446744073709551615}]}"#;
        let (blob, layer) = zstd_chunked(b"", json);
        let err = read(&blob, &layer).unwrap_err();
        assert!(matches!(err.problem, TocProblem::BadEntry { .. }), "{err}");
    }

    #[test]
    fn names_the_producer_could_not_put_in_json_send_the_layer_to_the_full_read() {
        let json = "{\"entries\":[{\"name\":\"caf\u{FFFD}\",\"type\":\"reg\"}]}";
        let (blob, layer) = estargz(b"", json.as_bytes());
        let err = read(&blob, &layer).unwrap_err();
        assert!(matches!(err.problem, TocProblem::BadEntry { .. }), "{err}");
        let raw = b"{\"entries\":[{\"name\":\"caf\xe9\",\"type\":\"reg\"}]}";
        let (blob, layer) = estargz(b"", raw);
        let err = read(&blob, &layer).unwrap_err();
        assert!(matches!(err.problem, TocProblem::BadToc(_)), "{err}");
    }

    #[test]
    fn a_name_climbing_out_of_the_root_is_refused_as_the_full_read_refuses_it() {
        let json = br#"{"entries":[{"name":"../etc/passwd","type":"reg"}]}"#;
        let (blob, layer) = zstd_chunked(b"", json);
        assert!(matches!(
            read(&blob, &layer).unwrap_err().problem,
            TocProblem::BadEntry { .. }
        ));
    }

    #[test]
    fn a_captured_file_whose_range_lies_past_the_data_is_refused() {
        let json =
            br#"{"entries":[{"name":"etc/os-release","type":"reg","size":5,"offset":4000}]}"#;
        let (blob, layer) = estargz(b"xxxx", json);
        assert!(matches!(
            read(&blob, &layer).unwrap_err().problem,
            TocProblem::BadEntry { .. }
        ));
    }

    #[test]
    fn a_captured_file_is_decoded_from_its_member_and_checked_against_its_digest() {
        let content = b"ID=edge\n";
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        member.write_all(content).unwrap();
        let mut data = vec![0u8; 10];
        data.extend(member.finish().unwrap());
        let json = format!(
            r#"{{"entries":[{{"name":"etc/os-release","type":"reg","size":8,"offset":10,"digest":"{}"}}]}}"#,
            Digest::sha256_of(content)
        );
        let (blob, layer) = estargz(&data, json.as_bytes());
        let index = read(&blob, &layer).unwrap();
        let capture = &index.captures[0];
        let ranges: Vec<&[u8]> = capture.ranges().map(|r| slice(&blob, r)).collect();
        assert_eq!(capture.decode(&ranges).unwrap().content, content);
        let wrong = [&blob[..ranges[0].len()]];
        assert!(capture.decode(&wrong).is_err());
        assert!(capture.decode(&[]).is_err());
    }

    #[test]
    fn a_legacy_stargz_footer_is_read() {
        let (blob, layer) = estargz(b"xxxx", TOC);
        let mut legacy = blob[..blob.len() - ESTARGZ_FOOTER_BYTES as usize].to_vec();
        legacy.extend_from_slice(&[0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 22, 0]);
        legacy.extend_from_slice(b"0000000000000004STARGZ");
        legacy.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        let layer = LazyLayer {
            size: legacy.len() as u64,
            ..layer
        };
        assert_eq!(entries(read(&legacy, &layer).unwrap()).len(), 7);
    }

    #[test]
    fn a_captured_file_that_decodes_to_other_bytes_than_its_digest_is_refused() {
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        member.write_all(b"ID=evil\n").unwrap();
        let data = member.finish().unwrap();
        let json = format!(
            r#"{{"entries":[{{"name":"etc/os-release","type":"reg","size":8,"offset":1,"digest":"{}"}}]}}"#,
            Digest::sha256_of(b"ID=edge\n")
        );
        let mut padded = vec![0u8];
        padded.extend(data);
        let (blob, layer) = estargz(&padded, json.as_bytes());
        let index = read(&blob, &layer).unwrap();
        let capture = &index.captures[0];
        let ranges: Vec<&[u8]> = capture.ranges().map(|r| slice(&blob, r)).collect();
        let err = capture.decode(&ranges).unwrap_err();
        assert!(
            matches!(err.problem, TocProblem::BadCapture { .. }),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_tails_and_tocs_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..80),
            toc in proptest::collection::vec(any::<u8>(), 0..200),
            zstd in any::<bool>(),
        ) {
            let (_, layer) = if zstd { zstd_chunked(b"", TOC) } else { estargz(b"", TOC) };
            let layer = LazyLayer { size: tail.len() as u64 + 1000, ..layer };
            let tail = &tail[..layer.footer_range().len.min(tail.len() as u64) as usize];
            let _ = layer.parse_footer(tail);
            let footer = Footer { toc: BlobRange { offset: 1, len: toc.len() as u64 }, tail_bytes: 0 };
            let _ = layer.parse_toc(&footer, &toc, &LayerLimits::default());
        }
    }
}

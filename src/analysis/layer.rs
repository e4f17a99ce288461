//! One streaming pass over one layer blob: decompress, walk the tar, keep only what the waste
//! math needs.
//!
//! The result, a [`LayerIndex`], depends only on the layer's bytes, so it is keyed by the layer
//! digest and shared by every image that contains the layer. It holds one compact record per tar
//! entry (24 bytes plus the path) and never any file content, except a few small files the advice
//! reads (`os-release`). Memory therefore grows with the number of entries, not with layer bytes.

use std::fmt;
use std::io::{self, BufReader, Read};

use super::path::{self, PathError};

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

/// What a layer media type tells the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerMediaType {
    pub compression: Compression,
    /// Foreign (Docker) or non-distributable (OCI) layers: often served only from other URLs;
    /// the analysis notes them instead of failing.
    pub non_distributable: bool,
}

impl LayerMediaType {
    /// Recognises the OCI and Docker v2 layer media types; `None` for anything else.
    pub fn parse(media_type: &str) -> Option<Self> {
        let (compression, non_distributable) = match media_type {
            "application/vnd.oci.image.layer.v1.tar" => (Compression::Plain, false),
            "application/vnd.oci.image.layer.v1.tar+gzip" => (Compression::Gzip, false),
            "application/vnd.oci.image.layer.v1.tar+zstd" => (Compression::Zstd, false),
            "application/vnd.oci.image.layer.nondistributable.v1.tar" => (Compression::Plain, true),
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                (Compression::Gzip, true)
            }
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                (Compression::Zstd, true)
            }
            "application/vnd.docker.image.rootfs.diff.tar.gzip" => (Compression::Gzip, false),
            "application/vnd.docker.image.rootfs.diff.tar" => (Compression::Plain, false),
            "application/vnd.docker.image.rootfs.diff.tar.zstd" => (Compression::Zstd, false),
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                (Compression::Gzip, true)
            }
            "application/vnd.docker.image.rootfs.foreign.diff.tar" => (Compression::Plain, true),
            _ => return None,
        };
        Some(LayerMediaType {
            compression,
            non_distributable,
        })
    }
}

/// Caps that keep hostile layers from exhausting the machine.
#[derive(Debug, Clone, Copy)]
pub struct LayerLimits {
    /// Uncompressed bytes per layer (a gzip bomb stops here).
    pub max_uncompressed_bytes: u64,
    /// Tar entries per layer (memory grows with entries).
    pub max_entries: u64,
}

impl Default for LayerLimits {
    fn default() -> Self {
        LayerLimits {
            // Larger than any real layer seen in practice (multi-GB ML images included).
            max_uncompressed_bytes: 64 << 30,
            // About 200 MB of index at most; real layers have well under a million entries.
            max_entries: 5_000_000,
        }
    }
}

/// The kind of one tar entry, as the waste math sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A regular file: the only kind that has bytes.
    File,
    /// A hard link to a file named by the entry's link target.
    HardLink,
    Dir,
    Symlink,
    /// Devices, FIFOs and other special files.
    Other,
    /// `.wh.NAME`: the entry's path is the removed `NAME` (in the whiteout's directory).
    Whiteout,
    /// `.wh..wh..opq`: the entry's path is the directory whose lower contents are hidden.
    Opaque,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Offset of the path in the arena; a hard link's target follows the path directly.
    start: u32,
    path_len: u16,
    link_len: u16,
    kind: EntryKind,
    size: u64,
}

/// One entry of a [`LayerIndex`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Canonical path (see [`path`]).
    pub path: &'a [u8],
    /// Canonical hard-link target; empty for other kinds.
    pub link: &'a [u8],
    pub kind: EntryKind,
    /// Bytes of a regular file; 0 for every other kind.
    pub size: u64,
}

/// A small file whose content the advice reads (for example `etc/os-release`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFile {
    /// Position of the file's entry in [`LayerIndex::entries`].
    pub entry: u32,
    pub content: Vec<u8>,
}

/// Paths whose content is kept, and how much of it.
const CAPTURED_PATHS: &[&[u8]] = &[b"etc/os-release", b"usr/lib/os-release"];
const MAX_CAPTURED_BYTES: u64 = 16 << 10;

/// Everything the analysis keeps of one layer.
#[derive(Debug, Clone, Default)]
pub struct LayerIndex {
    entries: Vec<Entry>,
    arena: Vec<u8>,
    /// Bytes of the uncompressed tar stream (the layer's diff size).
    pub uncompressed_bytes: u64,
    /// Bytes of the compressed blob as read.
    pub compressed_bytes: u64,
    /// Sum of regular-file sizes in this layer (hard links add nothing).
    pub size_bytes: u64,
    /// Regular files in this layer (hard links not counted).
    pub file_count: u64,
    pub captured: Vec<CapturedFile>,
}

impl LayerIndex {
    /// The entries in tar order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = EntryRef<'_>> + '_ {
        self.entries.iter().map(|e| self.entry_ref(e))
    }

    /// The entry at a position of [`entries`](Self::entries).
    pub fn entry(&self, i: u32) -> EntryRef<'_> {
        self.entry_ref(&self.entries[i as usize])
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes held by this index (for cache accounting).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.arena.capacity()
            + self.captured.iter().map(|c| c.content.len()).sum::<usize>()
    }

    fn entry_ref(&self, e: &Entry) -> EntryRef<'_> {
        let start = e.start as usize;
        let path_end = start + e.path_len as usize;
        EntryRef {
            path: &self.arena[start..path_end],
            link: &self.arena[path_end..path_end + e.link_len as usize],
            kind: e.kind,
            size: e.size,
        }
    }

    fn push(
        &mut self,
        path: &[u8],
        link: &[u8],
        kind: EntryKind,
        size: u64,
    ) -> Result<u32, LayerError> {
        let start = u32::try_from(self.arena.len())
            .ok()
            .filter(|s| s.checked_add((path.len() + link.len()) as u32).is_some())
            .ok_or(LayerError::IndexTooLarge)?;
        self.arena.extend_from_slice(path);
        self.arena.extend_from_slice(link);
        let id = self.entries.len() as u32;
        self.entries.push(Entry {
            start,
            // Both are canonical paths, at most MAX_PATH_BYTES long.
            path_len: path.len() as u16,
            link_len: link.len() as u16,
            kind,
            size,
        });
        Ok(id)
    }

    /// Builds an index from entries given directly (tests and fixtures).
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8], EntryKind, u64)>,
    ) -> Self {
        let mut index = LayerIndex::default();
        for (path, link, kind, size) in entries {
            let size = if kind == EntryKind::File { size } else { 0 };
            index.push(path, link, kind, size).expect("small fixture");
            if kind == EntryKind::File {
                index.size_bytes += size;
                index.file_count += 1;
            }
        }
        index
    }
}

/// What went wrong while reading a layer. The caller adds which image and which layer.
#[derive(Debug)]
pub enum LayerError {
    /// The blob could not be read (network, truncated download, digest mismatch …).
    Source(io::Error),
    /// The compressed stream is not valid.
    Decompress {
        compression: Compression,
        compressed_offset: u64,
        error: io::Error,
    },
    /// The tar stream is not valid.
    Tar { entry: u64, error: io::Error },
    /// An entry name that no runtime could extract safely.
    BadPath { path: String, error: PathError },
    /// Decompressed past [`LayerLimits::max_uncompressed_bytes`].
    TooLarge { limit: u64 },
    /// More entries than [`LayerLimits::max_entries`].
    TooManyEntries { limit: u64 },
    /// More path text than one index can address (4 GiB).
    IndexTooLarge,
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::Source(e) => write!(f, "{e}"),
            LayerError::Decompress {
                compression,
                compressed_offset,
                error,
            } => write!(
                f,
                "corrupt {} stream near compressed byte {compressed_offset}: {error}",
                match compression {
                    Compression::Gzip => "gzip",
                    Compression::Zstd => "zstd",
                    Compression::Plain => "tar",
                }
            ),
            LayerError::Tar { entry, error } => {
                write!(f, "invalid tar stream at entry {entry}: {error}")
            }
            LayerError::BadPath { path, error } => write!(f, "entry {path:?}: {error}"),
            LayerError::TooLarge { limit } => write!(
                f,
                "uncompressed layer exceeds the limit of {limit} bytes (a decompression bomb, or raise --max-layer-bytes)"
            ),
            LayerError::TooManyEntries { limit } => write!(
                f,
                "layer has more than {limit} entries (raise --max-layer-entries if it is genuine)"
            ),
            LayerError::IndexTooLarge => f.write_str("layer paths exceed 4 GiB of text"),
        }
    }
}

impl std::error::Error for LayerError {}

/// Counts bytes read from the blob and keeps the source's own error, so that a failed download
/// is reported as such and not as the corrupt stream it leaves behind.
struct SourceReader<R> {
    inner: R,
    read: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = io::Error::new(e.kind(), e.to_string());
                self.error = Some(e);
                Err(copy)
            }
        }
    }
}

/// Marks the decompressed stream's failures apart from the tar parser's own.
#[derive(Debug)]
struct DecodeFailed;

impl fmt::Display for DecodeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("decompressed stream failed")
    }
}

impl std::error::Error for DecodeFailed {}

/// The decompressed tar stream: counts bytes, enforces the size cap and records decoder errors.
struct TarStream<'a> {
    decoder: Box<dyn Read + 'a>,
    read: u64,
    limit: u64,
    error: Option<DecodeError>,
}

enum DecodeError {
    Io(io::Error),
    TooLarge,
}

impl Read for TarStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.decoder.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                if self.read > self.limit {
                    self.error = Some(DecodeError::TooLarge);
                    return Err(io::Error::other(DecodeFailed));
                }
                Ok(n)
            }
            Err(e) => {
                self.error = Some(DecodeError::Io(e));
                Err(io::Error::other(DecodeFailed))
            }
        }
    }
}

/// Reads a layer blob to its end and indexes it.
///
/// The blob is read completely even after the tar end-of-archive marker, so that a digest check
/// done by the source at end of stream always runs.
pub fn index_layer<R: Read>(
    blob: R,
    compression: Compression,
    limits: &LayerLimits,
) -> Result<LayerIndex, LayerError> {
    let mut source = SourceReader {
        inner: blob,
        read: 0,
        error: None,
    };
    let result = {
        let buffered = BufReader::with_capacity(256 << 10, &mut source);
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::Plain => Box::new(buffered),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(buffered) {
                Ok(d) => Box::new(d),
                Err(error) => {
                    return Err(LayerError::Decompress {
                        compression,
                        compressed_offset: 0,
                        error,
                    });
                }
            },
        };
        let mut stream = TarStream {
            decoder,
            read: 0,
            limit: limits.max_uncompressed_bytes,
            error: None,
        };
        let walked = walk_tar(&mut stream, limits);
        let drained = walked.and_then(|index| drain(&mut stream).map(|()| index));
        let uncompressed = stream.read;
        match drained {
            Ok(mut index) => {
                index.uncompressed_bytes = uncompressed;
                Ok(index)
            }
            Err(e) => Err(match stream.error.take() {
                Some(DecodeError::TooLarge) => LayerError::TooLarge {
                    limit: limits.max_uncompressed_bytes,
                },
                Some(DecodeError::Io(error)) => LayerError::Decompress {
                    compression,
                    compressed_offset: 0,
                    error,
                },
                None => e,
            }),
        }
    };
    if let Err(LayerError::Decompress { .. } | LayerError::Tar { .. } | LayerError::BadPath { .. }) =
        &result
        && source.error.is_none()
    {
        // A corrupt stream is most often a corrupt download: read the rest of the blob so the
        // source's digest check can say so, rather than blaming the format.
        let offset = source.read;
        let _ = io::copy(&mut source, &mut io::sink());
        source.read = offset;
    }
    match result {
        Ok(mut index) => {
            index.compressed_bytes = source.read;
            Ok(index)
        }
        Err(_) if source.error.is_some() => Err(LayerError::Source(source.error.take().unwrap())),
        Err(LayerError::Decompress {
            compression, error, ..
        }) => Err(LayerError::Decompress {
            compression,
            compressed_offset: source.read,
            error,
        }),
        Err(e) => Err(e),
    }
}

/// Reads what follows the end-of-archive marker (padding, or nothing).
fn drain(stream: &mut TarStream<'_>) -> Result<(), LayerError> {
    io::copy(stream, &mut io::sink())
        .map(drop)
        .map_err(|error| LayerError::Tar { entry: 0, error })
}

fn walk_tar(stream: &mut TarStream<'_>, limits: &LayerLimits) -> Result<LayerIndex, LayerError> {
    let mut index = LayerIndex::default();
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|error| LayerError::Tar { entry: 0, error })?;
    let mut path_buf = Vec::with_capacity(256);
    let mut link_buf = Vec::with_capacity(256);
    for (n, entry) in entries.enumerate() {
        let n = n as u64;
        let tar_err = |error| LayerError::Tar { entry: n, error };
        let mut entry = entry.map_err(tar_err)?;
        if index.entries.len() as u64 >= limits.max_entries {
            return Err(LayerError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let entry_type = entry.header().entry_type();
        let kind = match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                EntryKind::File
            }
            tar::EntryType::Link => EntryKind::HardLink,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            // Metadata records, not files.
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            tar::EntryType::GNULongName | tar::EntryType::GNULongLink => continue,
            _ if entry_type.as_byte() == b'V' => continue,
            _ => EntryKind::Other,
        };

        path_buf.clear();
        let raw = entry.path_bytes();
        match path::push_canonical(&raw, &mut path_buf) {
            Ok(true) => {}
            Ok(false) => continue, // the root directory itself
            Err(error) => {
                return Err(LayerError::BadPath {
                    path: String::from_utf8_lossy(&raw).into_owned(),
                    error,
                });
            }
        }
        drop(raw);

        let (parent, name) = path::split_parent(&path_buf);
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                let dir_len = parent.len();
                path_buf.truncate(dir_len);
                index.push(&path_buf, &[], EntryKind::Opaque, 0)?;
            } else if !hidden.is_empty() && !hidden.starts_with(b".wh.") {
                // `.wh.NAME` in D removes D/NAME.
                let mut target = Vec::with_capacity(path_buf.len());
                target.extend_from_slice(parent);
                if !parent.is_empty() {
                    target.push(b'/');
                }
                target.extend_from_slice(hidden);
                index.push(&target, &[], EntryKind::Whiteout, 0)?;
            }
            // Other `.wh..wh.*` names are aufs bookkeeping: neither files nor whiteouts.
            continue;
        }

        link_buf.clear();
        if kind == EntryKind::HardLink {
            let raw = entry.link_name_bytes().unwrap_or_default();
            if let Err(error) = path::push_canonical(&raw, &mut link_buf) {
                return Err(LayerError::BadPath {
                    path: format!(
                        "{} (hard link target {})",
                        String::from_utf8_lossy(&path_buf),
                        String::from_utf8_lossy(&raw)
                    ),
                    error,
                });
            }
        }

        let size = if kind == EntryKind::File {
            entry.size()
        } else {
            0
        };
        let id = index.push(&path_buf, &link_buf, kind, size)?;
        if kind == EntryKind::File {
            index.size_bytes += size;
            index.file_count += 1;
            if size <= MAX_CAPTURED_BYTES && CAPTURED_PATHS.contains(&path_buf.as_slice()) {
                let mut content = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut content).map_err(tar_err)?;
                let previous = index
                    .captured
                    .iter()
                    .position(|c| index.entry(c.entry).path == path_buf.as_slice());
                if let Some(i) = previous {
                    index.captured.remove(i);
                }
                index.captured.push(CapturedFile { entry: id, content });
            }
        }
    }
    Ok(index)
}

/// Whether the streaming path keeps the content of a regular file at this canonical path and
/// size (other indexes of the same layer must capture the same files).
pub fn is_captured(path: &[u8], size: u64) -> bool {
    size <= MAX_CAPTURED_BYTES && CAPTURED_PATHS.contains(&path)
}

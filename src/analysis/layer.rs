//! One streaming pass over one layer blob: decompress, walk the tar, keep only what the waste
//! math needs.
//!
//! The result, a [`LayerIndex`], depends only on the layer's bytes, so it is keyed by the layer
//! digest and shared by every image that contains the layer. It holds one compact record per tar
//! entry (24 bytes plus the path) and never any file content, except a few small files the advice
//! reads (`os-release`). Memory therefore grows with the number of entries, not with layer bytes.

use std::collections::HashMap;
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
///
/// Together they bound the memory one layer's index can take, whatever the layer holds:
/// [`LayerLimits::max_index_bytes`]. Tar extension records (GNU long names, PAX headers) are
/// capped separately, at [`MAX_EXTENSION_BYTES`], before they are read.
#[derive(Debug, Clone, Copy)]
pub struct LayerLimits {
    /// Uncompressed bytes per layer (a gzip bomb stops here).
    pub max_uncompressed_bytes: u64,
    /// Tar entries per layer (memory grows with entries).
    pub max_entries: u64,
    /// Bytes of path text per layer (entry paths and hard-link targets): with `max_entries`,
    /// the bound on one index's memory.
    pub max_path_bytes: u64,
}

impl Default for LayerLimits {
    fn default() -> Self {
        LayerLimits {
            // Larger than any real layer seen in practice (multi-GB ML images included).
            max_uncompressed_bytes: 64 << 30,
            // 120 MB of records at most; real layers have well under a million entries.
            max_entries: 5_000_000,
            // 5M entries at about 50 bytes each; real paths average 40 to 90 bytes, and a layer
            // of a million files holds well under 100 MB of them.
            max_path_bytes: 256 << 20,
        }
    }
}

impl LayerLimits {
    /// The most heap one layer's index can hold under these limits: records, path text, and
    /// the captured small files (the callers' per-analysis budget is a multiple of this).
    pub fn max_index_bytes(&self) -> u64 {
        self.max_entries
            .saturating_mul(std::mem::size_of::<Entry>() as u64)
            .saturating_add(self.max_path_bytes)
            .saturating_add(CAPTURED_PATHS.len() as u64 * MAX_CAPTURED_BYTES)
            .saturating_add(MAX_PACKAGE_METADATA_BYTES)
    }
}

/// GNU long names and long links and PAX extended headers larger than this are refused on their
/// header, before their body is read: the limit Go's `archive/tar` applies (its
/// `maxSpecialFileSize`), which the tools that build and unpack layers read them with.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;

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

/// Package databases whose content is kept (what a step installed: dpkg's status and its
/// per-package file lists, apk's installed database), each up to [`MAX_PACKAGE_FILE_BYTES`] …
const PACKAGE_DATABASES: &[&[u8]] = &[b"var/lib/dpkg/status", b"lib/apk/db/installed"];
/// … and dpkg's file lists, `var/lib/dpkg/info/NAME.list` (or `NAME:ARCH.list`).
const DPKG_LISTS: (&[u8], &[u8]) = (b"var/lib/dpkg/info/", b".list");
const MAX_PACKAGE_FILE_BYTES: u64 = 8 << 20;
/// Package metadata kept per layer in all. Real layers hold well under this (a Debian base with
/// a build toolchain: about 3 MB); a layer with more keeps what came first and says so
/// ([`LayerIndex::captures_skipped`]).
pub const MAX_PACKAGE_METADATA_BYTES: u64 = 16 << 20;
/// Bookkeeping charged per captured file, so that many tiny files exhaust the budget too.
const CAPTURE_OVERHEAD: u64 = 64;

/// Which regular files' contents an index keeps: the one predicate every reader of a layer
/// (the streaming path, the table-of-contents path) consults, entry by entry in tar order, so
/// that all indexes of one layer capture the same files.
#[derive(Debug, Default, Clone)]
pub struct CapturePolicy {
    package_bytes: u64,
    /// Package metadata files refused because the layer's budget was spent.
    pub skipped: u32,
}

impl CapturePolicy {
    /// Whether to keep the content of the regular file at this canonical path and size.
    pub fn take(&mut self, path: &[u8], size: u64) -> bool {
        if CAPTURED_PATHS.contains(&path) {
            return size <= MAX_CAPTURED_BYTES;
        }
        if !is_package_metadata(path) || size > MAX_PACKAGE_FILE_BYTES {
            return false;
        }
        let cost = size + CAPTURE_OVERHEAD;
        if self.package_bytes + cost > MAX_PACKAGE_METADATA_BYTES {
            self.skipped = self.skipped.saturating_add(1);
            return false;
        }
        self.package_bytes += cost;
        true
    }
}

/// Whether a canonical path is a package database or a dpkg file list.
pub fn is_package_metadata(path: &[u8]) -> bool {
    PACKAGE_DATABASES.contains(&path) || dpkg_list_package(path).is_some()
}

/// The package name (with `:ARCH` when dpkg adds it) of a dpkg file list path.
pub fn dpkg_list_package(path: &[u8]) -> Option<&[u8]> {
    let name = path
        .strip_prefix(DPKG_LISTS.0)?
        .strip_suffix(DPKG_LISTS.1)?;
    (!name.is_empty() && !name.contains(&b'/')).then_some(name)
}

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
    /// Package metadata files whose content was not kept: the layer's budget
    /// ([`MAX_PACKAGE_METADATA_BYTES`]) was spent.
    pub captures_skipped: u32,
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

    /// Appends an entry. The vectors grow by doubling but never past the limits, so that the
    /// index's heap stays within [`LayerLimits::max_index_bytes`].
    fn push(
        &mut self,
        path: &[u8],
        link: &[u8],
        kind: EntryKind,
        size: u64,
        limits: &LayerLimits,
    ) -> Result<u32, LayerError> {
        let text = path.len() + link.len();
        let arena_len = self.arena.len() + text;
        if arena_len as u64 > limits.max_path_bytes {
            return Err(LayerError::TooMuchPathText {
                limit: limits.max_path_bytes,
            });
        }
        let start = u32::try_from(self.arena.len())
            .ok()
            .filter(|s| s.checked_add(text as u32).is_some())
            .ok_or(LayerError::IndexTooLarge)?;
        reserve_within(&mut self.arena, text, limits.max_path_bytes);
        reserve_within(&mut self.entries, 1, limits.max_entries);
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
            index
                .push(path, link, kind, size, &LayerLimits::default())
                .expect("small fixture");
            if kind == EntryKind::File {
                index.size_bytes += size;
                index.file_count += 1;
            }
        }
        index
    }
}

/// Makes room for `additional` more items, doubling the capacity as `Vec` does but never past
/// `limit` items (the caller has checked that `len + additional` is within it).
fn reserve_within<T>(v: &mut Vec<T>, additional: usize, limit: u64) {
    let needed = v.len() + additional;
    if needed <= v.capacity() {
        return;
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX).max(needed);
    let target = (v.capacity() * 2).max(needed).max(8).min(limit);
    v.reserve_exact(target - v.len());
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
    /// More path text than [`LayerLimits::max_path_bytes`].
    TooMuchPathText { limit: u64 },
    /// A GNU long name or long link, or a PAX header, larger than [`MAX_EXTENSION_BYTES`].
    ExtensionTooLarge {
        /// What the record is ("GNU long name", "PAX header" …).
        record: &'static str,
        /// The size its header declares.
        size: u64,
    },
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
            LayerError::TooMuchPathText { limit } => write!(
                f,
                "layer paths exceed {limit} bytes of text (raise --max-layer-path-bytes if it is genuine)"
            ),
            LayerError::ExtensionTooLarge { record, size } => write!(
                f,
                "tar {record} of {size} bytes exceeds the {MAX_EXTENSION_BYTES}-byte cap on extension records"
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

/// The decompressed tar stream: counts bytes, enforces the size cap, refuses oversized
/// extension records and records decoder errors.
struct TarStream<'a> {
    decoder: Box<dyn Read + 'a>,
    read: u64,
    limit: u64,
    headers: HeaderWatch,
    error: Option<DecodeError>,
}

enum DecodeError {
    Io(io::Error),
    TooLarge,
    Extension { record: &'static str, size: u64 },
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
                if let Err((record, size)) = self.headers.observe(&buf[..n]) {
                    self.error = Some(DecodeError::Extension { record, size });
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

/// Follows the tar stream's headers as the bytes pass on their way to the tar crate, to refuse
/// an extension record larger than [`MAX_EXTENSION_BYTES`] on its header: the tar crate would
/// otherwise buffer the whole record (a 100 MB long name costs 100 MB) before the path checks
/// run. It walks the archive exactly as the tar crate does: a PAX `size` record overrides the
/// next entry's size, a GNU sparse header may be followed by extension blocks, and the first
/// zero block ends the archive. When it cannot follow (an invalid header), it stops watching and
/// leaves the error to the tar crate.
struct HeaderWatch {
    /// Bytes of entry data (with padding) before the next block.
    skip: u64,
    block: [u8; BLOCK],
    filled: usize,
    /// The next block extends a GNU sparse header; the entry's data (with padding) follows the
    /// last extension block.
    sparse_extension: Option<u64>,
    /// The body of the PAX header being passed, and how many of its bytes are still to come.
    pax: Option<(Vec<u8>, u64)>,
    /// The size a PAX header gave the next entry.
    pax_size: Option<u64>,
    done: bool,
}

const BLOCK: usize = 512;

impl HeaderWatch {
    fn new() -> Self {
        HeaderWatch {
            skip: 0,
            block: [0; BLOCK],
            filled: 0,
            sparse_extension: None,
            pax: None,
            pax_size: None,
            done: false,
        }
    }

    /// Follows `bytes`; `Err((record, declared size))` for an oversized extension record.
    fn observe(&mut self, mut bytes: &[u8]) -> Result<(), (&'static str, u64)> {
        while !bytes.is_empty() && !self.done {
            if self.skip > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.collect_pax(&bytes[..n]);
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = bytes.len().min(BLOCK - self.filled);
            self.block[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == BLOCK {
                self.filled = 0;
                self.on_block()?;
            }
        }
        Ok(())
    }

    fn collect_pax(&mut self, bytes: &[u8]) {
        let Some((body, left)) = &mut self.pax else {
            return;
        };
        let n = bytes.len().min(*left as usize);
        body.extend_from_slice(&bytes[..n]);
        *left -= n as u64;
        if *left == 0 {
            let body = std::mem::take(body);
            self.pax = None;
            // As the tar crate reads it: the first `size` record, unless a malformed one precedes.
            self.pax_size = tar::PaxExtensions::new(&body)
                .map_while(Result::ok)
                .find(|e| e.key_bytes() == b"size")
                .and_then(|e| e.value().ok()?.parse().ok());
        }
    }

    fn on_block(&mut self) -> Result<(), (&'static str, u64)> {
        if let Some(data) = self.sparse_extension {
            // `isextended` of a GNU sparse extension block.
            if self.block[504] != 1 {
                self.sparse_extension = None;
                self.skip = data;
            }
            return Ok(());
        }
        if self.block == [0; BLOCK] {
            self.done = true;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.block);
        // The tar crate's own checks: past a block it refuses, there is nothing to follow.
        let sum = self.block[..148]
            .iter()
            .chain(&self.block[156..])
            .map(|&b| u32::from(b))
            .sum::<u32>()
            + 8 * 32;
        let (Ok(declared), Ok(true)) = (header.entry_size(), header.cksum().map(|c| c == sum))
        else {
            self.done = true;
            return Ok(());
        };
        let kind = header.entry_type();
        let recognised = header.as_gnu().is_some() || header.as_ustar().is_some();
        let buffered = match kind {
            tar::EntryType::GNULongName => Some("GNU long name"),
            tar::EntryType::GNULongLink => Some("GNU long link"),
            tar::EntryType::XHeader => Some("PAX header"),
            _ => None,
        };
        let mut sparse = false;
        let size = match buffered.filter(|_| recognised) {
            Some(record) => {
                if declared > MAX_EXTENSION_BYTES {
                    return Err((record, declared));
                }
                if kind == tar::EntryType::XHeader {
                    self.pax = Some((Vec::with_capacity(declared as usize), declared));
                }
                declared
            }
            None => {
                // The entry the extension records describe: they apply to it and end.
                let size = match kind {
                    tar::EntryType::GNULongName
                    | tar::EntryType::GNULongLink
                    | tar::EntryType::XHeader
                    | tar::EntryType::XGlobalHeader => declared,
                    _ => self.pax_size.unwrap_or(declared),
                };
                self.pax_size = None;
                sparse = kind == tar::EntryType::GNUSparse
                    && header.as_gnu().is_some_and(|g| g.is_extended());
                size
            }
        };
        let Some(padded) = size.checked_next_multiple_of(BLOCK as u64) else {
            self.done = true;
            return Ok(());
        };
        if sparse {
            self.sparse_extension = Some(padded);
        } else {
            self.skip = padded;
        }
        if self.pax.as_ref().is_some_and(|(_, left)| *left == 0) {
            self.collect_pax(&[]);
        }
        Ok(())
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
            headers: HeaderWatch::new(),
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
                Some(DecodeError::Extension { record, size }) => {
                    LayerError::ExtensionTooLarge { record, size }
                }
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
    let mut capture = CapturePolicy::default();
    let mut captured: Vec<Option<CapturedFile>> = Vec::new();
    let mut captured_at: HashMap<Vec<u8>, usize> = HashMap::new();
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
                index.push(&path_buf, &[], EntryKind::Opaque, 0, limits)?;
            } else if !hidden.is_empty() && !hidden.starts_with(b".wh.") {
                // `.wh.NAME` in D removes D/NAME.
                let mut target = Vec::with_capacity(path_buf.len());
                target.extend_from_slice(parent);
                if !parent.is_empty() {
                    target.push(b'/');
                }
                target.extend_from_slice(hidden);
                index.push(&target, &[], EntryKind::Whiteout, 0, limits)?;
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
        let id = index.push(&path_buf, &link_buf, kind, size, limits)?;
        if kind == EntryKind::File {
            index.size_bytes += size;
            index.file_count += 1;
            if capture.take(&path_buf, size) {
                let mut content = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut content).map_err(tar_err)?;
                // A later entry of the same path replaces the earlier one (and goes last).
                if let Some(i) = captured_at.insert(path_buf.clone(), captured.len()) {
                    captured[i] = None;
                }
                captured.push(Some(CapturedFile { entry: id, content }));
            }
        }
    }
    index.captured = captured.into_iter().flatten().collect();
    index.captures_skipped = capture.skipped;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, path: &str, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// A header and its body, padded to whole blocks.
    fn member(kind: tar::EntryType, path: &str, body: &[u8]) -> Vec<u8> {
        let mut out = header(kind, path, body.len() as u64);
        out.extend_from_slice(body);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
        out
    }

    fn pax_record(key: &str, value: &str) -> String {
        let rest = format!(" {key}={value}\n");
        let mut len = rest.len() + 1;
        while (len.to_string().len() + rest.len()) != len {
            len += 1;
        }
        format!("{len}{rest}")
    }

    fn end(mut tar: Vec<u8>) -> Vec<u8> {
        tar.extend_from_slice(&[0; 2 * BLOCK]);
        tar
    }

    /// Serves `prefix`, then `filler` bytes forever, counting what was read.
    struct Endless<'a> {
        prefix: &'a [u8],
        read: u64,
    }

    impl Read for Endless<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let at = self.read as usize;
            let n = if at < self.prefix.len() {
                let n = buf.len().min(self.prefix.len() - at);
                buf[..n].copy_from_slice(&self.prefix[at..at + n]);
                n
            } else {
                buf.fill(b'a');
                buf.len()
            };
            self.read += n as u64;
            Ok(n)
        }
    }

    fn index(tar: &[u8], limits: &LayerLimits) -> Result<LayerIndex, LayerError> {
        index_layer(tar, Compression::Plain, limits)
    }

    #[test]
    fn a_long_name_declaring_more_than_the_cap_is_refused_on_its_header_alone() {
        // A header announcing 100 MB with no body at all: nothing of that size is ever read.
        let tar = header(tar::EntryType::GNULongName, "././@LongLink", 100 << 20);
        let err = index(&tar, &LayerLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                LayerError::ExtensionTooLarge {
                    record: "GNU long name",
                    size
                } if size == 100 << 20
            ),
            "{err}"
        );
        assert!(err.to_string().contains("1048576-byte cap"), "{err}");
    }

    #[test]
    fn a_long_link_or_pax_header_over_the_cap_stops_the_read_at_its_header() {
        for (kind, record) in [
            (tar::EntryType::GNULongLink, "GNU long link"),
            (tar::EntryType::XHeader, "PAX header"),
        ] {
            let prefix = header(kind, "x", 100 << 20);
            let mut source = Endless {
                prefix: &prefix,
                read: 0,
            };
            let err =
                index_layer(&mut source, Compression::Plain, &LayerLimits::default()).unwrap_err();
            assert!(
                matches!(err, LayerError::ExtensionTooLarge { record: r, .. } if r == record),
                "{err}"
            );
            // One read-ahead buffer, not the 100 MB the header announces.
            assert!(source.read <= 256 << 10, "{} bytes read", source.read);
        }
    }

    #[test]
    fn extension_records_within_the_cap_name_the_entries_they_describe() {
        let long_name = format!("usr/{}/file", "d".repeat(300));
        let long_link = format!("opt/{}/target", "t".repeat(300));
        let mut tar = member(
            tar::EntryType::GNULongName,
            "././@LongLink",
            format!("{long_name}\0").as_bytes(),
        );
        tar.extend(member(tar::EntryType::Regular, "short", b"hello"));
        tar.extend(member(
            tar::EntryType::XHeader,
            "pax",
            (pax_record("path", &long_link) + &pax_record("size", "1000")).as_bytes(),
        ));
        // The header says 0 bytes; the PAX record's 1000 wins, as it does in the tar crate.
        let mut file = header(tar::EntryType::Regular, "ignored", 0);
        file.extend_from_slice(&[7; 1000]);
        file.resize(file.len().next_multiple_of(BLOCK), 0);
        tar.extend(file);
        tar.extend(member(tar::EntryType::Regular, "last", b"x"));
        let index = index(&end(tar), &LayerLimits::default()).unwrap();
        let entries: Vec<_> = index.entries().map(|e| (e.path.to_vec(), e.size)).collect();
        assert_eq!(
            entries,
            vec![
                (long_name.into_bytes(), 5),
                (long_link.into_bytes(), 1000),
                (b"last".to_vec(), 1),
            ]
        );
    }

    #[test]
    fn the_cap_is_found_after_an_entry_whose_size_only_a_pax_record_gives() {
        let mut tar = member(
            tar::EntryType::XHeader,
            "pax",
            pax_record("size", "1000").as_bytes(),
        );
        tar.extend(header(tar::EntryType::Regular, "f", 0));
        tar.extend_from_slice(&[7; 1024]);
        tar.extend(header(
            tar::EntryType::GNULongName,
            "././@LongLink",
            100 << 20,
        ));
        let err = index(&tar, &LayerLimits::default()).unwrap_err();
        assert!(matches!(err, LayerError::ExtensionTooLarge { .. }), "{err}");
    }

    fn octal(field: &mut [u8], value: u64) {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    }

    /// A GNU sparse file of five 512-byte chunks, the fifth described in an extension block.
    fn sparse_file() -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_path("sparse").unwrap();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_size(5 * 512);
        let gnu = h.as_gnu_mut().unwrap();
        for (i, chunk) in gnu.sparse.iter_mut().enumerate() {
            octal(&mut chunk.offset, i as u64 * 1024);
            octal(&mut chunk.numbytes, 512);
        }
        gnu.isextended[0] = 1;
        octal(&mut gnu.realsize, 4096 + 512);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        let mut extension = [0u8; BLOCK];
        octal(&mut extension[..12], 4096);
        octal(&mut extension[12..24], 512);
        out.extend_from_slice(&extension);
        out.extend_from_slice(&[9; 5 * 512]);
        out
    }

    #[test]
    fn the_cap_is_found_after_a_sparse_file_with_extension_blocks() {
        let mut tar = sparse_file();
        tar.extend(member(tar::EntryType::Regular, "next", b"x"));
        let layer = index(&end(tar.clone()), &LayerLimits::default()).unwrap();
        let paths: Vec<_> = layer.entries().map(|e| e.path.to_vec()).collect();
        assert_eq!(paths, vec![b"sparse".to_vec(), b"next".to_vec()]);

        tar.extend(header(tar::EntryType::XHeader, "pax", 100 << 20));
        let err = index(&tar, &LayerLimits::default()).unwrap_err();
        assert!(matches!(err, LayerError::ExtensionTooLarge { .. }), "{err}");
    }

    fn many_files(n: usize) -> Vec<u8> {
        let mut tar = Vec::new();
        for i in 0..n {
            tar.extend(member(
                tar::EntryType::Regular,
                &format!("dir/file{i:05}"),
                b"",
            ));
        }
        end(tar)
    }

    #[test]
    fn more_path_text_than_the_budget_is_a_clear_error() {
        let limits = LayerLimits {
            max_path_bytes: 10_000,
            ..Default::default()
        };
        // 1,000 paths of 13 bytes: 13,000 bytes of text.
        let err = index(&many_files(1000), &limits).unwrap_err();
        assert!(
            matches!(err, LayerError::TooMuchPathText { limit: 10_000 }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("exceed 10000 bytes of text (raise --max-layer-path-bytes"),
            "{err}"
        );
    }

    #[test]
    fn more_entries_than_the_budget_is_a_clear_error() {
        let limits = LayerLimits {
            max_entries: 999,
            ..Default::default()
        };
        let err = index(&many_files(1000), &limits).unwrap_err();
        assert!(err.to_string().contains("more than 999 entries"), "{err}");
    }

    #[test]
    fn package_metadata_is_captured_within_the_layers_budget_and_the_rest_is_counted() {
        let big = MAX_PACKAGE_FILE_BYTES as usize - 1000;
        let layer = crate::testkit::Layer::new("x")
            .sized("var/lib/dpkg/status", big)
            .sized("var/lib/dpkg/info/a.list", big)
            // Over the layer's budget: not kept, and counted.
            .sized("var/lib/dpkg/info/b:amd64.list", big)
            // Too large on its own.
            .sized("lib/apk/db/installed", MAX_PACKAGE_FILE_BYTES as usize + 1)
            // Not package metadata.
            .sized("var/lib/dpkg/info/a.md5sums", 10)
            .file("etc/os-release", b"ID=debian\n")
            .into_tar()
            .0;
        let ix = index(&layer, &LayerLimits::default()).unwrap();
        let kept: Vec<&[u8]> = ix.captured.iter().map(|c| ix.entry(c.entry).path).collect();
        assert_eq!(
            kept,
            vec![
                &b"var/lib/dpkg/status"[..],
                b"var/lib/dpkg/info/a.list",
                b"etc/os-release"
            ]
        );
        assert_eq!(ix.captures_skipped, 1);
        assert_eq!(
            dpkg_list_package(b"var/lib/dpkg/info/b:amd64.list"),
            Some(&b"b:amd64"[..])
        );
        assert_eq!(dpkg_list_package(b"var/lib/dpkg/info/.list"), None);
        assert_eq!(dpkg_list_package(b"var/lib/dpkg/info/x/y.list"), None);
    }

    #[test]
    fn an_index_at_its_limits_holds_no_more_than_the_stated_bound() {
        let limits = LayerLimits {
            max_entries: 1000,
            max_path_bytes: 13_000,
            ..Default::default()
        };
        let index = index(&many_files(1000), &limits).unwrap();
        assert_eq!(index.len(), 1000);
        assert!(
            index.heap_bytes() as u64 <= limits.max_index_bytes(),
            "{} > {}",
            index.heap_bytes(),
            limits.max_index_bytes()
        );
    }
}

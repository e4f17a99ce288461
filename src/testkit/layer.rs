//! One layer: a tar stream written entry by entry, and the blob it becomes.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::{Compression, MTIME, noise};

/// A layer's tar stream, written entry by entry into `W`: a `Vec<u8>` for small test images
/// ([`Layer::new`]), or a [`BlobWriter`] that compresses and hashes on the way to a file
/// ([`Layer::blob`], [`super::OciLayout::layer`]).
///
/// The methods chain; the first I/O error is kept and returned by [`Layer::finish`], so a long
/// recipe reads as a list of entries. Entries are owned by root with a fixed mtime; files are
/// 0644 unless a mode is given, directories 0755, symlinks 0777, hard links 0755.
pub struct Layer<W: Write = Vec<u8>> {
    /// The history's `created_by` for this layer.
    pub created_by: String,
    tar: tar::Builder<W>,
    mtime: u64,
    /// Directories written so far, when parents are written automatically.
    dirs: Option<BTreeSet<String>>,
    error: Option<io::Error>,
}

impl Layer<Vec<u8>> {
    /// A layer written in memory.
    pub fn new(created_by: &str) -> Self {
        Layer::to(Vec::new(), created_by)
    }

    /// The uncompressed tar and the layer's `created_by`; panics if an entry could not be
    /// written (an invalid path).
    pub fn into_tar(self) -> (Vec<u8>, String) {
        let created_by = self.created_by.clone();
        match self.finish() {
            Ok((tar, created_by)) => (tar, created_by),
            Err(e) => panic!("layer {created_by:?}: {e}"),
        }
    }
}

impl<W: Write> Layer<BlobWriter<W>> {
    /// A layer streamed into `sink`, compressed with `compression`: nothing is held in memory.
    pub fn blob(created_by: &str, compression: Compression, sink: W) -> Self {
        Layer::to(BlobWriter::new(sink, compression), created_by)
    }

    /// Ends the stream: the sink and the blob's digests and size.
    pub fn finish_blob(self) -> io::Result<(W, LayerBlob)> {
        let (writer, created_by) = self.finish()?;
        let compression = writer.compression;
        let (sink, digest, diff_id, size) = writer.finish()?;
        Ok((
            sink,
            LayerBlob {
                digest,
                diff_id,
                size,
                compression,
                created_by,
            },
        ))
    }
}

impl<W: Write> Layer<W> {
    /// A layer whose tar stream is written into `sink`.
    pub fn to(sink: W, created_by: &str) -> Self {
        let mut tar = tar::Builder::new(sink);
        tar.mode(tar::HeaderMode::Deterministic);
        Layer {
            created_by: created_by.to_string(),
            tar,
            mtime: MTIME,
            dirs: None,
            error: None,
        }
    }

    /// The mtime of the entries written after this.
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Writes each entry's missing parent directories before it (once per layer), as a build
    /// tool's tar does.
    pub fn with_parents(mut self) -> Self {
        self.dirs = Some(BTreeSet::new());
        self
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn record(&mut self, r: io::Result<()>) {
        if let Err(e) = r
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }

    fn write_dir(&mut self, path: &str, mode: u32) {
        let mut h = self.header(tar::EntryType::Directory, mode, 0);
        let r = self
            .tar
            .append_data(&mut h, format!("{path}/"), io::empty());
        self.record(r);
    }

    fn parents(&mut self, path: &str) {
        let Some(dirs) = &mut self.dirs else { return };
        let mut missing = Vec::new();
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            if dirs.insert(dir.to_string()) {
                missing.push(dir.to_string());
            }
            at += i + 1;
        }
        for dir in missing {
            self.write_dir(&dir, 0o755);
        }
    }

    /// A regular file of `size` bytes read from `content` (streamed, never held in memory).
    pub fn file_from(mut self, path: &str, mode: u32, size: u64, content: impl Read) -> Self {
        if self.error.is_none() {
            self.parents(path);
            let mut h = self.header(tar::EntryType::Regular, mode, size);
            let r = self.tar.append_data(&mut h, path, content);
            self.record(r);
        }
        self
    }

    pub fn file_mode(self, path: &str, mode: u32, content: &[u8]) -> Self {
        self.file_from(path, mode, content.len() as u64, content)
    }

    /// A regular file, mode 0644.
    pub fn file(self, path: &str, content: &[u8]) -> Self {
        self.file_mode(path, 0o644, content)
    }

    /// An executable, mode 0755.
    pub fn exe(self, path: &str, content: &[u8]) -> Self {
        self.file_mode(path, 0o755, content)
    }

    /// A regular file of `len` incompressible bytes, derived from its path and length.
    pub fn sized(self, path: &str, len: usize) -> Self {
        let seed = path.len() as u64 * 31 + len as u64;
        self.file(path, &noise(len, seed))
    }

    pub fn dir(self, path: &str) -> Self {
        self.dir_mode(path, 0o755)
    }

    pub fn dir_mode(mut self, path: &str, mode: u32) -> Self {
        let path = path.trim_end_matches('/');
        if self.error.is_none() {
            self.parents(path);
            let new = self
                .dirs
                .as_mut()
                .is_none_or(|d| d.insert(path.to_string()));
            if new {
                self.write_dir(path, mode);
            }
        }
        self
    }

    fn link(mut self, kind: tar::EntryType, mode: u32, path: &str, target: &str) -> Self {
        if self.error.is_none() {
            self.parents(path);
            let mut h = self.header(kind, mode, 0);
            let r = self.tar.append_link(&mut h, path, target);
            self.record(r);
        }
        self
    }

    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, 0o777, path, target)
    }

    /// A hard link to `target`, an earlier entry of the same layer.
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, 0o755, path, target)
    }

    /// `.wh.NAME` removing `path` (and everything under it) from lower layers.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"")
    }

    /// `DIR/.wh..wh..opq` hiding every lower-layer entry under `dir` (write it before this
    /// layer adds anything there).
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    /// An entry whose name is written into the header as it is, bypassing the tar writer's own
    /// checks (for hostile names such as `../x`).
    pub fn raw_name(mut self, name: &[u8], content: &[u8]) -> Self {
        if self.error.is_none() {
            let mut h = self.header(tar::EntryType::Regular, 0o644, content.len() as u64);
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_cksum();
            let r = self.tar.append(&h, content);
            self.record(r);
        }
        self
    }

    /// Ends the tar stream: the sink and the layer's `created_by`, or the first error.
    pub fn finish(mut self) -> io::Result<(W, String)> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        Ok((self.tar.into_inner()?, self.created_by))
    }
}

/// A layer as a blob: what its manifest descriptor and its config's `diff_ids` say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:HEX` of the compressed blob.
    pub digest: String,
    /// `sha256:HEX` of the uncompressed tar.
    pub diff_id: String,
    /// Compressed size in bytes.
    pub size: u64,
    pub compression: Compression,
    pub created_by: String,
}

/// Takes a tar stream, and writes it compressed into `W` while hashing both sides: the diff ID
/// of the tar, the digest and size of the blob.
pub struct BlobWriter<W: Write> {
    compression: Compression,
    diff_id: Sha256,
    encoder: Encoder<Hashed<W>>,
}

enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> BlobWriter<W> {
    pub fn new(sink: W, compression: Compression) -> Self {
        let sink = Hashed {
            inner: sink,
            hasher: Sha256::new(),
            n: 0,
        };
        let encoder = match compression {
            Compression::Plain => Encoder::Plain(sink),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                sink,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Encoder::Zstd(
                zstd::stream::write::Encoder::new(sink, 3).expect("zstd level 3 is valid"),
            ),
        };
        BlobWriter {
            compression,
            diff_id: Sha256::new(),
            encoder,
        }
    }

    /// Ends the compressed stream: (sink, digest, diff ID, compressed size).
    pub fn finish(self) -> io::Result<(W, String, String, u64)> {
        let hashed = match self.encoder {
            Encoder::Plain(w) => w,
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Zstd(e) => e.finish()?,
        };
        let digest = format!("sha256:{}", hex::encode(hashed.hasher.finalize()));
        let diff_id = format!("sha256:{}", hex::encode(self.diff_id.finalize()));
        Ok((hashed.inner, digest, diff_id, hashed.n))
    }
}

impl<W: Write> Write for BlobWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.encoder {
            Encoder::Plain(w) => w.write(buf)?,
            Encoder::Gzip(e) => e.write(buf)?,
            Encoder::Zstd(e) => e.write(buf)?,
        };
        self.diff_id.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

struct Hashed<W> {
    inner: W,
    hasher: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `tar` compressed as a layer blob would be.
pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    let mut w = BlobWriter::new(Vec::new(), c);
    w.write_all(tar).expect("writing to memory");
    w.finish().expect("writing to memory").0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::sha256;

    fn names(tar: &[u8]) -> Vec<(String, tar::EntryType)> {
        tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                (path, e.header().entry_type())
            })
            .collect()
    }

    #[test]
    fn parents_are_written_once_each_before_their_first_entry() {
        let (tar, _) = Layer::new("x")
            .with_parents()
            .file("a/b/c", b"1")
            .symlink("a/b/d", "c")
            .whiteout("a/e/f")
            .dir("a")
            .into_tar();
        let names: Vec<String> = names(&tar).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a/", "a/b/", "a/b/c", "a/b/d", "a/e/", "a/e/.wh.f"]);
    }

    #[test]
    fn whiteouts_and_opaque_markers_are_empty_files_named_as_overlayfs_expects() {
        let (tar, _) = Layer::new("x")
            .whiteout("top")
            .whiteout("d/sub")
            .opaque("o")
            .into_tar();
        assert_eq!(
            names(&tar),
            [
                (".wh.top".to_string(), tar::EntryType::Regular),
                ("d/.wh.sub".to_string(), tar::EntryType::Regular),
                ("o/.wh..wh..opq".to_string(), tar::EntryType::Regular),
            ]
        );
    }

    #[test]
    fn a_streamed_blob_has_the_digests_of_its_bytes_in_every_compression() {
        for c in [Compression::Plain, Compression::Gzip, Compression::Zstd] {
            let (tar, _) = Layer::new("x").sized("a", 5000).into_tar();
            let (blob, info) = Layer::blob("x", c, Vec::new())
                .sized("a", 5000)
                .finish_blob()
                .unwrap();
            assert_eq!(info.diff_id, sha256(&tar), "{c:?}");
            assert_eq!(info.digest, sha256(&blob), "{c:?}");
            assert_eq!(info.size, blob.len() as u64, "{c:?}");
            assert_eq!(blob, compress(&tar, c), "{c:?}");
        }
    }

    #[test]
    fn an_invalid_path_is_an_error_at_the_end_of_the_layer() {
        let err = Layer::new("x")
            .file("../up", b"x")
            .file("ok", b"y")
            .finish();
        assert!(err.is_err());
    }
}

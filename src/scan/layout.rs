//! Images on disk: an OCI image layout, as a directory or inside a tar (an OCI archive), and
//! the legacy `docker save` archive.
//!
//! A layout names blobs by digest (`blobs/ALG/HEX`) and its manifests in `index.json`, so a
//! local image is read exactly as a registry image is: manifest, config, then layers by digest,
//! each verified against its descriptor as it streams. Archives are not unpacked: their members
//! are read in place, at the offsets [`super::archive`] found. Only small files (indexes,
//! manifests, configs) are read whole, and each under a size cap.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use bytes::Bytes;
use oci_client::manifest::{ImageIndexEntry, OciImageIndex};

use super::ScanErrorKind;
use super::archive::{Archive, DockerSave};
use super::pipeline::descriptor_size;
use super::saved_layer;
use super::source::LayerBlob;
use crate::digest::{Digest, VerifyingReader};
use crate::registry::{MAX_MANIFEST_BYTES, RawManifest};

/// `index.json` larger than this is refused.
const MAX_INDEX_BYTES: u64 = 1 << 20;
/// Buffer for reading local blobs.
const READ_BUFFER: usize = 256 << 10;

/// An image in a layout directory or an archive, with the tag that picks its manifest.
pub(super) struct LocalImage<'a> {
    files: Files<'a>,
    tag: Option<&'a str>,
    /// For a `docker save` archive (one without `index.json`): the manifest made from its
    /// `manifest.json`, and where its blobs are.
    docker_save: Option<DockerSave>,
}

/// Where the files of a local image are.
enum Files<'a> {
    Directory(&'a Path),
    Archive(Archive<'a>),
}

impl<'a> LocalImage<'a> {
    pub(super) fn directory(dir: &'a Path, tag: Option<&'a str>) -> Self {
        LocalImage {
            files: Files::Directory(dir),
            tag,
            docker_save: None,
        }
    }

    /// Indexes the archive's members; an archive without `index.json` is read as `docker save`
    /// output.
    pub(super) async fn archive(
        file: &'a Path,
        tag: Option<&'a str>,
    ) -> Result<Self, ScanErrorKind> {
        let archive = Archive::index(file).await?;
        let docker_save = if archive.contains("index.json") {
            None
        } else {
            Some(archive.docker_save(tag)?)
        };
        Ok(LocalImage {
            files: Files::Archive(archive),
            tag,
            docker_save,
        })
    }

    /// The manifest the tag names in `index.json` (or the only one when no tag is given).
    pub(super) fn root_manifest(&self) -> Result<RawManifest, ScanErrorKind> {
        if let Some(docker_save) = &self.docker_save {
            return Ok(docker_save.manifest.clone());
        }
        let index_bytes = self.read("index.json", None, MAX_INDEX_BYTES)?;
        let index: OciImageIndex = serde_json::from_slice(&index_bytes)
            .map_err(|e| ScanErrorKind::Manifest(format!("index.json: {e}")))?;
        let entry = self.tagged(&index)?;
        let size = descriptor_size(entry.size)?;
        let mut m = self.manifest_by_digest(&entry.digest, size)?;
        if m.media_type.is_empty() {
            m.media_type = entry.media_type.clone();
        }
        Ok(m)
    }

    fn tagged<'i>(&self, index: &'i OciImageIndex) -> Result<&'i ImageIndexEntry, ScanErrorKind> {
        fn named(e: &ImageIndexEntry) -> Option<&str> {
            e.annotations
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .map(String::as_str)
        }
        // Then the names podman (`localhost/app:1`) and Docker 25+ (`io.containerd.image.name`)
        // write, matched whole or by their tag, as `docker save` archives are.
        fn known_as(e: &ImageIndexEntry, t: &str) -> bool {
            let tag_of = |n: &str| n.rsplit_once(':').map(|(_, tag)| tag == t).unwrap_or(false);
            e.annotations
                .iter()
                .flat_map(|a| {
                    [
                        "org.opencontainers.image.ref.name",
                        "io.containerd.image.name",
                    ]
                    .into_iter()
                    .filter_map(|k| a.get(k))
                })
                .any(|n| n == t || tag_of(n))
        }
        let entry = match self.tag {
            Some(t) => index
                .manifests
                .iter()
                .find(|e| named(e) == Some(t))
                .or_else(|| index.manifests.iter().find(|e| known_as(e, t))),
            None if index.manifests.len() == 1 => index.manifests.first(),
            None => None,
        };
        entry.ok_or_else(|| {
            let names: Vec<&str> = index.manifests.iter().filter_map(named).collect();
            ScanErrorKind::Local(format!(
                "no manifest named {:?} in index.json (it has: {})",
                self.tag.unwrap_or(""),
                if names.is_empty() {
                    "no names".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })
    }

    /// A manifest blob, with the media type its body declares (empty when it declares none).
    pub(super) fn manifest_by_digest(
        &self,
        digest: &str,
        size: u64,
    ) -> Result<RawManifest, ScanErrorKind> {
        if size > MAX_MANIFEST_BYTES as u64 {
            return Err(ScanErrorKind::Manifest(format!("{digest} is {size} bytes")));
        }
        let expected = Digest::parse(digest).map_err(|e| ScanErrorKind::Manifest(e.to_string()))?;
        let bytes = self.small_blob(&expected, size)?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .unwrap_or_default();
        Ok(RawManifest {
            bytes,
            digest: digest.to_string(),
            media_type,
        })
    }

    /// A whole blob (configs, manifests), verified.
    pub(super) fn small_blob(&self, digest: &Digest, size: u64) -> Result<Bytes, ScanErrorKind> {
        self.read(&self.blob_member(digest), Some((digest, size)), size)
    }

    /// A layer blob, verified as it is read. A compressed layer file of a `docker save` archive
    /// comes decompressed (its digest is a diff ID, checked on the uncompressed bytes).
    pub(super) fn layer_reader(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<LayerBlob, ScanErrorKind> {
        let name = self.blob_member(digest);
        let member = self.files.open(&name)?;
        let compressed = self
            .docker_save
            .as_ref()
            .and_then(|d| d.compressed.get(&digest.to_string()).copied());
        Ok(match compressed {
            Some(compression) => LayerBlob {
                reader: saved_layer::uncompressed(member, size, &name, compression, digest)
                    .map_err(|e| ScanErrorKind::Local(format!("{name}: {e}")))?,
                decompressed: true,
            },
            None => LayerBlob {
                reader: Box::new(VerifyingReader::new(member, digest, Some(size))),
                decompressed: false,
            },
        })
    }

    /// Reads a small file of the image whole: at most `max` bytes, verified when `verify`
    /// gives a digest and size.
    fn read(
        &self,
        name: &str,
        verify: Option<(&Digest, u64)>,
        max: u64,
    ) -> Result<Bytes, ScanErrorKind> {
        read_capped(self.files.open(name)?, name, verify, max)
    }

    /// Where a blob lives: `blobs/ALG/HEX`, or in a `docker save` archive the member its
    /// manifest.json names.
    fn blob_member(&self, digest: &Digest) -> String {
        self.docker_save
            .as_ref()
            .and_then(|d| d.members.get(&digest.to_string()).cloned())
            .unwrap_or_else(|| format!("blobs/{}/{}", digest.algorithm(), digest.hex()))
    }
}

impl Files<'_> {
    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, ScanErrorKind> {
        match self {
            Files::Directory(dir) => {
                let path = dir.join(name);
                let f = File::open(&path)
                    .map_err(|e| ScanErrorKind::Local(format!("{}: {e}", path.display())))?;
                Ok(Box::new(buffered(f)))
            }
            Files::Archive(archive) => archive.open(name),
        }
    }
}

/// Reads `reader` whole, refusing more than `max` bytes; when `verify` is given, the bytes must
/// have that digest and size. `name` names the file in errors.
pub(super) fn read_capped(
    mut reader: Box<dyn Read + Send>,
    name: &str,
    verify: Option<(&Digest, u64)>,
    max: u64,
) -> Result<Bytes, ScanErrorKind> {
    let mut out = Vec::new();
    match verify {
        Some((d, size)) => VerifyingReader::new(reader, d, Some(size))
            .take(max + 1)
            .read_to_end(&mut out),
        None => (&mut reader).take(max + 1).read_to_end(&mut out),
    }
    .map_err(|e| ScanErrorKind::Local(format!("{name}: {e}")))?;
    if out.len() as u64 > max {
        return Err(ScanErrorKind::Local(format!(
            "{name} is larger than {max} bytes"
        )));
    }
    Ok(out.into())
}

/// The buffer local readers use.
pub(super) fn buffered(f: File) -> BufReader<File> {
    BufReader::with_capacity(READ_BUFFER, f)
}

//! Tar archives of images, read in place: an OCI archive (a layout in a tar) or the output of
//! `docker save`.
//!
//! One pass over the tar headers records where each member's bytes start, so a blob is later
//! read by seeking into the file: nothing is unpacked, and a layer is read once, as it is
//! analyzed. A legacy `docker save` archive has no `index.json`; its `manifest.json` lists the
//! config and the layers by path, and a Docker v2 manifest is made from it so the pipeline reads
//! it like any other image. Its layer files may be compressed ([`super::saved_layer`]). An archive
//! that has both files (Docker 25+ writes an OCI layout and a `manifest.json` describing the same
//! image) is read through `index.json`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use bytes::Bytes;
use oci_client::manifest::OciDescriptor;
use serde::Deserialize;

use super::ScanErrorKind;
use super::layout::{buffered, read_capped};
use super::pipeline::{ImageConfig, MAX_CONFIG_BYTES};
use super::saved_layer;
use crate::analysis::Compression;
use crate::digest::Digest;
use crate::registry::RawManifest;

/// `manifest.json` larger than this is refused.
const MAX_MANIFEST_JSON_BYTES: u64 = 1 << 20;
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// An uncompressed tar archive and where its members are.
pub(super) struct Archive<'a> {
    file: &'a Path,
    /// Offset and size of each regular file, by its path in the archive.
    members: HashMap<String, (u64, u64)>,
}

/// What a `docker save` archive's `manifest.json` says about one image.
pub(super) struct DockerSave {
    /// A Docker v2 manifest made from the entry: the config, and each layer under its diff ID
    /// (the digest of an uncompressed layer is its diff ID).
    pub manifest: RawManifest,
    /// Member path by digest: the layers by diff ID, and the config.
    pub members: HashMap<String, String>,
    /// The compression of each compressed layer file, by diff ID (plain files are not listed).
    pub compressed: HashMap<String, Compression>,
}

impl<'a> Archive<'a> {
    /// Reads the tar headers (on a blocking thread: a large archive has many).
    pub(super) async fn index(file: &'a Path) -> Result<Self, ScanErrorKind> {
        let path = file.to_path_buf();
        let members = tokio::task::spawn_blocking(move || members(&path))
            .await
            .map_err(|e| ScanErrorKind::Local(e.to_string()))??;
        Ok(Archive { file, members })
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }

    /// A reader of one member's bytes.
    pub(super) fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, ScanErrorKind> {
        let local = |e: io::Error| ScanErrorKind::Local(format!("{}: {e}", self.file.display()));
        let &(offset, len) = self.members.get(name).ok_or_else(|| {
            ScanErrorKind::Local(format!("{} has no member {name}", self.file.display()))
        })?;
        let mut f = File::open(self.file).map_err(local)?;
        f.seek(SeekFrom::Start(offset)).map_err(local)?;
        Ok(Box::new(buffered(f).take(len)))
    }

    /// The image of a `docker save` archive that `tag` names (a whole `repo:tag` or just the
    /// tag), or its only image when no tag is given.
    pub(super) fn docker_save(&self, tag: Option<&str>) -> Result<DockerSave, ScanErrorKind> {
        let raw = self.read("manifest.json", MAX_MANIFEST_JSON_BYTES)?;
        let entries: Vec<SavedImage> = serde_json::from_slice(&raw)
            .map_err(|e| ScanErrorKind::Manifest(format!("manifest.json: {e}")))?;
        let entry = SavedImage::tagged(&entries, tag)?;
        let config = self.read(&entry.config, MAX_CONFIG_BYTES)?;
        let diff_ids = ImageConfig::parse(&config)?.diff_ids();
        if diff_ids.len() != entry.layers.len() {
            return Err(ScanErrorKind::Config(format!(
                "rootfs lists {} layers, manifest.json {}",
                diff_ids.len(),
                entry.layers.len()
            )));
        }
        let mut members = HashMap::new();
        let mut compressed = HashMap::new();
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
            let (_, len) = self.members.get(path.as_str()).ok_or_else(|| {
                ScanErrorKind::Local(format!("manifest.json names missing member {path}"))
            })?;
            let compression = saved_layer::sniff(&self.head(path)?);
            // A diff ID listed twice is read from the file named last, as the members map does.
            if compression == Compression::Plain {
                compressed.remove(&diff_id);
            } else {
                compressed.insert(diff_id.clone(), compression);
            }
            members.insert(diff_id.clone(), path.clone());
            // The descriptor says what the file is: its size (what `pullBytes` sums) and
            // compression, under the diff ID it must decompress to.
            layers.push(OciDescriptor {
                media_type: saved_layer::media_type(compression).into(),
                digest: diff_id,
                size: *len as i64,
                ..Default::default()
            });
        }
        let config_digest = Digest::sha256_of(&config).to_string();
        members.insert(config_digest.clone(), entry.config.clone());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layers,
        });
        let bytes: Bytes = serde_json::to_vec(&manifest).expect("json").into();
        Ok(DockerSave {
            manifest: RawManifest {
                digest: Digest::sha256_of(&bytes).to_string(),
                bytes,
                media_type: DOCKER_MANIFEST.into(),
            },
            members,
            compressed,
        })
    }

    /// The first bytes of a member (fewer when it is shorter).
    fn head(&self, name: &str) -> Result<Vec<u8>, ScanErrorKind> {
        let mut head = Vec::with_capacity(saved_layer::MAGIC_LEN);
        self.open(name)?
            .take(saved_layer::MAGIC_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|e| ScanErrorKind::Local(format!("{name}: {e}")))?;
        Ok(head)
    }

    fn read(&self, name: &str, max: u64) -> Result<Bytes, ScanErrorKind> {
        read_capped(self.open(name)?, name, None, max)
    }
}

/// One image in a `docker save` archive's `manifest.json`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl SavedImage {
    fn tagged<'e>(entries: &'e [SavedImage], tag: Option<&str>) -> Result<&'e Self, ScanErrorKind> {
        match tag {
            Some(t) => entries.iter().find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|r| r == t || r.rsplit_once(':').map(|(_, x)| x) == Some(t))
            }),
            None if entries.len() == 1 => entries.first(),
            None => None,
        }
        .ok_or_else(|| {
            ScanErrorKind::Local(format!(
                "manifest.json has {} images and none is tagged {:?}",
                entries.len(),
                tag.unwrap_or("")
            ))
        })
    }
}

/// Links followed at most this many times to reach a regular member.
const MAX_LINK_HOPS: usize = 8;

/// Offsets and sizes of the regular files of an uncompressed tar archive, and of the links to
/// them under the links' names: `docker save` before Docker 25 writes a layer that appears twice
/// in an image once, and a symlink `ID/layer.tar -> ../OTHER/layer.tar` for the second.
fn members(path: &Path) -> Result<HashMap<String, (u64, u64)>, ScanErrorKind> {
    let local = |e: io::Error| ScanErrorKind::Local(format!("{}: {e}", path.display()));
    let mut file = File::open(path).map_err(local)?;
    // `docker save | gzip` output: members are read in place, which a compressed stream forbids.
    let mut head = Vec::with_capacity(saved_layer::MAGIC_LEN);
    (&mut file)
        .take(saved_layer::MAGIC_LEN as u64)
        .read_to_end(&mut head)
        .map_err(local)?;
    let compression = saved_layer::sniff(&head);
    if compression != Compression::Plain {
        return Err(ScanErrorKind::Local(format!(
            "the archive itself is {compression:?}-compressed: decompress it first (its members \
             are read in place); compressed layer files inside an archive are fine"
        )));
    }
    file.seek(SeekFrom::Start(0)).map_err(local)?;
    let mut archive = tar::Archive::new(io::BufReader::new(file));
    let mut members = HashMap::new();
    let mut links = Vec::new();
    for entry in archive.entries().map_err(local)? {
        let entry = entry.map_err(local)?;
        let kind = entry.header().entry_type();
        let name = member_name(&entry.path_bytes());
        if kind.is_file() {
            members.insert(name, (entry.raw_file_position(), entry.size()));
        } else if (kind.is_symlink() || kind.is_hard_link())
            && let Some(target) = entry.link_name_bytes()
        {
            let target = String::from_utf8_lossy(&target).into_owned();
            let resolved = if kind.is_symlink() {
                let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                resolve(dir, &target)
            } else {
                Some(member_name(target.as_bytes()))
            };
            if let Some(resolved) = resolved {
                links.push((name, resolved));
            }
        }
    }
    let targets: HashMap<String, String> = links.into_iter().collect();
    for (name, first) in &targets {
        let mut target = first;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(&found) = members.get(target.as_str()) {
                members.entry(name.clone()).or_insert(found);
                break;
            }
            match targets.get(target) {
                Some(next) => target = next,
                None => break,
            }
        }
    }
    Ok(members)
}

fn member_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_start_matches("./")
        .to_string()
}

/// A symlink target as a member name, relative to the link's directory; `None` when it leaves
/// the archive.
fn resolve(dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        dir.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member: a file with its bytes, or a symlink to a target.
    enum Member<'a> {
        File(&'a [u8]),
        Link(&'a str),
    }

    fn tar_with(entries: &[(&str, Member<'_>)]) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        for (name, member) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match member {
                Member::File(data) => {
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, name, *data).unwrap();
                }
                Member::Link(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, name, target).unwrap();
                }
            }
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b.into_inner().unwrap()).unwrap();
        file
    }

    #[test]
    fn symlinked_layer_files_are_read_through_their_target() {
        let file = tar_with(&[
            ("aaa/layer.tar", Member::File(b"layer bytes")),
            ("bbb/layer.tar", Member::Link("../aaa/layer.tar")),
            ("ccc/layer.tar", Member::Link("../bbb/layer.tar")),
            ("loop/a", Member::Link("b")),
            ("loop/b", Member::Link("a")),
            ("escape/layer.tar", Member::Link("../../etc/passwd")),
        ]);
        let m = members(file.path()).unwrap();
        assert_eq!(m["bbb/layer.tar"], m["aaa/layer.tar"]);
        assert_eq!(m["ccc/layer.tar"], m["aaa/layer.tar"]);
        assert_eq!(m["aaa/layer.tar"].1, 11);
        assert!(!m.contains_key("loop/a") && !m.contains_key("escape/layer.tar"));
    }

    #[test]
    fn a_compressed_archive_is_refused_with_what_to_do() {
        let plain = tar_with(&[("manifest.json", Member::File(b"[]"))]);
        let tar = std::fs::read(plain.path()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &tar).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), gz.finish().unwrap()).unwrap();
        let e = members(file.path()).unwrap_err().to_string();
        assert!(
            e.contains("the archive itself is Gzip-compressed: decompress it first"),
            "{e}"
        );
        assert!(members(plain.path()).unwrap().contains_key("manifest.json"));
    }

    #[test]
    fn symlink_targets_resolve_inside_the_archive() {
        assert_eq!(
            resolve("a", "../b/layer.tar").as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(resolve("a/b", "./c").as_deref(), Some("a/b/c"));
        assert_eq!(resolve("", "/x/y").as_deref(), Some("x/y"));
        assert_eq!(resolve("a", "../../x"), None);
    }
}

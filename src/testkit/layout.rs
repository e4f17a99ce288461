//! An OCI image layout directory on disk: `oci-layout`, `index.json` and `blobs/sha256/`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::{Compression, Image, Layer, LayerBlob, Platform, index, layer::BlobWriter, sha256};

/// Writes images into an OCI layout. `index.json` is rewritten after every tag, so the layout
/// is valid at any point; blobs are written once (a blob already present is kept).
pub struct OciLayout {
    root: PathBuf,
    manifests: Vec<Value>,
    temporaries: AtomicUsize,
}

impl OciLayout {
    /// Creates the directory (and its parents) with an empty index.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(root.join("blobs/sha256"))?;
        fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let layout = OciLayout {
            root,
            manifests: Vec::new(),
            temporaries: AtomicUsize::new(0),
        };
        layout.write_index()?;
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR:TAG`, as `imagebloat scan --oci-layout` and skopeo's `oci:` take it.
    pub fn spec(&self, tag: &str) -> String {
        format!("{}:{tag}", self.root.display())
    }

    /// The file of the blob `sha256:HEX`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("blobs/sha256").join(hex)
    }

    /// Writes `bytes` as a blob; returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> io::Result<String> {
        let digest = sha256(bytes);
        let path = self.blob_path(&digest);
        if !path.is_file() {
            let mut tmp = self.temporary()?;
            tmp.write_all(bytes)?;
            tmp.persist(&path)?;
        }
        Ok(digest)
    }

    fn temporary(&self) -> io::Result<BlobFile> {
        let n = self.temporaries.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join("blobs/sha256")
            .join(format!(".tmp-{}-{n}", std::process::id()));
        let file = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        Ok(BlobFile { path, file })
    }

    /// A layer streamed into a blob file of this layout as it is written; finish it with
    /// [`OciLayout::finish_layer`]. Several may be written at once, from several threads.
    pub fn layer(
        &self,
        created_by: &str,
        compression: Compression,
    ) -> io::Result<Layer<BlobWriter<BlobFile>>> {
        Ok(Layer::blob(created_by, compression, self.temporary()?))
    }

    /// Ends the layer's stream and stores the blob under its digest.
    pub fn finish_layer(&self, layer: Layer<BlobWriter<BlobFile>>) -> io::Result<LayerBlob> {
        let (file, blob) = layer.finish_blob()?;
        file.persist(&self.blob_path(&blob.digest))?;
        Ok(blob)
    }

    /// Writes the image's blobs and manifest and tags it `tag` (with its platform).
    pub fn add_image(&mut self, image: &Image, tag: &str) -> io::Result<()> {
        for (_, bytes) in &image.blobs {
            self.write_blob(bytes)?;
        }
        self.tag(
            &image.manifest,
            &image.manifest_media_type,
            tag,
            Some(&image.platform),
        )?;
        Ok(())
    }

    /// Writes `manifest` (any bytes, also ones a registry would refuse) and tags it `tag`;
    /// returns its digest.
    pub fn tag(
        &mut self,
        manifest: &[u8],
        media_type: &str,
        tag: &str,
        platform: Option<&Platform>,
    ) -> io::Result<String> {
        let digest = self.write_blob(manifest)?;
        let mut entry = json!({
            "mediaType": media_type,
            "digest": digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        });
        if let Some(p) = platform {
            entry["platform"] = p.to_json();
        }
        self.manifests.push(entry);
        self.write_index()?;
        Ok(digest)
    }

    fn write_index(&self) -> io::Result<()> {
        fs::write(self.root.join("index.json"), index(self.manifests.clone()))
    }
}

/// A blob being written to a temporary file of a layout, renamed to its digest when complete.
pub struct BlobFile {
    path: PathBuf,
    file: BufWriter<File>,
}

impl BlobFile {
    fn persist(self, to: &Path) -> io::Result<()> {
        let file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&self.path, to)
    }
}

impl Write for BlobFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::ImageBuilder;

    #[test]
    fn a_layout_lists_every_tag_with_its_platform_and_holds_every_blob() {
        let dir = std::env::temp_dir().join(format!("testkit-layout-{}", std::process::id()));
        let mut layout = OciLayout::create(&dir).unwrap();
        let streamed = layout.layer("big", Compression::Gzip).unwrap();
        let streamed = layout
            .finish_layer(streamed.sized("big/file", 100_000))
            .unwrap();
        let image = ImageBuilder::new(vec![Layer::new("small").sized("a", 10)])
            .written(streamed.clone())
            .platform("arm64", Some("v8"))
            .build();
        layout.add_image(&image, "one").unwrap();
        layout.add_image(&image, "two").unwrap();

        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let tags: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(tags, ["one", "two"]);
        assert_eq!(index["manifests"][0]["platform"]["variant"], "v8");
        let manifest: Value =
            serde_json::from_slice(&fs::read(layout.blob_path(&image.digest())).unwrap()).unwrap();
        for d in manifest["layers"].as_array().unwrap() {
            let digest = d["digest"].as_str().unwrap();
            let bytes = fs::read(layout.blob_path(digest)).unwrap();
            assert_eq!(sha256(&bytes), digest);
            assert_eq!(bytes.len() as u64, d["size"].as_u64().unwrap());
        }
        assert_eq!(manifest["layers"][1]["digest"], streamed.digest);
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! Layers into an image: the config, the manifest, and indexes over images.

use serde_json::{Value, json};

use super::layer::BlobWriter;
use super::{
    Compression, Flavor, Layer, LayerBlob, OCI_INDEX, layer_media_type, manifest_media_types,
    sha256,
};

/// The platform an image is built for, as a config and an index entry name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn linux(architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// `{"architecture", "os", "variant"?}` as in an index entry.
    pub fn to_json(&self) -> Value {
        let mut p = json!({"architecture": self.architecture, "os": self.os});
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// An image ready to push or to write into a layout: its blobs and its manifest.
pub struct Image {
    /// (digest, bytes) of the layers built in memory, then the config.
    pub blobs: Vec<(String, Vec<u8>)>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    /// Compressed layer sizes in order.
    pub layer_sizes: Vec<u64>,
    pub platform: Platform,
}

impl Image {
    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn pull_bytes(&self) -> u64 {
        self.layer_sizes.iter().sum()
    }

    /// The descriptor of the manifest, with the image's platform, as an index lists it.
    pub fn index_entry(&self) -> Value {
        json!({
            "mediaType": self.manifest_media_type,
            "digest": self.digest(),
            "size": self.manifest.len(),
            "platform": self.platform.to_json(),
        })
    }
}

/// An OCI image index over `manifests` (descriptors such as [`Image::index_entry`]).
pub fn index(manifests: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
    .expect("JSON")
}

/// One step of the build history.
enum Step {
    /// Built in memory, compressed by [`ImageBuilder::build`].
    Layer(Layer),
    /// Already written elsewhere (streamed into a layout).
    Written(LayerBlob),
    /// A history entry without a layer (`ENV`, `CMD`, ...).
    Empty(String),
}

/// Layers and settings into an [`Image`]. By default: gzip, OCI media types, linux/amd64, an
/// empty runtime config, no annotations, no timestamps.
pub struct ImageBuilder {
    steps: Vec<Step>,
    compression: Compression,
    flavor: Flavor,
    platform: Platform,
    layer_media_type: Option<String>,
    annotations: Option<Value>,
    created: Option<String>,
    config: Value,
}

impl ImageBuilder {
    pub fn new(layers: Vec<Layer>) -> Self {
        ImageBuilder {
            steps: layers.into_iter().map(Step::Layer).collect(),
            compression: Compression::Gzip,
            flavor: Flavor::Oci,
            platform: Platform::linux("amd64", None),
            layer_media_type: None,
            annotations: None,
            created: None,
            config: json!({}),
        }
    }

    /// Adds a layer built in memory.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.steps.push(Step::Layer(layer));
        self
    }

    /// Adds a layer whose blob is already written (see [`super::OciLayout::layer`]).
    pub fn written(mut self, blob: LayerBlob) -> Self {
        self.steps.push(Step::Written(blob));
        self
    }

    /// Adds a history entry without a layer (`empty_layer: true`).
    pub fn empty_step(mut self, created_by: &str) -> Self {
        self.steps.push(Step::Empty(created_by.to_string()));
        self
    }

    /// How the layers built in memory are compressed.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }

    pub fn flavor(mut self, f: Flavor) -> Self {
        self.flavor = f;
        self
    }

    /// The architecture and variant in the config (the OS stays).
    pub fn platform(mut self, arch: &str, variant: Option<&str>) -> Self {
        self.platform.architecture = arch.into();
        self.platform.variant = variant.map(str::to_string);
        self
    }

    pub fn os(mut self, os: &str) -> Self {
        self.platform.os = os.into();
        self
    }

    /// Overrides the media type of every layer.
    pub fn layer_media_type(mut self, media_type: &str) -> Self {
        self.layer_media_type = Some(media_type.into());
        self
    }

    /// The manifest's annotations (a JSON object).
    pub fn annotations(mut self, annotations: Value) -> Self {
        self.annotations = Some(annotations);
        self
    }

    /// The `created` timestamp of the config and of every history entry.
    pub fn created(mut self, timestamp: &str) -> Self {
        self.created = Some(timestamp.into());
        self
    }

    /// The runtime config (`Env`, `Cmd`, `WorkingDir`, ...).
    pub fn config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// Compresses the layers built in memory and writes the config and the manifest.
    pub fn build(self) -> Image {
        let mut blobs = Vec::new();
        let mut layers = Vec::new();
        let mut history = Vec::new();
        let entry = |created_by: &str| match &self.created {
            Some(t) => json!({"created": t, "created_by": created_by}),
            None => json!({"created_by": created_by}),
        };
        for step in self.steps {
            match step {
                Step::Layer(layer) => {
                    let (tar, created_by) = layer.into_tar();
                    let mut w = BlobWriter::new(Vec::new(), self.compression);
                    std::io::Write::write_all(&mut w, &tar).expect("writing to memory");
                    let (blob, digest, diff_id, size) = w.finish().expect("writing to memory");
                    history.push(entry(&created_by));
                    blobs.push((digest.clone(), blob));
                    layers.push(LayerBlob {
                        digest,
                        diff_id,
                        size,
                        compression: self.compression,
                        created_by,
                    });
                }
                Step::Written(blob) => {
                    history.push(entry(&blob.created_by));
                    layers.push(blob);
                }
                Step::Empty(created_by) => {
                    let mut e = entry(&created_by);
                    e["empty_layer"] = json!(true);
                    history.push(e);
                }
            }
        }
        let mut config = json!({
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
            "history": history,
            "config": self.config,
        });
        if let Some(v) = &self.platform.variant {
            config["variant"] = json!(v);
        }
        if let Some(t) = &self.created {
            config["created"] = json!(t);
        }
        let config = serde_json::to_vec(&config).expect("JSON");
        let config_digest = sha256(&config);
        let (manifest_type, config_type) = manifest_media_types(self.flavor);
        let descriptors: Vec<Value> = layers
            .iter()
            .map(|l| {
                let media = self
                    .layer_media_type
                    .as_deref()
                    .unwrap_or_else(|| layer_media_type(self.flavor, l.compression));
                json!({"mediaType": media, "digest": l.digest, "size": l.size})
            })
            .collect();
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        });
        if let Some(a) = self.annotations {
            manifest["annotations"] = a;
        }
        blobs.push((config_digest, config));
        Image {
            blobs,
            manifest: serde_json::to_vec(&manifest).expect("JSON"),
            manifest_media_type: manifest_type.to_string(),
            layer_sizes: layers.iter().map(|l| l.size).collect(),
            platform: self.platform,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(image: &Image) -> Value {
        let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
        let digest = &manifest["config"]["digest"];
        let (_, bytes) = image.blobs.iter().find(|(d, _)| digest == d).unwrap();
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn history_keeps_empty_steps_in_build_order_and_diff_ids_only_for_layers() {
        let image = ImageBuilder::new(vec![Layer::new("ADD base").file("a", b"1")])
            .empty_step("ENV A=1")
            .layer(Layer::new("RUN b").file("b", b"2"))
            .created("2024-05-31T16:08:37Z")
            .build();
        let config = config_of(&image);
        let history: Vec<(&str, bool)> = config["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["created_by"].as_str().unwrap(),
                    h["empty_layer"] == json!(true),
                )
            })
            .collect();
        assert_eq!(
            history,
            [("ADD base", false), ("ENV A=1", true), ("RUN b", false)]
        );
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(config["created"], "2024-05-31T16:08:37Z");
        assert_eq!(image.layer_sizes.len(), 2);
    }

    #[test]
    fn docker_flavor_uses_docker_media_types_for_manifest_config_and_layers() {
        let image = ImageBuilder::new(vec![Layer::new("x").sized("a", 10)])
            .flavor(Flavor::Docker)
            .compression(Compression::Zstd)
            .platform("arm", Some("v7"))
            .build();
        let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["mediaType"], crate::testkit::DOCKER_MANIFEST);
        assert_eq!(
            manifest["config"]["mediaType"],
            crate::testkit::DOCKER_CONFIG
        );
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.zstd"
        );
        assert_eq!(config_of(&image)["variant"], "v7");
        assert_eq!(image.index_entry()["platform"]["variant"], "v7");
    }
}

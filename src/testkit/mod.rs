//! The project's one writer of test images: the integration tests, the scan benchmark
//! (`benches/scan.rs`) and the demo's sample images (`examples/samples.rs`) all build their
//! images here, so a layer, a whiteout or a media type is written one way everywhere.
//!
//! - [`Layer`] writes one layer's tar stream entry by entry: files (given, noise or generated
//!   [`Content`]), directories, symlinks, hard links, whiteouts, opaque markers and raw names a
//!   tar writer would refuse. In memory for small test images, or streamed through a
//!   [`BlobWriter`] (tar → diff ID → compression → digest → file) for images of a gigabyte.
//! - [`ImageBuilder`] turns layers into an [`Image`]: the config (history with `created_by` and
//!   empty steps, platform with variant, runtime config) and the manifest (OCI or Docker v2
//!   media types, annotations); [`index`] writes an index over images.
//! - [`OciLayout`] writes an OCI image layout directory; [`Pusher`] pushes to a registry with
//!   oci-client (plain HTTP, basic auth, TLS with a test CA).
//!
//! Everything is deterministic: fixed mtimes and owners, and content derived from seeds, so the
//! same recipe gives the same digests.
//!
//! It is compiled always rather than behind a cargo feature: it needs no crate the scanner does
//! not already use, and a feature would have to be named in every `cargo test`, `cargo bench`
//! and `cargo run --example` (a crate cannot turn on its own features for its tests). The
//! shipped binary does not use it, so the linker leaves it out.
//!
//! Errors: what writes to disk returns `io::Result`; building in memory and pushing panic with a
//! message naming what failed, because every caller is a test or a tool for which that failure
//! ends the run.

mod content;
mod image;
mod layer;
mod layout;
mod push;

pub use content::{Content, Kind, Rng, noise};
pub use image::{Image, ImageBuilder, Platform, index};
pub use layer::{BlobWriter, Layer, LayerBlob, compress};
pub use layout::{BlobFile, OciLayout};
pub use push::Pusher;

use sha2::{Digest, Sha256};

/// The mtime of every entry unless a layer says otherwise (2023-11-14).
pub const MTIME: u64 = 1_700_000_000;

/// `sha256:HEX` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compression {
    Plain,
    /// gzip at level 6 (what `docker build` and most tools write).
    Gzip,
    /// zstd at level 3.
    Zstd,
}

/// Which family of media types the manifest, config and layers carry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    Oci,
    Docker,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

pub fn layer_media_type(f: Flavor, c: Compression) -> &'static str {
    match (f, c) {
        (Flavor::Oci, Compression::Plain) => "application/vnd.oci.image.layer.v1.tar",
        (Flavor::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Flavor::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (Flavor::Docker, Compression::Plain) => "application/vnd.docker.image.rootfs.diff.tar",
        (Flavor::Docker, Compression::Gzip) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        (Flavor::Docker, Compression::Zstd) => "application/vnd.docker.image.rootfs.diff.tar.zstd",
    }
}

/// (manifest, config) media types of a flavor.
pub fn manifest_media_types(f: Flavor) -> (&'static str, &'static str) {
    match f {
        Flavor::Oci => (OCI_MANIFEST, OCI_CONFIG),
        Flavor::Docker => (DOCKER_MANIFEST, DOCKER_CONFIG),
    }
}

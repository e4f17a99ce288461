//! Where blobs come from, behind one face: the pipeline asks for the root manifest, a manifest
//! or a small blob by digest, and a reader for a layer, and does not care whether a registry or
//! a file answers.
//!
//! Registry blobs arrive as an async byte stream while layers are decompressed on a blocking
//! thread; [`ChannelReader`] joins the two with a small bounded channel, so download and
//! decompression overlap on two cores without holding a layer in memory.

use std::io::{self, Read};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::layout::LocalImage;
use super::{ImageSource, ScanErrorKind};
use crate::digest::Digest;
use crate::registry::{
    Credential, RangeRead, RangesRead, RawManifest, Reference, Registry, RegistryError,
};

/// A source made ready to read.
pub(super) enum Opened<'a> {
    Registry(RegistryImage<'a>),
    Local(Box<LocalImage<'a>>),
}

impl Opened<'_> {
    /// Where layer bytes come from, for the layer cache's in-flight reads: the registry host, or
    /// this machine for local sources.
    pub(super) fn origin(&self) -> &str {
        match self {
            Opened::Registry(r) => r.reference.registry(),
            Opened::Local(_) => "local",
        }
    }
}

/// A layer's bytes as a source hands them out.
pub(super) struct LayerBlob {
    pub reader: Box<dyn Read + Send>,
    /// The source decompressed the blob itself (a compressed layer file of a `docker save`
    /// archive, whose digest is the diff ID of the uncompressed tar): the reader yields a plain
    /// tar, whatever the media type says.
    pub decompressed: bool,
}

/// An image in a registry, with the credentials to try.
pub(super) struct RegistryImage<'a> {
    registry: &'a Registry,
    reference: &'a Reference,
    credentials: Vec<&'a Credential>,
}

impl<'a> Opened<'a> {
    /// Opens a source: for archives, finds where each member is.
    pub(super) async fn open(source: &'a ImageSource) -> Result<Opened<'a>, ScanErrorKind> {
        Ok(match source {
            ImageSource::Registry {
                registry,
                reference,
                credentials,
            } => Opened::Registry(RegistryImage {
                registry,
                reference,
                credentials: credentials.iter().collect(),
            }),
            ImageSource::Layout { dir, tag } => {
                Opened::Local(Box::new(LocalImage::directory(dir, tag.as_deref())))
            }
            ImageSource::Archive { file, tag } => {
                Opened::Local(Box::new(LocalImage::archive(file, tag.as_deref()).await?))
            }
        })
    }

    /// The manifest the source names: by the reference's digest or tag (`latest` by default)
    /// in a registry, by tag in a layout's index.
    pub(super) async fn root_manifest(&self) -> Result<RawManifest, ScanErrorKind> {
        match self {
            Opened::Registry(r) => {
                let reference = r.reference;
                let tag = reference.digest().or(reference.tag()).unwrap_or("latest");
                Ok(r.manifest(tag).await?)
            }
            Opened::Local(local) => local.root_manifest(),
        }
    }

    /// A manifest chosen from an index.
    pub(super) async fn manifest_by_digest(
        &self,
        digest: &str,
        size: u64,
    ) -> Result<RawManifest, ScanErrorKind> {
        match self {
            Opened::Registry(r) => Ok(r.manifest(digest).await?),
            Opened::Local(local) => local.manifest_by_digest(digest, size),
        }
    }

    /// A whole blob (a config), verified against its digest and size.
    pub(super) async fn small_blob(&self, digest: &str, size: u64) -> Result<Bytes, ScanErrorKind> {
        let expected = Digest::parse(digest).map_err(|e| ScanErrorKind::Manifest(e.to_string()))?;
        match self {
            Opened::Registry(r) => {
                let mut stream = Box::pin(r.blob(digest, size).await?);
                let mut out = Vec::with_capacity(size as usize);
                while let Some(chunk) = stream.next().await {
                    out.extend_from_slice(&chunk?);
                }
                Ok(out.into())
            }
            Opened::Local(local) => local.small_blob(&expected, size),
        }
    }

    /// A blocking reader of a layer blob that fails if the bytes are not what the digest and
    /// size say.
    pub(super) async fn layer_reader(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<LayerBlob, ScanErrorKind> {
        match self {
            Opened::Registry(r) => {
                let stream = r.blob(&digest.to_string(), size).await?;
                Ok(LayerBlob {
                    reader: Box::new(ChannelReader::spawn(stream)),
                    decompressed: false,
                })
            }
            Opened::Local(local) => local.layer_reader(digest, size),
        }
    }
}

impl Opened<'_> {
    /// `len` bytes of a layer blob from `offset`, for the table-of-contents path; `None` for
    /// local sources, whose layers are read in full (nothing is downloaded).
    pub(super) async fn blob_range(
        &self,
        digest: &Digest,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Option<Result<RangeRead, RegistryError>> {
        match self {
            Opened::Registry(r) => Some(
                r.registry
                    .blob_range(
                        r.reference,
                        &digest.to_string(),
                        size,
                        offset,
                        len,
                        &r.credentials,
                    )
                    .await,
            ),
            Opened::Local(_) => None,
        }
    }

    /// Several ranges (`(offset, len)`) of a layer blob in one request; `None` for local sources.
    pub(super) async fn blob_ranges(
        &self,
        digest: &Digest,
        size: u64,
        ranges: &[(u64, u64)],
    ) -> Option<Result<RangesRead, RegistryError>> {
        match self {
            Opened::Registry(r) => Some(
                r.registry
                    .blob_ranges(
                        r.reference,
                        &digest.to_string(),
                        size,
                        ranges,
                        &r.credentials,
                    )
                    .await,
            ),
            Opened::Local(_) => None,
        }
    }

    /// Whether layers come over the network (the table-of-contents path applies).
    pub(super) fn is_remote(&self) -> bool {
        matches!(self, Opened::Registry(_))
    }
}

impl RegistryImage<'_> {
    async fn manifest(&self, reference: &str) -> Result<RawManifest, RegistryError> {
        self.registry
            .manifest(self.reference, reference, &self.credentials)
            .await
    }

    async fn blob(
        &self,
        digest: &str,
        size: u64,
    ) -> Result<impl Stream<Item = Result<Bytes, RegistryError>> + Send + 'static, RegistryError>
    {
        self.registry
            .blob(self.reference, digest, size, &self.credentials)
            .await
    }
}

/// Bridges an async byte stream to a blocking `Read`: a task forwards chunks through a small
/// bounded channel, so at most a few chunks are in memory while the reader decompresses.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    done: bool,
}

impl ChannelReader {
    fn spawn<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, RegistryError>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut stream = Box::pin(stream);
            while let Some(item) = stream.next().await {
                let item = item.map_err(|e| io::Error::other(e.to_string()));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        ChannelReader {
            rx,
            current: Bytes::new(),
            done: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

//! Pushing images to a registry with oci-client, as a build tool would.

use oci_client::client::{Certificate, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::{Image, OCI_INDEX, Platform, index};

/// Pushes [`Image`]s and indexes; panics with the reference and the registry's error when a
/// push fails.
pub struct Pusher {
    client: Client,
    auth: RegistryAuth,
}

impl Pusher {
    /// Plain HTTP, anonymous.
    pub fn plain() -> Self {
        Self::with(ClientProtocol::Http, RegistryAuth::Anonymous, vec![])
    }

    /// Plain HTTP with basic auth.
    pub fn basic(user: &str, password: &str) -> Self {
        Self::with(
            ClientProtocol::Http,
            RegistryAuth::Basic(user.into(), password.into()),
            vec![],
        )
    }

    pub fn with(protocol: ClientProtocol, auth: RegistryAuth, ca: Vec<Certificate>) -> Self {
        let client = Client::new(ClientConfig {
            protocol,
            extra_root_certificates: ca,
            ..Default::default()
        });
        Pusher { client, auth }
    }

    fn reference(reference: &str) -> Reference {
        reference
            .parse()
            .unwrap_or_else(|e| panic!("image reference {reference:?}: {e}"))
    }

    /// Pushes the image's blobs and manifest; returns the manifest's digest.
    pub async fn push(&self, image: &Image, reference: &str) -> String {
        let r = Self::reference(reference);
        self.client
            .auth(&r, &self.auth, RegistryOperation::Push)
            .await
            .unwrap_or_else(|e| panic!("registry auth for pushing {reference}: {e}"));
        for (digest, blob) in &image.blobs {
            self.client
                .push_blob(&r, blob.clone(), digest)
                .await
                .unwrap_or_else(|e| panic!("push blob {digest} to {reference}: {e}"));
        }
        self.push_manifest(&r, &image.manifest, &image.manifest_media_type)
            .await;
        image.digest()
    }

    /// Pushes a manifest (or index) as the given bytes.
    pub async fn push_manifest(&self, r: &Reference, bytes: &[u8], media_type: &str) {
        let media_type = media_type
            .parse()
            .unwrap_or_else(|e| panic!("media type {media_type:?}: {e}"));
        self.client
            .push_manifest_raw(r, bytes.to_vec(), media_type)
            .await
            .unwrap_or_else(|e| panic!("push manifest to {}: {e}", r.whole()));
    }

    /// Pushes several images by digest and an index over them, each entry naming the platform
    /// given here (os, architecture, variant), under `reference`; returns the index's digest.
    pub async fn push_index(
        &self,
        images: &[(&Image, &str, &str, Option<&str>)],
        reference: &str,
    ) -> String {
        let r = Self::reference(reference);
        let mut entries = Vec::new();
        for (image, os, arch, variant) in images {
            let by_digest = format!("{}/{}@{}", r.registry(), r.repository(), image.digest());
            self.push(image, &by_digest).await;
            let mut entry = image.index_entry();
            entry["platform"] = Platform {
                os: os.to_string(),
                ..Platform::linux(arch, *variant)
            }
            .to_json();
            entries.push(entry);
        }
        let index = index(entries);
        self.push_manifest(&r, &index, OCI_INDEX).await;
        super::sha256(&index)
    }
}

//! One container's image → its findings: the digest it runs (from the kubelet, or its tag resolved
//! now), then the findings under that digest and platform, analyzed once however many workloads
//! ask at the same time, within the analysis slots.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::Api;

use super::context::Context;
use crate::analysis::LayerError;
use crate::registry::{Credential, Keyring, Platform, Reference, RegistryError};
use crate::report::ImageFindings;
use crate::scan::{self, ImageSource, ScanError, ScanErrorKind, ScanOptions};

/// The key of an image's findings: the reference with its digest, and the platform.
pub fn image_key(reference: &Reference, platform: &Platform) -> String {
    format!("{}|{platform}", reference.whole())
}

/// The key of a single-platform manifest's findings, whatever platform was asked for: a plain
/// manifest is the same image on every Node, so a Node of another platform (or the default
/// platform of a Pod not yet scheduled) finds it too, after a restart as well.
pub fn any_platform_key(reference: &Reference) -> String {
    format!("{}|*", reference.whole())
}

/// An analyzed image: its findings and the key they are cached under.
pub struct Analyzed {
    pub key: String,
    pub findings: Arc<ImageFindings>,
}

/// Why a container's image has no findings: the condition's reason, a message naming the image
/// and the problem, and whether trying again later may help.
#[derive(Debug, Clone)]
pub struct ContainerFailure {
    pub reason: String,
    pub message: String,
    pub transient: bool,
}

impl From<RegistryError> for ContainerFailure {
    fn from(e: RegistryError) -> Self {
        ContainerFailure {
            reason: e.reason().to_string(),
            transient: e.is_transient(),
            message: e.to_string(),
        }
    }
}

impl From<ScanError> for ContainerFailure {
    fn from(e: ScanError) -> Self {
        let transient = match &e.kind {
            ScanErrorKind::Registry(r) => r.is_transient(),
            ScanErrorKind::Layer(LayerError::Source(_)) | ScanErrorKind::TimedOut(_) => true,
            _ => false,
        };
        ContainerFailure {
            reason: e.kind.reason().to_string(),
            message: e.to_string(),
            transient,
        }
    }
}

/// Why a container has no findings, and, when its image is waiting out a backoff after failing,
/// how long until the next attempt is due.
#[derive(Debug, Clone)]
pub struct Unanalyzed {
    pub failure: ContainerFailure,
    pub retry_in: Option<std::time::Duration>,
}

impl<E: Into<ContainerFailure>> From<E> for Unanalyzed {
    fn from(e: E) -> Self {
        Unanalyzed {
            failure: e.into(),
            retry_in: None,
        }
    }
}

/// The findings of the image `image` (as the Pod names it) runs as `digest` (as the kubelet
/// reports it, if it does) on `platform`, if the workload could pull it with `credentials`
/// (see `access`): no cached findings, remembered tag or sibling's digest skips that proof.
/// An image whose analysis failed is attempted again only once its backoff is over (see
/// `failures`).
pub async fn analyze_container(
    ctx: &Context,
    image: &str,
    digest: Option<&str>,
    platform: &Platform,
    credentials: &PullCredentials<'_>,
) -> Result<Analyzed, Unanalyzed> {
    let reference: Reference = image.parse().map_err(|e| ContainerFailure {
        reason: "InvalidReference".into(),
        message: format!("{image}: not a valid image reference: {e}"),
        transient: false,
    })?;
    let digest = match digest.or(reference.digest()) {
        Some(d) => d.to_string(),
        None => resolve_tag(ctx, &reference, credentials).await?,
    };
    let target = Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        digest,
    );
    prove_access(ctx, &target, credentials).await?;
    let key = image_key(&target, platform);
    for k in [&key, &any_platform_key(&target)] {
        if let Some(findings) = ctx.images.findings.get(k) {
            ctx.metrics.cache_hits.with_label_values(&["image"]).inc();
            return Ok(Analyzed {
                key: k.clone(),
                findings,
            });
        }
    }
    let findings = ctx
        .images
        .findings
        .cell(&key)
        .get_or_try_init(|| async {
            // Also here: waiters on a failing analysis each take their turn at the cell.
            if let Some(pending) = backing_off(ctx, &key) {
                return Err(pending);
            }
            let result = analyze_image(ctx, &target, platform, credentials).await;
            let failures = &ctx.images.failures;
            let outcome = match result {
                Ok(findings) => {
                    failures.succeeded(&key);
                    Ok(findings)
                }
                Err(failure) => {
                    let (failure, delay) = failures.record(&key, failure);
                    Err(Unanalyzed {
                        failure,
                        retry_in: Some(delay),
                    })
                }
            };
            ctx.metrics.backoff_images.set(failures.len() as i64);
            outcome
        })
        .await?
        .clone();
    Ok(Analyzed { key, findings })
}

/// The remembered failure of an image whose next attempt is not due yet (counted as skipped).
fn backing_off(ctx: &Context, key: &str) -> Option<Unanalyzed> {
    let (failure, left) = ctx.images.failures.pending(key)?;
    ctx.metrics.analyses_skipped.inc();
    Some(Unanalyzed {
        failure,
        retry_in: Some(left),
    })
}

/// Proves that the workload could pull `target` (a reference with digest) where the operator
/// pulls it from, with its own credentials; see `access`.
async fn prove_access(
    ctx: &Context,
    target: &Reference,
    credentials: &PullCredentials<'_>,
) -> Result<(), ContainerFailure> {
    let source = pull_from(ctx, target);
    let digest = target.digest().unwrap_or_default();
    let from = &source;
    let result = ctx
        .images
        .access
        .ensure(
            from,
            credentials.for_image(from),
            move |credentials| async move {
                let refs: Vec<&Credential> = credentials.iter().collect();
                ctx.registry
                    .check_manifest_access(from, digest, &refs)
                    .await
            },
        )
        .await;
    let outcome = match &result {
        Ok(()) => "granted",
        Err(f) if f.transient => "error",
        Err(_) => "refused",
    };
    ctx.metrics
        .access_checks
        .with_label_values(&[outcome])
        .inc();
    result
}

/// Where to pull `reference` from: its registry, or the mirror configured for it.
pub fn pull_from(ctx: &Context, reference: &Reference) -> Reference {
    let Some(mirror) = ctx.config.mirrors.get(reference.registry()) else {
        return reference.clone();
    };
    let repository = reference.repository().to_string();
    match reference.digest() {
        Some(d) => Reference::with_digest(mirror.clone(), repository, d.into()),
        None => Reference::with_tag(
            mirror.clone(),
            repository,
            reference.tag().unwrap_or("latest").into(),
        ),
    }
}

/// The digest a tag points to now: a HEAD request, remembered briefly (a rollout's new Pods ask
/// at once).
async fn resolve_tag(
    ctx: &Context,
    reference: &Reference,
    credentials: &PullCredentials<'_>,
) -> Result<String, ContainerFailure> {
    let source = pull_from(ctx, reference);
    let key = source.whole();
    if let Some(digest) = ctx.images.tags.get(&key) {
        return Ok(digest);
    }
    let tag = reference.tag().unwrap_or("latest");
    let credentials = credentials.for_image(&source).await;
    let digest = ctx
        .registry
        .resolve_tag(&source, tag, &credentials.iter().collect::<Vec<_>>())
        .await?;
    // The HEAD just answered with these credentials: access to the repository is proven.
    ctx.images.access.grant(&source, &credentials);
    ctx.images.tags.insert(key, digest.clone());
    Ok(digest)
}

/// Analyzes `target` (a reference with digest) on `platform`, within an analysis slot, and counts
/// the analysis in the metrics. A single-platform manifest's findings are also filed for every
/// platform.
async fn analyze_image(
    ctx: &Context,
    target: &Reference,
    platform: &Platform,
    credentials: &PullCredentials<'_>,
) -> Result<Arc<ImageFindings>, ContainerFailure> {
    let reference = pull_from(ctx, target);
    let credentials = credentials.for_image(&reference).await;
    let _slot = ctx.slots.acquire(reference.registry()).await;
    let started = Instant::now();
    let source = ImageSource::Registry {
        registry: ctx.registry.clone(),
        reference,
        credentials,
    };
    let options = ScanOptions {
        platform: platform.clone(),
        limits: ctx.config.limits,
        layer_concurrency: 2,
        progress: None,
        lazy: ctx.config.lazy,
    };
    // However slow the registry, an analysis gives its slots back within the deadline.
    let timeout = ctx.config.analysis_timeout;
    let scanned = tokio::time::timeout(timeout, scan::scan(&source, &options, &ctx.images.layers));
    let result = match scanned.await {
        Ok(result) => result,
        Err(_) => Err(ScanError {
            image: target.whole(),
            layer: None,
            kind: ScanErrorKind::TimedOut(timeout),
        }),
    };
    let seconds = started.elapsed().as_secs_f64();
    ctx.metrics
        .analyzed(result.is_ok(), seconds, ctx.images.new_layer_hits());
    let mut scanned = result.inspect_err(|e| tracing::warn!(error = %e, "analysis failed"))?;
    scanned.image = target.whole();
    tracing::info!(image = %scanned.image, platform = %platform, seconds, "analyzed");
    let findings = Arc::new(ImageFindings::new(&scanned));
    if findings.index_digest.is_none() {
        ctx.images
            .remember(any_platform_key(target), findings.clone());
    }
    Ok(findings)
}

/// A Pod's pull credentials, read from the API (ServiceAccount, Secrets) only once a container
/// needs the registry: a reconcile whose images are all analyzed already reads nothing.
pub struct PullCredentials<'a> {
    ctx: &'a Context,
    pod: &'a Pod,
    keyring: tokio::sync::OnceCell<Keyring>,
}

impl<'a> PullCredentials<'a> {
    pub fn new(ctx: &'a Context, pod: &'a Pod) -> Self {
        Self {
            ctx,
            pod,
            keyring: tokio::sync::OnceCell::new(),
        }
    }

    /// The credentials matching an image where it is pulled from (a mirror gets the mirror's
    /// credentials, never the original registry's), in the kubelet's order.
    async fn for_image(&self, reference: &Reference) -> Vec<Credential> {
        self.keyring
            .get_or_init(|| pull_keyring(self.ctx, self.pod))
            .await
            .lookup(reference.registry(), reference.repository())
            .into_iter()
            .cloned()
            .collect()
    }
}

/// Credentials for a Pod's images, as the kubelet would use them: the Pod's imagePullSecrets,
/// then its ServiceAccount's, then the operator-wide configuration.
async fn pull_keyring(ctx: &Context, pod: &Pod) -> Keyring {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut ring = Keyring::default();
    for name in pull_secret_names(ctx, pod, &namespace).await {
        if let Some(keyring) = read_pull_secret(ctx, &namespace, &name).await {
            ring.extend(&keyring);
        }
    }
    ring.extend(&ctx.config.keyring);
    ring
}

/// The names of the Pod's pull secrets, then its ServiceAccount's.
async fn pull_secret_names(ctx: &Context, pod: &Pod, namespace: &str) -> Vec<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut names: Vec<String> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.clone())
        .collect();
    let sa_name = spec
        .service_account_name
        .unwrap_or_else(|| "default".into());
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    match sas.get_opt(&sa_name).await {
        Ok(Some(sa)) => names.extend(
            sa.image_pull_secrets
                .iter()
                .flatten()
                .map(|s| s.name.clone()),
        ),
        Ok(None) => {}
        Err(e) => tracing::debug!(namespace, sa_name, error = %e, "cannot read service account"),
    }
    names
}

/// The credentials in a pull secret (dockerconfigjson or dockercfg), if it exists and reads.
async fn read_pull_secret(ctx: &Context, namespace: &str, name: &str) -> Option<Keyring> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = match secrets.get_opt(name).await {
        Ok(s) => s?,
        Err(e) => {
            tracing::debug!(namespace, secret = name, error = %e, "cannot read pull secret");
            return None;
        }
    };
    let data = secret.data.unwrap_or_default();
    let bytes = data
        .get(".dockerconfigjson")
        .or_else(|| data.get(".dockercfg"))?;
    Keyring::from_docker_config(&bytes.0)
        // The secret's content is never logged, only its name.
        .inspect_err(
            |e| tracing::warn!(namespace, secret = name, error = %e, "unreadable pull secret"),
        )
        .ok()
}

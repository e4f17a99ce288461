//! OCI distribution access: manifests and blob streams, with auth, retries and verification.
//!
//! References and manifest types come from `oci-client`; the HTTP exchanges are made here, on
//! the same `reqwest` it uses, because the analysis needs what its client keeps to itself: each
//! response's status and headers (`Retry-After` on 429 and 503, per-registry request counts) and
//! a blob as a byte stream that is hashed as it arrives and refused if it does not match.
//!
//! This module knows nothing of tar files: it hands out verified bytes.
//!
//! A registry is untrusted input. Every body read whole is capped and read incrementally up to
//! its cap (manifests, error bodies, token responses), every exchange has a deadline, a blob
//! must keep making progress, and credentials only go where they belong: never over plain HTTP
//! to a host not listed insecure, never along a redirect to another host or from https to http,
//! never to a registry their key does not name (a mirror).

pub mod auth;
pub mod platform;
mod range;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Mutex;

pub use auth::{Credential, Keyring};
pub use oci_client::Reference;
pub use platform::Platform;
pub use range::{MAX_RANGE_BYTES, MAX_RANGES_PER_REQUEST, RangeRead, RangesRead};

use crate::digest::{Digest, Verifier, VerifyError};

/// Manifest media types this client accepts.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Manifests larger than this are refused (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Error bodies are read up to this many bytes; the registry's words fit in far less (an OCI
/// error list, a few items of a line each).
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// Token responses larger than this are refused. Real ones hold a token of 1 to 8 KiB (JWTs
/// with claims), sometimes a refresh token beside it.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 256 << 10;

/// Tokens longer than this are refused, so that the token cache stays small
/// ([`RegistryOptions::auth_cache_entries`] of them at most).
pub const MAX_TOKEN_BYTES: usize = 32 << 10;

/// Items of an OCI error list quoted in an error message.
const MAX_ERROR_ITEMS: usize = 5;

/// Redirects followed for one request (reqwest's default).
const MAX_REDIRECTS: usize = 10;

/// A token is kept no longer than this, whatever its `expires_in` says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `host:port` (or `host`) served over plain HTTP.
    pub insecure: BTreeSet<String>,
    /// Extra PEM certificates trusted as roots, besides the system's.
    pub ca_pem: Vec<Vec<u8>>,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
    /// Retries after the first attempt, for transport errors, 429 and 5xx gateway errors.
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub backoff: Duration,
    /// Cap on any single wait, `Retry-After` included.
    pub max_wait: Duration,
    /// Deadline of one exchange, from sending the request to the last byte of a body read
    /// whole (manifests, tokens, error bodies), and to the headers of a blob.
    pub request_timeout: Duration,
    /// A blob must deliver at least `blob_min_window_bytes` in every `blob_stall_window` spent
    /// waiting on the registry (time the reader spends elsewhere does not count).
    pub blob_stall_window: Duration,
    pub blob_min_window_bytes: u64,
    /// A whole blob must arrive within `request_timeout` plus its size at this rate (bytes/s).
    pub blob_min_throughput: u64,
    /// Authorization headers (tokens) remembered, per registry, repository and credential:
    /// with [`MAX_TOKEN_BYTES`], the bound on the cache's memory.
    pub auth_cache_entries: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: BTreeSet::new(),
            ca_pem: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            max_retries: 4,
            backoff: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            blob_stall_window: Duration::from_secs(30),
            blob_min_window_bytes: 64 << 10,
            blob_min_throughput: 32 << 10,
            // 8 MiB at most; a token evicted early costs one token request.
            auth_cache_entries: 256,
        }
    }
}

/// What went wrong talking to a registry. Messages name the registry and repository and never
/// contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: not found (HTTP 404){detail}")]
    NotFound { what: String, detail: String },
    #[error("{what}: access denied (HTTP {status}){detail}; check the credentials for {registry}")]
    Denied {
        what: String,
        status: u16,
        registry: String,
        detail: String,
    },
    #[error("{what}: authentication with {realm} failed: {detail}")]
    Token {
        what: String,
        realm: String,
        detail: String,
    },
    #[error("{what}: {source}")]
    Verify {
        what: String,
        #[source]
        source: VerifyError,
    },
    #[error("{what}: manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    ManifestTooLarge { what: String },
    /// A deadline or the blob progress rule ([`RegistryOptions`]) ran out.
    #[error("{what}: {detail}")]
    TooSlow { what: String, detail: String },
    /// A redirect or a token realm the client does not follow (a downgrade to plain HTTP,
    /// a loop).
    #[error("{what}: {detail}")]
    Refused { what: String, detail: String },
}

impl RegistryError {
    /// Whether trying again later may succeed (the operator backs off on these).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } | RegistryError::TooSlow { .. } => true,
            RegistryError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// A short machine-readable reason (conditions, metrics).
    pub fn reason(&self) -> &'static str {
        match self {
            RegistryError::Setup(_) => "ClientSetup",
            RegistryError::Transport { .. } => "RegistryUnreachable",
            RegistryError::Status { .. } => "RegistryError",
            RegistryError::NotFound { .. } => "NotFound",
            RegistryError::Denied { .. } | RegistryError::Token { .. } => "Unauthorized",
            RegistryError::Verify { .. } => "VerificationFailed",
            RegistryError::ManifestTooLarge { .. } => "InvalidManifest",
            RegistryError::TooSlow { .. } => "RegistryTooSlow",
            RegistryError::Refused { .. } => "RegistryRefused",
        }
    }
}

/// A manifest as served.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Bytes,
    /// The digest of `bytes` (verified against the reference when it names one).
    pub digest: String,
    /// The media type from the body, else the `Content-Type` header.
    pub media_type: String,
}

/// Counters of registry traffic, for metrics and tests.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: AtomicU64,
    pub blob_bytes: AtomicU64,
    pub retries: AtomicU64,
}

/// Told about every registry request and every blob byte (metrics).
pub trait Observer: Send + Sync {
    /// A response with its HTTP status, or `None` for a transport failure.
    fn request(&self, registry: &str, status: Option<u16>);
    fn blob_bytes(&self, registry: &str, bytes: u64);
}

#[derive(Clone)]
struct CachedAuth {
    header: String,
    expires: Option<Instant>,
}

/// Authorization headers by registry, repository and credential, at most `capacity` of them.
struct AuthCache {
    entries: HashMap<String, CachedAuth>,
    capacity: usize,
}

impl AuthCache {
    fn get(&self, key: &str, now: Instant) -> Option<String> {
        let auth = self.entries.get(key)?;
        match auth.expires {
            Some(t) if t <= now => None,
            _ => Some(auth.header.clone()),
        }
    }

    /// Stores `auth`; when full, drops the expired entries, then the one expiring first.
    fn insert(&mut self, key: String, auth: CachedAuth, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, a| a.expires.is_none_or(|t| t > now));
            if self.entries.len() >= self.capacity {
                let first = self
                    .entries
                    .iter()
                    .min_by_key(|(_, a)| (a.expires.is_none(), a.expires))
                    .map(|(k, _)| k.clone());
                if let Some(k) = first {
                    self.entries.remove(&k);
                }
            }
        }
        if self.capacity > 0 {
            self.entries.insert(key, auth);
        }
    }

    fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// The registry client. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    options: Arc<RegistryOptions>,
    auth_cache: Arc<Mutex<AuthCache>>,
    traffic: Arc<Traffic>,
    observer: Option<Arc<dyn Observer>>,
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Result<Self, RegistryError> {
        let mut roots = Vec::new();
        for pem in &options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| RegistryError::Setup(format!("invalid CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(RegistryError::Setup(
                    "CA file holds no PEM certificate".into(),
                ));
            }
            roots.extend(certs);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("imagebloat/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .tls_certs_merge(roots)
            .redirect(reqwest::redirect::Policy::custom(redirect_policy))
            .build()
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        let auth_cache = AuthCache {
            entries: HashMap::new(),
            capacity: options.auth_cache_entries,
        };
        Ok(Registry {
            http,
            options: Arc::new(options),
            auth_cache: Arc::new(Mutex::new(auth_cache)),
            traffic: Arc::default(),
            observer: None,
        })
    }

    /// Reports every request and blob byte to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, registry: &str, status: Option<u16>) {
        if let Some(o) = &self.observer {
            o.request(registry, status);
        }
    }

    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    fn scheme(&self, registry: &str) -> &'static str {
        if self.is_insecure(registry) {
            "http"
        } else {
            "https"
        }
    }

    /// Whether `host[:port]` is listed insecure (by itself or by its host alone).
    fn is_insecure(&self, registry: &str) -> bool {
        let host = registry.split(':').next().unwrap_or(registry);
        self.options.insecure.contains(registry) || self.options.insecure.contains(host)
    }

    /// Whether credentials may be sent to `url`: over https, or to a host listed insecure.
    fn may_carry_credentials(&self, url: &reqwest::Url) -> bool {
        match (url.scheme(), url.host_str()) {
            ("https", _) => true,
            ("http", Some(host)) => {
                let authority = match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                };
                self.is_insecure(&authority)
            }
            _ => false,
        }
    }

    /// Fetches a manifest (image manifest or index) by tag or digest.
    pub async fn manifest(
        &self,
        image: &Reference,
        reference: &str,
        credentials: &[&Credential],
    ) -> Result<RawManifest, RegistryError> {
        let what = format!("manifest {}", display_ref(image, reference));
        let response = self
            .request(
                Method::GET,
                image,
                &format!("manifests/{reference}"),
                MANIFEST_MEDIA_TYPES,
                credentials,
                &what,
                Body::Whole,
            )
            .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let body = match read_capped(response, MAX_MANIFEST_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return Err(RegistryError::ManifestTooLarge { what }),
            Err(BodyError::Failed(source)) => return Err(self.transport_error(&what, source)),
        };
        let digest = match Digest::parse(reference) {
            Ok(expected) => {
                let actual = expected.same_algorithm_of(&body);
                if actual != expected {
                    return Err(RegistryError::Verify {
                        what,
                        source: VerifyError::Mismatch {
                            expected: expected.to_string(),
                            actual: actual.to_string(),
                        },
                    });
                }
                expected.to_string()
            }
            Err(_) => Digest::sha256_of(&body).to_string(),
        };
        let media_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .or(content_type)
            .unwrap_or_default();
        Ok(RawManifest {
            bytes: body.into(),
            digest,
            media_type,
        })
    }

    /// The digest a tag points to now, from a HEAD request's `Docker-Content-Digest`: no manifest
    /// is transferred, and registries that limit pulls do not count it. Falls back to fetching
    /// the manifest when the registry sends no usable header. The digest is verified later, when
    /// the manifest is fetched by it.
    pub async fn resolve_tag(
        &self,
        image: &Reference,
        tag: &str,
        credentials: &[&Credential],
    ) -> Result<String, RegistryError> {
        let what = format!("manifest {}", display_ref(image, tag));
        let response = self
            .request(
                Method::HEAD,
                image,
                &format!("manifests/{tag}"),
                MANIFEST_MEDIA_TYPES,
                credentials,
                &what,
                Body::Whole,
            )
            .await?;
        let announced = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v.trim()).ok());
        match announced {
            Some(digest) => Ok(digest.to_string()),
            None => Ok(self.manifest(image, tag, credentials).await?.digest),
        }
    }

    /// Whether these credentials (anonymous when empty) may pull the manifest `digest`: a HEAD
    /// request, so nothing is transferred. Denied access is a [`RegistryError::Denied`] or
    /// [`RegistryError::Token`]; a registry that cannot answer now is a transient error.
    pub async fn check_manifest_access(
        &self,
        image: &Reference,
        digest: &str,
        credentials: &[&Credential],
    ) -> Result<(), RegistryError> {
        let what = format!("manifest {}", display_ref(image, digest));
        self.request(
            Method::HEAD,
            image,
            &format!("manifests/{digest}"),
            MANIFEST_MEDIA_TYPES,
            credentials,
            &what,
            Body::Whole,
        )
        .await
        .map(drop)
    }

    /// Streams a blob, verified: the stream ends with an error unless the bytes match `digest`
    /// and `size`, and it never yields more than `size` bytes. It also ends with an error when
    /// the registry is too slow: less than [`RegistryOptions::blob_min_window_bytes`] in a
    /// [`RegistryOptions::blob_stall_window`] of waiting, or the whole blob not in
    /// `request_timeout` plus `size` at [`RegistryOptions::blob_min_throughput`].
    pub async fn blob(
        &self,
        image: &Reference,
        digest: &str,
        size: u64,
        credentials: &[&Credential],
    ) -> Result<impl Stream<Item = Result<Bytes, RegistryError>> + Send + 'static, RegistryError>
    {
        let what = format!("blob {digest} of {}", image.whole());
        let expected = Digest::parse(digest).map_err(|source| RegistryError::Verify {
            what: what.clone(),
            source,
        })?;
        let pace = Pace::new(&self.options, size);
        let response = self
            .request(
                Method::GET,
                image,
                &format!("blobs/{digest}"),
                &["*/*"],
                credentials,
                &what,
                Body::Stream,
            )
            .await?;
        if let Some(n) = response.content_length()
            && n != size
        {
            return Err(RegistryError::Verify {
                what,
                source: if n < size {
                    VerifyError::Truncated {
                        got: n,
                        expected: size,
                    }
                } else {
                    VerifyError::TooLong { expected: size }
                },
            });
        }
        let traffic = self.traffic.clone();
        let observer = self.observer.clone();
        let registry = image.resolve_registry().to_string();
        let state = BlobState {
            body: Box::pin(response.bytes_stream()),
            verifier: Some(Verifier::new(&expected, Some(size))),
            pace,
            what,
        };
        Ok(futures_util::stream::unfold(state, move |mut state| {
            let traffic = traffic.clone();
            let observer = observer.clone();
            let registry = registry.clone();
            async move {
                let mut verifier = state.verifier.take()?;
                let next = match state.pace.next(&mut state.body).await {
                    Ok(next) => next,
                    Err(detail) => {
                        let what = state.what.clone();
                        return Some((Err(RegistryError::TooSlow { what, detail }), state));
                    }
                };
                let item = match next {
                    Some(Ok(chunk)) => {
                        traffic
                            .blob_bytes
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        if let Some(o) = &observer {
                            o.blob_bytes(&registry, chunk.len() as u64);
                        }
                        match verifier.update(&chunk) {
                            Ok(()) => {
                                state.verifier = Some(verifier);
                                Ok(chunk)
                            }
                            Err(source) => Err(RegistryError::Verify {
                                what: state.what.clone(),
                                source,
                            }),
                        }
                    }
                    Some(Err(source)) => Err(RegistryError::Transport {
                        what: state.what.clone(),
                        source,
                    }),
                    None => match verifier.finish() {
                        Ok(()) => return None,
                        Err(source) => Err(RegistryError::Verify {
                            what: state.what.clone(),
                            source,
                        }),
                    },
                };
                Some((item, state))
            }
        }))
    }

    /// A GET with auth negotiation and retries. Non-success statuses become errors.
    /// Credentials whose key does not name this registry (those of the registry a mirror
    /// stands for) are not sent.
    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        method: Method,
        image: &Reference,
        path: &str,
        accept: &[&str],
        credentials: &[&Credential],
        what: &str,
        body: Body,
    ) -> Result<Response, RegistryError> {
        let registry = image.resolve_registry().to_string();
        let repository = image.repository().to_string();
        let given = credentials.len();
        let credentials: Vec<&Credential> = credentials
            .iter()
            .copied()
            .filter(|c| c.applies_to(image.registry(), &repository))
            .collect();
        if credentials.len() < given {
            tracing::debug!(
                registry,
                withheld = given - credentials.len(),
                "credentials configured for another registry are not sent"
            );
        }
        let url = format!(
            "{}://{registry}/v2/{repository}/{path}",
            self.scheme(&registry)
        );
        let accept = accept.join(", ");
        // Try each matching credential in turn, as the kubelet does; anonymous when none.
        let attempts: Vec<Option<&Credential>> = if credentials.is_empty() {
            vec![None]
        } else {
            credentials.iter().map(|c| Some(*c)).collect()
        };
        let mut last_denied = None;
        for credential in attempts {
            let cache_key = format!(
                "{registry}/{repository}#{}",
                credential.map(Credential::fingerprint).unwrap_or_default()
            );
            let mut header = self.auth_cache.lock().await.get(&cache_key, Instant::now());
            if header.is_none()
                && let Some(token) = credential.and_then(|c| c.registry_token.clone())
            {
                header = Some(format!("Bearer {token}"));
            }
            let mut negotiated = false;
            loop {
                let response = self
                    .send(
                        method.clone(),
                        &url,
                        &accept,
                        header.as_deref(),
                        &registry,
                        what,
                        &body,
                    )
                    .await?;
                let status = response.status();
                if status == StatusCode::UNAUTHORIZED && !negotiated {
                    negotiated = true;
                    let challenge = response.headers().get(WWW_AUTHENTICATE).cloned();
                    let Some(challenge) =
                        challenge.and_then(|h| h.to_str().ok().map(str::to_string))
                    else {
                        last_denied = Some(self.error_for(response, what, &registry).await);
                        break;
                    };
                    match self
                        .negotiate(&challenge, &registry, &repository, credential, what)
                        .await?
                    {
                        Some(auth) => {
                            header = Some(auth.header.clone());
                            self.auth_cache.lock().await.insert(
                                cache_key.clone(),
                                auth,
                                Instant::now(),
                            );
                            continue;
                        }
                        None => {
                            last_denied = Some(self.error_for(response, what, &registry).await);
                            break;
                        }
                    }
                }
                if status.is_success() {
                    return Ok(response);
                }
                let error = self.error_for(response, what, &registry).await;
                if matches!(error, RegistryError::Denied { .. }) {
                    self.auth_cache.lock().await.remove(&cache_key);
                    last_denied = Some(error);
                    break;
                }
                return Err(error);
            }
        }
        Err(last_denied.expect("at least one attempt"))
    }

    /// Answers a `WWW-Authenticate` challenge: Basic with the credential, or the Bearer token
    /// flow. `None` when the challenge cannot be answered (Basic without credentials).
    async fn negotiate(
        &self,
        challenge: &str,
        registry: &str,
        repository: &str,
        credential: Option<&Credential>,
        what: &str,
    ) -> Result<Option<CachedAuth>, RegistryError> {
        let mut bearer: Option<(String, Option<String>)> = None;
        let mut basic = false;
        for c in http_auth::parser::ChallengeParser::new(challenge).flatten() {
            if c.scheme.eq_ignore_ascii_case("bearer") {
                let param = |name: &str| {
                    c.params
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.to_unescaped())
                };
                if let Some(realm) = param("realm") {
                    bearer = Some((realm, param("service")));
                }
            } else if c.scheme.eq_ignore_ascii_case("basic") {
                basic = true;
            }
        }
        if let Some((realm, service)) = bearer {
            return self
                .fetch_token(
                    &realm,
                    service.as_deref(),
                    repository,
                    credential,
                    registry,
                    what,
                )
                .await
                .map(Some);
        }
        if basic && let Some(c) = credential {
            return Ok(Some(CachedAuth {
                header: format!(
                    "Basic {}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        format!("{}:{}", c.username, c.password)
                    )
                ),
                expires: None,
            }));
        }
        Ok(None)
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        repository: &str,
        credential: Option<&Credential>,
        registry: &str,
        what: &str,
    ) -> Result<CachedAuth, RegistryError> {
        let token_error = |detail: String| RegistryError::Token {
            what: what.to_string(),
            realm: realm.to_string(),
            detail,
        };
        self.check_realm(realm, what)?;
        let scope = format!("repository:{repository}:pull");
        let request = self.token_request(realm, service, &scope, credential);
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        let response = request
            .timeout(self.options.request_timeout)
            .send()
            .await
            .map_err(|e| {
                self.observe(registry, None);
                match self.transport_error(what, e) {
                    RegistryError::Transport { source, .. } => token_error(without_url(&source)),
                    other => other,
                }
            })?;
        let status = response.status();
        self.observe(registry, Some(status.as_u16()));
        tracing::debug!(registry, status = status.as_u16(), "token request");
        if !status.is_success() {
            return Err(token_error(format!("HTTP {}", status.as_u16())));
        }
        let bytes = match read_capped(response, MAX_TOKEN_RESPONSE_BYTES).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => {
                return Err(token_error(format!(
                    "the token response is larger than the {MAX_TOKEN_RESPONSE_BYTES}-byte cap"
                )));
            }
            Err(BodyError::Failed(e)) => {
                return Err(match self.transport_error(what, e) {
                    RegistryError::Transport { source, .. } => token_error(format!(
                        "unreadable token response: {}",
                        without_url(&source)
                    )),
                    other => other,
                });
            }
        };
        parse_token(&bytes).map_err(token_error)
    }

    /// The realm comes from the registry: no credential, and no request at all, goes to a
    /// plain-HTTP realm unless its host is listed insecure.
    fn check_realm(&self, realm: &str, what: &str) -> Result<(), RegistryError> {
        let realm_url = reqwest::Url::parse(realm).map_err(|_| RegistryError::Token {
            what: what.to_string(),
            realm: realm.to_string(),
            detail: "the token realm is not a URL".into(),
        })?;
        if self.may_carry_credentials(&realm_url) {
            return Ok(());
        }
        Err(RegistryError::Refused {
            what: what.to_string(),
            detail: format!(
                "token realm {}://{}{} is not https and its host is not an insecure registry",
                realm_url.scheme(),
                realm_url.authority(),
                realm_url.path()
            ),
        })
    }

    /// The token request for `scope`: docker's identity token as an OAuth2 refresh-token grant,
    /// else a GET with the user's Basic credentials (or none).
    fn token_request(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credential: Option<&Credential>,
    ) -> reqwest::RequestBuilder {
        if let Some(refresh) = credential.and_then(|c| c.identity_token.as_deref()) {
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", "imagebloat"),
                ("scope", scope),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={}", urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            return self
                .http
                .post(realm)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { '&' } else { '?' },
            urlencode(scope)
        );
        if let Some(s) = service {
            url.push_str(&format!("&service={}", urlencode(s)));
        }
        let request = self.http.get(url);
        match credential.filter(|c| !c.username.is_empty() || !c.password.is_empty()) {
            Some(c) => request.basic_auth(&c.username, Some(&c.password)),
            None => request,
        }
    }

    /// Sends a request, retrying transport errors, 429 and 502–504 with backoff that honours
    /// `Retry-After`. Each attempt has `request_timeout` to answer (and, for a body read whole,
    /// to finish it). The authorization goes only where credentials may go.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        authorization: Option<&str>,
        registry: &str,
        what: &str,
        body: &Body,
    ) -> Result<Response, RegistryError> {
        let timeout = self.options.request_timeout;
        let authorization = authorization
            .filter(|_| reqwest::Url::parse(url).is_ok_and(|u| self.may_carry_credentials(&u)));
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url)
                .header(ACCEPT, accept);
            if *body != Body::Stream {
                request = request.timeout(timeout);
            }
            if let Body::Range(ranges) = body {
                request = request.header(reqwest::header::RANGE, ranges.as_str());
            }
            if let Some(a) = authorization {
                request = request.header(AUTHORIZATION, a);
            }
            self.traffic.requests.fetch_add(1, Ordering::Relaxed);
            // `None`: no answer within the deadline.
            let result = match tokio::time::timeout(timeout, request.send()).await {
                Ok(sent) => sent.map_err(Some),
                Err(_) => Err(None),
            };
            self.observe(registry, result.as_ref().ok().map(|r| r.status().as_u16()));
            let wait = match &result {
                Ok(r) if retryable(r.status()) => {
                    Some(retry_after(r.headers()).unwrap_or_else(|| self.backoff(attempt)))
                }
                Ok(_) => None,
                Err(Some(e)) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    Some(self.backoff(attempt))
                }
                Err(Some(_)) => None,
                Err(None) => Some(self.backoff(attempt)),
            };
            match &result {
                Ok(r) => tracing::debug!(
                    registry,
                    url,
                    status = r.status().as_u16(),
                    "registry request"
                ),
                Err(Some(e)) => {
                    tracing::debug!(registry, url, error = %without_url(e), "registry request failed")
                }
                Err(None) => tracing::debug!(registry, url, "registry request timed out"),
            }
            match wait {
                Some(wait) if attempt < self.options.max_retries => {
                    let wait = wait.min(self.options.max_wait);
                    tracing::info!(
                        registry,
                        what,
                        attempt = attempt + 1,
                        wait_ms = wait.as_millis() as u64,
                        "retrying registry request"
                    );
                    self.traffic.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => {
                    return result.map_err(|e| match e {
                        Some(source) => self.transport_error(what, source),
                        None => self.deadline_passed(what),
                    });
                }
            }
        }
    }

    /// A failed exchange or body read: a refused redirect says why, a timeout names the
    /// deadline.
    fn transport_error(&self, what: &str, source: reqwest::Error) -> RegistryError {
        if source.is_redirect() {
            let mut cause: &dyn std::error::Error = &source;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            return RegistryError::Refused {
                what: what.to_string(),
                detail: cause.to_string(),
            };
        }
        if source.is_timeout() && !source.is_connect() {
            return self.deadline_passed(what);
        }
        RegistryError::Transport {
            what: what.to_string(),
            source: source.without_url(),
        }
    }

    fn deadline_passed(&self, what: &str) -> RegistryError {
        RegistryError::TooSlow {
            what: what.to_string(),
            detail: format!(
                "no complete answer within the {:?} request deadline",
                self.options.request_timeout
            ),
        }
    }

    /// The error for a non-success response, with the registry's own words from its body
    /// (read up to [`MAX_ERROR_BODY_BYTES`], within the request deadline).
    async fn error_for(&self, response: Response, what: &str, registry: &str) -> RegistryError {
        let status = response.status().as_u16();
        let read = tokio::time::timeout(
            self.options.request_timeout,
            read_capped(response, MAX_ERROR_BODY_BYTES),
        )
        .await;
        let detail = match read {
            Ok(Ok(body)) => registry_error_detail(&body),
            Ok(Err(BodyError::TooLarge)) => format!(
                " (its error body is larger than the {MAX_ERROR_BODY_BYTES}-byte cap and was not read)"
            ),
            Ok(Err(BodyError::Failed(_))) | Err(_) => String::new(),
        };
        let what = what.to_string();
        match status {
            401 | 403 => RegistryError::Denied {
                what,
                status,
                registry: registry.to_string(),
                detail,
            },
            404 => RegistryError::NotFound { what, detail },
            _ => RegistryError::Status {
                what,
                status,
                detail,
            },
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.options.backoff.saturating_mul(1 << attempt.min(10));
        // Up to 25% jitter, so that many clients do not retry in step.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base + base.mul_f64((nanos % 1000) as f64 / 4000.0)
    }
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The bearer header from a token response body (capped already); the error says what is wrong
/// without quoting the body, which holds the token.
fn parse_token(bytes: &[u8]) -> Result<CachedAuth, String> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let body: TokenResponse = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "unreadable token response (invalid at line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let token = body
        .token
        .or(body.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "the response holds no token".to_string())?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "the token is longer than the {MAX_TOKEN_BYTES}-byte cap"
        ));
    }
    Ok(CachedAuth {
        header: format!("Bearer {token}"),
        expires: Some(Instant::now() + token_lifetime(body.expires_in)),
    })
}

/// How long to use a token whose response said `expires_in` seconds (the spec's default is 60):
/// renewed a little early (5 s, or a quarter of a short lifetime), and never kept longer than
/// [`MAX_TOKEN_LIFETIME`].
fn token_lifetime(expires_in: Option<u64>) -> Duration {
    let lifetime = Duration::from_secs(expires_in.unwrap_or(60)).min(MAX_TOKEN_LIFETIME);
    lifetime - (lifetime / 4).min(Duration::from_secs(5))
}

/// Follows at most [`MAX_REDIRECTS`] redirects, and none from https to plain http. reqwest
/// itself drops the `Authorization` header when a redirect changes scheme, host or port.
fn redirect_policy(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    if attempt.previous().len() >= MAX_REDIRECTS {
        return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
    }
    let downgrade = attempt
        .previous()
        .last()
        .is_some_and(|from| from.scheme() == "https")
        && attempt.url().scheme() != "https";
    if downgrade {
        attempt.error("refused a redirect from https to plain http")
    } else {
        attempt.follow()
    }
}

/// Whether a response's body is read whole (deadline on the whole exchange) or streamed; ranges
/// of a blob (the `Range` header's value) are read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Whole,
    Stream,
    Range(String),
}

/// Why a body read whole stopped.
enum BodyError {
    TooLarge,
    Failed(reqwest::Error),
}

/// Reads a body whole, up to `cap` bytes: refused on a larger `Content-Length` without reading,
/// else as soon as the bytes read pass the cap. Never holds more than `cap` bytes plus one
/// chunk, whatever the registry sends.
async fn read_capped(response: Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Failed)?;
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

type BlobBody = std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct BlobState {
    body: BlobBody,
    /// `None` once the stream has ended or failed.
    verifier: Option<Verifier>,
    pace: Pace,
    what: String,
}

/// The blob progress rule: at least `min_bytes` in every `window` spent waiting on the registry,
/// and the whole blob before `deadline`. Only time spent waiting counts, so a slow reader
/// (decompression, a full cache) never makes the registry look slow.
struct Pace {
    deadline: tokio::time::Instant,
    allowance: Duration,
    window: Duration,
    min_bytes: u64,
    /// Time waited and bytes received in the current window.
    waited: Duration,
    bytes: u64,
}

impl Pace {
    fn new(options: &RegistryOptions, size: u64) -> Self {
        // Capped far beyond any real transfer, so that the instant cannot overflow.
        let allowance = options
            .request_timeout
            .saturating_add(Duration::from_secs(
                size / options.blob_min_throughput.max(1),
            ))
            .min(Duration::from_secs(365 * 86400));
        Pace {
            deadline: tokio::time::Instant::now() + allowance,
            allowance,
            window: options.blob_stall_window,
            min_bytes: options.blob_min_window_bytes,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// The body's next item, or why the blob is too slow.
    async fn next(
        &mut self,
        body: &mut BlobBody,
    ) -> Result<Option<reqwest::Result<Bytes>>, String> {
        let started = tokio::time::Instant::now();
        let window_end = started + self.window.saturating_sub(self.waited);
        let next = tokio::time::timeout_at(window_end.min(self.deadline), body.next()).await;
        self.waited += started.elapsed();
        match next {
            Ok(Some(Ok(chunk))) => {
                self.bytes += chunk.len() as u64;
                if self.bytes >= self.min_bytes {
                    self.waited = Duration::ZERO;
                    self.bytes = 0;
                } else if self.waited >= self.window {
                    return Err(self.stalled());
                }
                Ok(Some(Ok(chunk)))
            }
            // The end of the body, or a transport error.
            Ok(other) => Ok(other),
            Err(_) if tokio::time::Instant::now() >= self.deadline => Err(format!(
                "the blob did not arrive within its deadline of {:?} (the request deadline plus its size at the minimum throughput)",
                self.allowance
            )),
            Err(_) => Err(self.stalled()),
        }
    }

    fn stalled(&self) -> String {
        format!(
            "the registry sent {} bytes in {:?} of waiting, less than the {} bytes required (a stalled or too slow transfer)",
            self.bytes, self.window, self.min_bytes
        )
    }
}

/// The registry's own words from an OCI error body, as `: CODE message`.
fn registry_error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let mut items: Vec<String> = e
                .errors
                .iter()
                .take(MAX_ERROR_ITEMS)
                .map(|i| {
                    let text = format!(
                        "{} {}",
                        i.code.as_deref().unwrap_or(""),
                        i.message.as_deref().unwrap_or("")
                    );
                    text.trim().chars().take(200).collect()
                })
                .collect();
            if e.errors.len() > MAX_ERROR_ITEMS {
                items.push(format!("and {} more", e.errors.len() - MAX_ERROR_ITEMS));
            }
            format!(": {}", items.join("; "))
        }
        _ => String::new(),
    }
}

fn without_url(e: &reqwest::Error) -> String {
    // Token realms can carry query strings; keep only the error's own words.
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), url.path());
    }
    text
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn urlencode(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

fn display_ref(image: &Reference, reference: &str) -> String {
    let sep = if reference.contains(':') { '@' } else { ':' };
    format!(
        "{}/{}{sep}{reference}",
        image.registry(),
        image.repository()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn registry_error_bodies_are_summarised() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_error_detail(body),
            ": MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(registry_error_detail(b"<html>"), "");
    }

    #[test]
    fn token_request_values_are_percent_encoded_except_unreserved_characters() {
        assert_eq!(
            urlencode("repository:team/app:pull a~b_c-d.e"),
            "repository%3Ateam%2Fapp%3Apull%20a~b_c-d.e"
        );
    }

    #[test]
    fn tokens_live_as_long_as_their_expires_in_less_a_margin_and_at_most_an_hour() {
        assert_eq!(token_lifetime(None), Duration::from_secs(55));
        assert_eq!(token_lifetime(Some(300)), Duration::from_secs(295));
        assert_eq!(token_lifetime(Some(1)), Duration::from_millis(750));
        assert_eq!(token_lifetime(Some(0)), Duration::ZERO);
        assert_eq!(
            token_lifetime(Some(u64::MAX)),
            Duration::from_secs(3600 - 5)
        );
    }

    fn auth(header: &str, expires: Option<Instant>) -> CachedAuth {
        CachedAuth {
            header: header.into(),
            expires,
        }
    }

    #[test]
    fn an_expired_token_is_not_used() {
        let now = Instant::now();
        let mut cache = AuthCache {
            entries: HashMap::new(),
            capacity: 8,
        };
        cache.insert(
            "r/a#".into(),
            auth("Bearer t", Some(now + Duration::from_secs(60))),
            now,
        );
        assert_eq!(cache.get("r/a#", now).as_deref(), Some("Bearer t"));
        assert_eq!(cache.get("r/a#", now + Duration::from_secs(60)), None);
    }

    #[test]
    fn the_token_cache_never_holds_more_than_its_capacity() {
        let now = Instant::now();
        let mut cache = AuthCache {
            entries: HashMap::new(),
            capacity: 3,
        };
        let at = |s| Some(now + Duration::from_secs(s));
        cache.insert("expired".into(), auth("e", Some(now)), now);
        cache.insert("soon".into(), auth("s", at(10)), now);
        cache.insert("later".into(), auth("l", at(50)), now);
        // Full: the expired entry goes first.
        cache.insert("new".into(), auth("n", at(40)), now);
        assert_eq!(cache.entries.len(), 3);
        assert_eq!(cache.get("expired", now), None);
        // Full of live entries: the one expiring first goes.
        cache.insert("newer".into(), auth("w", at(40)), now);
        assert_eq!(cache.entries.len(), 3);
        assert_eq!(cache.get("soon", now), None);
        assert_eq!(cache.get("later", now).as_deref(), Some("l"));
    }

    #[test]
    fn long_error_lists_are_cut_to_a_few_items() {
        let items: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"code":"C{i}","message":"m"}}"#))
            .collect();
        let body = format!(r#"{{"errors":[{}]}}"#, items.join(","));
        assert_eq!(
            registry_error_detail(body.as_bytes()),
            ": C0 m; C1 m; C2 m; C3 m; C4 m; and 95 more"
        );
    }

    #[test]
    fn credentials_go_over_https_or_to_hosts_listed_insecure_only() {
        let r = Registry::new(RegistryOptions {
            insecure: ["127.0.0.1:5000".to_string(), "plain.example".to_string()].into(),
            ..Default::default()
        })
        .unwrap();
        let may = |u: &str| r.may_carry_credentials(&reqwest::Url::parse(u).unwrap());
        assert!(may("https://auth.example/token"));
        assert!(may("http://127.0.0.1:5000/token"));
        assert!(may("http://plain.example:8080/token"));
        assert!(!may("http://127.0.0.1:5001/token"));
        assert!(!may("http://auth.example/token"));
    }

    #[test]
    fn plain_http_only_for_listed_hosts() {
        let r = Registry::new(RegistryOptions {
            insecure: ["127.0.0.1:5000".to_string()].into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.scheme("127.0.0.1:5000"), "http");
        assert_eq!(r.scheme("127.0.0.1:5001"), "https");
        assert_eq!(r.scheme("registry.example"), "https");
    }
}

//! OCI distribution access: manifests and blob streams, with auth, retries and verification.
//!
//! References and manifest types come from `oci-client`; the HTTP exchanges are made here, on
//! the same `reqwest` it uses, because the analysis needs what its client keeps to itself: each
//! response's status and headers (`Retry-After` on 429 and 503, per-registry request counts) and
//! a blob as a byte stream that is hashed as it arrives and refused if it does not match.
//!
//! This module knows nothing of tar files: it hands out verified bytes.

pub mod auth;
pub mod platform;

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
}

impl RegistryError {
    /// Whether trying again later may succeed (the operator backs off on these).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
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

/// The registry client. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    options: Arc<RegistryOptions>,
    auth_cache: Arc<Mutex<HashMap<String, CachedAuth>>>,
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
            .build()
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        Ok(Registry {
            http,
            options: Arc::new(options),
            auth_cache: Arc::default(),
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
        let host = registry.split(':').next().unwrap_or(registry);
        if self.options.insecure.contains(registry) || self.options.insecure.contains(host) {
            "http"
        } else {
            "https"
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
            )
            .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        if response
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES as u64)
        {
            return Err(RegistryError::ManifestTooLarge { what });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Transport {
                what: what.clone(),
                source,
            })?;
            if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
                return Err(RegistryError::ManifestTooLarge { what });
            }
            body.extend_from_slice(&chunk);
        }
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

    /// Streams a blob, verified: the stream ends with an error unless the bytes match `digest`
    /// and `size`, and it never yields more than `size` bytes.
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
        let response = self
            .request(
                Method::GET,
                image,
                &format!("blobs/{digest}"),
                &["*/*"],
                credentials,
                &what,
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
        let state = (
            response.bytes_stream(),
            Some(Verifier::new(&expected, Some(size))),
            what,
        );
        Ok(futures_util::stream::unfold(
            state,
            move |(mut body, verifier, what)| {
                let traffic = traffic.clone();
                let observer = observer.clone();
                let registry = registry.clone();
                async move {
                    let mut verifier = verifier?;
                    match body.next().await {
                        Some(Ok(chunk)) => {
                            traffic
                                .blob_bytes
                                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            if let Some(o) = &observer {
                                o.blob_bytes(&registry, chunk.len() as u64);
                            }
                            match verifier.update(&chunk) {
                                Ok(()) => Some((Ok(chunk), (body, Some(verifier), what))),
                                Err(source) => Some((
                                    Err(RegistryError::Verify {
                                        what: what.clone(),
                                        source,
                                    }),
                                    (body, None, what),
                                )),
                            }
                        }
                        Some(Err(source)) => Some((
                            Err(RegistryError::Transport {
                                what: what.clone(),
                                source,
                            }),
                            (body, None, what),
                        )),
                        None => match verifier.finish() {
                            Ok(()) => None,
                            Err(source) => Some((
                                Err(RegistryError::Verify {
                                    what: what.clone(),
                                    source,
                                }),
                                (body, None, what),
                            )),
                        },
                    }
                }
            },
        ))
    }

    /// A GET with auth negotiation and retries. Non-success statuses become errors.
    async fn request(
        &self,
        method: Method,
        image: &Reference,
        path: &str,
        accept: &[&str],
        credentials: &[&Credential],
        what: &str,
    ) -> Result<Response, RegistryError> {
        let registry = image.resolve_registry().to_string();
        let repository = image.repository().to_string();
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
            let mut header = self.cached_auth(&cache_key).await;
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
                    )
                    .await?;
                let status = response.status();
                if status == StatusCode::UNAUTHORIZED && !negotiated {
                    negotiated = true;
                    let challenge = response.headers().get(WWW_AUTHENTICATE).cloned();
                    let Some(challenge) =
                        challenge.and_then(|h| h.to_str().ok().map(str::to_string))
                    else {
                        last_denied = Some(error_for(response, what, &registry).await);
                        break;
                    };
                    match self
                        .negotiate(&challenge, &registry, &repository, credential, what)
                        .await?
                    {
                        Some(auth) => {
                            header = Some(auth.header.clone());
                            self.auth_cache.lock().await.insert(cache_key.clone(), auth);
                            continue;
                        }
                        None => {
                            last_denied = Some(error_for(response, what, &registry).await);
                            break;
                        }
                    }
                }
                if status.is_success() {
                    return Ok(response);
                }
                let error = error_for(response, what, &registry).await;
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

    async fn cached_auth(&self, key: &str) -> Option<String> {
        let cache = self.auth_cache.lock().await;
        let auth = cache.get(key)?;
        match auth.expires {
            Some(t) if t <= Instant::now() => None,
            _ => Some(auth.header.clone()),
        }
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
        let scope = format!("repository:{repository}:pull");
        let token_error = |detail: String| RegistryError::Token {
            what: what.to_string(),
            realm: realm.to_string(),
            detail,
        };
        let request = match credential.and_then(|c| c.identity_token.as_deref()) {
            // OAuth2 refresh-token grant (docker's identity tokens).
            Some(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    ("client_id", "imagebloat"),
                    ("scope", scope.as_str()),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", urlencode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                self.http
                    .post(realm)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body)
            }
            None => {
                let mut url = format!(
                    "{realm}{}scope={}",
                    if realm.contains('?') { '&' } else { '?' },
                    urlencode(&scope)
                );
                if let Some(s) = service {
                    url.push_str(&format!("&service={}", urlencode(s)));
                }
                let mut request = self.http.get(url);
                if let Some(c) =
                    credential.filter(|c| !c.username.is_empty() || !c.password.is_empty())
                {
                    request = request.basic_auth(&c.username, Some(&c.password));
                }
                request
            }
        };
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.map_err(|e| {
            self.observe(registry, None);
            token_error(without_url(&e))
        })?;
        let status = response.status();
        self.observe(registry, Some(status.as_u16()));
        tracing::debug!(registry, status = status.as_u16(), "token request");
        if !status.is_success() {
            return Err(token_error(format!("HTTP {}", status.as_u16())));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| token_error(format!("unreadable token response: {}", without_url(&e))))?;
        let body: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| token_error(format!("unreadable token response: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_error("the response holds no token".into()))?;
        // Renew a little early; the spec's default lifetime is 60 s.
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60).max(10) - 5);
        Ok(CachedAuth {
            header: format!("Bearer {token}"),
            expires: Some(Instant::now() + lifetime),
        })
    }

    /// Sends a request, retrying transport errors, 429 and 502–504 with backoff that honours
    /// `Retry-After`.
    async fn send(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        authorization: Option<&str>,
        registry: &str,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .http
                .request(method.clone(), url)
                .header(ACCEPT, accept);
            if let Some(a) = authorization {
                request = request.header(AUTHORIZATION, a);
            }
            self.traffic.requests.fetch_add(1, Ordering::Relaxed);
            let result = request.send().await;
            self.observe(registry, result.as_ref().ok().map(|r| r.status().as_u16()));
            let wait = match &result {
                Ok(r) if retryable(r.status()) => {
                    Some(retry_after(r.headers()).unwrap_or_else(|| self.backoff(attempt)))
                }
                Ok(_) => None,
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    Some(self.backoff(attempt))
                }
                Err(_) => None,
            };
            match (&result, wait) {
                (Ok(r), _) => tracing::debug!(
                    registry,
                    url,
                    status = r.status().as_u16(),
                    "registry request"
                ),
                (Err(e), _) => {
                    tracing::debug!(registry, url, error = %without_url(e), "registry request failed")
                }
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
                    return result.map_err(|source| RegistryError::Transport {
                        what: what.to_string(),
                        source: source.without_url(),
                    });
                }
            }
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
    let when = httpdate(value)?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form servers send today.
fn httpdate(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

async fn error_for(response: Response, what: &str, registry: &str) -> RegistryError {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let detail = registry_error_detail(&body);
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
            let items: Vec<String> = e
                .errors
                .iter()
                .map(|i| {
                    let text = format!(
                        "{} {}",
                        i.code.as_deref().unwrap_or(""),
                        i.message.as_deref().unwrap_or("")
                    );
                    text.trim().chars().take(200).collect()
                })
                .collect();
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

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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
        assert_eq!(
            httpdate("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784111777))
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

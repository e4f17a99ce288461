//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one replica writes — as
//! client-go's `leaderelection` does it.
//!
//! - Timings (`LeaseTiming`, client-go's defaults): lease 15 s, renew deadline 10 s, retry
//!   period 2 s. The leader tries to renew every retry period; each attempt is bounded by the
//!   time left until its renew deadline.
//! - The leader steps down BEFORE its Lease can expire: the `Leadership` token every write checks
//!   is valid until the start of the last successful renew plus the renew deadline. Others wait
//!   at least the lease duration from when they saw that renew, so 5 s (lease − renew deadline)
//!   separate the leader's last possible write check from any take-over. When the deadline
//!   passes, `hold` returns and `run` ends with `LeaderLost`: the process exits and restarts as a
//!   standby.
//! - A candidate never compares the holder's `renewTime` with its own clock (clocks skew): it
//!   takes over only when the Lease record has not changed for the lease duration, measured on
//!   its own monotonic clock from when it OBSERVED the change.
//! - Standbys survive API errors: they log and retry every retry period, never exit.
//! - On graceful shutdown the leader releases the Lease (empty holder), so a standby takes over
//!   at its next attempt instead of waiting out the lease.
//!
//! Updates carry the Lease's resourceVersion, so two candidates can never both win: the API
//! server accepts only the first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its Pod name).
    pub identity: String,
    pub timing: LeaseTiming,
}

/// How long a Lease lasts, and how the leader keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long others wait, from when they saw the Lease change, before taking it over.
    pub duration: Duration,
    /// How long after its last successful renew the leader stops writing and steps down; less
    /// than `duration`.
    pub renew_deadline: Duration,
    /// Between attempts to renew (leader) or acquire (standby).
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    /// client-go's defaults.
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether this replica may write now: checked right before every report write and Event.
/// Cheap (one atomic load); valid until a deadline that only a successful renew extends.
#[derive(Clone, Debug)]
pub struct Leadership {
    since: Instant,
    /// Milliseconds after `since` until which writes are allowed; `u64::MAX` without election.
    until_ms: Arc<AtomicU64>,
}

impl Default for Leadership {
    /// Without election: the only replica always writes.
    fn default() -> Self {
        Leadership {
            since: Instant::now(),
            until_ms: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }
}

impl Leadership {
    /// Not allowed to write until `extend_to` is called.
    fn none() -> Self {
        let l = Leadership::default();
        l.until_ms.store(0, Ordering::Relaxed);
        l
    }

    /// Whether writes are allowed now.
    pub fn holds(&self) -> bool {
        let until = self.until_ms.load(Ordering::Relaxed);
        until == u64::MAX || (Instant::now() - self.since).as_millis() < u128::from(until)
    }

    fn extend_to(&self, deadline: Instant) {
        let ms = deadline.saturating_duration_since(self.since).as_millis();
        self.until_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX - 1), Ordering::Relaxed);
    }

    fn revoke(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
    }
}

/// Where the Lease is kept: the API server, or a fake in tests.
pub trait LeaseStore: Send + Sync {
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send;
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
    /// Replaces the Lease if its resourceVersion is still `lease`'s (else a 409 error).
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
}

/// The Lease on the API server.
pub struct ApiLeases {
    api: Api<Lease>,
    name: String,
}

impl LeaseStore for ApiLeases {
    async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        self.api.get_opt(&self.name).await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.api.create(&PostParams::default(), lease).await
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.api
            .replace(&self.name, &PostParams::default(), lease)
            .await
    }
}

/// The Lease record as last seen, and when (on this replica's monotonic clock).
struct Observed {
    resource_version: Option<String>,
    spec: Option<LeaseSpec>,
    at: Instant,
}

/// Holds or waits for the Lease.
pub struct Elector<S = ApiLeases> {
    store: S,
    config: LeaseConfig,
    observed: tokio::sync::Mutex<Option<Observed>>,
    leadership: Leadership,
}

impl Elector<ApiLeases> {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let store = ApiLeases {
            api: Api::namespaced(client, &config.namespace),
            name: config.name.clone(),
        };
        Elector::with_store(store, config)
    }
}

/// Why an attempt did not end with this replica holding the Lease.
enum Attempt {
    Held,
    HeldByOther,
    Failed(kube::Error),
}

impl<S: LeaseStore> Elector<S> {
    pub fn with_store(store: S, config: LeaseConfig) -> Self {
        Elector {
            store,
            config,
            observed: tokio::sync::Mutex::new(None),
            leadership: Leadership::none(),
        }
    }

    /// The token writes check; valid while this replica leads (see the module doc).
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Waits until this replica holds the Lease; API errors are logged and retried, never
    /// returned.
    pub async fn acquire(&self) {
        let t = self.config.timing;
        loop {
            let started = Instant::now();
            match self.attempt(t.renew_deadline).await {
                Attempt::Held => {
                    self.leadership.extend_to(started + t.renew_deadline);
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return;
                }
                Attempt::HeldByOther => {}
                Attempt::Failed(e) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "cannot read or take the lease; retrying")
                }
            }
            tokio::time::sleep(t.retry_period).await;
        }
    }

    /// Renews every retry period; returns, with writes already stopped, when the renew deadline
    /// passed without a successful renew or another replica took the Lease.
    pub async fn hold(&self) -> kube::Error {
        let t = self.config.timing;
        loop {
            let left = self.deadline_left(Instant::now());
            tokio::time::sleep(t.retry_period.min(left)).await;
            let started = Instant::now();
            let left = self.deadline_left(started);
            if left.is_zero() {
                self.leadership.revoke();
                return lost(&format!(
                    "lease {} not renewed within {:?}",
                    self.config.name, t.renew_deadline
                ));
            }
            match self.attempt(left).await {
                Attempt::Held => self.leadership.extend_to(started + t.renew_deadline),
                Attempt::HeldByOther => {
                    self.leadership.revoke();
                    return lost(&format!(
                        "lease {} was taken by another replica",
                        self.config.name
                    ));
                }
                Attempt::Failed(e) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "could not renew the lease; retrying")
                }
            }
        }
    }

    /// Stops writing and gives the Lease up (empty holder), so a standby takes over at once.
    /// Best effort, bounded by the retry period.
    pub async fn release(&self) {
        self.leadership.revoke();
        let release = async {
            let Some(mut lease) = self.store.get().await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.store.replace(&lease).await.map(drop)
        };
        match tokio::time::timeout(self.config.timing.retry_period, release).await {
            Ok(Ok(())) => tracing::info!(lease = %self.config.name, "lease released"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.config.name, error = %e, "cannot release the lease")
            }
            Err(_) => tracing::warn!(lease = %self.config.name, "releasing the lease timed out"),
        }
    }

    /// Time left until the leader must stop writing.
    fn deadline_left(&self, now: Instant) -> Duration {
        let until = self.leadership.until_ms.load(Ordering::Relaxed);
        let deadline = self.leadership.since + Duration::from_millis(until.min(u64::MAX - 1));
        deadline.saturating_duration_since(now)
    }

    /// One attempt, bounded by `timeout`: reads the Lease and creates, renews or takes it over.
    async fn attempt(&self, timeout: Duration) -> Attempt {
        match tokio::time::timeout(timeout, self.try_acquire_or_renew()).await {
            Ok(Ok(true)) => Attempt::Held,
            Ok(Ok(false)) => Attempt::HeldByOther,
            Ok(Err(e)) => Attempt::Failed(e),
            Err(_) => Attempt::Failed(lost(&format!("no answer within {timeout:?}"))),
        }
    }

    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let mut observed = self.observed.lock().await;
        let written = match self.store.get().await? {
            None => self.store.create(&self.new_lease(now)).await,
            Some(lease) => {
                let changed = observed.as_ref().is_none_or(|o| {
                    o.resource_version != lease.metadata.resource_version || o.spec != lease.spec
                });
                if changed {
                    *observed = Some(observe(&lease));
                }
                let since = observed.as_ref().map_or_else(Instant::now, |o| o.at);
                match self.taken_over(lease, since, now) {
                    // `replace` sends the resourceVersion read above: a concurrent writer gets 409.
                    Some(lease) => self.store.replace(&lease).await,
                    None => return Ok(false),
                }
            }
        };
        match written {
            Ok(lease) => {
                *observed = Some(observe(&lease));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn duration_secs(&self) -> i32 {
        self.config.timing.duration.as_secs() as i32
    }

    /// A Lease held by this replica from `now`.
    fn new_lease(&self, now: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.duration_secs()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        }
    }

    /// The existing Lease renewed (held by this replica) or taken over (free, or unchanged for
    /// its duration since `observed_at`), or `None` while another replica holds it.
    fn taken_over(&self, mut lease: Lease, observed_at: Instant, now: Timestamp) -> Option<Lease> {
        let me = &self.config.identity;
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let held_by_other = !holder.is_empty() && holder != *me && observed_at.elapsed() < duration;
        if held_by_other {
            return None;
        }
        if holder != *me {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me.clone());
        spec.lease_duration_seconds = Some(self.duration_secs());
        spec.renew_time = Some(MicroTime(now));
        Some(lease)
    }
}

fn observe(lease: &Lease) -> Observed {
    Observed {
        resource_version: lease.metadata.resource_version.clone(),
        spec: lease.spec.clone(),
        at: Instant::now(),
    }
}

fn lost(message: &str) -> kube::Error {
    kube::Error::Service(message.to_string().into())
}

#[cfg(test)]
mod tests;

//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one replica writes.
//!
//! A candidate takes the Lease when it is free or expired, and the holder renews it every
//! `renew` interval. Updates carry the Lease's resourceVersion, so two candidates can never both
//! win: the API server accepts only the first. A holder that fails to renew before the Lease
//! expires stops: it may no longer be the only writer.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its Pod name).
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
}

/// Holds or waits for the Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), kube::Error> {
        loop {
            if self.try_acquire().await? {
                tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                return Ok(());
            }
            tokio::time::sleep(self.config.renew).await;
        }
    }

    /// Renews forever; returns when leadership is lost.
    pub async fn hold(&self) -> kube::Error {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew).await;
            match self.try_acquire().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    return kube::Error::Service(
                        format!("lease {} was taken by another replica", self.config.name).into(),
                    );
                }
                Err(e) if last_renewal.elapsed() < self.config.duration => {
                    tracing::warn!(error = %e, "could not renew the lease; retrying");
                }
                Err(e) => return e,
            }
        }
    }

    /// One attempt: `true` when this replica holds the Lease afterwards.
    async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let written = match self.api.get_opt(&self.config.name).await? {
            None => {
                self.api
                    .create(&PostParams::default(), &self.new_lease(now))
                    .await
            }
            Some(lease) => match self.taken_over(lease, now) {
                // `replace` sends the resourceVersion read above: a concurrent writer gets 409.
                Some(lease) => {
                    self.api
                        .replace(&self.config.name, &PostParams::default(), &lease)
                        .await
                }
                None => return Ok(false),
            },
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn duration_secs(&self) -> i32 {
        self.config.duration.as_secs() as i32
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

    /// The existing Lease renewed (held by this replica) or taken over (free or expired), or
    /// `None` while another replica holds it.
    fn taken_over(&self, mut lease: Lease, now: Timestamp) -> Option<Lease> {
        let me = &self.config.identity;
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let expires = spec.renew_time.as_ref().map(|t| {
            t.0 + Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64)
        });
        let held_by_other = !holder.is_empty() && holder != *me && expires.is_some_and(|e| e > now);
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

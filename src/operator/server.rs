//! The HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (the watch caches are filled, or this replica stands by for the leader Lease).
//!
//! `/healthz` is cheap and fails only when the process cannot answer at all (wedged), so the
//! kubelet restarts it only then. `/readyz` also fails while any watch (Pods, ReplicaSets, Jobs,
//! Nodes) has been failing for longer than `WATCH_GRACE` — its caches are going stale, reports
//! may be wrong — and is ready again as soon as that watch delivers an event again. A short API
//! server restart therefore does not flap readiness; a lasting one (RBAC removed, API down) does.
//!
//! The server starts before anything else so that probes and scrapes answer while the operator
//! waits for leadership and fills its caches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::http::StatusCode;
use axum::routing::get;

use super::OperatorError;
use crate::metrics::Metrics;

/// How long a watch may keep failing before `/readyz` says not ready.
pub const WATCH_GRACE: Duration = Duration::from_secs(30);

/// What `/readyz` answers; starts not ready.
#[derive(Clone, Default)]
pub struct Readiness {
    started: Arc<AtomicBool>,
    pub watches: WatchHealth,
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.started.store(ready, Ordering::Relaxed);
    }

    /// `Ok` when ready, else why not.
    fn check(&self, now: Instant) -> Result<(), String> {
        if !self.started.load(Ordering::Relaxed) {
            return Err("starting".into());
        }
        let failing = self.watches.failing_longer_than(WATCH_GRACE, now);
        if failing.is_empty() {
            return Ok(());
        }
        Err(failing
            .iter()
            .map(|(resource, d)| format!("watch of {resource} failing for {}s", d.as_secs()))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// Since when each watch has been failing (watches that work are absent).
#[derive(Clone, Default)]
pub struct WatchHealth(Arc<Mutex<BTreeMap<&'static str, Instant>>>);

impl WatchHealth {
    /// The watch of `resource` failed: failing since now, unless it already was.
    pub fn failed(&self, resource: &'static str) {
        let mut failing = self.0.lock().expect("watch health lock");
        failing.entry(resource).or_insert_with(Instant::now);
    }

    /// The watch of `resource` delivered an event: it works.
    pub fn works(&self, resource: &'static str) {
        let mut failing = self.0.lock().expect("watch health lock");
        failing.remove(resource);
    }

    /// The watches failing for longer than `grace` at `now`, and for how long.
    pub fn failing_longer_than(
        &self,
        grace: Duration,
        now: Instant,
    ) -> Vec<(&'static str, Duration)> {
        let failing = self.0.lock().expect("watch health lock");
        failing
            .iter()
            .map(|(r, since)| (*r, now.saturating_duration_since(*since)))
            .filter(|(_, d)| *d > grace)
            .collect()
    }
}

/// Binds `addr` and serves the endpoints in the background; returns the readiness it reports.
pub async fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Readiness, OperatorError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OperatorError::Serve { addr, source })?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let readiness = Readiness::default();
    tokio::spawn(serve(listener, router(metrics, readiness.clone())));
    Ok(readiness)
}

fn router(metrics: Arc<Metrics>, readiness: Readiness) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let answer = match readiness.check(Instant::now()) {
                    Ok(()) => (StatusCode::OK, "ready".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                };
                async move { answer }
            }),
        )
}

async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn readiness_fails_only_while_a_watch_fails_for_longer_than_the_grace_period() {
        let readiness = Readiness::default();
        assert_eq!(readiness.check(Instant::now()), Err("starting".into()));
        readiness.set(true);
        assert_eq!(readiness.check(Instant::now()), Ok(()));

        let start = Instant::now();
        readiness.watches.failed("replicasets");
        tokio::time::advance(Duration::from_secs(20)).await;
        // Failing again keeps the first failure's time.
        readiness.watches.failed("replicasets");
        assert_eq!(readiness.check(start + WATCH_GRACE), Ok(()));
        let later = start + WATCH_GRACE + Duration::from_secs(1);
        assert_eq!(
            readiness.check(later),
            Err("watch of replicasets failing for 31s".into())
        );

        readiness.watches.works("replicasets");
        assert_eq!(readiness.check(later), Ok(()));
    }
}

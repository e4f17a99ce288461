//! The HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (the watch caches are filled, or this replica stands by for the leader Lease).
//!
//! The server starts before anything else so that probes and scrapes answer while the operator
//! waits for leadership and fills its caches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use axum::routing::get;

use super::OperatorError;
use crate::metrics::Metrics;

/// What `/readyz` answers; starts not ready.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
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
                let answer = if readiness.get() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
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

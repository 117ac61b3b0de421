//! The operations endpoint of a process: `/metrics` (Prometheus text) and
//! `/healthz`, served by axum on `listen.metrics`.

use axum::{Router, routing::get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::metrics;

pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(|| async { ([("content-type", "text/plain; version=0.0.4")], metrics().render()) }))
        .route("/healthz", get(|| async { "ok" }))
}

pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "ops endpoint listening");
    axum::serve(listener, router()).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}

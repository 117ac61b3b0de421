//! What every Blaze role needs, written once: configuration, telemetry and
//! metrics, the error model, the gRPC server bootstrap with its request
//! pipeline (request id, trace context, authorization, idempotency), clients
//! for calling other roles, and the request context handlers read.
//!
//! Nothing domain-specific lives here.

pub mod authz;
pub mod client;
pub mod config;
pub mod context;
pub mod egress;
pub mod error;
pub mod grpc;
pub mod idempotency;
pub mod metrics;
pub mod ops;
pub mod secrets;
pub mod telemetry;

pub use config::{Config, ConfigSource, Secret};
pub use context::RequestContext;
pub use error::{ApiError, ApiResult};
pub use tokio_util::sync::CancellationToken;

/// Spawn a named background task: logged when it ends, counted in metrics.
pub fn spawn_task<F>(name: &'static str, fut: F) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(
        async move {
            match fut.await {
                Ok(()) => {
                    tracing::debug!(task = name, "background task finished");
                    metrics::metrics().task_run(name, true);
                }
                Err(e) => {
                    tracing::error!(task = name, error = %e, "background task failed");
                    metrics::metrics().task_run(name, false);
                }
            }
        }
        .instrument(tracing::info_span!("task", name)),
    )
}

/// Protobuf timestamp of a UTC time, truncated to milliseconds so JSON
/// renders like JavaScript's `toISOString()`.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    let millis = t.timestamp_subsec_millis();
    prost_types::Timestamp { seconds: t.timestamp(), nanos: (millis * 1_000_000) as i32 }
}

/// Parse a uuid from a request field; malformed ids read as "not found".
pub fn parse_id(s: &str, reason: &'static str, what: &str) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::parse_str(s.trim()).map_err(|_| ApiError::not_found(reason, format!("{what} not found")))
}

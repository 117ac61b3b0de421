//! gRPC server bootstrap: one function every role uses.
//!
//! The request pipeline of a service, outermost first:
//! request span (request id, trace context, RED metrics) → gRPC-web →
//! authorization → idempotency → the service. Every server also answers
//! health (per service, driven by dependency checks) and reflection v1 and
//! v1alpha with the full descriptor set.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use blaze_auth::KeySet;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
};
use tonic_health::ServingStatus;
use tracing::Instrument;

use crate::{
    authz::AuthzLayer,
    context::REQUEST_ID,
    idempotency::{IdempotencyLayer, IdempotencyStore},
    metrics::{RpcLabels, metrics},
    telemetry,
};

/// Largest gRPC message a server or client accepts (file lists with content).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// An async readiness check of a dependency (database, Redis, …).
pub type HealthCheck = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// Security of a server: the key set that verifies tokens, and the
/// idempotency store (absent = keys are ignored).
#[derive(Clone)]
pub struct Security {
    pub keys: Arc<KeySet>,
    pub idempotency: Option<Arc<dyn IdempotencyStore>>,
}

pub struct GrpcServer {
    role: &'static str,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    checks: Vec<HealthCheck>,
}

impl GrpcServer {
    pub fn new(role: &'static str) -> Self {
        GrpcServer { role, routes: RoutesBuilder::default(), names: Vec::new(), checks: Vec::new() }
    }

    /// Add a generated tonic service.
    pub fn service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible> + NamedService + Clone + Send + Sync + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Report NOT_SERVING while this check fails.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.checks.push(check);
        self
    }

    pub async fn serve(self, listener: TcpListener, security: Security, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(blaze_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(blaze_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let mut routes = self.routes.routes();
        routes = routes.add_service(health).add_service(reflection_v1).add_service(reflection_v1alpha);
        let routes: Routes = routes;

        // Health follows the dependency checks until shutdown.
        let names = self.names.clone();
        let checks = self.checks.clone();
        let role = self.role;
        let health_shutdown = shutdown.clone();
        tokio::spawn(
            async move {
                let mut last = None;
                loop {
                    let mut ok = true;
                    for check in &checks {
                        ok &= check().await;
                    }
                    if last != Some(ok) {
                        let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
                        for name in names.iter().copied().chain([""]) {
                            reporter.set_service_status(name, status).await;
                        }
                        if last.is_some() {
                            tracing::warn!(role, healthy = ok, "health changed");
                        }
                        last = Some(ok);
                    }
                    tokio::select! {
                        _ = health_shutdown.cancelled() => {
                            for name in names.iter().copied().chain([""]) {
                                reporter.set_service_status(name, ServingStatus::NotServing).await;
                            }
                            break;
                        }
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
            .instrument(tracing::info_span!("health", role)),
        );

        let addr = listener.local_addr()?;
        tracing::info!(role, %addr, services = ?self.names, "gRPC server listening");
        tonic::transport::Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(RequestSpanLayer { role })
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(AuthzLayer::new(security.keys.clone()))
            .layer(OptionalIdempotencyLayer(security.idempotency.clone().map(IdempotencyLayer::new)))
            .add_routes(routes)
            // Without TCP_NODELAY a unary answer (headers, data, trailers in
            // separate writes) waits out the peer's delayed ACK: ~40 ms each.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown.cancelled_owned(),
            )
            .await?;
        tracing::info!(role, "gRPC server stopped");
        Ok(())
    }
}

/// Idempotency only where a store is configured.
#[derive(Clone)]
struct OptionalIdempotencyLayer(Option<IdempotencyLayer>);

impl<S> tower::Layer<S> for OptionalIdempotencyLayer {
    type Service = tower::util::Either<crate::idempotency::Idempotency<S>, S>;
    fn layer(&self, inner: S) -> Self::Service {
        match &self.0 {
            Some(l) => tower::util::Either::Left(tower::Layer::layer(l, inner)),
            None => tower::util::Either::Right(inner),
        }
    }
}

/// Request id, trace context and RED metrics for every RPC.
#[derive(Clone)]
pub struct RequestSpanLayer {
    role: &'static str,
}

impl<S> tower::Layer<S> for RequestSpanLayer {
    type Service = RequestSpan<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestSpan { inner, role: self.role }
    }
}

#[derive(Clone)]
pub struct RequestSpan<S> {
    inner: S,
    role: &'static str,
}

impl<S, B> tower::Service<http::Request<Body>> for RequestSpan<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let role = self.role;
        let path = req.uri().path().to_owned();
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if let Ok(v) = http::HeaderValue::from_str(&request_id) {
            req.headers_mut().insert("x-request-id", v);
        }
        let span = tracing::info_span!("rpc", role, rpc = %path, request_id = %request_id);
        telemetry::set_parent_from_headers(&span, req.headers());
        Box::pin(REQUEST_ID.scope(request_id.clone(), async move {
            let start = Instant::now();
            let result = inner.call(req).instrument(span).await;
            if let Ok(resp) = &result {
                let code = resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(|c| format!("{:?}", tonic::Code::from(c)))
                    .unwrap_or_else(|| "Ok".into());
                let labels = RpcLabels { role: role.into(), rpc: path, code };
                metrics().rpc_requests.get_or_create(&labels).inc();
                metrics().rpc_seconds.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
            }
            result
        }))
    }
}

/// Bind a TCP listener (`host:0` picks a free port).
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

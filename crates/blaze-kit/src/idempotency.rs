//! `Idempotency-Key` for mutating RPCs (DESIGN §5.4), as a tower layer.
//!
//! The edge forwards the header as `idempotency-key` metadata. For a unary
//! RPC declared `mutates`, the layer claims `(organisation or user, key)` with
//! a fingerprint of the request: the first request runs, a repeat with the
//! same fingerprint gets the stored response, a repeat with another
//! fingerprint gets `409 IDEMPOTENCY_KEY_REUSED`, and concurrent duplicates
//! wait for the first one. Only successful responses are stored: a failed
//! request changed nothing, so a retry may run again.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use blaze_proto::catalog::Catalog;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::{Status, body::Body};

use crate::{context::RequestContext, error::ApiError};

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_LEN: usize = 200;
const WAIT_STEP: Duration = Duration::from_millis(25);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A stored successful gRPC response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

pub enum Claim {
    /// First request with this key: run it.
    Acquired,
    /// Another request with this key is running.
    InProgress,
    /// Done before with the same fingerprint.
    Done(StoredResponse),
    /// Done or running with a different fingerprint.
    Mismatch,
}

#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    async fn claim(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Claim, ApiError>;
    async fn complete(&self, scope: &str, key: &str, fingerprint: &str, response: &StoredResponse) -> Result<(), ApiError>;
    async fn release(&self, scope: &str, key: &str);
}

#[derive(Clone)]
pub struct IdempotencyLayer {
    store: Arc<dyn IdempotencyStore>,
}

impl IdempotencyLayer {
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        IdempotencyLayer { store }
    }
}

impl<S> tower::Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Idempotency { inner, store: self.store.clone() }
    }
}

#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    store: Arc<dyn IdempotencyStore>,
}

fn grpc_ok(headers: &http::HeaderMap, trailers: Option<&http::HeaderMap>) -> bool {
    let status = trailers.and_then(|t| t.get("grpc-status")).or_else(|| headers.get("grpc-status"));
    status.is_some_and(|v| v.as_bytes() == b"0")
}

fn replay(stored: StoredResponse) -> http::Response<Body> {
    let mut trailers = http::HeaderMap::new();
    for (k, v) in stored.trailers {
        if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(k), http::HeaderValue::try_from(v)) {
            trailers.append(k, v);
        }
    }
    let frames =
        vec![Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(stored.body))), Ok(http_body::Frame::trailers(trailers))];
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    http::Response::builder()
        .header("content-type", "application/grpc")
        .header("idempotent-replayed", "true")
        .body(Body::new(body))
        .expect("static response")
}

impl<S> tower::Service<http::Request<Body>> for Idempotency<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        Box::pin(async move {
            let key = req.headers().get(HEADER).and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned);
            let spec = Catalog::global().method(req.uri().path());
            let (Some(key), Some(spec)) = (key, spec) else { return inner.call(req).await };
            if !spec.access.mutates || spec.is_streaming() {
                return inner.call(req).await;
            }
            if key.len() > MAX_KEY_LEN {
                return Ok(Status::from(ApiError::invalid("Idempotency-Key is too long")).into_http());
            }
            let ctx = req.extensions().get::<RequestContext>().cloned();
            let scope = match &ctx {
                Some(c) => match (&c.tenant, c.user_id()) {
                    (Some(t), _) => format!("org:{}", t.org_id),
                    (None, Ok(u)) => format!("user:{u}"),
                    (None, Err(_)) => "service".to_owned(),
                },
                None => "anonymous".to_owned(),
            };
            let (parts, body) = req.into_parts();
            let bytes = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => return Ok(Status::from(ApiError::invalid("Unreadable request body")).into_http()),
            };
            let mut hasher = Sha256::new();
            hasher.update(parts.uri.path().as_bytes());
            hasher.update([0]);
            if let Some(Ok(u)) = ctx.as_ref().map(|c| c.user_id()) {
                hasher.update(u.as_bytes());
            }
            hasher.update([0]);
            hasher.update(&bytes);
            let fingerprint = hex::encode(hasher.finalize());

            let started = std::time::Instant::now();
            loop {
                match store.claim(&scope, &key, &fingerprint).await {
                    Ok(Claim::Acquired) => break,
                    Ok(Claim::Done(stored)) => return Ok(replay(stored)),
                    Ok(Claim::Mismatch) => {
                        return Ok(Status::from(ApiError::conflict(
                            "IDEMPOTENCY_KEY_REUSED",
                            "Idempotency-Key was already used with a different request",
                        ))
                        .into_http());
                    }
                    Ok(Claim::InProgress) if started.elapsed() < MAX_WAIT => tokio::time::sleep(WAIT_STEP).await,
                    Ok(Claim::InProgress) => {
                        return Ok(Status::from(ApiError::conflict(
                            "IDEMPOTENCY_KEY_IN_PROGRESS",
                            "A request with this Idempotency-Key is still running",
                        ))
                        .into_http());
                    }
                    Err(e) => {
                        // Without the store we can not deduplicate; failing
                        // closed would turn a Redis outage into an outage of
                        // every write, so run the request and say so.
                        tracing::warn!(error = %e, "idempotency store unavailable; running request without deduplication");
                        let req = http::Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
                        return inner.call(req).await;
                    }
                }
            }

            let req = http::Request::from_parts(parts, Body::new(http_body_util::Full::new(bytes)));
            let resp = inner.call(req).await?;
            let (rparts, rbody) = resp.into_parts();
            let collected = match rbody.collect().await {
                Ok(c) => c,
                Err(e) => {
                    store.release(&scope, &key).await;
                    return Ok(Status::from_error(Box::new(e)).into_http());
                }
            };
            let trailers = collected.trailers().cloned();
            let data = collected.to_bytes();
            if grpc_ok(&rparts.headers, trailers.as_ref()) {
                let stored = StoredResponse {
                    body: data.to_vec(),
                    trailers: trailers
                        .iter()
                        .flat_map(|t| t.iter())
                        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
                        .collect(),
                };
                if let Err(e) = store.complete(&scope, &key, &fingerprint, &stored).await {
                    tracing::warn!(error = %e, "could not store idempotent response");
                }
            } else {
                store.release(&scope, &key).await;
            }
            let mut frames = vec![Ok::<_, std::convert::Infallible>(http_body::Frame::data(data))];
            if let Some(t) = trailers {
                frames.push(Ok(http_body::Frame::trailers(t)));
            }
            let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
            Ok(http::Response::from_parts(rparts, Body::new(body)))
        })
    }
}

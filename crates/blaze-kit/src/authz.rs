//! Per-RPC authorization as a tower layer (a tonic interceptor can not see
//! the method path on the server side).
//!
//! For every RPC in the catalogue: verify the internal biscuit in
//! `authorization`, read the tenant the request names (`org_id` /
//! `workspace_id` fields, decoded from the gRPC frame with the method's
//! descriptor), compare the caller's role there with the RPC's declared
//! minimum role, and insert a [`RequestContext`]. Health and reflection are
//! public. Service tokens may call anything; user tokens never call internal
//! RPCs.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use blaze_auth::{AccessError, Caller, KeySet, TokenError, tokens};
use blaze_proto::{
    catalog::{Catalog, MethodSpec},
    options::Scope,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use prost_reflect::DynamicMessage;
use tonic::{Status, body::Body};

use crate::{context::RequestContext, error::ApiError};

/// Largest request the layer buffers to read the tenant fields.
const MAX_BUFFERED: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct AuthzLayer {
    keys: Arc<KeySet>,
}

impl AuthzLayer {
    pub fn new(keys: Arc<KeySet>) -> Self {
        AuthzLayer { keys }
    }
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authz { inner, keys: self.keys.clone() }
    }
}

#[derive(Clone)]
pub struct Authz<S> {
    inner: S,
    keys: Arc<KeySet>,
}

pub(crate) fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::OrgNotFound => ApiError::not_found("ORG_NOT_FOUND", "Organization not found"),
        AccessError::WorkspaceNotFound => ApiError::not_found("WORKSPACE_NOT_FOUND", "Workspace not found"),
        AccessError::Forbidden(m) => ApiError::forbidden(m),
        AccessError::Unauthenticated => ApiError::unauthenticated("Missing Authorization Bearer token"),
        AccessError::InternalOnly => ApiError::forbidden("This operation is internal"),
    }
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Expired => ApiError::unauthenticated("JWT is expired"),
        TokenError::Revoked => ApiError::unauthenticated("Token has been revoked"),
        TokenError::Invalid(m) => {
            tracing::warn!(reason = %m, "rejected internal token");
            ApiError::unauthenticated("Invalid token")
        }
    }
}

/// Decode the (single) length-prefixed gRPC message of a unary or
/// server-streaming request.
fn decode_frame(spec: &MethodSpec, body: &[u8]) -> Result<DynamicMessage, ApiError> {
    if body.len() < 5 {
        return Ok(DynamicMessage::new(spec.descriptor.input()));
    }
    if body[0] != 0 {
        return Err(ApiError::invalid("Compressed requests are not supported"));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let payload = body.get(5..5 + len).ok_or_else(|| ApiError::invalid("Truncated gRPC frame"))?;
    DynamicMessage::decode(spec.descriptor.input(), payload).map_err(|e| ApiError::invalid(format!("Invalid payload: {e}")))
}

fn string_field(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The access decision for one request (pure, tested without a server).
pub fn decide(keys: &KeySet, spec: &MethodSpec, bearer: Option<&str>, body: &[u8]) -> Result<RequestContext, ApiError> {
    let caller = match bearer {
        Some(token) => Some(tokens::verify_internal(keys, token).map_err(token_error)?),
        None => None,
    };
    let scope = spec.scope();
    let request_id = match &caller {
        Some(Caller::User { request_id: Some(r), .. }) => r.clone(),
        _ => String::new(),
    };
    let tenant = match (&caller, scope) {
        (_, Scope::Public) => None,
        (None, _) => return Err(access_error(AccessError::Unauthenticated)),
        (Some(Caller::Service { .. }), _) => None,
        (Some(Caller::User { principal, .. }), scope) => {
            let (org, ws) = if matches!(scope, Scope::Organization | Scope::Workspace) {
                let msg = decode_frame(spec, body)?;
                (string_field(&msg, "org_id"), string_field(&msg, "workspace_id"))
            } else {
                (String::new(), String::new())
            };
            principal.authorize(scope, spec.min_role(), &org, &ws).map_err(access_error)?
        }
    };
    Ok(RequestContext { request_id, caller, tenant })
}

impl<S> tower::Service<http::Request<Body>> for Authz<S>
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
        let keys = self.keys.clone();
        Box::pin(async move {
            let Some(spec) = Catalog::global().method(req.uri().path()) else {
                // health, reflection: public, no context
                return inner.call(req).await;
            };
            let bearer = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(|s| s.trim().to_owned());
            let (parts, body) = req.into_parts();
            let needs_body = matches!(spec.scope(), Scope::Organization | Scope::Workspace) && bearer.is_some();
            let (bytes, body) = if needs_body {
                match http_body_util::Limited::new(body, MAX_BUFFERED).collect().await {
                    Ok(c) => {
                        let bytes = c.to_bytes();
                        (bytes.clone(), Body::new(http_body_util::Full::new(bytes)))
                    }
                    Err(_) => return Ok(Status::from(ApiError::too_large("Request too large")).into_http()),
                }
            } else {
                (Bytes::new(), body)
            };
            let mut ctx = match decide(&keys, spec, bearer.as_deref(), &bytes) {
                Ok(ctx) => ctx,
                Err(e) => return Ok(Status::from(e).into_http()),
            };
            if ctx.request_id.is_empty() {
                ctx.request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            }
            let mut req = http::Request::from_parts(parts, body);
            req.extensions_mut().insert(ctx);
            inner.call(req).await
        })
    }
}

//! The edge's request pipeline, in order: request id → CORS → operational
//! endpoints → gRPC pass-through or HTTP transcoding (route → body → request
//! message → authentication + rate limit → upstream call → JSON or SSE).
//! Route-specific knowledge comes only from the descriptors.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use blaze_kit::{
    ApiError, Config,
    metrics::{RouteLabels, metrics},
};
use blaze_proto::{
    catalog::{Catalog, MethodSpec},
    options::Scope,
};
use blaze_redis::gate::GateResult;
use bytes::Bytes;
use futures::StreamExt;
use pingora_core::{
    Error, ErrorType, Result,
    modules::http::{
        HttpModules,
        grpc_web::{GrpcWeb, GrpcWebBridge},
    },
    upstreams::peer::HttpPeer,
};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use prost_reflect::{DynamicMessage, ReflectMessage};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic_types::StatusExt;

use crate::{
    auth::{AuthError, Authenticated, Authenticator},
    json::{self, BuildError, RequestParts},
    respond,
    routes::{Lookup, Route, RouteTable},
    upstream::{self, Upstreams},
};

pub struct EdgeState {
    pub cfg: Arc<Config>,
    pub catalog: &'static Catalog,
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    pub auth: Authenticator,
    pub openapi: Bytes,
    pub readiness: crate::readiness::Readiness,
    pub hosts: crate::hosts::Hosts,
}

pub struct Edge(pub Arc<EdgeState>);

#[derive(Default)]
pub struct Ctx {
    pub request_id: String,
    pub started: Option<Instant>,
    pub route: String,
    pub grpc_role: Option<&'static str>,
    pub internal_token: Option<String>,
    pub cors_origin: Option<String>,
    pub gate: Option<GateResult>,
    pub status: u16,
    /// `unix:/path` or `http://host:port` of the preview this request goes to.
    pub preview_upstream: Option<String>,
    /// The preview's id and token.
    pub preview: Option<(String, String)>,
}

const CORS_HEADERS: &str = "Content-Type, Authorization, X-Blaze-Channel, x-blaze-dev-user-sub, x-blaze-dev-user-email, x-blaze-dev-user-name, Idempotency-Key, Last-Event-ID, X-Request-Id, traceparent, tracestate, x-grpc-web, x-user-agent, grpc-timeout";

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn is_grpc(req: &RequestHeader) -> bool {
    header(req, "content-type").is_some_and(|ct| ct.starts_with("application/grpc"))
}

fn valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Map an upstream status to the contract's HTTP error. Statuses without
/// `ErrorInfo` come from transport failures: their text is not for users.
fn status_error(status: &tonic::Status) -> (u16, String, String, Option<Duration>) {
    let e = ApiError::from_status(status);
    let has_info = status.get_details_error_info().is_some();
    let (message, code) = if has_info {
        (e.message.clone(), e.reason.to_string())
    } else {
        match status.code() {
            tonic::Code::Unavailable => ("Upstream service unavailable".into(), "UPSTREAM_UNAVAILABLE".into()),
            tonic::Code::DeadlineExceeded => ("Upstream service timed out".into(), "UPSTREAM_TIMEOUT".into()),
            tonic::Code::Cancelled => ("Request cancelled".into(), "CANCELLED".into()),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::NotFound | tonic::Code::InvalidArgument => {
                (status.message().to_owned(), e.reason.to_string())
            }
            _ => {
                tracing::warn!(code = ?status.code(), message = status.message(), "upstream error without details");
                ("Internal error".into(), "INTERNAL".into())
            }
        }
    };
    (e.http_status(), message, code, e.retry_after)
}

impl Edge {
    fn cors_origin(&self, req: &RequestHeader) -> Option<String> {
        let origin = header(req, "origin")?;
        let allowed = &self.0.cfg.edge.cors_origins;
        if allowed.iter().any(|o| o == "*") {
            Some("*".into())
        } else if allowed.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            Some(origin.to_owned())
        } else {
            None
        }
    }

    async fn auth_error(&self, session: &mut Session, ctx: &mut Ctx, e: AuthError, grpc: bool) -> Result<bool> {
        let (status, code, message, retry) = match e {
            AuthError::Expired(m) => (401, "UNAUTHORIZED", m, None),
            AuthError::Unauthorized(m) => (401, "UNAUTHORIZED", m, None),
            AuthError::RateLimited(g) => {
                let retry = ((g.retry_after_ms + 999) / 1000).max(1);
                ctx.gate = Some(g);
                (429, "RATE_LIMITED", "Too many requests".to_owned(), Some(retry))
            }
            AuthError::Unavailable(m) => (503, "UNAVAILABLE", m, None),
        };
        // Read what the client is still sending before refusing it: an unread
        // body makes pingora close the connection, and a client still writing
        // then sees a reset instead of this answer. Bounded, since the sender
        // is not trusted.
        let _ = tokio::time::timeout(Duration::from_secs(2), session.drain_request_body()).await;
        if grpc {
            let code = match status {
                401 => tonic::Code::Unauthenticated,
                429 => tonic::Code::ResourceExhausted,
                _ => tonic::Code::Unavailable,
            };
            return respond::grpc_error(session, ctx, code, &message).await;
        }
        let extra: Vec<(&str, String)> = retry.map(|r| vec![("retry-after", r.to_string())]).unwrap_or_default();
        respond::send(session, ctx, status, Some("application/json"), respond::error_json(&message, code), &extra).await
    }

    async fn operational(&self, session: &mut Session, ctx: &mut Ctx, path: &str) -> Result<Option<bool>> {
        Ok(Some(match path {
            "/healthz" => respond::send(session, ctx, 200, Some("text/plain"), Bytes::from_static(b"ok"), &[]).await?,
            "/readyz" => {
                let (ready, body) = self.0.readiness.check(&self.0.upstreams).await;
                respond::json(session, ctx, if ready { 200 } else { 503 }, body).await?
            }
            "/metrics" => respond::send(session, ctx, 200, Some("text/plain; version=0.0.4"), Bytes::from(metrics().render()), &[]).await?,
            "/openapi.json" => respond::json(session, ctx, 200, self.0.openapi.clone()).await?,
            _ => return Ok(None),
        }))
    }

    async fn read_body(&self, session: &mut Session) -> std::result::Result<Vec<u8>, u16> {
        let max = self.0.cfg.edge.max_body_bytes;
        if let Some(len) = header(session.req_header(), "content-length").and_then(|v| v.parse::<usize>().ok())
            && len > max
        {
            return Err(413);
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > max {
                        return Err(413);
                    }
                }
                Ok(None) => return Ok(body),
                Err(_) => return Err(400),
            }
        }
    }

    fn metadata(&self, session: &Session, ctx: &Ctx, spec: &MethodSpec, token: Option<&str>) -> MetadataMap {
        let req = session.req_header();
        let mut md = MetadataMap::new();
        if let Some(t) = token
            && let Ok(v) = MetadataValue::try_from(format!("Bearer {t}"))
        {
            md.insert("authorization", v);
        }
        if let Ok(v) = MetadataValue::try_from(ctx.request_id.as_str()) {
            md.insert("x-request-id", v);
        }
        if spec.access.mutates
            && let Some(key) = header(req, "idempotency-key")
            && let Ok(v) = MetadataValue::try_from(key.trim())
        {
            md.insert("idempotency-key", v);
        }
        blaze_kit::telemetry::inject_metadata(&mut md);
        if !md.contains_key("traceparent") {
            for h in ["traceparent", "tracestate"] {
                if let Some(v) = header(req, h).and_then(|v| MetadataValue::try_from(v).ok()) {
                    md.insert(h, v);
                }
            }
        }
        md
    }

    async fn authenticate(
        &self,
        session: &Session,
        spec: &MethodSpec,
        org_hint: Option<&str>,
    ) -> std::result::Result<Option<Authenticated>, AuthError> {
        if spec.scope() == Scope::Public {
            return Ok(None);
        }
        self.0.auth.authenticate(&session.req_header().headers, org_hint).await.map(Some)
    }

    async fn transcode(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_owned();
        let query: Vec<(String, String)> =
            req.uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let (route, params): (Route, BTreeMap<String, String>) = match self.0.routes.lookup(&method, &path) {
            Lookup::Found(r, p) => (r.clone(), p),
            Lookup::MethodNotAllowed(allowed) => {
                ctx.route = "method-not-allowed".into();
                let allow = allowed.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
                return respond::send(
                    session,
                    ctx,
                    405,
                    Some("application/json"),
                    respond::error_json("Method not allowed", "METHOD_NOT_ALLOWED"),
                    &[("allow", allow)],
                )
                .await;
            }
            Lookup::NotFound => {
                ctx.route = "not-found".into();
                return respond::error(session, ctx, 404, "Not found", "NOT_FOUND").await;
            }
        };
        ctx.route = format!("{} {}", route.method, route.binding.template);
        let spec = route.rpc.clone();

        let body = match self.read_body(session).await {
            Ok(b) => b,
            Err(413) => {
                session.set_keepalive(None);
                let max = self.0.cfg.edge.max_body_bytes;
                return respond::error(session, ctx, 413, &format!("Request body exceeds {max} bytes"), "PAYLOAD_TOO_LARGE").await;
            }
            Err(_) => return respond::error(session, ctx, 400, "Unreadable request body", "INVALID_PAYLOAD").await,
        };
        let headers: Vec<(String, String)> = spec
            .header_bindings
            .iter()
            .filter_map(|h| header(session.req_header(), &h.header).map(|v| (h.field.clone(), v.trim().to_owned())))
            .collect();
        let msg = match json::build_request(&route, RequestParts { path_params: &params, query: &query, body: &body, headers: &headers }) {
            Ok(m) => m,
            Err(BuildError::Invalid(m)) => return respond::error(session, ctx, 400, &m, "INVALID_PAYLOAD").await,
            Err(BuildError::NotFound) => return respond::error(session, ctx, 404, "Not found", "NOT_FOUND").await,
        };

        let auth = match self.authenticate(session, &spec, params.get("org_id").map(String::as_str)).await {
            Ok(a) => a,
            Err(e) => return self.auth_error(session, ctx, e, false).await,
        };
        ctx.gate = auth.as_ref().and_then(|a| a.gate.clone());
        let token = auth.as_ref().map(|a| self.0.auth.request_token(a, &ctx.request_id));
        let md = self.metadata(session, ctx, &spec, token.as_deref());
        let role = Upstreams::role_for_path(&spec.path);
        let channel = self.0.upstreams.channel(role);

        if spec.is_streaming() {
            return self.sse(session, ctx, &spec, channel, msg, md).await;
        }
        let timeout = Duration::from_millis(self.0.cfg.edge.upstream_timeout_ms);
        match upstream::unary(channel, &spec, msg, md, timeout).await {
            Ok(out) => {
                if spec.access.changes_memberships
                    && let Some(a) = &auth
                {
                    self.0.auth.invalidate(&a.cache_key);
                }
                if json::is_empty_message(&out.descriptor()) {
                    respond::send(session, ctx, 204, None, Bytes::new(), &[]).await
                } else {
                    let body = Bytes::from(json::to_json(&out, self.0.catalog).to_string());
                    respond::json(session, ctx, 200, body).await
                }
            }
            Err(status) => {
                let (code, message, reason, retry) = status_error(&status);
                let extra: Vec<(&str, String)> = retry.map(|r| vec![("retry-after", r.as_secs().max(1).to_string())]).unwrap_or_default();
                respond::send(session, ctx, code, Some("application/json"), respond::error_json(&message, &reason), &extra).await
            }
        }
    }

    fn sse_frame(&self, spec: &MethodSpec, msg: &DynamicMessage) -> Bytes {
        let sse = spec.sse.as_ref();
        let id = sse
            .filter(|s| !s.event_id_field.is_empty())
            .and_then(|s| msg.get_field_by_name(&s.event_id_field))
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let case = msg.descriptor().fields().find(|f| msg.has_field(f) && self.0.catalog.sse_event(f).is_some());
        let (event, data) = match case {
            Some(f) => {
                let data = match msg.get_field(&f).as_message() {
                    Some(m) => json::to_json(m, self.0.catalog),
                    None => serde_json::Value::Null,
                };
                (self.0.catalog.sse_event(&f).unwrap_or("message").to_owned(), data)
            }
            None => ("message".to_owned(), json::to_json(msg, self.0.catalog)),
        };
        let mut frame = String::with_capacity(64);
        if !id.is_empty() {
            frame.push_str("id: ");
            frame.push_str(&id);
            frame.push('\n');
        }
        frame.push_str("event: ");
        frame.push_str(&event);
        frame.push_str("\ndata: ");
        frame.push_str(&data.to_string());
        frame.push_str("\n\n");
        Bytes::from(frame)
    }

    /// A request for a preview host: check the token, then proxy.
    async fn preview(&self, session: &mut Session, ctx: &mut Ctx, id: &str, token: &str) -> Result<bool> {
        ctx.route = "preview".into();
        match self.0.hosts.preview(id, token).await {
            Ok(Some(r)) if !r.upstream.is_empty() => {
                ctx.preview_upstream = Some(r.upstream);
                ctx.preview = Some((id.to_owned(), token.to_owned()));
                Ok(false)
            }
            Ok(_) => respond::error(session, ctx, 404, "This preview is not running", "PREVIEW_NOT_FOUND").await,
            Err(status) => {
                tracing::warn!(error = %status.message(), "resolving a preview failed");
                respond::error(session, ctx, 503, "Previews are unavailable", "UNAVAILABLE").await
            }
        }
    }

    /// A request for an app host: the live deployment's files.
    async fn deployed_app(&self, session: &mut Session, ctx: &mut Ctx, label: &str) -> Result<bool> {
        ctx.route = "app".into();
        let req = session.req_header();
        let head = req.method == http::Method::HEAD;
        if req.method != http::Method::GET && !head {
            return respond::error(session, ctx, 405, "Method not allowed", "METHOD_NOT_ALLOWED").await;
        }
        let raw = req.uri.path().trim_start_matches('/').to_owned();
        let deployment = match self.0.hosts.deployment(label).await {
            Ok(Some(d)) => d,
            Ok(None) => return respond::error(session, ctx, 404, "Nothing is deployed at this address", "DEPLOYMENT_NOT_FOUND").await,
            Err(status) => {
                tracing::warn!(error = %status.message(), "resolving a deployment failed");
                return respond::error(session, ctx, 503, "Deployments are unavailable", "UNAVAILABLE").await;
            }
        };
        let decoded = percent_decode(&raw);
        let path = if decoded.is_empty() || decoded.ends_with('/') { format!("{decoded}index.html") } else { decoded };
        if path.split('/').any(|seg| seg == ".." || seg.is_empty()) {
            return respond::error(session, ctx, 404, "Not found", "NOT_FOUND").await;
        }
        let mut served = path.clone();
        let mut content = self.0.hosts.file(&deployment, &path).await;
        if matches!(content, Ok(None)) && !path.rsplit('/').next().unwrap_or_default().contains('.') {
            // a client-side route of a single page app
            served = "index.html".into();
            content = self.0.hosts.file(&deployment, &served).await;
        }
        match content {
            Ok(Some(body)) => {
                let extra = [("cache-control", crate::hosts::cache_control(&served).to_owned())];
                let body = if head { Bytes::new() } else { body };
                respond::send(session, ctx, 200, Some(crate::hosts::content_type(&served)), body, &extra).await
            }
            Ok(None) => respond::error(session, ctx, 404, "Not found", "NOT_FOUND").await,
            Err(status) => {
                tracing::warn!(error = %status.message(), "reading a deployed file failed");
                respond::error(session, ctx, 503, "Deployments are unavailable", "UNAVAILABLE").await
            }
        }
    }

    async fn sse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        spec: &MethodSpec,
        channel: tonic::transport::Channel,
        msg: DynamicMessage,
        md: MetadataMap,
    ) -> Result<bool> {
        // Errors before the first event are plain HTTP errors (e.g. 409 when
        // the chat already streams): no SSE byte has been sent yet.
        let mut stream = match upstream::server_streaming(channel, spec, msg, md).await {
            Ok(s) => s,
            Err(status) => {
                let (code, message, reason, retry) = status_error(&status);
                let extra: Vec<(&str, String)> = retry.map(|r| vec![("retry-after", r.as_secs().max(1).to_string())]).unwrap_or_default();
                return respond::send(session, ctx, code, Some("application/json"), respond::error_json(&message, &reason), &extra).await;
            }
        };
        let mut resp = ResponseHeader::build(200, Some(8))?;
        resp.insert_header("content-type", "text/event-stream")?;
        resp.insert_header("cache-control", "no-cache")?;
        resp.insert_header("x-accel-buffering", "no")?;
        // without content-length or chunked, pingora's HTTP/1 writer would
        // fall back to close-delimited bodies (h2 strips this header)
        resp.insert_header("transfer-encoding", "chunked")?;
        respond::common_headers(&mut resp, ctx)?;
        ctx.status = 200;
        session.write_response_header(Box::new(resp), false).await?;
        metrics().sse_streams_open.inc();
        let heartbeat_every = Duration::from_secs(self.0.cfg.edge.sse_heartbeat_secs.max(1));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
        let error_event = spec.sse.as_ref().map(|s| s.error_event.clone()).filter(|e| !e.is_empty()).unwrap_or_else(|| "error".into());
        let mut first = true;
        let outcome: Result<()> = loop {
            let next = tokio::select! {
                item = stream.next() => Some(item),
                _ = heartbeat.tick() => None,
                // resolves when the client goes away; dropping `stream`
                // then resets the upstream call (RST_STREAM)
                _ = session.downstream_session.read_body_or_idle(true) => break Ok(()),
            };
            let frame = match next {
                None => Bytes::from_static(b": ping\n\n"),
                Some(Some(Ok(msg))) => {
                    if first {
                        first = false;
                        if let Some(t) = ctx.started {
                            metrics().first_event_seconds.observe(t.elapsed().as_secs_f64());
                        }
                    }
                    self.sse_frame(spec, &msg)
                }
                Some(Some(Err(status))) => {
                    let (_, message, reason, _) = status_error(&status);
                    let data = serde_json::json!({"error": message, "code": reason});
                    let _ = session.write_response_body(Some(Bytes::from(format!("event: {error_event}\ndata: {data}\n\n"))), false).await;
                    break Ok(());
                }
                Some(None) => break Ok(()),
            };
            if let Err(e) = session.write_response_body(Some(frame), false).await {
                break Err(e);
            }
        };
        drop(stream);
        metrics().sse_streams_open.dec();
        if outcome.is_ok() {
            let _ = session.write_response_body(None, true).await;
        }
        Ok(true)
    }
}

/// `%xx` escapes of a URL path decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx { started: Some(Instant::now()), ..Default::default() }
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        modules.add_module(Box::new(GrpcWeb));
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if let Some(bridge) = session.downstream_modules_ctx.get_mut::<GrpcWebBridge>() {
            bridge.init();
        }
        let rid = header(session.req_header(), "x-request-id").filter(|v| valid_request_id(v)).map(str::to_owned);
        ctx.request_id = rid.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let host = header(session.req_header(), "host").or_else(|| session.req_header().uri.host()).unwrap_or_default().to_owned();
        match crate::hosts::classify(&host) {
            crate::hosts::Host::Preview(id, token) => return self.preview(session, ctx, &id, &token).await,
            crate::hosts::Host::App(label) => return self.deployed_app(session, ctx, &label).await,
            crate::hosts::Host::Api => {}
        }
        ctx.cors_origin = self.cors_origin(session.req_header());
        let req = session.req_header();
        if req.method == http::Method::OPTIONS && header(req, "access-control-request-method").is_some() {
            ctx.route = "preflight".into();
            let extra = [
                ("access-control-allow-methods", "GET, POST, PATCH, PUT, DELETE, OPTIONS".to_owned()),
                ("access-control-allow-headers", CORS_HEADERS.to_owned()),
                ("access-control-max-age", "600".to_owned()),
            ];
            return respond::send(session, ctx, 204, None, Bytes::new(), &extra).await;
        }
        if is_grpc(req) {
            let path = req.uri.path().to_owned();
            ctx.route = format!("grpc {path}");
            let role = Upstreams::role_for_path(&path);
            ctx.grpc_role = Some(role);
            if let Some(spec) = self.0.catalog.method(&path) {
                match self.authenticate(session, spec, None).await {
                    Ok(Some(a)) => {
                        ctx.gate = a.gate.clone();
                        ctx.internal_token = Some(self.0.auth.request_token(&a, &ctx.request_id));
                    }
                    Ok(None) => {}
                    Err(e) => return self.auth_error(session, ctx, e, true).await,
                }
            }
            return Ok(false);
        }
        let path = req.uri.path().to_owned();
        if let Some(done) = self.operational(session, ctx, &path).await? {
            ctx.route = path;
            return Ok(done);
        }
        self.transcode(session, ctx).await
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        if let Some(upstream) = &ctx.preview_upstream {
            let mut peer = match upstream.strip_prefix("unix:") {
                Some(path) => HttpPeer::new_uds(path, false, String::new())?,
                None => HttpPeer::new(upstream.trim_start_matches("http://").trim_end_matches('/'), false, String::new()),
            };
            peer.options.connection_timeout = Some(Duration::from_secs(5));
            peer.options.read_timeout = None;
            peer.options.idle_timeout = Some(Duration::from_secs(60));
            return Ok(Box::new(peer));
        }
        let role = ctx.grpc_role.ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream for this request"))?;
        let mut peer = HttpPeer::new(self.0.upstreams.authority(role), false, String::new());
        // min version 2 on a plaintext peer = HTTP/2 with prior knowledge (h2c)
        peer.options.set_http_version(2, 2);
        peer.options.max_h2_streams = 200;
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        peer.options.read_timeout = None;
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(&self, _session: &mut Session, upstream: &mut RequestHeader, ctx: &mut Ctx) -> Result<()> {
        if ctx.preview_upstream.is_some() {
            // Dev servers only answer hosts they know (DNS-rebinding guard).
            upstream.insert_header("host", "localhost")?;
            upstream.remove_header("authorization");
            upstream.insert_header("x-request-id", &ctx.request_id)?;
            return Ok(());
        }
        // nothing the client sent may look like an internal credential
        upstream.remove_header("authorization");
        for h in ["x-blaze-dev-user-sub", "x-blaze-dev-user-email", "x-blaze-dev-user-name"] {
            upstream.remove_header(h);
        }
        if let Some(t) = &ctx.internal_token {
            upstream.insert_header("authorization", format!("Bearer {t}"))?;
        }
        upstream.insert_header("x-request-id", &ctx.request_id)?;
        Ok(())
    }

    async fn response_filter(&self, _session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        ctx.status = resp.status.as_u16();
        respond::common_headers(resp, ctx)
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, error: &Error) -> bool {
        // Clients end gRPC streams (e.g. reflection) by resetting them; that
        // is not a proxy failure worth an error line.
        matches!(error.esource(), pingora_core::ErrorSource::Downstream)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if !matches!(e.esource(), pingora_core::ErrorSource::Downstream) {
            tracing::warn!(error = %e, request_id = %ctx.request_id, "proxying failed");
        }
        if ctx.preview_upstream.is_some() {
            // Stopped since we last looked? Then it is gone, not broken.
            let gone = match &ctx.preview {
                Some((id, token)) => {
                    self.0.hosts.forget_preview(id, token);
                    matches!(self.0.hosts.preview(id, token).await, Ok(None))
                }
                None => false,
            };
            let (status, message, code) = if gone {
                (404, "This preview is not running", "PREVIEW_NOT_FOUND")
            } else {
                (502, "The preview's dev server is not answering", "PREVIEW_UNAVAILABLE")
            };
            let _ = respond::error(session, ctx, status, message, code).await;
            return FailToProxy { error_code: status, can_reuse_downstream: false };
        }
        let _ = respond::grpc_error(session, ctx, tonic::Code::Unavailable, "Upstream service unavailable").await;
        FailToProxy { error_code: 502, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(ctx.status);
        let elapsed = ctx.started.map(|s| s.elapsed()).unwrap_or_default();
        let route = if ctx.route.is_empty() { "unknown".to_owned() } else { ctx.route.clone() };
        let labels = RouteLabels { route: route.clone(), status };
        metrics().http_requests.get_or_create(&labels).inc();
        metrics().http_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
        let req = session.req_header();
        if matches!(req.uri.path(), "/healthz" | "/readyz" | "/metrics") {
            return;
        }
        tracing::info!(
            request_id = %ctx.request_id,
            method = %req.method,
            path = %req.uri.path(),
            route = %route,
            status,
            ms = elapsed.as_millis() as u64,
            error = e.map(|e| e.to_string()),
            "http"
        );
    }
}

//! Writing responses the edge answers itself: JSON bodies, errors in the
//! contract's `{error, code}` shape, gRPC trailers-only errors, and the
//! headers every response carries (request id, CORS, rate limits).

use bytes::Bytes;
use pingora_core::{Result, protocols::http::HttpTask};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::server::Ctx;

pub fn error_json(message: &str, code: &str) -> Bytes {
    Bytes::from(serde_json::json!({"error": message, "code": code}).to_string())
}

/// Headers on every response of this request.
pub fn common_headers(resp: &mut ResponseHeader, ctx: &Ctx) -> Result<()> {
    resp.insert_header("x-request-id", &ctx.request_id)?;
    if let Some(origin) = &ctx.cors_origin {
        resp.insert_header("access-control-allow-origin", origin)?;
        if origin != "*" {
            resp.insert_header("vary", "Origin")?;
        }
        resp.insert_header(
            "access-control-expose-headers",
            "x-request-id, retry-after, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset",
        )?;
    }
    if let Some(g) = &ctx.gate {
        resp.insert_header("x-ratelimit-limit", g.limit.to_string())?;
        resp.insert_header("x-ratelimit-remaining", g.remaining.max(0).to_string())?;
        resp.insert_header("x-ratelimit-reset", ((g.retry_after_ms.max(0) + 999) / 1000).to_string())?;
    }
    Ok(())
}

/// A complete response with an optional body.
pub async fn send(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    content_type: Option<&str>,
    body: Bytes,
    extra: &[(&str, String)],
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(6 + extra.len()))?;
    if let Some(ct) = content_type {
        resp.insert_header("content-type", ct)?;
    }
    resp.insert_header("content-length", body.len().to_string())?;
    common_headers(&mut resp, ctx)?;
    for (k, v) in extra {
        resp.insert_header(k.to_string(), v)?;
    }
    ctx.status = status;
    session.write_response_header(Box::new(resp), body.is_empty()).await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

pub async fn json(session: &mut Session, ctx: &mut Ctx, status: u16, body: Bytes) -> Result<bool> {
    send(session, ctx, status, Some("application/json"), body, &[]).await
}

pub async fn error(session: &mut Session, ctx: &mut Ctx, status: u16, message: &str, code: &str) -> Result<bool> {
    send(session, ctx, status, Some("application/json"), error_json(message, code), &[]).await
}

/// A gRPC error: response headers, then the status in trailers. (A
/// trailers-only response would need END_STREAM on the header frame, which
/// pingora's header writer does not set; gRPC clients then see no status.)
/// Written as tasks so the gRPC-web module turns the trailers into a body
/// frame for gRPC-web clients.
pub async fn grpc_error(session: &mut Session, ctx: &mut Ctx, code: tonic::Code, message: &str) -> Result<bool> {
    let ct = session
        .req_header()
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .filter(|ct| ct.starts_with("application/grpc-web"))
        .map(str::to_owned)
        .unwrap_or_else(|| "application/grpc".into());
    let mut resp = ResponseHeader::build(200, Some(6))?;
    resp.insert_header("content-type", ct)?;
    common_headers(&mut resp, ctx)?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(code as i32));
    let encoded = percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC).to_string();
    if let Ok(v) = http::HeaderValue::from_str(&encoded) {
        trailers.insert("grpc-message", v);
    }
    ctx.status = 200;
    session
        .write_response_tasks(vec![HttpTask::Header(Box::new(resp), false), HttpTask::Trailer(Some(Box::new(trailers))), HttpTask::Done])
        .await?;
    Ok(true)
}

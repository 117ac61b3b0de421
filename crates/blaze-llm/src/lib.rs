//! Model providers behind one streaming interface.
//!
//! * [`ModelClient::stream`]: OpenAI-compatible chat completions (OpenAI,
//!   OpenRouter, vLLM, LM Studio, Ollama, gateways) and Anthropic messages,
//!   both streamed with usage. Failures before the first token (429, 5xx,
//!   connection errors) are retried with exponential backoff and jitter;
//!   after the first token an error ends the stream.
//! * [`fake`]: an OpenAI- and Anthropic-compatible server streaming scripted
//!   replies — the test double of model providers and the demo model of
//!   `blaze dev up`.
//!
//! Provider base URLs pass the egress policy (no private or metadata
//! addresses unless allowed), checked again after DNS resolution.

pub mod fake;
mod sse;

use std::{pin::Pin, time::Duration};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
}

impl ProviderKind {
    pub fn parse(s: &str) -> ProviderKind {
        if s.eq_ignore_ascii_case("anthropic") { ProviderKind::Anthropic } else { ProviderKind::Openai }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// An image for the model (base64 without a `data:` prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub media_type: String,
    pub base64: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage { role, content: content.into(), images: Vec::new() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
}

impl Usage {
    pub fn total(&self) -> i64 {
        self.input_tokens + self.output_tokens
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Delta(String),
    Usage(Usage),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("the model provider is rate limiting requests")]
    RateLimited,
    #[error("the model provider failed with status {0}")]
    Upstream(u16),
    #[error("the model provider rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the model provider is unreachable: {0}")]
    Connect(String),
    #[error("the model provider timed out")]
    Timeout,
    #[error("the model provider's URL is not allowed: {0}")]
    Forbidden(String),
    #[error("invalid response from the model provider: {0}")]
    Protocol(String),
}

impl LlmError {
    fn retryable(&self) -> bool {
        matches!(self, LlmError::RateLimited | LlmError::Upstream(_) | LlmError::Connect(_) | LlmError::Timeout)
    }
}

/// Everything needed to call one model.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    pub max_output_tokens: u32,
    pub temperature: f32,
}

/// Transport settings shared by every call.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// Until response headers arrive.
    pub request_timeout: Duration,
    /// Between two chunks of a stream.
    pub idle_timeout: Duration,
    pub max_retries: u32,
    pub retry_base: Duration,
    pub allow_private: bool,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            request_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
            max_retries: 3,
            retry_base: Duration::from_millis(250),
            allow_private: false,
        }
    }
}

pub type ModelStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, LlmError>> + Send>>;

#[derive(Clone)]
pub struct ModelClient {
    http: reqwest::Client,
    policy: ClientPolicy,
}

/// Rough token count (4 characters per token), used for budgets before a
/// provider reports real usage.
pub fn estimate_tokens(text: &str) -> i64 {
    (text.chars().count() as i64 + 3) / 4
}

fn backoff(policy: &ClientPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = policy.retry_base.saturating_mul(1u32 << attempt.min(10));
    let jitter = Duration::from_millis(rand::random_range(0..=policy.retry_base.as_millis().max(1) as u64));
    let wait = exp + jitter;
    match retry_after {
        Some(r) => wait.max(r).min(Duration::from_secs(30)),
        None => wait.min(Duration::from_secs(30)),
    }
}

impl ModelClient {
    pub fn new(policy: ClientPolicy) -> ModelClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("http client");
        ModelClient { http, policy }
    }

    async fn check_egress(&self, base: &str) -> Result<url::Url, LlmError> {
        let url = blaze_kit::egress::check_url(base, self.policy.allow_private).map_err(LlmError::Forbidden)?;
        if !self.policy.allow_private {
            let host = url.host_str().unwrap_or_default().to_owned();
            let port = url.port_or_known_default().unwrap_or(443);
            let addrs: Vec<_> =
                tokio::net::lookup_host((host.as_str(), port)).await.map_err(|e| LlmError::Connect(e.to_string()))?.collect();
            blaze_kit::egress::check_resolved(&addrs, false).map_err(LlmError::Forbidden)?;
        }
        Ok(url)
    }

    fn request(&self, cfg: &ModelConfig, messages: &[ChatMessage]) -> (String, reqwest::header::HeaderMap, Value) {
        let base = cfg.base_url.trim_end_matches('/');
        let mut headers = reqwest::header::HeaderMap::new();
        match cfg.kind {
            ProviderKind::Openai => {
                if !cfg.api_key.is_empty()
                    && let Ok(v) = format!("Bearer {}", cfg.api_key).parse()
                {
                    headers.insert(reqwest::header::AUTHORIZATION, v);
                }
                let msgs: Vec<Value> = messages
                    .iter()
                    .map(|m| {
                        if m.images.is_empty() {
                            json!({"role": m.role, "content": m.content})
                        } else {
                            let mut parts = vec![json!({"type": "text", "text": m.content})];
                            parts.extend(m.images.iter().map(|i| json!({"type": "image_url", "image_url": {"url": format!("data:{};base64,{}", i.media_type, i.base64)}})));
                            json!({"role": m.role, "content": parts})
                        }
                    })
                    .collect();
                let body = json!({
                    "model": cfg.model,
                    "messages": msgs,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                    "max_tokens": cfg.max_output_tokens,
                    "temperature": cfg.temperature,
                });
                (format!("{base}/chat/completions"), headers, body)
            }
            ProviderKind::Anthropic => {
                if let Ok(v) = cfg.api_key.parse() {
                    headers.insert("x-api-key", v);
                }
                headers.insert("anthropic-version", reqwest::header::HeaderValue::from_static("2023-06-01"));
                let system: Vec<&str> = messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
                let msgs: Vec<Value> =
                    messages
                        .iter()
                        .filter(|m| m.role != Role::System)
                        .map(|m| {
                            let mut parts = vec![json!({"type": "text", "text": m.content})];
                            parts.extend(m.images.iter().map(
                                |i| json!({"type": "image", "source": {"type": "base64", "media_type": i.media_type, "data": i.base64}}),
                            ));
                            json!({"role": m.role, "content": parts})
                        })
                        .collect();
                let body = json!({
                    "model": cfg.model,
                    "system": system.join("\n\n"),
                    "messages": msgs,
                    "stream": true,
                    "max_tokens": cfg.max_output_tokens,
                    "temperature": cfg.temperature,
                });
                (format!("{base}/messages"), headers, body)
            }
        }
    }

    async fn open(&self, cfg: &ModelConfig, messages: &[ChatMessage]) -> Result<reqwest::Response, LlmError> {
        let (url, headers, body) = self.request(cfg, messages);
        let send = self.http.post(url).headers(headers).json(&body).send();
        let resp = tokio::time::timeout(self.policy.request_timeout, send)
            .await
            .map_err(|_| LlmError::Timeout)?
            .map_err(|e| if e.is_timeout() { LlmError::Timeout } else { LlmError::Connect(e.to_string()) })?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => Ok(resp),
            429 => Err(LlmError::RateLimited),
            500..=599 => Err(LlmError::Upstream(status)),
            _ => {
                let text = resp.text().await.unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str().map(str::to_owned)))
                    .unwrap_or_else(|| text.chars().take(300).collect());
                Err(LlmError::Rejected { status, message })
            }
        }
    }

    /// Stream a completion. Retries happen only before the first token; the
    /// returned stream yields deltas and, at the end, usage.
    pub async fn stream(&self, cfg: &ModelConfig, messages: &[ChatMessage]) -> Result<ModelStream, LlmError> {
        self.check_egress(&cfg.base_url).await?;
        let mut attempt = 0;
        loop {
            let result = match self.open(cfg, messages).await {
                Ok(resp) => self.first_token(cfg.kind, resp).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(stream) => return Ok(stream),
                Err(e) if e.retryable() && attempt < self.policy.max_retries => {
                    let wait = backoff(&self.policy, attempt, None);
                    tracing::info!(attempt, error = %e, wait_ms = wait.as_millis() as u64, "retrying model call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Read until the first delta arrives (so errors before it can be
    /// retried), then hand back a stream that starts with that delta.
    async fn first_token(&self, kind: ProviderKind, resp: reqwest::Response) -> Result<ModelStream, LlmError> {
        let idle = self.policy.idle_timeout;
        let bytes = resp.bytes_stream().map(|r| r.map_err(|e| LlmError::Connect(e.to_string())));
        let mut events = decode(kind, Box::pin(bytes), idle);
        let mut buffered = Vec::new();
        loop {
            match events.next().await {
                Some(Ok(StreamEvent::Delta(d))) => {
                    buffered.push(Ok(StreamEvent::Delta(d)));
                    let head = futures::stream::iter(buffered);
                    return Ok(Box::pin(head.chain(events)));
                }
                Some(Ok(other)) => buffered.push(Ok(other)),
                Some(Err(e)) => return Err(e),
                None => return Ok(Box::pin(futures::stream::iter(buffered))),
            }
        }
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, LlmError>> + Send>>;

/// Provider SSE → our events.
fn decode(kind: ProviderKind, bytes: ByteStream, idle: Duration) -> ModelStream {
    let sse = sse::events(bytes, idle);
    let mut usage = Usage::default();
    let mut done = false;
    Box::pin(sse.filter_map(move |item| {
        let out = match item {
            Err(e) => Some(Err(e)),
            Ok(_) if done => None,
            Ok(ev) => {
                if ev.data == "[DONE]" {
                    done = true;
                    return futures::future::ready(None);
                }
                match serde_json::from_str::<Value>(&ev.data) {
                    Err(e) => Some(Err(LlmError::Protocol(e.to_string()))),
                    Ok(v) => match kind {
                        ProviderKind::Openai => {
                            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                                usage.input_tokens = u["prompt_tokens"].as_i64().unwrap_or(0);
                                usage.output_tokens = u["completion_tokens"].as_i64().unwrap_or(0);
                                Some(Ok(StreamEvent::Usage(usage)))
                            } else if let Some(e) = v.get("error") {
                                Some(Err(LlmError::Protocol(e["message"].as_str().unwrap_or("stream error").to_owned())))
                            } else {
                                let text = v.pointer("/choices/0/delta/content").and_then(|c| c.as_str()).unwrap_or_default();
                                (!text.is_empty()).then(|| Ok(StreamEvent::Delta(text.to_owned())))
                            }
                        }
                        ProviderKind::Anthropic => match v["type"].as_str().unwrap_or_default() {
                            "message_start" => {
                                usage.input_tokens = v.pointer("/message/usage/input_tokens").and_then(|n| n.as_i64()).unwrap_or(0);
                                None
                            }
                            "content_block_delta" => {
                                let text = v.pointer("/delta/text").and_then(|t| t.as_str()).unwrap_or_default();
                                (!text.is_empty()).then(|| Ok(StreamEvent::Delta(text.to_owned())))
                            }
                            "message_delta" => {
                                usage.output_tokens =
                                    v.pointer("/usage/output_tokens").and_then(|n| n.as_i64()).unwrap_or(usage.output_tokens);
                                None
                            }
                            "message_stop" => {
                                done = true;
                                Some(Ok(StreamEvent::Usage(usage)))
                            }
                            "error" => Some(Err(LlmError::Protocol(
                                v.pointer("/error/message").and_then(|m| m.as_str()).unwrap_or("stream error").to_owned(),
                            ))),
                            _ => None,
                        },
                    },
                }
            }
        };
        futures::future::ready(out)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_respects_caps() {
        let p = ClientPolicy { retry_base: Duration::from_millis(100), ..Default::default() };
        let first = backoff(&p, 0, None);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
        let third = backoff(&p, 2, None);
        assert!(third >= Duration::from_millis(400));
        assert_eq!(backoff(&p, 30, None), Duration::from_secs(30));
        assert!(backoff(&p, 0, Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        assert_eq!(estimate_tokens("abcdefgh"), 2);
        assert_eq!(estimate_tokens("abc"), 1);
    }
}

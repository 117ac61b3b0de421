//! A scripted model server speaking the OpenAI chat-completions and the
//! Anthropic messages streaming protocols.
//!
//! It is the test double of model providers and the demo model of
//! `blaze dev up`. Replies stream in small chunks with a delay between them,
//! like a real model. The last user message steers it with markers:
//!
//! | marker | effect |
//! |---|---|
//! | `[429]` / `[500]` | the request fails with that status |
//! | `[429=N]` / `[500=N]` | the first N requests with this prompt fail, later ones succeed |
//! | `[sleep=MS]` | wait before the first token (`[sleep=medium]` = 10 s) |
//! | `[slow=MS]` | wait between chunks (default 10 ms) |
//! | `[hang]` | stream the first chunk, then never finish |
//! | `[drop]` | stream a few chunks, then break the connection |
//! | `tc=<name>` | reply with the fixture `<name>` (built in or added with [`FakeModel::add_fixture`]) |
//! | `[dump]` | reply with `[[dump=N]]`; request N is kept in [`FakeModel::requests`] |
//! | `[unclosed=N]` | leave a `blaze-write` unclosed for N rounds; the continuation (the partial reply pre-filled as the last assistant message) closes it |
//! | `[high-tokens=N]` | report N input tokens |
//!
//! Without markers it answers like a tiny demo model: it rewrites the
//! template's home page to show the prompt and names the chat.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::estimate_tokens;

/// Fixtures every fake server knows, by name (`tc=<name>`).
pub const FIXTURES: &[(&str, &str)] = &[
    ("write", include_str!("../fixtures/write.md")),
    ("all-tags", include_str!("../fixtures/all-tags.md")),
    ("search-replace", include_str!("../fixtures/search-replace.md")),
    ("search-replace-fuzzy", include_str!("../fixtures/search-replace-fuzzy.md")),
    ("search-replace-missing", include_str!("../fixtures/search-replace-missing.md")),
    ("hostile-paths", include_str!("../fixtures/hostile-paths.md")),
    ("add-dependency", include_str!("../fixtures/add-dependency.md")),
    ("think", include_str!("../fixtures/think.md")),
    ("long", include_str!("../fixtures/long.md")),
];

/// Continuation text that closes an unclosed write.
const CONTINUATION: &str = "\n  return <p>continued</p>;\n}\n</blaze-write>\nThe file is complete now.";

/// One request the server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `openai` or `anthropic`.
    pub protocol: &'static str,
    pub headers: HeaderMap,
    pub body: Value,
    pub received_at: Instant,
    /// When the first token left the server (None if it never did).
    pub first_token_at: Option<Instant>,
}

impl RecordedRequest {
    /// Text of the last user message.
    pub fn last_user_text(&self) -> String {
        messages_of(&self.body).iter().rev().find(|(role, _)| role == "user").map(|(_, t)| t.clone()).unwrap_or_default()
    }

    /// All messages as (role, text), the system prompt first.
    pub fn messages(&self) -> Vec<(String, String)> {
        messages_of(&self.body)
    }
}

#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Characters per streamed chunk.
    pub chunk_chars: usize,
    /// Delay between chunks.
    pub chunk_delay: Duration,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions { chunk_chars: 32, chunk_delay: Duration::from_millis(10) }
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<RecordedRequest>,
    fixtures: HashMap<String, String>,
    /// Failures served so far per (marker, prompt).
    failures: HashMap<(u16, String), u32>,
}

#[derive(Clone)]
struct Shared {
    options: FakeOptions,
    inner: Arc<Mutex<Inner>>,
}

/// A running fake model server; stops when dropped.
pub struct FakeModel {
    addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeModel {
    /// Start on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<FakeModel> {
        Self::start_with(FakeOptions::default()).await
    }

    pub async fn start_with(options: FakeOptions) -> std::io::Result<FakeModel> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener, options)
    }

    /// Serve on a bound listener (used by `blaze dev up`).
    pub fn serve(listener: TcpListener, options: FakeOptions) -> std::io::Result<FakeModel> {
        let addr = listener.local_addr()?;
        let mut inner = Inner::default();
        for (name, text) in FIXTURES {
            inner.fixtures.insert((*name).to_owned(), (*text).to_owned());
        }
        let shared = Shared { options, inner: Arc::new(Mutex::new(inner)) };
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake model server stopped");
            }
        });
        Ok(FakeModel { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for both protocols (`…/v1`; the client appends
    /// `/chat/completions` or `/messages`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Add or replace a fixture for `tc=<name>`.
    pub fn add_fixture(&self, name: &str, text: &str) {
        self.shared.inner.lock().expect("fake model state").fixtures.insert(name.to_owned(), text.to_owned());
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.inner.lock().expect("fake model state").requests.clone()
    }

    /// Requests whose last user message contains `needle`.
    pub fn requests_containing(&self, needle: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.last_user_text().contains(needle)).collect()
    }
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "demo", "object": "model", "owned_by": "blaze"}]})) }),
        )
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .with_state(shared)
}

/// (role, text) of every message; Anthropic's `system` comes first.
fn messages_of(body: &Value) -> Vec<(String, String)> {
    let text_of = |content: &Value| -> String {
        match content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""),
            _ => String::new(),
        }
    };
    let mut out = Vec::new();
    if let Some(system) = body.get("system").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        out.push(("system".to_owned(), system.to_owned()));
    }
    for m in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
        out.push((m["role"].as_str().unwrap_or_default().to_owned(), text_of(&m["content"])));
    }
    out
}

/// The value of `[name=value]` in `text`.
fn marker<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("[{name}=");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(']')? + start;
    Some(&text[start..end])
}

fn has_marker(text: &str, name: &str) -> bool {
    text.contains(&format!("[{name}]"))
}

/// What to do for one request.
#[derive(Debug, PartialEq)]
enum Script {
    Fail(u16),
    Reply { text: String, first_delay: Duration, chunk_delay: Duration, hang: bool, drop: bool, input_tokens: i64 },
}

fn plan(shared: &Shared, body: &Value, request_index: usize) -> Script {
    let messages = messages_of(body);
    let prompt = messages.iter().rev().find(|(r, _)| r == "user").map(|(_, t)| t.clone()).unwrap_or_default();
    let prefill = messages.last().filter(|(r, _)| r == "assistant").map(|(_, t)| t.clone());

    for status in [429u16, 500] {
        if has_marker(&prompt, &status.to_string()) {
            return Script::Fail(status);
        }
        if let Some(n) = marker(&prompt, &status.to_string()).and_then(|n| n.parse::<u32>().ok()) {
            let mut inner = shared.inner.lock().expect("fake model state");
            let served = inner.failures.entry((status, prompt.clone())).or_default();
            if *served < n {
                *served += 1;
                return Script::Fail(status);
            }
        }
    }

    let first_delay = match marker(&prompt, "sleep") {
        Some("medium") => Duration::from_secs(10),
        Some(ms) => Duration::from_millis(ms.parse().unwrap_or(0)),
        None => Duration::ZERO,
    };
    let chunk_delay =
        marker(&prompt, "slow").and_then(|ms| ms.parse().ok()).map(Duration::from_millis).unwrap_or(shared.options.chunk_delay);
    let input_tokens = marker(&prompt, "high-tokens")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| messages.iter().map(|(_, t)| estimate_tokens(t)).sum::<i64>() + 4 * messages.len() as i64);

    let text = if let Some(prefill) = prefill {
        // A continuation round: keep it unclosed while rounds remain.
        let rounds = marker(&prompt, "unclosed").and_then(|n| n.parse::<usize>().ok()).unwrap_or(1);
        let done = prefill.matches("[continued]").count() + 1;
        if done < rounds { "\n  // [continued]\n".to_owned() } else { CONTINUATION.to_owned() }
    } else if has_marker(&prompt, "dump") {
        format!("[[dump={request_index}]]")
    } else if marker(&prompt, "unclosed").is_some() {
        "Writing the component.\n<blaze-write path=\"src/components/Unfinished.tsx\" description=\"A component cut off by the output limit\">\nexport default function Unfinished() {\n  // started\n".to_owned()
    } else if let Some(name) = fixture_name(&prompt) {
        let inner = shared.inner.lock().expect("fake model state");
        match inner.fixtures.get(name) {
            Some(text) => text.clone(),
            None => format!("Unknown fixture `{name}`."),
        }
    } else {
        demo_reply(&prompt)
    };
    Script::Reply { text, first_delay, chunk_delay, hang: has_marker(&prompt, "hang"), drop: has_marker(&prompt, "drop"), input_tokens }
}

fn fixture_name(prompt: &str) -> Option<&str> {
    let start = prompt.find("tc=")? + 3;
    let rest = &prompt[start..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '/')).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The demo model's answer: a friendly note and a home page showing the
/// prompt, so a new user sees the whole loop (stream → commit → preview)
/// before configuring a real provider.
fn demo_reply(prompt: &str) -> String {
    let clean: String = prompt
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | '{' | '}' | '`' | '"' | '\\'))
        .take(80)
        .collect();
    let title = if clean.trim().is_empty() { "Hello from Blaze".to_owned() } else { clean.trim().to_owned() };
    let summary: String = title.chars().take(40).collect();
    format!(
        "This is the **demo model**: it does not understand your request, but it shows the whole loop. \
Configure a real provider in Settings to build for real.\n\n\
<blaze-write path=\"src/pages/Index.tsx\" description=\"Show the latest prompt on the home page\">\n\
const Index = () => {{\n  return (\n    <div className=\"min-h-screen flex items-center justify-center bg-gray-100\">\n      \
<div className=\"text-center\">\n        <h1 className=\"text-4xl font-bold mb-4\">{title}</h1>\n        \
<p className=\"text-xl text-gray-600\">Written by the Blaze demo model.</p>\n      </div>\n    </div>\n  );\n}};\n\nexport default Index;\n\
</blaze-write>\n\n<blaze-chat-summary>{summary}</blaze-chat-summary>\n"
    )
}

fn record(shared: &Shared, protocol: &'static str, headers: HeaderMap, body: Value) -> usize {
    let mut inner = shared.inner.lock().expect("fake model state");
    inner.requests.push(RecordedRequest { protocol, headers, body, received_at: Instant::now(), first_token_at: None });
    inner.requests.len() - 1
}

fn mark_first_token(shared: &Shared, index: usize) {
    let mut inner = shared.inner.lock().expect("fake model state");
    if let Some(r) = inner.requests.get_mut(index)
        && r.first_token_at.is_none()
    {
        r.first_token_at = Some(Instant::now());
    }
}

fn failure(status: u16, protocol: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = if status == 429 { "Rate limit exceeded (fake model)" } else { "Internal error (fake model)" };
    let body = if protocol == "anthropic" {
        json!({"type": "error", "error": {"type": if status == 429 { "rate_limit_error" } else { "api_error" }, "message": message}})
    } else {
        json!({"error": {"message": message, "type": if status == 429 { "rate_limit_exceeded" } else { "server_error" }}})
    };
    let mut resp = (code, Json(body)).into_response();
    if status == 429 {
        resp.headers_mut().insert("retry-after", "0".parse().expect("header"));
    }
    resp
}

fn chunks(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(size.max(1)).map(|c| c.iter().collect()).collect()
}

type Frame = Result<Bytes, std::io::Error>;

/// Stream the script as SSE frames built by `frame`.
fn sse_body(
    shared: Shared,
    index: usize,
    script: Script,
    opening: Vec<String>,
    delta: fn(&str) -> String,
    closing: impl FnOnce(i64, i64) -> Vec<String> + Send + 'static,
) -> Response {
    let Script::Reply { text, first_delay, chunk_delay, hang, drop, input_tokens } = script else {
        unreachable!("failures are answered before streaming")
    };
    let size = shared.options.chunk_chars;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(16);
    tokio::spawn(async move {
        for f in opening {
            if tx.send(Ok(Bytes::from(f))).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(first_delay).await;
        let parts = chunks(&text, size);
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(chunk_delay).await;
            }
            if i == 0 {
                mark_first_token(&shared, index);
            }
            if tx.send(Ok(Bytes::from(delta(part)))).await.is_err() {
                return;
            }
            if hang {
                // Keep the connection open until the client goes away.
                tx.closed().await;
                return;
            }
            if drop && i == 2 {
                let _ = tx.send(Err(std::io::Error::other("connection dropped by the fake model"))).await;
                return;
            }
        }
        for f in closing(input_tokens, estimate_tokens(&text)) {
            if tx.send(Ok(Bytes::from(f))).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .expect("response")
}

async fn openai(State(shared): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Result<Response, Infallible> {
    let index = record(&shared, "openai", headers, body.clone());
    let script = plan(&shared, &body, index);
    if let Script::Fail(status) = script {
        return Ok(failure(status, "openai"));
    }
    let model = body["model"].as_str().unwrap_or("demo").to_owned();
    let id = format!("chatcmpl-fake-{index}");
    let frame = |v: Value| format!("data: {v}\n\n");
    let opening = vec![frame(
        json!({"id": id, "object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}),
    )];
    let delta: fn(&str) -> String =
        |t| format!("data: {}\n\n", json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}}]}));
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let closing = move |input: i64, output: i64| {
        let mut frames = vec![frame(
            json!({"id": id, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        )];
        if include_usage {
            frames.push(frame(json!({"id": id, "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}})));
        }
        frames.push("data: [DONE]\n\n".to_owned());
        frames
    };
    Ok(sse_body(shared, index, script, opening, delta, closing))
}

async fn anthropic(State(shared): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Result<Response, Infallible> {
    let index = record(&shared, "anthropic", headers, body.clone());
    let script = plan(&shared, &body, index);
    if let Script::Fail(status) = script {
        return Ok(failure(status, "anthropic"));
    }
    let input = match &script {
        Script::Reply { input_tokens, .. } => *input_tokens,
        Script::Fail(_) => 0,
    };
    let model = body["model"].as_str().unwrap_or("demo").to_owned();
    let frame = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let opening = vec![
        frame(
            "message_start",
            json!({"type": "message_start", "message": {"id": format!("msg_fake_{index}"), "type": "message", "role": "assistant", "model": model, "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}}),
        ),
        frame("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
    ];
    let delta: fn(&str) -> String = |t| {
        format!(
            "event: content_block_delta\ndata: {}\n\n",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})
        )
    };
    let closing = move |_input: i64, output: i64| {
        vec![
            frame("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            frame(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": output}}),
            ),
            frame("message_stop", json!({"type": "message_stop"})),
        ]
    };
    Ok(sse_body(shared, index, script, opening, delta, closing))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::{ChatMessage, ClientPolicy, LlmError, ModelClient, ModelConfig, ProviderKind, Role, StreamEvent};

    fn client() -> ModelClient {
        ModelClient::new(ClientPolicy { allow_private: true, retry_base: Duration::from_millis(5), max_retries: 2, ..Default::default() })
    }

    fn config(fake: &FakeModel, kind: ProviderKind) -> ModelConfig {
        ModelConfig {
            kind,
            base_url: fake.base_url(),
            api_key: "sk-test".into(),
            model: "demo".into(),
            max_output_tokens: 1000,
            temperature: 0.0,
        }
    }

    async fn collect(client: &ModelClient, cfg: &ModelConfig, prompt: &str) -> Result<(String, crate::Usage), LlmError> {
        let messages = vec![ChatMessage::new(Role::System, "You are a test."), ChatMessage::new(Role::User, prompt)];
        let mut stream = client.stream(cfg, &messages).await?;
        let mut text = String::new();
        let mut usage = crate::Usage::default();
        while let Some(ev) = stream.next().await {
            match ev? {
                StreamEvent::Delta(d) => text.push_str(&d),
                StreamEvent::Usage(u) => usage = u,
            }
        }
        Ok((text, usage))
    }

    #[tokio::test]
    async fn both_protocols_stream_fixtures_with_usage() {
        let fake = FakeModel::start().await.unwrap();
        for kind in [ProviderKind::Openai, ProviderKind::Anthropic] {
            let (text, usage) = collect(&client(), &config(&fake, kind), "tc=write").await.unwrap();
            assert_eq!(text, FIXTURES[0].1, "{kind:?}");
            assert!(usage.input_tokens > 0 && usage.output_tokens > 0, "{kind:?} {usage:?}");
        }
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].headers["authorization"], "Bearer sk-test");
        assert_eq!(reqs[1].headers["x-api-key"], "sk-test");
        assert_eq!(reqs[1].messages()[0], ("system".to_owned(), "You are a test.".to_owned()));
        assert!(reqs.iter().all(|r| r.first_token_at.is_some()));
    }

    #[tokio::test]
    async fn rate_limits_are_retried_before_the_first_token_then_reported() {
        let fake = FakeModel::start().await.unwrap();
        let cfg = config(&fake, ProviderKind::Openai);
        let (text, _) = collect(&client(), &cfg, "[429=2] tc=write").await.unwrap();
        assert_eq!(text, FIXTURES[0].1);
        assert_eq!(fake.requests().len(), 3, "two refusals, then success");
        assert_eq!(collect(&client(), &cfg, "[429]").await.unwrap_err(), LlmError::RateLimited);
        assert_eq!(fake.requests().len(), 6, "one try plus two retries");
        assert_eq!(collect(&client(), &cfg, "[500=1] hi").await.map(|_| ()), Ok(()));
    }

    #[tokio::test]
    async fn a_dropped_stream_after_the_first_token_is_an_error_not_a_retry() {
        let fake = FakeModel::start().await.unwrap();
        let err = collect(&client(), &config(&fake, ProviderKind::Openai), "[drop] tc=long").await.unwrap_err();
        assert!(matches!(err, LlmError::Connect(_)), "{err:?}");
        assert_eq!(fake.requests().len(), 1);
    }

    #[tokio::test]
    async fn unclosed_writes_continue_from_the_prefill() {
        let fake = FakeModel::start().await.unwrap();
        let cfg = config(&fake, ProviderKind::Anthropic);
        let (first, _) = collect(&client(), &cfg, "[unclosed=1]").await.unwrap();
        assert!(first.contains("<blaze-write") && !first.contains("</blaze-write>"));
        let messages = vec![ChatMessage::new(Role::User, "[unclosed=1]"), ChatMessage::new(Role::Assistant, first.clone())];
        let mut s = client().stream(&cfg, &messages).await.unwrap();
        let mut rest = String::new();
        while let Some(Ok(ev)) = s.next().await {
            if let StreamEvent::Delta(d) = ev {
                rest.push_str(&d);
            }
        }
        assert!(rest.contains("</blaze-write>"), "{rest}");
    }

    #[tokio::test]
    async fn markers_dump_and_demo_replies() {
        let fake = FakeModel::start().await.unwrap();
        let cfg = config(&fake, ProviderKind::Openai);
        let (dump, _) = collect(&client(), &cfg, "[dump] look").await.unwrap();
        assert_eq!(dump, "[[dump=0]]");
        assert_eq!(fake.requests()[0].last_user_text(), "[dump] look");
        let (demo, _) = collect(&client(), &cfg, "Build a <todo> app").await.unwrap();
        assert!(demo.contains("<h1 className=\"text-4xl font-bold mb-4\">Build a todo app</h1>"), "{demo}");
        assert!(demo.contains("<blaze-chat-summary>Build a todo app</blaze-chat-summary>"));
        fake.add_fixture("mine", "custom reply");
        assert_eq!(collect(&client(), &cfg, "tc=mine please").await.unwrap().0, "custom reply");
        assert_eq!(fixture_name("x tc=a/b-c_1. y"), Some("a/b-c_1"));
        assert_eq!(marker("[sleep=25] hi", "sleep"), Some("25"));
    }

    #[tokio::test]
    async fn hang_keeps_the_stream_open_until_the_client_leaves() {
        let fake = FakeModel::start().await.unwrap();
        let policy = ClientPolicy { allow_private: true, idle_timeout: Duration::from_millis(300), ..Default::default() };
        let cfg = config(&fake, ProviderKind::Openai);
        let messages = vec![ChatMessage::new(Role::User, "[hang] tc=long")];
        let mut s = ModelClient::new(policy).stream(&cfg, &messages).await.unwrap();
        assert!(matches!(s.next().await, Some(Ok(StreamEvent::Delta(_)))));
        assert_eq!(s.next().await, Some(Err(LlmError::Timeout)));
    }
}

//! Small helpers shared by the end-to-end tests.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

/// One parsed SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: serde_json::Value,
}

/// Incremental SSE parser over a response body (the client's rules: blocks
/// split on a blank line, comments ignored, `data:` lines joined).
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        SseReader { stream: resp.bytes_stream().boxed(), buf: String::new() }
    }

    /// The next event, or None at the end of the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut id = None;
                let mut event = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.trim_start().to_owned());
                    }
                }
                if let Some(event) = event
                    && !data.is_empty()
                {
                    let data = serde_json::from_str(&data.join("\n")).expect("SSE data is JSON");
                    return Some(SseEvent { id, event, data });
                }
            }
            match tokio::time::timeout(Duration::from_secs(60), self.stream.next()).await.expect("SSE stalled") {
                Some(Ok(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n")),
                _ => return None,
            }
        }
    }

    /// Every remaining event.
    pub async fn collect(mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            out.push(e);
        }
        out
    }
}

/// Find the grpcurl binary (installed by `make tools`).
pub fn grpcurl() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("BLAZE_TEST_GRPCURL") {
        return p.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = root.join(".tools/venv/bin/grpcurl");
    assert!(p.exists(), "grpcurl not found at {}: run `make tools`", p.display());
    p
}

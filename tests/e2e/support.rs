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

/// A TCP proxy between the mesh and one dependency that a test can break:
/// `cut` drops every open connection (a network blip, a restarted server),
/// `set_down(true)` refuses new ones until `set_down(false)`.
pub struct Chaos {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Chaos {
    pub async fn start(target: std::net::SocketAddr) -> Chaos {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (d, g) = (down.clone(), generation.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if d.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Chaos { port, down, generation, task }
    }

    /// Close every open connection.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            self.cut();
        }
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! Test scaffolding: a unique queue prefix per test, cleanup that runs even when the test panics,
//! and a handler that records what it was given.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blaze_queue::{Broker, Delivery, Outcome, QueueConfig};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::mpsc;

pub const RETRY_DELAY: Duration = Duration::from_millis(200);

pub fn amqp_url() -> String {
    std::env::var("BLAZE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The queues of one test. Dropping it deletes every queue it knows of, through a fresh
/// connection on its own thread, so a failed assertion does not leave queues behind.
pub struct Scope {
    pub prefix: String,
    names: Arc<Mutex<Vec<String>>>,
}

impl Scope {
    pub fn new() -> Self {
        // Logs land in the test's captured output, shown when it fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "blaze_queue=debug".into()))
            .with_test_writer()
            .try_init();
        let id = uuid::Uuid::new_v4().simple().to_string();
        Scope { prefix: format!("t{}", &id[..12]), names: Arc::default() }
    }

    pub fn config(&self) -> QueueConfig {
        QueueConfig { url: amqp_url(), prefix: self.prefix.clone(), prefetch: 4, max_attempts: 3, retry_delay: RETRY_DELAY }
    }

    pub async fn broker(&self) -> Broker {
        Broker::connect(self.config()).await.expect("connect to the test RabbitMQ")
    }

    /// `<prefix>.<queue>`
    pub fn full(&self, queue: &str) -> String {
        format!("{}.{queue}", self.prefix)
    }

    /// Declares work queue `queue` and remembers its three queues for cleanup.
    pub async fn declare(&self, broker: &Broker, queue: &str) {
        let main = self.full(queue);
        self.track(&[&format!("{main}.parked"), &format!("{main}.retry"), &main]);
        broker.declare(queue).await.expect("declare");
    }

    pub fn track(&self, full_names: &[&str]) {
        self.names.lock().unwrap().extend(full_names.iter().map(|n| n.to_string()));
    }

    /// Ready messages in a queue, `None` if it does not exist.
    pub async fn message_count(&self, full_name: &str) -> Option<u32> {
        let conn = raw_connection().await;
        let ch = conn.create_channel().await.expect("channel");
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let count = ch.queue_declare(full_name.into(), passive, FieldTable::default()).await.ok().map(|q| q.message_count());
        let _ = conn.close(200, "OK".into()).await;
        count
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        if names.is_empty() {
            return;
        }
        // A thread with its own runtime: we may be unwinding inside the test's runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let conn = raw_connection().await;
                let ch = conn.create_channel().await.expect("channel");
                for name in names {
                    if let Err(e) = ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await {
                        eprintln!("cleanup: cannot delete {name}: {e}");
                    }
                }
                let _ = conn.close(200, "OK".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

pub async fn raw_connection() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("raw connection to the test RabbitMQ")
}

pub fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Deliveries a handler saw, in order.
pub struct Seen(mpsc::UnboundedReceiver<Delivery>);

impl Seen {
    /// The next delivery, failing the test if none comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Delivery {
        tokio::time::timeout(within, self.0.recv()).await.expect("no delivery in time").expect("handler dropped")
    }

    /// Fails the test if another delivery arrives within `quiet`.
    pub async fn none_within(&mut self, quiet: Duration) {
        if let Ok(Some(d)) = tokio::time::timeout(quiet, self.0.recv()).await {
            panic!("unexpected delivery: attempt {} redelivered {} body {:?}", d.attempt, d.redelivered, String::from_utf8_lossy(&d.body));
        }
    }
}

/// A handler that records each delivery and answers with `decide(&delivery)`.
pub fn recording<D>(decide: D) -> (impl Fn(Delivery) -> std::future::Ready<Outcome> + Send + Sync + 'static, Seen)
where
    D: Fn(&Delivery) -> Outcome + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |d: Delivery| {
        let outcome = decide(&d);
        let _ = tx.send(d);
        std::future::ready(outcome)
    };
    (handler, Seen(rx))
}

/// A TCP forwarder to RabbitMQ whose connections can be cut, to see a network failure from the
/// client side (no AMQP close, just a dead socket) and from the broker's (a vanished client).
pub struct Wire {
    pub url: String,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Wire {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let upstream = upstream_addr();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let tracked = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tracked.lock().unwrap().push(task);
            }
        });
        Wire { url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"), conns, accept }
    }

    /// Drops every open connection (both sockets close); new ones are accepted again.
    pub fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// host:port of the test RabbitMQ, from its URL.
fn upstream_addr() -> String {
    let url = amqp_url();
    let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let host_port = after_scheme.rsplit_once('@').map_or(after_scheme, |(_, hp)| hp);
    host_port.split('/').next().unwrap_or("127.0.0.1:5672").to_owned()
}

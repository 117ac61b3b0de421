//! The connection to RabbitMQ and the supervisor task that replaces it when it dies.
//!
//! Users never hold a `lapin::Connection`; they ask the [`Link`] for the current [`Session`] and
//! open channels on it. When the connection is lost the supervisor withdraws the session, reconnects
//! with backoff and publishes a new one; whoever was waiting (publishers, bounded; consumers,
//! forever) continues on the new session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::QueueError;
use crate::backoff::Backoff;

/// How often the supervisor looks at the connection state. lapin reports connection errors as
/// events, but a close we initiate (or one it only notices on the next write) changes the state
/// without one.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// A connection that lived this long was healthy: its loss starts the backoff from the bottom again,
/// while a connection that dies right after the handshake keeps backing off.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// One live AMQP connection and the channel all confirmed publishes share.
pub(crate) struct Session {
    conn: Connection,
    // A confirm-mode channel of its own: a consumer's channel must never carry publishes (the
    // reference's pitfall), and concurrent publishes can share one channel since lapin matches
    // confirms to delivery tags.
    publisher: tokio::sync::Mutex<Option<Channel>>,
}

impl Session {
    pub(crate) fn is_alive(&self) -> bool {
        self.conn.status().connected()
    }

    /// A fresh channel. Short-lived operations use one each, because a channel-level error (404 on a
    /// passive declare, 406 on mismatched arguments) closes the channel it happened on.
    pub(crate) async fn channel(&self) -> Result<Channel, lapin::Error> {
        self.conn.create_channel().await
    }

    /// The shared confirm channel, reopened if a channel error closed it.
    pub(crate) async fn publisher(&self) -> Result<Channel, lapin::Error> {
        let mut slot = self.publisher.lock().await;
        if let Some(ch) = slot.as_ref().filter(|ch| ch.status().connected()) {
            return Ok(ch.clone());
        }
        let ch = self.conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    async fn close(&self, code: u16, reason: &str) {
        if let Err(e) = self.conn.close(code, reason.into()).await {
            debug!(error = %e, "closing the RabbitMQ connection");
        }
    }
}

struct Shared {
    url: String,
    name: String,
    last_error: Mutex<String>,
    connections: AtomicU64,
    check_now: Notify,
}

impl Shared {
    fn set_last_error(&self, e: impl ToString) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = e.to_string();
    }

    fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

pub(crate) struct Link {
    sessions: watch::Receiver<Option<Arc<Session>>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Link {
    /// Connects once (so a wrong URL or credentials fail the caller right away), then hands the
    /// connection to the supervisor.
    pub(crate) async fn start(url: &str, name: &str) -> Result<Link, QueueError> {
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            name: name.to_owned(),
            last_error: Mutex::new(String::new()),
            connections: AtomicU64::new(0),
            check_now: Notify::new(),
        });
        let first = open(&shared).await.map_err(|e| QueueError::Connect(e.to_string()))?;
        let (tx, sessions) = watch::channel(None);
        let stop = CancellationToken::new();
        let task = supervise(first, tx, shared.clone(), stop.clone()).instrument(info_span!("amqp_connection", name = %name));
        let supervisor = tokio::spawn(task);
        let link = Link { sessions, shared, stop, supervisor: Mutex::new(Some(supervisor)) };
        // The supervisor publishes the first session before anything else; wait for it so a
        // freshly connected broker never makes its first caller wait.
        link.session(Duration::from_secs(1)).await?;
        Ok(link)
    }

    /// The live session, waiting at most `wait` for one during an outage.
    pub(crate) async fn session(&self, wait: Duration) -> Result<Arc<Session>, QueueError> {
        match tokio::time::timeout(wait, self.next_session()).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(QueueError::Connect("the broker was closed".into())),
            Err(_) => {
                let last = self.shared.last_error();
                let last = if last.is_empty() { String::new() } else { format!(": {last}") };
                Err(QueueError::Connect(format!("no connection to RabbitMQ within {wait:?}{last}")))
            }
        }
    }

    /// The live session, waiting as long as it takes; `None` once the link is stopped.
    pub(crate) async fn next_session(&self) -> Option<Arc<Session>> {
        let mut rx = self.sessions.clone();
        // A session that died but is not withdrawn yet fails the predicate; the supervisor notices
        // within WATCH_INTERVAL and the next value wakes us.
        let found = rx.wait_for(|s| s.as_ref().is_some_and(|s| s.is_alive())).await.ok()?;
        found.clone()
    }

    /// A caller hit a connection error: have the supervisor look now rather than at its next tick.
    pub(crate) fn check_now(&self) {
        self.shared.check_now.notify_one();
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.sessions.borrow().as_ref().is_some_and(|s| s.is_alive())
    }

    pub(crate) fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Test hook: close the current connection as a network failure would end it for us.
    pub(crate) async fn sever(&self) {
        let current = self.sessions.borrow().clone();
        if let Some(s) = current {
            s.close(320, "blaze-queue: simulated connection loss").await;
        }
        self.check_now();
    }

    /// Stop reconnecting and close the connection; waits for the supervisor to finish.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let task = self.supervisor.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

// The last handle gone (or `start` failing half-way): the supervisor closes the connection and ends.
impl Drop for Link {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn open(shared: &Shared) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name(shared.name.as_str().into());
    match Connection::connect(&shared.url, props).await {
        Ok(conn) => {
            shared.connections.fetch_add(1, Ordering::Relaxed);
            Ok(conn)
        }
        Err(e) => {
            shared.set_last_error(&e);
            Err(e)
        }
    }
}

async fn supervise(first: Connection, tx: watch::Sender<Option<Arc<Session>>>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut backoff = Backoff::reconnect();
    let mut next = Some(first);
    loop {
        let conn = match next.take() {
            Some(conn) => conn,
            None => match open(&shared).await {
                Ok(conn) => conn,
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(error = %e, retry_in = ?delay, "cannot connect to RabbitMQ");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            },
        };
        let since = Instant::now();
        let events = conn.events_listener();
        let session = Arc::new(Session { conn, publisher: tokio::sync::Mutex::new(None) });
        tx.send_replace(Some(session.clone()));
        info!(connections = shared.connections.load(Ordering::Relaxed), "connected to RabbitMQ");

        let stopped = watch_session(&session, events, &shared, &stop).await;
        tx.send_replace(None);
        if stopped {
            session.close(200, "OK").await;
            info!("RabbitMQ connection closed");
            return;
        }
        if since.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        warn!(error = %shared.last_error(), reconnect_in = ?delay, "lost the RabbitMQ connection");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Returns when the session's connection is gone (`false`) or the link is stopped (`true`).
async fn watch_session(session: &Session, events: impl Stream<Item = Event>, shared: &Shared, stop: &CancellationToken) -> bool {
    let mut events = std::pin::pin!(events);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return true,
            event = events.next() => match event {
                // Channel errors arrive here too; only a dead connection matters.
                Some(Event::Error(e)) if !session.is_alive() => {
                    shared.set_last_error(e);
                    return false;
                }
                Some(Event::ConnectionBlocked(reason)) => warn!(%reason, "RabbitMQ blocked publishing on this connection"),
                Some(_) => {}
                None => {
                    shared.set_last_error("connection event stream ended");
                    return false;
                }
            },
            _ = tick.tick() => {}
            () = shared.check_now.notified() => {}
        }
        if !session.is_alive() {
            let how = if session.conn.status().errored() { "failed" } else { "was closed" };
            shared.set_last_error(format!("the connection {how}"));
            return false;
        }
    }
}

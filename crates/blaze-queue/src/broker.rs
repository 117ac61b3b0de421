//! The public handle: declare, publish, consume, inspect the parking lot.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use crate::link::{Link, Session};
use crate::topology::Topology;
use crate::{ATTEMPTS_HEADER, CONFIRM_TIMEOUT, CONNECT_WAIT, Delivery, ERROR_HEADER, Outcome, Parked, QueueConfig, QueueError, headers};

/// AMQP `delivery_mode` 2: the broker writes the message to disk (quorum queues always do).
const PERSISTENT: u8 = 2;
/// Pause between publish attempts after a connection error, so a dying session is not hammered.
const REPUBLISH_PAUSE: Duration = Duration::from_millis(50);

/// Handle to RabbitMQ: one connection (replaced automatically when it dies) with a channel per
/// consumer, one shared confirm channel for publishing and short-lived channels for the rest.
/// Cheap to clone; the connection closes when the last clone (including running consumers) is gone,
/// or on [`Broker::close`].
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: QueueConfig,
    link: Link,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("cfg", &self.inner.cfg).field("connected", &self.is_connected()).finish()
    }
}

impl Broker {
    /// Connects now (failing fast on a wrong URL or credentials) and keeps reconnecting afterwards.
    pub async fn connect(mut cfg: QueueConfig) -> Result<Broker, QueueError> {
        if cfg.prefix.is_empty() {
            return Err(QueueError::Invalid("empty queue prefix".into()));
        }
        if u32::try_from(cfg.retry_delay.as_millis()).is_err() {
            return Err(QueueError::Invalid(format!("retry_delay {:?} is longer than RabbitMQ's TTL limit", cfg.retry_delay)));
        }
        // prefetch 0 means "unlimited" in AMQP: one slow consumer would hoard the whole queue.
        if cfg.prefetch == 0 {
            return Err(QueueError::Invalid("prefetch must be at least 1".into()));
        }
        cfg.max_attempts = cfg.max_attempts.max(1);
        let link = Link::start(&cfg.url, &format!("blaze-queue {}", cfg.prefix)).await?;
        Ok(Broker { inner: Arc::new(Inner { cfg, link }) })
    }

    pub fn config(&self) -> &QueueConfig {
        &self.inner.cfg
    }

    /// Whether a connection is up right now (for readiness checks).
    pub fn is_connected(&self) -> bool {
        self.inner.link.is_connected()
    }

    /// Connections opened so far: 1 after `connect`, +1 per reconnect (for metrics and tests).
    pub fn connections(&self) -> u64 {
        self.inner.link.connections()
    }

    /// Declares the main, retry and parked queues of work queue `queue` (idempotent; fails with
    /// [`QueueError::Protocol`] if a queue exists with other arguments, e.g. another retry delay).
    pub async fn declare(&self, queue: &str) -> Result<(), QueueError> {
        let topo = self.topology(queue)?;
        let durable = QueueDeclareOptions::durable();
        self.with_channel(|ch| async move {
            ch.queue_declare(topo.main.clone(), durable, topo.main_args()).await?;
            ch.queue_declare(topo.retry.clone(), durable, topo.retry_args(self.inner.cfg.retry_delay)).await?;
            ch.queue_declare(topo.parked.clone(), durable, topo.parked_args()).await?;
            Ok(())
        })
        .await
    }

    /// Publishes to work queue `queue` (persistent, mandatory) and waits for the broker's confirm.
    ///
    /// During an outage waits up to [`CONNECT_WAIT`] for a connection, then fails with
    /// [`QueueError::Connect`]. A publish whose confirm was lost with the connection is sent again
    /// on the next one, so a consumer may see it twice.
    pub async fn publish(&self, queue: &str, body: &[u8], headers: &BTreeMap<String, String>) -> Result<(), QueueError> {
        let topo = self.topology(queue)?;
        self.publish_to(&topo.main, body, headers::to_table(headers)?).await
    }

    /// Runs `handler` for every delivery of work queue `queue` (manual acks, `prefetch` handlers at
    /// a time) until `shutdown` is cancelled; then stops taking messages, lets running handlers
    /// finish and settle, and ends the task. Survives connection loss by resubscribing. A panicking
    /// handler counts as `Outcome::Retry`. Aborting the returned task drops running handlers and
    /// closes the channel, so RabbitMQ redelivers their messages, like after a crash.
    pub fn consume<H, F>(&self, queue: &str, handler: H, shutdown: CancellationToken) -> tokio::task::JoinHandle<()>
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let span = info_span!("queue_consumer", queue = %queue);
        tokio::spawn(crate::consumer::run(self.clone(), queue.to_owned(), Arc::new(handler), shutdown).instrument(span))
    }

    /// The parking lot of work queue `queue`, oldest first, left in place.
    ///
    /// Reads by taking every message without acking and handing them all back at the end, so a
    /// concurrent call sees an empty lot; it is meant for operators and tests, not for hot paths.
    pub async fn parked(&self, queue: &str) -> Result<Vec<Parked>, QueueError> {
        let topo = self.topology(queue)?;
        self.with_channel(|ch| async move {
            // Bound the walk by the count at the start: messages parked meanwhile are not ours to wait for.
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let total = ch.queue_declare(topo.parked.clone(), passive, FieldTable::default()).await?.message_count();
            let mut out = Vec::new();
            let mut last = None;
            for _ in 0..total {
                let Some(msg) = ch.basic_get(topo.parked.clone(), BasicGetOptions { no_ack: false }).await? else { break };
                out.push(parked_from(&msg.delivery));
                last = Some(msg.delivery.acker);
            }
            if let Some(last) = last {
                // Hand everything back: nack(multiple, requeue) returns every message we hold.
                last.nack(BasicNackOptions { multiple: true, requeue: true }).await?;
                // A quorum queue applies the return a moment later; wait for it,
                // so the next reader (a replay) finds the lot where it was.
                for _ in 0..40 {
                    let now = ch.queue_declare(topo.parked.clone(), passive, FieldTable::default()).await?.message_count();
                    if now as usize >= out.len() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Puts the parked messages `pick` chooses back on work queue `queue` as fresh messages (the
    /// publisher's headers, attempt count reset) and leaves the others parked, in order. Returns how
    /// many went back. An operator's tool (`blaze jobs replay`): each message is republished
    /// (confirmed) before its parked copy is acked, so a failure midway duplicates at most one
    /// message and loses none; handlers are idempotent by design.
    pub async fn replay_parked<F>(&self, queue: &str, mut pick: F) -> Result<usize, QueueError>
    where
        F: FnMut(&Parked) -> bool,
    {
        let topo = self.topology(queue)?;
        let session = self.inner.link.session(CONNECT_WAIT).await?;
        let ch = session.channel().await?;
        let result = async {
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let total = ch.queue_declare(topo.parked.clone(), passive, FieldTable::default()).await?.message_count();
            let mut kept = Vec::new();
            let mut replayed = 0;
            let mut misses = 0;
            let mut seen = 0;
            while seen < total {
                // A quorum queue applies returns (another reader's hand-back)
                // a moment later: the count may run ahead of what `get` sees.
                let Some(msg) = ch.basic_get(topo.parked.clone(), BasicGetOptions { no_ack: false }).await? else {
                    misses += 1;
                    if misses > 40 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                seen += 1;
                let parked = parked_from(&msg.delivery);
                if pick(&parked) {
                    self.publish_to(&topo.main, &parked.body, headers::to_table(&parked.headers)?).await?;
                    msg.delivery.acker.ack(BasicAckOptions::default()).await?;
                    replayed += 1;
                } else {
                    kept.push(msg.delivery.acker);
                }
            }
            for acker in kept {
                acker.nack(BasicNackOptions { multiple: false, requeue: true }).await?;
            }
            Ok::<_, QueueError>(replayed)
        }
        .await;
        if ch.status().connected() {
            let _ = ch.close(200, "OK".into()).await;
        }
        result
    }

    /// Deletes the main, retry and parked queues of each work queue (with their messages).
    pub async fn delete_queues(&self, queues: &[&str]) -> Result<(), QueueError> {
        let topos = queues.iter().map(|q| self.topology(q)).collect::<Result<Vec<_>, _>>()?;
        self.with_channel(|ch| async move {
            for name in topos.iter().flat_map(Topology::all) {
                ch.queue_delete(name.clone(), QueueDeleteOptions::default()).await?;
            }
            Ok(())
        })
        .await
    }

    /// Closes the connection and stops reconnecting. Cancel consumers' shutdown tokens first so
    /// they can settle what they hold.
    pub async fn close(&self) {
        self.inner.link.stop().await;
    }

    /// Test hook: closes the current AMQP connection the way a network failure would end it for
    /// this process; the broker then reconnects like after a real outage.
    #[doc(hidden)]
    pub async fn simulate_connection_loss(&self) {
        self.inner.link.sever().await;
    }

    fn topology(&self, queue: &str) -> Result<Topology, QueueError> {
        Topology::new(&self.inner.cfg.prefix, queue)
    }

    pub(crate) async fn session(&self) -> Option<Arc<Session>> {
        self.inner.link.next_session().await
    }

    pub(crate) fn max_attempts(&self) -> u32 {
        self.inner.cfg.max_attempts
    }

    /// Publishes a copy of a message to `topo`'s parking lot with the reason and attempt count.
    pub(crate) async fn park(
        &self,
        topo: &Topology,
        body: &[u8],
        headers: &BTreeMap<String, String>,
        error: &str,
        attempts: u32,
    ) -> Result<(), QueueError> {
        self.publish_to(&topo.parked, body, parked_headers(headers, error, attempts)?).await
    }

    pub(crate) fn check_connection(&self) {
        self.inner.link.check_now();
    }

    /// Runs `op` on a channel of its own, closed afterwards (a channel error closes it anyway).
    async fn with_channel<T, F, Fut>(&self, op: F) -> Result<T, QueueError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = Result<T, lapin::Error>>,
    {
        let session = self.inner.link.session(CONNECT_WAIT).await?;
        let ch = session.channel().await?;
        let result = op(ch.clone()).await;
        if ch.status().connected() {
            let _ = ch.close(200, "OK".into()).await;
        }
        result.map_err(|e| {
            if !e.is_amqp_soft_error() {
                self.check_connection();
            }
            QueueError::from(e)
        })
    }

    /// Confirmed, mandatory publish to the default exchange with `routing_key` (a queue name).
    async fn publish_to(&self, routing_key: &ShortString, body: &[u8], headers: FieldTable) -> Result<(), QueueError> {
        let deadline = Instant::now() + CONNECT_WAIT;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let session = self.inner.link.session(wait).await?;
            match publish_once(&session, routing_key, body, headers.clone()).await {
                Err(QueueError::Connect(e)) => {
                    self.check_connection();
                    if Instant::now() + REPUBLISH_PAUSE >= deadline {
                        return Err(QueueError::Connect(e));
                    }
                    debug!(error = %e, "publish hit a connection error; trying again on the next connection");
                    tokio::time::sleep(REPUBLISH_PAUSE).await;
                }
                done => return done,
            }
        }
    }
}

async fn publish_once(session: &Session, routing_key: &ShortString, body: &[u8], headers: FieldTable) -> Result<(), QueueError> {
    let ch = session.publisher().await?;
    let props = BasicProperties::default().with_delivery_mode(PERSISTENT).with_headers(headers);
    // mandatory: without it a message for an undeclared queue would be confirmed and silently dropped.
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = ch.basic_publish(ShortString::default(), routing_key.clone(), options, body, props).await?;
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Err(_) => Err(QueueError::Timeout),
        Ok(confirmation) => match confirmation? {
            // RabbitMQ *acks* an unroutable mandatory message after returning it (basic.return).
            Confirmation::Ack(Some(_returned)) => Err(QueueError::Unroutable),
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Nack(_) => Err(QueueError::Nacked),
            Confirmation::NotRequested => Err(QueueError::Protocol("publisher confirms are not enabled on the channel".into())),
        },
    }
}

fn parked_from(d: &lapin::message::Delivery) -> Parked {
    let table = d.properties.headers().as_ref();
    let mut headers = headers::from_table(table);
    let error = headers.remove(ERROR_HEADER).unwrap_or_default();
    let attempts = headers.remove(ATTEMPTS_HEADER).and_then(|a| a.parse().ok()).unwrap_or(0);
    Parked { body: d.data.clone(), headers, error, attempts }
}

/// Headers of a parked copy: the publisher's headers plus why and after how many attempts.
fn parked_headers(headers: &BTreeMap<String, String>, error: &str, attempts: u32) -> Result<FieldTable, QueueError> {
    let mut table = headers::to_table(headers)?;
    table.insert(ERROR_HEADER.into(), AMQPValue::LongString(LongString::from(error)));
    table.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongString(LongString::from(attempts.to_string())));
    Ok(table)
}

//! The consumer task: subscribe, run handlers, settle their outcomes, resubscribe after losses.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::{FieldTable, ShortString};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::backoff::Backoff;
use crate::link::Session;
use crate::topology::Topology;
use crate::{Broker, Delivery, Outcome, QueueError, headers};

pub(crate) async fn run<H, F>(broker: Broker, queue: String, handler: Arc<H>, shutdown: CancellationToken)
where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let topo = match Topology::new(&broker.config().prefix, &queue) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            error!(error = %e, "cannot consume");
            return;
        }
    };
    // Handlers outlive the subscription they came from: when the connection drops, a running
    // handler finishes (its ack then fails and RabbitMQ redelivers) instead of being cut off halfway.
    // Dropping this set (the task aborted) aborts them, which is the crash case.
    let mut handlers = JoinSet::new();
    let mut backoff = Backoff::reconnect();
    loop {
        let session = tokio::select! {
            s = broker.session() => s,
            () = shutdown.cancelled() => break,
        };
        let Some(session) = session else {
            warn!("broker closed; consumer stops");
            break;
        };
        let sub = Subscription { broker: &broker, topo: &topo, handler: &handler, shutdown: &shutdown };
        match sub.run(&session, &mut handlers, &mut backoff).await {
            Ok(()) => break,
            Err(e) => {
                broker.check_connection();
                let delay = backoff.next_delay();
                warn!(error = %e, resubscribe_in = ?delay, "consumer interrupted");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => break,
                }
            }
        }
    }
    while let Some(joined) = handlers.join_next().await {
        log_join(joined);
    }
    info!("consumer stopped");
}

struct Subscription<'a, H> {
    broker: &'a Broker,
    topo: &'a Arc<Topology>,
    handler: &'a Arc<H>,
    shutdown: &'a CancellationToken,
}

impl<H, F> Subscription<'_, H>
where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    /// Consumes on a fresh channel of `session` until shutdown (`Ok`) or until the channel or
    /// connection fails (`Err`).
    async fn run(&self, session: &Session, handlers: &mut JoinSet<()>, backoff: &mut Backoff) -> Result<(), QueueError> {
        let ch = session.channel().await?;
        // Per-consumer prefetch bounds the handlers running at once, and so what a crash hands back.
        ch.basic_qos(self.broker.config().prefetch, BasicQosOptions { global: false }).await?;
        // 44 bytes, well within a short string, so `from` cannot panic.
        let tag = ShortString::from(format!("blaze-queue-{}", uuid::Uuid::new_v4().simple()));
        let options = BasicConsumeOptions { no_ack: false, ..BasicConsumeOptions::default() };
        let mut deliveries = ch.basic_consume(self.topo.main.clone(), tag.clone(), options, FieldTable::default()).await?;
        backoff.reset();
        info!(consumer_tag = %tag, "consuming");

        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(joined) = handlers.join_next(), if !handlers.is_empty() => log_join(joined),
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        handlers.spawn(process(self.broker.clone(), self.topo.clone(), self.handler.clone(), delivery));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    // The stream also ends when RabbitMQ cancels the consumer (its queue was deleted).
                    None if ch.status().connected() => {
                        return Err(QueueError::Protocol(format!("RabbitMQ cancelled the consumer of {}", self.topo.main)));
                    }
                    None => return Err(QueueError::Connect("the consumer's channel closed".into())),
                },
            }
        }

        // Shutdown: stop deliveries first, then let running handlers settle on this still-open
        // channel. Messages prefetched but not started go back to the queue when it closes.
        if let Err(e) = ch.basic_cancel(tag, BasicCancelOptions::default()).await {
            debug!(error = %e, "cancelling the consumer");
        }
        while let Some(joined) = handlers.join_next().await {
            log_join(joined);
        }
        if let Err(e) = ch.close(200, "OK".into()).await {
            debug!(error = %e, "closing the consumer channel");
        }
        Ok(())
    }
}

/// One delivery: run the handler (panics included), then ack, retry or park.
async fn process<H, F>(broker: Broker, topo: Arc<Topology>, handler: Arc<H>, delivery: lapin::message::Delivery)
where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    let table = delivery.properties.headers().as_ref();
    let attempt = headers::attempt(table, topo.main.as_str());
    let headers = headers::from_table(table);
    let span = info_span!(
        "queue_delivery",
        queue = %topo.main,
        attempt,
        redelivered = delivery.redelivered,
        // The caller's telemetry layer turns this into the span's remote parent.
        traceparent = headers.get("traceparent").map(String::as_str),
    );
    async move {
        let input = Delivery { body: delivery.data.clone(), headers: headers.clone(), attempt, redelivered: delivery.redelivered };
        let outcome = run_handler(&*handler, input).await;
        let settle = Settled { broker: &broker, topo: &topo, acker: &delivery.acker, body: &delivery.data, headers: &headers, attempt };
        settle.apply(outcome).await;
    }
    .instrument(span)
    .await;
}

/// A panic inside the handler (building or polling its future) is a failed attempt, not the end
/// of the consumer.
async fn run_handler<H, F>(handler: &H, input: Delivery) -> Outcome
where
    H: Fn(Delivery) -> F,
    F: Future<Output = Outcome>,
{
    // AssertUnwindSafe: after a panic we only read the payload; no state of the handler is reused
    // by us, and the handler's own shared state is its business, as with any panic in a task.
    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(input))) {
        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    result.unwrap_or_else(|panic| {
        let message = panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str));
        let error = match message {
            Some(m) => format!("handler panicked: {m}"),
            None => "handler panicked".to_owned(),
        };
        error!(%error, "handler panicked");
        Outcome::Retry(error)
    })
}

struct Settled<'a> {
    broker: &'a Broker,
    topo: &'a Topology,
    acker: &'a Acker,
    body: &'a [u8],
    headers: &'a BTreeMap<String, String>,
    attempt: u32,
}

impl Settled<'_> {
    async fn apply(&self, outcome: Outcome) {
        // The channel died while the handler ran: RabbitMQ has already put the message back, and
        // parking a copy now would leave it both parked and queued.
        if !self.acker.usable() {
            debug!(?outcome, "channel gone before settling; RabbitMQ redelivers the message");
            return;
        }
        match outcome {
            Outcome::Ack => self.ack().await,
            Outcome::Retry(error) if self.attempt >= self.broker.max_attempts() => {
                warn!(%error, "attempts used up; parking the message");
                self.park(&error).await;
            }
            Outcome::Retry(error) => {
                info!(%error, "handler asked for a retry");
                self.to_retry_queue().await;
            }
            Outcome::Park(error) => {
                warn!(%error, "handler parked the message");
                self.park(&error).await;
            }
        }
    }

    /// Copy to the parking lot first, ack second: a crash in between duplicates the message
    /// (parked and redelivered) rather than losing it.
    async fn park(&self, error: &str) {
        match self.broker.park(self.topo, self.body, self.headers, error, self.attempt).await {
            Ok(()) => self.ack().await,
            Err(e) => {
                // Not parked, so it must not be acked: take the retry path and try again later.
                warn!(error = %e, "cannot park the message; sending it through the retry queue");
                self.to_retry_queue().await;
            }
        }
    }

    async fn ack(&self) {
        log_settle("ack", self.acker.ack(BasicAckOptions::default()).await);
    }

    /// reject without requeue = dead-letter into the retry queue, which is what counts the attempt.
    async fn to_retry_queue(&self) {
        log_settle("reject", self.acker.reject(BasicRejectOptions { requeue: false }).await);
    }
}

fn log_settle(what: &str, result: Result<bool, lapin::Error>) {
    match result {
        Ok(true) => {}
        // The channel closed between the check and the call; the broker redelivers.
        Ok(false) => debug!(what, "delivery already settled or its channel is gone"),
        Err(e) => warn!(what, error = %e, "could not settle the delivery; RabbitMQ will redeliver it"),
    }
}

fn log_join(joined: Result<(), JoinError>) {
    // Handler panics are caught in `run_handler`; this only sees panics of our own settling code.
    if let Err(e) = joined
        && e.is_panic()
    {
        error!(error = %e, "delivery task panicked");
    }
}

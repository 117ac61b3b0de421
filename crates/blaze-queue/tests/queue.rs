//! Behaviour of work queues against a real RabbitMQ (`BLAZE_TEST_AMQP_URL`, default
//! amqp://guest:guest@127.0.0.1:5672/%2f). Every test owns a unique prefix and deletes its queues.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blaze_queue::{Broker, Delivery, Outcome, Parked, QueueConfig, QueueError};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use support::{RETRY_DELAY, Scope, headers, recording};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(600);
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

async fn stop(shutdown: CancellationToken, consumer: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(WAIT, consumer).await.expect("consumer stops on shutdown").expect("consumer task ended cleanly");
}

/// `parked()` until it shows `n` messages (parking happens after the handler returns).
async fn wait_for_parked(broker: &Broker, queue: &str, n: usize) -> Vec<Parked> {
    let deadline = Instant::now() + WAIT;
    loop {
        let parked = broker.parked(queue).await.expect("parked");
        if parked.len() >= n || Instant::now() > deadline {
            return parked;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn published_message_is_delivered_once_with_attempt_1_and_its_headers() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    scope.declare(&broker, "jobs").await;
    let (handler, mut seen) = recording(|_| Outcome::Ack);
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());

    let sent = headers(&[("traceparent", TRACEPARENT), ("tenant", "org-1")]);
    broker.publish("jobs", b"job-1", &sent).await.expect("publish");

    let d = seen.next(WAIT).await;
    assert_eq!(d, Delivery { body: b"job-1".to_vec(), headers: sent, attempt: 1, redelivered: false });
    seen.none_within(QUIET).await;
    stop(shutdown, consumer).await;
    assert_eq!(scope.message_count(&scope.full("jobs")).await, Some(0), "acked, so not handed back when the channel closed");

    broker.delete_queues(&["jobs"]).await.expect("delete_queues");
    for suffix in ["", ".retry", ".parked"] {
        let name = format!("{}{suffix}", scope.full("jobs"));
        assert_eq!(scope.message_count(&name).await, None, "{name} still exists");
    }
}

#[tokio::test]
async fn replaying_parked_messages_puts_the_chosen_ones_back_with_fresh_attempts() {
    let scope = Scope::new();
    let broker = scope.broker().await; // max_attempts 3
    scope.declare(&broker, "jobs").await;
    // Poison until the operator fixes the cause; then `fixed` makes the handler succeed.
    let fixed = Arc::new(AtomicBool::new(false));
    let healed = fixed.clone();
    let (handler, mut seen) =
        recording(move |d| if healed.load(Ordering::SeqCst) { Outcome::Ack } else { Outcome::Retry(format!("boom {}", d.attempt)) });
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());

    let sent = headers(&[("traceparent", TRACEPARENT)]);
    for body in [&b"first"[..], b"second", b"third"] {
        broker.publish("jobs", body, &sent).await.expect("publish");
    }
    for _ in 0..9 {
        seen.next(WAIT).await;
    }
    assert_eq!(wait_for_parked(&broker, "jobs", 3).await.len(), 3);

    fixed.store(true, Ordering::SeqCst);
    let replayed = broker.replay_parked("jobs", |p| p.body != b"second").await.expect("replay");
    assert_eq!(replayed, 2);
    let mut back = Vec::new();
    for _ in 0..2 {
        let d = seen.next(WAIT).await;
        assert_eq!((d.attempt, &d.headers), (1, &sent), "a replayed message starts over, with the publisher's headers only");
        back.push(d.body);
    }
    back.sort();
    assert_eq!(back, [b"first".to_vec(), b"third".to_vec()]);
    seen.none_within(QUIET).await;
    let left = broker.parked("jobs").await.expect("parked");
    assert_eq!(left.iter().map(|p| p.body.as_slice()).collect::<Vec<_>>(), [&b"second"[..]], "the one not chosen stays parked");
    stop(shutdown, consumer).await;
}

#[tokio::test]
async fn declare_is_idempotent_and_refuses_a_changed_retry_delay() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    scope.declare(&broker, "jobs").await;
    broker.declare("jobs").await.expect("declaring again is a no-op");

    let other = Broker::connect(QueueConfig { retry_delay: Duration::from_secs(9), ..scope.config() }).await.expect("connect");
    let err = other.declare("jobs").await.expect_err("retry queue exists with another TTL");
    assert!(matches!(err, QueueError::Protocol(ref m) if m.contains("PRECONDITION_FAILED")), "{err:?}");
}

#[tokio::test]
async fn retry_redelivers_after_the_delay_with_increasing_attempts() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    scope.declare(&broker, "jobs").await;
    let (handler, mut seen) = recording(|d| if d.attempt < 3 { Outcome::Retry(format!("flaky {}", d.attempt)) } else { Outcome::Ack });
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());

    broker.publish("jobs", b"job-1", &headers(&[("traceparent", TRACEPARENT)])).await.expect("publish");
    let mut attempts = Vec::new();
    let mut at = Vec::new();
    for _ in 0..3 {
        let d = seen.next(WAIT).await;
        assert_eq!(d.body, b"job-1");
        assert_eq!(d.headers, headers(&[("traceparent", TRACEPARENT)]), "x-death and friends are not the caller's headers");
        assert!(!d.redelivered);
        attempts.push(d.attempt);
        at.push(Instant::now());
    }
    assert_eq!(attempts, [1, 2, 3]);
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= RETRY_DELAY - Duration::from_millis(20), "retried after {gap:?}, before the retry delay");
    }
    seen.none_within(QUIET).await;
    assert!(broker.parked("jobs").await.expect("parked").is_empty());
    stop(shutdown, consumer).await;
}

#[tokio::test]
async fn poison_message_is_parked_after_max_attempts_with_the_last_error() {
    let scope = Scope::new();
    let broker = scope.broker().await; // max_attempts 3
    scope.declare(&broker, "jobs").await;
    let (handler, mut seen) = recording(|d| Outcome::Retry(format!("boom on attempt {}", d.attempt)));
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());

    let sent = headers(&[("traceparent", TRACEPARENT)]);
    broker.publish("jobs", b"poison", &sent).await.expect("publish");
    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(seen.next(WAIT).await.attempt);
    }
    assert_eq!(attempts, [1, 2, 3]);

    let expected = vec![Parked { body: b"poison".to_vec(), headers: sent, error: "boom on attempt 3".into(), attempts: 3 }];
    assert_eq!(wait_for_parked(&broker, "jobs", 1).await, expected);
    seen.none_within(QUIET).await;
    assert_eq!(broker.parked("jobs").await.expect("parked"), expected, "reading the parking lot leaves it in place");
    assert_eq!(scope.message_count(&scope.full("jobs")).await, Some(0));
    assert_eq!(scope.message_count(&format!("{}.retry", scope.full("jobs"))).await, Some(0));
    stop(shutdown, consumer).await;
}

#[tokio::test]
async fn park_outcome_skips_the_retries() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    scope.declare(&broker, "jobs").await;
    let (handler, mut seen) = recording(|_| Outcome::Park("malformed job".into()));
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());

    broker.publish("jobs", b"bad", &headers(&[("k", "v")])).await.expect("publish");
    assert_eq!(seen.next(WAIT).await.attempt, 1);
    let parked = wait_for_parked(&broker, "jobs", 1).await;
    assert_eq!(parked, [Parked { body: b"bad".to_vec(), headers: headers(&[("k", "v")]), error: "malformed job".into(), attempts: 1 }]);
    seen.none_within(QUIET).await;
    stop(shutdown, consumer).await;
}

#[tokio::test]
async fn handler_panic_is_a_retry_and_the_consumer_keeps_going() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    scope.declare(&broker, "jobs").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |d: Delivery| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(d.attempt);
            if d.attempt == 1 {
                panic!("handler bug");
            }
            Outcome::Ack
        }
    };
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());

    broker.publish("jobs", b"job-1", &headers(&[])).await.expect("publish");
    assert_eq!(tokio::time::timeout(WAIT, rx.recv()).await.expect("first delivery"), Some(1));
    assert_eq!(tokio::time::timeout(WAIT, rx.recv()).await.expect("delivery after the panic"), Some(2));
    assert!(tokio::time::timeout(QUIET, rx.recv()).await.is_err(), "acked on attempt 2");
    assert!(!consumer.is_finished());
    assert!(broker.parked("jobs").await.expect("parked").is_empty());
    stop(shutdown, consumer).await;
}

#[tokio::test]
async fn publishing_to_an_undeclared_queue_is_unroutable() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    assert_eq!(broker.publish("nowhere", b"lost", &headers(&[])).await, Err(QueueError::Unroutable));

    // The returned message did not break the publisher.
    scope.declare(&broker, "jobs").await;
    broker.publish("jobs", b"found", &headers(&[])).await.expect("publish after an unroutable one");
    assert_eq!(scope.message_count(&scope.full("jobs")).await, Some(1));
}

#[tokio::test]
async fn publishing_to_a_full_reject_publish_queue_is_nacked() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    let full = scope.full("full");
    scope.track(&[&full]);
    let conn = support::raw_connection().await;
    let ch = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert("x-overflow".into(), AMQPValue::LongString(LongString::from("reject-publish")));
    ch.queue_declare(full.as_str().into(), QueueDeclareOptions::durable(), args).await.expect("declare the bounded queue");
    let _ = conn.close(200, "OK".into()).await;

    broker.publish("full", b"one", &headers(&[])).await.expect("first fits");
    assert_eq!(broker.publish("full", b"two", &headers(&[])).await, Err(QueueError::Nacked));
}

#[tokio::test]
async fn message_held_by_a_dead_consumer_is_redelivered_to_another_and_acked_once() {
    let scope = Scope::new();
    let (worker_a, worker_b) = (scope.broker().await, scope.broker().await);
    scope.declare(&worker_a, "jobs").await;

    let (started_tx, mut started) = mpsc::unbounded_channel();
    let finished = Arc::new(AtomicBool::new(false));
    let finished_in_a = finished.clone();
    let slow = move |d: Delivery| {
        let (started_tx, finished) = (started_tx.clone(), finished_in_a.clone());
        async move {
            let _ = started_tx.send(d);
            tokio::time::sleep(Duration::from_secs(60)).await;
            finished.store(true, Ordering::SeqCst);
            Outcome::Ack
        }
    };
    let consumer_a = worker_a.consume("jobs", slow, CancellationToken::new());
    worker_a.publish("jobs", b"job-1", &headers(&[])).await.expect("publish");
    let first = tokio::time::timeout(WAIT, started.recv()).await.expect("A got the job").expect("A's handler");
    assert!(!first.redelivered);

    // A dies holding the unacked message.
    consumer_a.abort();
    assert!(consumer_a.await.expect_err("aborted").is_cancelled());

    let (handler, mut seen) = recording(|_| Outcome::Ack);
    let shutdown = CancellationToken::new();
    let consumer_b = worker_b.consume("jobs", handler, shutdown.clone());
    let again = seen.next(WAIT).await;
    assert_eq!((again.body.as_slice(), again.attempt, again.redelivered), (&b"job-1"[..], 1, true));
    seen.none_within(QUIET).await;
    stop(shutdown, consumer_b).await;
    assert_eq!(scope.message_count(&scope.full("jobs")).await, Some(0), "B acked it");
    assert!(!finished.load(Ordering::SeqCst), "A's handler was cut off");
}

#[tokio::test]
async fn publish_and_consume_keep_working_after_the_connection_is_lost() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    scope.declare(&broker, "jobs").await;
    let (handler, mut seen) = recording(|_| Outcome::Ack);
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());

    broker.publish("jobs", b"before", &headers(&[])).await.expect("publish");
    assert_eq!(seen.next(WAIT).await.body, b"before");
    assert_eq!(broker.connections(), 1);

    broker.simulate_connection_loss().await;
    assert!(!broker.is_connected(), "the connection is really gone");
    broker.publish("jobs", b"after", &headers(&[])).await.expect("publish waits for the new connection");
    let d = seen.next(Duration::from_secs(10)).await;
    assert_eq!((d.body.as_slice(), d.attempt), (&b"after"[..], 1));
    assert_eq!(broker.connections(), 2);
    assert!(broker.is_connected());
    seen.none_within(QUIET).await;
    stop(shutdown, consumer).await;
}

#[tokio::test]
async fn shutdown_lets_a_running_handler_finish_and_ack() {
    let scope = Scope::new();
    let broker = scope.broker().await;
    scope.declare(&broker, "jobs").await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let handler = move |_: Delivery| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(300)).await;
            Outcome::Ack
        }
    };
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());
    broker.publish("jobs", b"job-1", &headers(&[])).await.expect("publish");
    tokio::time::timeout(WAIT, started.recv()).await.expect("handler started");

    stop(shutdown, consumer).await;
    assert_eq!(scope.message_count(&scope.full("jobs")).await, Some(0), "acked before the channel closed");
}

#[tokio::test]
async fn connect_fails_fast_when_rabbitmq_is_unreachable() {
    let cfg = QueueConfig { url: "amqp://guest:guest@127.0.0.1:1/%2f".into(), ..Scope::new().config() };
    let started = Instant::now();
    let err = Broker::connect(cfg).await.expect_err("nothing listens on port 1");
    assert!(matches!(err, QueueError::Connect(_)), "{err:?}");
    assert!(started.elapsed() < WAIT);
}

#[tokio::test]
async fn a_dropped_tcp_connection_is_replaced_and_the_held_message_comes_back() {
    let scope = Scope::new();
    let wire = support::Wire::start().await;
    let broker = Broker::connect(QueueConfig { url: wire.url.clone(), ..scope.config() }).await.expect("connect through the wire");
    scope.declare(&broker, "jobs").await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |d: Delivery| {
        let tx = tx.clone();
        async move {
            let hold = !d.redelivered;
            let _ = tx.send(d);
            if hold {
                // Still working when the network fails: the ack that follows goes nowhere.
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
            Outcome::Ack
        }
    };
    let shutdown = CancellationToken::new();
    let consumer = broker.consume("jobs", handler, shutdown.clone());
    broker.publish("jobs", b"job-1", &headers(&[])).await.expect("publish");
    let first = tokio::time::timeout(WAIT, rx.recv()).await.expect("delivered").expect("handler");
    assert!(!first.redelivered);

    wire.cut();
    let again = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("redelivered after reconnect").expect("handler");
    assert_eq!((again.body.as_slice(), again.attempt, again.redelivered), (&b"job-1"[..], 1, true));
    assert_eq!(broker.connections(), 2);

    broker.publish("jobs", b"job-2", &headers(&[])).await.expect("publish on the new connection");
    let next = tokio::time::timeout(WAIT, rx.recv()).await.expect("delivered").expect("handler");
    assert_eq!(next.body, b"job-2");
    assert!(tokio::time::timeout(QUIET + Duration::from_millis(500), rx.recv()).await.is_err(), "each job acked once");
    stop(shutdown, consumer).await;
    assert_eq!(scope.message_count(&scope.full("jobs")).await, Some(0));
}

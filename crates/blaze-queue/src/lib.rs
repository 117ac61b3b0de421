//! Work queues on RabbitMQ, through lapin 4.
//!
//! Owns: the topology of a work queue (a quorum main queue, a TTL retry queue that dead-letters back
//! into it, a parking lot for poison messages), publishing with publisher confirms, consumers with
//! manual acks that turn a handler's [`Outcome`] into ack / delayed retry / park, and getting back on
//! its feet after the connection to RabbitMQ is lost.
//!
//! Must not: know about jobs, tenants or config files (the caller maps its config to
//! [`QueueConfig`]), decode message bodies, or promise exactly-once delivery. Delivery is at least
//! once: a worker that dies holding a message gets it redelivered, and a publish retried after a lost
//! confirm may duplicate. Handlers must be idempotent.
//!
//! ```text
//!  publish ──► <prefix>.Q  (quorum) ──reject──► <prefix>.Q.retry (TTL = retry_delay) ──expire──┐
//!                 ▲                                                                            │
//!                 └────────────────────────────────────────────────────────────────────────────┘
//!              consumer: attempts used up / Outcome::Park ──publish+ack──► <prefix>.Q.parked
//! ```
//!
//! Reconnecting is done here rather than with lapin's `enable_auto_recover()`: we need a bounded wait
//! for publishers, our own backoff, and consumers that resubscribe with fresh channels; replaying the
//! old channels' state inside lapin hides exactly the moments we must reason about (acks on a dead
//! channel, confirms lost in flight).

mod backoff;
mod broker;
mod consumer;
mod headers;
mod link;
mod topology;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub use broker::Broker;

/// Header carrying the handler's last error on a parked message.
pub const ERROR_HEADER: &str = "x-blaze-error";
/// Header carrying the number of attempts a parked message had.
pub const ATTEMPTS_HEADER: &str = "x-blaze-attempts";

/// How long `publish`, `declare` and friends wait for a connection during an outage.
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long `publish` waits for the broker's confirm once the message is written.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a [`Broker`]; the caller maps its own configuration to this.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// `amqp://user:pass@host:5672/%2f` (the vhost is URL-encoded).
    pub url: String,
    /// Prefix of every queue name, so deployments and tests can share a vhost.
    pub prefix: String,
    /// Unacked deliveries per consumer, i.e. how many handlers run concurrently.
    pub prefetch: u16,
    /// Deliveries of a message before a `Retry` parks it (0 is treated as 1).
    pub max_attempts: u32,
    /// Time a retried message waits in the retry queue. Baked into the retry queue's
    /// `x-message-ttl`: changing it for an existing queue makes `declare` fail.
    pub retry_delay: Duration,
}

// Hand-written so the URL's password never reaches logs.
impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("prefetch", &self.prefetch)
            .field("max_attempts", &self.max_attempts)
            .field("retry_delay", &self.retry_delay)
            .finish()
    }
}

/// `amqp://user:secret@host/vhost` → `amqp://user:***@host/vhost`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Errors of this crate. Messages are fit for logs; none carries credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// No usable connection to RabbitMQ (also: none came back within [`CONNECT_WAIT`]).
    #[error("RabbitMQ unavailable: {0}")]
    Connect(String),
    /// A mandatory publish matched no queue: the work queue was not declared.
    #[error("message unroutable: no queue is bound to its routing key (was the queue declared?)")]
    Unroutable,
    /// The broker refused the message (e.g. a full queue with `x-overflow: reject-publish`).
    #[error("RabbitMQ refused the message (publisher nack)")]
    Nacked,
    /// The message was written but no confirm arrived within [`CONFIRM_TIMEOUT`]; it may or may
    /// not have been stored.
    #[error("no publisher confirm from RabbitMQ within {CONFIRM_TIMEOUT:?}")]
    Timeout,
    /// RabbitMQ rejected an operation, e.g. `declare` with arguments that differ from the existing
    /// queue's, or reading the parking lot of an undeclared queue.
    #[error("RabbitMQ rejected the operation: {0}")]
    Protocol(String),
    /// A queue name, header or config value that AMQP cannot carry (names are limited to 255 bytes).
    #[error("invalid queue input: {0}")]
    Invalid(String),
}

impl From<lapin::Error> for QueueError {
    fn from(e: lapin::Error) -> Self {
        use lapin::ErrorKind;
        match e.kind() {
            // Soft errors close only the channel: the connection is fine, the request was wrong.
            _ if e.is_amqp_soft_error() => QueueError::Protocol(e.to_string()),
            ErrorKind::ParsingError(_) | ErrorKind::SerialisationError(_) => QueueError::Protocol(e.to_string()),
            _ => QueueError::Connect(e.to_string()),
        }
    }
}

/// One message handed to a consumer's handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub body: Vec<u8>,
    /// The publisher's headers (e.g. `traceparent`), without the ones RabbitMQ adds itself.
    pub headers: BTreeMap<String, String>,
    /// 1 on the first delivery; counted from `x-death` after each pass through the retry queue.
    pub attempt: u32,
    /// The broker's redelivered flag: a consumer died (or its channel closed) holding this message,
    /// so the work may have been partly done already.
    pub redelivered: bool,
}

/// What a handler decided about a [`Delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done; remove the message.
    Ack,
    /// Try again after the retry delay, or park the message when the attempts are used up.
    Retry(String),
    /// Give up now: park the message with this error.
    Park(String),
}

/// A message in a work queue's parking lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub body: Vec<u8>,
    /// The original publisher's headers.
    pub headers: BTreeMap<String, String>,
    /// The handler's last error.
    pub error: String,
    /// Deliveries the message had before it was parked.
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_config_hides_the_password() {
        let cfg = QueueConfig {
            url: "amqp://guest:s3cret@127.0.0.1:5672/%2f".into(),
            prefix: "blaze".into(),
            prefetch: 4,
            max_attempts: 3,
            retry_delay: Duration::from_secs(5),
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("amqp://guest:***@127.0.0.1:5672/%2f"), "{shown}");
    }

    #[test]
    fn urls_without_a_password_are_shown_as_they_are() {
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(redact_url("amqp://user@host/%2f"), "amqp://user@host/%2f");
    }
}

//! Names and arguments of the three queues behind one work queue.
//!
//! Everything goes through the default exchange (every queue is bound to it under its own name), so
//! there are no exchanges or bindings to declare, keep in sync or clean up.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::QueueError;

/// The queues of work queue `Q` under a prefix: `<prefix>.Q`, `<prefix>.Q.retry`, `<prefix>.Q.parked`.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub(crate) main: ShortString,
    pub(crate) retry: ShortString,
    pub(crate) parked: ShortString,
}

impl Topology {
    pub(crate) fn new(prefix: &str, queue: &str) -> Result<Self, QueueError> {
        if queue.is_empty() {
            return Err(QueueError::Invalid("empty queue name".into()));
        }
        let main = format!("{prefix}.{queue}");
        // AMQP names are short strings (≤ 255 bytes); `lapin`'s `From<String>` would panic.
        let name = |s: String| {
            ShortString::try_new(s)
                .map_err(|_| QueueError::Invalid(format!("queue name {main:?} is too long for AMQP (255 bytes with suffixes)")))
        };
        Ok(Topology { retry: name(format!("{main}.retry"))?, parked: name(format!("{main}.parked"))?, main: name(main.clone())? })
    }

    /// Quorum (replicated, poison-aware) main queue; a rejected message is dead-lettered into the
    /// retry queue through the default exchange.
    pub(crate) fn main_args(&self) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-queue-type".into(), text("quorum"));
        t.insert("x-dead-letter-exchange".into(), text(""));
        t.insert("x-dead-letter-routing-key".into(), text(self.retry.as_str()));
        t
    }

    /// Holding pen: nobody consumes it, every message expires after `delay` and is dead-lettered back
    /// into the main queue. A per-queue TTL (not per-message `expiration`) because RabbitMQ only
    /// expires messages at the head of a queue, which is only correct when all share one TTL.
    pub(crate) fn retry_args(&self, delay: Duration) -> FieldTable {
        let mut t = FieldTable::default();
        // Validated in `Broker::connect` to fit; saturate rather than wrap just in case.
        let ttl_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        t.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
        t.insert("x-dead-letter-exchange".into(), text(""));
        t.insert("x-dead-letter-routing-key".into(), text(self.main.as_str()));
        t
    }

    /// Parking lot: durable and replicated, and deliberately without dead-lettering.
    pub(crate) fn parked_args(&self) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-queue-type".into(), text("quorum"));
        t
    }

    pub(crate) fn all(&self) -> [&ShortString; 3] {
        [&self.main, &self.retry, &self.parked]
    }
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg<'a>(t: &'a FieldTable, k: &str) -> &'a AMQPValue {
        t.inner().get(k).unwrap_or_else(|| panic!("missing argument {k}"))
    }

    #[test]
    fn names_are_prefixed_and_suffixed() {
        let t = Topology::new("blaze", "sandbox.jobs").unwrap();
        assert_eq!(t.main.as_str(), "blaze.sandbox.jobs");
        assert_eq!(t.retry.as_str(), "blaze.sandbox.jobs.retry");
        assert_eq!(t.parked.as_str(), "blaze.sandbox.jobs.parked");
    }

    #[test]
    fn main_queue_is_quorum_and_dead_letters_into_retry() {
        let t = Topology::new("p", "q").unwrap();
        let a = t.main_args();
        assert_eq!(arg(&a, "x-queue-type"), &text("quorum"));
        assert_eq!(arg(&a, "x-dead-letter-exchange"), &text(""));
        assert_eq!(arg(&a, "x-dead-letter-routing-key"), &text("p.q.retry"));
    }

    #[test]
    fn retry_queue_expires_into_main_after_the_delay() {
        let t = Topology::new("p", "q").unwrap();
        let a = t.retry_args(Duration::from_millis(1500));
        assert_eq!(arg(&a, "x-message-ttl"), &AMQPValue::LongLongInt(1500));
        assert_eq!(arg(&a, "x-dead-letter-exchange"), &text(""));
        assert_eq!(arg(&a, "x-dead-letter-routing-key"), &text("p.q"));
        assert!(!a.contains_key("x-queue-type"), "retry queue is a classic queue");
    }

    #[test]
    fn parked_queue_does_not_dead_letter() {
        let a = Topology::new("p", "q").unwrap().parked_args();
        assert_eq!(arg(&a, "x-queue-type"), &text("quorum"));
        assert!(!a.contains_key("x-dead-letter-exchange"));
    }

    #[test]
    fn names_longer_than_amqp_allows_are_rejected_not_panicking() {
        let long = "q".repeat(250);
        assert!(matches!(Topology::new("p", &long), Err(QueueError::Invalid(_))));
        assert!(matches!(Topology::new("p", ""), Err(QueueError::Invalid(_))));
        // The longest name (".parked") decides: 255 - len("p.") - len(".parked") = 246 fits.
        assert!(Topology::new("p", &"q".repeat(246)).is_ok());
        assert!(Topology::new("p", &"q".repeat(247)).is_err());
    }
}

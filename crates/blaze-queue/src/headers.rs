//! Message headers: the caller's string map ⇄ AMQP field tables, and the attempt count from `x-death`.

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::QueueError;

/// Headers RabbitMQ writes itself when it dead-letters or redelivers. They describe the transport,
/// not the message: dropping them makes headers round-trip, and means a parked message replayed into
/// its work queue by an operator starts again at attempt 1.
const BROKER_HEADERS: &[&str] = &[
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

/// The caller's headers as AMQP long strings (how W3C `traceparent` travels too).
pub(crate) fn to_table(headers: &BTreeMap<String, String>) -> Result<FieldTable, QueueError> {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        let key =
            ShortString::try_new(k.as_str()).map_err(|_| QueueError::Invalid(format!("header name longer than 255 bytes: {:.40}…", k)))?;
        table.insert(key, AMQPValue::LongString(LongString::from(v.as_str())));
    }
    Ok(table)
}

/// Scalar headers as strings. Tables and arrays (other producers' structured headers, `x-death`)
/// have no faithful string form and are left out.
pub(crate) fn from_table(table: Option<&FieldTable>) -> BTreeMap<String, String> {
    let Some(table) = table else { return BTreeMap::new() };
    table
        .into_iter()
        .filter(|(k, _)| !BROKER_HEADERS.contains(&k.as_str()))
        .filter_map(|(k, v)| Some((k.to_string(), scalar(v)?)))
        .collect()
}

fn scalar(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::DecimalValue(_) | AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) | AMQPValue::ByteArray(_) | AMQPValue::Void => {
            return None;
        }
    })
}

/// The delivery's attempt number: 1 + how often `main_queue` rejected it.
///
/// RabbitMQ keeps one `x-death` entry per (queue, reason) and increments its `count` on every
/// dead-lettering, e.g. `[{queue: Q.retry, reason: expired, count: 2}, {queue: Q, reason: rejected,
/// count: 2}]` on the third delivery. Only the main queue's rejections count: the retry queue's
/// expiries mirror them, and a message moved between work queues carries foreign entries.
pub(crate) fn attempt(table: Option<&FieldTable>, main_queue: &str) -> u32 {
    let Some(AMQPValue::FieldArray(deaths)) = table.and_then(|t| t.inner().get("x-death")) else { return 1 };
    let rejections = deaths
        .as_slice()
        .iter()
        .filter_map(|entry| match entry {
            AMQPValue::FieldTable(e) => Some(e),
            _ => None,
        })
        .filter(|e| text(e, "queue") == Some(main_queue) && text(e, "reason") == Some("rejected"))
        .filter_map(|e| count(e.inner().get("count")?))
        .max()
        .unwrap_or(0);
    u32::try_from(rejections).unwrap_or(u32::MAX).saturating_add(1)
}

fn text<'a>(entry: &'a FieldTable, key: &str) -> Option<&'a str> {
    match entry.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// `count` is an AMQP `l` (LongLongInt) from RabbitMQ; accept the other integer widths too.
fn count(v: &AMQPValue) -> Option<u64> {
    match v {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(queue: &str, reason: &str, count: i64) -> AMQPValue {
        let mut e = FieldTable::default();
        e.insert("queue".into(), AMQPValue::LongString(queue.into()));
        e.insert("reason".into(), AMQPValue::LongString(reason.into()));
        e.insert("count".into(), AMQPValue::LongLongInt(count));
        e.insert("exchange".into(), AMQPValue::LongString("".into()));
        AMQPValue::FieldTable(e)
    }

    fn with_deaths(deaths: Vec<AMQPValue>) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
        t
    }

    #[test]
    fn first_delivery_is_attempt_one() {
        assert_eq!(attempt(None, "p.q"), 1);
        assert_eq!(attempt(Some(&FieldTable::default()), "p.q"), 1);
    }

    #[test]
    fn attempt_counts_rejections_by_the_main_queue() {
        let t = with_deaths(vec![death("p.q.retry", "expired", 2), death("p.q", "rejected", 2)]);
        assert_eq!(attempt(Some(&t), "p.q"), 3);
    }

    #[test]
    fn other_queues_and_reasons_do_not_count() {
        let t = with_deaths(vec![death("p.q.retry", "expired", 7), death("p.other", "rejected", 5), death("p.q", "expired", 4)]);
        assert_eq!(attempt(Some(&t), "p.q"), 1);
    }

    #[test]
    fn garbage_in_x_death_is_attempt_one_not_a_panic() {
        let mut t = FieldTable::default();
        t.insert("x-death".into(), AMQPValue::LongString("nonsense".into()));
        assert_eq!(attempt(Some(&t), "p.q"), 1);
        let t = with_deaths(vec![AMQPValue::Boolean(true), death("p.q", "rejected", -3)]);
        assert_eq!(attempt(Some(&t), "p.q"), 1);
    }

    #[test]
    fn string_headers_round_trip_and_broker_headers_are_dropped() {
        let mut headers = BTreeMap::new();
        headers.insert("traceparent".to_owned(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
        headers.insert("tenant".to_owned(), "org-1".to_owned());
        let mut table = to_table(&headers).unwrap();
        assert!(matches!(table.inner().get("traceparent"), Some(AMQPValue::LongString(_))), "W3C headers travel as long strings");
        table.insert("x-death".into(), AMQPValue::FieldArray(vec![death("p.q", "rejected", 1)].into()));
        table.insert("x-first-death-queue".into(), AMQPValue::LongString("p.q".into()));
        table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(1));
        table.insert("retries".into(), AMQPValue::LongInt(2));
        let back = from_table(Some(&table));
        let mut expected = headers.clone();
        expected.insert("retries".to_owned(), "2".to_owned());
        assert_eq!(back, expected);
    }

    #[test]
    fn header_names_longer_than_amqp_allows_are_an_error() {
        let mut headers = BTreeMap::new();
        headers.insert("h".repeat(256), "v".to_owned());
        assert!(matches!(to_table(&headers), Err(QueueError::Invalid(_))));
    }
}

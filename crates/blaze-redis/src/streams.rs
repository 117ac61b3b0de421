//! Resumable event streams on Redis Streams.
//!
//! Every event is appended with `XADD` (capped) and announced on one pub/sub
//! channel in the same Lua call; the stream id is the event id clients resume
//! from (`Last-Event-ID`). Readers replay with `XRANGE` after their last id
//! and then wait for announcements, with a slow poll as a safety net for a
//! missed announcement. No reader blocks a Redis connection, so one process
//! can follow thousands of streams.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;
use fred::{clients::SubscriberClient, prelude::*, types::scripts::Script};
use tokio::sync::Notify;

use crate::{Redis, RedisResult};

const APPEND_LUA: &str = r#"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[2], KEYS[1])
return id
"#;

/// How long a reader waits for an announcement before polling anyway.
const POLL: Duration = Duration::from_millis(1000);

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub id: String,
    pub payload: Bytes,
}

/// Is `a` a valid stream id (`<ms>-<seq>`)? Resume ids come from clients.
pub fn is_stream_id(a: &str) -> bool {
    // Redis refuses `1-` (empty sequence), so an empty part is never valid.
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    match a.split_once('-') {
        Some((ms, seq)) => digits(ms) && digits(seq),
        None => digits(a),
    }
}

#[derive(Clone)]
pub struct EventHub {
    redis: Redis,
    append: Arc<Script>,
    channel: String,
    waiters: Arc<Mutex<HashMap<String, Weak<Notify>>>>,
}

impl EventHub {
    /// Start the announcement listener of this process.
    pub async fn start(redis: Redis, url: &str) -> RedisResult<EventHub> {
        let channel = redis.key("events");
        let waiters: Arc<Mutex<HashMap<String, Weak<Notify>>>> = Arc::default();
        let subscriber: SubscriberClient = Builder::from_config(Config::from_url(url)?)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_config(|c| c.fail_fast = false)
            .build_subscriber_client()?;
        subscriber.connect();
        let _ = tokio::time::timeout(Duration::from_secs(3), subscriber.wait_for_connect()).await;
        let _resubscribe = subscriber.manage_subscriptions();
        let mut rx = subscriber.message_rx();
        if let Err(e) = subscriber.subscribe(channel.clone()).await {
            tracing::warn!(error = %e, "event announcements unavailable; readers will poll");
        }
        let w = waiters.clone();
        tokio::spawn(async move {
            let _keep = subscriber;
            loop {
                match rx.recv().await {
                    Ok(msg) => {
                        let Some(stream) = msg.value.as_string() else { continue };
                        let notify = w.lock().expect("waiters poisoned").get(&stream).and_then(Weak::upgrade);
                        if let Some(n) = notify {
                            n.notify_waiters();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // wake everyone: they re-read from their last id
                        for n in w.lock().expect("waiters poisoned").values().filter_map(Weak::upgrade) {
                            n.notify_waiters();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(EventHub { redis, append: Arc::new(Script::from_lua(APPEND_LUA)), channel, waiters })
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Append an event; returns its id.
    pub async fn append(&self, stream: &str, payload: &[u8], max_len: u64, ttl: Duration) -> RedisResult<String> {
        let key = self.redis.key(stream);
        let id: String = self
            .append
            .evalsha_with_reload(
                self.redis.client(),
                vec![key, self.channel.clone()],
                vec![fred::types::Value::Bytes(Bytes::copy_from_slice(payload)), (max_len as i64).into(), (ttl.as_millis() as i64).into()],
            )
            .await?;
        Ok(id)
    }

    /// Events after `after` (exclusive; empty = from the start).
    pub async fn read_after(&self, stream: &str, after: &str, count: u64) -> RedisResult<Vec<StreamEvent>> {
        let key = self.redis.key(stream);
        let start = if after.is_empty() { "-".to_string() } else { format!("({after}") };
        let entries: Vec<(String, HashMap<String, Bytes>)> = self.redis.client().xrange(key, start, "+", Some(count)).await?;
        Ok(entries.into_iter().filter_map(|(id, mut fields)| fields.remove("e").map(|payload| StreamEvent { id, payload })).collect())
    }

    /// The last event of a stream.
    pub async fn last(&self, stream: &str) -> RedisResult<Option<StreamEvent>> {
        let key = self.redis.key(stream);
        let entries: Vec<(String, HashMap<String, Bytes>)> = self.redis.client().xrevrange(key, "+", "-", Some(1)).await?;
        Ok(entries.into_iter().next().and_then(|(id, mut f)| f.remove("e").map(|payload| StreamEvent { id, payload })))
    }

    fn waiter(&self, stream: &str) -> Arc<Notify> {
        let key = self.redis.key(stream);
        let mut w = self.waiters.lock().expect("waiters poisoned");
        if let Some(n) = w.get(&key).and_then(Weak::upgrade) {
            return n;
        }
        w.retain(|_, v| v.strong_count() > 0);
        let n = Arc::new(Notify::new());
        w.insert(key, Arc::downgrade(&n));
        n
    }

    /// Wait until events after `after` exist (or the poll interval passes),
    /// then return them (possibly none).
    pub async fn next_after(&self, stream: &str, after: &str, count: u64) -> RedisResult<Vec<StreamEvent>> {
        let notify = self.waiter(stream);
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let events = self.read_after(stream, after, count).await?;
        if !events.is_empty() {
            return Ok(events);
        }
        let _ = tokio::time::timeout(POLL, notified).await;
        self.read_after(stream, after, count).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_ids_are_validated() {
        assert!(is_stream_id("1700000000000-0"));
        assert!(is_stream_id("1700000000000"));
        assert!(!is_stream_id(""));
        assert!(!is_stream_id("abc-1"));
        assert!(!is_stream_id("1-2-3"));
        assert!(!is_stream_id("1 OR 1"));
        // Found by fuzzing: an empty sequence part used to pass.
        assert!(!is_stream_id("1-"));
        assert!(!is_stream_id("-1"));
    }
}

//! Durable turn events (DESIGN §6.4).
//!
//! Every event of a turn is appended to the turn's Redis Stream before
//! anyone sees it; the stream id is the SSE `id:`. Readers (the starting
//! request, a reconnect with `Last-Event-ID`, `GET …/stream?after=`) replay
//! from Redis and then follow live, on any replica.
//!
//! Keys (under the deployment prefix):
//! * `chat:<org>:<chat>:turn` → id of the chat's latest turn;
//! * `turn:<id>` → its [`TurnRecord`];
//! * `turn:<id>:events` → the events;
//! * `turn:<id>:cancel` → set when someone asked to cancel;
//! * `turns:active` → running turns by lease deadline (for the reaper).

use std::time::Duration;

use blaze_kit::{ApiError, ApiResult};
use blaze_proto::orchestrator::{self as pb, stream_chat_response::Event};
use blaze_redis::{Redis, streams::EventHub};
use fred::{
    prelude::*,
    types::{Expiration, SetOptions},
};
use futures::Stream;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Events per turn kept in the stream (a turn emits ≤ 20 chunks a second).
const MAX_EVENTS: u64 = 50_000;
const ACTIVE: &str = "turns:active";
/// A follower gives up after this many empty polls (about ten minutes).
const MAX_IDLE_POLLS: u32 = 600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TurnRecord {
    pub id: String,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub chat_id: i64,
    pub app_id: i64,
    pub user_id: Option<Uuid>,
    pub user_message_id: i64,
    pub assistant_message_id: i64,
    pub request_id: String,
    pub started_ms: i64,
}

impl TurnRecord {
    pub fn lease_name(org: Uuid, chat: i64) -> String {
        format!("chat:{org}:{chat}")
    }
}

fn stream_key(turn: &str) -> String {
    format!("turn:{turn}:events")
}

fn pointer_key(org: Uuid, chat: i64) -> String {
    format!("chat:{org}:{chat}:turn")
}

fn redis_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("event store unavailable: {e}"))
}

/// Encoded events and turn bookkeeping in Redis.
#[derive(Clone)]
pub struct Turns {
    hub: EventHub,
    ttl: Duration,
}

impl Turns {
    pub fn new(hub: EventHub, ttl: Duration) -> Self {
        Turns { hub, ttl }
    }

    fn redis(&self) -> &Redis {
        self.hub.redis()
    }

    fn ttl_secs(&self) -> i64 {
        self.ttl.as_secs().max(60) as i64
    }

    /// Record a new turn and make it the chat's current one.
    pub async fn register(&self, rec: &TurnRecord, lease_deadline_ms: i64) -> ApiResult<()> {
        let r = self.redis();
        let json = serde_json::to_string(rec).map_err(ApiError::internal)?;
        let ex = Some(Expiration::EX(self.ttl_secs()));
        let _: () = r.client().set(r.key(&format!("turn:{}", rec.id)), json, ex.clone(), None, false).await.map_err(redis_err)?;
        let _: () =
            r.client().set(r.key(&pointer_key(rec.org_id, rec.chat_id)), rec.id.clone(), ex, None, false).await.map_err(redis_err)?;
        self.touch(&rec.id, lease_deadline_ms).await
    }

    /// Move a running turn's deadline (with every lease renewal).
    pub async fn touch(&self, turn: &str, deadline_ms: i64) -> ApiResult<()> {
        let r = self.redis();
        let _: () = r.client().zadd(r.key(ACTIVE), None, None, false, false, (deadline_ms as f64, turn)).await.map_err(redis_err)?;
        Ok(())
    }

    /// Claim the right to finish a turn. Exactly one of the turn itself, the
    /// reaper and a newer turn wins.
    pub async fn claim_finish(&self, turn: &str) -> ApiResult<bool> {
        let r = self.redis();
        let n: i64 = r.client().zrem(r.key(ACTIVE), turn).await.map_err(redis_err)?;
        Ok(n == 1)
    }

    /// Turns whose lease deadline has passed.
    pub async fn overdue(&self, now_ms: i64) -> ApiResult<Vec<String>> {
        let r = self.redis();
        r.client().zrangebyscore(r.key(ACTIVE), "-inf", now_ms as f64, false, Some((0, 100))).await.map_err(redis_err)
    }

    pub async fn record(&self, turn: &str) -> ApiResult<Option<TurnRecord>> {
        let r = self.redis();
        let json: Option<String> = r.client().get(r.key(&format!("turn:{turn}"))).await.map_err(redis_err)?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// The chat's latest turn.
    pub async fn current(&self, org: Uuid, chat: i64) -> ApiResult<Option<TurnRecord>> {
        let r = self.redis();
        let id: Option<String> = r.client().get(r.key(&pointer_key(org, chat))).await.map_err(redis_err)?;
        match id {
            Some(id) => self.record(&id).await,
            None => Ok(None),
        }
    }

    pub async fn request_cancel(&self, turn: &str) -> ApiResult<()> {
        let r = self.redis();
        let _: () = r
            .client()
            .set(r.key(&format!("turn:{turn}:cancel")), "1", Some(Expiration::EX(self.ttl_secs())), Some(SetOptions::NX), false)
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    pub async fn cancel_requested(&self, turn: &str) -> bool {
        let r = self.redis();
        let n: Result<i64, _> = r.client().exists(r.key(&format!("turn:{turn}:cancel"))).await;
        matches!(n, Ok(1))
    }

    /// Append an event; returns its id.
    pub async fn append(&self, turn: &str, event: Event) -> ApiResult<String> {
        let bytes = pb::StreamChatResponse { event_id: String::new(), event: Some(event) }.encode_to_vec();
        self.hub.append(&stream_key(turn), &bytes, MAX_EVENTS, self.ttl).await.map_err(redis_err)
    }

    /// Whether the turn's stream already holds its terminal event.
    pub async fn finished(&self, turn: &str) -> ApiResult<bool> {
        let last = self.hub.last(&stream_key(turn)).await.map_err(redis_err)?;
        Ok(last.and_then(|e| pb::StreamChatResponse::decode(e.payload).ok()).is_some_and(|r| is_terminal(&r)))
    }

    /// Events of `turn` after `after` (exclusive), then live ones, until the
    /// terminal event.
    pub fn follow(
        &self,
        turn: String,
        after: String,
    ) -> impl Stream<Item = Result<pb::StreamChatResponse, tonic::Status>> + Send + 'static {
        let hub = self.hub.clone();
        let key = stream_key(&turn);
        let state = (hub, key, after, false, std::collections::VecDeque::new(), 0u32);
        futures::stream::unfold(state, |(hub, key, mut after, done, mut queue, mut idle)| async move {
            loop {
                if let Some(ev) = queue.pop_front() {
                    return Some((Ok(ev), (hub, key, after, done, queue, idle)));
                }
                if done {
                    return None;
                }
                let events = match hub.next_after(&key, &after, 256).await {
                    Ok(events) => events,
                    Err(e) => return Some((Err(tonic::Status::from(redis_err(e))), (hub, key, after, true, queue, idle))),
                };
                // A turn always ends with a terminal event (the reaper sees
                // to it); this only bounds a follower of a vanished stream.
                idle = if events.is_empty() { idle + 1 } else { 0 };
                if idle > MAX_IDLE_POLLS {
                    return None;
                }
                let mut finished = false;
                for e in events {
                    after = e.id.clone();
                    let Ok(mut msg) = pb::StreamChatResponse::decode(e.payload) else { continue };
                    msg.event_id = e.id;
                    finished = is_terminal(&msg);
                    queue.push_back(msg);
                    if finished {
                        break;
                    }
                }
                if finished {
                    return queue.pop_front().map(|ev| (Ok(ev), (hub, key, after, true, queue, idle)));
                }
            }
        })
    }
}

pub fn is_terminal(r: &pb::StreamChatResponse) -> bool {
    matches!(r.event, Some(Event::End(_)) | Some(Event::Error(_)))
}

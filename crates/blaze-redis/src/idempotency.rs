//! Idempotency records in Redis: `(scope, key) → fingerprint + response`,
//! kept 24 h. A claim is a `SET NX` of a pending record that expires quickly,
//! so a crashed request does not block its key forever.

use std::time::Duration;

use blaze_kit::{
    ApiError,
    idempotency::{Claim, IdempotencyStore, StoredResponse},
};
use fred::{
    prelude::*,
    types::{Expiration, SetOptions},
};
use serde::{Deserialize, Serialize};

use crate::Redis;

const DONE_TTL: Duration = Duration::from_secs(24 * 3600);
const PENDING_TTL: Duration = Duration::from_secs(120);

#[derive(Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    response: Option<StoredResponse>,
}

pub struct RedisIdempotency {
    redis: Redis,
}

impl RedisIdempotency {
    pub fn new(redis: Redis) -> Self {
        RedisIdempotency { redis }
    }

    fn key(&self, scope: &str, key: &str) -> String {
        self.redis.key(&format!("idem:{scope}:{key}"))
    }
}

fn unavailable(e: fred::error::Error) -> ApiError {
    ApiError::from(crate::RedisError::from(e))
}

#[async_trait::async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn claim(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Claim, ApiError> {
        let k = self.key(scope, key);
        let pending = serde_json::to_string(&Record { fingerprint: fingerprint.into(), response: None }).expect("serialises");
        let set: Option<String> = self
            .redis
            .client()
            .set(&k, pending, Some(Expiration::PX(PENDING_TTL.as_millis() as i64)), Some(SetOptions::NX), false)
            .await
            .map_err(unavailable)?;
        if set.is_some() {
            return Ok(Claim::Acquired);
        }
        let existing: Option<String> = self.redis.client().get(&k).await.map_err(unavailable)?;
        let Some(existing) = existing else {
            // expired between SET and GET: try again
            return Ok(Claim::InProgress);
        };
        let record: Record = serde_json::from_str(&existing).map_err(ApiError::internal)?;
        Ok(match (record.fingerprint == fingerprint, record.response) {
            (false, _) => Claim::Mismatch,
            (true, Some(r)) => Claim::Done(r),
            (true, None) => Claim::InProgress,
        })
    }

    async fn complete(&self, scope: &str, key: &str, fingerprint: &str, response: &StoredResponse) -> Result<(), ApiError> {
        let record =
            serde_json::to_string(&Record { fingerprint: fingerprint.into(), response: Some(response.clone()) }).expect("serialises");
        let _: Option<String> = self
            .redis
            .client()
            .set(self.key(scope, key), record, Some(Expiration::PX(DONE_TTL.as_millis() as i64)), None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn release(&self, scope: &str, key: &str) {
        let _: Result<i64, _> = self.redis.client().del(self.key(scope, key)).await;
    }
}

//! Redis through fred. Every key is prefixed (`redis.key_prefix`) so tests
//! and deployments can share a server.
//!
//! * [`gate`]: the edge's one round trip per request — token buckets per user
//!   and organisation, token revocation and the caller's membership epoch.
//! * [`lease`]: single-owner leases with fencing tokens (one turn per chat).
//! * [`streams`]: resumable event streams on Redis Streams.
//! * [`idempotency`]: the `IdempotencyStore` of blaze-kit.

pub mod gate;
pub mod idempotency;
pub mod lease;
pub mod streams;

use std::time::Duration;

use blaze_kit::config::RedisConfig;
use fred::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis error: {0}")]
    Other(String),
}

impl From<fred::error::Error> for RedisError {
    fn from(e: fred::error::Error) -> Self {
        use fred::error::ErrorKind;
        match e.kind() {
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure => RedisError::Unavailable(e.to_string()),
            _ => RedisError::Other(e.to_string()),
        }
    }
}

impl From<RedisError> for blaze_kit::ApiError {
    fn from(e: RedisError) -> Self {
        match e {
            RedisError::Unavailable(d) => {
                tracing::warn!(error = %d, "redis unavailable");
                blaze_kit::ApiError::unavailable("Event store unavailable, try again")
            }
            RedisError::Other(d) => blaze_kit::ApiError::internal(d),
        }
    }
}

pub type RedisResult<T> = Result<T, RedisError>;

/// A multiplexed Redis connection. Nothing here issues blocking commands
/// (stream readers wait on pub/sub announcements instead of `XREAD BLOCK`),
/// so one connection serves the whole process.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    prefix: String,
}

fn build(url: &str) -> Result<Client, fred::error::Error> {
    let config = Config::from_url(url)?;
    let mut b = Builder::from_config(config);
    b.with_config(|c| c.fail_fast = false)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 2;
        })
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(3))
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    b.build()
}

impl Redis {
    /// Connect; a server that is down now is retried in the background, so a
    /// role can start (and fail open) while Redis is away.
    pub async fn connect(cfg: &RedisConfig) -> RedisResult<Redis> {
        let client = build(cfg.url.expose())?;
        client.connect();
        if tokio::time::timeout(Duration::from_secs(3), client.wait_for_connect()).await.is_err() {
            tracing::warn!("redis not reachable yet; will keep retrying");
        }
        Ok(Redis { client, prefix: cfg.key_prefix.clone() })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A prefixed key.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{}", self.prefix, suffix)
    }

    pub async fn ping(&self) -> bool {
        matches!(tokio::time::timeout(Duration::from_secs(2), self.client.ping::<String>(None)).await, Ok(Ok(_)))
    }

    /// Bump the membership epoch of users whose memberships changed, so edges
    /// refresh their cached principals.
    pub async fn bump_epochs(&self, users: &[String]) -> RedisResult<()> {
        for u in users {
            let _: i64 = self.client.incr(self.key(&format!("epoch:{u}"))).await?;
        }
        Ok(())
    }

    /// The membership epoch of a user (0 when never bumped).
    pub async fn epoch(&self, user: &str) -> RedisResult<i64> {
        let v: Option<i64> = self.client.get(self.key(&format!("epoch:{user}"))).await?;
        Ok(v.unwrap_or(0))
    }

    /// Add revocation ids to the deny list.
    pub async fn revoke(&self, revocation_ids: &[String]) -> RedisResult<()> {
        if revocation_ids.is_empty() {
            return Ok(());
        }
        let _: i64 = self.client.sadd(self.key("revoked"), revocation_ids.to_vec()).await?;
        Ok(())
    }
}

//! Single-owner leases (`SET NX PX` + compare-and-delete): one active turn per
//! chat. A lease is held by a random token; renewing or releasing checks it,
//! so a holder that lost its lease can not extend or drop someone else's.
//! Not Redlock: writes behind a lease are fenced by database state too.

use std::time::Duration;

use fred::{
    prelude::*,
    types::{Expiration, SetOptions},
};

use crate::{Redis, RedisResult};

const RELEASE_LUA: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
const RENEW_LUA: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub token: String,
}

impl Redis {
    /// Take the lease `name` for `ttl`, or `None` when someone holds it.
    pub async fn acquire_lease(&self, name: &str, ttl: Duration) -> RedisResult<Option<Lease>> {
        let key = self.key(&format!("lease:{name}"));
        let token = uuid::Uuid::new_v4().to_string();
        let set: Option<String> =
            self.client().set(&key, &token, Some(Expiration::PX(ttl.as_millis() as i64)), Some(SetOptions::NX), false).await?;
        Ok(set.map(|_| Lease { key, token }))
    }

    /// Extend a lease we still hold; false when it was lost.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> RedisResult<bool> {
        let n: i64 = self.client().eval(RENEW_LUA, vec![lease.key.clone()], vec![lease.token.clone(), ttl.as_millis().to_string()]).await?;
        Ok(n == 1)
    }

    pub async fn release_lease(&self, lease: &Lease) -> RedisResult<bool> {
        let n: i64 = self.client().eval(RELEASE_LUA, vec![lease.key.clone()], vec![lease.token.clone()]).await?;
        Ok(n == 1)
    }

    /// Whether anyone holds the lease `name`.
    pub async fn lease_held(&self, name: &str) -> RedisResult<bool> {
        let n: i64 = self.client().exists(self.key(&format!("lease:{name}"))).await?;
        Ok(n == 1)
    }
}

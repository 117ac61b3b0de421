//! The edge's per-request gate, one Lua call: token buckets per user and per
//! organisation (both must have a token; both are charged), whether any of
//! the credential's revocation ids is on the deny list, and the user's
//! membership epoch.

use std::time::{SystemTime, UNIX_EPOCH};

use fred::types::scripts::Script;

use crate::{Redis, RedisResult};

const GATE_LUA: &str = r#"
local function bucket(key, cap, rate, now)
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  tokens = math.min(cap, tokens + (math.max(0, now - ts) / 1000.0) * rate)
  return tokens
end
local now = tonumber(ARGV[5])
local ucap, urate = tonumber(ARGV[1]), tonumber(ARGV[2])
local ocap, orate = tonumber(ARGV[3]), tonumber(ARGV[4])
local ut = bucket(KEYS[1], ucap, urate, now)
local ot = bucket(KEYS[2], ocap, orate, now)
local allowed = 0
local retry = 0
if ut >= 1 and ot >= 1 then
  ut = ut - 1
  ot = ot - 1
  allowed = 1
else
  if ut < 1 then retry = math.max(retry, math.ceil((1 - ut) / urate * 1000)) end
  if ot < 1 then retry = math.max(retry, math.ceil((1 - ot) / orate * 1000)) end
end
redis.call('HSET', KEYS[1], 'tokens', ut, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(ucap / urate * 1000) + 1000)
redis.call('HSET', KEYS[2], 'tokens', ot, 'ts', now)
redis.call('PEXPIRE', KEYS[2], math.ceil(ocap / orate * 1000) + 1000)
local revoked = 0
for i = 6, #ARGV do
  if redis.call('SISMEMBER', KEYS[4], ARGV[i]) == 1 then revoked = 1 end
end
local epoch = tonumber(redis.call('GET', KEYS[3]) or '0')
return {allowed, math.floor(ut), math.floor(ot), retry, epoch, revoked}
"#;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub user_burst: u32,
    pub user_per_sec: f64,
    pub org_burst: u32,
    pub org_per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateResult {
    pub allowed: bool,
    /// Tokens left in the tighter bucket.
    pub remaining: i64,
    /// Capacity of the tighter bucket.
    pub limit: i64,
    pub retry_after_ms: i64,
    pub epoch: i64,
    pub revoked: bool,
}

pub struct Gate {
    redis: Redis,
    script: Script,
    limits: Limits,
}

impl Gate {
    pub fn new(redis: Redis, limits: Limits) -> Self {
        Gate { redis, script: Script::from_lua(GATE_LUA), limits }
    }

    pub async fn check(&self, user: &str, org: &str, revocation_ids: &[String]) -> RedisResult<GateResult> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64;
        let keys = vec![
            self.redis.key(&format!("rl:user:{user}")),
            self.redis.key(&format!("rl:org:{org}")),
            self.redis.key(&format!("epoch:{user}")),
            self.redis.key("revoked"),
        ];
        let l = self.limits;
        let mut args =
            vec![l.user_burst.to_string(), l.user_per_sec.to_string(), l.org_burst.to_string(), l.org_per_sec.to_string(), now.to_string()];
        args.extend(revocation_ids.iter().cloned());
        let (allowed, user_left, org_left, retry, epoch, revoked): (i64, i64, i64, i64, i64, i64) =
            self.script.evalsha_with_reload(self.redis.client(), keys, args).await?;
        let (remaining, limit) = if (user_left as f64) / f64::from(l.user_burst) <= (org_left as f64) / f64::from(l.org_burst) {
            (user_left, i64::from(l.user_burst))
        } else {
            (org_left, i64::from(l.org_burst))
        };
        Ok(GateResult { allowed: allowed == 1, remaining, limit, retry_after_ms: retry, epoch, revoked: revoked == 1 })
    }
}

//! The shared backend: rate-limit state in Redis, for several instances.
//!
//! One Lua script runs the same arithmetic as `algo.rs` atomically on the
//! server, with the server's clock (`TIME`), so instances agree on windows
//! whatever their own clocks say. It is loaded once (`SCRIPT LOAD`) and
//! called by its SHA; all limits of a request go in one pipeline (one round
//! trip). A Redis that lost its scripts (restart) gets it again on the next
//! call. Keys are `pc:rl:{HASH}` with HASH a SHA-256 of the limit's id and
//! the key's parts: stable across instances and builds, and a Redis Cluster
//! hash tag. A key's state is one string `a:b:c` (the algorithm's three
//! numbers), so a check is three calls inside the script: `TIME`, `GET` and
//! `SET ... PX` (the state expires with its window).

use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

use super::algo::{Algorithm, Decision, Spec};
use crate::redis::{Redis, RedisError, Reply, cmd};

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local alg = ARGV[1]
local limit = tonumber(ARGV[2])
local w = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local mode = ARGV[5]
local a, b, c = 0, 0, 0
local v = redis.call('GET', KEYS[1])
if v then
  local x, y, z = string.match(v, '^(%d+):(%d+):(%d+)$')
  a, b, c = tonumber(x) or 0, tonumber(y) or 0, tonumber(z) or 0
end
local allowed, remaining, reset, retry, ttl
if alg == 'g' then
  local T = math.max(math.floor(w / limit), 1)
  local cap = burst * T
  if mode == 'add' then a = math.max(a, now) + T end
  local tat = math.max(a, now)
  local new_tat = tat + T
  allowed = (new_tat - now) <= cap
  local ahead = tat - now
  if allowed and mode == 'take' then a = new_tat; ahead = new_tat - now end
  remaining = math.floor((cap - math.min(ahead, cap)) / T)
  reset = ahead
  if allowed then retry = 0 else retry = new_tat - now - cap end
  ttl = math.max(ahead, 1)
else
  local idx = math.floor(now / w)
  if a ~= idx then
    if alg == 's' and a + 1 == idx then c = b else c = 0 end
    b = 0
    a = idx
  end
  if mode == 'add' then b = b + 1 end
  local elapsed = now - idx * w
  reset = w - elapsed
  if alg == 'f' then
    allowed = b < limit
    if allowed and mode == 'take' then b = b + 1 end
    remaining = math.max(limit - b, 0)
    if allowed then retry = 0 else retry = reset end
    ttl = reset
  else
    local prev = c * (w - elapsed) / w
    allowed = prev + b + 1 <= limit
    if allowed and mode == 'take' then b = b + 1 end
    remaining = math.max(math.floor(limit - prev - b), 0)
    if allowed then
      retry = 0
    elseif b + 1 > limit then
      retry = reset + (w - math.min(math.floor((limit - 1) * w / b), w))
    else
      retry = math.max(w - math.min(math.floor((limit - 1 - b) * w / c), w) - elapsed, 1)
    end
    ttl = reset + w
  end
end
redis.call('SET', KEYS[1], string.format('%.0f:%.0f:%.0f', a, b, c), 'PX', math.ceil(ttl / 1000) + 1)
if allowed then allowed = 1 else allowed = 0 end
return {allowed, remaining, reset, retry}
"#;

/// Takes an in-flight slot if fewer than `ARGV[1]` are held; each slot is a
/// member whose score is its lease's end (ms), so slots of a dead instance
/// lapse.
const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"#;

/// How long a concurrency slot in Redis outlives an instance that died
/// holding it (ms).
pub const LEASE_MS: u64 = 60_000;

/// What a check asks of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Check and count.
    Take,
    /// Check only.
    Peek,
    /// Count one event (a failure).
    Add,
}

/// Rate-limit state in Redis.
#[derive(Debug)]
pub struct RedisLimits {
    /// The connection pool.
    pub client: Arc<Redis>,
    sha: Mutex<Option<Arc<str>>>,
}

/// The Redis key of framed key bytes (limit id, then length-prefixed parts).
pub fn key_of(framed: &[u8]) -> String {
    hashed_key("pc:rl:", framed)
}

/// `PREFIX{HASH}`: HASH the first 128 bits of the SHA-256 of `framed`, in
/// hex (no client data in the clear; a Redis Cluster hash tag).
pub fn hashed_key(prefix: &str, framed: &[u8]) -> String {
    let d = digest::digest(&digest::SHA256, framed);
    let mut s = String::with_capacity(prefix.len() + 34);
    s.push_str(prefix);
    s.push('{');
    crate::redis::push_hex(&mut s, d.as_ref().get(..16).unwrap_or_default());
    s.push('}');
    s
}

impl RedisLimits {
    /// Over a client.
    pub fn new(client: Arc<Redis>) -> Self {
        Self {
            client,
            sha: Mutex::new(None),
        }
    }

    async fn sha(&self, reload: bool) -> Result<Arc<str>, RedisError> {
        if !reload {
            if let Some(s) = self.sha.lock().ok().and_then(|g| g.clone()) {
                return Ok(s);
            }
        }
        let r = self
            .client
            .pipeline(&[cmd(["SCRIPT", "LOAD", SCRIPT])])
            .await?;
        match r.first() {
            Some(Reply::Bulk(b)) => {
                let s: Arc<str> = String::from_utf8_lossy(b).into();
                if let Ok(mut g) = self.sha.lock() {
                    *g = Some(s.clone());
                }
                Ok(s)
            }
            other => Err(RedisError::Io(format!("SCRIPT LOAD answered {other:?}"))),
        }
    }

    /// Takes a concurrency slot under `key` (at most `max` at once across
    /// instances): the member to give back, or `None` when all are taken.
    pub async fn acquire(&self, key: &str, max: u32) -> Result<Option<String>, RedisError> {
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|e| RedisError::Io(e.to_string()))?;
        let mut member = String::with_capacity(24);
        crate::redis::push_hex(&mut member, &id);
        let r = self
            .client
            .pipeline(&[cmd([
                "EVAL",
                ACQUIRE,
                "1",
                key,
                &max.to_string(),
                &LEASE_MS.to_string(),
                &member,
            ])])
            .await?;
        match r.first() {
            Some(Reply::Int(1)) => Ok(Some(member)),
            Some(Reply::Int(_)) => Ok(None),
            other => Err(RedisError::Io(format!("unexpected reply {other:?}"))),
        }
    }

    /// Gives a slot back.
    pub async fn release(&self, key: &str, member: &str) {
        if let Err(e) = self.client.pipeline(&[cmd(["ZREM", key, member])]).await {
            tracing::debug!(error = %e, "a concurrency slot could not be given back (its lease ends it)");
        }
    }

    /// Runs the limits in one round trip; one decision each.
    pub async fn run(&self, items: &[(String, Spec, Mode)]) -> Result<Vec<Decision>, RedisError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut sha = self.sha(false).await?;
        for attempt in 0..2 {
            // Encoded straight into one buffer (no argument vectors).
            let mut bytes = Vec::with_capacity(160 * items.len());
            let (mut a, mut b, mut c) = (
                itoa::Buffer::new(),
                itoa::Buffer::new(),
                itoa::Buffer::new(),
            );
            for (k, s, m) in items {
                let alg: &[u8] = match s.algorithm {
                    Algorithm::FixedWindow => b"f",
                    Algorithm::SlidingWindow => b"s",
                    Algorithm::Gcra => b"g",
                };
                let mode: &[u8] = match m {
                    Mode::Take => b"take",
                    Mode::Peek => b"peek",
                    Mode::Add => b"add",
                };
                crate::redis::encode_args(
                    &mut bytes,
                    &[
                        b"EVALSHA",
                        sha.as_bytes(),
                        b"1",
                        k.as_bytes(),
                        alg,
                        a.format(s.limit).as_bytes(),
                        b.format(s.window_us).as_bytes(),
                        c.format(s.burst).as_bytes(),
                        mode,
                    ],
                );
            }
            let replies = self.client.pipeline_raw(bytes, items.len()).await?;
            let noscript = replies
                .iter()
                .any(|r| matches!(r, Reply::Error(e) if e.starts_with("NOSCRIPT")));
            if noscript && attempt == 0 {
                sha = self.sha(true).await?;
                continue;
            }
            return replies
                .iter()
                .zip(items)
                .map(|(r, (_, s, _))| decision(r, s))
                .collect();
        }
        Err(RedisError::Io("the script could not be loaded".into()))
    }
}

fn decision(r: &Reply, s: &Spec) -> Result<Decision, RedisError> {
    let Reply::Array(v) = r else {
        return Err(RedisError::Io(format!("unexpected reply {r:?}")));
    };
    let n = |i: usize| match v.get(i) {
        Some(Reply::Int(x)) => Ok(u64::try_from(*x).unwrap_or(0)),
        other => Err(RedisError::Io(format!("unexpected reply {other:?}"))),
    };
    let reset = n(2)?;
    Ok(Decision {
        allowed: n(0)? == 1,
        limit: if s.algorithm == Algorithm::Gcra {
            s.burst
        } else {
            s.limit
        },
        remaining: u32::try_from(n(1)?).unwrap_or(u32::MAX),
        reset_us: reset,
        retry_after_us: n(3)?,
        ttl_us: reset,
    })
}

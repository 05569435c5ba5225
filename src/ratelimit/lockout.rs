//! Brute-force protection for the login endpoint (and routes marked
//! `credential_endpoint`): only failures count, per account name and client
//! address, and per address alone.
//!
//! After `max_failures` failures within `window` for one account from one
//! address, that account is locked **for that address** for `lockout`,
//! doubling with each lock in a row up to `max_lockout`; the account's owner,
//! elsewhere, is not locked out by an attacker. After `max_failures_per_ip`
//! failures from one address (any accounts: credential stuffing), the
//! address is locked the same way. While locked, the password is not even
//! checked, and the answer is the generic 429 with `Retry-After`: unknown
//! accounts lock exactly like real ones, so nothing is enumerated. A
//! successful login clears the account's count (not the address's).

use super::Memory;
use super::algo::State;
use crate::redis::{Cmd, Redis, RedisError, Reply, cmd};

/// The compiled `[rate_limit.login]`.
#[derive(Debug, Clone)]
pub struct Lockout {
    /// Failures per account and address before a lock.
    pub max_failures: u32,
    /// Failures per address (any account) before a lock.
    pub max_failures_per_ip: u32,
    /// The window failures are counted in (µs).
    pub window_us: u64,
    /// First lock (µs); doubles per lock in a row.
    pub lockout_us: u64,
    /// Longest lock (µs).
    pub max_lockout_us: u64,
}

/// Keys: distinct id spaces for the two counters.
const ACCOUNT: u64 = 0x6c6f_636b_6163_6374; // "lockacct"
const ADDRESS: u64 = 0x6c6f_636b_6164_6472; // "lockaddr"

impl Lockout {
    fn account_key(mem: &Memory, account: &str, ip: &[u8]) -> u64 {
        // Account names are compared as the login compares them.
        let mut h = mem.hasher(ACCOUNT);
        h.part(account.to_lowercase().as_bytes());
        h.part(ip);
        h.finish()
    }

    fn address_key(mem: &Memory, ip: &[u8]) -> u64 {
        let mut h = mem.hasher(ADDRESS);
        h.part(ip);
        h.finish()
    }

    /// Microseconds until the account (from this address) or the address is
    /// unlocked; `None` when neither is locked.
    pub fn locked(&self, mem: &Memory, account: Option<&str>, ip: &[u8], now: u64) -> Option<u64> {
        let until = |key: u64| {
            mem.peek(key, now)
                .and_then(|st| st.a.checked_sub(now).filter(|d| *d > 0))
        };
        let a = account.and_then(|acc| until(Self::account_key(mem, acc, ip)));
        let b = until(Self::address_key(mem, ip));
        a.max(b)
    }

    /// Counts a failure; returns the new lock's length when this one locked.
    pub fn failed(&self, mem: &Memory, account: Option<&str>, ip: &[u8], now: u64) -> Option<u64> {
        let mut locked = None;
        if let Some(acc) = account {
            locked = self.count(mem, Self::account_key(mem, acc, ip), self.max_failures, now);
        }
        let by_ip = self.count(
            mem,
            Self::address_key(mem, ip),
            self.max_failures_per_ip,
            now,
        );
        locked.max(by_ip)
    }

    /// A successful login: the account's failures (from this address) are forgotten.
    pub fn succeeded(&self, mem: &Memory, account: &str, ip: &[u8], now: u64) {
        mem.update(Self::account_key(mem, account, ip), now, |st, _| {
            *st = State::default();
            ((), 1)
        });
    }

    /// `a` = locked until (µs), `b` = failures in the window, `c` = locks in
    /// a row; the entry's expiry is the window's end (or the lock's memory).
    fn count(&self, mem: &Memory, key: u64, max: u32, now: u64) -> Option<u64> {
        mem.update(key, now, |st, exp| {
            if st.b == 0 || *exp <= now {
                // a new window of failures (the lock count is kept while the
                // entry lives: locks in a row grow)
                st.b = 0;
            }
            let window_end = if st.b == 0 {
                now + self.window_us
            } else {
                *exp
            };
            st.b = st.b.saturating_add(1);
            if st.b < max.max(1) {
                return (None, window_end.max(*exp));
            }
            st.c = st.c.saturating_add(1);
            let shift = st.c.saturating_sub(1).min(32);
            let lock = self
                .lockout_us
                .saturating_mul(1u64 << shift)
                .min(self.max_lockout_us);
            st.a = now + lock;
            st.b = 0;
            // Remember the lock count for a while after the lock ends.
            (Some(lock), st.a + self.max_lockout_us)
        })
    }
}

/// The same counters in Redis, so every instance sees every failure: one
/// script, run with the server's clock. `check` answers the µs left of a
/// lock (0: none); `fail` counts a failure and answers the new lock's
/// length (0: none). Fields: `a` locked until, `b` failures in the window,
/// `c` locks in a row, `w` the window's end.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if ARGV[1] == 'check' then
  local a = tonumber(redis.call('HGET', KEYS[1], 'a')) or 0
  return math.max(a - now, 0)
end
local max, window, lockout, maxlock = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local st = redis.call('HMGET', KEYS[1], 'a', 'b', 'c', 'w')
local a, b, c, w = tonumber(st[1]) or 0, tonumber(st[2]) or 0, tonumber(st[3]) or 0, tonumber(st[4]) or 0
if b == 0 or w <= now then b = 0; w = now + window end
b = b + 1
local lock = 0
local keep = w
if b >= math.max(max, 1) then
  c = c + 1
  lock = math.min(lockout * 2 ^ math.min(c - 1, 32), maxlock)
  a = now + lock
  b = 0
  keep = a + maxlock
end
local pttl = redis.call('PTTL', KEYS[1])
if pttl > 0 then keep = math.max(keep, now + pttl * 1000) end
redis.call('HSET', KEYS[1], 'a', string.format('%.0f', a), 'b', b, 'c', c, 'w', string.format('%.0f', w))
redis.call('PEXPIRE', KEYS[1], math.max(math.ceil((keep - now) / 1000), 1))
return lock
"#;

impl Lockout {
    fn redis_key(kind: &[u8], account: Option<&str>, ip: &[u8]) -> String {
        let mut framed = Vec::with_capacity(64);
        framed.extend_from_slice(kind);
        if let Some(a) = account {
            let a = a.to_lowercase();
            framed.extend_from_slice(&(a.len() as u64).to_be_bytes());
            framed.extend_from_slice(a.as_bytes());
        }
        framed.extend_from_slice(ip);
        super::redis_store::hashed_key("pc:lo:", &framed)
    }

    fn eval(key: String, op: &str, args: [u64; 4]) -> Cmd {
        let mut c = cmd(["EVAL", SCRIPT, "1", key.as_str(), op]);
        c.extend(args.iter().map(|a| a.to_string().into_bytes()));
        c
    }

    fn int(r: Option<&Reply>) -> Result<u64, RedisError> {
        match r {
            Some(Reply::Int(n)) => Ok(u64::try_from(*n).unwrap_or(0)),
            other => Err(RedisError::Io(format!("unexpected reply {other:?}"))),
        }
    }

    /// [`locked`](Self::locked) in Redis (one round trip).
    pub async fn locked_shared(
        &self,
        r: &Redis,
        account: Option<&str>,
        ip: &[u8],
    ) -> Result<Option<u64>, RedisError> {
        let mut cmds = vec![Self::eval(
            Self::redis_key(b"addr", None, ip),
            "check",
            [0; 4],
        )];
        if let Some(a) = account {
            cmds.push(Self::eval(
                Self::redis_key(b"acct", Some(a), ip),
                "check",
                [0; 4],
            ));
        }
        let replies = r.pipeline(&cmds).await?;
        let mut left = 0;
        for i in 0..cmds.len() {
            left = left.max(Self::int(replies.get(i))?);
        }
        Ok((left > 0).then_some(left))
    }

    /// [`failed`](Self::failed) in Redis (one round trip).
    pub async fn failed_shared(
        &self,
        r: &Redis,
        account: Option<&str>,
        ip: &[u8],
    ) -> Result<Option<u64>, RedisError> {
        let args = |max: u32| {
            [
                u64::from(max),
                self.window_us,
                self.lockout_us,
                self.max_lockout_us,
            ]
        };
        let mut cmds = vec![Self::eval(
            Self::redis_key(b"addr", None, ip),
            "fail",
            args(self.max_failures_per_ip),
        )];
        if let Some(a) = account {
            cmds.push(Self::eval(
                Self::redis_key(b"acct", Some(a), ip),
                "fail",
                args(self.max_failures),
            ));
        }
        let replies = r.pipeline(&cmds).await?;
        let mut lock = 0;
        for i in 0..cmds.len() {
            lock = lock.max(Self::int(replies.get(i))?);
        }
        Ok((lock > 0).then_some(lock))
    }

    /// [`succeeded`](Self::succeeded) in Redis.
    pub async fn succeeded_shared(
        &self,
        r: &Redis,
        account: &str,
        ip: &[u8],
    ) -> Result<(), RedisError> {
        r.pipeline(&[cmd(["DEL", &Self::redis_key(b"acct", Some(account), ip)])])
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn lockout() -> Lockout {
        Lockout {
            max_failures: 5,
            max_failures_per_ip: 20,
            window_us: 900 * S,
            lockout_us: 60 * S,
            max_lockout_us: 3600 * S,
        }
    }

    #[test]
    fn five_failures_lock_the_account_for_that_address_with_backoff() {
        let l = lockout();
        let m = Memory::new(1000);
        let ip = b"\x04\xc0\x00\x02\x07";
        let other = b"\x04\xc0\x00\x02\x08";
        let t = 10_000 * S;
        for i in 0..4 {
            assert_eq!(l.failed(&m, Some("alice"), ip, t + i), None);
            assert_eq!(l.locked(&m, Some("alice"), ip, t + i), None);
        }
        assert_eq!(l.failed(&m, Some("alice"), ip, t + 5), Some(60 * S));
        assert!(l.locked(&m, Some("alice"), ip, t + 6).is_some());
        // not for alice elsewhere, not for bob here
        assert_eq!(l.locked(&m, Some("alice"), other, t + 6), None);
        assert_eq!(l.locked(&m, Some("bob"), ip, t + 6), None);
        // the same for a name in another case
        assert!(l.locked(&m, Some("ALICE"), ip, t + 6).is_some());
        // after the lock, five more failures lock for twice as long
        let t2 = t + 61 * S;
        assert_eq!(l.locked(&m, Some("alice"), ip, t2), None);
        for i in 0..4 {
            assert_eq!(l.failed(&m, Some("alice"), ip, t2 + i), None);
        }
        assert_eq!(l.failed(&m, Some("alice"), ip, t2 + 4), Some(120 * S));
        // success after a lock clears the count
        let t3 = t2 + 121 * S;
        l.succeeded(&m, "alice", ip, t3);
        for i in 0..4 {
            assert_eq!(l.failed(&m, Some("alice"), ip, t3 + i), None);
        }
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let l = lockout();
        let m = Memory::new(1000);
        let ip = b"\x04\x01\x02\x03\x04";
        let t = 10_000 * S;
        for i in 0..4 {
            assert_eq!(l.failed(&m, Some("alice"), ip, t + i), None);
        }
        // 15 minutes later the window is over
        assert_eq!(l.failed(&m, Some("alice"), ip, t + 901 * S), None);
    }

    #[test]
    fn many_accounts_from_one_address_lock_the_address() {
        let l = lockout();
        let m = Memory::new(10_000);
        let ip = b"\x04\x01\x02\x03\x04";
        let t = 10_000 * S;
        let mut locked = None;
        for i in 0..20u64 {
            locked = l.failed(&m, Some(&format!("user{i}")), ip, t + i);
        }
        assert_eq!(locked, Some(60 * S));
        assert!(l.locked(&m, Some("anyone"), ip, t + 30).is_some());
        assert!(l.locked(&m, None, ip, t + 30).is_some());
    }
}

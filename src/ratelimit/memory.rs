//! The embedded backend: rate-limit state in memory, for one instance.
//!
//! * **Sharded:** 64 shards, each a mutex over a hash map; a check holds one
//!   shard's lock for a few hundred nanoseconds, so threads rarely meet.
//! * **Keys are 64-bit hashes** of (limit, key) under a per-process random
//!   key (SipHash-1-3): a client cannot aim collisions, and an entry costs
//!   about 40 bytes whatever the key's length (a million keys: ~50 MB).
//! * **Bounded:** expired entries are swept in the background; a shard at
//!   its share of `max_keys` evicts its oldest entry (insertion order) before
//!   taking a new one, so a flood of new keys (random addresses) cannot grow
//!   memory. Evicting forgets a count, so keep `max_keys` well above the
//!   number of clients you expect.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;

use super::algo::{self, Decision, Spec, State};

const SHARDS: usize = 64;

/// The map's hasher: the key already is a keyed hash.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A key being hashed (length-prefixed parts, so `ab|c` ≠ `a|bc`).
#[derive(Debug)]
pub struct KeyHasher(std::hash::DefaultHasher);

impl KeyHasher {
    /// Adds a part.
    pub fn part(&mut self, bytes: &[u8]) {
        self.0.write_usize(bytes.len());
        self.0.write(bytes);
    }

    /// The key.
    pub fn finish(&self) -> u64 {
        self.0.finish()
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    /// When the state can be forgotten (µs).
    expires: u64,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<Identity>>,
    /// Keys in insertion order, for eviction (may hold keys already swept).
    order: VecDeque<u64>,
    /// In-flight counts for concurrency limits.
    inflight: HashMap<u64, u32, BuildHasherDefault<Identity>>,
}

/// The in-memory store.
#[derive(Debug)]
pub struct Memory {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: std::hash::RandomState,
}

impl Memory {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_keys / SHARDS).max(1),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The store's hash of a limit's key parts.
    pub fn key(&self, limit: u64, parts: &[&[u8]]) -> u64 {
        let mut h = self.hasher(limit);
        for p in parts {
            h.part(p);
        }
        h.finish()
    }

    /// Starts a key for `limit`; add its parts, then `finish`.
    pub fn hasher(&self, limit: u64) -> KeyHasher {
        let mut h = self.hasher.build_hasher();
        h.write_u64(limit);
        KeyHasher(h)
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        let i = (key >> 58) as usize % SHARDS;
        // A poisoned shard only means a panic elsewhere mid-update of plain
        // counters: keep using it.
        match self.shards.get(i).unwrap_or(&self.shards[0]).lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Checks (and, with `take`, counts) one request.
    pub fn check(&self, spec: &Spec, key: u64, now: u64, take: bool) -> Decision {
        let mut s = self.shard(key);
        // The usual case: a known key, one lookup.
        if let Some(e) = s.map.get_mut(&key) {
            if e.expires <= now {
                e.state = State::default();
            }
            let d = algo::check(spec, &mut e.state, now, take);
            e.expires = now + d.ttl_us;
            return d;
        }
        s.make_room(self.per_shard, now);
        let mut state = State::default();
        let d = algo::check(spec, &mut state, now, take);
        s.map.insert(
            key,
            Entry {
                state,
                expires: now + d.ttl_us,
            },
        );
        s.order.push_back(key);
        d
    }

    /// Counts one event (a failure) without a decision.
    pub fn add(&self, spec: &Spec, key: u64, now: u64) {
        self.update(key, now, |state, _| {
            algo::add(spec, state, now);
            let d = algo::check(spec, state, now, false);
            ((), now + d.ttl_us.max(d.retry_after_us))
        });
    }

    /// A live state, if any (nothing is inserted).
    pub fn peek(&self, key: u64, now: u64) -> Option<State> {
        let s = self.shard(key);
        s.map.get(&key).filter(|e| e.expires > now).map(|e| e.state)
    }

    /// Reads and replaces a raw state (lockouts keep their own meaning in
    /// it): `f` gets the state and its expiry (0 when new) and returns its
    /// result and the new expiry (absolute, µs).
    pub fn update<R>(&self, key: u64, now: u64, f: impl FnOnce(&mut State, &u64) -> (R, u64)) -> R {
        let mut s = self.shard(key);
        let fresh = !s.map.contains_key(&key);
        if fresh {
            s.make_room(self.per_shard, now);
            s.order.push_back(key);
        }
        let e = s.map.entry(key).or_insert(Entry {
            state: State::default(),
            expires: 0,
        });
        if e.expires != 0 && e.expires <= now {
            e.state = State::default();
            e.expires = 0;
        }
        let (r, expires) = f(&mut e.state, &e.expires);
        e.expires = expires;
        r
    }

    /// Takes an in-flight slot if fewer than `limit` are taken.
    pub fn acquire(&self, key: u64, limit: u32) -> bool {
        let mut s = self.shard(key);
        let n = s.inflight.entry(key).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// Gives an in-flight slot back.
    pub fn release(&self, key: u64) {
        let mut s = self.shard(key);
        if let Some(n) = s.inflight.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.inflight.remove(&key);
            }
        }
    }

    /// Removes expired entries (run periodically).
    pub fn sweep(&self, now: u64) {
        for shard in &self.shards {
            let mut s = match shard.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            s.map.retain(|_, e| e.expires > now);
            if s.order.len() > 2 * s.map.len() + 64 {
                let Shard { map, order, .. } = &mut *s;
                order.retain(|k| map.contains_key(k));
            }
            if s.map.capacity() > 4 * s.map.len() + 1024 {
                s.map.shrink_to_fit();
            }
        }
    }

    /// Keys held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|g| g.map.len()).unwrap_or(0))
            .sum()
    }

    /// Bytes the maps and queues hold (capacity, not just length): what a
    /// flood of keys costs.
    pub fn approx_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, Entry)>() + 1; // + hashbrown's control byte
        self.shards
            .iter()
            .map(|s| {
                s.lock().map_or(0, |g| {
                    g.map.capacity() * entry
                        + g.order.capacity() * std::mem::size_of::<u64>()
                        + g.inflight.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
                })
            })
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    /// Before inserting: drop expired entries at the front, then the oldest
    /// while the shard is full.
    fn make_room(&mut self, cap: usize, now: u64) {
        while self.map.len() >= cap {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&k);
        }
        // Opportunistically forget expired entries at the front of the queue.
        for _ in 0..2 {
            match self.order.front() {
                Some(k) if self.map.get(k).is_none_or(|e| e.expires <= now) => {
                    let k = *k;
                    self.order.pop_front();
                    self.map.remove(&k);
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::algo::Algorithm;

    #[test]
    fn bounded_under_a_flood_of_new_keys() {
        let m = Memory::new(10_000);
        let spec = Spec {
            algorithm: Algorithm::SlidingWindow,
            limit: 10,
            window_us: 60_000_000,
            burst: 0,
        };
        for i in 0..100_000u64 {
            let k = m.key(1, &[&i.to_be_bytes()]);
            assert!(m.check(&spec, k, 1_000_000, true).allowed);
        }
        assert!(m.len() <= 10_000 + SHARDS, "{}", m.len());
        // everything expires and is swept
        m.sweep(1_000_000 + 121_000_000);
        assert_eq!(m.len(), 0);
    }

    /// The figure: a million distinct keys in under 200 MB.
    #[test]
    fn a_million_keys_fit_in_200_mb() {
        let m = Memory::new(1_000_000);
        let spec = Spec {
            algorithm: Algorithm::SlidingWindow,
            limit: 100,
            window_us: 60_000_000,
            burst: 0,
        };
        for i in 0..1_000_000u64 {
            let k = m.key(1, &[&i.to_be_bytes()]);
            m.check(&spec, k, 1_000_000, true);
        }
        let held = m.len();
        assert!(held > 950_000, "{held}");
        let bytes = m.approx_bytes();
        assert!(bytes < 200 << 20, "{} MB", bytes >> 20);
        // and a second million evicts rather than grows
        for i in 1_000_000..2_000_000u64 {
            let k = m.key(1, &[&i.to_be_bytes()]);
            m.check(&spec, k, 2_000_000, true);
        }
        assert!(m.len() <= 1_000_000 + SHARDS);
        assert!(m.approx_bytes() < 200 << 20);
    }

    #[test]
    fn expired_state_is_not_reused() {
        let m = Memory::new(100);
        let spec = Spec {
            algorithm: Algorithm::FixedWindow,
            limit: 1,
            window_us: 1_000_000,
            burst: 0,
        };
        let k = m.key(7, &[b"1.2.3.4"]);
        assert!(m.check(&spec, k, 500_000, true).allowed);
        assert!(!m.check(&spec, k, 600_000, true).allowed);
        assert!(m.check(&spec, k, 1_500_000, true).allowed);
        // different limits and keys do not share counters
        assert_ne!(m.key(7, &[b"1.2.3.4"]), m.key(8, &[b"1.2.3.4"]));
        assert_ne!(m.key(7, &[b"ab", b"c"]), m.key(7, &[b"a", b"bc"]));
    }

    #[test]
    fn inflight_slots() {
        let m = Memory::new(100);
        let k = m.key(1, &[b"u"]);
        assert!(m.acquire(k, 2));
        assert!(m.acquire(k, 2));
        assert!(!m.acquire(k, 2));
        m.release(k);
        assert!(m.acquire(k, 2));
    }
}

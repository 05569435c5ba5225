//! The verified-token cache: a repeated token costs a hash lookup, not a
//! signature check (one ES256 verification is ~90 µs; a lookup well under 1).
//!
//! Keyed by a keyed SipHash of the token (random key per process), and each
//! entry keeps the whole token, compared on every hit: a hash collision can
//! never make an unverified token pass. Entries never outlive the token's
//! `exp`; the cache is bounded per shard, evicting expired entries first and
//! otherwise an arbitrary one; it is emptied whenever an issuer's keys change.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use super::identity::Identity;

const SHARDS: usize = 16;

struct Entry {
    token: Box<str>,
    identity: Arc<Identity>,
}

/// A bounded map from token to identity.
pub struct TokenCache {
    /// Bumped by every `clear`: a verification that started before a clear
    /// (with the old keys) must not insert after it.
    generation: std::sync::atomic::AtomicU64,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
    per_shard: usize,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache holding about `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            generation: std::sync::atomic::AtomicU64::new(0),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    fn shard(&self, h: u64) -> Option<&Mutex<HashMap<u64, Entry>>> {
        self.shards.get((h as usize) % SHARDS)
    }

    /// The identity for `token` if it was verified before and has not expired.
    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Identity>> {
        if self.per_shard == 0 {
            return None;
        }
        let h = self.hasher.hash_one(token);
        let mut map = self.shard(h)?.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&h) {
            Some(e) if &*e.token == token && e.identity.expires > now => Some(e.identity.clone()),
            Some(_) => {
                map.remove(&h);
                None
            }
            None => None,
        }
    }

    /// The current generation; read it before loading the keys a token is
    /// verified with, and pass it to [`TokenCache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Remembers a verified token, unless the cache was cleared since
    /// `generation` was read (the keys used may be gone).
    pub fn put(&self, token: &str, identity: Arc<Identity>, now: u64, generation: u64) {
        if self.per_shard == 0 {
            return;
        }
        let h = self.hasher.hash_one(token);
        let Some(shard) = self.shard(h) else { return };
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation() != generation {
            return;
        }
        if map.len() >= self.per_shard && !map.contains_key(&h) {
            map.retain(|_, e| e.identity.expires > now);
            if map.len() >= self.per_shard {
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            h,
            Entry {
                token: token.into(),
                identity,
            },
        );
    }

    /// Forgets everything (keys changed).
    pub fn clear(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        for s in &self.shards {
            s.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::identity::AuthMethod;

    fn id(exp: u64) -> Arc<Identity> {
        Arc::new(Identity {
            subject: "s".into(),
            roles: vec![],
            scopes: vec![],
            tenant: None,
            issuer: "i".into(),
            method: AuthMethod::Jwt,
            expires: exp,
            claims: Arc::new(serde_json::Value::Null),
            headers: crate::authn::identity::IdentityHeaders::new("i", "s", &[], &[], None)
                .unwrap_or_else(|_| unreachable!()),
            upstream_token: Default::default(),
            authz: Default::default(),
            key_id: None,
        })
    }

    #[test]
    fn hit_miss_expiry_and_bound() {
        let c = TokenCache::new(32);
        c.put("a.b.c", id(100), 10, c.generation());
        assert!(c.get("a.b.c", 50).is_some());
        assert!(c.get("a.b.x", 50).is_none());
        assert!(c.get("a.b.c", 100).is_none(), "never past exp");
        for i in 0..1000 {
            c.put(&format!("t{i}"), id(1000), 10, c.generation());
        }
        let total: usize = c
            .shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(total <= 32, "{total}");
        let before = c.generation();
        c.clear();
        assert!(c.get("t999", 10).is_none());
        // a verification that started before the clear does not insert after it
        c.put("late", id(1000), 10, before);
        assert!(c.get("late", 10).is_none());
    }
}

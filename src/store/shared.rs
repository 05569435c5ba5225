//! Authentication state in Redis, for several instances: sessions, refresh
//! tokens and API key revocations live where every instance reads them, so a
//! logout, a reused refresh token or a key revocation on one instance is
//! refused by all of them on the very next request.
//!
//! What lives here (ids are always stored as SHA-256, never as sent):
//!
//! | key | value | expiry |
//! |---|---|---|
//! | `pc:s:{H}` | a session: the user snapshot, created, last seen, absolute end | idle or absolute, whichever is first |
//! | `pc:rt:{H}` | a refresh token: `0`/`1` (spent) then its family, user snapshot and end | the family's end |
//! | `pc:rf:{F}` | `1`: family `F` is revoked | the token lifetime |
//! | `pc:u:{NAME}:s`, `pc:u:{NAME}:f` | the user's session hashes and families (to end them all) | absolute / token lifetime |
//! | `pc:kr:{ID}` | Unix seconds from which API key `ID` is refused | none (a few bytes per revoked key) |
//!
//! User records and API key records themselves stay in each instance's
//! SQLite store: a session carries a snapshot of its user (id, name, roles,
//! attributes) taken at login, so it works on every instance.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{SessionRecord, UserRecord};
use crate::redis::{Redis, RedisError, Reply, cmd};

/// What every instance needs of a user to serve a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Snapshot {
    id: String,
    username: String,
    roles: Vec<String>,
    attributes: serde_json::Value,
}

impl Snapshot {
    fn of(u: &UserRecord) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username.clone(),
            roles: u.roles.clone(),
            attributes: u.attributes.clone(),
        }
    }

    fn user(self) -> UserRecord {
        UserRecord {
            id: self.id,
            username: self.username,
            password_hash: String::new(),
            roles: self.roles,
            attributes: self.attributes,
            disabled: false,
            created: 0,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSession {
    u: Snapshot,
    c: i64,
    l: i64,
    e: i64,
}

#[derive(Serialize, Deserialize)]
struct StoredRefresh {
    f: String,
    u: Snapshot,
    e: i64,
}

/// Spends a refresh token atomically: `{0}` unknown or revoked, `{2}` reused
/// (the family is revoked now), `{1, record}` spent.
const REFRESH_USE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
local r = cjson.decode(string.sub(v, 2))
local fam = 'pc:rf:' .. r.f
if redis.call('EXISTS', fam) == 1 then return {0} end
if string.sub(v, 1, 1) == '1' then
  redis.call('SET', fam, '1', 'EX', ARGV[1])
  return {2}
end
redis.call('SET', KEYS[1], '1' .. string.sub(v, 2), 'KEEPTTL')
return {1, string.sub(v, 2)}
"#;

/// What became of a refresh token.
#[derive(Debug)]
pub enum Spent {
    /// Valid and now spent: its user, family and family end.
    Ok(UserRecord, String, i64),
    /// Spent before: its family is revoked now.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

/// Authentication state in Redis.
#[derive(Debug)]
pub struct SharedAuth {
    redis: Arc<Redis>,
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(64);
    crate::redis::push_hex(&mut s, bytes);
    s
}

fn io(e: impl std::fmt::Display) -> RedisError {
    RedisError::Io(e.to_string())
}

/// The replies, or the first error reply as an error.
fn checked(replies: Vec<Reply>) -> Result<Vec<Reply>, RedisError> {
    match replies.iter().find_map(|r| match r {
        Reply::Error(e) => Some(e.clone()),
        _ => None,
    }) {
        Some(e) => Err(RedisError::Io(e)),
        None => Ok(replies),
    }
}

fn members(r: Option<&Reply>) -> Vec<String> {
    match r {
        Some(Reply::Array(v)) => v
            .iter()
            .filter_map(|m| match m {
                Reply::Bulk(b) => String::from_utf8(b.clone()).ok(),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl SharedAuth {
    /// Over a client.
    pub fn new(redis: Arc<Redis>) -> Self {
        Self { redis }
    }

    async fn run(&self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, RedisError> {
        checked(self.redis.pipeline(cmds).await?)
    }

    /// Stores a new session (its id's hash) for `user`, living until
    /// `expires` or `idle` seconds without use.
    pub async fn session_insert(
        &self,
        id_hash: &[u8],
        user: &UserRecord,
        now: i64,
        expires: i64,
        idle: i64,
    ) -> Result<(), RedisError> {
        let h = hex(id_hash);
        let v = serde_json::to_string(&StoredSession {
            u: Snapshot::of(user),
            c: now,
            l: now,
            e: expires,
        })
        .map_err(io)?;
        let ttl = idle.min(expires - now).max(1).to_string();
        let set = format!("pc:u:{}:s", user.username);
        let keep = (expires - now).max(1).to_string();
        // The set lives as long as its longest session: NX sets a first
        // expiry, GT only ever extends it.
        self.run(&[
            cmd(["SET", &format!("pc:s:{h}"), &v, "EX", &ttl]),
            cmd(["SADD", &set, &h]),
            cmd(["EXPIRE", &set, &keep, "NX"]),
            cmd(["EXPIRE", &set, &keep, "GT"]),
        ])
        .await
        .map(drop)
    }

    /// The session with this id hash, if it lives.
    pub async fn session_get(&self, id_hash: &[u8]) -> Result<Option<SessionRecord>, RedisError> {
        let r = self
            .run(&[cmd(["GET", &format!("pc:s:{}", hex(id_hash))])])
            .await?;
        match r.first() {
            Some(Reply::Bulk(b)) => {
                let s: StoredSession = serde_json::from_slice(b).map_err(io)?;
                Ok(Some(SessionRecord {
                    user: s.u.user(),
                    created: s.c,
                    last_seen: s.l,
                    expires: s.e,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Records a use: the idle timeout starts again (only if the session
    /// still exists: a logout in between wins).
    pub async fn session_touch(
        &self,
        id_hash: &[u8],
        s: &SessionRecord,
        now: i64,
        idle: i64,
    ) -> Result<(), RedisError> {
        let v = serde_json::to_string(&StoredSession {
            u: Snapshot::of(&s.user),
            c: s.created,
            l: now,
            e: s.expires,
        })
        .map_err(io)?;
        let ttl = idle.min(s.expires - now).max(1).to_string();
        self.run(&[cmd([
            "SET",
            &format!("pc:s:{}", hex(id_hash)),
            &v,
            "XX",
            "EX",
            &ttl,
        ])])
        .await
        .map(drop)
    }

    /// Ends one session; whether it existed.
    pub async fn session_delete(&self, id_hash: &[u8]) -> Result<bool, RedisError> {
        let r = self
            .run(&[cmd(["DEL", &format!("pc:s:{}", hex(id_hash))])])
            .await?;
        Ok(matches!(r.first(), Some(Reply::Int(n)) if *n > 0))
    }

    /// Ends every session and refresh family of a user (by user name, which
    /// every instance's store agrees on); how many sessions ended.
    pub async fn end_user(&self, username: &str, token_ttl: i64) -> Result<usize, RedisError> {
        let (ss, fs) = (format!("pc:u:{username}:s"), format!("pc:u:{username}:f"));
        let r = self
            .run(&[cmd(["SMEMBERS", &ss]), cmd(["SMEMBERS", &fs])])
            .await?;
        let (sessions, families) = (members(r.first()), members(r.get(1)));
        let ttl = token_ttl.max(1).to_string();
        let mut cmds = vec![cmd(["DEL", &ss, &fs])];
        let mut del = vec!["DEL".to_string()];
        del.extend(sessions.iter().map(|h| format!("pc:s:{h}")));
        if del.len() > 1 {
            cmds.push(cmd(del));
        }
        for f in &families {
            cmds.push(cmd(["SET", &format!("pc:rf:{f}"), "1", "EX", &ttl]));
        }
        let r = self.run(&cmds).await?;
        Ok(match r.get(1) {
            Some(Reply::Int(n)) if !sessions.is_empty() => usize::try_from(*n).unwrap_or(0),
            _ => 0,
        })
    }

    /// Stores a refresh token (its hash) of `family`, for `user`, until
    /// `expires`.
    pub async fn refresh_insert(
        &self,
        hash: &[u8],
        family: &str,
        user: &UserRecord,
        now: i64,
        expires: i64,
    ) -> Result<(), RedisError> {
        let v = serde_json::to_string(&StoredRefresh {
            f: family.to_owned(),
            u: Snapshot::of(user),
            e: expires,
        })
        .map_err(io)?;
        let ttl = (expires - now).max(1).to_string();
        let set = format!("pc:u:{}:f", user.username);
        self.run(&[
            cmd([
                "SET",
                &format!("pc:rt:{}", hex(hash)),
                &format!("0{v}"),
                "EX",
                &ttl,
            ]),
            cmd(["SADD", &set, family]),
            cmd(["EXPIRE", &set, &ttl, "NX"]),
            cmd(["EXPIRE", &set, &ttl, "GT"]),
        ])
        .await
        .map(drop)
    }

    /// Spends a refresh token (atomically: two instances never both spend
    /// one); a second use revokes its family.
    pub async fn refresh_use(
        &self,
        hash: &[u8],
        now: i64,
        token_ttl: i64,
    ) -> Result<Spent, RedisError> {
        let r = self
            .run(&[cmd([
                "EVAL",
                REFRESH_USE,
                "1",
                &format!("pc:rt:{}", hex(hash)),
                &token_ttl.max(1).to_string(),
            ])])
            .await?;
        let Some(Reply::Array(v)) = r.first() else {
            return Err(io("unexpected reply"));
        };
        match (v.first(), v.get(1)) {
            (Some(Reply::Int(1)), Some(Reply::Bulk(b))) => {
                let s: StoredRefresh = serde_json::from_slice(b).map_err(io)?;
                if s.e <= now {
                    return Ok(Spent::Invalid);
                }
                Ok(Spent::Ok(s.u.user(), s.f, s.e))
            }
            (Some(Reply::Int(2)), _) => Ok(Spent::Reused),
            _ => Ok(Spent::Invalid),
        }
    }

    /// Revokes the family of a refresh token (logout); whether it was known.
    pub async fn refresh_revoke_family_of(
        &self,
        hash: &[u8],
        token_ttl: i64,
    ) -> Result<bool, RedisError> {
        let r = self
            .run(&[cmd(["GET", &format!("pc:rt:{}", hex(hash))])])
            .await?;
        let Some(Reply::Bulk(b)) = r.first() else {
            return Ok(false);
        };
        let s: StoredRefresh =
            serde_json::from_slice(b.get(1..).unwrap_or_default()).map_err(io)?;
        self.run(&[cmd([
            "SET",
            &format!("pc:rf:{}", s.f),
            "1",
            "EX",
            &token_ttl.max(1).to_string(),
        ])])
        .await?;
        Ok(true)
    }

    /// Refuses API key `id` from `from` (Unix seconds) on every instance.
    /// An earlier refusal already recorded is kept.
    pub async fn key_revoke(&self, id: &str, from: i64) -> Result<(), RedisError> {
        // Atomic: a revocation (now) and a rotation (end of its overlap) at
        // the same moment keep the earlier time.
        const KEEP_EARLIEST: &str = "local c = tonumber(redis.call('GET', KEYS[1])) \
            if c == nil or tonumber(ARGV[1]) < c then redis.call('SET', KEYS[1], ARGV[1]) end return 1";
        self.run(&[cmd([
            "EVAL",
            KEEP_EARLIEST,
            "1",
            &format!("pc:kr:{id}"),
            &from.to_string(),
        ])])
        .await
        .map(drop)
    }

    /// Whether API key `id` is refused at `now`.
    pub async fn key_revoked(&self, id: &str, now: i64) -> Result<bool, RedisError> {
        let r = self.run(&[cmd(["GET", &format!("pc:kr:{id}")])]).await?;
        Ok(match r.first() {
            Some(Reply::Bulk(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .is_none_or(|t| t <= now),
            _ => false,
        })
    }
}

/// How long a revoked family's marker must outlive its tokens.
pub fn token_ttl(plan: &crate::config::Plan) -> i64 {
    plan.authn
        .tokens
        .as_ref()
        .map_or(30 * 86_400, |t| t.refresh_ttl)
}

/// After a user was disabled or their password changed in the store: ends
/// their sessions and refresh families in Redis too (when configured); how
/// many sessions ended there.
pub async fn end_user(
    plan: &crate::config::Plan,
    store: &super::Store,
    username: &str,
) -> Result<usize, String> {
    let Some(shared) = &plan.shared else {
        return Ok(0);
    };
    if store.user_by_name(username)?.is_none() {
        return Ok(0);
    }
    shared
        .end_user(username, token_ttl(plan))
        .await
        .map_err(|e| format!("sessions in redis were not ended: {e}"))
}

/// After a key was revoked (`from` = now) or rotated (`from` = the end of
/// its overlap) in the store: every instance refuses it from then on.
pub async fn revoke_key(plan: &crate::config::Plan, id: &str, from: i64) -> Result<(), String> {
    let Some(shared) = &plan.shared else {
        return Ok(());
    };
    shared
        .key_revoke(id, from)
        .await
        .map_err(|e| format!("the revocation was not recorded in redis: {e}"))
}

/// A key the store already has as revoked: records it in Redis (again), so
/// that a revocation whose Redis write failed can be retried. `Ok(false)`:
/// the key is not revoked in the store (or there is no Redis).
pub async fn revoke_key_again(
    plan: &crate::config::Plan,
    store: &super::Store,
    id: &str,
) -> Result<bool, String> {
    if plan.shared.is_none() {
        return Ok(false);
    }
    match store.key_get(id)?.and_then(|r| r.revoked) {
        Some(at) => revoke_key(plan, id, at).await.map(|()| true),
        None => Ok(false),
    }
}

/// Runs one of the above from the (synchronous) command line.
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(f)
}

//! Persistent state: the embedded SQLite store (WAL mode, schema migrated on
//! open). Holds API keys now; users, sessions, clients and revocations join
//! it with the rest of authentication, and a Redis store for several
//! instances will sit beside it behind the same methods.
//!
//! Reads on the request path are primary-key lookups on a small pool of
//! connections (a few microseconds, and WAL readers never wait for writers),
//! so a revocation written by the CLI or the admin API is seen by the very
//! next request.

pub mod shared;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

/// One API key as stored (never the key itself: only its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    /// Public id (the part between the prefix and the secret).
    pub id: String,
    /// HMAC-SHA-256 (or SHA-256) of the secret part.
    #[serde(skip)]
    pub hash: Vec<u8>,
    /// Who the key belongs to (the identity's subject).
    pub owner: String,
    /// A label.
    pub name: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds; `None`: never expires.
    pub expires: Option<i64>,
    /// Unix seconds of the last use (updated in batches).
    pub last_used: Option<i64>,
    /// Unix seconds when revoked.
    pub revoked: Option<i64>,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<String>,
}

/// The SQLite store.
pub struct Store {
    path: PathBuf,
    readers: Vec<Mutex<Connection>>,
    writer: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const MIGRATIONS: &[&str] = &[
    // 1: API keys
    "CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash BLOB NOT NULL,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER,
        last_used INTEGER,
        revoked INTEGER,
        replaced_by TEXT
    ) STRICT;
    CREATE INDEX api_keys_owner ON api_keys(owner);",
    // 2: users and sessions (sessions by the SHA-256 of their id)
    "CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        roles TEXT NOT NULL,
        attributes TEXT NOT NULL DEFAULT '{}',
        disabled INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE sessions (
        id_hash BLOB PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        expires INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX sessions_user ON sessions(user_id);",
    // 3: refresh tokens (by SHA-256), grouped in families for reuse detection
    "CREATE TABLE refresh_tokens (
        hash BLOB PRIMARY KEY,
        family TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL,
        used INTEGER,
        revoked INTEGER
    ) STRICT;
    CREATE INDEX refresh_family ON refresh_tokens(family);",
    // 4: OAuth clients (client credentials), secrets by SHA-256
    "CREATE TABLE clients (
        id TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created INTEGER NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    ) STRICT;",
];

/// An OAuth client (service account).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientRecord {
    /// `client_id`.
    pub id: String,
    /// SHA-256 of the secret.
    #[serde(skip)]
    pub secret_hash: Vec<u8>,
    /// A label.
    pub name: String,
    /// Scopes the client may ask for.
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    /// Disabled clients get no tokens.
    pub disabled: bool,
}

/// family, user id, expires, used, revoked
type RefreshRow = (String, String, i64, Option<i64>, Option<i64>);

/// What became of a presented refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid and now spent: the user and the family to continue.
    Spent {
        /// The user.
        user: UserRecord,
        /// The family id.
        family: String,
        /// The family's expiry: a rotated token never outlives the login.
        expires: i64,
    },
    /// Presented a second time: the whole family is now revoked.
    Reused,
    /// Unknown, expired, revoked, or the user is disabled.
    Invalid,
}

/// A user (Portcullis as the identity provider).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRecord {
    /// Stable id (the identity's subject).
    pub id: String,
    /// Login name.
    pub username: String,
    /// argon2id PHC string.
    #[serde(skip)]
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Attributes for policies (JSON object).
    pub attributes: serde_json::Value,
    /// Disabled users cannot log in and their sessions stop working.
    pub disabled: bool,
    /// Unix seconds.
    pub created: i64,
}

/// A live session joined with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The user.
    pub user: UserRecord,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the last recorded use.
    pub last_seen: i64,
    /// Absolute expiry, Unix seconds.
    pub expires: i64,
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    Ok(c)
}

fn err(e: rusqlite::Error) -> String {
    format!("store: {e}")
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(path: &Path) -> Result<Self, String> {
        let writer = connect(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let version: i64 = writer
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        let version = usize::try_from(version).unwrap_or(0);
        if version > MIGRATIONS.len() {
            return Err(format!(
                "{} was written by a newer Portcullis (schema {version}, this one knows {})",
                path.display(),
                MIGRATIONS.len()
            ));
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = writer.unchecked_transaction().map_err(err)?;
            tx.execute_batch(m).map_err(err)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(i + 1).unwrap_or(i64::MAX),
            )
            .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        let readers = (0..4)
            .map(|_| connect(path).map(Mutex::new))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            readers,
            writer: Mutex::new(writer),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
        // Any free reader; if all are busy, wait for the first.
        for r in &self.readers {
            if let Ok(c) = r.try_lock() {
                return f(&c).map_err(err);
            }
        }
        let first = self.readers.first().ok_or("store has no reader")?;
        let c = first.lock().unwrap_or_else(|p| p.into_inner());
        f(&c).map_err(err)
    }

    fn write<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
        let c = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&c).map_err(err)
    }

    /// One key by id.
    pub fn key_get(&self, id: &str) -> Result<Option<KeyRecord>, String> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id, hash, owner, name, scopes, created, expires, last_used, revoked, replaced_by
                 FROM api_keys WHERE id = ?1",
            )?
            .query_row(params![id], row_to_key)
            .optional()
        })
    }

    /// All keys, oldest first.
    pub fn key_list(&self) -> Result<Vec<KeyRecord>, String> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, hash, owner, name, scopes, created, expires, last_used, revoked, replaced_by
                 FROM api_keys ORDER BY created, id",
            )?;
            let rows = st.query_map([], row_to_key)?;
            rows.collect()
        })
    }

    /// Stores a new key.
    pub fn key_insert(&self, k: &KeyRecord) -> Result<(), String> {
        let scopes = serde_json::to_string(&k.scopes).unwrap_or_else(|_| "[]".into());
        self.write(|c| {
            c.execute(
                "INSERT INTO api_keys (id, hash, owner, name, scopes, created, expires, last_used, revoked, replaced_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, NULL)",
                params![k.id, k.hash, k.owner, k.name, scopes, k.created, k.expires],
            )
            .map(|_| ())
        })
    }

    /// Marks a key revoked; false when no such key.
    pub fn key_revoke(&self, id: &str, now: i64) -> Result<bool, String> {
        self.write(|c| {
            c.execute(
                "UPDATE api_keys SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
                params![id, now],
            )
            .map(|n| n > 0)
        })
    }

    /// Records a rotation: the old key now expires at `old_expires`.
    pub fn key_rotated(&self, old: &str, new: &str, old_expires: i64) -> Result<(), String> {
        self.write(|c| {
            c.execute(
                "UPDATE api_keys SET replaced_by = ?2, expires = MIN(COALESCE(expires, ?3), ?3) WHERE id = ?1",
                params![old, new, old_expires],
            )
            .map(|_| ())
        })
    }

    /// Writes batched `last_used` times.
    pub fn key_touch(&self, uses: &[(String, i64)]) -> Result<(), String> {
        self.write(|c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "UPDATE api_keys SET last_used = MAX(COALESCE(last_used, 0), ?2) WHERE id = ?1",
                )?;
                for (id, t) in uses {
                    st.execute(params![id, t])?;
                }
            }
            tx.commit()
        })
    }
}

/// Revokes every refresh token of a user (by user name); `?1` = username.
const REVOKE_USER_REFRESH: &str =
    "UPDATE refresh_tokens SET revoked = CAST(strftime('%s','now') AS INTEGER)
     WHERE revoked IS NULL AND user_id = (SELECT id FROM users WHERE username = ?1)";

const USER_COLS: &str = "id, username, password_hash, roles, attributes, disabled, created";

fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    let roles: String = r.get(3)?;
    let attributes: String = r.get(4)?;
    Ok(UserRecord {
        id: r.get(0)?,
        username: r.get(1)?,
        password_hash: r.get(2)?,
        roles: serde_json::from_str(&roles).unwrap_or_default(),
        attributes: serde_json::from_str(&attributes).unwrap_or_default(),
        disabled: r.get::<_, i64>(5)? != 0,
        created: r.get(6)?,
    })
}

impl Store {
    /// A user by login name.
    pub fn user_by_name(&self, username: &str) -> Result<Option<UserRecord>, String> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE username = ?1");
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row(params![username], row_to_user)
                .optional()
        })
    }

    /// All users.
    pub fn user_list(&self) -> Result<Vec<UserRecord>, String> {
        let sql = format!("SELECT {USER_COLS} FROM users ORDER BY created, username");
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map([], row_to_user)?
                .collect()
        })
    }

    /// Adds a user; an error when the name is taken.
    pub fn user_insert(&self, u: &UserRecord) -> Result<(), String> {
        let roles = serde_json::to_string(&u.roles).unwrap_or_else(|_| "[]".into());
        let attrs = u.attributes.to_string();
        self.write(|c| {
            c.execute(
                "INSERT INTO users (id, username, password_hash, roles, attributes, disabled, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![u.id, u.username, u.password_hash, roles, attrs, i64::from(u.disabled), u.created],
            )
            .map(|_| ())
        })
    }

    /// Sets a user's password hash and ends all their sessions.
    pub fn user_set_password(&self, username: &str, hash: &str) -> Result<bool, String> {
        self.write(|c| {
            let n = c.execute(
                "UPDATE users SET password_hash = ?2 WHERE username = ?1",
                params![username, hash],
            )?;
            c.execute(
                "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = ?1)",
                params![username],
            )?;
            c.execute(REVOKE_USER_REFRESH, params![username])?;
            Ok(n > 0)
        })
    }

    /// Disables (or enables) a user; disabling ends all their sessions.
    pub fn user_set_disabled(&self, username: &str, disabled: bool) -> Result<bool, String> {
        self.write(|c| {
            let n = c.execute("UPDATE users SET disabled = ?2 WHERE username = ?1", params![username, i64::from(disabled)])?;
            if disabled {
                c.execute("DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = ?1)", params![username])?;
                c.execute(REVOKE_USER_REFRESH, params![username])?;
            }
            Ok(n > 0)
        })
    }

    /// Stores a new session.
    pub fn session_insert(
        &self,
        id_hash: &[u8],
        user_id: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), String> {
        self.write(|c| {
            c.execute(
                "INSERT INTO sessions (id_hash, user_id, created, last_seen, expires) VALUES (?1, ?2, ?3, ?3, ?4)",
                params![id_hash, user_id, now, expires],
            )
            .map(|_| ())
        })
    }

    /// A session and its user.
    pub fn session_get(&self, id_hash: &[u8]) -> Result<Option<SessionRecord>, String> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT u.id, u.username, u.password_hash, u.roles, u.attributes, u.disabled, u.created,
                        s.created, s.last_seen, s.expires
                 FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?1",
            )?
            .query_row(params![id_hash], |r| {
                Ok(SessionRecord { user: row_to_user(r)?, created: r.get(7)?, last_seen: r.get(8)?, expires: r.get(9)? })
            })
            .optional()
        })
    }

    /// Records use of a session.
    pub fn session_touch(&self, id_hash: &[u8], now: i64) -> Result<(), String> {
        self.write(|c| {
            c.execute(
                "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1",
                params![id_hash, now],
            )
            .map(|_| ())
        })
    }

    /// Ends one session; false when there was none.
    pub fn session_delete(&self, id_hash: &[u8]) -> Result<bool, String> {
        self.write(|c| {
            c.execute("DELETE FROM sessions WHERE id_hash = ?1", params![id_hash])
                .map(|n| n > 0)
        })
    }

    /// The sessions of a user (created, last_seen, expires), newest first;
    /// never the ids.
    pub fn session_list_user(&self, username: &str) -> Result<Vec<(i64, i64, i64)>, String> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT s.created, s.last_seen, s.expires FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE u.username = ?1 ORDER BY s.created DESC",
            )?
            .query_map(params![username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect()
        })
    }

    /// Deletes sessions and refresh tokens that expired more than a day ago
    /// (refresh tokens are kept a day past expiry so a late reuse is still
    /// recognised as reuse). Returns how many rows went.
    pub fn sweep(&self, now: i64) -> Result<usize, String> {
        self.write(|c| {
            let a = c.execute("DELETE FROM sessions WHERE expires < ?1", params![now])?;
            let b = c.execute(
                "DELETE FROM refresh_tokens WHERE expires < ?1",
                params![now - 86_400],
            )?;
            Ok(a + b)
        })
    }

    /// Ends every session of a user; returns how many.
    pub fn session_delete_user(&self, username: &str) -> Result<usize, String> {
        self.write(|c| {
            let n = c.execute(
                "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = ?1)",
                params![username],
            )?;
            c.execute(REVOKE_USER_REFRESH, params![username])?;
            Ok(n)
        })
    }
}

impl Store {
    /// Stores a refresh token hash.
    pub fn refresh_insert(
        &self,
        hash: &[u8],
        family: &str,
        user_id: &str,
        now: i64,
        expires: i64,
    ) -> Result<(), String> {
        self.write(|c| {
            c.execute(
                "INSERT INTO refresh_tokens (hash, family, user_id, created, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, family, user_id, now, expires],
            )
            .map(|_| ())
        })
    }

    /// Spends a refresh token, atomically: a second use revokes its family.
    pub fn refresh_use(&self, hash: &[u8], now: i64) -> Result<RefreshUse, String> {
        self.write(|c| {
            let tx = c.unchecked_transaction()?;
            let row: Option<RefreshRow> = tx
                .query_row(
                    "SELECT family, user_id, expires, used, revoked FROM refresh_tokens WHERE hash = ?1",
                    params![hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((family, user_id, expires, used, revoked)) = row else {
                return Ok(RefreshUse::Invalid);
            };
            if used.is_some() {
                tx.execute("UPDATE refresh_tokens SET revoked = ?2 WHERE family = ?1 AND revoked IS NULL", params![family, now])?;
                tx.commit()?;
                return Ok(RefreshUse::Reused);
            }
            if revoked.is_some() || expires <= now {
                return Ok(RefreshUse::Invalid);
            }
            let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
            let user = tx.query_row(&sql, params![user_id], row_to_user).optional()?;
            let Some(user) = user.filter(|u| !u.disabled) else {
                return Ok(RefreshUse::Invalid);
            };
            tx.execute("UPDATE refresh_tokens SET used = ?2 WHERE hash = ?1", params![hash, now])?;
            tx.commit()?;
            Ok(RefreshUse::Spent { user, family, expires })
        })
    }

    /// Revokes the family of a refresh token; false when unknown.
    pub fn refresh_revoke_family_of(&self, hash: &[u8], now: i64) -> Result<bool, String> {
        self.write(|c| {
            c.execute(
                "UPDATE refresh_tokens SET revoked = ?2
                 WHERE family = (SELECT family FROM refresh_tokens WHERE hash = ?1) AND revoked IS NULL",
                params![hash, now],
            )
            .map(|n| n > 0)
        })
    }
}

fn row_to_client(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRecord> {
    let scopes: String = r.get(3)?;
    Ok(ClientRecord {
        id: r.get(0)?,
        secret_hash: r.get(1)?,
        name: r.get(2)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created: r.get(4)?,
        disabled: r.get::<_, i64>(5)? != 0,
    })
}

impl Store {
    /// A client by id.
    pub fn client_get(&self, id: &str) -> Result<Option<ClientRecord>, String> {
        self.read(|c| {
            c.prepare_cached("SELECT id, secret_hash, name, scopes, created, disabled FROM clients WHERE id = ?1")?
                .query_row(params![id], row_to_client)
                .optional()
        })
    }

    /// All clients.
    pub fn client_list(&self) -> Result<Vec<ClientRecord>, String> {
        self.read(|c| {
            c.prepare_cached("SELECT id, secret_hash, name, scopes, created, disabled FROM clients ORDER BY created, id")?
                .query_map([], row_to_client)?
                .collect()
        })
    }

    /// Adds a client.
    pub fn client_insert(&self, k: &ClientRecord) -> Result<(), String> {
        let scopes = serde_json::to_string(&k.scopes).unwrap_or_else(|_| "[]".into());
        self.write(|c| {
            c.execute(
                "INSERT INTO clients (id, secret_hash, name, scopes, created, disabled) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![k.id, k.secret_hash, k.name, scopes, k.created, i64::from(k.disabled)],
            )
            .map(|_| ())
        })
    }

    /// Disables a client.
    pub fn client_disable(&self, id: &str) -> Result<bool, String> {
        self.write(|c| {
            c.execute("UPDATE clients SET disabled = 1 WHERE id = ?1", params![id])
                .map(|n| n > 0)
        })
    }
}

fn row_to_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let scopes: String = r.get(4)?;
    Ok(KeyRecord {
        id: r.get(0)?,
        hash: r.get(1)?,
        owner: r.get(2)?,
        name: r.get(3)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created: r.get(5)?,
        expires: r.get(6)?,
        last_used: r.get(7)?,
        revoked: r.get(8)?,
        replaced_by: r.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_insert_revoke_rotate() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Store::open(&dir.path().join("t.db")).unwrap_or_else(|e| panic!("{e}"));
        let k = KeyRecord {
            id: "abc".into(),
            hash: vec![1, 2, 3],
            owner: "alice".into(),
            name: "ci".into(),
            scopes: vec!["documents:read".into()],
            created: 10,
            expires: Some(1000),
            last_used: None,
            revoked: None,
            replaced_by: None,
        };
        assert_eq!(s.key_insert(&k), Ok(()));
        assert_eq!(
            s.key_get("abc").ok().flatten().map(|k| k.scopes),
            Some(vec!["documents:read".to_string()])
        );
        assert_eq!(s.key_touch(&[("abc".into(), 50)]), Ok(()));
        assert_eq!(s.key_rotated("abc", "def", 500), Ok(()));
        let got = s.key_get("abc").ok().flatten();
        assert_eq!(got.as_ref().and_then(|k| k.expires), Some(500));
        assert_eq!(got.as_ref().and_then(|k| k.last_used), Some(50));
        assert_eq!(s.key_revoke("abc", 60), Ok(true));
        assert_eq!(s.key_revoke("abc", 61), Ok(false));
        assert!(s.key_get("nope").ok().flatten().is_none());
        // reopening does not migrate twice
        drop(s);
        assert!(Store::open(&dir.path().join("t.db")).is_ok());
    }
}

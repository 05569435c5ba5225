//! Users, login and sessions: Portcullis as the identity provider.
//!
//! * Passwords are argon2id hashes with OWASP's parameters (19 MiB, 2
//!   passes, 1 lane). Hashing runs on the blocking pool.
//! * `POST /auth/login` (`{"username","password"}`) answers one generic 401
//!   for an unknown user, a wrong password and a disabled user, and takes the
//!   same time for all three: an unknown user is checked against a dummy hash.
//! * A session id is 256 random bits, sent once in a `__Host-` cookie
//!   (`HttpOnly; Secure; SameSite=Strict; Path=/`) and stored only as its
//!   SHA-256. Every login makes a new id (no fixation). Sessions end after an
//!   idle and an absolute timeout; `POST /auth/logout` deletes the session,
//!   so the same cookie is refused on the very next request.
//! * Cookie-authenticated unsafe requests (POST, PUT, PATCH, DELETE) must come
//!   from the same origin (or an allowlisted one): CSRF defence.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method, header};
use serde_json::json;

use super::identity::{AuthMethod, Identity, IdentityHeaders};
use crate::store::shared::SharedAuth;
use crate::store::{SessionRecord, Store, UserRecord};

/// argon2id with OWASP's recommended minimum (m = 19 MiB, t = 2, p = 1).
fn argon2() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password (blocking: call off the async runtime).
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.len() < 8 || password.len() > 1024 {
        return Err("a password has 8 to 1024 bytes".into());
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks a password against a PHC string (blocking).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// Why a session cookie was refused (logs only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Not a session id.
    #[error("malformed session id")]
    Malformed,
    /// No such session (logged out, or never existed).
    #[error("unknown session")]
    Unknown,
    /// Past the absolute or idle timeout.
    #[error("session expired")]
    Expired,
    /// The user is disabled.
    #[error("user disabled")]
    Disabled,
    /// The store could not be read.
    #[error("store unavailable")]
    Store,
}

/// The compiled `[auth.sessions]`.
#[derive(Debug)]
pub struct Sessions {
    /// Cookie name (starts with `__Host-`).
    pub cookie: String,
    /// Idle timeout, seconds.
    pub idle: i64,
    /// Absolute timeout, seconds.
    pub absolute: i64,
    /// Path of the login endpoint.
    pub login_path: String,
    /// Path of the logout endpoint.
    pub logout_path: String,
    /// Origins allowed for cookie-authenticated writes besides the gateway's own.
    pub allowed_origins: Vec<String>,
    /// Login opens a cookie session.
    pub issue_cookie: bool,
    /// Login issues access and refresh tokens.
    pub issue_tokens: bool,
    dummy_hash: String,
}

/// The outcome of a login attempt.
#[derive(Debug)]
pub enum Login {
    /// A new session: the cookie to set and the user.
    Ok {
        /// `Set-Cookie` value, when login opens a cookie session.
        cookie: Option<HeaderValue>,
        /// Who logged in.
        user: UserRecord,
        /// The new session's id hash, when the caller stores it (Redis).
        unsaved: Option<Vec<u8>>,
    },
    /// Unknown user, wrong password or disabled user (one answer for all).
    Failed {
        /// For the audit log only.
        reason: &'static str,
    },
}

impl Sessions {
    /// Builds the method (computes the dummy hash once).
    pub fn new(
        cookie: String,
        idle: i64,
        absolute: i64,
        login_path: String,
        logout_path: String,
        allowed_origins: Vec<String>,
    ) -> Result<Self, String> {
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
        let dummy_hash = hash_password(&URL_SAFE_NO_PAD.encode(random))?;
        Ok(Self {
            cookie,
            idle,
            absolute,
            login_path,
            logout_path,
            allowed_origins,
            issue_cookie: true,
            issue_tokens: false,
            dummy_hash,
        })
    }

    /// Checks credentials and opens a session (blocking: argon2 and SQLite).
    /// With `save = false` the session is not stored: the caller stores
    /// `Login::Ok::unsaved` (in Redis).
    pub fn login(
        &self,
        store: &Store,
        username: &str,
        password: &str,
        now: i64,
        save: bool,
    ) -> Result<Login, String> {
        let user = store.user_by_name(username)?;
        let Some(user) = user else {
            // Same work as for a real user, so timing tells nothing.
            let _ = verify_password(password, &self.dummy_hash);
            return Ok(Login::Failed {
                reason: "unknown_user",
            });
        };
        let ok = verify_password(password, &user.password_hash);
        if user.disabled {
            return Ok(Login::Failed { reason: "disabled" });
        }
        if !ok {
            return Ok(Login::Failed {
                reason: "bad_password",
            });
        }
        if !self.issue_cookie {
            return Ok(Login::Ok {
                cookie: None,
                user,
                unsaved: None,
            });
        }
        let mut id = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| format!("no randomness: {e}"))?;
        let id = URL_SAFE_NO_PAD.encode(id);
        let mut unsaved = Some(hash_id(&id));
        if save {
            if let Some(hash) = unsaved.take() {
                store.session_insert(&hash, &user.id, now, now.saturating_add(self.absolute))?;
            }
        }
        let cookie = HeaderValue::from_str(&format!(
            "{}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            self.cookie, self.absolute
        ))
        .map_err(|e| e.to_string())?;
        Ok(Login::Ok {
            cookie: Some(cookie),
            user,
            unsaved,
        })
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
            self.cookie
        ))
        .unwrap_or(HeaderValue::from_static(""))
    }

    /// The session id in the request's cookies, if any.
    pub fn presented<'a>(&self, h: &'a HeaderMap) -> Option<&'a str> {
        h.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == self.cookie)
            .map(|(_, v)| v)
    }

    /// The stored hash of a presented session id (`Malformed` if it cannot
    /// be one).
    pub fn id_hash(id: &str) -> Result<Vec<u8>, SessionError> {
        if id.len() != 43
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SessionError::Malformed);
        }
        Ok(hash_id(id))
    }

    fn expired(&self, s: &SessionRecord, now: i64) -> bool {
        now >= s.expires || now >= s.last_seen.saturating_add(self.idle)
    }

    fn due_touch(&self, s: &SessionRecord, now: i64) -> bool {
        now - s.last_seen >= 60.min(self.idle / 4).max(1)
    }

    /// Checks a session id; records its use at most once a minute.
    pub fn verify(&self, store: &Store, id: &str, now: i64) -> Result<Arc<Identity>, SessionError> {
        let hash = Self::id_hash(id)?;
        let s = store
            .session_get(&hash)
            .map_err(|_| SessionError::Store)?
            .ok_or(SessionError::Unknown)?;
        if self.expired(&s, now) {
            let _ = store.session_delete(&hash);
            return Err(SessionError::Expired);
        }
        if s.user.disabled {
            return Err(SessionError::Disabled);
        }
        if self.due_touch(&s, now) {
            let _ = store.session_touch(&hash, now);
        }
        Self::identity(s)
    }

    /// [`verify`](Self::verify) against the sessions in Redis. The user is
    /// looked up in this instance's store too (by name): a user disabled or
    /// removed here is refused even if a session of theirs survived in Redis
    /// (a login racing the disable on another instance).
    pub async fn verify_shared(
        &self,
        shared: &SharedAuth,
        store: &Store,
        id: &str,
        now: i64,
    ) -> Result<Arc<Identity>, SessionError> {
        let hash = Self::id_hash(id)?;
        let s = shared
            .session_get(&hash)
            .await
            .map_err(|_| SessionError::Store)?
            .ok_or(SessionError::Unknown)?;
        if self.expired(&s, now) {
            let _ = shared.session_delete(&hash).await;
            return Err(SessionError::Expired);
        }
        match store.user_by_name(&s.user.username) {
            Ok(Some(u)) if !u.disabled => {}
            Ok(_) => return Err(SessionError::Disabled),
            Err(_) => return Err(SessionError::Store),
        }
        if self.due_touch(&s, now) {
            let _ = shared.session_touch(&hash, &s, now, self.idle).await;
        }
        Self::identity(s)
    }

    fn identity(s: SessionRecord) -> Result<Arc<Identity>, SessionError> {
        let u = s.user;
        let tenant = u
            .attributes
            .get("tenant")
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        let headers = IdentityHeaders::new("portcullis", &u.id, &u.roles, &[], tenant.as_deref())
            .map_err(|_| SessionError::Malformed)?;
        Ok(Arc::new(Identity {
            subject: u.id.clone(),
            roles: u.roles.clone(),
            scopes: Vec::new(),
            tenant,
            issuer: "portcullis".into(),
            method: AuthMethod::Session,
            expires: u64::try_from(s.expires).unwrap_or(0),
            claims: Arc::new(
                json!({"sub": u.id, "username": u.username, "roles": u.roles, "attributes": u.attributes}),
            ),
            headers,
            upstream_token: Default::default(),
            authz: Default::default(),
            key_id: None,
        }))
    }

    /// Ends the session with this id.
    pub fn logout(&self, store: &Store, id: &str) -> Result<bool, String> {
        store.session_delete(&hash_id(id))
    }

    /// CSRF defence for cookie-authenticated requests: unsafe methods need an
    /// `Origin` equal to the gateway's own (`scheme://host`) or allowlisted,
    /// or `Sec-Fetch-Site: same-origin` when no `Origin` is sent.
    pub fn same_origin(&self, method: &Method, h: &HeaderMap, https: bool) -> bool {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return true;
        }
        let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
            return h.get("sec-fetch-site").is_some_and(|v| v == "same-origin");
        };
        let own = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|host| {
                format!(
                    "{}://{}",
                    if https { "https" } else { "http" },
                    host.to_ascii_lowercase()
                )
            });
        let origin = origin.to_ascii_lowercase();
        own.as_deref() == Some(origin.as_str()) || self.allowed_origins.contains(&origin)
    }
}

fn hash_id(id: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, id.as_bytes())
        .as_ref()
        .to_vec()
}

/// A new user record with a fresh id.
pub fn new_user(
    username: &str,
    password: &str,
    roles: Vec<String>,
    attributes: serde_json::Value,
    now: i64,
) -> Result<UserRecord, String> {
    new_user_with_id(None, username, password, roles, attributes, now)
}

/// A new user record; `id` (printable, no spaces), or a fresh one.
pub fn new_user_with_id(
    id: Option<&str>,
    username: &str,
    password: &str,
    roles: Vec<String>,
    attributes: serde_json::Value,
    now: i64,
) -> Result<UserRecord, String> {
    let printable = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
    };
    if !printable(username, 128) {
        return Err("a username is 1 to 128 printable characters without spaces".into());
    }
    if id.is_some_and(|i| !printable(i, 64)) {
        return Err("a user id is 1 to 64 printable characters without spaces".into());
    }
    if !attributes.is_object() {
        return Err("attributes must be a JSON object".into());
    }
    IdentityHeaders::new("portcullis", "u", &roles, &[], None).map_err(String::from)?;
    let mut random = [0u8; 9];
    getrandom::fill(&mut random).map_err(|e| format!("no randomness: {e}"))?;
    let fresh = format!(
        "u-{}",
        URL_SAFE_NO_PAD
            .encode(random)
            .to_ascii_lowercase()
            .replace(['-', '_'], "x")
    );
    Ok(UserRecord {
        id: id.map_or(fresh, str::to_owned),
        username: username.to_owned(),
        password_hash: hash_password(password)?,
        roles,
        attributes,
        disabled: false,
        created: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash_password("correct horse battery").unwrap_or_default();
        let b = hash_password("correct horse battery").unwrap_or_default();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse battery", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("x", "not a hash"));
        assert!(hash_password("short").is_err());
    }
}

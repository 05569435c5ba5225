//! API keys for server-to-server and third-party access.
//!
//! A key looks like `pk_<id>_<secret>`: a readable prefix, a short public id
//! (10 base32 characters) and a secret of 256 bits from the OS CSPRNG
//! (43 base64url characters). It is shown once, at creation. The store keeps
//! only HMAC-SHA-256(server secret, secret) — or SHA-256 when no server
//! secret is configured — so a leaked database reveals no usable key. The
//! presented secret's hash is compared in constant time.
//!
//! Keys expire (a default expiry is set at creation), can be revoked (the
//! next request is refused: every check reads the store), and rotate: a new
//! key is issued and the old one lives on for the overlap, then dies.
//! `last_used` is recorded in memory and written in batches, not per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::{constant_time, digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::identity::{AuthMethod, Identity, IdentityHeaders};
use crate::store::{KeyRecord, Store};

/// Why a key was refused (logs only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// Not `prefix_id_secret`.
    #[error("malformed key")]
    Malformed,
    /// No key with that id.
    #[error("unknown key id")]
    Unknown,
    /// Secret does not match.
    #[error("wrong secret")]
    Secret,
    /// Revoked.
    #[error("revoked")]
    Revoked,
    /// Past its expiry (or its rotation overlap).
    #[error("expired")]
    Expired,
    /// The store could not be read.
    #[error("store unavailable")]
    Store,
}

/// The compiled `[auth.api_keys]`.
pub struct ApiKeys {
    /// Readable prefix (`pk`).
    pub prefix: String,
    /// Header the key comes in (besides `Authorization: ApiKey ...`).
    pub header: http::HeaderName,
    /// Default lifetime of a new key, seconds (`None`: no expiry).
    pub default_expiry: Option<i64>,
    /// How long a rotated key keeps working, seconds.
    pub rotation_overlap: i64,
    hmac: Option<hmac::Key>,
    uses: Mutex<HashMap<String, i64>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A freshly created key: shown once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewKey {
    /// The full key (`pk_<id>_<secret>`): not stored anywhere.
    pub key: String,
    /// What was stored.
    pub record: KeyRecord,
}

impl ApiKeys {
    /// Builds the method; `secret` is the HMAC key (`None`: plain SHA-256).
    pub fn new(
        prefix: String,
        header: http::HeaderName,
        default_expiry: Option<i64>,
        rotation_overlap: i64,
        secret: Option<&[u8]>,
    ) -> Self {
        Self {
            prefix,
            header,
            default_expiry,
            rotation_overlap,
            hmac: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA256, s)),
            uses: Mutex::new(HashMap::new()),
        }
    }

    fn hash(&self, secret: &str) -> Vec<u8> {
        match &self.hmac {
            Some(k) => hmac::sign(k, secret.as_bytes()).as_ref().to_vec(),
            None => digest::digest(&digest::SHA256, secret.as_bytes())
                .as_ref()
                .to_vec(),
        }
    }

    /// Creates and stores a key for `owner`.
    pub fn create(
        &self,
        store: &Store,
        owner: &str,
        name: &str,
        scopes: Vec<String>,
        expires_in: Option<i64>,
        now: i64,
    ) -> Result<NewKey, String> {
        if owner.is_empty() || IdentityHeaders::new("api_key", owner, &[], &scopes, None).is_err() {
            return Err("owner and scopes must be non-empty printable text".into());
        }
        let mut id_bytes = [0u8; 7];
        let mut secret_bytes = [0u8; 32];
        getrandom::fill(&mut id_bytes).map_err(|e| format!("no randomness: {e}"))?;
        getrandom::fill(&mut secret_bytes).map_err(|e| format!("no randomness: {e}"))?;
        let id = base32(&id_bytes);
        let secret = URL_SAFE_NO_PAD.encode(secret_bytes);
        let record = KeyRecord {
            id: id.clone(),
            hash: self.hash(&secret),
            owner: owner.to_owned(),
            name: name.to_owned(),
            scopes,
            created: now,
            expires: expires_in
                .or(self.default_expiry)
                .map(|s| now.saturating_add(s)),
            last_used: None,
            revoked: None,
            replaced_by: None,
        };
        store.key_insert(&record)?;
        Ok(NewKey {
            key: format!("{}_{id}_{secret}", self.prefix),
            record,
        })
    }

    /// Issues a replacement with the same owner, name and scopes; the old
    /// key keeps working for `overlap` seconds, then dies.
    pub fn rotate(
        &self,
        store: &Store,
        id: &str,
        overlap: Option<i64>,
        now: i64,
    ) -> Result<NewKey, String> {
        let old = store.key_get(id)?.ok_or_else(|| format!("no key {id}"))?;
        if old.revoked.is_some() {
            return Err(format!("key {id} is revoked"));
        }
        if old.expires.is_some_and(|e| e <= now) {
            return Err(format!("key {id} has expired"));
        }
        let new = self.create(store, &old.owner, &old.name, old.scopes.clone(), None, now)?;
        let until = now.saturating_add(overlap.unwrap_or(self.rotation_overlap).max(0));
        store.key_rotated(id, &new.record.id, until)?;
        Ok(new)
    }

    /// The key presented in a request: the configured header, or
    /// `Authorization: ApiKey <key>`, or (only where a route allows it) a
    /// query parameter. `Err` when more than one is present.
    pub fn presented<'a>(
        &self,
        h: &'a http::HeaderMap,
        query: Option<&'a str>,
        query_param: Option<&str>,
    ) -> Result<Option<std::borrow::Cow<'a, str>>, ApiKeyError> {
        let mut found: Vec<std::borrow::Cow<'a, str>> = Vec::new();
        for v in h.get_all(&self.header) {
            found.push(std::borrow::Cow::Borrowed(
                v.to_str().map_err(|_| ApiKeyError::Malformed)?,
            ));
        }
        for v in h.get_all(http::header::AUTHORIZATION) {
            let v = v.to_str().map_err(|_| ApiKeyError::Malformed)?;
            if let Some((scheme, key)) = v.split_once(' ') {
                if scheme.eq_ignore_ascii_case("apikey") {
                    found.push(std::borrow::Cow::Borrowed(key));
                }
            }
        }
        if let (Some(q), Some(name)) = (query, query_param) {
            for pair in q.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if k == name {
                        found.push(std::borrow::Cow::Owned(crate::canon::decode_segment(v)));
                    }
                }
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(ApiKeyError::Malformed),
        }
    }

    /// Checks a presented key against the store.
    pub fn verify(
        &self,
        store: &Store,
        presented: &str,
        now: i64,
    ) -> Result<Arc<Identity>, ApiKeyError> {
        let rest = presented
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('_'))
            .ok_or(ApiKeyError::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(ApiKeyError::Malformed)?;
        if id.len() != 12
            || secret.len() != 43
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            return Err(ApiKeyError::Malformed);
        }
        let rec = store
            .key_get(id)
            .map_err(|_| ApiKeyError::Store)?
            .ok_or(ApiKeyError::Unknown)?;
        let hash = self.hash(secret);
        constant_time::verify_slices_are_equal(&hash, &rec.hash)
            .map_err(|_| ApiKeyError::Secret)?;
        if rec.revoked.is_some() {
            return Err(ApiKeyError::Revoked);
        }
        if rec.expires.is_some_and(|e| e <= now) {
            return Err(ApiKeyError::Expired);
        }
        if let Ok(mut uses) = self.uses.lock() {
            uses.insert(rec.id.clone(), now);
        }
        let headers = IdentityHeaders::new("api_key", &rec.owner, &[], &rec.scopes, None)
            .map_err(|_| ApiKeyError::Malformed)?;
        Ok(Arc::new(Identity {
            subject: rec.owner.clone(),
            roles: Vec::new(),
            scopes: rec.scopes.clone(),
            tenant: None,
            issuer: "api_key".into(),
            method: AuthMethod::ApiKey,
            expires: rec
                .expires
                .map_or(u64::MAX, |e| u64::try_from(e).unwrap_or(0)),
            claims: Arc::new(
                json!({"key_id": rec.id, "owner": rec.owner, "name": rec.name, "scopes": rec.scopes}),
            ),
            headers,
            key_id: Some(rec.id),
            upstream_token: Default::default(),
            authz: Default::default(),
        }))
    }

    /// Writes the batched `last_used` times (called periodically).
    pub fn flush_uses(&self, store: &Store) {
        let batch: Vec<(String, i64)> = match self.uses.lock() {
            Ok(mut u) if !u.is_empty() => u.drain().collect(),
            _ => return,
        };
        if let Err(e) = store.key_touch(&batch) {
            tracing::warn!(error = %e, "could not record API key use");
        }
    }
}

/// Lower-case RFC 4648 base32 without padding (readable, case-insensitive-safe).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let mut buf: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_length() {
        assert_eq!(base32(&[0u8; 7]).len(), 12);
        assert_eq!(base32(&[0xff; 1]), "74");
    }
}

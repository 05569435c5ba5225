//! Tokens Portcullis issues: ES256 access tokens and opaque refresh tokens.
//!
//! * Signing keys are P-256 PKCS#8 PEM files listed in `[auth.tokens]
//!   signing_keys`; the first one signs, all are published at
//!   `/.well-known/jwks.json`. Rotation: put a new key first and reload; keep
//!   the old one listed until its last tokens expired (`access_ttl`), then
//!   remove it. `portcullis signing-key` makes a key.
//! * Access tokens are short-lived (default 15 min) and verified by the same
//!   JWT stage as tokens from other issuers (Portcullis adds itself as an
//!   issuer).
//! * Refresh tokens are 256 random bits, stored only as SHA-256, single-use
//!   and rotated on every use. Each login starts a family; presenting a spent
//!   token again revokes the whole family (someone else holds a copy), and so
//!   does logout.

use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use super::jwks::KeySet;
use crate::store::shared::{SharedAuth, Spent};
use crate::store::{RefreshUse, Store, UserRecord};

/// Why a refresh was refused (logs only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// Unknown, expired or revoked.
    #[error("invalid refresh token")]
    Invalid,
    /// A spent token presented again: its family is now revoked.
    #[error("refresh token reused; family revoked")]
    Reused,
    /// The store failed.
    #[error("store unavailable")]
    Store,
}

/// A minted refresh token, to be stored.
struct UnsavedRefresh {
    hash: Vec<u8>,
    family: String,
    expires: i64,
}

/// The compiled `[auth.tokens]`.
pub struct Tokens {
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Access token lifetime, seconds.
    pub access_ttl: i64,
    /// Refresh token lifetime, seconds.
    pub refresh_ttl: i64,
    /// Where the JWKS is served.
    pub jwks_path: String,
    /// Where refresh tokens are exchanged.
    pub refresh_path: String,
    /// OAuth token endpoint (client credentials).
    pub token_path: String,
    /// `aud` of upstream tokens, when they are sent.
    pub upstream_audience: Option<String>,
    /// The public keys, as served (JSON).
    pub jwks: Bytes,
    /// The public keys, for verification.
    pub public_keys: KeySet,
    kid: String,
    key: EncodingKey,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A new P-256 signing key as PKCS#8 PEM.
pub fn new_signing_key() -> Result<String, String> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map(|k| k.serialize_pem())
        .map_err(|e| e.to_string())
}

impl Tokens {
    /// Loads the keys: `(kid, PEM file)`, the first signs.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        issuer: String,
        audience: String,
        access_ttl: i64,
        refresh_ttl: i64,
        jwks_path: String,
        refresh_path: String,
        token_path: String,
        keys: &[(String, std::path::PathBuf)],
        base: &Path,
    ) -> Result<Self, String> {
        let mut jwks = Vec::new();
        let mut signer = None;
        for (kid, file) in keys {
            let path = if file.is_absolute() {
                file.clone()
            } else {
                base.join(file)
            };
            let pem =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|_| format!("{}: not a PEM private key", path.display()))?;
            let PrivateKeyDer::Pkcs8(pkcs8) = der else {
                return Err(format!(
                    "{}: use a PKCS#8 P-256 key (portcullis signing-key)",
                    path.display()
                ));
            };
            let pair = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                pkcs8.secret_pkcs8_der(),
            )
            .map_err(|_| format!("{}: not a P-256 key", path.display()))?;
            let point = pair.public_key().as_ref();
            let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
                return Err(format!(
                    "{}: unexpected public key encoding",
                    path.display()
                ));
            };
            jwks.push(
                json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                             "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}),
            );
            if signer.is_none() {
                let key = EncodingKey::from_ec_pem(&pem)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                signer = Some((kid.clone(), key));
            }
        }
        let (kid, key) = signer.ok_or("list at least one signing key")?;
        let doc = json!({ "keys": jwks }).to_string();
        let public_keys = KeySet::from_jwks(doc.as_bytes())?;
        Ok(Self {
            issuer,
            audience,
            access_ttl,
            refresh_ttl,
            jwks_path,
            refresh_path,
            token_path,
            upstream_audience: None,
            jwks: Bytes::from(doc),
            public_keys,
            kid,
            key,
        })
    }

    fn access_token(&self, u: &UserRecord, now: i64) -> Result<String, String> {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| format!("no randomness: {e}"))?;
        let mut claims = json!({
            "iss": self.issuer, "aud": self.audience, "sub": u.id, "preferred_username": u.username,
            "roles": u.roles, "iat": now, "nbf": now, "exp": now.saturating_add(self.access_ttl),
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        if let Some(t) = u.attributes.get("tenant").filter(|t| t.is_string()) {
            claims["tenant"] = t.clone();
        }
        // For conditions (`identity.attributes`); the user can read them.
        if u.attributes.as_object().is_some_and(|a| !a.is_empty()) {
            claims["attributes"] = u.attributes.clone();
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }

    /// Creates a client; returns the secret (shown once).
    pub fn create_client(
        &self,
        store: &Store,
        id: &str,
        name: &str,
        scopes: Vec<String>,
        now: i64,
    ) -> Result<String, String> {
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err("a client id is 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        crate::authn::identity::IdentityHeaders::new("portcullis", id, &[], &scopes, None)
            .map_err(String::from)?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
        let secret = URL_SAFE_NO_PAD.encode(raw);
        store.client_insert(&crate::store::ClientRecord {
            id: id.to_owned(),
            secret_hash: hash(&secret),
            name: name.to_owned(),
            scopes,
            created: now,
            disabled: false,
        })?;
        Ok(secret)
    }

    /// Client credentials grant: checks the client and issues an access
    /// token for the requested scopes (default: all the client's). No refresh
    /// token (RFC 6749 §4.4.3). Errors are RFC 6749 error codes.
    pub fn client_credentials(
        &self,
        store: &Store,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
        now: i64,
    ) -> Result<Value, &'static str> {
        let client = store.client_get(client_id).map_err(|_| "server_error")?;
        // Compare against something even for unknown clients (timing).
        let stored = client
            .as_ref()
            .map_or_else(|| vec![0u8; 32], |c| c.secret_hash.clone());
        let ok = aws_lc_rs::constant_time::verify_slices_are_equal(&hash(secret), &stored).is_ok();
        let client = match client {
            Some(c) if ok && !c.disabled => c,
            _ => return Err("invalid_client"),
        };
        let scopes: Vec<String> = match scope {
            None => client.scopes.clone(),
            Some(s) => {
                let asked: Vec<String> = s.split_ascii_whitespace().map(str::to_owned).collect();
                if asked.is_empty() || asked.iter().any(|a| !client.scopes.contains(a)) {
                    return Err("invalid_scope");
                }
                asked
            }
        };
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|_| "server_error")?;
        let claims = json!({
            "iss": self.issuer, "aud": self.audience, "sub": client.id, "client_id": client.id,
            "scope": scopes.join(" "), "iat": now, "nbf": now, "exp": now.saturating_add(self.access_ttl),
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| "server_error")?;
        Ok(
            json!({"access_token": token, "token_type": "Bearer", "expires_in": self.access_ttl,
                  "scope": scopes.join(" ")}),
        )
    }

    /// The `X-Portcullis-Token` value for an identity: reused while it has
    /// more than 10 s left, else signed anew (valid 60 s).
    pub fn upstream_token(
        &self,
        id: &crate::authn::Identity,
        now: i64,
    ) -> Option<http::HeaderValue> {
        let aud = self.upstream_audience.as_ref()?;
        let mut slot = id
            .upstream_token
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((v, exp)) = slot.as_ref() {
            if *exp - now > 10 {
                return Some(v.clone());
            }
        }
        let exp = now.saturating_add(60);
        let claims = json!({
            "iss": self.issuer, "aud": aud, "sub": id.subject, "roles": id.roles, "scope": id.scopes.join(" "),
            "auth": id.method.as_str(), "src_iss": id.issuer, "tenant": id.tenant, "iat": now, "exp": exp,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key).ok()?;
        let v = http::HeaderValue::from_str(&token).ok()?;
        *slot = Some((v.clone(), exp));
        Some(v)
    }

    /// Issues an access token and a refresh token (a new family unless one
    /// is continued). Blocking (SQLite).
    pub fn issue(
        &self,
        store: &Store,
        u: &UserRecord,
        family: Option<(&str, i64)>,
        now: i64,
    ) -> Result<Value, String> {
        let (pair, unsaved) = self.mint(u, family, now)?;
        store.refresh_insert(&unsaved.hash, &unsaved.family, &u.id, now, unsaved.expires)?;
        Ok(pair)
    }

    /// [`issue`](Self::issue) with the refresh token stored in Redis.
    pub async fn issue_shared(
        &self,
        shared: &SharedAuth,
        u: &UserRecord,
        family: Option<(&str, i64)>,
        now: i64,
    ) -> Result<Value, RefreshError> {
        let (pair, r) = self.mint(u, family, now).map_err(|_| RefreshError::Store)?;
        shared
            .refresh_insert(&r.hash, &r.family, u, now, r.expires)
            .await
            .map_err(|_| RefreshError::Store)?;
        Ok(pair)
    }

    /// [`refresh`](Self::refresh) against the tokens in Redis.
    pub async fn refresh_shared(
        &self,
        shared: &SharedAuth,
        store: &Store,
        refresh_token: &str,
        now: i64,
    ) -> Result<Value, RefreshError> {
        if refresh_token.len() != 43 {
            return Err(RefreshError::Invalid);
        }
        match shared
            .refresh_use(&hash(refresh_token), now, self.refresh_ttl)
            .await
            .map_err(|_| RefreshError::Store)?
        {
            Spent::Ok(user, family, expires) => {
                // A user disabled (or removed) in this instance's store gets
                // no new tokens, whatever Redis still holds.
                match store.user_by_name(&user.username) {
                    Ok(Some(u)) if !u.disabled => {}
                    Ok(_) => return Err(RefreshError::Invalid),
                    Err(_) => return Err(RefreshError::Store),
                }
                self.issue_shared(shared, &user, Some((&family, expires)), now)
                    .await
            }
            Spent::Reused => Err(RefreshError::Reused),
            Spent::Invalid => Err(RefreshError::Invalid),
        }
    }

    /// [`revoke`](Self::revoke) in Redis.
    pub async fn revoke_shared(
        &self,
        shared: &SharedAuth,
        refresh_token: &str,
    ) -> Result<bool, RefreshError> {
        shared
            .refresh_revoke_family_of(&hash(refresh_token), self.refresh_ttl)
            .await
            .map_err(|_| RefreshError::Store)
    }

    /// An access token and a refresh token, and what must be stored of the
    /// latter.
    fn mint(
        &self,
        u: &UserRecord,
        family: Option<(&str, i64)>,
        now: i64,
    ) -> Result<(Value, UnsavedRefresh), String> {
        let access = self.access_token(u, now)?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
        let refresh = URL_SAFE_NO_PAD.encode(raw);
        let (family, expires) = match family {
            Some((f, expires)) => (f.to_owned(), expires),
            None => {
                let mut f = [0u8; 12];
                getrandom::fill(&mut f).map_err(|e| format!("no randomness: {e}"))?;
                (
                    URL_SAFE_NO_PAD.encode(f),
                    now.saturating_add(self.refresh_ttl),
                )
            }
        };
        // A rotated token keeps its family's expiry: refreshing never extends
        // a login beyond refresh_ttl.
        let unsaved = UnsavedRefresh {
            hash: hash(&refresh),
            family,
            expires,
        };
        Ok((
            json!({"access_token": access, "token_type": "Bearer", "expires_in": self.access_ttl,
                  "refresh_token": refresh}),
            unsaved,
        ))
    }

    /// Exchanges a refresh token for a new pair (the old one is spent).
    pub fn refresh(
        &self,
        store: &Store,
        refresh_token: &str,
        now: i64,
    ) -> Result<Value, RefreshError> {
        if refresh_token.len() != 43 {
            return Err(RefreshError::Invalid);
        }
        match store
            .refresh_use(&hash(refresh_token), now)
            .map_err(|_| RefreshError::Store)?
        {
            RefreshUse::Spent {
                user,
                family,
                expires,
            } => self
                .issue(store, &user, Some((&family, expires)), now)
                .map_err(|_| RefreshError::Store),
            RefreshUse::Reused => Err(RefreshError::Reused),
            RefreshUse::Invalid => Err(RefreshError::Invalid),
        }
    }

    /// Revokes the family of a refresh token (logout).
    pub fn revoke(&self, store: &Store, refresh_token: &str, now: i64) -> Result<bool, String> {
        store.refresh_revoke_family_of(&hash(refresh_token), now)
    }
}

fn hash(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

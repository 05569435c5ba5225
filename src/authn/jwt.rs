//! Bearer JWT verification.
//!
//! The signature is checked with `jsonwebtoken` (aws-lc-rs backend); every
//! other rule is checked here, on the raw JSON, so a claim of the wrong type
//! is an error rather than "absent" (a past version of that crate read a
//! string `exp` as no `exp` at all: CVE-2026-25537):
//!
//! * at most `max_token_bytes`, exactly three base64url parts;
//! * header: `alg` on the issuer's allowlist (`none` does not parse; HMAC only
//!   for an issuer configured with a shared secret); `jku`, `x5u`, `jwk`,
//!   `x5c` are refused outright, never followed; `crit` is refused (no
//!   extensions are understood);
//! * the key, chosen by `kid`, must be of the algorithm's family and, when the
//!   JWK names an `alg`, of exactly that algorithm (no RS/HS confusion);
//! * claims: `iss` selects a configured issuer; `aud` (string or list) must
//!   contain a configured audience; `exp` is required and numeric; `nbf` and
//!   `iat`, when present, are numeric and not in the future; all with
//!   `leeway`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::Value;

use super::cache::TokenCache;
use super::identity::{ClaimMap, Identity};
use super::jwks::KeySource;

/// Why a token was refused (for logs; clients only learn "invalid token").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Over `max_token_bytes`.
    #[error("token too large")]
    TooLarge,
    /// Not three base64url parts of JSON objects.
    #[error("malformed token")]
    Malformed,
    /// `alg` not allowed for the issuer (or unknown, or `none`).
    #[error("algorithm not allowed")]
    Algorithm,
    /// `jku`, `x5u`, `jwk`, `x5c` or `crit` in the header.
    #[error("forbidden header parameter")]
    ForbiddenHeader,
    /// `iss` missing, not a string, or not configured.
    #[error("unknown issuer")]
    Issuer,
    /// No key for the `kid`.
    #[error("unknown key")]
    UnknownKey,
    /// Key of another type than the algorithm.
    #[error("key and algorithm do not match")]
    KeyMismatch,
    /// Signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `exp` missing or not a number.
    #[error("exp missing or not a number")]
    ExpInvalid,
    /// Expired.
    #[error("expired")]
    Expired,
    /// `nbf` in the future, or not a number.
    #[error("not yet valid")]
    NotYetValid,
    /// `iat` in the future, or not a number.
    #[error("issued in the future")]
    IssuedInFuture,
    /// `aud` missing, of the wrong type, or not ours.
    #[error("wrong audience")]
    Audience,
    /// Claims cannot be mapped to an identity.
    #[error("claims do not describe an identity")]
    Identity,
}

/// One trusted issuer.
#[derive(Debug)]
pub struct Issuer {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Allowed algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Keys.
    pub keys: KeySource,
    /// Claim paths.
    pub claims: ClaimMap,
}

/// The compiled `[auth.jwt]`.
#[derive(Debug)]
pub struct JwtVerifier {
    /// Trusted issuers.
    pub issuers: Vec<Issuer>,
    /// Clock skew allowed, seconds.
    pub leeway: u64,
    /// Largest accepted token.
    pub max_token_bytes: usize,
    /// Verified tokens.
    pub cache: Arc<TokenCache>,
    /// Signature checks performed (cache misses that reached the crypto).
    pub signature_checks: std::sync::atomic::AtomicU64,
}

impl JwtVerifier {
    /// Verifies a bearer token at time `now` (Unix seconds).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Arc<Identity>, JwtError> {
        if token.len() > self.max_token_bytes {
            return Err(JwtError::TooLarge);
        }
        if let Some(id) = self.cache.get(token, now) {
            // Keep the issuer's keys fresh even when every token is cached:
            // a refresh that finds keys changed empties this cache.
            if let Some(KeySource::Remote(r)) = self
                .issuers
                .iter()
                .find(|i| i.issuer == id.issuer)
                .map(|i| &i.keys)
            {
                r.refresh_if_stale();
            }
            return Ok(id);
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header = decode_json(h64)?;
        for forbidden in ["jku", "x5u", "jwk", "x5c", "crit"] {
            if header.get(forbidden).is_some() {
                return Err(JwtError::ForbiddenHeader);
            }
        }
        let alg: Algorithm = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|a| a.parse().ok())
            .ok_or(JwtError::Algorithm)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(JwtError::Malformed),
        };
        let claims = decode_json(p64)?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(JwtError::Issuer)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or(JwtError::Issuer)?;
        if !issuer.algorithms.contains(&alg) {
            return Err(JwtError::Algorithm);
        }
        let generation = self.cache.generation();
        let keys = issuer.keys.keys_for(kid).await;
        let key = keys.find(kid).ok_or(JwtError::UnknownKey)?;
        if key.key.family() != alg.family() || key.alg.is_some_and(|a| a != alg) {
            return Err(JwtError::KeyMismatch);
        }
        let signed = token.len() - sig.len() - 1;
        let message = token.as_bytes().get(..signed).ok_or(JwtError::Malformed)?;
        self.signature_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match jsonwebtoken::crypto::verify(sig, message, &key.key, alg) {
            Ok(true) => {}
            _ => return Err(JwtError::Signature),
        }
        let expires = self.check_claims(&claims, issuer, now)?;
        let identity = issuer
            .claims
            .identity(claims, &issuer.issuer, expires)
            .map_err(|_| JwtError::Identity)?;
        let identity = Arc::new(identity);
        self.cache.put(token, identity.clone(), now, generation);
        Ok(identity)
    }

    /// Time claims and audience; returns `exp`.
    fn check_claims(&self, c: &Value, issuer: &Issuer, now: u64) -> Result<u64, JwtError> {
        let now = now as f64;
        let leeway = self.leeway as f64;
        let exp = c
            .get("exp")
            .ok_or(JwtError::ExpInvalid)?
            .as_f64()
            .ok_or(JwtError::ExpInvalid)?;
        if now > exp + leeway {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = c.get("nbf") {
            let nbf = nbf.as_f64().ok_or(JwtError::NotYetValid)?;
            if now + leeway < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(iat) = c.get("iat") {
            let iat = iat.as_f64().ok_or(JwtError::IssuedInFuture)?;
            if iat > now + leeway {
                return Err(JwtError::IssuedInFuture);
            }
        }
        if !issuer.audiences.is_empty() {
            let ok = match c.get("aud") {
                Some(Value::String(a)) => issuer.audiences.contains(a),
                Some(Value::Array(list)) => list.iter().any(|a| {
                    a.as_str()
                        .is_some_and(|a| issuer.audiences.iter().any(|x| x == a))
                }),
                _ => false,
            };
            if !ok {
                return Err(JwtError::Audience);
            }
        }
        // Entries never outlive the token (cache expiry uses this, without leeway).
        Ok(exp.max(0.0) as u64)
    }
}

fn decode_json(part: &str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(JwtError::Malformed)
    }
}

/// Whether `alg` needs a shared secret.
pub fn is_hmac(alg: Algorithm) -> bool {
    alg.family() == AlgorithmFamily::Hmac
}

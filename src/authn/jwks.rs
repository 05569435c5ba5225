//! Signing keys: a static set (JWKS or PEM file, or a shared secret) or a
//! remote JWKS fetched over HTTPS by the gateway's own client.
//!
//! A remote set is fetched when first needed and again when stale
//! (`Cache-Control: max-age`, else `refresh_interval`). A token whose `kid`
//! is unknown triggers a refetch, but never more than once per
//! `min_refetch_interval` over all kids together: a flood of made-up kids
//! costs the identity provider at most one request per interval. When a
//! fetch fails the last good keys stay in use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::net::TcpStream;

use super::cache::TokenCache;

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// `kid`, if the key has one.
    pub kid: Option<String>,
    /// `alg` the key is restricted to, if the JWK says.
    pub alg: Option<Algorithm>,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A set of keys.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// The keys.
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document for a local file: as [`KeySet::parse`], but a
    /// set without a usable signing key is an error.
    pub fn from_jwks(json: &[u8]) -> Result<Self, String> {
        let set = Self::parse(json)?;
        if set.keys.is_empty() {
            return Err("the JWKS holds no usable signing key".into());
        }
        Ok(set)
    }

    /// Parses a JWKS document. Keys meant for encryption (`use: enc`, or an
    /// `alg` that is not a signature algorithm) and keys of unsupported types
    /// are skipped. An empty set is valid: no key, every token refused.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err("the JWKS holds no usable signing key".into());
        }
        Ok(Self { keys })
    }

    /// The key for a token's `kid`: the key with that id, or, when the token
    /// has no `kid`, the only key of the set. A set of one key without a
    /// `kid` (a PEM file or a shared secret) serves tokens with any `kid`.
    pub fn find(&self, kid: Option<&str>) -> Option<&Key> {
        if let [only] = self.keys.as_slice() {
            if only.kid.is_none() || kid.is_none() {
                return Some(only);
            }
        }
        let k = kid?;
        self.keys.iter().find(|x| x.kid.as_deref() == Some(k))
    }
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Loaded at config time.
    Static(Arc<KeySet>),
    /// Fetched from a URL.
    Remote(Arc<RemoteJwks>),
}

impl KeySource {
    /// The keys to try for `kid` (may fetch, bounded as described above).
    pub async fn keys_for(&self, kid: Option<&str>) -> Arc<KeySet> {
        match self {
            Self::Static(k) => k.clone(),
            Self::Remote(r) => r.keys_for(kid).await,
        }
    }
}

/// A JWKS URL with its cached keys.
///
/// Requests whose `kid` is known never wait for the network: when the set is
/// stale they get the current keys and one background refresh starts
/// (stale-while-revalidate). Only an unknown `kid` (at most once per
/// `min_refetch_interval`) or an empty set waits for a fetch.
pub struct RemoteJwks {
    url: Uri,
    tls: Arc<rustls::ClientConfig>,
    refresh_interval: Duration,
    min_refetch: Duration,
    keys: ArcSwap<KeySet>,
    /// Milliseconds since `epoch`; 0 = never.
    fresh_until: AtomicU64,
    last_attempt: AtomicU64,
    epoch: Instant,
    fetching: Arc<tokio::sync::Mutex<Option<Bytes>>>,
    fetches: AtomicU64,
    cache: Arc<TokenCache>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// A remote set (nothing fetched yet).
    pub fn new(
        url: Uri,
        tls: Arc<rustls::ClientConfig>,
        refresh_interval: Duration,
        min_refetch: Duration,
        cache: Arc<TokenCache>,
    ) -> Self {
        Self {
            url,
            tls,
            refresh_interval,
            min_refetch,
            keys: ArcSwap::from_pointee(KeySet::default()),
            fresh_until: AtomicU64::new(0),
            last_attempt: AtomicU64::new(0),
            epoch: Instant::now(),
            fetching: Arc::new(tokio::sync::Mutex::new(None)),
            fetches: AtomicU64::new(0),
            cache,
        }
    }

    /// How many fetches were attempted (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches now (at start), unless one ran within `min_refetch_interval`.
    pub async fn warm(self: &Arc<Self>) {
        let _ = self.keys_for(None).await;
    }

    /// Host of the JWKS URL, for logs (never the whole URL).
    fn host(&self) -> &str {
        self.url.host().unwrap_or("-")
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn may_refetch(&self, now: u64) -> bool {
        let last = self.last_attempt.load(Ordering::Relaxed);
        last == 0
            || now.saturating_sub(last)
                >= u64::try_from(self.min_refetch.as_millis()).unwrap_or(u64::MAX)
    }

    /// When the set is stale, starts one background refresh (unless one is
    /// running or the last attempt was within `min_refetch_interval`). Costs
    /// an atomic load when fresh; called on every verification, cache hits
    /// included, so removed keys are noticed even when every token is cached.
    pub fn refresh_if_stale(self: &Arc<Self>) {
        let now = self.now_ms();
        if now < self.fresh_until.load(Ordering::Relaxed) || !self.may_refetch(now) {
            return;
        }
        if let Ok(guard) = self.fetching.clone().try_lock_owned() {
            let me = self.clone();
            tokio::spawn(async move {
                let mut guard = guard;
                me.fetch_locked(&mut guard).await;
            });
        }
    }

    async fn keys_for(self: &Arc<Self>, kid: Option<&str>) -> Arc<KeySet> {
        let current = self.keys.load_full();
        let known = !current.keys.is_empty() && kid.is_none_or(|k| current.find(Some(k)).is_some());
        let now = self.now_ms();
        if known {
            self.refresh_if_stale();
            return current;
        }
        // Unknown kid, or no keys yet: wait for a fetch when one is allowed, or
        // (no keys yet) for the one in flight, e.g. the warm-up at start.
        if !current.keys.is_empty() && !self.may_refetch(now) {
            return current;
        }
        let mut guard = self.fetching.lock().await;
        let current = self.keys.load_full();
        let known = !current.keys.is_empty() && kid.is_none_or(|k| current.find(Some(k)).is_some());
        if !known && self.may_refetch(self.now_ms()) {
            self.fetch_locked(&mut guard).await;
        }
        self.keys.load_full()
    }

    /// One fetch; `last_body` (held under the lock) tells whether keys changed.
    async fn fetch_locked(&self, last_body: &mut Option<Bytes>) {
        let started = self.now_ms();
        self.last_attempt.store(started, Ordering::Relaxed);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(Duration::from_secs(5), fetch(&self.url, &self.tls)).await {
            Ok(Ok((body, max_age))) => match KeySet::parse(&body) {
                Ok(set) => {
                    if set.keys.is_empty() {
                        tracing::warn!(
                            host = self.host(),
                            "the JWKS is empty: every token of this issuer is refused"
                        );
                    }
                    // New keys first, then the clear: a verification that read
                    // the cache generation after the clear sees the new keys.
                    self.keys.store(Arc::new(set));
                    if last_body.as_ref() != Some(&body) {
                        // Rotated or revoked keys: verified tokens are re-checked.
                        self.cache.clear();
                        *last_body = Some(body);
                    }
                    // The IdP's max-age may shorten the refresh, never lengthen it.
                    let ttl = max_age
                        .map_or(self.refresh_interval, |m| m.min(self.refresh_interval))
                        .max(self.min_refetch);
                    let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                    self.fresh_until
                        .store(started.saturating_add(ttl), Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, "JWKS refresh failed; keeping the previous keys")
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed; keeping the previous keys")
            }
            Err(_) => {
                tracing::warn!(url = %self.url, "JWKS fetch timed out; keeping the previous keys")
            }
        }
    }
}

/// GET over HTTPS; returns the body and `Cache-Control: max-age`.
async fn fetch(
    url: &Uri,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(Bytes, Option<Duration>), String> {
    let host = url.host().ok_or("URL has no host")?;
    let port = url.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .map_err(|e| format!("server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let pq = url.path_and_query().map_or("/", |p| p.as_str());
    let authority = url.authority().map_or(host, |a| a.as_str());
    let req = Request::get(pq)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "portcullis")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let max_age = resp
        .headers()
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|d| d.trim().strip_prefix("max-age="))
                .find_map(|s| s.trim().parse::<u64>().ok())
        })
        .map(Duration::from_secs);
    let body = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((body, max_age))
}

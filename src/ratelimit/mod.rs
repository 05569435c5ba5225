//! Stages 4 and 6: rate limits, quotas and concurrency limits.
//!
//! A limit is compiled from `{ key, algorithm, limit, window }`; a route
//! gets `[rate_limit] default` unless it names its own (`rate_limits`).
//! Limits keyed only by request facts (ip, route, a header, a path
//! parameter) run before authentication (stage 4), so credential stuffing is
//! stopped before any password hash or signature check; limits keyed by the
//! identity (user, API key, OAuth client) run after it (stage 6). All limits
//! of a route must pass.
//!
//! * `algo.rs`: fixed window, sliding window, GCRA, as pure functions.
//! * `memory.rs`: the embedded backend (sharded, bounded).
//! * `lockout.rs`: brute-force protection for the login endpoint.

pub mod algo;
pub mod lockout;
pub mod memory;
pub mod redis_store;

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;

pub use algo::{Algorithm, Decision, Spec};
pub use memory::Memory;

use crate::authn::Identity;
use crate::reject::Rejection;

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// The client address, grouped by prefix.
    Ip,
    /// The identity's subject.
    User,
    /// The API key's id (API-key identities only).
    ApiKey,
    /// The OAuth client (tokens from the client credentials grant).
    Client,
    /// The route's name.
    Route,
    /// A request header's value.
    Header(http::HeaderName),
    /// A path parameter.
    Param(String),
    /// A CEL expression over `identity`, `request` and `time` (after
    /// authentication).
    Cel(CelKey),
}

/// A compiled CEL key expression (compared by its source).
#[derive(Clone)]
pub struct CelKey {
    source: String,
    policy: Arc<crate::authz::policy::Policy>,
}

impl std::fmt::Debug for CelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cel({:?})", self.source)
    }
}

impl PartialEq for CelKey {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CelKey {}

impl std::hash::Hash for CelKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

/// The environment CEL keys are compiled and run in (UTC; credentials are
/// never visible in `request.headers`).
fn cel_env() -> &'static crate::authz::policy::PolicyEnv {
    static ENV: std::sync::OnceLock<crate::authz::policy::PolicyEnv> = std::sync::OnceLock::new();
    ENV.get_or_init(crate::authz::policy::PolicyEnv::utc)
}

/// The bucket of requests whose CEL key failed to evaluate: they share one
/// count rather than escape the limit.
const CEL_ERROR_KEY: &[u8] = b"\0cel-error";

impl KeyPart {
    /// Parses `ip`, `user`, `api_key`, `client`, `route`, `header:NAME`,
    /// `param:NAME`, `cel:EXPRESSION`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(src) = s.strip_prefix("cel:") {
            let policy = cel_env().compile("rate-limit key", src)?;
            if policy.on_response {
                return Err(
                    "a key cannot use response: it is made before the upstream answers".into(),
                );
            }
            return Ok(Self::Cel(CelKey {
                source: src.to_owned(),
                policy: Arc::new(policy),
            }));
        }
        Ok(match s {
            "ip" => Self::Ip,
            "user" => Self::User,
            "api_key" => Self::ApiKey,
            "client" => Self::Client,
            "route" => Self::Route,
            _ => match s.split_once(':') {
                Some(("header", h)) => Self::Header(
                    http::HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("invalid header name {h:?}"))?,
                ),
                Some(("param", p)) if !p.is_empty() => Self::Param(p.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown key {s:?}: use ip, user, api_key, client, route, header:NAME, param:NAME or cel:EXPRESSION"
                    ));
                }
            },
        })
    }

    /// Needs the identity (runs after authentication).
    pub fn needs_identity(&self) -> bool {
        matches!(
            self,
            Self::User | Self::ApiKey | Self::Client | Self::Cel(_)
        )
    }

    /// Name for audit events (never the value).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::Client => "client",
            Self::Route => "route",
            Self::Header(_) => "header",
            Self::Param(_) => "param",
            Self::Cel(_) => "cel",
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Requests over time.
    Rate(Spec),
    /// Requests in flight at once.
    Concurrency(u32),
}

/// A compiled limit.
#[derive(Debug)]
pub struct Limit {
    /// Its name (`[rate_limit.limits] NAME`, or `routes[i].rate_limits[j]`).
    pub name: Arc<str>,
    /// Distinguishes its state from every other limit's (name and spec).
    pub id: u64,
    /// What it counts.
    pub kind: Kind,
    /// The key.
    pub parts: Vec<KeyPart>,
    /// Only answers of 400 and above count (checked first, counted after).
    pub failures_only: bool,
    /// `RateLimit-Policy` value, made once.
    pub policy_header: HeaderValue,
    /// `X-RateLimit-Limit` value, made once.
    pub limit_header: HeaderValue,
    /// Window in seconds (for headers).
    pub window_secs: u64,
    /// With a shared backend that cannot be reached: let requests through
    /// (`true`) or refuse them with 503 (`false`).
    pub fail_open: bool,
}

impl Limit {
    /// Runs after authentication.
    pub fn post_auth(&self) -> bool {
        self.parts.iter().any(KeyPart::needs_identity)
    }
}

/// Which header families are sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderFamilies {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch seconds).
    pub x_ratelimit: bool,
    /// IETF `RateLimit-Policy` and `RateLimit`.
    pub ietf: bool,
}

/// The compiled `[rate_limit]`.
#[derive(Debug)]
pub struct RateLimits {
    /// All limits; routes refer to them by index.
    pub limits: Vec<Limit>,
    /// Where state lives.
    pub memory: Arc<Memory>,
    /// `max_keys` the memory store was made for (reused across reloads when equal).
    pub max_keys: usize,
    /// IPv4 prefix length keys group by.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length keys group by.
    pub ipv6_prefix: u8,
    /// Header families.
    pub headers: HeaderFamilies,
    /// Login brute-force protection.
    pub lockout: Option<lockout::Lockout>,
    /// The shared backend, when `backend = "redis"`: rate limits,
    /// concurrency limits and the login lockout all count there.
    pub redis: Option<Arc<redis_store::RedisLimits>>,
}

/// A route's limits, by phase.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    /// Before authentication.
    pub pre: Vec<usize>,
    /// After authentication.
    pub post: Vec<usize>,
}

/// What stage 11 reports in headers: the tightest limit seen.
#[derive(Debug, Clone)]
pub struct Report {
    /// Limit index.
    pub limit: usize,
    /// The decision.
    pub decision: Decision,
    /// When it was made (µs since the epoch).
    pub at_us: u64,
}

/// What a request holds until it is done: in-flight slots, and failure-only
/// limits to count once the status is known.
#[derive(Debug, Default)]
pub struct Held {
    /// Concurrency slots (released on drop).
    pub slots: Vec<Slot>,
    /// `(limit index, key)` to count when the answer is 400 or above.
    pub on_failure: Vec<(usize, u64)>,
    /// A credential endpoint: a 4xx answer is a failure of this address.
    pub credential: bool,
    /// Failure-only limits in Redis: `(limit index, Redis key)`.
    pub on_failure_remote: Vec<(usize, String)>,
}

/// An in-flight slot; dropping it gives it back.
#[derive(Debug)]
pub enum Slot {
    /// In this instance's memory.
    Memory(Arc<Memory>, u64),
    /// In Redis: the key and this request's member (given back off the
    /// request path; a lease bounds what a dead instance holds).
    Remote(Arc<redis_store::RedisLimits>, String, String),
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self {
            Self::Memory(memory, key) => memory.release(*key),
            Self::Remote(r, key, member) => {
                let (r, key, member) = (r.clone(), std::mem::take(key), std::mem::take(member));
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move { r.release(&key, &member).await });
                }
            }
        }
    }
}

/// The facts a key is made of.
#[derive(Debug, Clone, Copy)]
pub struct KeyFacts<'a> {
    /// Client address (stage 1).
    pub ip: IpAddr,
    /// Route name.
    pub route: &'a str,
    /// Request headers.
    pub headers: &'a http::HeaderMap,
    /// Path parameters (percent-encoded, as in the canonical path).
    pub params: &'a [(String, String)],
    /// The identity (post-auth).
    pub identity: Option<&'a Identity>,
    /// Request method (CEL keys).
    pub method: &'a http::Method,
    /// Canonical path (CEL keys).
    pub path: &'a str,
    /// Raw query string (CEL keys).
    pub query: Option<&'a str>,
}

/// Microseconds since the Unix epoch (wall clock: instances sharing a
/// backend agree on windows).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl RateLimits {
    /// The key of `limit` for this request; `None` when a part does not
    /// apply (no identity, not an API key, header absent): the limit is
    /// then skipped for this request.
    pub fn key(&self, limit: &Limit, f: &KeyFacts<'_>) -> Option<u64> {
        let mut h = self.memory.hasher(limit.id);
        self.parts(limit, f, |p| h.part(p))?;
        Some(h.finish())
    }

    /// The Redis key of `limit` for this request (`None` as for [`key`](Self::key)).
    pub fn redis_key(&self, limit: &Limit, f: &KeyFacts<'_>) -> Option<String> {
        // The framed parts in one buffer, hashed in one call.
        let mut framed = Vec::with_capacity(64);
        framed.extend_from_slice(&limit.id.to_be_bytes());
        self.parts(limit, f, |p| {
            framed.extend_from_slice(&(p.len() as u64).to_be_bytes());
            framed.extend_from_slice(p);
        })?;
        Some(redis_store::key_of(&framed))
    }

    /// Feeds the key's parts to `g`; `None` when one does not apply.
    fn parts(&self, limit: &Limit, f: &KeyFacts<'_>, mut g: impl FnMut(&[u8])) -> Option<()> {
        for p in &limit.parts {
            match p {
                KeyPart::Ip => {
                    let (buf, len) = self.group(f.ip);
                    g(buf.get(..len).unwrap_or_default());
                }
                KeyPart::User => g(f.identity?.subject.as_bytes()),
                KeyPart::ApiKey => g(f.identity?.key_id.as_deref()?.as_bytes()),
                KeyPart::Client => {
                    g(f.identity?.claims.get("client_id")?.as_str()?.as_bytes());
                }
                KeyPart::Route => g(f.route.as_bytes()),
                KeyPart::Header(name) => g(f.headers.get(name)?.as_bytes()),
                KeyPart::Param(n) => {
                    let (_, v) = f.params.iter().find(|(k, _)| k == n)?;
                    g(v.as_bytes());
                }
                KeyPart::Cel(c) => {
                    let facts = crate::authz::policy::Facts {
                        identity: f.identity?,
                        method: f.method,
                        path: f.path,
                        params: f.params,
                        query: f.query,
                        headers: f.headers,
                        ip: f.ip,
                        response: None,
                    };
                    match cel_env().eval_key(&c.policy, &facts) {
                        Ok(k) => g(&k),
                        Err(e) => {
                            tracing::debug!(error = %e, key = %c.source, "rate-limit key failed; shared error bucket");
                            g(CEL_ERROR_KEY);
                        }
                    }
                }
            }
        }
        Some(())
    }

    /// The address as keyed: IPv4 by `ipv4_prefix`, IPv6 by `ipv6_prefix`
    /// (one host cannot rotate through its /64). A family byte, then the
    /// masked address; the length used.
    pub fn group(&self, ip: IpAddr) -> ([u8; 17], usize) {
        fn mask(bytes: &mut [u8], prefix: u8) {
            let prefix = usize::from(prefix);
            for (i, b) in bytes.iter_mut().enumerate() {
                let bits = prefix.saturating_sub(i * 8).min(8);
                *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            }
        }
        let mut out = [0u8; 17];
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let mut b = v4.octets();
                mask(&mut b, self.ipv4_prefix);
                out[0] = 4;
                out[1..5].copy_from_slice(&b);
                (out, 5)
            }
            IpAddr::V6(v6) => {
                let mut b = v6.octets();
                mask(&mut b, self.ipv6_prefix);
                out[0] = 6;
                out[1..17].copy_from_slice(&b);
                (out, 17)
            }
        }
    }

    /// Runs `which` limits for one request: every one must pass. Keeps the
    /// tightest decision for the headers, takes concurrency slots and notes
    /// failure-only limits in `held`.
    pub async fn check(
        &self,
        which: &[usize],
        f: &KeyFacts<'_>,
        report: &mut Option<Report>,
        held: &mut Held,
    ) -> Result<(), (usize, Rejection)> {
        let now = now_us();
        let mut remote: Vec<(usize, String, Spec, redis_store::Mode)> = Vec::new();
        for &i in which {
            let Some(limit) = self.limits.get(i) else {
                continue;
            };
            if let (Some(r), Kind::Concurrency(max)) = (&self.redis, limit.kind) {
                let Some(key) = self.redis_key(limit, f) else {
                    continue;
                };
                match r.acquire(&key, max).await {
                    Ok(Some(member)) => held.slots.push(Slot::Remote(r.clone(), key, member)),
                    Ok(None) => return Err((i, Rejection::RateLimited { retry_after: 1 })),
                    Err(e) if limit.fail_open => {
                        tracing::debug!(error = %e, "concurrency limit skipped: redis unavailable");
                    }
                    Err(_) => return Err((i, Rejection::LimiterUnavailable)),
                }
                continue;
            }
            if let (Some(_), Kind::Rate(spec)) = (&self.redis, limit.kind) {
                let Some(key) = self.redis_key(limit, f) else {
                    continue;
                };
                let mode = if limit.failures_only {
                    held.on_failure_remote.push((i, key.clone()));
                    redis_store::Mode::Peek
                } else {
                    redis_store::Mode::Take
                };
                remote.push((i, key, spec, mode));
                continue;
            }
            let Some(key) = self.key(limit, f) else {
                continue;
            };
            match limit.kind {
                Kind::Concurrency(max) => {
                    if !self.memory.acquire(key, max) {
                        return Err((i, Rejection::RateLimited { retry_after: 1 }));
                    }
                    held.slots.push(Slot::Memory(self.memory.clone(), key));
                }
                Kind::Rate(spec) => {
                    let d = self.memory.check(&spec, key, now, !limit.failures_only);
                    if limit.failures_only {
                        held.on_failure.push((i, key));
                    }
                    let tighter = report
                        .as_ref()
                        .is_none_or(|r| d.remaining < r.decision.remaining || !d.allowed);
                    if tighter {
                        *report = Some(Report {
                            limit: i,
                            decision: d,
                            at_us: now,
                        });
                    }
                    if !d.allowed {
                        let secs = d.retry_after_us.div_ceil(1_000_000).max(1);
                        return Err((i, Rejection::RateLimited { retry_after: secs }));
                    }
                }
            }
        }
        if let (Some(r), false) = (&self.redis, remote.is_empty()) {
            let items: Vec<_> = remote
                .iter()
                .map(|(_, k, s, m)| (k.clone(), *s, *m))
                .collect();
            match r.run(&items).await {
                Ok(decisions) => {
                    for ((i, ..), d) in remote.iter().zip(decisions) {
                        note(report, *i, d, now);
                        if !d.allowed {
                            let secs = d.retry_after_us.div_ceil(1_000_000).max(1);
                            return Err((*i, Rejection::RateLimited { retry_after: secs }));
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "rate-limit backend unavailable");
                    if let Some((i, ..)) = remote
                        .iter()
                        .find(|(i, ..)| self.limits.get(*i).is_some_and(|l| !l.fail_open))
                    {
                        return Err((*i, Rejection::LimiterUnavailable));
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts the failure-only limits of a request whose answer was
    /// `status`, and a credential endpoint's failure.
    pub fn settle(&self, held: &Held, status: http::StatusCode, ip: IpAddr) {
        if status.as_u16() < 400 {
            return;
        }
        if let (Some(r), false) = (&self.redis, held.on_failure_remote.is_empty()) {
            let items: Vec<_> = held
                .on_failure_remote
                .iter()
                .filter_map(|(i, k)| match self.limits.get(*i)?.kind {
                    Kind::Rate(spec) => Some((k.clone(), spec, redis_store::Mode::Add)),
                    Kind::Concurrency(_) => None,
                })
                .collect();
            let r = r.clone();
            // Counted off the request path: the answer does not wait for Redis.
            tokio::spawn(async move {
                if let Err(e) = r.run(&items).await {
                    tracing::debug!(error = %e, "a failure could not be counted in redis");
                }
            });
        }
        let now = now_us();
        if held.credential
            && status.is_client_error()
            && status != http::StatusCode::TOO_MANY_REQUESTS
        {
            if let (Some(l), Some(r)) = (&self.lockout, &self.redis) {
                let (l, r) = (l.clone(), r.client.clone());
                let (buf, len) = self.group(ip);
                tokio::spawn(async move {
                    let ip = buf.get(..len).unwrap_or_default();
                    if let Err(e) = l.failed_shared(&r, None, ip).await {
                        tracing::warn!(error = %e, "a credential failure could not be counted in redis");
                    }
                });
            } else if let Some(l) = &self.lockout {
                let (buf, len) = self.group(ip);
                l.failed(&self.memory, None, buf.get(..len).unwrap_or_default(), now);
            }
        }
        for &(i, key) in &held.on_failure {
            if let Some(Limit {
                kind: Kind::Rate(spec),
                ..
            }) = self.limits.get(i)
            {
                self.memory.add(spec, key, now);
            }
        }
    }

    /// The login lockout of this account (from this address) or of the
    /// address alone: seconds to wait, if locked. With Redis unreachable
    /// credential endpoints fail closed (503).
    pub async fn locked(
        &self,
        account: Option<&str>,
        ip: IpAddr,
    ) -> Result<Option<u64>, Rejection> {
        let Some(l) = &self.lockout else {
            return Ok(None);
        };
        let (buf, len) = self.group(ip);
        let ip = buf.get(..len).unwrap_or_default();
        let left = match &self.redis {
            Some(r) => l.locked_shared(&r.client, account, ip).await.map_err(|e| {
                tracing::warn!(error = %e, "login lockout unreadable in redis");
                Rejection::LimiterUnavailable
            })?,
            None => l.locked(&self.memory, account, ip, now_us()),
        };
        Ok(left.map(|us| us.div_ceil(1_000_000).max(1)))
    }

    /// A failed login: counts it; the new lock's length (µs) if this one
    /// locked.
    pub async fn login_failed(&self, account: &str, ip: IpAddr) -> Option<u64> {
        let l = self.lockout.as_ref()?;
        let (buf, len) = self.group(ip);
        let ip = buf.get(..len).unwrap_or_default();
        match &self.redis {
            Some(r) => l
                .failed_shared(&r.client, Some(account), ip)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "a login failure could not be counted in redis");
                    None
                }),
            None => l.failed(&self.memory, Some(account), ip, now_us()),
        }
    }

    /// A successful login: the account's failures from this address are
    /// forgotten.
    pub async fn login_succeeded(&self, account: &str, ip: IpAddr) {
        let Some(l) = &self.lockout else { return };
        let (buf, len) = self.group(ip);
        let ip = buf.get(..len).unwrap_or_default();
        match &self.redis {
            Some(r) => {
                if let Err(e) = l.succeeded_shared(&r.client, account, ip).await {
                    tracing::warn!(error = %e, "a login success could not be recorded in redis");
                }
            }
            None => l.succeeded(&self.memory, account, ip, now_us()),
        }
    }

    /// Stage 11: the rate-limit headers of the tightest limit. Names are
    /// static, the limit and policy values are made at load; the two
    /// numbers that change are written without the formatting machinery.
    pub fn headers(&self, report: &Report, h: &mut http::HeaderMap) {
        static LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
        static REMAINING: http::HeaderName = http::HeaderName::from_static("x-ratelimit-remaining");
        static RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");
        static POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
        static RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");
        let Some(limit) = self.limits.get(report.limit) else {
            return;
        };
        let d = &report.decision;
        let reset_s = d.reset_us.div_ceil(1_000_000);
        // Numbers are digits: `From<u64>` makes them without validation.
        if self.headers.x_ratelimit {
            h.insert(LIMIT.clone(), limit.limit_header.clone());
            h.insert(REMAINING.clone(), HeaderValue::from(u64::from(d.remaining)));
            h.insert(
                RESET.clone(),
                HeaderValue::from(report.at_us / 1_000_000 + reset_s),
            );
        }
        if self.headers.ietf {
            h.insert(POLICY.clone(), limit.policy_header.clone());
            let mut b = Vec::with_capacity(limit.name.len() + 32);
            b.push(b'"');
            b.extend_from_slice(limit.name.as_bytes());
            b.extend_from_slice(b"\";r=");
            push_number(&mut b, u64::from(d.remaining));
            b.extend_from_slice(b";t=");
            push_number(&mut b, reset_s);
            if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(b)) {
                h.insert(RATELIMIT.clone(), v);
            }
        }
    }
}

/// Compiles `[rate_limit]`; errors are `(TOML path, message)`.
pub fn compile(
    f: &crate::config::file::RateLimit,
    redis: Option<&Arc<crate::redis::Redis>>,
    errors: &mut Vec<(String, String)>,
    warnings: &mut Vec<String>,
) -> (RateLimits, std::collections::HashMap<String, usize>) {
    if f.backend != "memory" && f.backend != "redis" {
        errors.push((
            "rate_limit.backend".into(),
            format!("{:?}: use \"memory\" or \"redis\"", f.backend),
        ));
    }
    if f.max_keys == 0 {
        errors.push(("rate_limit.max_keys".into(), "must be above zero".into()));
    }
    if f.ipv4_prefix > 32 || f.ipv4_prefix == 0 {
        errors.push(("rate_limit.ipv4_prefix".into(), "must be 1..=32".into()));
    }
    if f.ipv6_prefix > 128 || f.ipv6_prefix == 0 {
        errors.push(("rate_limit.ipv6_prefix".into(), "must be 1..=128".into()));
    }
    let mut headers = HeaderFamilies::default();
    for (i, h) in f.headers.iter().enumerate() {
        match h.as_str() {
            "x-ratelimit" => headers.x_ratelimit = true,
            "ietf" => headers.ietf = true,
            other => errors.push((
                format!("rate_limit.headers[{i}]"),
                format!("{other:?}: use \"x-ratelimit\" or \"ietf\""),
            )),
        }
    }
    let mut rl = RateLimits {
        limits: Vec::new(),
        memory: Arc::new(Memory::new(f.max_keys.max(1))),
        max_keys: f.max_keys,
        ipv4_prefix: f.ipv4_prefix.min(32),
        ipv6_prefix: f.ipv6_prefix.min(128),
        headers,
        lockout: None,
        redis: None,
    };
    if f.backend == "redis" {
        match redis {
            None => errors.push((
                "rate_limit.backend".into(),
                "backend = \"redis\" needs a [redis] section with a url".into(),
            )),
            Some(c) => rl.redis = Some(Arc::new(redis_store::RedisLimits::new(c.clone()))),
        }
    }
    let mut named = std::collections::HashMap::new();
    for (name, spec) in &f.limits {
        match compile_limit(name, spec, false) {
            Ok(l) => {
                named.insert(name.clone(), rl.limits.len());
                rl.limits.push(l);
            }
            Err((field, m)) => errors.push((format!("rate_limit.limits.{name}{field}"), m)),
        }
    }
    for (i, n) in f.default.iter().enumerate() {
        if !named.contains_key(n) {
            errors.push((
                format!("rate_limit.default[{i}]"),
                format!("no limit {n:?} in [rate_limit.limits]"),
            ));
        }
    }
    let l = &f.login;
    if l.enabled {
        if l.max_failures == 0 || l.max_failures_per_ip == 0 {
            errors.push((
                "rate_limit.login".into(),
                "max_failures and max_failures_per_ip must be above zero".into(),
            ));
        }
        let us = |d: &crate::config::units::HumanDuration| {
            u64::try_from(d.0.as_micros()).unwrap_or(u64::MAX).max(1)
        };
        rl.lockout = Some(lockout::Lockout {
            max_failures: l.max_failures,
            max_failures_per_ip: l.max_failures_per_ip,
            window_us: us(&l.window),
            lockout_us: us(&l.lockout),
            max_lockout_us: us(&l.max_lockout).max(us(&l.lockout)),
        });
    } else {
        warnings.push("rate_limit.login.enabled = false: logins and credential endpoints are open to password guessing".into());
    }
    (rl, named)
}

/// Compiles one limit; errors are `(".field", message)`.
pub fn compile_limit(
    name: &str,
    s: &crate::config::file::LimitSpec,
    credential: bool,
) -> Result<Limit, (String, String)> {
    let fail_open = match s.fail.as_deref() {
        None => !credential,
        Some("open") => true,
        Some("closed") => false,
        Some(other) => {
            return Err((
                ".fail".into(),
                format!("{other:?}: use \"open\" or \"closed\""),
            ));
        }
    };
    use crate::config::file::KeySpec;
    let raw: Vec<&str> = match &s.key {
        KeySpec::One(k) => vec![k.as_str()],
        KeySpec::Many(ks) => ks.iter().map(String::as_str).collect(),
    };
    if raw.is_empty() {
        return Err((".key".into(), "name at least one key part".into()));
    }
    let parts = raw
        .iter()
        .map(|k| KeyPart::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| (".key".to_string(), m))?;
    if s.limit == 0 {
        return Err((".limit".into(), "must be above zero".into()));
    }
    let failures_only = match s.count.as_str() {
        "all" => false,
        "failures" => true,
        other => {
            return Err((
                ".count".into(),
                format!("{other:?}: use \"all\" or \"failures\""),
            ));
        }
    };
    let window = s.window.map(|w| w.0);
    let algorithm = match s.algorithm.as_str() {
        "fixed_window" => Some(Algorithm::FixedWindow),
        "sliding_window" => Some(Algorithm::SlidingWindow),
        "gcra" => Some(Algorithm::Gcra),
        "concurrency" => None,
        other => {
            return Err((
                ".algorithm".into(),
                format!("{other:?}: use sliding_window, fixed_window, gcra or concurrency"),
            ));
        }
    };
    let kind = match (algorithm, window) {
        (None, None) => {
            if failures_only {
                return Err((
                    ".count".into(),
                    "a concurrency limit counts requests in flight".into(),
                ));
            }
            Kind::Concurrency(s.limit)
        }
        (None, Some(_)) => {
            return Err((".window".into(), "a concurrency limit has no window".into()));
        }
        (Some(_), None) => return Err((".window".into(), "required, e.g. \"1m\"".into())),
        (Some(algorithm), Some(w)) => {
            let window_us = u64::try_from(w.as_micros()).unwrap_or(u64::MAX);
            if window_us < 1000 {
                return Err((".window".into(), "must be at least 1ms".into()));
            }
            if s.burst.is_some() && algorithm != Algorithm::Gcra {
                return Err((".burst".into(), "only gcra has a burst".into()));
            }
            Kind::Rate(Spec {
                algorithm,
                limit: s.limit,
                window_us,
                burst: s.burst.unwrap_or(s.limit).max(1),
            })
        }
    };
    let window_secs = window.map_or(0, |w| w.as_secs().max(1));
    let quota = match kind {
        Kind::Rate(Spec {
            algorithm: Algorithm::Gcra,
            burst,
            ..
        }) => burst,
        _ => s.limit,
    };
    let policy = format!("\"{name}\";q={quota};w={window_secs}");
    let policy_header = HeaderValue::from_str(&policy).map_err(|_| {
        (
            String::new(),
            "the name must be printable ASCII".to_string(),
        )
    })?;
    Ok(Limit {
        limit_header: HeaderValue::from(quota),
        id: limit_id(name, &kind, &parts, failures_only),
        name: name.into(),
        kind,
        parts,
        failures_only,
        policy_header,
        window_secs,
        fail_open,
    })
}

/// A route's limits: names from `[rate_limit.limits]` (or the defaults) and
/// inline limits, split by phase. Errors are `(TOML path, message)`.
#[allow(clippy::too_many_arguments)]
pub fn route_limits(
    rl: &mut RateLimits,
    named: &std::collections::HashMap<String, usize>,
    defaults: &[String],
    refs: Option<&[crate::config::file::LimitRef]>,
    route: &str,
    public: bool,
    credential: bool,
    errors: &mut Vec<(String, String)>,
    warnings: &mut Vec<String>,
) -> RouteLimits {
    use crate::config::file::LimitRef;
    let mut idx = Vec::new();
    match refs {
        None => idx.extend(defaults.iter().filter_map(|n| named.get(n).copied())),
        Some(list) => {
            for (j, r) in list.iter().enumerate() {
                let path = format!("{route}.rate_limits[{j}]");
                match r {
                    LimitRef::Name(n) => match named.get(n) {
                        Some(k) => idx.push(*k),
                        None => {
                            errors.push((path, format!("no limit {n:?} in [rate_limit.limits]")))
                        }
                    },
                    LimitRef::Inline(spec) => {
                        match compile_limit(&format!("{route}.rate_limits[{j}]"), spec, credential)
                        {
                            Ok(l) => {
                                idx.push(rl.limits.len());
                                rl.limits.push(l);
                            }
                            Err((f, m)) => errors.push((format!("{path}{f}"), m)),
                        }
                    }
                }
            }
        }
    }
    let mut out = RouteLimits::default();
    for k in idx {
        let Some(l) = rl.limits.get(k) else { continue };
        if l.post_auth() {
            if public && refs.is_some() {
                warnings.push(format!(
                    "{route} is public: its limit {:?} is keyed by the identity and never applies",
                    &*l.name
                ));
            }
            out.post.push(k);
        } else {
            out.pre.push(k);
        }
    }
    out
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Keeps the tightest decision for the headers.
fn note(report: &mut Option<Report>, i: usize, d: Decision, now: u64) {
    let tighter = report
        .as_ref()
        .is_none_or(|r| d.remaining < r.decision.remaining || !d.allowed);
    if tighter {
        *report = Some(Report {
            limit: i,
            decision: d,
            at_us: now,
        });
    }
}

/// A limit's id: its name and spec, so that a reload that changes a limit
/// starts it afresh and one that keeps it keeps its counts.
pub fn limit_id(name: &str, kind: &Kind, parts: &[KeyPart], failures_only: bool) -> u64 {
    // SHA-256 of a canonical description: ids must be stable across
    // reloads and, for a shared backend, across instances and builds (the
    // std hashers promise neither).
    let text = format!("{name}\0{kind:?}\0{parts:?}\0{failures_only}");
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(d.as_ref().get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(v4: u8, v6: u8) -> RateLimits {
        RateLimits {
            limits: Vec::new(),
            memory: Arc::new(Memory::new(1000)),
            max_keys: 1000,
            ipv4_prefix: v4,
            ipv6_prefix: v6,
            headers: HeaderFamilies::default(),
            lockout: None,
            redis: None,
        }
    }

    #[test]
    fn ipv6_is_grouped_by_prefix() {
        let l = limits(32, 64);
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let b: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::from([0; 4]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(l.group(a), l.group(b));
        assert_ne!(l.group(a), l.group(c));
        let l = limits(24, 48);
        assert_eq!(l.group(a), l.group(c));
        let x: IpAddr = "192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4]));
        let y: IpAddr = "192.0.2.200".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(l.group(x), l.group(y));
        // an IPv4-mapped IPv6 address is the IPv4 address
        let m: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::from([0; 4]));
        assert_eq!(l.group(m), l.group(x));
        let l = limits(32, 64);
        assert_ne!(l.group(x), l.group(y));
    }

    #[test]
    fn key_parts_parse() {
        assert_eq!(KeyPart::parse("ip"), Ok(KeyPart::Ip));
        assert_eq!(KeyPart::parse("param:id"), Ok(KeyPart::Param("id".into())));
        assert!(KeyPart::parse("header:x tenant").is_err());
        assert!(KeyPart::parse("cookie").is_err());
        assert!(KeyPart::parse("user").is_ok_and(|k| k.needs_identity()));
    }
}

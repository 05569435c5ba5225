//! The config file as the user writes it: plain serde types, every table
//! `deny_unknown_fields`, every field documented (these comments are the source
//! of `docs/configuration.md`). Nothing here is used on the request path: the
//! compile step (`plan.rs`) turns it into a [`Plan`](super::Plan).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::units::{ByteSize, HumanDuration};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Listeners, TLS, trusted proxies, connection handling.
    #[serde(default)]
    pub server: Server,
    /// Size limits and timeouts for client requests.
    #[serde(default)]
    pub limits: Limits,
    /// Security headers added to every response.
    #[serde(default)]
    pub headers: Headers,
    /// How errors from upstreams are shown to clients.
    #[serde(default)]
    pub errors: Errors,
    /// Access log and diagnostics.
    #[serde(default)]
    pub log: Log,
    /// Named upstreams that routes forward to.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// CORS: named policies and the default policy.
    #[serde(default)]
    pub cors: Cors,
    /// Authentication methods routes can require.
    #[serde(default)]
    pub auth: Auth,
    /// Persistent state (API keys; later users, sessions).
    #[serde(default)]
    pub store: Store,
    /// The admin API (its own listener).
    pub admin: Option<Admin>,
    /// Roles and the permissions they grant.
    #[serde(default)]
    pub authz: Authz,
    /// Rate limits, quotas, concurrency limits, login lockout.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// A Redis shared by several instances: rate-limit counts (with
    /// `rate_limit.backend = "redis"`), sessions, refresh tokens and
    /// API key revocations.
    pub redis: Option<RedisCfg>,
    /// Routes: the only requests that ever reach an upstream.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// OpenAPI documents whose operations become routes.
    #[serde(default)]
    pub apis: Vec<Api>,
    /// Response filtering everywhere: the redaction list.
    #[serde(default)]
    pub responses: Responses,
    /// API versions chosen by a header, and retired versions.
    pub versioning: Option<Versioning>,
}

/// `[responses]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Responses {
    /// Fields removed from every JSON answer of `[[apis]]` operations (and
    /// of `[[routes]]` with `redact_responses = true`), wherever they are,
    /// whatever the schema says: names with `*` wildcards (case-insensitive)
    /// or JSON pointers (`/data/*/ssn`, `*` one segment).
    pub redact: Vec<String>,
}

impl Default for Responses {
    fn default() -> Self {
        Self {
            redact: vec!["password*".into(), "*secret*".into(), "*token*".into()],
        }
    }
}

/// `[versioning]`: versions chosen by a header, retired versions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Versioning {
    /// The request header that names a version.
    #[serde(default = "default_version_header")]
    pub header: String,
    /// The unversioned prefix clients call with the header (`"/api"`): a
    /// request to `/api/users` with `Api-Version: 2` is routed (and sent
    /// upstream) as the `[[apis]]` entry with `version = "2"`, e.g.
    /// `/api/v2/users`.
    pub path: Option<String>,
    /// The version for requests under `path` without the header; unset:
    /// the header is required there (400).
    pub default: Option<String>,
    /// Retired versions: every request answers 410 with a link to the
    /// successor.
    #[serde(default)]
    pub retired: Vec<RetiredVersion>,
}

fn default_version_header() -> String {
    "api-version".into()
}

/// `[[versioning.retired]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredVersion {
    /// Its path prefix (`"/api/v0"`).
    pub base_path: String,
    /// Its name in the version header, if it had one.
    pub version: Option<String>,
    /// Where clients should go instead (a path or URL), sent as
    /// `Link: <...>; rel="successor-version"` and the problem's `successor`.
    pub successor: Option<String>,
}

/// `on_forbidden_field`: what happens to a body field the caller may not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForbiddenField {
    /// 400 naming the field.
    #[default]
    Refuse,
    /// The field is removed and the rest forwarded.
    Strip,
}

/// `response_headers`: which upstream headers pass on `[[apis]]` operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseHeaders {
    /// Standard headers and those the document declares for the status.
    #[default]
    Declared,
    /// All (after `[headers] strip`).
    All,
}

/// Contract settings of one operation (`x-portcullis` or
/// `[apis.operations.ID]`, beside the route fields).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperationContract {
    /// Body fields only some callers may set: field name or JSON pointer ->
    /// permissions, any one of which allows it (`{ role = ["users:admin"] }`).
    #[serde(default)]
    pub restricted_fields: BTreeMap<String, Vec<String>>,
    /// Overrides the API's `on_forbidden_field`.
    pub on_forbidden_field: Option<ForbiddenField>,
    /// Overrides the API's `validate_responses`.
    pub validate_responses: Option<bool>,
    /// Overrides the API's `deprecation` (and marks the operation deprecated).
    pub deprecation: Option<String>,
    /// Overrides the API's `sunset`.
    pub sunset: Option<String>,
    /// Overrides the API's `successor`.
    pub successor: Option<String>,
}

impl OperationContract {
    /// The keys these settings take in an operation's settings table.
    pub const KEYS: [&'static str; 6] = [
        "restricted_fields",
        "on_forbidden_field",
        "validate_responses",
        "deprecation",
        "sunset",
        "successor",
    ];
}

/// `[[apis]]`: an OpenAPI 3.0/3.1 document as route inventory.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// The document (YAML or JSON), relative to the config file.
    pub spec: PathBuf,
    /// Upstream name from `[upstreams]` for every operation.
    pub upstream: String,
    /// Prefix of every path of the document (`"/api/v1"`).
    #[serde(default)]
    pub base_path: String,
    /// Gateway settings per operationId: any `[[routes]]` field except
    /// `path`, `methods` and `upstream`.
    #[serde(default)]
    pub operations: BTreeMap<String, toml::Table>,
    /// Deepest nesting accepted in a JSON request body.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: usize,
    /// Longest string (or object key) accepted in a JSON request body, in
    /// bytes, whatever the schema says.
    #[serde(default = "default_max_json_string")]
    pub max_json_string: usize,
    /// Most items in one array of a JSON request body, whatever the schema
    /// says.
    #[serde(default = "default_max_json_items")]
    pub max_json_items: usize,
    /// Status of validation failures: 400 or 422.
    #[serde(default = "default_validation_status")]
    pub validation_status: u16,
    /// A body field the caller may not set (undeclared, read-only, or
    /// restricted to a permission): `"refuse"` (400 naming it) or
    /// `"strip"` (removed, the rest forwarded).
    #[serde(default)]
    pub on_forbidden_field: ForbiddenField,
    /// Check upstream answers against their response schema; one that does
    /// not conform becomes 502 (details in the log).
    #[serde(default)]
    pub validate_responses: bool,
    /// `"declared"`: upstream headers the document does not declare for the
    /// status (beyond standard ones such as Content-Type, ETag, Location)
    /// are dropped. `"all"`: passed (`check` warns).
    #[serde(default)]
    pub response_headers: ResponseHeaders,
    /// This API's name in the `[versioning]` header (`"2"`).
    pub version: Option<String>,
    /// The date (`2026-06-01` or RFC 3339) from which the whole API is
    /// deprecated: every answer carries `Deprecation` (RFC 9745). Operations
    /// the document marks `deprecated` get it too.
    pub deprecation: Option<String>,
    /// The date the API stops answering: `Sunset` (RFC 8594).
    pub sunset: Option<String>,
    /// Its successor (a path or URL): `Link: <...>; rel="successor-version"`
    /// on deprecated operations.
    pub successor: Option<String>,
}

fn default_max_json_string() -> usize {
    256 * 1024
}

fn default_max_json_items() -> usize {
    10_000
}

fn default_validation_status() -> u16 {
    400
}

fn default_max_json_depth() -> usize {
    32
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Tokio worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Maximum concurrent client connections over all listeners; further
    /// connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub shutdown_grace: HumanDuration,
    /// Peers (CIDRs) whose `X-Forwarded-For`/`Forwarded` and `X-Request-Id`
    /// headers are believed. Empty: the socket peer is always the client.
    pub trusted_proxies: Vec<String>,
    /// Which header trusted proxies use to pass the client address:
    /// `"x-forwarded-for"` or `"forwarded"` (RFC 7239).
    pub client_ip_header: ClientIpHeader,
    /// Accept `X-Request-Id` from trusted proxies (when well-formed) instead of
    /// generating one.
    pub trust_request_id: bool,
    /// Reload the config when the file changes (SIGHUP always reloads).
    pub watch_config: bool,
    /// The TLS listener.
    pub https: Option<Https>,
    /// The plain HTTP listener.
    pub http: Option<Http>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            worker_threads: 0,
            max_connections: 10_000,
            shutdown_grace: HumanDuration(std::time::Duration::from_secs(30)),
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
            trust_request_id: true,
            watch_config: true,
            https: None,
            http: None,
        }
    }
}

/// The header that carries the client address from trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239)
    Forwarded,
}

/// `[server.https]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Https {
    /// Address to listen on, e.g. `"0.0.0.0:443"`.
    pub listen: String,
    /// PEM file with the certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Allow TLS 1.2 as well as 1.3 (default true). TLS 1.0/1.1 are never offered.
    #[serde(default = "yes")]
    pub tls12: bool,
    /// Offer HTTP/2 by ALPN (default true).
    #[serde(default = "yes")]
    pub http2: bool,
    /// Maximum time for the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: HumanDuration,
}

/// `[server.http]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address to listen on, e.g. `"0.0.0.0:80"`.
    pub listen: String,
    /// `redirect` (default): answer every request with 308 to the HTTPS URL.
    /// `behind_tls_proxy`: serve plain HTTP because a TLS-terminating load
    /// balancer sits in front; responses are treated as HTTPS (HSTS sent,
    /// `X-Forwarded-Proto: https`). `plain`: serve plain HTTP as HTTP
    /// (development only; `portcullis check` warns).
    #[serde(default)]
    pub mode: HttpMode,
    /// Port to put in redirect URLs (default: the HTTPS listener's port).
    pub redirect_port: Option<u16>,
    /// Also accept HTTP/2 with prior knowledge (h2c) on this listener, for
    /// load balancers that speak it (default false: HTTP/1.1 only, which
    /// skips protocol detection on every connection).
    #[serde(default)]
    pub h2c: bool,
}

/// What the plain HTTP listener does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpMode {
    /// 308 to https.
    #[default]
    Redirect,
    /// Serve, as HTTPS terminated by a load balancer.
    BehindTlsProxy,
    /// Serve plain HTTP (unsafe).
    Plain,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body; larger bodies get 413 (routes can override).
    pub max_body: ByteSize,
    /// Largest total size of request header names and values; 431 above.
    pub max_header_bytes: ByteSize,
    /// Most request header fields; 431 above.
    pub max_headers: usize,
    /// Longest request path (bytes, before decoding); 414 above.
    pub max_path_bytes: usize,
    /// Time an HTTP/1.1 client has to send a complete request head (slowloris
    /// defence). hyper also starts this timer when a keep-alive connection
    /// goes idle, so an idle HTTP/1.1 connection closes after the shorter of
    /// this and `idle_timeout`. (The TLS handshake has `server.https.handshake_timeout`.)
    pub header_read_timeout: HumanDuration,
    /// Close a connection (HTTP/1.1 or HTTP/2) with no request in flight and no
    /// bytes moving for this long; it closes between one and two periods after
    /// its last activity.
    pub idle_timeout: HumanDuration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest upstream response read whole to be checked (response
    /// ownership, response conditions); larger ones get 502. Routes can override.
    pub max_buffered_response: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: ByteSize(1 << 20),
            max_header_bytes: ByteSize(16 << 10),
            max_headers: 100,
            max_path_bytes: 2048,
            header_read_timeout: HumanDuration(std::time::Duration::from_secs(10)),
            idle_timeout: HumanDuration(std::time::Duration::from_secs(60)),
            max_concurrent_streams: 100,
            max_buffered_response: ByteSize(1 << 20),
        }
    }
}

/// `[headers]`: security headers on every response. Set a value to `""` to
/// leave that header out.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Headers {
    /// `Strict-Transport-Security`, sent on every HTTPS response.
    pub hsts: String,
    /// `Content-Security-Policy`.
    pub content_security_policy: String,
    /// `X-Frame-Options`.
    pub frame_options: String,
    /// `Referrer-Policy`.
    pub referrer_policy: String,
    /// `X-Content-Type-Options: nosniff` (default true).
    pub nosniff: bool,
    /// `Cache-Control: no-store` on responses to non-GET/HEAD requests and to
    /// requests that carried credentials (default true).
    pub no_store: bool,
    /// Upstream response headers removed in addition to the built-in list
    /// (`Server`, `X-Powered-By`, `X-AspNet-Version`, `X-AspNetMvc-Version`).
    /// A trailing `*` matches a prefix, e.g. `"x-debug-*"`.
    pub strip: Vec<String>,
    /// Extra headers set on every response (e.g. `Permissions-Policy`).
    pub set: BTreeMap<String, String>,
}

impl Default for Headers {
    fn default() -> Self {
        Self {
            hsts: "max-age=31536000; includeSubDomains".into(),
            content_security_policy: "default-src 'none'; frame-ancestors 'none'".into(),
            frame_options: "DENY".into(),
            referrer_policy: "no-referrer".into(),
            nosniff: true,
            no_store: true,
            strip: Vec::new(),
            set: BTreeMap::new(),
        }
    }
}

/// `[errors]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Errors {
    /// Replace the body of upstream 5xx responses by a generic problem+json
    /// (the status is kept), so stack traces never reach clients.
    pub replace_upstream_5xx: bool,
}

impl Default for Errors {
    fn default() -> Self {
        Self {
            replace_upstream_5xx: true,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Where access log lines go: `"stdout"`, `"stderr"`, `"off"` or a file path.
    pub access: String,
    /// Where audit events go (JSON lines): `"stdout"`, `"stderr"`, `"off"`
    /// or a file path. The same target as `access` shares one writer.
    pub audit: String,
    /// Diagnostics level: `error`, `warn`, `info`, `debug`, `trace`.
    pub level: String,
    /// Query parameters whose values are replaced by `[redacted]` in the
    /// access log when their name contains one of these (case-insensitive).
    pub redact_query: Vec<String>,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            access: "stdout".into(),
            audit: "stdout".into(),
            level: "info".into(),
            redact_query: [
                "token", "key", "password", "secret", "auth", "session", "code",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// `[upstreams.NAME]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `http://host:port`, no path.
    pub url: String,
    /// Time to establish a TCP connection; 502 on failure, 504 on timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time from taking (or opening) a connection and sending the request to
    /// receiving the response head; 504 after. Routes can override it.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: HumanDuration,
    /// Idle pooled connections older than this are not reused (and are closed
    /// when the pool reaches them).
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout: HumanDuration,
    /// Most idle pooled connections kept per upstream.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
}

/// `[cors]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Policy applied to routes that do not name one (none: no CORS).
    pub default: Option<String>,
    /// Named policies.
    #[serde(default)]
    pub policies: BTreeMap<String, CorsPolicy>,
}

/// `[cors.policies.NAME]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsPolicy {
    /// Exact origins (`scheme://host[:port]`) allowed; `"*"` allows any origin
    /// but cannot be combined with `allow_credentials`.
    pub allow_origins: Vec<String>,
    /// Methods allowed cross-origin (default: GET, HEAD, POST).
    #[serde(default = "default_cors_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed cross-origin (default: Content-Type).
    #[serde(default = "default_cors_headers")]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies / Authorization cross-origin.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(default = "default_cors_max_age")]
    pub max_age: HumanDuration,
}

/// `[[routes]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Name used in logs (default: the path).
    pub name: Option<String>,
    /// Path template: literal segments, `{param}` segments and an optional
    /// final `{*rest}` catch-all.
    pub path: String,
    /// Methods this route accepts (GET also accepts HEAD).
    pub methods: Vec<String>,
    /// Upstream name from `[upstreams]`.
    pub upstream: String,
    /// CORS policy name, or `"none"`; default `[cors] default`.
    pub cors: Option<String>,
    /// Body size limit for this route (default `[limits] max_body`).
    pub max_body: Option<ByteSize>,
    /// Upstream response timeout for this route (default: the upstream's).
    pub timeout: Option<HumanDuration>,
    /// `true`: anyone may call this route. Every route must say either
    /// `public = true` or `auth = [...]`; a route that says neither does not
    /// compile.
    #[serde(default)]
    pub public: bool,
    /// Authentication methods accepted, tried in order; the first credential
    /// present decides (a present but invalid credential is refused, never
    /// passed on to the next method). Methods: `"jwt"`, `"api_key"`, `"session"`.
    pub auth: Option<Vec<String>>,
    /// Also accept the API key in this query parameter (off by default: keys
    /// in URLs end up in logs and browser history).
    pub api_key_query: Option<String>,
    /// Permissions the caller needs, all of them.
    #[serde(default)]
    pub require: Vec<String>,
    /// Permissions of which the caller needs at least one.
    #[serde(default)]
    pub require_any: Vec<String>,
    /// Object ownership by path: the parameter must name the caller.
    pub owner: Option<Owner>,
    /// Object ownership in the JSON request body (POST/PUT/PATCH): the field
    /// must name the caller, e.g. `{ pointer = "/author_id" }`.
    pub owner_field: Option<OwnerField>,
    /// Object ownership known only from the upstream's response: a field of
    /// the JSON object (or of each item of a list) must name the caller.
    pub response_owner: Option<ResponseOwner>,
    /// A CEL condition that must be true. A condition that mentions
    /// `response` is checked on the upstream's response.
    pub allow_if: Option<String>,
    /// Named conditions from `[authz.policies]`; all must be true.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Record allowed requests on this route as audit events too.
    #[serde(default)]
    pub audit: bool,
    /// Largest upstream response the gateway reads to check it (routes with
    /// `response_owner` or response conditions); larger ones get 502.
    /// Default `[limits] max_buffered_response`.
    pub max_buffered_response: Option<ByteSize>,
    /// Rate limits of this route: names from `[rate_limit.limits]` or
    /// inline limits; all must pass. Default: `[rate_limit] default`;
    /// `[]` for none.
    pub rate_limits: Option<Vec<LimitRef>>,
    /// A credential endpoint of the upstream (its own login, password reset):
    /// its 4xx answers count as failures per client address for the login
    /// lockout, and a locked address gets 429.
    #[serde(default)]
    pub credential_endpoint: bool,
    /// Page-size cap: `{ param = "limit", max = 100, default = 20 }`. A
    /// larger value is clamped (`over_max = "refuse"`: 400), a missing one
    /// gets `default`. On `[[apis]]` operations `max` and `default` may come
    /// from the parameter's schema (`maximum`, `default`).
    pub pagination: Option<PaginationCfg>,
    /// Apply `[responses] redact` to this route's JSON answers (always on
    /// for `[[apis]]` operations).
    #[serde(default)]
    pub redact_responses: bool,
}

/// `pagination = { ... }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationCfg {
    /// The query parameter (`"limit"`, `"page_size"`).
    pub param: String,
    /// Largest page size passed upstream.
    pub max: Option<u64>,
    /// Page size added when the request has none.
    pub default: Option<u64>,
    /// `"clamp"` (default) or `"refuse"`.
    #[serde(default = "default_over_max")]
    pub over_max: String,
}

fn default_over_max() -> String {
    "clamp".into()
}

/// A route's limit: a name from `[rate_limit.limits]` or an inline limit.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum LimitRef {
    /// A named limit.
    Name(String),
    /// An inline limit.
    Inline(LimitSpec),
}

/// `{ key = "ip", algorithm = "sliding_window", limit = 100, window = "1m" }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// `ip`, `user`, `api_key`, `client`, `route`, `header:NAME`,
    /// `param:NAME`, or a list of them (a combined key).
    pub key: KeySpec,
    /// `sliding_window` (default), `fixed_window`, `gcra`, or `concurrency`
    /// (requests in flight at once; no window).
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// Requests per window (GCRA: the sustained rate; concurrency: in flight).
    pub limit: u32,
    /// The window (not for `concurrency`).
    pub window: Option<HumanDuration>,
    /// GCRA: requests allowed at once (default: `limit`).
    pub burst: Option<u32>,
    /// `"all"` (default) or `"failures"`: only answers with status 400 and
    /// above count (checked before, counted after).
    #[serde(default = "default_count")]
    pub count: String,
    /// With `backend = "redis"` unreachable: `"open"` lets requests through,
    /// `"closed"` refuses them (503). Default: closed on credential
    /// endpoints, open elsewhere.
    pub fail: Option<String>,
}

/// One key part or several.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum KeySpec {
    /// One part.
    One(String),
    /// Combined parts.
    Many(Vec<String>),
}

fn default_algorithm() -> String {
    "sliding_window".into()
}

fn default_count() -> String {
    "all".into()
}

/// `[rate_limit]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    /// `"memory"` (one instance; the default).
    pub backend: String,
    /// Most keys the memory backend holds (oldest evicted beyond).
    pub max_keys: usize,
    /// IPv4 addresses are keyed by this prefix length.
    pub ipv4_prefix: u8,
    /// IPv6 addresses are keyed by this prefix length (one host cannot
    /// rotate through its /64).
    pub ipv6_prefix: u8,
    /// Header families on limited routes: `"x-ratelimit"`, `"ietf"`.
    pub headers: Vec<String>,
    /// Limits for routes that do not name their own.
    pub default: Vec<String>,
    /// Named limits.
    pub limits: BTreeMap<String, LimitSpec>,
    /// Brute-force protection for the login endpoint.
    pub login: LoginLimit,
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCfg {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// Bound on each round trip (connect included).
    #[serde(default = "default_redis_timeout")]
    pub timeout: HumanDuration,
    /// Multiplexed connections (each carries many requests at once).
    #[serde(default = "default_redis_connections")]
    pub connections: usize,
    /// Failed round trips in a row that open the circuit.
    #[serde(default = "default_breaker_threshold")]
    pub breaker_threshold: u32,
    /// How long an open circuit fails fast before one trial.
    #[serde(default = "default_breaker_cool_down")]
    pub breaker_cool_down: HumanDuration,
}

fn default_redis_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_millis(100))
}

fn default_redis_connections() -> usize {
    2
}

fn default_breaker_threshold() -> u32 {
    3
}

fn default_breaker_cool_down() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2))
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            backend: "memory".into(),
            max_keys: 1_000_000,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            headers: vec!["x-ratelimit".into(), "ietf".into()],
            default: Vec::new(),
            limits: BTreeMap::new(),
            login: LoginLimit::default(),
        }
    }
}

/// `[rate_limit.login]`: on by default wherever there is a login.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimit {
    /// `false` turns it off (a warning).
    pub enabled: bool,
    /// Failures per account and client address before a lock.
    pub max_failures: u32,
    /// Failures per client address, any accounts, before a lock.
    pub max_failures_per_ip: u32,
    /// The window failures count in.
    pub window: HumanDuration,
    /// The first lock; doubles with each lock in a row.
    pub lockout: HumanDuration,
    /// The longest lock.
    pub max_lockout: HumanDuration,
}

impl Default for LoginLimit {
    fn default() -> Self {
        Self {
            enabled: true,
            max_failures: 5,
            max_failures_per_ip: 50,
            window: HumanDuration(std::time::Duration::from_secs(15 * 60)),
            lockout: HumanDuration(std::time::Duration::from_secs(5 * 60)),
            max_lockout: HumanDuration(std::time::Duration::from_secs(24 * 3600)),
        }
    }
}

/// `response_owner = { pointer = "/owner_id", equals = "sub", unless = [...] }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseOwner {
    /// JSON pointer of the owner field in the object (in each item, for lists).
    pub pointer: String,
    /// `"sub"` (default) or `"tenant"`.
    #[serde(default = "default_owner_equals")]
    pub equals: String,
    /// Permissions that bypass the check (the response is then streamed).
    #[serde(default)]
    pub unless: Vec<String>,
    /// For list responses: JSON pointer of the array (`""` for a top-level array).
    pub items: Option<String>,
    /// For lists: `"filter"` (default) removes other people's items,
    /// `"refuse"` answers 403 when there is any.
    #[serde(default = "default_list_mode")]
    pub mode: String,
    /// Before PUT, PATCH or DELETE (and for HEAD), GET the object from the
    /// upstream and check its owner; the write is forwarded only if it is the
    /// caller's.
    #[serde(default)]
    pub precheck: bool,
    /// Path to GET for the precheck, with `{param}`s of the route (default:
    /// the request's own path).
    pub precheck_path: Option<String>,
}

fn default_list_mode() -> String {
    "filter".into()
}

/// `owner_field = { pointer = "/author_id", equals = "sub", unless = [...] }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerField {
    /// JSON pointer (RFC 6901) of the field in the request body.
    pub pointer: String,
    /// `"sub"` (default) or `"tenant"`.
    #[serde(default = "default_owner_equals")]
    pub equals: String,
    /// Permissions that allow naming someone else.
    #[serde(default)]
    pub unless: Vec<String>,
}

/// `owner = { param = "id", equals = "sub", unless = ["users:read:any"] }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Path parameter that holds the owner.
    pub param: String,
    /// `"sub"` (default) or `"tenant"`.
    #[serde(default = "default_owner_equals")]
    pub equals: String,
    /// Permissions that bypass the check (e.g. for admins).
    #[serde(default)]
    pub unless: Vec<String>,
}

fn default_owner_equals() -> String {
    "sub".into()
}

/// `[authz]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Authz {
    /// Role -> permissions it grants (`admin = ["users:*", "documents:*"]`).
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// Role -> roles whose permissions it also has (`admin = ["user"]`).
    #[serde(default)]
    pub inherit: BTreeMap<String, Vec<String>>,
    /// Named CEL conditions routes can refer to in `policies = [...]`.
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
    /// IANA time zone for `time.hour`, `time.weekday` and friends in
    /// conditions (default `"UTC"`).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".into()
}

impl Default for Authz {
    fn default() -> Self {
        Self {
            roles: BTreeMap::new(),
            inherit: BTreeMap::new(),
            policies: BTreeMap::new(),
            time_zone: default_time_zone(),
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Bearer JWTs from trusted issuers.
    pub jwt: Option<Jwt>,
    /// API keys issued by Portcullis.
    pub api_keys: Option<ApiKeys>,
    /// Portcullis's own users: login, sessions, logout.
    pub sessions: Option<Sessions>,
    /// Access and refresh tokens Portcullis issues at login.
    pub tokens: Option<Tokens>,
    /// More request headers that carry identity to your upstream (e.g. an
    /// older `X-User-Id`): removed from every client request, like
    /// `X-Portcullis-*`, so a client can never set them.
    #[serde(default)]
    pub identity_headers: Vec<String>,
}

/// `[auth.tokens]` (needs `[auth.sessions]` for the users).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// `iss` of the tokens (e.g. the gateway's public URL).
    pub issuer: String,
    /// `aud` of the tokens.
    #[serde(default = "default_token_audience")]
    pub audience: String,
    /// Access token lifetime.
    #[serde(default = "default_access_ttl")]
    pub access_ttl: HumanDuration,
    /// Refresh token lifetime.
    #[serde(default = "default_refresh_ttl")]
    pub refresh_ttl: HumanDuration,
    /// P-256 PKCS#8 PEM signing keys; the first signs, all are published.
    pub signing_keys: Vec<SigningKey>,
    /// Where the public keys are served.
    #[serde(default = "default_jwks_path")]
    pub jwks_path: String,
    /// Where refresh tokens are exchanged (`POST {"refresh_token"}`).
    #[serde(default = "default_refresh_path")]
    pub refresh_path: String,
    /// OAuth 2.0 token endpoint for the client credentials grant.
    #[serde(default = "default_token_path")]
    pub token_path: String,
    /// Also send authenticated requests upstream with `X-Portcullis-Token`:
    /// a 60-second JWT signed with the first signing key, so the upstream
    /// can verify (against the JWKS) that the gateway made the claim.
    #[serde(default)]
    pub upstream_token: bool,
    /// `aud` of the upstream token.
    #[serde(default = "default_upstream_audience")]
    pub upstream_audience: String,
}

fn default_upstream_audience() -> String {
    "upstream".into()
}

fn default_token_path() -> String {
    "/oauth/token".into()
}

/// One signing key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKey {
    /// Key id (`kid`).
    pub kid: String,
    /// PEM file.
    pub file: PathBuf,
}

fn default_token_audience() -> String {
    "portcullis".into()
}
fn default_access_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(15 * 60))
}
fn default_refresh_ttl() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 86_400))
}
fn default_jwks_path() -> String {
    "/.well-known/jwks.json".into()
}
fn default_refresh_path() -> String {
    "/auth/refresh".into()
}

/// `[auth.sessions]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sessions {
    /// Cookie name; must start with `__Host-` (Secure, Path=/, no Domain).
    pub cookie: String,
    /// A session unused for this long ends.
    pub idle_timeout: HumanDuration,
    /// A session ends this long after login, used or not.
    pub absolute_timeout: HumanDuration,
    /// Login endpoint served by the gateway (`POST {"username","password"}`).
    pub login_path: String,
    /// Logout endpoint served by the gateway (`POST`).
    pub logout_path: String,
    /// Origins (`scheme://host[:port]`) allowed to make cookie-authenticated
    /// POST/PUT/PATCH/DELETE requests besides the gateway's own origin.
    pub allowed_origins: Vec<String>,
    /// What a successful login gives: `"cookie"` (a session), `"tokens"`
    /// (access and refresh tokens, needs `[auth.tokens]`), or both.
    pub issue: Vec<String>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            cookie: "__Host-portcullis".into(),
            idle_timeout: HumanDuration(std::time::Duration::from_secs(30 * 60)),
            absolute_timeout: HumanDuration(std::time::Duration::from_secs(12 * 3600)),
            login_path: "/auth/login".into(),
            logout_path: "/auth/logout".into(),
            allowed_origins: Vec::new(),
            issue: vec!["cookie".into()],
        }
    }
}

/// `[auth.api_keys]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeys {
    /// Readable key prefix (`pk` gives `pk_<id>_<secret>`).
    #[serde(default = "default_key_prefix")]
    pub prefix: String,
    /// Request header that carries the key (also accepted:
    /// `Authorization: ApiKey <key>`).
    #[serde(default = "default_key_header")]
    pub header: String,
    /// File with the server-side secret for HMAC-SHA-256 key hashes (at least
    /// 32 bytes). Without it keys are hashed with plain SHA-256 (`check` warns).
    pub hash_secret_file: Option<PathBuf>,
    /// Lifetime of a new key unless given at creation; `"0s"` for none (`check` warns).
    #[serde(default = "default_key_expiry")]
    pub default_expiry: HumanDuration,
    /// How long a rotated key keeps working beside its replacement.
    #[serde(default = "default_rotation_overlap")]
    pub rotation_overlap: HumanDuration,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address of the admin listener (plain HTTP: keep it on loopback or a
    /// private interface; `check` warns otherwise).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Hex SHA-256 of the admin bearer token (`portcullis admin-token` makes a pair).
    pub token_sha256: String,
}

fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}

/// `[store]`: where persistent state lives.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// SQLite database file (created and migrated on start).
    pub sqlite: PathBuf,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            sqlite: PathBuf::from("portcullis.db"),
        }
    }
}

fn default_key_prefix() -> String {
    "pk".into()
}
fn default_key_header() -> String {
    "x-api-key".into()
}
fn default_key_expiry() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(90 * 86_400))
}
fn default_rotation_overlap() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(86_400))
}

/// `[auth.jwt]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    /// Longest token accepted (bytes).
    #[serde(default = "default_max_token")]
    pub max_token_bytes: ByteSize,
    /// Verified tokens remembered (0 disables the cache).
    #[serde(default = "default_token_cache")]
    pub cache_entries: usize,
    /// Trusted issuers.
    pub issuers: Vec<JwtIssuer>,
}

/// `[[auth.jwt.issuers]]`: exactly one of `jwks_url`, `jwks_file`,
/// `pem_file`, `secret_file`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    /// Exact `iss` claim value.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// Allowed algorithms: RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384, EdDSA; HS256/HS384/HS512 only with `secret_file`.
    pub algorithms: Vec<String>,
    /// HTTPS URL of the issuer's JWKS.
    pub jwks_url: Option<String>,
    /// Local JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// Local PEM public key (RSA, EC or Ed25519), used for tokens with any or no `kid`.
    pub pem_file: Option<PathBuf>,
    /// File holding the shared secret for HMAC algorithms.
    pub secret_file: Option<PathBuf>,
    /// Extra PEM CA certificates trusted for `jwks_url` (besides the public roots).
    pub ca_file: Option<PathBuf>,
    /// JWKS refresh when the response has no `Cache-Control: max-age`.
    #[serde(default = "default_jwks_refresh")]
    pub refresh_interval: HumanDuration,
    /// At most one JWKS fetch per this interval for unknown `kid`s.
    #[serde(default = "default_jwks_refetch")]
    pub min_refetch_interval: HumanDuration,
    /// Where the identity comes from in the claims.
    #[serde(default)]
    pub claims: JwtClaims,
}

/// `[auth.jwt.issuers.claims]`: dotted claim paths.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtClaims {
    /// Subject (default `sub`).
    pub subject: String,
    /// Roles: list or space-separated string (default `roles`).
    pub roles: String,
    /// Scopes: list or space-separated string (default `scope`).
    pub scopes: String,
    /// Tenant (default: none).
    pub tenant: Option<String>,
}

impl Default for JwtClaims {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            roles: "roles".into(),
            scopes: "scope".into(),
            tenant: None,
        }
    }
}

fn default_leeway() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_max_token() -> ByteSize {
    ByteSize(8 << 10)
}
fn default_token_cache() -> usize {
    100_000
}
fn default_jwks_refresh() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(300))
}
fn default_jwks_refetch() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

fn yes() -> bool {
    true
}
fn default_handshake_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(2))
}
fn default_response_timeout() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_pool_idle() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(90))
}
fn default_pool_max_idle() -> usize {
    256
}
fn default_cors_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}
fn default_cors_headers() -> Vec<String> {
    vec!["content-type".into()]
}
fn default_cors_max_age() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(600))
}

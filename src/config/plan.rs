//! The compile step: file model in, immutable [`Plan`] out. Everything the
//! request path needs is parsed here once (addresses, CIDRs, header values,
//! CORS sets, routes, TLS keys), and every error is collected with its TOML
//! path, so `portcullis check` shows them all at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::file::{self, File, HttpMode};
use super::{ConfigError, ConfigErrors};
use crate::access_log::{AccessTarget, LogSink};
use crate::client_ip::TrustedProxies;
use crate::cors::CorsPolicy;
use crate::headers::SecurityHeaders;
use crate::proxy::Upstream;
use crate::route::{Route, Router};

/// The compiled, immutable runtime configuration.
#[derive(Debug)]
pub struct Plan {
    /// The HTTPS listener.
    pub https: Option<HttpsListener>,
    /// The plain HTTP listener.
    pub http: Option<HttpListener>,
    /// Worker threads (0 = cores).
    pub worker_threads: usize,
    /// Connection cap.
    pub max_connections: usize,
    /// Drain time on shutdown.
    pub shutdown_grace: Duration,
    /// Reload on file change.
    pub watch_config: bool,
    /// Client address resolver.
    pub trusted: TrustedProxies,
    /// Accept request ids from trusted proxies.
    pub trust_request_id: bool,
    /// Limits.
    pub limits: Limits,
    /// Security headers.
    pub headers: SecurityHeaders,
    /// Replace upstream 5xx bodies.
    pub replace_upstream_5xx: bool,
    /// Access log target (None: off).
    pub access_target: Option<AccessTarget>,
    /// The running access-log writer, attached when the plan is installed.
    pub log_sink: Option<Arc<LogSink>>,
    /// Audit log target (None: off).
    pub audit_target: Option<AccessTarget>,
    /// The running audit writer (shared with the access log when the target
    /// is the same), attached when the plan is installed.
    pub audit_sink: Option<Arc<LogSink>>,
    /// Diagnostics level.
    pub log_level: String,
    /// Lower-case words that mark a query parameter as secret.
    pub redact_query: Vec<String>,
    /// Upstreams by index.
    pub upstreams: Vec<Upstream>,
    /// CORS policies by index.
    pub cors: Vec<CorsPolicy>,
    /// Routes by index.
    pub routes: Vec<Route>,
    /// Path router.
    pub router: Router,
    /// Authentication methods.
    pub authn: crate::authn::Authn,
    /// Configured identity header names, lower-case, dashed.
    pub identity_headers: Vec<String>,
    /// Roles and permissions.
    pub authz: crate::authz::Authz,
    /// Rate limits and their state.
    pub ratelimit: crate::ratelimit::RateLimits,
    /// SQLite file, when something needs the store.
    pub store_path: Option<std::path::PathBuf>,
    /// The open store, attached when the plan is installed.
    pub store: Option<Arc<crate::store::Store>>,
    /// Security-event counters (kept across reloads).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The shared Redis (`[redis]`).
    pub redis: Option<Arc<crate::redis::Redis>>,
    /// Sessions, refresh tokens and key revocations in Redis, when `[redis]`
    /// is set and something needs them.
    pub shared: Option<Arc<crate::store::shared::SharedAuth>>,
    /// The admin API.
    pub admin: Option<crate::admin::AdminPlan>,
    /// `[responses] redact`.
    pub redaction: Arc<crate::filter::Redaction>,
    /// `[versioning]`.
    pub versions: Option<crate::versioning::Versions>,
    /// Unsafe or dubious settings (`portcullis check` prints them).
    pub warnings: Vec<String>,
}

/// The TLS listener.
#[derive(Debug, Clone)]
pub struct HttpsListener {
    /// Address.
    pub addr: SocketAddr,
    /// rustls configuration (certificate reloads with the plan).
    pub tls: Arc<ServerConfig>,
    /// Handshake time limit.
    pub handshake_timeout: Duration,
}

/// The plain listener.
#[derive(Debug, Clone)]
pub struct HttpListener {
    /// Address.
    pub addr: SocketAddr,
    /// Mode.
    pub mode: HttpMode,
    /// Port for redirect URLs.
    pub redirect_port: u16,
    /// Accept h2c prior knowledge.
    pub h2c: bool,
}

/// Compiled `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Default body limit.
    pub max_body: u64,
    /// Header bytes limit.
    pub max_header_bytes: usize,
    /// Header count limit.
    pub max_headers: usize,
    /// Path length limit.
    pub max_path_bytes: usize,
    /// Head read timeout.
    pub header_read_timeout: Duration,
    /// Idle connection timeout.
    pub idle_timeout: Duration,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Default bound for responses read whole to be checked.
    pub max_buffered_response: u64,
}

#[derive(Default)]
struct Errs(Vec<ConfigError>);

impl Errs {
    fn push(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: msg.into(),
        });
    }
}

/// Compiles a parsed file. `base` resolves relative paths.
pub fn compile(f: &File, base: &Path) -> Result<Plan, ConfigErrors> {
    let mut e = Errs::default();
    let mut warnings = Vec::new();

    // --- server
    let s = &f.server;
    let trusted: Vec<IpNet> = s
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            parse_net(c)
                .map_err(|m| e.push(format!("server.trusted_proxies[{i}]"), m))
                .ok()
        })
        .collect();
    if trusted.iter().any(|n| n.prefix_len() == 0) {
        warnings.push("server.trusted_proxies contains 0.0.0.0/0 or ::/0: every client can choose its own address".into());
    }
    let https = s.https.as_ref().and_then(|h| {
        let addr = parse_addr(&h.listen)
            .map_err(|m| e.push("server.https.listen", m))
            .ok();
        let tls = tls_config(
            &resolve(base, &h.cert),
            &resolve(base, &h.key),
            h.tls12,
            h.http2,
        )
        .map_err(|m| e.push("server.https", m))
        .ok();
        Some(HttpsListener {
            addr: addr?,
            tls: tls?,
            handshake_timeout: h.handshake_timeout.0,
        })
    });
    let http = s.http.as_ref().and_then(|h| {
        let addr = parse_addr(&h.listen).map_err(|m| e.push("server.http.listen", m)).ok()?;
        if h.mode == HttpMode::Redirect && s.https.is_none() {
            e.push("server.http.mode", "\"redirect\" needs a [server.https] listener to redirect to");
        }
        if h.mode == HttpMode::Plain {
            warnings.push("server.http.mode = \"plain\" serves unencrypted HTTP to clients: use it only for local development".into());
        }
        let redirect_port = h
            .redirect_port
            .or_else(|| https.as_ref().map(|l| l.addr.port()))
            .unwrap_or(443);
        Some(HttpListener { addr, mode: h.mode, redirect_port, h2c: h.h2c })
    });
    if s.https.is_none() && s.http.is_none() {
        e.push(
            "server",
            "no listener: configure [server.https] and/or [server.http]",
        );
    }
    if s.max_connections == 0 {
        e.push("server.max_connections", "must be at least 1");
    }

    // --- limits
    let l = &f.limits;
    let limits = Limits {
        max_body: l.max_body.0,
        max_header_bytes: usize::try_from(l.max_header_bytes.0).unwrap_or(usize::MAX),
        max_headers: l.max_headers,
        max_path_bytes: l.max_path_bytes,
        header_read_timeout: l.header_read_timeout.0,
        idle_timeout: l.idle_timeout.0,
        max_concurrent_streams: l.max_concurrent_streams,
        max_buffered_response: l.max_buffered_response.0,
    };
    if limits.max_header_bytes < 1024 {
        e.push("limits.max_header_bytes", "must be at least 1KiB");
    }
    if limits.max_headers == 0 || limits.max_path_bytes == 0 {
        e.push(
            "limits",
            "max_headers and max_path_bytes must be at least 1",
        );
    }
    for (d, path) in [
        (limits.header_read_timeout, "limits.header_read_timeout"),
        (limits.idle_timeout, "limits.idle_timeout"),
    ] {
        if d.is_zero() {
            e.push(path, "must be above zero");
        }
    }
    if let Some(h) = &s.https {
        if h.handshake_timeout.0.is_zero() {
            e.push("server.https.handshake_timeout", "must be above zero");
        }
    }

    // --- headers
    let headers = compile_headers(&f.headers, &mut e, &mut warnings);

    // --- log
    let log_target = |t: &str| match t {
        "off" => None,
        "stdout" => Some(AccessTarget::Stdout),
        "stderr" => Some(AccessTarget::Stderr),
        p => Some(AccessTarget::File(resolve(base, Path::new(p)))),
    };
    let access_target = log_target(&f.log.access);
    let audit_target = log_target(&f.log.audit);
    if audit_target.is_none() {
        warnings
            .push("log.audit = \"off\": authorization denials and logins are not recorded".into());
    }
    if !["error", "warn", "info", "debug", "trace"].contains(&f.log.level.as_str()) {
        e.push(
            "log.level",
            "must be one of error, warn, info, debug, trace",
        );
    }

    // --- upstreams
    let names: Vec<&String> = f.upstreams.keys().collect();
    let upstreams: Vec<Upstream> = f
        .upstreams
        .iter()
        .filter_map(|(name, u)| {
            for (d, field) in [
                (u.connect_timeout.0, "connect_timeout"),
                (u.response_timeout.0, "response_timeout"),
                (u.pool_idle_timeout.0, "pool_idle_timeout"),
            ] {
                if d.is_zero() {
                    e.push(format!("upstreams.{name}.{field}"), "must be above zero");
                }
            }
            let path = format!("upstreams.{name}.url");
            let authority = parse_upstream_url(&u.url)
                .map_err(|m| e.push(path, m))
                .ok()?;
            Some(Upstream::new(
                name,
                authority,
                u.connect_timeout.0,
                u.response_timeout.0,
                u.pool_idle_timeout.0,
                u.pool_max_idle,
            ))
        })
        .collect();

    // --- cors
    let cors_names: Vec<&String> = f.cors.policies.keys().collect();
    let cors: Vec<CorsPolicy> = f
        .cors
        .policies
        .iter()
        .filter_map(|(name, p)| compile_cors(name, p, &mut e))
        .collect();
    let cors_index = |name: &str, path: String, e: &mut Errs| -> Option<usize> {
        if name == "none" {
            return None;
        }
        let i = cors_names.iter().position(|n| n.as_str() == name);
        if i.is_none() {
            e.push(
                path,
                format!("no CORS policy named {name:?} in [cors.policies]"),
            );
        }
        i
    };
    let default_cors = f
        .cors
        .default
        .as_deref()
        .and_then(|n| cors_index(n, "cors.default".into(), &mut e));

    // --- auth
    let mut identity_headers = Vec::new();
    for (i, n) in f.auth.identity_headers.iter().enumerate() {
        match HeaderName::from_bytes(n.to_ascii_lowercase().replace('_', "-").as_bytes()) {
            Ok(h)
                if matches!(
                    h.as_str(),
                    "authorization" | "cookie" | "host" | "content-length" | "content-type"
                ) =>
            {
                e.push(
                    format!("auth.identity_headers[{i}]"),
                    format!("{n:?} is not an identity header"),
                )
            }
            Ok(h) => identity_headers.push(h.as_str().to_owned()),
            Err(_) => e.push(
                format!("auth.identity_headers[{i}]"),
                format!("invalid header name {n:?}"),
            ),
        }
    }
    let (authn, auth_errors) = crate::authn::compile(&f.auth, base, &mut warnings);
    for (path, m) in auth_errors {
        e.push(path, m);
    }
    let have_jwt = authn.jwt.is_some();
    let have_keys = authn.api_keys.is_some();
    let have_sessions = authn.sessions.is_some();
    let store_path = (have_keys || have_sessions).then(|| resolve(base, &f.store.sqlite));

    // --- admin
    let admin = f.admin.as_ref().and_then(|a| {
        let addr = parse_addr(&a.listen).map_err(|m| e.push("admin.listen", m)).ok()?;
        if !addr.ip().is_loopback() {
            warnings.push("admin.listen is not a loopback address: the admin API speaks plain HTTP; keep it on a private interface".into());
        }
        let token_sha256 = crate::admin::parse_sha256(&a.token_sha256)
            .ok_or(())
            .map_err(|()| e.push("admin.token_sha256", "64 hex digits (portcullis admin-token makes one)"))
            .ok()?;
        Some(crate::admin::AdminPlan { addr, token_sha256 })
    });

    // --- authz
    let key_header = f
        .auth
        .api_keys
        .as_ref()
        .map(|k| k.header.to_ascii_lowercase());
    let secret_headers: Vec<&str> = ["x-api-key"]
        .into_iter()
        .chain(key_header.as_deref())
        .collect();
    let authz = crate::authz::Authz::compile(&f.authz, &secret_headers).unwrap_or_else(|errs| {
        for (path, m) in errs {
            e.push(path, m);
        }
        crate::authz::Authz::default()
    });

    // --- the shared Redis
    let redis = f.redis.as_ref().and_then(|r| {
        if r.connections == 0 || r.connections > 64 {
            e.push("redis.connections", "must be 1..=64");
        }
        match crate::redis::Redis::new(&r.url, r.timeout.0, r.connections) {
            Ok(c) => Some(Arc::new(
                c.with_breaker(r.breaker_threshold, r.breaker_cool_down.0),
            )),
            Err(m) => {
                e.push("redis.url", m);
                None
            }
        }
    });
    let shared = redis
        .as_ref()
        .filter(|_| have_keys || have_sessions)
        .map(|r| Arc::new(crate::store::shared::SharedAuth::new(r.clone())));

    // --- rate limits
    let mut rl_errors = Vec::new();
    let (mut ratelimit, named_limits) =
        crate::ratelimit::compile(&f.rate_limit, redis.as_ref(), &mut rl_errors, &mut warnings);
    if redis.is_some() && f.rate_limit.backend == "memory" {
        warnings.push("[redis] is set but rate_limit.backend is \"memory\": rate limits and the login lockout count per instance (set backend = \"redis\" to share them)".into());
    }

    // --- routes: [[routes]], then the operations of [[apis]]
    let mut all_routes: Vec<file::Route> = f.routes.clone();
    let mut labels: Vec<String> = Vec::new();
    let mut contracts: Vec<Arc<crate::validate::Contract>> = Vec::new();
    for (j, api) in f.apis.iter().enumerate() {
        match crate::openapi::expand(api, j, base, &mut warnings) {
            Ok(list) => {
                for (r, label, contract) in list {
                    all_routes.push(r);
                    labels.push(label);
                    contracts.push(Arc::new(contract));
                }
            }
            Err(errs) => {
                for (p, m) in errs {
                    e.push(p, m);
                }
            }
        }
    }
    let toml_routes = f.routes.len();
    let redaction = Arc::new(crate::filter::Redaction::new(&f.responses.redact));
    for (k, c) in contracts.iter().enumerate() {
        let declared = c
            .responses
            .as_ref()
            .map(|r| r.redacted_declared(&redaction))
            .unwrap_or_default();
        if !declared.is_empty() {
            warnings.push(format!(
                "routes[{}]: the response schema declares {} but [responses] redact removes them from every answer",
                toml_routes + k,
                declared.join(", ")
            ));
        }
    }
    for (j, api) in f.apis.iter().enumerate() {
        if api.response_headers == file::ResponseHeaders::All {
            warnings.push(format!("apis[{j}].response_headers = \"all\": upstream headers the document does not declare reach clients"));
        }
        if !matches!(api.validation_status, 400 | 422) {
            e.push(format!("apis[{j}].validation_status"), "400 or 422");
        }
        if let (Some(_), true) = (&api.version, f.versioning.is_none()) {
            warnings.push(format!(
                "apis[{j}].version is set but there is no [versioning]: only the path selects it"
            ));
        }
    }
    let versions = f.versioning.as_ref().map(|v| {
        let apis = f
            .apis
            .iter()
            .filter_map(|a| {
                a.version
                    .clone()
                    .map(|ver| (ver, a.base_path.trim_end_matches('/').to_owned()))
            })
            .collect();
        let mut errs = Vec::new();
        let compiled = crate::versioning::Versions::compile(v, apis, &mut errs);
        for (p, m) in errs {
            e.push(p, m);
        }
        if compiled.header_unused() {
            warnings.push("[versioning] path is set but no [[apis]] entry has a version".into());
        }
        compiled
    });
    if f.responses.redact.is_empty() {
        warnings.push(
            "[responses] redact is empty: no field is removed from answers without a schema".into(),
        );
    }
    let mut routes = Vec::new();
    let mut entries = Vec::new();
    for (i, r) in all_routes.iter().enumerate() {
        let p = |field: &str| format!("routes[{i}].{field}");
        if let Err(m) = check_template(&r.path) {
            e.push(p("path"), m);
        }
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) if m == Method::CONNECT || m == Method::TRACE => e.push(
                    format!("routes[{i}].methods[{j}]"),
                    format!("{m} is never proxied"),
                ),
                Ok(m) => methods.push(m),
                Err(_) => e.push(
                    format!("routes[{i}].methods[{j}]"),
                    format!("invalid method {m:?}"),
                ),
            }
        }
        if r.methods.is_empty() {
            e.push(p("methods"), "list at least one method");
        }
        if r.timeout.is_some_and(|t| t.0.is_zero()) {
            e.push(p("timeout"), "must be above zero");
        }
        let upstream = names.iter().position(|n| **n == r.upstream);
        if upstream.is_none() {
            e.push(
                p("upstream"),
                format!("no upstream named {:?} in [upstreams]", r.upstream),
            );
        }
        let cors = match &r.cors {
            Some(n) => cors_index(n, p("cors"), &mut e),
            None => default_cors,
        };
        entries.push((r.path.clone(), methods, i));
        routes.push(Route {
            name: r.name.clone().unwrap_or_else(|| r.path.clone()).into(),
            template: r.path.clone(),
            upstream: upstream.unwrap_or(0),
            cors,
            max_body: r.max_body.map_or(limits.max_body, |b| b.0),
            timeout: r.timeout.map(|t| t.0),
            api_key_query: r.api_key_query.clone(),
            limits: crate::ratelimit::route_limits(
                &mut ratelimit,
                &named_limits,
                &f.rate_limit.default,
                r.rate_limits.as_deref(),
                &i.checked_sub(toml_routes)
                    .and_then(|k| labels.get(k).cloned())
                    .unwrap_or_else(|| format!("routes[{i}]")),
                r.public,
                r.credential_endpoint,
                &mut rl_errors,
                &mut warnings,
            ),
            credential_endpoint: r.credential_endpoint,
            contract: match i.checked_sub(toml_routes) {
                Some(k) => contracts.get(k).cloned(),
                None => plain_contract(r, &mut e, &p),
            },
            authz: compile_route_authz(
                r,
                i,
                &authz,
                limits.max_buffered_response,
                &mut e,
                &mut warnings,
            ),
            auth: crate::authn::route_auth(
                r.public,
                r.auth.as_deref(),
                have_jwt,
                have_keys,
                have_sessions,
            )
            .unwrap_or_else(|m| {
                e.push(p("auth"), m);
                crate::authn::RouteAuth::Public
            }),
        });
    }
    for (path, m) in rl_errors {
        e.push(path, m);
    }
    if all_routes.is_empty() {
        warnings.push("no [[routes]]: every request will be answered 404".into());
    }
    let router = match Router::build(&entries) {
        Ok(r) => r,
        Err(errs) => {
            for (i, m) in errs {
                e.push(format!("routes[{i}].path"), m);
            }
            Router::default()
        }
    };

    let gateway_paths: Vec<(&String, &str)> = authn
        .sessions
        .iter()
        .flat_map(|s| {
            [
                (&s.login_path, "auth.sessions.login_path"),
                (&s.logout_path, "auth.sessions.logout_path"),
            ]
        })
        .chain(authn.tokens.iter().flat_map(|t| {
            [
                (&t.jwks_path, "auth.tokens.jwks_path"),
                (&t.refresh_path, "auth.tokens.refresh_path"),
                (&t.token_path, "auth.tokens.token_path"),
            ]
        }))
        .collect();
    for (i, (p, f)) in gateway_paths.iter().enumerate() {
        if gateway_paths.iter().take(i).any(|(o, _)| o == p) {
            e.push(*f, format!("{p:?} is used by two gateway endpoints"));
        }
    }
    {
        for (path, field) in gateway_paths {
            if !matches!(
                router.find(path, &Method::POST),
                Err(crate::reject::Rejection::NotFound)
            ) {
                e.push(
                    field,
                    format!("{path:?} is also a route path: the gateway serves it"),
                );
            }
        }
    }

    // Routes made from [[apis]] are named by their operation, not by an
    // index the user never wrote.
    if !labels.is_empty() {
        for err in &mut e.0 {
            err.path = relabel(&err.path, toml_routes, &labels);
        }
        for w in &mut warnings {
            *w = relabel(w, toml_routes, &labels);
        }
    }
    if !e.0.is_empty() {
        return Err(ConfigErrors(e.0));
    }
    Ok(Plan {
        https,
        http,
        worker_threads: s.worker_threads,
        max_connections: s.max_connections,
        shutdown_grace: s.shutdown_grace.0,
        watch_config: s.watch_config,
        trusted: TrustedProxies::new(trusted, s.client_ip_header),
        trust_request_id: s.trust_request_id,
        limits,
        headers,
        replace_upstream_5xx: f.errors.replace_upstream_5xx,
        access_target,
        log_sink: None,
        audit_target,
        audit_sink: None,
        log_level: f.log.level.clone(),
        redact_query: f
            .log
            .redact_query
            .iter()
            .map(|w| w.to_ascii_lowercase())
            .collect(),
        upstreams,
        cors,
        routes,
        router,
        authn,
        store_path,
        store: None,
        metrics: Arc::default(),
        redis,
        shared,
        admin,
        redaction,
        versions,
        identity_headers,
        authz,
        ratelimit,
        warnings,
    })
}

/// A `[[routes]]` entry's contract: only a page-size cap and redaction.
fn plain_contract(
    r: &file::Route,
    e: &mut Errs,
    p: &dyn Fn(&str) -> String,
) -> Option<Arc<crate::validate::Contract>> {
    if r.pagination.is_none() && !r.redact_responses {
        return None;
    }
    let mut c = crate::validate::Contract::with_body(crate::validate::BodyRule::Any, 32);
    if let Some(cfg) = &r.pagination {
        match crate::validate::pagination(cfg, None) {
            Ok(pg) => c.pagination = Some(pg),
            Err(m) => e.push(p("pagination"), m),
        }
    }
    if r.redact_responses {
        c.responses = Some(crate::filter::Responses::default());
    }
    Some(Arc::new(c))
}

fn compile_route_authz(
    r: &file::Route,
    i: usize,
    authz: &crate::authz::Authz,
    max_buffered_response: u64,
    e: &mut Errs,
    warnings: &mut Vec<String>,
) -> crate::authz::RouteAuthz {
    use crate::authz::{OwnerAttr, OwnerRule, Permission, RouteAuthz};
    let perms = |list: &[String], field: &str, e: &mut Errs| -> Vec<Permission> {
        list.iter()
            .enumerate()
            .filter_map(|(j, s)| {
                Permission::parse(s)
                    .map_err(|m| e.push(format!("routes[{i}].{field}[{j}]"), m))
                    .ok()
            })
            .collect()
    };
    let require = perms(&r.require, "require", e);
    let require_any = perms(&r.require_any, "require_any", e);
    let owner = r.owner.as_ref().and_then(|o| {
        let equals = match o.equals.as_str() {
            "sub" => OwnerAttr::Sub,
            "tenant" => OwnerAttr::Tenant,
            other => {
                e.push(
                    format!("routes[{i}].owner.equals"),
                    format!("{other:?}: use \"sub\" or \"tenant\""),
                );
                return None;
            }
        };
        let param_in_path = r
            .path
            .split('/')
            .any(|seg| seg == format!("{{{}}}", o.param));
        if !param_in_path {
            e.push(
                format!("routes[{i}].owner.param"),
                format!("{:?} is not a {{param}} of {:?}", o.param, r.path),
            );
            return None;
        }
        let unless = perms(&o.unless, "owner.unless", e);
        Some(OwnerRule {
            param: o.param.clone(),
            equals,
            unless,
        })
    });
    let body_owner = r.owner_field.as_ref().and_then(|o| {
        let equals = match o.equals.as_str() {
            "sub" => OwnerAttr::Sub,
            "tenant" => OwnerAttr::Tenant,
            other => {
                e.push(
                    format!("routes[{i}].owner_field.equals"),
                    format!("{other:?}: use \"sub\" or \"tenant\""),
                );
                return None;
            }
        };
        if !o.pointer.starts_with('/') {
            e.push(
                format!("routes[{i}].owner_field.pointer"),
                "a JSON pointer starts with '/', e.g. \"/author_id\"",
            );
            return None;
        }
        let unless = perms(&o.unless, "owner_field.unless", e);
        Some(crate::authz::BodyOwnerRule {
            pointer: o.pointer.clone(),
            equals,
            unless,
        })
    });
    let route_params: Vec<&str> = r
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect();
    let response_owner = r.response_owner.as_ref().and_then(|o| {
        let field = |f: &str| format!("routes[{i}].response_owner.{f}");
        let equals = match o.equals.as_str() {
            "sub" => OwnerAttr::Sub,
            "tenant" => OwnerAttr::Tenant,
            other => {
                e.push(
                    field("equals"),
                    format!("{other:?}: use \"sub\" or \"tenant\""),
                );
                return None;
            }
        };
        if !o.pointer.starts_with('/') {
            e.push(
                field("pointer"),
                "a JSON pointer starts with '/', e.g. \"/owner_id\"",
            );
            return None;
        }
        if o.items
            .as_deref()
            .is_some_and(|p| !p.is_empty() && !p.starts_with('/'))
        {
            e.push(
                field("items"),
                "a JSON pointer: \"\" for a top-level array, or e.g. \"/items\"",
            );
            return None;
        }
        let refuse = match o.mode.as_str() {
            "filter" => false,
            "refuse" => true,
            other => {
                e.push(
                    field("mode"),
                    format!("{other:?}: use \"filter\" or \"refuse\""),
                );
                return None;
            }
        };
        if o.precheck && o.items.is_some() {
            e.push(
                field("precheck"),
                "a precheck reads one object; this rule is for a list (items)",
            );
            return None;
        }
        if o.precheck_path.is_some() && !o.precheck {
            e.push(field("precheck_path"), "set precheck = true to use it");
        }
        let precheck_path = match o.precheck_path.as_deref() {
            Some(t) => {
                match crate::authz::response::ResponseOwnerRule::parse_path(t, &route_params) {
                    Ok(p) => Some(p),
                    Err(m) => {
                        e.push(field("precheck_path"), m);
                        return None;
                    }
                }
            }
            None => None,
        };
        let unless = perms(&o.unless, "response_owner.unless", e);
        Some(crate::authz::ResponseOwnerRule {
            pointer: o.pointer.clone(),
            equals,
            unless,
            items: o.items.clone(),
            refuse,
            precheck: o.precheck,
            precheck_path,
        })
    });
    let mut policies = Vec::new();
    if let Some(src) = &r.allow_if {
        match authz
            .policy_env
            .compile(&format!("routes[{i}].allow_if"), src)
        {
            Ok(p) => policies.push(std::sync::Arc::new(p)),
            Err(m) => e.push(format!("routes[{i}].allow_if"), m),
        }
    }
    for (j, name) in r.policies.iter().enumerate() {
        match authz.named.get(name) {
            Some(p) => policies.push(p.clone()),
            None => e.push(
                format!("routes[{i}].policies[{j}]"),
                format!("no policy {name:?} in [authz.policies]"),
            ),
        }
    }
    let rule = RouteAuthz {
        require,
        require_any,
        owner,
        body_owner,
        response_owner,
        policies,
        audit: r.audit,
        max_buffered_response: r
            .max_buffered_response
            .map_or(max_buffered_response, |b| b.0),
    };
    let writes = r
        .methods
        .iter()
        .any(|m| ["POST", "PUT", "PATCH", "DELETE"].contains(&m.to_ascii_uppercase().as_str()));
    let checked_after =
        rule.has_response_policies() || rule.response_owner.as_ref().is_some_and(|o| !o.precheck);
    if writes && checked_after {
        warnings.push(format!(
            "routes[{i}] ({}) checks the answer of writes, after the upstream has made them: set response_owner.precheck = true, or keep response checks on GET routes",
            r.path
        ));
    }
    if r.audit && r.public {
        e.push(
            format!("routes[{i}].audit"),
            "audit records who accessed a route: a public route has no identity to record",
        );
    }
    if r.public && !rule.is_empty() {
        e.push(
            format!("routes[{i}]"),
            "a public route cannot require permissions or ownership",
        );
    }
    if !r.public && r.auth.is_some() && rule.is_empty() {
        warnings.push(format!(
            "routes[{i}] ({}) requires authentication but no permission: any authenticated caller may use it",
            r.path
        ));
    }
    for p in rule.require.iter().chain(&rule.require_any) {
        if !authz.anyone_has(p) {
            warnings.push(format!(
                "routes[{i}] requires {:?}, which no role grants (only a scope can)",
                p.as_string()
            ));
        }
    }
    rule
}

/// `routes[N]` in a message, for N at or past `first`, becomes the label of
/// that route (`apis[0].operations.getUser`).
fn relabel(s: &str, first: usize, labels: &[String]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("routes[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 7..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        let label = after[..digits]
            .parse::<usize>()
            .ok()
            .filter(|_| after[digits..].starts_with(']'))
            .and_then(|n| n.checked_sub(first))
            .and_then(|k| labels.get(k));
        match label {
            Some(l) => {
                out.push_str(l);
                rest = &after[digits + 1..];
            }
            None => {
                out.push_str("routes[");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("invalid listen address {s:?}: expected ip:port such as \"0.0.0.0:8443\"")
    })
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("invalid CIDR {s:?}"))
}

fn parse_upstream_url(s: &str) -> Result<http::uri::Authority, String> {
    let uri: http::Uri = s.parse().map_err(|_| format!("invalid URL {s:?}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{s:?}: only http:// upstreams are supported"));
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!("{s:?}: an upstream URL has no path or query"));
    }
    let a = uri
        .authority()
        .ok_or_else(|| format!("{s:?} has no host"))?;
    if a.as_str().contains('@') {
        return Err(format!(
            "{s:?}: credentials in upstream URLs are not supported"
        ));
    }
    if a.port_u16().is_none() {
        return a
            .as_str()
            .parse::<http::uri::Authority>()
            .and_then(|_| format!("{}:80", a.as_str()).parse())
            .map_err(|_| format!("invalid host in {s:?}"));
    }
    Ok(a.clone())
}

/// A template must be canonical itself once `{params}` are filled in.
fn check_template(t: &str) -> Result<(), String> {
    let filled: String = t
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "x"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    match crate::canon::canonicalize(&filled, usize::MAX) {
        Ok(c) if c == filled => {}
        _ => {
            return Err(format!(
                "{t:?} is not a canonical path template: start with '/'; no '//', '.' or '..' segments, ';', spaces or non-canonical %-escapes"
            ));
        }
    }
    for seg in t.split('/') {
        if (seg.contains('{') || seg.contains('}')) && !(seg.starts_with('{') && seg.ends_with('}'))
        {
            return Err(format!(
                "{t:?}: a parameter must be a whole segment, like /users/{{id}}"
            ));
        }
    }
    Ok(())
}

fn header_value(v: &str, path: &str, e: &mut Errs) -> Option<HeaderValue> {
    if v.is_empty() {
        return None;
    }
    HeaderValue::from_str(v)
        .map_err(|_| e.push(path, format!("invalid header value {v:?}")))
        .ok()
}

fn compile_headers(h: &file::Headers, e: &mut Errs, warnings: &mut Vec<String>) -> SecurityHeaders {
    let hsts = header_value(&h.hsts, "headers.hsts", e);
    if hsts.is_none() {
        warnings.push("headers.hsts is empty: browsers will not be told to use HTTPS only".into());
    }
    let mut always = Vec::new();
    if h.nosniff {
        always.push((
            http::header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ));
    } else {
        warnings.push("headers.nosniff = false: browsers may sniff content types".into());
    }
    for (name, v, path) in [
        (
            http::header::X_FRAME_OPTIONS,
            &h.frame_options,
            "headers.frame_options",
        ),
        (
            http::header::CONTENT_SECURITY_POLICY,
            &h.content_security_policy,
            "headers.content_security_policy",
        ),
        (
            http::header::REFERRER_POLICY,
            &h.referrer_policy,
            "headers.referrer_policy",
        ),
    ] {
        if let Some(v) = header_value(v, path, e) {
            always.push((name, v));
        }
    }
    for (k, v) in &h.set {
        let path = format!("headers.set.{k}");
        match HeaderName::from_bytes(k.as_bytes()) {
            Ok(n) => {
                if let Some(v) = header_value(v, &path, e) {
                    always.push((n, v));
                }
            }
            Err(_) => e.push(path, format!("invalid header name {k:?}")),
        }
    }
    let mut strip_exact = Vec::new();
    let mut strip_prefix = Vec::new();
    for (i, s) in h.strip.iter().enumerate() {
        let lower = s.to_ascii_lowercase();
        if lower == "*" {
            warnings.push(
                "headers.strip contains \"*\": every upstream response header is removed".into(),
            );
        }
        if let Some(p) = lower.strip_suffix('*') {
            strip_prefix.push(p.to_owned());
        } else {
            match HeaderName::from_bytes(lower.as_bytes()) {
                Ok(n) => strip_exact.push(n),
                Err(_) => e.push(
                    format!("headers.strip[{i}]"),
                    format!("invalid header name {s:?}"),
                ),
            }
        }
    }
    SecurityHeaders {
        hsts,
        always,
        no_store: h.no_store,
        strip_exact,
        strip_prefix,
    }
}

fn compile_cors(name: &str, p: &file::CorsPolicy, e: &mut Errs) -> Option<CorsPolicy> {
    let path = |f: &str| format!("cors.policies.{name}.{f}");
    let any_origin = p.allow_origins.iter().any(|o| o == "*");
    if any_origin && p.allow_credentials {
        e.push(
            path("allow_origins"),
            "\"*\" cannot be combined with allow_credentials = true",
        );
    }
    let mut origins = Vec::new();
    for (i, o) in p
        .allow_origins
        .iter()
        .enumerate()
        .filter(|(_, o)| *o != "*")
    {
        match check_origin(o) {
            Ok(v) => origins.push(v),
            Err(m) => e.push(format!("cors.policies.{name}.allow_origins[{i}]"), m),
        }
    }
    let mut methods = Vec::new();
    for m in &p.allow_methods {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => e.push(path("allow_methods"), format!("invalid method {m:?}")),
        }
    }
    let mut headers = Vec::new();
    for h in &p.allow_headers {
        match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
            Ok(n) => headers.push(n),
            Err(_) => e.push(path("allow_headers"), format!("invalid header name {h:?}")),
        }
    }
    let join = |v: Vec<&str>| HeaderValue::from_str(&v.join(", ")).ok();
    let methods_value = join(methods.iter().map(Method::as_str).collect())?;
    let headers_value = if headers.is_empty() {
        None
    } else {
        join(headers.iter().map(HeaderName::as_str).collect())
    };
    for h in &p.expose_headers {
        if HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).is_err() {
            e.push(path("expose_headers"), format!("invalid header name {h:?}"));
        }
    }
    let expose_value = if p.expose_headers.is_empty() {
        None
    } else {
        join(p.expose_headers.iter().map(String::as_str).collect())
    };
    Some(CorsPolicy {
        name: name.to_owned(),
        any_origin,
        origins,
        methods,
        headers,
        methods_value,
        headers_value,
        expose_value,
        credentials: p.allow_credentials,
        max_age: HeaderValue::from(p.max_age.0.as_secs()),
    })
}

fn check_origin(o: &str) -> Result<HeaderValue, String> {
    let lower = o.to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .ok_or_else(|| format!("origin {o:?} must look like \"https://app.example.com\""))?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "origin {o:?} must be scheme://host[:port] with no path or trailing slash"
        ));
    }
    rest.parse::<http::uri::Authority>()
        .map_err(|_| format!("origin {o:?} has an invalid host"))?;
    HeaderValue::from_str(&lower).map_err(|_| format!("invalid origin {o:?}"))
}

fn tls_config(
    cert: &Path,
    key: &Path,
    tls12: bool,
    http2: bool,
) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|err| format!("cannot read certificate {}: {err}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|err| format!("invalid certificate PEM in {}: {err}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|err| format!("cannot read private key {}: {err}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|err| format!("TLS setup failed: {err}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| format!("certificate and key do not work together: {err}"))?;
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|err| format!("TLS ticketer setup failed: {err}"))?;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(check_template("/api/v1/users/{id}").is_ok());
        assert!(check_template("/files/{*rest}").is_ok());
        assert!(check_template("/").is_ok());
        assert!(check_template("api").is_err());
        assert!(check_template("/a//b").is_err());
        assert!(check_template("/a/../b").is_err());
        assert!(check_template("/a/x{id}").is_err());
        assert!(check_template("/a%2Fb").is_err());
    }

    #[test]
    fn origins() {
        assert!(check_origin("https://app.example.com").is_ok());
        assert!(check_origin("http://localhost:3000").is_ok());
        assert!(check_origin("https://app.example.com/").is_err());
        assert!(check_origin("app.example.com").is_err());
        assert!(check_origin("ftp://x").is_err());
    }

    #[test]
    fn upstream_urls() {
        assert!(parse_upstream_url("http://127.0.0.1:3000").is_ok());
        assert_eq!(
            parse_upstream_url("http://app").map(|a| a.to_string()),
            Ok("app:80".into())
        );
        assert!(parse_upstream_url("https://x:1").is_err());
        assert!(parse_upstream_url("http://x:1/path").is_err());
        assert!(parse_upstream_url("http://u:p@x:1").is_err());
    }
}

//! The Redis backend against a real `redis-server` (started here on a free
//! loopback port; `scripts/test.sh` installs it): three gateways sharing one
//! Redis stay within the limit together, an unreachable Redis fails open or
//! closed per limit without adding its timeout to every request, and limits
//! work again when Redis comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A redis-server for one test, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: scripts/test.sh installs it");
        for _ in 0..200 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return Self {
                        child,
                        port,
                        _dir: dir,
                    };
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(redis_port: u16, extra: &str) -> String {
    format!(
        r#"{}
[rate_limit]
backend = "redis"

[redis]
url = "redis://127.0.0.1:{redis_port}"
timeout = "200ms"
breaker_threshold = 2
breaker_cool_down = "300ms"

[rate_limit.limits]
fixed = {{ key = "ip", algorithm = "fixed_window", limit = 20, window = "1h" }}
sliding = {{ key = "ip", algorithm = "sliding_window", limit = 15, window = "1h" }}
bucket = {{ key = "ip", algorithm = "gcra", limit = 10, window = "1h", burst = 5 }}
open = {{ key = "ip", limit = 1000, window = "1m", fail = "open" }}
closed = {{ key = "ip", limit = 1000, window = "1m", fail = "closed" }}

[[routes]]
path = "/fixed"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["fixed"]

[[routes]]
path = "/sliding"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["sliding"]

[[routes]]
path = "/bucket"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["bucket"]

[[routes]]
path = "/open"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["open"]

[[routes]]
path = "/closed"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["closed"]
{extra}
"#,
        base_config("", "behind_tls_proxy")
    )
}

async fn get(gw: &Gateway, path: &str) -> Raw {
    let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
    raw(gw.http(), req.as_bytes()).await
}

#[tokio::test]
async fn three_instances_share_one_limit() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(
            Gateway::start_raw(&up, &config(redis.port, ""))
                .await
                .unwrap(),
        );
    }
    for (path, limit) in [("/fixed", 20), ("/sliding", 15), ("/bucket", 5)] {
        // 90 concurrent requests for one key (one client address), spread
        // over the three instances
        let mut tasks = Vec::new();
        for i in 0..90usize {
            let addr = gws[i % 3].http();
            let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
            tasks.push(tokio::spawn(async move {
                raw(addr, req.as_bytes()).await.status
            }));
        }
        let mut ok = 0;
        let mut limited = 0;
        for t in tasks {
            match t.await.unwrap() {
                200 => ok += 1,
                429 => limited += 1,
                s => panic!("{path}: unexpected status {s}"),
            }
        }
        assert_eq!(ok, limit, "{path}: accepted {ok}, limit {limit}");
        assert_eq!(limited, 90 - limit);
    }
    // the headers come from the shared count
    let r = get(&gws[1], "/fixed").await;
    assert_problem(&r, 429, "rate-limited");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
}

#[tokio::test]
async fn unreachable_redis_fails_open_or_closed_and_fast() {
    // A server that accepts connections and never answers: every call
    // would wait for the timeout, were it not for the circuit breaker.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let up = Upstream::start().await;
    let gw = Gateway::start_raw(&up, &config(port, "")).await.unwrap();
    // fail open: the request passes (without rate-limit headers)
    let r = get(&gw, "/open").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-limit").is_none());
    // fail closed: 503, never 429 (the client did nothing wrong)
    let r = get(&gw, "/closed").await;
    assert_problem(&r, 503, "limiter-unavailable");
    assert_eq!(r.header("retry-after"), Some("2"));
    // the circuit is open now: further requests do not wait 200 ms each
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(get(&gw, "/open").await.status, 200);
        assert_eq!(get(&gw, "/closed").await.status, 503);
    }
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "20 requests took {:?}: the breaker did not open",
        t.elapsed()
    );
}

#[tokio::test]
async fn limits_work_again_when_redis_comes_back() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let up = Upstream::start().await;
    let gw = Gateway::start_raw(&up, &config(port, "")).await.unwrap();
    let r = get(&gw, "/closed").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("999"));
    redis.stop();
    assert_eq!(get(&gw, "/closed").await.status, 503);
    assert_eq!(get(&gw, "/open").await.status, 200);
    let _redis = RedisServer::start_on(port);
    // after the cool-down, one trial closes the circuit again; the new
    // Redis starts from zero (and gets the script again)
    let mut back = false;
    for _ in 0..50 {
        let r = get(&gw, "/closed").await;
        if r.status == 200 {
            assert_eq!(r.header("x-ratelimit-remaining"), Some("999"));
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "limits did not recover when redis came back");
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

fn sha256_hex(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn auth_config(redis_port: u16) -> String {
    format!(
        r#"{}
[redis]
url = "redis://127.0.0.1:{redis_port}"
timeout = "200ms"
breaker_threshold = 2
breaker_cool_down = "300ms"

[admin]
listen = "127.0.0.1:0"
token_sha256 = "{}"

[auth.sessions]
issue = ["cookie", "tokens"]

[auth.tokens]
issuer = "https://gw.test"
audience = "gw-api"
signing_keys = [{{ kid = "k1", file = "k1.pem" }}]

[auth.api_keys]
hash_secret_file = "key-secret"

[[routes]]
path = "/me"
methods = ["GET"]
upstream = "app"
auth = ["session"]

[[routes]]
path = "/reports"
methods = ["GET"]
upstream = "app"
auth = ["api_key"]
"#,
        base_config("", "behind_tls_proxy"),
        sha256_hex(ADMIN_TOKEN)
    )
}

async fn send(gw: &Gateway, method: &str, path: &str, headers: &str, body: &str) -> Raw {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.test\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(gw.http(), req.as_bytes()).await
}

async fn admin(gw: &Gateway, method: &str, path: &str) -> Raw {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw(gw.admin.unwrap(), req.as_bytes()).await
}

const JSON: &str = "Content-Type: application/json\r\n";

/// Creates an API key on `on` (CLI) and copies its record into the stores
/// of `also`: key records are per store. Returns the key and its id.
fn shared_key(on: &Gateway, also: &[&Gateway], name: &str) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["keys", "create", "--config"])
        .arg(&on.config)
        .args(["--owner", "svc", "--name", name, "--scopes", "reports:read"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (key, id) = (
        v["key"].as_str().unwrap().to_string(),
        v["record"]["id"].as_str().unwrap().to_string(),
    );
    let store = |gw: &Gateway| {
        portcullis::store::Store::open(&gw.dir.path().join("portcullis.db")).unwrap()
    };
    let record = store(on).key_get(&id).unwrap().unwrap();
    for gw in also {
        store(gw).key_insert(&record).unwrap();
    }
    (key, id)
}

/// Three gateways, each with its own SQLite store, share one Redis: a
/// session opened on one works on all, and ends on all at once; a refresh
/// token is spent once across all of them; a key revoked on one is refused
/// by the others on the very next request.
#[tokio::test]
async fn logout_and_revocation_on_one_instance_hold_on_all() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let signing = portcullis::authn::tokens::new_signing_key().unwrap();
    let files = [
        ("k1.pem", signing.as_str()),
        ("key-secret", "0123456789abcdef0123456789abcdef-shared"),
    ];
    let mut gws = Vec::new();
    for _ in 0..3 {
        let gw = Gateway::start_raw_with(&up, &auth_config(redis.port), &files)
            .await
            .unwrap();
        // users live in each instance's store
        add_user(&gw, "alice", "alices long password", "user");
        add_user(&gw, "bob", "bobs long password", "user");
        gws.push(gw);
    }
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    let creds = |u: &str, p: &str| serde_json::json!({"username": u, "password": p}).to_string();

    // --- sessions: login on A, use on B and C, logout on C
    let r = send(
        a,
        "POST",
        "/auth/login",
        JSON,
        &creds("alice", "alices long password"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let with_cookie = format!("Cookie: {cookie}\r\n");
    for gw in [a, b, c] {
        assert_eq!(send(gw, "GET", "/me", &with_cookie, "").await.status, 200);
    }
    assert_eq!(
        send(c, "POST", "/auth/logout", &with_cookie, "")
            .await
            .status,
        204
    );
    for gw in [a, b, c] {
        let r = send(gw, "GET", "/me", &with_cookie, "").await;
        assert_problem(&r, 401, "unauthenticated");
    }

    // --- refresh tokens: spent on B; the same token again on A is reuse,
    // which revokes the family: B's fresh token dies on C too
    let body = serde_json::json!({ "refresh_token": refresh }).to_string();
    let r = send(b, "POST", "/auth/refresh", JSON, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let next = r.json()["refresh_token"].as_str().unwrap().to_string();
    let r = send(a, "POST", "/auth/refresh", JSON, &body).await;
    assert_eq!(r.status, 401, "a spent refresh token was accepted again");
    let next_body = serde_json::json!({ "refresh_token": next }).to_string();
    let r = send(c, "POST", "/auth/refresh", JSON, &next_body).await;
    assert_eq!(r.status, 401, "the family survived a reuse");

    // logout with a refresh token on A ends its family on B
    let r = send(
        a,
        "POST",
        "/auth/login",
        JSON,
        &creds("alice", "alices long password"),
    )
    .await;
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_string();
    let body = serde_json::json!({ "refresh_token": refresh }).to_string();
    assert_eq!(
        send(a, "POST", "/auth/logout", JSON, &body).await.status,
        204
    );
    assert_eq!(
        send(b, "POST", "/auth/refresh", JSON, &body).await.status,
        401
    );

    // --- disabling a user on one instance ends their sessions everywhere
    let r = send(
        b,
        "POST",
        "/auth/login",
        JSON,
        &creds("bob", "bobs long password"),
    )
    .await;
    let bob = format!(
        "Cookie: {}\r\n",
        r.header("set-cookie").unwrap().split(';').next().unwrap()
    );
    assert_eq!(send(c, "GET", "/me", &bob, "").await.status, 200);
    assert_eq!(admin(a, "POST", "/users/bob/disable").await.status, 204);
    assert_eq!(send(c, "GET", "/me", &bob, "").await.status, 401);

    // --- API keys: created on A, its record copied to B's and C's stores
    // (records are per store; revocations are shared)
    let (key, id) = shared_key(a, &[b, c], "n");
    let with_key = format!("X-Api-Key: {key}\r\n");
    for gw in [a, b, c] {
        assert_eq!(send(gw, "GET", "/reports", &with_key, "").await.status, 200);
    }
    assert_eq!(
        admin(b, "POST", &format!("/keys/{id}/revoke")).await.status,
        204
    );
    for gw in [a, b, c] {
        let r = send(gw, "GET", "/reports", &with_key, "").await;
        assert_problem(&r, 401, "unauthenticated");
    }
    // a key revoked through the CLI on C is refused on A as well
    let (key2, id2) = shared_key(c, &[a], "m");
    let with_key2 = format!("X-Api-Key: {key2}\r\n");
    assert_eq!(send(a, "GET", "/reports", &with_key2, "").await.status, 200);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["keys", "revoke", "--config"])
        .arg(&c.config)
        .arg(&id2)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(send(a, "GET", "/reports", &with_key2, "").await.status, 401);
}

/// Sessions are never accepted unchecked: with Redis gone, a session or API
/// key answers 503 (retry), not 200 and not 401.
#[tokio::test]
async fn credentials_are_not_accepted_unchecked_when_redis_is_down() {
    let mut redis = RedisServer::start();
    let up = Upstream::start().await;
    let signing = portcullis::authn::tokens::new_signing_key().unwrap();
    let gw = Gateway::start_raw_with(
        &up,
        &auth_config(redis.port),
        &[
            ("k1.pem", signing.as_str()),
            ("key-secret", "0123456789abcdef0123456789abcdef-shared"),
        ],
    )
    .await
    .unwrap();
    add_user(&gw, "alice", "alices long password", "user");
    let creds =
        serde_json::json!({"username": "alice", "password": "alices long password"}).to_string();
    let r = send(&gw, "POST", "/auth/login", JSON, &creds).await;
    let cookie = format!(
        "Cookie: {}\r\n",
        r.header("set-cookie").unwrap().split(';').next().unwrap()
    );
    assert_eq!(send(&gw, "GET", "/me", &cookie, "").await.status, 200);
    redis.stop();
    let r = send(&gw, "GET", "/me", &cookie, "").await;
    assert_problem(&r, 503, "auth-state-unavailable");
    assert_eq!(r.header("retry-after"), Some("2"));
    let r = send(&gw, "POST", "/auth/login", JSON, &creds).await;
    assert_problem(&r, 503, "auth-state-unavailable");
    assert!(r.header("set-cookie").is_none());
}

/// Login failures spread over three instances add up in Redis: the account
/// locks on all of them at once (for that address), with the generic 429.
#[tokio::test]
async fn login_lockout_counts_failures_across_instances() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let signing = portcullis::authn::tokens::new_signing_key().unwrap();
    let cfg = format!(
        "{}\n[rate_limit]\nbackend = \"redis\"\n\n[rate_limit.login]\nmax_failures = 3\nlockout = \"1m\"\n",
        auth_config(redis.port)
    );
    let files = [
        ("k1.pem", signing.as_str()),
        ("key-secret", "0123456789abcdef0123456789abcdef-shared"),
    ];
    let mut gws = Vec::new();
    for _ in 0..3 {
        let gw = Gateway::start_raw_with(&up, &cfg, &files).await.unwrap();
        add_user(&gw, "alice", "alices long password", "user");
        gws.push(gw);
    }
    let wrong =
        serde_json::json!({"username": "alice", "password": "not her password"}).to_string();
    let right =
        serde_json::json!({"username": "ALICE", "password": "alices long password"}).to_string();
    for gw in &gws {
        assert_eq!(
            send(gw, "POST", "/auth/login", JSON, &wrong).await.status,
            401
        );
    }
    for gw in &gws {
        // locked everywhere, even with the right password (and another case)
        let r = send(gw, "POST", "/auth/login", JSON, &right).await;
        assert_problem(&r, 429, "rate-limited");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "retry-after {retry}");
    }
    // counted for the admin API's metrics: the third failure (on the third
    // instance) started the lock; each instance refused one login
    let m = admin(&gws[2], "GET", "/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    assert!(
        text.contains("portcullis_login_lockouts_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_rate_limited_total{route=\"login\",limit=\"login lockout\",key_type=\"account+ip\",outcome=\"limited\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("portcullis_redis_circuit_open 0\n"), "{text}");
}

/// A concurrency limit counts in-flight requests of all instances, and a
/// slot comes back when its request is done.
#[tokio::test]
async fn concurrency_limits_hold_across_instances() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let cfg = config(
        redis.port,
        r#"
[[routes]]
name = "report"
path = "/slowreport"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = [{ key = "route", algorithm = "concurrency", limit = 2 }]
"#,
    );
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Gateway::start_raw(&up, &cfg).await.unwrap());
    }
    // the support upstream sleeps 3 s on /slow*: two requests on A and B
    // hold both slots
    let mut slow = Vec::new();
    for gw in &gws[..2] {
        let addr = gw.http();
        slow.push(tokio::spawn(async move {
            raw(
                addr,
                b"GET /slowreport HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
            )
            .await
            .status
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = get(&gws[2], "/slowreport").await;
    assert_problem(&r, 429, "rate-limited");
    for t in slow {
        assert_eq!(t.await.unwrap(), 200);
    }
    // both slots are back (given back off the request path: allow a moment)
    let mut back = false;
    for _ in 0..20 {
        let addr = gws[2].http();
        let t = tokio::spawn(async move {
            raw(
                addr,
                b"GET /slowreport HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
            )
            .await
            .status
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        if t.is_finished() {
            // refused at once: not back yet
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        t.abort();
        back = true;
        break;
    }
    assert!(back, "the slots did not come back");
}

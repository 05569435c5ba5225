//! Rate limiting against the real gateway: 429 with every header and a
//! correct Retry-After, keys that a client cannot spoof, IPv6 grouping,
//! login lockout with generic answers, failure-only counting, flow quotas,
//! concurrency limits and per-user limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::*;

async fn get_with(gw: &Gateway, path: &str, extra: &str) -> Raw {
    let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n{extra}Connection: close\r\n\r\n");
    raw(gw.http(), req.as_bytes()).await
}

const LIMITED: &str = r#"
[rate_limit.limits]
per_ip = { key = "ip", algorithm = "fixed_window", limit = 3, window = "1m" }

[[routes]]
name = "limited"
path = "/limited/{id}"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["per_ip"]
"#;

#[tokio::test]
async fn over_the_limit_is_429_with_every_header() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, LIMITED).await;
    for left in [2, 1, 0] {
        let r = get_with(&gw, "/limited/1", "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
        assert_eq!(r.header("ratelimit-policy"), Some("\"per_ip\";q=3;w=60"));
        let rl = r.header("ratelimit").unwrap();
        assert!(rl.starts_with(&format!("\"per_ip\";r={left};t=")), "{rl}");
    }
    let r = get_with(&gw, "/limited/2", "").await;
    assert_problem(&r, 429, "rate-limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
    let now = now_s();
    assert!(reset >= now && reset <= now + 61, "{reset} vs {now}");
    // the window ends when Retry-After says (same second, give or take one)
    assert!(reset.abs_diff(now + retry) <= 1, "{reset} {now} {retry}");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("ratelimit").unwrap().contains(";r=0;"));
    assert_eq!(up.count(), 3, "the refused request reached the upstream");
    // routes without limits carry no rate-limit headers
    let r = get_with(&gw, "/api/v1/users/1", "").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-limit").is_none() && r.header("ratelimit").is_none());
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, LIMITED).await;
    for i in 0..3 {
        let r = get_with(
            &gw,
            "/limited/1",
            &format!("X-Forwarded-For: 198.51.100.{i}\r\n"),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = get_with(&gw, "/limited/1", "X-Forwarded-For: 198.51.100.77\r\n").await;
    assert_problem(&r, 429, "rate-limited");
}

#[tokio::test]
async fn behind_a_trusted_proxy_clients_are_keyed_apart_and_ipv6_by_64() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}{}",
        base_config("trusted_proxies = [\"127.0.0.1/32\"]", "behind_tls_proxy"),
        ROUTES,
        LIMITED
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    for _ in 0..3 {
        assert_eq!(
            get_with(&gw, "/limited/1", &xff("198.51.100.1"))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        get_with(&gw, "/limited/1", &xff("198.51.100.1"))
            .await
            .status,
        429
    );
    // another client is not limited by the first one
    assert_eq!(
        get_with(&gw, "/limited/1", &xff("198.51.100.2"))
            .await
            .status,
        200
    );
    // one IPv6 /64 is one client, however many addresses it uses
    for host in ["1", "2", "ffff:1"] {
        let r = get_with(&gw, "/limited/1", &xff(&format!("2001:db8:1:2::{host}"))).await;
        assert_eq!(r.status, 200, "{host}");
    }
    let r = get_with(&gw, "/limited/1", &xff("2001:db8:1:2:dead:beef::9")).await;
    assert_eq!(r.status, 429);
    // the next /64 is someone else
    assert_eq!(
        get_with(&gw, "/limited/1", &xff("2001:db8:1:3::1"))
            .await
            .status,
        200
    );
}

async fn login(gw: &Gateway, user: &str, password: &str) -> Raw {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    let req = format!(
        "POST /auth/login HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(gw.http(), req.as_bytes()).await
}

#[tokio::test]
async fn login_locks_after_five_failures_with_generic_answers() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}{}",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        r#"
[log]
audit = "audit.log"

[auth.sessions]

[rate_limit.login]
max_failures = 5
max_failures_per_ip = 16
window = "15m"
lockout = "2s"
"#
    );
    let cfg = cfg
        .replacen("[log]\naccess = \"access.log\"\nlevel = \"warn\"\n", "", 1)
        .replace(
            "[log]\naudit = \"audit.log\"",
            "[log]\naccess = \"access.log\"\naudit = \"audit.log\"\nlevel = \"warn\"",
        );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    add_user(&gw, "alice", "correct horse battery", "user");
    for _ in 0..5 {
        assert_problem(&login(&gw, "alice", "wrong").await, 401, "login-failed");
    }
    // locked for this address: even the right password is not checked
    let r = login(&gw, "alice", "correct horse battery").await;
    assert_problem(&r, 429, "rate-limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // other accounts are not locked; unknown accounts lock exactly the same
    assert_eq!(login(&gw, "bob", "x").await.status, 401);
    for _ in 0..4 {
        assert_eq!(login(&gw, "nobody", "x").await.status, 401);
    }
    assert_eq!(login(&gw, "nobody", "x").await.status, 401);
    assert_eq!(login(&gw, "nobody", "x").await.status, 429);
    // after the lock, the right password works and clears the count
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        login(&gw, "alice", "correct horse battery").await.status,
        200
    );
    for _ in 0..4 {
        assert_eq!(login(&gw, "alice", "wrong").await.status, 401);
    }
    assert_eq!(
        login(&gw, "alice", "correct horse battery").await.status,
        200
    );
    // the address: 16 failures over any accounts (5 + 1 + 5 + 4 so far)
    // lock it for everyone
    for i in 0..1 {
        assert_eq!(login(&gw, &format!("spray{i}"), "x").await.status, 401);
    }
    let r = login(&gw, "carol", "x").await;
    assert_problem(&r, 429, "rate-limited");
    let audit = std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap_or_default();
    assert!(audit.contains(r#""outcome":"locked""#), "{audit}");
    assert!(audit.contains(r#""event":"login_lockout""#), "{audit}");
    assert!(
        !audit.contains("correct horse"),
        "a password in the audit log"
    );
}

#[tokio::test]
async fn failure_only_limits_skip_successful_requests() {
    let up = Upstream::start().await;
    // one limit on two routes: successes never count, failures do
    let gw = Gateway::start(
        &up,
        r#"
[rate_limit.limits]
guesses = { key = "ip", limit = 2, window = "1m", count = "failures" }

[[routes]]
name = "lookup"
path = "/lookup/{*rest}"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["guesses"]

[[routes]]
name = "failing"
path = "/errors/{*rest}"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["guesses"]
"#,
    )
    .await;
    for _ in 0..10 {
        let r = get_with(&gw, "/lookup/ok", "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-remaining"), Some("2"));
    }
    // the support upstream answers 500 for paths starting with /error
    for _ in 0..2 {
        assert!(get_with(&gw, "/errors/x", "").await.status >= 500);
    }
    let r = get_with(&gw, "/lookup/ok", "").await;
    assert_problem(&r, 429, "rate-limited");
}

#[tokio::test]
async fn flow_quotas_are_long_windows_on_one_route() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &up,
        r#"
[[routes]]
name = "signup"
path = "/signup"
public = true
methods = ["POST"]
upstream = "app"
rate_limits = [{ key = "ip", algorithm = "fixed_window", limit = 3, window = "1h" }]
"#,
    )
    .await;
    let post = || async {
        let req = b"POST /signup HTTP/1.1\r\nHost: api.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        raw(gw.http(), req).await
    };
    for _ in 0..3 {
        assert_eq!(post().await.status, 200);
    }
    let r = post().await;
    assert_problem(&r, 429, "rate-limited");
    // the fixed hour window ends on the hour (epoch-aligned): Retry-After
    // is the time until then, whatever minute the test runs in
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    let until_hour = 3600 - now_s() % 3600;
    assert!(
        (1..=3600).contains(&retry) && retry.abs_diff(until_hour) <= 1,
        "{retry} vs {until_hour}"
    );
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"routes[6].rate_limits[0]\";q=3;w=3600")
    );
}

#[tokio::test]
async fn concurrency_limits_hold_a_slot_until_the_answer_is_done() {
    let up = Upstream::start().await;
    let gw = Gateway::start(
        &up,
        r#"
[[routes]]
name = "report"
path = "/slowreport"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = [{ key = "ip", algorithm = "concurrency", limit = 1 }]
"#,
    )
    .await;
    // the support upstream sleeps 3 s on paths starting with /slow
    let addr = gw.http();
    let first = tokio::spawn(async move {
        raw(
            addr,
            b"GET /slowreport HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get_with(&gw, "/slowreport", "").await;
    assert_problem(&r, 429, "rate-limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    // a client that goes away gives its slot back too
    first.abort();
    let _ = first.await;
    let mut freed = false;
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(b"GET /slowreport HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        let got = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf),
        )
        .await;
        match got {
            // still refused: the first slot is not back yet
            Ok(Ok(_)) if &buf[9..12] == b"429" => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // no answer within 200 ms: this one holds the slot (upstream sleeps)
            Err(_) => {
                freed = true;
                break;
            }
            other => panic!("unexpected {other:?} {:?}", String::from_utf8_lossy(&buf)),
        }
    }
    assert!(freed, "the aborted request's slot was never given back");
}

#[tokio::test]
async fn per_user_limits_run_after_authentication() {
    let up = Upstream::start().await;
    let secret = "an-hmac-secret-of-at-least-32-bytes!";
    let cfg = format!(
        "{}{}",
        base_config("", "behind_tls_proxy"),
        r#"
[auth.jwt]
[[auth.jwt.issuers]]
issuer = "https://idp.test"
audiences = ["api"]
algorithms = ["HS256"]
secret_file = "jwt-secret"

[rate_limit]
default = ["per_user"]

[rate_limit.limits]
per_user = { key = "user", algorithm = "gcra", limit = 60, window = "1m", burst = 2 }

[[routes]]
name = "me"
path = "/me"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
"#
    );
    let gw = Gateway::start_raw_with(&up, &cfg, &[("jwt-secret", secret)])
        .await
        .unwrap();
    let token = |sub: &str| {
        let c = serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": sub, "exp": now_s() + 600});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let (a, b) = (token("u-a"), token("u-b"));
    let auth = |t: &str| format!("Authorization: Bearer {t}\r\n");
    assert_eq!(get_with(&gw, "/me", &auth(&a)).await.status, 200);
    assert_eq!(get_with(&gw, "/me", &auth(&a)).await.status, 200);
    let r = get_with(&gw, "/me", &auth(&a)).await;
    assert_problem(&r, 429, "rate-limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    // another user has their own bucket
    assert_eq!(get_with(&gw, "/me", &auth(&b)).await.status, 200);
    // unauthenticated requests are refused by authentication, not counted
    for _ in 0..5 {
        assert_eq!(get_with(&gw, "/me", "").await.status, 401);
    }
    // GCRA refills one per second
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_with(&gw, "/me", &auth(&a)).await.status, 200);
}

#[tokio::test]
async fn rate_limit_config_errors_name_their_path() {
    let up = Upstream::start().await;
    let bad = r#"
[rate_limit]
default = ["nope"]
headers = ["x-ratelimit", "draft-7"]

[rate_limit.limits]
a = { key = "cookie", limit = 1, window = "1m" }
b = { key = "ip", algorithm = "leaky", limit = 1, window = "1m" }
c = { key = "ip", limit = 1 }
d = { key = "ip", algorithm = "concurrency", limit = 1, window = "1m" }
e = { key = "ip", limit = 1, window = "1m", burst = 5 }

[[routes]]
path = "/x"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["missing", { key = "ip", limit = 0, window = "1s" }]
"#;
    let cfg = format!("{}{}", base_config("", "behind_tls_proxy"), bad);
    let err = match Gateway::start_raw(&up, &cfg).await {
        Ok(_) => panic!("compiled"),
        Err(e) => e,
    };
    for path in [
        "rate_limit.default[0]",
        "rate_limit.headers[1]",
        "rate_limit.limits.a.key",
        "rate_limit.limits.b.algorithm",
        "rate_limit.limits.c.window",
        "rate_limit.limits.d.window",
        "rate_limit.limits.e.burst",
        "routes[0].rate_limits[0]",
        "routes[0].rate_limits[1].limit",
    ] {
        assert!(err.contains(path), "{path} missing in: {err}");
    }
}

/// A CEL key: one bucket per tenant claim, whoever the user. A request
/// whose expression fails (no tenant) does not escape: such requests share
/// one bucket. Each refusal is an audit event with the key's type, never
/// its value.
#[tokio::test]
async fn cel_keys_group_by_an_expression_and_refusals_are_audited() {
    let up = Upstream::start().await;
    let secret = "an-hmac-secret-of-at-least-32-bytes!";
    let cfg = format!(
        "{}{HS256_ISSUER}{}",
        base_config("", "behind_tls_proxy").replace(
            "level = \"warn\"",
            "level = \"warn\"\naudit = \"audit.log\""
        ),
        r#"
[rate_limit.limits]
per_tenant = { key = "cel:identity.claims.tenant + ':' + request.method", algorithm = "fixed_window", limit = 2, window = "1h" }

[[routes]]
name = "me"
path = "/me"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
rate_limits = ["per_tenant"]
"#
    );
    let gw = Gateway::start_raw_with(&up, &cfg, &[("jwt-secret", secret)])
        .await
        .unwrap();
    let token = |sub: &str, tenant: Option<&str>| {
        let mut c = serde_json::json!({ "sub": sub });
        if let Some(t) = tenant {
            c["tenant"] = t.into();
        }
        format!("Authorization: Bearer {}\r\n", hs256_token(secret, c))
    };
    // two users of tenant acme share two requests
    assert_eq!(
        get_with(&gw, "/me", &token("u-a", Some("acme")))
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(&gw, "/me", &token("u-b", Some("acme")))
            .await
            .status,
        200
    );
    let r = get_with(&gw, "/me", &token("u-a", Some("acme"))).await;
    assert_problem(&r, 429, "rate-limited");
    // another tenant has its own
    assert_eq!(
        get_with(&gw, "/me", &token("u-c", Some("globex")))
            .await
            .status,
        200
    );
    // no tenant: the expression fails; those requests share one bucket
    assert_eq!(get_with(&gw, "/me", &token("u-d", None)).await.status, 200);
    assert_eq!(get_with(&gw, "/me", &token("u-e", None)).await.status, 200);
    assert_eq!(get_with(&gw, "/me", &token("u-f", None)).await.status, 429);
    // the refusals are audit events: route, limit, key type; no key value
    let path = gw.dir.path().join("audit.log");
    let mut events = Vec::new();
    for _ in 0..50 {
        events = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "rate_limited")
            .collect();
        if events.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!(e["route"], "me");
        assert_eq!(e["limit"], "per_tenant");
        assert_eq!(e["key_type"], "cel");
        assert!(!e.to_string().contains("acme"), "{e}");
    }
    assert_eq!(events[0]["subject"], "u-a");

    // keys that cannot work are load errors with their path
    for (key, needle) in [
        ("cel:identity.claims.tenant +", "invalid CEL"),
        ("cel:response.status", "cannot use response"),
        ("cel:secrets.x", "unknown variable"),
    ] {
        let bad = format!(
            "{}\n[rate_limit.limits]\nx = {{ key = {key:?}, limit = 1, window = \"1m\" }}\n",
            base_config("", "behind_tls_proxy")
        );
        let err = match Gateway::start_raw(&up, &bad).await {
            Ok(_) => panic!("{key} compiled"),
            Err(e) => e,
        };
        assert!(
            err.contains("rate_limit.limits.x.key") && err.contains(needle),
            "{key}: {err}"
        );
    }
}

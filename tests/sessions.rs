//! Users, login, sessions and logout against the real gateway and CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::*;

fn sessions_cfg(idle: &str, absolute: &str) -> String {
    format!(
        r#"
[auth.sessions]
idle_timeout = "{idle}"
absolute_timeout = "{absolute}"

[[routes]]
path = "/me"
methods = ["GET"]
upstream = "app"
auth = ["session"]

[[routes]]
path = "/notes"
methods = ["POST"]
upstream = "app"
auth = ["session"]
"#
    )
}

async fn start(up: &Upstream, idle: &str, absolute: &str) -> Gateway {
    let cfg = format!(
        "{}{}{}",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        sessions_cfg(idle, absolute)
    );
    Gateway::start_raw(up, &cfg).await.unwrap()
}

async fn login(gw: &Gateway, user: &str, password: &str) -> Raw {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    let req = format!(
        "POST /auth/login HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(gw.http(), req.as_bytes()).await
}

/// The `name=value` pair from a Set-Cookie header.
fn cookie_of(r: &Raw) -> String {
    r.header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

async fn post_notes(gw: &Gateway, cookie: &str, extra: &str) -> Raw {
    let req = format!(
        "POST /notes HTTP/1.1\r\nHost: api.test\r\nCookie: {cookie}\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    raw(gw.http(), req.as_bytes()).await
}

#[tokio::test]
async fn login_sets_a_hardened_cookie_and_logout_ends_the_session_at_once() {
    let up = Upstream::start().await;
    let gw = start(&up, "30m", "12h").await;
    add_user(&gw, "alice", "correct horse battery", "user,editor");
    let r = login(&gw, "alice", "correct horse battery").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").unwrap();
    for attr in [
        "__Host-portcullis=",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=43200",
    ] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let user_id = r.json()["user"]["id"].as_str().unwrap().to_string();
    assert!(!r.text().contains("password"));
    let cookie = cookie_of(&r);
    let me = get(
        gw.http(),
        "/me",
        &format!("Cookie: theme=dark; {cookie}\r\n"),
    )
    .await;
    assert_eq!(me.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-portcullis-user"], user_id.as_str());
    assert_eq!(seen.headers["x-portcullis-auth"], "session");
    assert_eq!(seen.headers["x-portcullis-roles"], "user,editor");
    // every login makes a new session id
    let again = cookie_of(&login(&gw, "alice", "correct horse battery").await);
    assert_ne!(again, cookie);
    // logout: the very next request with the same cookie is refused
    let req = format!(
        "POST /auth/logout HTTP/1.1\r\nHost: api.test\r\nOrigin: https://api.test\r\nCookie: {cookie}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let out = raw(gw.http(), req.as_bytes()).await;
    assert_eq!(out.status, 204);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_problem(
        &get(gw.http(), "/me", &format!("Cookie: {cookie}\r\n")).await,
        401,
        "unauthenticated",
    );
    // the other session is untouched
    assert_eq!(
        get(gw.http(), "/me", &format!("Cookie: {again}\r\n"))
            .await
            .status,
        200
    );
    // a made-up or malformed session id is refused, not echoed
    for bad in [
        "__Host-portcullis=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "__Host-portcullis=x",
    ] {
        let r = get(gw.http(), "/me", &format!("Cookie: {bad}\r\n")).await;
        assert_problem(&r, 401, "unauthenticated");
        assert!(!r.text().contains("AAAA"));
    }
}

#[tokio::test]
async fn login_failures_look_the_same_and_take_comparable_time() {
    let up = Upstream::start().await;
    let gw = start(&up, "30m", "12h").await;
    add_user(&gw, "bob", "bobs secret words", "user");
    add_user(&gw, "dora", "doras secret words", "user");
    let (ok, out) = users_cli(&gw, &["disable", "dora"], "");
    assert!(ok, "{out}");
    let mut bodies = Vec::new();
    let mut times = Vec::new();
    for (u, p) in [
        ("nobody", "whatever pass"),
        ("bob", "wrong password"),
        ("dora", "doras secret words"),
    ] {
        let t = Instant::now();
        let r = login(&gw, u, p).await;
        times.push(t.elapsed());
        assert_problem(&r, 401, "login-failed");
        assert!(r.header("set-cookie").is_none());
        let mut v = r.json();
        v.as_object_mut().unwrap().remove("instance");
        bodies.push(v.to_string());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    // unknown users are checked against a dummy hash: no fast path
    let (min, max) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    assert!(
        max.as_secs_f64() < min.as_secs_f64() * 3.0,
        "timings differ: {times:?}"
    );
    // the right password still works for bob
    assert_eq!(login(&gw, "bob", "bobs secret words").await.status, 200);
}

#[tokio::test]
async fn cookie_writes_need_the_same_origin() {
    let up = Upstream::start().await;
    let gw = start(&up, "30m", "12h").await;
    add_user(&gw, "carol", "carols secret words", "admin");
    let cookie = cookie_of(&login(&gw, "carol", "carols secret words").await);
    for extra in [
        "",
        "Origin: https://evil.example\r\n",
        "Origin: http://api.test\r\n",
        "Sec-Fetch-Site: cross-site\r\n",
    ] {
        let r = post_notes(&gw, &cookie, extra).await;
        assert_problem(&r, 403, "csrf");
    }
    assert_eq!(
        post_notes(&gw, &cookie, "Origin: https://api.test\r\n")
            .await
            .status,
        200
    );
    assert_eq!(
        post_notes(&gw, &cookie, "Sec-Fetch-Site: same-origin\r\n")
            .await
            .status,
        200
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn sessions_end_on_idle_and_absolute_timeouts() {
    // timeouts are kept to the second: idle 2 s, absolute 4 s
    let up = Upstream::start().await;
    let gw = start(&up, "2s", "4s").await;
    add_user(&gw, "erin", "erins secret words", "user");
    let idle = cookie_of(&login(&gw, "erin", "erins secret words").await);
    let busy = cookie_of(&login(&gw, "erin", "erins secret words").await);
    // `busy` is used every 0.5 s; `idle` is not
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            get(gw.http(), "/me", &format!("Cookie: {busy}\r\n"))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        get(gw.http(), "/me", &format!("Cookie: {idle}\r\n"))
            .await
            .status,
        401,
        "idle session survived"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        get(gw.http(), "/me", &format!("Cookie: {busy}\r\n"))
            .await
            .status,
        401,
        "absolute timeout ignored"
    );
}

#[tokio::test]
async fn disabling_or_changing_the_password_ends_sessions() {
    let up = Upstream::start().await;
    let gw = start(&up, "30m", "12h").await;
    add_user(&gw, "frank", "franks secret words", "user");
    let c1 = cookie_of(&login(&gw, "frank", "franks secret words").await);
    let (ok, out) = users_cli(&gw, &["passwd", "frank"], "a brand new passphrase\n");
    assert!(ok, "{out}");
    assert_eq!(
        get(gw.http(), "/me", &format!("Cookie: {c1}\r\n"))
            .await
            .status,
        401
    );
    assert_eq!(login(&gw, "frank", "franks secret words").await.status, 401);
    let c2 = cookie_of(&login(&gw, "frank", "a brand new passphrase").await);
    assert_eq!(
        get(gw.http(), "/me", &format!("Cookie: {c2}\r\n"))
            .await
            .status,
        200
    );
    let (ok, _) = users_cli(&gw, &["disable", "frank"], "");
    assert!(ok);
    assert_eq!(
        get(gw.http(), "/me", &format!("Cookie: {c2}\r\n"))
            .await
            .status,
        401
    );
    let (ok, list) = users_cli(&gw, &["list"], "");
    assert!(ok && list.contains("frank") && !list.contains("argon2"));
    let (ok, _) = users_cli(&gw, &["add", "--username", "frank"], "another password\n");
    assert!(!ok, "duplicate username accepted");
    let (ok, _) = users_cli(&gw, &["add", "--username", "gina"], "short\n");
    assert!(!ok, "a 5-byte password was accepted");
}

#[tokio::test]
async fn login_endpoint_rejects_bad_input_clearly() {
    let up = Upstream::start().await;
    let gw = start(&up, "30m", "12h").await;
    let r = get(gw.http(), "/auth/login", "").await;
    assert_problem(&r, 405, "method-not-allowed");
    assert_eq!(r.header("allow"), Some("POST"));
    let send = |ctype: &str, body: &str| {
        format!(
            "POST /auth/login HTTP/1.1\r\nHost: api.test\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_problem(
        &raw(gw.http(), send("text/plain", "x").as_bytes()).await,
        415,
        "unsupported-media-type",
    );
    assert_problem(
        &raw(gw.http(), send("application/json", "{not json").as_bytes()).await,
        400,
        "bad-request",
    );
    let big = format!(
        "{{\"username\":\"a\",\"password\":\"{}\"}}",
        "x".repeat(5000)
    );
    assert_problem(
        &raw(gw.http(), send("application/json", &big).as_bytes()).await,
        413,
        "body-too-large",
    );
    assert_eq!(up.count(), 0, "the login endpoint reached the upstream");
}

#[tokio::test]
async fn session_config_is_checked() {
    let up = Upstream::start().await;
    let base = format!("{}{}", base_config("", "behind_tls_proxy"), ROUTES);
    let err = Gateway::start_raw(&up, &format!("{base}[auth.sessions]\ncookie = \"sid\"\n"))
        .await
        .err()
        .unwrap();
    assert!(err.contains("auth.sessions.cookie"), "{err}");
    let clash = format!("{base}[auth.sessions]\nlogin_path = \"/api/v1/posts\"\n");
    let err = Gateway::start_raw(&up, &clash).await.err().unwrap();
    assert!(err.contains("auth.sessions.login_path"), "{err}");
}

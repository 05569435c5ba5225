//! The admin API: its own listener, token-protected, managing API keys and
//! reloads; never reachable through the public listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use support::*;

const TOKEN: &str = "test-admin-token-0123456789";

fn sha256_hex(s: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn start(up: &Upstream) -> Gateway {
    let cfg = format!(
        "{}{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{}\"\n\n[auth.api_keys]\nhash_secret_file = \"s\"\n\n[[routes]]\npath = \"/reports\"\nmethods = [\"GET\"]\nupstream = \"app\"\nauth = [\"api_key\"]\n",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        sha256_hex(TOKEN)
    );
    Gateway::start_raw_with(
        up,
        &cfg,
        &[("s", "a-server-side-secret-of-32-bytes-or-more")],
    )
    .await
    .unwrap()
}

async fn admin(gw: &Gateway, method: &str, path: &str, token: Option<&str>, body: &str) -> Raw {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(gw.admin.unwrap(), req.as_bytes()).await
}

#[tokio::test]
async fn admin_api_needs_the_token() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    for t in [None, Some("wrong"), Some("")] {
        let r = admin(&gw, "GET", "/keys", t, "").await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    assert_eq!(
        admin(&gw, "GET", "/keys", Some(TOKEN), "").await.status,
        200
    );
    // not reachable through the public listener
    let r = get(
        gw.http(),
        "/keys",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = get(gw.http(), "/reload", "").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn keys_are_managed_through_the_admin_api() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let r = admin(
        &gw,
        "POST",
        "/keys",
        Some(TOKEN),
        r#"{"owner":"partner-7","name":"sync","scopes":["reports:read"],"expires":"7d"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let key = v["key"].as_str().unwrap().to_string();
    let id = v["record"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(gw.http(), "/reports", &format!("X-API-Key: {key}\r\n"))
            .await
            .status,
        200
    );
    assert_eq!(up.last().headers["x-portcullis-user"], "partner-7");
    // the list never shows keys or hashes
    let list = admin(&gw, "GET", "/keys", Some(TOKEN), "").await;
    let text = list.text();
    assert!(text.contains(&id) && !text.contains(&key[key.len() - 43..]) && !text.contains("hash"));
    // rotate: both work during the overlap
    let r = admin(
        &gw,
        "POST",
        &format!("/keys/{id}/rotate"),
        Some(TOKEN),
        r#"{"overlap":"1h"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let new_key = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(
        get(gw.http(), "/reports", &format!("X-API-Key: {new_key}\r\n"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(gw.http(), "/reports", &format!("X-API-Key: {key}\r\n"))
            .await
            .status,
        200
    );
    // revoke the old one: refused on the very next request
    assert_eq!(
        admin(&gw, "POST", &format!("/keys/{id}/revoke"), Some(TOKEN), "")
            .await
            .status,
        204
    );
    assert_eq!(
        get(gw.http(), "/reports", &format!("X-API-Key: {key}\r\n"))
            .await
            .status,
        401
    );
    assert_eq!(
        admin(&gw, "POST", &format!("/keys/{id}/revoke"), Some(TOKEN), "")
            .await
            .status,
        404
    );
    // bad input gets a clear 400, never a 500
    for body in [
        r#"{"owner":""}"#,
        "not json",
        r#"{"owner":"x","expires":5}"#,
    ] {
        let r = admin(&gw, "POST", "/keys", Some(TOKEN), body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
}

#[tokio::test]
async fn reload_through_the_admin_api_reports_errors() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    assert_eq!(
        admin(&gw, "POST", "/reload", Some(TOKEN), "").await.status,
        204
    );
    let good = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        format!("{good}\n[[routes]]\npath = \"/x\"\nbogus = 1\n"),
    )
    .unwrap();
    let r = admin(&gw, "POST", "/reload", Some(TOKEN), "").await;
    assert_eq!(r.status, 422);
    let v: Value = r.json();
    assert!(
        v["errors"][0]["path"].as_str().unwrap().contains("routes"),
        "{v}"
    );
    // still serving the previous config
    assert_eq!(get(gw.http(), "/api/v1/users/1", "").await.status, 200);
}

#[tokio::test]
async fn admin_ends_all_sessions_of_a_user() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{}\"\n\n[auth.sessions]\n\n[[routes]]\npath = \"/me\"\nmethods = [\"GET\"]\nupstream = \"app\"\nauth = [\"session\"]\n",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        sha256_hex(TOKEN)
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    add_user(&gw, "alice", "alices long password", "user");
    let login = |n: u8| {
        let body = r#"{"username":"alice","password":"alices long password"}"#;
        let req = format!(
            "POST /auth/login HTTP/1.1\r\nHost: x{n}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let addr = gw.http();
        async move { raw(addr, req.as_bytes()).await }
    };
    let c1 = login(1)
        .await
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let c2 = login(2)
        .await
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for c in [&c1, &c2] {
        assert_eq!(
            get(gw.http(), "/me", &format!("Cookie: {c}\r\n"))
                .await
                .status,
            200
        );
    }
    let users = admin(&gw, "GET", "/users", Some(TOKEN), "").await;
    assert_eq!(users.status, 200);
    assert!(users.text().contains("alice") && !users.text().contains("argon2"));
    let list = admin(&gw, "GET", "/users/alice/sessions", Some(TOKEN), "").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json().as_array().unwrap().len(), 2);
    let session_id = c1.split('=').nth(1).unwrap();
    assert!(
        !list.text().contains(session_id),
        "session ids must never be listed"
    );
    let r = admin(&gw, "DELETE", "/users/alice/sessions", Some(TOKEN), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ended"], 2);
    for c in [&c1, &c2] {
        assert_eq!(
            get(gw.http(), "/me", &format!("Cookie: {c}\r\n"))
                .await
                .status,
            401
        );
    }
    assert_eq!(
        admin(&gw, "POST", "/users/nobody/disable", Some(TOKEN), "")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn oauth_clients_through_the_admin_api() {
    let up = Upstream::start().await;
    let key = portcullis::authn::tokens::new_signing_key().unwrap();
    let cfg = format!(
        "{}{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = \"{}\"\n\n[auth.sessions]\n[auth.tokens]\nissuer = \"https://gw.test\"\nsigning_keys = [{{ kid = \"k\", file = \"k.pem\" }}]\n",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        sha256_hex(TOKEN)
    );
    let gw = Gateway::start_raw_with(&up, &cfg, &[("k.pem", &key)])
        .await
        .unwrap();
    let r = admin(
        &gw,
        "POST",
        "/clients",
        Some(TOKEN),
        r#"{"id":"svc-a","name":"a","scopes":["x:read"]}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["client_secret"].as_str().unwrap().to_string();
    assert_eq!(
        admin(&gw, "POST", "/clients", Some(TOKEN), r#"{"id":"svc-a"}"#)
            .await
            .status,
        409
    );
    assert_eq!(
        admin(&gw, "POST", "/clients", Some(TOKEN), r#"{"id":"bad id"}"#)
            .await
            .status,
        400
    );
    let list = admin(&gw, "GET", "/clients", Some(TOKEN), "").await;
    assert!(list.text().contains("svc-a") && !list.text().contains(&secret));
    assert_eq!(
        admin(&gw, "POST", "/clients/svc-a/disable", Some(TOKEN), "")
            .await
            .status,
        204
    );
    assert_eq!(
        admin(&gw, "POST", "/clients/nope/disable", Some(TOKEN), "")
            .await
            .status,
        404
    );
}

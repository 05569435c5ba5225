//! Tokens Portcullis issues: access tokens verified by its own JWT stage,
//! the JWKS endpoint, refresh rotation with reuse detection, logout, and
//! signing-key rotation across reloads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

mod support;

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::*;

fn cfg(keys: &[&str]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|k| format!("{{ kid = \"{k}\", file = \"{k}.pem\" }}"))
        .collect();
    format!(
        r#"{}{}
[auth.sessions]
issue = ["cookie", "tokens"]

[auth.tokens]
issuer = "https://gw.test"
audience = "gw-api"
signing_keys = [{}]

[[routes]]
path = "/api/me"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
"#,
        base_config("", "behind_tls_proxy"),
        ROUTES,
        keys.join(", ")
    )
}

async fn start(up: &Upstream) -> Gateway {
    let k1 = portcullis::authn::tokens::new_signing_key().unwrap();
    let k2 = portcullis::authn::tokens::new_signing_key().unwrap();
    let gw = Gateway::start_raw_with(up, &cfg(&["k1"]), &[("k1.pem", &k1), ("k2.pem", &k2)])
        .await
        .unwrap();
    add_user(&gw, "alice", "alices long password", "user");
    gw
}

async fn post_json(gw: &Gateway, path: &str, body: &Value) -> Raw {
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(gw.http(), req.as_bytes()).await
}

async fn login(gw: &Gateway) -> Value {
    let r = post_json(
        gw,
        "/auth/login",
        &json!({"username": "alice", "password": "alices long password"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("set-cookie").is_some(),
        "issue = [\"cookie\", \"tokens\"] gives both"
    );
    r.json()
}

async fn with_token(gw: &Gateway, token: &str) -> u16 {
    get(
        gw.http(),
        "/api/me",
        &format!("Authorization: Bearer {token}\r\n"),
    )
    .await
    .status
}

fn kid_of(token: &str) -> String {
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn login_issues_tokens_that_the_gateway_verifies() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let t = login(&gw).await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 900);
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(kid_of(access), "k1");
    assert_eq!(with_token(&gw, access).await, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-portcullis-issuer"], "https://gw.test");
    assert_eq!(seen.headers["x-portcullis-roles"], "user");
    // the public keys are published; only GET
    let jwks = get(gw.http(), "/.well-known/jwks.json", "").await;
    assert_eq!(jwks.status, 200);
    assert_eq!(
        jwks.header("content-type"),
        Some("application/jwk-set+json")
    );
    let v = jwks.json();
    assert_eq!(v["keys"][0]["kid"], "k1");
    assert!(
        v["keys"][0].get("d").is_none(),
        "private key material published"
    );
    assert_eq!(
        post_json(&gw, "/.well-known/jwks.json", &json!({}))
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let first = login(&gw).await;
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    let second = post_json(&gw, "/auth/refresh", &json!({"refresh_token": r1})).await;
    assert_eq!(second.status, 200, "{}", second.text());
    let second = second.json();
    let r2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2, "refresh tokens are rotated");
    assert_eq!(
        with_token(&gw, second["access_token"].as_str().unwrap()).await,
        200
    );
    // r1 again: someone else holds a copy; the whole family dies, r2 included
    let reuse = post_json(&gw, "/auth/refresh", &json!({"refresh_token": r1})).await;
    assert_problem(&reuse, 401, "unauthenticated");
    let after = post_json(&gw, "/auth/refresh", &json!({"refresh_token": r2})).await;
    assert_problem(&after, 401, "unauthenticated");
    // a fresh login starts a new family
    let again = login(&gw).await;
    let r3 = again["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        post_json(&gw, "/auth/refresh", &json!({"refresh_token": r3}))
            .await
            .status,
        200
    );
    // garbage is refused without detail
    let r = post_json(&gw, "/auth/refresh", &json!({"refresh_token": "x"})).await;
    assert_problem(&r, 401, "unauthenticated");
}

#[tokio::test]
async fn a_new_password_revokes_refresh_tokens() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let t = login(&gw).await;
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let (ok, out) = users_cli(&gw, &["passwd", "alice"], "a completely new passphrase\n");
    assert!(ok, "{out}");
    let r = post_json(&gw, "/auth/refresh", &json!({"refresh_token": refresh})).await;
    assert_problem(&r, 401, "unauthenticated");
}

#[tokio::test]
async fn logout_revokes_the_refresh_family() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let t = login(&gw).await;
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let out = post_json(&gw, "/auth/logout", &json!({"refresh_token": refresh})).await;
    assert_eq!(out.status, 204);
    let r = post_json(&gw, "/auth/refresh", &json!({"refresh_token": refresh})).await;
    assert_problem(&r, 401, "unauthenticated");
}

#[tokio::test]
async fn signing_keys_rotate_across_reloads() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let old = login(&gw).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // k2 signs from now on; k1 stays published so its tokens still verify
    std::fs::write(
        &gw.config,
        cfg(&["k2", "k1"]).replace("{upstream}", &up.addr.to_string()),
    )
    .unwrap();
    gw.handle.reload().await.unwrap();
    assert_eq!(with_token(&gw, &old).await, 200);
    let new = login(&gw).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(kid_of(&new), "k2");
    let kids: Vec<String> = get(gw.http(), "/.well-known/jwks.json", "").await.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kids, ["k2", "k1"]);
    // k1 retired: its tokens stop verifying, k2's go on
    std::fs::write(
        &gw.config,
        cfg(&["k2"]).replace("{upstream}", &up.addr.to_string()),
    )
    .unwrap();
    gw.handle.reload().await.unwrap();
    assert_eq!(with_token(&gw, &old).await, 401);
    assert_eq!(with_token(&gw, &new).await, 200);
}

#[tokio::test]
async fn token_config_is_checked() {
    let up = Upstream::start().await;
    let k = portcullis::authn::tokens::new_signing_key().unwrap();
    let base = format!("{}{}", base_config("", "behind_tls_proxy"), ROUTES);
    for (extra, needle) in [
        (
            "[auth.tokens]\nissuer = \"i\"\nsigning_keys = [{ kid = \"k\", file = \"k.pem\" }]\n",
            "needs [auth.sessions]",
        ),
        (
            "[auth.sessions]\n[auth.tokens]\nissuer = \"i\"\naccess_ttl = \"2h\"\nsigning_keys = [{ kid = \"k\", file = \"k.pem\" }]\n",
            "auth.tokens.access_ttl",
        ),
        (
            "[auth.sessions]\n[auth.tokens]\nissuer = \"i\"\nsigning_keys = [{ kid = \"k\", file = \"missing.pem\" }]\n",
            "auth.tokens.signing_keys",
        ),
        (
            "[auth.sessions]\nissue = [\"tokens\"]\n",
            "needs [auth.tokens]",
        ),
    ] {
        let err = Gateway::start_raw_with(&up, &format!("{base}{extra}"), &[("k.pem", &k)])
            .await
            .err()
            .unwrap();
        assert!(err.contains(needle), "{extra}: {err}");
    }
}

fn add_client(gw: &Gateway, id: &str, scopes: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["clients", "add", "--id", id, "--scopes", scopes, "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["client_secret"].as_str().unwrap().to_string()
}

async fn token_request(gw: &Gateway, form: &str, basic: Option<(&str, &str)>) -> Raw {
    let auth = basic
        .map(|(i, s)| {
            format!(
                "Authorization: Basic {}\r\n",
                base64::engine::general_purpose::STANDARD.encode(format!("{i}:{s}"))
            )
        })
        .unwrap_or_default();
    let req = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: gw.test\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    raw(gw.http(), req.as_bytes()).await
}

#[tokio::test]
async fn client_credentials_grant() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let secret = add_client(&gw, "svc-reports", "reports:read,reports:write");
    // HTTP Basic, all scopes
    let r = token_request(
        &gw,
        "grant_type=client_credentials",
        Some(("svc-reports", &secret)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["scope"], "reports:read reports:write");
    assert!(
        v.get("refresh_token").is_none(),
        "no refresh token for client credentials"
    );
    assert_eq!(
        with_token(&gw, v["access_token"].as_str().unwrap()).await,
        200
    );
    let seen = up.last();
    assert_eq!(seen.headers["x-portcullis-user"], "svc-reports");
    assert_eq!(
        seen.headers["x-portcullis-scopes"],
        "reports:read reports:write"
    );
    // credentials in the form, narrower scope
    let form = format!(
        "grant_type=client_credentials&client_id=svc-reports&client_secret={secret}&scope=reports%3Aread"
    );
    let r = token_request(&gw, &form, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["scope"], "reports:read");
    // errors carry RFC 6749 codes
    let cases: Vec<(String, Option<(&str, &str)>, u16, &str)> = vec![
        (
            "grant_type=client_credentials".into(),
            Some(("svc-reports", "wrong")),
            401,
            "invalid_client",
        ),
        (
            "grant_type=client_credentials".into(),
            Some(("nobody", "wrong")),
            401,
            "invalid_client",
        ),
        (
            "grant_type=client_credentials".into(),
            None,
            401,
            "invalid_client",
        ),
        (
            "grant_type=client_credentials&scope=admin".into(),
            Some(("svc-reports", &secret)),
            400,
            "invalid_scope",
        ),
        (
            "grant_type=password&username=a&password=b".into(),
            Some(("svc-reports", &secret)),
            400,
            "unsupported_grant_type",
        ),
        (
            "scope=reports:read".into(),
            Some(("svc-reports", &secret)),
            400,
            "invalid_request",
        ),
        (
            "grant_type=client_credentials&grant_type=client_credentials".into(),
            Some(("svc-reports", &secret)),
            400,
            "invalid_request",
        ),
    ];
    for (form, basic, status, code) in cases {
        let r = token_request(&gw, &form, basic).await;
        assert_eq!(r.status, status, "{form}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{form}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        if status == 401 {
            assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
        }
        assert!(!r.text().contains(&secret));
    }
    // a malformed Basic header is a client authentication failure, even with form credentials
    let form =
        format!("grant_type=client_credentials&client_id=svc-reports&client_secret={secret}");
    let req = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Basic !!!\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    );
    let r = raw(gw.http(), req.as_bytes()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "invalid_client");
    // JSON is not the token endpoint's format
    let r = post_json(
        &gw,
        "/oauth/token",
        &json!({"grant_type": "client_credentials"}),
    )
    .await;
    assert_problem(&r, 415, "unsupported-media-type");
    // a disabled client gets nothing
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["clients", "disable", "svc-reports", "--config"])
        .arg(&gw.config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = token_request(
        &gw,
        "grant_type=client_credentials",
        Some(("svc-reports", &secret)),
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn upstream_token_is_signed_by_the_gateway_and_cannot_be_forged() {
    let up = Upstream::start().await;
    let k1 = portcullis::authn::tokens::new_signing_key().unwrap();
    let config = cfg(&["k1"]).replace(
        "audience = \"gw-api\"",
        "audience = \"gw-api\"\nupstream_token = true\nupstream_audience = \"orders-service\"",
    );
    let gw = Gateway::start_raw_with(&up, &config, &[("k1.pem", &k1)])
        .await
        .unwrap();
    add_user(&gw, "alice", "alices long password", "user");
    let access = login(&gw).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = get(
        gw.http(),
        "/api/me",
        &format!("Authorization: Bearer {access}\r\nX-Portcullis-Token: forged\r\n"),
    )
    .await;
    assert_eq!(r.status, 200);
    let internal = up.last().headers["x-portcullis-token"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(internal, "forged");
    // verify it the way an upstream would: with the published JWKS
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&get(gw.http(), "/.well-known/jwks.json", "").await.body).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["orders-service"]);
    v.set_issuer(&["https://gw.test"]);
    let data = jsonwebtoken::decode::<Value>(&internal, &key, &v).unwrap();
    assert_eq!(data.claims["auth"], "jwt");
    assert_eq!(data.claims["roles"], json!(["user"]));
    let ttl = data.claims["exp"].as_i64().unwrap() - data.claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 60);
    // a public route gets none, and a client's is stripped
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "X-Portcullis-Token: forged\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!up.last().headers.contains_key("x-portcullis-token"));
}

//! API keys against the real gateway and the real CLI: creation, use,
//! revocation, expiry, rotation, query-string policy, storage hygiene.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

const AUTH: &str = r#"
[auth.api_keys]
hash_secret_file = "key-secret"
default_expiry = "30d"
rotation_overlap = "1h"

[[routes]]
path = "/reports/{id}"
methods = ["GET"]
upstream = "app"
auth = ["api_key"]

[[routes]]
path = "/export"
methods = ["GET"]
upstream = "app"
auth = ["api_key"]
api_key_query = "api_key"
"#;

async fn start(up: &Upstream) -> Gateway {
    let cfg = format!("{}{}{}", base_config("", "behind_tls_proxy"), ROUTES, AUTH);
    // the secret file must exist before the config compiles
    let dir = tempfile::tempdir().unwrap();
    let _ = dir;
    Gateway::start_raw_with(
        up,
        &cfg,
        &[("key-secret", "0123456789abcdef0123456789abcdef-server-side")],
    )
    .await
    .unwrap()
}

fn cli(gw: &Gateway, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["keys"])
        .args(args.iter().take(1))
        .arg("--config")
        .arg(&gw.config)
        .args(args.iter().skip(1))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn create(gw: &Gateway, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "create",
        "--owner",
        "svc-billing",
        "--name",
        "nightly",
        "--scopes",
        "reports:read,reports:export",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(gw, &args);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        v["key"].as_str().unwrap().to_string(),
        v["record"]["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn created_key_authenticates_and_is_logged_by_id_only() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (key, id) = create(&gw, &[]);
    assert!(key.starts_with(&format!("pk_{id}_")));
    assert_eq!(key.len(), "pk_".len() + 12 + 1 + 43, "{key}");
    for header in [
        format!("X-API-Key: {key}\r\n"),
        format!("Authorization: ApiKey {key}\r\n"),
    ] {
        let r = get(gw.http(), "/reports/1", &header).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = up.last();
        assert_eq!(seen.headers["x-portcullis-user"], "svc-billing");
        assert_eq!(seen.headers["x-portcullis-auth"], "api_key");
        assert_eq!(
            seen.headers["x-portcullis-scopes"],
            "reports:read reports:export"
        );
        assert_eq!(seen.headers["x-portcullis-issuer"], "api_key");
    }
    let r = get(gw.http(), "/reports/1", &format!("X-API-Key: {key}\r\n")).await;
    let rid = r.header("x-request-id").unwrap().to_string();
    let log = gw.log_until(&rid).await;
    let line: Value =
        serde_json::from_str(log.lines().find(|l| l.contains(&rid)).unwrap()).unwrap();
    assert_eq!(line["key_id"], id.as_str());
    assert_eq!(line["user"], "svc-billing");
    // (the secret is base64url and may itself contain `_`)
    let secret = key.strip_prefix(&format!("pk_{id}_")).unwrap();
    assert_eq!(secret.len(), 43);
    assert!(
        !log.contains(secret),
        "the key's secret reached the access log"
    );
    // the database holds no usable key material
    let db = std::fs::read(gw.dir.path().join("portcullis.db")).unwrap();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));
    let (_, list, _) = cli(&gw, &["list"]);
    assert!(list.contains(&id) && !list.contains(secret) && !list.contains("hash"));
}

#[tokio::test]
async fn wrong_unknown_malformed_and_ambiguous_keys_are_refused() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (key, id) = create(&gw, &[]);
    let (other, _) = create(&gw, &[]);
    let wrong_secret = format!("pk_{id}_{}", "A".repeat(43));
    let unknown = format!("pk_aaaaaaaaaaaa_{}", &key[key.len() - 43..]);
    for bad in [
        wrong_secret.as_str(),
        unknown.as_str(),
        "pk_short_x",
        "nonsense",
        &key[..key.len() - 1],
    ] {
        let r = get(gw.http(), "/reports/1", &format!("X-API-Key: {bad}\r\n")).await;
        assert_problem(&r, 401, "unauthenticated");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("invalid_token")
        );
        assert!(!r.text().contains(bad));
    }
    // two keys at once: refused, not "pick one"
    let r = get(
        gw.http(),
        "/reports/1",
        &format!("X-API-Key: {key}\r\nAuthorization: ApiKey {other}\r\n"),
    )
    .await;
    assert_problem(&r, 401, "unauthenticated");
    // none at all
    let r = get(gw.http(), "/reports/1", "").await;
    assert_problem(&r, 401, "unauthenticated");
    assert!(
        !r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn query_string_keys_only_where_the_route_allows() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (key, _) = create(&gw, &[]);
    // not accepted (not even seen as a credential) on a normal route
    let r = get(gw.http(), &format!("/reports/1?api_key={key}"), "").await;
    assert_problem(&r, 401, "unauthenticated");
    assert!(
        !r.header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // accepted where configured; and the access log redacts it
    let r = get(gw.http(), &format!("/export?api_key={key}&format=csv"), "").await;
    assert_eq!(r.status, 200);
    let rid = r.header("x-request-id").unwrap().to_string();
    let log = gw.log_until(&rid).await;
    assert!(!log.contains(&key));
}

#[tokio::test]
async fn revocation_takes_effect_on_the_next_request() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (key, id) = create(&gw, &[]);
    let h = format!("X-API-Key: {key}\r\n");
    assert_eq!(get(gw.http(), "/reports/1", &h).await.status, 200);
    let (ok, _, err) = cli(&gw, &["revoke", &id]);
    assert!(ok, "{err}");
    assert_problem(
        &get(gw.http(), "/reports/1", &h).await,
        401,
        "unauthenticated",
    );
    let (ok, _, _) = cli(&gw, &["revoke", &id]);
    assert!(!ok, "revoking twice should say so");
}

#[tokio::test]
async fn keys_expire_and_rotation_keeps_the_old_key_for_the_overlap_only() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (short, _) = create(&gw, &["--expires", "1s"]);
    let (key, id) = create(&gw, &[]);
    let (ok, out, err) = cli(&gw, &["rotate", &id, "--overlap", "1s"]);
    assert!(ok, "{err}");
    let new_key = serde_json::from_str::<Value>(&out).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_key, key);
    let ok_with = |k: &str| format!("X-API-Key: {k}\r\n");
    assert_eq!(
        get(gw.http(), "/reports/1", &ok_with(&key)).await.status,
        200,
        "old key dies too early"
    );
    assert_eq!(
        get(gw.http(), "/reports/1", &ok_with(&new_key))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        get(gw.http(), "/reports/1", &ok_with(&key)).await.status,
        401,
        "old key outlived the overlap"
    );
    assert_eq!(
        get(gw.http(), "/reports/1", &ok_with(&short)).await.status,
        401,
        "expired key accepted"
    );
    assert_eq!(
        get(gw.http(), "/reports/1", &ok_with(&new_key))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn last_used_is_recorded_in_batches() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (key, id) = create(&gw, &[]);
    for _ in 0..5 {
        assert_eq!(
            get(gw.http(), "/reports/1", &format!("X-API-Key: {key}\r\n"))
                .await
                .status,
            200
        );
    }
    let mut used = false;
    for _ in 0..80 {
        let (_, list, _) = cli(&gw, &["list"]);
        let v: Value = serde_json::from_str(&list).unwrap();
        let rec = v
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .unwrap()
            .clone();
        if rec["last_used"].is_i64() {
            used = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(used, "last_used never written");
}

#[tokio::test]
async fn the_first_credential_present_decides() {
    let up = Upstream::start().await;
    let extra = r#"
[[routes]]
path = "/either"
methods = ["GET"]
upstream = "app"
auth = ["jwt", "api_key"]

[auth.jwt]
[[auth.jwt.issuers]]
issuer = "https://idp.test"
audiences = ["api"]
algorithms = ["HS256"]
secret_file = "jwt-secret"
"#;
    let cfg = format!(
        "{}{}{}{}",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        AUTH,
        extra
    );
    let gw = Gateway::start_raw_with(
        &up,
        &cfg,
        &[
            ("key-secret", "0123456789abcdef0123456789abcdef-server-side"),
            ("jwt-secret", "another-secret-of-at-least-32-bytes!!"),
        ],
    )
    .await
    .unwrap();
    let (key, _) = create(&gw, &[]);
    // a valid key alone works
    assert_eq!(
        get(gw.http(), "/either", &format!("X-API-Key: {key}\r\n"))
            .await
            .status,
        200
    );
    // an invalid bearer token is not rescued by a valid key
    let r = get(
        gw.http(),
        "/either",
        &format!("Authorization: Bearer a.b.c\r\nX-API-Key: {key}\r\n"),
    )
    .await;
    assert_problem(&r, 401, "unauthenticated");
}

#[tokio::test]
async fn check_warns_without_a_hash_secret_and_routes_need_the_method() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}[auth.api_keys]\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    assert!(
        gw.handle
            .plan()
            .warnings
            .iter()
            .any(|w| w.contains("hash_secret_file"))
    );
    let cfg = format!(
        "{}[[routes]]\npath = \"/k\"\nmethods = [\"GET\"]\nupstream = \"app\"\nauth = [\"api_key\"]\n",
        base_config("", "behind_tls_proxy")
    );
    let err = Gateway::start_raw(&up, &cfg).await.err().unwrap();
    assert!(err.contains("[auth.api_keys]"), "{err}");
}

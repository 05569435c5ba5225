//! Authorization: RBAC with inheritance and wildcards, require/require_any,
//! path-bound ownership (BOLA) with bypass permissions, deny by default, and
//! a role-by-route matrix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

const CFG: &str = r#"
[auth.jwt]
[[auth.jwt.issuers]]
issuer = "https://idp.test"
audiences = ["api"]
algorithms = ["HS256"]
secret_file = "jwt-secret"
claims = { tenant = "tenant" }

[authz.roles]
user = ["documents:read", "posts:create"]
admin = ["users:manage", "users:delete", "documents:*", "admin:stats"]

[authz.inherit]
admin = ["user"]

[[routes]]
name = "user"
path = "/v1/users/{id}"
methods = ["GET", "PUT"]
upstream = "app"
auth = ["jwt"]
owner = { param = "id", unless = ["users:manage"] }

[[routes]]
name = "delete-user"
path = "/v1/users/{id}"
methods = ["DELETE"]
upstream = "app"
auth = ["jwt"]
require = ["users:delete"]

[[routes]]
name = "docs"
path = "/v1/docs"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["documents:read"]

[[routes]]
name = "purge"
path = "/v1/docs/purge"
methods = ["POST"]
upstream = "app"
auth = ["jwt"]
require = ["documents:purge"]

[[routes]]
name = "stats"
path = "/v1/admin/stats"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require_any = ["admin:stats", "ops:stats"]

[[routes]]
name = "posts"
path = "/v1/posts"
methods = ["POST"]
upstream = "app"
auth = ["jwt"]
require = ["posts:create"]
max_body = "512"
owner_field = { pointer = "/author_id", unless = ["users:manage"] }

[[routes]]
name = "tenant"
path = "/v1/tenants/{tenant}/invoices"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
owner = { param = "tenant", equals = "tenant" }
"#;

fn token(sub: &str, roles: &[&str], scope: &str, tenant: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut c = json!({"iss": "https://idp.test", "aud": "api", "sub": sub, "exp": now + 600, "roles": roles, "scope": scope});
    if let Some(t) = tenant {
        c["tenant"] = json!(t);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn start(up: &Upstream) -> Gateway {
    let cfg = format!("{}{}{}", base_config("", "behind_tls_proxy"), ROUTES, CFG);
    Gateway::start_raw_with(up, &cfg, &[("jwt-secret", SECRET)])
        .await
        .unwrap()
}

async fn call(gw: &Gateway, method: &str, path: &str, t: &str) -> Raw {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {t}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw(gw.http(), req.as_bytes()).await
}

#[tokio::test]
async fn role_by_route_matrix() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let alice = token("u-alice", &["user"], "", Some("acme"));
    let carol = token("u-carol", &["admin"], "", Some("acme"));
    let svc = token("svc", &[], "documents:read", None); // scopes are permissions directly
    let ops = token("ops-bot", &[], "ops:stats", None);
    let nobody = token("u-x", &[], "", None);
    // (who, method, path, expected)
    let matrix: Vec<(&str, &str, &str, &str, u16)> = vec![
        ("alice", &alice, "GET", "/v1/users/u-alice", 200),
        ("alice", &alice, "PUT", "/v1/users/u-alice", 200),
        ("alice", &alice, "GET", "/v1/users/u-bob", 404),
        ("alice", &alice, "PUT", "/v1/users/u-bob", 404),
        ("alice", &alice, "DELETE", "/v1/users/u-bob", 403),
        ("alice", &alice, "DELETE", "/v1/users/u-alice", 403),
        ("alice", &alice, "GET", "/v1/docs", 200),
        ("alice", &alice, "POST", "/v1/docs/purge", 403),
        ("alice", &alice, "GET", "/v1/admin/stats", 403),
        ("carol", &carol, "GET", "/v1/users/u-bob", 200),
        ("carol", &carol, "DELETE", "/v1/users/u-bob", 200),
        ("carol", &carol, "GET", "/v1/docs", 200),
        ("carol", &carol, "POST", "/v1/docs/purge", 200),
        ("carol", &carol, "GET", "/v1/admin/stats", 200),
        ("svc", &svc, "GET", "/v1/docs", 200),
        ("svc", &svc, "GET", "/v1/users/u-alice", 404),
        ("svc", &svc, "GET", "/v1/admin/stats", 403),
        ("ops", &ops, "GET", "/v1/admin/stats", 200),
        ("ops", &ops, "GET", "/v1/docs", 403),
        ("nobody", &nobody, "GET", "/v1/docs", 403),
        ("nobody", &nobody, "GET", "/v1/users/u-x", 200),
    ];
    for (who, t, method, path, want) in matrix {
        let before = up.count();
        let r = call(&gw, method, path, t).await;
        assert_eq!(r.status, want, "{who} {method} {path}: {}", r.text());
        match want {
            403 => {
                assert_problem(&r, 403, "forbidden");
                let v: Value = r.json();
                let d = v["detail"].as_str().unwrap();
                assert!(
                    !d.contains("admin") && !d.contains("documents") && !d.contains("role"),
                    "{d}"
                );
            }
            404 => assert_problem(&r, 404, "not-found"),
            _ => {}
        }
        // nothing refused ever reaches the upstream
        assert_eq!(
            up.count() - before,
            usize::from(want == 200),
            "{who} {method} {path}"
        );
    }
}

#[tokio::test]
async fn tenant_scoping_and_encoded_ids() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let acme = token("u-1", &["user"], "", Some("acme"));
    let none = token("u-2", &["user"], "", None);
    assert_eq!(
        call(&gw, "GET", "/v1/tenants/acme/invoices", &acme)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&gw, "GET", "/v1/tenants/globex/invoices", &acme)
            .await
            .status,
        404
    );
    assert_eq!(
        call(&gw, "GET", "/v1/tenants/acme/invoices", &none)
            .await
            .status,
        404
    );
    // the parameter is compared decoded: %61cme is acme, and still only acme's
    assert_eq!(
        call(&gw, "GET", "/v1/tenants/%61cme/invoices", &acme)
            .await
            .status,
        200
    );
    let weird = token("u a", &["user"], "", None);
    assert_eq!(
        call(&gw, "GET", "/v1/users/u%20a", &weird).await.status,
        200
    );
    assert_eq!(
        call(&gw, "GET", "/v1/users/u%20b", &weird).await.status,
        404
    );
}

#[tokio::test]
async fn authz_config_is_checked() {
    let up = Upstream::start().await;
    let base = format!("{}{}", base_config("", "behind_tls_proxy"), ROUTES);
    for (extra, needle) in [
        (
            "[[routes]]\npath = \"/p\"\nmethods = [\"GET\"]\nupstream = \"app\"\npublic = true\nrequire = [\"x:y\"]\n",
            "public route cannot",
        ),
        (
            "[auth.api_keys]\n[[routes]]\npath = \"/p/{id}\"\nmethods = [\"GET\"]\nupstream = \"app\"\nauth = [\"api_key\"]\nowner = { param = \"nope\" }\n",
            "routes[6].owner.param",
        ),
        (
            "[auth.api_keys]\n[[routes]]\npath = \"/p\"\nmethods = [\"GET\"]\nupstream = \"app\"\nauth = [\"api_key\"]\nrequire = [\"a::b\"]\n",
            "routes[6].require[0]",
        ),
        (
            "[authz.roles]\nuser = [\"x\"]\n[authz.inherit]\nadmin = [\"user\"]\n",
            "authz.inherit.admin",
        ),
    ] {
        let err = Gateway::start_raw(&up, &format!("{base}{extra}"))
            .await
            .err()
            .unwrap_or_default();
        assert!(err.contains(needle), "{extra}: {err}");
    }
    // an authenticated route without any permission compiles, with a warning
    let cfg = format!(
        "{base}[auth.api_keys]\n[[routes]]\npath = \"/p\"\nmethods = [\"GET\"]\nupstream = \"app\"\nauth = [\"api_key\"]\n"
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    assert!(
        gw.handle
            .plan()
            .warnings
            .iter()
            .any(|w| w.contains("no permission"))
    );
}

#[tokio::test]
async fn bodies_cannot_name_someone_else_as_owner() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let alice = token("u-alice", &["user"], "", None);
    let carol = token("u-carol", &["admin"], "", None);
    let post = |t: String, body: String, ctype: &'static str| {
        let req = format!(
            "POST /v1/posts HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {t}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let addr = gw.http();
        async move { raw(addr, req.as_bytes()).await }
    };
    let mine = r#"{"author_id":"u-alice","title":"hi"}"#.to_string();
    let r = post(alice.clone(), mine.clone(), "application/json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        up.last().body_len,
        mine.len(),
        "the checked body must reach the upstream unchanged"
    );
    let before = up.count();
    let theirs = r#"{"author_id":"u-bob","title":"hi"}"#.to_string();
    assert_problem(
        &post(alice.clone(), theirs.clone(), "application/json").await,
        403,
        "forbidden",
    );
    assert_problem(
        &post(
            alice.clone(),
            r#"{"title":"hi"}"#.into(),
            "application/json",
        )
        .await,
        400,
        "bad-request",
    );
    assert_problem(
        &post(
            alice.clone(),
            r#"{"author_id":7}"#.into(),
            "application/json",
        )
        .await,
        400,
        "bad-request",
    );
    assert_problem(
        &post(alice.clone(), "not json".into(), "application/json").await,
        400,
        "bad-request",
    );
    let big = format!(r#"{{"author_id":"u-alice","pad":"{}"}}"#, "x".repeat(600));
    assert_problem(
        &post(alice.clone(), big, "application/json").await,
        413,
        "body-too-large",
    );
    assert_eq!(up.count(), before, "a refused body reached the upstream");
    // a bypass permission may name someone else
    assert_eq!(post(carol, theirs, "application/json").await.status, 200);
    // chunked bodies are read the same way
    let chunk = format!("{:x}\r\n{mine}\r\n0\r\n\r\n", mine.len());
    let req = format!(
        "POST /v1/posts HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {alice}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}"
    );
    assert_eq!(raw(gw.http(), req.as_bytes()).await.status, 200);
}

//! OpenAPI documents as the route inventory, against the real gateway:
//! documented operations are routed with the authentication their
//! `security` asks for, everything else is 404 (or 405) and never reaches
//! the upstream; `x-portcullis` and `[apis.operations.ID]` add gateway
//! settings; a document that cannot be trusted does not load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

const SPEC: &str = r##"
openapi: 3.1.0
info: { title: Sample, version: "1" }
security:
  - bearer: []
paths:
  /users/{id}:
    parameters:
      - $ref: "#/components/parameters/Id"
    get:
      operationId: getUser
      security:
        - bearer: [users:read]
      responses: { "200": { description: ok } }
    put:
      operationId: updateUser
      x-portcullis:
        rate_limits: [{ key: ip, algorithm: fixed_window, limit: 2, window: 1h }]
      responses: { "200": { description: ok } }
  /posts:
    post:
      operationId: createPost
      security: []
      responses: { "201": { description: created } }
  /health:
    $ref: "#/components/pathItems/Health"
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
  parameters:
    Id: { name: id, in: path, required: true, schema: { type: string } }
  pathItems:
    Health:
      get:
        operationId: health
        responses: { "200": { description: ok } }
"##;

fn config(spec_file: &str, extra: &str) -> String {
    format!(
        r#"{}
[auth.jwt]
[[auth.jwt.issuers]]
issuer = "https://idp.test"
audiences = ["api"]
algorithms = ["HS256"]
secret_file = "jwt-secret"

[[apis]]
spec = "{spec_file}"
upstream = "app"
base_path = "/api/v1"

[apis.operations.health]
public = true
{extra}
"#,
        base_config("", "behind_tls_proxy")
    )
}

fn token(scope: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let c = serde_json::json!({"iss": "https://idp.test", "aud": "api", "sub": "u-1", "scope": scope, "exp": now + 600});
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &c,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    format!("Authorization: Bearer {t}\r\n")
}

async fn send(gw: &Gateway, method: &str, path: &str, headers: &str) -> Raw {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.test\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw(gw.http(), req.as_bytes()).await
}

#[tokio::test]
async fn documented_operations_are_the_only_routes() {
    let up = Upstream::start().await;
    let gw = Gateway::start_raw_with(
        &up,
        &config("openapi.yaml", ""),
        &[("openapi.yaml", SPEC), ("jwt-secret", SECRET)],
    )
    .await
    .unwrap();
    // security from the operation: a bearer token with the scope
    let r = send(&gw, "GET", "/api/v1/users/7", "").await;
    assert_problem(&r, 401, "unauthenticated");
    let r = send(&gw, "GET", "/api/v1/users/7", &token("other")).await;
    assert_eq!(r.status, 403, "the operation's scope is required");
    let r = send(&gw, "GET", "/api/v1/users/7", &token("users:read")).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/api/v1/users/7");
    // security from the document (bearer, no scope) and x-portcullis limits
    // (keyed by address, before authentication: the 401 counts too)
    assert_eq!(send(&gw, "PUT", "/api/v1/users/7", "").await.status, 401);
    assert_eq!(
        send(&gw, "PUT", "/api/v1/users/7", &token("")).await.status,
        200
    );
    let r = send(&gw, "PUT", "/api/v1/users/7", &token("")).await;
    assert_problem(&r, 429, "rate-limited");
    // `security: []`: public
    assert_eq!(send(&gw, "POST", "/api/v1/posts", "").await.status, 200);
    // a $ref'd path item, made public by the TOML
    assert_eq!(send(&gw, "GET", "/api/v1/health", "").await.status, 200);
    // undocumented: 404 or 405, and the upstream never sees them
    let seen = up.count();
    for (m, p, status) in [
        ("GET", "/api/v1/internal/debug", 404),
        ("GET", "/api/v1/users", 404),
        ("GET", "/users/7", 404),
        ("DELETE", "/api/v1/users/7", 405),
        ("GET", "/api/v1/posts", 405),
    ] {
        let r = send(&gw, m, p, &token("users:read")).await;
        assert_eq!(r.status, status, "{m} {p}");
    }
    assert_eq!(
        up.count(),
        seen,
        "an undocumented request reached the upstream"
    );
}

#[tokio::test]
async fn a_json_3_0_document_loads_too() {
    let up = Upstream::start().await;
    let spec = serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {"/ping": {"get": {"operationId": "ping", "security": [], "responses": {"200": {"description": "ok"}}}}},
    })
    .to_string();
    let cfg = config("openapi.json", "").replace("[apis.operations.health]\npublic = true\n", "");
    let gw = Gateway::start_raw_with(
        &up,
        &cfg,
        &[("openapi.json", &spec), ("jwt-secret", SECRET)],
    )
    .await
    .unwrap();
    assert_eq!(send(&gw, "GET", "/api/v1/ping", "").await.status, 200);
    assert_eq!(send(&gw, "GET", "/api/v1/pong", "").await.status, 404);
}

#[tokio::test]
async fn documents_that_cannot_be_trusted_do_not_load() {
    let up = Upstream::start().await;
    let load = |spec: String, extra: &'static str| {
        let up = &up;
        async move {
            match Gateway::start_raw_with(
                up,
                &config("openapi.yaml", extra),
                &[("openapi.yaml", &spec), ("jwt-secret", SECRET)],
            )
            .await
            {
                Ok(_) => panic!("loaded"),
                Err(e) => e,
            }
        }
    };
    // a remote $ref is refused, with its JSON pointer
    let e = load(
        SPEC.replace(
            "\"#/components/parameters/Id\"",
            "\"https://evil.test/p.yaml\"",
        ),
        "",
    )
    .await;
    assert!(
        e.contains("apis[0]: #/paths/~1users~1{id}/parameters/0/$ref") && e.contains("remote"),
        "{e}"
    );
    // an operation without any security requirement is not public by omission
    let e = load(SPEC.replace("security:\n  - bearer: []\n", ""), "").await;
    assert!(
        e.contains("#/paths/~1users~1{id}/put") && e.contains("no security requirement"),
        "{e}"
    );
    // settings for an operation the document does not have
    let e = load(
        SPEC.to_string(),
        "[apis.operations.deleteEverything]\npublic = true\n",
    )
    .await;
    assert!(e.contains("apis[0].operations.deleteEverything"), "{e}");
    // an unsupported scheme, and a route setting that does not exist
    let e = load(SPEC.replace("scheme: bearer", "scheme: basic"), "").await;
    assert!(e.contains("not supported"), "{e}");
    let e = load(
        SPEC.to_string(),
        "[apis.operations.getUser]\nmax_bodyy = \"1KiB\"\n",
    )
    .await;
    assert!(e.contains("max_bodyy"), "{e}");
    // errors of compiled routes name the operation, not an index
    let e = load(
        SPEC.to_string(),
        "[apis.operations.getUser]\nrequire = [\"bad permission!\"]\n",
    )
    .await;
    assert!(e.contains("apis[0].operations.getUser.require"), "{e}");
    // not OpenAPI 3
    let e = load("swagger: \"2.0\"\npaths: {}\n".into(), "").await;
    assert!(e.contains("#/openapi"), "{e}");
}

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
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/User" }
      responses: { "200": { description: ok } }
  /posts:
    post:
      operationId: createPost
      security: []
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [title, content]
              properties:
                title: { type: string, minLength: 1, maxLength: 200 }
                content: { type: string, minLength: 1, maxLength: 50000 }
                tags:
                  type: array
                  maxItems: 10
                  items: { type: string, maxLength: 50 }
                publishedAt: { type: string, format: date-time }
      responses: { "201": { description: created } }
  /health:
    $ref: "#/components/pathItems/Health"
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
  parameters:
    Id: { name: id, in: path, required: true, schema: { type: string } }
  schemas:
    User:
      type: object
      properties:
        id: { type: string, readOnly: true }
        name: { type: string, maxLength: 100 }
        email: { type: string, format: email }
        bio: { type: string }
  pathItems:
    Health:
      get:
        operationId: health
        responses: { "200": { description: ok } }
"##;

fn config(spec_file: &str, extra: &str) -> String {
    format!(
        r#"{}{HS256_ISSUER}
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
    let t = hs256_token(SECRET, serde_json::json!({"sub": "u-1", "scope": scope}));
    format!("Authorization: Bearer {t}\r\n")
}

async fn post_json(gw: &Gateway, path: &str, body: &str) -> Raw {
    send_body(gw, "POST", path, "Content-Type: application/json\r\n", body).await
}

async fn send_body(gw: &Gateway, method: &str, path: &str, headers: &str, body: &str) -> Raw {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.test\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(gw.http(), req.as_bytes()).await
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
    // an inline limit is named after its operation
    assert!(
        r.header("ratelimit-policy")
            .unwrap()
            .starts_with("\"apis[0].operations.updateUser.rate_limits[0]\""),
        "{:?}",
        r.header("ratelimit-policy")
    );
    // `security: []`: public (and its body is validated: see below)
    let post = post_json(&gw, "/api/v1/posts", r#"{"title":"t","content":"c"}"#).await;
    assert_eq!(post.status, 200, "{}", post.text());
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
    // alternatives asking for different scopes are not silently weakened
    let e = load(
        SPEC.replace(
            "- bearer: [users:read]",
            "- bearer: [users:read]\n        - bearer: [admin]",
        ),
        "",
    )
    .await;
    assert!(e.contains("different scopes"), "{e}");
    // not OpenAPI 3
    let e = load("swagger: \"2.0\"\npaths: {}\n".into(), "").await;
    assert!(e.contains("#/openapi"), "{e}");
}

#[tokio::test]
async fn request_bodies_are_validated_against_the_document() {
    let up = Upstream::start().await;
    let spec = SPEC.replace("limit: 2,", "limit: 100,");
    let gw = Gateway::start_raw_with(
        &up,
        &config("openapi.yaml", ""),
        &[("openapi.yaml", &spec), ("jwt-secret", SECRET)],
    )
    .await
    .unwrap();
    let errors = |r: &Raw| -> Vec<(String, String)> {
        assert_problem(r, 400, "validation-failed");
        r.json()["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["pointer"].as_str().unwrap().to_string(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // a valid body reaches the upstream byte for byte
    let body = r#"{"title":"Hello","content":"World","tags":["a","b"],"publishedAt":"2026-11-23T12:00:00Z"}"#;
    let seen = up.count();
    assert_eq!(post_json(&gw, "/api/v1/posts", body).await.status, 200);
    assert_eq!(up.count(), seen + 1);
    assert_eq!(up.last().body_len, body.len());
    // each rule names the field, never the value
    let long = "x".repeat(201);
    let r = post_json(
        &gw,
        "/api/v1/posts",
        &format!(r#"{{"title":"{long}","content":"c"}}"#),
    )
    .await;
    let e = errors(&r);
    assert_eq!(e[0].0, "/title", "{e:?}");
    assert!(!r.text().contains(&long[..50]), "the value was echoed");
    let r = post_json(
        &gw,
        "/api/v1/posts",
        r#"{"content":"c","tags":["1","2","3","4","5","6","7","8","9","10","11"]}"#,
    )
    .await;
    let e = errors(&r);
    assert!(
        e.iter().any(|(p, m)| p.is_empty() && m.contains("title")),
        "{e:?}"
    );
    assert!(e.iter().any(|(p, _)| p == "/tags"), "{e:?}");
    let r = post_json(
        &gw,
        "/api/v1/posts",
        r#"{"title":"t","content":"c","publishedAt":"yesterday"}"#,
    )
    .await;
    assert_eq!(errors(&r)[0].0, "/publishedAt");
    // mass assignment: undeclared properties are refused, naming them
    let r = post_json(
        &gw,
        "/api/v1/posts",
        r#"{"title":"t","content":"c","isAdmin":true}"#,
    )
    .await;
    assert_eq!(errors(&r)[0].0, "/isAdmin");
    let user = |b: &'static str| {
        let gw = &gw;
        async move {
            send_body(
                gw,
                "PUT",
                "/api/v1/users/7",
                &format!("{}Content-Type: application/json\r\n", token("")),
                b,
            )
            .await
        }
    };
    let r = user(r#"{"name":"alice","role":"admin"}"#).await;
    assert_eq!(errors(&r)[0].0, "/role", "{}", r.text());
    // readOnly properties cannot be written
    let r = user(r#"{"id":"u-2","name":"alice"}"#).await;
    assert_eq!(errors(&r)[0].0, "/id");
    assert_eq!(user(r#"{"name":"alice","bio":"hi"}"#).await.status, 200);
    // strict JSON: a duplicate key is refused (the upstream might read the other one)
    let r = post_json(
        &gw,
        "/api/v1/posts",
        r#"{"title":"t","title":"u","content":"c"}"#,
    )
    .await;
    assert!(errors(&r)[0].1.contains("duplicate"));
    let deep = format!(
        r#"{{"title":"t","content":"c","tags":{}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    assert_eq!(post_json(&gw, "/api/v1/posts", &deep).await.status, 400);
    // the media type must be JSON, and a bodiless operation takes no body
    let r = send_body(
        &gw,
        "POST",
        "/api/v1/posts",
        "Content-Type: text/plain\r\n",
        "title=t",
    )
    .await;
    assert_eq!(r.status, 415);
    let r = send_body(&gw, "GET", "/api/v1/health", "", "{}").await;
    assert_problem(&r, 400, "bad-request");
    // a required body that is missing
    let r = post_json(&gw, "/api/v1/posts", "").await;
    assert_eq!(errors(&r)[0].1, "a JSON request body is required");
    // none of the refused requests reached the upstream
    assert_eq!(up.count(), seen + 2);
}

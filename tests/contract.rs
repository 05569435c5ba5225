//! Contract enforcement from an OpenAPI document, against the real gateway
//! and a real upstream (which echoes the request as JSON and adds leaky
//! headers): parameters, page-size caps, restricted fields and `strip`,
//! response filtering, redaction, undeclared headers, response validation,
//! the buffering bound, deprecation headers and versions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use support::*;

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

const SPEC: &str = r##"
openapi: 3.1.0
info: { title: Echo, version: "2" }
security: []
paths:
  /items:
    get:
      operationId: listItems
      parameters:
        - { name: limit, in: query, schema: { type: integer, minimum: 1, maximum: 50, default: 10 } }
        - { name: sort, in: query, schema: { type: string, enum: [asc, desc] } }
        - { name: ids, in: query, schema: { type: array, maxItems: 3, items: { type: integer } } }
        - { name: X-Tenant, in: header, required: true, schema: { type: string, pattern: "^[a-z]+$" } }
      x-portcullis: { pagination: { param: limit } }
      responses:
        "200":
          description: echo
          headers: { X-Debug-Token: { schema: { type: string } } }
          content:
            application/json:
              schema:
                type: object
                properties:
                  method: { type: string }
                  uri: { type: string }
                  headers: { type: object, additionalProperties: { type: string } }
  /items/{id}:
    parameters:
      - { name: id, in: path, required: true, schema: { type: integer, minimum: 1 } }
    get:
      operationId: getItem
      deprecated: true
      x-portcullis: { sunset: "2027-01-31" }
      responses:
        "200":
          description: echo
          content:
            application/json:
              schema:
                type: object
                properties: { method: { type: string }, body_len: { type: string } }
    put:
      operationId: putItem
      security: [{ bearer: [] }]
      x-portcullis:
        restricted_fields: { role: ["items:admin"] }
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                name: { type: string }
                role: { type: string }
                id: { type: integer, readOnly: true }
      responses: { "200": { description: ok } }
  /strict:
    get:
      operationId: strict
      x-portcullis: { validate_responses: true }
      responses:
        "200":
          description: x
          content:
            application/json:
              schema: { type: object, required: [body_len], properties: { body_len: { type: string } } }
  /raw:
    get:
      operationId: raw
      responses:
        "200":
          description: x
          content:
            application/json:
              schema:
                type: object
                properties: { name: { type: string }, tags: { type: array, items: { type: string } } }
  /big:
    get:
      operationId: big
      x-portcullis: { validate_responses: true, max_buffered_response: 64KiB }
      responses:
        "200": { description: x, content: { application/json: { schema: { type: object } } } }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer }
"##;

fn config(extra: &str) -> String {
    format!(
        r#"{}{HS256_ISSUER}
[[apis]]
spec = "openapi.yaml"
upstream = "app"
base_path = "/api/v1"
version = "1"
deprecation = "2026-06-01"
successor = "/api/v2"

[[apis]]
spec = "openapi.yaml"
upstream = "app"
base_path = "/api/v2"
version = "2"
validation_status = 422
on_forbidden_field = "strip"

[versioning]
path = "/api"

[[versioning.retired]]
base_path = "/api/v0"
version = "0"
successor = "/api/v2"
{extra}
"#,
        base_config("", "behind_tls_proxy")
    )
}

async fn start() -> (Upstream, Gateway) {
    let up = Upstream::start().await;
    let gw = Gateway::start_raw_with(
        &up,
        &config(""),
        &[("openapi.yaml", SPEC), ("jwt-secret", SECRET)],
    )
    .await
    .unwrap();
    (up, gw)
}

async fn send(gw: &Gateway, method: &str, path: &str, headers: &str, body: &str) -> Raw {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.test\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(gw.http(), req.as_bytes()).await
}

fn errors(r: &Raw, status: u16) -> Vec<Value> {
    assert_problem(r, status, "validation-failed");
    r.json()["errors"].as_array().unwrap().clone()
}

#[tokio::test]
async fn parameters_are_validated_and_page_sizes_capped() {
    let (up, gw) = start().await;
    let tenant = "X-Tenant: acme\r\n";
    let r = send(&gw, "GET", "/api/v1/items?sort=asc&ids=1&ids=2", tenant, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // the default page size was added on the way up
    assert_eq!(up.last().uri, "/api/v1/items?sort=asc&ids=1&ids=2&limit=10");
    // above the cap: clamped, the rest of the query untouched
    let r = send(
        &gw,
        "GET",
        "/api/v1/items?limit=100000&sort=desc",
        tenant,
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/api/v1/items?limit=50&sort=desc");
    let before = up.count();
    // each parameter rule names the parameter and never echoes the value
    let r = send(&gw, "GET", "/api/v1/items?sort=sideways", tenant, "").await;
    let e = errors(&r, 400);
    assert_eq!(
        (e[0]["in"].as_str(), e[0]["name"].as_str()),
        (Some("query"), Some("sort"))
    );
    assert!(!r.text().contains("sideways"), "{}", r.text());
    let r = send(&gw, "GET", "/api/v1/items", "", "").await;
    let e = errors(&r, 400);
    assert_eq!(e[0]["in"], "header");
    assert_eq!(e[0]["name"], "x-tenant");
    let r = send(&gw, "GET", "/api/v1/items", "X-Tenant: ACME!\r\n", "").await;
    assert_eq!(errors(&r, 400)[0]["name"], "x-tenant");
    let r = send(
        &gw,
        "GET",
        "/api/v1/items?ids=1&ids=x&ids=3&ids=4",
        tenant,
        "",
    )
    .await;
    assert_eq!(errors(&r, 400).len(), 2, "{}", r.text());
    // parameter pollution: a scalar given twice
    let r = send(&gw, "GET", "/api/v1/items?sort=asc&sort=desc", tenant, "").await;
    assert!(
        errors(&r, 400)[0]["message"]
            .as_str()
            .unwrap()
            .contains("more than once")
    );
    let r = send(&gw, "GET", "/api/v1/items?limit=ten", tenant, "").await;
    assert_eq!(errors(&r, 400)[0]["name"], "limit");
    let r = send(&gw, "GET", "/api/v1/items/abc", "", "").await;
    assert_eq!(errors(&r, 400)[0]["in"], "path");
    let r = send(&gw, "GET", "/api/v1/items/0", "", "").await;
    assert_eq!(errors(&r, 400)[0]["in"], "path");
    // one spelling only reaches the upstream; other spellings are refused
    let r = send(&gw, "GET", "/api/v1/items?li%6dit=5", tenant, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/api/v1/items?limit=5");
    assert_eq!(
        up.count(),
        before + 1,
        "a refused request reached the upstream"
    );
    let seen = up.count();
    for q in ["LIMIT=100000", "limit[]=100000", "sort[]=x", "Sort=asc"] {
        let r = send(&gw, "GET", &format!("/api/v1/items?{q}"), tenant, "").await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
    }
    // the second API answers validation failures with 422
    let r = send(&gw, "GET", "/api/v2/items?sort=up", tenant, "").await;
    assert_eq!(errors(&r, 422)[0]["name"], "sort");
    assert_eq!(up.count(), seen, "a refused request reached the upstream");
}

#[tokio::test]
async fn answers_carry_only_what_the_document_declares() {
    let (_up, gw) = start().await;
    let r = send(
        &gw,
        "GET",
        "/api/v1/items",
        "X-Tenant: acme\r\nX-Api-Token: tok-123\r\nX-Client-Secret: s3\r\n",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    // body_len is not declared: removed; the echoed headers are a declared
    // map, but the redaction list removes *token* and *secret* keys in it
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["headers", "method", "uri"]);
    assert_eq!(v["headers"]["x-tenant"], "acme");
    assert!(v["headers"].get("x-api-token").is_none(), "{v}");
    assert!(v["headers"].get("x-client-secret").is_none(), "{v}");
    assert!(!r.text().contains("tok-123") && !r.text().contains("s3\""));
    assert_eq!(
        r.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
    // declared headers pass, undeclared ones do not
    assert_eq!(r.header("x-debug-token"), Some("abc"));
    assert!(r.header("x-trace-id").is_none());
    let r = send(&gw, "GET", "/api/v1/items/7", "", "").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-debug-token").is_none());
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    // validate_responses: an answer against its schema is 502, never passed on
    let r = send(&gw, "GET", "/api/v1/strict", "", "").await;
    assert_problem(&r, 502, "upstream-contract-violation");
    assert!(!r.text().contains("body_len"), "{}", r.text());
    // a filtered answer is read up to a bound: a larger one is 502
    let r = send(&gw, "GET", "/api/v1/big", "", "").await;
    assert_problem(&r, 502, "upstream-unverifiable");
}

#[tokio::test]
async fn answers_that_do_not_fit_the_schema_fail_closed() {
    let (_up, gw) = start().await;
    let answer = |body: &str, ty: &str| {
        let h = format!("X-Respond-Body: {body}\r\n{ty}");
        let gw = &gw;
        async move { send(gw, "GET", "/api/v1/raw", &h, "").await }
    };
    let json = "X-Respond-Type: application/json\r\n";
    // a whole object (or array) where a string is declared does not pass
    let r = answer(
        r#"{"name":{"ssn":"123-45-6789"},"tags":[{"k":1},"b"],"x":1}"#,
        json,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!({"name": null, "tags": [null, "b"]})
    );
    // a JSON answer labelled as something else, or not labelled at all
    for ty in ["X-Respond-Type: text/plain\r\n", ""] {
        let r = answer(r#"{"name":"a","ssn":"123-45-6789"}"#, ty).await;
        assert_problem(&r, 502, "upstream-contract-violation");
        assert!(!r.text().contains("123-45"));
    }
    // duplicate keys: the copy that was not filtered would be sent on
    let r = answer(r#"{"name":"a","name":"b"}"#, json).await;
    assert_problem(&r, 502, "upstream-contract-violation");
    // a top-level array where an object is declared
    let r = answer(r#"[{"ssn":"1"}]"#, json).await;
    assert_eq!(r.text(), "null");
}

#[tokio::test]
async fn restricted_fields_are_refused_or_stripped() {
    let (up, gw) = start().await;
    let token = |scope: &str| {
        let t = hs256_token(SECRET, serde_json::json!({"sub": "u-1", "scope": scope}));
        format!("Authorization: Bearer {t}\r\nContent-Type: application/json\r\n")
    };
    let seen = up.count();
    // refused (v1), naming the field
    let r = send(
        &gw,
        "PUT",
        "/api/v1/items/1",
        &token(""),
        r#"{"name":"a","role":"admin"}"#,
    )
    .await;
    let e = errors(&r, 400);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["pointer"], "/role");
    let r = send(
        &gw,
        "PUT",
        "/api/v1/items/1",
        &token(""),
        r#"{"name":"a","isAdmin":true}"#,
    )
    .await;
    assert_eq!(errors(&r, 400)[0]["pointer"], "/isAdmin");
    assert_eq!(up.count(), seen);
    // the permission allows it
    let body = r#"{"name":"a","role":"admin"}"#;
    let r = send(&gw, "PUT", "/api/v1/items/1", &token("items:admin"), body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().body_len, body.len());
    // v2 strips: forbidden, undeclared and read-only fields go, the rest is forwarded
    let r = send(
        &gw,
        "PUT",
        "/api/v2/items/1",
        &token(""),
        r#"{"name":"a","role":"admin","isAdmin":true,"id":9}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let last = up.last();
    assert_eq!(last.body_len, r#"{"name":"a"}"#.len());
    assert_eq!(
        last.headers["content-length"],
        r#"{"name":"a"}"#.len().to_string().as_str()
    );
    // strings and arrays have a size bound whatever the schema says
    let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(300_000));
    let r = send(&gw, "PUT", "/api/v1/items/1", &token(""), &long).await;
    assert!(
        errors(&r, 400)[0]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 262144 bytes")
    );
    // other failures are still refused in strip mode
    let r = send(
        &gw,
        "PUT",
        "/api/v2/items/1",
        &token(""),
        r#"{"name":5,"x":1}"#,
    )
    .await;
    assert_eq!(errors(&r, 422)[0]["pointer"], "/name");
}

#[tokio::test]
async fn versions_deprecation_and_retirement() {
    let (up, gw) = start().await;
    // the whole of v1 is deprecated with a successor
    let r = send(&gw, "GET", "/api/v1/items", "X-Tenant: acme\r\n", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("deprecation"), Some("@1780272000"));
    assert_eq!(
        r.header("link"),
        Some("</api/v2>; rel=\"successor-version\"")
    );
    assert!(r.header("sunset").is_none());
    // v2's getItem is deprecated in the document, with a sunset date
    let r = send(&gw, "GET", "/api/v2/items/3", "", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("deprecation"), Some("true"));
    assert_eq!(r.header("sunset"), Some("Sun, 31 Jan 2027 00:00:00 GMT"));
    // and refusals of a deprecated operation say so too
    let r = send(&gw, "GET", "/api/v2/items/x", "", "").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.header("deprecation"), Some("true"));
    let r = send(&gw, "GET", "/api/v2/items", "X-Tenant: acme\r\n", "").await;
    assert!(r.header("deprecation").is_none());
    // a version chosen by the header: routed, checked and sent as /api/v2
    let r = send(&gw, "GET", "/api/items/5", "Api-Version: 2\r\n", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().uri, "/api/v2/items/5");
    // no default version here: the header is required under /api
    let r = send(&gw, "GET", "/api/items/5", "", "").await;
    assert_problem(&r, 400, "bad-request");
    let r = send(&gw, "GET", "/api/items/5", "Api-Version: 7\r\n", "").await;
    assert_problem(&r, 400, "bad-request");
    let r = send(&gw, "GET", "/api/v1/items/5", "Api-Version: 2\r\n", "").await;
    assert_problem(&r, 400, "bad-request");
    // retired: 410 with the successor, by path or by header
    let seen = up.count();
    for (path, h) in [("/api/v0/items", ""), ("/api/items", "Api-Version: 0\r\n")] {
        let r = send(&gw, "GET", path, h, "").await;
        assert_problem(&r, 410, "version-retired");
        assert_eq!(r.json()["successor"], "/api/v2");
        assert_eq!(
            r.header("link"),
            Some("</api/v2>; rel=\"successor-version\"")
        );
    }
    assert_eq!(up.count(), seen);
}

#[tokio::test]
async fn check_warns_about_what_is_not_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SPEC.replace(
        "  /big:",
        "  /upload:\n    post:\n      operationId: upload\n      parameters: [{ name: s, in: cookie, schema: { type: string } }]\n      requestBody: { content: { multipart/form-data: {} } }\n      callbacks: {}\n      responses: { \"200\": { description: ok, content: { application/json: { schema: { type: object, properties: { api_token: { type: string } } } } } } }\n  /big:",
    );
    std::fs::write(dir.path().join("openapi.yaml"), spec).unwrap();
    let cfg = config("").replace("{upstream}", "127.0.0.1:9").replace(
        "on_forbidden_field = \"strip\"",
        "on_forbidden_field = \"strip\"\nresponse_headers = \"all\"",
    );
    std::fs::write(dir.path().join("jwt-secret"), SECRET).unwrap();
    portcullis::demo::ensure_cert(dir.path()).unwrap();
    let f = dir.path().join("portcullis.toml");
    std::fs::write(&f, cfg).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .arg(&f)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "cookie parameter \"s\" is not validated",
        "multipart/form-data are not validated",
        "callbacks are not enforced",
        "deprecated without a date",
        "declares api_token but [responses] redact removes",
        "response_headers = \"all\"",
    ] {
        assert!(stdout.contains(needle), "no warning {needle:?} in {stdout}");
    }
}

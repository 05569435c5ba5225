//! Object-level authorization on the upstream's data, against the demo's
//! real sample API: response ownership (404, never confirming existence),
//! list filtering and refusal, write prechecks, CEL conditions (true, false,
//! error) on requests and responses, bounded response reading, and the audit
//! log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!";

fn config(list_mode: &str, extra: &str) -> String {
    format!(
        r#"
[server]
watch_config = false

[server.https]
listen = "127.0.0.1:0"
cert = "cert.pem"
key = "key.pem"

[server.http]
listen = "127.0.0.1:0"
mode = "behind_tls_proxy"

[log]
access = "access.log"
audit = "audit.log"
level = "warn"

[upstreams.app]
url = "http://{{upstream}}"
connect_timeout = "1s"
response_timeout = "5s"

[auth.jwt]
[[auth.jwt.issuers]]
issuer = "https://idp.test"
audiences = ["api"]
algorithms = ["HS256"]
secret_file = "jwt-secret"

[authz]
time_zone = "Europe/Berlin"

[authz.roles]
user = ["documents:read", "documents:write", "users:read"]
admin = ["documents:*", "users:*", "stats:read"]

[authz.policies]
finance = "response.body.department != 'finance' || identity.attributes.department == 'finance'"
cleared = "identity.attributes.clearance >= 3"

[[routes]]
name = "documents"
path = "/api/v1/documents"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["documents:read"]
response_owner = {{ pointer = "/owner_id", items = "/items", mode = "{list_mode}", unless = ["documents:read:any"] }}

[[routes]]
name = "document"
path = "/api/v1/documents/{{id}}"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["documents:read"]
response_owner = {{ pointer = "/owner_id", unless = ["documents:read:any"] }}
policies = ["finance"]

[[routes]]
name = "edit-document"
path = "/api/v1/documents/{{id}}"
methods = ["PUT", "DELETE"]
upstream = "app"
auth = ["jwt"]
require = ["documents:write"]
response_owner = {{ pointer = "/owner_id", unless = ["documents:write:any"], precheck = true }}

[[routes]]
name = "user"
path = "/api/v1/users/{{id}}"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["users:read"]
policies = ["cleared"]
allow_if = "request.method == 'GET' && request.params.id.startsWith('u-')"

[[routes]]
name = "stats"
path = "/api/v1/admin/stats"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["stats:read"]
audit = true
{extra}
"#
    )
}

fn token(sub: &str, roles: &[&str], attributes: Option<Value>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut c = json!({"iss": "https://idp.test", "aud": "api", "sub": sub, "exp": now + 600, "roles": roles});
    if let Some(a) = attributes {
        c["attributes"] = a;
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

struct People {
    alice: String,
    bob: String,
    carol: String,
    dave: String,
}

fn people() -> People {
    People {
        alice: token(
            "u-alice",
            &["user"],
            Some(json!({"department": "finance", "clearance": 4})),
        ),
        bob: token(
            "u-bob",
            &["user"],
            Some(json!({"department": "engineering", "clearance": 1})),
        ),
        carol: token(
            "u-carol",
            &["admin"],
            Some(json!({"department": "operations", "clearance": 5})),
        ),
        // an admin with no attributes at all: conditions on them error, and deny
        dave: token("u-dave", &["admin"], None),
    }
}

/// A gateway in front of a fresh sample API (the demo's, with documents of
/// alice, bob and carol).
async fn start(list_mode: &str, extra: &str) -> Gateway {
    let api = portcullis::demo::sample_api::start().await.unwrap();
    let up = Upstream {
        addr: api,
        seen: Default::default(),
    };
    Gateway::start_raw_with(&up, &config(list_mode, extra), &[("jwt-secret", SECRET)])
        .await
        .unwrap()
}

async fn call(gw: &Gateway, method: &str, path: &str, t: &str, body: &str) -> Raw {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(gw.http(), req.as_bytes()).await
}

async fn audit_until(gw: &Gateway, needle: &str) -> String {
    let path = gw.dir.path().join("audit.log");
    for _ in 0..100 {
        let s = std::fs::read_to_string(&path).unwrap_or_default();
        if s.contains(needle) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "audit log never mentioned {needle:?}: {}",
        std::fs::read_to_string(&path).unwrap_or_default()
    )
}

/// The problem body without the per-request instance.
fn shape(r: &Raw) -> Value {
    let mut v = r.json();
    v.as_object_mut().unwrap().remove("instance");
    v
}

#[tokio::test]
async fn other_peoples_documents_are_404_like_missing_ones() {
    let gw = start("filter", "").await;
    let p = people();
    let own = call(&gw, "GET", "/api/v1/documents/d-1", &p.alice, "").await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.json()["owner_id"], "u-alice");

    let bobs = call(&gw, "GET", "/api/v1/documents/d-3", &p.alice, "").await;
    assert_problem(&bobs, 404, "not-found");
    assert!(!bobs.text().contains("Bob"), "{}", bobs.text());
    // indistinguishable from a document that does not exist (the upstream's
    // own 404 is answered by the gateway the same way)
    let missing = call(&gw, "GET", "/api/v1/documents/d-99", &p.alice, "").await;
    assert_problem(&missing, 404, "not-found");
    assert_eq!(shape(&bobs), shape(&missing));

    // the owner, and an admin holding documents:read:any, get it
    let bob = call(&gw, "GET", "/api/v1/documents/d-3", &p.bob, "").await;
    assert_eq!(bob.status, 200);
    let carol = call(&gw, "GET", "/api/v1/documents/d-3", &p.carol, "").await;
    assert_eq!(carol.status, 200);
    assert_eq!(carol.json()["title"], "Bob's plan");

    let audit = audit_until(&gw, "response_owner /owner_id").await;
    let line: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["rule"] == "response_owner /owner_id")
        .unwrap();
    assert_eq!(line["kind"], "audit");
    assert_eq!(line["event"], "access");
    assert_eq!(line["outcome"], "denied");
    assert_eq!(line["subject"], "u-alice");
    assert_eq!(line["route"], "document");
    assert_eq!(line["path"], "/api/v1/documents/d-3");
    assert!(line["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(line["client_ip"].as_str().is_some());
    assert!(!audit.contains(&p.alice), "a token in the audit log");
}

#[tokio::test]
async fn lists_are_filtered_to_the_callers_items() {
    let gw = start("filter", "").await;
    let p = people();
    let r = call(&gw, "GET", "/api/v1/documents", &p.alice, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["owner_id"], "u-alice");
            d["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, ["d-1", "d-2"]);
    assert_eq!(
        r.header("content-length")
            .map(|v| v.parse::<usize>().unwrap()),
        Some(r.body.len())
    );
    let r = call(&gw, "GET", "/api/v1/documents", &p.bob, "").await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    // an admin sees everything, streamed unread
    let r = call(&gw, "GET", "/api/v1/documents", &p.carol, "").await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn lists_with_other_peoples_items_can_be_refused() {
    let gw = start("refuse", "").await;
    let p = people();
    let r = call(&gw, "GET", "/api/v1/documents", &p.alice, "").await;
    assert_problem(&r, 403, "forbidden");
    assert!(!r.text().contains("d-3"));
    let r = call(&gw, "GET", "/api/v1/documents", &p.carol, "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn writes_to_other_peoples_documents_never_reach_the_upstream() {
    let gw = start("filter", "").await;
    let p = people();
    // alice edits bob's document: the precheck GET sees owner u-bob
    let r = call(
        &gw,
        "PUT",
        "/api/v1/documents/d-3",
        &p.alice,
        r#"{"title":"pwned"}"#,
    )
    .await;
    assert_problem(&r, 404, "not-found");
    let r = call(&gw, "DELETE", "/api/v1/documents/d-3", &p.alice, "").await;
    assert_problem(&r, 404, "not-found");
    let r = call(&gw, "HEAD", "/api/v1/documents/d-3", &p.alice, "").await;
    assert_eq!(r.status, 404);
    // unchanged and still there
    let r = call(&gw, "GET", "/api/v1/documents/d-3", &p.bob, "").await;
    assert_eq!(r.json()["title"], "Bob's plan");
    // a document that does not exist: the same 404
    let r = call(&gw, "PUT", "/api/v1/documents/d-99", &p.alice, "{}").await;
    assert_problem(&r, 404, "not-found");

    // her own document: the write goes through
    let r = call(
        &gw,
        "PUT",
        "/api/v1/documents/d-1",
        &p.alice,
        r#"{"title":"Alice's new notes"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["title"], "Alice's new notes");
    let r = call(&gw, "HEAD", "/api/v1/documents/d-1", &p.alice, "").await;
    assert_eq!(r.status, 200);
    // an admin (documents:write:any) is not prechecked
    let r = call(&gw, "DELETE", "/api/v1/documents/d-3", &p.carol, "").await;
    assert_eq!(r.status, 204);
    let r = call(&gw, "GET", "/api/v1/documents/d-3", &p.carol, "").await;
    assert_problem(&r, 404, "not-found");
    audit_until(&gw, "response_owner /owner_id (precheck)").await;
}

#[tokio::test]
async fn cel_conditions_allow_deny_and_deny_on_error() {
    let gw = start("filter", "").await;
    let p = people();
    // response condition: d-2 is alice's finance document
    let r = call(&gw, "GET", "/api/v1/documents/d-2", &p.alice, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // carol is an admin (may read anyone's) but not in finance: false -> 404
    let r = call(&gw, "GET", "/api/v1/documents/d-2", &p.carol, "").await;
    assert_problem(&r, 404, "not-found");
    assert!(!r.text().contains("budget"));
    // ... and may read non-finance documents (the condition short-circuits)
    let r = call(&gw, "GET", "/api/v1/documents/d-4", &p.carol, "").await;
    assert_eq!(r.status, 200);
    // HEAD is checked too (by a GET first): no existence oracle
    let r = call(&gw, "HEAD", "/api/v1/documents/d-2", &p.carol, "").await;
    assert_eq!(r.status, 404);
    let r = call(&gw, "HEAD", "/api/v1/documents/d-2", &p.alice, "").await;
    assert_eq!(r.status, 200);
    let r = call(&gw, "HEAD", "/api/v1/documents", &p.alice, "").await;
    assert_eq!(r.status, 200);
    // dave has no attributes: the condition errors, and an error denies
    let r = call(&gw, "GET", "/api/v1/documents/d-2", &p.dave, "").await;
    assert_problem(&r, 404, "not-found");

    // request conditions: clearance >= 3 (named) and an inline allow_if
    let r = call(&gw, "GET", "/api/v1/users/u-alice", &p.alice, "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&gw, "GET", "/api/v1/users/u-bob", &p.bob, "").await;
    assert_problem(&r, 403, "forbidden");
    let r = call(&gw, "GET", "/api/v1/users/u-bob", &p.dave, "").await;
    assert_problem(&r, 403, "forbidden");
    let r = call(&gw, "GET", "/api/v1/users/x-1", &p.carol, "").await;
    assert_problem(&r, 403, "forbidden");
    // the denial names no rule
    assert!(!r.text().contains("clearance") && !r.text().contains("allow_if"));

    let audit = audit_until(&gw, "policy cleared (error)").await;
    assert!(audit.contains(r#""rule":"policy finance""#), "{audit}");
    assert!(audit.contains(r#""rule":"policy cleared""#), "{audit}");
    assert!(audit.contains(r#""rule":"routes[3].allow_if""#), "{audit}");
}

#[tokio::test]
async fn admin_routes_and_audit_of_allowed_access() {
    let gw = start("filter", "").await;
    let p = people();
    let r = call(&gw, "GET", "/api/v1/admin/stats", &p.alice, "").await;
    assert_problem(&r, 403, "forbidden");
    let r = call(&gw, "GET", "/api/v1/admin/stats", &p.carol, "").await;
    assert_eq!(r.status, 200);
    let audit = audit_until(&gw, r#""outcome":"allowed""#).await;
    let allowed: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["outcome"] == "allowed")
        .collect();
    assert_eq!(allowed.len(), 1, "{audit}");
    assert_eq!(allowed[0]["subject"], "u-carol");
    assert_eq!(allowed[0]["route"], "stats");
    assert_eq!(allowed[0]["method"], "GET");
    assert!(audit.contains(r#""rule":"require stats:read""#), "{audit}");
    // allowed access to routes without `audit = true` is not recorded
    let r = call(&gw, "GET", "/api/v1/documents/d-1", &p.alice, "").await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let audit = std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap();
    assert_eq!(audit.matches(r#""outcome":"allowed""#).count(), 1);
}

#[tokio::test]
async fn answers_that_cannot_be_checked_are_502() {
    // an upstream 404 on a checked route, an answer with no owner field at
    // all, and a list route whose answer holds no list
    let extra = r#"
[[routes]]
name = "small"
path = "/api/v1/posts"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["documents:read"]
response_owner = { pointer = "/owner_id", items = "/items" }

[[routes]]
name = "health"
path = "/health"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["documents:read"]
response_owner = { pointer = "/owner_id" }

[[routes]]
name = "debug"
path = "/internal/debug"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["documents:read"]
response_owner = { pointer = "/owner_id", items = "/items" }
"#;
    let gw = start("filter", extra).await;
    let p = people();
    // the sample API answers /api/v1/posts GET with 404 (no such handler):
    // mapped to the gateway's 404
    let r = call(&gw, "GET", "/api/v1/posts", &p.alice, "").await;
    assert_problem(&r, 404, "not-found");
    // no owner field: not the caller's
    let r = call(&gw, "GET", "/health", &p.alice, "").await;
    assert_problem(&r, 404, "not-found");
    // a list route whose answer has no list: 502, and nothing of it leaks
    let r = call(&gw, "GET", "/internal/debug", &p.alice, "").await;
    assert_problem(&r, 502, "upstream-unverifiable");
    assert!(!r.text().contains("s3cr3t"));
}

#[tokio::test]
async fn oversized_answers_on_checked_routes_are_502() {
    let up = Upstream::start().await;
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

[authz.roles]
user = ["documents:read"]

[[routes]]
name = "big"
path = "/big"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["documents:read"]
max_buffered_response = "64KiB"
response_owner = { pointer = "/owner_id" }

[[routes]]
name = "echo"
path = "/echo/{id}"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
require = ["documents:read"]
response_owner = { pointer = "/owner_id" }
"#
    );
    let gw = Gateway::start_raw_with(&up, &cfg, &[("jwt-secret", SECRET)])
        .await
        .unwrap();
    let t = token("u-alice", &["user"], None);
    let r = call(&gw, "GET", "/big", &t, "").await;
    assert_problem(&r, 502, "upstream-unverifiable");
    // the answer is asked for uncompressed and whole
    let req = format!(
        "GET /echo/1 HTTP/1.1\r\nHost: api.test\r\nAuthorization: Bearer {t}\r\nAccept-Encoding: gzip\r\nRange: bytes=0-10\r\nIf-None-Match: \"x\"\r\nConnection: close\r\n\r\n"
    );
    let r = raw(gw.http(), req.as_bytes()).await;
    assert_problem(&r, 404, "not-found");
    let seen = up.last();
    assert_eq!(seen.headers["accept-encoding"], "identity");
    assert!(seen.headers.get("range").is_none());
    assert!(seen.headers.get("if-none-match").is_none());
}

#[tokio::test]
async fn condition_and_ownership_config_errors_name_their_path() {
    let up = Upstream::start().await;
    let bad = r#"
[auth.jwt]
[[auth.jwt.issuers]]
issuer = "https://idp.test"
audiences = ["api"]
algorithms = ["HS256"]
secret_file = "jwt-secret"

[authz]
time_zone = "Mars/Olympus_Mons"

[authz.policies]
broken = "identity.sub =="
unknown_var = "user.name == 'x'"

[[routes]]
path = "/a/{id}"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
allow_if = "request.params.id ="
policies = ["nope"]
response_owner = { pointer = "owner_id", mode = "drop", items = "/items", precheck = true, precheck_path = "/b/{other}" }
"#;
    let cfg = format!("{}{}", base_config("", "behind_tls_proxy"), bad);
    let err = match Gateway::start_raw_with(&up, &cfg, &[("jwt-secret", SECRET)]).await {
        Ok(_) => panic!("compiled"),
        Err(e) => e,
    };
    for path in [
        "authz.time_zone",
        "authz.policies.broken",
        "authz.policies.unknown_var",
        "routes[0].allow_if",
        "routes[0].policies[0]",
        "routes[0].response_owner.pointer",
    ] {
        assert!(err.contains(path), "{path} missing in: {err}");
    }
    assert!(err.contains("invalid CEL"), "{err}");
    assert!(err.contains("unknown variable \"user\""), "{err}");
}

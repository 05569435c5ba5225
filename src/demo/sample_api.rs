//! The demo's sample API: the resources the API-security guides talk about,
//! deliberately naive (it trusts whoever calls it, returns internal fields and
//! has an undocumented debug endpoint), so the gateway in front of it has
//! something to protect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// In-memory data.
#[derive(Debug)]
pub struct Store {
    users: Vec<Value>,
    documents: Vec<Value>,
    posts: Vec<Value>,
}

impl Store {
    /// The demo data set: objects of alice, bob and carol.
    pub fn demo() -> Self {
        let user = |id: &str, name: &str, display: &str| {
            json!({
                "id": id, "username": name, "email": format!("{name}@example.com"),
                "displayName": display, "avatarUrl": format!("https://avatars.example.com/{name}.png"),
                "createdAt": "2026-01-15T09:30:00Z",
                "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$3Jc0kq3JY8sDc9xq0Nf3RA",
                "mfa_secret": "JBSWY3DPEHPK3PXP",
                "internal_flags": ["beta", "fraud_review"],
                "admin_notes": format!("{display} asked for a refund in March"),
                "risk_score": 0.87,
            })
        };
        let doc = |id: &str, owner: &str, title: &str, dept: &str| {
            json!({"id": id, "owner_id": owner, "title": title, "department": dept,
                   "body": format!("Contents of {title}.")})
        };
        Self {
            users: vec![
                user("u-alice", "alice", "Alice Anders"),
                user("u-bob", "bob", "Bob Brown"),
                user("u-carol", "carol", "Carol Chen"),
            ],
            documents: vec![
                doc("d-1", "u-alice", "Alice's notes", "engineering"),
                doc("d-2", "u-alice", "Alice's budget", "finance"),
                doc("d-3", "u-bob", "Bob's plan", "engineering"),
                doc("d-4", "u-carol", "Quarterly figures", "operations"),
            ],
            posts: vec![json!({"id": "p-1", "author_id": "u-bob", "title": "Hello",
                               "content": "First post", "tags": ["intro"],
                               "publishedAt": "2026-02-01T12:00:00Z"})],
        }
    }
}

/// Starts the sample API on `listener`; runs until the process ends.
pub fn spawn(listener: TcpListener, store: Arc<Mutex<Store>>) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(store.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// Binds the sample API to an ephemeral loopback port.
pub async fn start() -> std::io::Result<SocketAddr> {
    start_with(Store::demo()).await
}

/// The same with `portcullis demo`'s data: 150 more documents (an archive
/// of carol's), so that page-size caps have something to cap.
pub async fn start_demo() -> std::io::Result<SocketAddr> {
    let mut store = Store::demo();
    for i in 5..=154 {
        store
            .documents
            .push(json!({"id": format!("d-{i}"), "owner_id": "u-carol",
            "title": format!("Archived report {i}"), "department": "operations",
            "body": "Archived."}));
    }
    start_with(store).await
}

async fn start_with(store: Store) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    spawn(listener, Arc::new(Mutex::new(store)));
    Ok(addr)
}

/// `?name=<number>` from a query string.
fn query_number(query: Option<&str>, name: &str) -> Option<usize> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    // What a careless framework leaks; the gateway strips these.
    r.headers_mut().insert(
        "server",
        http::HeaderValue::from_static("SampleAPI/0.9 (Ubuntu)"),
    );
    r.headers_mut()
        .insert("x-powered-by", http::HeaderValue::from_static("Express"));
    r
}

async fn handle(
    store: Arc<Mutex<Store>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // HEAD is answered like GET (hyper leaves the body out).
    let method = match req.method() {
        &Method::HEAD => Method::GET,
        m => m.clone(),
    };
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body: Value = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Ok(mut s) = store.lock() else {
        return Ok(reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "poisoned"}),
        ));
    };
    let not_found = || reply(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
    let find = |list: &[Value], id: &str| list.iter().position(|x| x["id"] == id);
    Ok(match (&method, segs.as_slice()) {
        (&Method::GET, ["health"]) => reply(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, ["internal", "debug"]) => reply(
            StatusCode::OK,
            &json!({"env": {"DATABASE_URL": "postgres://app:s3cr3t@db:5432/app",
                            "JWT_SECRET": "dev-secret-do-not-use"}, "heap_mb": 412}),
        ),
        (&Method::GET, ["api", "v1", "users", id]) => match find(&s.users, id) {
            Some(i) => reply(StatusCode::OK, &s.users[i]),
            None => not_found(),
        },
        (&Method::PUT, ["api", "v1", "users", id]) => {
            match (find(&s.users, id), body.as_object()) {
                (Some(i), Some(patch)) => {
                    // Mass assignment on purpose: every field is taken as given.
                    if let Some(u) = s.users[i].as_object_mut() {
                        for (k, v) in patch {
                            u.insert(k.clone(), v.clone());
                        }
                    }
                    reply(StatusCode::OK, &s.users[i])
                }
                (Some(_), None) => reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "expected a JSON object"}),
                ),
                (None, _) => not_found(),
            }
        }
        (&Method::DELETE, ["api", "v1", "users", id]) => match find(&s.users, id) {
            Some(i) => {
                s.users.remove(i);
                reply(StatusCode::NO_CONTENT, &Value::Null)
            }
            None => not_found(),
        },
        (&Method::GET, ["api", "v1", "documents"]) => {
            // Whatever page size the caller asks for (no cap of its own).
            let offset = query_number(query.as_deref(), "offset").unwrap_or(0);
            let limit = query_number(query.as_deref(), "limit").unwrap_or(usize::MAX);
            let page: Vec<&Value> = s.documents.iter().skip(offset).take(limit).collect();
            reply(StatusCode::OK, &json!({ "items": page }))
        }
        (&Method::GET, ["api", "v1", "documents", "boom"]) => {
            let mut r = reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({
                "error": "Traceback (most recent call last):\n  File \"/srv/app/db.py\", line 42, in query\npsycopg2.OperationalError: password authentication failed for user \"app\" (password=s3cr3t)"}),
            );
            r.headers_mut().insert(
                "x-debug-query",
                http::HeaderValue::from_static("SELECT * FROM documents"),
            );
            r
        }
        (&Method::GET, ["api", "v1", "documents", id]) => match find(&s.documents, id) {
            Some(i) => reply(StatusCode::OK, &s.documents[i]),
            None => not_found(),
        },
        (&Method::PUT, ["api", "v1", "documents", id]) => {
            match (find(&s.documents, id), body.as_object()) {
                (Some(i), Some(patch)) => {
                    if let Some(d) = s.documents[i].as_object_mut() {
                        for (k, v) in patch {
                            d.insert(k.clone(), v.clone());
                        }
                    }
                    reply(StatusCode::OK, &s.documents[i])
                }
                (Some(_), None) => reply(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "expected a JSON object"}),
                ),
                (None, _) => not_found(),
            }
        }
        (&Method::DELETE, ["api", "v1", "documents", id]) => match find(&s.documents, id) {
            Some(i) => {
                s.documents.remove(i);
                reply(StatusCode::NO_CONTENT, &Value::Null)
            }
            None => not_found(),
        },
        (&Method::GET, ["api", "v1", "admin", "stats"]) => reply(
            StatusCode::OK,
            &json!({"users": s.users.len(), "documents": s.documents.len(), "posts": s.posts.len()}),
        ),
        (&Method::POST, ["api", "v1", "posts"]) => {
            let mut post = if body.is_object() { body } else { json!({}) };
            let id = format!("p-{}", s.posts.len() + 1);
            post["id"] = json!(id);
            s.posts.push(post.clone());
            reply(StatusCode::CREATED, &post)
        }
        _ => not_found(),
    })
}

//! Reverse proxying: forwarding, header hygiene, client ip, request ids,
//! HTTP/2, pooling, limits, timeouts and upstream failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn forwards_canonical_path_query_and_gateway_headers() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let r = get(
        gw.http(),
        "/api/v1/users/a%7Eb?x=1&y=%20",
        "User-Agent: t\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    // the path the upstream sees is the canonical one that was checked
    assert_eq!(seen.uri, "/api/v1/users/a~b?x=1&y=%20");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https"); // behind_tls_proxy mode
    assert_eq!(seen.headers["x-forwarded-host"], "api.test");
    assert_eq!(seen.headers["host"], up.addr.to_string());
    let id = r.header("x-request-id").unwrap();
    assert_eq!(seen.headers["x-request-id"], id);
    assert_eq!(id.len(), 32);
}

#[tokio::test]
async fn post_body_is_streamed_upstream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let body = vec![b'a'; 200_000];
    let mut req = format!(
        "POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = raw(gw.http(), &req).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().body_len, 200_000);
    // chunked works too
    let r = raw(
        gw.http(),
        b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().body_len, 5);
    assert!(
        !up.last().headers.contains_key("transfer-encoding")
            || up.last().headers["transfer-encoding"] == "chunked"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_removed_both_ways_and_gateway_headers_survive() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "Connection: X-Forwarded-For, X-Request-Id, X-Custom\r\nX-Custom: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\nX-Forwarded-For: 6.6.6.6\r\nX-Request-Id: spoofed\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    for h in [
        "x-custom",
        "keep-alive",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert!(!seen.headers.contains_key(h), "{h} reached the upstream");
    }
    // the gateway's own headers are set after removal: a client cannot strip them
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_ne!(seen.headers["x-request-id"], "spoofed");
    assert_eq!(
        seen.headers["x-request-id"],
        r.header("x-request-id").unwrap()
    );
    // upstream named X-Internal and HSTS in its Connection header: X-Internal
    // goes, HSTS (set by the gateway afterwards) stays
    assert!(r.header("x-internal").is_none());
    assert!(r.header("strict-transport-security").is_some());
}

#[tokio::test]
async fn spoofed_forwarded_for_from_untrusted_peer_is_ignored() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "X-Forwarded-For: 1.2.3.4\r\nForwarded: for=5.6.7.8\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
    assert!(!seen.headers.contains_key("forwarded"));
    let id = r.header("x-request-id").unwrap().to_string();
    let log = gw.log_until(&id).await;
    let line = log.lines().find(|l| l.contains(&id)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn trusted_proxy_chain_is_walked_and_extended() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        base_config(
            "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
            "behind_tls_proxy"
        ),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "X-Forwarded-For: 9.9.9.9, 203.0.113.5, 10.1.1.1\r\nX-Request-Id: lb-abc-123\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(
        seen.headers["x-forwarded-for"],
        "9.9.9.9, 203.0.113.5, 10.1.1.1, 127.0.0.1"
    );
    // a trusted proxy's request id is kept
    assert_eq!(r.header("x-request-id"), Some("lb-abc-123"));
    assert_eq!(seen.headers["x-request-id"], "lb-abc-123");
    let log = gw.log_until("lb-abc-123").await;
    let line = log.lines().find(|l| l.contains("lb-abc-123")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    // right to left: 10.1.1.1 is trusted, 203.0.113.5 is the client
    assert_eq!(v["client_ip"], "203.0.113.5");
    // a malformed id from a trusted proxy is replaced
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "X-Request-Id: bad id with spaces\r\n",
    )
    .await;
    assert_ne!(r.header("x-request-id"), Some("bad id with spaces"));
}

#[tokio::test]
async fn http2_and_http11_over_tls_with_pooled_upstream_connections() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    for h2 in [true, false] {
        let req = http::Request::get(format!(
            "https://localhost:{}/api/v1/users/7",
            gw.https().port()
        ))
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
        let (version, r) = hyper_tls(&gw, h2, req).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            version,
            if h2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        assert_eq!(up.last().headers["x-forwarded-proto"], "https");
        assert!(r.header("strict-transport-security").is_some());
    }
    // keep-alive pooling: many sequential requests, few upstream connections
    for _ in 0..20 {
        assert_eq!(get(gw.http(), "/api/v1/users/1", "").await.status, 200);
    }
    let peers: std::collections::HashSet<_> = up.seen().iter().map(|s| s.peer).collect();
    assert!(
        peers.len() <= 3,
        "{} upstream connections for 22 requests",
        peers.len()
    );
}

#[tokio::test]
async fn body_limit_413_by_length_and_by_stream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let _ = gw; // default limit is 1 MiB; use a route override
    let extra = r#"
[[routes]]
path = "/small"
public = true
methods = ["POST"]
upstream = "app"
max_body = "1KiB"
"#;
    let gw = Gateway::start(&up, extra).await;
    let before = up.count();
    let r = raw(
        gw.http(),
        b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_problem(&r, 413, "body-too-large");
    assert_eq!(
        up.count(),
        before,
        "declared-too-large body reached the upstream"
    );
    // chunked with no declared length: cut off while streaming
    let mut req = b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b'z'; 0x400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw(gw.http(), &req).await;
    assert_problem(&r, 413, "body-too-large");
    // under the limit passes
    let r = raw(
        gw.http(),
        b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn header_limits_431() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}\n[limits]\nmax_headers = 20\nmax_header_bytes = \"2KiB\"\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = get(gw.http(), "/api/v1/users/1", &many).await;
    assert_problem(&r, 431, "headers-too-large");
    let big = format!("X-Big: {}\r\n", "a".repeat(3000));
    let r = get(gw.http(), "/api/v1/users/1", &big).await;
    assert_problem(&r, 431, "headers-too-large");
    // absurd heads are cut by hyper's hard cap (still 431)
    let huge = format!("X-Huge: {}\r\n", "a".repeat(100_000));
    let r = get(gw.http(), "/api/v1/users/1", &huge).await;
    assert_eq!(r.status, 431);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn upstream_down_502_and_slow_504() {
    let up = Upstream::start().await;
    // a port with nothing listening
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = format!(
        "{}{}\n[upstreams.dead]\nurl = \"http://{dead}\"\n\n[[routes]]\npath = \"/dead\"\npublic = true\nmethods = [\"GET\"]\nupstream = \"dead\"\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let r = get(gw.http(), "/dead", "").await;
    assert_problem(&r, 502, "upstream-unavailable");
    let t = std::time::Instant::now();
    let r = get(gw.http(), "/slow", "").await;
    assert_problem(&r, 504, "upstream-timeout");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "route timeout of 300ms not applied"
    );
}

#[tokio::test]
async fn upstream_5xx_body_replaced_status_kept() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let r = get(gw.http(), "/error", "").await;
    assert_problem(&r, 503, "upstream-error");
    assert!(!r.text().contains("Traceback") && !r.text().contains("hunter2"));
    // Retry-After helps clients and leaks nothing: kept; everything else goes
    assert_eq!(r.header("retry-after"), Some("30"));
    assert!(r.header("x-debug-sql").is_none());
    // configurable: off passes the upstream body through
    let cfg = format!(
        "{}{}\n[errors]\nreplace_upstream_5xx = false\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let r = get(gw.http(), "/error", "").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("Traceback"));
}

#[tokio::test]
async fn large_response_streams() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let r = get(gw.http(), "/big", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1 << 20);
}

#[tokio::test]
async fn slowloris_head_is_cut_off() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}\n[limits]\nheader_read_timeout = \"400ms\"\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    s.write_all(b"GET /api/v1/users/1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        res.is_ok(),
        "connection with an unfinished head stayed open"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}\n[limits]\nidle_timeout = \"500ms\"\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let mut s = TcpStream::connect(gw.http()).await.unwrap();
    s.write_all(b"GET /api/v1/users/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.unwrap();
    assert!(n > 0);
    let t = std::time::Instant::now();
    let mut rest = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(res.is_ok(), "idle keep-alive connection was never closed");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "closed too early: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn max_connections_caps_concurrent_connections() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        base_config("max_connections = 2", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let a = TcpStream::connect(gw.http()).await.unwrap();
    let b = TcpStream::connect(gw.http()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // the third connection is accepted by the kernel but not served
    let mut c = TcpStream::connect(gw.http()).await.unwrap();
    c.write_all(b"GET /api/v1/users/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(400), c.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "third connection was served while two were open"
    );
    drop(a);
    let r = read_response(&mut c).await;
    assert_eq!(r.status, 200);
    drop(b);
}

#[tokio::test]
async fn request_ids_are_unique() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = get(gw.http(), "/nope", "").await;
        assert!(ids.insert(r.header("x-request-id").unwrap().to_string()));
    }
}

#[tokio::test]
async fn forwarded_header_mode_resolves_the_client_for_the_upstream() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}",
        base_config(
            "trusted_proxies = [\"127.0.0.0/8\"]\nclient_ip_header = \"forwarded\"",
            "behind_tls_proxy"
        ),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "Forwarded: for=198.51.100.9;proto=https, for=\"[2001:db8::7]:4711\"\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    // right to left: 2001:db8::7 is not trusted, so it is the client
    assert_eq!(seen.headers["x-real-ip"], "2001:db8::7");
    assert!(!seen.headers.contains_key("forwarded"));
}

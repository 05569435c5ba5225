//! TLS, redirects, security headers, CORS and the canonical path: the
//! controls a client can try to get around.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A ClientHello that offers only `version` (0x0301 = TLS 1.0, 0x0302 = 1.1).
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = version.to_vec();
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    let suites = [0x00, 0x2f, 0x00, 0x35, 0xc0, 0x13, 0xc0, 0x14];
    body.extend((suites.len() as u16).to_be_bytes());
    body.extend(suites);
    body.extend([1, 0]); // null compression
    let mut hs = vec![1u8];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

#[tokio::test]
async fn tls_10_and_11_refused_12_and_13_accepted() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    for v in [[3, 1], [3, 2]] {
        let mut s = TcpStream::connect(gw.https()).await.unwrap();
        s.write_all(&legacy_client_hello(v)).await.unwrap();
        let mut buf = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        // an alert record (content type 21), fatal (2): protocol_version (70)
        // or handshake_failure (40), and no ServerHello (content type 22)
        assert_eq!(
            buf.first(),
            Some(&0x15),
            "TLS {v:?} was not refused with an alert: {buf:?}"
        );
        assert_eq!(buf.get(5), Some(&2));
        assert!(matches!(buf.get(6), Some(70 | 40)), "{buf:?}");
        assert!(!buf.contains(&0x16));
    }
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = tls_client(&gw.cert(), &[b"http/1.1"], &[version]);
        let mut s = tls_connect(gw.https(), cfg)
            .await
            .expect("modern TLS handshake");
        s.write_all(
            b"GET /api/v1/users/1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let r = read_response(&mut s).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains")
        );
    }
}

#[tokio::test]
async fn http_listener_redirects_with_308() {
    let up = Upstream::start().await;
    let cfg = format!("{}{}", base_config("", "redirect"), ROUTES);
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let r = raw(gw.http(), b"GET /api/v1/users/1?x=y HTTP/1.1\r\nHost: api.example.com:8080\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 308);
    let port = gw.https().port();
    assert_eq!(
        r.header("location"),
        Some(format!("https://api.example.com:{port}/api/v1/users/1?x=y").as_str())
    );
    assert!(
        r.header("strict-transport-security").is_none(),
        "HSTS over plain HTTP is meaningless"
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    // POST too (308 keeps the method), and nothing is proxied
    let r = raw(
        gw.http(),
        b"POST /api/v1/posts HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 308);
    // no Host: 400, not a redirect to nowhere
    let r = raw(gw.http(), b"GET / HTTP/1.0\r\n\r\n").await;
    assert_problem(&r, 400, "bad-request");
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn plain_mode_serves_http_without_hsts() {
    let up = Upstream::start().await;
    let cfg = format!("{}{}", base_config("", "plain"), ROUTES);
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let r = get(gw.http(), "/api/v1/users/1", "").await;
    assert_eq!(r.status, 200);
    assert!(r.header("strict-transport-security").is_none());
    assert_eq!(up.last().headers["x-forwarded-proto"], "http");
    // and `check` warns about it
    assert!(
        gw.handle
            .plan()
            .warnings
            .iter()
            .any(|w| w.contains("plain"))
    );
}

#[tokio::test]
async fn security_headers_on_every_response_and_leaky_headers_stripped() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}\n[headers]\nstrip = [\"x-debug-*\"]\nset = {{ \"Permissions-Policy\" = \"camera=()\" }}\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let responses = [
        get(gw.http(), "/api/v1/users/1", "").await, // 200 from upstream
        get(gw.http(), "/nope", "").await,           // 404
        get(gw.http(), "/a/../b", "").await,         // 400
        get(gw.http(), "/error", "").await,          // 503 replaced
        raw(
            gw.http(),
            b"PATCH /api/v1/users/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await, // 405
    ];
    for r in &responses {
        assert_eq!(
            r.header("strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{}",
            r.status
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(
            r.header("content-security-policy"),
            Some("default-src 'none'; frame-ancestors 'none'")
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(r.header("permissions-policy"), Some("camera=()"));
        assert!(r.all("vary").iter().any(|v| v.contains("Origin")));
        assert!(r.header("x-request-id").is_some());
        for leak in [
            "server",
            "x-powered-by",
            "x-aspnet-version",
            "x-debug-token",
        ] {
            assert!(r.header(leak).is_none(), "{leak} leaked on {}", r.status);
        }
    }
    assert_eq!(responses[4].header("allow"), Some("GET, PUT, DELETE, HEAD"));
    // Cache-Control: no-store on non-GET and on credentialed GET, not on anonymous GET
    assert!(responses[0].header("cache-control").is_none());
    let r = get(gw.http(), "/api/v1/users/1", "Authorization: Bearer x\r\n").await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = raw(gw.http(), b"PUT /api/v1/users/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

const CORS: &str = r#"
[cors]
default = "web"

[cors.policies.web]
allow_origins = ["https://app.example.com"]
allow_methods = ["GET", "PUT"]
allow_headers = ["content-type", "authorization"]
expose_headers = ["x-request-id"]
allow_credentials = true
max_age = "10m"

[cors.policies.public]
allow_origins = ["*"]

[[routes]]
path = "/open"
public = true
methods = ["GET"]
upstream = "app"
cors = "public"
"#;

#[tokio::test]
async fn cors_preflight_and_actual_requests() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, CORS).await;
    let pre = |origin: &str, method: &str, headers: &str| {
        format!(
            "OPTIONS /api/v1/users/1 HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n{headers}Connection: close\r\n\r\n"
        )
    };
    let r = raw(
        gw.http(),
        pre(
            "https://app.example.com",
            "PUT",
            "Access-Control-Request-Headers: Content-Type, Authorization\r\n",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.all("vary").iter().any(|v| v.contains("Origin")));
    assert!(r.header("strict-transport-security").is_some());
    // denied: unlisted origin, method, header
    for req in [
        pre("https://evil.example", "GET", ""),
        pre("https://app.example.com", "DELETE", ""),
        pre(
            "https://app.example.com",
            "GET",
            "Access-Control-Request-Headers: x-evil\r\n",
        ),
        pre("null", "GET", ""),
    ] {
        let r = raw(gw.http(), req.as_bytes()).await;
        assert_problem(&r, 403, "cors-denied");
        assert!(r.header("access-control-allow-origin").is_none());
    }
    // preflights never reach the upstream
    assert_eq!(up.count(), 0);
    // actual requests: the allowed origin is echoed, an unlisted one never
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "Origin: https://app.example.com\r\n",
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "Origin: https://evil.example\r\n",
    )
    .await;
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-allow-credentials").is_none());
    // "*" without credentials
    let r = get(gw.http(), "/open", "Origin: https://anyone.example\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn cors_star_with_credentials_does_not_compile() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}\n[cors.policies.bad]\nallow_origins = [\"*\"]\nallow_credentials = true\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let err = Gateway::start_raw(&up, &cfg).await.err().unwrap();
    assert!(err.contains("cors.policies.bad.allow_origins"), "{err}");
}

#[tokio::test]
async fn every_path_bypass_form_is_refused_and_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let bad = [
        "/api/v1/users/..%2f..%2finternal%2fdebug",
        "/api/v1/users/%2e%2e/%2e%2e/internal/debug",
        "/api/v1/users/%2E%2E/x",
        "/api/v1/users/.%2e/x",
        "/api/v1/users/../../internal/debug",
        "/api/v1/users/./1",
        "/api/v1/users/1/.",
        "/api/v1/users/..",
        "/api/v1/users/a%2Fb",
        "/api/v1/users/a%5cb",
        "/api/v1/users/a\\b",
        "/api/v1//users/1",
        "//api/v1/users/1",
        "/api/v1/users/1;jsessionid=x",
        "/api/v1/users/1%3bx",
        "/api/v1/users/1%00",
        "/api/v1/users/1%0d%0aX-Injected:%20yes",
        "/api/v1/users/%c0%af",
        "/api/v1/users/%ff",
        "/api/v1/users/%252e%252e",
        "/api/v1/users/%2",
        "/files/..%2f..%2finternal/debug",
        "/files/a/../../internal/debug",
    ];
    for path in bad {
        let r = get(gw.http(), path, "").await;
        assert_problem(&r, 400, "bad-path");
    }
    // the same over TLS
    let r = raw_tls(
        &gw,
        b"GET /api/v1/users/%2e%2e/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_problem(&r, 400, "bad-path");
    // a fragment is cut off by the HTTP parser before any check: the path
    // checked is the path sent, and this one is not routed
    let r = get(gw.http(), "/internal/debug#x", "").await;
    assert_problem(&r, 404, "not-found");
    // undocumented paths: 404; case matters; wrong method: 405
    for path in [
        "/internal/debug",
        "/API/v1/users/1",
        "/api/v1/users",
        "/api/v1/users/1/extra",
    ] {
        let r = get(gw.http(), path, "").await;
        assert_problem(&r, 404, "not-found");
    }
    let long = format!("/api/v1/users/{}", "a".repeat(3000));
    assert_problem(&get(gw.http(), &long, "").await, 414, "path-too-long");
    assert_eq!(
        up.count(),
        0,
        "a refused request reached the upstream: {:?}",
        up.seen()
    );
    // absolute-form request targets go through the same canonicalizer
    let r = raw(
        gw.http(),
        b"GET http://x/api/v1/users/%2e%2e/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_problem(&r, 400, "bad-path");
    let r = get(gw.http(), "/files/a/b.txt", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/files/a/b.txt");
}

//! The Redis backend against a real `redis-server` (started here on a free
//! loopback port; `scripts/test.sh` installs it): three gateways sharing one
//! Redis stay within the limit together, an unreachable Redis fails open or
//! closed per limit without adding its timeout to every request, and limits
//! work again when Redis comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A redis-server for one test, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: scripts/test.sh installs it");
        for _ in 0..200 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return Self {
                        child,
                        port,
                        _dir: dir,
                    };
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!("redis-server did not start on port {port}");
    }

    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config(redis_port: u16, extra: &str) -> String {
    format!(
        r#"{}
[rate_limit]
backend = "redis"

[rate_limit.redis]
url = "redis://127.0.0.1:{redis_port}"
timeout = "200ms"
breaker_threshold = 2
breaker_cool_down = "300ms"

[rate_limit.limits]
fixed = {{ key = "ip", algorithm = "fixed_window", limit = 20, window = "1h" }}
sliding = {{ key = "ip", algorithm = "sliding_window", limit = 15, window = "1h" }}
bucket = {{ key = "ip", algorithm = "gcra", limit = 10, window = "1h", burst = 5 }}
open = {{ key = "ip", limit = 1000, window = "1m", fail = "open" }}
closed = {{ key = "ip", limit = 1000, window = "1m", fail = "closed" }}

[[routes]]
path = "/fixed"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["fixed"]

[[routes]]
path = "/sliding"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["sliding"]

[[routes]]
path = "/bucket"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["bucket"]

[[routes]]
path = "/open"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["open"]

[[routes]]
path = "/closed"
public = true
methods = ["GET"]
upstream = "app"
rate_limits = ["closed"]
{extra}
"#,
        base_config("", "behind_tls_proxy")
    )
}

async fn get(gw: &Gateway, path: &str) -> Raw {
    let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
    raw(gw.http(), req.as_bytes()).await
}

#[tokio::test]
async fn three_instances_share_one_limit() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(
            Gateway::start_raw(&up, &config(redis.port, ""))
                .await
                .unwrap(),
        );
    }
    for (path, limit) in [("/fixed", 20), ("/sliding", 15), ("/bucket", 5)] {
        // 90 concurrent requests for one key (one client address), spread
        // over the three instances
        let mut tasks = Vec::new();
        for i in 0..90usize {
            let addr = gws[i % 3].http();
            let req = format!("GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n");
            tasks.push(tokio::spawn(async move {
                raw(addr, req.as_bytes()).await.status
            }));
        }
        let mut ok = 0;
        let mut limited = 0;
        for t in tasks {
            match t.await.unwrap() {
                200 => ok += 1,
                429 => limited += 1,
                s => panic!("{path}: unexpected status {s}"),
            }
        }
        assert_eq!(ok, limit, "{path}: accepted {ok}, limit {limit}");
        assert_eq!(limited, 90 - limit);
    }
    // the headers come from the shared count
    let r = get(&gws[1], "/fixed").await;
    assert_problem(&r, 429, "rate-limited");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry));
}

#[tokio::test]
async fn unreachable_redis_fails_open_or_closed_and_fast() {
    // A server that accepts connections and never answers: every call
    // would wait for the timeout, were it not for the circuit breaker.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let up = Upstream::start().await;
    let gw = Gateway::start_raw(&up, &config(port, "")).await.unwrap();
    // fail open: the request passes (without rate-limit headers)
    let r = get(&gw, "/open").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-limit").is_none());
    // fail closed: 503, never 429 (the client did nothing wrong)
    let r = get(&gw, "/closed").await;
    assert_problem(&r, 503, "limiter-unavailable");
    assert_eq!(r.header("retry-after"), Some("2"));
    // the circuit is open now: further requests do not wait 200 ms each
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(get(&gw, "/open").await.status, 200);
        assert_eq!(get(&gw, "/closed").await.status, 503);
    }
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "20 requests took {:?}: the breaker did not open",
        t.elapsed()
    );
}

#[tokio::test]
async fn limits_work_again_when_redis_comes_back() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let up = Upstream::start().await;
    let gw = Gateway::start_raw(&up, &config(port, "")).await.unwrap();
    let r = get(&gw, "/closed").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("999"));
    redis.stop();
    assert_eq!(get(&gw, "/closed").await.status, 503);
    assert_eq!(get(&gw, "/open").await.status, 200);
    let _redis = RedisServer::start_on(port);
    // after the cool-down, one trial closes the circuit again; the new
    // Redis starts from zero (and gets the script again)
    let mut back = false;
    for _ in 0..50 {
        let r = get(&gw, "/closed").await;
        if r.status == 200 {
            assert_eq!(r.header("x-ratelimit-remaining"), Some("999"));
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "limits did not recover when redis came back");
}

//! Operations: access log hygiene, config errors, `portcullis check`,
//! reload (API, under load, invalid), SIGHUP, and SIGTERM draining.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[tokio::test]
async fn access_log_has_the_fields_and_never_a_secret() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    let secrets = [
        "SECRET1bearer",
        "SECRET2cookie",
        "SECRET3apikey",
        "SECRET4tok",
        "SECRET5key",
        "SECRET6pw",
        "SECRET7cs",
    ];
    let path = format!(
        "/api/v1/users/42?access_token={}&api_key={}&password={}&page=2&client_secret={}",
        secrets[3], secrets[4], secrets[5], secrets[6]
    );
    let headers = format!(
        "Authorization: Bearer {}\r\nCookie: session={}\r\nX-API-Key: {}\r\nUser-Agent: log-test/1.0\r\n",
        secrets[0], secrets[1], secrets[2]
    );
    let r = get(gw.http(), &path, &headers).await;
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").unwrap().to_string();
    let log = gw.log_until(&id).await;
    for s in secrets {
        assert!(!log.contains(s), "secret {s} in the access log:\n{log}");
    }
    let line = log.lines().find(|l| l.contains(&id)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/api/v1/users/42");
    assert_eq!(v["route"], "users");
    assert_eq!(v["status"], 200);
    assert_eq!(v["upstream"], "app");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert_eq!(v["user_agent"], "log-test/1.0");
    assert!(v["query"].as_str().unwrap().contains("page=2"));
    assert!(v["duration_us"].as_u64().is_some() && v["bytes"].as_u64().unwrap() > 0);
    assert!(v["ts"].as_str().unwrap().ends_with('Z'));
    // rejected requests are logged too, with the problem type
    let r = get(gw.http(), "/a/%2e%2e/b", "").await;
    let id = r.header("x-request-id").unwrap().to_string();
    let log = gw.log_until(&id).await;
    let line = log.lines().find(|l| l.contains(&id)).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["status"], 400);
    assert_eq!(v["rejection"], "bad-path");
    assert!(v["upstream"].is_null());
}

#[tokio::test]
async fn config_errors_name_their_toml_path() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[server]\nbogus = 1\n", "server.bogus"),
        (
            "[[routes]]\npath = \"/a\"\npublic = true\nmethods = [\"GET\"]\nupstream = \"nope\"\n[server.http]\nlisten = \"127.0.0.1:0\"\nmode = \"plain\"\n",
            "routes[0].upstream",
        ),
        (
            "[server.http]\nlisten = \"nonsense\"\nmode = \"plain\"\n",
            "server.http.listen",
        ),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n[server.http]\nlisten = \"127.0.0.1:0\"\nmode=\"plain\"\n",
            "server.trusted_proxies[0]",
        ),
        ("[limits]\nmax_body = \"12 parsecs\"\n", "limits.max_body"),
        (
            "[server.http]\nlisten = \"127.0.0.1:0\"\nmode = \"plain\"\n[upstreams.a]\nurl = \"http://127.0.0.1:1\"\nresponse_timeout = \"0s\"\n",
            "upstreams.a.response_timeout",
        ),
        (
            "[server.http]\nlisten = \"127.0.0.1:0\"\nmode = \"plain\"\n[cors.policies.p]\nallow_origins = [\"https://a.example/\"]\n",
            "cors.policies.p.allow_origins[0]",
        ),
        (
            "[server.http]\nlisten = \"127.0.0.1:0\"\nmode = \"redirect\"\n",
            "server.http.mode",
        ),
        (
            "[server.https]\nlisten = \"127.0.0.1:0\"\ncert = \"missing.pem\"\nkey = \"missing.pem\"\n",
            "server.https",
        ),
        (
            "[server.http]\nlisten = \"127.0.0.1:0\"\nmode = \"plain\"\n[upstreams.a]\nurl = \"http://127.0.0.1:1\"\n[[routes]]\npath = \"/a/../b\"\npublic = true\nmethods = [\"GET\"]\nupstream = \"a\"\n",
            "routes[0].path",
        ),
        (
            "[server.http]\nlisten = \"127.0.0.1:0\"\nmode = \"plain\"\n[authz.policies]\nhours = \"time.hour >=\"\n",
            "authz.policies.hours",
        ),
        (
            "[server.http]\nlisten = \"127.0.0.1:0\"\nmode = \"plain\"\n[auth.api_keys]\nhash_secret_file = \"s\"\n[upstreams.a]\nurl = \"http://127.0.0.1:1\"\n[[routes]]\npath = \"/a\"\nauth = [\"api_key\"]\nmethods = [\"GET\"]\nupstream = \"a\"\nallow_if = \"caller.team == 'x'\"\n",
            "routes[0].allow_if",
        ),
    ];
    for (text, path) in cases {
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        let err = portcullis::config::load(&f)
            .err()
            .unwrap_or_else(|| panic!("{text} compiled"));
        assert!(
            err.0.iter().any(|e| e.path == path),
            "expected an error at {path}, got {err}"
        );
        // the CLI prints it and exits 1
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("check")
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains(path));
    }
}

#[tokio::test]
async fn check_accepts_the_demo_config() {
    let dir = tempfile::tempdir().unwrap();
    let ports = portcullis::demo::DemoPorts {
        https: 8443,
        http: 8080,
        admin: 9090,
        redis: None,
    };
    portcullis::demo::write_files(dir.path(), &ports, "127.0.0.1:3000").unwrap();
    let f = dir.path().join("portcullis.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok: 10 routes"), "{stdout}");
    assert!(
        !stdout.contains("warning"),
        "the demo config should be warning-free: {stdout}"
    );
    // with --redis, the same config keeps its counts in Redis
    let ports = portcullis::demo::DemoPorts {
        redis: Some("redis://127.0.0.1:6379".into()),
        ..ports
    };
    portcullis::demo::write_files(dir.path(), &ports, "127.0.0.1:3000").unwrap();
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains("backend = \"redis\"") && text.contains("[redis]"));
    let plan = portcullis::config::load(&f).unwrap();
    assert!(plan.ratelimit.redis.is_some());
}

#[tokio::test]
async fn reload_swaps_valid_config_keeps_old_on_error_and_drops_nothing() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up, "").await;
    assert_eq!(get(gw.http(), "/new", "").await.status, 404);
    let original = std::fs::read_to_string(&gw.config).unwrap();

    // load while reloading: every request must succeed
    let addr = gw.http();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = get(addr, "/api/v1/users/1", "").await;
                assert_eq!(r.status, 200, "request failed during reload");
                n += 1;
            }
            n
        }));
    }
    let with_new = format!(
        "{original}\n[[routes]]\npath = \"/new\"\npublic = true\nmethods = [\"GET\"]\nupstream = \"app\"\n"
    );
    for i in 0..6 {
        let text = if i % 2 == 0 { &with_new } else { &original };
        std::fs::write(&gw.config, text).unwrap();
        gw.handle.reload().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(total > 20, "only {total} requests during reloads");
    // last write was `original` (i = 5): /new is gone again
    assert_eq!(get(gw.http(), "/new", "").await.status, 404);
    std::fs::write(&gw.config, &with_new).unwrap();
    gw.handle.reload().await.unwrap();
    assert_eq!(get(gw.http(), "/new", "").await.status, 200);

    // moving a listener needs a restart: refused whole, old plan keeps serving
    let moved = with_new.replacen(
        "listen = \"127.0.0.1:0\"\nmode",
        "listen = \"127.0.0.1:1\"\nmode",
        1,
    );
    assert_ne!(moved, with_new);
    std::fs::write(&gw.config, &moved).unwrap();
    let err = gw.handle.reload().await.unwrap_err();
    assert!(err.to_string().contains("server.http"), "{err}");
    assert_eq!(get(gw.http(), "/new", "").await.status, 200);

    // a broken config is refused and the old plan keeps serving
    std::fs::write(
        &gw.config,
        "[[routes]]\npath = \"/x\"\npublic = true\nbogus = true\n",
    )
    .unwrap();
    let err = gw.handle.reload().await.unwrap_err();
    assert!(err.to_string().contains("routes[0]"), "{err}");
    assert_eq!(get(gw.http(), "/new", "").await.status, 200);
}

/// Starts the real binary; returns the child and its HTTP address.
/// A spawned gateway process that is killed if the test ends early (a
/// failing assertion must not leave a process holding a port).
struct Reap(std::process::Child);

impl std::ops::Deref for Reap {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reap {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_binary(dir: &std::path::Path, cfg: &str) -> (Reap, std::net::SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let f = dir.join("portcullis.toml");
    std::fs::write(&f, cfg.replace("{port}", &port.to_string())).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&f)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    (Reap(child), addr)
}

fn binary_config(up: &Upstream, extra: &str) -> String {
    format!(
        "[server]\nwatch_config = true\nshutdown_grace = \"10s\"\n[server.http]\nlisten = \"127.0.0.1:{{port}}\"\nmode = \"behind_tls_proxy\"\n[log]\naccess = \"off\"\n[upstreams.app]\nurl = \"http://{}\"\n[[routes]]\npath = \"/slow\"\npublic = true\nmethods = [\"GET\"]\nupstream = \"app\"\n{extra}",
        up.addr
    )
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn sighup_and_file_change_reload_the_binary() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_binary(dir.path(), &binary_config(&up, ""));
    assert_eq!(get(addr, "/api/v1/users/1", "").await.status, 404);
    let port = addr.port().to_string();
    let route = "[[routes]]\npath = \"/api/v1/users/{id}\"\npublic = true\nmethods = [\"GET\"]\nupstream = \"app\"\n";
    let text = binary_config(&up, route).replace("{port}", &port);
    std::fs::write(dir.path().join("portcullis.toml"), text).unwrap();
    signal(&child, "-HUP");
    let mut ok = false;
    for _ in 0..100 {
        if get(addr, "/api/v1/users/1", "").await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(ok, "SIGHUP/file change did not load the new route");
    // a file change alone (no signal) reloads too
    let text = binary_config(&up, "").replace("{port}", &port);
    std::fs::write(dir.path().join("portcullis.toml"), text).unwrap();
    let mut gone = false;
    for _ in 0..150 {
        if get(addr, "/api/v1/users/1", "").await.status == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(gone, "file change did not reload");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_binary(dir.path(), &binary_config(&up, ""));
    // /slow takes 3 s upstream
    let inflight = tokio::spawn(async move { get(addr, "/slow", "").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "-TERM");
    let r = inflight.await.unwrap();
    assert_eq!(r.status, 200, "in-flight request was not drained");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // and no longer accepting
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test]
async fn demo_command_serves_the_sample_api_behind_the_gateway() {
    // Hold all three listeners while choosing, so no port is handed out twice.
    let held: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(held);
    let (https_port, http_port, admin_port) = (ports[0], ports[1], ports[2]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Reap(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "demo",
                "--https-port",
                &https_port.to_string(),
                "--http-port",
                &http_port.to_string(),
                "--admin-port",
                &admin_port.to_string(),
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http: std::net::SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let mut up = false;
    for _ in 0..400 {
        if std::net::TcpStream::connect(http).is_ok()
            && dir.path().join("credentials.json").exists()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "demo did not start");
    for f in [
        "portcullis.toml",
        "cert.pem",
        "key.pem",
        "credentials.json",
        "portcullis.db",
    ] {
        assert!(dir.path().join(f).exists(), "{f} not written");
    }
    let r = get(http, "/health", "").await;
    assert_eq!(r.status, 308);
    // over TLS, through the real certificate the demo wrote
    let cfg = tls_client(
        &dir.path().join("cert.pem"),
        &[b"http/1.1"],
        &[&rustls::version::TLS13],
    );
    let https: std::net::SocketAddr = format!("127.0.0.1:{https_port}").parse().unwrap();
    let creds: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("credentials.json")).unwrap(),
    )
    .unwrap();
    let key = creds["api_keys"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(creds["users"].as_array().unwrap().len(), 3);
    assert!(creds["admin_token"].as_str().unwrap().len() >= 32);
    let fetch = |path: &'static str, auth: bool| {
        let cfg = cfg.clone();
        let h = if auth {
            format!("X-API-Key: {key}\r\n")
        } else {
            String::new()
        };
        async move {
            use tokio::io::AsyncWriteExt;
            let mut s = tls_connect(https, cfg).await.unwrap();
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{h}Connection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            read_response(&mut s).await
        }
    };
    assert_problem(
        &fetch("/api/v1/users/u-alice", false).await,
        401,
        "unauthenticated",
    );
    // the key's owner is a service, not u-alice: someone else's user object is 404
    assert_problem(
        &fetch("/api/v1/users/u-alice", true).await,
        404,
        "not-found",
    );
    let r = fetch("/api/v1/documents", true).await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-powered-by").is_none() && r.header("server").is_none());
    assert_problem(&fetch("/internal/debug", true).await, 404, "not-found");
    let r = fetch("/api/v1/documents/boom", true).await;
    assert_problem(&r, 500, "upstream-error");
    assert!(!r.text().contains("s3cr3t"));
    assert!(r.header("x-debug-query").is_none());

    // The demo's authorization, as alice (user, finance), bob (user,
    // engineering) and carol (admin, operations) see it.
    let send = |method: &'static str, path: String, auth: String, body: String| {
        let cfg = cfg.clone();
        async move {
            use tokio::io::AsyncWriteExt;
            let mut s = tls_connect(https, cfg).await.unwrap();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            read_response(&mut s).await
        }
    };
    let mut bearer = std::collections::HashMap::new();
    for u in creds["users"].as_array().unwrap() {
        let body = serde_json::json!({"username": u["username"], "password": u["password"]});
        let r = send(
            "POST",
            "/auth/login".into(),
            String::new(),
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let t = r.json()["access_token"].as_str().unwrap().to_string();
        bearer.insert(
            u["username"].as_str().unwrap().to_string(),
            format!("Authorization: Bearer {t}\r\n"),
        );
    }
    let as_ = |who: &str| bearer[who].clone();
    let r = send(
        "GET",
        "/api/v1/documents".into(),
        as_("alice"),
        String::new(),
    )
    .await;
    let owners: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["owner_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(owners, ["u-alice", "u-alice"]);
    let r = send(
        "GET",
        "/api/v1/documents".into(),
        as_("carol"),
        String::new(),
    )
    .await;
    // the page size comes from openapi.yaml: 20 unless asked, 100 at most
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 20);
    let r = send(
        "GET",
        "/api/v1/documents?limit=100000".into(),
        as_("carol"),
        String::new(),
    )
    .await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 100);
    // the demo's limits: the tightest (100 a minute per user) is reported
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert!(
        r.header("ratelimit-policy")
            .unwrap()
            .starts_with("\"api_per_user\"")
    );
    let get = |who: &str, path: &str| send("GET", path.to_string(), as_(who), String::new());
    // the sample API's user object, cut down to the schema
    let r = get("alice", "/api/v1/users/u-alice").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["username"], "alice");
    for leak in [
        "password_hash",
        "mfa_secret",
        "internal_flags",
        "admin_notes",
        "argon2",
        "risk_score", // on no redaction list: only the schema removes it
    ] {
        assert!(!r.text().contains(leak), "{leak} leaked: {}", r.text());
    }
    // mass assignment: alice may not make herself an admin
    for body in [
        r#"{"role":"admin"}"#,
        r#"{"isAdmin":true}"#,
        r#"{"bio":"hi","password_hash":"x"}"#,
    ] {
        let r = send(
            "PUT",
            "/api/v1/users/u-alice".into(),
            as_("alice"),
            body.into(),
        )
        .await;
        assert_problem(&r, 400, "validation-failed");
    }
    let r = send(
        "PUT",
        "/api/v1/users/u-alice".into(),
        as_("alice"),
        r#"{"bio":"hi"}"#.into(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bio"], "hi");
    let r = send(
        "PUT",
        "/api/v1/users/u-bob".into(),
        as_("carol"),
        r#"{"role":"admin"}"#.into(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // posts are validated against the document
    let long_tags: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
    for bad in [
        serde_json::json!({"author_id": "u-alice", "title": "", "content": "x"}),
        serde_json::json!({"author_id": "u-alice", "title": "t", "content": "x", "tags": long_tags}),
        serde_json::json!({"author_id": "u-alice", "title": "t", "content": "x", "publishedAt": "soon"}),
    ] {
        let r = send(
            "POST",
            "/api/v1/posts".into(),
            as_("alice"),
            bad.to_string(),
        )
        .await;
        assert_problem(&r, 400, "validation-failed");
    }
    let ok = serde_json::json!({"author_id": "u-alice", "title": "t", "content": "x", "tags": ["a"], "publishedAt": "2026-11-23T10:00:00Z"});
    let r = send("POST", "/api/v1/posts".into(), as_("alice"), ok.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // versions: the header selects one, v0 is retired
    let r = send(
        "GET",
        "/api/users/u-alice".into(),
        format!("{}Api-Version: 1\r\n", as_("alice")),
        String::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get("alice", "/api/v0/users/u-alice").await;
    assert_problem(&r, 410, "version-retired");
    assert_eq!(r.json()["successor"], "/api/v1");
    assert_problem(
        &get("alice", "/api/v1/internal/debug").await,
        404,
        "not-found",
    );
    assert_problem(&get("alice", "/api/v1/users/u-bob").await, 404, "not-found");
    assert_eq!(get("carol", "/api/v1/users/u-bob").await.status, 200);
    assert_problem(
        &get("alice", "/api/v1/documents/d-3").await,
        404,
        "not-found",
    );
    assert_eq!(get("bob", "/api/v1/documents/d-3").await.status, 200);
    // finance documents only for finance people, admins included
    assert_eq!(get("alice", "/api/v1/documents/d-2").await.status, 200);
    assert_problem(
        &get("carol", "/api/v1/documents/d-2").await,
        404,
        "not-found",
    );
    assert_eq!(get("carol", "/api/v1/documents/d-3").await.status, 200);
    assert_problem(&get("alice", "/api/v1/admin/stats").await, 403, "forbidden");
    assert_eq!(get("carol", "/api/v1/admin/stats").await.status, 200);
    let edit = send(
        "PUT",
        "/api/v1/documents/d-3".into(),
        as_("alice"),
        r#"{"title":"pwned"}"#.into(),
    )
    .await;
    assert_problem(&edit, 404, "not-found");
    assert_eq!(
        get("bob", "/api/v1/documents/d-3").await.json()["title"],
        "Bob's plan"
    );
    let post = send(
        "POST",
        "/api/v1/posts".into(),
        as_("alice"),
        r#"{"author_id":"u-bob","title":"hi"}"#.into(),
    )
    .await;
    assert_problem(&post, 403, "forbidden");
    let del = send(
        "DELETE",
        "/api/v1/users/u-alice".into(),
        as_("bob"),
        String::new(),
    )
    .await;
    assert_problem(&del, 403, "forbidden");
    signal(&child, "-TERM");
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn tls_handshake_timeout_closes_silent_connections() {
    let up = Upstream::start().await;
    let cfg = base_config("", "behind_tls_proxy").replace(
        "key = \"key.pem\"",
        "key = \"key.pem\"\nhandshake_timeout = \"300ms\"",
    );
    let gw = Gateway::start_raw(&up, &format!("{cfg}{ROUTES}"))
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(gw.https()).await.unwrap();
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    use tokio::io::AsyncReadExt;
    let res = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(res.is_ok(), "silent TLS connection was never closed");
    assert!(t.elapsed() < Duration::from_secs(2));
}

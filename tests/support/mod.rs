//! Test support: a real gateway on 127.0.0.1:0 built from a TOML string
//! through the real compile step, a real in-process hyper upstream that
//! records what reaches it, and clients that speak raw HTTP/1.1 (so malformed
//! requests can be sent byte for byte), HTTP/1.1 and HTTP/2 over TLS.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::server::{Handle, Server};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
    pub peer: SocketAddr,
}

/// A real hyper upstream. Paths: `/slow*` sleeps 3 s, `/error*` answers 500
/// with a stack trace, `*/big` streams 1 MiB, anything else echoes as JSON and
/// adds leaky headers.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let seen = s2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| upstream_handle(seen.clone(), peer, req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
}

async fn upstream_handle(
    seen: Arc<Mutex<Vec<Seen>>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let uri = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: parts.headers.clone(),
        body_len: body.len(),
        peer,
    });
    let path = parts.uri.path();
    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path.starts_with("/error") {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"Traceback (most recent call last): File \"/srv/app.py\", line 3 DB_PASSWORD=hunter2",
        )));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert("retry-after", "30".parse().unwrap());
        r.headers_mut()
            .insert("x-debug-sql", "SELECT 1".parse().unwrap());
        return Ok(r);
    }
    if path.ends_with("/raw") {
        // The answer the test asks for: body and type from request headers.
        let text = parts
            .headers
            .get("x-respond-body")
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let mut r = Response::new(Full::new(Bytes::from(text)));
        if let Some(t) = parts.headers.get("x-respond-type") {
            r.headers_mut().insert("content-type", t.clone());
        }
        return Ok(r);
    }
    if path.ends_with("/big") {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20]))));
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let json = serde_json::json!({"method": parts.method.as_str(), "uri": uri, "headers": headers, "body_len": body.len()});
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())));
    let h = r.headers_mut();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("server", "Apache/2.4.1 (Unix)".parse().unwrap());
    h.insert("x-powered-by", "PHP/5.6".parse().unwrap());
    h.insert("x-aspnet-version", "4.0.30319".parse().unwrap());
    h.insert("x-debug-token", "abc".parse().unwrap());
    h.insert("x-internal", "secret".parse().unwrap());
    h.insert("x-trace-id", "abc".parse().unwrap());
    h.insert("access-control-allow-origin", "*".parse().unwrap());
    h.insert(
        "connection",
        "x-internal, strict-transport-security".parse().unwrap(),
    );
    Ok(r)
}

/// A running gateway.
pub struct Gateway {
    pub https: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub handle: Handle,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

/// The base config most tests use: TLS on 127.0.0.1:0, an HTTP listener in
/// `behind_tls_proxy` mode, the access log in `access.log`, and one upstream.
pub fn base_config(server_extra: &str, http_mode: &str) -> String {
    format!(
        r#"
[server]
watch_config = false
{server_extra}

[server.https]
listen = "127.0.0.1:0"
cert = "cert.pem"
key = "key.pem"

[server.http]
listen = "127.0.0.1:0"
mode = "{http_mode}"

[log]
access = "access.log"
level = "warn"

[upstreams.app]
url = "http://{{upstream}}"
connect_timeout = "1s"
response_timeout = "5s"
"#
    )
}

/// Routes used by most tests.
pub const ROUTES: &str = r#"
[[routes]]
name = "users"
path = "/api/v1/users/{id}"
public = true
methods = ["GET", "PUT", "DELETE"]
upstream = "app"

[[routes]]
name = "posts"
path = "/api/v1/posts"
public = true
methods = ["POST"]
upstream = "app"

[[routes]]
name = "catch"
path = "/files/{*rest}"
public = true
methods = ["GET"]
upstream = "app"

[[routes]]
name = "slow"
path = "/slow"
public = true
methods = ["GET"]
upstream = "app"
timeout = "300ms"

[[routes]]
name = "error"
path = "/error"
public = true
methods = ["GET"]
upstream = "app"

[[routes]]
name = "big"
path = "/big"
public = true
methods = ["GET"]
upstream = "app"
"#;

impl Gateway {
    /// Starts with `base_config("", "behind_tls_proxy")` + `ROUTES` + `extra`.
    pub async fn start(up: &Upstream, extra: &str) -> Self {
        let cfg = format!("{}{}{}", base_config("", "behind_tls_proxy"), ROUTES, extra);
        Self::start_raw(up, &cfg).await.unwrap()
    }

    /// Starts from a whole config (`{upstream}` is replaced).
    pub async fn start_raw(up: &Upstream, cfg: &str) -> Result<Self, String> {
        Self::start_raw_with(up, cfg, &[]).await
    }

    /// As `start_raw`, with extra files written next to the config first.
    pub async fn start_raw_with(
        up: &Upstream,
        cfg: &str,
        files: &[(&str, &str)],
    ) -> Result<Self, String> {
        portcullis::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        portcullis::demo::ensure_cert(dir.path()).unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let config = dir.path().join("portcullis.toml");
        std::fs::write(&config, cfg.replace("{upstream}", &up.addr.to_string())).unwrap();
        let plan = portcullis::config::load(&config).map_err(|e| e.to_string())?;
        let server = Server::bind(plan, Some(config.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let (https, http, admin) = (server.https_addr(), server.http_addr(), server.admin_addr());
        let handle = server.handle();
        tokio::spawn(server.run());
        Ok(Self {
            https,
            http,
            admin,
            handle,
            dir,
            config,
        })
    }

    pub fn http(&self) -> SocketAddr {
        self.http.unwrap()
    }

    pub fn https(&self) -> SocketAddr {
        self.https.unwrap()
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Access log lines, waiting (bounded) until one mentions `needle`.
    pub async fn log_until(&self, needle: &str) -> String {
        let path = self.dir.path().join("access.log");
        for _ in 0..100 {
            let s = std::fs::read_to_string(&path).unwrap_or_default();
            if s.contains(needle) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("access log never mentioned {needle:?}")
    }
}

/// A parsed raw response.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Asserts an RFC 9457 problem response.
pub fn assert_problem(r: &Raw, status: u16, slug: &str) {
    assert_eq!(r.status, status, "status; body: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let v = r.json();
    assert_eq!(v["status"], status);
    assert_eq!(v["type"], format!("urn:portcullis:problem:{slug}"), "{v}");
    assert!(v["title"].is_string() && v["detail"].is_string());
    let id = r.header("x-request-id").expect("x-request-id");
    assert_eq!(v["instance"], format!("urn:portcullis:request:{id}"));
}

/// Sends raw bytes over plain TCP and reads the response (until close).
pub async fn raw(addr: SocketAddr, req: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req).await.unwrap();
    read_response(&mut s).await
}

/// A GET with `Connection: close` and extra header lines.
pub async fn get(addr: SocketAddr, path: &str, headers: &str) -> Raw {
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n{headers}Connection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Raw {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> Raw {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no response head");
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
    out
}

/// A TLS client config trusting the gateway's self-signed certificate.
pub fn tls_client(
    cert: &std::path::Path,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

pub async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

/// Raw HTTP/1.1 over TLS.
pub async fn raw_tls(gw: &Gateway, req: &[u8]) -> Raw {
    let cfg = tls_client(&gw.cert(), &[b"http/1.1"], &[&rustls::version::TLS13]);
    let mut s = tls_connect(gw.https(), cfg).await.unwrap();
    s.write_all(req).await.unwrap();
    read_response(&mut s).await
}

/// One request over TLS with hyper's client, HTTP/2 when `h2`.
pub async fn hyper_tls(gw: &Gateway, h2: bool, req: Request<Full<Bytes>>) -> (http::Version, Raw) {
    let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
    let cfg = tls_client(
        &gw.cert(),
        alpn,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let tls = tls_connect(gw.https(), cfg).await.unwrap();
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let version = resp.version();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (
        version,
        Raw {
            status,
            headers,
            body,
        },
    )
}

/// Runs `portcullis users <args..> --config <gw config>` with `stdin`;
/// returns success and stdout+stderr.
pub fn users_cli(gw: &Gateway, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("users")
        .args(args.iter().take(1))
        .arg("--config")
        .arg(&gw.config)
        .args(args.iter().skip(1))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Adds a user through the CLI (asserting success).
pub fn add_user(gw: &Gateway, name: &str, password: &str, roles: &str) {
    let (ok, out) = users_cli(
        gw,
        &["add", "--username", name, "--roles", roles],
        &format!("{password}\n"),
    );
    assert!(ok, "{out}");
}

/// `[auth.jwt]` with one HS256 issuer (`https://idp.test`, audience `api`)
/// whose secret is the file `jwt-secret` next to the config.
pub const HS256_ISSUER: &str = r#"
[auth.jwt]
[[auth.jwt.issuers]]
issuer = "https://idp.test"
audiences = ["api"]
algorithms = ["HS256"]
secret_file = "jwt-secret"
"#;

/// Unix seconds now.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for [`HS256_ISSUER`]: `iss`, `aud` and a 10-minute `exp`
/// are added to `claims`.
pub fn hs256_token(secret: &str, mut claims: serde_json::Value) -> String {
    claims["iss"] = "https://idp.test".into();
    claims["aud"] = "api".into();
    claims["exp"] = (now_s() + 600).into();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

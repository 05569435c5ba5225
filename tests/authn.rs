//! Authentication: bearer JWTs against the real gateway, including the
//! attacks a security engineer would try.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use support::*;

const ISS: &str = "https://idp.test";
const AUD: &str = "portcullis-api";

/// An ES256 key pair: the signing key and its public JWK.
struct EcKey {
    enc: EncodingKey,
    x: String,
    y: String,
    pem_public: String,
}

fn ec_key() -> EcKey {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    EcKey {
        enc: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        x: URL_SAFE_NO_PAD.encode(&raw[1..33]),
        y: URL_SAFE_NO_PAD.encode(&raw[33..65]),
        pem_public: kp.public_key_pem(),
    }
}

fn jwks(keys: &[(&str, &EcKey)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, k)| json!({"kty": "EC", "crv": "P-256", "x": k.x, "y": k.y, "kid": kid, "alg": "ES256", "use": "sig"}))
        .collect();
    json!({ "keys": keys }).to_string()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(sub: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "exp": now() + 600, "iat": now(),
           "roles": ["user", "editor"], "scope": "documents:read documents:write"})
}

/// Signs exactly the header and claims given (so tests can forge anything).
fn mint_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
    format!("{msg}.{sig}")
}

fn mint(key: &EcKey, kid: &str, claims: &Value) -> String {
    mint_raw(
        &json!({"alg": "ES256", "typ": "JWT", "kid": kid}),
        claims,
        &key.enc,
        Algorithm::ES256,
    )
}

const ROUTE: &str = r#"
[[routes]]
path = "/private/{id}"
methods = ["GET"]
upstream = "app"
auth = ["jwt"]
"#;

fn issuer_cfg(source: &str) -> String {
    format!(
        r#"
[auth.jwt]
leeway = "30s"

[[auth.jwt.issuers]]
issuer = "{ISS}"
audiences = ["{AUD}"]
algorithms = ["ES256"]
{source}
"#
    )
}

async fn gateway_with_file(up: &Upstream, set: &str) -> (Gateway, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let f = keys.path().join("jwks.json");
    std::fs::write(&f, set).unwrap();
    let cfg = format!(
        "{}{}{}{}",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        ROUTE,
        issuer_cfg(&format!("jwks_file = {:?}", f.display().to_string()))
    );
    (Gateway::start_raw(up, &cfg).await.unwrap(), keys)
}

async fn call(gw: &Gateway, auth: Option<&str>) -> Raw {
    let h = auth
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    get(gw.http(), "/private/7", &h).await
}

fn assert_401(r: &Raw, invalid: bool) {
    assert_problem(r, 401, "unauthenticated");
    let www = r.header("www-authenticate").expect("WWW-Authenticate");
    assert!(www.starts_with("Bearer realm=\"portcullis\""), "{www}");
    assert_eq!(www.contains("error=\"invalid_token\""), invalid, "{www}");
    assert_eq!(
        r.json()["detail"],
        "authentication is required to access this resource"
    );
}

#[tokio::test]
async fn valid_token_passes_with_identity_headers_and_spoofing_is_stripped() {
    let up = Upstream::start().await;
    let k = ec_key();
    let (gw, _keys) = gateway_with_file(&up, &jwks(&[("k1", &k)])).await;
    let t = mint(&k, "k1", &claims("alice"));
    let r = get(
        gw.http(),
        "/private/7",
        &format!(
            "Authorization: Bearer {t}\r\nX-Portcullis-User: root\r\nX-Portcullis-Roles: admin\r\n"
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last();
    assert_eq!(seen.headers["x-portcullis-user"], "alice");
    assert_eq!(seen.headers["x-portcullis-roles"], "user,editor");
    assert_eq!(
        seen.headers["x-portcullis-scopes"],
        "documents:read documents:write"
    );
    assert_eq!(seen.headers["x-portcullis-auth"], "jwt");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // on a public route the spoofed headers are stripped too, and none are set
    let r = get(gw.http(), "/api/v1/users/1", "X-Portcullis-User: root\r\n").await;
    assert_eq!(r.status, 200);
    assert!(!up.last().headers.contains_key("x-portcullis-user"));
    // the access log names the user, never the token
    let id = get(
        gw.http(),
        "/private/7",
        &format!("Authorization: Bearer {t}\r\n"),
    )
    .await;
    let rid = id.header("x-request-id").unwrap().to_string();
    let log = gw.log_until(&rid).await;
    let line = log.lines().find(|l| l.contains(&rid)).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(line).unwrap()["user"],
        "alice"
    );
    assert!(!log.contains(&t));
}

#[tokio::test]
async fn missing_credentials_get_401_without_invalid_token() {
    let up = Upstream::start().await;
    let k = ec_key();
    let (gw, _keys) = gateway_with_file(&up, &jwks(&[("k1", &k)])).await;
    assert_401(&call(&gw, None).await, false);
    // another scheme is not this method's credential
    assert_401(
        &get(gw.http(), "/private/7", "Authorization: Basic YTpi\r\n").await,
        false,
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn forged_and_invalid_tokens_are_refused() {
    let up = Upstream::start().await;
    let k = ec_key();
    let other = ec_key();
    let (gw, _keys) = gateway_with_file(&up, &jwks(&[("k1", &k), ("k2", &other)])).await;
    let good = claims("alice");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        mint(&k, "k1", &c)
    };
    let hs_with_public_key = mint_raw(
        &json!({"alg": "HS256", "kid": "k1"}),
        &good,
        &EncodingKey::from_secret(k.pem_public.as_bytes()),
        Algorithm::HS256,
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none"}).to_string()),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let header_with = |extra: Value| {
        let mut h = json!({"alg": "ES256", "kid": "k1"});
        for (name, v) in extra.as_object().unwrap() {
            h[name] = v.clone();
        }
        mint_raw(&h, &good, &k.enc, Algorithm::ES256)
    };
    let good_token = mint(&k, "k1", &good);
    let tampered = {
        let mut parts: Vec<String> = good_token.split('.').map(String::from).collect();
        let mut c = good.clone();
        c["sub"] = json!("carol");
        parts[1] = URL_SAFE_NO_PAD.encode(c.to_string());
        parts.join(".")
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", none),
        ("HS256 signed with the public key", hs_with_public_key),
        ("unknown kid", mint(&k, "nope", &good)),
        (
            "no kid with two keys",
            mint_raw(&json!({"alg": "ES256"}), &good, &k.enc, Algorithm::ES256),
        ),
        ("signed by the other key", mint(&other, "k1", &good)),
        (
            "jku header",
            header_with(json!({"jku": "https://evil.example/jwks.json"})),
        ),
        (
            "x5u header",
            header_with(json!({"x5u": "https://evil.example/cert.pem"})),
        ),
        (
            "embedded jwk",
            header_with(json!({"jwk": {"kty": "EC", "crv": "P-256", "x": other.x, "y": other.y}})),
        ),
        ("x5c header", header_with(json!({"x5c": ["MIIB"]}))),
        ("crit header", header_with(json!({"crit": ["exp"]}))),
        ("expired", with(&|c| c["exp"] = json!(now() - 120))),
        ("not yet valid", with(&|c| c["nbf"] = json!(now() + 600))),
        (
            "issued in the future",
            with(&|c| c["iat"] = json!(now() + 600)),
        ),
        (
            "string exp",
            with(&|c| c["exp"] = json!((now() + 600).to_string())),
        ),
        (
            "missing exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        ("string nbf", with(&|c| c["nbf"] = json!("0"))),
        (
            "wrong iss",
            with(&|c| c["iss"] = json!("https://evil.test")),
        ),
        (
            "missing iss",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        ("wrong aud", with(&|c| c["aud"] = json!("someone-else"))),
        (
            "aud list without ours",
            with(&|c| c["aud"] = json!(["a", "b"])),
        ),
        ("numeric aud", with(&|c| c["aud"] = json!(5))),
        (
            "missing sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("oversized", with(&|c| c["pad"] = json!("x".repeat(9000)))),
        ("tampered payload", tampered),
        ("two parts", "abc.def".into()),
        ("garbage", "not-a-token".into()),
        ("bad base64", "a$b.c.d".into()),
    ];
    for (name, token) in &cases {
        let r = call(&gw, Some(token)).await;
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert_401(&r, true);
        assert!(
            !r.text().contains(token.as_str()) || token.is_empty(),
            "{name}: token echoed"
        );
    }
    // audience list containing ours is fine; so is the same token again
    assert_eq!(
        call(&gw, Some(&with(&|c| c["aud"] = json!(["x", AUD]))))
            .await
            .status,
        200
    );
    // two Authorization headers are ambiguous: refused
    let r = get(
        gw.http(),
        "/private/7",
        &format!("Authorization: Bearer {good_token}\r\nAuthorization: Bearer {good_token}\r\n"),
    )
    .await;
    assert_401(&r, true);
    assert_eq!(up.count(), 1, "a refused token reached the upstream");
}

#[tokio::test]
async fn verified_tokens_are_cached() {
    let up = Upstream::start().await;
    let k = ec_key();
    let (gw, _keys) = gateway_with_file(&up, &jwks(&[("k1", &k)])).await;
    let t = mint(&k, "k1", &claims("bob"));
    let checks = |gw: &Gateway| {
        gw.handle
            .plan()
            .authn
            .jwt
            .as_ref()
            .unwrap()
            .signature_checks
            .load(Ordering::Relaxed)
    };
    for _ in 0..20 {
        assert_eq!(call(&gw, Some(&t)).await.status, 200);
    }
    assert_eq!(
        checks(&gw),
        1,
        "a repeated token must cost one signature check"
    );
    // a different token is checked
    let t2 = mint(&k, "k1", &claims("carol"));
    assert_eq!(call(&gw, Some(&t2)).await.status, 200);
    assert_eq!(checks(&gw), 2);
}

#[tokio::test]
async fn route_without_public_or_auth_does_not_compile() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}[[routes]]\npath = \"/x\"\nmethods = [\"GET\"]\nupstream = \"app\"\n",
        base_config("", "behind_tls_proxy")
    );
    let err = Gateway::start_raw(&up, &cfg).await.err().unwrap();
    assert!(err.contains("routes[0].auth"), "{err}");
    let cfg = format!(
        "{}[[routes]]\npath = \"/x\"\nmethods = [\"GET\"]\nupstream = \"app\"\nauth = [\"jwt\"]\n",
        base_config("", "behind_tls_proxy")
    );
    let err = Gateway::start_raw(&up, &cfg).await.err().unwrap();
    assert!(err.contains("[auth.jwt]"), "{err}");
    // HS256 without a secret, http:// JWKS URL
    for (source, algs, needle) in [
        (
            "jwks_url = \"http://idp.test/jwks\"",
            "[\"ES256\"]",
            "jwks_url",
        ),
        (
            "jwks_url = \"https://idp.test/jwks\"",
            "[\"HS256\"]",
            "algorithms",
        ),
        ("", "[\"ES256\"]", "exactly one"),
    ] {
        let cfg = format!(
            "{}{}{ROUTE}\n[auth.jwt]\n[[auth.jwt.issuers]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\nalgorithms = {algs}\n{source}\n",
            base_config("", "behind_tls_proxy"),
            ROUTES
        );
        let err = Gateway::start_raw(&up, &cfg).await.err().unwrap();
        assert!(err.contains(needle), "{source}: {err}");
    }
}

/// An HTTPS JWKS endpoint whose document the test can change; counts fetches.
struct Idp {
    port: u16,
    doc: Arc<Mutex<String>>,
    fetches: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn idp(initial: String, max_age: u64) -> Idp {
    let dir = tempfile::tempdir().unwrap();
    portcullis::demo::ensure_cert(dir.path()).unwrap();
    let cert = dir.path().join("cert.pem");
    let certs: Vec<_> = rustls_pki_types::pem::PemObject::pem_file_iter(&cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pki_types::pem::PemObject::from_pem_file(dir.path().join("key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let doc = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicU64::new(0));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let (d2, f2, w2) = (doc.clone(), fetches.clone(), delay_ms.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, doc, fetches, delay) =
                (acceptor.clone(), d2.clone(), f2.clone(), w2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |_req| {
                    fetches.fetch_add(1, Ordering::Relaxed);
                    let body = doc.lock().unwrap().clone();
                    let wait = Duration::from_millis(delay.load(Ordering::Relaxed));
                    async move {
                        tokio::time::sleep(wait).await;
                        let mut r = http::Response::new(Full::new(Bytes::from(body)));
                        r.headers_mut().insert(
                            "cache-control",
                            format!("max-age={max_age}").parse().unwrap(),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Idp {
        port,
        doc,
        fetches,
        delay_ms,
        ca: cert,
        _dir: dir,
    }
}

async fn gateway_with_idp(up: &Upstream, idp: &Idp) -> Gateway {
    let source = format!(
        "jwks_url = \"https://localhost:{}/jwks.json\"\nca_file = {:?}\nmin_refetch_interval = \"1s\"\nrefresh_interval = \"1h\"",
        idp.port,
        idp.ca.display().to_string()
    );
    let cfg = format!(
        "{}{}{}{}",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        ROUTE,
        issuer_cfg(&source)
    );
    Gateway::start_raw(up, &cfg).await.unwrap()
}

#[tokio::test]
async fn remote_jwks_rotation_and_unknown_kid_flood() {
    let up = Upstream::start().await;
    let (a, b) = (ec_key(), ec_key());
    let idp = idp(jwks(&[("a", &a)]), 2).await;
    let gw = gateway_with_idp(&up, &idp).await;
    let ta = mint(&a, "a", &claims("alice"));
    assert_eq!(call(&gw, Some(&ta)).await.status, 200);

    // unknown-kid flood: at most one refetch per min_refetch_interval (1 s)
    let before = idp.fetches.load(Ordering::Relaxed);
    for i in 0..50 {
        let t = mint(&a, &format!("made-up-{i}"), &claims("mallory"));
        assert_401(&call(&gw, Some(&t)).await, true);
    }
    let flood = idp.fetches.load(Ordering::Relaxed) - before;
    assert!(flood <= 1, "{flood} JWKS fetches for 50 unknown kids");

    // rotation: the IdP adds key b; a token with kid b triggers one refetch
    *idp.doc.lock().unwrap() = jwks(&[("a", &a), ("b", &b)]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tb = mint(&b, "b", &claims("bob"));
    assert_eq!(
        call(&gw, Some(&tb)).await.status,
        200,
        "new key not picked up"
    );
    // the IdP drops key a; after max-age (2 s) the set is refreshed and
    // cached tokens signed by a are checked again, and refused
    // ta is verified (and cached) right before the IdP drops key a
    assert_eq!(call(&gw, Some(&ta)).await.status, 200);
    *idp.doc.lock().unwrap() = jwks(&[("b", &b)]);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // the first request after max-age is answered with the keys at hand and
    // starts a background refresh (known kids never wait for the IdP)
    assert_eq!(call(&gw, Some(&tb)).await.status, 200);
    let mut refused = false;
    for _ in 0..40 {
        let r = call(&gw, Some(&ta)).await;
        if r.status == 401 {
            assert_401(&r, true);
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused,
        "a token signed by a removed key was still accepted after the refresh"
    );
    assert_eq!(call(&gw, Some(&tb)).await.status, 200);
}

#[tokio::test]
async fn a_slow_idp_does_not_stall_requests_with_known_keys() {
    let up = Upstream::start().await;
    let a = ec_key();
    let idp = idp(jwks(&[("a", &a)]), 1).await;
    let gw = gateway_with_idp(&up, &idp).await;
    let ta = mint(&a, "a", &claims("alice"));
    assert_eq!(call(&gw, Some(&ta)).await.status, 200);
    // the IdP now takes 3 s to answer; the keys go stale after 1 s
    idp.delay_ms.store(3000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before = idp.fetches.load(Ordering::Relaxed);
    let t = std::time::Instant::now();
    for i in 0..20 {
        // a fresh token each time: no cache hit, the keys are consulted
        let fresh = mint(&a, "a", &claims(&format!("user{i}")));
        assert_eq!(call(&gw, Some(&fresh)).await.status, 200);
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "requests waited for the JWKS refresh: {:?}",
        t.elapsed()
    );
    // and exactly one refresh was started for all of them
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idp.fetches.load(Ordering::Relaxed) - before, 1);
}

#[tokio::test]
async fn review_fixes_hold() {
    let up = Upstream::start().await;
    let k = ec_key();
    let (gw, _keys) = gateway_with_file(&up, &jwks(&[("k1", &k)])).await;
    // underscore spellings of gateway-owned headers never reach the upstream
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "X_Portcullis_User: root\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    for h in ["x_portcullis_user", "x_forwarded_for", "x_real_ip"] {
        assert!(!seen.headers.contains_key(h), "{h} reached the upstream");
    }
    // the issuer is named, so subjects of different issuers cannot collide
    let t = mint(&k, "k1", &claims("alice"));
    assert_eq!(call(&gw, Some(&t)).await.status, 200);
    assert_eq!(up.last().headers["x-portcullis-issuer"], ISS);
    // identities whose values would read differently upstream are refused
    for bad in [
        json!({"roles": ["user,admin"]}),
        json!({"roles": ["user admin"]}),
        json!({"scope": ["read admin"]}),
        json!({"sub": "admin "}),
        json!({"sub": "ädmin"}),
    ] {
        let mut c = claims("alice");
        for (key, v) in bad.as_object().unwrap() {
            c[key] = v.clone();
        }
        assert_401(&call(&gw, Some(&mint(&k, "k1", &c))).await, true);
    }
    // within the leeway an expired token still passes; beyond it, not
    let mut c = claims("alice");
    c["exp"] = json!(now() - 10);
    assert_eq!(call(&gw, Some(&mint(&k, "k1", &c))).await.status, 200);
    c["exp"] = json!(now() - 40);
    assert_401(&call(&gw, Some(&mint(&k, "k1", &c))).await, true);
}

#[tokio::test]
async fn key_family_must_match_the_algorithm_and_pem_keys_take_any_kid() {
    let up = Upstream::start().await;
    let k = ec_key();
    let keys = tempfile::tempdir().unwrap();
    let pem = keys.path().join("pub.pem");
    std::fs::write(&pem, &k.pem_public).unwrap();
    let source = format!("pem_file = {:?}", pem.display().to_string());
    let cfg = format!(
        "{}{}{}{}",
        base_config("", "behind_tls_proxy"),
        ROUTES,
        ROUTE,
        issuer_cfg(&source).replace(
            "algorithms = [\"ES256\"]",
            "algorithms = [\"RS256\", \"ES256\"]"
        )
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    // a PEM key serves tokens with whatever kid the IdP puts in
    assert_eq!(
        call(&gw, Some(&mint(&k, "any-kid", &claims("alice"))))
            .await
            .status,
        200
    );
    // RS256 is allowed for this issuer, but the key is EC: refused before
    // any signature work (no algorithm confusion)
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims("alice").to_string());
    let forged = format!("{header}.{body}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));
    assert_401(&call(&gw, Some(&forged)).await, true);
    let checks = gw
        .handle
        .plan()
        .authn
        .jwt
        .as_ref()
        .unwrap()
        .signature_checks
        .load(Ordering::Relaxed);
    assert_eq!(
        checks, 1,
        "the mismatched token reached the signature check"
    );
}

#[tokio::test]
async fn configured_identity_headers_are_stripped_from_every_request() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}{}\n[auth]\nidentity_headers = [\"X-User-Id\", \"x-tenant\"]\n",
        base_config("", "behind_tls_proxy"),
        ROUTES
    );
    let gw = Gateway::start_raw(&up, &cfg).await.unwrap();
    let r = get(
        gw.http(),
        "/api/v1/users/1",
        "X-User-Id: root\r\nX_User_Id: root\r\nX-Tenant: acme\r\nX-Other: kept\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    for h in ["x-user-id", "x_user_id", "x-tenant"] {
        assert!(!seen.headers.contains_key(h), "{h} reached the upstream");
    }
    assert_eq!(seen.headers["x-other"], "kept");
}

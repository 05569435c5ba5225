//! Micro-benchmarks of the per-request work that does not touch the network:
//! path canonicalization, routing, client-ip resolution, problem+json
//! rendering. The end-to-end load benchmark is `bench/run.sh`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis::canon::canonicalize;
use portcullis::client_ip::TrustedProxies;
use portcullis::config::file::ClientIpHeader;
use portcullis::reject::Rejection;
use portcullis::route::Router;

fn bench(c: &mut Criterion) {
    c.bench_function("canonicalize/plain", |b| {
        b.iter(|| canonicalize(black_box("/api/v1/users/12345/documents"), 2048))
    });
    c.bench_function("canonicalize/encoded", |b| {
        b.iter(|| canonicalize(black_box("/api/v1/files/caf%C3%A9%20menu.pdf"), 2048))
    });
    c.bench_function("canonicalize/reject_dotdot", |b| {
        b.iter(|| canonicalize(black_box("/api/v1/users/%2e%2e/admin"), 2048))
    });

    let routes: Vec<(String, Vec<Method>, usize)> = (0..50)
        .map(|i| {
            (
                format!("/api/v1/resource{i}/{{id}}"),
                vec![Method::GET, Method::PUT],
                i,
            )
        })
        .chain(std::iter::once((
            "/api/v1/users/{id}".to_string(),
            vec![Method::GET],
            50,
        )))
        .collect();
    let router = Router::build(&routes).unwrap();
    c.bench_function("route/find_51_routes", |b| {
        b.iter(|| {
            router
                .find(black_box("/api/v1/users/42"), &Method::GET)
                .is_ok()
        })
    });

    let trusted = TrustedProxies::new(
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        ],
        ClientIpHeader::XForwardedFor,
    );
    let mut h = HeaderMap::new();
    h.insert(
        "x-forwarded-for",
        HeaderValue::from_static("203.0.113.9, 10.0.0.7, 10.0.0.8"),
    );
    let peer = "10.0.0.1".parse().unwrap();
    c.bench_function("client_ip/trusted_chain", |b| {
        b.iter(|| trusted.resolve(black_box(peer), &h))
    });

    c.bench_function("reject/render_problem_json", |b| {
        b.iter(|| Rejection::NotFound.into_response(black_box("0123456789abcdef0123456789abcdef")))
    });
}

fn jwt(c: &mut Criterion) {
    use std::sync::Arc;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use portcullis::authn::cache::TokenCache;
    use portcullis::authn::identity::ClaimMap;
    use portcullis::authn::jwks::{KeySet, KeySource};
    use portcullis::authn::jwt::{Issuer, JwtVerifier};

    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}]});
    let keys = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": "i", "aud": "a", "sub": "alice", "exp": now + 3600,
        "roles": ["user"], "scope": "documents:read"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k".into());
    let token = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
    let verifier = |cache: usize| JwtVerifier {
        issuers: vec![Issuer {
            issuer: "i".into(),
            audiences: vec!["a".into()],
            algorithms: vec![jsonwebtoken::Algorithm::ES256],
            keys: KeySource::Static(Arc::new(keys.clone())),
            claims: ClaimMap::new("sub", "roles", "scope", None),
        }],
        leeway: 30,
        max_token_bytes: 8192,
        cache: Arc::new(TokenCache::new(cache)),
        signature_checks: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let uncached = verifier(0);
    c.bench_function("jwt/es256_verify_uncached", |b| {
        b.iter(|| rt.block_on(uncached.verify(black_box(&token), now)).is_ok())
    });
    let cached = verifier(1000);
    assert!(rt.block_on(cached.verify(&token, now)).is_ok());
    c.bench_function("jwt/es256_verify_cached", |b| {
        b.iter(|| rt.block_on(cached.verify(black_box(&token), now)).is_ok())
    });
}

/// Stage 7 alone: what a permission, a path-bound owner check and one CEL
/// condition add per request, against a route with no authorization rule.
fn authz(c: &mut Criterion) {
    use std::sync::Arc;

    use portcullis::audit::Access;
    use portcullis::authn::identity::ClaimMap;
    use portcullis::authz::{Authz, OwnerAttr, OwnerRule, Permission, RequestFacts, RouteAuthz};

    let mut f = portcullis::config::file::Authz::default();
    f.roles.insert("user".into(), vec!["users:read".into()]);
    let authz = Authz::compile(&f, &[]).unwrap();
    let id = ClaimMap::new("sub", "roles", "scope", None)
        .identity(
            serde_json::json!({"sub": "bench-user", "roles": ["user"], "scope": "documents:read"}),
            "https://idp.bench",
            u64::MAX,
        )
        .unwrap();
    let policy = authz
        .policy_env
        .compile(
            "routes[0].allow_if",
            "'user' in identity.roles && request.method == 'GET'",
        )
        .unwrap();
    let full = RouteAuthz {
        require: vec![Permission::parse("documents:read").unwrap()],
        owner: Some(OwnerRule {
            param: "id".into(),
            equals: OwnerAttr::Sub,
            unless: vec![Permission::parse("users:read:any").unwrap()],
        }),
        policies: vec![Arc::new(policy)],
        ..Default::default()
    };
    let none = RouteAuthz::default();
    let params = vec![("id".to_string(), "bench-user".to_string())];
    let headers = HeaderMap::new();
    let method = Method::GET;
    let facts = RequestFacts {
        method: &method,
        path: "/api/v1/users/bench-user",
        params: &params,
        query: None,
        headers: &headers,
        ip: "192.0.2.1".parse().unwrap(),
    };
    let access = Access {
        sink: None,
        request_id: "0123456789abcdef",
        route: "users",
        method: &method,
        path: "/api/v1/users/bench-user",
        client_ip: "192.0.2.1".parse().unwrap(),
    };
    assert!(authz.authorize(&full, Some(&id), &facts, &access).is_ok());
    c.bench_function("authz/no_rule", |b| {
        b.iter(|| {
            authz
                .authorize(black_box(&none), Some(&id), &facts, &access)
                .is_ok()
        })
    });
    let no_cel = RouteAuthz {
        policies: Vec::new(),
        ..full.clone()
    };
    c.bench_function("authz/permission_owner", |b| {
        b.iter(|| {
            authz
                .authorize(black_box(&no_cel), Some(&id), &facts, &access)
                .is_ok()
        })
    });
    c.bench_function("authz/permission_owner_cel", |b| {
        b.iter(|| {
            authz
                .authorize(black_box(&full), Some(&id), &facts, &access)
                .is_ok()
        })
    });
}

/// Stages 4/6 and 11 with the memory backend: two limits (per address, per
/// user; sliding windows that never trigger), and the five headers.
fn ratelimit(c: &mut Criterion) {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use portcullis::authn::identity::ClaimMap;
    use portcullis::ratelimit::{Held, KeyFacts, Report};

    let f: portcullis::config::file::RateLimit = toml::from_str(
        r#"
default = ["per_ip", "per_user"]
[limits]
per_ip = { key = "ip", algorithm = "sliding_window", limit = 1000000000, window = "1m" }
per_user = { key = "user", algorithm = "sliding_window", limit = 1000000000, window = "1m" }
"#,
    )
    .unwrap();
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let (rl, named) = portcullis::ratelimit::compile(&f, None, &mut errors, &mut warnings);
    assert!(errors.is_empty(), "{errors:?}");
    let which: Vec<usize> = ["per_ip", "per_user"].iter().map(|n| named[*n]).collect();
    let id = ClaimMap::new("sub", "roles", "scope", None)
        .identity(
            serde_json::json!({"sub": "bench-user"}),
            "https://idp.bench",
            u64::MAX,
        )
        .unwrap();
    let headers = HeaderMap::new();
    let method = Method::GET;
    let facts = KeyFacts {
        ip: "192.0.2.1".parse().unwrap(),
        route: "users",
        headers: &headers,
        params: &[],
        identity: Some(&id),
        method: &method,
        path: "/api/v1/users/1",
        query: None,
    };
    // The memory backend never waits: one poll completes the check.
    let check = |report: &mut Option<Report>| {
        let mut held = Held::default();
        let fut = std::pin::pin!(rl.check(&which, &facts, report, &mut held));
        let mut fut = fut;
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(r) => r.is_ok(),
            Poll::Pending => false,
        }
    };
    let mut report = None;
    assert!(check(&mut report));
    c.bench_function("ratelimit/check_two_limits_memory", |b| {
        b.iter(|| {
            let mut report = None;
            black_box(check(&mut report))
        })
    });
    let report = report.unwrap();
    c.bench_function("ratelimit/five_headers", |b| {
        b.iter_batched(
            || HeaderMap::with_capacity(16),
            |mut h| {
                rl.headers(black_box(&report), &mut h);
                h
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// Stage 8: a 1 KiB JSON body parsed strictly and validated against a
/// post schema (lengths, an array of tags, a date-time), objects closed.
fn validate(c: &mut Criterion) {
    use portcullis::validate::{Contract, compile_body};

    let doc = serde_json::json!({"openapi": "3.1.0"});
    let op = serde_json::json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["title", "content"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200},
            "content": {"type": "string", "minLength": 1, "maxLength": 50000},
            "tags": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 50}},
            "publishedAt": {"type": "string", "format": "date-time"}
        }
    }}}}});
    let contract = Contract::with_body(compile_body(&doc, &op, true).unwrap(), 32);
    let body = serde_json::json!({
        "title": "A title of moderate length for the benchmark",
        "content": "x".repeat(870),
        "tags": ["rust", "security", "gateway", "openapi", "validation"],
        "publishedAt": "2026-11-23T12:00:00Z",
    })
    .to_string();
    assert!((1000..1100).contains(&body.len()), "{}", body.len());
    let anyone = |_: &[portcullis::authz::Permission]| true;
    assert!(matches!(
        contract.check_body(body.as_bytes(), &anyone),
        Ok(None)
    ));
    c.bench_function("validate/post_1kib_body", |b| {
        b.iter(|| {
            contract
                .check_body(black_box(body.as_bytes()), &anyone)
                .is_ok()
        })
    });

    // Stage 10c: the demo's user object (with a password hash, an MFA
    // secret, flags and notes) cut down to the User schema and redacted.
    let doc = serde_json::json!({"openapi": "3.1.0", "components": {"schemas": {"User": {
        "type": "object",
        "required": ["id", "username"],
        "properties": {
            "id": {"type": "string"}, "username": {"type": "string"},
            "email": {"type": "string", "format": "email"}, "displayName": {"type": "string"},
            "avatarUrl": {"type": "string", "format": "uri"}, "bio": {"type": "string"},
            "createdAt": {"type": "string", "format": "date-time"}
        }
    }}}});
    let op = serde_json::json!({"responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}}}});
    let responses =
        portcullis::filter::Responses::compile(&doc, &op, true, false, &mut Vec::new()).unwrap();
    let redact = portcullis::filter::Redaction::new(&[
        "password*".into(),
        "*secret*".into(),
        "*token*".into(),
    ]);
    let user = serde_json::json!({
        "id": "u-alice", "username": "alice", "email": "alice@example.com",
        "displayName": "Alice Anders", "avatarUrl": "https://avatars.example.com/alice.png",
        "createdAt": "2026-01-15T09:30:00Z",
        "password_hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$3Jc0kq3JY8sDc9xq0Nf3RA",
        "mfa_secret": "JBSWY3DPEHPK3PXP",
        "internal_flags": ["beta", "fraud_review"],
        "admin_notes": "Alice Anders asked for a refund in March",
    })
    .to_string();
    let filtered = responses
        .filter_body(200, true, user.as_bytes(), &redact)
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&filtered).contains("argon2"));
    c.bench_function("filter/get_user", |b| {
        b.iter(|| responses.filter_body(200, true, black_box(user.as_bytes()), &redact))
    });
    // Both on one request's worth of work: the budget is 20 us.
    c.bench_function("contract/validate_post_and_filter_user", |b| {
        b.iter(|| {
            (
                contract
                    .check_body(black_box(body.as_bytes()), &anyone)
                    .is_ok(),
                responses.filter_body(200, true, black_box(user.as_bytes()), &redact),
            )
        })
    });
}

criterion_group!(benches, bench, jwt, authz, ratelimit, validate);
criterion_main!(benches);

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

criterion_group!(benches, bench);
criterion_main!(benches);

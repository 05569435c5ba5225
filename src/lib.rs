//! Portcullis: a security gateway for HTTP APIs.
//!
//! One config file is compiled into an immutable [`config::Plan`]; every
//! request runs the stages that [`pipeline`] orders:
//!
//! ```text
//! listener (TLS / redirect) ─▶ client ip + request id ─▶ head limits, hop-by-hop,
//! canonical path, route ─▶ CORS ─▶ [rate limit ─▶ authn ─▶ rate limit ─▶ authz ─▶
//! validation] ─▶ upstream ─▶ response filtering ─▶ security headers ─▶ access log
//! ```
//!
//! Layout: `config/` (file model, compile step, units), `server/` (listeners,
//! connections, reload), `pipeline.rs` (stage order), one module per stage
//! (`client_ip`, `canon`, `route`, `cors`, `headers`, `proxy/`,
//! `access_log`), `reject.rs` (problem+json), `demo/`.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod body;
pub mod canon;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod context;
pub mod cors;
pub mod demo;
pub mod filter;
pub mod headers;
pub mod metrics;
pub mod openapi;
pub mod pipeline;
pub mod proxy;
pub mod ratelimit;
pub mod redis;
pub mod reject;
pub mod route;
pub mod server;
pub mod store;
pub mod validate;
pub mod versioning;

/// Seconds since the Unix epoch (0 if the clock is before it), the unit the
/// store and all tokens use.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Installs aws-lc-rs as the process-wide rustls provider (idempotent). The
/// gateway passes its provider explicitly too; this covers clients (tests,
/// later JWKS fetching) that use the default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

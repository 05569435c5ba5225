//! `portcullis demo`: the sample API on an ephemeral loopback port, the
//! gateway in front of it on 127.0.0.1, and a commented config a user can copy.

pub mod sample_api;

use std::path::Path;

use crate::config;
use crate::server::Server;

/// The commented example config, with `{{HTTPS_PORT}}`, `{{HTTP_PORT}}`,
/// `{{ADMIN_PORT}}`, `{{ADMIN_TOKEN_SHA256}}` and `{{UPSTREAM}}` placeholders.
pub const CONFIG_TEMPLATE: &str = include_str!("portcullis.toml");

/// The sample API's OpenAPI document (`[[apis]]` in the config uses it).
pub const OPENAPI: &str = include_str!("openapi.yaml");

/// Ports and secrets the template needs.
#[derive(Debug, Clone)]
pub struct DemoPorts {
    /// HTTPS listener.
    pub https: u16,
    /// HTTP listener (redirects).
    pub http: u16,
    /// Admin API.
    pub admin: u16,
    /// Redis for rate limits (`--redis URL`); memory when `None`.
    pub redis: Option<String>,
}

/// Fills the template.
pub fn render_config(ports: &DemoPorts, upstream: &str, admin_token_sha256: &str) -> String {
    CONFIG_TEMPLATE
        .replace("{{HTTPS_PORT}}", &ports.https.to_string())
        .replace("{{HTTP_PORT}}", &ports.http.to_string())
        .replace("{{ADMIN_PORT}}", &ports.admin.to_string())
        .replace("{{ADMIN_TOKEN_SHA256}}", admin_token_sha256)
        .replace("{{UPSTREAM}}", upstream)
        .replace(
            "{{RATE_LIMIT_BACKEND}}",
            if ports.redis.is_some() {
                "backend = \"redis\"            # shared by every instance using this Redis"
            } else {
                "backend = \"memory\"           # one instance (portcullis demo --redis URL: shared)"
            },
        )
        .replace(
            "{{RATE_LIMIT_REDIS}}",
            &ports.redis.as_ref().map_or(String::new(), |url| {
                format!("\n[redis]\nurl = {url:?}\ntimeout = \"100ms\"\n")
            }),
        )
}

/// Writes the config, certificate, key and API-key hash secret into `dir`;
/// returns the admin token (the config holds only its hash).
pub fn write_files(dir: &Path, ports: &DemoPorts, upstream: &str) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    ensure_cert(dir)?;
    let signing = dir.join("signing-key.pem");
    if !signing.exists() {
        let pem = crate::authn::tokens::new_signing_key()?;
        write_private(&signing, pem.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", signing.display()))?;
    }
    let secret = dir.join("api-key-secret");
    if !secret.exists() {
        let (s, _) = crate::admin::new_token()?;
        write_private(&secret, s.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", secret.display()))?;
    }
    let spec = dir.join("openapi.yaml");
    std::fs::write(&spec, OPENAPI).map_err(|e| format!("cannot write {}: {e}", spec.display()))?;
    let (token, hash) = crate::admin::new_token()?;
    let cfg = dir.join("portcullis.toml");
    std::fs::write(&cfg, render_config(ports, upstream, &hash))
        .map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
    Ok(token)
}

/// Creates the demo's users and API key in a fresh store; returns
/// `credentials.json`'s content.
fn seed(plan: &config::Plan, admin_token: &str) -> Result<serde_json::Value, String> {
    let (Some(path), Some(keys)) = (&plan.store_path, &plan.authn.api_keys) else {
        return Err("the demo config lost its store or API keys".into());
    };
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = crate::store::Store::open(path)?;
    let now = crate::unix_now();
    let mut users = Vec::new();
    for (id, name, role, dept) in [
        ("u-alice", "alice", "user", "finance"),
        ("u-bob", "bob", "user", "engineering"),
        ("u-carol", "carol", "admin", "operations"),
    ] {
        let (pw, _) = crate::admin::new_token()?;
        let pw = pw.get(..20).unwrap_or(&pw).to_owned();
        let attrs = serde_json::json!({"department": dept});
        let u = crate::authn::sessions::new_user_with_id(
            Some(id),
            name,
            &pw,
            vec![role.into()],
            attrs,
            now,
        )?;
        store.user_insert(&u)?;
        users
            .push(serde_json::json!({"username": name, "password": pw, "id": id, "roles": [role]}));
    }
    let key = keys.create(
        &store,
        "reporting-service",
        "demo",
        vec!["documents:read".into()],
        None,
        now,
    )?;
    let tokens = plan
        .authn
        .tokens
        .as_ref()
        .ok_or("the demo config lost [auth.tokens]")?;
    let client_scopes = vec!["documents:read".to_string()];
    let client_secret = tokens.create_client(
        &store,
        "reporting-client",
        "demo",
        client_scopes.clone(),
        now,
    )?;
    Ok(serde_json::json!({
        "users": users,
        "api_keys": [{"id": key.record.id, "key": key.key, "scopes": key.record.scopes}],
        "clients": [{"client_id": "reporting-client", "client_secret": client_secret, "scopes": client_scopes}],
        "admin_token": admin_token,
    }))
}

/// Writes a self-signed certificate for localhost unless one exists.
pub fn ensure_cert(dir: &Path) -> Result<(), String> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok(());
    }
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    std::fs::write(&cert, ck.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    write_private(&key, ck.signing_key.serialize_pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", key.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Runs the demo until Ctrl-C.
pub async fn run(dir: &Path, ports: &DemoPorts, dry_run: bool) -> Result<(), String> {
    let api = sample_api::start_demo()
        .await
        .map_err(|e| format!("cannot start the sample API: {e}"))?;
    let admin_token = write_files(dir, ports, &api.to_string())?;
    let cfg_path = dir.join("portcullis.toml");
    let plan = config::load(&cfg_path).map_err(|e| e.to_string())?;
    if dry_run {
        println!(
            "wrote {} (compiles: {} routes)",
            cfg_path.display(),
            plan.routes.len()
        );
        return Ok(());
    }
    let creds = seed(&plan, &admin_token)?;
    let creds_path = dir.join("credentials.json");
    write_private(
        &creds_path,
        serde_json::to_string_pretty(&creds)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(|e| format!("cannot write {}: {e}", creds_path.display()))?;
    let (https_port, http_port, admin_port) = (ports.https, ports.http, ports.admin);
    let server = Server::bind(plan, Some(cfg_path.clone()))
        .await
        .map_err(|e| {
            format!("cannot listen on ports {https_port}/{http_port}/{admin_port}: {e} (use --https-port/--http-port/--admin-port)")
        })?;
    let handle = server.handle();
    crate::server::reload::spawn_sighup(handle.shared());
    crate::server::reload::spawn_watcher(handle.shared(), std::time::Duration::from_secs(1));
    crate::cli::spawn_shutdown_signals(handle);
    let d = dir.display();
    let h = format!("https://localhost:{https_port}");
    let c = format!("curl -s --cacert {d}/cert.pem");
    println!(
        r#"
Portcullis demo is running.
  gateway      {h}  (and http://localhost:{http_port}, which redirects)
  admin API    http://127.0.0.1:{admin_port}  (token in credentials.json)
  sample API   http://{api}  (unprotected; only the gateway should talk to it)
  config       {d}/portcullis.toml  (edit it: the gateway reloads on save)
  credentials  {d}/credentials.json  (users, an API key, the admin token)

Try (jq reads the credentials):
  {c} -i {h}/api/v1/users/u-alice
      401: every /api/ route needs a token, a session or an API key
  KEY=$(jq -r '.api_keys[0].key' {d}/credentials.json)
  {c} -i -H "X-API-Key: $KEY" {h}/api/v1/users/u-alice
      200 with security headers; no Server/X-Powered-By from the sample API
  PW=$(jq -r '.users[0].password' {d}/credentials.json)
  {c} -c /tmp/jar -H 'Content-Type: application/json' -d "{{\"username\":\"alice\",\"password\":\"$PW\"}}" {h}/auth/login
  {c} -b /tmp/jar {h}/api/v1/documents
      a session cookie (__Host-, HttpOnly, Secure, SameSite=Strict); the login
      answer also holds an access token (15 min) and a refresh token:
  TOKEN=$({c} -H 'Content-Type: application/json' -d "{{\"username\":\"alice\",\"password\":\"$PW\"}}" {h}/auth/login | jq -r .access_token)
  {c} -H "Authorization: Bearer $TOKEN" {h}/api/v1/documents
  SECRET=$(jq -r '.clients[0].client_secret' {d}/credentials.json)
  {c} -u reporting-client:$SECRET -d grant_type=client_credentials {h}/oauth/token
      a token for a service account (OAuth 2.0 client credentials)
  {c} -H "Authorization: Bearer $TOKEN" {h}/api/v1/users/u-bob
      404: alice may read only her own user (path ownership)
  {c} -H "Authorization: Bearer $TOKEN" {h}/api/v1/documents/d-3
      404: the gateway read bob's document and saw owner_id (response ownership)
  {c} -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"title":"mine"}}' {h}/api/v1/documents/d-3
      404: the gateway checked the owner first; the write never reached the API
  {c} -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"author_id":"u-bob","title":"hi"}}' {h}/api/v1/posts
      403: posts are written by the caller only
  {c} -H "Authorization: Bearer $TOKEN" {h}/api/v1/admin/stats
      403: admins only (log in as carol for 200); carol still gets 404 for
      the finance document d-2: a CEL condition on the department
  {c} -b /tmp/jar -X POST -H 'Origin: https://evil.example' {h}/api/v1/posts
      403: cookie-authenticated writes must come from the same origin
  {c} -i {h}/internal/debug
      404 problem+json: no route names it, the sample API never sees it
  {c} -H "Authorization: Bearer $TOKEN" {h}/api/v1/users/u-alice
      the sample API's answer has password_hash, mfa_secret, internal_flags
      and admin_notes; the gateway returns only what openapi.yaml declares
  {c} -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"role":"admin"}}' {h}/api/v1/users/u-alice
      400 naming /role: only users:admin may set it (isAdmin: not in the schema)
  {c} -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{{"author_id":"u-alice","title":"","content":"x"}}' {h}/api/v1/posts
      400 with errors: [{{"pointer":"/title",...}}]: bodies are validated
  {c} -b /tmp/jar '{h}/api/v1/documents?limit=100000'
      the sample API is asked for 100 at most (the cap in openapi.yaml)
  {c} -i -H "Authorization: Bearer $TOKEN" -H 'Api-Version: 1' {h}/api/users/u-alice
      the version named by a header; {h}/api/v0/users is 410 (retired)
  {c} -i --path-as-is {h}/api/v1/users/../../internal/debug
      400 problem+json: path tricks are refused, not resolved
  {c} -i -H "X-API-Key: $KEY" {h}/api/v1/documents/boom
      500 with a generic problem+json instead of the upstream's stack trace
  curl -si http://localhost:{http_port}/health
      308 to HTTPS

Access log: one JSON line per request below. Ctrl-C stops.
"#
    );
    server.run().await.map_err(|e| e.to_string())
}

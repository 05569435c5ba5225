//! `portcullis demo`: the sample API on an ephemeral loopback port, the
//! gateway in front of it on 127.0.0.1, and a commented config a user can copy.

pub mod sample_api;

use std::path::Path;

use crate::config;
use crate::server::Server;

/// The commented example config, with `{{HTTPS_PORT}}`, `{{HTTP_PORT}}` and
/// `{{UPSTREAM}}` placeholders.
pub const CONFIG_TEMPLATE: &str = include_str!("portcullis.toml");

/// Fills the template.
pub fn render_config(https_port: u16, http_port: u16, upstream: &str) -> String {
    CONFIG_TEMPLATE
        .replace("{{HTTPS_PORT}}", &https_port.to_string())
        .replace("{{HTTP_PORT}}", &http_port.to_string())
        .replace("{{UPSTREAM}}", upstream)
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
pub async fn run(dir: &Path, https_port: u16, http_port: u16, dry_run: bool) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    ensure_cert(dir)?;
    let api = sample_api::start()
        .await
        .map_err(|e| format!("cannot start the sample API: {e}"))?;
    let cfg_path = dir.join("portcullis.toml");
    std::fs::write(
        &cfg_path,
        render_config(https_port, http_port, &api.to_string()),
    )
    .map_err(|e| format!("cannot write {}: {e}", cfg_path.display()))?;
    let plan = config::load(&cfg_path).map_err(|e| e.to_string())?;
    if dry_run {
        println!(
            "wrote {} (compiles: {} routes)",
            cfg_path.display(),
            plan.routes.len()
        );
        return Ok(());
    }
    let server = Server::bind(plan, Some(cfg_path.clone()))
        .await
        .map_err(|e| format!("cannot listen on ports {https_port}/{http_port}: {e} (use --https-port/--http-port)"))?;
    let handle = server.handle();
    crate::server::reload::spawn_sighup(handle.shared());
    crate::server::reload::spawn_watcher(handle.shared(), std::time::Duration::from_secs(1));
    crate::cli::spawn_shutdown_signals(handle);
    let d = dir.display();
    let h = format!("https://localhost:{https_port}");
    println!(
        r#"
Portcullis demo is running.
  gateway      {h}  (and http://localhost:{http_port}, which redirects)
  sample API   http://{api}  (unprotected; only the gateway should talk to it)
  config       {d}/portcullis.toml  (edit it: the gateway reloads on save)
  certificate  {d}/cert.pem  (self-signed: curl needs --cacert or -k)

Try:
  curl -si --cacert {d}/cert.pem {h}/api/v1/users/u-alice
      security headers, X-Request-Id, no Server/X-Powered-By
  curl -si --cacert {d}/cert.pem {h}/internal/debug
      404 problem+json: no route names it, the sample API never sees it
  curl -si --cacert {d}/cert.pem --path-as-is {h}/api/v1/users/../../internal/debug
  curl -si --cacert {d}/cert.pem {h}/api/v1/users/%2e%2e%2finternal%2fdebug
      400 problem+json: path tricks are refused, not resolved
  curl -si --cacert {d}/cert.pem {h}/api/v1/documents/boom
      500 with a generic problem+json instead of the upstream's stack trace
  curl -si --cacert {d}/cert.pem -X OPTIONS {h}/api/v1/documents -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: GET'
      403: CORS preflight from an origin not on the allowlist
  curl -si http://localhost:{http_port}/health
      308 to HTTPS

Access log: one JSON line per request below. Ctrl-C stops.
"#
    );
    server.run().await.map_err(|e| e.to_string())
}

//! Reload: SIGHUP and file changes recompile the config; the new plan is
//! swapped in only when it compiled. Requests in flight keep the plan they
//! started with. Listener addresses and `max_connections` are fixed at start
//! (a change is logged as needing a restart); everything else, certificates
//! included, takes effect for new connections and requests.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use crate::access_log::LogSink;
use crate::config::{self, ConfigError, ConfigErrors, Plan};

/// Readies a freshly compiled plan for service: attaches the access-log
/// writer (reusing the old one when the target is unchanged) and fills in
/// redirect ports that depend on the bound HTTPS port.
pub(crate) fn prepare(
    mut plan: Plan,
    old: Option<&Plan>,
    https_addr: Option<std::net::SocketAddr>,
) -> std::io::Result<Plan> {
    plan.log_sink = match (&plan.access_target, old.and_then(|o| o.log_sink.as_ref())) {
        (Some(t), Some(s)) if s.target() == t => Some(s.clone()),
        (Some(t), _) => Some(LogSink::open(t.clone())?),
        (None, _) => None,
    };
    // Audit lines share the access writer when the target is the same (two
    // writers on one file would interleave partial lines).
    plan.audit_sink = match (&plan.audit_target, old.and_then(|o| o.audit_sink.as_ref())) {
        (None, _) => None,
        (Some(t), _) if plan.access_target.as_ref() == Some(t) => plan.log_sink.clone(),
        (Some(t), Some(s)) if s.target() == t => Some(s.clone()),
        (Some(t), _) => Some(LogSink::open(t.clone())?),
    };
    // Rate-limit state survives a reload (limits keep their ids unless they
    // changed), unless the store's size changed.
    if let Some(o) = old.filter(|o| o.ratelimit.max_keys == plan.ratelimit.max_keys) {
        plan.ratelimit.memory = o.ratelimit.memory.clone();
    }
    if let Some(o) = old {
        plan.metrics = o.metrics.clone();
    }
    // The store: the old plan's when the file is the same, else opened now.
    plan.store = match (&plan.store_path, old.and_then(|o| o.store.as_ref())) {
        (Some(p), Some(s)) if s.path() == p.as_path() => Some(s.clone()),
        (Some(p), _) => Some(Arc::new(
            crate::store::Store::open(p).map_err(std::io::Error::other)?,
        )),
        (None, _) => None,
    };
    // Fetch remote JWKS now rather than on the first request.
    if tokio::runtime::Handle::try_current().is_ok() {
        for r in plan.authn.remote_jwks() {
            tokio::spawn(async move { r.warm().await });
        }
    }
    if let (Some(h), Some(a)) = (plan.http.as_mut(), https_addr) {
        if h.redirect_port == 0 {
            h.redirect_port = a.port();
        }
    }
    Ok(plan)
}

/// Recompiles the file and swaps the plan in on success. Every failure is
/// logged here (and returned); the previous plan keeps serving.
pub(crate) async fn reload(shared: &Shared) -> Result<(), ConfigErrors> {
    let _one_at_a_time = shared.reload_lock.lock().await;
    let result = reload_locked(shared).await;
    if let Err(errs) = &result {
        for e in &errs.0 {
            tracing::error!(path = %e.path, message = %e.message, "config reload failed; still serving the previous config");
        }
    }
    result
}

async fn reload_locked(shared: &Shared) -> Result<(), ConfigErrors> {
    let Some(path) = shared.config_path.clone() else {
        return Err(one("this server was not started from a config file".into()));
    };
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| one(format!("cannot read {}: {e}", path.display())))?;
    // Remember what was tried, good or bad, so the watcher neither misses a
    // later change nor retries a broken file every second.
    shared
        .loaded
        .store(fingerprint(text.as_bytes()), Ordering::Relaxed);
    let plan = tokio::task::spawn_blocking(move || {
        config::parse(&text, path.parent().unwrap_or(std::path::Path::new(".")))
    })
    .await
    .map_err(|e| one(format!("reload task failed: {e}")))??;
    let old = shared.plan.load_full();
    check_restart_only(&plan, &old)?;
    let plan = prepare(plan, Some(&old), shared.https_addr)
        .map_err(|e| one(format!("cannot open the access log or the store: {e}")))?;
    for w in &plan.warnings {
        tracing::warn!(warning = %w, "unsafe or unusual setting");
    }
    let routes = plan.routes.len();
    shared.plan.store(Arc::new(plan));
    tracing::info!(routes, "config reloaded");
    Ok(())
}

/// Listeners are bound once: a reload that adds, removes or moves one is
/// refused as a whole (applying the rest would leave a listener serving
/// under rules written for another). Other start-only settings are applied
/// at the next restart, with a warning now.
fn check_restart_only(new: &Plan, old: &Plan) -> Result<(), ConfigErrors> {
    let https = |p: &Plan| p.https.as_ref().map(|l| l.addr);
    let http = |p: &Plan| p.http.as_ref().map(|l| l.addr);
    if https(new) != https(old) {
        return Err(ConfigErrors(vec![ConfigError {
            path: "server.https".into(),
            message: "adding, removing or moving a listener needs a restart".into(),
        }]));
    }
    if http(new) != http(old) {
        return Err(ConfigErrors(vec![ConfigError {
            path: "server.http".into(),
            message: "adding, removing or moving a listener needs a restart".into(),
        }]));
    }
    if new.admin.as_ref().map(|a| a.addr) != old.admin.as_ref().map(|a| a.addr) {
        return Err(ConfigErrors(vec![ConfigError {
            path: "admin.listen".into(),
            message: "adding, removing or moving a listener needs a restart".into(),
        }]));
    }
    for (changed, field) in [
        (
            new.max_connections != old.max_connections,
            "server.max_connections",
        ),
        (
            new.worker_threads != old.worker_threads,
            "server.worker_threads",
        ),
        (new.log_level != old.log_level, "log.level"),
    ] {
        if changed {
            tracing::warn!(field, "this setting takes effect at the next restart");
        }
    }
    Ok(())
}

fn one(message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        path: String::new(),
        message,
    }])
}

/// Reloads on SIGHUP, until the process ends.
pub fn spawn_sighup(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload on signal disabled");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading config");
            let _ = reload(&shared).await;
        }
    });
}

/// Polls the config file and reloads when its contents change.
pub fn spawn_watcher(shared: Arc<Shared>, every: Duration) {
    let Some(path) = shared.config_path.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !shared.plan.load().watch_config {
                continue;
            }
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            if fingerprint(&bytes) != shared.loaded.load(Ordering::Relaxed) {
                tracing::info!(path = %path.display(), "config file changed: reloading");
                let _ = reload(&shared).await;
            }
        }
    });
}

/// Hash of config text, to notice changes.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

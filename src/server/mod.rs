//! Listeners, connections, shutdown and reload.
//!
//! [`Server::bind`] binds the configured listeners (tests bind port 0), and
//! [`Server::run`] accepts until shutdown, then drains in-flight requests for
//! at most `server.shutdown_grace`. The current [`Plan`] lives in an
//! `ArcSwap`: a reload compiles a new plan first and swaps it in only on
//! success; each request loads the plan once.

mod conn;
pub mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::{ConfigErrors, Plan};

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The live plan.
    pub plan: ArcSwap<Plan>,
    /// Where the plan came from (for reloads).
    pub config_path: Option<PathBuf>,
    /// Bound HTTPS address.
    pub https_addr: Option<SocketAddr>,
    /// Bound HTTP address.
    pub http_addr: Option<SocketAddr>,
    /// Bound admin API address.
    pub admin_addr: Option<SocketAddr>,
    /// Fingerprint of the config text last loaded (or tried).
    loaded: AtomicU64,
    shutdown: watch::Sender<bool>,
    reload_lock: tokio::sync::Mutex<()>,
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Https,
    Http,
}

/// A bound, not yet running gateway.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    https: Option<TcpListener>,
    http: Option<TcpListener>,
    admin: Option<TcpListener>,
    max_connections: usize,
}

/// Controls a running server.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the plan's listeners and starts its access-log writer.
    pub async fn bind(plan: Plan, config_path: Option<PathBuf>) -> std::io::Result<Self> {
        let https = match &plan.https {
            Some(l) => Some(TcpListener::bind(l.addr).await?),
            None => None,
        };
        let http = match &plan.http {
            Some(l) => Some(TcpListener::bind(l.addr).await?),
            None => None,
        };
        let admin = match &plan.admin {
            Some(a) => Some(TcpListener::bind(a.addr).await?),
            None => None,
        };
        let https_addr = https.as_ref().map(TcpListener::local_addr).transpose()?;
        let http_addr = http.as_ref().map(TcpListener::local_addr).transpose()?;
        let max_connections = plan.max_connections;
        let plan = reload::prepare(plan, None, https_addr)?;
        let (shutdown, _) = watch::channel(false);
        let loaded = config_path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .map_or(0, |b| reload::fingerprint(&b));
        let shared = Arc::new(Shared {
            plan: ArcSwap::from_pointee(plan),
            config_path,
            https_addr,
            http_addr,
            admin_addr: admin.as_ref().map(TcpListener::local_addr).transpose()?,
            loaded: AtomicU64::new(loaded),
            shutdown,
            reload_lock: tokio::sync::Mutex::new(()),
        });
        Ok(Self {
            shared,
            https,
            http,
            admin,
            max_connections,
        })
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.shared.https_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.shared.http_addr
    }

    /// The bound admin API address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.admin_addr
    }

    /// A handle for reload and shutdown.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until [`Handle::shutdown`], then drains (bounded) and returns.
    pub async fn run(self) -> std::io::Result<()> {
        let limit = Arc::new(Semaphore::new(self.max_connections));
        let mut loops = Vec::new();
        for (listener, role) in [(self.https, Role::Https), (self.http, Role::Http)] {
            if let Some(l) = listener {
                loops.push(tokio::spawn(accept_loop(
                    l,
                    role,
                    self.shared.clone(),
                    limit.clone(),
                )));
            }
        }
        let admin = self
            .admin
            .map(|l| tokio::spawn(crate::admin::serve(l, self.shared.clone())));
        // API key `last_used` times are written in batches.
        let flusher = tokio::spawn(flush_key_uses(self.shared.clone()));
        let mut rx = self.shared.shutdown.subscribe();
        let _ = rx.wait_for(|stop| *stop).await;
        flusher.abort();
        if let Some(a) = admin {
            a.abort();
        }
        for l in loops {
            let _ = l.await; // the accept loops end on the same signal
        }
        // Every connection holds a permit until it is done: taking them all
        // means every in-flight request has finished.
        let grace = self.shared.plan.load().shutdown_grace;
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, limit.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.max_connections - limit.available_permits(),
                "shutdown grace period over; closing remaining connections"
            );
        }
        let plan = self.shared.plan.load_full();
        if let (Some(k), Some(s)) = (&plan.authn.api_keys, &plan.store) {
            k.flush_uses(s);
        }
        for sink in plan.log_sink.iter().chain(&plan.audit_sink) {
            sink.flush();
        }
        Ok(())
    }
}

impl Handle {
    /// Stops accepting and starts draining.
    pub fn shutdown(&self) {
        let _ = self.shared.shutdown.send(true);
    }

    /// Recompiles the config file and swaps the plan in on success; on failure
    /// the old plan keeps serving and the errors are returned (and logged).
    pub async fn reload(&self) -> Result<(), ConfigErrors> {
        reload::reload(&self.shared).await
    }

    /// The live plan.
    pub fn plan(&self) -> Arc<Plan> {
        self.shared.plan.load_full()
    }

    /// Shared state (for the file watcher).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

async fn flush_key_uses(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n = n.wrapping_add(1);
        let sweep = n % 60 == 1; // every 5 minutes (and at start)
        let plan = shared.plan.load_full();
        // Expired rate-limit entries, every 30 s (a sweep holds one shard's
        // lock at a time).
        if n % 6 == 0 {
            let mem = plan.ratelimit.memory.clone();
            let _ =
                tokio::task::spawn_blocking(move || mem.sweep(crate::ratelimit::now_us())).await;
        }
        if plan.store.is_some() {
            let _ = tokio::task::spawn_blocking(move || {
                let Some(s) = &plan.store else { return };
                if let Some(k) = &plan.authn.api_keys {
                    k.flush_uses(s);
                }
                if sweep {
                    let now = crate::unix_now();
                    if let Err(e) = s.sweep(now) {
                        tracing::warn!(error = %e, "could not remove expired sessions and refresh tokens");
                    }
                }
            })
            .await;
        }
    }
}

/// Resolves once shutdown was requested (returns `()`, so no watch guard is
/// held across an await).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn accept_loop(
    listener: TcpListener,
    role: Role,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        // At the cap, hold this one connection unserved (and accept no more
        // on this listener) until another connection ends.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = stopped(&mut stop) => return,
        };
        tokio::spawn(conn::serve(stream, peer, role, shared.clone(), permit));
    }
}

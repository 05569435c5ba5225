//! One client connection: TLS handshake (bounded), HTTP/1.1 or HTTP/2 by
//! ALPN, the slowloris and idle timeouts, and graceful close on shutdown.
//!
//! hyper's `header_read_timeout` bounds how long an HTTP/1.1 request head may
//! take (and restarts when a keep-alive connection goes idle). HTTP/2 has no
//! such timer, and a connection can stall in other ways, so the IO is wrapped
//! in [`Tracked`], which counts when bytes move; the connection is closed
//! gracefully once no request is in flight and nothing moved for a whole
//! `limits.idle_timeout`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{Role, Shared};
use crate::config::file::HttpMode;
use crate::context::{ConnInfo, ListenerKind};
use crate::pipeline;

pub(super) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    role: Role,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let plan = shared.plan.load_full();
    match role {
        Role::Https => {
            let Some(l) = &plan.https else { return };
            let acceptor = tokio_rustls::TlsAcceptor::from(l.tls.clone());
            let tls = match tokio::time::timeout(l.handshake_timeout, acceptor.accept(stream)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let info = ConnInfo::new(peer, local, ListenerKind::Https);
            drive(tls, info, shared, Some(h2)).await;
        }
        Role::Http => {
            let kind = match plan.http.as_ref().map(|h| h.mode) {
                Some(HttpMode::BehindTlsProxy) => ListenerKind::HttpBehindTls,
                Some(HttpMode::Plain) => ListenerKind::HttpPlain,
                _ => ListenerKind::HttpRedirect,
            };
            let info = ConnInfo::new(peer, local, kind);
            let h2c = plan.http.as_ref().is_some_and(|h| h.h2c);
            drive(stream, info, shared, if h2c { None } else { Some(false) }).await;
        }
    }
}

/// Serves HTTP on `io`. `h2`: ALPN's answer on TLS, `Some(false)` on plain
/// TCP, `None` on plain TCP with h2c (HTTP/1.1 and h2c prior knowledge are
/// both accepted, by sniffing the first bytes).
async fn drive<I>(io: I, info: ConnInfo, shared: Arc<Shared>, h2: Option<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let plan = shared.plan.load_full();
    let limits = &plan.limits;
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: io,
        activity: activity.clone(),
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Hard caps above the configured limits: the pipeline answers the
        // configured ones with problem+json; these stop absurd heads early.
        .max_headers(limits.max_headers.saturating_mul(2).saturating_add(16))
        .max_buf_size(limits.max_header_bytes.saturating_mul(2).max(16 * 1024));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(
            u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        )
        .max_pending_accept_reset_streams(Some(100))
        .max_local_error_reset_streams(Some(1024));
    let builder = match h2 {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };

    let peer = info.peer;
    let info = Arc::new(info);
    let svc_shared = shared.clone();
    let svc_activity = activity.clone();
    let service = service_fn(move |req| {
        let shared = svc_shared.clone();
        let info = info.clone();
        let activity = svc_activity.clone();
        async move {
            let _inflight = activity.begin();
            Ok::<_, Infallible>(pipeline::handle(&shared, info, req).await)
        }
    });

    let idle = limits.idle_timeout;
    let mut stop = shared.shutdown.subscribe();
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    let mut deadline = Instant::now() + idle;
    let mut last_seen = activity.seen();
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection error");
                }
                return;
            }
            () = super::stopped(&mut stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(deadline) => {
                let seen = activity.seen();
                if activity.inflight() == 0 && seen == last_seen {
                    if closing {
                        return; // a graceful close did not finish in time
                    }
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    deadline = Instant::now() + Duration::from_secs(1).min(idle);
                } else {
                    last_seen = seen;
                    deadline = Instant::now() + idle;
                }
            }
        }
    }
}

/// Whether bytes moved since the last look, and how many requests are in
/// flight. A counter instead of a timestamp keeps clock reads off every IO
/// call; the cost is that an idle connection closes between one and two idle
/// periods after its last activity.
#[derive(Debug)]
struct Activity {
    moved: AtomicU64,
    inflight: AtomicUsize,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            moved: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }

    fn seen(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// An IO stream that records activity.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

//! A keep-alive HTTP/1.1 connection pool for one upstream.
//!
//! Idle connections are kept as hyper `SendRequest` handles on a stack (the
//! most recently used first, so a few hot connections serve most traffic and
//! the rest age out). A connection goes back on the stack when its response
//! body has been read to the end; a body dropped half-read takes its
//! connection with it. A request sent on a pooled connection that turns out
//! to be dead before anything was written (the upstream closed it while idle)
//! is retried on the next one; nothing is retried once written.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::ProxyBody;

/// Why a request could not be exchanged with the upstream.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// TCP connect did not finish in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// TCP connect failed.
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("upstream exchange failed")]
    Http(#[source] hyper::Error),
}

struct Idle {
    tx: SendRequest<ProxyBody>,
    since: Instant,
}

/// The pool of one upstream.
pub struct Pool {
    target: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool for `host:port`.
    pub fn new(
        target: String,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        Self {
            target,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` (origin-form URI, Host set) and returns the response with
    /// a body that returns the connection to the pool when it ends.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        loop {
            let (mut tx, reused) = match self.checkout() {
                Some(tx) => (tx, true),
                None => (self.connect().await?, false),
            };
            if tx.ready().await.is_err() {
                if reused {
                    continue; // closed while idle: try the next one
                }
                return Err(PoolError::Connect(
                    std::io::ErrorKind::ConnectionAborted.into(),
                ));
            }
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    let mut body = PooledBody {
                        inner: body,
                        conn: Some((tx, self.clone())),
                    };
                    if http_body::Body::is_end_stream(&body.inner) {
                        body.release();
                    }
                    return Ok(Response::from_parts(parts, body));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: safe to retry on another connection.
                    Some(r) if reused => req = r,
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
    }

    fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if !c.tx.is_closed() && c.since.elapsed() < self.idle_timeout {
                return Some(c.tx);
            }
        }
        None
    }

    fn put(&self, tx: SendRequest<ProxyBody>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= self.max_idle {
            // Full: drop the oldest (bottom of the stack).
            if idle.is_empty() {
                return;
            }
            idle.remove(0);
        }
        idle.push(Idle {
            tx,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, PoolError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.target))
            .await
            .map_err(|_| PoolError::ConnectTimeout)?
            .map_err(PoolError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::Builder::new()
            .max_buf_size(1 << 20)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        });
        Ok(tx)
    }
}

/// An upstream response body that hands its connection back to the pool once
/// read to the end.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    conn: Option<(SendRequest<ProxyBody>, Arc<Pool>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((tx, pool)) = self.conn.take() {
            pool.put(tx);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

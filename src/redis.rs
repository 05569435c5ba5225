//! A small Redis client for what the gateway needs: pipelined commands over
//! a pool of connections, every exchange bounded by a timeout, and a circuit
//! breaker so that a dead Redis costs one failed attempt per cool-down, not
//! a timeout on every request.
//!
//! It speaks RESP2 (every Redis since 2.0): commands are arrays of bulk
//! strings; replies are parsed with bounds on sizes and nesting. URLs:
//! `redis://[:password@]host:port[/db]`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `$-1` / `*-1`.
    Nil,
    /// `:n`.
    Int(i64),
    /// `$n` bulk string.
    Bulk(Vec<u8>),
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `*n`.
    Array(Vec<Reply>),
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    /// The breaker is open: Redis failed recently; not tried.
    #[error("redis circuit open")]
    CircuitOpen,
    /// No answer in time.
    #[error("redis timed out")]
    Timeout,
    /// Connection or protocol failure.
    #[error("redis: {0}")]
    Io(String),
}

/// A command: its arguments.
pub type Cmd = Vec<Vec<u8>>;

/// Makes a command from string-ish arguments.
pub fn cmd<I: IntoIterator<Item = A>, A: AsRef<[u8]>>(args: I) -> Cmd {
    args.into_iter().map(|a| a.as_ref().to_vec()).collect()
}

#[derive(Debug)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The client.
#[derive(Debug)]
pub struct Redis {
    addr: String,
    password: Option<String>,
    db: Option<u32>,
    timeout: Duration,
    pool: Mutex<Vec<BufStream<TcpStream>>>,
    max_idle: usize,
    breaker: Mutex<Breaker>,
    threshold: u32,
    cool_down: Duration,
    /// Breaker transitions (closed → open, open → closed), for metrics.
    pub transitions: AtomicU64,
    /// Calls refused while the breaker was open.
    pub short_circuited: AtomicU64,
}

const MAX_BULK: usize = 16 << 20;
const MAX_DEPTH: usize = 8;

impl Redis {
    /// Parses the URL; connects lazily.
    pub fn new(url: &str, timeout: Duration, max_idle: usize) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("the URL must start with redis:// (TLS to Redis is not supported yet)")?;
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let password = auth.map(|a| a.strip_prefix(':').unwrap_or(a).to_owned());
        let (addr, db) = match hostpart.split_once('/') {
            Some((h, d)) if !d.is_empty() => (
                h,
                Some(
                    d.parse::<u32>()
                        .map_err(|_| format!("invalid database {d:?}"))?,
                ),
            ),
            Some((h, _)) => (h, None),
            None => (hostpart, None),
        };
        if addr.is_empty() || !addr.contains(':') {
            return Err("expected redis://host:port".into());
        }
        Ok(Self {
            addr: addr.to_owned(),
            password,
            db,
            timeout,
            pool: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            threshold: 3,
            cool_down: Duration::from_secs(2),
            transitions: AtomicU64::new(0),
            short_circuited: AtomicU64::new(0),
        })
    }

    /// The address (for logs; never the password).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends the commands in one round trip and returns one reply each.
    /// Error replies are returned as [`Reply::Error`], not as failures.
    pub async fn pipeline(&self, cmds: &[Cmd]) -> Result<Vec<Reply>, RedisError> {
        if !self.allow() {
            self.short_circuited.fetch_add(1, Ordering::Relaxed);
            return Err(RedisError::CircuitOpen);
        }
        let result = match tokio::time::timeout(self.timeout, self.exchange(cmds)).await {
            Err(_) => Err(RedisError::Timeout),
            Ok(r) => r,
        };
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    async fn exchange(&self, cmds: &[Cmd]) -> Result<Vec<Reply>, RedisError> {
        let mut conn = match self.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let mut out = Vec::with_capacity(64 * cmds.len());
        for c in cmds {
            encode(c, &mut out);
        }
        let io = |e: std::io::Error| RedisError::Io(e.to_string());
        conn.write_all(&out).await.map_err(io)?;
        conn.flush().await.map_err(io)?;
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in cmds {
            replies.push(read_reply(&mut conn, 0).await?);
        }
        self.put(conn);
        Ok(replies)
    }

    async fn connect(&self) -> Result<BufStream<TcpStream>, RedisError> {
        let s = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| RedisError::Io(e.to_string()))?;
        let _ = s.set_nodelay(true);
        let mut conn = BufStream::new(s);
        let mut setup = Vec::new();
        if let Some(p) = &self.password {
            setup.push(cmd(["AUTH", p.as_str()]));
        }
        if let Some(db) = self.db {
            setup.push(cmd(["SELECT".to_string(), db.to_string()]));
        }
        if !setup.is_empty() {
            let mut out = Vec::new();
            for c in &setup {
                encode(c, &mut out);
            }
            let io = |e: std::io::Error| RedisError::Io(e.to_string());
            conn.write_all(&out).await.map_err(io)?;
            conn.flush().await.map_err(io)?;
            for _ in &setup {
                if let Reply::Error(e) = read_reply(&mut conn, 0).await? {
                    // The reply names the command, never the password.
                    return Err(RedisError::Io(format!("connection setup refused: {e}")));
                }
            }
        }
        Ok(conn)
    }

    fn take(&self) -> Option<BufStream<TcpStream>> {
        self.pool.lock().ok()?.pop()
    }

    fn put(&self, c: BufStream<TcpStream>) {
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < self.max_idle {
                p.push(c);
            }
        }
    }

    fn allow(&self) -> bool {
        let Ok(mut b) = self.breaker.lock() else {
            return true;
        };
        match *b {
            Breaker::Closed { .. } => true,
            Breaker::Open { until } if Instant::now() >= until => {
                // One trial; others keep failing fast until it answers.
                *b = Breaker::HalfOpen;
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen => false,
        }
    }

    fn succeeded(&self) {
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        if !matches!(*b, Breaker::Closed { failures: 0 }) {
            if matches!(*b, Breaker::HalfOpen) {
                self.transitions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(redis = %self.addr, "redis is answering again; circuit closed");
            }
            *b = Breaker::Closed { failures: 0 };
        }
    }

    fn failed(&self, e: &RedisError) {
        if let Ok(mut p) = self.pool.lock() {
            // Connections of a failing server are suspect: start afresh.
            p.clear();
        }
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        let open = match *b {
            Breaker::Closed { failures } if failures + 1 >= self.threshold => true,
            Breaker::Closed { failures } => {
                *b = Breaker::Closed {
                    failures: failures + 1,
                };
                false
            }
            Breaker::HalfOpen => true,
            Breaker::Open { .. } => false,
        };
        if open {
            let was_half = matches!(*b, Breaker::HalfOpen);
            *b = Breaker::Open {
                until: Instant::now() + self.cool_down,
            };
            if !was_half {
                self.transitions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(redis = %self.addr, error = %e, cool_down_ms = self.cool_down.as_millis() as u64,
                               "redis is failing; circuit open (calls fail fast until a trial succeeds)");
            }
        }
    }

    /// Whether the breaker is open now (for tests and metrics).
    pub fn circuit_open(&self) -> bool {
        self.breaker
            .lock()
            .map(|b| !matches!(*b, Breaker::Closed { .. }))
            .unwrap_or(false)
    }

    /// Sets the breaker's threshold and cool-down.
    pub fn with_breaker(mut self, threshold: u32, cool_down: Duration) -> Self {
        self.threshold = threshold.max(1);
        self.cool_down = cool_down;
        self
    }
}

fn encode(c: &Cmd, out: &mut Vec<u8>) {
    out.push(b'*');
    out.extend_from_slice(c.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in c {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

type ReplyFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, RedisError>> + Send + 'a>>;

fn read_reply(r: &mut BufStream<TcpStream>, depth: usize) -> ReplyFuture<'_> {
    Box::pin(async move {
        let bad = |m: &str| RedisError::Io(format!("protocol error: {m}"));
        if depth > MAX_DEPTH {
            return Err(bad("nested too deep"));
        }
        let mut line = Vec::with_capacity(32);
        let n = r
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| RedisError::Io(e.to_string()))?;
        if n == 0 {
            return Err(RedisError::Io("connection closed".into()));
        }
        if line.len() < 3 || !line.ends_with(b"\r\n") {
            return Err(bad("bad line"));
        }
        let body = std::str::from_utf8(&line[1..line.len() - 2]).map_err(|_| bad("not UTF-8"))?;
        let int = || body.parse::<i64>().map_err(|_| bad("bad integer"));
        Ok(match line[0] {
            b'+' => Reply::Simple(body.to_owned()),
            b'-' => Reply::Error(body.to_owned()),
            b':' => Reply::Int(int()?),
            b'$' => {
                let len = int()?;
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                let len = usize::try_from(len).map_err(|_| bad("bad length"))?;
                if len > MAX_BULK {
                    return Err(bad("bulk string too large"));
                }
                let mut buf = vec![0u8; len + 2];
                r.read_exact(&mut buf)
                    .await
                    .map_err(|e| RedisError::Io(e.to_string()))?;
                buf.truncate(len);
                Reply::Bulk(buf)
            }
            b'*' => {
                let len = int()?;
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                let len = usize::try_from(len).map_err(|_| bad("bad length"))?;
                if len > 1 << 16 {
                    return Err(bad("array too large"));
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(read_reply(r, depth + 1).await?);
                }
                Reply::Array(items)
            }
            _ => return Err(bad("unknown reply type")),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let r = Redis::new("redis://127.0.0.1:6379", Duration::from_millis(50), 4);
        assert!(r.as_ref().is_ok_and(|r| r.addr() == "127.0.0.1:6379"));
        let r = Redis::new(
            "redis://:s3cret@10.0.0.1:6380/2",
            Duration::from_millis(50),
            4,
        );
        assert!(
            r.as_ref()
                .is_ok_and(|r| r.db == Some(2) && r.password.as_deref() == Some("s3cret"))
        );
        assert!(Redis::new("rediss://h:1", Duration::from_millis(50), 4).is_err());
        assert!(Redis::new("redis://hostonly", Duration::from_millis(50), 4).is_err());
        assert!(Redis::new("redis://h:1/x", Duration::from_millis(50), 4).is_err());
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&cmd(["SET", "k", "v1"]), &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n");
    }
}

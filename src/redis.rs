//! A small Redis client for what the gateway needs: pipelined commands over
//! a few multiplexed connections, every exchange bounded by a timeout, and a
//! circuit breaker so that a dead Redis costs one failed attempt per
//! cool-down, not a timeout on every request.
//!
//! Multiplexing: every caller's commands go to one connection's writer task,
//! which sends whatever has queued up in one write; a reader task hands the
//! replies back in order. Many concurrent requests thus share a handful of
//! connections and system calls (Redis answers in order on a connection),
//! instead of one connection (and its connect and close) per request in
//! flight.
//!
//! It speaks RESP2 (every Redis since 2.0): commands are arrays of bulk
//! strings; replies are parsed with bounds on sizes and nesting. URLs:
//! `redis://[:password@]host:port[/db]`.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufStream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

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

/// Appends `bytes` as lower-case hex.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// Appends one command (an array of bulk strings) in RESP, straight from
/// its arguments.
pub fn encode_args(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut n = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(n.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(n.format(a.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Makes a command from string-ish arguments.
pub fn cmd<I: IntoIterator<Item = A>, A: AsRef<[u8]>>(args: I) -> Cmd {
    args.into_iter().map(|a| a.as_ref().to_vec()).collect()
}

#[derive(Debug)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial is under way; if it never reports (its caller went away),
    /// another is allowed after `until`.
    HalfOpen {
        until: Instant,
    },
}

/// The client.
#[derive(Debug)]
pub struct Redis {
    addr: String,
    password: Option<String>,
    db: Option<u32>,
    timeout: Duration,
    /// Multiplexed connections, used in turn (connected lazily).
    conns: Vec<ArcSwapOption<Mux>>,
    /// Serializes (re)connecting.
    connecting: tokio::sync::Mutex<()>,
    next: AtomicUsize,
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
    /// Parses the URL; connects lazily, `connections` multiplexed
    /// connections at most.
    pub fn new(url: &str, timeout: Duration, connections: usize) -> Result<Self, String> {
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
            conns: (0..connections.clamp(1, 64))
                .map(|_| ArcSwapOption::empty())
                .collect(),
            connecting: tokio::sync::Mutex::new(()),
            next: AtomicUsize::new(0),
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
        let mut bytes = Vec::with_capacity(64 * cmds.len());
        for c in cmds {
            encode(c, &mut bytes);
        }
        self.pipeline_raw(bytes, cmds.len()).await
    }

    /// [`pipeline`](Self::pipeline) of `n` commands already encoded (see
    /// [`encode_args`]).
    pub async fn pipeline_raw(&self, bytes: Vec<u8>, n: usize) -> Result<Vec<Reply>, RedisError> {
        if !self.allow() {
            self.short_circuited.fetch_add(1, Ordering::Relaxed);
            return Err(RedisError::CircuitOpen);
        }
        let result = self.exchange(bytes, n).await;
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    async fn exchange(&self, bytes: Vec<u8>, n: usize) -> Result<Vec<Reply>, RedisError> {
        let mux = tokio::time::timeout(self.timeout, self.mux())
            .await
            .map_err(|_| RedisError::Timeout)??;
        let (reply, rx) = oneshot::channel();
        let job = Job { bytes, n, reply };
        if mux.tx.send(job).is_err() {
            mux.dead.store(true, Ordering::Relaxed);
            return Err(RedisError::Io("connection lost".into()));
        }
        // A caller that goes away (its client disconnected) leaves the
        // connection as it is: the reply, when it comes, is read and
        // discarded, so the connection stays in step. A connection that does
        // not answer in time is abandoned: the next call reconnects.
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(r) => r.unwrap_or_else(|_| Err(RedisError::Io("connection lost".into()))),
            Err(_) => {
                mux.dead.store(true, Ordering::Relaxed);
                Err(RedisError::Timeout)
            }
        }
    }

    /// A live multiplexed connection (connecting one if need be).
    async fn mux(&self) -> Result<Arc<Mux>, RedisError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let slot = self.conns.get(i).ok_or(RedisError::Io("no slot".into()))?;
        if let Some(m) = slot.load_full().filter(|m| !m.dead.load(Ordering::Relaxed)) {
            return Ok(m);
        }
        let _one = self.connecting.lock().await;
        if let Some(m) = slot.load_full().filter(|m| !m.dead.load(Ordering::Relaxed)) {
            return Ok(m);
        }
        let stream = self.connect().await?;
        let m = Arc::new(Mux::spawn(stream));
        slot.store(Some(m.clone()));
        Ok(m)
    }

    async fn connect(&self) -> Result<TcpStream, RedisError> {
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
                if let Reply::Error(e) = read_reply(&mut conn, &mut Vec::new()).await? {
                    // The reply names the command, never the password.
                    return Err(RedisError::Io(format!("connection setup refused: {e}")));
                }
            }
        }
        // Nothing else was sent: no reply is left in the read buffer.
        Ok(conn.into_inner())
    }

    fn allow(&self) -> bool {
        let Ok(mut b) = self.breaker.lock() else {
            return true;
        };
        match *b {
            Breaker::Closed { .. } => true,
            Breaker::Open { until } if Instant::now() >= until => {
                // One trial; others keep failing fast until it answers.
                *b = Breaker::HalfOpen {
                    until: Instant::now() + self.timeout + self.cool_down,
                };
                true
            }
            Breaker::HalfOpen { until } if Instant::now() >= until => {
                *b = Breaker::HalfOpen {
                    until: Instant::now() + self.timeout + self.cool_down,
                };
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => false,
        }
    }

    fn succeeded(&self) {
        let Ok(mut b) = self.breaker.lock() else {
            return;
        };
        if !matches!(*b, Breaker::Closed { failures: 0 }) {
            if matches!(*b, Breaker::HalfOpen { .. }) {
                self.transitions.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(redis = %self.addr, "redis is answering again; circuit closed");
            }
            *b = Breaker::Closed { failures: 0 };
        }
    }

    fn failed(&self, e: &RedisError) {
        // Connections of a failing server are suspect: start afresh.
        for c in &self.conns {
            if let Some(m) = c.swap(None) {
                m.dead.store(true, Ordering::Relaxed);
            }
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
            Breaker::HalfOpen { .. } => true,
            Breaker::Open { .. } => false,
        };
        if open {
            let was_half = matches!(*b, Breaker::HalfOpen { .. });
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
    let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
    encode_args(out, &args);
}

type ReplyFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, RedisError>> + Send + 'a>>;

/// One caller's commands, and where their replies go.
struct Job {
    bytes: Vec<u8>,
    n: usize,
    reply: oneshot::Sender<Result<Vec<Reply>, RedisError>>,
}

/// A multiplexed connection: a writer task and a reader task.
#[derive(Debug)]
struct Mux {
    tx: mpsc::UnboundedSender<Job>,
    dead: Arc<AtomicBool>,
}

impl Mux {
    fn spawn(stream: TcpStream) -> Self {
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let (pending_tx, mut pending_rx) =
            mpsc::unbounded_channel::<(usize, oneshot::Sender<Result<Vec<Reply>, RedisError>>)>();
        let dead = Arc::new(AtomicBool::new(false));
        let d = dead.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(job) = rx.recv().await {
                if d.load(Ordering::Relaxed) {
                    break;
                }
                // Everything queued meanwhile goes in the same write.
                buf.clear();
                buf.extend_from_slice(&job.bytes);
                let mut ok = pending_tx.send((job.n, job.reply)).is_ok();
                while buf.len() < 64 << 10 {
                    let Ok(j) = rx.try_recv() else { break };
                    buf.extend_from_slice(&j.bytes);
                    ok &= pending_tx.send((j.n, j.reply)).is_ok();
                }
                if !ok || write.write_all(&buf).await.is_err() {
                    break;
                }
            }
            d.store(true, Ordering::Relaxed);
        });
        let d = dead.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(read);
            let mut line = Vec::with_capacity(64);
            let mut failed: Option<RedisError> = None;
            while let Some((n, reply)) = pending_rx.recv().await {
                if let Some(e) = &failed {
                    let _ = reply.send(Err(e.clone()));
                    continue;
                }
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    match read_reply(&mut r, &mut line).await {
                        Ok(x) => out.push(x),
                        Err(e) => {
                            d.store(true, Ordering::Relaxed);
                            failed = Some(e);
                            break;
                        }
                    }
                }
                let _ = reply.send(match &failed {
                    Some(e) => Err(e.clone()),
                    None => Ok(out),
                });
            }
        });
        Self { tx, dead }
    }
}

/// One reply's first line (and a bulk string's payload): a whole reply, or
/// the length of an array whose elements follow.
enum Head {
    Done(Reply),
    Array(usize),
}

async fn read_head<R: AsyncBufRead + Unpin + Send>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> Result<Head, RedisError> {
    let bad = |m: &str| RedisError::Io(format!("protocol error: {m}"));
    line.clear();
    let n = r
        .read_until(b'\n', line)
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
    Ok(Head::Done(match line[0] {
        b'+' => Reply::Simple(body.to_owned()),
        b'-' => Reply::Error(body.to_owned()),
        b':' => Reply::Int(int()?),
        b'$' => {
            let len = int()?;
            if len < 0 {
                return Ok(Head::Done(Reply::Nil));
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
                return Ok(Head::Done(Reply::Nil));
            }
            let len = usize::try_from(len).map_err(|_| bad("bad length"))?;
            if len > 1 << 16 {
                return Err(bad("array too large"));
            }
            return Ok(Head::Array(len));
        }
        _ => return Err(bad("unknown reply type")),
    }))
}

/// Reads one reply; `line` is scratch space, reused across replies. Flat
/// arrays (what the gateway's scripts answer) are read in place; nested
/// ones recurse.
async fn read_reply<R: AsyncBufRead + Unpin + Send>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> Result<Reply, RedisError> {
    match read_head(r, line).await? {
        Head::Done(x) => Ok(x),
        Head::Array(n) => {
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(match read_head(r, line).await? {
                    Head::Done(x) => x,
                    Head::Array(m) => read_array(r, line, m, 1).await?,
                });
            }
            Ok(Reply::Array(items))
        }
    }
}

fn read_array<'a, R: AsyncBufRead + Unpin + Send>(
    r: &'a mut R,
    line: &'a mut Vec<u8>,
    n: usize,
    depth: usize,
) -> ReplyFuture<'a> {
    Box::pin(async move {
        if depth >= MAX_DEPTH {
            return Err(RedisError::Io("protocol error: nested too deep".into()));
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(match read_head(r, line).await? {
                Head::Done(x) => x,
                Head::Array(m) => read_array(r, line, m, depth + 1).await?,
            });
        }
        Ok(Reply::Array(items))
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

    #[tokio::test]
    async fn parses_replies_with_bounds() {
        let mut line = Vec::new();
        let mut input: &[u8] = b"*3\r\n:1\r\n$3\r\nabc\r\n*2\r\n+OK\r\n$-1\r\n-ERR x\r\n";
        let r = read_reply(&mut input, &mut line).await;
        assert_eq!(
            r,
            Ok(Reply::Array(vec![
                Reply::Int(1),
                Reply::Bulk(b"abc".to_vec()),
                Reply::Array(vec![Reply::Simple("OK".into()), Reply::Nil]),
            ]))
        );
        assert_eq!(
            read_reply(&mut input, &mut line).await,
            Ok(Reply::Error("ERR x".into()))
        );
        // too deep, too large, malformed, cut short
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + ":1\r\n";
        assert!(read_reply(&mut deep.as_bytes(), &mut line).await.is_err());
        assert!(
            read_reply(&mut &b"$99999999999\r\n"[..], &mut line)
                .await
                .is_err()
        );
        assert!(read_reply(&mut &b"?x\r\n"[..], &mut line).await.is_err());
        assert!(read_reply(&mut &b":12"[..], &mut line).await.is_err());
        assert!(read_reply(&mut &b"$5\r\nab"[..], &mut line).await.is_err());
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&cmd(["SET", "k", "v1"]), &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n");
    }
}

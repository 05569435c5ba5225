//! Body types. [`Body`] is what the gateway sends to clients: nothing, a
//! buffer it made (problem+json, preflight), or the upstream's stream passed
//! through without buffering. [`ProxyBody`] is what it sends upstream: the
//! client's stream, cut off with an error past the route's size limit.
//! Both are plain enums so no request pays for a boxed trait object.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::access_log::AccessRecord;
use crate::proxy::PooledBody;

/// Boxed error used at the edges of body streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent more body bytes than the route allows.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Response body sent to clients.
#[derive(Debug)]
pub struct Body {
    kind: Kind,
    sent: u64,
    /// Written to the access log when the body is done or dropped.
    record: Option<Box<AccessRecord>>,
    /// Concurrency slots, given back when the body is done or dropped.
    slots: Vec<crate::ratelimit::Slot>,
}

#[derive(Debug)]
enum Kind {
    Empty,
    Full(Option<Bytes>),
    Stream(PooledBody),
}

impl Body {
    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Empty,
            sent: 0,
            record: None,
            slots: Vec::new(),
        }
    }

    /// A body the gateway made.
    pub fn full(b: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(b)),
            sent: 0,
            record: None,
            slots: Vec::new(),
        }
    }

    /// The upstream's body, streamed through.
    pub fn stream(b: PooledBody) -> Self {
        Self {
            kind: Kind::Stream(b),
            sent: 0,
            record: None,
            slots: Vec::new(),
        }
    }

    /// Holds concurrency slots until the body is done (or dropped).
    pub fn hold(&mut self, slots: Vec<crate::ratelimit::Slot>) {
        self.slots = slots;
    }

    /// Attaches the access-log record, emitted when the body ends.
    pub fn set_record(&mut self, r: Box<AccessRecord>) {
        self.record = Some(r);
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            r.emit(self.sent);
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(s) => Pin::new(s)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        };
        if let Poll::Ready(Some(Ok(f))) = &polled {
            if let Some(d) = f.data_ref() {
                this.sent += d.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(s) => s.size_hint(),
        }
    }
}

/// The client's request body as a stage leaves it: still streaming, or read
/// (bounded) because a stage needed to look at it.
#[derive(Debug)]
pub enum RequestBody {
    /// Not read yet.
    Stream(Incoming),
    /// Read completely (within the route's limit).
    Buffered(Bytes),
}

/// Request body sent upstream.
#[derive(Debug)]
pub enum ProxyBody {
    /// No body.
    Empty,
    /// A body a stage already read.
    Full(Option<Bytes>),
    /// The client's stream with the bytes still allowed.
    Limited {
        /// The client's body.
        inner: Incoming,
        /// Bytes still allowed.
        remaining: u64,
        /// The configured limit, for the error.
        limit: u64,
    },
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Limited {
                inner,
                remaining,
                limit,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        let n = d.len() as u64;
                        if n > *remaining {
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*limit)))));
                        }
                        *remaining -= n;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Limited { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Limited { inner, .. } => inner.size_hint(),
        }
    }
}

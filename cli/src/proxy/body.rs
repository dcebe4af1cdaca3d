//! Bodies streamed through the proxy, frame by frame, never buffered whole.
//!
//! Owns [`RequestBody`] (the client's body on its way upstream: takeable back while unsent so a
//! connect failure can move the request to another instance, and capped by the optional body
//! limit) and [`ResponseBody`] (an upstream's body on its way back, holding the instance's
//! in-flight count and the upstream connection until it ends, or a small body the proxy wrote
//! itself).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool::PooledConnection;
use super::routing::InFlightGuard;

/// Errors of a request body on its way upstream.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the request body from the client failed")]
    Client(#[source] hyper::Error),
}

/// What the forwarder keeps of a request body it handed to the upstream client.
pub struct BodyHandle {
    shared: Arc<BodyShared>,
}

struct BodyShared {
    /// The client's body until the upstream client first polls it.
    unsent: Mutex<Option<Incoming>>,
    too_large: AtomicBool,
    limit: Option<u64>,
}

impl BodyHandle {
    /// Takes the body back if the upstream client never started sending it (connect failure),
    /// so the request can go to another instance.
    pub fn reclaim(&self) -> Option<Incoming> {
        self.shared
            .unsent
            .lock()
            .expect("the body slot lock is never held across a panic")
            .take()
    }

    /// The body size limit, if the body was cut off by it.
    pub fn too_large_limit(&self) -> Option<u64> {
        if self.shared.too_large.load(Ordering::Relaxed) {
            self.shared.limit
        } else {
            None
        }
    }
}

/// The client's request body on its way to an upstream.
pub struct RequestBody {
    shared: Arc<BodyShared>,
    body: Option<Incoming>,
    size_hint: SizeHint,
    is_end_stream: bool,
    limit: Option<u64>,
    sent: u64,
}

impl RequestBody {
    /// Wraps `body`; the returned handle can take it back while nothing was sent.
    pub fn new(body: Incoming, limit: Option<u64>) -> (Self, BodyHandle) {
        let size_hint = body.size_hint();
        let is_end_stream = body.is_end_stream();
        let shared = Arc::new(BodyShared {
            unsent: Mutex::new(Some(body)),
            too_large: AtomicBool::new(false),
            limit,
        });
        let handle = BodyHandle {
            shared: Arc::clone(&shared),
        };
        let body = Self {
            shared,
            body: None,
            size_hint,
            is_end_stream,
            limit,
            sent: 0,
        };
        (body, handle)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if this.body.is_none() {
            // First poll: from now on the body belongs to this upstream request.
            this.body = this
                .shared
                .unsent
                .lock()
                .expect("the body slot lock is never held across a panic")
                .take();
        }
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(limit)) = (frame.data_ref(), this.limit) {
                    this.sent += data.len() as u64;
                    if this.sent > limit {
                        this.shared.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(BodyError::Client(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => self.is_end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self.size_hint,
        }
    }
}

/// A response body on its way to the client.
pub enum ResponseBody {
    /// An upstream's body.
    Upstream(UpstreamBody),
    /// A body the proxy wrote itself (errors), sent in one frame.
    Full(Option<Bytes>),
}

/// An upstream's body; the guard keeps the instance's in-flight count until it ends, and the
/// connection goes back to the pool when it ends (closed instead if the body is cut short).
pub struct UpstreamBody {
    body: Incoming,
    guard: Option<InFlightGuard>,
    connection: Option<PooledConnection>,
}

impl UpstreamBody {
    /// Releases what the response held: the in-flight count, and the connection if the
    /// response ended cleanly.
    fn finish(&mut self, cleanly: bool) {
        self.guard.take();
        if let Some(connection) = self.connection.take() {
            if cleanly {
                connection.release();
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper does not poll a body it knows is empty (HEAD, 204, 304): still reusable.
        let cleanly = self.body.is_end_stream();
        self.finish(cleanly);
    }
}

impl ResponseBody {
    pub fn upstream(
        body: Incoming,
        guard: Option<InFlightGuard>,
        connection: Option<PooledConnection>,
    ) -> Self {
        Self::Upstream(UpstreamBody {
            body,
            guard,
            connection,
        })
    }

    pub fn full(bytes: Bytes) -> Self {
        Self::Full(Some(bytes))
    }

    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut *self {
            Self::Upstream(upstream) => {
                let polled = Pin::new(&mut upstream.body).poll_frame(cx);
                match &polled {
                    // The response is over: the instance no longer serves this request.
                    Poll::Ready(None) => upstream.finish(true),
                    Poll::Ready(Some(Err(_))) => upstream.finish(false),
                    _ => {}
                }
                polled
            }
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(upstream) => upstream.body.is_end_stream(),
            Self::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(upstream) => upstream.body.size_hint(),
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
        }
    }
}

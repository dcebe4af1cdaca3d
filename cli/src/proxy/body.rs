//! Response bodies on their way to the client, frame by frame, never buffered whole.
//!
//! Owns [`ResponseBody`]: an upstream's body (read off the upstream connection by the client's
//! own task, holding the instance's in-flight count until it ends and handing the connection
//! back to the pool when it ends cleanly), or a small body the proxy wrote itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::client::BodyReader;
use super::pool::PoolSlot;
use super::routing::InFlightGuard;

/// A response body on its way to the client.
pub enum ResponseBody {
    /// An upstream's body.
    Upstream(UpstreamBody),
    /// A body the proxy wrote itself (errors), sent in one frame.
    Full(Option<Bytes>),
    /// A body of the reserved host's own service (the dashboard), streamed as it comes.
    Reserved(ReservedBody),
}

/// The body type of the reserved host's service.
pub type ReservedBody = http_body_util::combinators::UnsyncBoxBody<Bytes, io::Error>;

/// An upstream's body; the guard keeps the instance's in-flight count until it ends, and the
/// connection goes back to the pool when it ends (closed instead if the body is cut short).
pub struct UpstreamBody {
    reader: BodyReader,
    guard: Option<InFlightGuard>,
    slot: Option<PoolSlot>,
}

impl UpstreamBody {
    /// Releases what the response held: the in-flight count, and the connection if the
    /// response ended cleanly and the connection may serve another request.
    fn finish(&mut self) {
        self.guard.take();
        if let (Some(connection), Some(slot)) =
            (self.reader.take_reusable_connection(), self.slot.take())
        {
            slot.give_back(connection);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper does not poll a body it knows is empty (HEAD, 204, 304): still reusable.
        self.finish();
    }
}

impl ResponseBody {
    pub fn upstream(
        reader: BodyReader,
        guard: Option<InFlightGuard>,
        slot: Option<PoolSlot>,
    ) -> Self {
        Self::Upstream(UpstreamBody {
            reader,
            guard,
            slot,
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
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut *self {
            Self::Upstream(upstream) => {
                let polled = upstream.reader.poll_frame(cx);
                if upstream.reader.is_end_stream() {
                    // The response is over: the instance no longer serves this request.
                    upstream.finish();
                }
                polled
            }
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Self::Reserved(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(upstream) => upstream.reader.is_end_stream(),
            Self::Full(bytes) => bytes.is_none(),
            Self::Reserved(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(upstream) => match upstream.reader.exact_len() {
                Some(len) => SizeHint::with_exact(len),
                None => SizeHint::default(),
            },
            Self::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Reserved(body) => body.size_hint(),
        }
    }
}

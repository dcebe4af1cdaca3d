//! The upstream side of the proxy: one HTTP/1.1 exchange on a connection the proxy owns,
//! driven by the task of the client's request (no connection task, no channel between them).
//!
//! Owns writing a request head and body (the body streamed frame by frame: as is under
//! `Content-Length`, re-chunked otherwise), reading a response head (1xx skipped, `101` handed
//! over as an upgraded stream), the response body framing of RFC 9112 section 6.3 (no body,
//! `Content-Length`, chunked, or until close) and whether the connection may serve another
//! request. It knows nothing of pools, instances or retries beyond saying whether a byte of
//! the request went out (that is `pool` and `upstream`).
//!
//! Why not hyper's client: hyper serves the client side of the proxy; for the upstream side its
//! `client::conn` needs a task per connection and two channel hops per request, which were
//! about a quarter of the proxy's instructions per request (`bench/RESULTS.md`, issue 4).
//! Parsing is httparse's, as in hyper.
//!
//! A request body goes up while the response head is awaited: an upstream that answers before
//! reading the whole body (a 413 for an upload), even one that then closes and so resets the
//! connection, is answered with that; the rest of the body is not sent (the client's is read
//! off and dropped, so its upload ends cleanly), and the connection is not reused. (An
//! upstream that streams its answer while it still reads the upload, full duplex, is cut off
//! at its head; HTTP/1.1 rarely does that.)

use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::forward::{push_header, push_request_headers, Forwarding};

/// Largest response head (status line and headers) accepted from an upstream.
const MAX_HEAD_SIZE: usize = 64 * 1024;
/// Most header fields in one response head or trailer section.
const MAX_HEADERS: usize = 100;
/// Header positions kept without an allocation while a response head is parsed.
const INLINE_SPANS: usize = 32;
/// Bytes asked of the socket per read: a head fits; bodies stream in pieces this size.
const READ_SIZE: usize = 16 * 1024;
/// Longest chunk-size line (with extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("writing the request to the upstream failed")]
    Write(#[source] io::Error),
    #[error("reading the response from the upstream failed")]
    Read(#[source] io::Error),
    #[error("the upstream closed the connection before a complete response head")]
    Closed,
    #[error("the upstream sent an invalid response: {0}")]
    Invalid(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("reading the request body from the client failed")]
    ClientBody(#[source] hyper::Error),
}

/// A failed exchange; `unsent_body` is the request body when not a byte of the request went
/// out, so it may go to another connection.
pub struct Failure {
    pub error: ClientError,
    pub unsent_body: Option<Incoming>,
}

/// An open HTTP/1.1 connection to an upstream, between two requests.
pub struct Connection {
    stream: TcpStream,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
}

/// What goes upstream of a request: its head, with the upstream's `Host` and the forwarding
/// headers (see [`push_request_headers`]).
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub path_and_query: &'a PathAndQuery,
    pub host: &'a HeaderValue,
    pub headers: &'a HeaderMap,
    pub forwarding: &'a Forwarding<'a>,
}

/// The upstream's reply after its head: a body to read, or an upgraded connection.
pub enum Reply {
    /// The body follows on the connection.
    Body(BodyReader),
    /// `101 Switching Protocols`: the connection is now the upgraded protocol's.
    Upgraded(UpgradedIo),
}

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read_buf: BytesMut::new(),
            write_buf: Vec::new(),
        }
    }

    /// Whether an idle connection can no longer take a request: the upstream closed it, or
    /// sent bytes nobody asked for. No system call unless the socket became readable.
    pub fn is_unusable(&self) -> bool {
        if !self.read_buf.is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends one request and reads its response head. The body is read afterwards through
    /// the returned [`Reply`]; the connection goes with it.
    pub async fn send(
        mut self,
        head: &RequestHead<'_>,
        body: Incoming,
        body_limit: Option<u64>,
    ) -> Result<(Response<()>, Reply), Failure> {
        let chunked = !head.headers.contains_key(CONTENT_LENGTH) && !body.is_end_stream();
        encode_head(&mut self.write_buf, head, chunked);
        // The first write decides whether anything went out: if it fails, the request may be
        // sent again elsewhere.
        let mut written = 0;
        while written < self.write_buf.len() {
            match self.stream.write(&self.write_buf[written..]).await {
                Ok(n) if n > 0 => written += n,
                Ok(_) => {
                    let error = io::Error::from(io::ErrorKind::WriteZero);
                    return Err(failure(ClientError::Write(error), written, body));
                }
                Err(error) => return Err(failure(ClientError::Write(error), written, body)),
            }
        }
        let is_head_request = *head.method == Method::HEAD;
        let unsent = |error| Failure {
            error,
            unsent_body: None,
        };
        if body.is_end_stream() {
            let response = read_head(&mut self.stream, &mut self.read_buf)
                .await
                .map_err(unsent)?;
            return self.answer(response, is_head_request, true).map_err(unsent);
        }
        // Boxed: the body's path is the larger future, and requests without a body (most)
        // should not carry it (every await moves the futures it holds).
        let (response, body_sent) = Box::pin(self.exchange_body(body, chunked, body_limit))
            .await
            .map_err(unsent)?;
        self.answer(response, is_head_request, body_sent)
            .map_err(unsent)
    }

    /// Sends the body while the response head is awaited: an upstream may answer before it
    /// read the whole body (a 413, a 401, a 404), and then stop reading it. Returns the head
    /// and whether the whole body went out.
    ///
    /// An upstream that answers early often closes at once (hyper, Node): its kernel then
    /// resets the connection because of the unread body, and the next write here fails. The
    /// answer came before the reset and is still in the socket's buffer (Linux hands queued
    /// data out before the reset's error), so a failed write is followed by reading the head:
    /// the upstream's own answer goes to the client, and only when there is none is the failed
    /// write the error. What the client still sends of its body is read off and dropped
    /// ([`drain_rest`]), so the client sees a clean end of its request rather than a reset.
    async fn exchange_body(
        &mut self,
        mut body: Incoming,
        chunked: bool,
        body_limit: Option<u64>,
    ) -> Result<(Response<()>, bool), ClientError> {
        let (mut reader, mut writer) = self.stream.split();
        let response = {
            let writing = write_body(
                &mut writer,
                &mut self.write_buf,
                &mut body,
                chunked,
                body_limit,
            );
            let reading = read_head(&mut reader, &mut self.read_buf);
            let (mut writing, mut reading) = (pin!(writing), pin!(reading));
            tokio::select! {
                biased;
                written = &mut writing => match written {
                    Ok(()) => return Ok((reading.await?, true)),
                    // The upstream closed while the body went up: its answer, if it sent one,
                    // is already here (a reset connection reads what came before the reset,
                    // then fails at once, so this wait is short).
                    Err(ClientError::Write(error)) => match reading.await {
                        Ok(response) => response,
                        Err(_) => return Err(ClientError::Write(error)),
                    },
                    // The client's body failed or grew past the limit: an answer already
                    // read is passed on, but none is waited for (the upstream still waits for
                    // the rest of the body).
                    Err(error) => match reading.as_mut().now_or_never() {
                        Some(Ok(response)) => return Ok((response, false)),
                        _ => return Err(error),
                    },
                },
                // Answered early: the rest of the body is not sent, and the connection, its
                // request cut short, is not used again.
                response = &mut reading => response?,
            }
        };
        drain_rest(body);
        Ok((response, false))
    }

    /// What follows a final response head: an upgraded connection, or a body read off it.
    fn answer(
        self,
        response: Response<()>,
        is_head_request: bool,
        request_complete: bool,
    ) -> Result<(Response<()>, Reply), ClientError> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upgraded = UpgradedIo {
                stream: self.stream,
                leftover: self.read_buf,
            };
            return Ok((response, Reply::Upgraded(upgraded)));
        }
        let (state, reusable) = framing(&response, is_head_request)?;
        let reader = BodyReader {
            connection: Some(self),
            state,
            reusable: reusable && request_complete,
        };
        Ok((response, Reply::Body(reader)))
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read_buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read_buf)
    }
}

/// Streams a request body upstream: as is under a `Content-Length`, else chunked (trailers
/// included), cut off past `limit`.
async fn write_body<W: AsyncWrite + Unpin>(
    stream: &mut W,
    buf: &mut Vec<u8>,
    body: &mut Incoming,
    chunked: bool,
    limit: Option<u64>,
) -> Result<(), ClientError> {
    let mut sent: u64 = 0;
    let mut trailers = None;
    // A chunk's closing CRLF goes out with the next chunk's size line: two writes a chunk.
    let mut chunk_open = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ClientError::ClientBody)?;
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                trailers = frame.into_trailers().ok();
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if let Some(limit) = limit.filter(|limit| sent > *limit) {
            return Err(ClientError::BodyTooLarge { limit });
        }
        if chunked {
            buf.clear();
            if chunk_open {
                buf.extend_from_slice(b"\r\n");
            }
            buf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            stream.write_all(buf).await.map_err(ClientError::Write)?;
            chunk_open = true;
        }
        stream.write_all(&data).await.map_err(ClientError::Write)?;
    }
    if chunked {
        buf.clear();
        if chunk_open {
            buf.extend_from_slice(b"\r\n");
        }
        buf.extend_from_slice(b"0\r\n");
        for (name, value) in trailers.iter().flatten() {
            push_header(buf, name.as_str(), value.as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        stream.write_all(buf).await.map_err(ClientError::Write)?;
    }
    Ok(())
}

/// Reads the final response head (`101` included; other 1xx skipped: 100 Continue, 103 Early
/// Hints), leaving whatever follows it in `buf`.
async fn read_head<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
) -> Result<Response<()>, ClientError> {
    loop {
        if let Some(response) = parse_response_head(buf)? {
            let status = response.status();
            if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Ok(response);
        }
        if buf.len() >= MAX_HEAD_SIZE {
            return Err(ClientError::Invalid(format!(
                "response head larger than {MAX_HEAD_SIZE} bytes"
            )));
        }
        buf.reserve(READ_SIZE);
        let n = tokio::io::AsyncReadExt::read_buf(stream, buf)
            .await
            .map_err(ClientError::Read)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
    }
}

/// Most of a request body read off and dropped after the upstream answered without it.
const DRAIN_MAX_BYTES: u64 = 64 << 20;
/// Longest a request body is drained after the upstream answered without it.
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads what is left of a request body the upstream answered before reading, and drops it,
/// up to [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`] (nginx's lingering close does the same).
/// Without it the client's upload is cut under it: over HTTP/1.1 the connection is closed
/// with the body unread, which makes the kernel reset it, and a client still sending may lose
/// the answer; over HTTP/2 the client's stream is reset. A task of its own: the response goes
/// to the client meanwhile. Its end is bounded, so nothing waits for it.
fn drain_rest(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let draining = async {
            let mut drained: u64 = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    drained += data.len() as u64;
                    if drained > DRAIN_MAX_BYTES {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, draining).await;
    });
}

fn failure(error: ClientError, written: usize, body: Incoming) -> Failure {
    Failure {
        error,
        unsent_body: (written == 0).then_some(body),
    }
}

/// `METHOD /path?query HTTP/1.1`, the upstream's `Host`, the client's headers with the
/// forwarding ones set, and `Transfer-Encoding: chunked` for a body of unknown length.
fn encode_head(buf: &mut Vec<u8>, head: &RequestHead<'_>, chunked: bool) {
    buf.clear();
    buf.extend_from_slice(head.method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(head.path_and_query.as_str().as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    push_header(buf, HOST.as_str(), head.host.as_bytes());
    push_request_headers(buf, head.headers, head.forwarding);
    if chunked {
        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// Parses a complete response head off the front of `buf`; `None` while it is incomplete.
/// Header values share the head's bytes (no copy per header).
fn parse_response_head(buf: &mut BytesMut) -> Result<Option<Response<()>>, ClientError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Offsets into the head of each header's name and value, taken while httparse borrows it:
    // the first 32 in a small array, any more in a Vec (zeroing room for the most headers, or
    // allocating every time, costs more). Heads are far below 4 GiB.
    let mut inline = [(0u32, 0u32, 0u32, 0u32); INLINE_SPANS];
    let mut spilled = Vec::new();
    let (len, code, minor_version, n_spans) = {
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(ClientError::Invalid(format!("{error}"))),
        };
        let start = buf.as_ptr() as usize;
        for (index, header) in response.headers.iter().enumerate() {
            let name = header.name.as_ptr() as usize - start;
            let value = header.value.as_ptr() as usize - start;
            let span = (
                name as u32,
                (name + header.name.len()) as u32,
                value as u32,
                (value + header.value.len()) as u32,
            );
            match inline.get_mut(index) {
                Some(slot) => *slot = span,
                None => spilled.push(span),
            }
        }
        (
            len,
            response.code.unwrap_or_default(),
            response.version.unwrap_or_default(),
            response.headers.len(),
        )
    };
    let head = buf.split_to(len).freeze();
    let mut response = Response::new(());
    // Filled in place (replacing the map would drop the empty one). Room for the proxy's own
    // `x-stack-*` headers too, so adding them does not regrow it.
    let headers = response.headers_mut();
    headers.reserve(n_spans + 2);
    let spans = inline[..n_spans.min(INLINE_SPANS)].iter().chain(&spilled);
    for &(name_start, name_end, value_start, value_end) in spans {
        let (name_start, name_end) = (name_start as usize, name_end as usize);
        let (value_start, value_end) = (value_start as usize, value_end as usize);
        let name = HeaderName::from_bytes(&head[name_start..name_end])
            .map_err(|_| ClientError::Invalid("a header name is not valid".into()))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| ClientError::Invalid(format!("the value of `{name}` is not valid")))?;
        headers.append(name, value);
    }
    *response.status_mut() = StatusCode::from_u16(code)
        .map_err(|_| ClientError::Invalid(format!("status {code} is not valid")))?;
    *response.version_mut() = if minor_version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    Ok(Some(response))
}

/// How the body of `response` is delimited (RFC 9112, section 6.3), and whether the connection
/// can take another request after it. One pass over the headers (a small map: comparing names
/// costs less than hashing them for lookups).
fn framing(
    response: &Response<()>,
    is_head_request: bool,
) -> Result<(BodyState, bool), ClientError> {
    let mut close = false;
    let mut transfer_encoded = false;
    let mut last_coding = None;
    let mut length = None;
    let mut length_is_valid = true;
    for (name, value) in response.headers() {
        if name == CONNECTION {
            close |= has_token(value, "close");
        } else if name == TRANSFER_ENCODING {
            transfer_encoded = true;
            let coding = value.to_str().ok().and_then(|text| {
                text.split(',')
                    .map(str::trim)
                    .rfind(|coding| !coding.is_empty())
            });
            last_coding = coding.or(last_coding);
        } else if name == CONTENT_LENGTH {
            let parsed = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok());
            match (parsed, length) {
                (Some(parsed), None) => length = Some(parsed),
                (Some(parsed), Some(earlier)) if parsed == earlier => {}
                _ => length_is_valid = false,
            }
        }
    }
    let reusable = response.version() == Version::HTTP_11 && !close;
    let status = response.status();
    if is_head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((BodyState::Done, reusable));
    }
    if transfer_encoded {
        // RFC 9112 6.3: a response with both may be a smuggling attempt or a broken upstream;
        // whichever framing were picked, the client could get a different body than the
        // upstream meant. Refused, as nginx refuses it (hyper's client lets the
        // Transfer-Encoding win). HTTP/1.0 has no Transfer-Encoding at all (hyper agrees).
        if length.is_some() || !length_is_valid || response.version() == Version::HTTP_10 {
            return Err(ClientError::Invalid(
                if response.version() == Version::HTTP_10 {
                    "an HTTP/1.0 response cannot have `Transfer-Encoding`"
                } else {
                    "it has both `Transfer-Encoding` and `Content-Length`"
                }
                .into(),
            ));
        }
        return Ok(match last_coding {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => {
                (BodyState::ChunkSize, reusable)
            }
            _ => (BodyState::UntilClose, false),
        });
    }
    if !length_is_valid {
        return Err(ClientError::Invalid("bad Content-Length".into()));
    }
    Ok(match length {
        Some(0) => (BodyState::Done, reusable),
        Some(length) => (BodyState::Fixed(length), reusable),
        None => (BodyState::UntilClose, false),
    })
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|text| {
        text.split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

/// Where a response body is in its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// `n` bytes left of a `Content-Length` body.
    Fixed(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// `n` bytes left of the current chunk.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// Expecting the trailer section after the last chunk.
    Trailers,
    /// Everything until the upstream closes.
    UntilClose,
    /// The body is over.
    Done,
}

/// A response body as it arrives on the connection, frame by frame.
pub struct BodyReader {
    connection: Option<Connection>,
    state: BodyState,
    reusable: bool,
}

impl BodyReader {
    /// Whether the body is over (nothing more will be read).
    pub fn is_end_stream(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Bytes left, when the framing says.
    pub fn exact_len(&self) -> Option<u64> {
        match self.state {
            BodyState::Fixed(n) => Some(n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    /// The connection, once the body is over and the connection can serve another request.
    pub fn take_reusable_connection(&mut self) -> Option<Connection> {
        if self.state == BodyState::Done && self.reusable {
            self.connection.take()
        } else {
            None
        }
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let polled = self.poll_frame_inner(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.reusable = false;
            self.state = BodyState::Done;
            self.connection = None;
        }
        polled
    }

    fn poll_frame_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let Some(connection) = self.connection.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let buf = &mut connection.read_buf;
            match self.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Fixed(left) | BodyState::ChunkData(left) if !buf.is_empty() => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = match self.state {
                        BodyState::Fixed(_) if left == 0 => BodyState::Done,
                        BodyState::Fixed(_) => BodyState::Fixed(left),
                        _ if left == 0 => BodyState::ChunkEnd,
                        _ => BodyState::ChunkData(left),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::UntilClose if !buf.is_empty() => {
                    let data = buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::ChunkSize if !buf.is_empty() => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = buf.split_to(used);
                        self.state = if size == 0 {
                            BodyState::Trailers
                        } else {
                            BodyState::ChunkData(size)
                        };
                        continue;
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {}
                    _ => return Poll::Ready(Some(Err(invalid("bad chunk size line")))),
                },
                BodyState::ChunkEnd if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(invalid("chunk data not followed by CRLF"))));
                    }
                    let _ = buf.split_to(2);
                    self.state = BodyState::ChunkSize;
                    continue;
                }
                BodyState::Trailers if !buf.is_empty() => match parse_trailers(buf) {
                    Ok(Some(trailers)) => {
                        self.state = BodyState::Done;
                        if trailers.is_empty() {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(None) if buf.len() < MAX_HEAD_SIZE => {}
                    Ok(None) => return Poll::Ready(Some(Err(invalid("trailers too large")))),
                    Err(error) => return Poll::Ready(Some(Err(error))),
                },
                _ => {}
            }
            // Every state needs more bytes here.
            let n = match ready!(connection.poll_fill(cx)) {
                Ok(n) => n,
                Err(error) => return Poll::Ready(Some(Err(error))),
            };
            if n == 0 {
                if self.state == BodyState::UntilClose {
                    self.state = BodyState::Done;
                    self.reusable = false;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection in the middle of the body",
                ))));
            }
        }
    }
}

/// The trailer section after the last chunk, up to its empty line; `None` while incomplete.
fn parse_trailers(buf: &mut BytesMut) -> io::Result<Option<HeaderMap>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (used, parsed) = match httparse::parse_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete((used, parsed))) => (used, parsed),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(invalid("bad trailer section")),
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for header in parsed {
        let name = HeaderName::from_bytes(header.name.as_bytes());
        let value = HeaderValue::from_bytes(header.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            trailers.append(name, value);
        }
    }
    let _ = buf.split_to(used);
    Ok(Some(trailers))
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// An upstream connection after `101 Switching Protocols`: the bytes that came with the head
/// first, then the socket.
pub struct UpgradedIo {
    stream: TcpStream,
    leftover: BytesMut,
}

impl AsyncRead for UpgradedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.leftover.is_empty() {
            let n = self.leftover.len().min(buf.remaining());
            buf.put_slice(&self.leftover.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpgradedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The client IP of every test request.
#[cfg(test)]
static TEST_CLIENT_IP: HeaderValue = HeaderValue::from_static("127.0.0.1");

/// A request head as the proxy writes it, from a client at 127.0.0.1 with no `Host` of its own.
#[cfg(test)]
pub(super) fn test_head<'a>(
    method: &'a Method,
    path_and_query: &'a PathAndQuery,
    host: &'a HeaderValue,
    headers: &'a HeaderMap,
) -> RequestHead<'a> {
    static FORWARDING: Forwarding<'static> = Forwarding {
        client_ip: &TEST_CLIENT_IP,
        requested_host: None,
        proto: b"http",
    };
    RequestHead {
        method,
        path_and_query,
        host,
        headers,
        forwarding: &FORWARDING,
    }
}

/// A real hyper `Incoming`, as the proxy gets it from a client: a loopback request carrying
/// `frames` (with a `Content-Length` when `with_length`, else chunked).
#[cfg(test)]
pub(super) async fn test_incoming(frames: Vec<&'static [u8]>, with_length: bool) -> Incoming {
    use http_body_util::StreamBody;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let (incoming_tx, mut incoming_rx) = tokio::sync::mpsc::channel(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("one connection");
        let service = service_fn(move |request: http::Request<Incoming>| {
            let incoming_tx = incoming_tx.clone();
            async move {
                let _ = incoming_tx.send(request.into_body()).await;
                Ok::<_, std::convert::Infallible>(Response::new(
                    http_body_util::Empty::<Bytes>::new(),
                ))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    let stream = TcpStream::connect(addr).await.expect("connect loopback");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let length: usize = frames.iter().map(|frame| frame.len()).sum();
    let stream =
        futures_util::stream::iter(frames.into_iter().map(|frame| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(frame)))
        }));
    let mut request = http::Request::post("/")
        .body(StreamBody::new(stream))
        .expect("a valid request");
    if with_length {
        request
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    tokio::spawn(async move {
        let _ = sender.send_request(request).await;
    });
    incoming_rx.recv().await.expect("a request body")
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream on loopback that reads one request head (and `body_len` more bytes, or a
    /// chunked body up to its last chunk), answers `answer`, and hands back what it received.
    /// With `close`, it closes the connection after answering.
    async fn upstream(
        answer: &'static [u8],
        close: bool,
    ) -> (Connection, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let received = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("one connection");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.expect("read the request");
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                let Some(head_end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let head = &text[..head_end];
                let done = if head.contains("transfer-encoding: chunked") {
                    text.ends_with("0\r\n\r\n")
                } else {
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length: "))
                        .map_or(0, |value| value.parse::<usize>().expect("a length"));
                    request.len() >= head_end + 4 + length
                };
                if done || n == 0 {
                    break;
                }
            }
            stream.write_all(answer).await.expect("answer");
            if !close {
                // Keep the connection open until the test is over.
                let _ = stream.read(&mut buf).await;
            }
            String::from_utf8(request).expect("a text request")
        });
        let stream = TcpStream::connect(addr).await.expect("connect loopback");
        (Connection::new(stream), received)
    }

    async fn exchange(
        connection: Connection,
        method: Method,
        body: Incoming,
    ) -> Result<(Response<()>, Reply), ClientError> {
        let headers = HeaderMap::new();
        let host = HeaderValue::from_static("upstream.test");
        let path_and_query = PathAndQuery::from_static("/path?q=1");
        let head = test_head(&method, &path_and_query, &host, &headers);
        connection
            .send(&head, body, None)
            .await
            .map_err(|failure| failure.error)
    }

    /// Reads a whole body: its bytes, its trailers, and whether the connection is reusable.
    async fn read_all(upstream: Reply) -> io::Result<(String, Option<HeaderMap>, bool)> {
        let Reply::Body(mut reader) = upstream else {
            panic!("no upgrade was asked for");
        };
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = poll_fn(|cx| reader.poll_frame(cx)).await {
            match frame?.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        let reusable = reader.take_reusable_connection().is_some();
        Ok((String::from_utf8(data).expect("text"), trailers, reusable))
    }

    #[tokio::test]
    async fn a_chunked_response_with_extensions_and_trailers() {
        let (connection, received) = upstream(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n",
            false,
        )
        .await;
        let (response, upstream) =
            exchange(connection, Method::GET, test_incoming(vec![], true).await)
                .await
                .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        let (body, trailers, reusable) = read_all(upstream).await.expect("a valid body");
        assert_eq!(body, "hello world");
        assert_eq!(trailers.expect("trailers")["x-checksum"], "42");
        assert!(reusable);
        let request = received.await.expect("the upstream saw the request");
        assert!(
            request.starts_with("GET /path?q=1 HTTP/1.1\r\nhost: upstream.test\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_body_until_close_is_read_to_the_end_and_the_connection_not_reused() {
        let (connection, _received) = upstream(b"HTTP/1.1 200 OK\r\n\r\nall of it", true).await;
        let (_, upstream) = exchange(connection, Method::GET, test_incoming(vec![], true).await)
            .await
            .expect("answered");
        let (body, _, reusable) = read_all(upstream).await.expect("a valid body");
        assert_eq!(body, "all of it");
        assert!(!reusable);
    }

    #[tokio::test]
    async fn informational_responses_are_skipped() {
        let (connection, _received) = upstream(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
              HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
            false,
        )
        .await;
        let (response, upstream) =
            exchange(connection, Method::GET, test_incoming(vec![], true).await)
                .await
                .expect("answered");
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(response.headers().get("link").is_none());
        let (body, _, reusable) = read_all(upstream).await.expect("a valid body");
        assert_eq!((body.as_str(), reusable), ("ok", true));
    }

    #[tokio::test]
    async fn a_head_response_has_no_body_whatever_its_length() {
        let (connection, _received) =
            upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false).await;
        let (response, upstream) =
            exchange(connection, Method::HEAD, test_incoming(vec![], true).await)
                .await
                .expect("answered");
        assert_eq!(response.headers()[CONTENT_LENGTH], "5");
        let (body, _, reusable) = read_all(upstream).await.expect("no body");
        assert_eq!((body.as_str(), reusable), ("", true));
    }

    #[tokio::test]
    async fn differing_content_lengths_are_refused() {
        let (connection, _received) = upstream(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
            false,
        )
        .await;
        let error = exchange(connection, Method::GET, test_incoming(vec![], true).await)
            .await
            .err()
            .expect("refused");
        assert!(matches!(error, ClientError::Invalid(_)), "{error:?}");
    }

    #[tokio::test]
    async fn an_upstream_closing_before_answering_is_an_error() {
        let (connection, _received) = upstream(b"", true).await;
        let error = exchange(connection, Method::GET, test_incoming(vec![], true).await)
            .await
            .err()
            .expect("no answer");
        assert!(matches!(error, ClientError::Closed), "{error:?}");
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_goes_up_chunked_and_a_known_one_as_is() {
        let (connection, received) = upstream(b"HTTP/1.1 204 No Content\r\n\r\n", false).await;
        let body = test_incoming(vec![b"abc", b"defgh"], false).await;
        exchange(connection, Method::POST, body)
            .await
            .expect("answered");
        let request = received.await.expect("the upstream saw the request");
        assert!(
            request.contains("transfer-encoding: chunked\r\n"),
            "{request}"
        );
        let body = &request[request.find("\r\n\r\n").expect("a head") + 4..];
        // hyper may hand the body over in one frame or two; both framings decode to the same.
        assert!(
            body == "3\r\nabc\r\n5\r\ndefgh\r\n0\r\n\r\n" || body == "8\r\nabcdefgh\r\n0\r\n\r\n",
            "{body:?}"
        );

        let (connection, received) = upstream(b"HTTP/1.1 204 No Content\r\n\r\n", false).await;
        let body = test_incoming(vec![b"abc", b"defgh"], true).await;
        let headers = {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_LENGTH, HeaderValue::from(8));
            headers
        };
        let path_and_query = PathAndQuery::from_static("/");
        let host = HeaderValue::from_static("upstream.test");
        let head = test_head(&Method::POST, &path_and_query, &host, &headers);
        connection
            .send(&head, body, None)
            .await
            .map_err(|failure| failure.error)
            .expect("answered");
        let request = received.await.expect("the upstream saw the request");
        assert!(!request.contains("transfer-encoding"), "{request}");
        assert!(request.ends_with("\r\n\r\nabcdefgh"), "{request}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_cut_off() {
        let (connection, _received) = upstream(b"HTTP/1.1 204 No Content\r\n\r\n", false).await;
        let body = test_incoming(vec![b"abc", b"defgh"], false).await;
        let headers = HeaderMap::new();
        let path_and_query = PathAndQuery::from_static("/");
        let host = HeaderValue::from_static("upstream.test");
        let head = test_head(&Method::POST, &path_and_query, &host, &headers);
        let error = connection
            .send(&head, body, Some(4))
            .await
            .err()
            .expect("cut off")
            .error;
        assert!(
            matches!(error, ClientError::BodyTooLarge { limit: 4 }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_body_is_passed_on_and_the_connection_not_reused() {
        static MEGABYTE: [u8; 1 << 20] = [b'x'; 1 << 20];
        // The upstream reads the head only, answers 413 at once, then neither reads the body
        // nor closes: more than the socket buffers hold stays unsent.
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("one connection");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read the head");
                head.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nnope")
                .await
                .expect("answer");
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let connection = Connection::new(TcpStream::connect(addr).await.expect("connect loopback"));
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from(32u64 << 20));
        let path_and_query = PathAndQuery::from_static("/upload");
        let host = HeaderValue::from_static("upstream.test");
        let head = test_head(&Method::POST, &path_and_query, &host, &headers);
        let body = test_incoming(vec![&MEGABYTE[..]; 32], true).await;
        let (response, upstream) =
            tokio::time::timeout(Duration::from_secs(10), connection.send(&head, body, None))
                .await
                .expect("the early answer arrives, not a hang")
                .map_err(|failure| failure.error)
                .expect("answered");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let (body, _, reusable) = read_all(upstream).await.expect("a valid body");
        assert_eq!((body.as_str(), reusable), ("nope", false));
    }

    #[test]
    fn a_head_with_more_headers_than_kept_inline_keeps_them_all() {
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        for n in 0..INLINE_SPANS + 8 {
            head.push_str(&format!("x-header-{n}: value {n}\r\n"));
        }
        head.push_str("\r\nbody");
        let mut buf = BytesMut::from(head.as_bytes());
        let response = parse_response_head(&mut buf)
            .expect("a valid head")
            .expect("a complete head");
        assert_eq!(response.headers().len(), INLINE_SPANS + 8);
        for n in 0..INLINE_SPANS + 8 {
            assert_eq!(
                response.headers()[format!("x-header-{n}").as_str()],
                format!("value {n}").as_str()
            );
        }
        assert_eq!(&buf[..], b"body");
    }
}

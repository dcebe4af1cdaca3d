//! The proxy's own upstream client held to hyper's: generated responses (every framing, chunk
//! sizes and extensions, trailers, 1xx before the answer, HEAD, close-delimited bodies, and
//! malformed variants of each) are fed to both over real loopback sockets; both must give the
//! same status, headers and body bytes, or fail with the same class of error.
//!
//! One difference is deliberate and tested on its own: a response with both `Content-Length`
//! and `Transfer-Encoding` is refused (a 502), where hyper lets the `Transfer-Encoding` win.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What a client made of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Answered {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        trailers: Vec<(String, String)>,
    },
    /// The head was refused as invalid.
    InvalidHead,
    /// The connection ended before a complete head.
    NoHead,
    /// The head was fine; the body broke off or did not parse.
    BrokenBody,
}

/// A server that reads one request head and answers `raw`, then closes.
async fn serve(raw: Vec<u8>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|window| window == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(&raw).await;
        let _ = stream.shutdown().await;
    });
    addr
}

fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

async fn ours(raw: Vec<u8>, method: Method) -> Outcome {
    let addr = serve(raw).await;
    let connection = Connection::new(TcpStream::connect(addr).await.unwrap());
    let headers = HeaderMap::new();
    let host = HeaderValue::from_static("upstream.test");
    let path_and_query = PathAndQuery::from_static("/");
    let head = test_head(&method, &path_and_query, &host, &headers);
    let body = test_incoming(vec![], true).await;
    let (response, reply) = match connection.send(&head, body, None).await {
        Ok(answered) => answered,
        Err(failure) => {
            return match failure.error {
                ClientError::Invalid(_) => Outcome::InvalidHead,
                ClientError::Closed | ClientError::Read(_) => Outcome::NoHead,
                other => panic!("not a response error: {other:?}"),
            }
        }
    };
    let Reply::Body(mut reader) = reply else {
        panic!("no upgrade was asked for");
    };
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| reader.poll_frame(cx)).await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => body.extend_from_slice(&data),
                Err(frame) => {
                    trailers = frame.into_trailers().map(|t| pairs(&t)).unwrap_or_default()
                }
            },
            Err(_) => return Outcome::BrokenBody,
        }
    }
    Outcome::Answered {
        status: response.status().as_u16(),
        headers: pairs(response.headers()),
        body,
        trailers,
    }
}

async fn hypers(raw: Vec<u8>, method: Method) -> Outcome {
    let addr = serve(raw).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri("/")
        .header("host", "upstream.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = match sender.send_request(request).await {
        Ok(response) => response,
        Err(error) if error.is_parse() || error.is_parse_status() => return Outcome::InvalidHead,
        Err(_) => return Outcome::NoHead,
    };
    let status = response.status().as_u16();
    let headers = pairs(response.headers());
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => body.extend_from_slice(&data),
                Err(frame) => {
                    trailers = frame.into_trailers().map(|t| pairs(&t)).unwrap_or_default()
                }
            },
            Err(_) => return Outcome::BrokenBody,
        }
    }
    Outcome::Answered {
        status,
        headers,
        body,
        trailers,
    }
}

fn both(raw: &[u8], method: Method) -> (Outcome, Outcome) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let limit = Duration::from_secs(5);
        let mine = tokio::time::timeout(limit, ours(raw.to_vec(), method.clone()))
            .await
            .expect("our client answered in time");
        let theirs = tokio::time::timeout(limit, hypers(raw.to_vec(), method))
            .await
            .expect("hyper answered in time");
        (mine, theirs)
    })
}

/// A body's framing, well formed or broken in one of the ways upstreams break it.
fn framing() -> impl Strategy<Value = (String, Vec<u8>)> {
    let body = proptest::collection::vec(b'a'..=b'z', 0..40);
    prop_oneof![
        // Content-Length, exact, short (the connection closes early) or long (extra bytes).
        (body.clone(), -3i32..3).prop_map(|(body, off)| {
            let declared = (body.len() as i32 + off).max(0);
            (format!("content-length: {declared}\r\n"), body)
        }),
        // Chunked: chunk sizes in any hex case, extensions, trailers.
        (
            proptest::collection::vec((body.clone(), any::<bool>(), any::<bool>()), 0..4),
            any::<bool>()
        )
            .prop_map(|(chunks, trailer)| {
                let mut raw = Vec::new();
                for (chunk, upper, extension) in chunks.into_iter().filter(|(c, ..)| !c.is_empty())
                {
                    let size = if upper {
                        format!("{:X}", chunk.len())
                    } else {
                        format!("{:x}", chunk.len())
                    };
                    raw.extend_from_slice(size.as_bytes());
                    if extension {
                        raw.extend_from_slice(b";name=value");
                    }
                    raw.extend_from_slice(b"\r\n");
                    raw.extend_from_slice(&chunk);
                    raw.extend_from_slice(b"\r\n");
                }
                raw.extend_from_slice(b"0\r\n");
                if trailer {
                    raw.extend_from_slice(b"x-checksum: 42\r\n");
                }
                raw.extend_from_slice(b"\r\n");
                ("transfer-encoding: chunked\r\n".to_string(), raw)
            }),
        // Close-delimited: no framing at all.
        body.clone().prop_map(|body| (String::new(), body)),
        // Broken: a chunk size that is not hex, a missing CRLF after a chunk, no last chunk,
        // an overflowing size, a Content-Length that is not a number or disagrees with itself.
        prop_oneof![
            Just((
                "transfer-encoding: chunked\r\n".to_string(),
                b"zz\r\nhello\r\n0\r\n\r\n".to_vec()
            )),
            Just((
                "transfer-encoding: chunked\r\n".to_string(),
                b"5\r\nhelloXX0\r\n\r\n".to_vec()
            )),
            Just((
                "transfer-encoding: chunked\r\n".to_string(),
                b"5\r\nhello\r\n".to_vec()
            )),
            Just((
                "transfer-encoding: chunked\r\n".to_string(),
                b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec()
            )),
            Just(("content-length: abc\r\n".to_string(), b"hello".to_vec())),
            Just((
                "content-length: 5\r\ncontent-length: 6\r\n".to_string(),
                b"hello!".to_vec()
            )),
            Just((
                "content-length: 5\r\ncontent-length: 5\r\n".to_string(),
                b"hello".to_vec()
            )),
            Just(("content-length: -5\r\n".to_string(), b"hello".to_vec())),
        ],
    ]
}

fn response() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (
        prop_oneof![
            Just(200u16),
            Just(201),
            Just(204),
            Just(304),
            Just(404),
            Just(500)
        ],
        framing(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(status, (framing, body), informational, keep_alive, head)| {
                let mut raw = Vec::new();
                if informational {
                    raw.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                raw.extend_from_slice(format!("HTTP/1.1 {status} Whatever\r\n").as_bytes());
                raw.extend_from_slice(b"x-upstream: yes\r\n");
                if keep_alive {
                    raw.extend_from_slice(b"connection: keep-alive\r\n");
                }
                raw.extend_from_slice(framing.as_bytes());
                raw.extend_from_slice(b"\r\n");
                raw.extend_from_slice(&body);
                (raw, head)
            },
        )
}

/// Heads broken before any body: a bad status line, a header without a colon, a space before
/// a colon, an obsolete line fold, a bare LF line end (both accept that one), garbage.
fn broken_head() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\nno-colon-here\r\ncontent-length: 0\r\n\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\nx-bad : value\r\ncontent-length: 0\r\n\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\nx-fold: a\r\n b\r\ncontent-length: 0\r\n\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok".to_vec()),
        Just(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\ncontent-len".to_vec()),
        Just(Vec::new()),
        Just(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_framing_gets_what_hyper_gets((raw, head) in response()) {
        let method = if head { Method::HEAD } else { Method::GET };
        let (mine, theirs) = both(&raw, method);
        prop_assert_eq!(mine, theirs, "for {:?}", String::from_utf8_lossy(&raw));
    }

    #[test]
    fn every_broken_head_is_refused_as_hyper_refuses_it(raw in broken_head()) {
        let (mine, theirs) = both(&raw, Method::GET);
        prop_assert_eq!(mine, theirs, "for {:?}", String::from_utf8_lossy(&raw));
    }
}

#[test]
fn both_framings_at_once_are_refused_where_hyper_takes_the_chunked_one() {
    let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (mine, theirs) = both(raw, Method::GET);
    assert_eq!(mine, Outcome::InvalidHead);
    assert!(
        matches!(theirs, Outcome::Answered { ref body, .. } if body == b"hello"),
        "{theirs:?}"
    );
}

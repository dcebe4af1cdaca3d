//! A raw HTTP/1.1 client on a blocking socket: it sends exactly the request line and headers
//! given (a lower-case method, an unnormalised path), so the tests see what a server does with
//! them, and reads the reply to the end.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

/// How long a reply may take to arrive in full.
const REPLY_DEADLINE: Duration = Duration::from_secs(30);

/// A reply read off the wire.
#[derive(Debug)]
pub struct Reply {
    /// The status line and the header lines, as received.
    pub head: String,
    pub status: u16,
    /// Every header in order, names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, with a chunked body's framing taken off.
    pub body: String,
}

impl Reply {
    /// The first value of the header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends `method target HTTP/1.1`, the `headers` and `Connection: close` to the loopback
/// `port`, and reads the reply until the server closes the connection.
pub fn request(port: u16, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .unwrap_or_else(|error| panic!("connect to port {port}: {error}"));
    stream
        .set_read_timeout(Some(REPLY_DEADLINE))
        .expect("a read timeout");
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    // One write: a server that refuses the request line may close before reading further,
    // and a second write would then fail instead of the reply being read.
    let request = format!("{method} {target} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|error| panic!("read the reply to {method} {target}: {error}"));
    let text = String::from_utf8(raw).expect("a reply in UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        head: head.to_owned(),
        status,
        headers,
        body,
    }
}

/// The data of a chunked body (`<size in hex>\r\n<data>\r\n`..., ending with size 0).
fn dechunk(mut framed: &str) -> String {
    let mut body = String::new();
    while let Some((size_line, rest)) = framed.split_once("\r\n") {
        let size_text = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("a chunk size, not {size_line:?}"));
        if size == 0 {
            break;
        }
        body.push_str(&rest[..size]);
        framed = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    body
}

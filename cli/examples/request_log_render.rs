//! What the dashboard's event stream costs at a given request rate, for
//! `bench/proxy/request_log.sh`: the proxy's request log filled as the proxy fills it, then
//! read as the stream reads it (every 250 ms, the last 1,000 requests since the last batch,
//! without headers, each made into a `RequestRecord` with its session cookie verified, the
//! batch as JSON).
//!
//! `cargo run --release --example request_log_render -- 5000` (requests per second; 10 s).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, Method};
use session::cookie::{encode_uri_component, sign, Secrets};
use stack::daemon::requests::Renderer;
use stack::proxy::requests::RawHeaders;
use stack::proxy::{LoggedRequest, RequestLog};
use stack::supervisor::logs::Redactor;

const SECONDS: u64 = 10;
const BATCHES_PER_SECOND: u64 = 4;

fn main() {
    let rate: u64 = std::env::args()
        .nth(1)
        .and_then(|rate| rate.parse().ok())
        .unwrap_or(5000);
    let secret = "bench secret";
    let cookie = format!(
        "connect.sid={}",
        encode_uri_component(&sign("Sx3kQ9vLm2pW8rT5yU1oI7aE4dF6gH0j", secret))
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        "host",
        HeaderValue::from_static("counter-demo.localhost:3000"),
    );
    headers.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64)"),
    );
    headers.insert("accept", HeaderValue::from_static("application/json"));
    headers.insert("cookie", HeaderValue::from_str(&cookie).unwrap());
    let entry = LoggedRequest {
        seq: 0,
        time: SystemTime::now(),
        duration: Duration::from_micros(180),
        method: Method::GET,
        host: "counter-demo.localhost:3000".into(),
        path: "/increment".into(),
        status: 200,
        bytes_in: 0,
        bytes_out: 38,
        rule: Some(2),
        deployment: Some(HeaderValue::from_static("writer-abcdefghij")),
        instance: Some(0),
        headers: RawHeaders::copy_of(&headers),
    };
    let log = RequestLog::new();
    let secrets = Secrets::new([secret]);
    let redactor = Redactor::new([secret.to_owned()]);
    let aliases = BTreeMap::new();
    let renderer = Renderer {
        secrets: Some(&secrets),
        redactor: &redactor,
        aliases: &aliases,
        sessions: &Default::default(),
    };
    let per_batch = rate / BATCHES_PER_SECOND;
    let mut since = 0;
    let mut reading = Duration::ZERO;
    let mut bytes = 0;
    for _ in 0..SECONDS * BATCHES_PER_SECOND {
        for _ in 0..per_batch {
            log.record(entry.clone());
        }
        let started = Instant::now();
        let batch = log.since_brief(since, stack::proxy::requests::CAPACITY);
        since = batch.last().map_or(since, |last| last.seq);
        let records: Vec<_> = batch.iter().map(|logged| renderer.record(logged)).collect();
        let json = serde_json::to_string(&records).unwrap();
        bytes += json.len();
        reading += started.elapsed();
    }
    let per_second = reading / SECONDS as u32;
    println!(
        "{rate} req/s: the event stream's batches take {:.2} ms of CPU per second = {:.2}% of a core ({} KB/s of events)",
        per_second.as_secs_f64() * 1000.0,
        per_second.as_secs_f64() * 100.0,
        bytes as u64 / SECONDS / 1024
    );
}

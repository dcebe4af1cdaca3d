//! 100 MB up and 100 MB down through the proxy with its memory staying flat. Its own test
//! binary, so no other test shares the process whose RSS is measured.

mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use support::proxy::*;

const TOTAL: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
/// Growth allowed over the baseline while 200 MB stream through (buffers, allocator slack).
const MAX_GROWTH_KB: u64 = 16 * 1024;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn chunks(
    total: u64,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>> + Send {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let n_chunks = total / CHUNK as u64;
    futures_util::stream::iter(0..n_chunks).map(move |_| Ok(http_body::Frame::data(chunk.clone())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_up_and_down_with_flat_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let upstream = upstream(move |request: Request<Incoming>| {
        let counter = Arc::clone(&counter);
        async move {
            if request.uri().path() == "/download" {
                return Response::new(BodyExt::boxed(StreamBody::new(chunks(TOTAL))));
            }
            let mut body = request.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("upload frame").into_data() {
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Response::new(full("stored"))
        }
    })
    .await;
    let (table, _) = one_deployment("big.localhost", "big-abc", &[upstream.addr]);
    let proxy = TestProxy::start(table, test_config()).await;

    // Warm up pools and allocator, then take the baseline.
    assert_eq!(get(proxy.addr, "big.localhost", "/warm").await.status, 200);
    let baseline = rss_kb();
    let peak = Arc::new(AtomicUsize::new(baseline as usize));
    let sampling = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb() as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let upload = Request::post("/upload")
        .header("host", "big.localhost")
        .body(BodyExt::boxed(StreamBody::new(chunks(TOTAL))))
        .unwrap();
    let answer = send(proxy.addr, upload).await;
    assert_eq!(answer.status, 200);
    assert_eq!(received.load(Ordering::Relaxed), TOTAL);

    let request = Request::get(format!("http://{}/download", proxy.addr))
        .header("host", "big.localhost")
        .body(full(""))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut downloaded = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            downloaded += data.len() as u64;
        }
    }
    assert_eq!(downloaded, TOTAL);

    sampling.abort();
    let peak = peak.load(Ordering::Relaxed) as u64;
    let growth = peak.saturating_sub(baseline);
    eprintln!("RSS baseline {baseline} kB, peak {peak} kB, growth {growth} kB");
    assert!(
        growth < MAX_GROWTH_KB,
        "memory grew by {growth} kB while streaming 200 MB (baseline {baseline} kB, peak {peak} kB)"
    );
}

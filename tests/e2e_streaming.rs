//! A 50 MB artifact upload streams through Envoy: the body is never buffered, so
//! Envoy's memory stays flat while it passes.

mod e2e;

use e2e::clients::*;
use e2e::stack::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 50;
/// Growth allowed over the whole upload: half the body. Buffering it would blow this.
const MAX_GROWTH: u64 = 25 << 20;

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabyte_upload_streams_with_flat_memory() {
    let stack = Stack::start().await;
    let path = "/api/2.0/mlflow-artifacts/artifacts/0/e2e-run/artifacts/big.bin";
    // Warm up: the VM, the verdict cache and the upstream pool exist before measuring.
    let warm = plain_client()
        .put(stack.envoy.plain_url(path))
        .header("authorization", bearer(READWRITE_KEY))
        .body(vec![0u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(echoed(warm).await.body_bytes, 1024);
    let before = stack.envoy.rss_bytes();

    // A raw HTTP/1.1 request, written a megabyte at a time: the client never holds
    // the body, and Envoy's flow control paces the writes.
    let total = CHUNK * CHUNKS;
    let mut conn = TcpStream::connect(("127.0.0.1", stack.envoy.ports.plain))
        .await
        .unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: {}\r\n\
         content-type: application/octet-stream\r\ncontent-length: {total}\r\n\
         connection: close\r\n\r\n",
        bearer(READWRITE_KEY)
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0x5au8; CHUNK];
    let mut peak = before;
    for _ in 0..CHUNKS {
        conn.write_all(&chunk).await.unwrap();
        peak = peak.max(stack.envoy.rss_bytes());
    }
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    let after = stack.envoy.rss_bytes();
    peak = peak.max(after);

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "response: {head}");
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&raw[split + 4..])
    } else {
        raw[split + 4..].to_vec()
    };
    let got: hokusai_devstack::EchoReply = serde_json::from_slice(&body).expect("echo reply");
    assert_eq!(
        got.body_bytes, total as u64,
        "every byte reached the upstream"
    );
    assert_eq!(got.header("x-api-key-id"), Some("key-rw-0001"));

    let growth = peak.saturating_sub(before);
    eprintln!("envoy RSS: before {before} B, peak {peak} B, after {after} B");
    assert!(
        growth < MAX_GROWTH,
        "Envoy grew {growth} bytes while a {total}-byte body went through"
    );
}

//! HTTP/1.1 over a plain TCP socket, for tests that must decide when a client goes away:
//! dropping a [`RawRequest`] closes its connection, which Envoy sees as the client
//! resetting the stream. reqwest hides its connections, so it cannot do this.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds every read, so a stuck proxy fails the test instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A request written on its own connection, its response not read yet.
pub struct RawRequest {
    stream: TcpStream,
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lowercase names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl RawRequest {
    /// Connects to 127.0.0.1:`port` and writes `GET path` with `headers`.
    pub async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> RawRequest {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to Envoy");
        stream.set_nodelay(true).expect("nodelay");
        let mut head = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .expect("write request");
        RawRequest { stream }
    }

    /// Reads the whole response (content-length or chunked).
    pub async fn response(mut self) -> RawResponse {
        tokio::time::timeout(READ_TIMEOUT, read_response(&mut self.stream))
            .await
            .expect("a response within 30 s")
    }
}

async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        read_more(stream, &mut buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if let Some(len) = get("content-length") {
        let len: usize = len.parse().expect("numeric content-length");
        while rest.len() < len {
            read_more(stream, &mut rest).await;
        }
        rest.truncate(len);
        rest
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(stream, rest).await
    } else {
        Vec::new()
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

async fn dechunk(stream: &mut TcpStream, mut buf: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(at) = find(&buf, b"\r\n") {
                break at;
            }
            read_more(stream, &mut buf).await;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        buf.drain(..line_end + 2);
        if size == 0 {
            return body;
        }
        while buf.len() < size + 2 {
            read_more(stream, &mut buf).await;
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await.expect("read response");
    assert!(
        n > 0,
        "connection closed mid-response: {:?}",
        String::from_utf8_lossy(buf)
    );
    buf.extend_from_slice(&chunk[..n]);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

//! The echo upstream, exercised over real HTTP on an ephemeral port.

use hokusai_devstack::{Echo, EchoReply};
use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn client() -> Client {
    Client::builder().no_proxy().build().expect("client")
}

#[tokio::test]
async fn reports_method_path_and_headers_in_order() -> TestResult {
    let echo = Echo::start("127.0.0.1:0".parse()?).await?;
    let resp = client()
        .patch(format!(
            "{}/api/2.0/mlflow/runs/get?run_id=abc",
            echo.base_url()
        ))
        .header("x-zeta", "1")
        .header("authorization", "Bearer hk_something")
        .header("x-alpha", "caf\u{e9}")
        .header("x-request-id", "rid-7")
        .body("hello")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let reply: EchoReply = resp.json().await?;
    assert_eq!(reply.method, "PATCH");
    assert_eq!(reply.path, "/api/2.0/mlflow/runs/get?run_id=abc");
    assert_eq!(reply.body_bytes, 5);
    assert_eq!(reply.header("authorization"), Some("Bearer hk_something"));
    assert_eq!(reply.header("X-Alpha"), Some("café"));
    let names: Vec<&str> = reply.headers.iter().map(|(n, _)| n.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("x-zeta") < pos("authorization"));
    assert!(pos("authorization") < pos("x-alpha"));
    assert!(pos("x-alpha") < pos("x-request-id"));
    echo.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn repeated_headers_are_all_reported() -> TestResult {
    let echo = Echo::start("127.0.0.1:0".parse()?).await?;
    let reply: EchoReply = client()
        .get(format!("{}/", echo.base_url()))
        .header("x-tenant-id", "a")
        .header("x-other", "z")
        .header("x-tenant-id", "b")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(reply.header_all("x-tenant-id"), ["a", "b"]);
    assert_eq!(reply.body_bytes, 0);
    Ok(())
}

#[tokio::test]
async fn counts_a_large_body_with_content_length() -> TestResult {
    let echo = Echo::start("127.0.0.1:0".parse()?).await?;
    let body = vec![7u8; 5 * 1024 * 1024];
    let reply: EchoReply = client()
        .put(format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/f.bin",
            echo.base_url()
        ))
        .body(body)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(reply.body_bytes, 5 * 1024 * 1024);
    assert_eq!(reply.header("content-length"), Some("5242880"));
    Ok(())
}

/// A chunked upload written piece by piece over a raw socket: the body is
/// never whole on either side.
#[tokio::test]
async fn counts_a_streamed_chunked_body() -> TestResult {
    let echo = Echo::start("127.0.0.1:0".parse()?).await?;
    let mut sock = TcpStream::connect(echo.addr()).await?;
    sock.write_all(
        b"POST /upload HTTP/1.1\r\nhost: echo\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )
    .await?;
    let chunk = vec![b'x'; 64 * 1024];
    let chunks = 80; // 5 MiB
    for _ in 0..chunks {
        sock.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await?;
        sock.write_all(&chunk).await?;
        sock.write_all(b"\r\n").await?;
    }
    sock.write_all(b"0\r\n\r\n").await?;

    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let reply: EchoReply = serde_json::from_str(body)?;
    assert_eq!(reply.body_bytes, 64 * 1024 * chunks);
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_listening() -> TestResult {
    let echo = Echo::start("127.0.0.1:0".parse()?).await?;
    let url = format!("{}/x", echo.base_url());
    assert_eq!(client().get(&url).send().await?.status(), StatusCode::OK);
    echo.shutdown().await;
    assert!(client().get(&url).send().await.is_err());
    Ok(())
}

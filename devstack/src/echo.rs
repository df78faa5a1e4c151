//! Echo upstream: stands in for MLflow. Every request gets 200 and a short JSON
//! description of what arrived, so tests can see exactly what the filter let
//! through. Bodies are counted frame by frame and never held in memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::server::{self, json_response, Body, DropConnection, Running};

/// The JSON the echo server answers with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoReply {
    pub method: String,
    /// Path and query as received.
    pub path: String,
    /// Lowercase names in received order (repeats grouped), values lossily UTF-8.
    pub headers: Vec<(String, String)>,
    pub body_bytes: u64,
}

impl EchoReply {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub struct Echo;

impl Echo {
    /// Binds `addr` (port 0 in tests) and serves in the current runtime.
    pub async fn start(addr: SocketAddr) -> std::io::Result<EchoHandle> {
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        let server = server::spawn(addr, move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            echo(req)
        })
        .await?;
        Ok(EchoHandle { server, requests })
    }
}

/// A running echo server. Dropping it stops the server too.
pub struct EchoHandle {
    server: Running,
    requests: Arc<AtomicU64>,
}

impl EchoHandle {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://ip:port`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Requests that reached the server so far, answered or not: lets a test prove
    /// that something was never forwarded.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Body>, DropConnection> {
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        // A client that breaks off mid-body gets no answer.
        let frame = frame.map_err(|_| DropConnection)?;
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len() as u64;
        }
    }
    let reply = EchoReply {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_bytes,
    };
    let json = serde_json::to_vec(&reply).expect("serialisable");
    Ok(json_response(StatusCode::OK, json))
}

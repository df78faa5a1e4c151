//! The accept loop both dev servers share: HTTP/1.1 with keep-alive, one task
//! per connection, stopped by dropping or signalling a watch channel.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub(crate) type Body = Full<Bytes>;

/// Returned by a handler to make the server drop the connection without
/// answering (hyper closes a connection whose service fails).
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// A running server. Dropping it stops accepting and closes open connections
/// (once the runtime polls the accept task again).
pub(crate) struct Running {
    addr: SocketAddr,
    stop: watch::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, aborts open connections and waits until that is done.
    pub(crate) async fn shutdown(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

pub(crate) async fn spawn<H, Fut>(addr: SocketAddr, handler: H) -> std::io::Result<Running>
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, DropConnection>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(());
    let task = tokio::spawn(accept_loop(listener, handler, stopped));
    Ok(Running { addr, stop, task })
}

async fn accept_loop<H, Fut>(listener: TcpListener, handler: H, mut stopped: watch::Receiver<()>)
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, DropConnection>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Fires when the sender is dropped: that is the stop signal.
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small request/response pairs: don't let Nagle add latency.
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    connections.spawn(async move {
                        let service = service_fn(handler);
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(err) => {
                    // Usually out of file descriptors under load: back off
                    // instead of spinning on the error.
                    eprintln!("devstack: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

/// A JSON response with a fixed content type.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// `{"detail": "..."}`, the error shape the filter and MLflow clients expect.
pub(crate) fn detail(status: StatusCode, detail: &str) -> Response<Body> {
    json_response(
        status,
        serde_json::to_vec(&serde_json::json!({ "detail": detail })).expect("serialisable"),
    )
}

//! Stopping a sidecar without dropping a request. ECS sends SIGTERM to the container's
//! PID 1, the entrypoint, which drains Envoy through its admin (`/healthcheck/fail`,
//! `/drain_listeners?graceful`): responses tell callers to close their connections, the
//! listeners keep accepting for `--drain-time-s` while callers move away, then close;
//! requests in flight (a slow artifact upload) finish; then Envoy stops. Bounded by
//! HOKUSAI_STOP_SECONDS, so the container always exits before ECS's SIGKILL.

mod e2e;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{mpsc, Notify};

use e2e::clients::{bearer, echoed, READWRITE_KEY};
use e2e::ecs::*;
use e2e::paths;
use e2e::pki::Pair;

const SEARCH: &str = "/api/2.0/mlflow/experiments/search";
const UPLOAD: &str = "/api/2.0/mlflow-artifacts/artifacts/0/run-1/artifacts/model.bin";
const CHUNK: usize = 16 * 1024;
const CHUNKS: usize = 32;

/// A request body the test feeds chunk by chunk: the upload lasts as long as the test wants.
struct PacedBody(mpsc::Receiver<Bytes>);

impl http_body::Body for PacedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

/// A slow artifact upload over the internal listener (the allow-listed client certificate):
/// every chunk but the last goes out at once, the last only when `release` is notified.
/// Returns the request's task: (status, bytes the upstream counted) or the error.
fn slow_upload(
    stack: &EcsStack,
    release: Arc<Notify>,
) -> tokio::task::JoinHandle<Result<(u16, u64), String>> {
    // Longer than any stop here: the upload must never be cut by the client itself.
    let client = mtls_client_timeout(
        &[&paths::cert("ca.crt")],
        Some(&Pair::dev("client")),
        stack.mtls_addr(),
        Duration::from_secs(60),
    );
    let url = stack.mtls_url(UPLOAD);
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for _ in 0..CHUNKS - 1 {
            if tx.send(Bytes::from(vec![b'x'; CHUNK])).await.is_err() {
                return;
            }
        }
        release.notified().await;
        let _ = tx.send(Bytes::from(vec![b'x'; CHUNK])).await;
    });
    tokio::spawn(async move {
        let resp = client
            .put(url)
            .header("content-length", (CHUNK * CHUNKS).to_string())
            .body(reqwest::Body::wrap(PacedBody(rx)))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let got = echoed(resp).await;
        Ok((status, got.body_bytes))
    })
}

/// What the callers saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Responses carrying `connection: close` (the drain asking callers to go).
    told_to_close: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// A caller: requests one after another on its own client (kept-alive connections, a new
/// one whenever Envoy closes one) until `stop`, at most 400 of them.
fn caller(
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    client: reqwest::Client,
    url: String,
    key: Option<&'static str>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..400 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let mut req = client.get(&url);
            if let Some(key) = key {
                req = req.header("authorization", bearer(key));
            }
            match req.send().await {
                Ok(resp) if resp.status() == 200 => {
                    if resp
                        .headers()
                        .get("connection")
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
                    {
                        tally.told_to_close.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = resp.bytes().await;
                    tally.ok.fetch_add(1, Ordering::SeqCst);
                }
                Ok(resp) => tally
                    .failures
                    .lock()
                    .unwrap()
                    .push(format!("{url}: status {}", resp.status())),
                Err(e) => tally.failures.lock().unwrap().push(format!("{url}: {e:?}")),
            }
            // A steady load, not a flood: two cores are shared with Envoy and the servers.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Waits (bounded) until `cond` holds; panics naming `what` otherwise.
async fn until(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stop_options(drain_s: u64, stop_s: u64) -> RunOptions {
    RunOptions {
        args: [
            "--drain-time-s",
            &drain_s.to_string(),
            "--drain-strategy",
            "immediate",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![("HOKUSAI_STOP_SECONDS".into(), stop_s.to_string())],
    }
}

fn dev_secrets() -> Secrets {
    Secrets::server(&Pair::dev("server"), &[&paths::cert("ca.crt")])
}

/// Whether a new TCP connection to the port is accepted.
async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits_within_the_stop_timeout() {
    // Listeners accept for 6 s after SIGTERM; the stop may take 20 s in all (in ECS: 30 s
    // and 110 s, for a stopTimeout of 120 s: docs/deployment.md).
    const STOP_S: u64 = 20;
    let mut stack = EcsStack::start_opts(&dev_secrets(), None, &stop_options(6, STOP_S)).await;
    let in_flight = "http.hokusai_internal.downstream_rq_active";

    // The slow upload gets under way first.
    let release = Arc::new(Notify::new());
    let upload = slow_upload(&stack, Arc::clone(&release));
    until(
        "the upload is in flight",
        Duration::from_secs(10),
        async || stack.sidecar.stat(in_flight).await >= 1,
    )
    .await;

    // Four callers, two per listener: internal services with their certificate, external
    // clients through the ALB listener with an API key.
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..2 {
        let internal = mtls_client(
            &[&paths::cert("ca.crt")],
            Some(&Pair::dev("client")),
            stack.mtls_addr(),
        );
        callers.push(caller(
            Arc::clone(&tally),
            Arc::clone(&stop),
            internal,
            stack.mtls_url(SEARCH),
            None,
        ));
        let external = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        callers.push(caller(
            Arc::clone(&tally),
            Arc::clone(&stop),
            external,
            stack.alb_url(SEARCH),
            Some(READWRITE_KEY),
        ));
    }
    until(
        "the callers are under way",
        Duration::from_secs(10),
        async || tally.ok.load(Ordering::SeqCst) >= 40,
    )
    .await;

    // ECS stops the task: SIGTERM to PID 1 only.
    let term_at = Instant::now();
    stack.sidecar.terminate();
    until(
        "Envoy reports draining",
        Duration::from_secs(5),
        async || stack.sidecar.ready_status().await == Some(503),
    )
    .await;

    // Callers keep coming for a while (stale DNS, pooled connections) and get answers,
    // each told to close its connection; then they have moved away, as they must within
    // the drain time (6 s; they are stopped by 4 s).
    let before = tally.ok.load(Ordering::SeqCst);
    until(
        "callers get answers while the listeners drain",
        Duration::from_secs(4),
        async || tally.ok.load(Ordering::SeqCst) >= before + 16,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.unwrap();
    }
    let failures = tally.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert!(
        tally.told_to_close.load(Ordering::SeqCst) >= 1,
        "responses during the drain ask callers to close their connections"
    );

    // The listeners close once the drain time is over; the upload is still in flight then,
    // and Envoy is still running for it.
    until(
        "the listeners stop taking connections",
        Duration::from_secs(STOP_S),
        async || !accepts(stack.ports.mtls).await && !accepts(stack.ports.alb).await,
    )
    .await;
    assert!(!upload.is_finished(), "the upload must still be in flight");
    assert!(
        stack.sidecar.wait_exit(Duration::ZERO).await.is_none(),
        "Envoy must wait for the upload"
    );

    // The upload's last chunk: it completes, whole, and then the sidecar exits, cleanly and
    // within the stop timeout.
    release.notify_one();
    let (status, bytes) = upload.await.unwrap().expect("the upload completes");
    assert_eq!((status, bytes), (200, (CHUNK * CHUNKS) as u64));
    let exit = stack
        .sidecar
        .wait_exit(Duration::from_secs(STOP_S).saturating_sub(term_at.elapsed()))
        .await
        .unwrap_or_else(|| {
            panic!(
                "not stopped {STOP_S} s after SIGTERM\n{}",
                stack.sidecar.log()
            )
        });
    assert!(exit.success(), "{exit}\n{}", stack.sidecar.log());
    let log = stack.sidecar.log();
    assert!(
        log.contains("listeners closed, no request in flight"),
        "{log}"
    );
    eprintln!(
        "stop: {} requests answered, {} told to close, exit {:.1} s after SIGTERM; {}",
        tally.ok.load(Ordering::SeqCst),
        tally.told_to_close.load(Ordering::SeqCst),
        term_at.elapsed().as_secs_f64(),
        log.lines()
            .filter(|l| l.starts_with("hokusai-entrypoint: drained"))
            .collect::<String>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_ends_does_not_hold_the_stop_past_its_budget() {
    // A stuck upload: the entrypoint stops Envoy when HOKUSAI_STOP_SECONDS are spent, so the
    // container exits before ECS's stopTimeout (the budget plus a margin) and its SIGKILL.
    const STOP_S: u64 = 3;
    const STOP_TIMEOUT: Duration = Duration::from_secs(STOP_S + 5);
    let mut stack = EcsStack::start_opts(&dev_secrets(), None, &stop_options(1, STOP_S)).await;
    let never = Arc::new(Notify::new());
    let upload = slow_upload(&stack, Arc::clone(&never));
    until(
        "the upload is in flight",
        Duration::from_secs(10),
        async || {
            stack
                .sidecar
                .stat("http.hokusai_internal.downstream_rq_active")
                .await
                >= 1
        },
    )
    .await;

    stack.sidecar.terminate();
    let exit = stack
        .sidecar
        .wait_exit(STOP_TIMEOUT)
        .await
        .unwrap_or_else(|| {
            panic!(
                "not stopped within {STOP_TIMEOUT:?}\n{}",
                stack.sidecar.log()
            )
        });
    assert!(exit.success(), "{exit}\n{}", stack.sidecar.log());
    let log = stack.sidecar.log();
    assert!(
        log.contains("stop budget of 3s spent with 1 request(s) in flight"),
        "{log}"
    );
    assert!(upload.await.unwrap().is_err(), "the stuck upload was cut");
}

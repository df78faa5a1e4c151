//! The dev auth service: the key-validation API the filter calls out to, an
//! Envoy ext_authz-style check endpoint for comparison benchmarks, test
//! controls (fault injection, call counters, the last request seen) and, with
//! [`ServeOptions::login`], the login service's JWKS, dev login and token
//! validation (`crate::login`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, AUTHORIZATION};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::faults::{Fault, FaultSpec, GATHER_TIMEOUT, HOLD_TIMEOUT};
use crate::keys::{fingerprint, KeySpec, KeyStore, KeyStoreError, Verdict, DEFAULT_SERVICE_ID};
use crate::login::{self, DevLogin};
use crate::oidc::{self, Oidc, OidcSettings};
use crate::server::{self, detail, json_response, Body, DropConnection, Running};

/// Where the filter posts keys (CONTRACT section 6).
pub const VALIDATE_PATH: &str = "/api/v1/keys/validate";
/// Prefix of the ext_authz check endpoint; Envoy appends the original path.
pub const EXT_AUTHZ_PREFIX: &str = "/ext_authz";
/// Prefix of the HTTP control endpoints (only with [`ServeOptions::control_api`]).
pub const CONTROL_PREFIX: &str = "/__dev/";

/// Validate bodies are a few hundred bytes; anything far larger is a mistake.
const MAX_VALIDATE_BODY: usize = 64 * 1024;

pub struct DevAuthConfig {
    pub listen: SocketAddr,
    pub keys: KeyStore,
    /// When set, a key sent in the body needs `Authorization: Bearer <token>`.
    pub service_token: Option<String>,
}

/// Settings tests rarely need; the binary sets them from flags.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Serve `POST /__dev/fault`, `GET /__dev/stats`, `POST /__dev/reset`.
    pub control_api: bool,
    /// One stderr line per request (key fingerprint, never the key).
    pub log_requests: bool,
    /// Also play the login service: `GET /.well-known/jwks.json`,
    /// `POST /api/v1/login`, `/api/v1/validate` (404 without).
    pub login: Option<DevLogin>,
    /// With `login`, also an OpenID Connect provider for browser sign-in
    /// (`crate::oidc`: discovery, authorize, token, end session).
    pub oidc: Option<OidcSettings>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            control_api: false,
            log_requests: true,
            login: None,
            oidc: None,
        }
    }
}

/// A validate request as received, for tests to assert what the filter sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lowercase names in received order (repeats grouped), values lossily UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `None` when empty or not JSON.
    pub body: Option<Value>,
    pub raw_body: Vec<u8>,
}

impl RecordedRequest {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The fault in force, and for how many more calls (None: until changed).
#[derive(Clone, Copy)]
struct FaultSetting {
    fault: Fault,
    calls_left: Option<u64>,
}

pub(crate) struct State {
    keys: RwLock<KeyStore>,
    service_token: Option<String>,
    fault: Mutex<FaultSetting>,
    validate_calls: AtomicU64,
    /// Validate and ext_authz calls being served now, and the most there were at once since
    /// the last reset: how many calls the filter (or ext_authz) kept open against us.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Validate requests the service has finished with (answered or dropped).
    validate_finished: AtomicU64,
    /// `x-request-id` of each validate request, in order of arrival ("-" when absent).
    validate_request_ids: Mutex<Vec<String>>,
    ext_authz_calls: AtomicU64,
    token_validate_calls: AtomicU64,
    last_validate: Mutex<Option<RecordedRequest>>,
    last_token_validate: Mutex<Option<RecordedRequest>>,
    log_requests: AtomicBool,
    control_api: bool,
    login: Option<DevLogin>,
    oidc: Option<Oidc>,
    /// Calls held by a `Gather` fault, and the signal that lets them all go.
    gathered: Mutex<u32>,
    gather_released: tokio::sync::Notify,
    /// Calls held by a `Hold` fault wait for this to move on; `held` counts them.
    hold_releases: tokio::sync::watch::Sender<u64>,
    held: AtomicU64,
}

impl State {
    // The locks below are only ever held for a copy or a lookup, never across
    // an await, and a panic elsewhere cannot leave them inconsistent, so a
    // poisoned lock is simply used as is.
    pub(crate) fn fault(&self) -> Fault {
        self.fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fault
    }

    pub(crate) fn count_token_validate(&self) {
        self.token_validate_calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_token_validate(&self, request: RecordedRequest) {
        *self
            .last_token_validate
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(request);
    }

    fn set_fault(&self, fault: Fault) {
        self.set_fault_for(fault, None);
    }

    fn set_fault_for(&self, fault: Fault, calls: Option<u64>) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = FaultSetting {
            fault,
            calls_left: calls,
        };
    }

    /// Holds this call until `calls` calls are held, then releases them all together.
    async fn gather(&self, calls: u32) {
        let released = self.gather_released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let last = {
            let mut held = self.gathered.lock().unwrap_or_else(PoisonError::into_inner);
            *held += 1;
            if *held >= calls {
                *held = 0;
                true
            } else {
                false
            }
        };
        if last {
            self.gather_released.notify_waiters();
        } else if tokio::time::timeout(GATHER_TIMEOUT, released)
            .await
            .is_err()
        {
            let mut held = self.gathered.lock().unwrap_or_else(PoisonError::into_inner);
            *held = held.saturating_sub(1);
        }
    }

    /// Holds this call until the next [`State::release_held`] (or [`HOLD_TIMEOUT`]).
    async fn hold(&self) {
        let mut releases = self.hold_releases.subscribe();
        releases.mark_unchanged();
        // Counted once subscribed, so a release after the count has been seen lets it go.
        self.held.fetch_add(1, Ordering::SeqCst);
        let _ = tokio::time::timeout(HOLD_TIMEOUT, releases.changed()).await;
        self.held.fetch_sub(1, Ordering::SeqCst);
    }

    fn release_held(&self) {
        self.hold_releases.send_modify(|n| *n += 1);
    }

    /// The fault for the call arriving now; a fault set for N calls counts one down.
    pub(crate) fn fault_for_call(&self) -> Fault {
        let mut setting = self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        let fault = setting.fault;
        match setting.calls_left {
            Some(0) => Fault::None,
            Some(n) => {
                setting.calls_left = Some(n - 1);
                if n == 1 {
                    setting.fault = Fault::None;
                }
                fault
            }
            None => fault,
        }
    }

    fn check(&self, key: &str, service_id: Option<&str>) -> Verdict {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .check(key, service_id, now)
    }

    fn reset_counts(&self) {
        self.validate_calls.store(0, Ordering::Relaxed);
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        self.validate_finished.store(0, Ordering::Relaxed);
        self.ext_authz_calls.store(0, Ordering::Relaxed);
        self.validate_request_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.token_validate_calls.store(0, Ordering::Relaxed);
    }

    fn stats_json(&self) -> Value {
        serde_json::json!({
            "validate_calls": self.validate_calls.load(Ordering::Relaxed),
            "ext_authz_calls": self.ext_authz_calls.load(Ordering::Relaxed),
            "token_validate_calls": self.token_validate_calls.load(Ordering::Relaxed),
            "max_in_flight": self.max_in_flight.load(Ordering::SeqCst),
            "fault": FaultSpec::from(self.fault()),
        })
    }
}

/// A running dev auth service. Dropping it stops the server too.
pub struct DevAuth {
    /// None while [`DevAuth::go_down`] has it stopped.
    server: tokio::sync::Mutex<Option<Running>>,
    addr: SocketAddr,
    state: Arc<State>,
}

/// Binds `addr` and serves `state` there.
async fn serve(state: &Arc<State>, addr: SocketAddr) -> std::io::Result<Running> {
    let state = Arc::clone(state);
    server::spawn(addr, move |req| handle(Arc::clone(&state), req)).await
}

impl DevAuth {
    /// Binds `config.listen` (use port 0 in tests) and serves in the current runtime.
    pub async fn start(config: DevAuthConfig) -> std::io::Result<DevAuth> {
        Self::start_with(config, ServeOptions::default()).await
    }

    pub async fn start_with(
        config: DevAuthConfig,
        options: ServeOptions,
    ) -> std::io::Result<DevAuth> {
        let state = Arc::new(State {
            keys: RwLock::new(config.keys),
            service_token: config.service_token,
            fault: Mutex::new(FaultSetting {
                fault: Fault::None,
                calls_left: None,
            }),
            validate_calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            validate_finished: AtomicU64::new(0),
            validate_request_ids: Mutex::new(Vec::new()),
            ext_authz_calls: AtomicU64::new(0),
            token_validate_calls: AtomicU64::new(0),
            last_validate: Mutex::new(None),
            last_token_validate: Mutex::new(None),
            log_requests: AtomicBool::new(options.log_requests),
            control_api: options.control_api,
            oidc: options.login.as_ref().and(options.oidc).map(Oidc::new),
            login: options.login,
            gathered: Mutex::new(0),
            gather_released: tokio::sync::Notify::new(),
            hold_releases: tokio::sync::watch::channel(0).0,
            held: AtomicU64::new(0),
        });
        let server = serve(&state, config.listen).await?;
        Ok(DevAuth {
            addr: server.addr(),
            server: tokio::sync::Mutex::new(Some(server)),
            state,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and aborts open connections, so callers get connection refused;
    /// faults, keys and counters stay as they are. No-op when already down.
    pub async fn go_down(&self) {
        if let Some(server) = self.server.lock().await.take() {
            server.shutdown().await;
        }
    }

    /// Listens again on the same address after [`DevAuth::go_down`]. No-op when up.
    pub async fn come_up(&self) -> std::io::Result<()> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            *server = Some(serve(&self.state, self.addr).await?);
        }
        Ok(())
    }

    pub async fn is_up(&self) -> bool {
        self.server.lock().await.is_some()
    }

    /// `http://ip:port`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Requests received on the validate path, faulted ones included.
    pub fn validate_calls(&self) -> u64 {
        self.state.validate_calls.load(Ordering::Relaxed)
    }

    /// Requests received under `/ext_authz`, faulted ones included.
    pub fn ext_authz_calls(&self) -> u64 {
        self.state.ext_authz_calls.load(Ordering::Relaxed)
    }

    /// Validate requests the service has finished with: answered, or dropped by a fault.
    /// Those still being served (a `Slow` fault) are counted by `validate_calls` only.
    pub fn validate_finished(&self) -> u64 {
        self.state.validate_finished.load(Ordering::Relaxed)
    }

    /// The `x-request-id` of every validate request so far, in order of arrival ("-" for
    /// a request without one).
    pub fn validate_request_ids(&self) -> Vec<String> {
        self.state
            .validate_request_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests received on `/api/v1/validate` (user tokens), faulted ones included.
    pub fn token_validate_calls(&self) -> u64 {
        self.state.token_validate_calls.load(Ordering::Relaxed)
    }

    /// Every call that asked this service about a credential, of any kind.
    pub fn total_calls(&self) -> u64 {
        self.validate_calls() + self.ext_authz_calls() + self.token_validate_calls()
    }

    /// The login side, when started with one.
    pub fn login(&self) -> Option<&DevLogin> {
        self.state.login.as_ref()
    }

    /// Zeroes the counters and forgets the request ids.
    pub fn reset_counts(&self) {
        self.state.reset_counts();
    }

    /// The fault for every call from now on, until changed.
    pub fn set_fault(&self, fault: Fault) {
        self.state.set_fault(fault);
    }

    /// Answers every call a `Hold` fault holds now (set another fault first, or calls that
    /// arrive later are held in their turn).
    pub fn release_held(&self) {
        self.state.release_held();
    }

    /// The most validate and ext_authz calls served at once since the last reset.
    pub fn max_in_flight(&self) -> u64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// Calls a `Hold` fault holds right now.
    pub fn held_calls(&self) -> u64 {
        self.state.held.load(Ordering::SeqCst)
    }

    /// The fault for the next `calls` calls (key and token validation, ext_authz), then none.
    pub fn set_fault_for(&self, fault: Fault, calls: u64) {
        self.state.set_fault_for(fault, Some(calls));
    }

    pub fn fault(&self) -> Fault {
        self.state.fault()
    }

    pub fn last_validate_request(&self) -> Option<RecordedRequest> {
        self.state
            .last_validate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The last request on `/api/v1/validate`.
    pub fn last_token_validate_request(&self) -> Option<RecordedRequest> {
        self.state
            .last_token_validate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds or replaces a key while running (plaintext in, hash stored).
    pub fn insert_key(&self, key: &str, spec: KeySpec) -> Result<(), KeyStoreError> {
        self.state
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, spec)
    }

    /// Revokes a key while running; `false` when it is unknown.
    pub fn revoke_key(&self, key: &str) -> bool {
        self.state
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .revoke(key)
    }

    pub fn set_request_logging(&self, on: bool) {
        self.state.log_requests.store(on, Ordering::Relaxed);
    }

    /// Stops accepting, closes open connections and waits for that.
    pub async fn shutdown(self) {
        self.go_down().await;
    }
}

/// What one request came to, for the log line.
pub(crate) struct Outcome {
    reply: Result<Response<Body>, DropConnection>,
    key_fp: Option<String>,
    note: String,
}

impl Outcome {
    /// `key` is the credential the request carried: only its fingerprint is kept.
    pub(crate) fn new(reply: Response<Body>, key: Option<&str>, note: impl Into<String>) -> Self {
        Outcome {
            reply: Ok(reply),
            key_fp: key.map(fingerprint),
            note: note.into(),
        }
    }
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();

    let outcome = if path == VALIDATE_PATH {
        validate(&state, req).await
    } else if path == EXT_AUTHZ_PREFIX || path.starts_with("/ext_authz/") {
        ext_authz(&state, req).await
    } else if let (Some(login), true) = (&state.login, login::is_login_path(&path)) {
        login::route(&state, login, &path, req).await
    } else if let (Some(login), Some(oidc), true) =
        (&state.login, &state.oidc, oidc::is_oidc_path(&path))
    {
        oidc::route(oidc, login, &path, req).await
    } else if path == "/health" {
        // Readiness probe for scripts: never faulted, never counted.
        let body = br#"{"status":"ok"}"#.to_vec();
        Outcome::new(json_response(StatusCode::OK, body), None, "")
    } else if state.control_api && path.starts_with(CONTROL_PREFIX) {
        control(&state, req).await
    } else {
        Outcome::new(detail(StatusCode::NOT_FOUND, "Not Found"), None, "")
    };

    if state.log_requests.load(Ordering::Relaxed) {
        let status = match &outcome.reply {
            Ok(resp) => resp.status().as_u16().to_string(),
            Err(_) => "dropped".to_owned(),
        };
        eprintln!(
            "dev-auth-service: {method} {path} key={} status={status} {}{}({:.2}ms)",
            outcome.key_fp.as_deref().unwrap_or("-"),
            outcome.note,
            if outcome.note.is_empty() { "" } else { " " },
            started.elapsed().as_secs_f64() * 1000.0,
        );
    }
    outcome.reply
}

/// The fault's reply, if it replaces the normal one. `Slow` waits, then lets
/// the request go on.
pub(crate) async fn apply_fault(
    state: &State,
    fault: Fault,
) -> Option<Result<Response<Body>, DropConnection>> {
    match fault {
        Fault::None => None,
        Fault::Gather(calls) => {
            state.gather(calls).await;
            None
        }
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Fault::Hold => {
            state.hold().await;
            None
        }
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(Ok(detail(status, "Injected fault")))
        }
        Fault::Garbage => Some(Ok(json_response(
            StatusCode::OK,
            b"<html>this is not JSON {\"valid\": tr".to_vec(),
        ))),
        Fault::CloseConnection => Some(Err(DropConnection)),
        Fault::RateLimited { retry_after_s } => {
            let mut resp = detail(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
            resp.headers_mut().insert(
                "retry-after",
                retry_after_s.to_string().parse().expect("digits"),
            );
            Some(Ok(resp))
        }
    }
}

pub(crate) fn fault_outcome(
    reply: Result<Response<Body>, DropConnection>,
    key: Option<&str>,
    fault: Fault,
) -> Outcome {
    Outcome {
        reply,
        key_fp: key.map(fingerprint),
        note: format!("fault={:?}", FaultSpec::from(fault)),
    }
}

/// `Authorization: Bearer <token>`, scheme case-insensitive.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub(crate) enum BodyError {
    TooLarge,
    Broken,
}

pub(crate) async fn read_body(mut body: Incoming, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Broken)?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

/// A request as received, for [`DevAuth::last_validate_request`] and friends.
pub(crate) fn record(parts: &hyper::http::request::Parts, raw: Vec<u8>) -> RecordedRequest {
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: header_list(&parts.headers),
        body: if raw.is_empty() {
            None
        } else {
            serde_json::from_slice(&raw).ok()
        },
        raw_body: raw,
    }
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

pub(crate) fn www_authenticate(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        "www-authenticate",
        hyper::header::HeaderValue::from_static("Bearer realm=\"hokusai\""),
    );
    resp
}

#[derive(Serialize)]
struct ValidReply<'a> {
    valid: bool,
    key_id: &'a str,
    user_id: &'a str,
    service_id: &'a str,
    scopes: &'a [String],
    rate_limit_per_hour: Option<u64>,
    expires_at: Option<&'a str>,
}

/// One call being served, counted in and out (also when the caller goes and the call with it).
struct InFlight<'a>(&'a State);

impl<'a> InFlight<'a> {
    fn enter(state: &'a State) -> Self {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn validate(state: &State, req: Request<Incoming>) -> Outcome {
    let _in_flight = InFlight::enter(state);
    state.validate_calls.fetch_add(1, Ordering::Relaxed);
    let request_id = req.headers().get("x-request-id").map_or_else(
        || "-".to_owned(),
        |v| String::from_utf8_lossy(v.as_bytes()).into_owned(),
    );
    state
        .validate_request_ids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(request_id);
    let outcome = validate_inner(state, req).await;
    state.validate_finished.fetch_add(1, Ordering::Relaxed);
    outcome
}

async fn validate_inner(state: &State, req: Request<Incoming>) -> Outcome {
    let (parts, body) = req.into_parts();
    let raw = match read_body(body, MAX_VALIDATE_BODY).await {
        Ok(raw) => raw,
        Err(BodyError::TooLarge) => {
            return Outcome::new(
                detail(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
                None,
                "",
            )
        }
        Err(BodyError::Broken) => {
            return Outcome {
                reply: Err(DropConnection),
                key_fp: None,
                note: "body read failed".into(),
            }
        }
    };
    // An empty body counts as `{}`: with bearer transport the key is in the header.
    let parsed: Result<Value, _> = if raw.is_empty() {
        Ok(Value::Object(Default::default()))
    } else {
        serde_json::from_slice(&raw)
    };
    *state
        .last_validate
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(record(&parts, raw.clone()));

    let body_obj = parsed.ok().and_then(|v| match v {
        Value::Object(map) => Some(map),
        _ => None,
    });
    let body_key = body_obj
        .as_ref()
        .and_then(|m| m.get("api_key"))
        .and_then(Value::as_str);
    let header_key = bearer(&parts.headers);
    let key = body_key.or(header_key);

    let fault = state.fault_for_call();
    if let Some(reply) = apply_fault(state, fault).await {
        return fault_outcome(reply, key, fault);
    }

    if parts.method != Method::POST {
        return Outcome::new(
            detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
            key,
            "",
        );
    }
    let Some(body_obj) = body_obj.as_ref() else {
        return Outcome::new(
            detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Body must be a JSON object",
            ),
            None,
            "bad json",
        );
    };
    let wrong_type = |field: &str| body_obj.get(field).is_some_and(|v| !v.is_string());
    if wrong_type("api_key") || wrong_type("service_id") {
        return Outcome::new(
            detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "api_key and service_id must be strings",
            ),
            None,
            "bad json",
        );
    }
    let service_id = body_obj.get("service_id").and_then(Value::as_str);

    if let (Some(_), Some(token)) = (body_key, &state.service_token) {
        if header_key != Some(token.as_str()) {
            return Outcome::new(
                detail(StatusCode::UNAUTHORIZED, "Service token required"),
                key,
                "no service token",
            );
        }
    }
    let Some(key) = key else {
        return Outcome::new(
            detail(StatusCode::UNAUTHORIZED, "API key required"),
            None,
            "no key",
        );
    };

    match state.check(key, service_id) {
        Verdict::Valid(record) => {
            let spec = &record.spec;
            let reply = ValidReply {
                valid: true,
                key_id: &spec.key_id,
                user_id: &spec.user_id,
                service_id: &spec.service_id,
                scopes: &spec.scopes,
                rate_limit_per_hour: spec.rate_limit_per_hour,
                expires_at: spec.expires_at.as_deref(),
            };
            let body = serde_json::to_vec(&reply).expect("serialisable");
            Outcome::new(
                json_response(StatusCode::OK, body),
                Some(key),
                format!("valid key_id={}", spec.key_id),
            )
        }
        Verdict::Invalid => Outcome::new(
            detail(StatusCode::UNAUTHORIZED, "Invalid or expired API key"),
            Some(key),
            "invalid",
        ),
        Verdict::WrongService => Outcome::new(
            detail(StatusCode::FORBIDDEN, "Insufficient permissions"),
            Some(key),
            "wrong service",
        ),
    }
}

/// Envoy's ext_authz HTTP service contract: 200 allows (and the listed
/// headers are copied upstream), anything else is sent to the client as is.
async fn ext_authz(state: &State, req: Request<Incoming>) -> Outcome {
    let _in_flight = InFlight::enter(state);
    state.ext_authz_calls.fetch_add(1, Ordering::Relaxed);
    let headers = req.headers();
    let key = bearer(headers).or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    });

    let fault = state.fault_for_call();
    if let Some(reply) = apply_fault(state, fault).await {
        return fault_outcome(reply, key, fault);
    }

    let Some(key) = key else {
        return Outcome::new(
            www_authenticate(detail(StatusCode::UNAUTHORIZED, "API key required")),
            None,
            "no key",
        );
    };
    match state.check(key, Some(DEFAULT_SERVICE_ID)) {
        Verdict::Valid(record) => {
            let spec = &record.spec;
            let mut builder = Response::builder().status(StatusCode::OK);
            for (name, value) in [
                ("x-user-id", spec.user_id.clone()),
                ("x-api-key-id", spec.key_id.clone()),
                ("x-auth-scopes", spec.scopes.join(" ")),
            ] {
                builder = builder.header(name, value);
            }
            match builder.body(Full::new(Bytes::new())) {
                Ok(resp) => Outcome::new(resp, Some(key), format!("valid key_id={}", spec.key_id)),
                // A key spec with characters that cannot go in a header.
                Err(_) => Outcome::new(
                    detail(StatusCode::INTERNAL_SERVER_ERROR, "Key record unusable"),
                    Some(key),
                    "bad record",
                ),
            }
        }
        Verdict::Invalid => Outcome::new(
            www_authenticate(detail(
                StatusCode::UNAUTHORIZED,
                "Invalid or expired API key",
            )),
            Some(key),
            "invalid",
        ),
        Verdict::WrongService => Outcome::new(
            detail(StatusCode::FORBIDDEN, "Insufficient permissions"),
            Some(key),
            "wrong service",
        ),
    }
}

/// `/__dev/*`: the same controls as the in-process API, for scripts.
async fn control(state: &State, req: Request<Incoming>) -> Outcome {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let stats = |state: &State| {
        json_response(
            StatusCode::OK,
            serde_json::to_vec(&state.stats_json()).expect("serialisable"),
        )
    };
    match (method, path.as_str()) {
        (Method::GET, "/__dev/stats") => Outcome::new(stats(state), None, ""),
        (Method::POST, "/__dev/reset") => {
            state.reset_counts();
            state.set_fault(Fault::None);
            *state
                .last_validate
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            *state
                .last_token_validate
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            Outcome::new(stats(state), None, "reset")
        }
        (Method::POST, "/__dev/fault") => {
            let raw = match read_body(req.into_body(), MAX_VALIDATE_BODY).await {
                Ok(raw) => raw,
                Err(_) => {
                    return Outcome::new(
                        detail(StatusCode::BAD_REQUEST, "Unreadable body"),
                        None,
                        "",
                    )
                }
            };
            match serde_json::from_slice::<FaultSpec>(&raw) {
                Ok(spec) => {
                    let note = format!("set {spec:?}");
                    state.set_fault(spec.into());
                    Outcome::new(stats(state), None, note)
                }
                Err(err) => Outcome::new(
                    detail(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &format!("Bad fault spec: {err}"),
                    ),
                    None,
                    "",
                ),
            }
        }
        _ => Outcome::new(detail(StatusCode::NOT_FOUND, "Not Found"), None, ""),
    }
}

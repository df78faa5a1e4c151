//! The values tests build and inspect: requests, callouts and their replies,
//! stream outcomes, log lines.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::pki::PeerCert;
use super::wire::{Header, HeaderMap};

/// Address and port Envoy reports as `source.address` unless a test says otherwise.
pub const DEFAULT_SOURCE_ADDRESS: &str = "203.0.113.7:40000";
/// The external listener, as clients address it.
pub const DEFAULT_AUTHORITY: &str = "127.0.0.1:10000";

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

/// Renders raw header values for messages; non-UTF-8 bytes show as U+FFFD.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn find<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_slice())
}

fn show_headers(headers: &[Header]) -> String {
    let items: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", lossy(v)))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A downstream request as Envoy hands it to the filter: headers (after the
/// connection manager's own edits) plus the connection's properties.
#[derive(Clone, Debug)]
pub struct Request {
    pub(crate) headers: HeaderMap,
    pub(crate) properties: Vec<(String, Vec<u8>)>,
    /// What jwt_authn verified: the token's payload as JSON (its dynamic metadata).
    pub(crate) jwt_payload: Option<serde_json::Value>,
    pub(crate) end_of_stream: bool,
}

impl Request {
    /// `GET path`; see [`Request::method`] for the defaults.
    pub fn get(path: &str) -> Self {
        Self::method("GET", path)
    }

    pub fn post(path: &str) -> Self {
        Self::method("POST", path)
    }

    /// Pseudo-headers, `:authority` 127.0.0.1:10000, `:scheme` http, a unique
    /// `x-request-id` (Envoy always has one by the time filters run), a plain-TCP
    /// connection (`connection.mtls` false) from 203.0.113.7:40000.
    pub fn method(method: &str, path: &str) -> Self {
        let seq = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
        let mut headers = HeaderMap::new();
        headers.add(":authority", DEFAULT_AUTHORITY.as_bytes());
        headers.add(":path", path.as_bytes());
        headers.add(":method", method.as_bytes());
        headers.add(":scheme", b"http");
        headers.add("x-request-id", format!("req-{seq}").as_bytes());
        Self {
            headers,
            properties: vec![
                (
                    "source.address".into(),
                    DEFAULT_SOURCE_ADDRESS.as_bytes().to_vec(),
                ),
                ("connection.mtls".into(), vec![0]),
            ],
            jwt_payload: None,
            end_of_stream: false,
        }
    }

    /// Adds a header value (a second call with the same name adds a second value).
    /// Takes text or raw bytes, so tests can send values that are not UTF-8.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.add(name, value.as_ref());
        self
    }

    pub fn header_bytes(self, name: &str, value: &[u8]) -> Self {
        self.header(name, value)
    }

    /// Replaces every value of `name` (e.g. to change `:authority` or `x-request-id`).
    pub fn set_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.replace(name, value.as_ref());
        self
    }

    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.remove(name);
        self
    }

    /// `Authorization: Bearer <key>`.
    pub fn bearer(self, key: &str) -> Self {
        self.header("authorization", format!("Bearer {key}"))
    }

    pub fn api_key(self, key: &str) -> Self {
        self.header("x-api-key", key)
    }

    /// The `x-forwarded-client-cert` Envoy writes for an mTLS peer.
    pub fn xfcc(self, value: &str) -> Self {
        self.set_header("x-forwarded-client-cert", value)
    }

    /// Sets (or replaces) a property by its dotted name, raw bytes as Envoy
    /// serializes them: strings as text, booleans as one byte 0/1.
    pub fn property(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.properties.retain(|(n, _)| n != name);
        self.properties
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Sets a property by its exact segments, for paths whose segments contain dots
    /// (`["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", ...]`).
    pub fn property_path(self, segments: &[&str], value: impl AsRef<[u8]>) -> Self {
        self.property(&segments.join("\0"), value)
    }

    pub fn without_property(mut self, name: &str) -> Self {
        self.properties.retain(|(n, _)| n != name);
        self
    }

    pub fn source_address(self, address: &str) -> Self {
        self.property("source.address", address)
    }

    /// A TLS connection whose client certificate Envoy validated, for a certificate minted
    /// with these SANs and the CN of `subject` (`CN=...`, Envoy's RFC 2253 rendering): see
    /// [`Request::mtls_cert`].
    pub fn mtls_peer(
        self,
        uri_san: Option<&str>,
        dns_san: Option<&str>,
        subject: Option<&str>,
    ) -> Self {
        let cn = subject.and_then(|s| s.strip_prefix("CN="));
        let cert = PeerCert::new(
            uri_san.as_slice(),
            dns_san.as_slice(),
            cn.filter(|cn| !cn.is_empty()),
        );
        self.mtls_cert(&cert)
    }

    /// A TLS connection whose client presented `cert` and Envoy validated it: what Envoy
    /// tells the filter about it (`connection.mtls`, the certificate's digest, its first
    /// SANs and subject) and the `x-forwarded-client-cert` SANITIZE_SET writes (replacing
    /// any the client sent).
    pub fn mtls_cert(self, cert: &PeerCert) -> Self {
        let mut req = self
            .property("connection.mtls", [1u8])
            .property(
                "connection.sha256_peer_certificate_digest",
                cert.digest_hex(),
            )
            .xfcc(&cert.xfcc());
        let subject = cert.subject();
        let props = [
            ("connection.uri_san_peer_certificate", cert.uris.first()),
            ("connection.dns_san_peer_certificate", cert.dns.first()),
            ("connection.subject_peer_certificate", subject.as_ref()),
        ];
        for (name, value) in props {
            req = match value {
                Some(v) => req.property(name, v),
                None => req.without_property(name),
            };
        }
        req
    }

    /// The payload Envoy's jwt_authn verified for this request, in its dynamic metadata
    /// (`envoy.filters.http.jwt_authn` / `jwt_payload`), each claim a string.
    pub fn verified_jwt(self, claims: &[(&str, &str)]) -> Self {
        let payload: serde_json::Map<String, serde_json::Value> = claims
            .iter()
            .map(|(n, v)| (n.to_string(), serde_json::Value::from(*v)))
            .collect();
        self.verified_jwt_json(payload.into())
    }

    /// As [`Request::verified_jwt`], for a payload of any JSON: the filter reads it below
    /// `metadata.filter_metadata.envoy.filters.http.jwt_authn.jwt_payload` as Envoy hands
    /// metadata over (`hokusai_auth_filter::core::host::fake::metadata_value`).
    pub fn verified_jwt_json(mut self, payload: serde_json::Value) -> Self {
        self.jwt_payload = Some(payload);
        self
    }

    /// Passes `end_of_stream` to on_request_headers (Envoy sets it for requests
    /// without a body).
    pub fn end_of_stream(mut self, end: bool) -> Self {
        self.end_of_stream = end;
        self
    }

    pub fn headers(&self) -> &[Header] {
        self.headers.entries()
    }

    pub fn request_id(&self) -> Option<String> {
        self.headers.get("x-request-id").map(lossy)
    }
}

/// Handle of one downstream stream inside a [`super::Vm`]; wraps its context id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl StreamId {
    pub fn context_id(self) -> u32 {
        self.0
    }
}

/// An HTTP call the filter dispatched (`proxy_http_call`), as Envoy would send it.
#[derive(Clone)]
pub struct Callout {
    pub token: u32,
    /// The context that owns the call and gets its reply: always the root context, as in
    /// Envoy (proxy-wasm-cpp-host's `http_call` makes the call from the current context's
    /// root), so a stream that goes away never cancels it.
    pub context_id: u32,
    /// The context that was current when the call was made (a stream's id, or the root's).
    pub made_by: u32,
    pub upstream: String,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    pub trailers: Vec<Header>,
    pub timeout_ms: u32,
    /// Host clock when the call was made (ns since the epoch).
    pub dispatched_at_nanos: u64,
}

impl Callout {
    pub fn header(&self, name: &str) -> Option<String> {
        find(&self.headers, name).map(lossy)
    }

    pub fn body_str(&self) -> String {
        lossy(&self.body)
    }

    /// The body parsed as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("callout body is not JSON ({e}): {}", self.body_str()))
    }

    /// The stream the call was made for.
    pub fn stream(&self) -> StreamId {
        StreamId(self.made_by)
    }
}

impl fmt::Debug for Callout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callout")
            .field("token", &self.token)
            .field("context_id", &self.context_id)
            .field("made_by", &self.made_by)
            .field("upstream", &self.upstream)
            .field("headers", &format_args!("{}", show_headers(&self.headers)))
            .field("body", &self.body_str())
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// What the test makes the upstream answer to a callout.
///
/// Measured on Envoy 1.40 (V8): the async client turns a timeout, a refused connection
/// and a connection closed before the response into local replies of Envoy's router
/// (504/503, `text/plain`, no `x-envoy-upstream-service-time`), delivered like any
/// response. Only [`CalloutReply::failure`] reaches the filter with no response at all.
#[derive(Clone, Debug)]
pub struct CalloutReply {
    /// `None`: no response at all (Envoy's onHttpCallFailure): 0 headers, 0 body bytes,
    /// no response maps, proxy_get_status BrokenConnection "reset".
    pub(crate) response: Option<CalloutResponse>,
    /// A timeout: Envoy calls back `timeout_ms` after the dispatch, so the harness moves
    /// the clock there first. Everything else calls back at once.
    pub(crate) timed_out: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct CalloutResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// Envoy's router, when the connection to the auth service failed or broke before a
/// response: `upstream connect error or disconnect/reset before headers. reset reason: ...`.
pub const ENVOY_RESET_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
pub const ENVOY_REFUSED_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
/// Envoy's router, when the callout's timeout fired first.
pub const ENVOY_TIMEOUT_BODY: &str = "upstream request timeout";

impl CalloutReply {
    /// A response with just `:status`, as the auth service's answer reaches the filter
    /// through Envoy's router (which adds `x-envoy-upstream-service-time`).
    pub fn new(status: u32) -> Self {
        let mut headers = HeaderMap::new();
        headers.add(":status", status.to_string().as_bytes());
        headers.add("x-envoy-upstream-service-time", b"1");
        Self {
            response: Some(CalloutResponse {
                headers,
                body: Vec::new(),
                trailers: HeaderMap::new(),
            }),
            timed_out: false,
        }
    }

    /// `status` with `content-type: application/json` and the given body.
    pub fn json(status: u32, body: &str) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .body(body)
    }

    /// A local reply of Envoy's router, as the async client hands it to the filter.
    fn envoy_local(status: u32, body: &str) -> Self {
        let mut headers = HeaderMap::new();
        headers.add(":status", status.to_string().as_bytes());
        headers.add("content-length", body.len().to_string().as_bytes());
        headers.add("content-type", b"text/plain");
        Self {
            response: Some(CalloutResponse {
                headers,
                body: body.as_bytes().to_vec(),
                trailers: HeaderMap::new(),
            }),
            timed_out: false,
        }
    }

    /// The auth service did not answer within `timeout_ms`: Envoy's 504 `upstream request
    /// timeout`, `timeout_ms` after the dispatch (the harness clock moves there).
    pub fn timeout() -> Self {
        Self {
            timed_out: true,
            ..Self::envoy_local(504, ENVOY_TIMEOUT_BODY)
        }
    }

    /// The auth service closed or reset the connection before answering: Envoy's 503
    /// (`reset reason: connection termination`), at once.
    pub fn reset() -> Self {
        Self::envoy_local(503, ENVOY_RESET_BODY)
    }

    /// Nothing listens on the auth service's port: Envoy's 503 (`reset reason: remote
    /// connection failure`), at once.
    pub fn refused() -> Self {
        Self::envoy_local(503, ENVOY_REFUSED_BODY)
    }

    /// No response at all (Envoy's onHttpCallFailure), at once.
    pub fn failure() -> Self {
        Self {
            response: None,
            timed_out: false,
        }
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.response_mut().headers.add(name, value.as_ref());
        self
    }

    pub fn without_header(mut self, name: &str) -> Self {
        self.response_mut().headers.remove(name);
        self
    }

    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.response_mut().body = body.as_ref().to_vec();
        self
    }

    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.response_mut().trailers.add(name, value.as_ref());
        self
    }

    fn response_mut(&mut self) -> &mut CalloutResponse {
        self.response
            .as_mut()
            .expect("a failure() reply has no headers or body")
    }
}

/// Where a stream stands after the filter had its say.
#[derive(Clone, PartialEq)]
pub enum Outcome {
    /// Sent upstream with these request headers (pseudo-headers included).
    Forwarded { headers: Vec<Header> },
    /// Answered by the filter's local reply. `headers` are the final response
    /// headers without `:status`, including what Envoy adds (content-length, a
    /// text/plain content-type when the filter set none) and what the filter's own
    /// on_response_headers did to them.
    Replied {
        status: u32,
        headers: Vec<Header>,
        body: Vec<u8>,
    },
    /// Waiting (normally for a callout).
    Paused,
    /// The filter reset the stream (`proxy_close_stream`).
    Reset,
    /// The client went away (reset the stream or closed the connection) before the
    /// filter decided; see [`super::Vm::reset_by_client`].
    Abandoned,
    /// The VM trapped; Envoy answers 503 until failure_policy FAIL_RELOAD replaces it.
    Crashed(String),
}

impl Outcome {
    pub fn is_forwarded(&self) -> bool {
        matches!(self, Outcome::Forwarded { .. })
    }

    pub fn is_paused(&self) -> bool {
        matches!(self, Outcome::Paused)
    }

    pub fn is_crashed(&self) -> bool {
        matches!(self, Outcome::Crashed(_))
    }

    /// The local reply's status; `None` for any other outcome.
    pub fn status(&self) -> Option<u32> {
        match self {
            Outcome::Replied { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Request headers when forwarded, response headers when replied.
    pub fn headers(&self) -> &[Header] {
        match self {
            Outcome::Forwarded { headers } | Outcome::Replied { headers, .. } => headers,
            _ => &[],
        }
    }

    /// First value of a header (lossy UTF-8) of [`Outcome::headers`].
    pub fn header(&self, name: &str) -> Option<String> {
        find(self.headers(), name).map(lossy)
    }

    pub fn header_bytes(&self, name: &str) -> Option<Vec<u8>> {
        find(self.headers(), name).map(<[u8]>::to_vec)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers()
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| lossy(v))
            .collect()
    }

    pub fn body(&self) -> &[u8] {
        match self {
            Outcome::Replied { body, .. } => body,
            _ => &[],
        }
    }

    pub fn body_str(&self) -> String {
        lossy(self.body())
    }

    /// The local reply's body as JSON; panics (showing the outcome) otherwise.
    pub fn json_body(&self) -> serde_json::Value {
        match self {
            Outcome::Replied { body, .. } => serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("reply body is not JSON ({e}): {self:?}")),
            _ => panic!("expected a local reply, got {self:?}"),
        }
    }

    /// `detail` of the `{"detail": ...}` reply body.
    pub fn detail(&self) -> Option<String> {
        self.json_body()
            .get("detail")
            .and_then(|d| d.as_str())
            .map(str::to_string)
    }

    #[track_caller]
    pub fn assert_forwarded(&self) -> &Self {
        assert!(self.is_forwarded(), "expected Forwarded, got {self:?}");
        self
    }

    #[track_caller]
    pub fn assert_replied(&self, status: u32) -> &Self {
        assert_eq!(
            self.status(),
            Some(status),
            "expected a {status} local reply, got {self:?}"
        );
        self
    }

    #[track_caller]
    pub fn assert_paused(&self) -> &Self {
        assert!(self.is_paused(), "expected Paused, got {self:?}");
        self
    }

    #[track_caller]
    pub fn assert_not_crashed(&self) -> &Self {
        assert!(!self.is_crashed(), "the VM crashed: {self:?}");
        self
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Forwarded { headers } => {
                write!(f, "Forwarded {{ headers: {} }}", show_headers(headers))
            }
            Outcome::Replied {
                status,
                headers,
                body,
            } => write!(
                f,
                "Replied {{ status: {status}, headers: {}, body: {:?} }}",
                show_headers(headers),
                lossy(body)
            ),
            Outcome::Paused => write!(f, "Paused"),
            Outcome::Reset => write!(f, "Reset"),
            Outcome::Abandoned => write!(f, "Abandoned"),
            Outcome::Crashed(msg) => write!(f, "Crashed({msg:?})"),
        }
    }
}

/// proxy-wasm log levels (same numbering as the ABI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_abi(level: u32) -> Option<Self> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}

/// One line the filter logged (proxy_log, or stdout/stderr through WASI, which
/// Envoy logs at info and error), or a line the harness adds about the VM
/// (those start with "[harness]").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    /// Which Vm of the Host (0 for the first).
    pub worker: usize,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[worker {} {:?}] {}",
            self.worker, self.level, self.message
        )
    }
}

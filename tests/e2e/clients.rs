//! HTTP clients for the two listeners and helpers for reading replies.

use std::time::Duration;

use hokusai_devstack::EchoReply;
use reqwest::{Certificate, Client, Identity, Response};

use super::paths;

use hokusai_devstack::keys::dev_keys;

pub const READWRITE_KEY: &str = dev_keys::READWRITE;
pub const READONLY_KEY: &str = dev_keys::READONLY;
pub const EXPIRED_KEY: &str = dev_keys::EXPIRED;
pub const LIMITED_KEY: &str = dev_keys::LIMITED;
pub const OTHER_SERVICE_KEY: &str = dev_keys::OTHER_SERVICE;

/// client.crt's identity: the one envoy.yaml allow-lists.
pub const INTERNAL_IDENTITY: &str = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";

/// The headers only the filter may set.
pub const VERDICT_HEADERS: [&str; 6] = [
    "x-api-key-id",
    "x-auth-scopes",
    "x-auth-path",
    "x-auth-method",
    "x-auth-identity",
    "x-auth-stale",
];

fn builder() -> reqwest::ClientBuilder {
    // Bounded so a hung proxy fails a test instead of stalling the suite.
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
}

/// For the plain listener.
pub fn plain_client() -> Client {
    builder().build().expect("plain client")
}

/// For the TLS listener: trusts certs/ca.crt only and, with `cert` (a stem such as
/// `"client"` or `"rogue-client"`), presents `certs/<cert>.crt` with its key.
pub fn tls_client(cert: Option<&str>) -> Client {
    let ca = std::fs::read(paths::cert("ca.crt")).expect("read certs/ca.crt");
    let mut b = builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(Certificate::from_pem(&ca).expect("parse certs/ca.crt"));
    if let Some(stem) = cert {
        let crt = paths::cert(&format!("{stem}.crt"));
        let key = paths::cert(&format!("{stem}.key"));
        paths::require(&crt, "make certs");
        let mut pem = std::fs::read(&crt).expect("read client cert");
        pem.extend(std::fs::read(&key).expect("read client key"));
        b = b.identity(Identity::from_pem(&pem).expect("client identity PEM"));
    }
    b.build().expect("tls client")
}

/// For the TLS listener, presenting a certificate made in a test (trusting certs/ca.crt).
pub fn tls_client_with(identity: reqwest::Identity) -> Client {
    let ca = std::fs::read(paths::cert("ca.crt")).expect("read certs/ca.crt");
    builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(Certificate::from_pem(&ca).expect("parse certs/ca.crt"))
        .identity(identity)
        .build()
        .expect("tls client")
}

/// Asserts a 200 from the echo upstream and returns what it saw.
pub async fn echoed(resp: Response) -> EchoReply {
    let status = resp.status();
    let body = resp.text().await.expect("response body");
    assert_eq!(
        status, 200,
        "expected the echo upstream to answer; body: {body}"
    );
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not an echo reply ({e}): {body}"))
}

/// A reply the filter made itself: status, the `detail` and the whole JSON.
pub async fn filter_reply(resp: Response) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("response body");
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {body}"));
    (status, headers, json)
}

/// The filter's own refusal, as the contract (section 5) fixes it: the status, the JSON
/// `detail`, and `required_scope` exactly when it is a scope miss. Returns the body.
#[track_caller]
pub fn assert_refusal(
    got: &(u16, reqwest::header::HeaderMap, serde_json::Value),
    status: u16,
    detail: &str,
    required_scope: Option<&str>,
) -> serde_json::Value {
    let (got_status, headers, body) = got;
    assert_eq!(
        (*got_status, body["detail"].as_str()),
        (status, Some(detail)),
        "{body}"
    );
    assert_eq!(body["required_scope"].as_str(), required_scope, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    body.clone()
}

/// [`filter_reply`] then [`assert_refusal`].
pub async fn assert_refused(
    resp: Response,
    status: u16,
    detail: &str,
    required_scope: Option<&str>,
) -> serde_json::Value {
    assert_refusal(&filter_reply(resp).await, status, detail, required_scope)
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

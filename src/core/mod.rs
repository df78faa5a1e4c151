//! The host-agnostic heart of the filter: plain Rust types in, a decision out. Nothing here
//! calls proxy-wasm; what the decision needs from Envoy it asks through small traits
//! ([`store::SharedStore`], [`decision::RequestHost`], [`flow::CalloutHost`]) that the adapter
//! implements and the tests fake.
//!
//! - What the request says: [`header_map`], [`request`], [`credential`], [`xfcc`], [`peer`],
//!   [`jwt`], [`scope`].
//! - The decision: [`decision`] (one request), [`flow`] (one worker's requests and callouts).
//! - The auth-service exchange and our replies: [`callout`], [`validation_reply`],
//!   [`local_reply`].
//! - State: [`verdict_cache`] and [`rate_limit`] in shared data, [`local_verdicts`] and
//!   [`peer_certs`] per worker; [`telemetry`] counts.

pub mod callout;
pub mod config;
pub mod credential;
pub mod decision;
pub mod digest;
pub mod flow;
pub mod header_map;
pub mod json;
pub mod jwt;
pub mod local_reply;
pub mod local_verdicts;
pub mod peer;
pub mod peer_certs;
pub mod rate_limit;
pub mod request;
pub mod scope;
pub mod slot_codec;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod validation_reply;
pub mod verdict_cache;
pub mod xfcc;

/// Headers a client may never set: only the filter's own verdict may put them upstream.
pub const VERDICT_HEADERS: [&str; 6] = [
    "x-api-key-id",
    "x-auth-scopes",
    "x-auth-path",
    "x-auth-method",
    "x-auth-identity",
    "x-auth-stale",
];

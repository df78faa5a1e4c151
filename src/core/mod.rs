//! The host-agnostic heart of the filter. Nothing here calls proxy-wasm; the only host
//! facility the core touches is [`store::SharedStore`], a trait the adapter implements.

pub mod api_key;
pub mod callout;
pub mod config;
pub mod decision;
pub mod digest;
pub mod local_reply;
pub mod local_verdicts;
pub mod peer;
pub mod rate_limit;
pub mod scope;
pub mod store;
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

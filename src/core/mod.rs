//! The host-agnostic heart of the filter: plain Rust types in, a decision out. Nothing here
//! calls proxy-wasm; what the decision needs from Envoy it asks through the traits of
//! [`host`], which the adapter implements and [`host::fake`] plays in tests.
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
pub mod host;
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
pub mod telemetry;
pub mod time;
pub mod validation_reply;
pub mod verdict_cache;
pub mod xfcc;

#[cfg(test)]
pub(crate) mod test_certs;

/// A header a client may never send (contract section 4, step 1): `x-api-key-id` and every
/// `x-auth-*`, whatever follows the prefix. Only the filter's own verdict puts such headers
/// upstream. Envoy hands names over lowercased; the match ignores case all the same.
pub fn is_verdict_header(name: &[u8]) -> bool {
    const PREFIX: &[u8] = b"x-auth-";
    name.eq_ignore_ascii_case(b"x-api-key-id")
        || name
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

#[cfg(test)]
mod tests {
    use super::is_verdict_header;

    #[test]
    fn verdict_headers_are_x_api_key_id_and_every_x_auth_name() {
        for name in [
            "x-api-key-id",
            "x-auth-path",
            "x-auth-role",
            "x-auth-",
            "X-Auth-User",
            "X-API-KEY-ID",
        ] {
            assert!(is_verdict_header(name.as_bytes()), "{name}");
        }
        for name in [
            "x-authorization",
            "x-auth",
            "x-api-key",
            "authorization",
            "x-user-id",
            "x-api-key-idx",
        ] {
            assert!(!is_verdict_header(name.as_bytes()), "{name}");
        }
    }
}

//! The host-agnostic heart of the filter: plain Rust types in, a decision out. Nothing here
//! calls proxy-wasm; what the decision needs from Envoy it asks through the traits of
//! [`host`], which the adapter implements and [`host::fake`] plays in tests.
//!
//! The layers, each depending only on the ones listed before it:
//!
//! - **base**: [`config`] (the plugin configuration), [`host`] (the seam to Envoy),
//!   [`pairs`] (proxy-wasm's pairs format, for headers and jwt_authn's metadata alike) and
//!   [`text`] (what text from outside must look like before it is used).
//! - [`output`]: what leaves the filter and how it is spelled: local replies, identity
//!   headers, the access-log record, metric labels and counts, the JSON writer.
//! - [`identity`]: the trust boundary: the peer certificate and its allow-list match, the
//!   claims jwt_authn verified, certificate expiry, and the headers no client may send.
//! - [`verdict`]: what the auth service said about a credential, and where it is kept:
//!   shared-data cache, per-worker copies, rate counters, all keyed by the digest.
//! - [`request`]: what the request says: its facts, its credential, the scope it needs.
//! - [`auth_service`]: the validation callout, both halves: the call and its reply.
//! - [`policy`]: one request's decision. [`worker`]: one worker's requests and callouts.

pub mod auth_service;
pub mod config;
pub mod host;
pub mod identity;
pub mod output;
pub mod pairs;
pub mod policy;
pub mod request;
pub mod text;
pub mod verdict;
pub mod worker;

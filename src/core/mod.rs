//! The host-agnostic heart of the filter: plain Rust types in, a decision out. Nothing here
//! calls proxy-wasm; what the decision needs from Envoy it asks through the traits of
//! [`host`], which the adapter implements and [`host::fake`] plays in tests.
//!
//! The layers: each folder decides one thing and may use only the layers listed before it, so
//! no module imports another in a circle.
//!
//! - **base**, using nothing above it: [`config`] (the plugin configuration), [`host`] (the
//!   seam to Envoy, and its one fake), [`pairs`] (proxy-wasm's pairs format, for request
//!   headers and jwt_authn's payload alike), [`text`] (what outside text must look like).
//! - [`output`]: what leaves the filter and how it is spelled: local replies, identity
//!   headers, the access-log record, metric labels and counts, the one JSON writer. Uses
//!   nothing else in the core.
//! - [`identity`]: the trust boundary: the peer certificate and its allow-list match, the
//!   claims jwt_authn verified, certificate expiry, and the headers no client may send. Uses
//!   the base.
//! - [`verdict`]: what the auth service said about a credential and where it is kept (shared
//!   cache, per-worker copies, rate counters), keyed by its digest. Uses the base, `output`.
//! - [`request`]: what the request says: its facts, its credential, the access it needs.
//!   Uses the base, `output`, `identity` (the verdict-header rule), `verdict` (the digest).
//! - [`auth_service`]: the validation callout, both halves: the call and its reply. Uses the
//!   base, `output`, `verdict`, `request`.
//! - [`policy`]: one request's decision; [`worker`]: one worker's requests and callouts
//!   around it. They use everything above.

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

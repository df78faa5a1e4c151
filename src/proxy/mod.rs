//! The proxy-wasm adapter: reads facts from Envoy, asks [`crate::core`], applies the answer.
//!
//! It speaks the proxy-wasm ABI 0.2.1 itself, without the SDK crate: the SDK's hostcalls
//! panic on statuses they do not map, and its dispatcher keeps each callout's token until a
//! reply that Envoy never sends for a deleted stream (a leak, and a panic when the token is
//! issued again). The ABI the filter needs is a few dozen functions. Each module may use the
//! ones listed before it and the core's types; the core's state it reaches only through
//! [`crate::core::worker::Worker`]:
//!
//! - [`abi`]: the host functions imported, and the ABI's numbers;
//! - [`host`]: a total wrapper for each (every status a `Result`), and the core's host traits;
//! - [`logger`], [`metrics`]: what reaches Envoy's log and stats;
//! - [`registry`]: the root and stream contexts (data only);
//! - [`apply`]: applying a decision to its request (forward with identity headers, or reply);
//! - [`root`]: configuration and the tick; [`stream`]: one request;
//! - [`exports`]: the entry points Envoy calls, which borrow the registry.

mod abi;
mod apply;
mod exports;
mod host;
mod logger;
mod metrics;
mod registry;
mod root;
mod stream;

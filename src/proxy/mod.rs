//! The proxy-wasm adapter: reads facts from Envoy, asks [`crate::core`], applies the answer.
//!
//! It speaks the proxy-wasm ABI 0.2.1 itself, without the SDK crate: the SDK's hostcalls
//! panic on statuses they do not map, and its dispatcher keeps each callout's token until a
//! reply that Envoy never sends for a deleted stream (a leak, and a panic when the token is
//! issued again). The ABI the filter needs is a few dozen functions:
//!
//! - [`abi`]: the host functions imported, and the ABI's numbers;
//! - [`host`]: a total wrapper for each (every status a `Result`), and the core's host traits;
//! - [`exports`]: the entry points Envoy calls; [`registry`]: the root and stream contexts
//!   they share (data only, so nothing below `exports` depends on it);
//! - [`root`]: configuration and the tick; [`stream`]: one request; [`apply`]: applying a
//!   decision to its request (forward with identity headers, or reply);
//! - [`metrics`], [`logger`]: what reaches Envoy's stats and log.

mod abi;
mod apply;
mod exports;
mod host;
mod logger;
mod metrics;
mod registry;
mod root;
mod stream;

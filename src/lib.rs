//! hokusai-auth-filter: an Envoy proxy-wasm HTTP filter that guards an MLflow tracking server.
//!
//! - [`core`] holds every decision as plain Rust (request facts in, a decision out), with no
//!   proxy-wasm calls, so it is unit-tested natively.
//! - `proxy` (wasm32 only) is the thin adapter that reads facts from Envoy, calls the core and
//!   applies its decision.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod proxy;

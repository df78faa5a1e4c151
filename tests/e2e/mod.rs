#![allow(dead_code)]
//! Support for the end-to-end suites (`tests/e2e_*.rs`): a real Envoy started from
//! `envoy/envoy.yaml` with the filter, the dev auth service and an echo upstream
//! in-process, and optionally a real MLflow server. Every process a test starts is
//! owned by a guard that kills its whole process group when dropped, panics included.
//!
//! Nothing here skips: when `.venv/bin/envoy`, the `.wasm` or `certs/` are missing the
//! test fails and says which `make` target provides them. The `.wasm` is looked for under
//! `$CARGO_TARGET_DIR` when that is set, like the Makefile writes it;
//! `HOKUSAI_E2E_WASM=<path>` runs the suite against any other build of the filter.
//!
//! Run one suite with `cargo test --release --test e2e_headers` (or all via `make test`).

pub mod admin;
pub mod clients;
pub mod ecs;
pub mod envoy;
pub mod mlflow;
pub mod paths;
pub mod pki;
pub mod procs;
pub mod raw_http;
pub mod session;
pub mod stack;

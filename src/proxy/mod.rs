//! The proxy-wasm adapter: reads facts from Envoy, asks [`crate::core`], applies the answer.
//! Host calls go through `hostcalls` with every `Result` handled, because the SDK's trait
//! helpers unwrap host errors and a panic would take the VM down for every later request.

mod host;
mod http;
mod metrics;
mod root;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<root::FilterRoot>::default() });
}}

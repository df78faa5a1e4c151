//! Small, panic-free wrappers over the host calls the filter needs, and the host traits of
//! [`crate::core`] implemented on them. Every `Result` is handled: the SDK's trait helpers
//! unwrap host errors, and a panic would take the VM down for every later request.

use crate::core::callout::ValidationCall;
use crate::core::decision::RequestHost;
use crate::core::flow::{CalloutHost, CalloutToken, DispatchRefused, StreamHost};
use crate::core::store::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};
use std::time::{Duration, UNIX_EPOCH};

/// Envoy's shared data (one store for every worker of this Envoy, per `vm_id`) and callouts
/// from whichever context is current.
pub struct Envoy;

impl SharedStore for Envoy {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Some((value, cas.unwrap_or(0))),
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Failed),
        }
    }
}

impl CalloutHost for Envoy {
    fn dispatch(
        &mut self,
        call: &ValidationCall,
        timeout_ms: u64,
    ) -> Result<CalloutToken, DispatchRefused> {
        let headers = call.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            Some(&call.body),
            Vec::new(),
            Duration::from_millis(timeout_ms),
        )
        .map_err(|status| {
            log::warn!("callout not dispatched: {status:?}");
            DispatchRefused
        })
    }
}

impl RequestHost for Envoy {
    fn peer_verified(&mut self) -> bool {
        property(&["connection", "mtls"]).is_some_and(|v| v.first() == Some(&1))
    }

    fn peer_certificate_digest(&mut self) -> Option<Vec<u8>> {
        property(&["connection", "sha256_peer_certificate_digest"])
    }

    fn verified_jwt_payload(&mut self, namespace: &str, payload_key: &str) -> Option<Vec<u8>> {
        property(&["metadata", "filter_metadata", namespace, payload_key])
    }
}

impl StreamHost for Envoy {
    fn source_address(&mut self) -> String {
        property(&["source", "address"])
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

/// Milliseconds since the epoch, from Envoy's clock.
pub fn now_ms() -> i64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

#[link(wasm_import_module = "env")]
extern "C" {
    // Declared as the SDK declares it; called directly so the pairs buffer is read in place
    // (core::header_map) instead of becoming two allocations per header.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The request headers in proxy-wasm's pairs format, in one host call; None if Envoy has
/// no request headers for this context.
pub fn request_headers_buffer() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated through the SDK's
    // proxy_on_memory_allocate (the global allocator), which we then own, exactly as the
    // SDK's own get_map_bytes does.
    unsafe {
        match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
            Status::Ok if data.is_null() || size == 0 => Some(Vec::new()),
            Status::Ok => Some(Vec::from_raw_parts(data, size, size)),
            _ => None,
        }
    }
}

pub fn set_request_header(name: &str, value: &str) -> Result<(), Status> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
}

pub fn remove_request_header(name: &[u8]) -> Result<(), Status> {
    let name = std::str::from_utf8(name).map_err(|_| Status::BadArgument)?;
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None)
}

pub fn call_response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
        .ok()
        .flatten()
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

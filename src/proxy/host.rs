//! Small, panic-free wrappers over the host calls the filter needs.

use crate::core::store::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};
use std::time::UNIX_EPOCH;

/// Envoy's shared data: one store for every worker of this Envoy (per `vm_id`).
pub struct HostStore;

impl SharedStore for HostStore {
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

/// Unix seconds from Envoy's clock.
pub fn now() -> i64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// The request headers, fetched in one host call: every host call crosses the VM boundary
/// (microseconds each under V8), so one bulk read beats a dozen single lookups.
pub struct RequestHeaders(Vec<(String, Vec<u8>)>);

impl RequestHeaders {
    pub fn read() -> Self {
        Self(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default())
    }

    /// First value of a header; Envoy hands names over lowercased.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

pub fn set_request_header(name: &str, value: Option<&str>) {
    if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value) {
        log::error!("could not set request header {name}: {status:?}");
    }
}

pub fn call_response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
        .ok()
        .flatten()
}

pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

pub fn property_string(path: &[&str]) -> Option<String> {
    property(path).and_then(|bytes| String::from_utf8(bytes).ok())
}

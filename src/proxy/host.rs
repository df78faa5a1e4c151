//! Total wrappers over the host functions the filter uses: every status Envoy can return
//! becomes a `Result`, every value it hands over becomes an owned `Vec`, and nothing here
//! can panic. Also the host traits of [`crate::core`], implemented on them.
//!
//! Values the host returns are written into memory it asked the VM for through
//! [`crate::proxy::exports::proxy_on_memory_allocate`] (the global allocator), so each is
//! taken back with `Vec::from_raw_parts` of exactly that size.

use super::abi::{self, Status};
use crate::core::host::{
    Callout, CalloutHost, CalloutToken, DispatchRefused, RequestHost, SharedStore, StoreError,
    StreamHost,
};
use crate::core::pairs::serialize;

/// Takes ownership of a value the host wrote: `None` for "nothing" (a null pointer).
///
/// SAFETY (for callers): `data` and `size` are what a host function that returned `Ok`
/// wrote, so `data` is null or a block of `size` bytes from our allocator.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    Some(Vec::from_raw_parts(data, size, size))
}

/// A host call that hands back bytes: `Ok(Some)` with them, `Ok(None)` when there are none
/// (NotFound, or an empty value), `Err` for any other status.
fn bytes(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    match Status::from_raw(call(&mut data, &mut size)) {
        // SAFETY: the host said Ok, so it wrote both (or left the null pointer).
        Status::Ok => Ok(unsafe { owned(data, size) }),
        Status::NotFound => Ok(None),
        status => Err(status),
    }
}

/// `path` segments joined as the ABI wants them (NUL-separated).
fn property_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.iter().map(|s| s.len() + 1).sum());
    for (i, segment) in path.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment.as_bytes());
    }
    out
}

pub fn log(level: u32, message: &str) -> Result<(), Status> {
    // SAFETY: a pointer and length of a live string.
    Status::check(unsafe { abi::proxy_log(level, message.as_ptr(), message.len()) })
}

pub fn log_level() -> Result<u32, Status> {
    let mut level = 0;
    // SAFETY: a pointer to a live u32.
    Status::check(unsafe { abi::proxy_get_log_level(&mut level) })?;
    Ok(level)
}

/// Milliseconds since the epoch, from Envoy's clock.
pub fn now_ms() -> Result<i64, Status> {
    let mut nanos = 0u64;
    // SAFETY: a pointer to a live u64.
    Status::check(unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok((nanos / 1_000_000) as i64)
}

pub fn set_tick_period_ms(period: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    Status::check(unsafe { abi::proxy_set_tick_period_milliseconds(period) })
}

/// Up to `max` bytes of a buffer (the plugin configuration, a callout's reply body).
pub fn buffer(kind: u32, max: usize) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: out-pointers to live locals.
    bytes(|data, size| unsafe { abi::proxy_get_buffer_bytes(kind, 0, max, data, size) })
}

/// The request headers in the pairs format, in one host call. A request always has
/// headers, so "not found" is an error here like any other.
pub fn request_header_pairs() -> Result<Vec<u8>, Status> {
    header_pairs(abi::REQUEST_HEADERS)
}

/// A callout reply's headers in the pairs format, in one host call (rather than one per
/// header asked for).
pub fn call_response_header_pairs() -> Result<Vec<u8>, Status> {
    header_pairs(abi::HTTP_CALL_RESPONSE_HEADERS)
}

fn header_pairs(map: u32) -> Result<Vec<u8>, Status> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: out-pointers to live locals.
    let code = unsafe { abi::proxy_get_header_map_pairs(map, &mut data, &mut size) };
    Status::check(code)?;
    // SAFETY: the host said Ok, so it wrote both (or left the null pointer).
    Ok(unsafe { owned(data, size) }.unwrap_or_default())
}

pub fn set_request_header(name: &str, value: &str) -> Result<(), Status> {
    // SAFETY: live strings.
    Status::check(unsafe {
        abi::proxy_replace_header_map_value(
            abi::REQUEST_HEADERS,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_request_header(name: &[u8]) -> Result<(), Status> {
    // SAFETY: a live slice.
    Status::check(unsafe {
        abi::proxy_remove_header_map_value(abi::REQUEST_HEADERS, name.as_ptr(), name.len())
    })
}

pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let path = property_path(path);
    // SAFETY: a live path and out-pointers to live locals.
    bytes(|data, size| unsafe { abi::proxy_get_property(path.as_ptr(), path.len(), data, size) })
}

pub fn set_property(name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: live slices.
    Status::check(unsafe {
        abi::proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub fn continue_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    Status::check(unsafe { abi::proxy_continue_stream(abi::STREAM_REQUEST) })
}

/// Resets the downstream request: the last resort when not even a local reply can be sent.
pub fn close_request() -> Result<(), Status> {
    // SAFETY: no pointers.
    Status::check(unsafe { abi::proxy_close_stream(abi::STREAM_REQUEST) })
}

pub fn send_local_response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Status> {
    let pairs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let headers = serialize(&pairs);
    // Envoy records the details in the access log; ours are fixed words.
    let details = b"hokusai_auth";
    // SAFETY: live slices.
    Status::check(unsafe {
        abi::proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub fn set_effective_context(context: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    Status::check(unsafe { abi::proxy_set_effective_context(context) })
}

pub fn define_metric(kind: u32, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: a live string and a pointer to a live u32.
    Status::check(unsafe { abi::proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, by: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    Status::check(unsafe { abi::proxy_increment_metric(id, by) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointers.
    Status::check(unsafe { abi::proxy_record_metric(id, value) })
}

/// Envoy, as the core's host traits see it: shared data (one store for every worker of
/// this Envoy, per `vm_id`), callouts from whichever context is current, and the facts of
/// the request being decided.
pub struct Envoy;

impl SharedStore for Envoy {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let mut cas = 0u32;
        // SAFETY: a live key and out-pointers to live locals.
        let value = bytes(|data, size| unsafe {
            abi::proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas)
        });
        match value {
            Ok(Some(value)) => Some((value, cas)),
            // An empty value that exists still has a version.
            Ok(None) if cas != 0 => Some((Vec::new(), cas)),
            // Missing, or unreadable: the core treats both as "not there".
            _ => None,
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        // SAFETY: live slices.
        let code = unsafe {
            abi::proxy_set_shared_data(
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas.unwrap_or(0),
            )
        };
        match Status::from_raw(code) {
            Status::Ok => Ok(()),
            Status::CasMismatch => Err(StoreError::CasMismatch),
            _ => Err(StoreError::Failed),
        }
    }
}

impl CalloutHost for Envoy {
    fn dispatch(
        &mut self,
        call: &Callout,
        timeout_ms: u64,
    ) -> Result<CalloutToken, DispatchRefused> {
        let pairs: Vec<(&[u8], &[u8])> = call
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let headers = serialize(&pairs);
        let trailers = serialize(&[]);
        let mut token = 0u32;
        let timeout = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
        // SAFETY: live slices and a pointer to a live u32.
        let code = unsafe {
            abi::proxy_http_call(
                call.cluster.as_ptr(),
                call.cluster.len(),
                headers.as_ptr(),
                headers.len(),
                call.body.as_ptr(),
                call.body.len(),
                trailers.as_ptr(),
                trailers.len(),
                timeout,
                &mut token,
            )
        };
        Status::check(code).map(|()| token).map_err(|status| {
            log::warn!("callout not dispatched: {status:?}");
            DispatchRefused
        })
    }
}

impl RequestHost for Envoy {
    fn peer_verified(&mut self) -> bool {
        matches!(property(&["connection", "mtls"]), Ok(Some(v)) if v.first() == Some(&1))
    }

    fn peer_certificate_digest(&mut self) -> Option<Vec<u8>> {
        property(&["connection", "sha256_peer_certificate_digest"])
            .ok()
            .flatten()
    }

    fn verified_jwt(
        &mut self,
        namespace: &str,
        payload_key: &str,
        below: &[&str],
    ) -> Option<Vec<u8>> {
        let mut path = vec!["metadata", "filter_metadata", namespace, payload_key];
        path.extend_from_slice(below);
        property(&path).ok().flatten()
    }
}

impl StreamHost for Envoy {
    fn source_address(&mut self) -> String {
        property(&["source", "address"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    }
}

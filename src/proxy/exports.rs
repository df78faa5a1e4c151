//! The ABI entry points Envoy calls. Each borrows the context registry ([`super::registry`]) and
//! hands it to [`root`] or [`stream`]. A stream's entry goes when Envoy deletes its context,
//! and with it everything the worker kept for it, callouts included: Envoy cancels a deleted
//! stream's callouts without a callback, so nothing may wait for one.

use super::abi;
use super::apply;
use super::logger;
use super::registry::{with, Root, Stream};
use super::root;
use super::stream;

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// WASI reactor start: constructors, then the logger.
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: called once, by the host, before anything else in the module.
    unsafe {
        __wasm_call_ctors();
    }
    logger::install();
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for a value the host hands over; `host` takes it back with `Vec::from_raw_parts`.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut block = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(size));
    block.as_mut_ptr()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context: u32, parent: u32) {
    with(
        || (),
        |c| {
            if parent == 0 {
                c.roots.insert(context, Root::default());
            } else {
                c.streams.insert(context, Stream::new(parent));
            }
        },
    );
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root: u32, configuration_size: usize) -> u32 {
    with(
        || 0,
        |c| u32::from(root::configure(c, root, configuration_size)),
    )
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root: u32) {
    with(|| (), |c| root::tick(c, root));
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context: u32, _headers: usize, _end: u32) -> u32 {
    with(apply::refuse_unverdicted, |c| {
        stream::on_request_headers(c, context)
    })
}

/// Envoy holds the body while headers are paused, but never rely on that: a body or trailers
/// callback answered Continue would let a request through before its verdict.
#[no_mangle]
pub extern "C" fn proxy_on_request_body(context: u32, _size: usize, _end: u32) -> u32 {
    with(
        || abi::ACTION_PAUSE,
        |c| stream::hold_while_waiting(c, context),
    )
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(context: u32, _trailers: usize) -> u32 {
    with(
        || abi::ACTION_PAUSE,
        |c| stream::hold_while_waiting(c, context),
    )
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context: u32,
    token: u32,
    headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    with(
        || (),
        |c| stream::on_callout_reply(c, context, token, headers, body_size),
    );
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context: u32) {
    with(
        || (),
        |c| {
            if let Some(gone) = c.streams.remove(&context) {
                stream::gone(c, context, gone);
            } else {
                c.roots.remove(&context);
            }
        },
    );
}

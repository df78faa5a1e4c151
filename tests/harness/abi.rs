//! The proxy-wasm 0.2.1 host functions (module "env"), modelled on what Envoy
//! 1.40 (source/extensions/common/wasm/context.cc on proxy-wasm-cpp-host) returns,
//! including its error statuses: the SDK panics on most unexpected ones, so a
//! status Envoy would return is a crash the tests must be able to see.

use std::collections::HashSet;
use std::sync::Arc;

use wasmtime::{Engine, ExternType, InstancePre, Linker, Module, Result, WasmRet, WasmTy};

use super::memory::{give, read, write_u32, write_u64, Ctx};
use super::model::{Callout, LogLevel};
use super::state::{Delivery, LocalReply, MetricKind, MetricValue, Status, VmState};
use super::wasi;
use super::wire::{decode_pairs, decode_property_path, HeaderMap};

const ENV: &str = "env";

/// A linker that remembers which imports it can satisfy, so every other import
/// can be linked to a loud trap instead of failing instantiation.
pub struct Registry {
    linker: Linker<VmState>,
    provided: HashSet<(String, String)>,
}

impl Registry {
    pub fn func<Args, R>(&mut self, module: &str, name: &str, func: impl HostFn<Args, R>) {
        func.define(&mut self.linker, module, name)
            .unwrap_or_else(|e| panic!("cannot define host function {module}.{name}: {e}"));
        self.provided.insert((module.to_string(), name.to_string()));
    }
}

/// A host function of any arity the linker takes (`fn(Ctx, A, B, ...) -> R`). It is
/// defined behind a wrapper that counts its calls by import name, so a test or the
/// cost model can see which host calls a request made (`Vm::host_calls`), and that answers
/// with a status a test injected instead of running it (`Host::inject_status`).
pub trait HostFn<Args, R> {
    fn define(self, linker: &mut Linker<VmState>, module: &str, name: &str) -> Result<()>;
}

macro_rules! host_fn {
    ($($arg:ident: $ty:ident),*) => {
        impl<Func, $($ty,)* R> HostFn<($($ty,)*), R> for Func
        where
            Func: Fn(Ctx<'_>, $($ty),*) -> R + Send + Sync + 'static,
            $($ty: WasmTy,)*
            R: HostReturn,
            Result<R::Value>: WasmRet,
        {
            fn define(self, linker: &mut Linker<VmState>, module: &str, name: &str) -> Result<()> {
                let counted: Arc<str> = Arc::from(name);
                let restricted = module == ENV;
                linker.func_wrap(module, name, move |mut c: Ctx<'_>, $($arg: $ty),*| -> Result<R::Value> {
                    c.data_mut().count_host_call(&counted);
                    // Envoy allows no proxy-wasm host call while the module initialises.
                    if restricted && c.data().initializing {
                        return Err(wasmtime::format_err!("restricted_callback"));
                    }
                    match c.data().take_injected(&counted) {
                        Some(super::state::PASS_THROUGH) | None => {}
                        Some(status) => return R::from_status(status),
                    }
                    self(c, $($arg),*).into_result()
                })?;
                Ok(())
            }
        }
    };
}

/// What a host function returns, as the wrapper hands it to wasmtime: its value, a status
/// a test injected instead, or a trap.
pub trait HostReturn {
    type Value;
    fn into_result(self) -> Result<Self::Value>;
    fn from_status(status: i32) -> Result<Self::Value>;
}

impl HostReturn for i32 {
    type Value = i32;

    fn into_result(self) -> Result<i32> {
        Ok(self)
    }

    fn from_status(status: i32) -> Result<i32> {
        Ok(status)
    }
}

impl HostReturn for Result<i32> {
    type Value = i32;

    fn into_result(self) -> Result<i32> {
        self
    }

    fn from_status(status: i32) -> Result<i32> {
        Ok(status)
    }
}

/// `proc_exit` returns nothing: an injected status makes it return at once.
impl HostReturn for Result<()> {
    type Value = ();

    fn into_result(self) -> Result<()> {
        self
    }

    fn from_status(_: i32) -> Result<()> {
        Ok(())
    }
}

host_fn!();
host_fn!(a1: A1);
host_fn!(a1: A1, a2: A2);
host_fn!(a1: A1, a2: A2, a3: A3);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7, a8: A8);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7, a8: A8, a9: A9);
host_fn!(a1: A1, a2: A2, a3: A3, a4: A4, a5: A5, a6: A6, a7: A7, a8: A8, a9: A9, a10: A10);

/// Links every import of `module`: ours where we have them, a trap reading
/// "unimplemented host call <name>" for the rest. Returns the names stubbed.
pub fn instance_pre(
    engine: &Engine,
    module: &Module,
) -> std::result::Result<(InstancePre<VmState>, Vec<String>), String> {
    let mut r = Registry {
        linker: Linker::new(engine),
        provided: HashSet::new(),
    };
    register(&mut r);
    wasi::register(&mut r);
    let mut stubbed = Vec::new();
    for import in module.imports() {
        let key = (import.module().to_string(), import.name().to_string());
        if r.provided.contains(&key) {
            continue;
        }
        if let ExternType::Func(ty) = import.ty() {
            let name = key.1.clone();
            let message = format!("unimplemented host call {name}");
            r.linker
                .func_new(&key.0, &key.1, ty, move |_, _, _| {
                    Err(wasmtime::format_err!("{message}"))
                })
                .map_err(|e| format!("cannot stub {}.{}: {e}", key.0, key.1))?;
            stubbed.push(name);
        }
    }
    let pre = r
        .linker
        .instantiate_pre(module)
        .map_err(|e| format!("cannot link the module: {e:#}"))?;
    Ok((pre, stubbed))
}

fn register(r: &mut Registry) {
    r.func(ENV, "proxy_log", proxy_log);
    r.func(ENV, "proxy_get_log_level", proxy_get_log_level);
    r.func(ENV, "proxy_get_current_time_nanoseconds", get_time);
    r.func(ENV, "proxy_set_tick_period_milliseconds", set_tick_period);
    r.func(ENV, "proxy_get_buffer_bytes", get_buffer_bytes);
    r.func(ENV, "proxy_get_header_map_pairs", get_header_map_pairs);
    r.func(ENV, "proxy_set_header_map_pairs", set_header_map_pairs);
    r.func(ENV, "proxy_get_header_map_value", get_header_map_value);
    r.func(
        ENV,
        "proxy_replace_header_map_value",
        replace_header_map_value,
    );
    r.func(ENV, "proxy_add_header_map_value", add_header_map_value);
    r.func(
        ENV,
        "proxy_remove_header_map_value",
        remove_header_map_value,
    );
    r.func(ENV, "proxy_get_property", get_property);
    r.func(ENV, "proxy_set_property", set_property);
    r.func(ENV, "proxy_get_shared_data", get_shared_data);
    r.func(ENV, "proxy_set_shared_data", set_shared_data);
    r.func(ENV, "proxy_continue_stream", |mut c: Ctx<'_>, ty: i32| {
        continue_stream(&mut c, ty)
    });
    // ABI 0.1 spelling of continue_stream(Request).
    r.func(ENV, "proxy_continue_request", |mut c: Ctx<'_>| {
        continue_stream(&mut c, 0)
    });
    r.func(ENV, "proxy_close_stream", close_stream);
    r.func(ENV, "proxy_send_local_response", send_local_response);
    r.func(ENV, "proxy_http_call", http_call);
    r.func(ENV, "proxy_set_effective_context", set_effective_context);
    r.func(ENV, "proxy_done", |mut c: Ctx<'_>| {
        c.data_mut().done_calls += 1;
        Status::Ok as i32
    });
    r.func(ENV, "proxy_define_metric", define_metric);
    r.func(ENV, "proxy_increment_metric", increment_metric);
    r.func(ENV, "proxy_record_metric", record_metric);
    r.func(ENV, "proxy_get_metric", get_metric);
    r.func(ENV, "proxy_get_status", get_status);
}

fn ok(status: Status) -> Result<i32> {
    Ok(status as i32)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------- logging, time

fn proxy_log(mut c: Ctx<'_>, level: i32, ptr: i32, len: i32) -> i32 {
    let Some(level) = LogLevel::from_abi(level as u32) else {
        return Status::BadArgument as i32;
    };
    let Some(message) = read(&mut c, ptr, len) else {
        return Status::InvalidMemoryAccess as i32;
    };
    c.data_mut().log(level, text(&message));
    Status::Ok as i32
}

fn proxy_get_log_level(mut c: Ctx<'_>, out: i32) -> i32 {
    let level = c.data().host().log_level as u32;
    if write_u32(&mut c, out, level) {
        Status::Ok as i32
    } else {
        Status::InvalidMemoryAccess as i32
    }
}

fn get_time(mut c: Ctx<'_>, out: i32) -> i32 {
    let now = c.data().host().now_nanos;
    if write_u64(&mut c, out, now) {
        Status::Ok as i32
    } else {
        Status::InvalidMemoryAccess as i32
    }
}

fn set_tick_period(mut c: Ctx<'_>, period_ms: i32) -> i32 {
    c.data_mut().tick_period_ms = Some(period_ms as u32);
    Status::Ok as i32
}

// ---------------------------------------------------------------- buffers

fn get_buffer_bytes(
    mut c: Ctx<'_>,
    ty: i32,
    start: i32,
    max_size: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    let st = c.data();
    let buffer = match ty {
        // The callout body exists only while its response is being delivered.
        4 => match &st.delivering {
            Some(Delivery::Response { body, .. }) => Some(body.clone()),
            _ => None,
        },
        6 => Some(st.vm_config.clone()),
        // Envoy hands out the plugin configuration only during on_configure.
        7 => st.configuring.then(|| st.plugin_config.clone()),
        // Bodies and other buffers: this filter never buffers, so always empty.
        0..=3 | 5 | 8 => Some(Vec::new()),
        _ => return ok(Status::BadArgument),
    };
    let Some(buffer) = buffer else {
        return ok(Status::NotFound);
    };
    let (start, max_size) = (start as u32 as usize, max_size as u32 as usize);
    if start > buffer.len() {
        return ok(Status::BadArgument);
    }
    let len = max_size.min(buffer.len() - start);
    if len == 0 {
        // Envoy writes nothing; the SDK then sees a null pointer and returns None.
        return ok(Status::Ok);
    }
    give(&mut c, &buffer[start..start + len], ptr_ptr, size_ptr).map(|s| s as i32)
}

// ---------------------------------------------------------------- header maps

/// The map a read sees. `Ok(None)`: the map does not exist right now (Envoy has
/// no pointer to it), which reads as an empty list of pairs but makes a
/// single-value lookup fail with BadArgument.
fn map_for_read(st: &VmState, ty: i32) -> std::result::Result<Option<HeaderMap>, Status> {
    let stream = st.stream();
    Ok(match ty {
        0 => stream
            .filter(|s| s.request_live || st.access_log_phase)
            .map(|s| s.request_headers.clone()),
        2 => stream
            .filter(|s| s.response_live || st.access_log_phase)
            .and_then(|s| s.response_headers.clone()),
        1 | 3 | 4 | 5 => None,
        6 => match &st.delivering {
            Some(Delivery::Response { headers, .. }) => Some(headers.clone()),
            _ => None,
        },
        7 => match &st.delivering {
            Some(Delivery::Response { trailers, .. }) if !trailers.is_empty() => {
                Some(trailers.clone())
            }
            _ => None,
        },
        _ => return Err(Status::BadArgument),
    })
}

/// Applies a mutation to a map that is writable right now, else BadArgument.
fn with_map(st: &mut VmState, ty: i32, edit: impl FnOnce(&mut HeaderMap)) -> i32 {
    let map = match ty {
        0 => st
            .stream_mut()
            .filter(|s| s.request_live)
            .map(|s| &mut s.request_headers),
        2 => st
            .stream_mut()
            .filter(|s| s.response_live)
            .and_then(|s| s.response_headers.as_mut()),
        _ => None,
    };
    match map {
        Some(map) => {
            edit(map);
            Status::Ok as i32
        }
        None => Status::BadArgument as i32,
    }
}

fn get_header_map_pairs(mut c: Ctx<'_>, ty: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
    let map = match map_for_read(c.data(), ty) {
        Ok(map) => map.unwrap_or_default(),
        Err(status) => return ok(status),
    };
    let bytes = if map.is_empty() {
        Vec::new()
    } else {
        map.encode()
    };
    give(&mut c, &bytes, ptr_ptr, size_ptr).map(|s| s as i32)
}

fn set_header_map_pairs(mut c: Ctx<'_>, ty: i32, ptr: i32, size: i32) -> i32 {
    let Some(bytes) = read(&mut c, ptr, size) else {
        return Status::InvalidMemoryAccess as i32;
    };
    let pairs = decode_pairs(&bytes).unwrap_or_default();
    with_map(c.data_mut(), ty, |map| {
        *map = HeaderMap::new();
        for (name, value) in &pairs {
            map.add(&text(name), value);
        }
    })
}

fn get_header_map_value(
    mut c: Ctx<'_>,
    ty: i32,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    let Some(key) = read(&mut c, key_ptr, key_len) else {
        return ok(Status::InvalidMemoryAccess);
    };
    let value = match map_for_read(c.data(), ty) {
        Err(status) => return ok(status),
        Ok(None) if c.data().access_log_phase => return ok(Status::NotFound),
        Ok(None) => return ok(Status::BadArgument),
        Ok(Some(map)) => map.get(&text(&key)).map(<[u8]>::to_vec),
    };
    match value {
        Some(value) => give(&mut c, &value, ptr_ptr, size_ptr).map(|s| s as i32),
        None => ok(Status::NotFound),
    }
}

fn replace_header_map_value(
    mut c: Ctx<'_>,
    ty: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> i32 {
    let (Some(key), Some(value)) = (
        read(&mut c, key_ptr, key_len),
        read(&mut c, value_ptr, value_len),
    ) else {
        return Status::InvalidMemoryAccess as i32;
    };
    with_map(c.data_mut(), ty, |map| map.replace(&text(&key), &value))
}

fn add_header_map_value(
    mut c: Ctx<'_>,
    ty: i32,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> i32 {
    let (Some(key), Some(value)) = (
        read(&mut c, key_ptr, key_len),
        read(&mut c, value_ptr, value_len),
    ) else {
        return Status::InvalidMemoryAccess as i32;
    };
    with_map(c.data_mut(), ty, |map| map.add(&text(&key), &value))
}

fn remove_header_map_value(mut c: Ctx<'_>, ty: i32, key_ptr: i32, key_len: i32) -> i32 {
    let Some(key) = read(&mut c, key_ptr, key_len) else {
        return Status::InvalidMemoryAccess as i32;
    };
    with_map(c.data_mut(), ty, |map| map.remove(&text(&key)))
}

// ---------------------------------------------------------------- properties

fn get_property(
    mut c: Ctx<'_>,
    path_ptr: i32,
    path_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<i32> {
    let Some(path) = read(&mut c, path_ptr, path_len) else {
        return ok(Status::InvalidMemoryAccess);
    };
    let segments = decode_property_path(&path);
    c.data_mut().count_property_read(&segments);
    match c.data().property(&segments) {
        // An empty value comes back as (0, 0): the SDK returns None for it.
        Some(value) => give(&mut c, &value, ptr_ptr, size_ptr).map(|s| s as i32),
        None => ok(Status::NotFound),
    }
}

fn set_property(
    mut c: Ctx<'_>,
    path_ptr: i32,
    path_len: i32,
    value_ptr: i32,
    value_len: i32,
) -> i32 {
    let (Some(path), Some(value)) = (
        read(&mut c, path_ptr, path_len),
        read(&mut c, value_ptr, value_len),
    ) else {
        return Status::InvalidMemoryAccess as i32;
    };
    match c.data_mut().stream_mut() {
        Some(stream) => {
            stream.filter_state.insert(path, value);
            Status::Ok as i32
        }
        // The root context has no stream info to hold filter state.
        None => Status::NotFound as i32,
    }
}

// ---------------------------------------------------------------- shared data

fn get_shared_data(
    mut c: Ctx<'_>,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
    cas_ptr: i32,
) -> Result<i32> {
    let Some(key) = read(&mut c, key_ptr, key_len) else {
        return ok(Status::InvalidMemoryAccess);
    };
    let entry = {
        let mut host = c.data().host();
        let entry = host.shared.get(&key);
        // Another worker acts between this read and whatever the VM writes next.
        host.interleave_after_read(&key);
        entry
    };
    let Some((value, cas)) = entry else {
        return ok(Status::NotFound);
    };
    let status = give(&mut c, &value, ptr_ptr, size_ptr)?;
    if status != Status::Ok {
        return ok(status);
    }
    if write_u32(&mut c, cas_ptr, cas) {
        ok(Status::Ok)
    } else {
        ok(Status::InvalidMemoryAccess)
    }
}

fn set_shared_data(
    mut c: Ctx<'_>,
    key_ptr: i32,
    key_len: i32,
    value_ptr: i32,
    value_len: i32,
    cas: i32,
) -> i32 {
    let (Some(key), Some(value)) = (
        read(&mut c, key_ptr, key_len),
        read(&mut c, value_ptr, value_len),
    ) else {
        return Status::InvalidMemoryAccess as i32;
    };
    let result = c.data().host().shared.set(&key, &value, cas as u32);
    match result {
        Ok(()) => Status::Ok as i32,
        Err(_) => Status::CasMismatch as i32,
    }
}

// ---------------------------------------------------------------- stream control

/// Envoy defers the actual continue until the VM call returns, but drops its
/// request-header pointer at once: headers set after resuming are refused.
fn continue_stream(c: &mut Ctx<'_>, ty: i32) -> i32 {
    match ty {
        0 | 1 => {
            if let Some(stream) = c.data_mut().stream_mut() {
                if ty == 0
                    && stream.request_live
                    && stream.outcome.is_none()
                    && stream.resumed.is_none()
                {
                    stream.resumed = Some(stream.request_headers.clone());
                }
                stream.request_live = false;
            }
            Status::Ok as i32
        }
        2 => Status::Ok as i32,
        3 => Status::Unimplemented as i32,
        _ => Status::BadArgument as i32,
    }
}

fn close_stream(mut c: Ctx<'_>, ty: i32) -> i32 {
    match ty {
        0 | 1 => {
            if let Some(stream) = c.data_mut().stream_mut() {
                stream.reset = true;
            }
            Status::Ok as i32
        }
        2 | 3 => Status::Ok as i32,
        _ => Status::BadArgument as i32,
    }
}

#[allow(clippy::too_many_arguments)]
fn send_local_response(
    mut c: Ctx<'_>,
    status: i32,
    details_ptr: i32,
    details_len: i32,
    body_ptr: i32,
    body_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    _grpc_status: i32,
) -> i32 {
    let (Some(details), Some(body), Some(headers)) = (
        read(&mut c, details_ptr, details_len),
        read(&mut c, body_ptr, body_len),
        read(&mut c, headers_ptr, headers_len),
    ) else {
        return Status::InvalidMemoryAccess as i32;
    };
    let headers = decode_pairs(&headers)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (text(&n).to_ascii_lowercase(), v))
        .collect();
    // Envoy records details with whitespace replaced by '_'.
    let details: String = text(&details)
        .chars()
        .map(|ch| if ch.is_whitespace() { '_' } else { ch })
        .collect();
    let st = c.data_mut();
    let Some(stream) = st.stream_mut() else {
        // No stream behind the root context: Envoy does nothing, still Ok.
        return Status::Ok as i32;
    };
    if stream.local_reply.is_some() || stream.outcome.is_some() {
        st.log(
            LogLevel::Warn,
            "[harness] a second local reply on the same stream was ignored".into(),
        );
        return Status::Ok as i32;
    }
    stream.local_reply = Some(LocalReply {
        status: status as u32,
        details,
        body,
        headers,
    });
    Status::Ok as i32
}

#[allow(clippy::too_many_arguments)]
fn http_call(
    mut c: Ctx<'_>,
    upstream_ptr: i32,
    upstream_len: i32,
    headers_ptr: i32,
    headers_len: i32,
    body_ptr: i32,
    body_len: i32,
    trailers_ptr: i32,
    trailers_len: i32,
    timeout_ms: i32,
    token_ptr: i32,
) -> i32 {
    let (Some(upstream), Some(headers), Some(body), Some(trailers)) = (
        read(&mut c, upstream_ptr, upstream_len),
        read(&mut c, headers_ptr, headers_len),
        read(&mut c, body_ptr, body_len),
        read(&mut c, trailers_ptr, trailers_len),
    ) else {
        return Status::InvalidMemoryAccess as i32;
    };
    // Like Envoy, prove the token slot is writable before starting anything.
    if !write_u32(&mut c, token_ptr, 0) {
        return Status::InvalidMemoryAccess as i32;
    }
    let upstream = text(&upstream);
    let to_map = |bytes: &[u8]| {
        let mut map = HeaderMap::new();
        for (name, value) in decode_pairs(bytes).unwrap_or_default() {
            map.add(&text(&name), &value);
        }
        map
    };
    let mut headers = to_map(&headers);
    let trailers = to_map(&trailers);
    let (known_cluster, fail_dispatch) = {
        let host = c.data().host();
        (host.clusters.contains(&upstream), host.fail_dispatch)
    };
    if timeout_ms < 0 || !known_cluster {
        return Status::BadArgument as i32;
    }
    if [":path", ":method", ":authority"]
        .iter()
        .any(|h| headers.get(h).is_none())
    {
        return Status::BadArgument as i32;
    }
    if fail_dispatch {
        // Envoy: the async client could not start the request.
        return Status::InternalFailure as i32;
    }
    if !body.is_empty() {
        headers.replace("content-length", body.len().to_string().as_bytes());
    }
    let dispatched_at_nanos = c.data().host().now_nanos;
    let st = c.data_mut();
    // Envoy numbers HTTP calls in steps of 4 (the low bits tag the call type).
    // Wrapping, as Envoy's counter does after 2^32 calls (a test may start it near the end).
    st.next_token = st.next_token.wrapping_add(4);
    let callout = Callout {
        token: st.next_token,
        context_id: st.root_id,
        made_by: st.current(),
        upstream,
        headers: headers.entries().to_vec(),
        body,
        trailers: trailers.entries().to_vec(),
        timeout_ms: timeout_ms as u32,
        dispatched_at_nanos,
    };
    let token = callout.token;
    st.callout_history.push(callout.clone());
    st.pending_callouts.push(callout);
    if write_u32(&mut c, token_ptr, token) {
        Status::Ok as i32
    } else {
        Status::InvalidMemoryAccess as i32
    }
}

fn set_effective_context(mut c: Ctx<'_>, id: i32) -> i32 {
    let st = c.data_mut();
    if st.context_exists(id as u32) {
        st.effective = Some(id as u32);
        Status::Ok as i32
    } else {
        Status::BadArgument as i32
    }
}

fn get_status(mut c: Ctx<'_>, code_ptr: i32, ptr_ptr: i32, size_ptr: i32) -> Result<i32> {
    let (code, message) = c.data().call_status.clone();
    if !write_u32(&mut c, code_ptr, code) {
        return ok(Status::InvalidMemoryAccess);
    }
    give(&mut c, message.as_bytes(), ptr_ptr, size_ptr).map(|s| s as i32)
}

// ---------------------------------------------------------------- metrics

fn metric_kind(id: u32) -> Option<MetricKind> {
    match id & 3 {
        0 => Some(MetricKind::Counter),
        1 => Some(MetricKind::Gauge),
        2 => Some(MetricKind::Histogram),
        _ => None,
    }
}

fn define_metric(mut c: Ctx<'_>, ty: i32, name_ptr: i32, name_len: i32, id_ptr: i32) -> i32 {
    let kind = match ty {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        2 => MetricKind::Histogram,
        _ => return Status::BadArgument as i32,
    };
    let Some(name) = read(&mut c, name_ptr, name_len) else {
        return Status::InvalidMemoryAccess as i32;
    };
    let name = text(&name);
    let st = c.data_mut();
    // Envoy: ids step by 4 per type, the low two bits carry the type.
    st.next_metric_seq += 1;
    let id = st.next_metric_seq * 4 + kind as u32;
    st.metric_ids.insert(id, (kind, name.clone()));
    st.host().metrics.entry(name).or_insert(match kind {
        MetricKind::Counter => MetricValue::Counter(0),
        MetricKind::Gauge => MetricValue::Gauge(0),
        MetricKind::Histogram => MetricValue::Histogram(Vec::new()),
    });
    if write_u32(&mut c, id_ptr, id) {
        Status::Ok as i32
    } else {
        Status::InvalidMemoryAccess as i32
    }
}

/// Runs `edit` on the metric behind `id`, or NotFound when this VM never defined it.
fn with_metric(st: &VmState, id: i32, edit: impl FnOnce(&mut MetricValue) -> Status) -> i32 {
    let Some((_, name)) = st.metric_ids.get(&(id as u32)) else {
        return Status::NotFound as i32;
    };
    let mut host = st.host();
    match host.metrics.get_mut(name) {
        Some(value) => edit(value) as i32,
        None => Status::NotFound as i32,
    }
}

fn increment_metric(c: Ctx<'_>, id: i32, offset: i64) -> i32 {
    match metric_kind(id as u32) {
        Some(MetricKind::Histogram) | None => return Status::BadArgument as i32,
        _ => {}
    }
    with_metric(c.data(), id, |value| match value {
        // Envoy refuses a counter increment that is not positive.
        MetricValue::Counter(_) if offset <= 0 => Status::BadArgument,
        MetricValue::Counter(v) => {
            *v = v.saturating_add(offset as u64);
            Status::Ok
        }
        MetricValue::Gauge(v) => {
            *v = v.saturating_add_signed(offset);
            Status::Ok
        }
        MetricValue::Histogram(_) => Status::BadArgument,
    })
}

fn record_metric(c: Ctx<'_>, id: i32, value: i64) -> i32 {
    let value = value as u64;
    with_metric(c.data(), id, |metric| {
        match metric {
            MetricValue::Counter(v) => *v = v.saturating_add(value),
            MetricValue::Gauge(v) => *v = value,
            MetricValue::Histogram(values) => values.push(value),
        }
        Status::Ok
    })
}

fn get_metric(mut c: Ctx<'_>, id: i32, out: i32) -> i32 {
    if metric_kind(id as u32) == Some(MetricKind::Histogram) {
        return Status::BadArgument as i32;
    }
    let mut current = None;
    let status = with_metric(c.data(), id, |metric| match metric {
        MetricValue::Counter(v) | MetricValue::Gauge(v) => {
            current = Some(*v);
            Status::Ok
        }
        MetricValue::Histogram(_) => Status::BadArgument,
    });
    match current {
        Some(v) if write_u64(&mut c, out, v) => Status::Ok as i32,
        Some(_) => Status::InvalidMemoryAccess as i32,
        None => status,
    }
}

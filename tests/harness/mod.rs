//! A proxy-wasm host (ABI 0.2.1) on wasmtime that plays Envoy 1.40's part for the
//! release artifact, so integration tests drive the real filter:
//!
//! ```ignore
//! let host = Host::new();
//! let mut vm = host.vm(r#"{"auth_cluster":"auth_service"}"#).expect("config accepted");
//! let id = vm.send(Request::get("/api/2.0/mlflow/experiments/get").bearer("hk_test_1"));
//! let callout = vm.callouts().remove(0);
//! vm.answer(callout.token, CalloutReply::json(200, r#"{"valid":true}"#));
//! vm.outcome(id).assert_forwarded();
//! ```
//!
//! Public test frameworks for proxy-wasm cannot load wasip1 modules; this one links
//! the proxy-wasm host functions (abi.rs) and the WASI subset Envoy offers
//! (wasi.rs) by hand. Any other import traps with "unimplemented host call <name>".
//! Statuses, map lifetimes and callback order follow Envoy, not the ABI spec,
//! wherever the two differ: the point is to catch what would crash in production.

// Every tests/*.rs that says `mod harness;` compiles its own copy and uses only
// part of it: unused helpers and re-exports are expected, not mistakes.
#![allow(dead_code, unused_imports)]

mod abi;
mod memory;
mod model;
pub mod pki;
pub mod shared_data;
mod state;
mod wasi;
pub mod wire;

pub use model::{
    Callout, CalloutReply, LogLevel, LogLine, Outcome, Request, StreamId, DEFAULT_AUTHORITY,
    DEFAULT_SOURCE_ADDRESS, ENVOY_REFUSED_BODY, ENVOY_RESET_BODY, ENVOY_TIMEOUT_BODY,
};
pub use pki::PeerCert;
pub use wire::Header;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Config, Engine, Instance, InstancePre, Module, Store, WasmParams, WasmResults};

pub use state::InterloperAction;
use state::{lock, Delivery, HostState, LocalReply, MetricValue, Stream, VmState};
use wire::HeaderMap;

/// The artifact `make build` produces: under `$CARGO_TARGET_DIR` when that is set and not
/// empty (relative to the repo root, as in the Makefile), else under `target/`. Read at
/// run time, not compile time: cargo passes its environment on to the test binaries.
/// `HOKUSAI_HARNESS_WASM` names another build of the filter instead (as
/// `HOKUSAI_E2E_WASM` does for the end-to-end suite).
pub fn artifact_path() -> PathBuf {
    if let Some(path) = std::env::var_os("HOKUSAI_HARNESS_WASM").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    target.join("wasm32-wasip1/release/hokusai_auth_filter.wasm")
}

/// The engine for ordinary Hosts, and one whose code counts fuel (about one unit per wasm
/// instruction executed) for the cost model: fuel is compiled into the code, so metered
/// modules are compiled separately and ordinary tests run exactly as before.
fn engine(metered: bool) -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    static METERED: OnceLock<Engine> = OnceLock::new();
    if !metered {
        return ENGINE.get_or_init(Engine::default);
    }
    METERED.get_or_init(|| {
        let mut config = Config::new();
        config.consume_fuel(true);
        Engine::new(&config).expect("a fuel-metered wasmtime engine")
    })
}

/// Fuel a metered Vm starts with: never runs out in a test or benchmark.
const FUEL: u64 = 1 << 60;

/// A compiled and linked module; compiling takes seconds, so once per process.
struct Compiled {
    pre: InstancePre<VmState>,
    stubbed: Vec<String>,
    metered: bool,
}

/// Compiled modules by path and whether they are metered.
type CompiledCache = Mutex<HashMap<(PathBuf, bool), Arc<Compiled>>>;

fn compiled(path: &Path, metered: bool) -> Arc<Compiled> {
    static CACHE: OnceLock<CompiledCache> = OnceLock::new();
    // Holding the lock while compiling makes parallel tests wait for one compile.
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache
        .entry((path.to_path_buf(), metered))
        .or_insert_with(|| {
            assert!(
                path.exists(),
                "{} is missing: run `make build` first",
                path.display()
            );
            let engine = engine(metered);
            let module = Module::from_file(engine, path)
                .unwrap_or_else(|e| panic!("cannot compile {}: {e:#}", path.display()));
            let (pre, stubbed) = abi::instance_pre(engine, &module)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Arc::new(Compiled {
                pre,
                stubbed,
                metered,
            })
        })
        .clone()
}

/// One Envoy process: the module, the clock, shared data, stats and the log sink
/// that all its Vms (workers) share. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Host {
    state: Arc<Mutex<HostState>>,
    compiled: Arc<Compiled>,
}

impl Default for Host {
    fn default() -> Self {
        Self::new()
    }
}

impl Host {
    /// A host for the release artifact; panics if it has not been built.
    pub fn new() -> Self {
        Self::from_wasm(artifact_path())
    }

    /// A host for another module (the harness's own fixtures).
    pub fn from_wasm(path: impl AsRef<Path>) -> Self {
        Self::with_module(path.as_ref(), false)
    }

    /// A host for the release artifact whose Vms count the wasm instructions they run
    /// ([`Vm::fuel_used`]). Slower, and compiled separately from [`Host::new`]'s module.
    pub fn metered() -> Self {
        Self::with_module(&artifact_path(), true)
    }

    /// [`Host::metered`] for another module (e.g. the filter built with another profile).
    pub fn metered_wasm(path: impl AsRef<Path>) -> Self {
        Self::with_module(path.as_ref(), true)
    }

    fn with_module(path: &Path, metered: bool) -> Self {
        Self {
            state: Arc::new(Mutex::new(HostState::default())),
            compiled: compiled(path, metered),
        }
    }

    fn state(&self) -> MutexGuard<'_, HostState> {
        lock(&self.state)
    }

    /// Sets an environment variable for Vms created afterwards (Envoy's
    /// vm_config.environment_variables).
    pub fn set_env(&self, name: &str, value: &str) -> &Self {
        let mut st = self.state();
        st.env.retain(|(n, _)| n != name);
        st.env.push((name.into(), value.into()));
        self
    }

    pub fn remove_env(&self, name: &str) -> &Self {
        self.state().env.retain(|(n, _)| n != name);
        self
    }

    /// vm_config.configuration for Vms created afterwards (empty by default).
    pub fn set_vm_config(&self, config: &str) -> &Self {
        self.state().vm_config = config.as_bytes().to_vec();
        self
    }

    /// The clusters proxy_http_call may target (default: `auth_service`).
    pub fn set_clusters(&self, clusters: &[&str]) -> &Self {
        self.state().clusters = clusters.iter().map(|c| c.to_string()).collect();
        self
    }

    /// When on, every proxy_http_call fails with InternalFailure, as when
    /// Envoy's async client cannot start a request.
    pub fn fail_dispatch(&self, fail: bool) -> &Self {
        self.state().fail_dispatch = fail;
        self
    }

    /// Starts a worker VM the way Envoy does (`_initialize`, root context,
    /// on_vm_start, on_configure). `Err` when the filter refuses the plugin
    /// configuration (the message includes its warnings) or the VM traps.
    pub fn vm(&self, plugin_config: &str) -> Result<Vm, String> {
        Vm::start(self, plugin_config.as_bytes())
    }

    /// The level proxy_get_log_level reports (default Trace, so every line is
    /// emitted; Envoy's default for the wasm logger is Info).
    pub fn set_log_level(&self, level: LogLevel) -> &Self {
        self.state().log_level = level;
        self
    }

    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.state().now_nanos)
    }

    /// Seconds since the epoch on the host clock.
    pub fn now_unix(&self) -> u64 {
        self.state().now_nanos / 1_000_000_000
    }

    /// Moves the clock every Vm reads; it starts at 2026-11-23T12:00:00Z.
    pub fn advance(&self, by: Duration) -> &Self {
        let mut st = self.state();
        st.now_nanos = st.now_nanos.saturating_add(by.as_nanos() as u64);
        self
    }

    pub fn set_now(&self, at: SystemTime) -> &Self {
        let since = at.duration_since(UNIX_EPOCH).expect("time after 1970");
        self.state().now_nanos = since.as_nanos() as u64;
        self
    }

    /// Every line logged so far by every Vm, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state().logs.clone()
    }

    pub fn logs_containing(&self, needle: &str) -> Vec<LogLine> {
        self.state()
            .logs
            .iter()
            .filter(|l| l.message.contains(needle))
            .cloned()
            .collect()
    }

    pub fn logs_at_least(&self, level: LogLevel) -> Vec<LogLine> {
        self.state()
            .logs
            .iter()
            .filter(|l| l.level >= level)
            .cloned()
            .collect()
    }

    /// True when any log line, at any level, contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        !self.logs_containing(needle).is_empty()
    }

    pub fn clear_logs(&self) {
        self.state().logs.clear();
    }

    /// A counter's or gauge's value by the name the filter defined (Envoy's
    /// exported `wasmcustom.` prefix is accepted too). Stats are process-wide in
    /// Envoy, so this is the total over every Vm of the Host.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let name = name.strip_prefix("wasmcustom.").unwrap_or(name);
        match self.state().metrics.get(name)? {
            MetricValue::Counter(v) | MetricValue::Gauge(v) => Some(*v),
            MetricValue::Histogram(_) => None,
        }
    }

    /// Values recorded into a histogram.
    pub fn histogram(&self, name: &str) -> Option<Vec<u64>> {
        match self.state().metrics.get(name)? {
            MetricValue::Histogram(values) => Some(values.clone()),
            _ => None,
        }
    }

    pub fn metric_names(&self) -> Vec<String> {
        self.state().metrics.keys().cloned().collect()
    }

    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.state().shared.get(key.as_bytes()).map(|(v, _)| v)
    }

    pub fn shared_data_cas(&self, key: &str) -> Option<u32> {
        self.state().shared.get(key.as_bytes()).map(|(_, cas)| cas)
    }

    /// Every key in shared data (lossy UTF-8), e.g. to prove no plaintext key is stored.
    pub fn shared_data_keys(&self) -> Vec<String> {
        self.state()
            .shared
            .keys()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    /// Every (key, value) pair in shared data.
    pub fn shared_data_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.state()
            .shared
            .entries()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }

    /// Writes shared data unconditionally, as another worker would.
    pub fn put_shared_data(&self, key: &str, value: &[u8]) {
        let _ = self.state().shared.set(key.as_bytes(), value, 0);
    }

    /// The next `times` calls of the host function `import` (e.g. `proxy_set_shared_data`),
    /// from any Vm, return `status` (a proxy-wasm-cpp-host `WasmResult` code, or any number)
    /// without doing anything: how a test makes Envoy refuse a call.
    pub fn inject_status(&self, import: &str, status: i32, times: usize) -> &Self {
        self.state()
            .injected
            .entry(import.to_string())
            .or_default()
            .extend(std::iter::repeat_n(status, times));
        self
    }

    /// As [`Host::inject_status`], after letting the next `skip` calls of `import` through:
    /// how a test reaches, say, the second header-map read of a request.
    pub fn inject_status_after(
        &self,
        import: &str,
        skip: usize,
        status: i32,
        times: usize,
    ) -> &Self {
        self.state()
            .injected
            .entry(import.to_string())
            .or_default()
            .extend(std::iter::repeat_n(state::PASS_THROUGH, skip));
        self.inject_status(import, status, times)
    }

    /// Injected statuses not yet used up, by import.
    pub fn pending_injections(&self) -> usize {
        self.state().injected.values().map(Vec::len).sum()
    }

    /// Where the callout-token counter of Vms created afterwards starts; near `u32::MAX` it
    /// wraps during a test, as Envoy's does after 2^32 callouts.
    pub fn set_first_callout_token(&self, token: u32) -> &Self {
        self.state().first_callout_token = token;
        self
    }

    /// Plays another worker of this Envoy: `action` runs on shared data right after any Vm
    /// reads a key starting with `key_prefix`, so before that Vm writes anything back, the
    /// way two workers' calls interleave in Envoy. One interloper at a time; `None` ends it.
    pub fn interleave(&self, key_prefix: &str, action: Option<state::InterloperAction>) {
        self.state().interloper = action.map(|action| state::Interloper {
            key_prefix: key_prefix.as_bytes().to_vec(),
            action,
        });
    }

    /// Imports the module declares that the harness only links to a trap
    /// (gRPC, shared queues, foreign functions, ...); calling one crashes the VM.
    pub fn stubbed_imports(&self) -> Vec<String> {
        self.compiled.stubbed.clone()
    }
}

/// One worker's VM with the filter loaded and configured.
pub struct Vm {
    host: Host,
    store: Store<VmState>,
    instance: Instance,
    crashed: Option<String>,
    next_context: u32,
    /// Fuel used by each export the host called, summed (metered Hosts only).
    fuel_by_export: BTreeMap<String, u64>,
}

impl Vm {
    fn start(host: &Host, plugin_config: &[u8]) -> Result<Vm, String> {
        let (worker, logs_before) = {
            let mut st = host.state();
            st.next_worker += 1;
            (st.next_worker - 1, st.logs.len())
        };
        let data = VmState::new(host.state.clone(), worker, plugin_config.to_vec());
        let mut store = Store::new(host.compiled.pre.module().engine(), data);
        if host.compiled.metered {
            store
                .set_fuel(FUEL)
                .expect("the metered engine accepts fuel");
        }
        let instance = host
            .compiled
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("instantiation failed: {e:#}"))?;
        let mut vm = Vm {
            host: host.clone(),
            store,
            instance,
            crashed: None,
            next_context: 2,
            fuel_by_export: BTreeMap::new(),
        };
        if vm
            .instance
            .get_func(&mut vm.store, "proxy_abi_version_0_2_1")
            .is_none()
        {
            return Err("the module does not export proxy_abi_version_0_2_1".into());
        }
        let root = vm.root_id() as i32;
        let vm_config_len = vm.store.data().vm_config.len() as i32;
        vm.store.data_mut().initializing = true;
        vm.call::<(), ()>("_initialize", ());
        vm.store.data_mut().initializing = false;
        if let Some(msg) = &vm.crashed {
            return Err(format!("the VM crashed while initialising: {msg}"));
        }
        vm.call::<(i32, i32), ()>("proxy_on_context_create", (root, 0));
        let started = vm.call::<(i32, i32), i32>("proxy_on_vm_start", (root, vm_config_len));
        if let Some(msg) = &vm.crashed {
            return Err(format!("the VM crashed while starting: {msg}"));
        }
        if started == Some(0) {
            return Err("on_vm_start returned false".into());
        }
        vm.store.data_mut().configuring = true;
        let configured =
            vm.call::<(i32, i32), i32>("proxy_on_configure", (root, plugin_config.len() as i32));
        vm.store.data_mut().configuring = false;
        if let Some(msg) = &vm.crashed {
            return Err(format!("the VM crashed in on_configure: {msg}"));
        }
        if configured == Some(0) {
            let complaints: Vec<String> = host.state().logs[logs_before..]
                .iter()
                .filter(|l| l.worker == worker && l.level >= LogLevel::Warn)
                .map(|l| l.message.clone())
                .collect();
            return Err(format!(
                "on_configure refused the plugin configuration; the filter logged: {}",
                complaints.join(" | ")
            ));
        }
        Ok(vm)
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Which worker of the Host this is (0 for the first Vm).
    pub fn worker(&self) -> usize {
        self.store.data().worker
    }

    pub fn root_id(&self) -> u32 {
        self.store.data().root_id
    }

    /// Wasm instructions this VM has run since it was created (wasmtime fuel: one unit per
    /// instruction, except a few free ones such as `nop` and `drop`). `None` unless the Host
    /// is [`Host::metered`]. Deterministic: the same calls always use the same fuel.
    pub fn fuel_used(&self) -> Option<u64> {
        self.store.get_fuel().ok().map(|left| FUEL - left)
    }

    /// Fuel used so far inside each export the host called (`proxy_on_request_headers`,
    /// `proxy_on_log`, ...), including the guest allocator calls made by host functions
    /// during it. Empty unless the Host is [`Host::metered`].
    pub fn fuel_by_export(&self) -> BTreeMap<String, u64> {
        self.fuel_by_export.clone()
    }

    /// How often the module called each imported host function since the VM started.
    pub fn host_calls(&self) -> BTreeMap<String, u64> {
        self.store
            .data()
            .host_calls
            .iter()
            .map(|(name, count)| (name.to_string(), *count))
            .collect()
    }

    /// proxy_get_property calls by dotted path (`connection.mtls`) since the VM started.
    pub fn property_reads(&self) -> BTreeMap<String, u64> {
        self.store.data().property_reads.clone()
    }

    /// How often a host function handed the guest a value in memory from the guest's own
    /// allocator (`proxy_on_memory_allocate`), as Envoy does for every value it returns.
    pub fn guest_allocations(&self) -> u64 {
        self.store.data().guest_allocations
    }

    /// The VM's linear memory, in bytes (what a leak grows).
    pub fn memory_bytes(&mut self) -> usize {
        self.instance
            .get_memory(&mut self.store, "memory")
            .map_or(0, |m| m.data_size(&self.store))
    }

    /// The trap that killed this VM, if one did.
    pub fn crashed(&self) -> Option<&str> {
        self.crashed.as_deref()
    }

    #[track_caller]
    pub fn assert_alive(&self) {
        if let Some(msg) = &self.crashed {
            panic!("the VM crashed: {msg}");
        }
    }

    /// A new downstream stream: proxy_on_context_create, then
    /// proxy_on_request_headers. Returns at once; see [`Vm::outcome`].
    pub fn send(&mut self, request: Request) -> StreamId {
        let id = self.next_context;
        self.next_context += 1;
        let count = request.headers.len() as i32;
        let stream = Stream {
            request_headers: request.headers,
            request_live: true,
            properties: request.properties,
            jwt_payload: request.jwt_payload,
            outcome: self.crashed.clone().map(Outcome::Crashed),
            ..Stream::default()
        };
        let st = self.store.data_mut();
        st.streams.insert(id, stream);
        st.undecided.insert(id);
        if self.crashed.is_some() {
            return StreamId(id);
        }
        let root = self.root_id() as i32;
        self.call_as::<(i32, i32), ()>(id, "proxy_on_context_create", (id as i32, root));
        let action = self.call_as::<(i32, i32, i32), i32>(
            id,
            "proxy_on_request_headers",
            (id as i32, count, request.end_of_stream as i32),
        );
        // A missing export means "continue", as in Envoy.
        self.settle(Some((id, action.unwrap_or(0))));
        StreamId(id)
    }

    /// Sends the request and, unless the filter paused it, finishes the stream.
    pub fn complete(&mut self, request: Request) -> Outcome {
        let id = self.send(request);
        let outcome = self.outcome(id);
        if !outcome.is_paused() {
            self.finish(id);
        }
        outcome
    }

    #[track_caller]
    pub fn outcome(&self, id: StreamId) -> Outcome {
        let stream = self.stream(id);
        match (&stream.outcome, &self.crashed) {
            (Some(outcome), _) => outcome.clone(),
            (None, Some(msg)) => Outcome::Crashed(msg.clone()),
            (None, None) => Outcome::Paused,
        }
    }

    /// The stream's request headers as they are now (useful while paused).
    #[track_caller]
    pub fn request_headers(&self, id: StreamId) -> Vec<Header> {
        self.stream(id).request_headers.entries().to_vec()
    }

    /// The `details` the filter gave with its local reply (whitespace as '_').
    #[track_caller]
    pub fn reply_details(&self, id: StreamId) -> Option<String> {
        self.stream(id).reply_details.clone()
    }

    /// Callouts dispatched and not yet answered, oldest first.
    pub fn callouts(&self) -> Vec<Callout> {
        self.store.data().pending_callouts.clone()
    }

    pub fn callouts_for(&self, id: StreamId) -> Vec<Callout> {
        self.callouts()
            .into_iter()
            .filter(|c| c.made_by == id.0)
            .collect()
    }

    /// Every callout this VM ever dispatched, answered or not.
    pub fn callout_history(&self) -> Vec<Callout> {
        self.store.data().callout_history.clone()
    }

    /// Delivers the upstream's reply to a callout through proxy_on_http_call_response.
    /// Like Envoy, the callback goes to the root context, which owns every call, with the
    /// root current, whether or not the stream it was made for is still there.
    #[track_caller]
    pub fn answer(&mut self, token: u32, reply: CalloutReply) {
        let st = self.store.data_mut();
        let Some(pos) = st.pending_callouts.iter().position(|c| c.token == token) else {
            let pending: Vec<u32> = st.pending_callouts.iter().map(|c| c.token).collect();
            panic!("no pending callout with token {token} (pending: {pending:?})");
        };
        let callout = st.pending_callouts.remove(pos);
        if reply.timed_out {
            let due = callout.dispatched_at_nanos + u64::from(callout.timeout_ms) * 1_000_000;
            let mut host = st.host();
            host.now_nanos = host.now_nanos.max(due);
        }
        let (delivery, counts, status) = match reply.response {
            Some(r) => {
                let counts = (r.headers.len(), r.body.len(), r.trailers.len());
                let delivery = Delivery::Response {
                    headers: r.headers,
                    body: r.body,
                    trailers: r.trailers,
                };
                (delivery, counts, (0, String::new()))
            }
            // Envoy's onHttpCallFailure: BrokenConnection, "reset", nothing else.
            None => (Delivery::Failure, (0, 0, 0), (11, "reset".to_string())),
        };
        st.delivering = Some(delivery);
        st.call_status = status;
        let owner = callout.context_id;
        self.call_as::<(i32, i32, i32, i32, i32), ()>(
            owner,
            "proxy_on_http_call_response",
            (
                owner as i32,
                token as i32,
                counts.0 as i32,
                counts.1 as i32,
                counts.2 as i32,
            ),
        );
        let st = self.store.data_mut();
        st.delivering = None;
        st.call_status = (0, String::new());
        self.settle(None);
    }

    /// Answers the only pending callout and returns it; panics unless exactly
    /// one is pending.
    #[track_caller]
    pub fn answer_only(&mut self, reply: CalloutReply) -> Callout {
        let pending = self.callouts();
        assert_eq!(
            pending.len(),
            1,
            "expected exactly one pending callout, got {pending:?}"
        );
        let callout = pending.into_iter().next().expect("one callout");
        self.answer(callout.token, reply);
        callout
    }

    /// The upstream's response to a forwarded request passes the filter:
    /// proxy_on_response_headers. Returns the response headers after the filter.
    #[track_caller]
    pub fn respond(&mut self, id: StreamId, status: u32, headers: &[(&str, &str)]) -> Vec<Header> {
        self.outcome(id).assert_forwarded();
        let mut map = HeaderMap::new();
        map.add(":status", status.to_string().as_bytes());
        for (name, value) in headers {
            map.add(name, value.as_bytes());
        }
        let count = map.len() as i32;
        self.stream_mut(id).response_headers = Some(map);
        self.stream_mut(id).response_live = true;
        self.call_as::<(i32, i32, i32), i32>(
            id.0,
            "proxy_on_response_headers",
            (id.0 as i32, count, 0),
        );
        let stream = self.stream_mut(id);
        stream.response_live = false;
        stream
            .response_headers
            .clone()
            .unwrap_or_default()
            .entries()
            .to_vec()
    }

    /// Ends the stream as Envoy 1.40 does: the access log first (proxy_on_log,
    /// request and response headers readable), then the filter is destroyed
    /// (proxy_on_done, proxy_on_delete). Callouts made while it ran stay pending: they
    /// belong to the root context, and Envoy delivers their replies there.
    #[track_caller]
    pub fn finish(&mut self, id: StreamId) {
        assert!(!self.stream(id).deleted, "stream {id:?} finished twice");
        let ctx = id.0 as i32;
        self.store.data_mut().access_log_phase = true;
        self.call_as::<i32, ()>(id.0, "proxy_on_log", ctx);
        self.store.data_mut().access_log_phase = false;
        self.call_as::<i32, i32>(id.0, "proxy_on_done", ctx);
        self.call_as::<i32, ()>(id.0, "proxy_on_delete", ctx);
        let stream = self.stream_mut(id);
        stream.deleted = true;
        self.store.data_mut().undecided.remove(&id.0);
        let stream = self.stream_mut(id);
        stream.request_live = false;
        stream.response_live = false;
    }

    /// The client resets a stream the filter has not answered (or closes its
    /// connection): Envoy ends the stream just as [`Vm::finish`] does, without a
    /// response; its callouts go on. Outcome: `Abandoned`.
    #[track_caller]
    pub fn reset_by_client(&mut self, id: StreamId) {
        let outcome = self.outcome(id);
        assert!(
            outcome.is_paused(),
            "stream {id:?} was already decided: {outcome:?}"
        );
        self.stream_mut(id).outcome = Some(Outcome::Abandoned);
        self.finish(id);
    }

    /// Fires the root context's timer once (proxy_on_tick). Whatever the filter did to
    /// streams meanwhile (resumed one, answered one through set_effective_context) takes
    /// effect when the call returns, as Envoy's deferred after-VM-call actions do.
    pub fn tick(&mut self) {
        let root = self.root_id();
        self.call_as::<i32, ()>(root, "proxy_on_tick", root as i32);
        self.settle(None);
    }

    /// The period the filter asked for with proxy_set_tick_period_milliseconds.
    pub fn tick_period(&self) -> Option<Duration> {
        self.store
            .data()
            .tick_period_ms
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms.into()))
    }

    #[track_caller]
    fn stream(&self, id: StreamId) -> &Stream {
        self.store
            .data()
            .streams
            .get(&id.0)
            .unwrap_or_else(|| panic!("unknown stream {id:?}"))
    }

    #[track_caller]
    fn stream_mut(&mut self, id: StreamId) -> &mut Stream {
        self.store
            .data_mut()
            .streams
            .get_mut(&id.0)
            .unwrap_or_else(|| panic!("unknown stream {id:?}"))
    }

    /// Calls an export from the root context.
    fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, params: P) -> Option<R> {
        let root = self.root_id();
        self.call_as(root, name, params)
    }

    /// Calls an export with `context` current. `None` when the export is missing
    /// (Envoy skips absent callbacks) or the VM is or becomes crashed.
    fn call_as<P: WasmParams, R: WasmResults>(
        &mut self,
        context: u32,
        name: &str,
        params: P,
    ) -> Option<R> {
        if self.crashed.is_some() {
            return None;
        }
        let func = self.instance.get_func(&mut self.store, name)?;
        let func = func
            .typed::<P, R>(&self.store)
            .unwrap_or_else(|e| panic!("export {name} has an unexpected signature: {e}"));
        let st = self.store.data_mut();
        st.active = context;
        st.effective = None;
        st.last_critical = None;
        let fuel_before = self.store.get_fuel().ok();
        let result = func.call(&mut self.store, params);
        if let (Some(before), Ok(after)) = (fuel_before, self.store.get_fuel()) {
            *self.fuel_by_export.entry(name.to_string()).or_default() += before - after;
        }
        // The effective context lasts for one call from the host, as in Envoy.
        self.store.data_mut().effective = None;
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.crash(name, &err);
                None
            }
        }
    }

    /// Envoy marks a trapped VM failed for good; so do we.
    fn crash(&mut self, during: &str, err: &wasmtime::Error) {
        let st = self.store.data_mut();
        let cause = err.root_cause().to_string();
        let msg = match st.last_critical.take() {
            // The SDK's panic hook logged the panic at critical just before the trap.
            Some(panic) => format!("{during}: {panic} ({cause})"),
            None => format!("{during}: {cause}"),
        };
        st.log(LogLevel::Critical, format!("[harness] VM crashed in {msg}"));
        for stream in st.streams.values_mut() {
            if stream.outcome.is_none() && !stream.deleted {
                stream.outcome = Some(Outcome::Crashed(msg.clone()));
            }
        }
        self.crashed = Some(msg);
    }

    /// Decides what became of each undecided stream after a call into the VM,
    /// the way Envoy's deferred after-VM-call actions do. `returned` is the
    /// stream whose on_request_headers just returned, with its action.
    fn settle(&mut self, returned: Option<(u32, i32)>) {
        // Only streams still waiting can change (a million finished ones need not be looked at).
        let undecided: Vec<u32> = self.store.data().undecided.iter().copied().collect();
        for id in undecided {
            let id = StreamId(id);
            if let Some(msg) = &self.crashed {
                self.stream_mut(id).outcome = Some(Outcome::Crashed(msg.clone()));
                continue;
            }
            let stream = self.stream_mut(id);
            // A local reply wins over a continue or a returned Continue.
            if let Some(reply) = stream.local_reply.take() {
                stream.reply_details = Some(reply.details.clone());
                let outcome = self.deliver_local_reply(id, reply);
                let stream = self.stream_mut(id);
                if stream.outcome.is_none() {
                    stream.outcome = Some(outcome);
                }
            } else if stream.reset {
                stream.request_live = false;
                stream.outcome = Some(Outcome::Reset);
            } else if let Some(headers) = stream.resumed.take() {
                stream.outcome = Some(Outcome::Forwarded {
                    headers: headers.entries().to_vec(),
                });
            } else if returned == Some((id.0, 0)) {
                stream.request_live = false;
                stream.outcome = Some(Outcome::Forwarded {
                    headers: stream.request_headers.entries().to_vec(),
                });
            }
        }
        let st = self.store.data_mut();
        let streams = &st.streams;
        st.undecided.retain(|id| {
            streams
                .get(id)
                .is_some_and(|s| s.outcome.is_none() && !s.deleted)
        });
    }

    /// Envoy builds the reply headers (`:status`, the filter's headers,
    /// content-length, text/plain when no content-type) and passes them through
    /// the encoder filters, this one included: proxy_on_response_headers.
    fn deliver_local_reply(&mut self, id: StreamId, reply: LocalReply) -> Outcome {
        let mut headers = HeaderMap::new();
        headers.add(":status", reply.status.to_string().as_bytes());
        for (name, value) in &reply.headers {
            headers.add(name, value);
        }
        if !reply.body.is_empty() {
            headers.replace("content-length", reply.body.len().to_string().as_bytes());
            if headers.get("content-type").is_none() {
                headers.add("content-type", b"text/plain");
            }
        }
        let count = headers.len() as i32;
        let stream = self.stream_mut(id);
        stream.response_headers = Some(headers);
        stream.response_live = true;
        self.call_as::<(i32, i32, i32), i32>(
            id.0,
            "proxy_on_response_headers",
            (id.0 as i32, count, reply.body.is_empty() as i32),
        );
        let stream = self.stream_mut(id);
        stream.response_live = false;
        if let Some(msg) = &self.crashed {
            return Outcome::Crashed(msg.clone());
        }
        let stream = self.stream_mut(id);
        let final_headers = stream.response_headers.clone().unwrap_or_default();
        let status = final_headers
            .get(":status")
            .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
            .unwrap_or(reply.status);
        Outcome::Replied {
            status,
            headers: final_headers
                .entries()
                .iter()
                .filter(|(name, _)| !name.starts_with(':'))
                .cloned()
                .collect(),
            body: reply.body,
        }
    }
}

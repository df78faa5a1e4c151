//! State behind the ABI: what the Host shares between its Vms, and what one Vm's
//! host functions see (the wasmtime store data).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::model::{Callout, LogLevel, LogLine, Outcome};
use super::shared_data::SharedData;
use super::wire::{property_segments, HeaderMap};

/// 2026-11-23T12:00:00Z: a fixed start so expiry arithmetic in tests is exact.
pub const START_NANOS: u64 = 1_795_435_200 * 1_000_000_000;

/// The plugin's name, root id and vm id in envoy/envoy.yaml.
pub const PLUGIN_NAME: &str = "hokusai_auth";

/// WasmResult codes (proxy-wasm-cpp-host numbering; the SDK knows a subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    InvalidMemoryAccess = 6,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

#[derive(Clone, Debug)]
pub enum MetricValue {
    Counter(u64),
    Gauge(u64),
    Histogram(Vec<u64>),
}

/// Everything the Vms of one Host share, like the workers of one Envoy: clock,
/// shared data, stats, log sink, and the settings new Vms start from.
pub struct HostState {
    pub env: Vec<(String, String)>,
    pub vm_config: Vec<u8>,
    pub clusters: Vec<String>,
    pub fail_dispatch: bool,
    pub now_nanos: u64,
    pub log_level: LogLevel,
    pub logs: Vec<LogLine>,
    pub shared: SharedData,
    /// By the name the filter defined; Envoy's stats are process-wide, so Vms
    /// defining the same name feed the same stat.
    pub metrics: BTreeMap<String, MetricValue>,
    pub next_worker: usize,
    pub rng: u64,
    /// What another worker does right after a VM reads a shared-data key (see
    /// [`super::Host::interleave`]).
    pub interloper: Option<Interloper>,
    /// Statuses tests injected, by import name: each answers one call instead of the host
    /// ([`PASS_THROUGH`] lets that call through).
    pub injected: HashMap<String, Vec<i32>>,
    /// Where each new Vm's callout-token counter starts (Envoy's starts at 0).
    pub first_callout_token: u32,
}

/// An injected "status" that lets the call run as usual (see `Host::inject_status_after`).
pub const PASS_THROUGH: i32 = i32::MIN;

/// What another worker does to shared data, given the key a VM just read.
pub type InterloperAction = Box<dyn FnMut(&mut SharedData, &[u8]) + Send>;

/// Another worker, acting on shared data between a VM's read of a key and its next write.
pub struct Interloper {
    pub key_prefix: Vec<u8>,
    pub action: InterloperAction,
}

impl Default for HostState {
    fn default() -> Self {
        Self {
            env: Vec::new(),
            vm_config: Vec::new(),
            clusters: vec!["auth_service".into()],
            fail_dispatch: false,
            now_nanos: START_NANOS,
            log_level: LogLevel::Trace,
            logs: Vec::new(),
            shared: SharedData::new(),
            metrics: BTreeMap::new(),
            next_worker: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            interloper: None,
            injected: HashMap::new(),
            first_callout_token: 0,
        }
    }
}

impl HostState {
    pub fn interleave_after_read(&mut self, key: &[u8]) {
        if let Some(interloper) = &mut self.interloper {
            if key.starts_with(&interloper.key_prefix) {
                (interloper.action)(&mut self.shared, key);
            }
        }
    }

    /// splitmix64: deterministic bytes for WASI random_get.
    pub fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

pub fn lock(host: &Mutex<HostState>) -> MutexGuard<'_, HostState> {
    // A panicking test thread must not hide the state from the next assertion.
    host.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A local reply the filter asked for; Envoy sends it after the VM call returns.
#[derive(Clone, Debug)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One downstream stream (HTTP context) of a Vm.
#[derive(Debug, Default)]
pub struct Stream {
    pub request_headers: HeaderMap,
    /// Envoy keeps a pointer to the request headers only while the request is
    /// held by the filter; once it continues, the map is gone (BadArgument).
    pub request_live: bool,
    pub response_headers: Option<HeaderMap>,
    pub response_live: bool,
    pub properties: Vec<(String, Vec<u8>)>,
    /// jwt_authn's verified payload (dynamic metadata), if the request had one.
    pub jwt_payload: Option<serde_json::Value>,
    /// proxy_set_property values, keyed by raw path (Envoy: filter state "wasm.<path>").
    pub filter_state: HashMap<Vec<u8>, Vec<u8>>,
    /// Request headers at the moment the filter called continue.
    pub resumed: Option<HeaderMap>,
    pub local_reply: Option<LocalReply>,
    pub reply_details: Option<String>,
    pub reset: bool,
    /// Decided outcome; `None` while paused.
    pub outcome: Option<Outcome>,
    pub deleted: bool,
}

/// The response being delivered through proxy_on_http_call_response.
#[derive(Clone, Debug)]
pub enum Delivery {
    Response {
        headers: HeaderMap,
        body: Vec<u8>,
        trailers: HeaderMap,
    },
    Failure,
}

/// Store data of one Vm: what its host functions read and write.
pub struct VmState {
    pub host: Arc<Mutex<HostState>>,
    pub worker: usize,
    pub root_id: u32,
    pub env: Vec<(String, String)>,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    /// Envoy exposes the plugin configuration only while on_configure runs.
    pub configuring: bool,
    /// `_initialize` is running: Envoy refuses every proxy-wasm host call then.
    pub initializing: bool,
    pub access_log_phase: bool,
    /// Context the host is calling into; `effective` overrides it after
    /// proxy_set_effective_context until the call returns.
    pub active: u32,
    pub effective: Option<u32>,
    pub streams: BTreeMap<u32, Stream>,
    /// Streams not yet decided nor deleted: the ones a call into the VM may decide.
    pub undecided: std::collections::BTreeSet<u32>,
    pub root_properties: Vec<(String, Vec<u8>)>,
    pub pending_callouts: Vec<Callout>,
    pub callout_history: Vec<Callout>,
    pub next_token: u32,
    pub delivering: Option<Delivery>,
    /// proxy_get_status: Envoy reports (BrokenConnection, "reset") during a failed callout.
    pub call_status: (u32, String),
    pub metric_ids: HashMap<u32, (MetricKind, String)>,
    pub next_metric_seq: u32,
    pub tick_period_ms: Option<u32>,
    pub done_calls: u32,
    /// Last critical line of the current call: the SDK's panic hook logs the panic there.
    pub last_critical: Option<String>,
    /// Calls of each imported host function, by import name, since the VM started.
    pub host_calls: HashMap<Arc<str>, u64>,
    /// Times the host called the guest's allocator to hand it a value (Envoy's copies).
    pub guest_allocations: u64,
    /// proxy_get_property calls by dotted path (`connection.mtls`), since the VM started.
    pub property_reads: BTreeMap<String, u64>,
}

impl VmState {
    pub fn new(host: Arc<Mutex<HostState>>, worker: usize, plugin_config: Vec<u8>) -> Self {
        let (env, vm_config, first_token) = {
            let h = lock(&host);
            (h.env.clone(), h.vm_config.clone(), h.first_callout_token)
        };
        let root_properties = ["plugin_name", "plugin_root_id", "plugin_vm_id"]
            .iter()
            .map(|n| (n.to_string(), PLUGIN_NAME.as_bytes().to_vec()))
            .collect();
        Self {
            host,
            worker,
            root_id: 1,
            env,
            vm_config,
            plugin_config,
            configuring: false,
            initializing: false,
            access_log_phase: false,
            active: 1,
            effective: None,
            streams: BTreeMap::new(),
            undecided: std::collections::BTreeSet::new(),
            root_properties,
            pending_callouts: Vec::new(),
            callout_history: Vec::new(),
            next_token: first_token,
            delivering: None,
            call_status: (0, String::new()),
            metric_ids: HashMap::new(),
            next_metric_seq: 0,
            tick_period_ms: None,
            done_calls: 0,
            last_critical: None,
            host_calls: HashMap::new(),
            guest_allocations: 0,
            property_reads: BTreeMap::new(),
        }
    }

    pub fn host(&self) -> MutexGuard<'_, HostState> {
        lock(&self.host)
    }

    pub fn count_property_read(&mut self, segments: &[Vec<u8>]) {
        let path: Vec<String> = segments
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        *self.property_reads.entry(path.join(".")).or_default() += 1;
    }

    /// The status a test injected for the next call of `name`, if any (used up).
    pub fn take_injected(&self, name: &str) -> Option<i32> {
        let mut host = self.host();
        let queue = host.injected.get_mut(name)?;
        let status = (!queue.is_empty()).then(|| queue.remove(0));
        if queue.is_empty() {
            host.injected.remove(name);
        }
        status
    }

    pub fn count_host_call(&mut self, name: &Arc<str>) {
        match self.host_calls.get_mut(&**name) {
            Some(count) => *count += 1,
            None => {
                self.host_calls.insert(name.clone(), 1);
            }
        }
    }

    /// The context host calls act on (Envoy's contextOrEffectiveContext).
    pub fn current(&self) -> u32 {
        self.effective.unwrap_or(self.active)
    }

    pub fn context_exists(&self, id: u32) -> bool {
        id == self.root_id || self.streams.get(&id).is_some_and(|s| !s.deleted)
    }

    pub fn stream(&self) -> Option<&Stream> {
        self.streams.get(&self.current()).filter(|s| !s.deleted)
    }

    pub fn stream_mut(&mut self) -> Option<&mut Stream> {
        let id = self.current();
        self.streams.get_mut(&id).filter(|s| !s.deleted)
    }

    pub fn log(&mut self, level: LogLevel, message: String) {
        if level == LogLevel::Critical {
            self.last_critical = Some(message.clone());
        }
        let line = LogLine {
            level,
            message,
            worker: self.worker,
        };
        // Shown by libtest only when the test fails.
        eprintln!("{line}");
        self.host().logs.push(line);
    }

    /// Property lookup by path segments: the stream's connection properties,
    /// then plugin-wide ones, then values the filter stored itself.
    pub fn property(&self, segments: &[Vec<u8>]) -> Option<Vec<u8>> {
        let by_name = |props: &[(String, Vec<u8>)]| {
            props
                .iter()
                .find(|(name, _)| property_segments(name) == segments)
                .map(|(_, v)| v.clone())
        };
        let stream = self.stream();
        const JWT_PAYLOAD: [&[u8]; 4] = [
            b"metadata",
            b"filter_metadata",
            b"envoy.filters.http.jwt_authn",
            b"jwt_payload",
        ];
        if segments.len() >= 4 && segments[..4].iter().zip(JWT_PAYLOAD).all(|(a, b)| a == b) {
            let payload = stream?.jwt_payload.as_ref()?;
            let below: Vec<&str> = segments[4..]
                .iter()
                .map(|s| std::str::from_utf8(s).unwrap_or("\u{fffd}"))
                .collect();
            return hokusai_auth_filter::core::host::fake::metadata_value(payload, &below);
        }
        stream
            .and_then(|s| by_name(&s.properties))
            .or_else(|| by_name(&self.root_properties))
            .or_else(|| match (stream, segments) {
                (Some(s), [only]) => s.filter_state.get(only).cloned(),
                _ => None,
            })
    }
}

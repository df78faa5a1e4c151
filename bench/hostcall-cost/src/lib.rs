//! One host call, N times per request: the cost model's probe of what each host call
//! costs Envoy (see bench/README.md, "Cost model").
//!
//! Plugin configuration (a plain string): `<call> <n>`, e.g. `property:connection.mtls 32`.
//! Calls: `none`, `header_pairs`, `header_get`, `header_add`, `header_replace`,
//! `header_remove`, `set_header_map_pairs`, `property:<dotted.path>`, `set_property`,
//! `shared_get`, `shared_set`, `metric_increment`, `log_filtered`, `log_printed`, `time`,
//! `clear_route_cache` (Envoy's foreign function), and the driver's route-cache checks:
//! `route_probe` (one replace of the header a probe route matches on) and
//! `route_probe_clear` (the same, then `clear_route_cache`); see `cost_model.py`.
//! `replay_miss 1 <auth authority> [parts]` makes the host calls of a cache miss, in the
//! filter's order, with the same callout (the request's key to the auth service's validate
//! endpoint) and nothing else: the floor of scenario D. `parts` (comma-separated, default
//! all) keeps only some of them around the callout, which is always made and always
//! resumed: `reads` (request headers, clock, `source.address`), `shared` (two slot reads,
//! one write), `reply` (the reply's headers and body, the clock), `writes` (the identity
//! headers and the access-log record); the cost model's miss parts.
//! `replay_warm` and `replay_internal` make, N times, exactly the host calls the real filter
//! makes for a warm external request and an internal mTLS one (same headers, same values, in
//! the same order) and nothing else, so the real filter minus its replay is the filter's own
//! work in the VM. `make bench` runs `replay_warm 1` as its scenario A_replay; the calls are
//! the warm path's as the wasmtime harness counts them (bench/raw/wasm_cost.json, path
//! `warm`), listed in bench/scenarios.py `REPLAY_WARM_HOST_CALLS`, which the report checks
//! against that file: change all three together.
//!
//! Writes go to a scratch header so the request stays what the upstream expects. A failed
//! call is logged once per plugin at error level (the driver fails on such a line); a
//! call Envoy answers with a status the SDK does not expect traps the VM, which the driver
//! sees as 503s.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::cell::Cell;
use std::rc::Rc;

const SCRATCH: &str = "x-bench-scratch";
/// The driver's route-cache listener sends requests to a direct response when this header
/// reads `rematched`: proof that a header write made Envoy pick the route again.
const ROUTE_HEADER: &str = "x-bench-route";
const SHARED_KEY: &str = "hostcall-cost.entry";
const SHARED_SET_KEY: &str = "hostcall-cost.written";
/// About the size of one cached verdict in the real filter's shared data.
const SHARED_VALUE: [u8; 320] = [b'v'; 320];

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Clone, Debug, PartialEq)]
enum Call {
    None,
    HeaderPairs,
    HeaderGet,
    HeaderAdd,
    HeaderReplace,
    HeaderRemove,
    SetHeaderMapPairs,
    Property(String),
    SetProperty,
    SharedGet,
    SharedSet,
    MetricIncrement,
    LogFiltered,
    LogPrinted,
    Time,
    ClearRouteCache,
    RouteProbe,
    RouteProbeClear,
    ReplayWarm,
    ReplayInternal,
    /// A cache miss's host calls; the callout goes to this authority on `auth_service`.
    ReplayMiss(String, MissParts),
}

/// What the real filter writes for the bench's key `hk_bench_0000`
/// (src/core/output/identity_headers.rs, `IdentityHeaders::pairs`), in its order.
const WARM_HEADERS: [(&str, &str); 5] = [
    ("x-user-id", "bench-user-0000"),
    ("x-api-key-id", "key-bench-0000"),
    ("x-auth-scopes", "mlflow:read mlflow:write"),
    ("x-auth-path", "external"),
    ("x-auth-method", "api_key"),
];
/// ... and for the allow-listed client certificate on the internal path.
const INTERNAL_HEADERS: [(&str, &str); 5] = [
    ("x-user-id", "internal_service"),
    ("x-auth-scopes", "mlflow:read mlflow:write"),
    ("x-auth-path", "internal"),
    ("x-auth-method", "mtls"),
    (
        "x-auth-identity",
        "spiffe://hokusai.internal/ns/development/sa/hokusai-api",
    ),
];
/// The filter state the real filter writes for the access log (`wasm.hokusai_auth`, see
/// `access_log_record` in src/core/output/access_log.rs), with the same values.
const ACCESS_LOG_PROPERTY: &str = "hokusai_auth";
const WARM_RECORD: &str = r#"{"path":"external","method":"api_key","outcome":"allow","cache":"hit","key_id":"key-bench-0000","user_id":"bench-user-0000"}"#;
const INTERNAL_RECORD: &str = r#"{"path":"internal","method":"mtls","outcome":"allow","cache":"none","user_id":"internal_service","peer":"spiffe://hokusai.internal/ns/development/sa/hokusai-api"}"#;
/// What the internal path reads about the connection: whether it is mTLS, then the peer
/// certificate's digest (the filter's key for the certificate facts it keeps per worker).
const INTERNAL_PROPERTIES: [&str; 2] = ["mtls", "sha256_peer_certificate_digest"];

impl Call {
    fn parse(name: &str) -> Option<Self> {
        if let Some(path) = name.strip_prefix("property:") {
            return (!path.is_empty()).then(|| Call::Property(path.to_string()));
        }
        Some(match name {
            "none" => Call::None,
            "header_pairs" => Call::HeaderPairs,
            "header_get" => Call::HeaderGet,
            "header_add" => Call::HeaderAdd,
            "header_replace" => Call::HeaderReplace,
            "header_remove" => Call::HeaderRemove,
            "set_header_map_pairs" => Call::SetHeaderMapPairs,
            "set_property" => Call::SetProperty,
            "shared_get" => Call::SharedGet,
            "shared_set" => Call::SharedSet,
            "metric_increment" => Call::MetricIncrement,
            "log_filtered" => Call::LogFiltered,
            "log_printed" => Call::LogPrinted,
            "time" => Call::Time,
            "clear_route_cache" => Call::ClearRouteCache,
            "route_probe" => Call::RouteProbe,
            "route_probe_clear" => Call::RouteProbeClear,
            "replay_warm" => Call::ReplayWarm,
            "replay_internal" => Call::ReplayInternal,
            _ => return None,
        })
    }
}

/// Which of a miss's host calls `replay_miss` makes besides the callout.
#[derive(Clone, Copy, Debug, PartialEq)]
struct MissParts {
    reads: bool,
    shared: bool,
    reply: bool,
    writes: bool,
}

impl MissParts {
    fn parse(text: Option<&str>) -> Option<Self> {
        let Some(text) = text else {
            return Some(MissParts {
                reads: true,
                shared: true,
                reply: true,
                writes: true,
            });
        };
        let mut parts = MissParts {
            reads: false,
            shared: false,
            reply: false,
            writes: false,
        };
        for part in text.split(',').filter(|p| !p.is_empty()) {
            match part {
                "reads" => parts.reads = true,
                "shared" => parts.shared = true,
                "reply" => parts.reply = true,
                "writes" => parts.writes = true,
                "none" => {}
                _ => return None,
            }
        }
        Some(parts)
    }
}

struct Plan {
    call: Call,
    n: u32,
    metric: Option<u32>,
    /// Set once the first failure has been logged, so a failing call cannot flood the log.
    failed: Cell<bool>,
}

impl Plan {
    fn check<T>(&self, what: &str, result: Result<T, Status>) {
        if let Err(status) = result {
            if !self.failed.replace(true) {
                let _ = hostcalls::log(
                    LogLevel::Error,
                    &format!("hostcall-cost: {what} failed: {status:?}"),
                );
            }
        }
    }

    /// One request's host calls of the real filter, in its order (src/proxy/stream.rs): all
    /// request headers, the clock, on the internal path the connection's properties, the
    /// identity headers, and the access-log record as filter state.
    fn replay(&self, internal: bool) {
        let req = MapType::HttpRequestHeaders;
        self.check("replay", hostcalls::get_map_bytes(req));
        self.check("replay", hostcalls::get_current_time());
        if internal {
            for name in INTERNAL_PROPERTIES {
                self.check("replay", hostcalls::get_property(vec!["connection", name]));
            }
        }
        let (headers, record) = if internal {
            (&INTERNAL_HEADERS, INTERNAL_RECORD)
        } else {
            (&WARM_HEADERS, WARM_RECORD)
        };
        for (name, value) in headers {
            self.check("replay", hostcalls::set_map_value(req, name, Some(value)));
        }
        self.check(
            "replay",
            hostcalls::set_property(vec![ACCESS_LOG_PROPERTY], Some(record.as_bytes())),
        );
    }

    fn run(&self) {
        let n = self.n;
        let req = MapType::HttpRequestHeaders;
        match &self.call {
            Call::None => {}
            Call::HeaderPairs => {
                (0..n).for_each(|_| self.check("header_pairs", hostcalls::get_map_bytes(req)))
            }
            Call::HeaderGet => (0..n).for_each(|_| {
                self.check(
                    "header_get",
                    hostcalls::get_map_value_bytes(req, "x-request-id"),
                )
            }),
            Call::HeaderAdd => {
                (0..n).for_each(|_| {
                    self.check("header_add", hostcalls::add_map_value(req, SCRATCH, "1"))
                });
                // One removal of all N values keeps the upstream request the same size.
                if n > 0 {
                    self.check("header_add", hostcalls::remove_map_value(req, SCRATCH));
                }
            }
            Call::HeaderReplace => (0..n).for_each(|_| {
                self.check(
                    "header_replace",
                    hostcalls::set_map_value(req, SCRATCH, Some("1")),
                )
            }),
            Call::HeaderRemove => (0..n).for_each(|_| {
                self.check("header_remove", hostcalls::remove_map_value(req, SCRATCH))
            }),
            Call::SetHeaderMapPairs => {
                if n == 0 {
                    return;
                }
                let map = hostcalls::get_map_bytes(req).unwrap_or_default();
                let pairs: Vec<(&str, &[u8])> = map
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                    .collect();
                (0..n).for_each(|_| {
                    self.check(
                        "set_header_map_pairs",
                        hostcalls::set_map_bytes(req, pairs.clone()),
                    )
                });
            }
            Call::Property(path) => {
                let segments: Vec<&str> = path.split('.').collect();
                (0..n).for_each(|_| {
                    self.check("get_property", hostcalls::get_property(segments.clone()))
                });
            }
            Call::SetProperty => (0..n).for_each(|_| {
                self.check(
                    "set_property",
                    hostcalls::set_property(vec!["x"], Some(b"1")),
                )
            }),
            Call::SharedGet => (0..n)
                .for_each(|_| self.check("shared_get", hostcalls::get_shared_data(SHARED_KEY))),
            Call::SharedSet => (0..n).for_each(|_| {
                self.check(
                    "shared_set",
                    hostcalls::set_shared_data(SHARED_SET_KEY, Some(&SHARED_VALUE), None),
                )
            }),
            Call::MetricIncrement => {
                if let Some(id) = self.metric {
                    (0..n).for_each(|_| {
                        self.check("metric_increment", hostcalls::increment_metric(id, 1))
                    });
                }
            }
            Call::LogFiltered => (0..n).for_each(|_| {
                self.check(
                    "log_filtered",
                    hostcalls::log(LogLevel::Debug, "hostcall-cost: a debug line Envoy drops"),
                )
            }),
            Call::LogPrinted => (0..n).for_each(|_| {
                self.check(
                    "log_printed",
                    hostcalls::log(LogLevel::Warn, "hostcall-cost: a warn line Envoy prints"),
                )
            }),
            Call::Time => (0..n).for_each(|_| self.check("time", hostcalls::get_current_time())),
            Call::ClearRouteCache => (0..n).for_each(|_| {
                self.check(
                    "clear_route_cache",
                    hostcalls::call_foreign_function("clear_route_cache", None),
                )
            }),
            Call::RouteProbe => self.check(
                "route_probe",
                hostcalls::set_map_value(req, ROUTE_HEADER, Some("rematched")),
            ),
            Call::ReplayWarm => (0..n).for_each(|_| self.replay(false)),
            Call::ReplayInternal => (0..n).for_each(|_| self.replay(true)),
            // Made by the stream itself (it needs the callout's reply): see `Probe`.
            Call::ReplayMiss(..) => {}
            Call::RouteProbeClear => {
                let write = hostcalls::set_map_value(req, ROUTE_HEADER, Some("rematched"));
                self.check("route_probe_clear", write);
                let clear = hostcalls::call_foreign_function("clear_route_cache", None);
                self.check("route_probe_clear", clear);
            }
        }
    }
}

#[derive(Default)]
struct Root {
    plan: Option<Rc<Plan>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&raw);
        let words: Vec<&str> = text.split_whitespace().collect();
        let parsed = match words.as_slice() {
            ["replay_miss", "1", authority, parts @ ..] if parts.len() <= 1 => {
                MissParts::parse(parts.first().copied())
                    .map(|parts| (Call::ReplayMiss(authority.to_string(), parts), 1))
            }
            [call, n] => Call::parse(call).zip(n.parse().ok()),
            _ => None,
        };
        let Some((call, n)) = parsed else {
            let _ = hostcalls::log(
                LogLevel::Error,
                &format!("hostcall-cost: bad configuration {text:?}; want `<call> <n>`"),
            );
            return false;
        };
        let metric = (call == Call::MetricIncrement)
            .then(|| hostcalls::define_metric(MetricType::Counter, "hostcall_cost.increments").ok())
            .flatten();
        if call == Call::SharedGet {
            // Written before any request, so every read finds an existing entry.
            let _ = hostcalls::set_shared_data(SHARED_KEY, Some(&SHARED_VALUE), None);
        }
        self.plan = Some(Rc::new(Plan {
            call,
            n,
            metric,
            failed: Cell::new(false),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            plan: self.plan.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    plan: Option<Rc<Plan>>,
}

/// The two shared-data slots a miss reads (empty here, as in scenario D) and the one its
/// verdict is written to.
const MISS_SLOTS: [&str; 2] = ["bench_replay.verdict.1", "bench_replay.verdict.2"];

impl Probe {
    /// The request half of a miss, in the filter's order (src/proxy/stream.rs, then
    /// src/core/policy.rs and worker.rs): all request headers, the clock, the two cache
    /// slots, `source.address` for the body, and the callout: the same headers and JSON body
    /// (the request's key, the service id, the client address).
    fn miss_request(&self, plan: &Plan, authority: &str, parts: MissParts) -> Action {
        let req = MapType::HttpRequestHeaders;
        // The key is needed for the callout whatever the parts: one header read at least.
        let headers = if parts.reads {
            hostcalls::get_map_bytes(req).unwrap_or_default()
        } else {
            hostcalls::get_map_value_bytes(req, "authorization")
                .ok()
                .flatten()
                .map(|v| vec![("authorization".to_string(), v)])
                .unwrap_or_default()
        };
        if parts.reads {
            plan.check("replay_miss", hostcalls::get_current_time());
        }
        if parts.shared {
            for slot in MISS_SLOTS {
                plan.check("replay_miss", hostcalls::get_shared_data(slot));
            }
        }
        let source = if parts.reads {
            hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
        } else {
            None
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        let key = header("authorization")
            .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
            .unwrap_or_default();
        let ip = source
            .map(|s| {
                String::from_utf8_lossy(&s)
                    .rsplit_once(':')
                    .map_or(String::new(), |(ip, _)| ip.to_string())
            })
            .unwrap_or_default();
        let body =
            format!(r#"{{"api_key":"{key}","service_id":"ml-platform","client_ip":"{ip}"}}"#);
        let rid = header("x-request-id").unwrap_or_default();
        let call = self.dispatch_http_call(
            "auth_service",
            vec![
                (":method", "POST"),
                (":path", "/api/v1/keys/validate"),
                (":authority", authority),
                ("content-type", "application/json"),
                ("x-request-id", &rid),
            ],
            Some(body.as_bytes()),
            vec![],
            std::time::Duration::from_millis(2000),
        );
        plan.check("replay_miss", call);
        Action::Pause
    }

    /// The reply half: the reply's headers and body, the clock, the verdict's shared-data
    /// write, the identity headers, the access-log record, and the request resumed.
    fn miss_reply(&self, plan: &Plan, parts: MissParts, body_size: usize) {
        if parts.reply {
            plan.check(
                "replay_miss",
                hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders),
            );
            plan.check(
                "replay_miss",
                hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size),
            );
            plan.check("replay_miss", hostcalls::get_current_time());
        }
        if parts.shared {
            plan.check(
                "replay_miss",
                hostcalls::set_shared_data(MISS_SLOTS[0], Some(&SHARED_VALUE), None),
            );
        }
        if parts.writes {
            let req = MapType::HttpRequestHeaders;
            for (name, value) in &WARM_HEADERS {
                plan.check(
                    "replay_miss",
                    hostcalls::set_map_value(req, name, Some(value)),
                );
            }
            plan.check(
                "replay_miss",
                hostcalls::set_property(vec![ACCESS_LOG_PROPERTY], Some(WARM_RECORD.as_bytes())),
            );
        }
        plan.check("replay_miss", hostcalls::resume_http_request());
    }
}

impl Context for Probe {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _: usize) {
        if let Some(plan) = &self.plan {
            if let Call::ReplayMiss(_, parts) = &plan.call {
                self.miss_reply(plan, *parts, body_size);
            }
        }
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(plan) = self.plan.clone() else {
            return Action::Continue;
        };
        if let Call::ReplayMiss(authority, parts) = &plan.call {
            return self.miss_request(&plan, authority, *parts);
        }
        plan.run();
        Action::Continue
    }
}

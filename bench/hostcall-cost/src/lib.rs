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
        let mut words = text.split_whitespace();
        let (Some(call), Some(n), None) = (
            words.next().and_then(Call::parse),
            words.next().and_then(|w| w.parse().ok()),
            words.next(),
        ) else {
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

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(plan) = &self.plan {
            plan.run();
        }
        Action::Continue
    }
}

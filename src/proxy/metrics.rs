//! Counters Envoy exports as `wasmcustom.hokusai_auth.*`.

use crate::core::decision::Route;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

pub struct Metrics {
    allowed: [Option<u32>; 6],
    denied_401: Option<u32>,
    denied_403: Option<u32>,
    denied_429: Option<u32>,
    denied_503: Option<u32>,
    callouts: Option<u32>,
}

const ROUTES: [(Route, &str); 6] = [
    (Route::Exempt, "exempt"),
    (Route::Preflight, "preflight"),
    (Route::Internal, "internal"),
    (Route::CachedKey, "cached_key"),
    (Route::ValidatedKey, "validated_key"),
    (Route::StaleKey, "stale_key"),
];

fn counter(name: &str) -> Option<u32> {
    hostcalls::define_metric(MetricType::Counter, &format!("hokusai_auth.{name}")).ok()
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Metrics {
    pub fn define() -> Self {
        Self {
            allowed: ROUTES.map(|(_, name)| counter(&format!("allowed.{name}"))),
            denied_401: counter("denied.401"),
            denied_403: counter("denied.403"),
            denied_429: counter("denied.429"),
            denied_503: counter("denied.503"),
            callouts: counter("callouts"),
        }
    }

    pub fn allowed(&self, route: Route) {
        if let Some(i) = ROUTES.iter().position(|(r, _)| *r == route) {
            bump(self.allowed[i]);
        }
    }

    pub fn denied(&self, status: u16) {
        bump(match status {
            401 => self.denied_401,
            403 => self.denied_403,
            429 => self.denied_429,
            _ => self.denied_503,
        });
    }

    pub fn callout(&self) {
        bump(self.callouts);
    }
}

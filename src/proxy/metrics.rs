//! The filter's metrics in Envoy. Label values travel in the stat names
//! (`hokusai_auth.decisions.outcome=401`) and `stats_tags` in the Envoy config turns them into
//! Prometheus labels; Envoy prefixes every name with `wasmcustom.`. The core counts in VM
//! memory; [`Metrics::flush`] sends Envoy the differences, once per tick.

use crate::core::telemetry::{AuthPath, CalloutFailure, Outcome, Tally};
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;
use std::collections::HashMap;

type Id = Option<u32>;

pub struct Metrics {
    requests: [Id; 3],
    decisions: [Id; 6],
    cache: [Id; 2],
    callouts: Id,
    callout_retries: Id,
    callout_failures: [Id; 5],
    callout_cap_rejections: Id,
    coalesced: Id,
    mtls_fallbacks: Id,
    rate_limit_uncounted: Id,
    callout_latency: Id,
    peer_cert_not_after: HashMap<String, Id>,
    /// What Envoy has been told so far.
    sent: Tally,
}

fn define(kind: MetricType, name: &str) -> Id {
    hostcalls::define_metric(kind, &format!("hokusai_auth.{name}")).ok()
}

fn peer_cert_gauge(identity: &str) -> Id {
    define(
        MetricType::Gauge,
        &format!("peer_cert_not_after.identity={identity}"),
    )
}

fn counter(name: &str) -> Id {
    define(MetricType::Counter, name)
}

fn add(id: Id, delta: u64) {
    if let (Some(id), true) = (id, delta > 0) {
        let _ = hostcalls::increment_metric(id, delta.min(i64::MAX as u64) as i64);
    }
}

fn add_all<const N: usize>(ids: &[Id; N], now: &[u64; N], sent: &[u64; N]) {
    for i in 0..N {
        add(ids[i], now[i].saturating_sub(sent[i]));
    }
}

impl Metrics {
    /// Every counter and label value up front (so a rate over the first increment is
    /// right), and one expiry gauge per allow-listed identity, 0 until a certificate is seen.
    pub fn define(identities: &[String]) -> Self {
        Self {
            requests: AuthPath::ALL.map(|p| counter(&format!("requests.path={}", p.label()))),
            decisions: Outcome::ALL.map(|o| counter(&format!("decisions.outcome={}", o.label()))),
            cache: ["hit", "miss"].map(|r| counter(&format!("cache.result={r}"))),
            callouts: counter("callouts"),
            callout_retries: counter("callout_retries"),
            callout_failures: CalloutFailure::ALL
                .map(|r| counter(&format!("callout_failures.reason={}", r.label()))),
            callout_cap_rejections: counter("callout_cap_rejections"),
            coalesced: counter("coalesced"),
            mtls_fallbacks: counter("mtls_fallbacks"),
            rate_limit_uncounted: counter("rate_limit_uncounted"),
            callout_latency: define(MetricType::Histogram, "callout_latency_ms"),
            peer_cert_not_after: identities
                .iter()
                .map(|id| (id.clone(), peer_cert_gauge(id)))
                .collect(),
            sent: Tally::default(),
        }
    }

    /// Sends Envoy what changed since the last flush; `latencies_ms` is drained.
    pub fn flush(&mut self, tally: &mut Tally, cert_changes: Vec<(String, i64)>) {
        let sent = &self.sent;
        add_all(&self.requests, &tally.requests, &sent.requests);
        add_all(&self.decisions, &tally.decisions, &sent.decisions);
        add_all(&self.cache, &tally.cache, &sent.cache);
        add_all(
            &self.callout_failures,
            &tally.callout_failures,
            &sent.callout_failures,
        );
        add(self.callouts, tally.callouts - sent.callouts);
        add(
            self.callout_retries,
            tally.callout_retries - sent.callout_retries,
        );
        add(
            self.callout_cap_rejections,
            tally.callout_cap_rejections - sent.callout_cap_rejections,
        );
        add(self.coalesced, tally.coalesced - sent.coalesced);
        add(
            self.mtls_fallbacks,
            tally.mtls_fallbacks - sent.mtls_fallbacks,
        );
        add(
            self.rate_limit_uncounted,
            tally.rate_limit_uncounted - sent.rate_limit_uncounted,
        );
        if let Some(id) = self.callout_latency {
            for ms in tally.latencies_ms.drain(..) {
                let _ = hostcalls::record_metric(id, ms);
            }
        }
        tally.latencies_ms.clear();
        for (identity, not_after) in cert_changes {
            let id = *self
                .peer_cert_not_after
                .entry(identity)
                .or_insert_with_key(|identity| {
                    define(
                        MetricType::Gauge,
                        &format!("peer_cert_not_after.identity={identity}"),
                    )
                });
            if let Some(id) = id {
                let _ = hostcalls::record_metric(id, not_after.max(0) as u64);
            }
        }
        self.sent = tally.clone();
    }
}

//! The filter's metrics in Envoy. Label values travel in the stat names
//! (`hokusai_auth.decisions.outcome=401`) and `stats_tags` in the Envoy config turns them into
//! Prometheus labels; Envoy prefixes every name with `wasmcustom.`. The core counts in VM
//! memory; [`Metrics::flush`] sends Envoy the differences, once per tick. A metric Envoy
//! would not define or update is skipped: counts are worth no failed request.

use super::abi;
use super::host;
use crate::core::output::labels::{AuthPath, CalloutFailure, Outcome};
use crate::core::output::tally::Tally;
use crate::core::worker::Worker;
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
    callouts_abandoned: Id,
    mtls_fallbacks: Id,
    rate_limit_uncounted: Id,
    callout_latency: Id,
    vm_memory: Id,
    peer_cert_not_after: HashMap<String, Id>,
    /// What Envoy has been told so far.
    sent: Tally,
}

fn define(kind: u32, name: &str) -> Id {
    host::define_metric(kind, &format!("hokusai_auth.{name}")).ok()
}

fn counter(name: &str) -> Id {
    define(abi::COUNTER, name)
}

fn peer_cert_gauge(identity: &str) -> Id {
    define(
        abi::GAUGE,
        &format!("peer_cert_not_after.identity={identity}"),
    )
}

fn add(id: Id, delta: u64) {
    if let (Some(id), true) = (id, delta > 0) {
        let _ = host::increment_metric(id, delta.min(i64::MAX as u64) as i64);
    }
}

fn add_all<const N: usize>(ids: &[Id; N], now: &[u64; N], sent: &[u64; N]) {
    for ((id, now), sent) in ids.iter().zip(now).zip(sent) {
        add(*id, now.saturating_sub(*sent));
    }
}

/// The VM's linear memory, in bytes: what a leak would show first.
fn vm_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        (core::arch::wasm32::memory_size(0) as u64) * 65_536
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
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
            callouts_abandoned: counter("callouts_abandoned"),
            mtls_fallbacks: counter("mtls_fallbacks"),
            rate_limit_uncounted: counter("rate_limit_uncounted"),
            callout_latency: define(abi::HISTOGRAM, "callout_latency_ms"),
            vm_memory: define(abi::GAUGE, "vm_memory_bytes"),
            peer_cert_not_after: identities
                .iter()
                .map(|id| (id.clone(), peer_cert_gauge(id)))
                .collect(),
            sent: Tally::default(),
        }
    }

    /// Sends Envoy what changed since the last flush.
    pub fn flush(&mut self, worker: &mut Worker) {
        let report = worker.report();
        let (tally, sent) = (report.tally, &self.sent);
        add_all(&self.requests, &tally.requests, &sent.requests);
        add_all(&self.decisions, &tally.decisions, &sent.decisions);
        add_all(&self.cache, &tally.cache, &sent.cache);
        add_all(
            &self.callout_failures,
            &tally.callout_failures,
            &sent.callout_failures,
        );
        for (id, now, before) in [
            (self.callouts, tally.callouts, sent.callouts),
            (
                self.callout_retries,
                tally.callout_retries,
                sent.callout_retries,
            ),
            (
                self.callout_cap_rejections,
                tally.callout_cap_rejections,
                sent.callout_cap_rejections,
            ),
            (self.coalesced, tally.coalesced, sent.coalesced),
            (
                self.callouts_abandoned,
                tally.callouts_abandoned,
                sent.callouts_abandoned,
            ),
            (
                self.mtls_fallbacks,
                tally.mtls_fallbacks,
                sent.mtls_fallbacks,
            ),
            (
                self.rate_limit_uncounted,
                tally.rate_limit_uncounted,
                sent.rate_limit_uncounted,
            ),
        ] {
            add(id, now.saturating_sub(before));
        }
        if let Some(id) = self.callout_latency {
            for ms in report.latencies_ms {
                let _ = host::record_metric(id, ms);
            }
        }
        if let Some(id) = self.vm_memory {
            let _ = host::record_metric(id, vm_memory_bytes());
        }
        for (identity, not_after) in report.cert_changes {
            let id = *self
                .peer_cert_not_after
                .entry(identity)
                .or_insert_with_key(|identity| peer_cert_gauge(identity));
            if let Some(id) = id {
                let _ = host::record_metric(id, not_after.max(0) as u64);
            }
        }
        self.sent = tally.clone();
    }
}

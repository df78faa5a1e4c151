//! What the filter counts: decisions by path, outcome and cache use, and callouts. Counted in
//! VM memory; the adapter sends Envoy the difference on a tick, so a request costs no metric
//! host call.

use super::labels::{AuthPath, CacheUse, CalloutFailure, Facts, Outcome};

/// Most callout latencies kept between two flushes; more than that in one tick are dropped
/// from the histogram (never from the counters).
pub const MAX_LATENCY_SAMPLES: usize = 4096;

/// Counts since the VM started; the adapter sends Envoy the difference at each flush.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub requests: [u64; 3],
    pub decisions: [u64; 6],
    /// hit, miss
    pub cache: [u64; 2],
    pub callouts: u64,
    pub callout_retries: u64,
    pub callout_failures: [u64; 5],
    pub callout_cap_rejections: u64,
    pub coalesced: u64,
    /// Callouts that settled after every request waiting on them had gone (their clients
    /// hung up): the verdict went to the cache alone.
    pub callouts_abandoned: u64,
    pub mtls_fallbacks: u64,
    /// Rate-limited keys let through uncounted: both their counter slots were taken.
    pub rate_limit_uncounted: u64,
    /// Callout round trips (ms) not yet flushed.
    pub latencies_ms: Vec<u64>,
}

impl Tally {
    pub fn decided(&mut self, facts: &Facts) {
        let path = AuthPath::ALL.iter().position(|p| *p == facts.path);
        let outcome = Outcome::ALL.iter().position(|o| *o == facts.outcome);
        if let (Some(p), Some(o)) = (path, outcome) {
            self.requests[p] += 1;
            self.decisions[o] += 1;
        }
        match facts.cache {
            CacheUse::Hit => self.cache[0] += 1,
            CacheUse::Miss | CacheUse::Stale => self.cache[1] += 1,
            CacheUse::None => {}
        }
    }

    pub fn callout_failed(&mut self, reason: CalloutFailure) {
        if let Some(i) = CalloutFailure::ALL.iter().position(|r| *r == reason) {
            self.callout_failures[i] += 1;
        }
    }

    pub fn latency(&mut self, ms: u64) {
        if self.latencies_ms.len() < MAX_LATENCY_SAMPLES {
            self.latencies_ms.push(ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::labels::AuthMethod;
    use super::*;

    #[test]
    fn decisions_count_by_path_outcome_and_cache() {
        let mut tally = Tally::default();
        tally.decided(&Facts {
            path: AuthPath::External,
            method: AuthMethod::ApiKey,
            outcome: Outcome::Stale,
            cache: CacheUse::Stale,
        });
        tally.decided(&Facts {
            path: AuthPath::Internal,
            method: AuthMethod::Mtls,
            outcome: Outcome::Allow,
            cache: CacheUse::None,
        });
        assert_eq!(tally.requests, [1, 1, 0]);
        assert_eq!(tally.decisions, [1, 1, 0, 0, 0, 0]);
        assert_eq!(tally.cache, [0, 1]);
        tally.callout_failed(CalloutFailure::Reset);
        assert_eq!(tally.callout_failures, [0, 1, 0, 0, 0]);
        for _ in 0..MAX_LATENCY_SAMPLES + 5 {
            tally.latency(1);
        }
        assert_eq!(tally.latencies_ms.len(), MAX_LATENCY_SAMPLES);
    }
}

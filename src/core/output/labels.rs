//! What each decision tells operators: the labels of its metrics and the non-secret facts the
//! access log shows. Counted in VM memory; the adapter flushes the counts to Envoy on a tick,
//! so a request costs no metric host call.

/// Which way a request came in (the `path` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthPath {
    Internal,
    External,
    Exempt,
}

/// Which credential decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    None,
    Mtls,
    ApiKey,
    Jwt,
}

/// The final decision (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Allowed on a stale verdict while the auth service was failing.
    Stale,
    Status401,
    Status403,
    Status429,
    Status503,
}

/// Where the verdict came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// No verdict was needed (exempt, internal, refused before any lookup).
    None,
    Hit,
    Miss,
    Stale,
}

/// Why a callout gave no usable verdict (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutFailure {
    Timeout,
    Reset,
    ServerError,
    BadReply,
    Dispatch,
}

impl AuthPath {
    pub const ALL: [AuthPath; 3] = [AuthPath::Internal, AuthPath::External, AuthPath::Exempt];

    pub fn label(self) -> &'static str {
        match self {
            AuthPath::Internal => "internal",
            AuthPath::External => "external",
            AuthPath::Exempt => "exempt",
        }
    }
}

impl AuthMethod {
    pub fn label(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Mtls => "mtls",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
        }
    }
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Allow,
        Outcome::Stale,
        Outcome::Status401,
        Outcome::Status403,
        Outcome::Status429,
        Outcome::Status503,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Stale => "stale",
            Outcome::Status401 => "401",
            Outcome::Status403 => "403",
            Outcome::Status429 => "429",
            Outcome::Status503 => "503",
        }
    }

    pub fn of_status(status: u16) -> Outcome {
        match status {
            401 => Outcome::Status401,
            403 => Outcome::Status403,
            429 => Outcome::Status429,
            _ => Outcome::Status503,
        }
    }
}

impl CacheUse {
    pub fn label(self) -> &'static str {
        match self {
            CacheUse::None => "none",
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Stale => "stale",
        }
    }
}

impl CalloutFailure {
    pub const ALL: [CalloutFailure; 5] = [
        CalloutFailure::Timeout,
        CalloutFailure::Reset,
        CalloutFailure::ServerError,
        CalloutFailure::BadReply,
        CalloutFailure::Dispatch,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CalloutFailure::Timeout => "timeout",
            CalloutFailure::Reset => "reset",
            CalloutFailure::ServerError => "5xx",
            CalloutFailure::BadReply => "bad_reply",
            CalloutFailure::Dispatch => "dispatch",
        }
    }
}

/// The labels of one decided request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub path: AuthPath,
    pub method: AuthMethod,
    pub outcome: Outcome,
    pub cache: CacheUse,
}

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

//! Failure modes the dev auth service can be told to show, so tests can check
//! how the filter copes with a sick auth service.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Applies to the validate and ext_authz endpoints only (never to `/__dev/*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Answer with this status and a JSON `detail`, whatever the key.
    Status(u16),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Drop the connection without writing a response.
    CloseConnection,
    /// Answer 429 with `retry-after: retry_after_s`.
    RateLimited { retry_after_s: u64 },
    /// Hold each call until this many are held (or [`GATHER_TIMEOUT`] passes), then answer
    /// them all at once: replies that reach the caller's workers at the same moment.
    Gather(u32),
    /// Hold each call until the test releases them all (`AuthService::release_held`), or
    /// [`HOLD_TIMEOUT`] passes; then answer normally. A reply the test decides the moment of.
    Hold,
}

/// The longest a `Gather` call waits for the others.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest a `Hold` call is held.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(60);

/// JSON form used by `POST /__dev/fault` and `GET /__dev/stats`, e.g.
/// `{"fault":"slow","delay_ms":2500}` or `{"fault":"status","status":500}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultSpec {
    None,
    Slow { delay_ms: u64 },
    Status { status: u16 },
    Garbage,
    CloseConnection,
    RateLimited { retry_after_s: u64 },
    Gather { calls: u32 },
    Hold,
}

impl From<FaultSpec> for Fault {
    fn from(spec: FaultSpec) -> Self {
        match spec {
            FaultSpec::None => Fault::None,
            FaultSpec::Slow { delay_ms } => Fault::Slow(Duration::from_millis(delay_ms)),
            FaultSpec::Status { status } => Fault::Status(status),
            FaultSpec::Garbage => Fault::Garbage,
            FaultSpec::CloseConnection => Fault::CloseConnection,
            FaultSpec::RateLimited { retry_after_s } => Fault::RateLimited { retry_after_s },
            FaultSpec::Gather { calls } => Fault::Gather(calls),
            FaultSpec::Hold => Fault::Hold,
        }
    }
}

impl From<Fault> for FaultSpec {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::None => FaultSpec::None,
            Fault::Slow(d) => FaultSpec::Slow {
                delay_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Fault::Status(status) => FaultSpec::Status { status },
            Fault::Garbage => FaultSpec::Garbage,
            Fault::CloseConnection => FaultSpec::CloseConnection,
            Fault::RateLimited { retry_after_s } => FaultSpec::RateLimited { retry_after_s },
            Fault::Gather(calls) => FaultSpec::Gather { calls },
            Fault::Hold => FaultSpec::Hold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_round_trips() {
        for (json, fault) in [
            (r#"{"fault":"none"}"#, Fault::None),
            (
                r#"{"fault":"slow","delay_ms":1500}"#,
                Fault::Slow(Duration::from_millis(1500)),
            ),
            (r#"{"fault":"status","status":503}"#, Fault::Status(503)),
            (r#"{"fault":"garbage"}"#, Fault::Garbage),
            (r#"{"fault":"close_connection"}"#, Fault::CloseConnection),
            (
                r#"{"fault":"rate_limited","retry_after_s":7}"#,
                Fault::RateLimited { retry_after_s: 7 },
            ),
            (r#"{"fault":"gather","calls":2}"#, Fault::Gather(2)),
            (r#"{"fault":"hold"}"#, Fault::Hold),
        ] {
            let spec: FaultSpec = serde_json::from_str(json).unwrap();
            assert_eq!(Fault::from(spec.clone()), fault);
            assert_eq!(
                serde_json::to_string(&FaultSpec::from(fault)).unwrap(),
                json
            );
        }
        assert!(serde_json::from_str::<FaultSpec>(r#"{"fault":"slow"}"#).is_err());
        assert!(serde_json::from_str::<FaultSpec>(r#"{"fault":"explode"}"#).is_err());
    }
}

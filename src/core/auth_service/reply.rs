//! Reading the auth service's reply to `POST /api/v1/keys/validate`: first whether it came
//! from the auth service at all ([`CalloutReply`]), then what it means ([`interpret`]).
//! Anything we do not fully understand is `Unavailable` (503), never an allow.

use crate::core::text::{is_header_safe, is_json_object, is_token, MAX_HEADER_VALUE_LEN};
use crate::core::verdict::{Denial, KeyGrant, Verdict};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Replies larger than this are not read at all: a validation verdict is a few hundred bytes.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;
const DEFAULT_RETRY_AFTER_S: u64 = 60;

/// The auth service's reply as Envoy delivered it; `status` None when Envoy delivered no
/// response at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct CalloutReply<'a> {
    pub status: Option<u16>,
    pub body: &'a [u8],
    pub retry_after: Option<&'a [u8]>,
    /// The reply carries `x-envoy-upstream-service-time`: it came from the auth service.
    pub from_upstream: bool,
}

impl CalloutReply<'_> {
    /// Envoy 1.40 answers for an auth service it could not reach: a refused, reset or
    /// closed connection becomes its router's 503 (`upstream connect error or disconnect/
    /// reset before headers...`) and a timeout its 504 (`upstream request timeout`), both
    /// without the `x-envoy-upstream-service-time` every real response through the router
    /// carries. Those mean "no reply", and say which kind: the body, not the time taken,
    /// tells a timeout (Envoy's timer and the clock the filter reads can differ by a few ms).
    pub fn envoys_own(&self) -> Option<NoReply> {
        if self.from_upstream {
            return None;
        }
        match self.status {
            Some(503)
                if self
                    .body
                    .starts_with(b"upstream connect error or disconnect/reset before headers") =>
            {
                Some(NoReply::Reset)
            }
            Some(504) if self.body == b"upstream request timeout" => Some(NoReply::Timeout),
            _ => None,
        }
    }

    /// Does the adapter need to look for `x-envoy-upstream-service-time`? Only for the
    /// statuses Envoy answers with itself.
    pub fn may_be_envoys_own(status: Option<u16>) -> bool {
        matches!(status, Some(503 | 504))
    }
}

/// Why Envoy delivered no reply from the auth service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {
    Reset,
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationOutcome {
    Verdict(Verdict),
    RateLimited { retry_after_s: u64 },
    Unavailable(&'static str),
}

#[derive(Deserialize)]
struct ReplyBody {
    /// Absent (200 then means valid), or a boolean; `null` or anything else is unreadable,
    /// so these two keep whatever the reply held, `null` included.
    #[serde(default, deserialize_with = "present")]
    valid: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    service_id: Option<Value>,
    key_id: Option<String>,
    user_id: Option<String>,
    scopes: Option<Vec<String>>,
    rate_limit_per_hour: Option<u64>,
    expires_at: Option<String>,
}

/// A member that is in the reply, whatever its value (serde reads `null` as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `status` is None when Envoy delivered no reply (timeout, reset, refused connection);
/// `service_id` is ours: a key the reply says was issued for another service is refused.
pub fn interpret(
    status: Option<u16>,
    body: &[u8],
    retry_after: Option<&[u8]>,
    now: i64,
    service_id: &str,
) -> ValidationOutcome {
    use ValidationOutcome::*;
    match status {
        None => Unavailable("no reply (timeout or connection failure)"),
        Some(200) => interpret_ok(body, now, service_id),
        Some(401) => Verdict(self::Verdict::Deny(Denial::Invalid)),
        Some(403) => Verdict(self::Verdict::Deny(Denial::Forbidden)),
        Some(429) => RateLimited {
            retry_after_s: retry_after
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_RETRY_AFTER_S, |s| s.clamp(1, 3600)),
        },
        Some(500..=599) => Unavailable("auth service error status"),
        Some(_) => Unavailable("unexpected auth service status"),
    }
}

fn interpret_ok(body: &[u8], now: i64, service_id: &str) -> ValidationOutcome {
    use ValidationOutcome::*;
    if body.len() > MAX_REPLY_BYTES {
        return Unavailable("reply too large");
    }
    if !is_json_object(body) {
        return Unavailable("reply is not a JSON object");
    }
    let Ok(reply) = serde_json::from_slice::<ReplyBody>(body) else {
        return Unavailable("unparseable reply");
    };
    match reply.valid {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Verdict(self::Verdict::Deny(Denial::Invalid)),
        Some(_) => return Unavailable("reply has a `valid` that is not a boolean"),
    }
    match &reply.service_id {
        None => {}
        Some(Value::String(id)) if id == service_id => {}
        Some(Value::String(_)) => return Verdict(self::Verdict::Deny(Denial::Forbidden)),
        Some(_) => return Unavailable("reply has a `service_id` that is not a string"),
    }
    let (Some(key_id), Some(user_id)) = (reply.key_id, reply.user_id) else {
        return Unavailable("reply lacks key_id or user_id");
    };
    if !is_header_safe(&key_id) || !is_header_safe(&user_id) {
        return Unavailable("reply has an unusable key_id or user_id");
    }
    let scopes = reply.scopes.unwrap_or_default();
    if !scopes
        .iter()
        .all(|s| s.len() <= MAX_HEADER_VALUE_LEN && is_token(s.as_bytes()))
    {
        return Unavailable("reply has an unusable scope");
    }
    let expires_at = match reply.expires_at.as_deref().map(hokusai_rfc3339::parse) {
        None => None,
        Some(None) => return Unavailable("reply has an unreadable expires_at"),
        Some(Some(at)) if at <= now => return Verdict(self::Verdict::Deny(Denial::Invalid)),
        Some(Some(at)) => Some(at),
    };
    Verdict(self::Verdict::Allow(KeyGrant {
        key_id,
        user_id,
        scopes,
        rate_limit_per_hour: reply.rate_limit_per_hour,
        expires_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::ValidationOutcome::*;
    use super::*;

    const NOW: i64 = 1_795_435_200; // 2026-11-23T12:00:00Z
    const SERVICE: &str = "ml-platform";

    fn ok(body: &str) -> ValidationOutcome {
        interpret(Some(200), body.as_bytes(), None, NOW, SERVICE)
    }

    #[test]
    fn full_allow_reply() {
        let out = ok(
            r#"{"valid": true, "key_id": "k1", "user_id": "u1", "service_id": "ml-platform",
            "scopes": ["mlflow:read"], "rate_limit_per_hour": 1000,
            "expires_at": "2026-11-23T13:00:00Z", "extra": {"ignored": true}}"#,
        );
        assert_eq!(
            out,
            Verdict(super::Verdict::Allow(KeyGrant {
                key_id: "k1".into(),
                user_id: "u1".into(),
                scopes: vec!["mlflow:read".into()],
                rate_limit_per_hour: Some(1000),
                expires_at: Some(NOW + 3600),
            }))
        );
    }

    #[test]
    fn valid_may_be_absent_and_optional_fields_null() {
        let out = ok(
            r#"{"key_id": "k1", "user_id": "u1", "rate_limit_per_hour": null, "expires_at": null}"#,
        );
        assert!(
            matches!(out, Verdict(super::Verdict::Allow(g)) if g.scopes.is_empty() && g.expires_at.is_none())
        );
    }

    #[test]
    fn denials() {
        let deny = |d| Verdict(super::Verdict::Deny(d));
        assert_eq!(ok(r#"{"valid": false}"#), deny(Denial::Invalid));
        // A key issued for another service, however valid, is not ours to honour.
        assert_eq!(
            ok(r#"{"valid": true, "key_id": "k", "user_id": "u", "service_id": "billing"}"#),
            deny(Denial::Forbidden)
        );
        assert_eq!(
            ok(r#"{"key_id": "k", "user_id": "u", "service_id": "ML-PLATFORM"}"#),
            deny(Denial::Forbidden)
        );
        assert_eq!(
            interpret(Some(401), b"", None, NOW, SERVICE),
            deny(Denial::Invalid)
        );
        assert_eq!(
            interpret(Some(403), b"x", None, NOW, SERVICE),
            deny(Denial::Forbidden)
        );
        assert_eq!(
            ok(r#"{"key_id": "k", "user_id": "u", "expires_at": "2026-11-23T11:59:59Z"}"#),
            deny(Denial::Invalid)
        );
    }

    #[test]
    fn rate_limited_reads_retry_after() {
        assert_eq!(
            interpret(Some(429), b"", Some(b" 17 "), NOW, SERVICE),
            RateLimited { retry_after_s: 17 }
        );
        assert_eq!(
            interpret(Some(429), b"", Some(b"soon"), NOW, SERVICE),
            RateLimited { retry_after_s: 60 }
        );
        assert_eq!(
            interpret(Some(429), b"", None, NOW, SERVICE),
            RateLimited { retry_after_s: 60 }
        );
        assert_eq!(
            interpret(Some(429), b"", Some(b"0"), NOW, SERVICE),
            RateLimited { retry_after_s: 1 }
        );
    }

    #[test]
    fn everything_else_is_unavailable() {
        let huge = format!(
            r#"{{"key_id": "k", "user_id": "u", "pad": "{}"}}"#,
            "x".repeat(MAX_REPLY_BYTES)
        );
        let cases: Vec<ValidationOutcome> = vec![
            interpret(None, b"", None, NOW, SERVICE),
            interpret(Some(500), b"", None, NOW, SERVICE),
            interpret(Some(503), b"{}", None, NOW, SERVICE),
            interpret(Some(404), b"", None, NOW, SERVICE),
            interpret(Some(302), b"", None, NOW, SERVICE),
            ok(""),
            ok("<html>oops</html>"),
            ok(r#"{"valid": true, "key_id": "k"#),
            ok("\u{0}\u{1}"),
            ok(r#"{"valid": "yes", "key_id": "k", "user_id": "u"}"#),
            ok(r#"{"valid": null, "key_id": "k", "user_id": "u"}"#),
            ok(r#"{"valid": 1, "key_id": "k", "user_id": "u"}"#),
            ok(r#"{"valid": true, "valid": true, "key_id": "k", "user_id": "u"}"#),
            ok(r#"{"key_id": "k", "user_id": "u", "service_id": null}"#),
            ok(r#"{"key_id": "k", "user_id": "u", "service_id": ["ml-platform"]}"#),
            ok(r#"{"valid": true}"#),
            ok(r#"{"key_id": "k", "user_id": null}"#),
            ok(r#"{"key_id": 5, "user_id": "u"}"#),
            ok(r#"{"key_id": "k", "user_id": "u\r\nx-admin: 1"}"#),
            ok(r#"{"key_id": "", "user_id": "u"}"#),
            ok(r#"{"key_id": "k", "user_id": "u", "scopes": ["a b"]}"#),
            ok(r#"{"key_id": "k", "user_id": "u", "scopes": "mlflow:read"}"#),
            ok(r#"{"key_id": "k", "user_id": "u", "rate_limit_per_hour": -1}"#),
            ok(r#"{"key_id": "k", "user_id": "u", "expires_at": "tomorrow"}"#),
            ok(&huge),
            // An array would fill the fields by position.
            ok(r#"[true, "k", "u", ["mlflow:write"], null, null]"#),
            ok(r#"[false]"#),
        ];
        for (i, out) in cases.into_iter().enumerate() {
            assert!(matches!(out, Unavailable(_)), "case {i}: {out:?}");
        }
        assert!(matches!(
            interpret(Some(200), b"\xff\xfe\x00garbage", None, NOW, SERVICE),
            Unavailable(_)
        ));
    }
}

//! Replies the filter makes itself (contract section 5): JSON `{"detail": ...}`.

use super::json_writer::Object;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub detail: &'static str,
    pub required_scope: Option<String>,
    pub retry_after_s: Option<u64>,
    /// 401s carry a `www-authenticate` challenge.
    pub challenge: bool,
}

impl LocalReply {
    fn new(status: u16, detail: &'static str) -> Self {
        Self {
            status,
            detail,
            required_scope: None,
            retry_after_s: None,
            challenge: status == 401,
        }
    }

    pub fn key_required() -> Self {
        Self::new(401, "API key required")
    }

    pub fn key_malformed() -> Self {
        Self::new(401, "Invalid API key format")
    }

    pub fn key_invalid() -> Self {
        Self::new(401, "Invalid or expired API key")
    }

    /// A user token that Envoy did not verify, or the auth service refused.
    pub fn token_invalid() -> Self {
        Self::new(401, "Invalid or expired token")
    }

    pub fn forbidden() -> Self {
        Self::new(403, "Insufficient permissions")
    }

    pub fn scope_missing(scope: &str) -> Self {
        Self {
            required_scope: Some(scope.to_string()),
            ..Self::forbidden()
        }
    }

    pub fn rate_limited(retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(429, "Rate limit exceeded")
        }
    }

    pub fn unavailable() -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(503, "Authentication service unavailable")
        }
    }

    pub fn body(&self) -> Vec<u8> {
        let mut body = Object::with_capacity(96);
        body.field("detail", self.detail);
        if let Some(scope) = &self.required_scope {
            body.field("required_scope", scope);
        }
        body.finish().into_bytes()
    }

    /// Response headers; the adapter adds the request's `x-request-id`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("content-type", "application/json".to_string())];
        if self.challenge {
            headers.push(("www-authenticate", "Bearer realm=\"hokusai\"".to_string()));
        }
        if let Some(seconds) = self.retry_after_s {
            headers.push(("retry-after", seconds.to_string()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_headers_follow_the_contract() {
        let r = LocalReply::key_required();
        assert_eq!(
            (r.status, r.body()),
            (401, br#"{"detail":"API key required"}"#.to_vec())
        );
        assert!(r
            .headers()
            .contains(&("www-authenticate", "Bearer realm=\"hokusai\"".into())));
        let r = LocalReply::scope_missing("mlflow:write");
        assert_eq!(
            r.body(),
            br#"{"detail":"Insufficient permissions","required_scope":"mlflow:write"}"#.to_vec()
        );
        assert!(!r.headers().iter().any(|(n, _)| *n == "www-authenticate"));
        let r = LocalReply::unavailable();
        assert_eq!(r.status, 503);
        assert!(r.headers().contains(&("retry-after", "1".into())));
        assert!(LocalReply::rate_limited(42)
            .headers()
            .contains(&("retry-after", "42".into())));
    }
}

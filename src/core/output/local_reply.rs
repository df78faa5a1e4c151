//! Replies the filter makes itself (contract section 5): JSON `{"detail": ...}`, which also
//! speaks MLflow's error dialect (`error_code`, `message`), so the MLflow client names the
//! real cause (`PERMISSION_DENIED: ...`) instead of reporting a server error.

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

    /// MLflow's name for the status, as its client maps it back to an exception.
    pub fn error_code(&self) -> &'static str {
        match self.status {
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            429 => "REQUEST_LIMIT_EXCEEDED",
            _ => "TEMPORARILY_UNAVAILABLE",
        }
    }

    /// `{"detail", "error_code", "message"[, "required_scope"]}`: a few short fields written
    /// by hand; `message` is the detail, naming the scope on a scope miss.
    pub fn body(&self) -> Vec<u8> {
        let scope = self.required_scope.as_deref();
        let mut message = String::with_capacity(self.detail.len() + 32);
        message.push_str(self.detail);
        if let Some(scope) = scope {
            message.push_str(" (requires ");
            message.push_str(scope);
            message.push(')');
        }
        let mut body = Object::with_capacity(64 + 2 * message.len());
        body.field("detail", self.detail)
            .field("error_code", self.error_code())
            .field("message", &message);
        if let Some(scope) = scope {
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
            (
                401,
                br#"{"detail":"API key required","error_code":"UNAUTHENTICATED","message":"API key required"}"#
                    .to_vec()
            )
        );
        assert!(r
            .headers()
            .contains(&("www-authenticate", "Bearer realm=\"hokusai\"".into())));
        let r = LocalReply::scope_missing("mlflow:write");
        assert_eq!(
            r.body(),
            br#"{"detail":"Insufficient permissions","error_code":"PERMISSION_DENIED","message":"Insufficient permissions (requires mlflow:write)","required_scope":"mlflow:write"}"#
                .to_vec()
        );
        assert!(!r.headers().iter().any(|(n, _)| *n == "www-authenticate"));
        let r = LocalReply::unavailable();
        assert_eq!(r.status, 503);
        assert!(r.headers().contains(&("retry-after", "1".into())));
        assert!(LocalReply::rate_limited(42)
            .headers()
            .contains(&("retry-after", "42".into())));
    }

    #[test]
    fn every_reply_speaks_mlflows_error_dialect() {
        let cases = [
            (LocalReply::key_required(), "UNAUTHENTICATED"),
            (LocalReply::key_malformed(), "UNAUTHENTICATED"),
            (LocalReply::key_invalid(), "UNAUTHENTICATED"),
            (LocalReply::token_invalid(), "UNAUTHENTICATED"),
            (LocalReply::forbidden(), "PERMISSION_DENIED"),
            (
                LocalReply::scope_missing("model:write"),
                "PERMISSION_DENIED",
            ),
            (LocalReply::rate_limited(7), "REQUEST_LIMIT_EXCEEDED"),
            (LocalReply::unavailable(), "TEMPORARILY_UNAVAILABLE"),
        ];
        for (reply, code) in cases {
            let body: serde_json::Value = serde_json::from_slice(&reply.body()).unwrap();
            assert_eq!(body["error_code"], code, "{body}");
            assert_eq!(body["detail"], reply.detail, "{body}");
            let want = match &reply.required_scope {
                Some(scope) => format!("{} (requires {scope})", reply.detail),
                None => reply.detail.to_string(),
            };
            assert_eq!(body["message"], want.as_str(), "{body}");
            assert_eq!(
                body.get("required_scope").and_then(|v| v.as_str()),
                reply.required_scope.as_deref()
            );
        }
    }

    #[test]
    fn a_scope_from_the_config_is_escaped_not_trusted() {
        let r = LocalReply::scope_missing("a\"b\n");
        let body: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(body["required_scope"], "a\"b\n");
        assert_eq!(
            body["message"],
            "Insufficient permissions (requires a\"b\n)"
        );
    }
}

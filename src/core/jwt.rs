//! The claims of a user token that Envoy's jwt_authn has verified (signature, expiry, issuer,
//! audience). We never verify here; we only read the very token that was verified, and only
//! after Envoy's dynamic metadata (which no client can set) said it was.

use base64::Engine;
use serde::Deserialize;

/// What the filter takes from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub scopes: Vec<String>,
}

#[derive(Deserialize)]
struct Payload {
    sub: Option<String>,
    /// OAuth style: space-separated.
    scope: Option<String>,
    /// Array style.
    scopes: Option<Vec<String>>,
}

const MAX_CLAIM_LEN: usize = 256;

/// The payload of a JWT-shaped token; None when it is unreadable or its `sub` or scopes
/// could not safely become headers.
pub fn claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    // serde also reads a struct from a JSON array, field by field: claims are an object.
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let p: Payload = serde_json::from_slice(&json).ok()?;
    let sub = p.sub.filter(|s| header_safe(s))?;
    let mut scopes: Vec<String> = match (p.scope, p.scopes) {
        (Some(scope), _) => scope.split_ascii_whitespace().map(String::from).collect(),
        (None, Some(list)) => list,
        (None, None) => Vec::new(),
    };
    scopes.dedup();
    if !scopes.iter().all(|s| {
        s.len() <= MAX_CLAIM_LEN && !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
    }) {
        return None;
    }
    Some(Claims { sub, scopes })
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_LEN && !s.chars().any(char::is_control) && s.trim() == s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(payload: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(payload))
    }

    #[test]
    fn scope_string_or_scopes_array() {
        assert_eq!(
            claims(&token(
                r#"{"sub":"user_123","scope":"mlflow:read  mlflow:write"}"#
            )),
            Some(Claims {
                sub: "user_123".into(),
                scopes: vec!["mlflow:read".into(), "mlflow:write".into()]
            })
        );
        assert_eq!(
            claims(&token(r#"{"sub":"u","scopes":["mlflow:read"]}"#))
                .unwrap()
                .scopes,
            vec!["mlflow:read"]
        );
        assert!(claims(&token(r#"{"sub":"u"}"#)).unwrap().scopes.is_empty());
    }

    #[test]
    fn unusable_claims_are_refused() {
        for payload in [
            r#"{"scope":"mlflow:read"}"#,
            r#"{"sub":""}"#,
            r#"{"sub":"u\r\nx-admin: 1"}"#,
            r#"{"sub":5}"#,
            r#"{"sub":"u","scopes":["a b"]}"#,
            r#"{"sub":"u","scopes":"mlflow:read"}"#,
            "not json",
            r#"["u", null, ["mlflow:write"]]"#,
        ] {
            assert_eq!(claims(&token(payload)), None, "{payload}");
        }
        assert_eq!(claims("no-dots"), None);
        assert_eq!(claims("a.!!!.c"), None);
    }
}

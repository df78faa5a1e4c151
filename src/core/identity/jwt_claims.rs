//! The claims of a user token, as Envoy's jwt_authn verified them (signature, expiry, issuer,
//! audience). They are read from the payload jwt_authn put in dynamic metadata, which no
//! client can set, and never from the token's text: what the filter trusts is exactly what
//! was verified.
//!
//! Envoy hands the payload over as a map in proxy-wasm's pairs format: each claim's name,
//! and its value (a string as its bytes; a list as pairs again; numbers as 8-byte doubles).

use crate::core::pairs::for_each_pair;
use crate::core::text::{is_header_safe, is_token, MAX_HEADER_VALUE_LEN};

/// What the filter takes from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub scopes: Vec<String>,
}

/// `sub`, and the scopes from `scope` (RFC 6749 §3.3: space-separated) or, when there is no
/// `scope`, from a `scopes` list. None when there is no usable `sub`: one that could not
/// safely become `x-user-id`. A scope token with any other whitespace, a control byte or a
/// byte beyond ASCII is ignored, as is an empty one.
pub fn verified_claims(payload: &[u8]) -> Option<Claims> {
    let (mut sub, mut scope, mut scopes) = (None, None, None);
    for_each_pair(payload, |name, value| match name {
        b"sub" => sub = Some(value),
        b"scope" => scope = Some(value),
        b"scopes" => scopes = Some(value),
        _ => {}
    })?;
    let sub = std::str::from_utf8(sub?)
        .ok()
        .filter(|s| is_header_safe(s))?;
    let mut tokens: Vec<String> = Vec::new();
    let mut add = |token: &[u8]| {
        if is_scope_token(token) && !tokens.iter().any(|t| t.as_bytes() == token) {
            // ASCII graphic only, so valid UTF-8.
            tokens.push(String::from_utf8_lossy(token).into_owned());
        }
    };
    match (scope, scopes) {
        (Some(scope), _) => scope.split(|b| *b == b' ').for_each(&mut add),
        (None, Some(list)) => {
            // A list is pairs whose names are the items; anything else, including a list
            // malformed after its first items, holds no scopes.
            let mut items = Vec::new();
            if for_each_pair(list, |item, _| items.push(item)).is_some() {
                items.into_iter().for_each(&mut add);
            }
        }
        (None, None) => {}
    }
    Some(Claims {
        sub: sub.to_string(),
        scopes: tokens,
    })
}

fn is_scope_token(token: &[u8]) -> bool {
    token.len() <= MAX_HEADER_VALUE_LEN && is_token(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pairs::serialize;

    fn payload(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (n.as_bytes(), *v)).collect();
        serialize(&pairs)
    }

    fn list(items: &[&str]) -> Vec<u8> {
        let pairs: Vec<(&[u8], &[u8])> = items.iter().map(|i| (i.as_bytes(), &b""[..])).collect();
        serialize(&pairs)
    }

    #[test]
    fn reads_sub_and_scope_as_envoy_serializes_the_payload() {
        let exp = 1.8e9f64.to_le_bytes();
        let claims = verified_claims(&payload(&[
            ("iss", b"https://login.hokus.ai"),
            ("scope", b"mlflow:read mlflow:write"),
            ("exp", &exp),
            ("sub", b"user_123"),
        ]))
        .unwrap();
        assert_eq!(claims.sub, "user_123");
        assert_eq!(claims.scopes, vec!["mlflow:read", "mlflow:write"]);
    }

    #[test]
    fn scope_splits_on_single_spaces_only() {
        let scopes = |scope: &[u8]| {
            verified_claims(&payload(&[("sub", b"u"), ("scope", scope)]))
                .unwrap()
                .scopes
        };
        assert_eq!(scopes(b"mlflow:read\nmlflow:write"), Vec::<String>::new());
        assert_eq!(scopes(b"mlflow:read\tmlflow:write a"), vec!["a"]);
        assert_eq!(scopes(b"  mlflow:read  "), vec!["mlflow:read"]);
        assert_eq!(scopes(b"a \xc3\xa9 a b\x7f"), vec!["a"]);
        assert_eq!(scopes(b""), Vec::<String>::new());
    }

    #[test]
    fn a_scopes_list_counts_only_without_scope() {
        let items = list(&["mlflow:read", "bad item", "mlflow:read"]);
        let claims = verified_claims(&payload(&[("sub", b"u"), ("scopes", &items)])).unwrap();
        assert_eq!(claims.scopes, vec!["mlflow:read"]);
        let both = payload(&[("sub", b"u"), ("scope", b"a"), ("scopes", &items)]);
        assert_eq!(verified_claims(&both).unwrap().scopes, vec!["a"]);
        let not_a_list = payload(&[("sub", b"u"), ("scopes", b"mlflow:write")]);
        assert!(verified_claims(&not_a_list).unwrap().scopes.is_empty());
        // Whole items first, then a length that runs past the end: no scope at all.
        let mut cut = list(&["mlflow:read", "mlflow:write"]);
        cut[16..20].copy_from_slice(&200u32.to_le_bytes());
        let cut = payload(&[("sub", b"u"), ("scopes", &cut)]);
        assert!(verified_claims(&cut).unwrap().scopes.is_empty());
    }

    #[test]
    fn unusable_subjects_are_refused() {
        for sub in [
            &b""[..],
            b"u\r\nx-admin: 1",
            b" u",
            b"\xff",
            &[b'a'; MAX_HEADER_VALUE_LEN + 1],
        ] {
            assert_eq!(verified_claims(&payload(&[("sub", sub)])), None, "{sub:?}");
        }
        assert_eq!(verified_claims(&payload(&[("scope", b"a")])), None);
        assert_eq!(verified_claims(b"\x01\x00"), None, "not a pairs map");
    }
}

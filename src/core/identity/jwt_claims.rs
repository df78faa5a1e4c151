//! The claims of a user token, as Envoy's jwt_authn verified them (signature, expiry, issuer,
//! audience). They are read from the payload jwt_authn put in dynamic metadata, which no
//! client can set, and never from the token's text: what the filter trusts is exactly what
//! was verified.
//!
//! Envoy hands a metadata value over without its type: a string as its bytes, a number as
//! the 8 bytes of a double, a boolean as one byte, a list as pairs (item, empty), a map as
//! pairs (key, value), and a null not at all (the read fails). So a map of empty strings
//! reads like a list, and a list's or map's bytes, split on spaces, can hold a clean token
//! (`["x mlflow:write y"]`). Each claim is therefore read on its own and its type pinned:
//! pairs always hold NUL bytes (their terminators), which a scope string never does; a
//! number is exactly eight bytes; and a list, unlike a map, answers `<claim>/0` with its
//! first item. A claim whose type stays in doubt grants nothing.

use crate::core::pairs::for_each_pair;
use crate::core::text::{is_header_safe, is_token, MAX_HEADER_VALUE_LEN};

/// What the filter takes from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub scopes: Vec<String>,
}

/// A double's bytes; a string of exactly this length could be a number in disguise.
const NUMBER_LEN: usize = 8;

/// `sub`, and the scopes from `scope` (RFC 6749 §3.3: a string, split on single spaces) or,
/// when there is no `scope`, from a `scopes` list of strings. `read` returns the verified
/// value at a path below the payload (`["scope"]`, `["scopes", "0"]`), None when there is
/// none. None when there is no usable `sub`: one that could not safely become `x-user-id`
/// (its presence is also the proof that jwt_authn verified this request's token). A scope
/// token with any other whitespace, a control byte or a byte beyond ASCII is ignored, as is
/// an empty one; so is a `scope` of exactly eight bytes, and a list item of eight bytes: they
/// cannot be told from a number.
pub fn verified_claims(mut read: impl FnMut(&[&str]) -> Option<Vec<u8>>) -> Option<Claims> {
    let sub = read(&["sub"])?;
    let sub = std::str::from_utf8(&sub)
        .ok()
        .filter(|s| is_header_safe(s))?
        .to_string();
    let mut scopes: Vec<String> = Vec::new();
    let mut add = |token: &[u8]| {
        if is_token(token) && !scopes.iter().any(|t| t.as_bytes() == token) {
            // ASCII graphic only, so valid UTF-8.
            scopes.push(String::from_utf8_lossy(token).into_owned());
        }
    };
    if let Some(scope) = read(&["scope"]) {
        // A string only: no NUL (a list's or map's pairs, a false), not a number's length.
        if !scope.contains(&0) && scope.len() != NUMBER_LEN {
            scope
                .split(|b| *b == b' ')
                .filter(|token| token.len() <= MAX_HEADER_VALUE_LEN)
                .for_each(&mut add);
        }
    } else if let Some(list) = read(&["scopes"]) {
        // A list is pairs whose values are all empty; a map of empty strings is told apart
        // by its first item, which only a list gives at index 0.
        let mut items = Vec::new();
        let mut all_empty = true;
        let whole = for_each_pair(&list, |item, value| {
            all_empty &= value.is_empty();
            items.push(item);
        });
        let is_list = whole.is_some()
            && all_empty
            && items
                .first()
                .is_none_or(|first| read(&["scopes", "0"]).as_deref() == Some(*first));
        if is_list {
            items
                .into_iter()
                .filter(|item| item.len() <= MAX_HEADER_VALUE_LEN && item.len() != NUMBER_LEN)
                .for_each(&mut add);
        }
    }
    Some(Claims { sub, scopes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::fake::metadata_value;
    use serde_json::{json, Value};

    /// The claims of `payload` as jwt_authn leaves it in metadata, read through Envoy's
    /// property rules (the fake's model of them).
    fn claims(payload: Value) -> Option<Claims> {
        verified_claims(|path| metadata_value(&payload, path))
    }

    fn scopes(payload: Value) -> Vec<String> {
        claims(payload).expect("a usable sub").scopes
    }

    #[test]
    fn reads_sub_and_scope_as_jwt_authn_verified_them() {
        let c = claims(json!({
            "iss": "https://login.hokus.ai",
            "scope": "mlflow:read mlflow:write",
            "exp": 1.8e9,
            "nonce": null,
            "sub": "user_123",
        }))
        .unwrap();
        assert_eq!(c.sub, "user_123");
        assert_eq!(c.scopes, vec!["mlflow:read", "mlflow:write"]);
    }

    #[test]
    fn scope_splits_on_single_spaces_only() {
        let s = |scope: &str| scopes(json!({"sub": "u", "scope": scope}));
        assert_eq!(s("mlflow:read\nmlflow:write"), Vec::<String>::new());
        assert_eq!(s("mlflow:read\tmlflow:write a"), vec!["a"]);
        assert_eq!(s("  mlflow:read  "), vec!["mlflow:read"]);
        assert_eq!(s("a \u{e9} a b\u{7f}"), vec!["a"]);
        assert_eq!(
            s("ml:write"),
            Vec::<String>::new(),
            "eight bytes: maybe a number"
        );
        assert_eq!(s("ml:write a"), vec!["ml:write", "a"]);
        assert_eq!(s("a b"), vec!["a", "b"]);
        assert_eq!(s(""), Vec::<String>::new());
    }

    #[test]
    fn a_scope_that_is_not_a_string_grants_nothing() {
        for scope in [
            json!(["x mlflow:write y"]),
            json!(["mlflow:write"]),
            json!({"k": "x mlflow:write y"}),
            json!({"0": "mlflow:write", "mlflow:write": ""}),
            json!({"mlflow:write": ""}),
            json!(true),
            // A double whose eight bytes spell a token.
            json!(f64::from_le_bytes(*b"ml:write")),
        ] {
            assert_eq!(
                scopes(json!({"sub": "u", "scope": scope.clone()})),
                Vec::<String>::new(),
                "{scope}"
            );
        }
        // A null scope is no scope: the list may speak.
        assert_eq!(
            scopes(json!({"sub": "u", "scope": null, "scopes": ["mlflow:read"]})),
            vec!["mlflow:read"]
        );
    }

    #[test]
    fn a_scopes_list_counts_only_without_scope_and_only_as_a_list_of_strings() {
        let list = json!([
            "mlflow:read",
            "bad item",
            "mlflow:read",
            7,
            true,
            ["mlflow:write"]
        ]);
        assert_eq!(
            scopes(json!({"sub": "u", "scopes": list})),
            vec!["mlflow:read"]
        );
        assert_eq!(
            scopes(json!({"sub": "u", "scope": "a", "scopes": ["mlflow:read"]})),
            vec!["a"]
        );
        for not_a_list in [
            json!("mlflow:write"),
            json!({"mlflow:write": false}),
            json!({"mlflow:write": ""}),
            json!({"mlflow:write": "", "0": ""}),
            json!({"0": "", "1": ""}),
            json!({"mlflow:access": "no"}),
            json!(["mlflow:write", null]),
        ] {
            assert_eq!(
                scopes(json!({"sub": "u", "scopes": not_a_list.clone()})),
                Vec::<String>::new(),
                "{not_a_list}"
            );
        }
    }

    #[test]
    fn unusable_subjects_are_refused() {
        for sub in [
            json!(""),
            json!("u\r\nx-admin: 1"),
            json!(" u"),
            json!("a".repeat(MAX_HEADER_VALUE_LEN + 1)),
            json!(null),
            json!(["u"]),
            json!({"u": "v"}),
            json!(true),
        ] {
            assert_eq!(claims(json!({"sub": sub.clone()})), None, "{sub}");
        }
        assert_eq!(claims(json!({"scope": "a"})), None);
    }

    #[test]
    fn a_null_elsewhere_in_the_payload_does_not_unseat_the_token() {
        let c = claims(json!({"sub": "u", "email": null, "scope": "mlflow:read"})).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.scopes),
            ("u", vec!["mlflow:read".to_string()])
        );
    }
}

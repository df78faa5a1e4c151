//! Finding the caller's credential: `Authorization: Bearer <value>` first, then `x-api-key`.
//!
//! A bearer value shaped like a JWT (three base64url segments, the first a JSON header with
//! `alg`) is a user token, which Envoy's jwt_authn verifies; anything else is an API key.
//! `x-api-key` always holds an API key. A credential header sent twice is refused: which copy
//! the upstream would honour is anyone's guess.

use super::facts::Single;
use crate::core::output::labels::AuthMethod;
use crate::core::text::{is_json_object, is_token};
use crate::core::verdict::digest::KeyDigest;
use base64::Engine;
use std::fmt;

pub const MAX_KEY_LEN: usize = 256;
/// Far above any login-service token; bounds the work spent on a hostile header.
pub const MAX_JWT_LEN: usize = 8 * 1024;

/// A credential that passed its format check. Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.0.as_bytes())
    }

    #[cfg(test)]
    pub fn for_tests(value: &str) -> Self {
        Self(value.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.digest().fingerprint())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    ApiKey(Secret),
    /// A JWT-shaped bearer token (not yet known to be valid).
    Jwt(Secret),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ApiKey,
    /// A JWT-shaped bearer token (not yet known to be valid).
    Jwt,
}

impl Kind {
    /// The `x-auth-method` (and metric label) a credential of this kind decides by.
    pub fn method(self) -> AuthMethod {
        match self {
            Kind::ApiKey => AuthMethod::ApiKey,
            Kind::Jwt => AuthMethod::Jwt,
        }
    }
}

impl Credential {
    pub fn kind(&self) -> Kind {
        match self {
            Credential::ApiKey(_) => Kind::ApiKey,
            Credential::Jwt(_) => Kind::Jwt,
        }
    }

    pub fn secret(&self) -> &Secret {
        match self {
            Credential::ApiKey(secret) | Credential::Jwt(secret) => secret,
        }
    }
}

/// A credential as the request presents it, borrowed from the header: a warm request is
/// answered from it without copying the secret. Debug never prints it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Presented<'a> {
    pub kind: Kind,
    value: &'a str,
}

impl<'a> Presented<'a> {
    pub fn expose(&self) -> &'a str {
        self.value
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.value.as_bytes())
    }

    /// An owned copy, for a request that must wait on a callout.
    pub fn to_credential(&self) -> Credential {
        let secret = Secret(self.value.to_string());
        match self.kind {
            Kind::ApiKey => Credential::ApiKey(secret),
            Kind::Jwt => Credential::Jwt(secret),
        }
    }
}

impl fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}({})", self.kind, self.digest().fingerprint())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Missing,
    Malformed,
    Found(Presented<'a>),
}

/// Raw header values in, the credential out. A non-Bearer `Authorization` (e.g. Basic) is
/// not ours and lets `x-api-key` speak.
pub fn find_credential<'a>(authorization: Single<'a>, x_api_key: Single<'a>) -> Lookup<'a> {
    match authorization {
        Single::Repeated => return Lookup::Malformed,
        Single::One(value) => {
            if let Some(candidate) = bearer_credential(value) {
                if is_jwt_shaped(candidate) {
                    return presented(candidate, MAX_JWT_LEN, Kind::Jwt);
                }
                return api_key(candidate);
            }
        }
        Single::Absent => {}
    }
    match x_api_key {
        Single::Absent => Lookup::Missing,
        Single::Repeated => Lookup::Malformed,
        Single::One(value) => api_key(trim(value)),
    }
}

fn api_key(candidate: &[u8]) -> Lookup<'_> {
    presented(candidate, MAX_KEY_LEN, Kind::ApiKey)
}

/// The credential after a case-insensitive `Bearer` scheme, or None for other schemes.
fn bearer_credential(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let scheme_len = value
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(value.len());
    if !value[..scheme_len].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(trim(&value[scheme_len..]))
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end.max(start)]
}

fn presented(candidate: &[u8], max_len: usize, kind: Kind) -> Lookup<'_> {
    if candidate.len() > max_len || !is_token(candidate) {
        return Lookup::Malformed;
    }
    // All bytes are ASCII graphic, so this is valid UTF-8.
    match std::str::from_utf8(candidate) {
        Ok(value) => Lookup::Found(Presented { kind, value }),
        Err(_) => Lookup::Malformed,
    }
}

fn is_base64url(segment: &[u8]) -> bool {
    segment
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Three base64url segments (the signature may be empty, as with `alg: none`), the first a
/// JSON object with a string `alg`. API keys have no dots, so they leave at the first check.
pub fn is_jwt_shaped(value: &[u8]) -> bool {
    let mut segments = value.split(|b| *b == b'.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    if header.is_empty() || payload.is_empty() || value.len() > MAX_JWT_LEN {
        return false;
    }
    if ![header, payload, signature].iter().all(|s| is_base64url(s)) {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .filter(|json| is_json_object(json))
        .and_then(|json| serde_json::from_slice::<Header>(&json).ok())
        .is_some_and(|h| !h.alg.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1In0.c2ln";

    fn one(v: &str) -> Single<'_> {
        Single::One(v.as_bytes())
    }

    fn key(k: &str) -> Lookup<'_> {
        Lookup::Found(Presented {
            kind: Kind::ApiKey,
            value: k,
        })
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_wins_over_x_api_key() {
        assert_eq!(
            find_credential(one("Bearer abc"), Single::Absent),
            key("abc")
        );
        assert_eq!(
            find_credential(one("bEaReR   abc "), Single::Absent),
            key("abc")
        );
        assert_eq!(find_credential(one("Bearer abc"), one("other")), key("abc"));
    }

    #[test]
    fn x_api_key_is_used_when_authorization_is_not_bearer() {
        assert_eq!(find_credential(Single::Absent, one("k1")), key("k1"));
        assert_eq!(find_credential(one("Basic dTpw"), one("k1")), key("k1"));
        assert_eq!(
            find_credential(one("Basic dTpw"), Single::Absent),
            Lookup::Missing
        );
        assert_eq!(
            find_credential(Single::Absent, Single::Absent),
            Lookup::Missing
        );
    }

    #[test]
    fn repeated_credential_headers_are_refused() {
        assert_eq!(
            find_credential(Single::Repeated, one("k1")),
            Lookup::Malformed
        );
        assert_eq!(
            find_credential(Single::Absent, Single::Repeated),
            Lookup::Malformed
        );
        assert_eq!(
            find_credential(one("Basic x"), Single::Repeated),
            Lookup::Malformed
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        let long = "a".repeat(MAX_KEY_LEN + 1);
        let exact = "a".repeat(MAX_KEY_LEN);
        for bad in ["Bearer", "Bearer a b"] {
            assert_eq!(find_credential(one(bad), Single::Absent), Lookup::Malformed);
        }
        assert_eq!(
            find_credential(Single::One(b"Bearer \xff\xfe"), Single::Absent),
            Lookup::Malformed
        );
        for bad in [&b"caf\xc3\xa9"[..], b"", b"a\x01", long.as_bytes()] {
            assert_eq!(
                find_credential(Single::Absent, Single::One(bad)),
                Lookup::Malformed
            );
        }
        assert_eq!(find_credential(Single::Absent, one(&exact)), key(&exact));
    }

    #[test]
    fn jwt_shaped_bearers_are_user_tokens() {
        let header = format!("Bearer {JWT}");
        let found = find_credential(one(&header), Single::Absent);
        let Lookup::Found(token) = found else {
            panic!("{found:?}")
        };
        assert_eq!((token.kind, token.expose()), (Kind::Jwt, JWT));
        assert_eq!(token.to_credential(), Credential::Jwt(Secret(JWT.into())));
        // alg: none tokens have an empty signature; still a JWT, so never sent as a key.
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.";
        assert!(is_jwt_shaped(none.as_bytes()));
        // In x-api-key it is an API key whatever it looks like.
        assert_eq!(find_credential(Single::Absent, one("a.b.c")), key("a.b.c"));
    }

    #[test]
    fn near_jwts_are_api_keys() {
        for value in [
            "a.b.c",                                 // header is not JSON
            "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ1In0.c2", // no alg
            "eyJhbGciOiJSUzI1NiJ9.eyJ9",             // two segments
            "eyJhbGciOiJSUzI1NiJ9..c2ln",            // empty payload
            "eyJhbGciOiJSUzI1NiJ9.e+J9.c2ln",        // not base64url
            "eyJhbGciOiJSUzI1NiJ9.a.b.c",            // four segments
            "WyJSUzI1NiJd.eyJzdWIiOiJ1In0.c2ln",     // header ["RS256"]: not an object
        ] {
            assert!(!is_jwt_shaped(value.as_bytes()), "{value}");
        }
    }

    #[test]
    fn debug_shows_only_a_fingerprint() {
        let secret = Secret("hk_secret_value".into());
        assert!(!format!("{secret:?}").contains("hk_secret_value"));
        let found = find_credential(one("Bearer hk_secret_value"), Single::Absent);
        assert!(!format!("{found:?}").contains("hk_secret_value"));
    }
}

//! Finding the API key in a request: `Authorization: Bearer <key>` first, then `x-api-key`.

use super::digest::KeyDigest;
use std::fmt;

pub const MAX_KEY_LEN: usize = 256;

/// An API key that passed the format check. Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.0.as_bytes())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.digest().fingerprint())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum KeyLookup {
    Missing,
    Malformed,
    Found(ApiKey),
}

/// Raw header values in, the key out. A non-Bearer `Authorization` (e.g. Basic) is not a key
/// and lets `x-api-key` speak.
pub fn find_api_key(authorization: Option<&[u8]>, x_api_key: Option<&[u8]>) -> KeyLookup {
    if let Some(candidate) = authorization.and_then(bearer_credential) {
        return check_format(candidate);
    }
    match x_api_key {
        Some(value) => check_format(trim(value)),
        None => KeyLookup::Missing,
    }
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

fn check_format(candidate: &[u8]) -> KeyLookup {
    let printable = candidate.iter().all(u8::is_ascii_graphic);
    if candidate.is_empty() || candidate.len() > MAX_KEY_LEN || !printable {
        return KeyLookup::Malformed;
    }
    // All bytes are ASCII graphic, so this is valid UTF-8.
    match std::str::from_utf8(candidate) {
        Ok(key) => KeyLookup::Found(ApiKey(key.to_string())),
        Err(_) => KeyLookup::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(key: &str) -> KeyLookup {
        KeyLookup::Found(ApiKey(key.into()))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_wins_over_x_api_key() {
        assert_eq!(find_api_key(Some(b"Bearer abc"), None), found("abc"));
        assert_eq!(find_api_key(Some(b"bEaReR   abc "), None), found("abc"));
        assert_eq!(
            find_api_key(Some(b"Bearer abc"), Some(b"other")),
            found("abc")
        );
    }

    #[test]
    fn x_api_key_is_used_when_authorization_is_not_bearer() {
        assert_eq!(find_api_key(None, Some(b"k1")), found("k1"));
        assert_eq!(find_api_key(Some(b"Basic dTpw"), Some(b"k1")), found("k1"));
        assert_eq!(find_api_key(Some(b"Basic dTpw"), None), KeyLookup::Missing);
        assert_eq!(find_api_key(None, None), KeyLookup::Missing);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let long = vec![b'a'; MAX_KEY_LEN + 1];
        let exact = vec![b'a'; MAX_KEY_LEN];
        assert_eq!(find_api_key(Some(b"Bearer"), None), KeyLookup::Malformed);
        assert_eq!(
            find_api_key(Some(b"Bearer a b"), None),
            KeyLookup::Malformed
        );
        assert_eq!(
            find_api_key(Some(b"Bearer \xff\xfe"), None),
            KeyLookup::Malformed
        );
        assert_eq!(
            find_api_key(None, Some(b"caf\xc3\xa9")),
            KeyLookup::Malformed
        );
        assert_eq!(find_api_key(None, Some(b"")), KeyLookup::Malformed);
        assert_eq!(find_api_key(None, Some(b"a\x01")), KeyLookup::Malformed);
        assert_eq!(find_api_key(None, Some(&long)), KeyLookup::Malformed);
        assert!(matches!(
            find_api_key(None, Some(&exact)),
            KeyLookup::Found(_)
        ));
    }

    #[test]
    fn debug_shows_only_a_fingerprint() {
        let key = ApiKey("hk_secret_value".into());
        assert!(!format!("{key:?}").contains("hk_secret_value"));
    }
}

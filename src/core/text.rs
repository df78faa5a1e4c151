//! What text from outside (a client, the auth service, jwt_authn's payload, the plugin
//! configuration) must look like before the filter relies on it. One rule each, so every
//! reader of the trust boundary applies the same one.

/// The longest value the filter copies into a header it sets (a key id, a user id, a scope).
pub const MAX_HEADER_VALUE_LEN: usize = 256;

/// Non-empty printable ASCII without spaces: a key, a scope, a cluster or a path.
pub fn is_token(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(u8::is_ascii_graphic)
}

/// A value the filter may copy into an identity header: non-empty, at most
/// [`MAX_HEADER_VALUE_LEN`] bytes, no control characters, no blanks at either end.
pub fn is_header_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_HEADER_VALUE_LEN
        && !value.chars().any(char::is_control)
        && value.trim() == value
}

/// The text starts (after blanks) as a JSON object does. serde also reads a struct from a
/// JSON array, field by field; an auth-service reply, a JOSE header and a configuration are
/// objects, so anything else is refused before serde sees it.
pub fn is_json_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_printable_ascii_without_spaces() {
        assert!(is_token(b"mlflow:read") && is_token(b"/api/v1/keys/validate"));
        for bad in [&b""[..], b"a b", b"a\tb", b"caf\xc3\xa9", b"a\x7f"] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn header_safe_values_are_bounded_and_clean() {
        assert!(is_header_safe("dev-user-1") && is_header_safe("ü user"));
        let long = "a".repeat(MAX_HEADER_VALUE_LEN + 1);
        for bad in ["", " u", "u ", "u\r\nx-admin: 1", "u\u{85}", &long] {
            assert!(!is_header_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_an_object_is_a_json_object() {
        assert!(is_json_object(b" \n{\"a\": 1}") && is_json_object(b"{"));
        for bad in [&b""[..], b"[1]", b"  ", b"null", b"\"{\""] {
            assert!(!is_json_object(bad), "{bad:?}");
        }
    }
}

//! The headers only the filter's own verdict may put upstream (contract section 4, step 1).

/// A header a client may never send: `x-api-key-id` and every `x-auth-*`, whatever follows
/// the prefix. Envoy hands names over lowercased; the match ignores case all the same.
pub fn is_verdict_header(name: &[u8]) -> bool {
    const PREFIX: &[u8] = b"x-auth-";
    name.eq_ignore_ascii_case(b"x-api-key-id")
        || name
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

#[cfg(test)]
mod tests {
    use super::is_verdict_header;

    #[test]
    fn verdict_headers_are_x_api_key_id_and_every_x_auth_name() {
        for name in [
            "x-api-key-id",
            "x-auth-path",
            "x-auth-role",
            "x-auth-",
            "X-Auth-User",
            "X-API-KEY-ID",
        ] {
            assert!(is_verdict_header(name.as_bytes()), "{name}");
        }
        for name in [
            "x-authorization",
            "x-auth",
            "x-api-key",
            "authorization",
            "x-user-id",
            "x-api-key-idx",
        ] {
            assert!(!is_verdict_header(name.as_bytes()), "{name}");
        }
    }
}

//! What the decision needs from a request's headers, read once from the header map.
//!
//! Everything here is caller-controlled, so it is kept as raw bytes and judged strictly:
//! a credential header sent twice is ambiguous (which copy would the upstream honour?) and
//! refused; a method-override header makes the call a write whatever the real method says.

use crate::core::identity::verdict_headers::is_verdict_header;
use crate::core::pairs::for_each_pair;

/// Headers some frameworks honour as the "real" method. MLflow does not, but a read verdict
/// must never rest on a method the upstream might reinterpret.
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// A header that may occur at most once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Single<'a> {
    #[default]
    Absent,
    One(&'a [u8]),
    /// Sent more than once.
    Repeated,
}

impl<'a> Single<'a> {
    fn add(&mut self, value: &'a [u8]) {
        *self = match self {
            Single::Absent => Single::One(value),
            _ => Single::Repeated,
        };
    }

    pub fn value(&self) -> Option<&'a [u8]> {
        match self {
            Single::One(value) => Some(value),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// `:path` as Envoy normalised it, query included.
    pub path: &'a str,
    pub authorization: Single<'a>,
    pub x_api_key: Single<'a>,
    /// `access-control-request-method` is present (a CORS preflight, with OPTIONS).
    pub cors_request_method: bool,
    /// The caller sent `x-user-id` (kept on the internal path).
    pub has_user_id: bool,
    /// A method-override header is present.
    pub method_override: bool,
    /// Envoy's own `x-forwarded-client-cert` (SANITIZE_SET): present only on mTLS connections.
    pub xfcc: Single<'a>,
    pub request_id: Option<&'a str>,
    /// The names of the verdict headers the client sent ([`is_verdict_header`]), each once:
    /// they must go before anything else happens.
    pub client_verdict_headers: Vec<&'a [u8]>,
}

impl<'a> RequestFacts<'a> {
    /// Reads the facts from Envoy's pairs buffer in one pass, without allocating; None when
    /// the buffer is malformed.
    pub fn from_pairs(bytes: &'a [u8]) -> Option<Self> {
        let (mut facts, mut seen) = (RequestFacts::default(), 0);
        for_each_pair(bytes, |name, value| facts.take(&mut seen, name, value))?;
        Some(facts)
    }

    /// `seen` marks the single-valued headers already read: the first one counts, as it does
    /// for Envoy's own lookups (its codecs refuse repeated pseudo-headers anyway).
    fn take(&mut self, seen: &mut u8, name: &'a [u8], value: &'a [u8]) {
        let text = || std::str::from_utf8(value).unwrap_or_default();
        let mut first = |bit: u8| std::mem::replace(seen, *seen | bit) & bit == 0;
        match name {
            b":method" if first(1) => self.method = text(),
            b":path" if first(2) => self.path = text(),
            b"authorization" => self.authorization.add(value),
            b"x-api-key" => self.x_api_key.add(value),
            b"access-control-request-method" => self.cors_request_method = true,
            b"x-user-id" => self.has_user_id = true,
            b"x-forwarded-client-cert" => self.xfcc.add(value),
            b"x-request-id" if first(4) => self.request_id = std::str::from_utf8(value).ok(),
            b"x-http-method-override" | b"x-http-method" | b"x-method-override" => {
                self.method_override = true
            }
            _ if is_verdict_header(name) && !self.client_verdict_headers.contains(&name) => {
                self.client_verdict_headers.push(name)
            }
            _ => {}
        }
    }

    /// The path without query or fragment.
    pub fn bare_path(&self) -> &'a str {
        let path = self.path;
        match path.bytes().position(|b| b == b'?' || b == b'#') {
            // An ASCII byte: a character boundary.
            Some(end) => &path[..end],
            None => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pairs::serialize;

    /// The facts of `pairs`, read as the adapter reads them (from a pairs buffer, leaked
    /// so the borrowed facts can be returned).
    fn facts(pairs: &[(&str, &str)]) -> RequestFacts<'static> {
        let refs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let buffer: &'static [u8] = Box::leak(serialize(&refs).into_boxed_slice());
        RequestFacts::from_pairs(buffer).expect("a serialized buffer")
    }

    #[test]
    fn reads_the_headers_the_decision_needs() {
        let f = facts(&[
            (":method", "POST"),
            (":path", "/api/2.0/mlflow/runs/search?x=1"),
            ("authorization", "Bearer k"),
            ("x-request-id", "rid"),
            ("x-user-id", "u"),
        ]);
        assert_eq!(f.method, "POST");
        assert_eq!(f.bare_path(), "/api/2.0/mlflow/runs/search");
        assert_eq!(f.authorization, Single::One(b"Bearer k"));
        assert_eq!(f.x_api_key, Single::Absent);
        assert_eq!(f.request_id, Some("rid"));
        assert!(f.has_user_id && !f.method_override && !f.cors_request_method);
    }

    #[test]
    fn the_first_of_a_repeated_single_valued_header_counts() {
        let f = facts(&[
            (":method", "GET"),
            (":path", "/api/2.0/mlflow/runs/get"),
            ("x-request-id", "first"),
            (":method", "POST"),
            (":path", "/api/2.0/mlflow/runs/delete"),
            ("x-request-id", "second"),
        ]);
        assert_eq!((f.method, f.path), ("GET", "/api/2.0/mlflow/runs/get"));
        assert_eq!(f.request_id, Some("first"));
    }

    #[test]
    fn repeats_and_overrides_are_noticed() {
        let f = facts(&[
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b"),
            ("x-api-key", "k"),
            ("x-http-method-override", "DELETE"),
        ]);
        assert_eq!(f.authorization, Single::Repeated);
        assert_eq!(f.authorization.value(), None);
        assert_eq!(f.x_api_key, Single::One(b"k"));
        assert!(f.method_override);
        for name in METHOD_OVERRIDE_HEADERS {
            assert!(facts(&[(name, "GET")]).method_override, "{name}");
        }
    }

    #[test]
    fn every_verdict_header_is_noticed_once_and_pairs_read_in_place() {
        let bytes = serialize(&[
            (b":path", b"/x"),
            (b"x-auth-path", b"internal"),
            (b"x-auth-stale", b"1"),
            (b"x-auth-role", b"admin"),
            (b"x-auth-path", b"again"),
            (b"x-api-key-id", b"forged"),
            (b"x-authorization", b"kept"),
            (b"x-api-key", b"k"),
        ]);
        let f = RequestFacts::from_pairs(&bytes).unwrap();
        assert_eq!(f.path, "/x");
        assert_eq!(f.x_api_key, Single::One(b"k"));
        assert_eq!(
            f.client_verdict_headers,
            vec![
                &b"x-auth-path"[..],
                b"x-auth-stale",
                b"x-auth-role",
                b"x-api-key-id"
            ]
        );
        assert!(RequestFacts::from_pairs(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn missing_or_binary_pseudo_headers_read_as_empty() {
        let f = facts(&[]);
        assert_eq!((f.method, f.path, f.bare_path()), ("", "", ""));
        let buffer = serialize(&[(b":path", b"/\xff")]);
        assert_eq!(RequestFacts::from_pairs(&buffer).unwrap().path, "");
    }
}

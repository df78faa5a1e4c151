//! The request the filter sends to the auth service (contract section 6): API keys to
//! `validate_path` in the JSON body (or as a bearer, per `credential_transport`); user tokens
//! (`jwt.mode: callout`) to `jwt.validate_path` as a bearer. The body is written by hand: it
//! is three short strings, and this runs on every cache miss.

use crate::core::config::{CredentialTransport, FilterConfig};
use crate::core::host::Callout;
use crate::core::output::json_writer;
use crate::core::request::credential::Credential;

pub fn validation_call(
    config: &FilterConfig,
    credential: &Credential,
    client_ip: &str,
    request_id: Option<&str>,
    service_token: Option<&str>,
) -> Callout {
    let (path, transport, secret) = match credential {
        Credential::ApiKey(key) => (&config.validate_path, config.credential_transport, key),
        Credential::Jwt(token) => (
            &config.jwt.validate_path,
            CredentialTransport::Bearer,
            token,
        ),
    };
    let mut headers = Vec::with_capacity(6);
    headers.push((":method", "POST".to_string()));
    headers.push((":path", path.clone()));
    headers.push((":authority", config.authority().to_string()));
    headers.push(("content-type", "application/json".to_string()));
    if let Some(id) = request_id {
        headers.push(("x-request-id", id.to_string()));
    }
    let bearer = match transport {
        CredentialTransport::Body => service_token,
        CredentialTransport::Bearer | CredentialTransport::Both => Some(secret.expose()),
    };
    if let Some(token) = bearer {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let mut body = json_writer::Object::with_capacity(96 + secret.expose().len());
    if transport != CredentialTransport::Bearer {
        body.field("api_key", secret.expose());
    }
    body.field("service_id", &config.service_id)
        .field("client_ip", client_ip);
    let body = body.finish().into_bytes();
    Callout {
        cluster: config.auth_cluster.clone(),
        headers,
        body,
    }
}

/// The IP of Envoy's `source.address` (`1.2.3.4:5678`, `[::1]:5678`); empty if unknown.
pub fn client_ip(source_address: &str) -> &str {
    let host = match source_address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => source_address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::request::credential::Secret;

    fn key(k: &str) -> Credential {
        Credential::ApiKey(Secret::for_tests(k))
    }

    fn header<'a>(call: &'a Callout, name: &str) -> Option<&'a str> {
        call.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(call: &Callout) -> serde_json::Value {
        serde_json::from_slice(&call.body).unwrap()
    }

    #[test]
    fn body_transport_puts_key_in_body_and_service_token_in_bearer() {
        let config = FilterConfig::default();
        let call = validation_call(&config, &key("hk_1"), "10.0.0.9", Some("rid"), Some("svc"));
        assert_eq!(header(&call, ":method"), Some("POST"));
        assert_eq!(header(&call, ":path"), Some("/api/v1/keys/validate"));
        assert_eq!(header(&call, ":authority"), Some("auth_service"));
        assert_eq!(header(&call, "x-request-id"), Some("rid"));
        assert_eq!(header(&call, "authorization"), Some("Bearer svc"));
        assert_eq!(
            body(&call),
            serde_json::json!({"api_key": "hk_1", "service_id": "ml-platform", "client_ip": "10.0.0.9"})
        );
        let call = validation_call(&config, &key("hk_1"), "", None, None);
        assert_eq!(header(&call, "authorization"), None);
        assert_eq!(header(&call, "x-request-id"), None);
    }

    #[test]
    fn bearer_and_both_transports() {
        let mut config = FilterConfig {
            credential_transport: CredentialTransport::Bearer,
            ..FilterConfig::default()
        };
        let call = validation_call(&config, &key("hk_1"), "1.1.1.1", None, Some("svc"));
        assert_eq!(header(&call, "authorization"), Some("Bearer hk_1"));
        assert!(body(&call).get("api_key").is_none());
        config.credential_transport = CredentialTransport::Both;
        let call = validation_call(&config, &key("hk_1"), "1.1.1.1", None, Some("svc"));
        assert_eq!(header(&call, "authorization"), Some("Bearer hk_1"));
        assert_eq!(body(&call)["api_key"], "hk_1");
    }

    #[test]
    fn tokens_go_to_their_own_path_as_bearer() {
        let config = FilterConfig::default();
        let token = Credential::Jwt(Secret::for_tests("a.b.c"));
        let call = validation_call(&config, &token, "1.1.1.1", None, Some("svc"));
        assert_eq!(header(&call, ":path"), Some("/api/v1/validate"));
        assert_eq!(header(&call, "authorization"), Some("Bearer a.b.c"));
        assert!(body(&call).get("api_key").is_none());
    }

    #[test]
    fn client_ip_strips_port_and_brackets() {
        assert_eq!(client_ip("203.0.113.7:40000"), "203.0.113.7");
        assert_eq!(client_ip("[::1]:8080"), "::1");
        assert_eq!(client_ip("203.0.113.7"), "203.0.113.7");
        assert_eq!(client_ip(""), "");
    }
}

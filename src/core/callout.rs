//! The request the filter sends to the auth service (contract section 6).

use super::api_key::ApiKey;
use super::config::{CredentialTransport, FilterConfig};

pub struct ValidationCall {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

pub fn validation_call(
    config: &FilterConfig,
    key: &ApiKey,
    client_ip: &str,
    request_id: Option<&str>,
    service_token: Option<&str>,
) -> ValidationCall {
    let mut headers = vec![
        (":method", "POST".to_string()),
        (":path", config.validate_path.clone()),
        (":authority", config.authority().to_string()),
        ("content-type", "application/json".to_string()),
    ];
    if let Some(id) = request_id {
        headers.push(("x-request-id", id.to_string()));
    }
    let transport = config.credential_transport;
    let bearer = match transport {
        CredentialTransport::Body => service_token,
        CredentialTransport::Bearer | CredentialTransport::Both => Some(key.expose()),
    };
    if let Some(token) = bearer {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let mut body = serde_json::Map::new();
    if transport != CredentialTransport::Bearer {
        body.insert("api_key".into(), key.expose().into());
    }
    body.insert("service_id".into(), config.service_id.as_str().into());
    body.insert("client_ip".into(), client_ip.into());
    let body = serde_json::to_vec(&body).unwrap_or_default();
    ValidationCall { headers, body }
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
    use super::super::api_key::{find_api_key, KeyLookup};
    use super::*;

    fn key(k: &str) -> ApiKey {
        match find_api_key(None, Some(k.as_bytes())) {
            KeyLookup::Found(key) => key,
            other => panic!("{other:?}"),
        }
    }

    fn header<'a>(call: &'a ValidationCall, name: &str) -> Option<&'a str> {
        call.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(call: &ValidationCall) -> serde_json::Value {
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
    fn client_ip_strips_port_and_brackets() {
        assert_eq!(client_ip("203.0.113.7:40000"), "203.0.113.7");
        assert_eq!(client_ip("[::1]:8080"), "::1");
        assert_eq!(client_ip("203.0.113.7"), "203.0.113.7");
        assert_eq!(client_ip(""), "");
    }
}

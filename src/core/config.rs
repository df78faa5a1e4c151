//! The plugin configuration: JSON with contract defaults, refused at load when any field is
//! unknown, of the wrong type or out of range. Errors always name the field.

use crate::core::text::{is_json_object, is_token};
use serde::Deserialize;
use std::fmt;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    pub auth_cluster: String,
    /// `:authority` of the callout; defaults to `auth_cluster`.
    pub auth_authority: Option<String>,
    pub validate_path: String,
    pub service_id: String,
    pub timeout_ms: u64,
    /// Callouts one worker keeps in flight at most; past it requests get 503 at once, so a
    /// flood of new keys cannot pile up behind a slow auth service.
    pub max_pending_callouts: u32,
    pub credential_transport: CredentialTransport,
    /// Name of a VM environment variable holding the auth service's own bearer token.
    pub auth_service_token_env: Option<String>,
    pub exempt_paths: Vec<String>,
    pub cache: CacheConfig,
    pub internal: InternalConfig,
    pub scopes: ScopeSets,
    pub jwt: JwtConfig,
    /// Only in a test build of the filter (cargo feature `testing`): the production artifact
    /// refuses a configuration that names it.
    #[cfg(feature = "testing")]
    pub testing: TestingConfig,
}

/// User tokens (`Authorization: Bearer <JWT>`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    pub mode: JwtMode,
    /// Where Envoy's jwt_authn filter leaves the verified payload (`payload_in_metadata`).
    pub metadata_namespace: String,
    pub payload_key: String,
    /// `callout` mode: the auth service's token-validation path (bearer in `Authorization`).
    pub validate_path: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JwtMode {
    /// Envoy's jwt_authn verifies tokens; the filter reads its dynamic metadata.
    Local,
    /// The auth service validates tokens, and verdicts are cached like API keys.
    Callout,
}

/// Switches for tests of Envoy's own behaviour around the filter, compiled into the test
/// build only (`--features testing`), never into `make build`'s artifact.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// A request to exactly this path (query ignored) traps the VM, so a test can prove
    /// that Envoy's `failure_policy` reloads a crashed VM and fails closed meanwhile.
    pub trap_path: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CredentialTransport {
    /// Key in the JSON body (the auth service's contract); service token, if any, as bearer.
    Body,
    /// Key as `Authorization: Bearer`, no `api_key` in the body.
    Bearer,
    /// Key in both places.
    Both,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub ttl_s: u64,
    pub negative_ttl_s: u64,
    pub stale_if_error_s: u64,
    pub max_entries: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InternalConfig {
    pub allowed_identities: Vec<String>,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeSets {
    pub read: Vec<String>,
    pub write: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            auth_cluster: "auth_service".into(),
            auth_authority: None,
            validate_path: "/api/v1/keys/validate".into(),
            service_id: "ml-platform".into(),
            timeout_ms: 2000,
            max_pending_callouts: 256,
            credential_transport: CredentialTransport::Body,
            auth_service_token_env: None,
            exempt_paths: strings(&["/health"]),
            cache: CacheConfig::default(),
            internal: InternalConfig::default(),
            scopes: ScopeSets::default(),
            jwt: JwtConfig::default(),
            #[cfg(feature = "testing")]
            testing: TestingConfig::default(),
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            mode: JwtMode::Local,
            metadata_namespace: "envoy.filters.http.jwt_authn".into(),
            payload_key: "jwt_payload".into(),
            validate_path: "/api/v1/validate".into(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl_s: 300,
            negative_ttl_s: 30,
            stale_if_error_s: 120,
            max_entries: 10_000,
        }
    }
}

impl Default for InternalConfig {
    fn default() -> Self {
        Self {
            allowed_identities: Vec::new(),
            scopes: strings(&["mlflow:read", "mlflow:write"]),
        }
    }
}

impl Default for ScopeSets {
    fn default() -> Self {
        Self {
            read: strings(&["mlflow:read", "mlflow:access", "model:read"]),
            write: strings(&["mlflow:write", "mlflow:access", "model:write"]),
        }
    }
}

/// A refused configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid plugin configuration: field `{}`: {}",
            self.field, self.reason
        )
    }
}

fn refuse(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl FilterConfig {
    /// Parses and validates. Empty or whitespace-only input means "all defaults".
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Self::default().validated();
        }
        // serde would read a top-level array as a tuple struct; say plainly what is wanted.
        if !is_json_object(bytes) {
            return Err(refuse("(root)", "must be a JSON object"));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let config: FilterConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde names an unknown field in its message; the path names where it was.
            let field = if path == "." {
                "(root)".to_string()
            } else {
                path
            };
            refuse(&field, inner.to_string())
        })?;
        de.end().map_err(|e| refuse("(root)", e.to_string()))?;
        config.validated()
    }

    pub fn authority(&self) -> &str {
        self.auth_authority.as_deref().unwrap_or(&self.auth_cluster)
    }

    fn validated(self) -> Result<Self, ConfigError> {
        non_empty_token("auth_cluster", &self.auth_cluster)?;
        if let Some(authority) = &self.auth_authority {
            non_empty_token("auth_authority", authority)?;
        }
        http_path("validate_path", &self.validate_path)?;
        non_empty_token("service_id", &self.service_id)?;
        in_range("timeout_ms", self.timeout_ms, 1, 60_000)?;
        in_range(
            "max_pending_callouts",
            self.max_pending_callouts.into(),
            1,
            100_000,
        )?;
        if let Some(env) = &self.auth_service_token_env {
            non_empty_token("auth_service_token_env", env)?;
        }
        for path in &self.exempt_paths {
            http_path("exempt_paths", path)?;
        }
        let cache = &self.cache;
        in_range("cache.ttl_s", cache.ttl_s, 0, 86_400)?;
        in_range("cache.negative_ttl_s", cache.negative_ttl_s, 0, 86_400)?;
        in_range("cache.stale_if_error_s", cache.stale_if_error_s, 0, 86_400)?;
        in_range("cache.max_entries", cache.max_entries.into(), 1, 1_000_000)?;
        for id in &self.internal.allowed_identities {
            non_empty_token("internal.allowed_identities", id)?;
        }
        scope_list("internal.scopes", &self.internal.scopes)?;
        scope_list("scopes.read", &self.scopes.read)?;
        scope_list("scopes.write", &self.scopes.write)?;
        non_empty_token("jwt.metadata_namespace", &self.jwt.metadata_namespace)?;
        non_empty_token("jwt.payload_key", &self.jwt.payload_key)?;
        http_path("jwt.validate_path", &self.jwt.validate_path)?;
        #[cfg(feature = "testing")]
        if let Some(path) = &self.testing.trap_path {
            http_path("testing.trap_path", path)?;
        }
        Ok(self)
    }
}

fn non_empty_token(field: &str, value: &str) -> Result<(), ConfigError> {
    if is_token(value.as_bytes()) {
        Ok(())
    } else {
        Err(refuse(
            field,
            "must be non-empty printable ASCII without spaces",
        ))
    }
}

fn http_path(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.starts_with('/') && is_token(value.as_bytes()) {
        Ok(())
    } else {
        Err(refuse(
            field,
            format!("{value:?} must be a path starting with '/'"),
        ))
    }
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(refuse(field, format!("{value} is outside {min}..={max}")))
    }
}

fn scope_list(field: &str, scopes: &[String]) -> Result<(), ConfigError> {
    if scopes.is_empty() {
        return Err(refuse(field, "must list at least one scope"));
    }
    match scopes.iter().find(|s| !is_token(s.as_bytes())) {
        Some(bad) => Err(refuse(field, format!("scope {bad:?} is not a token"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        let config = FilterConfig::parse(b"").unwrap();
        assert_eq!(config, FilterConfig::default());
        assert_eq!(config.authority(), "auth_service");
        assert_eq!(config.cache.ttl_s, 300);
        assert_eq!(config.cache.negative_ttl_s, 30);
        assert_eq!(config.exempt_paths, vec!["/health"]);
        assert_eq!(config.max_pending_callouts, 256);
        assert_eq!(config.jwt.mode, JwtMode::Local);
    }

    #[test]
    fn nested_fields_override_defaults_individually() {
        let config = FilterConfig::parse(
            br#"{"cache": {"ttl_s": 60}, "credential_transport": "both",
                 "internal": {"allowed_identities": ["spiffe://a/b"]}}"#,
        )
        .unwrap();
        assert_eq!(config.cache.ttl_s, 60);
        assert_eq!(config.cache.negative_ttl_s, 30);
        assert_eq!(config.credential_transport, CredentialTransport::Both);
        assert_eq!(config.internal.scopes, vec!["mlflow:read", "mlflow:write"]);
    }

    fn refused_field(json: &str) -> String {
        FilterConfig::parse(json.as_bytes()).unwrap_err().field
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(refused_field(r#"{"cache": {"ttl": 5}}"#), "cache.ttl");
        assert!(FilterConfig::parse(br#"{"cache": {"ttl": 5}}"#)
            .unwrap_err()
            .reason
            .contains("`ttl`"));
        assert_eq!(refused_field(r#"{"cache": {"ttl_s": "5"}}"#), "cache.ttl_s");
        assert_eq!(refused_field(r#"{"timeout_ms": 0}"#), "timeout_ms");
        assert_eq!(
            refused_field(r#"{"credential_transport": "header"}"#),
            "credential_transport"
        );
        assert_eq!(
            refused_field(r#"{"validate_path": "validate"}"#),
            "validate_path"
        );
        assert_eq!(refused_field(r#"{"scopes": {"read": []}}"#), "scopes.read");
        assert_eq!(
            refused_field(r#"{"internal": {"allowed_identities": [""]}}"#),
            "internal.allowed_identities"
        );
        assert_eq!(
            refused_field(r#"{"cache": {"max_entries": 0}}"#),
            "cache.max_entries"
        );
        #[cfg(feature = "testing")]
        assert_eq!(
            refused_field(r#"{"testing": {"trap_path": "x"}}"#),
            "testing.trap_path"
        );
        // Without the test build, the switch does not exist at all.
        #[cfg(not(feature = "testing"))]
        assert_eq!(
            refused_field(r#"{"testing": {"trap_path": "/x"}}"#),
            "testing"
        );
        assert_eq!(
            refused_field(r#"{"max_pending_callouts": 0}"#),
            "max_pending_callouts"
        );
        assert_eq!(refused_field(r#"{"jwt": {"mode": "remote"}}"#), "jwt.mode");
        assert_eq!(
            refused_field(r#"{"jwt": {"payload_key": ""}}"#),
            "jwt.payload_key"
        );
        assert_eq!(refused_field(r#"[1, 2]"#), "(root)");
        assert_eq!(refused_field(r#"{"timeout_ms": 5} trailing"#), "(root)");
    }
}

//! The dev service's key store. Keys are held (and written to disk) only as
//! SHA-256 hashes, like a real key service would, so the plaintext dev keys
//! live in documentation, not in data.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The service id the filter sends by default; keys belong to it unless told otherwise.
pub const DEFAULT_SERVICE_ID: &str = "ml-platform";

/// The committed dev key file, embedded so tests and the binary can use it from any directory.
pub const DEV_KEYS_JSON: &str = include_str!("../dev-keys.json");

/// Plaintext of the keys in `dev-keys.json`. Dev-only; see devstack/README.md.
pub mod dev_keys {
    /// user `dev-user-1`, `mlflow:read mlflow:write`, 1000 requests/hour.
    pub const READWRITE: &str = "hk_dev_readwrite_0001";
    /// user `dev-user-2`, `mlflow:read` only.
    pub const READONLY: &str = "hk_dev_readonly_0002";
    /// expired in 2020.
    pub const EXPIRED: &str = "hk_dev_expired_0003";
    /// read+write, 3 requests/hour.
    pub const LIMITED: &str = "hk_dev_limited_0004";
    /// belongs to `other-service`: 403 for `ml-platform`.
    pub const OTHER_SERVICE: &str = "hk_dev_otherservice_0005";
    /// revoked.
    pub const REVOKED: &str = "hk_dev_revoked_0006";
}

/// Lowercase hex SHA-256 of a key: how keys are stored and looked up.
pub fn sha256_hex(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// Short fingerprint for logs: enough to tell keys apart, useless for recovering one.
pub fn fingerprint(key: &str) -> String {
    sha256_hex(key)[..8].to_owned()
}

/// What the service knows about one key, minus the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub key_id: String,
    pub user_id: String,
    #[serde(default = "default_service_id")]
    pub service_id: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub rate_limit_per_hour: Option<u64>,
    /// RFC 3339; `None` never expires.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

fn default_service_id() -> String {
    DEFAULT_SERVICE_ID.to_owned()
}

impl Default for KeySpec {
    /// An active read+write key of `ml-platform` with no rate limit or expiry;
    /// fill in `key_id` and `user_id`.
    fn default() -> Self {
        KeySpec {
            key_id: String::new(),
            user_id: String::new(),
            service_id: default_service_id(),
            scopes: vec!["mlflow:read".into(), "mlflow:write".into()],
            rate_limit_per_hour: None,
            expires_at: None,
            revoked: false,
        }
    }
}

impl KeySpec {
    /// Same as [`KeySpec::default`] with the two required ids set.
    pub fn new(key_id: &str, user_id: &str) -> Self {
        KeySpec {
            key_id: key_id.into(),
            user_id: user_id.into(),
            ..KeySpec::default()
        }
    }

    pub fn with_scopes(mut self, scopes: &[&str]) -> Self {
        self.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn with_service(mut self, service_id: &str) -> Self {
        self.service_id = service_id.into();
        self
    }

    pub fn with_rate_limit(mut self, per_hour: Option<u64>) -> Self {
        self.rate_limit_per_hour = per_hour;
        self
    }

    /// `expires_at` must be RFC 3339; it is checked when the spec enters a store.
    pub fn with_expires_at(mut self, expires_at: &str) -> Self {
        self.expires_at = Some(expires_at.into());
        self
    }

    pub fn revoked(mut self) -> Self {
        self.revoked = true;
        self
    }
}

/// A stored key: its spec plus the parsed expiry, so requests never re-parse dates.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key_sha256: String,
    pub spec: KeySpec,
    expires_unix: Option<i64>,
}

/// The answer for one presented key.
#[derive(Debug, Clone)]
pub enum Verdict {
    Valid(Arc<KeyRecord>),
    /// Unknown, revoked or expired: callers cannot tell which, on purpose.
    Invalid,
    /// A real, active key of another service.
    WrongService,
}

#[derive(Debug)]
pub enum KeyStoreError {
    Io(std::io::Error),
    Json(serde_json::Error),
    Invalid(String),
}

impl fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyStoreError::Io(e) => write!(f, "cannot read key file: {e}"),
            KeyStoreError::Json(e) => write!(f, "key file is not valid: {e}"),
            KeyStoreError::Invalid(msg) => write!(f, "invalid key entry: {msg}"),
        }
    }
}

impl std::error::Error for KeyStoreError {}

/// On-disk layout of a key file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    /// Free text for humans; ignored.
    #[serde(default, rename = "note")]
    _note: Option<String>,
    keys: Vec<KeyFileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileEntry {
    key_sha256: String,
    key_id: String,
    user_id: String,
    #[serde(default = "default_service_id")]
    service_id: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    rate_limit_per_hour: Option<u64>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    revoked: bool,
}

impl KeyFileEntry {
    fn into_parts(self) -> (String, KeySpec) {
        let spec = KeySpec {
            key_id: self.key_id,
            user_id: self.user_id,
            service_id: self.service_id,
            scopes: self.scopes,
            rate_limit_per_hour: self.rate_limit_per_hour,
            expires_at: self.expires_at,
            revoked: self.revoked,
        };
        (self.key_sha256, spec)
    }
}

/// Keys by SHA-256 hex. Cheap to look up from many tasks (records are shared `Arc`s).
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    by_hash: HashMap<String, Arc<KeyRecord>>,
}

impl KeyStore {
    pub fn empty() -> Self {
        KeyStore::default()
    }

    /// Loads a key file (`{"keys": [{"key_sha256": ..., "key_id": ..., ...}]}`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyStoreError> {
        let text = std::fs::read_to_string(path).map_err(KeyStoreError::Io)?;
        Self::from_json(&text)
    }

    /// Parses the text of a key file.
    pub fn from_json(text: &str) -> Result<Self, KeyStoreError> {
        let file: KeyFile = serde_json::from_str(text).map_err(KeyStoreError::Json)?;
        let mut store = KeyStore::empty();
        for entry in file.keys {
            let (hash, spec) = entry.into_parts();
            let hash = hash.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(KeyStoreError::Invalid(format!(
                    "key {:?}: key_sha256 must be 64 hex digits",
                    spec.key_id
                )));
            }
            if store.by_hash.contains_key(&hash) {
                return Err(KeyStoreError::Invalid(format!(
                    "key {:?}: the same key_sha256 appears twice",
                    spec.key_id
                )));
            }
            store.insert_hashed(hash, spec)?;
        }
        Ok(store)
    }

    /// The committed dev keys (`devstack/dev-keys.json`, see [`dev_keys`]).
    pub fn dev_keys() -> Self {
        Self::from_json(DEV_KEYS_JSON).expect("devstack/dev-keys.json is valid")
    }

    /// Builds a store from plaintext keys, hashing them here. For tests.
    ///
    /// Panics when an `expires_at` is not RFC 3339; see [`KeyStore::try_from_plain`].
    pub fn from_plain(keys: &[(&str, KeySpec)]) -> Self {
        Self::try_from_plain(keys).unwrap_or_else(|e| panic!("KeyStore::from_plain: {e}"))
    }

    pub fn try_from_plain(keys: &[(&str, KeySpec)]) -> Result<Self, KeyStoreError> {
        let mut store = KeyStore::empty();
        for (key, spec) in keys {
            store.insert(key, spec.clone())?;
        }
        Ok(store)
    }

    /// Adds or replaces a key given in plaintext.
    pub fn insert(&mut self, key: &str, spec: KeySpec) -> Result<(), KeyStoreError> {
        self.insert_hashed(sha256_hex(key), spec)
    }

    fn insert_hashed(&mut self, key_sha256: String, spec: KeySpec) -> Result<(), KeyStoreError> {
        if spec.key_id.is_empty() || spec.user_id.is_empty() {
            return Err(KeyStoreError::Invalid(format!(
                "key {:?}: key_id and user_id are required",
                spec.key_id
            )));
        }
        let expires_unix = match &spec.expires_at {
            None => None,
            Some(text) => Some(hokusai_rfc3339::parse(text).ok_or_else(|| {
                KeyStoreError::Invalid(format!(
                    "key {:?}: expires_at {text:?} is not RFC 3339",
                    spec.key_id
                ))
            })?),
        };
        let record = KeyRecord {
            key_sha256: key_sha256.clone(),
            spec,
            expires_unix,
        };
        self.by_hash.insert(key_sha256, Arc::new(record));
        Ok(())
    }

    /// Marks a key revoked; `false` when the store does not know it.
    pub fn revoke(&mut self, key: &str) -> bool {
        match self.by_hash.get_mut(&sha256_hex(key)) {
            Some(record) => {
                Arc::make_mut(record).spec.revoked = true;
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Judges a presented key for `service_id` at `now_unix` (seconds). With no
    /// service id the service check is skipped.
    pub fn check(&self, key: &str, service_id: Option<&str>, now_unix: i64) -> Verdict {
        let Some(record) = self.by_hash.get(&sha256_hex(key)) else {
            return Verdict::Invalid;
        };
        let expired = record.expires_unix.is_some_and(|t| t <= now_unix);
        if record.spec.revoked || expired {
            return Verdict::Invalid;
        }
        match service_id {
            Some(s) if s != record.spec.service_id => Verdict::WrongService,
            _ => Verdict::Valid(Arc::clone(record)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_known_vector() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }

    #[test]
    fn committed_dev_keys_match_their_documented_plaintext() {
        let store = KeyStore::dev_keys();
        let now = 1_800_000_000; // 2027
        let valid = |key| match store.check(key, Some(DEFAULT_SERVICE_ID), now) {
            Verdict::Valid(r) => Some(r.spec.clone()),
            _ => None,
        };
        let rw = valid(dev_keys::READWRITE).unwrap();
        assert_eq!(
            (rw.key_id.as_str(), rw.user_id.as_str()),
            ("key-rw-0001", "dev-user-1")
        );
        assert_eq!(rw.scopes, ["mlflow:read", "mlflow:write"]);
        assert_eq!(rw.rate_limit_per_hour, Some(1000));
        let ro = valid(dev_keys::READONLY).unwrap();
        assert_eq!(
            (ro.key_id.as_str(), ro.user_id.as_str()),
            ("key-ro-0002", "dev-user-2")
        );
        assert_eq!(ro.scopes, ["mlflow:read"]);
        assert_eq!(
            valid(dev_keys::LIMITED).unwrap().rate_limit_per_hour,
            Some(3)
        );
        assert!(valid(dev_keys::EXPIRED).is_none());
        assert!(valid(dev_keys::REVOKED).is_none());
        assert!(matches!(
            store.check(dev_keys::OTHER_SERVICE, Some(DEFAULT_SERVICE_ID), now),
            Verdict::WrongService
        ));
        assert!(matches!(
            store.check(dev_keys::OTHER_SERVICE, Some("other-service"), now),
            Verdict::Valid(_)
        ));
    }

    #[test]
    fn expiry_is_inclusive_and_revocation_sticks() {
        let mut store = KeyStore::from_plain(&[(
            "k",
            KeySpec::new("id", "u").with_expires_at("1970-01-01T00:01:40Z"),
        )]);
        assert!(matches!(store.check("k", None, 99), Verdict::Valid(_)));
        assert!(matches!(store.check("k", None, 100), Verdict::Invalid));
        store.insert("k2", KeySpec::new("id2", "u")).unwrap();
        assert!(store.revoke("k2"));
        assert!(!store.revoke("nope"));
        assert!(matches!(store.check("k2", None, 0), Verdict::Invalid));
    }

    #[test]
    fn bad_entries_are_refused() {
        let bad_date = KeySpec::new("id", "u").with_expires_at("tomorrow");
        assert!(KeyStore::try_from_plain(&[("k", bad_date)]).is_err());
        assert!(KeyStore::try_from_plain(&[("k", KeySpec::default())]).is_err());
        assert!(KeyStore::from_json(
            r#"{"keys":[{"key_sha256":"zz","key_id":"a","user_id":"b"}]}"#
        )
        .is_err());
        assert!(KeyStore::from_json(r#"{"keys":[],"extra":1}"#).is_err());
    }
}

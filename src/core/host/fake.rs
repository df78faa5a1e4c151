//! Envoy, played in memory: the one fake of the host traits that the core's unit tests, the
//! worker's tests, the benches and the properties (`tests/properties/`) all use. Shared data
//! keeps Envoy's CAS semantics exactly; the rest answers what a test sets and records what
//! the filter asked and sent.

use super::{
    Callout, CalloutHost, CalloutToken, DispatchRefused, RequestHost, SharedStore, StoreError,
    StreamHost,
};
use crate::core::config::JwtConfig;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// In-process store with Envoy's CAS semantics (proxy-wasm-cpp-host's `SharedData::set`): a
/// version is checked only against a key that exists (on a missing key any version writes),
/// `None` always writes, and every write takes the next version of one counter shared by all
/// keys, never 0.
#[derive(Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    last_version: Cell<u32>,
    /// Writes fail (`StoreError::Failed`) while set: shared data full, or refusing.
    failing_writes: Cell<bool>,
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// From now on every write fails (`true`) or works again (`false`).
    pub fn fail_writes(&self, failing: bool) {
        self.failing_writes.set(failing);
    }

    pub fn writes_fail(&self) -> bool {
        self.failing_writes.get()
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        if self.failing_writes.get() {
            return Err(StoreError::Failed);
        }
        let mut entries = self.entries.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas, entries.get(key)) {
            if cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let version = self.last_version.get().wrapping_add(1).max(1);
        self.last_version.set(version);
        entries.insert(key.to_string(), (value.to_vec(), version));
        Ok(())
    }
}

/// How often the filter asked each question about the request (reset it between calls to
/// see one call's questions).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub mtls: u32,
    pub digest: u32,
    pub jwt_payload: u32,
}

/// A callout the filter started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub token: CalloutToken,
    pub call: Callout,
    pub timeout_ms: u64,
}

/// Envoy as one worker sees it. Workers of one Envoy share `store` (clone the `Rc`).
pub struct FakeEnvoy {
    pub store: Rc<MemoryStore>,
    /// `connection.mtls`.
    pub mtls: bool,
    /// `connection.sha256_peer_certificate_digest`; Envoy tells it only on an mTLS connection.
    pub peer_digest: Option<Vec<u8>>,
    /// What jwt_authn verified (the token's payload as JSON), and where (namespace, key) the
    /// configuration says it is: the fake panics when the filter looks anywhere else,
    /// failing the test. Read through [`metadata_value`], as Envoy hands metadata over.
    pub jwt_payload: Option<serde_json::Value>,
    pub jwt_location: (String, String),
    /// `source.address`.
    pub source_address: String,
    /// Dispatch fails while set.
    pub refuse_dispatch: bool,
    /// Callouts started, in order; each takes the token after `next_token`.
    pub sent: Vec<Sent>,
    pub next_token: CalloutToken,
    /// Dispatches tried, refused ones included.
    pub attempts: u64,
    pub asked: Asked,
    /// Shared-data reads made through this worker.
    pub shared_reads: Cell<u32>,
}

impl Default for FakeEnvoy {
    fn default() -> Self {
        Self::sharing(Rc::default())
    }
}

impl FakeEnvoy {
    /// A worker of the Envoy whose shared data is `store`: a plain-HTTP connection, no
    /// verified token, callouts accepted.
    pub fn sharing(store: Rc<MemoryStore>) -> Self {
        let jwt = JwtConfig::default();
        Self {
            store,
            mtls: false,
            peer_digest: None,
            jwt_payload: None,
            jwt_location: (jwt.metadata_namespace, jwt.payload_key),
            source_address: "203.0.113.7:40000".into(),
            refuse_dispatch: false,
            sent: Vec::new(),
            next_token: 0,
            attempts: 0,
            asked: Asked::default(),
            shared_reads: Cell::new(0),
        }
    }

    /// What a request on a connection with this peer certificate digest sees.
    pub fn mtls_peer(digest: Vec<u8>) -> Self {
        Self {
            mtls: true,
            peer_digest: Some(digest),
            ..Self::default()
        }
    }
}

impl SharedStore for FakeEnvoy {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared_reads.set(self.shared_reads.get() + 1);
        self.store.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.store.set(key, value, cas)
    }
}

impl RequestHost for FakeEnvoy {
    fn peer_verified(&mut self) -> bool {
        self.asked.mtls += 1;
        self.mtls
    }

    fn peer_certificate_digest(&mut self) -> Option<Vec<u8>> {
        self.asked.digest += 1;
        self.peer_digest.clone().filter(|_| self.mtls)
    }

    fn verified_jwt(
        &mut self,
        namespace: &str,
        payload_key: &str,
        below: &[&str],
    ) -> Option<Vec<u8>> {
        assert_eq!(
            (namespace, payload_key),
            (&*self.jwt_location.0, &*self.jwt_location.1),
            "jwt_authn's payload read where the configuration does not put it"
        );
        self.asked.jwt_payload += 1;
        metadata_value(self.jwt_payload.as_ref()?, below)
    }
}

impl CalloutHost for FakeEnvoy {
    fn dispatch(
        &mut self,
        call: &Callout,
        timeout_ms: u64,
    ) -> Result<CalloutToken, DispatchRefused> {
        self.attempts += 1;
        if self.refuse_dispatch {
            return Err(DispatchRefused);
        }
        self.next_token = self.next_token.wrapping_add(1);
        self.sent.push(Sent {
            token: self.next_token,
            call: call.clone(),
            timeout_ms,
        });
        Ok(self.next_token)
    }
}

impl StreamHost for FakeEnvoy {
    fn source_address(&mut self) -> String {
        self.source_address.clone()
    }
}

/// A value below `payload` (a JSON document jwt_authn put in metadata, where every number is
/// a double) as Envoy's `proxy_get_property` hands it over: the path walks maps by key and
/// lists by index; a string is its bytes, a number the 8 bytes of a little-endian double, a
/// boolean one byte, a list pairs of (item, empty), a map pairs of (key, value); a null
/// cannot be serialized, so the read fails (None), as a missing key does.
pub fn metadata_value(payload: &serde_json::Value, path: &[&str]) -> Option<Vec<u8>> {
    use serde_json::Value;
    let mut value = payload;
    for part in path {
        value = match value {
            Value::Object(members) => members.get(*part)?,
            Value::Array(items) => items.get(part.trim().parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    fn serialize(value: &Value) -> Option<Vec<u8>> {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = match value {
            Value::Null => return None,
            Value::Bool(b) => return Some(vec![u8::from(*b)]),
            Value::Number(n) => return Some(n.as_f64()?.to_le_bytes().to_vec()),
            Value::String(s) => return Some(s.as_bytes().to_vec()),
            Value::Array(items) => items
                .iter()
                .map(|item| Some((serialize(item)?, Vec::new())))
                .collect::<Option<_>>()?,
            Value::Object(members) => members
                .iter()
                .map(|(k, v)| Some((k.as_bytes().to_vec(), serialize(v)?)))
                .collect::<Option<_>>()?,
        };
        let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        Some(crate::core::pairs::serialize(&refs))
    }
    serialize(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_checked_as_envoy_checks_them() {
        let store = MemoryStore::default();
        // A missing key: any version writes (Envoy only compares with an existing entry).
        assert_eq!(store.set("a", b"1", Some(77)), Ok(()));
        let (_, v1) = store.get("a").unwrap();
        assert_eq!(
            store.set("a", b"2", Some(v1 + 1)),
            Err(StoreError::CasMismatch)
        );
        assert_eq!(store.get("a").unwrap().0, b"1");
        assert_eq!(store.set("a", b"2", Some(v1)), Ok(()));
        let (_, v2) = store.get("a").unwrap();
        assert_ne!(v1, v2);
        // No version: always written.
        assert_eq!(store.set("a", b"3", None), Ok(()));
        // One counter for every key: another key's write moves on from the last one.
        store.set("b", b"x", None).unwrap();
        let (_, vb) = store.get("b").unwrap();
        let (_, va) = store.get("a").unwrap();
        assert_eq!(vb, va + 1);
        assert!(store.get("c").is_none());
    }

    #[test]
    fn failing_writes_fail_until_told_otherwise() {
        let store = MemoryStore::default();
        store.fail_writes(true);
        assert_eq!(store.set("a", b"1", None), Err(StoreError::Failed));
        assert!(store.is_empty());
        store.fail_writes(false);
        assert_eq!(store.set("a", b"1", None), Ok(()));
    }

    #[test]
    fn workers_share_one_store_and_count_their_own_reads() {
        let one = FakeEnvoy::default();
        let two = FakeEnvoy::sharing(one.store.clone());
        one.set("k", b"v", None).unwrap();
        assert_eq!(two.get("k").map(|(v, _)| v), Some(b"v".to_vec()));
        assert_eq!((one.shared_reads.get(), two.shared_reads.get()), (0, 1));
    }
}

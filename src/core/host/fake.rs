//! The one host facility the core uses: Envoy's shared data, a key-value store visible to
//! every worker of one Envoy, with compare-and-swap versions.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since we read it.
    CasMismatch,
    /// Anything else the host refused.
    Failed,
}

pub trait SharedStore {
    /// The value and its CAS version, or None when the key was never written.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes when `cas` is None or still current.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// In-process store with Envoy's CAS semantics (proxy-wasm-cpp-host's `SharedData::set`),
/// for native tests of the core: a version is checked only against a key that exists (on a
/// missing key any version writes), `None` always writes, and every write takes the next
/// version of one counter shared by all keys, never 0.
#[derive(Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    last_version: Cell<u32>,
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.entries.borrow().get(key).cloned()
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
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
}

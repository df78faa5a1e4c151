//! The one host facility the core uses: Envoy's shared data, a key-value store visible to
//! every worker of one Envoy, with compare-and-swap versions.

use std::cell::RefCell;
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

/// In-process store with Envoy's CAS semantics, for native tests of the core.
#[derive(Default)]
pub struct MemoryStore {
    entries: RefCell<HashMap<String, (Vec<u8>, u32)>>,
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
        let current = entries.get(key).map(|(_, version)| *version);
        if cas.is_some() && cas != current {
            return Err(StoreError::CasMismatch);
        }
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        entries.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

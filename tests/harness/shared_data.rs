//! Envoy's shared-data store (proxy-wasm-cpp-host `SharedData`), one per Host, so
//! every Vm of a Host sees it the way the workers of one Envoy share a vm_id.

use std::collections::BTreeMap;

/// A set refused because the caller's cas no longer matches the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CasMismatch;

#[derive(Clone, Debug)]
pub struct SharedData {
    entries: BTreeMap<Vec<u8>, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Default for SharedData {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            next_cas: 1,
        }
    }
}

impl SharedData {
    pub fn new() -> Self {
        Self::default()
    }

    /// Value and its cas, or `None` (the ABI's NotFound).
    pub fn get(&self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.entries.get(key).cloned()
    }

    /// Envoy's rule: cas 0 writes unconditionally; a non-zero cas must equal the
    /// entry's current one. A missing key is created whatever the cas. Each
    /// successful write stamps a fresh cas from one store-wide counter that skips 0,
    /// so a cas read from one key never validates a write to another.
    pub fn set(&mut self, key: &[u8], value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        if let Some((_, current)) = self.entries.get(key) {
            if cas != 0 && cas != *current {
                return Err(CasMismatch);
            }
        }
        let stamp = self.bump();
        self.entries.insert(key.to_vec(), (value.to_vec(), stamp));
        Ok(())
    }

    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.entries.keys().cloned().collect()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Vec<u8>, &(Vec<u8>, u32))> {
        self.entries.iter()
    }

    fn bump(&mut self) -> u32 {
        let stamp = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        stamp
    }
}

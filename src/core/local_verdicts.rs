//! A per-worker copy of recent verdicts, in front of the shared-data cache.
//!
//! Every host call crosses the wasm boundary, and a shared-data read crosses it twice (the
//! host calls back into the VM to allocate the value); on the warm path that is most of the
//! filter's cost. A copy kept in the VM's own memory answers repeat keys with no host call.
//! Each copy keeps the deadline of the shared entry it came from, so it never outlives the
//! verdict's TTL; it is bounded, and simply emptied when full.

use super::digest::KeyDigest;
use super::validation_reply::Verdict;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The keys are SHA-256 digests already: their first bytes are a fine hash, and skipping
/// SipHash and its random seed keeps the module smaller.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(17) ^ u64::from_le_bytes(word);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Entries = HashMap<KeyDigest, (Verdict, i64), BuildHasherDefault<DigestHasher>>;

pub struct LocalVerdicts {
    entries: RefCell<Entries>,
    capacity: usize,
}

impl LocalVerdicts {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RefCell::new(Entries::default()),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, digest: &KeyDigest, now: i64) -> Option<Verdict> {
        let mut entries = self.entries.borrow_mut();
        match entries.get(digest) {
            Some((verdict, fresh_until)) if now < *fresh_until => Some(verdict.clone()),
            Some(_) => {
                entries.remove(digest);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, digest: &KeyDigest, verdict: &Verdict, fresh_until: i64, now: i64) {
        if fresh_until <= now {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity && !entries.contains_key(digest) {
            entries.retain(|_, (_, until)| now < *until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(*digest, (verdict.clone(), fresh_until));
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::validation_reply::Denial;
    use super::*;

    const DENY: Verdict = Verdict::Deny(Denial::Invalid);

    #[test]
    fn copies_expire_with_their_shared_deadline() {
        let local = LocalVerdicts::new(4);
        let d = KeyDigest::of(b"k");
        local.put(&d, &DENY, 100, 0);
        assert_eq!(local.get(&d, 99), Some(DENY));
        assert_eq!(local.get(&d, 100), None);
        assert!(local.is_empty(), "expired copies are dropped");
        local.put(&d, &DENY, 100, 100);
        assert!(local.is_empty(), "dead verdicts are not copied");
    }

    #[test]
    fn bounded_by_capacity() {
        let local = LocalVerdicts::new(3);
        for i in 0..50u32 {
            local.put(&KeyDigest::of(&i.to_le_bytes()), &DENY, 100, 0);
            assert!(local.len() <= 3);
        }
    }
}

//! A per-worker copy of recent verdicts, in front of the shared-data cache.
//!
//! Every host call crosses the wasm boundary, and a shared-data read crosses it twice (the
//! host calls back into the VM to allocate the value); on the warm path that is most of the
//! filter's cost. A copy kept in the VM's own memory answers repeat credentials with no host
//! call, and keyed by the credential's raw bytes it needs no SHA-256 either: the secret never
//! leaves the VM, and the digest is computed once, when the copy is made. Each copy keeps the
//! deadline of the shared entry it came from, so it never outlives the verdict's TTL; the map
//! is bounded, and simply emptied when full.

use super::digest::KeyDigest;
use super::Known;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct LocalHit {
    pub digest: KeyDigest,
    pub verdict: Known,
}

struct Entry {
    digest: KeyDigest,
    verdict: Known,
    fresh_until: i64,
}

pub struct LocalVerdicts {
    entries: HashMap<Box<[u8]>, Entry>,
    capacity: usize,
}

impl LocalVerdicts {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&mut self, secret: &[u8], now: i64) -> Option<LocalHit> {
        match self.entries.get(secret) {
            Some(e) if now < e.fresh_until => Some(LocalHit {
                digest: e.digest,
                verdict: e.verdict.clone(),
            }),
            Some(_) => {
                self.entries.remove(secret);
                None
            }
            None => None,
        }
    }

    pub fn put(
        &mut self,
        secret: &[u8],
        digest: KeyDigest,
        verdict: Known,
        fresh_until: i64,
        now: i64,
    ) {
        if fresh_until <= now {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(secret) {
            self.entries.retain(|_, e| now < e.fresh_until);
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        let entry = Entry {
            digest,
            verdict,
            fresh_until,
        };
        self.entries.insert(secret.into(), entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Denial;
    use super::*;

    const DENY: Known = Known::Deny(Denial::Invalid);

    fn put(local: &mut LocalVerdicts, key: &str, until: i64, now: i64) {
        local.put(
            key.as_bytes(),
            KeyDigest::of(key.as_bytes()),
            DENY,
            until,
            now,
        );
    }

    #[test]
    fn copies_expire_with_their_shared_entry() {
        let mut local = LocalVerdicts::new(8);
        put(&mut local, "k", 100, 10);
        let hit = local.get(b"k", 99).unwrap();
        assert_eq!(hit.digest, KeyDigest::of(b"k"));
        assert_eq!(hit.verdict, DENY);
        assert!(local.get(b"k", 100).is_none());
        assert!(local.is_empty(), "an expired copy is dropped when seen");
        put(&mut local, "dead", 10, 10);
        assert!(
            local.is_empty(),
            "a verdict already past its TTL is not copied"
        );
    }

    #[test]
    fn stays_bounded_and_prefers_dropping_dead_copies() {
        let mut local = LocalVerdicts::new(3);
        put(&mut local, "old", 20, 10);
        put(&mut local, "a", 100, 10);
        put(&mut local, "b", 100, 10);
        put(&mut local, "c", 100, 30);
        assert_eq!(local.len(), 3, "the dead copy made room");
        assert!(local.get(b"a", 30).is_some());
        put(&mut local, "d", 100, 30);
        assert_eq!(local.len(), 1, "full of live copies: start over");
        assert!(local.get(b"d", 30).is_some());
    }
}

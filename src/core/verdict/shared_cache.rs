//! The verdict cache in shared data, visible to every worker of one Envoy.
//!
//! Bounded by construction: `max_entries` slots; each key digest may live in one of two
//! slots (two independent slices of the digest choose them), and every entry carries the full
//! digest, checked on read, so a collision is a miss, never another key's verdict. A write
//! prefers the key's own slot, then an empty or dead one, then the one closest to its end,
//! so a spray of random keys can only overwrite slots, never grow the store. Two choices
//! instead of one keep collision losses small (1,000 keys in 10,000 single slots lose ~9% of
//! hits; with two choices almost none). The plaintext key is never stored.

use super::digest::KeyDigest;
use super::slot_codec::{self, Slot};
use super::{KeyGrant, Verdict};
use crate::core::config::CacheConfig;
use crate::core::host::{SharedStore, StoreError};

/// What a lookup saw in the key's two slots, so that the write after a callout needs no
/// second read; the CAS versions make it lose cleanly to a newer write by another worker
/// (except on a slot that was empty: shared data has no version for a missing key, and the
/// last writer wins, which costs at most one cached verdict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    slots: [SlotSeen; 2],
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotSeen {
    key: String,
    cas: Option<u32>,
    /// None: empty or unreadable. Some((is ours, usable_until)).
    holder: Option<(bool, i64)>,
}

impl SlotSeen {
    /// Lower is a better place to write: ours, then empty or dead, then soonest to end.
    fn eviction_rank(&self, now: i64) -> (u8, i64) {
        match self.holder {
            Some((true, _)) => (0, 0),
            None => (1, 0),
            Some((false, until)) if until <= now => (1, 0),
            Some((false, until)) => (2, until),
        }
    }
}

pub struct VerdictCache<'a, S: SharedStore> {
    store: &'a S,
    config: &'a CacheConfig,
    prefix: &'a str,
}

impl<'a, S: SharedStore> VerdictCache<'a, S> {
    /// `prefix` namespaces the slots (one per service id), e.g. `hokusai.v1.ml-platform.`.
    pub fn new(store: &'a S, config: &'a CacheConfig, prefix: &'a str) -> Self {
        Self {
            store,
            config,
            prefix,
        }
    }

    /// A verdict still inside its TTL (with the end of that TTL), or what the slots held,
    /// for [`Self::remember`].
    pub fn lookup(&self, digest: &KeyDigest, now: i64) -> Result<(Verdict, i64), Probe> {
        let mut seen = Vec::with_capacity(2);
        for key in self.slot_keys(digest) {
            let stored = self.store.get(&key);
            let slot = stored
                .as_ref()
                .and_then(|(bytes, _)| slot_codec::decode(bytes));
            if let Some(slot) = &slot {
                if slot.digest == *digest && now < slot.fresh_until {
                    return Ok((slot.verdict.clone(), slot.fresh_until));
                }
            }
            seen.push(SlotSeen {
                key,
                cas: stored.map(|(_, cas)| cas),
                holder: slot.map(|s| (s.digest == *digest, s.usable_until)),
            });
        }
        let [a, b]: [SlotSeen; 2] = seen.try_into().expect("two slots");
        Err(Probe { slots: [a, b] })
    }

    /// An allow verdict past its TTL but inside `stale_if_error_s` (and never past the key's
    /// own expiry): what we serve when the auth service is down.
    pub fn stale_allow(&self, digest: &KeyDigest, now: i64) -> Option<KeyGrant> {
        self.slot_keys(digest).into_iter().find_map(|key| {
            let (bytes, _) = self.store.get(&key)?;
            let slot = slot_codec::decode(&bytes)?;
            match slot.verdict {
                Verdict::Allow(grant) if slot.digest == *digest && now < slot.usable_until => {
                    Some(grant)
                }
                _ => None,
            }
        })
    }

    /// Stores a verdict in the better of the two slots the probe saw; returns the end of its
    /// TTL.
    pub fn remember(&self, digest: &KeyDigest, verdict: &Verdict, probe: &Probe, now: i64) -> i64 {
        let (fresh_until, usable_until) = match verdict {
            Verdict::Allow(grant) => {
                let cap = grant.expires_at.unwrap_or(i64::MAX);
                let fresh = now.saturating_add(self.config.ttl_s as i64).min(cap);
                let stale = fresh
                    .saturating_add(self.config.stale_if_error_s as i64)
                    .min(cap);
                (fresh, stale)
            }
            Verdict::Deny(_) => {
                let fresh = now.saturating_add(self.config.negative_ttl_s as i64);
                (fresh, fresh)
            }
        };
        if usable_until <= now {
            return fresh_until;
        }
        let value = slot_codec::encode(&Slot {
            digest: *digest,
            verdict: verdict.clone(),
            fresh_until,
            usable_until,
        });
        let slot = probe
            .slots
            .iter()
            .min_by_key(|s| s.eviction_rank(now))
            .expect("two slots");
        match self.store.set(&slot.key, &value, slot.cas) {
            // Another worker wrote the slot since we looked: its entry is as new as ours.
            Ok(()) | Err(StoreError::CasMismatch) => {}
            Err(StoreError::Failed) => {
                log::warn!("verdict cache write failed for {}", digest.fingerprint())
            }
        }
        fresh_until
    }

    fn slot_keys(&self, digest: &KeyDigest) -> [String; 2] {
        let slots = self.config.max_entries;
        let [a, b] = digest.slots(slots);
        let b = if a == b && slots > 1 {
            (b + 1) % slots
        } else {
            b
        };
        [a, b].map(|slot| format!("{}verdict.{slot}", self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Denial;
    use super::*;
    use crate::core::host::fake::MemoryStore;

    const NOW: i64 = 1_000_000;

    fn grant(expires_at: Option<i64>) -> Verdict {
        Verdict::Allow(KeyGrant {
            key_id: "k".into(),
            user_id: "u".into(),
            scopes: vec!["mlflow:read".into()],
            rate_limit_per_hour: None,
            expires_at,
        })
    }

    fn config(max_entries: u32) -> CacheConfig {
        CacheConfig {
            ttl_s: 300,
            negative_ttl_s: 30,
            stale_if_error_s: 60,
            max_entries,
        }
    }

    /// Looks up, and on a miss stores `verdict`, as the decision does around a callout.
    fn fill<S: SharedStore>(cache: &VerdictCache<S>, d: &KeyDigest, verdict: &Verdict, now: i64) {
        if let Err(probe) = cache.lookup(d, now) {
            cache.remember(d, verdict, &probe, now);
        }
    }

    #[test]
    fn allow_lives_ttl_then_stale_window() {
        let (store, config) = (MemoryStore::default(), config(16));
        let cache = VerdictCache::new(&store, &config, "t.");
        let d = KeyDigest::of(b"key");
        fill(&cache, &d, &grant(None), NOW);
        assert_eq!(cache.lookup(&d, NOW + 299), Ok((grant(None), NOW + 300)));
        assert!(cache.lookup(&d, NOW + 300).is_err());
        assert!(cache.stale_allow(&d, NOW + 359).is_some());
        assert!(cache.stale_allow(&d, NOW + 360).is_none());
    }

    #[test]
    fn expires_at_caps_fresh_and_stale() {
        let (store, config) = (MemoryStore::default(), config(16));
        let cache = VerdictCache::new(&store, &config, "t.");
        let d = KeyDigest::of(b"key");
        fill(&cache, &d, &grant(Some(NOW + 10)), NOW);
        assert!(cache.lookup(&d, NOW + 9).is_ok());
        assert!(cache.lookup(&d, NOW + 10).is_err());
        assert!(cache.stale_allow(&d, NOW + 10).is_none());
    }

    #[test]
    fn denials_live_negative_ttl_and_are_never_stale_allows() {
        let (store, config) = (MemoryStore::default(), config(16));
        let cache = VerdictCache::new(&store, &config, "t.");
        let d = KeyDigest::of(b"bad");
        fill(&cache, &d, &Verdict::Deny(Denial::Invalid), NOW);
        assert_eq!(
            cache.lookup(&d, NOW + 29),
            Ok((Verdict::Deny(Denial::Invalid), NOW + 30))
        );
        assert!(cache.lookup(&d, NOW + 30).is_err());
        assert!(cache.stale_allow(&d, NOW + 1).is_none());
    }

    #[test]
    fn store_is_bounded_and_collisions_are_misses() {
        let (store, config) = (MemoryStore::default(), config(4));
        let cache = VerdictCache::new(&store, &config, "t.");
        let digests: Vec<_> = (0..200u32)
            .map(|i| KeyDigest::of(&i.to_le_bytes()))
            .collect();
        for d in &digests {
            fill(&cache, d, &grant(None), NOW);
        }
        assert!(store.len() <= 4);
        let hits = digests
            .iter()
            .filter(|d| cache.lookup(d, NOW).is_ok())
            .count();
        assert!(
            hits <= 4,
            "only the last writer of each slot may hit, got {hits}"
        );
    }

    #[test]
    fn two_choices_keep_nearly_every_key_of_a_sparse_cache() {
        let (store, config) = (MemoryStore::default(), config(10_000));
        let cache = VerdictCache::new(&store, &config, "t.");
        let digests: Vec<_> = (0..1000u32)
            .map(|i| KeyDigest::of(&i.to_le_bytes()))
            .collect();
        for d in &digests {
            fill(&cache, d, &grant(None), NOW);
        }
        let hits = digests
            .iter()
            .filter(|d| cache.lookup(d, NOW).is_ok())
            .count();
        // One slot per key would keep ~905 of 1,000 here.
        assert!(hits >= 995, "{hits} of 1000 kept");
    }

    #[test]
    fn a_dead_entry_is_evicted_before_a_live_one() {
        let (store, config) = (MemoryStore::default(), config(2));
        let cache = VerdictCache::new(&store, &config, "t.");
        let (old, live, new) = (
            KeyDigest::of(b"old"),
            KeyDigest::of(b"live"),
            KeyDigest::of(b"new"),
        );
        fill(&cache, &old, &Verdict::Deny(Denial::Invalid), NOW - 100);
        fill(&cache, &live, &grant(None), NOW);
        fill(&cache, &new, &grant(None), NOW);
        assert!(cache.lookup(&live, NOW).is_ok());
        assert!(cache.lookup(&new, NOW).is_ok());
    }

    #[test]
    fn a_concurrent_write_wins_over_a_stale_probe() {
        let (store, config) = (MemoryStore::default(), config(1));
        let cache = VerdictCache::new(&store, &config, "t.");
        let (a, b, c) = (
            KeyDigest::of(b"a"),
            KeyDigest::of(b"b"),
            KeyDigest::of(b"c"),
        );
        // An empty slot has no CAS version (Envoy: cas 0 writes unconditionally), so the
        // race is only detectable on an occupied slot.
        fill(&cache, &c, &grant(None), NOW);
        let probe_a = cache.lookup(&a, NOW).unwrap_err();
        fill(&cache, &b, &grant(None), NOW);
        cache.remember(&a, &grant(None), &probe_a, NOW);
        assert!(
            cache.lookup(&b, NOW).is_ok(),
            "the other worker's newer entry stays"
        );
    }

    #[test]
    fn zero_ttls_store_nothing() {
        let store = MemoryStore::default();
        let config = CacheConfig {
            ttl_s: 0,
            negative_ttl_s: 0,
            stale_if_error_s: 0,
            max_entries: 4,
        };
        let cache = VerdictCache::new(&store, &config, "t.");
        fill(&cache, &KeyDigest::of(b"a"), &grant(None), NOW);
        fill(
            &cache,
            &KeyDigest::of(b"b"),
            &Verdict::Deny(Denial::Invalid),
            NOW,
        );
        assert!(store.is_empty());
    }
}

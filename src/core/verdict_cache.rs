//! The verdict cache in shared data, visible to every worker of one Envoy.
//!
//! Bounded by construction: `max_entries` slots addressed by the key digest; each slot holds
//! one entry that carries the full digest, checked on read, so a collision is a miss and a
//! spray of random keys can only overwrite slots, never grow the store. The plaintext key is
//! never stored.

use super::config::CacheConfig;
use super::digest::KeyDigest;
use super::store::{SharedStore, StoreError};
use super::validation_reply::{KeyGrant, Verdict};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Entry {
    /// Full key digest (hex), to tell slot collisions apart.
    digest: String,
    verdict: Verdict,
    fresh_until: i64,
    /// For allows: the end of the stale-if-error window. Equal to `fresh_until` for denials.
    usable_until: i64,
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

    /// A verdict still inside its TTL.
    pub fn fresh(&self, digest: &KeyDigest, now: i64) -> Option<Verdict> {
        self.read(digest)
            .filter(|e| now < e.fresh_until)
            .map(|e| e.verdict)
    }

    /// An allow verdict past its TTL but inside `stale_if_error_s` (and never past the key's
    /// own expiry): what we serve when the auth service is down.
    pub fn stale_allow(&self, digest: &KeyDigest, now: i64) -> Option<KeyGrant> {
        match self.read(digest).filter(|e| now < e.usable_until)?.verdict {
            Verdict::Allow(grant) => Some(grant),
            Verdict::Deny(_) => None,
        }
    }

    pub fn remember(&self, digest: &KeyDigest, verdict: &Verdict, now: i64) {
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
            return;
        }
        let entry = Entry {
            digest: digest.hex(),
            verdict: verdict.clone(),
            fresh_until,
            usable_until,
        };
        let Ok(value) = serde_json::to_vec(&entry) else {
            return;
        };
        let key = self.slot_key(digest);
        let cas = self.store.get(&key).map(|(_, cas)| cas);
        match self.store.set(&key, &value, cas) {
            // Another worker wrote the slot between our read and write: theirs is as new.
            Ok(()) | Err(StoreError::CasMismatch) => {}
            Err(StoreError::Failed) => {
                log::warn!("verdict cache write failed for {}", digest.fingerprint())
            }
        }
    }

    fn read(&self, digest: &KeyDigest) -> Option<Entry> {
        let (bytes, _) = self.store.get(&self.slot_key(digest))?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        (entry.digest == digest.hex()).then_some(entry)
    }

    fn slot_key(&self, digest: &KeyDigest) -> String {
        format!(
            "{}verdict.{}",
            self.prefix,
            digest.slot(self.config.max_entries)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::MemoryStore;
    use super::super::validation_reply::Denial;
    use super::*;

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

    fn config() -> CacheConfig {
        CacheConfig {
            ttl_s: 300,
            negative_ttl_s: 30,
            stale_if_error_s: 60,
            max_entries: 4,
        }
    }

    #[test]
    fn allow_lives_ttl_then_stale_window() {
        let (store, config) = (MemoryStore::default(), config());
        let cache = VerdictCache::new(&store, &config, "t.");
        let d = KeyDigest::of(b"key");
        cache.remember(&d, &grant(None), NOW);
        assert_eq!(cache.fresh(&d, NOW + 299), Some(grant(None)));
        assert_eq!(cache.fresh(&d, NOW + 300), None);
        assert!(cache.stale_allow(&d, NOW + 359).is_some());
        assert!(cache.stale_allow(&d, NOW + 360).is_none());
    }

    #[test]
    fn expires_at_caps_fresh_and_stale() {
        let (store, config) = (MemoryStore::default(), config());
        let cache = VerdictCache::new(&store, &config, "t.");
        let d = KeyDigest::of(b"key");
        cache.remember(&d, &grant(Some(NOW + 10)), NOW);
        assert!(cache.fresh(&d, NOW + 9).is_some());
        assert!(cache.fresh(&d, NOW + 10).is_none());
        assert!(cache.stale_allow(&d, NOW + 10).is_none());
    }

    #[test]
    fn denials_live_negative_ttl_and_are_never_stale_allows() {
        let (store, config) = (MemoryStore::default(), config());
        let cache = VerdictCache::new(&store, &config, "t.");
        let d = KeyDigest::of(b"bad");
        cache.remember(&d, &Verdict::Deny(Denial::Invalid), NOW);
        assert_eq!(
            cache.fresh(&d, NOW + 29),
            Some(Verdict::Deny(Denial::Invalid))
        );
        assert_eq!(cache.fresh(&d, NOW + 30), None);
        assert!(cache.stale_allow(&d, NOW + 1).is_none());
    }

    #[test]
    fn store_is_bounded_and_collisions_are_misses() {
        let (store, config) = (MemoryStore::default(), config());
        let cache = VerdictCache::new(&store, &config, "t.");
        let digests: Vec<_> = (0..200u32)
            .map(|i| KeyDigest::of(&i.to_le_bytes()))
            .collect();
        for d in &digests {
            cache.remember(d, &grant(None), NOW);
        }
        assert!(store.len() <= 4);
        let hits = digests
            .iter()
            .filter(|d| cache.fresh(d, NOW).is_some())
            .count();
        assert!(
            hits <= 4,
            "only the last writer of each slot may hit, got {hits}"
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
        cache.remember(&KeyDigest::of(b"a"), &grant(None), NOW);
        cache.remember(&KeyDigest::of(b"b"), &Verdict::Deny(Denial::Invalid), NOW);
        assert!(store.is_empty());
    }
}

//! The key's own `rate_limit_per_hour`, counted across workers in shared data.
//!
//! Fixed one-hour windows aligned to the clock, one counter slot per key digest (bounded like
//! the verdict cache). Increments use CAS; after a few lost races the request is let through
//! rather than refused, so contention can undercount but never fabricates a 429.

use super::digest::KeyDigest;
use super::store::{SharedStore, StoreError};
use serde::{Deserialize, Serialize};

const WINDOW_S: i64 = 3600;
const CAS_ATTEMPTS: usize = 8;

#[derive(Serialize, Deserialize)]
struct Counter {
    digest: String,
    window: i64,
    count: u64,
}

/// Counts one request. `Err(retry_after_s)` when the key has used up its window.
pub fn consume<S: SharedStore>(
    store: &S,
    key: &str,
    digest: &KeyDigest,
    limit_per_hour: u64,
    now: i64,
) -> Result<(), u64> {
    let window = now.div_euclid(WINDOW_S);
    let digest_hex = digest.hex();
    for _ in 0..CAS_ATTEMPTS {
        let current = store.get(key);
        let count = current
            .as_ref()
            .and_then(|(bytes, _)| serde_json::from_slice::<Counter>(bytes).ok())
            .filter(|c| c.window == window && c.digest == digest_hex)
            .map_or(0, |c| c.count);
        if count >= limit_per_hour {
            let retry_after = (window + 1) * WINDOW_S - now;
            return Err(retry_after.max(1) as u64);
        }
        let next = Counter {
            digest: digest_hex.clone(),
            window,
            count: count + 1,
        };
        let Ok(bytes) = serde_json::to_vec(&next) else {
            return Ok(());
        };
        match store.set(key, &bytes, current.map(|(_, cas)| cas)) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Failed) => break,
        }
    }
    log::warn!(
        "rate counter for {} not updated; request let through",
        digest.fingerprint()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::store::MemoryStore;
    use super::*;

    #[test]
    fn limit_applies_per_window_and_retry_after_points_to_its_end() {
        let store = MemoryStore::default();
        let d = KeyDigest::of(b"k");
        let start = 7200 * 100 + 100; // 100 s into a window
        for _ in 0..3 {
            assert_eq!(consume(&store, "rl", &d, 3, start), Ok(()));
        }
        assert_eq!(consume(&store, "rl", &d, 3, start), Err(3500));
        assert_eq!(consume(&store, "rl", &d, 3, start + 3499), Err(1));
        assert_eq!(consume(&store, "rl", &d, 3, start + 3500), Ok(()));
    }

    #[test]
    fn another_key_in_the_slot_does_not_inherit_the_count() {
        let store = MemoryStore::default();
        let (a, b) = (KeyDigest::of(b"a"), KeyDigest::of(b"b"));
        assert_eq!(consume(&store, "rl", &a, 1, 0), Ok(()));
        assert_eq!(consume(&store, "rl", &a, 1, 0), Err(3600));
        assert_eq!(consume(&store, "rl", &b, 1, 0), Ok(()));
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let store = MemoryStore::default();
        assert!(consume(&store, "rl", &KeyDigest::of(b"k"), 0, 10).is_err());
    }
}

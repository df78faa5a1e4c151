//! The key's own `rate_limit_per_hour`, counted across workers in shared data.
//!
//! Fixed one-hour windows aligned to the clock, one counter per key, named by the key's full
//! digest: two keys can never share (and so reset) a counter. Only keys the auth service
//! allowed with a limit get one, so sprayed keys never create counters. Increments use CAS;
//! after a few lost races the request is let through rather than refused, so contention can
//! undercount but never fabricates a 429.

use super::store::{SharedStore, StoreError};

const WINDOW_S: i64 = 3600;
const CAS_ATTEMPTS: usize = 8;

/// In shared data as 16 bytes: the window (i64) and the count in it (u64), little-endian.
struct Counter {
    window: i64,
    count: u64,
}

impl Counter {
    fn decode(bytes: &[u8]) -> Option<Counter> {
        let (window, count) = bytes.split_at_checked(8)?;
        Some(Counter {
            window: i64::from_le_bytes(window.try_into().ok()?),
            count: u64::from_le_bytes(count.try_into().ok()?),
        })
    }

    fn encode(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.window.to_le_bytes());
        out[8..].copy_from_slice(&self.count.to_le_bytes());
        out
    }
}

/// Counts one request. `Err(retry_after_s)` when the key has used up its window.
pub fn consume<S: SharedStore>(
    store: &S,
    key: &str,
    limit_per_hour: u64,
    now: i64,
) -> Result<(), u64> {
    let window = now.div_euclid(WINDOW_S);
    for _ in 0..CAS_ATTEMPTS {
        let current = store.get(key);
        let count = current
            .as_ref()
            .and_then(|(bytes, _)| Counter::decode(bytes))
            .filter(|c| c.window == window)
            .map_or(0, |c| c.count);
        if count >= limit_per_hour {
            let retry_after = (window + 1) * WINDOW_S - now;
            return Err(retry_after.max(1) as u64);
        }
        let next = Counter {
            window,
            count: count + 1,
        };
        match store.set(key, &next.encode(), current.map(|(_, cas)| cas)) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Failed) => break,
        }
    }
    log::warn!("rate counter {key} not updated; request let through");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::store::MemoryStore;
    use super::*;

    #[test]
    fn limit_applies_per_window_and_retry_after_points_to_its_end() {
        let store = MemoryStore::default();
        let start = 7200 * 100 + 100; // 100 s into a window
        for _ in 0..3 {
            assert_eq!(consume(&store, "rl", 3, start), Ok(()));
        }
        assert_eq!(consume(&store, "rl", 3, start), Err(3500));
        assert_eq!(consume(&store, "rl", 3, start + 3499), Err(1));
        assert_eq!(consume(&store, "rl", 3, start + 3500), Ok(()));
    }

    #[test]
    fn counters_of_two_keys_never_touch() {
        let store = MemoryStore::default();
        assert_eq!(consume(&store, "rl.a", 1, 0), Ok(()));
        assert_eq!(consume(&store, "rl.b", 1, 0), Ok(()));
        assert_eq!(consume(&store, "rl.a", 1, 0), Err(3600));
        assert_eq!(consume(&store, "rl.b", 1, 0), Err(3600));
    }

    #[test]
    fn a_counter_that_is_not_16_bytes_counts_as_empty() {
        let store = MemoryStore::default();
        store
            .set("rl", b"{\"window\":0,\"count\":99}", None)
            .unwrap();
        assert_eq!(consume(&store, "rl", 1, 0), Ok(()));
        assert_eq!(consume(&store, "rl", 1, 0), Err(3600));
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let store = MemoryStore::default();
        assert!(consume(&store, "rl", 0, 10).is_err());
    }
}

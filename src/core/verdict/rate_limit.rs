//! The key's own `rate_limit_per_hour`, counted across workers in shared data.
//!
//! Fixed one-hour windows aligned to the clock. Counters live in a fixed set of slots,
//! created when the filter starts ([`prepare`]) and never again: Envoy's shared data writes a
//! missing key unconditionally, whatever CAS version is given, so a counter created on a
//! key's first use could be overwritten by another worker's first count, losing it. Every
//! count is a CAS write on a slot that already exists, so two workers can never both count
//! from the same old value. Envoy configures a fresh copy of the VM on its main thread
//! before any worker VM exists (its configuration canary), so the slots are in place before
//! the first request anywhere.
//!
//! A key may count in one of two slots (two slices of its digest choose them), and each
//! counter carries the full digest, so two keys never share a count. Only keys the auth
//! service allowed with a limit ever count, so sprayed keys take no slot.

use super::digest::KeyDigest;
use crate::core::host::{SharedStore, StoreError};

const WINDOW_S: i64 = 3600;
/// Rounds of read and CAS write before giving up; each lost round is another worker's
/// successful count, so with a few workers this is never reached in practice.
const CAS_ATTEMPTS: usize = 32;
/// Slots: `cache.max_entries`, within these bounds (every worker reads them all at start,
/// and a small verdict cache should not mean few counters).
pub const MIN_SLOTS: u32 = 1024;
pub const MAX_SLOTS: u32 = 16_384;

const EMPTY: u8 = 0;
const HELD: u8 = 1;
const HELD_LEN: usize = 1 + 32 + 8 + 8;

/// What counting one request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Counted, within the limit.
    Counted,
    /// The key has used up its window: refuse with this `retry-after`.
    Spent { retry_after_s: u64 },
    /// Both of the key's slots are held by other keys counting in this same hour: the
    /// request was not counted (documented; the adapter counts these).
    NoSlot,
    /// The counter could not be read or written (a slot missing, a host error, or
    /// [`CAS_ATTEMPTS`] lost races): refuse, never let an uncounted request through.
    Unavailable,
}

/// Where the counters of one filter configuration live.
#[derive(Debug, Clone)]
pub struct RateCounters {
    /// e.g. `hokusai.v1.ml-platform.rate.`
    prefix: String,
    slots: u32,
}

/// One slot as read.
enum Slot {
    Empty,
    Held {
        digest: [u8; 32],
        window: i64,
        count: u64,
    },
}

impl Slot {
    fn decode(bytes: &[u8]) -> Option<Slot> {
        match *bytes.first()? {
            EMPTY if bytes.len() == 1 => Some(Slot::Empty),
            HELD if bytes.len() == HELD_LEN => Some(Slot::Held {
                digest: bytes[1..33].try_into().ok()?,
                window: i64::from_le_bytes(bytes[33..41].try_into().ok()?),
                count: u64::from_le_bytes(bytes[41..49].try_into().ok()?),
            }),
            _ => None,
        }
    }

    fn encode_held(digest: &KeyDigest, window: i64, count: u64) -> [u8; HELD_LEN] {
        let mut out = [0; HELD_LEN];
        out[0] = HELD;
        out[1..33].copy_from_slice(&digest.0);
        out[33..41].copy_from_slice(&window.to_le_bytes());
        out[41..49].copy_from_slice(&count.to_le_bytes());
        out
    }
}

/// How a slot can serve the key, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fit {
    /// The key's counter for this window (or a later one, written by a worker whose clock
    /// read a moment later across the hour): continue from its count, in its window.
    Current { window: i64, count: u64 },
    /// The key's counter from an earlier window, or a slot free to take: start at 0.
    Free,
    /// Another key's counter in this window or a later one.
    Taken,
}

impl RateCounters {
    pub fn new(prefix: String, max_entries: u32) -> Self {
        Self::with_slots(prefix, max_entries.clamp(MIN_SLOTS, MAX_SLOTS))
    }

    /// Exactly `slots` slots (at least one), for tests of a crowded table.
    pub fn with_slots(prefix: String, slots: u32) -> Self {
        Self {
            prefix,
            slots: slots.max(1),
        }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    fn key(&self, slot: u32) -> String {
        format!("{}{slot}", self.prefix)
    }

    /// Creates every slot that does not exist yet, leaving existing ones (and their counts)
    /// alone. Called when a VM is configured, before it serves a request.
    pub fn prepare<S: SharedStore>(&self, store: &S) -> Result<u32, StoreError> {
        let mut created = 0;
        for slot in 0..self.slots {
            let key = self.key(slot);
            if store.get(&key).is_none() {
                store.set(&key, &[EMPTY], None)?;
                created += 1;
            }
        }
        Ok(created)
    }

    /// Counts one request of the key with `digest`.
    pub fn consume<S: SharedStore>(
        &self,
        store: &S,
        digest: &KeyDigest,
        limit_per_hour: u64,
        now: i64,
    ) -> Count {
        let window = now.div_euclid(WINDOW_S);
        let [a, b] = digest.slots(self.slots);
        let keys = if a == b {
            [self.key(a), self.key((b + 1) % self.slots)]
        } else {
            [self.key(a), self.key(b)]
        };
        for _ in 0..CAS_ATTEMPTS {
            // The first slot holding the key's current counter is the only one: within a
            // window slots are only ever taken, so a key finding its first slot taken by
            // another key finds it taken on every later look too.
            let mut best: Option<(Fit, &str, u32)> = None;
            for key in &keys {
                let Some((bytes, cas)) = store.get(key) else {
                    log::error!("rate counter slot {key} is missing; refusing");
                    return Count::Unavailable;
                };
                let fit = match Slot::decode(&bytes) {
                    Some(Slot::Held {
                        digest: holder,
                        window: w,
                        count,
                    }) if holder == digest.0 && w >= window => Fit::Current { window: w, count },
                    Some(Slot::Held { window: w, .. }) if w >= window => Fit::Taken,
                    // Empty, an earlier window's, or unreadable: free to take over.
                    _ => Fit::Free,
                };
                if best.is_none_or(|(b, _, _)| rank(fit) < rank(b)) {
                    best = Some((fit, key, cas));
                }
                if matches!(fit, Fit::Current { .. }) {
                    break;
                }
            }
            let Some((fit, key, cas)) = best else {
                return Count::Unavailable;
            };
            let (window, count) = match fit {
                Fit::Current { window, count } => (window, count),
                Fit::Free => (window, 0),
                Fit::Taken => return Count::NoSlot,
            };
            if count >= limit_per_hour {
                let retry_after = (window + 1) * WINDOW_S - now;
                return Count::Spent {
                    retry_after_s: retry_after.clamp(1, WINDOW_S) as u64,
                };
            }
            let next = Slot::encode_held(digest, window, count + 1);
            match store.set(key, &next, Some(cas)) {
                Ok(()) => return Count::Counted,
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Failed) => return Count::Unavailable,
            }
        }
        log::warn!(
            "rate counter for {} lost every race; refusing",
            digest.fingerprint()
        );
        Count::Unavailable
    }
}

fn rank(fit: Fit) -> u8 {
    match fit {
        Fit::Current { .. } => 0,
        Fit::Free => 1,
        Fit::Taken => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::host::fake::MemoryStore;

    fn counters(store: &MemoryStore, slots: u32) -> RateCounters {
        let c = RateCounters::with_slots("rl.".into(), slots);
        c.prepare(store).unwrap();
        c
    }

    fn key(n: u32) -> KeyDigest {
        KeyDigest::of(&n.to_le_bytes())
    }

    #[test]
    fn limit_applies_per_window_and_retry_after_points_to_its_end() {
        let store = MemoryStore::default();
        let c = counters(&store, 64);
        let start = 7200 * 100 + 100; // 100 s into a window
        for _ in 0..3 {
            assert_eq!(c.consume(&store, &key(1), 3, start), Count::Counted);
        }
        let spent = |retry_after_s| Count::Spent { retry_after_s };
        assert_eq!(c.consume(&store, &key(1), 3, start), spent(3500));
        assert_eq!(c.consume(&store, &key(1), 3, start + 3499), spent(1));
        assert_eq!(c.consume(&store, &key(1), 3, start + 3500), Count::Counted);
    }

    #[test]
    fn counters_of_two_keys_never_touch_even_in_one_slot_pair() {
        let store = MemoryStore::default();
        let c = counters(&store, 1);
        assert_eq!(c.consume(&store, &key(1), 1, 0), Count::Counted);
        // One slot in all: the second key finds it taken for this hour.
        assert_eq!(c.consume(&store, &key(2), 1, 0), Count::NoSlot);
        assert_eq!(
            c.consume(&store, &key(1), 1, 0),
            Count::Spent {
                retry_after_s: 3600
            }
        );
        // Next hour the slot is free again, for whichever key comes first.
        assert_eq!(c.consume(&store, &key(2), 1, 3600), Count::Counted);
        assert_eq!(c.consume(&store, &key(1), 1, 3600), Count::NoSlot);
    }

    #[test]
    fn a_key_whose_first_slot_is_taken_counts_in_its_second() {
        let store = MemoryStore::default();
        let c = counters(&store, 2);
        let (a, b) = (0..100)
            .flat_map(|i| (0..100).map(move |j| (key(i), key(j))))
            .find(|(a, b)| a.slots(2)[0] == b.slots(2)[0] && a != b)
            .unwrap();
        assert_eq!(c.consume(&store, &a, 2, 0), Count::Counted);
        assert_eq!(c.consume(&store, &b, 2, 0), Count::Counted);
        assert_eq!(c.consume(&store, &b, 2, 0), Count::Counted);
        assert_eq!(
            c.consume(&store, &b, 2, 0),
            Count::Spent {
                retry_after_s: 3600
            }
        );
        assert_eq!(c.consume(&store, &a, 2, 0), Count::Counted);
    }

    #[test]
    fn prepare_creates_each_slot_once_and_keeps_counts() {
        let store = MemoryStore::default();
        let c = counters(&store, 8);
        assert_eq!(store.len(), 8);
        assert_eq!(c.consume(&store, &key(1), 1, 0), Count::Counted);
        assert_eq!(c.prepare(&store), Ok(0));
        assert_eq!(
            c.consume(&store, &key(1), 1, 0),
            Count::Spent {
                retry_after_s: 3600
            }
        );
    }

    #[test]
    fn a_counter_a_moment_ahead_across_the_hour_is_never_undone() {
        let store = MemoryStore::default();
        let c = counters(&store, 1);
        // One worker counted key 1 just after the hour; another, a moment behind, counts
        // for the hour before: it neither resets key 1's new window nor takes its slot.
        assert_eq!(c.consume(&store, &key(1), 1, 3600), Count::Counted);
        assert_eq!(
            c.consume(&store, &key(1), 1, 3599),
            Count::Spent {
                retry_after_s: 3600
            }
        );
        assert_eq!(c.consume(&store, &key(2), 1, 3599), Count::NoSlot);
    }

    #[test]
    fn a_missing_or_failing_store_refuses() {
        let store = MemoryStore::default();
        let unprepared = RateCounters::with_slots("rl.".into(), 8);
        assert_eq!(
            unprepared.consume(&store, &key(1), 5, 0),
            Count::Unavailable
        );
    }

    #[test]
    fn unreadable_slots_are_taken_over_and_a_zero_limit_refuses() {
        let store = MemoryStore::default();
        let c = counters(&store, 1);
        let slot = c.key(0);
        let cas = store.get(&slot).unwrap().1;
        store.set(&slot, b"garbage", Some(cas)).unwrap();
        assert_eq!(c.consume(&store, &key(1), 1, 0), Count::Counted);
        assert_eq!(
            c.consume(&store, &key(3), 0, 10),
            Count::NoSlot,
            "the slot is taken this hour"
        );
        assert_eq!(
            c.consume(&store, &key(1), 0, 3600),
            Count::Spent {
                retry_after_s: 3600
            }
        );
    }
}

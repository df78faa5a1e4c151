//! SHA-256 of an API key: the cache key (full digest) and the log fingerprint (short prefix).

use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(secret: &[u8]) -> Self {
        Self(Sha256::digest(secret).into())
    }

    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// Short, non-reversible name for logs: `sha256:` and the first 8 hex digits (4 bytes).
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex(&self.0[..4]))
    }

    /// Two independent slot numbers in `0..slots`, from two slices of the digest.
    pub fn slots(&self, slots: u32) -> [u32; 2] {
        [0, 8].map(|at| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&self.0[at..at + 8]);
            (u64::from_be_bytes(word) % u64::from(slots.max(1))) as u32
        })
    }
}

// Never print the digest in full by accident: Debug shows the fingerprint.
impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_sha256_and_fingerprint_is_short() {
        let d = KeyDigest::of(b"abc");
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.fingerprint(), "sha256:ba7816bf");
        assert_eq!(format!("{d:?}"), "sha256:ba7816bf");
    }

    #[test]
    fn slots_stay_in_range() {
        for i in 0..100u32 {
            let d = KeyDigest::of(&i.to_le_bytes());
            assert!(d.slots(7).iter().all(|s| *s < 7));
            assert_eq!(d.slots(1), [0, 0]);
        }
    }
}

//! The bytes of one verdict-cache slot in shared data. A small binary layout rather than
//! JSON: a worker that learns a verdict from shared data decodes it on the request path, and
//! a JSON parse plus a hex digest compare was most of that request's work.
//!
//! Layout (integers little-endian): `version u8 = 1`, `digest [u8; 32]`, `fresh_until i64`,
//! `usable_until i64`, then `0` + denial byte (`0` invalid, `1` forbidden), or `1` + the
//! grant: `rate_limit` (`0`, or `1` + u64), `expires_at` (`0`, or `1` + i64), `key_id`,
//! `user_id` (u16 length + UTF-8), `scopes` (u16 count, each u16 length + UTF-8). Anything
//! else, shorter, longer or not UTF-8 decodes to None: a miss, never a verdict.

use super::digest::KeyDigest;
use super::{Denial, KeyGrant, Verdict};

const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub digest: KeyDigest,
    pub verdict: Verdict,
    pub fresh_until: i64,
    /// For allows: the end of the stale-if-error window. Equal to `fresh_until` for denials.
    pub usable_until: i64,
}

pub fn encode(slot: &Slot) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    out.extend_from_slice(&slot.digest.0);
    out.extend_from_slice(&slot.fresh_until.to_le_bytes());
    out.extend_from_slice(&slot.usable_until.to_le_bytes());
    match &slot.verdict {
        Verdict::Deny(denial) => {
            out.push(0);
            out.push(match denial {
                Denial::Invalid => 0,
                Denial::Forbidden => 1,
            });
        }
        Verdict::Allow(g) => {
            out.push(1);
            optional(&mut out, g.rate_limit_per_hour.map(u64::to_le_bytes));
            optional(&mut out, g.expires_at.map(i64::to_le_bytes));
            text(&mut out, &g.key_id);
            text(&mut out, &g.user_id);
            let count = g.scopes.len().min(u16::MAX as usize);
            out.extend_from_slice(&(count as u16).to_le_bytes());
            for scope in g.scopes.iter().take(count) {
                text(&mut out, scope);
            }
        }
    }
    out
}

fn optional(out: &mut Vec<u8>, value: Option<[u8; 8]>) {
    match value {
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(&bytes);
        }
        None => out.push(0),
    }
}

/// Strings longer than a u16 cannot occur (the reply parser caps fields at 256 bytes); they
/// are cut rather than mis-framed.
fn text(out: &mut Vec<u8>, value: &str) {
    let mut len = value.len().min(u16::MAX as usize);
    while !value.is_char_boundary(len) {
        len -= 1;
    }
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&value.as_bytes()[..len]);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn word(&mut self) -> Option<[u8; 8]> {
        self.take(8)?.try_into().ok()
    }

    fn optional(&mut self) -> Option<Option<[u8; 8]>> {
        match self.byte()? {
            0 => Some(None),
            1 => Some(Some(self.word()?)),
            _ => None,
        }
    }

    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]) as usize)
    }

    fn text(&mut self) -> Option<String> {
        let len = self.u16()?;
        std::str::from_utf8(self.take(len)?).ok().map(String::from)
    }
}

/// The digest stored in a slot, read without decoding the rest: enough to tell whose it is.
pub fn digest_of(bytes: &[u8]) -> Option<&[u8]> {
    (bytes.first() == Some(&VERSION)).then(|| bytes.get(1..33))?
}

pub fn decode(bytes: &[u8]) -> Option<Slot> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let digest = KeyDigest(r.take(32)?.try_into().ok()?);
    let fresh_until = i64::from_le_bytes(r.word()?);
    let usable_until = i64::from_le_bytes(r.word()?);
    let verdict = match r.byte()? {
        0 => Verdict::Deny(match r.byte()? {
            0 => Denial::Invalid,
            1 => Denial::Forbidden,
            _ => return None,
        }),
        1 => {
            let rate_limit_per_hour = r.optional()?.map(u64::from_le_bytes);
            let expires_at = r.optional()?.map(i64::from_le_bytes);
            let key_id = r.text()?;
            let user_id = r.text()?;
            let count = r.u16()?;
            let mut scopes = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                scopes.push(r.text()?);
            }
            Verdict::Allow(KeyGrant {
                key_id,
                user_id,
                scopes,
                rate_limit_per_hour,
                expires_at,
            })
        }
        _ => return None,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(Slot {
        digest,
        verdict,
        fresh_until,
        usable_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow() -> Slot {
        Slot {
            digest: KeyDigest::of(b"k"),
            verdict: Verdict::Allow(KeyGrant {
                key_id: "key-1".into(),
                user_id: "ü-user".into(),
                scopes: vec!["mlflow:read".into(), "mlflow:write".into()],
                rate_limit_per_hour: Some(1000),
                expires_at: Some(-5),
            }),
            fresh_until: 1_795_435_500,
            usable_until: 1_795_435_800,
        }
    }

    #[test]
    fn round_trips() {
        let deny = Slot {
            verdict: Verdict::Deny(Denial::Forbidden),
            ..allow()
        };
        for slot in [allow(), deny] {
            let bytes = encode(&slot);
            assert_eq!(decode(&bytes), Some(slot.clone()));
            assert_eq!(digest_of(&bytes), Some(&slot.digest.0[..]));
        }
    }

    #[test]
    fn anything_truncated_extended_or_foreign_is_none() {
        let bytes = encode(&allow());
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert_eq!(
            (decode(&other_version), digest_of(&other_version)),
            (None, None)
        );
        // The JSON slots of earlier versions of the filter read as empty.
        assert_eq!(
            decode(br#"{"digest":"ab","verdict":{"Deny":"Invalid"}}"#),
            None
        );
        let mut bad_tag = encode(&Slot {
            verdict: Verdict::Deny(Denial::Invalid),
            ..allow()
        });
        let last = bad_tag.len() - 1;
        bad_tag[last] = 9;
        assert_eq!(decode(&bad_tag), None);
    }
}

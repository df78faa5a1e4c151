//! A proxy-wasm serialized header map, read in place.
//!
//! `proxy_get_header_map_pairs` hands the guest one buffer: a little-endian u32 count, then a
//! (name length, value length) u32 pair per header, then every name and value, each followed
//! by a NUL. Reading it in place costs one allocation (the buffer itself) instead of two per
//! header, and nothing here trusts the host's lengths: a malformed buffer is refused whole.

/// Headers are few; a request with more than this is refused as malformed rather than scanned.
pub const MAX_HEADERS: usize = 1024;

#[derive(Debug, Default)]
pub struct HeaderMap<'a> {
    pairs: Vec<(&'a [u8], &'a [u8])>,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]) as usize)
}

/// Calls `each` with every (name, value) of a pairs buffer, in order, without allocating;
/// None when the buffer is malformed (`each` may have seen a prefix of it by then).
pub fn for_each_pair<'a>(bytes: &'a [u8], mut each: impl FnMut(&'a [u8], &'a [u8])) -> Option<()> {
    if bytes.is_empty() {
        return Some(());
    }
    let count = u32_at(bytes, 0)?;
    if count > MAX_HEADERS {
        return None;
    }
    let mut sizes = 4usize;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    for _ in 0..count {
        let name_len = u32_at(bytes, sizes)?;
        let value_len = u32_at(bytes, sizes + 4)?;
        sizes += 8;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data += name_len;
        if bytes.get(data) != Some(&0) {
            return None;
        }
        data += 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data += value_len;
        if bytes.get(data) != Some(&0) {
            return None;
        }
        data += 1;
        each(name, value);
    }
    Some(())
}

impl<'a> HeaderMap<'a> {
    /// Parses the host's buffer; None when it is not a well-formed pairs buffer.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut pairs = Vec::new();
        for_each_pair(bytes, |name, value| pairs.push((name, value)))?;
        Some(Self { pairs })
    }

    pub fn pairs(&self) -> &[(&'a [u8], &'a [u8])] {
        &self.pairs
    }

    /// A map built from pairs, for tests and tools.
    pub fn from_pairs(pairs: Vec<(&'a [u8], &'a [u8])>) -> Self {
        Self { pairs }
    }

    /// The first value of `name` (Envoy hands names over lowercased).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        let name = name.as_bytes();
        self.pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// How many times `name` occurs.
    pub fn count(&self, name: &str) -> usize {
        let name = name.as_bytes();
        self.pairs.iter().filter(|(n, _)| *n == name).count()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The pairs format, for tests and for the harness: the inverse of [`HeaderMap::parse`].
pub fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_finds_first_values() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":path", b"/x"),
            (b"authorization", b"Bearer a"),
            (b"authorization", b"Bearer b"),
            (b"empty", b""),
        ];
        let bytes = serialize(&pairs);
        let map = HeaderMap::parse(&bytes).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map.get(":path"), Some(&b"/x"[..]));
        assert_eq!(map.get("authorization"), Some(&b"Bearer a"[..]));
        assert_eq!(map.count("authorization"), 2);
        assert_eq!(map.get("empty"), Some(&b""[..]));
        assert_eq!(map.get("missing"), None);
        assert!(HeaderMap::parse(b"").unwrap().is_empty());
    }

    #[test]
    fn malformed_buffers_are_refused_not_trusted() {
        let good = serialize(&[(b"a", b"b")]);
        for cut in 1..good.len() {
            assert!(HeaderMap::parse(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut no_nul = good.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert!(HeaderMap::parse(&no_nul).is_none());
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(&huge).is_none());
        let mut long_name = good;
        long_name[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(HeaderMap::parse(&long_name).is_none());
    }
}

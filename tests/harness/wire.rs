//! Byte formats crossing the proxy-wasm ABI: serialized header maps and property paths.
//! Pure functions, so the self-test can check them without a VM.

/// One header: a lowercase name and a raw value (values need not be UTF-8).
pub type Header = (String, Vec<u8>);

/// Serializes pairs the way both the SDK and Envoy do: a u32 count, then a
/// (name length, value length) u32 pair per entry, then every name and value
/// followed by a NUL byte. All integers little-endian.
pub fn encode_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.as_ref().len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.as_ref().len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_ref());
        out.push(0);
        out.extend_from_slice(value.as_ref());
        out.push(0);
    }
    out
}

/// Parses serialized pairs. `None` when the bytes are truncated; Envoy reads such
/// a buffer as an empty map, and callers here do the same.
pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let word = |at: usize| -> Option<usize> {
        let raw = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes(raw.try_into().ok()?) as usize)
    };
    let count = word(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let at = 4 + i * 8;
        sizes.push((word(at)?, word(at + 4)?));
    }
    let mut cursor = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut take = |len: usize| -> Option<Vec<u8>> {
        let field = bytes.get(cursor..cursor.checked_add(len)?)?.to_vec();
        cursor = cursor.checked_add(len + 1)?; // skip the NUL after each field
        Some(field)
    };
    let mut pairs = Vec::with_capacity(sizes.len());
    for (name_len, value_len) in sizes {
        let name = take(name_len)?;
        let value = take(value_len)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// Splits a property path into its segments. The SDK joins segments with NUL
/// (`["connection", "mtls"]` → `connection\0mtls`); like Envoy, a trailing NUL
/// does not add an empty last segment.
pub fn decode_property_path(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let body = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    body.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
}

/// The host stores properties by dotted name ("connection.mtls"); this is the
/// segment list such a name stands for. A guest asking for the single segment
/// "connection.mtls" does not match it, just as in Envoy.
pub fn property_segments(dotted: &str) -> Vec<Vec<u8>> {
    // A name holding NULs lists its segments exactly (a segment may contain dots, as
    // metadata namespaces such as `envoy.filters.http.jwt_authn` do).
    if dotted.contains('\0') {
        return dotted.split('\0').map(|s| s.as_bytes().to_vec()).collect();
    }
    dotted.split('.').map(|s| s.as_bytes().to_vec()).collect()
}

/// A header map with Envoy's semantics for the operations the ABI exposes.
/// Names are lowercased on the way in, as Envoy's `LowerCaseString` does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<Header>,
}

impl HeaderMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Self {
        let mut map = Self::new();
        for (name, value) in pairs {
            map.add(name.as_ref(), value.as_ref());
        }
        map
    }

    pub fn entries(&self) -> &[Header] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// First value of `name`: Envoy's get_header_map_value returns only the first.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn get_all(&self, name: &str) -> Vec<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.entries
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Appends another value, keeping existing ones (Envoy's addCopy).
    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Drops every value of `name`, then appends the new one: Envoy's `setCopy`
    /// since `http_set_copy_replace_all_headers`, so no stale duplicate survives.
    pub fn replace(&mut self, name: &str, value: &[u8]) {
        self.remove(name);
        self.add(name, value);
    }

    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.entries.retain(|(n, _)| *n != name);
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_pairs(&self.entries)
    }
}

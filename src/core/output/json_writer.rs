//! Writing the few small JSON objects the filter sends (the callout body, the access-log
//! record) by hand: a handful of string fields, on paths where a serializer's maps and
//! allocations would be most of the work.

/// Appends `value` as a JSON string, quotes included. Runs of bytes that need no escape
/// (everything but `"`, `\` and control characters) are copied whole.
pub fn push_string(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(value.len() + 2);
    out.push('"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&value[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&value[start..]);
    out.push('"');
}

/// `value` as a quoted and escaped JSON string: how the filter's log lines show anything a
/// request or a certificate holder chose, so it can never pose as another field or line.
pub fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    push_string(&mut out, value);
    out
}

/// An object of string fields, written in the order given.
pub struct Object {
    out: String,
}

impl Object {
    pub fn with_capacity(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        Self { out }
    }

    pub fn field(&mut self, name: &str, value: &str) -> &mut Self {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, name);
        self.out.push(':');
        push_string(&mut self.out, value);
        self
    }

    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_string_round_trips_through_a_json_parser() {
        let tricky = "a\"b\\c\u{1}d\u{1f}e\u{e9}\n\r\t\u{7f}\u{2028}";
        let mut obj = Object::with_capacity(8);
        obj.field("k", tricky).field("empty", "");
        let text = obj.finish();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, serde_json::json!({"k": tricky, "empty": ""}));
        assert_eq!(Object::with_capacity(0).finish(), "{}");
    }

    #[test]
    fn quoted_values_cannot_end_early_or_break_a_line() {
        let forged = "x\" reason=\"internal peer\"\nauth={}";
        let q = quoted(forged);
        assert_eq!(serde_json::from_str::<String>(&q).unwrap(), forged);
        assert!(!q.contains('\n'));
        assert_eq!(q.matches('"').count() - q.matches("\\\"").count(), 2);
    }
}

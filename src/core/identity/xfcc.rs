//! Envoy's `x-forwarded-client-cert`, as `forward_client_cert_details: SANITIZE_SET` writes it
//! on an mTLS connection: `Hash=..;Cert="<url-encoded PEM>";Subject="..";URI=..;DNS=..`.
//!
//! Only the certificate itself is read from it, and [`super::certificate`] believes it only
//! once its SHA-256 equals the connection's own digest. The text fields are never read:
//! Envoy 1.40 writes SAN values into `URI=`/`DNS=` unescaped, so a certificate whose SAN
//! reads `x;URI=<allow-listed id>` would seem to carry two SANs, one chosen by its holder.

use base64::Engine;

/// Hard cap on what we are willing to read: a client certificate is a few KB.
pub const MAX_XFCC_LEN: usize = 64 * 1024;
/// `Cert=` fields looked at, at most. Envoy writes one; others are a SAN's text posing as one.
pub const MAX_CERT_FIELDS: usize = 4;

/// The values of the header's `Cert="..."` fields (at most [`MAX_CERT_FIELDS`]), quotes
/// removed, in order. Envoy url-encodes the PEM, so its value holds no quote; a field that a
/// SAN's text imitates is found too, and left to the digest check to refuse.
pub fn cert_fields(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    const OPEN: &[u8] = b"Cert=\"";
    let header = if header.len() > MAX_XFCC_LEN {
        &[][..]
    } else {
        header
    };
    let mut from = 0;
    std::iter::from_fn(move || loop {
        let at = from
            + header
                .get(from..)?
                .windows(OPEN.len())
                .position(|w| w == OPEN)?;
        let value_start = at + OPEN.len();
        if at > 0 && header[at - 1] != b';' {
            // Text inside some other field's value: look further.
            from = at + 1;
            continue;
        }
        let Some(len) = header[value_start..].iter().position(|b| *b == b'"') else {
            from = header.len();
            return None;
        };
        from = value_start + len + 1;
        return Some(&header[value_start..value_start + len]);
    })
    .take(MAX_CERT_FIELDS)
}

/// The DER certificate in a `Cert=` value: url-decoded, then the first PEM block's base64.
pub fn der_of(cert_field: &[u8]) -> Option<Vec<u8>> {
    let pem = percent_decode(cert_field)?;
    let pem = std::str::from_utf8(&pem).ok()?;
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != "-----BEGIN CERTIFICATE-----")
        .skip(1)
        .take_while(|line| *line != "-----END CERTIFICATE-----")
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    (!der.is_empty()).then_some(der)
}

fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// `text` url-encoded the way Envoy encodes the PEM in `Cert=` (everything but unreserved
/// characters), for tests and tools that play Envoy.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI_SAN_PEM: &str = include_str!("testdata/multi-san.crt");

    #[test]
    fn finds_envoys_certificate_and_decodes_it() {
        let header = format!(
            r#"Hash=ab12;Cert="{}";Subject="CN=batch";URI=spiffe://a/b"#,
            url_encode(MULTI_SAN_PEM)
        );
        let fields: Vec<&[u8]> = cert_fields(header.as_bytes()).collect();
        assert_eq!(fields.len(), 1);
        let der = der_of(fields[0]).unwrap();
        assert_eq!(der[0], 0x30, "a DER SEQUENCE");
    }

    #[test]
    fn a_cert_field_inside_a_san_is_found_too_and_only_at_a_field_boundary() {
        let header = b"Hash=1;Cert=\"a\";URI=x;Cert=\"b\";DNS=yCert=\"c\";URI=\"Cert=\"d\"";
        let fields: Vec<&[u8]> = cert_fields(header).collect();
        assert_eq!(fields, vec![&b"a"[..], b"b"]);
        let many = "Cert=\"x\";".repeat(10);
        assert_eq!(cert_fields(many.as_bytes()).count(), MAX_CERT_FIELDS);
        assert_eq!(cert_fields(b"Cert=\"unterminated").count(), 0);
        assert_eq!(cert_fields(&vec![b'a'; MAX_XFCC_LEN + 1]).count(), 0);
    }

    #[test]
    fn garbage_is_no_certificate() {
        for bad in [
            &b"not a pem"[..],
            b"-----BEGIN%20CERTIFICATE-----%0A!!!%0A-----END%20CERTIFICATE-----",
            b"bad%2",
            b"%zz",
        ] {
            assert_eq!(der_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn url_encoding_round_trips() {
        let text = "-----BEGIN CERTIFICATE-----\nAB+/=\n";
        assert_eq!(
            percent_decode(url_encode(text).as_bytes()).unwrap(),
            text.as_bytes()
        );
    }
}

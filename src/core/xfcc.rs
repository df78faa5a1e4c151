//! Envoy's `x-forwarded-client-cert`, as `forward_client_cert_details: SANITIZE_SET` writes it
//! on an mTLS connection: one element, `Hash=..;Cert="<url-encoded PEM>";Subject="..";URI=..;DNS=..`
//! (every URI and DNS SAN of the peer certificate gets its own field). With SANITIZE_SET a
//! client can never send this header itself, so its fields are Envoy's word.
//!
//! Identities come from the URI/DNS/Subject fields (a byte scan, no certificate parsing on the
//! request path); the certificate itself is parsed only for its expiry, once per distinct
//! `Hash`, by the caller.

use base64::Engine;
use x509_cert::der::Decode;
use x509_cert::Certificate;

/// Hard cap on what we are willing to read: a client certificate is a few KB.
pub const MAX_XFCC_LEN: usize = 64 * 1024;

/// The fields of Envoy's one XFCC element. Values are raw (still quoted/escaped) slices.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Element<'a> {
    pub hash: Option<&'a [u8]>,
    pub cert: Option<&'a [u8]>,
    pub subject: Option<&'a [u8]>,
    pub uris: Vec<&'a [u8]>,
    pub dns: Vec<&'a [u8]>,
}

/// Parses the header; None when it is not exactly one well-formed element (more than one
/// means someone other than Envoy's SANITIZE_SET wrote it).
pub fn parse(header: &[u8]) -> Option<Element<'_>> {
    if header.is_empty() || header.len() > MAX_XFCC_LEN {
        return None;
    }
    let mut element = Element::default();
    let (mut start, mut quoted) = (0, false);
    let mut i = 0;
    while i <= header.len() {
        if quoted {
            // Inside quotes (the url-encoded certificate is most of the header) only a quote
            // or an escape matters: jump to the next one.
            match header[i..].iter().position(|b| *b == b'"' || *b == b'\\') {
                Some(at) if header[i + at] == b'\\' => i += at + 2,
                Some(at) => {
                    quoted = false;
                    i += at + 1;
                }
                None => return None,
            }
            continue;
        }
        match header.get(i) {
            Some(b'"') => quoted = true,
            Some(b',') => return None,
            Some(b';') | None => {
                field(&mut element, &header[start..i])?;
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return None;
    }
    Some(element)
}

fn field<'a>(element: &mut Element<'a>, pair: &'a [u8]) -> Option<()> {
    let eq = pair.iter().position(|b| *b == b'=')?;
    let (key, value) = (&pair[..eq], &pair[eq + 1..]);
    match key {
        b"Hash" => element.hash = Some(value),
        b"Cert" => element.cert = Some(value),
        b"Subject" => element.subject = Some(value),
        b"URI" => element.uris.push(value),
        b"DNS" => element.dns.push(value),
        // By, Chain and whatever a later Envoy adds: not ours to judge.
        _ => {}
    }
    Some(())
}

/// A field value without its quotes and backslash escapes.
pub fn unquote(value: &[u8]) -> Option<String> {
    let inner = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            out.extend(bytes.next());
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// What the peer certificate itself says, beyond the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// Parses the `Cert=` value (url-encoded PEM) as X.509.
pub fn certificate(cert_field: &[u8]) -> Option<CertificateFacts> {
    let pem = percent_decode(&unquote(cert_field)?)?;
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END CERTIFICATE-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let cert = Certificate::from_der(&der).ok()?;
    let not_after = cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_unix_duration();
    Some(CertificateFacts {
        not_after: i64::try_from(not_after.as_secs()).ok()?,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed fixture (key discarded) with two URI SANs, a DNS SAN and a CN,
    /// valid until 2126-10-30T19:12:19Z.
    const MULTI_SAN_PEM: &str = include_str!("testdata/multi-san.crt");

    fn url_encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[test]
    fn reads_every_field_envoy_writes() {
        let header = format!(
            r#"Hash=ab12;Cert="{}";Subject="O=Hokusai,CN=batch;x";URI=spiffe://a/first;URI=spiffe://a/batch;DNS=batch.internal"#,
            url_encode(MULTI_SAN_PEM)
        );
        let el = parse(header.as_bytes()).unwrap();
        assert_eq!(el.hash, Some(&b"ab12"[..]));
        assert_eq!(
            el.uris,
            vec![&b"spiffe://a/first"[..], &b"spiffe://a/batch"[..]]
        );
        assert_eq!(el.dns, vec![&b"batch.internal"[..]]);
        assert_eq!(
            unquote(el.subject.unwrap()).as_deref(),
            Some("O=Hokusai,CN=batch;x")
        );
        let facts = certificate(el.cert.unwrap()).unwrap();
        assert_eq!(facts.not_after, 4_949_061_139);
    }

    #[test]
    fn more_than_one_element_is_not_envoys() {
        assert!(parse(b"URI=spiffe://a,URI=spiffe://b").is_none());
        assert!(parse(b"Subject=\"CN=a,O=b\";URI=spiffe://a").is_some());
    }

    #[test]
    fn garbage_is_refused_or_yields_nothing() {
        for bad in [&b""[..], b"Hash", b"Cert=\"unterminated", b"a=1;b"] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        assert!(parse(&vec![b'a'; MAX_XFCC_LEN + 1]).is_none());
        for cert in [
            &b"\"not a pem\""[..],
            b"\"-----BEGIN%20CERTIFICATE-----%0A!!!%0A-----END%20CERTIFICATE-----\"",
            b"\"-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----\"",
            b"bad%2",
            b"%ff",
            b"\xff\xfe",
        ] {
            assert_eq!(certificate(cert), None);
        }
    }

    #[test]
    fn unquoting_honours_escapes() {
        assert_eq!(unquote(br#""say \"hi\"""#).as_deref(), Some(r#"say "hi""#));
        assert_eq!(unquote(b"plain").as_deref(), Some("plain"));
        assert_eq!(unquote(b"\"\xff\""), None);
    }
}

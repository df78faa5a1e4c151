//! Envoy's `x-forwarded-client-cert`: the `Cert=` of the element Envoy itself set, parsed as
//! X.509 so that every SAN (not only the first, as the connection properties give) counts.

use base64::Engine;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// Hard cap on what we are willing to parse: a client certificate is a few KB.
const MAX_XFCC_LEN: usize = 64 * 1024;

/// URI SANs, DNS SANs and the subject CN of the certificate in the last XFCC element
/// (the one Envoy appended; with SANITIZE_SET it is the only one). None if absent or bad.
pub fn certificate_identities(header: &[u8]) -> Option<Vec<String>> {
    if header.len() > MAX_XFCC_LEN {
        return None;
    }
    let header = std::str::from_utf8(header).ok()?;
    let element = split_unquoted(header, ',').pop()?;
    let cert = split_unquoted(element, ';').into_iter().find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("Cert")
            .then(|| unquote(value.trim()))
    })?;
    let pem = percent_decode(&cert)?;
    identities_from_pem(&pem)
}

fn identities_from_pem(pem: &str) -> Option<Vec<String>> {
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
    let tbs = cert.tbs_certificate();
    let mut ids = Vec::new();
    if let Ok(Some((_, SubjectAltName(names)))) = tbs.get_extension::<SubjectAltName>() {
        for name in names {
            match name {
                GeneralName::UniformResourceIdentifier(uri) => ids.push(uri.to_string()),
                GeneralName::DnsName(dns) => ids.push(dns.to_string()),
                _ => {}
            }
        }
    }
    if let Ok(Some(cn)) = tbs.subject().common_name() {
        ids.push(cn.value().into_owned());
    }
    Some(ids)
}

/// Splits on `sep` outside double quotes (XFCC quotes values that contain `,;=`).
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(value: &str) -> String {
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
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

    #[test]
    fn splitting_respects_quotes() {
        assert_eq!(
            split_unquoted(r#"a=1;Subject="CN=x,O=y;z";b=2"#, ';'),
            vec!["a=1", r#"Subject="CN=x,O=y;z""#, "b=2"]
        );
        assert_eq!(split_unquoted(r#"By=a,Hash=b;Subject="x,y""#, ',').len(), 2);
        assert_eq!(unquote(r#""say \"hi\"""#), r#"say "hi""#);
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a%20b%0A").as_deref(), Some("a b\n"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    /// A self-signed fixture (key discarded) with two URI SANs, a DNS SAN and a CN.
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
    fn every_san_and_the_cn_come_out_of_envoys_element() {
        let header = format!(
            r#"Hash=ab12;Cert="{}";Subject="O=Hokusai,CN=hokusai-batch-runner";URI=spiffe://x"#,
            url_encode(MULTI_SAN_PEM)
        );
        assert_eq!(
            certificate_identities(header.as_bytes()),
            Some(vec![
                "spiffe://hokusai.internal/ns/development/sa/first".to_string(),
                "spiffe://hokusai.internal/ns/development/sa/batch".to_string(),
                "batch.hokusai.internal".to_string(),
                "hokusai-batch-runner".to_string(),
            ])
        );
        // With several elements, only the last (Envoy's own) counts.
        let forged_first = format!("Cert=\"garbage\",{header}");
        assert!(certificate_identities(forged_first.as_bytes()).is_some());
        let forged_last = format!("{header},Cert=\"garbage\"");
        assert_eq!(certificate_identities(forged_last.as_bytes()), None);
    }

    #[test]
    fn garbage_never_yields_identities() {
        for bad in [
            &b""[..],
            b"Hash=abc",
            b"Cert=\"not a pem\"",
            b"Cert=\"-----BEGIN%20CERTIFICATE-----%0A!!!%0A-----END%20CERTIFICATE-----\"",
            b"Cert=\"-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----\"",
            b"\xff\xfe",
        ] {
            assert_eq!(certificate_identities(bad), None);
        }
        assert_eq!(certificate_identities(&vec![b'a'; MAX_XFCC_LEN + 1]), None);
    }
}

//! Peer certificates for the core's own tests, and the `x-forwarded-client-cert` Envoy writes
//! for them: `Hash`, the url-encoded PEM, the quoted subject, then every URI and DNS SAN
//! unescaped, exactly as Envoy 1.40 renders them (so a SAN can carry `;URI=` text).

use super::xfcc::url_encode;
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use sha2::{Digest, Sha256};

pub struct TestPeer {
    pub xfcc: String,
    /// `connection.sha256_peer_certificate_digest`, as Envoy gives it.
    pub digest_hex: Vec<u8>,
}

/// A self-signed certificate with these SANs and (optional) CN; the chain is Envoy's
/// business, not the filter's.
pub fn peer(uris: &[&str], dns: &[&str], cn: Option<&str>) -> TestPeer {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    let ia5 = |s: &str| s.to_string().try_into().expect("an IA5 (ASCII) SAN");
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(ia5(u)))
        .chain(dns.iter().map(|d| SanType::DnsName(ia5(d))))
        .collect();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    let hex: String = Sha256::digest(cert.der())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let subject = cn.map_or(String::new(), |cn| {
        format!(";Subject=\"CN={}\"", cn.replace('"', "\\\""))
    });
    let sans: String = uris
        .iter()
        .map(|u| format!(";URI={u}"))
        .chain(dns.iter().map(|d| format!(";DNS={d}")))
        .collect();
    TestPeer {
        xfcc: format!(
            "Hash={hex};Cert=\"{}\"{subject}{sans}",
            url_encode(&cert.pem())
        ),
        digest_hex: hex.into_bytes(),
    }
}

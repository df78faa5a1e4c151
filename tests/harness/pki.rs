//! Peer certificates for the stories, minted on the spot with the SANs and CN a test names
//! (any ASCII, `;URI=` and quotes included), and the facts Envoy 1.40 derives from one: its
//! SHA-256 as `connection.sha256_peer_certificate_digest`, the first SAN of each kind as the
//! typed properties, and `x-forwarded-client-cert` as SANITIZE_SET writes it: `Hash`, the
//! url-encoded PEM, the quoted and escaped subject, then each URI and DNS SAN unescaped.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct PeerCert {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub cn: Option<String>,
    pub pem: String,
    pub der: Vec<u8>,
}

impl PeerCert {
    /// A self-signed certificate (the chain is Envoy's business, never the filter's).
    pub fn new(uris: &[&str], dns: &[&str], cn: Option<&str>) -> PeerCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("rcgen params");
        let ia5 = |s: &str| s.to_string().try_into().expect("a SAN of ASCII characters");
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(ia5(u)))
            .chain(dns.iter().map(|d| SanType::DnsName(ia5(d))))
            .collect();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().expect("a P-256 key");
        let cert = params.self_signed(&key).expect("a self-signed certificate");
        PeerCert {
            uris: uris.iter().map(|s| s.to_string()).collect(),
            dns: dns.iter().map(|s| s.to_string()).collect(),
            cn: cn.map(str::to_string),
            pem: cert.pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn digest_hex(&self) -> String {
        Sha256::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Envoy's RFC 2253 subject (`CN=...`, specials backslash-escaped), as in the
    /// `connection.subject_peer_certificate` property.
    pub fn subject(&self) -> Option<String> {
        let cn = self.cn.as_ref()?;
        let mut out = String::from("CN=");
        for c in cn.chars() {
            if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
                out.push('\\');
            }
            out.push(c);
        }
        Some(out)
    }

    /// The `x-forwarded-client-cert` Envoy writes for this peer.
    pub fn xfcc(&self) -> String {
        let mut fields = vec![
            format!("Hash={}", self.digest_hex()),
            format!("Cert=\"{}\"", url_encode(&self.pem)),
        ];
        // Quoted as it is: the RFC 2253 rendering has escaped its specials already.
        if let Some(subject) = self.subject() {
            fields.push(format!("Subject=\"{subject}\""));
        }
        fields.extend(self.uris.iter().map(|u| format!("URI={u}")));
        fields.extend(self.dns.iter().map(|d| format!("DNS={d}")));
        fields.join(";")
    }
}

/// Envoy's url-encoding of the PEM: every byte but the unreserved ones as `%XX`.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

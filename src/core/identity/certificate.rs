//! The mTLS peer's certificate, believed only from facts bound to the verified connection.
//! Envoy tells the SHA-256 of the peer certificate (`connection.sha256_peer_certificate_digest`,
//! a typed property no client can set); the certificate itself travels in Envoy's XFCC
//! `Cert=` field, and is believed only when its DER hashes to that digest. Its identities
//! are then read from the DER with x509-cert: every URI and DNS SAN, exactly as signed, and
//! the subject CN. Whether one of them is allow-listed is [`super::allow_list`]'s question.

use super::xfcc;
use sha2::{Digest, Sha256};
use x509_cert::der::oid::db::rfc4519::COMMON_NAME;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::name::{DirectoryString, GeneralName};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// What a verified peer certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// Every CN attribute of the subject; only a subject with exactly one CN can match.
    pub common_names: Vec<String>,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl PeerCertificate {
    /// Parses a DER certificate; None when it is not one, or its SAN extension is unreadable
    /// (a certificate we cannot read fully never matches on part of it).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let cert = Certificate::from_der(der).ok()?;
        let tbs = cert.tbs_certificate();
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        for extension in tbs.filter_extensions::<SubjectAltName>() {
            let (_, names) = extension.ok()?;
            for name in names.0 {
                match name {
                    GeneralName::UniformResourceIdentifier(uri) => {
                        uris.push(uri.as_str().to_owned())
                    }
                    GeneralName::DnsName(name) => dns.push(name.as_str().to_owned()),
                    _ => {}
                }
            }
        }
        let common_names = tbs
            .subject()
            .iter()
            .filter(|attribute| attribute.oid == COMMON_NAME)
            .map(|attribute| {
                DirectoryString::try_from(&attribute.value)
                    .ok()
                    .map(|cn| cn.value().into_owned())
            })
            .collect::<Option<Vec<String>>>()?;
        let not_after = tbs.validity().not_after.to_unix_duration().as_secs();
        Some(Self {
            uris,
            dns,
            common_names,
            not_after: i64::try_from(not_after).ok()?,
        })
    }

    /// A name for logs: the first URI SAN, else DNS SAN, else CN.
    pub fn label(&self) -> &str {
        self.uris
            .iter()
            .chain(&self.dns)
            .chain(&self.common_names)
            .next()
            .map_or("(no identity)", String::as_str)
    }
}

/// `connection.sha256_peer_certificate_digest`: 64 hex digits.
pub fn parse_digest(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// The connection's certificate, from the XFCC `Cert=` field whose DER hashes to `digest`;
/// None when no field does (a field a SAN imitates never can).
pub fn verified_certificate(xfcc: &[u8], digest: &[u8; 32]) -> Option<PeerCertificate> {
    xfcc::cert_fields(xfcc)
        .filter_map(xfcc::der_of)
        .find(|der| Sha256::digest(der).as_slice() == digest)
        .and_then(|der| PeerCertificate::from_der(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI_SAN_PEM: &str = include_str!("testdata/multi-san.crt");
    const FIRST: &str = "spiffe://hokusai.internal/ns/development/sa/first";
    const BATCH: &str = "spiffe://hokusai.internal/ns/development/sa/batch";

    fn der() -> Vec<u8> {
        xfcc::der_of(xfcc::url_encode(MULTI_SAN_PEM).as_bytes()).unwrap()
    }

    fn digest(der: &[u8]) -> [u8; 32] {
        Sha256::digest(der).into()
    }

    fn xfcc_for(pem: &str, uris: &str) -> String {
        format!(
            "Hash=00;Cert=\"{}\";Subject=\"CN=x\";{uris}",
            xfcc::url_encode(pem)
        )
    }

    #[test]
    fn reads_every_san_and_the_cn_from_the_der() {
        let cert = PeerCertificate::from_der(&der()).unwrap();
        assert_eq!(cert.uris, vec![FIRST, BATCH]);
        assert_eq!(cert.dns, vec!["batch.hokusai.internal"]);
        assert_eq!(cert.common_names, vec!["hokusai-batch-runner"]);
        assert_eq!(cert.not_after, 4_949_061_139);
        assert_eq!(cert.label(), FIRST);
    }

    #[test]
    fn the_certificate_is_believed_only_with_the_connections_digest() {
        let der = der();
        let header = xfcc_for(MULTI_SAN_PEM, "URI=spiffe://a");
        assert!(verified_certificate(header.as_bytes(), &digest(&der)).is_some());
        assert!(verified_certificate(header.as_bytes(), &[0; 32]).is_none());
        // A SAN's text carrying another certificate's Cert= field: only the one that hashes
        // to the connection's digest counts, wherever it stands.
        let other = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let injected = format!(
            "Hash=00;Cert=\"{}\";URI=x;Cert=\"{}\"",
            xfcc::url_encode(other),
            xfcc::url_encode(MULTI_SAN_PEM)
        );
        let cert = verified_certificate(injected.as_bytes(), &digest(&der)).unwrap();
        assert_eq!(cert.uris, vec![FIRST, BATCH]);
    }

    #[test]
    fn digests_are_64_hex_digits() {
        let d = digest(&der());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_digest(hex.as_bytes()), Some(d));
        assert_eq!(parse_digest(hex.to_uppercase().as_bytes()), Some(d));
        for bad in [&hex[..63], "", &format!("{}g", &hex[..63])] {
            assert_eq!(parse_digest(bad.as_bytes()), None, "{bad}");
        }
    }
}

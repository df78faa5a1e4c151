//! This worker's memory of the peer certificates it has verified, by their SHA-256: a
//! certificate is decoded and checked once, then every later request on a connection with
//! the same digest is answered from here. The digest is Envoy's word (a typed connection
//! property), so a remembered answer is as good as a fresh one.

use super::certificate::{verified_certificate, PeerCertificate};
use std::collections::HashMap;
use std::rc::Rc;

/// Distinct certificates remembered per worker; past it the memory starts over.
const MAX_CERTS: usize = 256;

/// A verified certificate and the allow-list entry it matched, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    pub certificate: PeerCertificate,
    /// Index into `internal.allowed_identities`.
    pub allowed_as: Option<usize>,
}

#[derive(Debug, Default)]
pub struct KnownPeers {
    /// None: the XFCC of a connection with this digest carried no certificate hashing to it.
    by_digest: HashMap<[u8; 32], Option<Rc<KnownPeer>>>,
}

impl KnownPeers {
    /// The peer behind `digest`, verified from `xfcc` the first time this worker sees it.
    pub fn peer(
        &mut self,
        digest: [u8; 32],
        xfcc: &[u8],
        allowed: &[String],
    ) -> Option<Rc<KnownPeer>> {
        if let Some(known) = self.by_digest.get(&digest) {
            return known.clone();
        }
        let known = verified_certificate(xfcc, &digest).map(|certificate| {
            Rc::new(KnownPeer {
                allowed_as: certificate.allowed_as(allowed),
                certificate,
            })
        });
        if self.by_digest.len() >= MAX_CERTS {
            self.by_digest.clear();
        }
        self.by_digest.insert(digest, known.clone());
        known
    }
}

#[cfg(test)]
mod tests {
    use super::super::xfcc;
    use super::*;
    use sha2::{Digest, Sha256};

    const PEM: &str = include_str!("testdata/multi-san.crt");
    const BATCH: &str = "spiffe://hokusai.internal/ns/development/sa/batch";

    fn header_and_digest() -> (String, [u8; 32]) {
        let encoded = xfcc::url_encode(PEM);
        let der = xfcc::der_of(encoded.as_bytes()).unwrap();
        (format!("Cert=\"{encoded}\""), Sha256::digest(&der).into())
    }

    #[test]
    fn a_certificate_is_verified_once_and_remembered_by_digest() {
        let (header, digest) = header_and_digest();
        let mut certs = KnownPeers::default();
        let allowed = [BATCH.to_string()];
        let peer = certs.peer(digest, header.as_bytes(), &allowed).unwrap();
        assert_eq!(peer.allowed_as, Some(0));
        // Remembered: the header is no longer needed for this digest.
        assert_eq!(certs.peer(digest, b"", &allowed), Some(peer));
        assert_eq!(certs.peer([1; 32], header.as_bytes(), &allowed), None);
        assert_eq!(certs.peer([1; 32], header.as_bytes(), &allowed), None);
    }
}

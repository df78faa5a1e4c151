//! The certificate-expiry signal: for each allow-listed identity, the notAfter of the most
//! recent certificate it presented. Envoy's XFCC carries the certificate on every request;
//! it is parsed once per distinct `Hash` (a few per identity), not per request.

use super::xfcc::{self, Element};
use std::collections::{BTreeMap, HashMap};

/// Distinct certificates remembered per worker; past it the memory starts over.
const MAX_CERTS: usize = 256;

#[derive(Debug, Default)]
pub struct PeerCerts {
    by_hash: HashMap<Vec<u8>, Option<i64>>,
    not_after: BTreeMap<String, i64>,
    /// Identities whose notAfter changed since the adapter last looked.
    changed: Vec<String>,
}

impl PeerCerts {
    /// An allow-listed `identity` presented the certificate in `element`.
    pub fn seen(&mut self, identity: &str, element: &Element, _now: i64) {
        let not_after = match element.hash {
            Some(hash) => match self.by_hash.get(hash) {
                Some(known) => *known,
                None => {
                    let parsed = element
                        .cert
                        .and_then(xfcc::certificate)
                        .map(|c| c.not_after);
                    if self.by_hash.len() >= MAX_CERTS {
                        self.by_hash.clear();
                    }
                    self.by_hash.insert(hash.to_vec(), parsed);
                    parsed
                }
            },
            None => element
                .cert
                .and_then(xfcc::certificate)
                .map(|c| c.not_after),
        };
        let Some(not_after) = not_after else { return };
        if self.not_after.get(identity) != Some(&not_after) {
            self.not_after.insert(identity.to_string(), not_after);
            if !self.changed.iter().any(|c| c == identity) {
                self.changed.push(identity.to_string());
            }
        }
    }

    /// Identities whose notAfter changed since the last call, with the new value.
    pub fn take_changed(&mut self) -> Vec<(String, i64)> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|id| self.not_after.get(&id).map(|t| (id, *t)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded_fixture() -> String {
        include_str!("testdata/multi-san.crt")
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn reports_each_change_once() {
        let header = format!("Hash=h1;Cert=\"{}\";URI=spiffe://a", encoded_fixture());
        let element = xfcc::parse(header.as_bytes()).unwrap();
        let mut certs = PeerCerts::default();
        certs.seen("spiffe://a", &element, 0);
        certs.seen("spiffe://a", &element, 0);
        assert_eq!(
            certs.take_changed(),
            vec![("spiffe://a".to_string(), 4_949_061_139)]
        );
        certs.seen("spiffe://a", &element, 0);
        assert!(certs.take_changed().is_empty());
    }

    #[test]
    fn an_unreadable_certificate_is_no_signal() {
        let element = xfcc::parse(b"Hash=h2;Cert=\"garbage\";URI=spiffe://a").unwrap();
        let mut certs = PeerCerts::default();
        certs.seen("spiffe://a", &element, 0);
        assert!(certs.take_changed().is_empty());
    }
}

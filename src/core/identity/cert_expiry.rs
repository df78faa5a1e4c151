//! The certificate-expiry signal: for each allow-listed identity, the notAfter of the
//! certificate it presented most recently, so operators see a rotation coming (the adapter
//! turns it into the `peer_cert_not_after` gauge).

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct CertExpiry {
    not_after: BTreeMap<String, i64>,
    /// Identities whose notAfter changed since the adapter last looked.
    changed: Vec<String>,
}

impl CertExpiry {
    /// An allow-listed `identity` presented a certificate valid until `not_after`.
    pub fn seen(&mut self, identity: &str, not_after: i64) {
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

    #[test]
    fn reports_each_expiry_change_once() {
        let mut certs = CertExpiry::default();
        certs.seen("spiffe://a", 10);
        certs.seen("spiffe://a", 10);
        assert_eq!(certs.take_changed(), vec![("spiffe://a".to_string(), 10)]);
        certs.seen("spiffe://a", 10);
        assert!(certs.take_changed().is_empty());
        certs.seen("spiffe://a", 20);
        assert_eq!(certs.take_changed(), vec![("spiffe://a".to_string(), 20)]);
    }
}

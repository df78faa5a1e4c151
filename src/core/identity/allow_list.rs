//! The internal path's question: is this verified peer on the allow-list, and as which
//! entry? An identity matches only when it equals an entry byte for byte: no prefix, no
//! case folding, and a subject's CN only when it has exactly one.

use super::certificate::PeerCertificate;

impl PeerCertificate {
    /// The first allow-list entry one of its identities equals exactly: URI SANs, then DNS
    /// SANs, then the CN of a subject that has exactly one.
    pub fn allowed_as(&self, allowed: &[String]) -> Option<usize> {
        let cn = match self.common_names.as_slice() {
            [only] => Some(only),
            _ => None,
        };
        self.uris
            .iter()
            .chain(&self.dns)
            .chain(cn)
            .find_map(|id| allowed.iter().position(|entry| entry == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &str = "spiffe://hokusai.internal/ns/development/sa/batch";

    /// What identity/testdata/multi-san.crt holds (certificate.rs reads it from the DER).
    fn batch_runner() -> PeerCertificate {
        PeerCertificate {
            uris: vec![
                "spiffe://hokusai.internal/ns/development/sa/first".into(),
                BATCH.into(),
            ],
            dns: vec!["batch.hokusai.internal".into()],
            common_names: vec!["hokusai-batch-runner".into()],
            not_after: 4_949_061_139,
        }
    }

    #[test]
    fn any_san_or_a_lone_cn_matches_exactly() {
        let cert = batch_runner();
        assert_eq!(cert.allowed_as(&[BATCH.into()]), Some(0));
        assert_eq!(
            cert.allowed_as(&["x".into(), "batch.hokusai.internal".into()]),
            Some(1)
        );
        assert_eq!(cert.allowed_as(&["hokusai-batch-runner".into()]), Some(0));
        for near in [
            format!("{BATCH}/"),
            BATCH.to_uppercase(),
            format!("x{BATCH}"),
            "hokusai-batch".to_string(),
            String::new(),
        ] {
            assert_eq!(cert.allowed_as(std::slice::from_ref(&near)), None, "{near}");
        }
        let two_cns = PeerCertificate {
            common_names: vec!["a".into(), "hokusai-api-client".into()],
            ..cert
        };
        assert_eq!(two_cns.allowed_as(&["hokusai-api-client".into()]), None);
    }
}

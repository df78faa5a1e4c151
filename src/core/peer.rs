//! The internal path: is this an mTLS peer on the allow-list, and under which identity?

use super::xfcc;

/// What Envoy tells us about the downstream connection. `mtls` is true only when Envoy
/// validated the client's chain against the listener's CA.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerFacts {
    pub mtls: bool,
    pub uri_san: Option<String>,
    pub dns_san: Option<String>,
    /// Envoy's RFC 2253 rendering, e.g. `CN=hokusai-api-client,O=Hokusai`.
    pub subject: Option<String>,
    /// Envoy's own `x-forwarded-client-cert` (SANITIZE_SET), for SANs beyond the first.
    pub xfcc: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PeerMatch {
    /// Not an mTLS connection: nothing to match.
    NotMtls,
    /// mTLS, and this identity is allow-listed.
    Allowed(String),
    /// mTLS, but none of the peer's identities is listed; the best name we have, for logs.
    Unlisted(String),
}

pub fn match_peer(peer: &PeerFacts, allowed: &[String]) -> PeerMatch {
    if !peer.mtls {
        return PeerMatch::NotMtls;
    }
    let listed = |id: &str| allowed.iter().any(|a| a == id);
    let cn = peer.subject.as_deref().and_then(common_name);
    let quick = [
        peer.uri_san.as_deref(),
        peer.dns_san.as_deref(),
        cn.as_deref(),
    ];
    if let Some(id) = quick.iter().flatten().find(|id| listed(id)) {
        return PeerMatch::Allowed(id.to_string());
    }
    // The properties carry only the first SAN of each kind; the certificate has them all.
    if let Some(id) = peer
        .xfcc
        .as_deref()
        .and_then(xfcc::certificate_identities)
        .and_then(|ids| ids.into_iter().find(|id| listed(id)))
    {
        return PeerMatch::Allowed(id);
    }
    let label = quick
        .iter()
        .flatten()
        .next()
        .map_or("(no identity)", |s| *s);
    PeerMatch::Unlisted(label.to_string())
}

/// The CN from an RFC 2253 distinguished name, honouring backslash escapes.
pub fn common_name(subject: &str) -> Option<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = subject.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ',' | '+' => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts.into_iter().find_map(|part| {
        let (attr, value) = part.split_once('=')?;
        attr.trim()
            .eq_ignore_ascii_case("CN")
            .then(|| value.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";

    fn mtls(uri: Option<&str>, subject: Option<&str>) -> PeerFacts {
        PeerFacts {
            mtls: true,
            uri_san: uri.map(String::from),
            subject: subject.map(String::from),
            ..PeerFacts::default()
        }
    }

    #[test]
    fn plain_connections_never_match() {
        let peer = PeerFacts {
            uri_san: Some(API.into()),
            ..PeerFacts::default()
        };
        assert_eq!(match_peer(&peer, &[API.into()]), PeerMatch::NotMtls);
    }

    #[test]
    fn uri_san_dns_san_or_cn_can_match() {
        let allowed = vec![API.to_string(), "hokusai-batch".to_string()];
        assert_eq!(
            match_peer(&mtls(Some(API), Some("CN=x")), &allowed),
            PeerMatch::Allowed(API.into())
        );
        assert_eq!(
            match_peer(&mtls(None, Some("CN=hokusai-batch,O=Hokusai")), &allowed),
            PeerMatch::Allowed("hokusai-batch".into())
        );
        let dns = PeerFacts {
            mtls: true,
            dns_san: Some("hokusai-batch".into()),
            ..PeerFacts::default()
        };
        assert_eq!(
            match_peer(&dns, &allowed),
            PeerMatch::Allowed("hokusai-batch".into())
        );
    }

    #[test]
    fn a_san_beyond_the_first_matches_through_xfcc() {
        let pem = include_str!("testdata/multi-san.crt");
        let encoded: String = pem
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let batch = "spiffe://hokusai.internal/ns/development/sa/batch";
        let peer = PeerFacts {
            xfcc: Some(format!("Hash=1;Cert=\"{encoded}\"").into_bytes()),
            ..mtls(
                Some("spiffe://hokusai.internal/ns/development/sa/first"),
                None,
            )
        };
        assert_eq!(
            match_peer(&peer, &[batch.into()]),
            PeerMatch::Allowed(batch.into())
        );
    }

    #[test]
    fn unlisted_peer_is_named_for_the_log() {
        let peer = mtls(
            Some("spiffe://hokusai.internal/ns/development/sa/notebook"),
            None,
        );
        assert_eq!(
            match_peer(&peer, &[API.into()]),
            PeerMatch::Unlisted("spiffe://hokusai.internal/ns/development/sa/notebook".into())
        );
        assert_eq!(
            match_peer(&mtls(None, None), &[]),
            PeerMatch::Unlisted("(no identity)".into())
        );
    }

    #[test]
    fn common_name_handles_escapes_and_order() {
        assert_eq!(common_name("CN=a"), Some("a".into()));
        assert_eq!(common_name("O=Org,CN=svc"), Some("svc".into()));
        assert_eq!(
            common_name(r"CN=Smith\, John,O=x"),
            Some("Smith, John".into())
        );
        assert_eq!(common_name("O=Org"), None);
        assert_eq!(common_name("CN="), None);
        assert_eq!(common_name(""), None);
    }
}

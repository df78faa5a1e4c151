//! The internal path: is this an mTLS peer on the allow-list, and under which identity?
//!
//! The identities are the URI SANs, DNS SANs and subject CN that Envoy wrote into its own
//! `x-forwarded-client-cert` element, tried in that order; the first allow-listed one wins.

use super::xfcc::{self, Element};

#[derive(Debug, PartialEq, Eq)]
pub enum PeerMatch<'c> {
    /// Not an mTLS connection: nothing to match.
    NotMtls,
    /// mTLS, and this allow-list entry matched.
    Allowed(&'c str),
    /// mTLS, but none of the peer's identities is listed; the best name we have, for logs.
    Unlisted(String),
}

pub fn match_peer<'c>(element: &Element, allowed: &'c [String]) -> PeerMatch<'c> {
    let listed = |id: &[u8]| allowed.iter().find(|a| a.as_bytes() == id);
    for id in element.uris.iter().chain(&element.dns) {
        if let Some(entry) = listed(id) {
            return PeerMatch::Allowed(entry);
        }
    }
    let cn = element
        .subject
        .and_then(xfcc::unquote)
        .and_then(|s| common_name(&s));
    if let Some(entry) = cn.as_deref().and_then(|cn| listed(cn.as_bytes())) {
        return PeerMatch::Allowed(entry);
    }
    let label = element
        .uris
        .iter()
        .chain(&element.dns)
        .next()
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .or(cn)
        .unwrap_or_else(|| "(no identity)".to_string());
    PeerMatch::Unlisted(label)
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

    fn element(header: &str) -> Element<'_> {
        xfcc::parse(header.as_bytes()).expect("well-formed XFCC")
    }

    #[test]
    fn uri_san_dns_san_or_cn_can_match() {
        let allowed = vec![API.to_string(), "hokusai-batch".to_string()];
        let uri = format!("Hash=1;Subject=\"CN=x\";URI={API}");
        assert_eq!(
            match_peer(&element(&uri), &allowed),
            PeerMatch::Allowed(API)
        );
        assert_eq!(
            match_peer(&element("Subject=\"CN=hokusai-batch,O=Hokusai\""), &allowed),
            PeerMatch::Allowed("hokusai-batch")
        );
        assert_eq!(
            match_peer(&element("DNS=hokusai-batch"), &allowed),
            PeerMatch::Allowed("hokusai-batch")
        );
    }

    #[test]
    fn a_san_beyond_the_first_matches() {
        let batch = "spiffe://hokusai.internal/ns/development/sa/batch";
        let header = format!("URI=spiffe://hokusai.internal/ns/development/sa/first;URI={batch}");
        assert_eq!(
            match_peer(&element(&header), &[batch.into()]),
            PeerMatch::Allowed(batch)
        );
    }

    #[test]
    fn matching_is_exact() {
        let allowed = [API.to_string()];
        for near in [
            format!("URI={API}/"),
            format!("URI={}", API.to_uppercase()),
            format!("URI=x{API}"),
            format!("Subject=\"CN={API}x\""),
        ] {
            assert!(
                matches!(
                    match_peer(&element(&near), &allowed),
                    PeerMatch::Unlisted(_)
                ),
                "{near}"
            );
        }
    }

    #[test]
    fn unlisted_peer_is_named_for_the_log() {
        let notebook = "spiffe://hokusai.internal/ns/development/sa/notebook";
        assert_eq!(
            match_peer(&element(&format!("URI={notebook}")), &[API.into()]),
            PeerMatch::Unlisted(notebook.into())
        );
        assert_eq!(
            match_peer(&element("Hash=1"), &[]),
            PeerMatch::Unlisted("(no identity)".into())
        );
        assert_eq!(
            match_peer(&element("Subject=\"CN=nb\""), &[]),
            PeerMatch::Unlisted("nb".into())
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

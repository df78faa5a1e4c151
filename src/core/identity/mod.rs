//! The trust boundary: who a caller is, read only from facts Envoy binds to the connection
//! or verified itself, and which headers no client may send. Depends on the base only
//! (`pairs`, `text`), so what is believed can be reviewed here alone.

pub mod allow_list;
pub mod cert_expiry;
pub mod certificate;
pub mod jwt_claims;
pub mod known_peers;
#[cfg(test)]
pub(crate) mod test_certs;
pub mod verdict_headers;
pub mod xfcc;

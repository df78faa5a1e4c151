//! What the auth service said about a credential, and where the filter keeps it: shared
//! data for every worker ([`shared_cache`], in [`slot_codec`]'s bytes), this worker's
//! copies ([`local_copies`]), and the key's own rate counters. Everything is keyed by the
//! credential's [`digest`], never its text. Depends on the base and `output`.
//!
//! The verdict itself comes in two forms: [`Verdict`] as the auth service's reply gives it
//! and shared data stores it, and [`Known`] as the request path uses it, its identity
//! headers rendered once.

pub mod digest;
pub mod local_copies;
pub mod rate_limit;
pub mod shared_cache;
pub mod slot_codec;

use crate::core::output::access_log::log_fields;
use std::rc::Rc;

/// What a valid key may do; cached and turned into identity headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    pub key_id: String,
    pub user_id: String,
    pub scopes: Vec<String>,
    pub rate_limit_per_hour: Option<u64>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Unknown, revoked or expired key: 401.
    Invalid,
    /// The auth service refused this key for our service: 403.
    Forbidden,
}

/// A verdict is what the cache may keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(KeyGrant),
    Deny(Denial),
}

/// An allow verdict with its identity headers rendered once, so forwarding a cached request
/// allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key_id: Rc<str>,
    pub user_id: Rc<str>,
    pub scopes: Vec<String>,
    /// `x-auth-scopes`: the scopes, space-separated.
    pub scopes_header: Rc<str>,
    pub rate_limit_per_hour: Option<u64>,
    pub expires_at: Option<i64>,
    /// Its access-log fields (`key_id`, `user_id`), escaped once.
    pub log_fields: Rc<str>,
}

impl From<&KeyGrant> for Grant {
    fn from(g: &KeyGrant) -> Self {
        Grant {
            key_id: g.key_id.as_str().into(),
            user_id: g.user_id.as_str().into(),
            scopes: g.scopes.clone(),
            scopes_header: g.scopes.join(" ").into(),
            rate_limit_per_hour: g.rate_limit_per_hour,
            expires_at: g.expires_at,
            log_fields: log_fields(&[("key_id", Some(&g.key_id)), ("user_id", Some(&g.user_id))]),
        }
    }
}

/// A verdict as the request path uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    Allow(Rc<Grant>),
    Deny(Denial),
}

impl From<&Verdict> for Known {
    fn from(v: &Verdict) -> Self {
        match v {
            Verdict::Allow(g) => Known::Allow(Rc::new(g.into())),
            Verdict::Deny(d) => Known::Deny(*d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_render_their_headers_once() {
        let grant = Grant::from(&KeyGrant {
            key_id: "k1".into(),
            user_id: "u1".into(),
            scopes: vec!["mlflow:read".into(), "mlflow:write".into()],
            rate_limit_per_hour: Some(5),
            expires_at: None,
        });
        assert_eq!(&*grant.scopes_header, "mlflow:read mlflow:write");
        assert_eq!((&*grant.key_id, &*grant.user_id), ("k1", "u1"));
    }
}

//! What a forwarded request carries upstream about its verdict. Every name but `x-user-id`
//! is one a client may never send ([`crate::core::identity::verdict_headers`]), so these
//! values are the only ones that reach MLflow.

use super::labels::{AuthMethod, AuthPath};
use std::rc::Rc;

/// The trusted identity headers a forwarded request gets (contract section 4, step 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    /// None: keep the caller's own `x-user-id` (internal callers forward the end user's id).
    pub user_id: Option<Rc<str>>,
    pub key_id: Option<Rc<str>>,
    pub scopes: Rc<str>,
    pub path: AuthPath,
    pub method: AuthMethod,
    /// The allow-listed peer identity (internal path).
    pub identity: Option<Rc<str>>,
    pub stale: bool,
    /// The identity facts as access-log JSON fields (`,"key_id":..,"user_id":..`), rendered
    /// once per verdict or peer rather than per request.
    pub log_fields: Rc<str>,
}

impl IdentityHeaders {
    /// Name and value of every header to set, in a fixed order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            self.user_id.as_deref().map(|v| ("x-user-id", v)),
            self.key_id.as_deref().map(|v| ("x-api-key-id", v)),
            Some(("x-auth-scopes", &*self.scopes)),
            Some(("x-auth-path", self.path.label())),
            Some(("x-auth-method", self.method.label())),
            self.identity.as_deref().map(|v| ("x-auth-identity", v)),
            self.stale.then_some(("x-auth-stale", "1")),
        ]
        .into_iter()
        .flatten()
    }
}

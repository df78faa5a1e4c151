//! The decision for one request (contract section 4): facts in, a decision out.
//!
//! The adapter strips [`super::VERDICT_HEADERS`] first, then calls [`Policy::on_request`].
//! A `Validate` decision means "ask the auth service"; its outcome comes back through
//! [`Policy::on_validation`], which always ends in `Forward` or `Reply`.

use super::api_key::{find_api_key, ApiKey, KeyLookup};
use super::callout::{validation_call, ValidationCall};
use super::config::FilterConfig;
use super::digest::KeyDigest;
use super::local_reply::LocalReply;
use super::local_verdicts::LocalVerdicts;
use super::peer::{match_peer, PeerFacts, PeerMatch};
use super::rate_limit;
use super::scope::{required_access, Access};
use super::store::SharedStore;
use super::validation_reply::{Denial, KeyGrant, ValidationOutcome, Verdict};
use super::verdict_cache::{Probe, VerdictCache};

/// What the adapter read from the request. Header values are raw bytes: a client can send
/// anything, and nothing here may panic on it.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a [u8]>,
    pub x_api_key: Option<&'a [u8]>,
    /// `access-control-request-method` is present.
    pub cors_request_method: bool,
    /// The caller sent `x-user-id` (kept on the internal path).
    pub has_user_id: bool,
    pub peer: PeerFacts,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through after setting these headers.
    Forward(Forward),
    /// Answer the client ourselves.
    Reply(LocalReply),
    /// Cache miss: ask the auth service, then call [`Policy::on_validation`].
    Validate(Pending),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Forward {
    pub headers: Vec<(&'static str, String)>,
    pub route: Route,
}

/// How a forwarded request got through: for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Exempt,
    Preflight,
    Internal,
    CachedKey,
    ValidatedKey,
    StaleKey,
}

/// A request waiting for the auth service.
#[derive(Debug, PartialEq, Eq)]
pub struct Pending {
    pub key: ApiKey,
    pub digest: KeyDigest,
    pub access: Access,
    /// What the cache lookup saw, so storing the verdict needs no second read.
    pub probe: Probe,
}

/// The configured filter: built once per configuration, shared by every request.
pub struct Policy {
    config: FilterConfig,
    /// Shared-data namespace, so filters for different services never share verdicts.
    prefix: String,
    /// This worker's copies of recent verdicts: a repeat key costs no host call.
    local: LocalVerdicts,
}

/// Per-worker copies kept at most; the shared cache stays the one bounded by max_entries.
const LOCAL_VERDICTS: usize = 4096;

impl Policy {
    pub fn new(config: FilterConfig) -> Self {
        let prefix = format!("hokusai.v1.{}.", config.service_id);
        let local = LocalVerdicts::new(LOCAL_VERDICTS.min(config.cache.max_entries as usize));
        Self {
            config,
            prefix,
            local,
        }
    }

    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    pub fn on_request<S: SharedStore>(&self, req: &RequestFacts, store: &S, now: i64) -> Decision {
        let path = req.path.split('?').next().unwrap_or_default();
        if self.config.exempt_paths.iter().any(|p| p == path) {
            return forward(Vec::new(), Route::Exempt);
        }
        if req.cors_request_method && req.method.eq_ignore_ascii_case("OPTIONS") {
            return forward(Vec::new(), Route::Preflight);
        }
        let access = required_access(req.method, req.path);
        match match_peer(&req.peer, &self.config.internal.allowed_identities) {
            PeerMatch::Allowed(identity) => return self.admit_internal(identity, req, access),
            PeerMatch::Unlisted(identity) => {
                log::info!("mTLS peer {identity} is not allow-listed; API key required")
            }
            PeerMatch::NotMtls => {}
        }
        let key = match find_api_key(req.authorization, req.x_api_key) {
            KeyLookup::Found(key) => key,
            KeyLookup::Missing => return Decision::Reply(LocalReply::key_required()),
            KeyLookup::Malformed => return Decision::Reply(LocalReply::key_malformed()),
        };
        let digest = key.digest();
        let cached = match self.local.get(&digest, now) {
            Some(verdict) => Ok(verdict),
            None => self
                .cache(store)
                .lookup(&digest, now)
                .map(|(verdict, fresh_until)| {
                    self.local.put(&digest, &verdict, fresh_until, now);
                    verdict
                }),
        };
        match cached {
            Ok(Verdict::Allow(grant)) => {
                self.admit_key(&grant, &digest, access, Route::CachedKey, store, now)
            }
            Ok(Verdict::Deny(denial)) => deny(denial, &digest),
            Err(probe) => Decision::Validate(Pending {
                key,
                digest,
                access,
                probe,
            }),
        }
    }

    pub fn validation_call(
        &self,
        pending: &Pending,
        client_ip: &str,
        request_id: Option<&str>,
        service_token: Option<&str>,
    ) -> ValidationCall {
        validation_call(
            &self.config,
            &pending.key,
            client_ip,
            request_id,
            service_token,
        )
    }

    pub fn on_validation<S: SharedStore>(
        &self,
        pending: &Pending,
        outcome: ValidationOutcome,
        store: &S,
        now: i64,
    ) -> Decision {
        let digest = &pending.digest;
        match outcome {
            ValidationOutcome::Verdict(verdict) => {
                let fresh_until = self
                    .cache(store)
                    .remember(digest, &verdict, &pending.probe, now);
                self.local.put(digest, &verdict, fresh_until, now);
                match verdict {
                    Verdict::Allow(grant) => self.admit_key(
                        &grant,
                        digest,
                        pending.access,
                        Route::ValidatedKey,
                        store,
                        now,
                    ),
                    Verdict::Deny(denial) => deny(denial, digest),
                }
            }
            ValidationOutcome::RateLimited { retry_after_s } => {
                log::info!("auth service rate-limited key {}", digest.fingerprint());
                Decision::Reply(LocalReply::rate_limited(retry_after_s))
            }
            ValidationOutcome::Unavailable(reason) => {
                match self.cache(store).stale_allow(digest, now) {
                    Some(grant) => {
                        log::warn!(
                            "auth service unavailable ({reason}); serving stale verdict for {}",
                            digest.fingerprint()
                        );
                        self.admit_key(&grant, digest, pending.access, Route::StaleKey, store, now)
                    }
                    None => {
                        log::warn!(
                            "auth service unavailable ({reason}) for key {}",
                            digest.fingerprint()
                        );
                        Decision::Reply(LocalReply::unavailable())
                    }
                }
            }
        }
    }

    fn cache<'s, S: SharedStore>(&'s self, store: &'s S) -> VerdictCache<'s, S> {
        VerdictCache::new(store, &self.config.cache, &self.prefix)
    }

    fn admit_internal(&self, identity: String, req: &RequestFacts, access: Access) -> Decision {
        let scopes = &self.config.internal.scopes;
        if !access.is_granted_by(scopes, &self.config.scopes) {
            log::info!("internal peer {identity} lacks scope for {}", req.path);
            return Decision::Reply(LocalReply::scope_missing(
                access.canonical_scope(&self.config.scopes),
            ));
        }
        let mut headers = Vec::with_capacity(5);
        if !req.has_user_id {
            headers.push(("x-user-id", "internal_service".to_string()));
        }
        headers.extend([
            ("x-auth-scopes", scopes.join(" ")),
            ("x-auth-path", "internal".to_string()),
            ("x-auth-method", "mtls".to_string()),
            ("x-auth-identity", identity),
        ]);
        forward(headers, Route::Internal)
    }

    fn admit_key<S: SharedStore>(
        &self,
        grant: &KeyGrant,
        digest: &KeyDigest,
        access: Access,
        route: Route,
        store: &S,
        now: i64,
    ) -> Decision {
        if !access.is_granted_by(&grant.scopes, &self.config.scopes) {
            log::info!("key {} lacks the scope for this call", digest.fingerprint());
            return Decision::Reply(LocalReply::scope_missing(
                access.canonical_scope(&self.config.scopes),
            ));
        }
        if let Some(limit) = grant.rate_limit_per_hour {
            let slot = digest.slots(self.config.cache.max_entries)[0];
            let counter = format!("{}rate.{slot}", self.prefix);
            if let Err(retry_after_s) = rate_limit::consume(store, &counter, digest, limit, now) {
                log::info!("key {} is over its hourly rate limit", digest.fingerprint());
                return Decision::Reply(LocalReply::rate_limited(retry_after_s));
            }
        }
        let mut headers = vec![
            ("x-user-id", grant.user_id.clone()),
            ("x-api-key-id", grant.key_id.clone()),
            ("x-auth-scopes", grant.scopes.join(" ")),
            ("x-auth-path", "external".to_string()),
            ("x-auth-method", "api_key".to_string()),
        ];
        if route == Route::StaleKey {
            headers.push(("x-auth-stale", "1".to_string()));
        }
        forward(headers, route)
    }
}

fn forward(headers: Vec<(&'static str, String)>, route: Route) -> Decision {
    Decision::Forward(Forward { headers, route })
}

fn deny(denial: Denial, digest: &KeyDigest) -> Decision {
    log::info!("key {} denied: {denial:?}", digest.fingerprint());
    Decision::Reply(match denial {
        Denial::Invalid => LocalReply::key_invalid(),
        Denial::Forbidden => LocalReply::forbidden(),
    })
}

#[cfg(test)]
mod tests;

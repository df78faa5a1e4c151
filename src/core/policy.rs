//! The decision for one request (contract section 4): facts in, a decision out.
//!
//! [`Policy::decide`] ends in `Forward`, `Refuse` or `Validate` (ask the auth service). A
//! validation's outcome is [`Policy::settle`]d once per callout (cached, logged) and then
//! [`Policy::conclude`]d for every request that waited on it, each with its own scope need.
//! Callouts, waiting and coalescing are [`super::worker`]'s business; this module never sees
//! them. The adapter strips the client's [`super::identity::verdict_headers`] before any
//! decision reaches upstream.

use super::auth_service::call::validation_call;
use super::auth_service::reply::ValidationOutcome;
use super::config::{FilterConfig, JwtMode};
use super::host::{Callout, RequestHost, SharedStore};
use super::identity::cert_expiry::CertExpiry;
use super::identity::certificate::parse_digest;
use super::identity::jwt_claims;
use super::identity::known_peers::KnownPeers;
use super::output::access_log::log_fields;
use super::output::identity_headers::IdentityHeaders;
use super::output::json_writer;
use super::output::labels::{AuthMethod, AuthPath, CacheUse, Facts, Outcome};
use super::output::local_reply::LocalReply;
use super::output::tally::Tally;
use super::request::credential::{find_credential, Credential, Kind, Lookup, Presented};
use super::request::facts::{RequestFacts, Single};
use super::request::scope::{required_access, Access};
use super::verdict::digest::KeyDigest;
use super::verdict::local_copies::LocalVerdicts;
use super::verdict::rate_limit::{Count, RateCounters};
use super::verdict::shared_cache::{Probe, VerdictCache};
use super::verdict::{Denial, Grant, Known};
use std::rc::Rc;

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Forward(Forward),
    Refuse(Refusal),
    /// Cache miss: ask the auth service.
    Validate(Pending),
}

/// A decision that needs nothing more.
#[derive(Debug, PartialEq, Eq)]
pub enum Final {
    Forward(Forward),
    Refuse(Refusal),
}

impl From<Final> for Decision {
    fn from(f: Final) -> Self {
        match f {
            Final::Forward(f) => Decision::Forward(f),
            Final::Refuse(r) => Decision::Refuse(r),
        }
    }
}

impl Final {
    pub fn facts(&self) -> &Facts {
        match self {
            Final::Forward(f) => &f.facts,
            Final::Refuse(r) => &r.facts,
        }
    }
}

/// Let the request through, with these identity headers (None: exempt, untouched).
#[derive(Debug, PartialEq, Eq)]
pub struct Forward {
    pub identity: Option<IdentityHeaders>,
    pub facts: Facts,
}

/// Answer the client ourselves.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reply: LocalReply,
    /// For the one log line a denied request gets.
    pub reason: &'static str,
    pub facts: Facts,
    pub key: Option<KeyDigest>,
}

impl Refusal {
    /// Answers with `reply`; the decision's outcome label is the reply's status.
    fn new(
        reply: LocalReply,
        reason: &'static str,
        path: AuthPath,
        method: AuthMethod,
        cache: CacheUse,
        key: Option<KeyDigest>,
    ) -> Self {
        let outcome = Outcome::of_status(reply.status);
        Self {
            reply,
            reason,
            facts: facts(path, method, outcome, cache),
            key,
        }
    }
}

/// An external credential decided on its verdict (or on the lack of one): how it is named,
/// which method it is, and where the verdict came from.
#[derive(Clone, Copy)]
struct Verdicted<'a> {
    digest: &'a KeyDigest,
    method: AuthMethod,
    cache: CacheUse,
}

impl Verdicted<'_> {
    fn refuse(&self, reply: LocalReply, reason: &'static str) -> Final {
        let (path, key) = (AuthPath::External, Some(*self.digest));
        Final::Refuse(Refusal::new(
            reply,
            reason,
            path,
            self.method,
            self.cache,
            key,
        ))
    }
}

/// A request whose credential must go to the auth service.
#[derive(Debug, PartialEq, Eq)]
pub struct Pending {
    pub credential: Credential,
    pub digest: KeyDigest,
    pub access: Access,
    /// What the cache lookup saw, so storing the verdict needs no second read.
    pub probe: Probe,
}

impl Pending {
    pub fn method(&self) -> AuthMethod {
        self.credential.kind().method()
    }
}

/// A callout's outcome, settled once for all the requests that waited on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Verdict(Known),
    RateLimited {
        retry_after_s: u64,
    },
    /// No verdict; a stale allow stands in when the cache still has one.
    Unavailable {
        stale: Option<Rc<Grant>>,
    },
}

/// One worker's view of the configured filter: the configuration plus this worker's own
/// memory (verdict copies, peer certificates seen, counts).
pub struct Policy {
    config: FilterConfig,
    /// Shared-data namespaces, so filters for different services never share verdicts, and
    /// API keys and (callout-mode) tokens never share a slot.
    key_prefix: String,
    token_prefix: String,
    rate_counters: RateCounters,
    internal_scopes: Rc<str>,
    /// Per allow-listed identity: its name, and its access-log fields with and without the
    /// `internal_service` user id.
    internal_identities: Vec<(Rc<str>, Rc<str>, Rc<str>)>,
    internal_user: Rc<str>,
    local_keys: LocalVerdicts,
    local_tokens: LocalVerdicts,
    known_peers: KnownPeers,
    /// The worker reports these and counts into the tally too.
    pub(super) cert_expiry: CertExpiry,
    pub(super) tally: Tally,
}

/// Per-worker copies kept at most; the shared cache stays the one bounded by max_entries.
const LOCAL_VERDICTS: usize = 4096;

fn facts(path: AuthPath, method: AuthMethod, outcome: Outcome, cache: CacheUse) -> Facts {
    Facts {
        path,
        method,
        outcome,
        cache,
    }
}

impl Policy {
    pub fn new(config: FilterConfig) -> Self {
        let base = format!("hokusai.v1.{}.", config.service_id);
        let local = LOCAL_VERDICTS.min(config.cache.max_entries as usize);
        Self {
            key_prefix: base.clone(),
            token_prefix: format!("{base}jwt."),
            rate_counters: RateCounters::new(format!("{base}rate."), config.cache.max_entries),
            internal_scopes: config.internal.scopes.join(" ").into(),
            internal_identities: config
                .internal
                .allowed_identities
                .iter()
                .map(|id| {
                    let peer = Some(id.as_str());
                    (
                        Rc::from(id.as_str()),
                        log_fields(&[("user_id", Some("internal_service")), ("peer", peer)]),
                        log_fields(&[("peer", peer)]),
                    )
                })
                .collect(),
            internal_user: Rc::from("internal_service"),
            local_keys: LocalVerdicts::new(local),
            local_tokens: LocalVerdicts::new(local),
            known_peers: KnownPeers::default(),
            cert_expiry: CertExpiry::default(),
            tally: Tally::default(),
            config,
        }
    }

    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    /// Shared state that must exist before the first request: the rate counters' slots.
    /// The adapter calls it when the VM is configured; an error refuses the configuration.
    pub fn prepare<S: SharedStore>(&self, store: &S) -> Result<(), String> {
        let counters = &self.rate_counters;
        match counters.prepare(store) {
            Ok(0) => Ok(()),
            Ok(created) => {
                log::info!(
                    "created {created} of {} rate counter slots",
                    counters.slots()
                );
                Ok(())
            }
            Err(error) => Err(format!(
                "could not create the rate counter slots in shared data: {error:?}"
            )),
        }
    }

    pub fn decide<H: RequestHost>(
        &mut self,
        req: &RequestFacts,
        host: &mut H,
        now: i64,
    ) -> Decision {
        let path = req.bare_path();
        if self.config.exempt_paths.iter().any(|p| p == path)
            || (req.cors_request_method && req.method.eq_ignore_ascii_case("OPTIONS"))
        {
            let f = facts(
                AuthPath::Exempt,
                AuthMethod::None,
                Outcome::Allow,
                CacheUse::None,
            );
            return Decision::Forward(Forward {
                identity: None,
                facts: f,
            });
        }
        let access = if req.method_override {
            Access::Write
        } else {
            required_access(req.method, req.path)
        };
        if let Some(decision) = self.internal(req, access, host) {
            return decision;
        }
        let presented = match find_credential(req.authorization, req.x_api_key) {
            Lookup::Found(presented) => presented,
            Lookup::Missing => {
                return self.refuse_early(
                    LocalReply::key_required(),
                    "no credential",
                    AuthMethod::None,
                )
            }
            Lookup::Malformed => {
                return self.refuse_early(
                    LocalReply::key_malformed(),
                    "malformed or repeated credential",
                    AuthMethod::None,
                )
            }
        };
        if (presented.kind, self.config.jwt.mode) == (Kind::Jwt, JwtMode::Local) {
            return self.admit_verified_jwt(access, host);
        }
        self.lookup(presented, access, host, now)
    }

    /// The internal path, or None to fall through to the credential path.
    fn internal<H: RequestHost>(
        &mut self,
        req: &RequestFacts,
        access: Access,
        host: &mut H,
    ) -> Option<Decision> {
        // Envoy writes its XFCC only for a verified peer (SANITIZE_SET), so a plain request
        // costs no property read at all.
        let header = match req.xfcc {
            Single::Absent => return None,
            Single::Repeated => {
                log::warn!("x-forwarded-client-cert sent twice: not Envoy's; is forward_client_cert_details SANITIZE_SET?");
                return None;
            }
            Single::One(header) => header,
        };
        if !host.peer_verified() {
            log::warn!("x-forwarded-client-cert on a connection without verified mTLS: ignored; is forward_client_cert_details SANITIZE_SET?");
            return None;
        }
        let Some(digest) = host
            .peer_certificate_digest()
            .as_deref()
            .and_then(parse_digest)
        else {
            log::warn!("mTLS connection without a readable peer certificate digest: ignored");
            return None;
        };
        let allowed = &self.config.internal.allowed_identities;
        let Some(peer) = self.known_peers.peer(digest, header, allowed) else {
            log::warn!("x-forwarded-client-cert holds no certificate with the connection's digest; a credential is required");
            self.tally.mtls_fallbacks += 1;
            return None;
        };
        let Some(index) = peer.allowed_as else {
            log::info!(
                "mTLS peer {} is not allow-listed; a credential is required",
                json_writer::quoted(peer.certificate.label())
            );
            self.tally.mtls_fallbacks += 1;
            return None;
        };
        let (identity, with_user, without_user) = self.internal_identities.get(index)?.clone();
        self.cert_expiry.seen(&identity, peer.certificate.not_after);
        if !access.is_granted_by(&self.config.internal.scopes, &self.config.scopes) {
            let reply = LocalReply::scope_missing(access.canonical_scope(&self.config.scopes));
            let reason = "internal peer lacks the scope";
            let (path, method) = (AuthPath::Internal, AuthMethod::Mtls);
            let refusal = Refusal::new(reply, reason, path, method, CacheUse::None, None);
            return Some(Decision::Refuse(refusal));
        }
        Some(Decision::Forward(Forward {
            identity: Some(IdentityHeaders {
                user_id: (!req.has_user_id).then(|| self.internal_user.clone()),
                key_id: None,
                scopes: self.internal_scopes.clone(),
                path: AuthPath::Internal,
                method: AuthMethod::Mtls,
                identity: Some(identity),
                stale: false,
                log_fields: if req.has_user_id {
                    without_user
                } else {
                    with_user
                },
            }),
            facts: facts(
                AuthPath::Internal,
                AuthMethod::Mtls,
                Outcome::Allow,
                CacheUse::None,
            ),
        }))
    }

    fn refuse_early(
        &self,
        reply: LocalReply,
        reason: &'static str,
        method: AuthMethod,
    ) -> Decision {
        let path = AuthPath::External;
        Decision::Refuse(Refusal::new(
            reply,
            reason,
            path,
            method,
            CacheUse::None,
            None,
        ))
    }

    /// A JWT that Envoy's jwt_authn verified: its metadata proves the verification and is
    /// the only source of the claims (the token's own text is never read for them).
    fn admit_verified_jwt<H: RequestHost>(&mut self, access: Access, host: &mut H) -> Decision {
        let jwt_config = &self.config.jwt;
        let (namespace, key) = (&jwt_config.metadata_namespace, &jwt_config.payload_key);
        let claims = jwt_claims::verified_claims(|below| host.verified_jwt(namespace, key, below));
        let Some(claims) = claims else {
            // No `sub` in jwt_authn's metadata: the token was not verified, or names nobody.
            return self.refuse_early(
                LocalReply::token_invalid(),
                "token not verified by jwt_authn, or without a usable sub",
                AuthMethod::Jwt,
            );
        };
        if !access.is_granted_by(&claims.scopes, &self.config.scopes) {
            let reply = LocalReply::scope_missing(access.canonical_scope(&self.config.scopes));
            return self.refuse_early(reply, "token lacks the scope", AuthMethod::Jwt);
        }
        Decision::Forward(Forward {
            identity: Some(IdentityHeaders {
                log_fields: log_fields(&[("user_id", Some(&claims.sub))]),
                user_id: Some(claims.sub.as_str().into()),
                key_id: None,
                scopes: claims.scopes.join(" ").into(),
                path: AuthPath::External,
                method: AuthMethod::Jwt,
                identity: None,
                stale: false,
            }),
            facts: facts(
                AuthPath::External,
                AuthMethod::Jwt,
                Outcome::Allow,
                CacheUse::None,
            ),
        })
    }

    /// The verdict cache: this worker's copy, then shared data, else a callout.
    fn lookup<S: SharedStore>(
        &mut self,
        presented: Presented,
        access: Access,
        store: &S,
        now: i64,
    ) -> Decision {
        let method = presented.kind.method();
        let secret = presented.expose().as_bytes();
        if let Some(hit) = self.local(method).get(secret, now) {
            let from = Verdicted {
                digest: &hit.digest,
                method,
                cache: CacheUse::Hit,
            };
            return self
                .conclude_known(&hit.verdict, from, access, store, now)
                .into();
        }
        let digest = presented.digest();
        match self.cache(method, store).lookup(&digest, now) {
            Ok((verdict, fresh_until)) => {
                let known = Known::from(&verdict);
                self.local(method)
                    .put(secret, digest, known.clone(), fresh_until, now);
                let from = Verdicted {
                    digest: &digest,
                    method,
                    cache: CacheUse::Hit,
                };
                self.conclude_known(&known, from, access, store, now).into()
            }
            Err(probe) => Decision::Validate(Pending {
                credential: presented.to_credential(),
                digest,
                access,
                probe,
            }),
        }
    }

    fn local(&mut self, method: AuthMethod) -> &mut LocalVerdicts {
        match method {
            AuthMethod::Jwt => &mut self.local_tokens,
            _ => &mut self.local_keys,
        }
    }

    fn cache<'s, S: SharedStore>(
        &'s self,
        method: AuthMethod,
        store: &'s S,
    ) -> VerdictCache<'s, S> {
        let prefix = match method {
            AuthMethod::Jwt => &self.token_prefix,
            _ => &self.key_prefix,
        };
        VerdictCache::new(store, &self.config.cache, prefix)
    }

    pub fn validation_call(
        &self,
        pending: &Pending,
        client_ip: &str,
        request_id: Option<&str>,
        service_token: Option<&str>,
    ) -> Callout {
        validation_call(
            &self.config,
            &pending.credential,
            client_ip,
            request_id,
            service_token,
        )
    }

    /// Caches and logs a callout's outcome, once for all who waited on it.
    pub fn settle<S: SharedStore>(
        &mut self,
        pending: &Pending,
        outcome: ValidationOutcome,
        store: &S,
        now: i64,
    ) -> Settled {
        let (method, digest) = (pending.method(), &pending.digest);
        match outcome {
            ValidationOutcome::Verdict(verdict) => {
                let fresh_until =
                    self.cache(method, store)
                        .remember(digest, &verdict, &pending.probe, now);
                let known = Known::from(&verdict);
                let secret = pending.credential.secret().expose().as_bytes();
                self.local(method)
                    .put(secret, *digest, known.clone(), fresh_until, now);
                Settled::Verdict(known)
            }
            ValidationOutcome::RateLimited { retry_after_s } => {
                log::info!("auth service rate-limited {}", digest.fingerprint());
                Settled::RateLimited { retry_after_s }
            }
            ValidationOutcome::Unavailable(reason) => {
                let stale = self.cache(method, store).stale_allow(digest, now);
                match &stale {
                    Some(_) => log::warn!(
                        "auth service unavailable ({reason}); serving a stale verdict for {}",
                        digest.fingerprint()
                    ),
                    None => log::warn!(
                        "auth service unavailable ({reason}) for {}",
                        digest.fingerprint()
                    ),
                }
                Settled::Unavailable {
                    stale: stale.map(|g| Rc::new(Grant::from(&g))),
                }
            }
        }
    }

    /// One waiting request's decision from its callout's settled outcome.
    pub fn conclude<S: SharedStore>(
        &mut self,
        settled: &Settled,
        pending: &Pending,
        access: Access,
        store: &S,
        now: i64,
    ) -> Final {
        let missed = Verdicted {
            digest: &pending.digest,
            method: pending.method(),
            cache: CacheUse::Miss,
        };
        match settled {
            Settled::Verdict(known) => self.conclude_known(known, missed, access, store, now),
            Settled::RateLimited { retry_after_s } => missed.refuse(
                LocalReply::rate_limited(*retry_after_s),
                "auth service rate-limited the credential",
            ),
            Settled::Unavailable { stale: Some(grant) } => {
                let stale = Verdicted {
                    cache: CacheUse::Stale,
                    ..missed
                };
                self.admit(grant, stale, access, store, now)
            }
            Settled::Unavailable { stale: None } => {
                missed.refuse(LocalReply::unavailable(), "auth service unavailable")
            }
        }
    }

    // Inlined, with admit: they run once per external request, and as calls they cost the
    // warm path more wasm instructions than their bodies (benches/wasm_cost.rs).
    #[inline(always)]
    fn conclude_known<S: SharedStore>(
        &mut self,
        known: &Known,
        from: Verdicted,
        access: Access,
        store: &S,
        now: i64,
    ) -> Final {
        match known {
            Known::Allow(grant) => self.admit(grant, from, access, store, now),
            Known::Deny(denial) => {
                let (reply, reason) = match (denial, from.method) {
                    (Denial::Invalid, AuthMethod::Jwt) => {
                        (LocalReply::token_invalid(), "token invalid or expired")
                    }
                    (Denial::Invalid, _) => (LocalReply::key_invalid(), "key invalid or expired"),
                    (Denial::Forbidden, _) => (
                        LocalReply::forbidden(),
                        "auth service forbade the credential",
                    ),
                };
                from.refuse(reply, reason)
            }
        }
    }

    #[inline(always)]
    fn admit<S: SharedStore>(
        &mut self,
        grant: &Rc<Grant>,
        from: Verdicted,
        access: Access,
        store: &S,
        now: i64,
    ) -> Final {
        let Verdicted {
            digest,
            method,
            cache,
        } = from;
        if !access.is_granted_by(&grant.scopes, &self.config.scopes) {
            let scope = access.canonical_scope(&self.config.scopes);
            return from.refuse(
                LocalReply::scope_missing(scope),
                "credential lacks the scope",
            );
        }
        if let Some(limit) = grant.rate_limit_per_hour {
            match self.rate_counters.consume(store, digest, limit, now) {
                Count::Counted => {}
                Count::NoSlot => {
                    self.tally.rate_limit_uncounted += 1;
                    log::warn!(
                        "no free rate counter slot for {} this hour: let through uncounted",
                        digest.fingerprint()
                    );
                }
                Count::Spent { retry_after_s } => {
                    return from.refuse(
                        LocalReply::rate_limited(retry_after_s),
                        "hourly rate limit spent",
                    )
                }
                Count::Unavailable => {
                    return from.refuse(LocalReply::unavailable(), "rate counter unavailable")
                }
            }
        }
        let stale = cache == CacheUse::Stale;
        Final::Forward(Forward {
            identity: Some(IdentityHeaders {
                user_id: Some(grant.user_id.clone()),
                key_id: Some(grant.key_id.clone()),
                scopes: grant.scopes_header.clone(),
                path: AuthPath::External,
                method,
                identity: None,
                stale,
                log_fields: grant.log_fields.clone(),
            }),
            facts: facts(
                AuthPath::External,
                method,
                if stale {
                    Outcome::Stale
                } else {
                    Outcome::Allow
                },
                cache,
            ),
        })
    }
}

#[cfg(test)]
mod tests;

use super::*;
use crate::core::store::MemoryStore;
use crate::core::validation_reply::interpret;

const NOW: i64 = 1_795_435_200;
const API_ID: &str = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";

fn policy() -> Policy {
    let mut config = FilterConfig::default();
    config.internal.allowed_identities = vec![API_ID.into()];
    Policy::new(config)
}

fn peer(mtls: bool, uri_san: &str) -> PeerFacts {
    PeerFacts {
        mtls,
        uri_san: Some(uri_san.into()),
        ..PeerFacts::default()
    }
}

fn get(path: &str) -> RequestFacts<'_> {
    RequestFacts {
        method: "GET",
        path,
        ..RequestFacts::default()
    }
}

fn post(path: &str) -> RequestFacts<'_> {
    RequestFacts {
        method: "POST",
        ..get(path)
    }
}

fn grant_json(scopes: &str, limit: &str) -> String {
    format!(
        r#"{{"valid": true, "key_id": "kid", "user_id": "alice", "scopes": {scopes}, "rate_limit_per_hour": {limit}}}"#
    )
}

fn reply_status(d: &Decision) -> u16 {
    match d {
        Decision::Reply(r) => r.status,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn forwarded(d: Decision) -> Forward {
    match d {
        Decision::Forward(f) => f,
        other => panic!("expected forward, got {other:?}"),
    }
}

fn header<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
    f.headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// Runs a request through a miss and the given auth-service reply.
fn validate(
    p: &Policy,
    store: &MemoryStore,
    req: &RequestFacts,
    status: u16,
    body: &str,
) -> Decision {
    match p.on_request(req, store, NOW) {
        Decision::Validate(pending) => p.on_validation(
            &pending,
            interpret(Some(status), body.as_bytes(), None, NOW),
            store,
            NOW,
        ),
        other => panic!("expected a callout, got {other:?}"),
    }
}

#[test]
fn exempt_paths_and_preflight_pass_untouched() {
    let (p, store) = (policy(), MemoryStore::default());
    let f = forwarded(p.on_request(&get("/health?full=1"), &store, NOW));
    assert_eq!((f.route, f.headers.len()), (Route::Exempt, 0));
    let preflight = RequestFacts {
        method: "OPTIONS",
        cors_request_method: true,
        ..get("/api/2.0/mlflow/runs/create")
    };
    assert_eq!(
        forwarded(p.on_request(&preflight, &store, NOW)).route,
        Route::Preflight
    );
    let bare_options = RequestFacts {
        method: "OPTIONS",
        ..get("/api/2.0/mlflow/runs/create")
    };
    assert_eq!(reply_status(&p.on_request(&bare_options, &store, NOW)), 401);
    assert_eq!(
        reply_status(&p.on_request(&get("/healthz"), &store, NOW)),
        401
    );
}

#[test]
fn allow_listed_mtls_peer_is_internal_without_callout() {
    let (p, store) = (policy(), MemoryStore::default());
    let req = RequestFacts {
        peer: peer(true, API_ID),
        ..post("/api/2.0/mlflow/runs/create")
    };
    let f = forwarded(p.on_request(&req, &store, NOW));
    assert_eq!(f.route, Route::Internal);
    assert_eq!(header(&f, "x-user-id"), Some("internal_service"));
    assert_eq!(header(&f, "x-auth-path"), Some("internal"));
    assert_eq!(header(&f, "x-auth-method"), Some("mtls"));
    assert_eq!(header(&f, "x-auth-identity"), Some(API_ID));
    assert_eq!(
        header(&f, "x-auth-scopes"),
        Some("mlflow:read mlflow:write")
    );
    let with_user = RequestFacts {
        has_user_id: true,
        ..req
    };
    let f = forwarded(p.on_request(&with_user, &store, NOW));
    assert_eq!(
        header(&f, "x-user-id"),
        None,
        "the caller's x-user-id is kept"
    );
}

#[test]
fn internal_scopes_are_enforced_too() {
    let mut config = FilterConfig::default();
    config.internal.allowed_identities = vec![API_ID.into()];
    config.internal.scopes = vec!["mlflow:read".into()];
    let (p, store) = (Policy::new(config), MemoryStore::default());
    let req = RequestFacts {
        peer: peer(true, API_ID),
        ..post("/api/2.0/mlflow/runs/create")
    };
    assert_eq!(reply_status(&p.on_request(&req, &store, NOW)), 403);
}

#[test]
fn unlisted_or_plain_peer_falls_through_to_api_key() {
    let (p, store) = (policy(), MemoryStore::default());
    let unlisted = RequestFacts {
        peer: peer(true, "spiffe://hokusai.internal/ns/development/sa/notebook"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    assert_eq!(reply_status(&p.on_request(&unlisted, &store, NOW)), 401);
    let spoofed = RequestFacts {
        peer: peer(false, API_ID),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    assert_eq!(reply_status(&p.on_request(&spoofed, &store, NOW)), 401);
}

#[test]
fn missing_and_malformed_keys_never_call_out() {
    let (p, store) = (policy(), MemoryStore::default());
    let d = p.on_request(&get("/api/2.0/mlflow/experiments/get"), &store, NOW);
    assert_eq!(d, Decision::Reply(LocalReply::key_required()));
    let bad = RequestFacts {
        x_api_key: Some(b"has space"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    assert_eq!(
        p.on_request(&bad, &store, NOW),
        Decision::Reply(LocalReply::key_malformed())
    );
}

#[test]
fn validated_key_is_forwarded_with_identity_and_then_cached() {
    let (p, store) = (policy(), MemoryStore::default());
    let req = RequestFacts {
        authorization: Some(b"Bearer hk_good"),
        ..post("/api/2.0/mlflow/runs/search")
    };
    let f = forwarded(validate(
        &p,
        &store,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    ));
    assert_eq!(f.route, Route::ValidatedKey);
    assert_eq!(header(&f, "x-user-id"), Some("alice"));
    assert_eq!(header(&f, "x-api-key-id"), Some("kid"));
    assert_eq!(header(&f, "x-auth-scopes"), Some("mlflow:read"));
    assert_eq!(header(&f, "x-auth-path"), Some("external"));
    assert_eq!(header(&f, "x-auth-method"), Some("api_key"));
    assert_eq!(header(&f, "x-auth-stale"), None);
    assert_eq!(
        forwarded(p.on_request(&req, &store, NOW + 299)).route,
        Route::CachedKey
    );
    assert!(matches!(
        p.on_request(&req, &store, NOW + 300),
        Decision::Validate(_)
    ));
}

#[test]
fn scope_miss_is_403_naming_the_scope() {
    let (p, store) = (policy(), MemoryStore::default());
    let req = RequestFacts {
        x_api_key: Some(b"hk_ro"),
        ..post("/api/2.0/mlflow/runs/log-metric")
    };
    let d = validate(
        &p,
        &store,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    );
    assert_eq!(
        d,
        Decision::Reply(LocalReply::scope_missing("mlflow:write"))
    );
}

#[test]
fn denials_are_cached_negatively() {
    let (p, store) = (policy(), MemoryStore::default());
    let req = RequestFacts {
        x_api_key: Some(b"hk_bad"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    assert_eq!(reply_status(&validate(&p, &store, &req, 401, "")), 401);
    assert_eq!(
        p.on_request(&req, &store, NOW + 29),
        Decision::Reply(LocalReply::key_invalid())
    );
    assert!(matches!(
        p.on_request(&req, &store, NOW + 30),
        Decision::Validate(_)
    ));
    let other = RequestFacts {
        x_api_key: Some(b"hk_other_service"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    assert_eq!(
        validate(&p, &store, &other, 403, ""),
        Decision::Reply(LocalReply::forbidden())
    );
}

#[test]
fn errors_are_not_cached_and_stale_allow_is_served_marked() {
    let (p, store) = (policy(), MemoryStore::default());
    let req = RequestFacts {
        x_api_key: Some(b"hk_good"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    assert_eq!(reply_status(&validate(&p, &store, &req, 500, "")), 503);
    assert!(
        matches!(p.on_request(&req, &store, NOW), Decision::Validate(_)),
        "errors are not cached"
    );

    forwarded(validate(
        &p,
        &store,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    ));
    let later = NOW + 300 + 60;
    let Decision::Validate(pending) = p.on_request(&req, &store, later) else {
        panic!("expired entry must be revalidated")
    };
    let unavailable = ValidationOutcome::Unavailable("down");
    let f = forwarded(p.on_validation(&pending, unavailable.clone(), &store, later));
    assert_eq!(
        (f.route, header(&f, "x-auth-stale")),
        (Route::StaleKey, Some("1"))
    );
    let too_late = NOW + 300 + 120;
    assert_eq!(
        reply_status(&p.on_validation(&pending, unavailable, &store, too_late)),
        503
    );
}

#[test]
fn key_rate_limit_is_enforced_across_cache_hits() {
    let (p, store) = (policy(), MemoryStore::default());
    let req = RequestFacts {
        x_api_key: Some(b"hk_limited"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    forwarded(validate(
        &p,
        &store,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "2"),
    ));
    forwarded(p.on_request(&req, &store, NOW));
    let d = p.on_request(&req, &store, NOW);
    assert_eq!(reply_status(&d), 429);
    let Decision::Reply(r) = d else {
        unreachable!()
    };
    assert!(r.retry_after_s.is_some_and(|s| (1..=3600).contains(&s)));
}

#[test]
fn auth_service_429_is_passed_on() {
    let (p, store) = (policy(), MemoryStore::default());
    let req = RequestFacts {
        x_api_key: Some(b"hk_x"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    let Decision::Validate(pending) = p.on_request(&req, &store, NOW) else {
        panic!()
    };
    let out = interpret(Some(429), b"", Some(b"30"), NOW);
    assert_eq!(
        p.on_validation(&pending, out, &store, NOW),
        Decision::Reply(LocalReply::rate_limited(30))
    );
    assert!(matches!(
        p.on_request(&req, &store, NOW),
        Decision::Validate(_)
    ));
}

#[test]
fn verdicts_are_namespaced_by_service_id() {
    let store = MemoryStore::default();
    let p1 = policy();
    let p2 = Policy::new(FilterConfig {
        service_id: "other".into(),
        ..FilterConfig::default()
    });
    let req = RequestFacts {
        x_api_key: Some(b"hk_good"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    forwarded(validate(
        &p1,
        &store,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    ));
    assert!(matches!(
        p2.on_request(&req, &store, NOW),
        Decision::Validate(_)
    ));
}

/// A store that counts reads, to show which requests reach shared data.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    reads: std::cell::Cell<usize>,
}

impl SharedStore for CountingStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.reads.set(self.reads.get() + 1);
        self.inner.get(key)
    }

    fn set(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), crate::core::store::StoreError> {
        self.inner.set(key, value, cas)
    }
}

#[test]
fn a_repeat_key_is_answered_from_the_workers_copy_without_shared_reads() {
    let (p, store) = (policy(), CountingStore::default());
    let req = RequestFacts {
        x_api_key: Some(b"hk_good"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    let Decision::Validate(pending) = p.on_request(&req, &store, NOW) else {
        panic!()
    };
    let reply = interpret(
        Some(200),
        grant_json(r#"["mlflow:read"]"#, "null").as_bytes(),
        None,
        NOW,
    );
    forwarded(p.on_validation(&pending, reply, &store, NOW));
    let reads = store.reads.get();
    for _ in 0..10 {
        assert_eq!(
            forwarded(p.on_request(&req, &store, NOW + 10)).route,
            Route::CachedKey
        );
    }
    assert_eq!(
        store.reads.get(),
        reads,
        "no shared-data read for a warm key"
    );
    // Another worker (a fresh policy) learns it from shared data, once.
    let worker2 = policy();
    forwarded(worker2.on_request(&req, &store, NOW + 10));
    assert!(store.reads.get() > reads);
    // The copy ends with the verdict's TTL.
    assert!(matches!(
        p.on_request(&req, &store, NOW + 300),
        Decision::Validate(_)
    ));
}

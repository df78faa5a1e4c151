use super::*;
use crate::core::auth_service::reply::interpret;
use crate::core::host::fake::FakeEnvoy;
use crate::core::identity::test_certs::{self, TestPeer};
use crate::core::output::access_log::access_log_record;
use crate::core::request::facts::Single;

const NOW: i64 = 1_795_435_200;
const API_ID: &str = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";
const NOTEBOOK: &str = "spiffe://hokusai.internal/ns/development/sa/notebook";

fn policy() -> Policy {
    let mut config = FilterConfig::default();
    config.internal.allowed_identities = vec![API_ID.into()];
    Policy::new(config)
}

/// A host whose shared data holds what the adapter prepares at start (the rate counters).
fn prepared(p: &Policy) -> FakeEnvoy {
    let host = FakeEnvoy::default();
    p.prepare(&*host.store).expect("rate counter slots");
    host
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

fn keyed<'a>(req: RequestFacts<'a>, key: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        x_api_key: Single::One(key.as_bytes()),
        ..req
    }
}

fn grant_json(scopes: &str, limit: &str) -> String {
    format!(
        r#"{{"valid": true, "key_id": "kid", "user_id": "alice", "scopes": {scopes}, "rate_limit_per_hour": {limit}}}"#
    )
}

fn refused(d: &Decision) -> &Refusal {
    match d {
        Decision::Refuse(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn status(d: &Decision) -> u16 {
    refused(d).reply.status
}

fn forwarded(d: Decision) -> Forward {
    match d {
        Decision::Forward(f) => f,
        other => panic!("expected forward, got {other:?}"),
    }
}

fn header(f: &Forward, name: &str) -> Option<String> {
    f.identity
        .as_ref()?
        .pairs()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
}

fn pending(d: Decision) -> Pending {
    match d {
        Decision::Validate(p) => p,
        other => panic!("expected a callout, got {other:?}"),
    }
}

/// Runs a request through a miss and the given auth-service reply.
fn validate(
    p: &mut Policy,
    host: &mut FakeEnvoy,
    req: &RequestFacts,
    status: u16,
    body: &str,
) -> Final {
    let pend = pending(p.decide(req, host, NOW));
    let outcome = interpret(Some(status), body.as_bytes(), None, NOW, "ml-platform");
    let settled = p.settle(&pend, outcome, host, NOW);
    p.conclude(&settled, &pend, pend.access, host, NOW)
}

fn forwarded_final(f: Final) -> Forward {
    forwarded(f.into())
}

#[test]
fn exempt_paths_and_preflight_pass_untouched() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let f = forwarded(p.decide(&get("/health?full=1"), &mut host, NOW));
    assert_eq!((f.facts.path, f.identity), (AuthPath::Exempt, None));
    let preflight = RequestFacts {
        method: "OPTIONS",
        cors_request_method: true,
        ..get("/api/2.0/mlflow/runs/create")
    };
    assert_eq!(
        forwarded(p.decide(&preflight, &mut host, NOW)).facts.path,
        AuthPath::Exempt
    );
    let bare_options = RequestFacts {
        method: "OPTIONS",
        ..get("/api/2.0/mlflow/runs/create")
    };
    assert_eq!(status(&p.decide(&bare_options, &mut host, NOW)), 401);
    assert_eq!(status(&p.decide(&get("/healthz"), &mut host, NOW)), 401);
    assert_eq!(status(&p.decide(&get("/health/x"), &mut host, NOW)), 401);
}

fn mtls<'a>(req: RequestFacts<'a>, peer: &'a TestPeer) -> RequestFacts<'a> {
    RequestFacts {
        xfcc: Single::One(peer.xfcc.as_bytes()),
        ..req
    }
}

/// Envoy's answers for an mTLS connection whose peer presented `peer`'s certificate.
fn connection_of(peer: &TestPeer) -> FakeEnvoy {
    FakeEnvoy::mtls_peer(peer.digest_hex.clone())
}

#[test]
fn allow_listed_mtls_peer_is_internal_without_callout() {
    let peer = test_certs::peer(&[API_ID], &[], Some("hokusai-api-client"));
    let (mut p, mut host) = (policy(), connection_of(&peer));
    let req = mtls(post("/api/2.0/mlflow/runs/create"), &peer);
    let f = forwarded(p.decide(&req, &mut host, NOW));
    assert_eq!(
        f.facts,
        facts(
            AuthPath::Internal,
            AuthMethod::Mtls,
            Outcome::Allow,
            CacheUse::None
        )
    );
    assert_eq!(header(&f, "x-user-id").as_deref(), Some("internal_service"));
    assert_eq!(header(&f, "x-auth-path").as_deref(), Some("internal"));
    assert_eq!(header(&f, "x-auth-method").as_deref(), Some("mtls"));
    assert_eq!(header(&f, "x-auth-identity").as_deref(), Some(API_ID));
    assert_eq!(
        header(&f, "x-auth-scopes").as_deref(),
        Some("mlflow:read mlflow:write")
    );
    assert_eq!(header(&f, "x-api-key-id"), None);
    let with_user = RequestFacts {
        has_user_id: true,
        ..req
    };
    let f = forwarded(p.decide(&with_user, &mut host, NOW));
    assert_eq!(
        header(&f, "x-user-id"),
        None,
        "the caller's x-user-id is kept"
    );
    assert_eq!(
        host.shared_reads.get(),
        0,
        "no shared data on the internal path"
    );
    assert_eq!(
        p.cert_expiry.take_changed().len(),
        1,
        "the identity's certificate expiry is reported"
    );
}

#[test]
fn a_plain_request_costs_no_property_read() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let _ = p.decide(
        &keyed(get("/api/2.0/mlflow/experiments/get"), "hk_1"),
        &mut host,
        NOW,
    );
    assert_eq!((host.asked.mtls, host.asked.digest), (0, 0));
}

#[test]
fn internal_scopes_are_enforced_too() {
    let mut config = FilterConfig::default();
    config.internal.allowed_identities = vec![API_ID.into()];
    config.internal.scopes = vec!["mlflow:read".into()];
    let mut p = Policy::new(config);
    let peer = test_certs::peer(&[API_ID], &[], None);
    let mut host = connection_of(&peer);
    let d = p.decide(
        &mtls(post("/api/2.0/mlflow/runs/create"), &peer),
        &mut host,
        NOW,
    );
    assert_eq!(status(&d), 403);
    assert_eq!(refused(&d).facts.path, AuthPath::Internal);
}

#[test]
fn unlisted_unverified_or_repeated_peers_fall_through_to_a_credential() {
    let mut p = policy();
    let notebook = test_certs::peer(&[NOTEBOOK], &[], Some("hokusai-notebook"));
    let mut verified = connection_of(&notebook);
    let d = p.decide(
        &mtls(get("/api/2.0/mlflow/experiments/get"), &notebook),
        &mut verified,
        NOW,
    );
    assert_eq!(status(&d), 401);
    assert_eq!(p.tally.mtls_fallbacks, 1);
    // Envoy's XFCC on a connection whose chain was not verified: not trusted.
    let api = test_certs::peer(&[API_ID], &[], None);
    let mut plain = FakeEnvoy {
        peer_digest: Some(api.digest_hex.clone()),
        ..Default::default()
    };
    let d = p.decide(
        &mtls(get("/api/2.0/mlflow/experiments/get"), &api),
        &mut plain,
        NOW,
    );
    assert_eq!(status(&d), 401);
    assert_eq!((plain.asked.mtls, plain.asked.digest), (1, 0));
    // Two XFCC headers: not what SANITIZE_SET writes.
    let repeated = RequestFacts {
        xfcc: Single::Repeated,
        ..get("/api/2.0/mlflow/experiments/get")
    };
    let mut api_connection = connection_of(&api);
    assert_eq!(status(&p.decide(&repeated, &mut api_connection, NOW)), 401);
    // No digest, an unreadable one, or one no certificate in the header hashes to.
    for digest in [
        None,
        Some(b"zz".to_vec()),
        Some(notebook.digest_hex.clone()),
    ] {
        let mut host = FakeEnvoy {
            mtls: true,
            peer_digest: digest,
            ..Default::default()
        };
        let d = p.decide(&mtls(get("/x"), &api), &mut host, NOW);
        assert_eq!(status(&d), 401);
    }
}

#[test]
fn a_san_or_cn_that_merely_contains_an_allow_listed_id_is_not_that_id() {
    let mut p = policy();
    // Envoy writes SANs unescaped: each of these reads as `...;URI=<API_ID>` in its XFCC.
    let posers = [
        test_certs::peer(&[&format!("{NOTEBOOK};URI={API_ID}")], &[], None),
        test_certs::peer(&[], &[&format!("notebook.local;URI={API_ID}")], None),
        test_certs::peer(&[&format!("{NOTEBOOK};DNS={API_ID}")], &[], None),
        test_certs::peer(&[&format!("{NOTEBOOK},URI={API_ID}")], &[], None),
        test_certs::peer(&[], &[], Some(&format!("x\";URI={API_ID}"))),
        test_certs::peer(&[&format!("{API_ID} ")], &[&format!(" {API_ID}")], None),
    ];
    for poser in &posers {
        assert!(poser.xfcc.contains(&format!("URI={API_ID}")) || poser.xfcc.contains(API_ID));
        let mut host = connection_of(poser);
        let d = p.decide(
            &mtls(post("/api/2.0/mlflow/runs/create"), poser),
            &mut host,
            NOW,
        );
        assert_eq!(status(&d), 401, "{}", poser.xfcc);
    }
    assert_eq!(p.tally.mtls_fallbacks, posers.len() as u64);
    // The real one, listed among other SANs, still matches.
    let real = test_certs::peer(&[NOTEBOOK, API_ID], &["a.local"], Some("x"));
    let mut host = connection_of(&real);
    let f = forwarded(p.decide(&mtls(get("/x"), &real), &mut host, NOW));
    assert_eq!(header(&f, "x-auth-identity").as_deref(), Some(API_ID));
}

#[test]
fn missing_malformed_and_repeated_credentials_never_call_out() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let d = p.decide(&get("/api/2.0/mlflow/experiments/get"), &mut host, NOW);
    assert_eq!(refused(&d).reply, LocalReply::key_required());
    let bad = keyed(get("/api/2.0/mlflow/experiments/get"), "has space");
    assert_eq!(
        refused(&p.decide(&bad, &mut host, NOW)).reply,
        LocalReply::key_malformed()
    );
    let twice = RequestFacts {
        authorization: Single::Repeated,
        ..get("/api/2.0/mlflow/experiments/get")
    };
    assert_eq!(
        refused(&p.decide(&twice, &mut host, NOW)).reply,
        LocalReply::key_malformed()
    );
    assert_eq!(host.shared_reads.get(), 0);
}

#[test]
fn validated_key_is_forwarded_with_identity_and_then_cached() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = RequestFacts {
        authorization: Single::One(b"Bearer hk_good"),
        ..post("/api/2.0/mlflow/runs/search")
    };
    let f = forwarded_final(validate(
        &mut p,
        &mut host,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    ));
    assert_eq!(
        f.facts,
        facts(
            AuthPath::External,
            AuthMethod::ApiKey,
            Outcome::Allow,
            CacheUse::Miss
        )
    );
    assert_eq!(header(&f, "x-user-id").as_deref(), Some("alice"));
    assert_eq!(header(&f, "x-api-key-id").as_deref(), Some("kid"));
    assert_eq!(header(&f, "x-auth-scopes").as_deref(), Some("mlflow:read"));
    assert_eq!(header(&f, "x-auth-path").as_deref(), Some("external"));
    assert_eq!(header(&f, "x-auth-method").as_deref(), Some("api_key"));
    assert_eq!(header(&f, "x-auth-stale"), None);
    let cached = forwarded(p.decide(&req, &mut host, NOW + 299));
    assert_eq!(cached.facts.cache, CacheUse::Hit);
    assert!(matches!(
        p.decide(&req, &mut host, NOW + 300),
        Decision::Validate(_)
    ));
}

#[test]
fn method_override_headers_make_any_call_a_write() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let read_only = grant_json(r#"["mlflow:read"]"#, "null");
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_ro");
    forwarded_final(validate(&mut p, &mut host, &req, 200, &read_only));
    let overridden = RequestFacts {
        method_override: true,
        ..req
    };
    let d = p.decide(&overridden, &mut host, NOW);
    assert_eq!(refused(&d).reply, LocalReply::scope_missing("mlflow:write"));
}

#[test]
fn scope_miss_is_403_naming_the_scope() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = keyed(post("/api/2.0/mlflow/runs/log-metric"), "hk_ro");
    let d = validate(
        &mut p,
        &mut host,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    );
    let Final::Refuse(r) = d else { panic!("{d:?}") };
    assert_eq!(r.reply, LocalReply::scope_missing("mlflow:write"));
    assert_eq!(r.facts.outcome, Outcome::Status403);
}

#[test]
fn denials_are_cached_negatively() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_bad");
    let d: Decision = validate(&mut p, &mut host, &req, 401, "").into();
    assert_eq!(status(&d), 401);
    let again = p.decide(&req, &mut host, NOW + 29);
    assert_eq!(refused(&again).reply, LocalReply::key_invalid());
    assert_eq!(refused(&again).facts.cache, CacheUse::Hit);
    assert!(matches!(
        p.decide(&req, &mut host, NOW + 30),
        Decision::Validate(_)
    ));
    let other = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_other_service");
    let d: Decision = validate(&mut p, &mut host, &other, 403, "").into();
    assert_eq!(refused(&d).reply, LocalReply::forbidden());
}

#[test]
fn errors_are_not_cached_and_stale_allow_is_served_marked() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_good");
    let d: Decision = validate(&mut p, &mut host, &req, 500, "").into();
    assert_eq!(status(&d), 503);
    assert!(
        matches!(p.decide(&req, &mut host, NOW), Decision::Validate(_)),
        "errors are not cached"
    );
    forwarded_final(validate(
        &mut p,
        &mut host,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    ));
    let later = NOW + 300 + 60;
    let pend = pending(p.decide(&req, &mut host, later));
    let down = ValidationOutcome::Unavailable("down");
    let settled = p.settle(&pend, down.clone(), &host, later);
    let f = forwarded_final(p.conclude(&settled, &pend, pend.access, &host, later));
    assert_eq!(header(&f, "x-auth-stale").as_deref(), Some("1"));
    assert_eq!(f.facts.outcome, Outcome::Stale);
    assert_eq!(f.facts.cache, CacheUse::Stale);
    let too_late = NOW + 300 + 120;
    let settled = p.settle(&pend, down, &host, too_late);
    let d: Decision = p
        .conclude(&settled, &pend, pend.access, &host, too_late)
        .into();
    assert_eq!(status(&d), 503);
}

#[test]
fn key_rate_limit_is_enforced_across_cache_hits() {
    let p = policy();
    let mut host = prepared(&p);
    let mut p = p;
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_limited");
    forwarded_final(validate(
        &mut p,
        &mut host,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "2"),
    ));
    forwarded(p.decide(&req, &mut host, NOW));
    let d = p.decide(&req, &mut host, NOW);
    assert_eq!(status(&d), 429);
    assert!(refused(&d)
        .reply
        .retry_after_s
        .is_some_and(|s| (1..=3600).contains(&s)));
}

#[test]
fn two_limited_keys_never_share_a_counter() {
    // One verdict slot for both keys: they evict each other from the cache, and each has to
    // be validated again, but neither resets the other's count.
    let mut config = FilterConfig::default();
    config.cache.max_entries = 1;
    let mut p = Policy::new(config);
    let mut host = prepared(&p);
    let a = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_a");
    let b = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_b");
    let one_per_hour = grant_json(r#"["mlflow:read"]"#, "1");
    forwarded_final(validate(&mut p, &mut host, &a, 200, &one_per_hour));
    forwarded_final(validate(&mut p, &mut host, &b, 200, &one_per_hour));
    let a_again: Decision = validate(&mut p, &mut host, &a, 200, &one_per_hour).into();
    assert_eq!(status(&a_again), 429);
    let b_again: Decision = validate(&mut p, &mut host, &b, 200, &one_per_hour).into();
    assert_eq!(status(&b_again), 429);
}

#[test]
fn an_unprepared_or_failing_rate_counter_refuses_rather_than_counts_nothing() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_limited");
    let d: Decision = validate(
        &mut p,
        &mut host,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "5"),
    )
    .into();
    assert_eq!(refused(&d).reply, LocalReply::unavailable());
    assert_eq!(refused(&d).reason, "rate counter unavailable");
}

#[test]
fn auth_service_429_is_passed_on_and_not_cached() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_x");
    let pend = pending(p.decide(&req, &mut host, NOW));
    let out = interpret(Some(429), b"", Some(b"30"), NOW, "ml-platform");
    let settled = p.settle(&pend, out, &host, NOW);
    let d: Decision = p.conclude(&settled, &pend, pend.access, &host, NOW).into();
    assert_eq!(refused(&d).reply, LocalReply::rate_limited(30));
    assert!(matches!(
        p.decide(&req, &mut host, NOW),
        Decision::Validate(_)
    ));
}

#[test]
fn verdicts_are_namespaced_by_service_id() {
    let mut host = FakeEnvoy::default();
    let mut p1 = policy();
    let mut p2 = Policy::new(FilterConfig {
        service_id: "other".into(),
        ..FilterConfig::default()
    });
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_good");
    forwarded_final(validate(
        &mut p1,
        &mut host,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    ));
    assert!(matches!(
        p2.decide(&req, &mut host, NOW),
        Decision::Validate(_)
    ));
}

#[test]
fn a_repeat_key_is_answered_from_the_workers_copy_without_shared_reads() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_good");
    forwarded_final(validate(
        &mut p,
        &mut host,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    ));
    let reads = host.shared_reads.get();
    for _ in 0..10 {
        assert_eq!(
            forwarded(p.decide(&req, &mut host, NOW + 10)).facts.cache,
            CacheUse::Hit
        );
    }
    assert_eq!(
        host.shared_reads.get(),
        reads,
        "no shared-data read for a warm key"
    );
    // Another worker (a fresh policy) learns it from shared data, once.
    let mut worker2 = policy();
    forwarded(worker2.decide(&req, &mut host, NOW + 10));
    assert!(host.shared_reads.get() > reads);
    // The copy ends with the verdict's TTL.
    assert!(matches!(
        p.decide(&req, &mut host, NOW + 300),
        Decision::Validate(_)
    ));
}

const BEARER: &str =
    "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyXzEyMyIsInNjb3BlIjoibWxmbG93OnJlYWQifQ.c2ln";

fn with_jwt<'a>(req: RequestFacts<'a>, bearer: &'a str) -> RequestFacts<'a> {
    RequestFacts {
        authorization: Single::One(bearer.as_bytes()),
        ..req
    }
}

/// A payload as jwt_authn leaves it in dynamic metadata.
/// A verified payload whose claims are all strings.
fn payload(claims: &[(&str, &str)]) -> serde_json::Value {
    claims
        .iter()
        .map(|(n, v)| (n.to_string(), serde_json::Value::from(*v)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn a_verified_jwt_is_admitted_from_its_verified_claims_without_callout() {
    let mut p = policy();
    let mut host = FakeEnvoy {
        jwt_payload: Some(payload(&[("sub", "user_123"), ("scope", "mlflow:read")])),
        ..Default::default()
    };
    let req = with_jwt(get("/api/2.0/mlflow/experiments/get"), BEARER);
    let f = forwarded(p.decide(&req, &mut host, NOW));
    assert_eq!(header(&f, "x-user-id").as_deref(), Some("user_123"));
    assert_eq!(header(&f, "x-auth-scopes").as_deref(), Some("mlflow:read"));
    assert_eq!(header(&f, "x-auth-method").as_deref(), Some("jwt"));
    assert_eq!(header(&f, "x-auth-path").as_deref(), Some("external"));
    assert_eq!(header(&f, "x-api-key-id"), None);
    let write = with_jwt(post("/api/2.0/mlflow/runs/create"), BEARER);
    assert_eq!(
        refused(&p.decide(&write, &mut host, NOW)).reply,
        LocalReply::scope_missing("mlflow:write")
    );
    assert_eq!(host.shared_reads.get(), 0, "no cache, no callout");
}

#[test]
fn only_the_verified_payload_grants_scopes() {
    let mut p = policy();
    let write = with_jwt(post("/api/2.0/mlflow/runs/create"), BEARER);
    // The token's text claims mlflow:read only; the verified payload decides either way.
    for (scope, status_wanted) in [
        ("mlflow:read mlflow:write", None),
        ("mlflow:read\nmlflow:write", Some(403)),
        ("mlflow:read\tmlflow:write", Some(403)),
        ("mlflow:read", Some(403)),
    ] {
        let mut host = FakeEnvoy {
            jwt_payload: Some(payload(&[("sub", "user_123"), ("scope", scope)])),
            ..Default::default()
        };
        let d = p.decide(&write, &mut host, NOW);
        match status_wanted {
            None => {
                forwarded(d);
            }
            Some(s) => assert_eq!(status(&d), s, "{scope:?}"),
        }
    }
}

#[test]
fn an_unverified_jwt_or_unusable_claims_are_refused_without_callout() {
    let mut p = policy();
    let req = with_jwt(get("/api/2.0/mlflow/experiments/get"), BEARER);
    for jwt_payload in [
        None,
        Some(payload(&[("scope", "mlflow:read")])),
        Some(payload(&[("sub", "u\r\nx-admin: 1")])),
        Some(serde_json::json!({"sub": null, "scope": "mlflow:read"})),
        Some(serde_json::json!("not a map")),
    ] {
        let mut host = FakeEnvoy {
            jwt_payload,
            ..Default::default()
        };
        let d = p.decide(&req, &mut host, NOW);
        assert_eq!(refused(&d).reply, LocalReply::token_invalid());
        assert_eq!(refused(&d).facts.method, AuthMethod::Jwt);
        assert_eq!(host.asked.jwt_payload, 1, "sub first: nothing else is read");
    }
}

#[test]
fn an_api_key_never_asks_for_jwt_metadata() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = RequestFacts {
        authorization: Single::One(b"Bearer hk_dev_readwrite_0001"),
        ..get("/api/2.0/mlflow/experiments/get")
    };
    assert!(matches!(
        p.decide(&req, &mut host, NOW),
        Decision::Validate(_)
    ));
    assert_eq!(host.asked.jwt_payload, 0);
}

#[test]
fn callout_mode_tokens_are_validated_and_cached_apart_from_keys() {
    let mut config = FilterConfig::default();
    config.jwt.mode = JwtMode::Callout;
    let (mut p, mut host) = (Policy::new(config), FakeEnvoy::default());
    let req = with_jwt(get("/api/2.0/mlflow/experiments/get"), BEARER);
    let pend = pending(p.decide(&req, &mut host, NOW));
    assert!(matches!(pend.credential, Credential::Jwt(_)));
    let call = p.validation_call(&pend, "1.2.3.4", None, None);
    assert!(call.headers.contains(&(":path", "/api/v1/validate".into())));
    let body = grant_json(r#"["mlflow:read"]"#, "null");
    let settled = p.settle(
        &pend,
        interpret(Some(200), body.as_bytes(), None, NOW, "ml-platform"),
        &host,
        NOW,
    );
    let f = forwarded_final(p.conclude(&settled, &pend, pend.access, &host, NOW));
    assert_eq!(header(&f, "x-auth-method").as_deref(), Some("jwt"));
    assert_eq!(
        forwarded(p.decide(&req, &mut host, NOW + 1)).facts.cache,
        CacheUse::Hit
    );
    assert_eq!(host.asked.jwt_payload, 0);
    // The same bytes as an API key share nothing with the token's verdict.
    let as_key = keyed(get("/api/2.0/mlflow/experiments/get"), &BEARER[7..]);
    assert!(matches!(
        p.decide(&as_key, &mut host, NOW + 1),
        Decision::Validate(_)
    ));
}

#[test]
fn the_access_log_record_holds_facts_never_credentials() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = keyed(
        get("/api/2.0/mlflow/experiments/get"),
        "hk_secret_key_value",
    );
    let f = forwarded_final(validate(
        &mut p,
        &mut host,
        &req,
        200,
        &grant_json(r#"["mlflow:read"]"#, "null"),
    ));
    let record = access_log_record(&f.facts, f.identity.as_ref());
    let json: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"path": "external", "method": "api_key", "outcome": "allow",
                           "cache": "miss", "key_id": "kid", "user_id": "alice"})
    );
    assert!(!record.contains("hk_secret_key_value"));
}

#[test]
fn identity_facts_with_quotes_stay_valid_json_in_the_record() {
    let (mut p, mut host) = (policy(), FakeEnvoy::default());
    let req = keyed(get("/api/2.0/mlflow/experiments/get"), "hk_quoted");
    let body = r#"{"valid": true, "key_id": "k\"1\\", "user_id": "o'neil \"the\" user", "scopes": ["mlflow:read"]}"#;
    let f = forwarded_final(validate(&mut p, &mut host, &req, 200, body));
    let record = access_log_record(&f.facts, f.identity.as_ref());
    let json: serde_json::Value =
        serde_json::from_str(&record).unwrap_or_else(|e| panic!("{e}: {record}"));
    assert_eq!(json["key_id"], "k\"1\\");
    assert_eq!(json["user_id"], "o'neil \"the\" user");
}

//! Properties of the core on any input (issue 9): every parser against its promises, and the
//! whole decision, run as event scenarios against real workers, against the contract (see
//! `properties/model.rs` for what is checked at every step). The fuzz targets in `fuzz/` call
//! the same checks; these runs are bounded so the suite stays a few seconds.

mod checks;
mod model;

use base64::Engine;
use hokusai_auth_filter::core::config::CredentialTransport;
use hokusai_auth_filter::core::pairs::serialize;
use model::{Profile, Scenario};
use proptest::prelude::*;

/// `n` cases, or `PROPTEST_CASES` when set (more for a soak, fewer in a debug build).
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Header names the core reads, and some it does not.
fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(vec![
            ":method",
            ":path",
            "authorization",
            "x-api-key",
            "x-forwarded-client-cert",
            "x-user-id",
            "access-control-request-method",
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-request-id",
        ])
        .prop_map(|n| n.as_bytes().to_vec()),
        any_bytes(6),
    ]
}

/// A claim of any JSON type, as an issuer might sign it: scope strings with odd whitespace,
/// lists of them, permission maps, numbers (one of a double's length that spells a token),
/// booleans, nulls and nesting.
fn claim_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let scalar = prop_oneof![
        3 => "[ -~\t\n\r]{0,20}".prop_map(Value::from),
        2 => prop::sample::select(vec!["mlflow:read", "mlflow:write", "mlflow:read mlflow:write", "ml:write", "x mlflow:write y"]).prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => any::<i32>().prop_map(Value::from),
        1 => Just(json!(f64::from_le_bytes(*b"ml:write"))),
    ];
    scalar.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z:0-9]{0,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A pairs buffer (Envoy's header-map format) that mostly is one: a count, then lengths
/// and NUL-terminated names and values, sometimes damaged, sometimes bytes of any kind.
fn pairs_buffer() -> impl Strategy<Value = Vec<u8>> {
    let well_formed = || {
        prop::collection::vec((header_name(), any_bytes(12)), 1..6).prop_map(|pairs| {
            let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            serialize(&refs)
        })
    };
    prop_oneof![
        3 => well_formed(),
        1 => (well_formed(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(mut b, at, byte)| {
            let i = at.index(b.len());
            b[i] = byte;
            b
        }),
        1 => any_bytes(96),
    ]
}

/// A request for the scope table: mostly a real endpoint of the table, under a route prefix
/// and an API root it is served under, wildcards filled and its own method (or HEAD for a
/// GET); otherwise something near one. So both reads and writes are drawn, in the share
/// `scope_cases_reach_reads_and_writes` checks.
fn scope_request() -> impl Strategy<Value = (String, String)> {
    use hokusai_auth_filter::core::request::scope::{endpoint_table, Root, ROUTE_PREFIXES};
    let table = endpoint_table();
    let from_table = (
        0..table.len(),
        prop::sample::select(ROUTE_PREFIXES.to_vec()),
        any::<bool>(),
        "[a-z0-9._-]{1,8}(/[a-z0-9._-]{1,8}){0,2}",
        "[a-z0-9]{1,8}",
        prop::sample::select(vec![false, false, false, true]),
    )
        .prop_map(move |(i, prefix, ajax, tail, segment, head)| {
            let e = table[i];
            let root = if ajax && e.roots.includes(Root::Ajax) || !e.roots.includes(Root::Api) {
                Root::Ajax
            } else {
                Root::Api
            };
            let endpoint = e.pattern.replace("{*}", &tail).replace("{}", &segment);
            let method = match e.method.as_str() {
                "GET" if head => "HEAD",
                m => m,
            };
            (
                method.to_string(),
                format!("{prefix}{}{endpoint}", root.as_str()),
            )
        });
    let near = (
        prop_oneof![
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "get"])
                .prop_map(String::from),
            "[ -~]{0,6}",
        ],
        prop::sample::select(vec![
            "/api/2.0/mlflow/",
            "/ajax-api/2.0/mlflow/",
            "/api/3.0/mlflow/",
            "/api/2.0/mlflow-artifacts/",
            "/api/mlflow/api/2.0/mlflow/",
            "/",
        ]),
        "([a-z0-9._-]{0,10}/?){0,4}",
    )
        .prop_map(|(method, prefix, rest)| (method, format!("{prefix}{rest}")));
    prop_oneof![3 => from_table, 1 => near]
}

fn bearer_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "(?i:bearer)[ \t]{0,3}[!-~]{0,24}[ \t]{0,2}".prop_map(String::into_bytes),
        "[ \t]{0,2}(Basic|Bearer|Token)[ \t][ -~]{0,12}".prop_map(String::into_bytes),
        jwt_like().prop_map(|t| format!("Bearer {t}").into_bytes()),
        any_bytes(24),
    ]
}

fn api_key_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ \t]{0,2}[!-~]{0,30}[ \t]{0,2}".prop_map(String::into_bytes),
        "[!-~]{250,260}".prop_map(String::into_bytes),
        any_bytes(24),
    ]
}

/// Three dot-separated segments, the first a base64url JSON header of some kind.
fn jwt_like() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        Just(r#"{"alg":"RS256","typ":"JWT"}"#.to_string()),
        Just(r#"{"alg":"none"}"#.to_string()),
        Just(r#"{"alg":""}"#.to_string()),
        Just(r#"{"alg":5}"#.to_string()),
        Just(r#"{"typ":"JWT"}"#.to_string()),
        Just(r#"["RS256"]"#.to_string()),
        "[ -~]{0,16}",
    ];
    let segment = "[A-Za-z0-9_-]{0,12}";
    (
        header,
        segment,
        segment,
        prop::option::of("[.A-Za-z0-9_+-]{0,4}"),
    )
        .prop_map(|(h, p, s, extra)| {
            format!(
                "{}.{p}.{s}{}",
                b64url(h.as_bytes()),
                extra.unwrap_or_default()
            )
        })
}

/// XFCC text around `Cert=` fields: real and imitated fields, quotes, other fields.
fn xfcc_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("Cert=\"".to_string()),
        Just("\"".to_string()),
        Just(";".to_string()),
        Just(",".to_string()),
        "(Hash|URI|DNS|Subject|By)=[A-Za-z0-9:/._%-]{0,12}".prop_map(String::from),
        "[ -~]{0,12}".prop_map(String::from),
        Just(format!("Cert=\"{}\"", checks::percent_encode(FIXTURE_PEM))),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

const FIXTURE_PEM: &str = include_str!("../../src/core/identity/testdata/multi-san.crt");
const API_ID: &str = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";

fn fixture_der() -> Vec<u8> {
    let body: String = FIXTURE_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// A SAN or CN that may hold an allow-listed id amid XFCC syntax, or be one exactly.
fn identity_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        ";", ",", "\"", "=", "URI=", "DNS=", "Cert=", "Hash=", "By=", "Subject=", " ", "\\",
    ]);
    prop_oneof![
        Just(API_ID.to_string()),
        Just("hokusai-api-client".to_string()),
        (special.clone(), special, "[ -~]{0,6}").prop_map(|(a, b, x)| format!("{x}{a}{API_ID}{b}")),
        "[ -~]{0,16}".prop_map(String::from),
    ]
}

/// A peer certificate with these SANs and CN, minted now (the key is thrown away).
fn mint(uris: &[String], dns: &[String], cn: Option<&str>) -> (String, Vec<u8>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let ia5 = |s: &String| s.clone().try_into().unwrap();
    params.subject_alt_names = uris
        .iter()
        .map(|u| rcgen::SanType::URI(ia5(u)))
        .chain(dns.iter().map(|d| rcgen::SanType::DnsName(ia5(d))))
        .collect();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), cert.der().to_vec())
}

/// Runs a scenario; a broken promise fails the case with the scenario spelled out.
fn run_reported(bytes: &[u8], profile: Profile) -> Result<(), TestCaseError> {
    let scenario = Scenario::from_bytes(bytes, profile);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model::run(&scenario)));
    outcome.map(|_| ()).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("{message}\nin {scenario:#?}"))
    })
}

/// `n` values of `strategy`, drawn the way proptest draws them.
fn draw<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect()
}

/// `core::pairs`: proxy-wasm's pairs format.
mod pairs {
    use super::*;

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn header_map_reads_the_pairs_format(bytes in pairs_buffer()) {
            checks::pairs(&bytes);
        }

        #[test]
        fn header_map_round_trips_and_refuses_damage(
            pairs in prop::collection::vec((any_bytes(8), any_bytes(8)), 0..8),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let mut bytes = serialize(&refs);
            checks::pairs(&bytes);
            prop_assert!(hokusai_auth_filter::core::pairs::HeaderMap::parse(&bytes).is_some());
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = byte;
                checks::pairs(&bytes);
                bytes.truncate(i);
                checks::pairs(&bytes);
            }
        }
    }

    /// The pairs-format property sees buffers that parse, with headers in them, and ones that
    /// do not: the plain byte generator it once had almost never drew a header.
    #[test]
    fn pairs_buffers_reach_headers_and_damage() {
        use hokusai_auth_filter::core::pairs::HeaderMap;
        let drawn = draw(pairs_buffer(), 4000);
        let with_headers = drawn
            .iter()
            .filter(|b| HeaderMap::parse(b).is_some_and(|m| !m.is_empty()))
            .count();
        let refused = drawn
            .iter()
            .filter(|b| HeaderMap::parse(b).is_none())
            .count();
        println!(
            "{with_headers} with headers, {refused} refused, of {}",
            drawn.len()
        );
        assert!(
            with_headers * 2 >= drawn.len(),
            "{with_headers} with headers"
        );
        assert!(refused * 10 >= drawn.len(), "{refused} refused");
    }
}

/// `core::config`: the plugin configuration.
mod config {
    use super::*;

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn configs_load_in_range_or_name_the_field(
            fields in prop::collection::vec((
                prop::sample::select(vec![
                    "auth_cluster", "auth_authority", "validate_path", "service_id", "timeout_ms",
                    "max_pending_callouts", "credential_transport", "auth_service_token_env",
                    "exempt_paths", "cache", "internal", "scopes", "jwt", "testing", "timeout",
                ]),
                prop_oneof![
                    Just(serde_json::json!(null)),
                    any::<i64>().prop_map(serde_json::Value::from),
                    (0u64..70_000).prop_map(serde_json::Value::from),
                    "[ -~]{0,8}".prop_map(serde_json::Value::from),
                    "/[!-~]{0,8}".prop_map(serde_json::Value::from),
                    Just(serde_json::json!(["/health", "/x"])),
                    Just(serde_json::json!({"ttl_s": 5, "max_entries": 0})),
                    Just(serde_json::json!({"allowed_identities": ["a"], "scopes": []})),
                    Just(serde_json::json!({"read": ["r"], "write": ["w"]})),
                    Just(serde_json::json!({"mode": "callout"})),
                    Just(serde_json::json!("bearer")),
                ],
            ), 0..6),
            raw in any_bytes(24),
        ) {
            let object: serde_json::Map<String, serde_json::Value> =
                fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            checks::config(serde_json::Value::Object(object).to_string().as_bytes());
            checks::config(&raw);
        }
    }
}

/// The `hokusai-rfc3339` crate: the auth service's `expires_at`.
mod rfc3339 {
    use super::*;

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn timestamps_mean_what_the_reference_says(
            (year, month, day) in (0i64..=9999, 1u32..=12, 1u32..=31),
            (hour, minute, second) in (0u32..=23, 0u32..=59, 0u32..=60),
            frac in prop::option::of("[0-9]{1,9}"),
            offset in prop_oneof![
                Just(String::new()), Just("Z".to_string()), Just("z".to_string()),
                (any::<bool>(), 0u32..=23, 0u32..=59).prop_map(|(plus, h, m)| {
                    format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })
                }),
            ],
            separator in prop::sample::select(vec!['T', 't', ' ']),
            garbage in "[0-9T:. +Zz-]{0,28}",
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{year:04}-{month:02}-{day:02}{separator}{hour:02}:{minute:02}:{second:02}{frac}{offset}");
            checks::rfc3339(&text);
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            if day <= days[month as usize - 1] {
                prop_assert!(hokusai_rfc3339::parse(&text).is_some(), "{text}");
            }
            checks::rfc3339(&garbage);
        }
    }
}

/// `core::request`: the request's facts, its credential, the scope it needs.
mod request {
    use super::*;

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn request_facts_are_what_the_headers_say(
            pairs in prop::collection::vec((header_name(), any_bytes(12)), 0..10),
            raw in pairs_buffer(),
        ) {
            let refs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            checks::request_facts(&serialize(&refs));
            checks::request_facts(&raw);
        }

        #[test]
        fn credentials_are_found_as_the_contract_says(
            auth in prop::collection::vec(bearer_value(), 0..3),
            keys in prop::collection::vec(api_key_value(), 0..3),
        ) {
            let auth: Vec<&[u8]> = auth.iter().map(Vec::as_slice).collect();
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            checks::request_credential(&auth, &keys);
        }

        #[test]
        fn jwt_shape_is_three_segments_and_an_alg(value in prop_oneof![
            jwt_like().prop_map(String::into_bytes),
            any_bytes(32),
        ]) {
            checks::request_jwt_shape(&value);
        }

        #[test]
        fn scope_ignores_query_and_fragment(
            (method, path) in scope_request(),
            query in prop::option::of("[ -~]{0,12}"),
            suffix in "[ -~]{0,12}",
        ) {
            let path = match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            checks::request_scope(&method, &path, &suffix);
        }
    }

    /// Issue 7: `PUT .../artifacts/<run>/artifacts/get_model.pkl` was a read while file names
    /// decided read/write.
    #[test]
    fn artifact_routes_read_only_on_get_and_head() {
        proptest!(cases(256), |(
            method in prop::sample::select(vec!["PUT", "POST", "DELETE", "PATCH"]),
            rest in "([a-z0-9._-]{0,10}/){0,4}(get|list|search|download)[a-z0-9._-]{0,8}",
        )| {
            checks::request_artifact_scope(method, &rest);
        });
    }

    /// The scope property sees reads as well as writes: a generator that drew only unknown
    /// paths (all writes) once let it pass without checking a single read.
    #[test]
    fn scope_cases_reach_reads_and_writes() {
        use hokusai_auth_filter::core::request::scope::{required_access, Access};
        let drawn = draw(scope_request(), 4000);
        let reads = drawn
            .iter()
            .filter(|(m, p)| required_access(m, p) == Access::Read)
            .count();
        println!("{reads} reads of {}", drawn.len());
        assert!(
            reads * 5 >= drawn.len(),
            "only {reads} reads in {}",
            drawn.len()
        );
        assert!(
            (drawn.len() - reads) * 5 >= drawn.len(),
            "only {reads} writes"
        );
    }
}

/// `core::identity`: XFCC, the peer certificate and its allow-list match, JWT claims.
mod identity {
    use super::*;

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn xfcc_finds_exactly_the_cert_fields(text in xfcc_text()) {
            checks::identity_xfcc(text.as_bytes());
        }

        #[test]
        fn xfcc_judges_any_bytes(bytes in prop_oneof![
            any_bytes(64),
            "[A-Za-z=;,\"\\\\ ]{0,32}".prop_map(String::into_bytes),
        ]) {
            checks::identity_xfcc(&bytes);
        }

        #[test]
        fn certificates_survive_damage(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut der = fixture_der();
            for (at, byte) in flips {
                let i = at.index(der.len());
                der[i] = byte;
            }
            checks::identity_certificate(&der);
            der.truncate(cut.index(der.len()));
            checks::identity_certificate(&der);
        }

        #[test]
        fn jwt_claims_are_the_verified_payloads(
            sub in claim_value(),
            scope in claim_value(),
            scopes in claim_value(),
            present in (any::<bool>(), any::<bool>(), any::<bool>()),
            raw in any_bytes(32),
        ) {
            let mut payload = serde_json::Map::new();
            for (name, value, here) in [("sub", sub, present.0), ("scope", scope, present.1), ("scopes", scopes, present.2)] {
                if here {
                    payload.insert(name.into(), value);
                }
            }
            checks::identity_jwt_claims(serde_json::Value::Object(payload).to_string().as_bytes());
            checks::identity_jwt_claims(&raw);
        }
    }

    proptest! {
        // Each case mints a certificate: fewer cases, each worth more.
        #![proptest_config(cases(192))]

        /// A certificate whose SANs and CN are any ASCII, allow-listed ids amid XFCC syntax
        /// included, rendered into XFCC as Envoy 1.40 does (SANs unescaped): its identity is
        /// allow-listed only when one SAN, or its one CN, equals an entry exactly, and only with
        /// the connection's own digest.
        #[test]
        fn an_identity_matches_only_when_a_san_equals_an_entry_exactly(
            uris in prop::collection::vec(identity_text(), 0..3),
            dns in prop::collection::vec(identity_text(), 0..3),
            cn in prop::option::of(identity_text()),
            allowed in prop::collection::vec(prop_oneof![
                Just(API_ID.to_string()),
                Just("hokusai-api-client".to_string()),
                identity_text(),
            ], 1..3),
            wrong_digest in any::<bool>(),
        ) {
            let (pem, der) = mint(&uris, &dns, cn.as_deref());
            let mut xfcc = format!("Hash=00;Cert=\"{}\"", checks::percent_encode(&pem));
            for uri in &uris {
                xfcc.push_str(&format!(";URI={uri}"));
            }
            for name in &dns {
                xfcc.push_str(&format!(";DNS={name}"));
            }
            let mut digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&der).into();
            if wrong_digest {
                digest[0] ^= 1;
            }
            let cert = checks::identity_allow_list(xfcc.as_bytes(), &digest, &allowed);
            prop_assert_eq!(cert.is_none(), wrong_digest);
            if let Some(cert) = cert {
                prop_assert_eq!(&cert.uris, &uris);
                prop_assert_eq!(&cert.dns, &dns);
                let exact = allowed.iter().any(|a| {
                    uris.contains(a) || dns.contains(a) || cn.as_deref() == Some(a.as_str())
                });
                prop_assert_eq!(cert.allowed_as(&allowed).is_some(), exact);
            }
        }
    }
}

/// `core::auth_service`: the validation call and its reply.
mod auth_service {
    use super::*;

    proptest! {
        #![proptest_config(cases(1024))]

        #[test]
        fn callouts_carry_exactly_the_credential(
            transport in prop::sample::select(vec![
                CredentialTransport::Body, CredentialTransport::Bearer, CredentialTransport::Both,
            ]),
            jwt_callout in any::<bool>(),
            authorization in bearer_value(),
            source in prop_oneof![
                Just("203.0.113.7:40000".to_string()), Just("[::1]:8080".to_string()), "\\PC{0,16}",
            ],
            request_id in prop::option::of("[ -~]{0,12}"),
            service_token in prop::option::of("[!-~]{1,12}"),
        ) {
            checks::auth_service_call(
                transport, jwt_callout, &authorization, &source,
                request_id.as_deref(), service_token.as_deref(),
            );
        }

        #[test]
        fn auth_replies_map_as_the_contract_says(
            status in prop_oneof![
                Just(None),
                prop::sample::select(vec![200u16, 200, 401, 403, 429, 500, 503, 404]).prop_map(Some),
                any::<u16>().prop_map(Some),
            ],
            valid in prop_oneof![Just(None), any::<bool>().prop_map(Some)],
            key_id in prop::option::of("[ -~]{0,10}|\\PC{0,4}"),
            user_id in prop::option::of("[ -~]{0,10}|[a-z]{1,4}[\\x00-\\x1f][a-z]{0,3}"),
            scopes in prop::option::of(prop::collection::vec("[ -~]{0,10}", 0..3)),
            expires in prop::option::of("20[0-9]{2}-(0[1-9]|1[0-2])-[0-2][1-9]T[01][0-9]:[0-5][0-9]:[0-5][0-9]Z|[ -~]{0,6}"),
            limit in prop::option::of(any::<i64>()),
            shape in 0..4u8,
            raw in any_bytes(32),
            retry_after in prop::option::of(any_bytes(6)),
        ) {
            let fields = serde_json::json!({
                "valid": valid, "key_id": key_id, "user_id": user_id, "scopes": scopes,
                "expires_at": expires, "rate_limit_per_hour": limit,
            });
            let body = match shape {
                0 => fields.to_string().into_bytes(),
                1 => serde_json::json!([valid, key_id, user_id, scopes, limit, expires]).to_string().into_bytes(),
                2 => {
                    let mut map = fields.as_object().unwrap().clone();
                    map.retain(|_, v| !v.is_null());
                    serde_json::Value::Object(map).to_string().into_bytes()
                }
                _ => raw,
            };
            checks::auth_service_reply(status, &body, retry_after.as_deref(), model::T0_MS / 1000);
        }
    }
}

/// `core::policy`: one request's decision, as scenarios leaning to it (`Profile::Policy`).
mod policy {
    use super::*;

    proptest! {
        #![proptest_config(cases(6000))]

        /// One worker, rich headers and replies.
        #[test]
        fn no_forward_without_a_reason(bytes in any_bytes(1536)) {
            run_reported(&bytes, Profile::Policy)?;
        }
    }
}

/// `core::worker`: the state machine around it (`Profile::Worker`).
mod worker {
    use super::*;

    proptest! {
        #![proptest_config(cases(6000))]

        /// Two workers, streams going away, clock jumps, failing dispatches and store.
        #[test]
        fn no_forward_without_a_reason(bytes in any_bytes(1536)) {
            run_reported(&bytes, Profile::Worker)?;
        }
    }
}

/// The scenarios reach every kind of decision: without this, the properties above could pass
/// on inputs that never get past a 401.
#[test]
fn scenarios_reach_every_kind_of_decision() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut total = model::Stats::default();
    for i in 0..1500 {
        let len = 200 + (i % 7) * 200;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let profile = if i % 2 == 0 {
            Profile::Policy
        } else {
            Profile::Worker
        };
        let s = model::run(&Scenario::from_bytes(&bytes, profile));
        total.exempt += s.exempt;
        total.internal += s.internal;
        total.external += s.external;
        total.stale += s.stale;
        total.local_jwt += s.local_jwt;
        total.refusals += s.refusals;
        total.waits += s.waits;
        total.retries += s.retries;
        total.resolved += s.resolved;
        total.gone_while_waiting += s.gone_while_waiting;
        total.cap_hits += s.cap_hits;
    }
    println!("{total:?}");
    let reached = [
        ("exempt", total.exempt),
        ("internal", total.internal),
        ("external", total.external),
        ("stale", total.stale),
        ("local_jwt", total.local_jwt),
        ("refusals", total.refusals),
        ("waits", total.waits),
        ("retries", total.retries),
        ("resolved", total.resolved),
        ("gone_while_waiting", total.gone_while_waiting),
        ("cap_hits", total.cap_hits),
    ];
    for (what, count) in reached {
        assert!(count >= 5, "scenarios barely reach {what}: {total:?}");
    }
}

/// Inputs the fuzz targets and properties found; each failed before its fix.
mod regressions {
    use super::checks;
    use super::model::{self, Event, Reply, Request, Scenario};

    fn keyed(key: &str) -> Event {
        Event::Request {
            worker: 0,
            request: Request::with(&[
                (":method", "GET"),
                (":path", "/api/2.0/mlflow/experiments/get"),
                ("x-api-key", key),
            ]),
        }
    }

    /// serde read `[true, "k", "u", [...], null, null]` as a reply object: an allow.
    #[test]
    fn an_array_reply_is_no_allow() {
        let array = r#"[true,"key-arr","dev-user-arr",["mlflow:read","mlflow:write"],null,null]"#;
        let reply = Event::Reply {
            pick: 0,
            reply: Reply::with(Some(200), array),
        };
        let stats = model::run(&Scenario::with(vec![keyed("hk_dev_readwrite_0001"), reply]));
        assert_eq!((stats.external, stats.refusals), (0, 1));
    }

    /// The same serde leniency in the JOSE header and the claims.
    #[test]
    fn array_headers_and_claims_are_not_a_jwt() {
        checks::request_jwt_shape(b"WyJSUzI1NiJd.eyJzdWIiOiJ1In0.c2ln");
        // {"alg": "RS256", "typ": "K\xd7..."}: an ignored field with invalid UTF-8 (fuzz).
        checks::request_jwt_shape(b"eyJhbGciOiAiUlMyNTYiLCAidHlwIjogIkvXVCJ9.eyJzdWIiOiJ1In0.c2ln");
    }

    /// serde_json skips ignored strings without checking their UTF-8; the fields we use are
    /// checked, so such a reply still counts (the checks read the body the same way).
    #[test]
    fn ignored_fields_may_hold_invalid_utf8() {
        let body = b"{\"key_id\":\"k\",\"user_id\":\"u\",\"note\":\"ml-\xc1\"}";
        checks::auth_service_reply(Some(200), body, None, 0);
        // Found by the fuzz targets: invalid UTF-8 in a member that is used (`alg`), which
        // must not count.
        checks::request_jwt_shape(b"eyJhbGciOiAibm7uZSJ9.eZZZZZZZiOiAidSJ9.");
    }

    /// `valid: null`, or a `service_id` that is not ours or not a string, is no allow.
    #[test]
    fn replies_with_odd_valid_or_service_id_are_no_allow() {
        for body in [
            &br#"{"valid":null,"key_id":"k","user_id":"u"}"#[..],
            br#"{"key_id":"k","user_id":"u","service_id":null}"#,
            br#"{"key_id":"k","user_id":"u","service_id":"other"}"#,
        ] {
            checks::auth_service_reply(Some(200), body, None, 0);
        }
    }

    /// `{"": 1}` is refused naming the field it has: the empty one.
    #[test]
    fn an_empty_field_name_is_refused() {
        checks::config(br#"{"": 1}"#);
        let error = hokusai_auth_filter::core::config::FilterConfig::parse(br#"{"": 1}"#);
        assert!(error.is_err());
    }

    /// The leader goes, then the last waiter: nothing is sent again (a version that re-sent
    /// a leader's callout from the root once did, for nobody). Envoy keeps the first call
    /// open, and the worker with it.
    #[test]
    fn no_callout_is_sent_for_nobody() {
        let scenario = Scenario::with(vec![
            keyed("hk_dev_readwrite_0001"),
            keyed("hk_dev_readwrite_0001"),
            Event::Gone { pick: 0 },
            Event::Gone { pick: 0 },
            Event::Tick { worker: 0 },
        ]);
        assert_eq!(model::run(&scenario).callouts, 1);
    }

    /// After the wall clock steps back an hour, a callout sent again (the retry after a
    /// reset) must not get what is left of its deadline on the new clock (about an hour):
    /// flow re-anchors the deadline at most `timeout_ms` ahead whenever it dispatches again.
    #[test]
    fn callouts_never_outlast_timeout_ms() {
        let scenario = Scenario::with(vec![
            keyed("hk_dev_readwrite_0001"),
            Event::WallJump { ms: -3_600_000 },
            Event::Reply {
                pick: 0,
                reply: model::Reply {
                    status: None,
                    body: Vec::new(),
                    retry_after: None,
                },
            },
        ]);
        let stats = model::run(&scenario);
        assert_eq!(stats.retries, 1, "{stats:?}");
        assert!(
            stats.max_timeout_ms <= scenario.config.timeout_ms,
            "{stats:?}"
        );
    }
}

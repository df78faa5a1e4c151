//! The world around the filter's workers, modelled so the whole decision can run on any
//! input: Envoy (request headers, its word on the peer certificate and on jwt_authn's
//! verification, shared data, callouts made from the root context and their timeouts), the
//! auth service (whatever reply the input says) and the clocks (Envoy's timers, and the wall
//! clock the filter reads, which may jump). A [`Scenario`] is read from bytes with `arbitrary`
//! (cargo-fuzz hands over the bytes; proptest draws them), run against real [`Worker`]s, and
//! every step is held to the contract:
//!
//! - every forward is exempt; or internal (Envoy said the peer is verified, and the
//!   certificate whose digest Envoy gave, carried in the XFCC, has a SAN or a lone CN equal
//!   to an allow-listed identity); or carries a verdict the auth service gave as allow for
//!   that very credential, fresh within `ttl_s` or stale within `stale_if_error_s` (and
//!   marked stale); or a JWT whose `sub` and scopes are those of the payload jwt_authn
//!   verified. Its scopes grant what the request needs, and its identity headers carry no
//!   control characters;
//! - a missing, malformed or repeated credential never reaches a callout, and a callout carries
//!   exactly the credential its request presented;
//! - a worker never has more than `max_pending_callouts` callouts in flight;
//! - every request that waits gets exactly one decision, unless it goes away first;
//! - the auth service's statuses map as contract section 5 says; the counts match the events.

use super::checks::{
    percent_encode, read_object, reference_bearer, reference_credential, reference_jwt_claims,
    Kind, Malformed, SaidReply,
};
use arbitrary::Unstructured;
use base64::Engine;
use hokusai_auth_filter::core::auth_service::reply::CalloutReply;
use hokusai_auth_filter::core::config::{CredentialTransport, FilterConfig, JwtMode};
use hokusai_auth_filter::core::host::fake::{Asked, FakeEnvoy, MemoryStore, Sent};
use hokusai_auth_filter::core::host::{Callout, CalloutToken};
use hokusai_auth_filter::core::output::labels::{AuthMethod, AuthPath, CacheUse, Outcome};
use hokusai_auth_filter::core::pairs::{self, HeaderMap};
use hokusai_auth_filter::core::policy::{Final, Forward, Refusal};
use hokusai_auth_filter::core::request::facts::{RequestFacts, METHOD_OVERRIDE_HEADERS};
use hokusai_auth_filter::core::request::scope::{required_access, Access};
use hokusai_auth_filter::core::worker::{Resolved, Step, StreamId, Worker};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::OnceLock;

/// `MODEL_TRACE=1` prints every step of a run, to follow a failing scenario.
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("MODEL_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// 2026-11-23T12:00:00Z, in ms.
pub const T0_MS: i64 = 1_795_435_200_000;
const MAX_EVENTS: usize = 48;
pub const API_URI: &str = "spiffe://hokusai.internal/ns/development/sa/hokusai-api";
const BATCH_URI: &str = "spiffe://hokusai.internal/ns/development/sa/batch";
const CN_ONLY: &str = "hokusai-cn-service";
const NOTEBOOK_URI: &str = "spiffe://hokusai.internal/ns/development/sa/notebook";
const SERVICE_TOKEN: &str = "svc-token-1";

/// A peer certificate (its public half, in tests/properties/certs/ or the core's testdata)
/// and what it holds, as the model knows it without parsing it.
struct PeerFixture {
    pem: &'static str,
    uris: &'static [&'static str],
    dns: &'static [&'static str],
    cns: &'static [&'static str],
    /// Envoy's RFC 2253 rendering, as in XFCC `Subject=` (before quoting).
    subject: &'static str,
}

const PEERS: [PeerFixture; 8] = [
    PeerFixture {
        pem: include_str!("certs/api.crt"),
        uris: &[API_URI],
        dns: &[],
        cns: &["hokusai-api-client"],
        subject: "CN=hokusai-api-client",
    },
    PeerFixture {
        pem: include_str!("../../src/core/identity/testdata/multi-san.crt"),
        uris: &["spiffe://hokusai.internal/ns/development/sa/first", BATCH_URI],
        dns: &["batch.hokusai.internal"],
        cns: &["hokusai-batch-runner"],
        subject: "CN=hokusai-batch-runner,O=Hokusai",
    },
    PeerFixture {
        pem: include_str!("certs/notebook.crt"),
        uris: &[NOTEBOOK_URI],
        dns: &[],
        cns: &["hokusai-notebook"],
        subject: "CN=hokusai-notebook",
    },
    PeerFixture {
        pem: include_str!("certs/cn-only.crt"),
        uris: &[],
        dns: &[],
        cns: &[CN_ONLY],
        subject: "CN=hokusai-cn-service,O=Hokusai",
    },
    PeerFixture {
        pem: include_str!("certs/poser-uri.crt"),
        uris: &["spiffe://hokusai.internal/ns/development/sa/notebook;URI=spiffe://hokusai.internal/ns/development/sa/hokusai-api"],
        dns: &[],
        cns: &["hokusai-notebook"],
        subject: "CN=hokusai-notebook",
    },
    PeerFixture {
        pem: include_str!("certs/poser-dns.crt"),
        uris: &[NOTEBOOK_URI],
        dns: &["notebook.local;URI=spiffe://hokusai.internal/ns/development/sa/hokusai-api"],
        cns: &["hokusai-notebook"],
        subject: "CN=hokusai-notebook",
    },
    PeerFixture {
        pem: include_str!("certs/poser-cn.crt"),
        uris: &[NOTEBOOK_URI],
        dns: &[],
        cns: &["x\";URI=spiffe://hokusai.internal/ns/development/sa/hokusai-api"],
        subject: "CN=x\\\"\\;URI=spiffe://hokusai.internal/ns/development/sa/hokusai-api",
    },
    PeerFixture {
        pem: include_str!("certs/two-cns.crt"),
        uris: &[],
        dns: &[],
        cns: &["hokusai-cn-service", "hokusai-notebook"],
        subject: "CN=hokusai-cn-service,CN=hokusai-notebook",
    },
];

/// A fixture as Envoy presents it to the filter.
pub struct Peer {
    /// `connection.sha256_peer_certificate_digest`.
    pub digest: Vec<u8>,
    /// `x-forwarded-client-cert` as SANITIZE_SET writes it (SANs unescaped).
    pub xfcc: Vec<u8>,
    fixture: &'static PeerFixture,
}

impl Peer {
    fn of(fixture: &'static PeerFixture) -> Peer {
        let body: String = fixture
            .pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("a PEM fixture");
        let digest: String = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let cert_field = percent_encode(fixture.pem);
        // Envoy quotes the subject as it is: RFC 2253 has escaped its specials already.
        let mut xfcc = format!(
            "Hash={digest};Cert=\"{cert_field}\";Subject=\"{}\"",
            fixture.subject
        );
        for uri in fixture.uris {
            xfcc.push_str(&format!(";URI={uri}"));
        }
        for dns in fixture.dns {
            xfcc.push_str(&format!(";DNS={dns}"));
        }
        Peer {
            digest: digest.into_bytes(),
            xfcc: xfcc.into_bytes(),
            fixture,
        }
    }

    /// The certificate's own identities: every SAN, and its CN when it has only one.
    fn identities(&self) -> impl Iterator<Item = &'static str> {
        let f = self.fixture;
        let cn = if f.cns.len() == 1 { f.cns } else { &[] };
        f.uris.iter().chain(f.dns).chain(cn).copied()
    }
}

/// Which part of the input space a scenario leans towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One worker, rich request headers and replies: the policy (one request's decision).
    Policy,
    /// Two workers on one shared store, requests going away, clock jumps, refused dispatches,
    /// failing shared data: the worker (the state machine around the decision).
    Worker,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub config: FilterConfig,
    pub workers: usize,
    pub service_token: Option<String>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone)]
pub enum Event {
    Request {
        worker: usize,
        request: Request,
    },
    /// The auth service answers one of the callouts in flight (`pick` chooses which; past the
    /// end, a token Envoy no longer knows).
    Reply {
        pick: usize,
        reply: Reply,
    },
    /// A request's stream ends or is reset. Envoy makes every callout from the root context,
    /// so the stream's callout, if any, goes on until its reply or timeout.
    Gone {
        pick: usize,
    },
    Tick {
        worker: usize,
    },
    /// Time passes; Envoy times out the callouts due on the way.
    Advance {
        ms: i64,
    },
    /// The wall clock the filter reads jumps (NTP); Envoy's timers do not.
    WallJump {
        ms: i64,
    },
    RefuseDispatch(bool),
    StoreFails(bool),
}

#[derive(Clone)]
pub struct Request {
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// The host's header buffer, when it is not the serialization of `headers`.
    pub raw: Option<Vec<u8>>,
    /// `connection.mtls`.
    pub mtls: bool,
    /// The connection's peer certificate (an index into the pool's peers), and the digest
    /// Envoy says it has (usually that certificate's own).
    pub peer: usize,
    pub digest: Option<Vec<u8>>,
    pub jwt: Subject,
    pub source: String,
}

/// The payload jwt_authn's metadata holds for the request.
#[derive(Clone)]
pub enum Subject {
    Unverified,
    /// The request's own bearer token's payload.
    TokensOwn,
    /// Another payload (pairs-serialized), maybe damaged: the filter must take it as it is.
    Other(Vec<u8>),
}

#[derive(Clone)]
pub struct Reply {
    pub status: Option<u16>,
    pub body: Vec<u8>,
    pub retry_after: Option<Vec<u8>>,
}

/// Bytes as an escaped string, for failure reports a person can read.
struct Shown<'a>(&'a [u8]);

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<_> = self
            .headers
            .iter()
            .map(|(n, v)| (Shown(n), Shown(v)))
            .collect();
        f.debug_struct("Request")
            .field("headers", &headers)
            .field("raw", &self.raw.as_deref().map(Shown))
            .field("mtls", &self.mtls)
            .field("peer", &self.peer)
            .field("digest", &self.digest.as_deref().map(Shown))
            .field("jwt", &self.jwt)
            .field("source", &self.source)
            .finish()
    }
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Unverified => f.write_str("Unverified"),
            Subject::TokensOwn => f.write_str("TokensOwn"),
            Subject::Other(bytes) => write!(f, "Other({:?})", Shown(bytes)),
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("body", &Shown(&self.body))
            .field("retry_after", &self.retry_after.as_deref().map(Shown))
            .finish()
    }
}

impl Request {
    /// A plain-HTTP request with these headers, for hand-written scenarios.
    pub fn with(headers: &[(&str, &str)]) -> Self {
        Request {
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            raw: None,
            mtls: false,
            peer: 0,
            digest: None,
            jwt: Subject::Unverified,
            source: "203.0.113.7:40000".into(),
        }
    }
}

impl Reply {
    pub fn with(status: Option<u16>, body: &str) -> Self {
        Reply {
            status,
            body: body.as_bytes().to_vec(),
            retry_after: None,
        }
    }
}

impl Scenario {
    /// The configuration scenarios start from, with these events.
    pub fn with(events: Vec<Event>) -> Self {
        let mut config = FilterConfig::default();
        config.internal.allowed_identities =
            [API_URI, BATCH_URI, CN_ONLY].map(String::from).to_vec();
        Scenario {
            config,
            workers: 1,
            service_token: None,
            events,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Inputs: real-looking values, near misses, and anything at all.

struct Pools {
    methods: Vec<Vec<u8>>,
    paths: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
    authorizations: Vec<Vec<u8>>,
    peers: Vec<Peer>,
    /// XFCC values Envoy would never write.
    odd_xfccs: Vec<Vec<u8>>,
    ok_bodies: Vec<Vec<u8>>,
    other_bodies: Vec<Vec<u8>>,
    payloads: Vec<Vec<u8>>,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn bytes(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// The dev auth service's allow reply for a key.
fn dev_allow(key_id: &str, user: &str, scopes: &str, limit: &str, expires: &str) -> String {
    format!(
        r#"{{"valid":true,"key_id":"{key_id}","user_id":"{user}","service_id":"ml-platform","scopes":{scopes},"rate_limit_per_hour":{limit},"expires_at":{expires}}}"#
    )
}

fn pools() -> &'static Pools {
    static POOLS: OnceLock<Pools> = OnceLock::new();
    POOLS.get_or_init(|| {
        let rs256 = b64(r#"{"alg":"RS256","typ":"JWT"}"#);
        let none = b64(r#"{"alg":"none"}"#);
        let jwts: Vec<String> = [
            r#"{"sub":"user-1","scope":"mlflow:read mlflow:write"}"#,
            r#"{"sub":"user-2","scopes":["mlflow:read"]}"#,
            r#"{"sub":"user-3"}"#,
            r#"{"sub":"u\r\nx-admin: 1","scope":"mlflow:write"}"#,
            r#"{"scope":"mlflow:write"}"#,
        ]
        .iter()
        .map(|p| format!("{rs256}.{}.c2ln", b64(p)))
        .chain([format!("{none}.{}.", b64(r#"{"sub":"user-1"}"#))])
        .collect();
        let mut authorizations = bytes(&[
            "Bearer hk_dev_readwrite_0001",
            "bearer   hk_dev_readonly_0002 ",
            "BEARER\thk_dev_limited_0004",
            "Basic dTpw",
            "Bearer",
            "Bearer a b",
            "Bearer hk\u{7f}",
        ]);
        authorizations.extend(jwts.iter().map(|t| format!("Bearer {t}").into_bytes()));
        let odd_xfccs = vec![
            format!("Hash=1a2b;Subject=\"CN=hokusai-api-client\";URI={API_URI}"),
            format!("URI=spiffe://other,URI={API_URI}"),
            format!("Subject=\"CN={API_URI}\\\"\""),
            "Cert=\"unterminated".into(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        let payloads = [
            r#"{"sub":"user-1","scope":"mlflow:read mlflow:write"}"#,
            r#"{"sub":"user-2","scope":"mlflow:read"}"#,
            r#"{"sub":"user-3"}"#,
            r#"{"sub":"user-4","scope":"mlflow:read\nmlflow:write"}"#,
            r#"{"sub":"user-5","scopes":["mlflow:read","mlflow:write"]}"#,
            r#"{"sub":"u\r\nx-admin: 1","scope":"mlflow:write"}"#,
            r#"{"sub":"","scope":"mlflow:write"}"#,
            r#"{"scope":"mlflow:write"}"#,
            r#"{"sub":"user-6","scopes":{"mlflow:write":false}}"#,
            r#"{"sub":"user-7","scope":["x mlflow:write y"],"email":null}"#,
            r#"{"sub":"user-8","scopes":["mlflow:read",null]}"#,
        ]
        .iter()
        .map(|json| json.as_bytes().to_vec())
        .collect();
        let rw = r#"["mlflow:read","mlflow:write"]"#;
        let ok_bodies = [
            dev_allow("key-rw-0001", "dev-user-1", rw, "1000", "null"),
            dev_allow(
                "key-ro-0002",
                "dev-user-2",
                r#"["mlflow:read"]"#,
                "null",
                "null",
            ),
            dev_allow("key-lim-0004", "dev-user-4", rw, "2", "null"),
            dev_allow(
                "key-soon",
                "dev-user-7",
                rw,
                "null",
                r#""2026-11-23T12:00:30Z""#,
            ),
            dev_allow(
                "key-exp-0003",
                "dev-user-3",
                rw,
                "null",
                r#""2020-01-01T00:00:00Z""#,
            ),
            dev_allow(
                "key-model",
                "dev-user-8",
                r#"["model:read","mlflow:admin"]"#,
                "null",
                "null",
            ),
            r#"{"key_id":"key-min","user_id":"dev-user-9"}"#.into(),
            r#"{"valid":false}"#.into(),
            r#"{"key_id":"key-ctl","user_id":"dev\u0007user"}"#.into(),
            r#"{"key_id":"key-sp","user_id":" dev-user "}"#.into(),
            r#"[true,"key-arr","dev-user-arr",["mlflow:read","mlflow:write"],null,null]"#.into(),
            r#"{"valid":true}"#.into(),
            "<html>this is not JSON {\"valid\": tr".into(),
            String::new(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        Pools {
            methods: bytes(&[
                "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "options", "PATCH",
            ]),
            paths: bytes(&[
                "/api/2.0/mlflow/experiments/get?experiment_id=1",
                "/api/2.0/mlflow/runs/search",
                "/api/2.0/mlflow/runs/create",
                "/health",
                "/health?full=1",
                "/healthz",
                "/api/2.0/mlflow/experiments/search",
                "/api/mlflow/api/2.0/mlflow/runs/log-metric",
                "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/model.pkl",
                "/api/3.0/mlflow/traces",
                "/ajax-api/2.0/mlflow/artifacts/list",
                "/",
            ]),
            keys: bytes(&[
                "hk_dev_readwrite_0001",
                "hk_dev_readonly_0002",
                "hk_dev_limited_0004",
                " hk_dev_readwrite_0001\t",
                "a.b.c",
                "hk bad",
                "hk\u{1}ctl",
                "caf\u{e9}",
                &"k".repeat(256),
                &"k".repeat(257),
                "",
            ]),
            authorizations,
            peers: PEERS.iter().map(Peer::of).collect(),
            odd_xfccs,
            ok_bodies,
            other_bodies: bytes(&[
                "",
                r#"{"detail":"Invalid or expired API key"}"#,
                r#"{"detail":"Injected fault"}"#,
                "<html>this is not JSON {\"valid\": tr",
            ]),
            payloads,
        }
    })
}

/// A pool value, a pool value with one byte changed, or any bytes at all. The first `good`
/// values of the pool (the ones that lead somewhere) come up half of the time.
fn pick_good(
    u: &mut Unstructured,
    pool: &[Vec<u8>],
    good: usize,
    odd: u8,
) -> arbitrary::Result<Vec<u8>> {
    let roll = u.int_in_range(0..=odd)?;
    let mut value = if u.arbitrary()? {
        u.choose(&pool[..good.min(pool.len())])?.clone()
    } else {
        u.choose(pool)?.clone()
    };
    match roll {
        0 => return u.arbitrary(),
        1 if !value.is_empty() => {
            let at = u.choose_index(value.len())?;
            let byte = u.arbitrary()?;
            if u.arbitrary()? {
                value[at] = byte;
            } else {
                value.insert(at, byte);
            }
        }
        _ => {}
    }
    Ok(value)
}

fn pick(u: &mut Unstructured, pool: &[Vec<u8>], odd: u8) -> arbitrary::Result<Vec<u8>> {
    pick_good(u, pool, pool.len(), odd)
}

impl Scenario {
    pub fn generate(u: &mut Unstructured, profile: Profile) -> arbitrary::Result<Self> {
        let mut config = FilterConfig::default();
        config.internal.allowed_identities =
            [API_URI, BATCH_URI, CN_ONLY].map(String::from).to_vec();
        config.max_pending_callouts = u.int_in_range(1..=3)?;
        config.timeout_ms = *u.choose(&[2000, 1, 30, 500])?;
        config.cache.ttl_s = *u.choose(&[300, 0, 1, 5])?;
        config.cache.negative_ttl_s = *u.choose(&[30, 0, 2])?;
        config.cache.stale_if_error_s = *u.choose(&[120, 0, 3])?;
        config.cache.max_entries = *u.choose(&[10_000, 1, 2, 3])?;
        config.credential_transport = *u.choose(&[
            CredentialTransport::Body,
            CredentialTransport::Bearer,
            CredentialTransport::Both,
        ])?;
        if u.ratio(1, 3)? {
            config.jwt.mode = JwtMode::Callout;
        }
        if u.ratio(1, 4)? {
            config
                .exempt_paths
                .push("/api/2.0/mlflow/experiments/search".into());
        }
        if u.ratio(1, 4)? {
            config.internal.scopes = vec!["mlflow:read".into()];
        }
        if u.ratio(1, 6)? {
            config.scopes.read = vec!["model:read".into()];
            config.scopes.write = vec!["mlflow:admin".into(), "model:write".into()];
        }
        let workers = if profile == Profile::Worker && u.arbitrary()? {
            2
        } else {
            1
        };
        let service_token = u.arbitrary::<bool>()?.then(|| SERVICE_TOKEN.to_string());
        let mut events = Vec::new();
        while events.len() < MAX_EVENTS && !u.is_empty() {
            events.push(Event::generate(u, profile, workers)?);
        }
        Ok(Scenario {
            config,
            workers,
            service_token,
            events,
        })
    }

    /// A scenario from bytes, whatever they are.
    pub fn from_bytes(data: &[u8], profile: Profile) -> Self {
        Self::generate(&mut Unstructured::new(data), profile).expect("generation never fails")
    }
}

impl Event {
    fn generate(u: &mut Unstructured, profile: Profile, workers: usize) -> arbitrary::Result<Self> {
        // Weights out of 100: request, reply, advance, gone, tick, wall jump, dispatch, store.
        let weights: [u8; 8] = match profile {
            Profile::Policy => [46, 30, 10, 5, 5, 0, 2, 2],
            Profile::Worker => [30, 24, 12, 12, 10, 4, 4, 4],
        };
        let mut roll = u.int_in_range(0..=99u8)?;
        let mut kind = 0;
        while kind < 7 && roll >= weights[kind] {
            roll -= weights[kind];
            kind += 1;
        }
        let worker = u.choose_index(workers)?;
        Ok(match kind {
            0 => Event::Request {
                worker,
                request: Request::generate(u, profile)?,
            },
            1 => Event::Reply {
                pick: u.int_in_range(0..=40)?,
                reply: Reply::generate(u)?,
            },
            2 => Event::Advance {
                ms: match u.int_in_range(0..=9)? {
                    0 => i64::from(u.arbitrary::<u16>()?),
                    i => [1, 20, 200, 1000, 2500, 7000, 301_000, 121_000, 3_600_000][i - 1],
                },
            },
            3 => Event::Gone {
                pick: u.int_in_range(0..=40)?,
            },
            4 => Event::Tick { worker },
            5 => Event::WallJump {
                ms: *u.choose(&[-1000, -3_600_000, 1000, 400_000])?,
            },
            6 => Event::RefuseDispatch(u.arbitrary()?),
            _ => Event::StoreFails(u.arbitrary()?),
        })
    }
}

impl Request {
    fn generate(u: &mut Unstructured, profile: Profile) -> arbitrary::Result<Self> {
        let p = pools();
        let odd = if profile == Profile::Policy { 8 } else { 24 };
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut add = |u: &mut Unstructured, name: &str, value: Vec<u8>| -> arbitrary::Result<()> {
            let at = u.int_in_range(0..=headers.len())?;
            headers.insert(at, (name.as_bytes().to_vec(), value));
            Ok(())
        };
        if u.ratio(31, 32)? {
            let method = pick(u, &p.methods, odd)?;
            add(u, ":method", method)?;
        }
        if u.ratio(31, 32)? {
            let path = pick(u, &p.paths, odd)?;
            add(u, ":path", path)?;
        }
        let credentials = match u.int_in_range(0..=9)? {
            0 => vec![],
            1..=3 => vec![("x-api-key", pick_good(u, &p.keys, 3, odd)?)],
            4..=6 => vec![("authorization", pick_good(u, &p.authorizations, 3, odd)?)],
            7 => vec![
                ("authorization", pick(u, &p.authorizations, odd)?),
                ("x-api-key", pick(u, &p.keys, odd)?),
            ],
            8 => vec![
                ("authorization", pick(u, &p.authorizations, odd)?),
                ("authorization", pick(u, &p.authorizations, odd)?),
            ],
            _ => vec![
                ("x-api-key", pick(u, &p.keys, odd)?),
                ("x-api-key", pick(u, &p.keys, odd)?),
            ],
        };
        for (name, value) in credentials {
            add(u, name, value)?;
        }
        let mtls = u.ratio(1, 3)?;
        let peer = u.choose_index(p.peers.len())?;
        let other = u.choose_index(p.peers.len())?;
        let digest = match u.int_in_range(0..=7)? {
            0 => None,
            1 => Some(u.arbitrary()?),
            2 => Some(p.peers[other].digest.clone()),
            _ => Some(p.peers[peer].digest.clone()),
        };
        let xfcc_copies = match u.int_in_range(0..=7)? {
            0..=3 => 0,
            7 => 2,
            _ => 1,
        };
        for _ in 0..xfcc_copies {
            let xfcc = match u.int_in_range(0..=7)? {
                0..=3 => p.peers[peer].xfcc.clone(),
                4 => p.peers[other].xfcc.clone(),
                // A SAN's text appending another certificate's fields.
                5 => [&p.peers[peer].xfcc[..], b";", &p.peers[other].xfcc].concat(),
                6 => pick(u, &[p.peers[peer].xfcc.clone()], 1)?,
                _ => pick(u, &p.odd_xfccs, odd)?,
            };
            add(u, "x-forwarded-client-cert", xfcc)?;
        }
        for (name, value) in [
            ("x-user-id", "end-user-7"),
            ("access-control-request-method", "POST"),
            (METHOD_OVERRIDE_HEADERS[0], "DELETE"),
            ("x-request-id", "rid-1"),
            ("x-auth-path", "internal"),
            ("x-api-key-id", "forged"),
        ] {
            if u.ratio(1, 8)? {
                add(u, name, value.into())?;
            }
        }
        if u.ratio(1, odd)? {
            let (name, value) = (u.arbitrary()?, u.arbitrary()?);
            headers.push((name, value));
        }
        let raw = match u.int_in_range(0..=odd * 2)? {
            0 => Some(u.arbitrary()?),
            1 => {
                let pairs: Vec<(&[u8], &[u8])> =
                    headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
                let mut raw = pairs::serialize(&pairs);
                let at = u.choose_index(raw.len())?;
                raw[at] = u.arbitrary()?;
                Some(raw)
            }
            _ => None,
        };
        let jwt = match u.int_in_range(0..=3)? {
            0 => Subject::Unverified,
            1 | 2 => Subject::TokensOwn,
            _ => Subject::Other(pick(u, &p.payloads, 4)?),
        };
        let source = match u.int_in_range(0..=9)? {
            0 => String::from_utf8_lossy(&u.arbitrary::<Vec<u8>>()?).into_owned(),
            1 => "[::1]:8080".into(),
            _ => "203.0.113.7:40000".into(),
        };
        Ok(Request {
            headers,
            raw,
            mtls,
            peer,
            digest,
            jwt,
            source,
        })
    }
}

impl Reply {
    fn generate(u: &mut Unstructured) -> arbitrary::Result<Self> {
        let p = pools();
        let status = match u.int_in_range(0..=15)? {
            0..=5 => Some(200),
            6 => Some(401),
            7 => Some(403),
            8 => Some(429),
            9 => Some(500),
            10 => Some(503),
            11 | 12 => None,
            13 => Some(404),
            _ => Some(u.arbitrary()?),
        };
        let body = if status == Some(200) {
            pick_good(u, &p.ok_bodies, 6, 6)?
        } else {
            pick(u, &p.other_bodies, 6)?
        };
        let retry_after = match u.int_in_range(0..=5)? {
            0 => None,
            1 => Some(u.arbitrary()?),
            i => Some([" 17 ", "0", "soon", "99999"][i - 2].as_bytes().to_vec()),
        };
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Envoy, as each worker sees it.

// ---------------------------------------------------------------------------------------
// The run, and what it must never do.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenState {
    Live,
    Answered,
}

struct Token {
    worker: usize,
    token: CalloutToken,
    due_mono: i64,
    state: TokenState,
    kind: Kind,
    credential: String,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Decided,
    Waiting,
    Gone,
}

/// What the model itself read from a request's headers (never from `RequestFacts`).
struct Info {
    worker: usize,
    state: State,
    presented: Result<Option<(Kind, String)>, Malformed>,
    method: String,
    path: String,
    method_override: bool,
    preflight_header: bool,
    xfcc: Vec<Vec<u8>>,
    has_user_id: bool,
    request_id: Option<String>,
    said_verified: bool,
    said_digest: Option<Option<Vec<u8>>>,
    said_payload: Option<Option<Value>>,
}

impl Info {
    fn read(map: &HeaderMap, worker: usize) -> Self {
        let all = |name: &str| -> Vec<Vec<u8>> {
            (0..map.count(name))
                .map(|_| map.get(name).unwrap_or_default().to_vec())
                .collect()
        };
        let text = |name: &str| {
            map.get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or_default()
                .to_string()
        };
        // Repeated values: only the count matters to the contract (refused), and the first.
        let auth = all("authorization");
        let keys = all("x-api-key");
        let auth: Vec<&[u8]> = auth.iter().map(Vec::as_slice).collect();
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        Info {
            worker,
            state: State::Decided,
            presented: reference_credential(&auth, &keys),
            method: text(":method"),
            path: text(":path"),
            method_override: METHOD_OVERRIDE_HEADERS.iter().any(|h| map.contains(h)),
            preflight_header: map.contains("access-control-request-method"),
            xfcc: all("x-forwarded-client-cert"),
            has_user_id: map.contains("x-user-id"),
            request_id: map
                .get("x-request-id")
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(String::from),
            said_verified: false,
            said_digest: None,
            said_payload: None,
        }
    }

    fn bare_path(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or_default()
    }

    fn access(&self) -> Access {
        if self.method_override {
            Access::Write
        } else {
            required_access(&self.method, &self.path)
        }
    }
}

/// What the auth service said that could be an allow: a 200 whose body is a JSON object with
/// ids (the core may still refuse it; it may never allow anything else).
#[derive(Debug)]
struct Answer {
    at_s: i64,
    key_id: String,
    user_id: String,
    scopes: String,
    expires_at: Option<i64>,
    limit: Option<u64>,
}

fn possible_allow(reply: &Reply, at_s: i64) -> Option<Answer> {
    if reply.status != Some(200) {
        return None;
    }
    let said: SaidReply = read_object(&reply.body)?;
    if !matches!(said.valid, None | Some(Value::Bool(true))) {
        return None;
    }
    if !match &said.service_id {
        None => true,
        Some(Value::String(s)) => s.as_str() == "ml-platform",
        Some(_) => false,
    } {
        return None;
    }
    let expires_at = match &said.expires_at {
        None => None,
        Some(at) => Some(hokusai_rfc3339::parse(at)?),
    };
    Some(Answer {
        at_s,
        key_id: said.key_id?,
        user_id: said.user_id?,
        scopes: said.scopes.unwrap_or_default().join(" "),
        expires_at,
        limit: said.rate_limit_per_hour,
    })
}

/// What an auth-service reply obliges every request it decides to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A verdict status: this refusal for everyone.
    Status(u16),
    /// A 200: an allow, or any refusal (the oracle for allows is the answers record).
    Anything,
    /// No verdict: 503, or a stale allow.
    Unavailable,
}

fn expect_of(reply: &Reply) -> Expect {
    match reply.status {
        Some(s @ (401 | 403 | 429)) => Expect::Status(s),
        Some(200) => Expect::Anything,
        _ => Expect::Unavailable,
    }
}

/// Counts, so properties can tell that scenarios reach what they should.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub exempt: u64,
    pub internal: u64,
    pub external: u64,
    pub stale: u64,
    pub local_jwt: u64,
    pub refusals: u64,
    pub waits: u64,
    pub callouts: u64,
    pub retries: u64,
    pub resolved: u64,
    pub gone_while_waiting: u64,
    pub cap_hits: u64,
    /// The longest timeout any callout was sent with.
    pub max_timeout_ms: u64,
}

struct World {
    config: FilterConfig,
    service_token: Option<String>,
    store: Rc<MemoryStore>,
    workers: Vec<(Worker, FakeEnvoy)>,
    mono: i64,
    skew: i64,
    wall_jumped: bool,
    wall_jumped_back: bool,
    store_failed: bool,
    requests: BTreeMap<StreamId, Info>,
    tokens: Vec<Token>,
    answers: HashMap<(Kind, String), Vec<Answer>>,
    rate_used: HashMap<(String, i64), u64>,
    decided: Vec<u64>,
    next_request: StreamId,
    stats: Stats,
}

/// Runs a scenario, panicking at the first broken promise.
pub fn run(scenario: &Scenario) -> Stats {
    let mut world = World::new(scenario);
    for event in &scenario.events {
        world.apply(event);
        world.check_counts();
    }
    world.drain();
    world.stats.cap_hits = world
        .workers
        .iter()
        .map(|(w, _)| w.tally().callout_cap_rejections)
        .sum();
    world.stats
}

impl World {
    fn new(s: &Scenario) -> Self {
        let store = Rc::new(MemoryStore::default());
        let workers = (0..s.workers)
            .map(|_| {
                let worker = Worker::new(s.config.clone(), s.service_token.clone());
                let host = FakeEnvoy {
                    jwt_location: (
                        s.config.jwt.metadata_namespace.clone(),
                        s.config.jwt.payload_key.clone(),
                    ),
                    ..FakeEnvoy::sharing(store.clone())
                };
                (worker, host)
            })
            .collect();
        // What the adapter does when a VM is configured (before any request), as Envoy's
        // configuration canary would have done once for every worker.
        Worker::new(s.config.clone(), None)
            .prepare(&*store)
            .expect("the rate counter slots");
        World {
            config: s.config.clone(),
            service_token: s.service_token.clone(),
            store,
            workers,
            mono: 0,
            skew: 0,
            wall_jumped: false,
            wall_jumped_back: false,
            store_failed: false,
            requests: BTreeMap::new(),
            tokens: Vec::new(),
            answers: HashMap::new(),
            rate_used: HashMap::new(),
            decided: vec![0; s.workers],
            next_request: 2,
            stats: Stats::default(),
        }
    }

    fn wall_ms(&self) -> i64 {
        T0_MS + self.mono + self.skew
    }

    fn wall_s(&self) -> i64 {
        self.wall_ms().div_euclid(1000)
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::Request { worker, request } => self.request(*worker, request),
            Event::Reply { pick, reply } => self.reply(*pick, reply),
            Event::Gone { pick } => self.gone(*pick),
            Event::Tick { worker } => self.tick(*worker),
            Event::Advance { ms } => self.advance(*ms),
            Event::WallJump { ms } => {
                self.skew += ms;
                self.wall_jumped = true;
                self.wall_jumped_back |= *ms < 0;
            }
            Event::RefuseDispatch(refuse) => {
                for (_, host) in &mut self.workers {
                    host.refuse_dispatch = *refuse;
                }
            }
            Event::StoreFails(fail) => {
                self.store.fail_writes(*fail);
                self.store_failed |= *fail;
            }
        }
    }

    fn request(&mut self, w: usize, request: &Request) {
        let id = self.next_request;
        self.next_request += 1;
        let serialized;
        let buffer = match &request.raw {
            Some(raw) => raw.as_slice(),
            None => {
                let pairs: Vec<(&[u8], &[u8])> = request
                    .headers
                    .iter()
                    .map(|(n, v)| (&n[..], &v[..]))
                    .collect();
                serialized = pairs::serialize(&pairs);
                &serialized
            }
        };
        // As the adapter reads it: an unreadable buffer never reaches the decision (it is
        // refused unverdicted), and the reference reader must agree on which those are.
        let Some(facts) = RequestFacts::from_pairs(buffer) else {
            assert!(
                HeaderMap::parse(buffer).is_none(),
                "a readable buffer refused"
            );
            return;
        };
        let map = HeaderMap::parse(buffer).expect("the reference reads what the adapter reads");
        let mut info = Info::read(&map, w);
        let bearer = map.get("authorization").and_then(reference_bearer);
        let payload = match &request.jwt {
            Subject::Unverified => None,
            Subject::Other(bytes) => serde_json::from_slice(bytes).ok(),
            Subject::TokensOwn => bearer
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.split('.').nth(1))
                .and_then(|p| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(p)
                        .ok()
                })
                .and_then(|json| serde_json::from_slice(&json).ok()),
        };
        let now = self.wall_ms();
        let (worker, host) = &mut self.workers[w];
        host.mtls = request.mtls;
        host.peer_digest = request.digest.clone();
        host.jwt_payload = payload;
        host.source_address = request.source.clone();
        host.asked = Asked::default();
        let step = worker.on_request(id, &facts, now, host);
        trace!(
            "t={now} w{w} request {id} presents {:?}: {step:?}",
            info.presented
        );
        // What the filter was told while deciding: each answer only if it asked.
        let asked = host.asked;
        info.said_verified = asked.mtls > 0 && host.mtls;
        info.said_digest =
            (asked.digest > 0).then(|| host.peer_digest.clone().filter(|_| host.mtls));
        info.said_payload = (asked.jwt_payload > 0).then(|| host.jwt_payload.clone());
        let sent = std::mem::take(&mut host.sent);
        self.requests.insert(id, info);
        self.sent(w, Some(id), sent);
        match step {
            Step::Forward(f) => self.forwarded(id, &f),
            Step::Refuse(r) => self.refused(id, &r),
            Step::Wait => {
                let info = self.requests.get_mut(&id).unwrap();
                let Ok(Some((kind, _))) = &info.presented else {
                    panic!("request {id} waits on a callout with no well-formed credential");
                };
                assert!(
                    *kind == Kind::ApiKey || self.config.jwt.mode == JwtMode::Callout,
                    "a JWT waits on a callout in local mode"
                );
                info.state = State::Waiting;
                self.stats.waits += 1;
                return;
            }
        }
        self.decided[w] += 1;
    }

    /// Checks each callout the filter just sent; `origin` is the request being decided
    /// (None: sent again, after a reset).
    fn sent(&mut self, w: usize, origin: Option<StreamId>, sent: Vec<Sent>) {
        for Sent {
            token,
            call,
            timeout_ms,
        } in sent
        {
            self.stats.callouts += 1;
            let (kind, credential) = self.credential_of(&call);
            assert!(
                !credential.is_empty()
                    && credential.bytes().all(|b| b.is_ascii_graphic())
                    && credential.len() <= if kind == Kind::Jwt { 8192 } else { 256 },
                "a malformed credential reached a callout"
            );
            // After the wall clock steps back, the flow still measures what is left of its
            // deadline on it (see `callouts_never_outlast_timeout_ms`).
            assert!(timeout_ms >= 1);
            self.stats.max_timeout_ms = self.stats.max_timeout_ms.max(timeout_ms);
            assert!(
                timeout_ms <= self.config.timeout_ms || self.wall_jumped_back,
                "a callout with {} ms, more than timeout_ms",
                timeout_ms
            );
            match origin {
                Some(id) => {
                    let info = &self.requests[&id];
                    assert_eq!(
                        info.presented,
                        Ok(Some((kind, credential.clone()))),
                        "a callout carries the credential its request presented"
                    );
                    let header = call
                        .headers
                        .iter()
                        .find(|(n, _)| *n == "x-request-id")
                        .map(|(_, v)| v.clone());
                    assert_eq!(header, info.request_id, "the callout carries x-request-id");
                }
                None => {
                    self.stats.retries += 1;
                    assert!(
                        self.tokens
                            .iter()
                            .any(|t| t.worker == w && t.body == call.body),
                        "a callout sent again is one sent before"
                    );
                }
            }
            trace!("  w{w} callout token {} for {kind:?} {credential:?}", token);
            self.tokens.push(Token {
                worker: w,
                token,
                due_mono: self.mono + timeout_ms as i64,
                state: TokenState::Live,
                kind,
                credential,
                body: call.body,
            });
        }
    }

    /// The credential in a callout, read as the auth service reads it; and the call's shape.
    fn credential_of(&self, call: &Callout) -> (Kind, String) {
        let c = &self.config;
        assert_eq!(call.cluster, c.auth_cluster);
        let header = |name: &str| {
            call.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(":method"), Some("POST"));
        assert_eq!(header(":authority"), Some(c.authority()));
        assert_eq!(header("content-type"), Some("application/json"));
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&call.body) else {
            panic!("the callout body is not a JSON object")
        };
        assert_eq!(
            body.get("service_id"),
            Some(&Value::from(c.service_id.as_str()))
        );
        assert!(body.get("client_ip").is_some_and(Value::is_string));
        let in_body = body
            .get("api_key")
            .map(|k| k.as_str().expect("api_key is a string"));
        let bearer = header("authorization").map(|v| {
            v.strip_prefix("Bearer ")
                .expect("authorization is a bearer")
                .to_string()
        });
        let path = header(":path");
        if path == Some(c.jwt.validate_path.as_str()) && in_body.is_none() {
            assert_eq!(
                c.jwt.mode,
                JwtMode::Callout,
                "a token callout in local mode"
            );
            return (
                Kind::Jwt,
                bearer.expect("a token callout carries the token"),
            );
        }
        assert_eq!(path, Some(c.validate_path.as_str()));
        let key = match c.credential_transport {
            CredentialTransport::Body => {
                assert_eq!(bearer, self.service_token, "only the service's own token");
                in_body.expect("the key in the body").to_string()
            }
            CredentialTransport::Bearer => {
                assert!(in_body.is_none());
                bearer.expect("the key as bearer")
            }
            CredentialTransport::Both => {
                assert_eq!(in_body.map(String::from), bearer, "one key in both places");
                bearer.expect("the key as bearer")
            }
        };
        (Kind::ApiKey, key)
    }

    fn reply(&mut self, pick: usize, reply: &Reply) {
        let live: Vec<usize> = (0..self.tokens.len())
            .filter(|i| self.tokens[*i].state == TokenState::Live)
            .collect();
        if live.is_empty() || pick >= 32 {
            // Envoy never answers a token twice; should a host do so, the filter must shrug.
            let w = pick % self.workers.len();
            let token = self
                .tokens
                .iter()
                .find(|t| t.worker == w && t.state != TokenState::Live)
                .map_or(0xdead, |t| t.token);
            let now = self.wall_ms();
            let (worker, host) = &mut self.workers[w];
            let call = CalloutReply {
                status: reply.status,
                body: &reply.body,
                retry_after: reply.retry_after.as_deref(),
                from_upstream: reply.status.is_some(),
            };
            let resolved = worker.on_callout_reply(token, call, now, host);
            assert!(
                resolved.is_empty() && host.sent.is_empty(),
                "a dead token decided"
            );
            return;
        }
        self.deliver(live[pick % live.len()], reply);
    }

    fn deliver(&mut self, index: usize, reply: &Reply) {
        let at_s = self.wall_s();
        let t = &mut self.tokens[index];
        t.state = TokenState::Answered;
        let (w, token) = (t.worker, t.token);
        if let Some(answer) = possible_allow(reply, at_s) {
            let key = (t.kind, t.credential.clone());
            self.answers.entry(key).or_default().push(answer);
        }
        let now = self.wall_ms();
        let (worker, host) = &mut self.workers[w];
        let call = CalloutReply {
            status: reply.status,
            body: &reply.body,
            retry_after: reply.retry_after.as_deref(),
            from_upstream: reply.status.is_some(),
        };
        let resolved = worker.on_callout_reply(token, call, now, host);
        trace!("t={now} w{w} reply to token {token}: {reply:?} -> {resolved:?}");
        let sent = std::mem::take(&mut host.sent);
        if !sent.is_empty() {
            assert!(reply.status.is_none(), "retried after an HTTP status");
            assert!(resolved.is_empty(), "retried and decided at once");
        }
        self.sent(w, None, sent);
        self.resolved(w, resolved, expect_of(reply));
    }

    fn resolved(&mut self, w: usize, resolved: Vec<Resolved>, expect: Expect) {
        for r in resolved {
            self.stats.resolved += 1;
            let info = self
                .requests
                .get_mut(&r.stream)
                .expect("a decision for a request never seen");
            assert_eq!(info.worker, w, "decided by another worker");
            assert_eq!(
                info.state,
                State::Waiting,
                "decided twice, or after it went"
            );
            assert_eq!(r.request_id, info.request_id);
            info.state = State::Decided;
            self.decided[w] += 1;
            match (&r.decision, expect) {
                (Final::Refuse(refusal), Expect::Status(status)) => {
                    assert_eq!(
                        refusal.reply.status, status,
                        "the auth service said {status}"
                    )
                }
                (Final::Forward(_), Expect::Status(status)) => {
                    panic!("forwarded after the auth service said {status}")
                }
                // A stale allow standing in is still held to the scope and the hourly limit,
                // and a limit that cannot be counted (shared data refusing writes) is a 503.
                (Final::Refuse(refusal), Expect::Unavailable)
                    if refusal.facts.cache == CacheUse::Stale =>
                {
                    let uncountable =
                        self.store.writes_fail() && refusal.reason == "rate counter unavailable";
                    assert!(
                        [403, 429].contains(&refusal.reply.status) || uncountable,
                        "a stale allow refused: {refusal:?}"
                    )
                }
                (Final::Refuse(refusal), Expect::Unavailable) => {
                    assert_eq!(refusal.reply.status, 503, "no verdict: 503")
                }
                (Final::Forward(f), Expect::Unavailable) => assert!(
                    f.identity.as_ref().is_some_and(|i| i.stale),
                    "no verdict, yet a fresh forward"
                ),
                (_, Expect::Anything) => {}
            }
            match &r.decision {
                Final::Forward(f) => self.forwarded(r.stream, f),
                Final::Refuse(refusal) => self.refused(r.stream, refusal),
            }
        }
    }

    fn gone(&mut self, pick: usize) {
        let live: Vec<StreamId> = self
            .requests
            .iter()
            .filter(|(_, info)| info.state != State::Gone)
            .map(|(id, _)| *id)
            .collect();
        if live.is_empty() {
            return;
        }
        let id = live[pick % live.len()];
        let info = self.requests.get_mut(&id).unwrap();
        if info.state == State::Waiting {
            self.stats.gone_while_waiting += 1;
        }
        info.state = State::Gone;
        let w = info.worker;
        trace!("request {id} gone");
        let (worker, host) = &mut self.workers[w];
        worker.on_stream_gone(id);
        assert!(
            host.sent.is_empty(),
            "nothing is sent when a stream goes away"
        );
    }

    fn tick(&mut self, w: usize) {
        let now = self.wall_ms();
        let (worker, host) = &mut self.workers[w];
        let resolved = worker.on_tick(now, host);
        trace!("t={now} w{w} tick -> {resolved:?}");
        assert!(host.sent.is_empty(), "a tick sends no callout");
        self.resolved(w, resolved, Expect::Unavailable);
    }

    /// Time passes; Envoy times out each callout when it is due, in order.
    fn advance(&mut self, ms: i64) {
        let target = self.mono + ms;
        loop {
            let due = (0..self.tokens.len())
                .filter(|i| self.tokens[*i].state == TokenState::Live)
                .filter(|i| self.tokens[*i].due_mono <= target)
                .min_by_key(|i| self.tokens[*i].due_mono);
            let Some(index) = due else { break };
            self.mono = self.mono.max(self.tokens[index].due_mono);
            let timeout = Reply {
                status: None,
                body: Vec::new(),
                retry_after: None,
            };
            self.deliver(index, &timeout);
            self.check_counts();
        }
        self.mono = target;
    }

    /// Envoy's timeouts and the worker's ticks answer every request still waiting.
    fn drain(&mut self) {
        for _ in 0..8 {
            if !self.requests.values().any(|i| i.state == State::Waiting) {
                break;
            }
            let last_due = self.tokens.iter().map(|t| t.due_mono).max().unwrap_or(0);
            self.advance((last_due - self.mono).max(0) + 10_000);
            for w in 0..self.workers.len() {
                self.tick(w);
            }
            self.check_counts();
        }
        let stuck: Vec<_> = self
            .requests
            .iter()
            .filter(|(_, i)| i.state == State::Waiting)
            .map(|(id, _)| *id)
            .collect();
        assert!(stuck.is_empty(), "requests {stuck:?} never got an answer");
    }

    fn check_counts(&self) {
        let max = self.config.max_pending_callouts as usize;
        for (w, (worker, host)) in self.workers.iter().enumerate() {
            let waiting = self
                .requests
                .values()
                .filter(|i| i.worker == w && i.state == State::Waiting)
                .count();
            assert_eq!(worker.waiting(), waiting, "worker {w}'s waiting requests");
            assert!(
                worker.callouts_in_flight() <= max,
                "more than {max} callouts in flight"
            );
            let live = self
                .tokens
                .iter()
                .filter(|t| t.worker == w && t.state == TokenState::Live)
                .count();
            // A wall-clock jump may make a worker give up on a callout Envoy still runs.
            if !self.wall_jumped {
                assert!(live <= max, "{live} callouts in Envoy, more than {max}");
            }
            let tally = worker.tally();
            assert_eq!(
                tally.callouts, host.attempts,
                "callouts counted as attempted"
            );
            assert_eq!(
                tally.decisions.iter().sum::<u64>(),
                self.decided[w],
                "decisions counted"
            );
            assert_eq!(tally.requests.iter().sum::<u64>(), self.decided[w]);
        }
    }

    fn refused(&mut self, id: StreamId, r: &Refusal) {
        self.stats.refusals += 1;
        let info = &self.requests[&id];
        let reply = &r.reply;
        assert!(
            [401, 403, 429, 503].contains(&reply.status),
            "status {}",
            reply.status
        );
        let body: Value = serde_json::from_slice(&reply.body()).expect("a JSON reply");
        assert_eq!(body["detail"], reply.detail);
        let header = |name: &str| {
            reply
                .headers()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v)
        };
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        match reply.status {
            401 => assert!(header("www-authenticate").is_some()),
            429 => {
                let after: u64 = header("retry-after").expect("retry-after").parse().unwrap();
                assert!((1..=3600).contains(&after));
            }
            503 => assert_eq!(header("retry-after").as_deref(), Some("1")),
            _ => {}
        }
        assert_eq!(r.facts.outcome, Outcome::of_status(reply.status));
        match (&info.presented, reply.status) {
            (_, 403) => {}
            (Err(Malformed), status) => {
                assert_eq!((status, reply.detail), (401, "Invalid API key format"))
            }
            (Ok(None), status) => assert_eq!((status, reply.detail), (401, "API key required")),
            (Ok(Some(_)), _) => {}
        }
    }

    fn forwarded(&mut self, id: StreamId, f: &Forward) {
        let info = &self.requests[&id];
        let Some(identity) = &f.identity else {
            assert_eq!(f.facts.path, AuthPath::Exempt);
            let exempt = self
                .config
                .exempt_paths
                .iter()
                .any(|p| p == info.bare_path());
            let preflight = info.method.eq_ignore_ascii_case("OPTIONS") && info.preflight_header;
            assert!(
                exempt || preflight,
                "forwarded {:?} untouched, not exempt",
                info.path
            );
            self.stats.exempt += 1;
            return;
        };
        for (name, value) in identity.pairs() {
            assert!(!value.chars().any(char::is_control), "{name}: {value:?}");
            assert!(!value.is_empty(), "{name} is empty");
        }
        assert_eq!(f.facts.path, identity.path);
        assert_eq!(f.facts.method, identity.method);
        assert_eq!(f.facts.outcome == Outcome::Stale, identity.stale);
        let access = info.access();
        let accepted = access.accepted_scopes(&self.config.scopes);
        assert!(
            identity
                .scopes
                .split(' ')
                .any(|s| accepted.iter().any(|a| a == s)),
            "scopes {:?} do not grant {access:?} for {} {}",
            identity.scopes,
            info.method,
            info.path
        );
        let now = self.wall_s();
        match (identity.path, identity.method) {
            (AuthPath::Internal, AuthMethod::Mtls) => {
                assert!(
                    info.said_verified,
                    "internal without Envoy's word on the peer"
                );
                assert_eq!(info.xfcc.len(), 1, "internal on a repeated or absent XFCC");
                let peer = identity.identity.as_deref().expect("the peer identity");
                let c = &self.config.internal;
                assert!(
                    c.allowed_identities.iter().any(|a| a == peer),
                    "{peer} is not listed"
                );
                let Some(Some(digest)) = &info.said_digest else {
                    panic!("internal without the connection's certificate digest")
                };
                let cert = pools()
                    .peers
                    .iter()
                    .find(|p| p.digest.eq_ignore_ascii_case(digest))
                    .expect("internal for a digest no certificate has");
                assert!(
                    cert.identities().any(|id| id == peer),
                    "{peer} is not an identity of the connection's certificate"
                );
                // The certificate itself may have come with an earlier request on this
                // worker: the digest is what binds it to the connection.
                assert!(identity.key_id.is_none() && !identity.stale);
                let user = (!info.has_user_id).then_some("internal_service");
                assert_eq!(identity.user_id.as_deref(), user);
                assert_eq!(&*identity.scopes, c.scopes.join(" "));
                self.stats.internal += 1;
            }
            (AuthPath::External, AuthMethod::Jwt) if identity.key_id.is_none() => {
                assert_eq!(self.config.jwt.mode, JwtMode::Local);
                let Ok(Some((Kind::Jwt, token))) = &info.presented else {
                    panic!("a JWT forward for a request without a bearer token")
                };
                let Some(Some(payload)) = &info.said_payload else {
                    panic!("a JWT forward without jwt_authn's word")
                };
                let _ = token;
                let user = identity.user_id.as_deref().unwrap_or_default();
                let (sub, claimed) = reference_jwt_claims(payload);
                assert_eq!(
                    Some(user.as_bytes()),
                    sub.as_deref(),
                    "not the verified subject"
                );
                for scope in identity.scopes.split(' ').filter(|s| !s.is_empty()) {
                    assert!(
                        claimed.iter().any(|c| c == scope.as_bytes()),
                        "{scope:?} is not a verified scope"
                    );
                }
                self.stats.local_jwt += 1;
            }
            (AuthPath::External, method @ (AuthMethod::ApiKey | AuthMethod::Jwt)) => {
                let kind = if method == AuthMethod::ApiKey {
                    Kind::ApiKey
                } else {
                    Kind::Jwt
                };
                let Ok(Some((presented, credential))) = &info.presented else {
                    panic!("forwarded request {id} without a well-formed credential")
                };
                assert_eq!(*presented, kind);
                let answers = self
                    .answers
                    .get(&(kind, credential.clone()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let (ttl, stale) = (
                    self.config.cache.ttl_s as i64,
                    self.config.cache.stale_if_error_s as i64,
                );
                let matching: Vec<&Answer> = answers
                    .iter()
                    .filter(|a| {
                        Some(&*a.key_id) == identity.key_id.as_deref()
                            && Some(&*a.user_id) == identity.user_id.as_deref()
                            && a.scopes == *identity.scopes
                            && a.expires_at.is_none_or(|at| now < at)
                            && if identity.stale {
                                now < a.at_s + ttl + stale
                            } else {
                                now < a.at_s + ttl || now == a.at_s
                            }
                    })
                    .collect();
                assert!(
                    !matching.is_empty(),
                    "forwarded {kind:?} (stale: {}) at {now} with no allow to back it: {answers:?}",
                    identity.stale
                );
                if identity.stale {
                    self.stats.stale += 1;
                } else {
                    self.stats.external += 1;
                }
                if !self.store_failed && !self.wall_jumped_back {
                    if let Some(limit) =
                        matching.iter().map(|a| a.limit).collect::<Option<Vec<_>>>()
                    {
                        let max = answers.iter().filter_map(|a| a.limit).max().unwrap_or(0);
                        let used = self
                            .rate_used
                            .entry((credential.clone(), now.div_euclid(3600)))
                            .or_default();
                        *used += 1;
                        assert!(
                            *used <= max,
                            "forward {used} within the hour, limits {limit:?}"
                        );
                    }
                }
            }
            other => panic!("a forward by {other:?}"),
        }
    }
}

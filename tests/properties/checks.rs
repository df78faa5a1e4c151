//! What each parser promises about any input, as functions that panic on a violation. The
//! proptest properties (`tests/properties/main.rs`) and the cargo-fuzz targets (`fuzz/`) call the
//! very same functions, so a fuzz finding is a property failure and the other way round. Each
//! is named after what it checks, folder first (`request_credential` checks
//! `core/request/credential.rs`), as its fuzz target is.
//!
//! Where a parser's answer can be told without it, a short reference reading of the format
//! (written differently on purpose) is compared with it; otherwise the answer is held to what
//! the contract says it may be.

use base64::Engine;
use hokusai_auth_filter::core::auth_service::call::{client_ip, validation_call};
use hokusai_auth_filter::core::auth_service::reply::{
    interpret, ValidationOutcome, MAX_REPLY_BYTES,
};
use hokusai_auth_filter::core::config::{CredentialTransport, FilterConfig, JwtMode};
use hokusai_auth_filter::core::host::fake::metadata_value;
use hokusai_auth_filter::core::identity::certificate::{verified_certificate, PeerCertificate};
use hokusai_auth_filter::core::identity::jwt_claims;
use hokusai_auth_filter::core::identity::xfcc::{self, MAX_CERT_FIELDS, MAX_XFCC_LEN};
use hokusai_auth_filter::core::pairs::{HeaderMap, MAX_HEADERS};
use hokusai_auth_filter::core::request::credential::{
    self, find_credential, is_jwt_shaped, Credential, Lookup, MAX_JWT_LEN, MAX_KEY_LEN,
};
use hokusai_auth_filter::core::request::facts::{RequestFacts, Single, METHOD_OVERRIDE_HEADERS};
use hokusai_auth_filter::core::request::scope::{required_access, Access};
use hokusai_auth_filter::core::verdict::{Denial, Verdict};
use hokusai_auth_filter::core::worker::Worker;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Reads the pairs format the slow, obvious way: a cursor over the buffer.
pub fn reference_pairs(bytes: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let w = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes(w.try_into().ok()?) as usize)
    };
    let count = word(0)?;
    if count > MAX_HEADERS {
        return None;
    }
    let mut lengths = Vec::new();
    for i in 0..count {
        lengths.push((word(4 + 8 * i)?, word(8 + 8 * i)?));
    }
    let mut cursor = 4 + 8 * count;
    let mut take = |len: usize| -> Option<&[u8]> {
        let end = cursor.checked_add(len)?;
        let piece = bytes.get(cursor..end)?;
        (bytes.get(end) == Some(&0)).then_some(())?;
        cursor = end + 1;
        Some(piece)
    };
    let mut pairs = Vec::new();
    for (name_len, value_len) in lengths {
        let name = take(name_len)?;
        let value = take(value_len)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// `HeaderMap::parse` agrees with the reference reading, header by header.
pub fn pairs(bytes: &[u8]) {
    let parsed = HeaderMap::parse(bytes);
    let reference = reference_pairs(bytes);
    assert_eq!(
        parsed.is_some(),
        reference.is_some(),
        "accepts what the format allows"
    );
    let (Some(map), Some(pairs)) = (parsed, reference) else {
        return;
    };
    assert_eq!(map.len(), pairs.len());
    for (name, _) in &pairs {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let first = pairs.iter().find(|(n, _)| *n == name.as_bytes()).unwrap().1;
        assert_eq!(map.get(name), Some(first), "first value of {name:?}");
        let count = pairs.iter().filter(|(n, _)| *n == name.as_bytes()).count();
        assert_eq!(map.count(name), count, "count of {name:?}");
    }
}

fn single<'a>(values: &[&'a [u8]]) -> Single<'a> {
    match values {
        [] => Single::Absent,
        [one] => Single::One(one),
        _ => Single::Repeated,
    }
}

/// What `RequestFacts::from_pairs` (the adapter's one read of a request's headers) takes
/// from a pairs buffer is exactly what the buffer says, and it refuses exactly the buffers
/// the format does not allow.
pub fn request_facts(buffer: &[u8]) {
    let facts = RequestFacts::from_pairs(buffer);
    let reference = reference_pairs(buffer);
    assert_eq!(
        facts.is_some(),
        reference.is_some(),
        "reads what the format allows"
    );
    let (Some(facts), Some(pairs)) = (facts, reference) else {
        return;
    };
    let values = |name: &str| -> Vec<&[u8]> {
        pairs
            .iter()
            .filter(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| *v)
            .collect()
    };
    let text = |name: &str| {
        values(name)
            .first()
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or_default()
    };
    assert_eq!(facts.method, text(":method"));
    assert_eq!(facts.path, text(":path"));
    assert_eq!(facts.authorization, single(&values("authorization")));
    assert_eq!(facts.x_api_key, single(&values("x-api-key")));
    assert_eq!(facts.xfcc, single(&values("x-forwarded-client-cert")));
    assert_eq!(
        facts.cors_request_method,
        !values("access-control-request-method").is_empty()
    );
    assert_eq!(facts.has_user_id, !values("x-user-id").is_empty());
    let overridden = METHOD_OVERRIDE_HEADERS
        .iter()
        .any(|h| !values(h).is_empty());
    assert_eq!(facts.method_override, overridden);
    let bare = facts.bare_path();
    assert!(facts.path.starts_with(bare));
    assert!(!bare.contains(['?', '#']));
    let rest = &facts.path[bare.len()..];
    assert!(rest.is_empty() || rest.starts_with(['?', '#']));
}

fn trim_blanks(value: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().take_while(|b| blank(b)).count();
    let rest = &value[start..];
    let end = rest.len() - rest.iter().rev().take_while(|b| blank(b)).count();
    &rest[..end]
}

/// The value after a case-insensitive `Bearer` scheme, or None for any other scheme.
pub fn reference_bearer(value: &[u8]) -> Option<&[u8]> {
    let value = trim_blanks(value);
    let split = value
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(split);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| trim_blanks(rest))
}

/// Which kind of credential a request presents (contract section 4, step 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ApiKey,
    Jwt,
}

/// A credential header that is malformed or repeated (contract: 401, no callout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The contract's reading of the credential headers: Ok(None) for no credential.
pub fn reference_credential(
    authorization: &[&[u8]],
    x_api_key: &[&[u8]],
) -> Result<Option<(Kind, String)>, Malformed> {
    let usable = |value: &[u8], max: usize| -> Result<String, Malformed> {
        let ok = !value.is_empty() && value.len() <= max && value.iter().all(u8::is_ascii_graphic);
        ok.then(|| String::from_utf8(value.to_vec()).unwrap())
            .ok_or(Malformed)
    };
    match authorization {
        [] => {}
        [one] => {
            if let Some(value) = reference_bearer(one) {
                return if is_jwt_shaped(value) {
                    usable(value, MAX_JWT_LEN).map(|v| Some((Kind::Jwt, v)))
                } else {
                    usable(value, MAX_KEY_LEN).map(|v| Some((Kind::ApiKey, v)))
                };
            }
        }
        _ => return Err(Malformed),
    }
    match x_api_key {
        [] => Ok(None),
        [one] => usable(trim_blanks(one), MAX_KEY_LEN).map(|v| Some((Kind::ApiKey, v))),
        _ => Err(Malformed),
    }
}

/// `find_credential` finds what the contract says, and only a well-formed value.
pub fn request_credential(authorization: &[&[u8]], x_api_key: &[&[u8]]) {
    let found = find_credential(single(authorization), single(x_api_key));
    let expected = reference_credential(authorization, x_api_key);
    let got = match &found {
        Lookup::Missing => Ok(None),
        Lookup::Malformed => Err(Malformed),
        Lookup::Found(p) => {
            let kind = match p.kind {
                credential::Kind::ApiKey => Kind::ApiKey,
                credential::Kind::Jwt => Kind::Jwt,
            };
            Ok(Some((kind, p.expose().to_string())))
        }
    };
    assert_eq!(
        got, expected,
        "credential of {authorization:?} / {x_api_key:?}"
    );
    if let Lookup::Found(s) = &found {
        let fingerprint = format!("{:?}({})", s.kind, s.digest().fingerprint());
        assert_eq!(
            format!("{s:?}"),
            fingerprint,
            "Debug shows only a fingerprint"
        );
    }
}

/// `is_jwt_shaped`: three base64url segments, the first a JSON object with a string `alg`.
pub fn request_jwt_shape(value: &[u8]) {
    let shaped = is_jwt_shaped(value);
    let segments: Vec<&[u8]> = value.split(|b| *b == b'.').collect();
    let base64url = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    };
    let header_alg = segments.first().and_then(|h| {
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .ok()?;
        read_object::<SaidHeader>(&json)?
            .alg
            .map(|alg| !alg.is_empty())
    });
    let expected = segments.len() == 3
        && !segments[0].is_empty()
        && !segments[1].is_empty()
        && value.len() <= MAX_JWT_LEN
        && segments.iter().all(|s| base64url(s))
        && header_alg == Some(true);
    assert_eq!(
        shaped,
        expected,
        "JWT shape of {:?}",
        String::from_utf8_lossy(value)
    );
}

/// The `Cert="..."` fields of an XFCC, found the obvious way: walk the header, and at each
/// field start (the beginning, or just after a `;`) outside a value already taken, look for
/// the field name.
fn reference_cert_fields(header: &[u8]) -> Vec<&[u8]> {
    let mut found = Vec::new();
    if header.len() > MAX_XFCC_LEN {
        return found;
    }
    let mut i = 0;
    while i < header.len() && found.len() < MAX_CERT_FIELDS {
        let starts_field = i == 0 || header[i - 1] == b';';
        if starts_field && header[i..].starts_with(b"Cert=\"") {
            let value_start = i + 6;
            match header[value_start..].iter().position(|b| *b == b'"') {
                Some(len) => {
                    found.push(&header[value_start..value_start + len]);
                    i = value_start + len + 1;
                    continue;
                }
                None => break,
            }
        }
        i += 1;
    }
    found
}

/// `xfcc::cert_fields` finds exactly the `Cert=` fields a reading of the format finds, and
/// whatever it finds decodes or fails without a panic.
pub fn identity_xfcc(header: &[u8]) {
    let fields: Vec<&[u8]> = xfcc::cert_fields(header).collect();
    assert_eq!(
        fields,
        reference_cert_fields(header),
        "{:?}",
        String::from_utf8_lossy(header)
    );
    for field in fields {
        assert!(!field.contains(&b'"'));
        if let Some(der) = xfcc::der_of(field) {
            identity_certificate(&der);
        }
    }
}

/// `PeerCertificate::from_der` on any bytes, and the same bytes inside a PEM inside a
/// `Cert=` field (so the X.509 parser itself gets them); what it reads matches itself.
pub fn identity_certificate(der: &[u8]) {
    if let Some(cert) = PeerCertificate::from_der(der) {
        assert_eq!(cert.allowed_as(&[]), None);
        if let Some(uri) = cert.uris.first() {
            assert_eq!(cert.allowed_as(std::slice::from_ref(uri)), Some(0));
        }
    }
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    );
    let decoded = xfcc::der_of(percent_encode(&pem).as_bytes());
    assert_eq!(decoded.as_deref(), (!der.is_empty()).then_some(der));
}

/// Percent-encodes all but unreserved characters, as Envoy does for `Cert=`.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The peer the core reads from an XFCC for a connection whose certificate hashes to
/// `digest`: a certificate from one of the header's `Cert=` fields with exactly that digest,
/// or none; and it matches an allow-list entry only when one of its SANs, or its one CN,
/// equals the entry byte for byte.
pub fn identity_allow_list(
    header: &[u8],
    digest: &[u8; 32],
    allowed: &[String],
) -> Option<PeerCertificate> {
    let cert = verified_certificate(header, digest);
    let reference = reference_cert_fields(header)
        .into_iter()
        .filter_map(xfcc::der_of)
        .find(|der| Sha256::digest(der).as_slice() == digest)
        .and_then(|der| PeerCertificate::from_der(&der));
    assert_eq!(
        cert, reference,
        "not the certificate with the connection's digest"
    );
    let cert = cert?;
    let exact = |id: &String| {
        cert.uris.contains(id)
            || cert.dns.contains(id)
            || cert.common_names.as_slice() == std::slice::from_ref(id)
    };
    // The first of its identities (URI SANs, DNS SANs, the one CN) that is listed wins.
    let lone_cn = match cert.common_names.as_slice() {
        [cn] => Some(cn),
        _ => None,
    };
    let first_listed = cert
        .uris
        .iter()
        .chain(&cert.dns)
        .chain(lone_cn)
        .find(|id| allowed.contains(id));
    match cert.allowed_as(allowed) {
        Some(i) => {
            assert!(
                exact(&allowed[i]),
                "{:?} is not the certificate's",
                allowed[i]
            );
            assert_eq!(
                Some(&allowed[i]),
                first_listed,
                "not the first listed identity"
            );
        }
        None => assert!(
            !allowed.iter().any(exact),
            "a listed identity went unmatched"
        ),
    }
    Some(cert)
}

fn header_safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && !value.chars().any(char::is_control)
        && value.trim() == value
}

fn token_safe(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && value.bytes().all(|b| b.is_ascii_graphic())
}

/// A JSON object read as any reader that ignores unknown members reads it: only the members
/// asked for must be well-formed (serde_json skips the others without checking their UTF-8 or
/// their numbers' range, and so do we). None for anything but an object.
pub fn read_object<T: serde::de::DeserializeOwned>(json: &[u8]) -> Option<T> {
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    serde_json::from_slice(json).ok()
}

#[derive(serde::Deserialize)]
struct SaidHeader {
    alg: Option<String>,
}

/// What an auth service's reply body says, member by member (contract section 6); `valid`
/// and `service_id` as whatever JSON value stands there, `null` included.
#[derive(serde::Deserialize)]
pub struct SaidReply {
    #[serde(default, deserialize_with = "member")]
    pub valid: Option<Value>,
    #[serde(default, deserialize_with = "member")]
    pub service_id: Option<Value>,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub rate_limit_per_hour: Option<u64>,
    pub expires_at: Option<String>,
}

fn member<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// What a verified payload (jwt_authn's, as JSON) lets a token claim, read from the JSON and
/// its types, independently of how Envoy serializes it: the `sub` (a string; a number as the
/// bytes of its double, a boolean as one byte, which Envoy would hand over the same way) and
/// the tokens a scope may be taken from. `scope`, unless absent or null, is the only source:
/// a string without NUL and not of a double's length, split on single spaces; `scopes`
/// otherwise: the string items of a list with no null anywhere in it. Any other shape
/// allows nothing.
pub fn reference_jwt_claims(payload: &Value) -> (Option<Vec<u8>>, Vec<Vec<u8>>) {
    fn has_null(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Array(items) => items.iter().any(has_null),
            Value::Object(members) => members.values().any(has_null),
            _ => false,
        }
    }
    let sub = match payload.get("sub") {
        Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
        Some(Value::Number(n)) => n.as_f64().map(|f| f.to_le_bytes().to_vec()),
        Some(Value::Bool(b)) => Some(vec![u8::from(*b)]),
        _ => None,
    };
    let allowed = match (payload.get("scope"), payload.get("scopes")) {
        (Some(scope), _) if !scope.is_null() => match scope {
            Value::String(s) if !s.contains('\0') && s.len() != 8 => {
                s.split(' ').map(|t| t.as_bytes().to_vec()).collect()
            }
            _ => Vec::new(),
        },
        (_, Some(Value::Array(items))) if !items.iter().any(has_null) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| s.len() != 8)
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        _ => Vec::new(),
    };
    (sub, allowed)
}

/// `jwt_claims::verified_claims` on a payload jwt_authn verified (JSON; anything else is
/// taken as a JSON string), read as Envoy hands metadata over: a header-safe `sub` that is
/// the payload's own, and only scopes the reference allows; every allowed token that is a
/// scope token is granted.
pub fn identity_jwt_claims(payload: &[u8]) {
    let payload: Value = serde_json::from_slice(payload)
        .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(payload).into_owned()));
    let got = jwt_claims::verified_claims(|path| metadata_value(&payload, path));
    let (sub, allowed) = reference_jwt_claims(&payload);
    let usable = sub
        .as_deref()
        .and_then(|s| std::str::from_utf8(s).ok())
        .filter(|s| header_safe(s));
    let Some(claims) = got else {
        assert_eq!(usable, None, "a usable sub refused");
        return;
    };
    assert_eq!(Some(claims.sub.as_str()), usable, "not the verified sub");
    for scope in &claims.scopes {
        assert!(token_safe(scope), "scope {scope:?}");
        assert!(
            allowed.iter().any(|a| a == scope.as_bytes()),
            "{scope:?} was not claimed"
        );
    }
    for token in &allowed {
        if let Ok(token) = std::str::from_utf8(token) {
            if token_safe(token) {
                assert!(
                    claims.scopes.iter().any(|s| s == token),
                    "{token:?} dropped"
                );
            }
        }
    }
}

/// What an auth-service reply may become (contract section 5): an allow only from a 200 whose
/// body is a JSON object naming usable ids, a denial only from what says so.
pub fn auth_service_reply(status: Option<u16>, body: &[u8], retry_after: Option<&[u8]>, now: i64) {
    const SERVICE: &str = "ml-platform";
    let outcome = interpret(status, body, retry_after, now, SERVICE);
    let object = || read_object::<SaidReply>(body).filter(|_| body.len() <= MAX_REPLY_BYTES);
    match (&outcome, status) {
        (ValidationOutcome::Verdict(Verdict::Allow(grant)), Some(200)) => {
            let said = object().expect("an allow from a body that is a JSON object");
            assert!(
                matches!(said.valid, None | Some(Value::Bool(true))),
                "valid {:?}",
                said.valid
            );
            assert!(
                match &said.service_id {
                    None => true,
                    Some(Value::String(s)) => s.as_str() == SERVICE,
                    Some(_) => false,
                },
                "service_id {:?}",
                said.service_id
            );
            assert_eq!(said.key_id.as_deref(), Some(&*grant.key_id));
            assert_eq!(said.user_id.as_deref(), Some(&*grant.user_id));
            assert_eq!(said.scopes.unwrap_or_default(), grant.scopes);
            assert!(header_safe(&grant.key_id) && header_safe(&grant.user_id));
            assert!(grant.scopes.iter().all(|s| token_safe(s)));
            assert!(grant.expires_at.is_none_or(|at| at > now), "expired allow");
        }
        (ValidationOutcome::Verdict(Verdict::Deny(Denial::Invalid)), Some(401 | 200)) => {}
        (ValidationOutcome::Verdict(Verdict::Deny(Denial::Forbidden)), Some(403)) => {}
        (ValidationOutcome::Verdict(Verdict::Deny(Denial::Forbidden)), Some(200)) => {
            let said = object().expect("a 200 denial from a JSON object");
            assert!(
                matches!(&said.service_id, Some(Value::String(s)) if s.as_str() != SERVICE),
                "a 200 is forbidden only for another service's key"
            );
        }
        (ValidationOutcome::RateLimited { retry_after_s }, Some(429)) => {
            assert!((1..=3600).contains(retry_after_s));
        }
        (ValidationOutcome::Unavailable(_), _) => {
            assert!(
                !matches!(status, Some(401 | 403 | 429)),
                "{status:?} is a verdict"
            );
        }
        (outcome, status) => panic!("{status:?} cannot mean {outcome:?}"),
    }
    if status == Some(200) && !matches!(outcome, ValidationOutcome::Unavailable(_)) {
        assert!(
            object().is_some(),
            "a verdict from a body that is no JSON object"
        );
    }
}

/// A configuration either loads within the documented ranges (and builds a worker), or is
/// refused naming a field.
pub fn config(bytes: &[u8]) {
    match FilterConfig::parse(bytes) {
        Ok(config) => {
            assert!((1..=60_000).contains(&config.timeout_ms));
            assert!((1..=100_000).contains(&config.max_pending_callouts));
            assert!((1..=1_000_000).contains(&config.cache.max_entries));
            for list in [
                &config.scopes.read,
                &config.scopes.write,
                &config.internal.scopes,
            ] {
                assert!(!list.is_empty());
                assert!(list
                    .iter()
                    .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())));
            }
            for path in config.exempt_paths.iter().chain([&config.validate_path]) {
                assert!(path.starts_with('/'));
            }
            let _ = Worker::new(config, None);
        }
        Err(e) => {
            // Empty only when the offending key is itself "" (`{"": 1}`).
            assert!(
                !e.field.is_empty() || e.reason.starts_with("unknown field ``"),
                "{e}"
            );
            assert!(e.to_string().contains(&e.field));
        }
    }
}

/// `required_access`: never decided by the query or fragment.
pub fn request_scope(method: &str, path: &str, suffix: &str) {
    let access = required_access(method, path);
    let bare = path.split(['?', '#']).next().unwrap_or_default();
    assert_eq!(required_access(method, bare), access, "{method} {path}");
    assert_eq!(required_access(method, &format!("{bare}?{suffix}")), access);
    assert_eq!(required_access(method, &format!("{bare}#{suffix}")), access);
}

/// On `mlflow-artifacts` routes only GET and HEAD read; the caller's path never decides
/// (contract section 7).
pub fn request_artifact_scope(method: &str, rest: &str) {
    let path = format!("/api/2.0/mlflow-artifacts/artifacts/{rest}");
    if !method.eq_ignore_ascii_case("GET") && !method.eq_ignore_ascii_case("HEAD") {
        assert_eq!(
            required_access(method, &path),
            Access::Write,
            "{method} {path}"
        );
    }
}

/// Days since 1970-01-01, counted one year and one month at a time.
pub fn reference_days(year: i64, month: u32, day: u32) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let year_days = |y: i64| if leap(y) { 366 } else { 365 };
    let mut days: i64 = 0;
    if year >= 1970 {
        days += (1970..year).map(year_days).sum::<i64>();
    } else {
        days -= (year..1970).map(year_days).sum::<i64>();
    }
    let months = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += months[..month as usize - 1].iter().sum::<i64>();
    days + i64::from(day) - 1
}

/// `hokusai_rfc3339::parse` accepts only the RFC 3339 shape, and means by it what the reference means.
pub fn rfc3339(text: &str) {
    let Some(seconds) = hokusai_rfc3339::parse(text) else {
        return;
    };
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| text[r].parse::<u32>().unwrap();
    assert!(b[..19].iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => matches!(c, b'T' | b't' | b' '),
        13 | 16 => *c == b':',
        _ => c.is_ascii_digit(),
    }));
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    let (hour, minute, second) = (num(11..13), num(14..16), num(17..19));
    assert!(hour <= 23 && minute <= 59 && second <= 60);
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        assert!(digits > 0);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = if rest.starts_with('+') { 1 } else { -1 };
            assert!(rest.len() == 6 && rest.as_bytes()[3] == b':');
            let (h, m) = (
                rest[1..3].parse::<i64>().unwrap(),
                rest[4..6].parse::<i64>().unwrap(),
            );
            assert!(h <= 23 && m <= 59);
            sign * (h * 3600 + m * 60)
        }
    };
    let expected = reference_days(year.into(), month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset;
    assert_eq!(seconds, expected, "{text}");
}

/// The validation request always is JSON carrying exactly the credential, as its transport says.
pub fn auth_service_call(
    transport: CredentialTransport,
    jwt_callout: bool,
    authorization: &[u8],
    source: &str,
    request_id: Option<&str>,
    service_token: Option<&str>,
) {
    let ip = client_ip(source);
    assert!(source.contains(ip));
    let mut config = FilterConfig {
        credential_transport: transport,
        ..FilterConfig::default()
    };
    if jwt_callout {
        config.jwt.mode = JwtMode::Callout;
    }
    let Lookup::Found(presented) = find_credential(Single::One(authorization), Single::Absent)
    else {
        return;
    };
    let credential = presented.to_credential();
    let call = validation_call(&config, &credential, ip, request_id, service_token);
    let body: Value = serde_json::from_slice(&call.body).expect("the body is JSON");
    let header = |name: &str| {
        call.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(":method"), Some("POST"));
    assert_eq!(body["service_id"], config.service_id.as_str());
    assert_eq!(body["client_ip"], ip);
    assert_eq!(header("x-request-id"), request_id);
    let (secret, path, transport) = match &credential {
        Credential::ApiKey(s) => (s.expose(), &config.validate_path, transport),
        Credential::Jwt(s) => (
            s.expose(),
            &config.jwt.validate_path,
            CredentialTransport::Bearer,
        ),
    };
    assert_eq!(header(":path"), Some(path.as_str()));
    let bearer = header("authorization");
    match transport {
        CredentialTransport::Body => {
            assert_eq!(body["api_key"], secret);
            assert_eq!(
                bearer,
                service_token.map(|t| format!("Bearer {t}")).as_deref()
            );
        }
        CredentialTransport::Bearer => {
            assert!(body.get("api_key").is_none());
            assert_eq!(bearer, Some(format!("Bearer {secret}").as_str()));
        }
        CredentialTransport::Both => {
            assert_eq!(body["api_key"], secret);
            assert_eq!(bearer, Some(format!("Bearer {secret}").as_str()));
        }
    }
}

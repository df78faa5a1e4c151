//! Dev JWTs, as the login service would issue them: ES256 (ECDSA P-256, SHA-256)
//! signed with `certs/jwt-signing.key`, whose public half `make certs` writes to
//! `certs/jwks.json` for Envoy's `jwt_authn`.
//!
//! [`mint`] also makes the broken tokens tests need (expired, not yet valid, wrong
//! issuer or audience, corrupted signature, `alg: none`, another key), and [`verify`]
//! is the check behind the dev service's `/api/v1/validate`, with the same rules and
//! clock skew as `jwt_authn`'s defaults.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The dev login service's `iss`; `provider hokusai_login` in envoy/envoy.yaml.
pub const DEV_ISSUER: &str = "https://login.hokus.ai";
/// The audience tokens for MLflow carry; the provider's only `audiences` entry.
pub const DEV_AUDIENCE: &str = "mlflow";
/// Lifetime of a minted token unless told otherwise.
pub const DEFAULT_TTL_S: i64 = 3600;
/// Leeway on `exp` and `nbf`, as `jwt_authn`'s default `clock_skew_seconds`.
pub const CLOCK_SKEW_S: i64 = 60;
/// Where `make certs` writes the signing key, relative to the repo root.
pub const DEV_SIGNING_KEY_PATH: &str = "certs/jwt-signing.key";

/// Tokens longer than this are refused unread (Envoy's header limit is 60 KiB).
const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// The key file cannot be read or is not an EC P-256 private key.
    Key(String),
    /// Not three base64url segments with JSON header and claims.
    Malformed(&'static str),
    /// The header's `alg` is not ES256 (`none` and HS256 included).
    Algorithm(String),
    /// The header names a `kid` that is not the key's.
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// A required claim (`sub`, `exp`) is absent or of the wrong type.
    MissingClaim(&'static str),
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::Key(why) => write!(f, "signing key: {why}"),
            JwtError::Malformed(why) => write!(f, "malformed token: {why}"),
            JwtError::Algorithm(alg) => write!(f, "algorithm {alg:?} is not accepted"),
            JwtError::UnknownKid => f.write_str("unknown kid"),
            JwtError::BadSignature => f.write_str("bad signature"),
            JwtError::Expired => f.write_str("token expired"),
            JwtError::NotYetValid => f.write_str("token not yet valid"),
            JwtError::WrongIssuer => f.write_str("wrong issuer"),
            JwtError::WrongAudience => f.write_str("wrong audience"),
            JwtError::MissingClaim(c) => write!(f, "claim {c} missing or invalid"),
        }
    }
}

impl std::error::Error for JwtError {}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An ES256 key pair and its `kid` (the RFC 7638 thumbprint of the public key,
/// which is also what `certs/generate.sh` writes into `jwks.json`).
#[derive(Clone)]
pub struct JwtKey {
    signing: SigningKey,
    kid: String,
}

impl fmt::Debug for JwtKey {
    // Never the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey").field("kid", &self.kid).finish()
    }
}

impl JwtKey {
    /// A PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, what `make certs` writes)
    /// or SEC1 (`BEGIN EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<JwtKey, JwtError> {
        let secret = p256::SecretKey::from_pkcs8_pem(pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(pem))
            .map_err(|_| JwtError::Key("not a PEM EC P-256 private key".into()))?;
        Ok(JwtKey::from_signing(SigningKey::from(secret)))
    }

    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<JwtKey, JwtError> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path)
            .map_err(|e| JwtError::Key(format!("{}: {e}", path.display())))?;
        JwtKey::from_pem(&pem).map_err(|e| JwtError::Key(format!("{}: {e}", path.display())))
    }

    /// A fresh random key: "signed by some other key" in tests.
    pub fn generate() -> JwtKey {
        JwtKey::from_signing(SigningKey::random(&mut rand_core::OsRng))
    }

    fn from_signing(signing: SigningKey) -> JwtKey {
        let (x, y) = public_xy(signing.verifying_key());
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        JwtKey { signing, kid }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        let (x, y) = public_xy(self.signing.verifying_key());
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid, "x": x, "y": y})
    }

    /// `{"keys": [jwk]}`, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk()] })
    }

    fn verifying_key(&self) -> &VerifyingKey {
        self.signing.verifying_key()
    }
}

/// base64url x and y of an uncompressed P-256 point.
fn public_xy(key: &VerifyingKey) -> (String, String) {
    let point = key.to_encoded_point(false);
    let x = point.x().map(|x| URL_SAFE_NO_PAD.encode(x));
    let y = point.y().map(|y| URL_SAFE_NO_PAD.encode(y));
    // An uncompressed point always has both coordinates.
    (x.unwrap_or_default(), y.unwrap_or_default())
}

/// Which claim carries the scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeClaim {
    /// `"scope": "mlflow:read mlflow:write"` (OAuth 2.0 style; the default).
    Scope,
    /// `"scopes": ["mlflow:read", "mlflow:write"]`.
    Scopes,
}

/// The `kid` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kid {
    /// The signing key's own kid (the default).
    OfKey,
    Named(String),
    Absent,
}

/// How the token is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// ES256 with the given key (the default).
    Es256,
    /// ES256, then one signature byte flipped: a bad signature of the right shape.
    Corrupted,
    /// `"alg": "none"` and an empty signature segment (RFC 7519 unsecured JWT).
    AlgNone,
}

/// What to put in a token. `MintOptions::new` gives a valid dev token; change
/// fields to get the broken ones.
#[derive(Debug, Clone)]
pub struct MintOptions {
    pub sub: String,
    pub scopes: Vec<String>,
    pub scope_claim: ScopeClaim,
    pub iss: String,
    /// One entry is written as a string claim, several as an array, none omits `aud`.
    pub aud: Vec<String>,
    /// `iat`; `None` means now.
    pub issued_at: Option<i64>,
    /// `exp` = `iat` + `ttl_s` (negative: already expired).
    pub ttl_s: i64,
    /// `nbf`, absolute Unix seconds; `None` omits it.
    pub not_before: Option<i64>,
    /// `jti`; `None` omits it.
    pub jti: Option<String>,
    pub kid: Kid,
    pub signing: Signing,
    /// More claims, written last (so they can also override the ones above).
    pub extra: Map<String, Value>,
}

impl MintOptions {
    pub fn new(sub: &str, scopes: &[&str]) -> MintOptions {
        MintOptions {
            sub: sub.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            scope_claim: ScopeClaim::Scope,
            iss: DEV_ISSUER.to_owned(),
            aud: vec![DEV_AUDIENCE.to_owned()],
            issued_at: None,
            ttl_s: DEFAULT_TTL_S,
            not_before: None,
            jti: Some(random_jti()),
            kid: Kid::OfKey,
            signing: Signing::Es256,
            extra: Map::new(),
        }
    }

    /// The claims this would write, given the time `now`.
    pub fn claims(&self, now: i64) -> Map<String, Value> {
        let iat = self.issued_at.unwrap_or(now);
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.iss));
        claims.insert("sub".into(), json!(self.sub));
        match self.aud.as_slice() {
            [] => {}
            [one] => {
                claims.insert("aud".into(), json!(one));
            }
            many => {
                claims.insert("aud".into(), json!(many));
            }
        }
        claims.insert("iat".into(), json!(iat));
        claims.insert("exp".into(), json!(iat.saturating_add(self.ttl_s)));
        if let Some(nbf) = self.not_before {
            claims.insert("nbf".into(), json!(nbf));
        }
        if let Some(jti) = &self.jti {
            claims.insert("jti".into(), json!(jti));
        }
        match self.scope_claim {
            ScopeClaim::Scope => claims.insert("scope".into(), json!(self.scopes.join(" "))),
            ScopeClaim::Scopes => claims.insert("scopes".into(), json!(self.scopes)),
        };
        for (name, value) in &self.extra {
            claims.insert(name.clone(), value.clone());
        }
        claims
    }
}

/// 128 random bits, hex: a unique `jti`.
fn random_jti() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compact JWS for `opts`, signed (or not, or badly) with `key`.
pub fn mint(key: &JwtKey, opts: &MintOptions) -> String {
    let alg = match opts.signing {
        Signing::AlgNone => "none",
        Signing::Es256 | Signing::Corrupted => "ES256",
    };
    let mut header = Map::new();
    header.insert("alg".into(), json!(alg));
    header.insert("typ".into(), json!("JWT"));
    match &opts.kid {
        Kid::OfKey => {
            header.insert("kid".into(), json!(key.kid()));
        }
        Kid::Named(kid) => {
            header.insert("kid".into(), json!(kid));
        }
        Kid::Absent => {}
    }
    let signing_input = format!(
        "{}.{}",
        b64_json(&Value::Object(header)),
        b64_json(&Value::Object(opts.claims(now_unix())))
    );
    let signature = match opts.signing {
        Signing::AlgNone => Vec::new(),
        Signing::Es256 => sign(key, &signing_input),
        Signing::Corrupted => {
            let mut sig = sign(key, &signing_input);
            sig[10] ^= 0x01;
            sig
        }
    };
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn sign(key: &JwtKey, input: &str) -> Vec<u8> {
    // RFC 6979 deterministic ECDSA; JWS wants the raw 64-byte r || s.
    let sig: Signature = key.signing.sign(input.as_bytes());
    sig.to_bytes().to_vec()
}

/// What a token must say to be accepted.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub issuer: String,
    /// The token's `aud` must name at least one of these.
    pub audiences: Vec<String>,
    pub clock_skew_s: i64,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations {
            issuer: DEV_ISSUER.to_owned(),
            audiences: vec![DEV_AUDIENCE.to_owned()],
            clock_skew_s: CLOCK_SKEW_S,
        }
    }
}

/// The claims of a token that passed [`verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub sub: String,
    /// From `scope` (space-separated) or, failing that, `scopes` (array).
    pub scopes: Vec<String>,
    pub jti: Option<String>,
    pub exp: i64,
    pub claims: Map<String, Value>,
}

/// Checks a compact JWS: ES256 only, signature by `key`, `exp` and `nbf` within the
/// skew, `iss`, `aud`, and a string `sub`.
pub fn verify(
    key: &JwtKey,
    token: &str,
    expect: &Expectations,
    now: i64,
) -> Result<Verified, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three segments"));
    };
    let header = json_segment(h).ok_or(JwtError::Malformed("header is not base64url JSON"))?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "ES256" {
        return Err(JwtError::Algorithm(alg.to_owned()));
    }
    if header.contains_key("crit") {
        return Err(JwtError::Malformed("crit header not supported"));
    }
    match header.get("kid") {
        None => {}
        Some(Value::String(kid)) if kid == key.kid() => {}
        Some(_) => return Err(JwtError::UnknownKid),
    }
    let sig_bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let signature = Signature::from_slice(&sig_bytes).map_err(|_| JwtError::BadSignature)?;
    let signing_input = &token[..h.len() + 1 + c.len()];
    key.verifying_key()
        .verify(signing_input.as_bytes(), &signature)
        .map_err(|_| JwtError::BadSignature)?;

    let claims = json_segment(c).ok_or(JwtError::Malformed("claims are not base64url JSON"))?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtError::MissingClaim("exp"))?;
    if now > exp.saturating_add(expect.clock_skew_s) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_i64().ok_or(JwtError::MissingClaim("nbf"))?;
        if now.saturating_add(expect.clock_skew_s) < nbf {
            return Err(JwtError::NotYetValid);
        }
    }
    if claims.get("iss").and_then(Value::as_str) != Some(expect.issuer.as_str()) {
        return Err(JwtError::WrongIssuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => expect.audiences.contains(aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| expect.audiences.iter().any(|want| want == aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(JwtError::WrongAudience);
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(JwtError::MissingClaim("sub"))?
        .to_owned();
    let scopes = match (claims.get("scope"), claims.get("scopes")) {
        (Some(Value::String(scope)), _) => scope.split_whitespace().map(str::to_owned).collect(),
        (_, Some(Value::Array(list))) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let jti = claims.get("jti").and_then(Value::as_str).map(str::to_owned);
    Ok(Verified {
        sub,
        scopes,
        jti,
        exp,
        claims,
    })
}

fn json_segment(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Decodes a token's claims without checking anything: for tests and tools that
/// want to look inside a token they just minted.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    json_segment(token.split('.').nth(1)?)
}

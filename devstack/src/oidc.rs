//! A minimal OpenID Connect provider for the local stack, so Envoy's `oauth2` filter can sign
//! people in to MLflow's web UI: the authorization-code flow with PKCE, for one registered
//! confidential client (Envoy).
//!
//! - `GET /.well-known/openid-configuration`: the discovery document;
//! - `GET /oauth2/authorize`: a sign-in form for the dev users; `POST` of that form answers
//!   with a one-time code, sent back to the client's registered redirect URI;
//! - `POST /oauth2/token`: that code (client secret, and the PKCE verifier when the
//!   authorization asked for one) for an access token, the same ES256 JWT `jwt_authn` already
//!   trusts (issuer, audience, the user's scopes), plus an ID token for the client;
//! - `GET /oauth2/logout`: the end-session endpoint; it keeps no session of its own, so it
//!   only sends the browser on to a registered post-logout URI (see [`post_logout_target`]).
//!
//! Nothing is trusted from the browser: an unknown client or a redirect URI that is not
//! registered gets an error page (never a redirect), codes are random, live 60 s and are
//! used once, and every reflected value is HTML-escaped. Dev only: the users' passwords are
//! public.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth_service::{read_body, Outcome};
use crate::jwt;
use crate::login::{DevLogin, DevUser, DEV_USERS};
use crate::server::{json_response, Body};

pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
pub const AUTHORIZE_PATH: &str = "/oauth2/authorize";
pub const TOKEN_PATH: &str = "/oauth2/token";
pub const END_SESSION_PATH: &str = "/oauth2/logout";

/// The client id `make run` and the tests register for Envoy.
pub const DEV_CLIENT_ID: &str = "hokusai-mlflow-ui";

/// How long a code may wait for its exchange (RFC 6749 advises minutes at most).
const CODE_TTL: Duration = Duration::from_secs(60);
/// Outstanding codes kept at most; the oldest make way (a flood of sign-ins cannot grow it).
const MAX_CODES: usize = 1024;
/// Forms and token requests are tiny.
const MAX_FORM_BODY: usize = 16 * 1024;

/// The one client this provider knows, as an operator would register Envoy at a real one.
#[derive(Debug, Clone)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    /// Exact URIs a code may be sent to (`http://127.0.0.1:10000/mlflow/oauth2/callback`).
    pub redirect_uris: Vec<String>,
    /// Exact URIs the end-session endpoint may send a signed-out browser to.
    pub post_logout_redirect_uris: Vec<String>,
}

/// What the provider says about itself; `base_url` is where browsers and Envoy reach it.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub base_url: String,
    pub client: OidcClient,
}

struct Grant {
    user: &'static DevUser,
    client_id: String,
    redirect_uri: String,
    /// The S256 challenge, when the authorization request carried one.
    code_challenge: Option<String>,
    nonce: Option<String>,
    issued: Instant,
}

/// The provider: settings and the outstanding codes (by the SHA-256 of the code).
pub(crate) struct Oidc {
    settings: OidcSettings,
    codes: Mutex<HashMap<[u8; 32], Grant>>,
}

impl Oidc {
    pub(crate) fn new(settings: OidcSettings) -> Oidc {
        Oidc {
            settings,
            codes: Mutex::new(HashMap::new()),
        }
    }
}

pub(crate) fn is_oidc_path(path: &str) -> bool {
    matches!(
        path,
        DISCOVERY_PATH | AUTHORIZE_PATH | TOKEN_PATH | END_SESSION_PATH
    )
}

pub(crate) async fn route(
    oidc: &Oidc,
    login: &DevLogin,
    path: &str,
    req: Request<Incoming>,
) -> Outcome {
    match (path, req.method().clone()) {
        (DISCOVERY_PATH, Method::GET | Method::HEAD) => discovery(oidc, login),
        (AUTHORIZE_PATH, Method::GET) => {
            let query = req.uri().query().unwrap_or("").to_owned();
            authorize_form(oidc, &parse_form(query.as_bytes()), None)
        }
        (AUTHORIZE_PATH, Method::POST) => match read_body(req.into_body(), MAX_FORM_BODY).await {
            Ok(raw) => sign_in(oidc, &parse_form(&raw)),
            Err(_) => page(StatusCode::BAD_REQUEST, "Unreadable form", "", "bad form"),
        },
        (TOKEN_PATH, Method::POST) => {
            let basic = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match read_body(req.into_body(), MAX_FORM_BODY).await {
                Ok(raw) => token(oidc, login, basic.as_deref(), &parse_form(&raw)),
                Err(_) => token_error(StatusCode::BAD_REQUEST, "invalid_request", "unreadable"),
            }
        }
        (END_SESSION_PATH, Method::GET | Method::POST) => {
            let query = req.uri().query().unwrap_or("").to_owned();
            end_session(oidc, &parse_form(query.as_bytes()))
        }
        _ => Outcome::new(
            crate::server::detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
            None,
            "",
        ),
    }
}

type Form = HashMap<String, String>;

/// `application/x-www-form-urlencoded` (also a query string); a repeated name keeps its
/// first value, as a parameter must not be sent twice (RFC 6749 3.1) and later ones are
/// ignored rather than trusted.
fn parse_form(raw: &[u8]) -> Form {
    let mut form = Form::new();
    for (k, v) in form_urlencoded::parse(raw) {
        form.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    form
}

fn discovery(oidc: &Oidc, login: &DevLogin) -> Outcome {
    let base = &oidc.settings.base_url;
    let doc = json!({
        // The issuer the tokens carry, which jwt_authn checks; the dev provider serves it
        // from its local address instead of that URL (docs/deployment.md shows a real one).
        "issuer": login.expect.issuer,
        "authorization_endpoint": format!("{base}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{base}{TOKEN_PATH}"),
        "end_session_endpoint": format!("{base}{END_SESSION_PATH}"),
        "jwks_uri": format!("{base}{}", crate::login::JWKS_PATH),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "mlflow:read", "mlflow:write"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "scope"],
    });
    let body = serde_json::to_vec(&doc).expect("serialisable");
    Outcome::new(json_response(StatusCode::OK, body), None, "")
}

/// The authorization request's parameters, checked in the order RFC 6749 4.1.2.1 asks:
/// client and redirect URI first (an error there is shown, never redirected), the rest after.
struct AuthRequest {
    redirect_uri: String,
    state: Option<String>,
    code_challenge: Option<String>,
    nonce: Option<String>,
    scope: String,
}

enum AuthProblem {
    /// Shown to the user: the client or redirect URI cannot be trusted with a redirect.
    Page(&'static str),
    /// Sent back to the (registered) redirect URI as `error=`.
    Redirect(String, Option<String>, &'static str),
}

fn check_auth_request(oidc: &Oidc, form: &Form) -> Result<AuthRequest, AuthProblem> {
    let client = &oidc.settings.client;
    if form.get("client_id") != Some(&client.client_id) {
        return Err(AuthProblem::Page("Unknown client"));
    }
    let redirect_uri = match form.get("redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.clone(),
        _ => return Err(AuthProblem::Page("This redirect URI is not registered")),
    };
    let state = form.get("state").cloned();
    let back = |error| AuthProblem::Redirect(redirect_uri.clone(), state.clone(), error);
    if form.get("response_type").map(String::as_str) != Some("code") {
        return Err(back("unsupported_response_type"));
    }
    let code_challenge = match (
        form.get("code_challenge"),
        form.get("code_challenge_method"),
    ) {
        (None, None) => None,
        // Only S256: a "plain" challenge is the verifier itself, readable by anyone who
        // sees the redirect.
        (Some(c), Some(m)) if m == "S256" && is_pkce_value(c) => Some(c.clone()),
        _ => return Err(back("invalid_request")),
    };
    Ok(AuthRequest {
        redirect_uri,
        state,
        code_challenge,
        nonce: form.get("nonce").cloned(),
        scope: form.get("scope").cloned().unwrap_or_default(),
    })
}

/// 43 to 128 characters of the unreserved set (RFC 7636 4.1; a S256 challenge is 43).
fn is_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn authorize_form(oidc: &Oidc, form: &Form, error: Option<&str>) -> Outcome {
    match check_auth_request(oidc, form) {
        Ok(req) => {
            let status = if error.is_some() {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            let body = sign_in_page(form, &req, error);
            let note = if error.is_some() {
                "sign-in refused"
            } else {
                ""
            };
            page(status, "Sign in to MLflow", &body, note)
        }
        Err(problem) => auth_problem(problem),
    }
}

fn auth_problem(problem: AuthProblem) -> Outcome {
    match problem {
        AuthProblem::Page(why) => page(StatusCode::BAD_REQUEST, why, "", why),
        AuthProblem::Redirect(uri, state, error) => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("error", error);
            if let Some(state) = &state {
                query.append_pair("state", state);
            }
            redirect(&format!("{uri}?{}", query.finish()), error)
        }
    }
}

/// The form posts every authorization parameter back, so the provider keeps no state
/// between showing it and signing in.
fn sign_in_page(form: &Form, req: &AuthRequest, error: Option<&str>) -> String {
    let mut hidden = String::new();
    let mut names: Vec<&String> = form
        .keys()
        .filter(|k| !matches!(k.as_str(), "username" | "password"))
        .collect();
    names.sort();
    for name in names {
        hidden.push_str(&format!(
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
            html(name),
            html(&form[name])
        ));
    }
    let mut users = String::new();
    for u in DEV_USERS {
        users.push_str(&format!(
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>\n",
            html(u.username),
            html(u.password),
            html(&u.scopes.join(" "))
        ));
    }
    let error = error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>\n", html(e)))
        .unwrap_or_default();
    format!(
        "<h1>Sign in to MLflow</h1>\n\
         <p>Hokusai dev login, for the local stack only. Signing in sends you back to\n\
         <code id=\"redirect\">{redirect}</code>.</p>\n{error}\
         <form method=\"post\" action=\"{AUTHORIZE_PATH}\">\n{hidden}\
         <label>Username <input id=\"username\" name=\"username\" autocomplete=\"username\" autofocus></label>\n\
         <label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\n\
         <button id=\"sign-in\" type=\"submit\">Sign in</button>\n</form>\n\
         <h2>Dev users</h2>\n<p>Public passwords: never use this provider outside a dev machine.</p>\n\
         <table><tr><th>username</th><th>password</th><th>scopes</th></tr>\n{users}</table>\n\
         <p>Requested scope: <code>{scope}</code></p>\n",
        redirect = html(&req.redirect_uri),
        scope = html(&req.scope),
    )
}

fn sign_in(oidc: &Oidc, form: &Form) -> Outcome {
    let req = match check_auth_request(oidc, form) {
        Ok(req) => req,
        Err(problem) => return auth_problem(problem),
    };
    let username = form.get("username").map(String::as_str).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let Some(user) = DEV_USERS
        .iter()
        .find(|u| u.username == username && u.password == password)
    else {
        return authorize_form(oidc, form, Some("Invalid username or password"));
    };
    let code = random_token();
    oidc.store(
        &code,
        Grant {
            user,
            client_id: oidc.settings.client.client_id.clone(),
            redirect_uri: req.redirect_uri.clone(),
            code_challenge: req.code_challenge,
            nonce: req.nonce,
            issued: Instant::now(),
        },
    );
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("code", &code);
    if let Some(state) = &req.state {
        query.append_pair("state", state);
    }
    redirect(
        &format!("{}?{}", req.redirect_uri, query.finish()),
        &format!("signed in user={}", user.username),
    )
}

impl Oidc {
    fn store(&self, code: &str, grant: Grant) {
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        codes.retain(|_, g| g.issued.elapsed() < CODE_TTL);
        if codes.len() >= MAX_CODES {
            if let Some(oldest) = codes.iter().min_by_key(|(_, g)| g.issued).map(|(k, _)| *k) {
                codes.remove(&oldest);
            }
        }
        codes.insert(digest(code), grant);
    }

    /// The grant for `code`, removed whatever happens next: a code is good for one try.
    fn take(&self, code: &str) -> Option<Grant> {
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        codes
            .remove(&digest(code))
            .filter(|g| g.issued.elapsed() < CODE_TTL)
    }
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// 256 random bits, base64url.
fn random_token() -> String {
    use rand_core::RngCore;
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Equal by digest, so the time taken does not tell how much of a guess was right.
fn same_secret(a: &str, b: &str) -> bool {
    digest(a) == digest(b)
}

/// Client authentication (RFC 6749 2.3.1): HTTP Basic with the form-urlencoded id and
/// secret, or both in the body; not both at once.
fn client_authenticated(oidc: &Oidc, basic: Option<&str>, form: &Form) -> bool {
    let client = &oidc.settings.client;
    let (id, secret) = match basic {
        Some(header) => {
            if form.contains_key("client_secret") {
                return false;
            }
            let Some(encoded) = header
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                .map(|(_, v)| v.trim())
            else {
                return false;
            };
            let Some(pair) = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
            else {
                return false;
            };
            let Some((id, secret)) = pair.split_once(':') else {
                return false;
            };
            let decode = |s: &str| -> String {
                form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (decode(id), decode(secret))
        }
        None => match (form.get("client_id"), form.get("client_secret")) {
            (Some(id), Some(secret)) => (id.clone(), secret.clone()),
            _ => return false,
        },
    };
    id == client.client_id && same_secret(&secret, &client.client_secret)
}

fn token(oidc: &Oidc, login: &DevLogin, basic: Option<&str>, form: &Form) -> Outcome {
    if !client_authenticated(oidc, basic, form) {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client", "client refused");
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant type",
        );
    }
    let Some(grant) = form.get("code").and_then(|code| oidc.take(code)) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown code");
    };
    if grant.client_id != oidc.settings.client.client_id
        || form.get("redirect_uri") != Some(&grant.redirect_uri)
    {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs",
        );
    }
    let verifier = form.get("code_verifier");
    let pkce_ok = match (&grant.code_challenge, verifier) {
        (None, None) => true,
        (Some(challenge), Some(v)) => {
            is_pkce_value(v) && URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes())) == *challenge
        }
        _ => false,
    };
    if !pkce_ok {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "PKCE mismatch");
    }
    let user = grant.user;
    let access_token = login.mint(user.username, user.scopes);
    let mut id = jwt::MintOptions::new(user.username, &[]);
    id.iss = login.expect.issuer.clone();
    id.aud = vec![grant.client_id.clone()];
    id.ttl_s = login.token_ttl_s;
    if let Some(nonce) = &grant.nonce {
        id.extra
            .insert("nonce".into(), Value::String(nonce.clone()));
    }
    let id_token = jwt::mint(&login.key, &id);
    let reply = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": login.token_ttl_s,
        "id_token": id_token,
        "scope": user.scopes.join(" "),
    });
    let mut resp = json_response(
        StatusCode::OK,
        serde_json::to_vec(&reply).expect("serialisable"),
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    Outcome::new(resp, None, format!("token issued user={}", user.username))
}

fn token_error(status: StatusCode, error: &'static str, note: &str) -> Outcome {
    let body = serde_json::to_vec(&json!({ "error": error })).expect("serialisable");
    let mut resp = json_response(status, body);
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    Outcome::new(resp, None, format!("token refused: {note}"))
}

/// Where a signed-out browser may go for the `post_logout_redirect_uri` it brought: that URI
/// when it is registered; or, when it is the bare root of a registered URI's origin, that
/// registered URI. Envoy's oauth2 filter always sends the bare root (`http://host/`), which
/// the gateway does not serve (CONTRACT section 2), so the client registers its UI
/// (`http://host/mlflow/`) instead. Either way only a registered URI is ever a target.
pub fn post_logout_target<'a>(registered: &'a [String], asked: &str) -> Option<&'a str> {
    if let Some(exact) = registered.iter().find(|r| *r == asked) {
        return Some(exact);
    }
    let origin = asked.strip_suffix('/')?;
    if origin.matches('/').count() != 2 {
        return None; // not `scheme://authority/`
    }
    registered
        .iter()
        .find(|r| {
            r.strip_prefix(origin)
                .is_some_and(|path| path.starts_with('/'))
        })
        .map(String::as_str)
}

/// RP-initiated logout: there is no provider session to end, so only the redirect is left,
/// and only to a registered URI.
fn end_session(oidc: &Oidc, form: &Form) -> Outcome {
    let client = &oidc.settings.client;
    let asked = form.get("post_logout_redirect_uri");
    let target = asked.and_then(|uri| post_logout_target(&client.post_logout_redirect_uris, uri));
    match (asked, target) {
        (_, Some(uri)) => {
            let target = match form.get("state") {
                Some(state) => {
                    let mut q = form_urlencoded::Serializer::new(String::new());
                    q.append_pair("state", state);
                    format!("{uri}?{}", q.finish())
                }
                None => uri.to_owned(),
            };
            redirect(&target, "signed out")
        }
        (Some(_), None) => page(
            StatusCode::BAD_REQUEST,
            "This post-logout URI is not registered",
            "",
            "sign-out refused",
        ),
        (None, None) => page(
            StatusCode::OK,
            "Signed out",
            "<h1 id=\"signed-out\">Signed out</h1>\n",
            "signed out",
        ),
    }
}

fn redirect(location: &str, note: &str) -> Outcome {
    let resp = Response::builder()
        .status(StatusCode::FOUND)
        .header(hyper::header::LOCATION, location)
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::new()));
    match resp {
        Ok(resp) => Outcome::new(resp, None, note.to_owned()),
        // A location that cannot be a header value (it came from the registered list, so
        // only a misconfiguration gets here).
        Err(_) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Bad redirect",
            "",
            "bad redirect",
        ),
    }
}

/// An HTML page that may not be framed (no clickjacking of the sign-in form) or cached.
fn page(status: StatusCode, title: &str, body: &str, note: &str) -> Outcome {
    let body = if body.is_empty() {
        format!("<h1>{}</h1>\n", html(title))
    } else {
        body.to_owned()
    };
    let doc = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n{body}</body></html>\n",
        html(title)
    );
    let resp: Response<Body> = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(hyper::header::CACHE_CONTROL, "no-store")
        .header("x-frame-options", "DENY")
        .header(
            "content-security-policy",
            // No form-action: Chrome applies it to the redirect that follows the form, which
            // goes to the client's (registered) callback on another origin.
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        )
        .body(Full::new(Bytes::from(doc)))
        .expect("static response parts are valid");
    Outcome::new(resp, None, note.to_owned())
}

fn html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_could_leave_an_attribute() {
        assert_eq!(
            html(r#""><script>x</script>'&"#),
            "&quot;&gt;&lt;script&gt;x&lt;/script&gt;&#39;&amp;"
        );
    }

    #[test]
    fn pkce_values_are_bounded_and_unreserved() {
        assert!(is_pkce_value(&"a".repeat(43)));
        assert!(!is_pkce_value(&"a".repeat(42)));
        assert!(!is_pkce_value(&"a".repeat(129)));
        assert!(!is_pkce_value(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn sign_out_goes_only_to_registered_uris() {
        let registered = vec![
            "http://127.0.0.1:10000/mlflow/".to_owned(),
            "https://mlflow.example/mlflow/".to_owned(),
        ];
        let target = |asked| post_logout_target(&registered, asked);
        assert_eq!(
            target("http://127.0.0.1:10000/mlflow/"),
            Some("http://127.0.0.1:10000/mlflow/")
        );
        // Envoy's bare root leads to the registered UI of that origin.
        assert_eq!(
            target("http://127.0.0.1:10000/"),
            Some("http://127.0.0.1:10000/mlflow/")
        );
        assert_eq!(
            target("https://mlflow.example/"),
            Some("https://mlflow.example/mlflow/")
        );
        for foreign in [
            "http://127.0.0.1:1000/",
            "http://127.0.0.1:10000.evil.example/",
            "http://127.0.0.1:10000/other/",
            "http://127.0.0.1:10000",
            "https://127.0.0.1:10000/",
            "https://evil.example/",
            "http://127.0.0.1:10000//",
            "",
        ] {
            assert_eq!(target(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_repeated_parameter_keeps_its_first_value() {
        let form = parse_form(b"redirect_uri=a&redirect_uri=b&x=%41+b");
        assert_eq!(form["redirect_uri"], "a");
        assert_eq!(form["x"], "A b");
    }
}

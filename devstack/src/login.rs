//! The login-service half of the dev auth service: the JWKS Envoy can fetch, a dev
//! login that hands out tokens, and `/api/v1/validate`, which checks a user token
//! for deployments that validate JWTs by callout instead of with `jwt_authn`.

use std::path::Path;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::auth_service::{
    apply_fault, bearer, fault_outcome, read_body, record, www_authenticate, Outcome, State,
};
use crate::jwt::{self, Expectations, JwtError, JwtKey, MintOptions};
use crate::server::{detail, json_response, Body};

pub const JWKS_PATH: &str = "/.well-known/jwks.json";
pub const LOGIN_PATH: &str = "/api/v1/login";
/// Token validation by callout (the filter's `jwt.mode: "callout"`).
pub const TOKEN_VALIDATE_PATH: &str = "/api/v1/validate";

/// Login bodies are tiny.
const MAX_LOGIN_BODY: usize = 4 * 1024;

/// The dev login service's key and rules.
#[derive(Debug, Clone)]
pub struct DevLogin {
    pub key: JwtKey,
    /// Issuer and audiences `/api/v1/validate` insists on; tokens from
    /// `/api/v1/login` carry the issuer and the first audience.
    pub expect: Expectations,
    /// Lifetime of tokens from `/api/v1/login`.
    pub token_ttl_s: i64,
}

impl DevLogin {
    /// The dev issuer and audience, one-hour tokens.
    pub fn new(key: JwtKey) -> DevLogin {
        DevLogin {
            key,
            expect: Expectations::default(),
            token_ttl_s: jwt::DEFAULT_TTL_S,
        }
    }

    pub fn from_key_file(path: impl AsRef<Path>) -> Result<DevLogin, JwtError> {
        Ok(DevLogin::new(JwtKey::from_pem_file(path)?))
    }

    /// A valid token for `sub` with `scopes`, as this service issues them.
    pub fn mint(&self, sub: &str, scopes: &[&str]) -> String {
        jwt::mint(&self.key, &self.mint_options(sub, scopes))
    }

    pub fn mint_options(&self, sub: &str, scopes: &[&str]) -> MintOptions {
        let mut opts = MintOptions::new(sub, scopes);
        opts.iss = self.expect.issuer.clone();
        opts.aud = self.expect.audiences.iter().take(1).cloned().collect();
        opts.ttl_s = self.token_ttl_s;
        opts
    }
}

/// A user `/api/v1/login` knows. Dev only: the passwords are public.
#[derive(Debug, Clone, Copy)]
pub struct DevUser {
    pub username: &'static str,
    pub password: &'static str,
    pub scopes: &'static [&'static str],
}

pub const DEV_USERS: &[DevUser] = &[
    DevUser {
        username: "dev-reader",
        password: "dev-reader-password",
        scopes: &["mlflow:read"],
    },
    DevUser {
        username: "dev-writer",
        password: "dev-writer-password",
        scopes: &["mlflow:read", "mlflow:write"],
    },
];

pub(crate) fn is_login_path(path: &str) -> bool {
    matches!(path, JWKS_PATH | LOGIN_PATH | TOKEN_VALIDATE_PATH)
}

/// Serves one of the paths [`is_login_path`] accepts.
pub(crate) async fn route(
    state: &State,
    login: &DevLogin,
    path: &str,
    req: Request<Incoming>,
) -> Outcome {
    match path {
        JWKS_PATH => jwks(login, req.method()),
        LOGIN_PATH => login_user(login, req).await,
        _ => validate_token(state, login, req).await,
    }
}

fn jwks(login: &DevLogin, method: &Method) -> Outcome {
    if method != Method::GET && method != Method::HEAD {
        return Outcome::new(method_not_allowed(), None, "");
    }
    let body = serde_json::to_vec(&login.key.jwks()).expect("serialisable");
    Outcome::new(json_response(StatusCode::OK, body), None, "")
}

fn method_not_allowed() -> Response<Body> {
    detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

#[derive(Serialize)]
struct TokenReply<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
}

/// `POST {"username", "password"}` → `{"access_token", "token_type": "Bearer", "expires_in"}`.
async fn login_user(login: &DevLogin, req: Request<Incoming>) -> Outcome {
    if req.method() != Method::POST {
        return Outcome::new(method_not_allowed(), None, "");
    }
    let Ok(raw) = read_body(req.into_body(), MAX_LOGIN_BODY).await else {
        return Outcome::new(detail(StatusCode::BAD_REQUEST, "Unreadable body"), None, "");
    };
    let body: Option<Value> = serde_json::from_slice(&raw).ok();
    let field = |name: &str| body.as_ref()?.get(name)?.as_str();
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return Outcome::new(
            detail(
                StatusCode::UNPROCESSABLE_ENTITY,
                "username and password must be strings",
            ),
            None,
            "bad json",
        );
    };
    let user = DEV_USERS
        .iter()
        .find(|u| u.username == username && u.password == password);
    let Some(user) = user else {
        return Outcome::new(
            www_authenticate(detail(
                StatusCode::UNAUTHORIZED,
                "Invalid username or password",
            )),
            None,
            "login refused",
        );
    };
    let token = login.mint(user.username, user.scopes);
    let reply = TokenReply {
        access_token: &token,
        token_type: "Bearer",
        expires_in: login.token_ttl_s,
    };
    let body = serde_json::to_vec(&reply).expect("serialisable");
    Outcome::new(
        json_response(StatusCode::OK, body),
        Some(&token),
        format!("login user={}", user.username),
    )
}

#[derive(Serialize)]
struct ValidTokenReply<'a> {
    valid: bool,
    user_id: &'a str,
    key_id: &'a str,
    scopes: &'a [String],
    expires_at: String,
}

/// The token is the request's `Authorization: Bearer`; any method but the filter's
/// POST (or a curl GET) is refused. Counted, recorded and faulted like key validation.
async fn validate_token(state: &State, login: &DevLogin, req: Request<Incoming>) -> Outcome {
    state.count_token_validate();
    let (parts, body) = req.into_parts();
    // The body is ignored but drained and recorded, like the key endpoint's.
    let raw = read_body(body, MAX_LOGIN_BODY).await.unwrap_or_default();
    state.record_token_validate(record(&parts, raw));
    let token = bearer(&parts.headers);

    let fault = state.fault_for_call();
    if let Some(reply) = apply_fault(state, fault).await {
        return fault_outcome(reply, token, fault);
    }
    if parts.method != Method::POST && parts.method != Method::GET {
        return Outcome::new(method_not_allowed(), token, "");
    }
    let Some(token) = token else {
        return Outcome::new(
            www_authenticate(detail(StatusCode::UNAUTHORIZED, "Token required")),
            None,
            "no token",
        );
    };
    match jwt::verify(&login.key, token, &login.expect, jwt::now_unix()) {
        Ok(verified) => {
            let reply = ValidTokenReply {
                valid: true,
                user_id: &verified.sub,
                key_id: verified.jti.as_deref().unwrap_or("jwt"),
                scopes: &verified.scopes,
                expires_at: hokusai_rfc3339::format_utc(verified.exp),
            };
            let body = serde_json::to_vec(&reply).expect("serialisable");
            Outcome::new(
                json_response(StatusCode::OK, body),
                Some(token),
                format!("valid token sub={}", verified.sub),
            )
        }
        Err(err) => Outcome::new(
            www_authenticate(detail(StatusCode::UNAUTHORIZED, "Invalid or expired token")),
            Some(token),
            format!("invalid token: {err}"),
        ),
    }
}

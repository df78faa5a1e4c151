//! Local stand-ins for the filter's neighbours, for `make run`, the tests and
//! the benchmark:
//!
//! - [`DevAuth`]: the remote API-key service (`POST /api/v1/keys/validate`),
//!   plus an Envoy ext_authz-style endpoint and fault injection for tests.
//!   With [`DevLogin`] it also plays the login service: JWKS, dev login and
//!   token validation; [`jwt`] mints the tokens (valid and broken ones); with
//!   [`OidcSettings`] too, a minimal OpenID Connect provider ([`oidc`]) for browser
//!   sign-in through Envoy's `oauth2` filter.
//! - [`Echo`]: an upstream that answers every request with what it received,
//!   standing in for MLflow.
//!
//! Both listen on loopback in the caller's tokio runtime. Dev use only.

pub mod auth_service;
pub mod echo;
pub mod faults;
pub mod jwt;
pub mod keys;
pub mod login;
pub mod oidc;
mod server;

pub use auth_service::{DevAuth, DevAuthConfig, RecordedRequest, ServeOptions};
pub use echo::{Echo, EchoHandle, EchoReply};
pub use faults::{Fault, FaultSpec};
pub use jwt::{mint, JwtKey, MintOptions};
pub use keys::{dev_keys, fingerprint, sha256_hex, KeySpec, KeyStore, KeyStoreError};
pub use login::{DevLogin, DEV_USERS};
pub use oidc::{OidcClient, OidcSettings, DEV_CLIENT_ID};

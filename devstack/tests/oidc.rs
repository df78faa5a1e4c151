//! The dev OIDC provider (`hokusai_devstack::oidc`), as Envoy's oauth2 filter and a browser
//! use it, and each way a caller might try to get a token it should not.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hokusai_devstack::jwt::{self, Expectations, JwtKey};
use hokusai_devstack::{
    DevAuth, DevAuthConfig, DevLogin, KeyStore, OidcClient, OidcSettings, ServeOptions,
    DEV_CLIENT_ID,
};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SECRET: &str = "a-client-secret-for-the-tests";
const CALLBACK: &str = "http://127.0.0.1:10000/mlflow/oauth2/callback";
const SIGNED_OUT: &str = "http://127.0.0.1:10000/mlflow/";
const VERIFIER: &str = "a-pkce-verifier-that-is-long-enough-to-be-valid-0123456789";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn start() -> std::io::Result<(DevAuth, JwtKey)> {
    let login = DevLogin::new(JwtKey::generate());
    let key = login.key.clone();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let auth = DevAuth::start_with(
        DevAuthConfig {
            listen,
            keys: KeyStore::dev_keys(),
            service_token: None,
        },
        ServeOptions {
            log_requests: false,
            login: Some(login),
            oidc: Some(OidcSettings {
                base_url: format!("http://{listen}"),
                client: OidcClient {
                    client_id: DEV_CLIENT_ID.into(),
                    client_secret: SECRET.into(),
                    redirect_uris: vec![CALLBACK.into()],
                    post_logout_redirect_uris: vec![SIGNED_OUT.into()],
                },
            }),
            ..ServeOptions::default()
        },
    )
    .await?;
    Ok((auth, key))
}

/// The authorization parameters Envoy sends, with the user's form fields.
fn sign_in_form(user: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", DEV_CLIENT_ID.into()),
        ("redirect_uri", CALLBACK.into()),
        ("response_type", "code".into()),
        ("scope", "openid".into()),
        ("state", "opaque-state".into()),
        ("nonce", "n-0S6_WzA2Mj".into()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".into()),
        ("username", user.into()),
        ("password", password.into()),
    ]
}

fn query_of(location: &str) -> Vec<(String, String)> {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(location: &str, name: &str) -> Option<String> {
    query_of(location)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

async fn code_for(base: &str, user: &str, password: &str) -> Result<String, reqwest::Error> {
    let resp = client()
        .post(format!("{base}/oauth2/authorize"))
        .form(&sign_in_form(user, password))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::FOUND, "sign-in as {user}");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{CALLBACK}?")), "{location}");
    assert_eq!(param(&location, "state").as_deref(), Some("opaque-state"));
    Ok(param(&location, "code").expect("a code"))
}

async fn exchange(
    base: &str,
    form: &[(&str, &str)],
) -> Result<(StatusCode, Value), reqwest::Error> {
    let resp = client()
        .post(format!("{base}/oauth2/token"))
        .form(form)
        .send()
        .await?;
    let status = resp.status();
    Ok((status, resp.json().await.unwrap_or_default()))
}

#[tokio::test]
async fn discovery_form_and_code_flow_with_pkce_give_the_tokens_envoy_expects() -> TestResult {
    let (auth, key) = start().await?;
    let base = auth.base_url();
    let doc: Value = client()
        .get(format!("{base}/.well-known/openid-configuration"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{base}/oauth2/authorize")
    );
    assert_eq!(doc["token_endpoint"], format!("{base}/oauth2/token"));
    assert_eq!(doc["end_session_endpoint"], format!("{base}/oauth2/logout"));
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );

    // The form, as Envoy's redirect opens it: the dev users, and no framing.
    let query: Vec<(&str, String)> = sign_in_form("", "")
        .into_iter()
        .filter(|(k, _)| *k != "username" && *k != "password")
        .collect();
    let resp = client()
        .get(format!("{base}/oauth2/authorize"))
        .query(&query)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let page = resp.text().await?;
    for user in ["dev-reader", "dev-writer"] {
        assert!(page.contains(user), "{page}");
    }

    let code = code_for(&base, "dev-writer", "dev-writer-password").await?;
    let (status, tokens) = exchange(
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("client_id", DEV_CLIENT_ID),
            ("client_secret", SECRET),
            ("code_verifier", VERIFIER),
        ],
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    // The access token is the login service's user token, which jwt_authn trusts.
    let access = tokens["access_token"].as_str().unwrap();
    let verified = jwt::verify(&key, access, &Expectations::default(), jwt::now_unix())?;
    assert_eq!(verified.sub, "dev-writer");
    assert_eq!(verified.scopes, ["mlflow:read", "mlflow:write"]);
    // The ID token is for the client (not for MLflow), and carries the nonce.
    let id = jwt::unverified_claims(tokens["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(id["aud"], DEV_CLIENT_ID);
    assert_eq!(id["nonce"], "n-0S6_WzA2Mj");
    let for_mlflow = Expectations::default();
    assert!(jwt::verify(
        &key,
        tokens["id_token"].as_str().unwrap(),
        &for_mlflow,
        jwt::now_unix()
    )
    .is_err());

    // A code is good once: the replay is refused.
    let (status, body) = exchange(
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("client_id", DEV_CLIENT_ID),
            ("client_secret", SECRET),
            ("code_verifier", VERIFIER),
        ],
    )
    .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    Ok(())
}

#[tokio::test]
async fn a_code_needs_the_client_secret_the_verifier_and_the_same_redirect() -> TestResult {
    let (auth, _) = start().await?;
    let base = auth.base_url();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{DEV_CLIENT_ID}:{SECRET}"))
    );
    let wrong_basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{DEV_CLIENT_ID}:guess"))
    );
    // (what, extra form fields, Authorization header, expected status and error)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a str>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            vec![
                ("client_id", DEV_CLIENT_ID),
                ("client_secret", "guess"),
                ("code_verifier", VERIFIER),
            ],
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "wrong secret in Basic",
            vec![("code_verifier", VERIFIER)],
            Some(&wrong_basic),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "no client authentication",
            vec![("client_id", DEV_CLIENT_ID), ("code_verifier", VERIFIER)],
            None,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "no verifier",
            vec![("client_id", DEV_CLIENT_ID), ("client_secret", SECRET)],
            None,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "another verifier",
            vec![
                ("client_id", DEV_CLIENT_ID),
                ("client_secret", SECRET),
                (
                    "code_verifier",
                    "another-verifier-that-is-long-enough-to-be-valid-012345",
                ),
            ],
            None,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            "the challenge as verifier",
            vec![
                ("client_id", DEV_CLIENT_ID),
                ("client_secret", SECRET),
                ("code_verifier", ""),
            ],
            None,
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
    ];
    for (what, extra, header, status, error) in cases {
        let code = code_for(&base, "dev-reader", "dev-reader-password").await?;
        let challenge = challenge(VERIFIER);
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
        ];
        for (k, v) in &extra {
            form.push((
                k,
                if what == "the challenge as verifier" && *k == "code_verifier" {
                    &challenge
                } else {
                    v
                },
            ));
        }
        let mut req = client().post(format!("{base}/oauth2/token")).form(&form);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let resp = req.send().await?;
        let got = resp.status();
        let body: Value = resp.json().await.unwrap_or_default();
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{what}"
        );
        assert!(body.get("access_token").is_none(), "{what}");
        // A try by an authenticated client used the code up, so even the right request
        // cannot use it now; an unauthenticated caller cannot burn a client's code.
        let resp = client()
            .post(format!("{base}/oauth2/token"))
            .header("authorization", &basic)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", CALLBACK),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await?;
        let want = if error == "invalid_client" {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(resp.status(), want, "{what}: the code afterwards");
    }

    // Another redirect URI at the exchange than at the authorization.
    let code = code_for(&base, "dev-reader", "dev-reader-password").await?;
    let (status, body) = exchange(
        &base,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:10000/elsewhere"),
            ("client_id", DEV_CLIENT_ID),
            ("client_secret", SECRET),
            ("code_verifier", VERIFIER),
        ],
    )
    .await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // Basic client authentication works on its own.
    let code = code_for(&base, "dev-reader", "dev-reader-password").await?;
    let resp = client()
        .post(format!("{base}/oauth2/token"))
        .header("authorization", &basic)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn the_provider_never_redirects_where_it_should_not() -> TestResult {
    let (auth, _) = start().await?;
    let base = auth.base_url();
    let with = |changes: &[(&'static str, &str)]| {
        let mut form = sign_in_form("dev-writer", "dev-writer-password");
        for (k, v) in changes {
            form.retain(|(name, _)| name != k);
            if !v.is_empty() {
                form.push((k, (*v).to_owned()));
            }
        }
        form
    };
    // Shown as an error page, never redirected: an unknown client, a redirect URI that is
    // not registered (or only starts like one).
    for (what, form) in [
        ("unknown client", with(&[("client_id", "someone-else")])),
        (
            "foreign redirect",
            with(&[("redirect_uri", "https://evil.example/cb")]),
        ),
        (
            "registered prefix",
            with(&[(
                "redirect_uri",
                "http://127.0.0.1:10000/mlflow/oauth2/callback.evil",
            )]),
        ),
        ("no redirect", with(&[("redirect_uri", "")])),
    ] {
        for resp in [
            client()
                .post(format!("{base}/oauth2/authorize"))
                .form(&form)
                .send()
                .await?,
            client()
                .get(format!("{base}/oauth2/authorize"))
                .query(&form)
                .send()
                .await?,
        ] {
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{what}");
            assert!(resp.headers().get("location").is_none(), "{what}");
        }
    }
    // A registered redirect gets the error instead of a code.
    for (what, form, error) in [
        (
            "implicit flow",
            with(&[("response_type", "token")]),
            "unsupported_response_type",
        ),
        (
            "plain PKCE",
            with(&[("code_challenge_method", "plain")]),
            "invalid_request",
        ),
        (
            "challenge without method",
            with(&[("code_challenge_method", "")]),
            "invalid_request",
        ),
    ] {
        let resp = client()
            .post(format!("{base}/oauth2/authorize"))
            .form(&form)
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::FOUND, "{what}");
        let location = resp.headers()["location"].to_str()?.to_owned();
        assert!(location.starts_with(CALLBACK), "{what}: {location}");
        assert_eq!(param(&location, "error").as_deref(), Some(error), "{what}");
        assert_eq!(param(&location, "code"), None, "{what}");
    }
    // A wrong password: the form again, with the error, and no code.
    let resp = client()
        .post(format!("{base}/oauth2/authorize"))
        .form(&with(&[("password", "guess")]))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await?.contains("Invalid username or password"));
    // Values from the request are escaped in the page.
    let resp = client()
        .get(format!("{base}/oauth2/authorize"))
        .query(&with(&[("state", "\"><script>alert(1)</script>")]))
        .send()
        .await?;
    let page = resp.text().await?;
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&quot;&gt;&lt;script&gt;"), "{page}");

    // End session: only to a registered URI.
    let resp = client()
        .get(format!("{base}/oauth2/logout"))
        .query(&[
            ("post_logout_redirect_uri", SIGNED_OUT),
            ("client_id", DEV_CLIENT_ID),
        ])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], SIGNED_OUT);
    // Envoy sends the bare root: the provider sends the browser to that origin's registered UI.
    let resp = client()
        .get(format!("{base}/oauth2/logout"))
        .query(&[("post_logout_redirect_uri", "http://127.0.0.1:10000/")])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["location"], SIGNED_OUT);
    let resp = client()
        .get(format!("{base}/oauth2/logout"))
        .query(&[("post_logout_redirect_uri", "https://evil.example/")])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("location").is_none());
    Ok(())
}

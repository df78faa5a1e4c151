//! Dev JWTs: what `mint` writes, what `verify` refuses, and the login-service
//! endpoints of the dev auth service over real HTTP.

use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hokusai_devstack::jwt::{
    self, Expectations, JwtError, JwtKey, Kid, MintOptions, ScopeClaim, Signing, DEV_AUDIENCE,
    DEV_ISSUER,
};
use hokusai_devstack::{DevAuth, DevAuthConfig, DevLogin, Fault, KeyStore, ServeOptions};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn client() -> Client {
    Client::builder().no_proxy().build().expect("client")
}

fn segment(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

fn check(key: &JwtKey, token: &str) -> Result<jwt::Verified, JwtError> {
    jwt::verify(key, token, &Expectations::default(), jwt::now_unix())
}

#[test]
fn a_minted_token_says_what_the_login_service_would() {
    let key = JwtKey::generate();
    let token = jwt::mint(&key, &MintOptions::new("user_123", &["mlflow:read"]));
    assert_eq!(
        segment(&token, 0),
        json!({"alg": "ES256", "typ": "JWT", "kid": key.kid()})
    );
    let claims = segment(&token, 1);
    assert_eq!(claims["iss"], DEV_ISSUER);
    assert_eq!(claims["aud"], DEV_AUDIENCE);
    assert_eq!(claims["sub"], "user_123");
    assert_eq!(claims["scope"], "mlflow:read");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, jwt::DEFAULT_TTL_S);
    assert!((iat - jwt::now_unix()).abs() < 60);
    assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
    // ES256 signatures are 64 bytes (r || s).
    let sig = URL_SAFE_NO_PAD
        .decode(token.split('.').nth(2).unwrap())
        .unwrap();
    assert_eq!(sig.len(), 64);

    let verified = check(&key, &token).expect("valid");
    assert_eq!(verified.sub, "user_123");
    assert_eq!(verified.scopes, ["mlflow:read"]);
    assert_eq!(verified.exp, exp);
}

#[test]
fn scopes_as_a_string_or_an_array_and_several_audiences() {
    let key = JwtKey::generate();
    let mut opts = MintOptions::new("u", &["mlflow:read", "mlflow:write"]);
    opts.scope_claim = ScopeClaim::Scopes;
    opts.aud = vec!["other".into(), DEV_AUDIENCE.into()];
    let token = jwt::mint(&key, &opts);
    let claims = segment(&token, 1);
    assert_eq!(claims["scopes"], json!(["mlflow:read", "mlflow:write"]));
    assert_eq!(claims.get("scope"), None);
    assert_eq!(claims["aud"], json!(["other", DEV_AUDIENCE]));
    assert_eq!(
        check(&key, &token).unwrap().scopes,
        ["mlflow:read", "mlflow:write"]
    );
}

#[test]
fn verify_refuses_every_broken_token() {
    let key = JwtKey::generate();
    let other = JwtKey::generate();
    let now = jwt::now_unix();
    let base = || MintOptions::new("u", &["mlflow:read"]);
    let with = |f: &dyn Fn(&mut MintOptions)| {
        let mut o = base();
        f(&mut o);
        jwt::mint(&key, &o)
    };
    let cases: Vec<(&str, String, JwtError)> = vec![
        (
            "expired past the skew",
            with(&|o| {
                o.issued_at = Some(now - 3600);
                o.ttl_s = 3600 - jwt::CLOCK_SKEW_S - 5;
            }),
            JwtError::Expired,
        ),
        (
            "not yet valid",
            with(&|o| o.not_before = Some(now + 600)),
            JwtError::NotYetValid,
        ),
        (
            "wrong issuer",
            with(&|o| o.iss = "https://evil.example".into()),
            JwtError::WrongIssuer,
        ),
        (
            "wrong audience",
            with(&|o| o.aud = vec!["other".into()]),
            JwtError::WrongAudience,
        ),
        (
            "no audience",
            with(&|o| o.aud = Vec::new()),
            JwtError::WrongAudience,
        ),
        (
            "bad signature",
            with(&|o| o.signing = Signing::Corrupted),
            JwtError::BadSignature,
        ),
        (
            "alg none",
            with(&|o| o.signing = Signing::AlgNone),
            JwtError::Algorithm("none".into()),
        ),
        (
            "other key under our kid",
            {
                let mut o = base();
                o.kid = Kid::Named(key.kid().into());
                jwt::mint(&other, &o)
            },
            JwtError::BadSignature,
        ),
        (
            "other key under its kid",
            jwt::mint(&other, &base()),
            JwtError::UnknownKid,
        ),
        (
            "other key, no kid",
            {
                let mut o = base();
                o.kid = Kid::Absent;
                jwt::mint(&other, &o)
            },
            JwtError::BadSignature,
        ),
        (
            "empty sub",
            with(&|o| o.sub = String::new()),
            JwtError::MissingClaim("sub"),
        ),
        (
            "two segments",
            "eyJhbGciOiJFUzI1NiJ9.e30".into(),
            JwtError::Malformed("not three segments"),
        ),
    ];
    for (label, token, want) in cases {
        assert_eq!(check(&key, &token), Err(want), "{label}");
    }
    // Within the skew is still fine, as with jwt_authn.
    let just_expired = with(&|o| {
        o.issued_at = Some(now - 3600);
        o.ttl_s = 3600 - 10;
    });
    assert!(check(&key, &just_expired).is_ok());
    // HS256 with the public key as the secret (the classic confusion) is refused by alg.
    let mut header = segment(&just_expired, 0);
    header["alg"] = json!("HS256");
    let forged = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        just_expired.split_once('.').unwrap().1
    );
    assert_eq!(
        check(&key, &forged),
        Err(JwtError::Algorithm("HS256".into()))
    );
}

/// An EC P-256 key from openssl, the way `make certs` makes one (and the SEC1 form).
fn openssl_key(dir: &std::path::Path, sec1: bool) -> std::path::PathBuf {
    let path = dir.join(if sec1 { "sec1.key" } else { "pkcs8.key" });
    let status = if sec1 {
        Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&path)
            .status()
    } else {
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&path)
            .status()
    }
    .expect("run openssl");
    assert!(status.success());
    path
}

fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("devstack-jwt-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn keys_load_from_openssl_pem_and_garbage_is_refused() {
    let dir = temp_dir("pem");
    for sec1 in [false, true] {
        let key = JwtKey::from_pem_file(openssl_key(&dir, sec1)).expect("openssl key loads");
        let jwk = key.jwk();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        // Debug never shows the private key.
        assert_eq!(
            format!("{key:?}"),
            format!("JwtKey {{ kid: {:?} }}", key.kid())
        );
    }
    std::fs::write(dir.join("junk.key"), "not a key").unwrap();
    assert!(matches!(
        JwtKey::from_pem_file(dir.join("junk.key")),
        Err(JwtError::Key(_))
    ));
    assert!(matches!(
        JwtKey::from_pem_file(dir.join("absent.key")),
        Err(JwtError::Key(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn start_login(login: Option<DevLogin>) -> std::io::Result<DevAuth> {
    DevAuth::start_with(
        DevAuthConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            keys: KeyStore::dev_keys(),
            service_token: None,
        },
        ServeOptions {
            log_requests: false,
            login,
            ..ServeOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn serves_the_jwks_and_logs_dev_users_in() -> TestResult {
    let login = DevLogin::new(JwtKey::generate());
    let key = login.key.clone();
    let auth = start_login(Some(login)).await?;
    let base = auth.base_url();
    let c = client();

    let jwks = c
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await?;
    assert_eq!(jwks.status(), StatusCode::OK);
    assert_eq!(jwks.json::<Value>().await?, key.jwks());

    let resp = c
        .post(format!("{base}/api/v1/login"))
        .json(&json!({"username": "dev-reader", "password": "dev-reader-password"}))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await?;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], jwt::DEFAULT_TTL_S);
    let verified = check(&key, body["access_token"].as_str().unwrap())?;
    assert_eq!(verified.sub, "dev-reader");
    assert_eq!(verified.scopes, ["mlflow:read"]);

    for (body, status) in [
        (
            json!({"username": "dev-reader", "password": "wrong"}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            json!({"username": "nobody", "password": "dev-reader-password"}),
            StatusCode::UNAUTHORIZED,
        ),
        (
            json!({"username": "dev-reader"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let resp = c
            .post(format!("{base}/api/v1/login"))
            .json(&body)
            .send()
            .await?;
        assert_eq!(resp.status(), status, "{body}");
    }
    let resp = c.get(format!("{base}/api/v1/login")).send().await?;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    // None of this is key or token validation.
    assert_eq!(auth.total_calls(), 0);
    auth.shutdown().await;

    // Without a login side the paths do not exist.
    let plain = start_login(None).await?;
    for path in [
        "/.well-known/jwks.json",
        "/api/v1/login",
        "/api/v1/validate",
    ] {
        let resp = c.get(format!("{}{path}", plain.base_url())).send().await?;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn validate_checks_bearer_tokens_and_counts_the_calls() -> TestResult {
    let login = DevLogin::new(JwtKey::generate());
    let good = login.mint("user_123", &["mlflow:read", "mlflow:write"]);
    let exp = jwt::unverified_claims(&good).unwrap()["exp"]
        .as_i64()
        .unwrap();
    let mut expired = login.mint_options("user_123", &["mlflow:read"]);
    expired.ttl_s = -3600;
    let expired = jwt::mint(&login.key, &expired);
    let other = jwt::mint(&JwtKey::generate(), &login.mint_options("user_123", &[]));
    let auth = start_login(Some(login)).await?;
    let url = format!("{}/api/v1/validate", auth.base_url());
    let c = client();

    let resp = c.post(&url).bearer_auth(&good).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await?;
    let jti = jwt::unverified_claims(&good).unwrap()["jti"].clone();
    assert_eq!(
        body,
        json!({
            "valid": true,
            "user_id": "user_123",
            "key_id": jti,
            "scopes": ["mlflow:read", "mlflow:write"],
            "expires_at": rfc3339_by_date(exp),
        })
    );
    // GET works too (a person with curl), and what arrived is recorded.
    let resp = c
        .get(&url)
        .header("authorization", format!("bearer {good}"))
        .header("x-request-id", "rid-1")
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        auth.last_token_validate_request()
            .unwrap()
            .header("x-request-id"),
        Some("rid-1")
    );

    for (label, req) in [
        ("expired", c.post(&url).bearer_auth(&expired)),
        ("other key", c.post(&url).bearer_auth(&other)),
        ("garbage", c.post(&url).bearer_auth("hk_dev_readwrite_0001")),
        ("no token", c.post(&url)),
    ] {
        let resp = req.send().await?;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{label}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            "Bearer realm=\"hokusai\"",
            "{label}"
        );
        let detail = resp.json::<Value>().await?["detail"].clone();
        let want = if label == "no token" {
            "Token required"
        } else {
            "Invalid or expired token"
        };
        assert_eq!(detail, want, "{label}");
    }
    assert_eq!(auth.token_validate_calls(), 6);
    assert_eq!(
        auth.validate_calls(),
        0,
        "API-key validation is counted apart"
    );

    // Faults apply as on the key endpoint, so callout-mode tests can use them.
    auth.set_fault(Fault::Status(503));
    let resp = c.post(&url).bearer_auth(&good).send().await?;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(auth.token_validate_calls(), 7);
    auth.reset_counts();
    assert_eq!(auth.token_validate_calls(), 0);
    Ok(())
}

/// `expires_at` as the service writes it, computed independently of its formatter.
fn rfc3339_by_date(unix: i64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("run date");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_mint_command_prints_a_token_signed_with_the_given_key() {
    let dir = temp_dir("cli");
    let key_path = openssl_key(&dir, false);
    let key = JwtKey::from_pem_file(&key_path).unwrap();
    let bin = env!("CARGO_BIN_EXE_dev-auth-service");
    let out = Command::new(bin)
        .args([
            "mint",
            "--sub",
            "user_123",
            "--scopes",
            "mlflow:read mlflow:write",
        ])
        .args(["--ttl", "120", "--key"])
        .arg(&key_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim_end();
    assert!(
        !token.contains(char::is_whitespace),
        "only the token on stdout"
    );
    let verified = check(&key, token).expect("verifies");
    assert_eq!(verified.sub, "user_123");
    assert_eq!(verified.scopes, ["mlflow:read", "mlflow:write"]);
    let claims = &verified.claims;
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );

    // --aud and --iss change what the token says (and so what verifies).
    let out = Command::new(bin)
        .args([
            "mint",
            "--sub",
            "u",
            "--aud",
            "other",
            "--iss",
            "https://x.example",
            "--key",
        ])
        .arg(&key_path)
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = jwt::unverified_claims(token.trim_end()).unwrap();
    assert_eq!(
        (claims["aud"].as_str(), claims["iss"].as_str()),
        (Some("other"), Some("https://x.example"))
    );

    // No --sub, or no key: a clear failure, nothing on stdout.
    for args in [
        vec!["mint", "--key", key_path.to_str().unwrap()],
        vec![
            "mint",
            "--sub",
            "u",
            "--key",
            "/nonexistent/jwt-signing.key",
        ],
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

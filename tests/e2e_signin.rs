//! Browser sign-in (CONTRACT section 9) at the Envoy level: Envoy's oauth2 filter against
//! the dev OIDC provider, its session cookies, csrf, and the promise that API clients never
//! see a redirect. Each rule comes with the ways around it that a caller might try. The
//! real browser against real MLflow is tests/e2e_browser.rs.

mod e2e;

use e2e::clients::*;
use e2e::envoy::EnvoyOptions;
use e2e::paths::{self, TempDir};
use e2e::session::{no_redirect_client, send, sign_in, Jar};
use e2e::stack::*;
use reqwest::Method;

const WRITER: (&str, &str) = ("dev-writer", "dev-writer-password");
const READER: (&str, &str) = ("dev-reader", "dev-reader-password");
/// A UI background call: reads, and must get 401 JSON (never a redirect) without a session.
const SEARCH: &str = "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=5";
const CREATE: &str = "/mlflow/ajax-api/2.0/mlflow/experiments/create";
const SESSION_COOKIES: [&str; 4] = [
    "__Host-BearerToken",
    "__Host-OauthHMAC",
    "__Host-OauthExpires",
    "__Host-IdToken",
];

fn base(stack: &Stack) -> String {
    stack.envoy.plain_url("")
}

async fn get(stack: &Stack, jar: &mut Jar, path: &str) -> reqwest::Response {
    let client = no_redirect_client();
    send(
        &client,
        jar,
        Method::GET,
        &stack.envoy.plain_url(path),
        None,
    )
    .await
}

async fn post(stack: &Stack, jar: &mut Jar, path: &str, origin: &str) -> reqwest::Response {
    let client = no_redirect_client();
    send(
        &client,
        jar,
        Method::POST,
        &stack.envoy.plain_url(path),
        Some(origin),
    )
    .await
}

/// 401 with the contract's JSON (from the oauth2 filter's refusal, or jwt_authn's).
async fn assert_unauthenticated(resp: reqwest::Response, what: &str) -> serde_json::Value {
    let (status, headers, body) = filter_reply(resp).await;
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["error_code"], "UNAUTHENTICATED", "{what}: {body}");
    assert_eq!(headers["content-type"], "application/json", "{what}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_browser_reaches_mlflow_as_its_user_through_jwt_authn() {
    let stack = Stack::start().await;
    let (mut jar, back) = sign_in(&base(&stack), WRITER.0, WRITER.1).await;
    assert_eq!(
        back,
        stack.envoy.plain_url("/mlflow/"),
        "back where it started"
    );
    // The session: signed, HttpOnly, Secure, SameSite=Lax; the token inside is not readable.
    for name in SESSION_COOKIES {
        let line = jar
            .set_line(name)
            .unwrap_or_else(|| panic!("no {name} cookie: {:?}", jar.set_lines));
        for attr in ["HttpOnly", "secure", "SameSite=Lax", "path=/"] {
            assert!(line.contains(attr), "{name} lacks {attr}: {line}");
        }
    }
    // Every cookie of the flow (nonce and PKCE verifier too) is a `__Host-` cookie, which a
    // browser only takes with Secure, path=/ and no Domain: nothing else can plant one.
    assert!(jar.set_lines.len() >= SESSION_COOKIES.len() + 2);
    for line in &jar.set_lines {
        let lower = line.to_ascii_lowercase().replace(' ', "");
        assert!(line.starts_with("__Host-"), "{line}");
        assert!(
            lower.contains(";path=/;") || lower.ends_with(";path=/"),
            "{line}"
        );
        assert!(
            lower.contains("secure") && !lower.contains("domain="),
            "{line}"
        );
    }
    assert!(
        !jar.cookies["__Host-BearerToken"].starts_with("ey"),
        "the access token is stored encrypted, not as a readable JWT"
    );

    let got = echoed(get(&stack, &mut jar, SEARCH).await).await;
    let auth = got.header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with("Bearer ey"),
        "the token goes on as a bearer: {auth}"
    );
    assert_eq!(got.header("x-auth-method"), Some("jwt"));
    assert_eq!(got.header("x-user-id"), Some("dev-writer"));
    assert_eq!(
        got.header("x-auth-scopes"),
        Some("mlflow:read mlflow:write")
    );
    // A write from the UI's own origin goes through for the writer.
    let origin = base(&stack);
    let got = echoed(post(&stack, &mut jar, CREATE, &origin).await).await;
    assert_eq!(got.path, "/ajax-api/2.0/mlflow/experiments/create");
    assert_eq!(
        stack.auth().validate_calls(),
        0,
        "a session needs no key callout"
    );

    // The reader signs in too: reads pass, a write is refused in MLflow's terms.
    let (mut reader, _) = sign_in(&base(&stack), READER.0, READER.1).await;
    let got = echoed(get(&stack, &mut reader, SEARCH).await).await;
    assert_eq!(got.header("x-user-id"), Some("dev-reader"));
    let (status, _, body) = filter_reply(post(&stack, &mut reader, CREATE, &origin).await).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error_code"], "PERMISSION_DENIED");
    assert_eq!(
        body["message"],
        "Insufficient permissions (requires mlflow:write)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_mixed_session_cookies_are_refused() {
    let stack = Stack::start().await;
    let (writer, _) = sign_in(&base(&stack), WRITER.0, WRITER.1).await;
    let (reader, _) = sign_in(&base(&stack), READER.0, READER.1).await;

    let tamper = |name: &str, f: &dyn Fn(&str) -> String| {
        let mut jar = writer.clone();
        let value = jar.cookies[name].clone();
        jar.cookies.insert(name.to_owned(), f(&value));
        jar
    };
    let flip_last = |v: &str| {
        let mut s = v.to_owned();
        let last = s.pop().unwrap_or('A');
        s.push(if last == 'A' { 'B' } else { 'A' });
        s
    };
    let mut cases: Vec<(&str, Jar)> = vec![
        ("token changed", tamper("__Host-BearerToken", &flip_last)),
        ("HMAC changed", tamper("__Host-OauthHMAC", &flip_last)),
        (
            "expiry pushed back",
            tamper("__Host-OauthExpires", &|v| {
                (v.parse::<u64>().unwrap_or(0) + 86_400).to_string()
            }),
        ),
        ("expiry removed", {
            let mut jar = writer.clone();
            jar.cookies.remove("__Host-OauthExpires");
            jar
        }),
        ("HMAC removed", {
            let mut jar = writer.clone();
            jar.cookies.remove("__Host-OauthHMAC");
            jar
        }),
    ];
    // The reader's token under the writer's signature: a session is signed as a whole.
    let mut mixed = reader.clone();
    mixed.cookies.insert(
        "__Host-OauthHMAC".into(),
        writer.cookies["__Host-OauthHMAC"].clone(),
    );
    mixed.cookies.insert(
        "__Host-OauthExpires".into(),
        writer.cookies["__Host-OauthExpires"].clone(),
    );
    cases.push(("the reader's token, the writer's HMAC", mixed));
    // The whole valid session under the names a sibling subdomain could plant: only the
    // `__Host-` names are read.
    let mut unprefixed = Jar::default();
    for (name, value) in &writer.cookies {
        let bare = name.strip_prefix("__Host-").unwrap_or(name);
        unprefixed.cookies.insert(bare.to_owned(), value.clone());
    }
    cases.push(("the session without __Host- names", unprefixed));
    // A raw JWT in the cookie, as a forger without the key would write it.
    cases.push((
        "plain JWT in the cookie",
        tamper("__Host-BearerToken", &|_| {
            stack.mint("dev-writer", &["mlflow:read", "mlflow:write"])
        }),
    ));
    for (label, mut jar) in cases {
        let resp = get(&stack, &mut jar, SEARCH).await;
        assert_unauthenticated(resp, label).await;
        // The shell sends such a browser to sign in again instead.
        let resp = get(&stack, &mut jar, "/mlflow/").await;
        assert_eq!(resp.status(), 302, "{label}: shell");
    }
    assert_eq!(
        stack.envoy.stat("cluster.mlflow.upstream_rq_total").await,
        0,
        "no forged session reached MLflow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused_even_when_replayed() {
    // Tokens (and so sessions) that live 2 s.
    let stack = Stack::start_with(StackOptions {
        login: LoginOptions {
            token_ttl_s: Some(2),
            ..LoginOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let (jar, _) = sign_in(&base(&stack), WRITER.0, WRITER.1).await;
    let line = jar.set_line("__Host-OauthHMAC").unwrap().to_owned();
    assert!(line.contains("Max-Age=2"), "{line}");
    // A browser drops the cookies after 2 s; an attacker who kept them replays them. Poll
    // until the session's expiry has passed (bounded), replaying the same cookies.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut replay = jar.clone();
        let resp = get(&stack, &mut replay, SEARCH).await;
        if resp.status() == 401 {
            assert_unauthenticated(resp, "expired session").await;
            break;
        }
        assert_eq!(resp.status(), 200, "a live session reads");
        assert!(
            std::time::Instant::now() < deadline,
            "the session never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_signed_sessions_and_tokens_are_refused() {
    // A provider that signs with a key jwt_authn does not trust: Envoy's cookie signature
    // vouches for the session, but the token inside fails verification.
    let foreign = Stack::start_with(StackOptions {
        login: LoginOptions {
            foreign_key: true,
            ..LoginOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let (mut jar, _) = sign_in(&base(&foreign), WRITER.0, WRITER.1).await;
    let body = assert_unauthenticated(get(&foreign, &mut jar, SEARCH).await, "foreign token").await;
    assert_eq!(
        body["detail"], "Invalid or expired token",
        "jwt_authn refused it"
    );
    assert_eq!(
        foreign.envoy.stat("cluster.mlflow.upstream_rq_total").await,
        0
    );

    // A session signed by another Envoy's HMAC key (same host name, same provider): refused.
    let dir = TempDir::new("foreign-hmac");
    let sds = dir.join("oauth-hmac.sds.yaml");
    let committed = std::fs::read_to_string(paths::cert("oauth-hmac.sds.yaml")).unwrap();
    let other_key = "Zm9yZWlnbi1obWFjLWtleS1mb3ItZTJlLXRlc3RzLi4u";
    let rewritten: String = committed
        .lines()
        .map(|l| {
            if l.contains("inline_string") {
                format!("    secret: {{ inline_string: \"{other_key}\" }}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&sds, rewritten).unwrap();
    let sds: &'static str = Box::leak(sds.display().to_string().into_boxed_str());
    let other = Stack::start_with(StackOptions {
        envoy: EnvoyOptions {
            oauth_hmac_sds: Some(sds),
            ..EnvoyOptions::default()
        },
        ..StackOptions::default()
    })
    .await;
    let home = Stack::start().await;
    let (mut session, _) = sign_in(&base(&home), WRITER.0, WRITER.1).await;
    // Sanity: the session works at home.
    echoed(get(&home, &mut session, SEARCH).await).await;
    let resp = no_redirect_client()
        .get(other.envoy.plain_url(SEARCH))
        .header("host", format!("127.0.0.1:{}", home.envoy.ports.plain))
        .header("cookie", session.header())
        .send()
        .await
        .unwrap();
    assert_unauthenticated(resp, "session signed with another HMAC key").await;
    assert_eq!(
        other.envoy.stat("cluster.mlflow.upstream_rq_total").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_refuses_cross_site_changes_made_with_a_session() {
    let stack = Stack::start().await;
    let (writer, _) = sign_in(&base(&stack), WRITER.0, WRITER.1).await;
    let ours = base(&stack);
    let port = stack.envoy.ports.plain;
    for origin in [
        "http://evil.example".to_owned(),
        "null".to_owned(),
        format!("http://127.0.0.1:{port}.evil.example"),
        format!("http://127.0.0.1:{}", port + 1),
        format!("https://evil.example/http://127.0.0.1:{port}"),
    ] {
        let mut jar = writer.clone();
        let (status, _, body) = filter_reply(post(&stack, &mut jar, CREATE, &origin).await).await;
        assert_eq!(status, 403, "origin {origin}: {body}");
        assert_eq!(body["detail"], "Cross-site request refused", "{origin}");
        assert_eq!(body["error_code"], "PERMISSION_DENIED", "{origin}");
    }
    // A session cookie without any Origin (a form post by an old browser, or a forger's
    // script) is refused too; so is one that hides among other cookies.
    let mut jar = writer.clone();
    let resp = no_redirect_client()
        .post(stack.envoy.plain_url(CREATE))
        .header("cookie", format!("a=1; {}; z=2", jar.header()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "session without an origin");
    assert_eq!(
        stack.envoy.stat("cluster.mlflow.upstream_rq_total").await,
        0,
        "no cross-site change reached MLflow"
    );
    // Same origin: through.
    echoed(post(&stack, &mut jar, CREATE, &ours).await).await;

    // API clients send no Origin and no session: csrf never stands in their way, on the
    // browser's /mlflow/ routes or the API's.
    for path in [CREATE, "/api/2.0/mlflow/experiments/create"] {
        let resp = plain_client()
            .post(stack.envoy.plain_url(path))
            .header("authorization", bearer(READWRITE_KEY))
            .body("{}")
            .send()
            .await
            .unwrap();
        echoed(resp).await;
        let resp = plain_client()
            .post(stack.envoy.plain_url(path))
            .header("x-api-key", READWRITE_KEY)
            .header("origin", "http://elsewhere.example")
            .body("{}")
            .send()
            .await
            .unwrap();
        echoed(resp).await;
    }
    // A key with a session cookie: the key decides (the cookie is ignored), so a read-only
    // key stays read-only whatever session rides along.
    let resp = plain_client()
        .post(stack.envoy.plain_url(CREATE))
        .header("x-api-key", READONLY_KEY)
        .header("cookie", writer.header())
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, _, body) = filter_reply(resp).await;
    assert_eq!(
        (status, &body["error_code"]),
        (403, &"PERMISSION_DENIED".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_clients_never_get_a_redirect() {
    let stack = Stack::start().await;
    let client = no_redirect_client();
    let token = stack.mint("svc-user", &["mlflow:read"]);
    let paths = [
        "/mlflow/",
        "/api/mlflow/",
        "/mlflow/graphql",
        "/mlflow/static-files/favicon.ico",
        "/mlflow/get-artifact?path=x&run_uuid=r",
        SEARCH,
        "/mlflow/api/2.0/mlflow/experiments/search",
        "/api/mlflow/api/2.0/mlflow/experiments/search",
        "/api/2.0/mlflow/experiments/search",
        "/ajax-api/2.0/mlflow/experiments/search",
        "/api/3.0/mlflow/traces/tr-1",
        "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt",
    ];
    let credentials: [(&str, &str, String); 5] = [
        ("key as bearer", "authorization", bearer(READWRITE_KEY)),
        ("x-api-key", "x-api-key", READONLY_KEY.to_owned()),
        ("user JWT", "authorization", bearer(&token)),
        ("bad key", "authorization", bearer("hk_not_a_key")),
        ("basic", "authorization", "Basic dXNlcjpwdw==".to_owned()),
    ];
    for path in paths {
        for method in [Method::GET, Method::POST] {
            for (label, name, value) in &credentials {
                let resp = client
                    .request(method.clone(), stack.envoy.plain_url(path))
                    .header(*name, value)
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                assert!(
                    !resp.status().is_redirection(),
                    "{label}: {method} {path} got {}",
                    resp.status()
                );
            }
            // No credential at all: only a browser opening the shell is sent to sign in;
            // everything else is a 401 in the contract's shape.
            let resp = client
                .request(method.clone(), stack.envoy.plain_url(path))
                .send()
                .await
                .unwrap();
            if method == Method::GET && path == "/mlflow/" {
                assert_eq!(resp.status(), 302, "the shell");
            } else {
                assert_unauthenticated(resp, &format!("no credential: {method} {path}")).await;
            }
        }
    }
    // mTLS callers on the TLS listener, with and without a forwarded user token.
    let internal = tls_client(Some("client"));
    for path in paths {
        let resp = internal
            .get(stack.envoy.tls_url(path))
            .send()
            .await
            .unwrap();
        assert!(!resp.status().is_redirection(), "mTLS {path}");
        assert_eq!(resp.status(), 200, "mTLS {path}");
    }
    // Preflights are never redirected either.
    let resp = client
        .request(Method::OPTIONS, stack.envoy.plain_url(SEARCH))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(!resp.status().is_redirection(), "preflight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_clears_the_session_and_leads_back_to_sign_in() {
    let stack = Stack::start().await;
    let (mut jar, _) = sign_in(&base(&stack), WRITER.0, WRITER.1).await;
    let resp = get(&stack, &mut jar, "/mlflow/oauth2/signout").await;
    assert_eq!(resp.status(), 302);
    let logout = resp.headers()["location"].to_str().unwrap().to_owned();
    let provider = format!("{}/oauth2/logout?", stack.auth().base_url());
    assert!(logout.starts_with(&provider), "{logout}");
    for name in SESSION_COOKIES {
        assert!(
            !jar.cookies.contains_key(name),
            "{name} kept: {:?}",
            jar.cookies
        );
    }
    // Envoy asks the provider to send the browser to the bare root, which the gateway does
    // not serve (a 404, CONTRACT section 2); the provider sends it to the UI registered for
    // that origin instead, which (with no session) leads to the sign-in form again.
    assert!(
        logout.contains(&format!(
            "post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A{}%2F",
            stack.envoy.ports.plain
        )),
        "{logout}"
    );
    let client = no_redirect_client();
    let resp = client.get(&logout).send().await.unwrap();
    assert_eq!(resp.status(), 302, "end session");
    let ui = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(ui, stack.envoy.plain_url("/mlflow/"));
    let resp = send(&client, &mut jar, Method::GET, &ui, None).await;
    assert_eq!(resp.status(), 302);
    let again = resp.headers()["location"].to_str().unwrap();
    assert!(
        again.starts_with(&format!("{}/oauth2/authorize?", stack.auth().base_url())),
        "{again}"
    );
    // And background calls without the session get 401, not a redirect.
    assert_unauthenticated(get(&stack, &mut jar, SEARCH).await, "signed out").await;
}

/// MLflow answers any localhost origin's CORS request with credentials allowed, and a
/// browser attaches the session cookies to requests from every port of the same host. On
/// the cookie routes the gateway drops those answers, so a page elsewhere cannot read what
/// a signed-in user sees; the UI itself is same-origin and needs none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_from_other_origins_cannot_read_through_a_session() {
    let mlflow = e2e::mlflow::Mlflow::start().await;
    let stack = Stack::start_with(StackOptions {
        upstream_port: Some(mlflow.port),
        ..StackOptions::default()
    })
    .await;
    let (jar, _) = sign_in(&base(&stack), READER.0, READER.1).await;
    let elsewhere = stack.auth().base_url();
    let search = SEARCH.trim_start_matches("/mlflow");
    let artifacts = "/api/2.0/mlflow-artifacts/artifacts?path=";
    for (label, path) in [
        ("UI call", SEARCH.to_owned()),
        ("artifact listing", format!("/mlflow{artifacts}")),
    ] {
        for method in [Method::GET, Method::OPTIONS] {
            // MLflow itself would let that origin read it: the check below can fail.
            let direct_path = path.trim_start_matches("/mlflow");
            let direct = preflight_or_get(
                method.clone(),
                &format!("http://127.0.0.1:{}{direct_path}", mlflow.port),
                &elsewhere,
                None,
            )
            .await;
            assert_eq!(
                cors_of(&direct)
                    .get("access-control-allow-origin")
                    .map(String::as_str),
                Some(elsewhere.as_str()),
                "{label} {method}: MLflow no longer answers CORS; {direct:?}"
            );
            let through = preflight_or_get(
                method.clone(),
                &stack.envoy.plain_url(&path),
                &elsewhere,
                // A preflight carries no cookies (and passes without credentials).
                (method == Method::GET).then(|| jar.header()),
            )
            .await;
            assert_eq!(
                cors_of(&through),
                Default::default(),
                "{label} {method}: the gateway passed MLflow's CORS answer on"
            );
            if method == Method::GET {
                assert_eq!(through.status(), 200, "{label}: the session still works");
            }
        }
    }
    // The API routes take no cookies, so what MLflow says about CORS there is left as is.
    let api = plain_client()
        .get(stack.envoy.plain_url(search))
        .header("origin", &elsewhere)
        .header("authorization", bearer(READWRITE_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    assert!(cors_of(&api).contains_key("access-control-allow-origin"));
}

async fn preflight_or_get(
    method: Method,
    url: &str,
    origin: &str,
    cookies: Option<String>,
) -> reqwest::Response {
    let mut req = no_redirect_client()
        .request(method.clone(), url)
        .header("origin", origin);
    if method == Method::OPTIONS {
        req = req.header("access-control-request-method", "GET");
    }
    if let Some(cookies) = cookies {
        req = req.header("cookie", cookies);
    }
    req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn cors_of(resp: &reqwest::Response) -> std::collections::BTreeMap<String, String> {
    resp.headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("access-control-"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect()
}

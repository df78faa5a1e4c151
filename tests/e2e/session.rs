//! A browser's side of the sign-in, by hand: follows the oauth2 filter's redirects through
//! the dev provider's form, and keeps the cookies, so tests can also tamper with them.

use std::collections::BTreeMap;

use reqwest::{Client, Method, Response};

/// Cookies by name, as a browser would send them back.
#[derive(Debug, Clone, Default)]
pub struct Jar {
    pub cookies: BTreeMap<String, String>,
    /// Every `set-cookie` line seen, for checking attributes.
    pub set_lines: Vec<String>,
}

impl Jar {
    /// Takes a reply's `set-cookie` lines: a value `deleted` (or an expiry in the past)
    /// removes the cookie.
    pub fn absorb(&mut self, resp: &Response) {
        for line in resp.headers().get_all("set-cookie") {
            let line = line.to_str().unwrap_or_default().to_owned();
            let pair = line.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                let gone = value == "deleted" || line.contains("expires=Thu, 01 Jan 1970");
                if gone {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies
                        .insert(name.trim().to_owned(), value.trim().to_owned());
                }
            }
            self.set_lines.push(line);
        }
    }

    pub fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The `set-cookie` line that last set `name`.
    pub fn set_line(&self, name: &str) -> Option<&str> {
        self.set_lines
            .iter()
            .rev()
            .find(|l| l.starts_with(&format!("{name}=")) && !l.contains("=deleted"))
            .map(String::as_str)
    }
}

/// A client that never follows redirects: each hop is looked at.
pub fn no_redirect_client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// One request with the jar's cookies (and `origin` when given); the jar takes the reply's.
pub async fn send(
    client: &Client,
    jar: &mut Jar,
    method: Method,
    url: &str,
    origin: Option<&str>,
) -> Response {
    let mut req = client.request(method, url);
    if !jar.cookies.is_empty() {
        req = req.header("cookie", jar.header());
    }
    if let Some(origin) = origin {
        req = req
            .header("origin", origin)
            .header("content-type", "application/json")
            .body("{}");
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    jar.absorb(&resp);
    resp
}

fn location(resp: &Response) -> String {
    resp.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no location in a {} reply", resp.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Opens `base/mlflow/`, signs in on the provider's form as `user`, and returns the jar
/// holding the session the oauth2 filter set, plus the URL it finally sent the browser to.
pub async fn sign_in(base: &str, user: &str, password: &str) -> (Jar, String) {
    let client = no_redirect_client();
    let mut jar = Jar::default();
    let resp = send(
        &client,
        &mut jar,
        Method::GET,
        &format!("{base}/mlflow/"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 302, "the shell redirects to sign in");
    let authorize = location(&resp);
    // The provider shows its form; the form posts every parameter back.
    let form_page = client.get(&authorize).send().await.unwrap();
    assert_eq!(form_page.status(), 200, "{authorize}");
    let (endpoint, query) = authorize.split_once('?').expect("authorize has a query");
    let mut form: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    form.push(("username".into(), user.into()));
    form.push(("password".into(), password.into()));
    let signed = client.post(endpoint).form(&form).send().await.unwrap();
    assert_eq!(signed.status(), 302, "sign-in as {user}");
    let callback = location(&signed);
    assert!(
        callback.starts_with(&format!("{base}/mlflow/oauth2/callback?")),
        "{callback}"
    );
    let done = send(&client, &mut jar, Method::GET, &callback, None).await;
    assert_eq!(done.status(), 302, "the callback sets the session");
    let back = location(&done);
    (jar, back)
}

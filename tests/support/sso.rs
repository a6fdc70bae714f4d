//! Sign-in scenarios: an OpenID provider (npm `oidc-provider`), linkgate configured against
//! it, an echo upstream and, when asked, Redis — and a browser-less user who signs in
//! through linkgate the way a browser would.

use std::time::Duration;

use reqwest::header::LOCATION;
use url::Url;

use super::oidc::{self, ClientConfig, OidcProvider, ProviderOptions};
use super::{client, GateBuilder, Redis, Upstream, COOKIE_SECRET};

/// Which session store the gate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The in-memory store.
    Memory,
    /// A real redis-server started for the scenario.
    Redis,
}

/// The client linkgate is registered as.
pub const CLIENT_ID: &str = "linkgate";
/// Its secret (at both providers).
pub const CLIENT_SECRET: &str = "linkgate-secret";
/// The client linkgate is registered as at the accounts provider.
pub const ACCOUNTS_CLIENT_ID: &str = "linkgate-accounts";

/// How the cloud account (accounts.magento.cloud) is known, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accounts {
    /// No `[account]`: a plain OIDC gate.
    None,
    /// A second OpenID provider and `source = "oauth2"`.
    OAuth2,
    /// A platform JWT in the cookie [`PLATFORM_COOKIE`], `source = "jwt"`.
    Jwt,
}

/// Which provider plays Magento.com: the suites run against both (see [`flavored_tests!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// npm `oidc-provider` as it comes: end-session endpoint, space-separated scopes,
    /// `client_secret_basic`, boolean `email_verified`, subjects that are the login name.
    Standard,
    /// The Adobe IMS look-alike (provider.mjs `ims`) with linkgate's `adobe-ims` preset: no
    /// end-session endpoint (`/ims/logout/v1`), comma-separated scopes required,
    /// `client_secret_post` only, `email_verified` as a string, `...@AdobeID` subjects,
    /// rotating refresh tokens, 24-hour tokens.
    Ims,
}

impl Flavor {
    /// The subject the provider gives the person who signs in as `login` (what linkgate
    /// forwards as `X-Forwarded-User` and keys links by).
    pub fn sub(self, login: &str) -> String {
        match self {
            Flavor::Standard => login.to_string(),
            Flavor::Ims => {
                use sha2::Digest as _;
                let digest = sha2::Sha256::digest(login.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
                format!("{}@AdobeID", &hex[..24])
            }
        }
    }

    /// The `scope` linkgate sends in its authorization requests with this flavour's
    /// configuration (the defaults, or the `adobe-ims` preset's).
    pub fn scope(self) -> &'static str {
        match self {
            Flavor::Standard => "openid email profile",
            Flavor::Ims => "openid,AdobeID,email,profile,offline_access",
        }
    }

    /// Checks that `url` is the provider logout linkgate sends a signing-out browser to:
    /// RP-initiated logout with `post_logout_redirect_uri` (and `id_token_hint` when the
    /// session had an id_token), or IMS's `/ims/logout/v1` with `client_id` and
    /// `redirect_uri` (IMS's names) — both returning to the gate's signed-out page
    /// `signed_out` (an absolute URL).
    pub fn assert_provider_logout(self, s: &Scenario, url: &str, signed_out: &str) {
        let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let param = |k: &str| {
            parsed
                .query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string())
        };
        match self {
            Flavor::Standard => {
                assert!(url.starts_with(&s.provider.end_session_endpoint()), "{url}");
                assert_eq!(
                    param("post_logout_redirect_uri").as_deref(),
                    Some(signed_out)
                );
            }
            Flavor::Ims => {
                assert!(url.starts_with(s.provider.issuer()), "{url}");
                assert_eq!(parsed.path(), "/ims/logout/v1", "{url}");
                assert_eq!(param("client_id").as_deref(), Some(CLIENT_ID), "{url}");
                assert_eq!(param("redirect_uri").as_deref(), Some(signed_out), "{url}");
                assert_eq!(
                    param("post_logout_redirect_uri"),
                    None,
                    "IMS's names: {url}"
                );
                assert_eq!(param("id_token_hint"), None, "IMS's names: {url}");
            }
        }
    }
}

/// Instantiates each listed `async fn name(flavor: Flavor)` as two tests, `standard::name`
/// and `ims::name` (the standard provider and the IMS look-alike), so that one body runs
/// against both. `cargo test --test login ims::` runs one flavour.
#[macro_export]
macro_rules! flavored_tests {
    ($($name:ident),* $(,)?) => {
        mod standard {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::sso::Flavor::Standard).await
                }
            )*
        }
        mod ims {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::sso::Flavor::Ims).await
                }
            )*
        }
    };
}

/// The cookie the "platform" puts its account JWT in.
pub const PLATFORM_COOKIE: &str = "platform_jwt";
/// The audience of account JWTs.
pub const PLATFORM_AUDIENCE: &str = "linkgate-platform";

/// Everything a sign-in scenario runs.
pub struct Scenario {
    /// Which provider plays Magento.com.
    pub flavor: Flavor,
    /// The provider ("Magento.com").
    pub provider: OidcProvider,
    /// The accounts provider ("accounts.magento.cloud"), with [`Accounts::OAuth2`] or
    /// [`Accounts::Jwt`] (then only its JWKS is used).
    pub accounts: Option<OidcProvider>,
    /// The key account JWTs are signed with ([`Accounts::Jwt`]).
    pub account_key: Option<oidc::GeneratedKey>,
    /// linkgate.
    pub gate: super::Gate,
    /// The application behind it.
    pub upstream: Upstream,
    /// Redis, for [`StoreKind::Redis`].
    pub redis: Option<Redis>,
    /// The configuration sections the gate runs with (for a second instance).
    pub sections: String,
    /// Extra `[server]` lines and the `app` upstream's extra lines (for a second instance).
    pub server_lines: String,
    /// Extra lines of the `app` upstream (and its `[[upstreams.rules]]`).
    pub upstream_lines: String,
}

impl Scenario {
    /// A second linkgate instance with the same configuration (same store, same cookie
    /// secret), on its own ports.
    pub fn another_gate(&self) -> super::Gate {
        GateBuilder::new()
            .server(&self.server_lines)
            .upstream_with("app", &self.upstream.url(), &self.upstream_lines)
            .toml(&self.sections)
            .start()
    }
}

/// Makes extra `[server]` lines from the builder (which knows the gate's port).
type ServerLines = Box<dyn FnOnce(&GateBuilder) -> String>;

/// Builds a [`Scenario`].
pub struct ScenarioBuilder {
    store: StoreKind,
    accounts: Accounts,
    toml: String,
    server: Option<ServerLines>,
    upstream: String,
    sso_keys: String,
    ims: bool,
    provider: Box<dyn FnOnce(ProviderOptions) -> ProviderOptions>,
}

impl ScenarioBuilder {
    /// A scenario on the given store.
    pub fn new(store: StoreKind) -> Self {
        Self {
            store,
            accounts: Accounts::None,
            toml: String::new(),
            server: None,
            upstream: String::new(),
            sso_keys: String::new(),
            ims: false,
            provider: Box::new(|o| o),
        }
    }

    /// More configuration: whole sections, or keys appended to `[session]`/`[sso]` through
    /// `session_extra`/`sso_extra` markers is not needed: sections may be repeated only once,
    /// so pass complete extra sections here (`[authz]`, `[headers]`...).
    pub fn toml(mut self, toml: &str) -> Self {
        self.toml.push_str(toml);
        self.toml.push('\n');
        self
    }

    /// Lines for `[server]`, given the builder (for `public_url`, which names its port).
    pub fn server(mut self, lines: impl FnOnce(&GateBuilder) -> String + 'static) -> Self {
        self.server = Some(Box::new(lines));
        self
    }

    /// More lines for the `app` upstream: its keys, then `[[upstreams.rules]]` tables.
    pub fn upstream_toml(mut self, toml: &str) -> Self {
        self.upstream.push_str(toml);
        self.upstream.push('\n');
        self
    }

    /// More keys for `[sso]` (`http_timeout`, `preset`...).
    pub fn sso_keys(mut self, keys: &str) -> Self {
        self.sso_keys.push_str(keys);
        self.sso_keys.push('\n');
        self
    }

    /// The SSO provider behaves like Adobe IMS (provider.mjs `ims`: no end_session in its
    /// discovery, `/ims/logout/v1`, comma scopes, string `email_verified`, `...@AdobeID`
    /// subjects, rotating refresh tokens, `client_secret_post`), and linkgate runs the
    /// `adobe-ims` preset against it (its issuer replaced by the local one).
    pub fn ims(mut self) -> Self {
        self.ims = true;
        self.sso_keys("preset = \"adobe-ims\"")
    }

    /// The standard provider, or the IMS look-alike ([`ScenarioBuilder::ims`]).
    pub fn flavor(self, flavor: Flavor) -> Self {
        match flavor {
            Flavor::Standard => self,
            Flavor::Ims => self.ims(),
        }
    }

    /// Adds `[account]` of the given kind.
    pub fn accounts(mut self, accounts: Accounts) -> Self {
        self.accounts = accounts;
        self
    }

    /// Adjusts the provider's options (accounts, token lifetimes).
    pub fn provider(
        mut self,
        f: impl FnOnce(ProviderOptions) -> ProviderOptions + 'static,
    ) -> Self {
        self.provider = Box::new(f);
        self
    }

    /// Starts everything.
    pub async fn start(self) -> Scenario {
        self.start_with(|_| String::new()).await
    }

    /// Starts everything; `session_keys` returns extra lines for `[session]` given the
    /// builder (for `ttl`, `refresh_before`).
    pub async fn start_with(self, session_keys: impl FnOnce(&GateBuilder) -> String) -> Scenario {
        let upstream = Upstream::start().await;
        let builder = GateBuilder::new();
        let callback = builder.url("/oauth2/callback");
        let signed_out = builder.url("/oauth2/signed_out");
        let mut client = ClientConfig::confidential(CLIENT_ID, CLIENT_SECRET, &callback)
            .post_logout_redirect_uri(&signed_out);
        if self.ims {
            client = client.auth_method("client_secret_post");
        }
        let opts = (self.provider)(ProviderOptions::new("sso").ims(self.ims).client(client));
        let provider = OidcProvider::start(opts);
        let account_key = (self.accounts == Accounts::Jwt).then(|| oidc::generate_key("platform"));
        let accounts = match self.accounts {
            Accounts::None => None,
            Accounts::OAuth2 => Some(OidcProvider::start(
                ProviderOptions::new("accounts").client(
                    ClientConfig::confidential(
                        ACCOUNTS_CLIENT_ID,
                        CLIENT_SECRET,
                        &builder.url("/oauth2/account/callback"),
                    )
                    .post_logout_redirect_uri(&signed_out),
                ),
            )),
            Accounts::Jwt => Some(OidcProvider::start(ProviderOptions::new("platform").jwks(
                serde_json::json!({
                    "keys": [account_key.as_ref().map(|k| k.jwk.clone())]
                }),
            ))),
        };
        let account_section = match (&accounts, self.accounts) {
            (Some(a), Accounts::OAuth2) => format!(
                "[account]\nsource = \"oauth2\"\nissuer = \"{}\"\nclient_id = \"{ACCOUNTS_CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n",
                a.issuer()
            ),
            (Some(a), Accounts::Jwt) => format!(
                "[account]\nsource = \"jwt\"\ncookie = \"{PLATFORM_COOKIE}\"\nissuer = \"{}\"\naudience = \"{PLATFORM_AUDIENCE}\"\njwks_url = \"{}\"\n",
                a.issuer(),
                a.jwks_uri()
            ),
            _ => String::new(),
        };
        let redis = (self.store == StoreKind::Redis).then(Redis::start);
        let store = match &redis {
            Some(r) => format!("store = \"redis\"\n\n[redis]\nurl = \"{}\"\n", r.url()),
            None => "store = \"memory\"\n".to_string(),
        };
        let extra_session = session_keys(&builder);
        let sections = format!(
            "[sso]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n{sso_keys}\n\
             {account_section}\n\
             [session]\ncookie_secret = \"{COOKIE_SECRET}\"\ncookie_secure = false\n{extra_session}\n{store}\n{extra}",
            issuer = provider.issuer(),
            sso_keys = self.sso_keys,
            extra = self.toml,
        );
        let server_lines = self.server.map(|f| f(&builder)).unwrap_or_default();
        let gate = builder
            .server(&server_lines)
            .upstream_with("app", &upstream.url(), &self.upstream)
            .toml(&sections)
            .start();
        Scenario {
            flavor: if self.ims {
                Flavor::Ims
            } else {
                Flavor::Standard
            },
            provider,
            accounts,
            account_key,
            gate,
            upstream,
            redis,
            sections,
            server_lines,
            upstream_lines: self.upstream,
        }
    }
}

/// A browser-less user: a cookie jar, no automatic redirects.
pub fn user() -> reqwest::Client {
    client()
}

/// A callback's answer when the sign-in could not complete: linkgate redirects a browser to
/// a problem page of its own (`{prefix}/link/problem?p=`, src/endpoints/problem.rs), so a reload
/// does not replay the callback. Asserts that redirect and returns the page (its status and
/// text are what the person reads). Read the callback's own headers (`Set-Cookie`) first.
pub async fn problem_page(
    http: &reqwest::Client,
    callback: reqwest::Response,
) -> reqwest::Response {
    assert_eq!(
        callback.status(),
        302,
        "a failed callback redirects to its problem page"
    );
    let to = location(&callback);
    assert!(to.contains("/oauth2/link/problem?p="), "{to}");
    navigate(http.get(to)).send().await.expect("problem page")
}

/// Headers a browser sends on a top-level navigation.
pub fn navigate(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .header("sec-fetch-mode", "navigate")
}

/// The `Location` of a redirect, resolved against `base`.
pub fn location(resp: &reqwest::Response) -> String {
    let loc = resp
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location in a {} answer", resp.status()))
        .to_str()
        .expect("Location text");
    resp.url().join(loc).expect("Location URL").to_string()
}

impl Scenario {
    /// Opens `path` in "the browser" and walks through the sign-in as `login`; returns the
    /// callback URL (not yet requested), so tests can replay or tamper with it.
    pub async fn begin_sign_in(
        &self,
        http: &reqwest::Client,
        path: &str,
        login: &str,
    ) -> oidc::LoginOutcome {
        let resp = navigate(http.get(self.gate.url(path)))
            .send()
            .await
            .expect("open page");
        assert_eq!(
            resp.status(),
            302,
            "an anonymous navigation is sent to sign in"
        );
        let start = location(&resp);
        assert!(start.contains("/oauth2/start?rd="), "{start}");
        let resp = navigate(http.get(&start)).send().await.expect("start");
        assert_eq!(
            resp.status(),
            302,
            "start sends the browser to the provider: {:?}",
            resp.text().await
        );
        let authorize = location(&resp);
        assert!(authorize.starts_with(self.provider.issuer()), "{authorize}");
        oidc::login(http, &authorize, login).await
    }

    /// Completes a sign-in begun by [`Scenario::begin_sign_in`]: requests the callback and
    /// returns its answer (a redirect to `rd` with the session cookie, or an error page).
    pub async fn finish_sign_in(
        &self,
        http: &reqwest::Client,
        outcome: &oidc::LoginOutcome,
    ) -> reqwest::Response {
        navigate(http.get(&outcome.callback_url))
            .send()
            .await
            .expect("callback")
    }

    /// Signs in as `login` starting from `path`; returns the answer at `path` afterwards.
    pub async fn sign_in(
        &self,
        http: &reqwest::Client,
        path: &str,
        login: &str,
    ) -> reqwest::Response {
        let outcome = self.begin_sign_in(http, path, login).await;
        let resp = self.finish_sign_in(http, &outcome).await;
        assert_eq!(resp.status(), 302, "callback: {:?}", resp.text().await);
        let rd = location(&resp);
        assert_eq!(
            Url::parse(&rd).unwrap().path(),
            Url::parse(&self.gate.url(path)).unwrap().path()
        );
        navigate(http.get(rd))
            .send()
            .await
            .expect("the page after sign-in")
    }
}

impl Scenario {
    /// Signs in to the cloud account (`account/start`) as `login`, landing on `rd`; returns
    /// the callback's answer.
    pub async fn account_sign_in(
        &self,
        http: &reqwest::Client,
        rd: &str,
        login: &str,
    ) -> reqwest::Response {
        let accounts = self.accounts.as_ref().expect("an accounts provider");
        let start = format!(
            "{}?rd={}",
            self.gate.url("/oauth2/account/start"),
            percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC)
        );
        let resp = navigate(http.get(start))
            .send()
            .await
            .expect("account start");
        assert_eq!(resp.status(), 302, "{:?}", resp.text().await);
        let authorize = location(&resp);
        assert!(authorize.starts_with(accounts.issuer()), "{authorize}");
        let outcome = oidc::login(http, &authorize, login).await;
        navigate(http.get(&outcome.callback_url))
            .send()
            .await
            .expect("account callback")
    }

    /// Follows a redirect chain inside linkgate and through the SSO provider (signing in as
    /// `login` when a form is shown) until an answer that is not a redirect, or a redirect
    /// that leaves both. Returns the final answer and whether a password was asked.
    pub async fn follow(
        &self,
        http: &reqwest::Client,
        mut resp: reqwest::Response,
        login: &str,
    ) -> (reqwest::Response, bool) {
        let mut prompted = false;
        for _ in 0..10 {
            if !resp.status().is_redirection() {
                return (resp, prompted);
            }
            let next = location(&resp);
            if next.starts_with(self.provider.issuer()) {
                let outcome = oidc::login(http, &next, login).await;
                prompted |= outcome.prompted;
                resp = navigate(http.get(&outcome.callback_url))
                    .send()
                    .await
                    .expect("callback");
            } else if next.starts_with(&self.gate.url("/")) {
                resp = navigate(http.get(&next)).send().await.expect("follow");
            } else {
                return (resp, prompted);
            }
        }
        panic!("too many redirects");
    }

    /// The CSRF token of the account page (its JSON twin carries it).
    pub async fn csrf(&self, http: &reqwest::Client) -> String {
        let v: serde_json::Value = http
            .get(self.gate.url("/oauth2/link"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("link page")
            .json()
            .await
            .expect("link JSON");
        v["csrf"].as_str().expect("csrf").to_string()
    }

    /// Signs out as a person does: opens `sign_out{query}` (the confirmation page) and
    /// presses its button (a same-site POST with the CSRF token). Returns the POST's answer.
    pub async fn sign_out(&self, http: &reqwest::Client, query: &str) -> reqwest::Response {
        let url = self.gate.url(&format!("/oauth2/sign_out{query}"));
        let page: serde_json::Value = http
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .expect("sign-out page")
            .json()
            .await
            .expect("sign-out JSON");
        let csrf = page["csrf"].as_str().expect("csrf");
        http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", self.gate.url(""))
            .header("sec-fetch-site", "same-origin")
            .body(format!("csrf={csrf}"))
            .send()
            .await
            .expect("sign out")
    }

    /// Posts a form on the account page (`link/connect` or `link/disconnect`).
    pub async fn post_link(
        &self,
        http: &reqwest::Client,
        action: &str,
        csrf: &str,
    ) -> reqwest::Response {
        http.post(self.gate.url(&format!("/oauth2/link/{action}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", self.gate.url(""))
            .header("sec-fetch-site", "same-origin")
            .header("accept", "text/html")
            .body(format!("csrf={csrf}"))
            .send()
            .await
            .expect("post")
    }
}

/// Waits (bounded) for `probe` to hold, polling every 20 ms.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !probe().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The Magento.com link rule as a person meets it, in a real browser (Debian's headless
//! Chromium): Method 1 from a protected page and from the account page's button, Method 2
//! without a second password, Magento.com as the primary login, a link conflict, disconnect
//! and sign-out. Each test asserts what is on the screen (the page title and heading, the
//! "Single Sign-On" status, the linked email, where the browser ended up) and saves a
//! screenshot of every page it lands on under `target/screenshots/`.
//!
//! Issue 16 adds the platform-JWT source walked both ways (Magento.com first, then the
//! platform, then one click; the cloud account first), a screenshot of every account page
//! state (Magento.com only, both unlinked, cloud only, linked to someone else, grace, warn,
//! disconnect not allowed), and an axe-core check (WCAG 2.1 A/AA) of each page it visits:
//! the troubleshooting pages (Magento.com refused, unreachable, the sign-in expired mid-way)
//! with their "Sign in again", the sign-out confirmation, and the pages in Swedish (a
//! Chromium whose languages are `sv-SE,sv`). Sign-out walks every provider's logout.
//!
//! The same flows over HTTP, with the store and metrics checked in detail, are in
//! `tests/linking.rs`; this suite adds what only a browser shows: that the pages' forms,
//! links and redirects actually work under the pages' own security headers, and that the
//! browser's own requests (`/favicon.ico`) never start a sign-in.

mod support;

use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;
use support::browser::Browser;
use support::oidc::{ClientConfig, OidcProvider};
use support::sso::{eventually, user, Accounts, Scenario, ScenarioBuilder, StoreKind};
use support::{Gate, Upstream};

/// The account page's path.
const ACCOUNT_PAGE: &str = "/oauth2/link";

async fn scenario() -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .accounts(Accounts::OAuth2)
        .start()
        .await
}

// === A person at a browser ===

/// One person with their own browser, in one scenario. Every step that lands on a page
/// saves a screenshot of it.
struct Person<'s> {
    s: &'s Scenario,
    browser: Browser,
}

impl<'s> Person<'s> {
    async fn new(s: &'s Scenario) -> Self {
        Self {
            s,
            browser: Browser::start().await,
        }
    }

    /// Types an address into the location bar: a path on the gate, or a whole URL.
    async fn opens(&self, path_or_url: &str, shot: &str) {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            self.s.gate.url(path_or_url)
        };
        self.browser.goto(&url).await;
        self.browser.screenshot(shot).await;
    }

    /// Starts the cloud account sign-in (what the "Sign in to accounts.magento.cloud" buttons
    /// link to), to come back to `rd`.
    async fn opens_account_sign_in(&self, rd: &str, shot: &str) {
        let rd = percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC);
        self.opens(&format!("/oauth2/account/start?rd={rd}"), shot)
            .await;
    }

    /// Clicks the button or link that reads `label` and waits for the next page.
    async fn clicks(&self, label: &str, shot: &str) {
        self.browser.click_text(label).await;
        self.browser.screenshot(shot).await;
    }

    /// Signs in as `login` on `provider`'s sign-in form, which must be on the screen.
    async fn signs_in(&self, provider: &OidcProvider, login: &str, shot: &str) {
        self.sees_sign_in_form(provider).await;
        self.browser.fill("#login", login).await;
        self.browser.fill("#password", "any password").await;
        self.browser.click("#submit").await;
        self.browser.screenshot(shot).await;
    }

    /// The sign-in form of `provider` (the test provider's page: title "Sign-in", its name
    /// on top), asking for a password.
    async fn sees_sign_in_form(&self, provider: &OidcProvider) {
        let url = self.browser.current_url().await;
        assert!(
            url.as_str().starts_with(provider.issuer()),
            "expected the {} sign-in form, the browser is at {url}:\n{}",
            provider.options().name,
            self.browser.body_text().await
        );
        assert_eq!(self.browser.title().await, "Sign-in");
        assert_eq!(
            self.browser.text(".provider strong").await,
            provider.options().name
        );
        assert!(self.browser.has("#password").await, "a password is asked");
    }

    /// The account page ("Account Settings", section "Single Sign-On"); returns what its
    /// `Status` says.
    async fn sees_account_page(&self) -> String {
        assert_eq!(self.browser.path().await, ACCOUNT_PAGE);
        self.sees_page("Account Settings").await;
        assert_eq!(self.browser.text("#sso").await, "Single Sign-On");
        assert_eq!(
            self.browser
                .text("section[aria-labelledby=sso] dd:nth-of-type(1)")
                .await,
            "Magento.com",
            "Provider: Magento.com"
        );
        self.browser.text("#status").await
    }

    /// The Magento.com login the account page says is connected.
    async fn connected_as(&self) -> String {
        self.browser
            .text("section[aria-labelledby=sso] p strong")
            .await
    }

    /// A linkgate page: its `<title>` starts with its heading `heading`.
    async fn sees_page(&self, heading: &str) {
        assert_eq!(self.browser.text("main h1").await, heading);
        let title = self.browser.title().await;
        assert!(
            title.starts_with(heading),
            "title {title:?} for heading {heading:?}"
        );
    }

    /// The application behind the gate, at `path`: the echo upstream shows the request it
    /// received; returns its headers.
    async fn sees_the_app_at(&self, path: &str) -> Vec<(String, String)> {
        assert_eq!(self.browser.path().await, path);
        let echo = self.browser.json().await;
        assert_eq!(echo["uri"], path, "{echo}");
        serde_json::from_value(echo["headers"].clone()).expect("echoed headers")
    }

    /// What the page says, all of it.
    async fn page_text(&self) -> String {
        self.browser.body_text().await
    }
}

/// A header the application received (the echo upstream's JSON), by lower-case name.
fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// === What linkgate answered (its access log) ===

/// One `linkgate::access` line.
#[derive(Debug)]
struct Access {
    method: String,
    path: String,
    status: u16,
    decision: String,
}

/// linkgate's access log so far, oldest first. This is how a test sees status codes that a
/// browser does not show (a 409 page, the 401 of a favicon).
fn access_log(gate: &Gate) -> Vec<Access> {
    let log = strip_ansi(&gate.log());
    log.lines()
        .filter(|l| l.contains("linkgate::access"))
        .map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string()
            };
            Access {
                method: field("method"),
                path: field("path"),
                status: field("status").parse().unwrap_or(0),
                decision: field("decision"),
            }
        })
        .collect()
}

/// Removes terminal colour codes (`ESC [ ... m`) from the log text.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits (bounded) for linkgate to have answered `method path` with `status` after the
/// `since`-th line of its access log.
async fn gate_answered(gate: &Gate, since: usize, method: &str, path: &str, status: u16) {
    eventually(
        &format!("linkgate to answer {method} {path} with {status}"),
        Duration::from_secs(10),
        || async {
            access_log(gate)
                .iter()
                .skip(since)
                .any(|a| a.method == method && a.path == path && a.status == status)
        },
    )
    .await;
}

/// Chromium asks for `/favicon.ico` after each page of the gate. While the person is not
/// (fully) signed in, that request gets a plain 401: it must never start a sign-in, which
/// would overwrite the sign-in the person is in the middle of.
async fn favicon_refused(gate: &Gate, since: usize) {
    gate_answered(gate, since, "GET", "/favicon.ico", 401).await;
}

/// At the end of each test: no `/favicon.ico` request was ever redirected (into a sign-in
/// or anywhere); each got a 401, or went to the application for a linked session.
fn no_favicon_started_a_sign_in(gate: &Gate) {
    for a in access_log(gate).iter().filter(|a| a.path == "/favicon.ico") {
        assert!(
            a.status == 401 || (a.status == 200 && a.decision == "session"),
            "the browser's favicon request was answered {} ({}): it must never start a sign-in",
            a.status,
            a.decision
        );
    }
}

// === Setup over HTTP (what the scenario needs before the person starts) ===

/// Links cloud account `account` with Magento.com `sso` the browser-less way (Method 1).
async fn link_over_http(s: &Scenario, account: &str, sso: &str) {
    let http = user();
    let resp = s.account_sign_in(&http, "/projects", account).await;
    assert_eq!(resp.status(), 302, "account callback");
    let (resp, _) = s.follow(&http, resp, sso).await;
    assert_eq!(resp.status(), 200, "linked and through to the app");
}

// === The scenarios ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_1_a_cloud_account_is_sent_to_magento_and_reaches_the_app_linked() {
    let s = scenario().await;
    let ann = Person::new(&s).await;

    ann.opens_account_sign_in("/projects", "accounts-sign-in")
        .await;
    let accounts = s.accounts.as_ref().expect("accounts provider");
    // The account is not linked and linking is enforced: on to Magento.com.
    ann.signs_in(accounts, "cloud-ann", "magento-sign-in").await;
    ann.sees_sign_in_form(&s.provider).await;
    assert_eq!(s.upstream.count(), 0, "nothing unlinked reached the app");

    ann.signs_in(&s.provider, "ann@magento.test", "projects")
        .await;
    let headers = ann.sees_the_app_at("/projects").await;
    assert_eq!(header(&headers, "x-linkgate-link-status"), Some("linked"));
    assert_eq!(header(&headers, "x-linkgate-account-id"), Some("cloud-ann"));
    assert_eq!(
        header(&headers, "x-forwarded-email"),
        Some("ann@magento.test")
    );

    ann.opens(ACCOUNT_PAGE, "account-page-connected").await;
    assert_eq!(ann.sees_account_page().await, "Connected");
    assert_eq!(ann.connected_as().await, "ann@magento.test");
    assert!(ann
        .page_text()
        .await
        .contains("Signed in to accounts.magento.cloud as cloud-ann"));
    no_favicon_started_a_sign_in(&s.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_1_from_the_account_page_button() {
    let s = scenario().await;
    let bea = Person::new(&s).await;

    bea.opens_account_sign_in(ACCOUNT_PAGE, "accounts-sign-in")
        .await;
    let accounts = s.accounts.as_ref().expect("accounts provider");
    let mark = access_log(&s.gate).len();
    bea.signs_in(accounts, "cloud-bea", "account-page-not-connected")
        .await;
    assert_eq!(bea.sees_account_page().await, "Not Connected");
    favicon_refused(&s.gate, mark).await;

    bea.clicks("Connect with Magento.com", "magento-sign-in")
        .await;
    bea.signs_in(&s.provider, "bea@magento.test", "account-page-connected")
        .await;
    assert_eq!(bea.sees_account_page().await, "Connected");
    assert_eq!(bea.connected_as().await, "bea@magento.test");
    assert!(
        s.upstream.seen().iter().all(|r| r.uri == "/favicon.ico"),
        "the account page is linkgate's own; the app saw only the linked browser's favicon"
    );
    no_favicon_started_a_sign_in(&s.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_2_signed_in_at_magento_first_needs_no_second_password() {
    let s = scenario().await;
    let cai = Person::new(&s).await;

    // Signed in with Magento.com, but no cloud account is linked yet: the rule's page.
    cai.opens("/x", "magento-sign-in").await;
    let mark = access_log(&s.gate).len();
    cai.signs_in(&s.provider, "cai@magento.test", "link-required")
        .await;
    assert_eq!(cai.browser.path().await, "/x");
    cai.sees_page("Connect your account with Magento.com").await;
    let text = cai.page_text().await;
    assert!(text.contains("Since 1 April 2020"), "{text}");
    cai.passes_accessibility_check().await;
    assert!(
        text.contains("You are signed in with Magento.com as cai@magento.test"),
        "{text}"
    );
    gate_answered(&s.gate, mark, "GET", "/x", 403).await;
    favicon_refused(&s.gate, mark).await;
    assert_eq!(s.upstream.count(), 0, "nothing unlinked reached the app");

    // The account page says the same, and offers the cloud account sign-in.
    cai.clicks("Account Settings", "account-page-magento-only")
        .await;
    assert_eq!(cai.sees_account_page().await, "Not Connected");
    cai.clicks("Sign in to accounts.magento.cloud", "accounts-sign-in")
        .await;
    let accounts = s.accounts.as_ref().expect("accounts provider");
    cai.signs_in(accounts, "cloud-cai", "account-page-connected")
        .await;

    // Connected, and Magento.com never asked for a password a second time.
    assert_eq!(cai.sees_account_page().await, "Connected");
    assert_eq!(cai.connected_as().await, "cai@magento.test");
    let sso = s.provider.counts().await;
    assert_eq!(sso.login_forms_posted, 1, "one Magento.com password, once");
    no_favicon_started_a_sign_in(&s.gate);
}

/// Magento.com's own website, a second client of the Magento.com provider: where the person
/// signed in before ever visiting the cloud account.
const MAGENTO_WEBSITE: &str = "magento-website";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_2_the_connect_button_with_a_magento_session_from_elsewhere() {
    // A stand-in for the Magento.com website's signed-in page (an echo server).
    let website = Upstream::start().await;
    let website_home = format!("{}/customer/account", website.url());
    let home = website_home.clone();
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .accounts(Accounts::OAuth2)
        .provider(move |o| o.client(ClientConfig::public(MAGENTO_WEBSITE, &home)))
        .start()
        .await;
    let dee = Person::new(&s).await;

    // Tab 1, earlier: signed in on the Magento.com website itself.
    let verifier = "magento-website-pkce-verifier-0123456789-abcdefgh";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let website_sign_in = url::Url::parse_with_params(
        &s.provider.authorization_endpoint(),
        [
            ("client_id", MAGENTO_WEBSITE),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("redirect_uri", website_home.as_str()),
            ("state", "website"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .expect("authorize URL");
    dee.opens(website_sign_in.as_str(), "magento-sign-in").await;
    dee.signs_in(&s.provider, "dee@magento.test", "magento-website")
        .await;
    assert!(dee
        .browser
        .current_url()
        .await
        .as_str()
        .starts_with(&website_home));

    // Tab 2: the cloud account page, "Connect with Magento.com".
    dee.opens_account_sign_in(ACCOUNT_PAGE, "accounts-sign-in")
        .await;
    let accounts = s.accounts.as_ref().expect("accounts provider");
    dee.signs_in(accounts, "cloud-dee", "account-page-not-connected")
        .await;
    assert_eq!(dee.sees_account_page().await, "Not Connected");
    dee.clicks("Connect with Magento.com", "account-page-connected")
        .await;

    // The round trip through Magento.com completed without a password prompt.
    assert_eq!(dee.sees_account_page().await, "Connected");
    assert_eq!(dee.connected_as().await, "dee@magento.test");
    let sso = s.provider.counts().await;
    assert_eq!(sso.login_forms_posted, 1, "only the website sign-in");
    assert_eq!(sso.authorize, 2, "the website's and linkgate's");
    no_favicon_started_a_sign_in(&s.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_login_a_fresh_browser_signs_in_with_magento_alone() {
    let s = scenario().await;
    link_over_http(&s, "cloud-dan", "dan@magento.test").await;
    let dan = Person::new(&s).await;

    dan.opens("/projects/42", "magento-sign-in").await;
    dan.signs_in(&s.provider, "dan@magento.test", "projects-42")
        .await;
    let headers = dan.sees_the_app_at("/projects/42").await;
    assert_eq!(header(&headers, "x-linkgate-link-status"), Some("linked"));
    assert_eq!(header(&headers, "x-linkgate-account-id"), Some("cloud-dan"));
    assert_eq!(
        header(&headers, "x-linkgate-sso-subject"),
        Some("dan@magento.test")
    );

    dan.opens(ACCOUNT_PAGE, "account-page-connected").await;
    assert_eq!(dan.sees_account_page().await, "Connected");
    assert_eq!(dan.connected_as().await, "dan@magento.test");
    assert_eq!(
        s.accounts
            .as_ref()
            .expect("accounts provider")
            .counts()
            .await
            .login_forms_posted,
        1,
        "only the setup signed in to the cloud account; the person never did"
    );
    no_favicon_started_a_sign_in(&s.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magento_account_linked_elsewhere_gets_the_conflict_page() {
    let s = scenario().await;
    link_over_http(&s, "cloud-gus", "gus@magento.test").await;
    let redis = s.redis.as_ref().expect("redis");
    let links_before = redis.keys("linkgate:link:*");
    let app_requests_before = s.upstream.count();
    let eva = Person::new(&s).await;

    // The new owner of a project, with the previous owner's Magento.com login.
    eva.opens_account_sign_in("/projects", "accounts-sign-in")
        .await;
    let accounts = s.accounts.as_ref().expect("accounts provider");
    eva.signs_in(accounts, "cloud-new-owner", "magento-sign-in")
        .await;
    let mark = access_log(&s.gate).len();
    eva.signs_in(&s.provider, "gus@magento.test", "conflict")
        .await;
    eva.sees_page("Accounts not connected").await;
    eva.passes_accessibility_check().await;
    let text = eva.page_text().await;
    assert!(
        text.contains(
            "The Magento.com account gus@magento.test is already connected to another \
             accounts.magento.cloud account"
        ),
        "{text}"
    );
    // The conflict has a URL of its own (reload-safe), not the callback's.
    gate_answered(&s.gate, mark, "GET", "/oauth2/callback", 302).await;
    let problem = eva.browser.current_url().await;
    assert_eq!(problem.path(), "/oauth2/link/problem");
    eva.browser.goto(problem.as_str()).await;
    eva.sees_page("Accounts not connected").await;
    favicon_refused(&s.gate, mark).await;
    assert_eq!(
        eva.browser.attr("main a.button", "href").await.as_deref(),
        Some(ACCOUNT_PAGE)
    );

    eva.clicks("Go to Account Settings", "account-page-not-connected")
        .await;
    assert_eq!(eva.sees_account_page().await, "Not Connected");
    assert!(eva
        .page_text()
        .await
        .contains("Signed in to accounts.magento.cloud as cloud-new-owner"));
    assert_eq!(
        redis.keys("linkgate:link:*"),
        links_before,
        "no link changed"
    );
    assert_eq!(
        s.upstream.count(),
        app_requests_before,
        "nothing reached the app"
    );
    no_favicon_started_a_sign_in(&s.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_then_sign_out_asks_for_the_password_again() {
    let s = scenario().await;
    let jo = Person::new(&s).await;
    jo.opens_account_sign_in("/projects", "accounts-sign-in")
        .await;
    let accounts = s.accounts.as_ref().expect("accounts provider");
    jo.signs_in(accounts, "cloud-jo", "magento-sign-in").await;
    jo.signs_in(&s.provider, "jo@magento.test", "projects")
        .await;
    jo.sees_the_app_at("/projects").await;
    jo.opens(ACCOUNT_PAGE, "account-page-connected").await;
    assert_eq!(jo.sees_account_page().await, "Connected");

    let mark = access_log(&s.gate).len();
    jo.clicks("Disconnect from Magento.com", "account-page-disconnected")
        .await;
    assert_eq!(jo.sees_account_page().await, "Not Connected");
    assert!(jo.page_text().await.contains("Connect with Magento.com"));
    favicon_refused(&s.gate, mark).await;
    assert!(s
        .redis
        .as_ref()
        .expect("redis")
        .keys("linkgate:link:*")
        .is_empty());

    sign_out_at_magento(&s, &jo).await;
    no_favicon_started_a_sign_in(&s.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_while_connected_asks_for_the_password_again() {
    let s = scenario().await;
    link_over_http(&s, "cloud-kai", "kai@magento.test").await;
    let kai = Person::new(&s).await;
    kai.opens(ACCOUNT_PAGE, "magento-sign-in").await;
    kai.signs_in(&s.provider, "kai@magento.test", "account-page-connected")
        .await;
    assert_eq!(kai.sees_account_page().await, "Connected");

    // An app's "Sign out" link: the confirmation page, whose button signs out.
    kai.opens(
        "/oauth2/sign_out?rd=%2Foauth2%2Fsigned_out",
        "sign-out-confirmation",
    )
    .await;
    kai.sees_page("Sign out").await;
    assert!(kai
        .page_text()
        .await
        .contains("Sign out of this site and of Magento.com?"));
    assert!(kai.browser.has("form[method=post] button#sign-out").await);
    kai.passes_accessibility_check().await;
    sign_out_at_magento(&s, &kai).await;
    no_favicon_started_a_sign_in(&s.gate);
}

/// "Sign out" on the page: when this browser signed in at accounts.magento.cloud, that
/// provider asks to confirm first; then Magento.com asks to confirm, the browser comes back
/// to linkgate, and a protected page asks for the Magento.com password again (and the
/// accounts.magento.cloud password, when its session was ended too).
///
/// Standard provider only: these browser walks go through the provider's RP-initiated
/// logout confirmation page (`#logout-yes`), which Adobe IMS does not have (its
/// `/ims/logout/v1` redirects at once). The IMS sign-out is walked without a browser by the
/// `ims::` twins in tests/login.rs, linking_paths.rs, security_holes.rs and cache.rs.
async fn sign_out_at_magento(s: &Scenario, person: &Person<'_>) {
    let mark = access_log(&s.gate).len();
    person.browser.click_text("Sign out").await;
    let mut url = person.browser.current_url().await;
    let accounts = s
        .accounts
        .as_ref()
        .filter(|a| url.as_str().starts_with(a.issuer()));
    if accounts.is_some() {
        assert!(
            person.browser.has("#logout-yes").await,
            "accounts.magento.cloud's sign-out confirmation:\n{}",
            person.page_text().await
        );
        person.browser.screenshot("accounts-sign-out").await;
        person.browser.click("#logout-yes").await;
        url = person.browser.current_url().await;
    }
    person.browser.screenshot("magento-sign-out").await;
    assert!(
        url.as_str().starts_with(s.provider.issuer()) && person.browser.has("#logout-yes").await,
        "Sign out leads to Magento.com's sign-out confirmation; the browser is at {url}:\n{}",
        person.page_text().await
    );
    assert_eq!(person.browser.text("h1").await, "Sign out");
    person.browser.click("#logout-yes").await;
    person.browser.screenshot("signed-out").await;
    // Back through linkgate (`signed_out?state=`) to its "Signed out" page.
    person.sees_page("Signed out").await;
    person.passes_accessibility_check().await;
    gate_answered(&s.gate, mark, "GET", "/oauth2/signed_out", 302).await;
    gate_answered(&s.gate, mark, "GET", "/oauth2/signed_out", 200).await;
    person
        .clicks("Sign in again", "magento-sign-in-from-signed-out")
        .await;
    person.sees_sign_in_form(&s.provider).await;

    person.opens("/projects", "magento-sign-in-again").await;
    person.sees_sign_in_form(&s.provider).await;
    assert_eq!(
        s.provider.counts().await.end_session,
        1,
        "Magento.com was asked to end its session"
    );
    if let Some(accounts) = accounts {
        assert_eq!(
            accounts.counts().await.end_session,
            1,
            "accounts.magento.cloud was asked to end its session"
        );
        person
            .opens_account_sign_in("/", "accounts-sign-in-again")
            .await;
        person.sees_sign_in_form(accounts).await;
    }
}

// === The demo, in a browser ===

/// A running `linkgate demo` on free ports; killed when dropped.
struct DemoProcess {
    child: std::process::Child,
    port: u16,
}

impl DemoProcess {
    fn start() -> Self {
        use std::io::BufRead;
        let ports: Vec<u16> = (0..5).map(|_| support::free_port()).collect();
        let mut child = std::process::Command::new(support::linkgate_bin())
            .args([
                "demo",
                "--port",
                &ports[0].to_string(),
                "--sso-port",
                &ports[1].to_string(),
                "--accounts-port",
                &ports[2].to_string(),
                "--app-port",
                &ports[3].to_string(),
                "--admin-port",
                &ports[4].to_string(),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start linkgate demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let want = format!("Open http://127.0.0.1:{}/welcome", ports[0]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                if line.contains(&want) {
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "linkgate demo did not print {want:?} within 30 s"
            );
        }
        Self {
            child,
            port: ports[0],
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_walks_method_1_in_a_browser() {
    let demo = DemoProcess::start();
    let browser = Browser::start().await;
    browser.goto(&demo.url("/welcome")).await;
    browser.screenshot("welcome").await;
    assert!(
        browser.body_text().await.contains("alice"),
        "the guide names the demo users"
    );

    browser.goto(&demo.url("/oauth2/account/start?rd=/")).await;
    browser.wait_for("#login").await;
    browser.screenshot("accounts-sign-in").await;
    assert!(browser
        .title()
        .await
        .contains("accounts.magento.cloud (development)"));
    browser.fill("#login", "alice").await;
    browser.fill("#password", "demo").await;
    browser.click("button[type=submit]").await;

    // Unlinked while enforcing: on to the Magento.com sign-in.
    browser.wait_for("#login").await;
    browser.screenshot("magento-sign-in").await;
    assert!(browser.title().await.contains("Magento.com (development)"));
    browser.fill("#login", "alice@example.com").await;
    browser.fill("#password", "demo").await;
    browser.click("button[type=submit]").await;

    browser.screenshot("sample-app").await;
    assert_eq!(browser.path().await, "/");
    let text = browser.body_text().await;
    assert!(text.contains("Sample application"), "{text}");
    assert!(text.contains("linked"), "{text}");

    browser.goto(&demo.url("/oauth2/link")).await;
    browser.screenshot("account-page").await;
    assert_eq!(browser.text("#status").await, "Connected");
}

// === Issue 16: every arrival ends linked or told what to do, with the JWT source ===

async fn jwt_scenario(extra: &str) -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .accounts(Accounts::Jwt)
        .toml(extra)
        .start()
        .await
}

/// An account JWT for `sub`/`email`, signed with the platform's key.
fn platform_jwt(s: &Scenario, sub: &str, email: &str) -> String {
    let key = s.account_key.as_ref().expect("platform key");
    let issuer = s.accounts.as_ref().expect("platform").issuer().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("platform".into());
    jsonwebtoken::encode(
        &h,
        &serde_json::json!({"iss": issuer, "aud": support::sso::PLATFORM_AUDIENCE, "sub": sub,
            "email": email, "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(key.pem.as_bytes()).expect("key"),
    )
    .expect("jwt")
}

impl Person<'_> {
    /// The platform signs this browser in (its JWT cookie on the gate's host); the browser
    /// must be on a gate page.
    async fn platform_signs_in(&self, token: &str) {
        // What the platform's own page would do: a cookie on the site's host.
        self.browser
            .client()
            .execute(
                "document.cookie = arguments[0] + '=' + arguments[1] + '; path=/; SameSite=Lax'",
                vec![
                    support::sso::PLATFORM_COOKIE.into(),
                    token.to_string().into(),
                ],
            )
            .await
            .expect("set the platform cookie");
    }

    /// The page on the screen passes axe-core's WCAG 2.1 A and AA rules (axe-core from npm,
    /// `tests/support/axe`, injected into the page as a WebDriver script).
    async fn passes_accessibility_check(&self) {
        let axe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support/axe/node_modules/axe-core/axe.min.js");
        let source = std::fs::read_to_string(&axe).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `npm ci --prefix tests/support/axe --no-audit --no-fund`",
                axe.display()
            )
        });
        let client = self.browser.client();
        client
            .execute(&source, vec![])
            .await
            .expect("load axe-core");
        let result = client
            .execute_async(
                "const done = arguments[arguments.length - 1];\
                 axe.run(document, {runOnly: {type: 'tag', values: \
                   ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})\
                 .then(r => done({passes: r.passes.length, violations: r.violations.map(v => \
                   v.id + ': ' + v.help + ' (' + v.nodes.map(n => n.target.join(' ')).join(', ') + ')')}))\
                 .catch(e => done({passes: 0, violations: ['axe failed: ' + e]}));",
                vec![],
            )
            .await
            .expect("run axe-core");
        let violations: Vec<String> =
            serde_json::from_value(result["violations"].clone()).expect("violations");
        assert!(
            result["passes"].as_u64().unwrap_or(0) > 0,
            "axe-core checked nothing: {result}"
        );
        let path = self.browser.path().await;
        assert!(
            violations.is_empty(),
            "WCAG 2.1 A/AA violations on {path}:\n{}",
            violations.join("\n")
        );
    }

    /// What the "Single Sign-On" section says each side is signed in as.
    async fn signed_in_as(&self) -> (String, String) {
        (
            self.browser.text("#sso-as").await,
            self.browser.text("#account-as").await,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_source_magento_first_then_the_platform_then_one_click_connects() {
    let s = jwt_scenario("").await;
    let lou = Person::new(&s).await;

    lou.opens("/projects", "magento-sign-in").await;
    lou.signs_in(&s.provider, "lou@magento.test", "link-required-sso-only")
        .await;
    lou.sees_page("Connect your account with Magento.com").await;
    lou.passes_accessibility_check().await;
    let text = lou.page_text().await;
    assert!(
        text.contains(
            "Sign in to accounts.magento.cloud in this browser, then come back to this page."
        ),
        "{text}"
    );
    assert!(!lou.browser.has("form[action$='/link/connect']").await);

    lou.opens(ACCOUNT_PAGE, "account-page-sso-only").await;
    assert_eq!(lou.sees_account_page().await, "Not Connected");
    assert_eq!(
        lou.signed_in_as().await,
        (
            "Signed in as lou@magento.test".into(),
            "Not signed in".into()
        )
    );

    // Signed in at the platform (another tab), back to this page: it notices.
    lou.platform_signs_in(&platform_jwt(&s, "cloud-lou", "lou@cloud.test"))
        .await;
    lou.clicks(
        "I have signed in, check again",
        "account-page-both-unlinked",
    )
    .await;
    assert_eq!(lou.sees_account_page().await, "Not Connected");
    assert_eq!(
        lou.signed_in_as().await,
        (
            "Signed in as lou@magento.test".into(),
            "Signed in as lou@cloud.test".into()
        )
    );
    assert_eq!(
        s.redis
            .as_ref()
            .expect("redis")
            .keys("linkgate:link:*")
            .len(),
        0
    );

    lou.clicks("Connect with Magento.com", "account-page-connected")
        .await;
    assert_eq!(lou.sees_account_page().await, "Connected");
    lou.passes_accessibility_check().await;
    assert_eq!(lou.connected_as().await, "lou@magento.test");
    lou.opens("/projects", "projects").await;
    let headers = lou.sees_the_app_at("/projects").await;
    assert_eq!(header(&headers, "x-linkgate-link-status"), Some("linked"));
    assert_eq!(header(&headers, "x-linkgate-account-id"), Some("cloud-lou"));
    no_favicon_started_a_sign_in(&s.gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_source_cloud_first_is_sent_to_magento_and_comes_back_linked() {
    let s = jwt_scenario("").await;
    let mia = Person::new(&s).await;
    // A gate page first, so the platform's cookie has a host to go to.
    mia.opens("/oauth2/userinfo", "start").await;
    mia.platform_signs_in(&platform_jwt(&s, "cloud-mia", "mia@cloud.test"))
        .await;
    mia.opens(ACCOUNT_PAGE, "account-page-cloud-only").await;
    assert_eq!(mia.sees_account_page().await, "Not Connected");
    mia.passes_accessibility_check().await;
    assert_eq!(
        mia.signed_in_as().await,
        ("Not signed in".into(), "Signed in as mia@cloud.test".into())
    );
    mia.clicks("Connect with Magento.com", "magento-sign-in")
        .await;
    mia.signs_in(&s.provider, "mia@magento.test", "account-page-connected")
        .await;
    assert_eq!(mia.sees_account_page().await, "Connected");
    assert_eq!(mia.connected_as().await, "mia@magento.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_state_linked_to_someone_else() {
    // Linked to someone else: the cloud account is the previous owner's link.
    let s = jwt_scenario("").await;
    let jar_token = platform_jwt(&s, "cloud-shop", "shop@cloud.test");
    let bob = Person::new(&s).await;
    // The previous owner links over HTTP: Magento.com as ann, session from the JWT.
    {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        jar.add_cookie_str(
            &format!("{}={jar_token}; Path=/", support::sso::PLATFORM_COOKIE),
            &url::Url::parse(&s.gate.url("/")).expect("url"),
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar)
            .no_proxy()
            .build()
            .expect("client");
        let resp = support::sso::navigate(http.get(s.gate.url("/projects")))
            .send()
            .await
            .expect("projects");
        let (resp, _) = s.follow(&http, resp, "ann@magento.test").await;
        assert_eq!(resp.status(), 200);
    }
    bob.opens("/projects", "magento-sign-in").await;
    bob.signs_in(&s.provider, "bob@magento.test", "link-required-sso-only")
        .await;
    bob.platform_signs_in(&jar_token).await;
    bob.opens(ACCOUNT_PAGE, "account-page-linked-to-someone-else")
        .await;
    assert_eq!(bob.sees_account_page().await, "Not Connected");
    let conflict = bob.browser.text("#conflict").await;
    assert!(conflict.contains("a***@magento.test"), "{conflict}");
    assert!(conflict.contains("linkgate links unlink"), "{conflict}");
    assert!(!bob.browser.has("form[action$='/link/connect']").await);
    bob.passes_accessibility_check().await;
}

/// The notice on the account page of an unlinked cloud account under `extra`.
async fn an_unlinked_cloud_account_sees_the_notice(extra: &str, shot: &str, says: &str) {
    {
        let s = jwt_scenario(extra).await;
        let p = Person::new(&s).await;
        p.opens("/oauth2/userinfo", "start").await;
        p.platform_signs_in(&platform_jwt(&s, "cloud-gus", "gus@cloud.test"))
            .await;
        p.opens(ACCOUNT_PAGE, shot).await;
        assert_eq!(p.sees_account_page().await, "Not Connected");
        let notice = p.browser.text(".notice").await;
        assert!(notice.contains(says), "{notice}");
        p.passes_accessibility_check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_state_grace() {
    an_unlinked_cloud_account_sees_the_notice(
        "[link]\nrequired_from = \"2999-01-01T00:00:00Z\"",
        "account-page-grace",
        "is required from 2999-01-01",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_state_warn() {
    an_unlinked_cloud_account_sees_the_notice(
        "[link]\nmode = \"warn\"",
        "account-page-warn",
        "You can continue without it for now.",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_state_disconnect_not_allowed() {
    let s = jwt_scenario("[link]\nallow_disconnect = false").await;
    let p = Person::new(&s).await;
    p.opens("/oauth2/userinfo", "start").await;
    p.platform_signs_in(&platform_jwt(&s, "cloud-dot", "dot@cloud.test"))
        .await;
    p.opens(ACCOUNT_PAGE, "account-page-cloud-only").await;
    p.clicks("Connect with Magento.com", "magento-sign-in")
        .await;
    p.signs_in(
        &s.provider,
        "dot@magento.test",
        "account-page-no-disconnect",
    )
    .await;
    assert_eq!(p.sees_account_page().await, "Connected");
    assert!(p
        .browser
        .text("#no-disconnect")
        .await
        .contains("Disconnecting is not allowed on this site."));
    assert!(!p.browser.has("form[action$='/link/disconnect']").await);
    p.passes_accessibility_check().await;
}

// === Issue 16: troubleshooting pages, and the pages in Swedish ===

/// A problem page at its own URL: its heading, what it says, that it passes axe-core, that
/// a reload shows it again, and its one action.
async fn sees_problem_page(person: &Person<'_>, heading: &str, says: &str, action: &str) {
    assert_eq!(person.browser.path().await, "/oauth2/link/problem");
    person.sees_page(heading).await;
    let text = person.page_text().await;
    assert!(text.contains(says), "{text}");
    person.passes_accessibility_check().await;
    person.browser.client().refresh().await.expect("reload");
    person.sees_page(heading).await;
    assert_eq!(person.browser.text("main a.button").await, action);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshooting_magento_refused_the_sign_in() {
    let s = scenario().await;
    let ria = Person::new(&s).await;
    ria.opens("/projects", "magento-sign-in").await;
    ria.sees_sign_in_form(&s.provider).await;
    // "Cancel" at Magento.com: the provider answers error=access_denied.
    ria.browser.click("#abort").await;
    ria.browser.screenshot("problem-refused").await;
    sees_problem_page(
        &ria,
        "Magento.com did not sign you in",
        "Magento.com sign-in was cancelled or refused.",
        "Sign in again",
    )
    .await;
    ria.clicks("Sign in again", "magento-sign-in-again").await;
    ria.sees_sign_in_form(&s.provider).await;
    ria.signs_in(&s.provider, "ria@magento.test", "link-required")
        .await;
    assert_eq!(
        ria.browser.path().await,
        "/projects",
        "back where she started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshooting_magento_could_not_be_reached() {
    let s = scenario().await;
    let uma = Person::new(&s).await;
    uma.opens("/projects", "magento-sign-in").await;
    // The provider's token endpoint fails when linkgate exchanges the code (the HTTP suite,
    // tests/pages.rs, stops the provider outright).
    s.provider
        .misbehave(&serde_json::json!({"token_status": 503}))
        .await;
    uma.signs_in(&s.provider, "uma@magento.test", "problem-unreachable")
        .await;
    sees_problem_page(
        &uma,
        "Magento.com could not be reached",
        "wait a moment, then sign in again",
        "Sign in again",
    )
    .await;
    s.provider.misbehave(&serde_json::json!({})).await;
    // Magento.com still knows her: no password this time.
    uma.clicks("Sign in again", "after-sign-in-again").await;
    assert_ne!(uma.browser.path().await, "/oauth2/link/problem");
    assert!(!uma
        .browser
        .current_url()
        .await
        .as_str()
        .starts_with(s.provider.issuer()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn troubleshooting_the_sign_in_expired_mid_way() {
    let s = scenario().await;
    let eva = Person::new(&s).await;
    eva.opens("/projects", "magento-sign-in").await;
    // The sign-in's flow cookie is gone by the time she signs in (it lasts ten minutes).
    let client = eva.browser.client();
    let mut gone = 0;
    for cookie in client.get_all_cookies().await.expect("cookies") {
        if cookie.name().starts_with("_linkgate_bind_") {
            client.delete_cookie(cookie.name()).await.expect("delete");
            gone += 1;
        }
    }
    assert_eq!(gone, 1, "the flow cookie");
    eva.signs_in(&s.provider, "eva@magento.test", "problem-expired")
        .await;
    sees_problem_page(
        &eva,
        "Your sign-in expired",
        "finish the sign-in within ten minutes",
        "Sign in again",
    )
    .await;
    eva.clicks("Sign in again", "after-sign-in-again").await;
    assert_ne!(eva.browser.path().await, "/oauth2/link/problem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swedish_browser_reads_the_pages_in_swedish() {
    let s = scenario().await;
    // Swedish first in the browser's language settings.
    let siv = Person {
        s: &s,
        browser: Browser::start_in("sv-SE,sv").await,
    };
    let accounts = s.accounts.as_ref().expect("accounts provider");
    siv.opens_account_sign_in(ACCOUNT_PAGE, "accounts-sign-in")
        .await;
    siv.signs_in(accounts, "cloud-siv", "account-page-swedish")
        .await;
    assert_eq!(siv.browser.path().await, ACCOUNT_PAGE);
    assert_eq!(
        siv.browser.attr("html", "lang").await.as_deref(),
        Some("sv")
    );
    siv.sees_page("Kontoinställningar").await;
    assert_eq!(siv.browser.text("#sso").await, "Enkel inloggning");
    assert_eq!(siv.browser.text("#status").await, "Inte ansluten");
    let account_as = siv.browser.text("#account-as").await;
    assert!(account_as.starts_with("Inloggad som "), "{account_as}");
    siv.passes_accessibility_check().await;

    siv.clicks("Anslut med Magento.com", "magento-sign-in")
        .await;
    siv.signs_in(
        &s.provider,
        "siv@magento.test",
        "account-page-swedish-connected",
    )
    .await;
    assert_eq!(siv.browser.text("#status").await, "Ansluten");
    assert!(siv
        .page_text()
        .await
        .contains("Din inloggning på Magento.com är siv@magento.test"));
    siv.passes_accessibility_check().await;

    siv.opens("/oauth2/sign_out", "sign-out-confirmation-swedish")
        .await;
    siv.sees_page("Logga ut").await;
    assert!(siv.page_text().await.contains(
        "Vill du logga ut från den här webbplatsen, från Magento.com och från accounts.magento.cloud?"
    ));
    siv.passes_accessibility_check().await;
}

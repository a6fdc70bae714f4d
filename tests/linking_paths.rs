//! Every way a person arrives ends linked, or on a page that says exactly what to do next
//! (issue 16): both orders (Magento.com first, cloud account first) for both account
//! sources (`oauth2`, the platform's `jwt`), and each state of the account page with its
//! JSON twin. Real providers, real Redis, the real binary.
//!
//! The JWT source's "Magento.com first" walk is the one that used to dead-end: a Magento.com
//! session never looked at the platform's JWT that appeared after it. It now notices it and
//! offers "Connect with Magento.com", a CSRF-protected POST: the JWT alone (a planted cookie)
//! links nobody.

mod support;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::sso::{
    location, navigate, Accounts, Flavor, Scenario, ScenarioBuilder, StoreKind, PLATFORM_AUDIENCE,
    PLATFORM_COOKIE,
};

/// A person's browser: a cookie jar the test can add the platform's cookie to.
struct Browser {
    http: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    fn new() -> Self {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .no_proxy()
            .build()
            .unwrap();
        Self { http, jar }
    }

    /// The platform signs this browser in: its JWT cookie is sent from now on.
    fn platform_signs_in(&self, s: &Scenario, token: &str) {
        self.jar.add_cookie_str(
            &format!("{PLATFORM_COOKIE}={token}; Path=/"),
            &url::Url::parse(&s.gate.url("/")).unwrap(),
        );
    }
}

/// An account JWT for `sub`/`email`, signed with the platform's key.
fn platform_jwt(s: &Scenario, sub: &str, email: &str) -> String {
    let key = s.account_key.as_ref().unwrap();
    let issuer = s.accounts.as_ref().unwrap().issuer().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("platform".into());
    jsonwebtoken::encode(
        &h,
        &json!({"iss": issuer, "aud": PLATFORM_AUDIENCE, "sub": sub, "email": email, "iat": now, "exp": now + 600}),
        &EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn jwt_scenario(extra: &str) -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .accounts(Accounts::Jwt)
        .toml(extra)
        .start()
        .await
}

async fn oauth2_scenario(extra: &str) -> Scenario {
    oauth2_scenario_of(extra, Flavor::Standard).await
}

async fn oauth2_scenario_of(extra: &str, flavor: Flavor) -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .accounts(Accounts::OAuth2)
        .toml(extra)
        .start()
        .await
}

/// The account page's JSON twin.
async fn state(s: &Scenario, http: &reqwest::Client) -> Value {
    let resp = http
        .get(s.gate.url("/oauth2/link"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The account page as a browser shows it.
async fn page(s: &Scenario, http: &reqwest::Client, path: &str) -> (u16, String) {
    let resp = navigate(http.get(s.gate.url(path))).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Posts `link/connect` as the page's form does, with `fields` (url-encoded).
async fn post_connect(s: &Scenario, http: &reqwest::Client, fields: &str) -> reqwest::Response {
    http.post(s.gate.url("/oauth2/link/connect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", s.gate.url(""))
        .header("sec-fetch-site", "same-origin")
        .header("accept", "text/html")
        .body(fields.to_string())
        .send()
        .await
        .unwrap()
}

fn links(s: &Scenario) -> usize {
    s.redis
        .as_ref()
        .unwrap()
        .keys("linkgate:link:account:*")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_source_magento_first_the_platform_jwt_that_appears_is_noticed_and_connected_by_a_click(
) {
    let s = jwt_scenario("").await;
    let b = Browser::new();
    // Magento.com first: the rule's page, which can only say where to sign in.
    let resp = s.sign_in(&b.http, "/projects", "lou@magento.test").await;
    assert_eq!(resp.status(), 403);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("Connect your account with Magento.com"),
        "{text}"
    );
    assert!(
        text.contains(
            "Sign in to accounts.magento.cloud in this browser, then come back to this page."
        ),
        "{text}"
    );
    assert!(text.contains("I have signed in, check again"), "{text}");
    assert!(!text.contains("link/connect"), "nothing to connect yet");
    let before = state(&s, &b.http).await;
    assert_eq!(before["state"], "sso_only", "{before}");
    assert_eq!(before["sso"], "lou@magento.test");
    assert_eq!(before["account"], Value::Null);
    assert_eq!(before["actions"]["connect"], Value::Null);
    let (_, account_page) = page(&s, &b.http, "/oauth2/link").await;
    assert!(account_page.contains("<dd id=\"status\">Not Connected</dd>"));
    assert!(
        account_page.contains("<dd id=\"account-as\">Not signed in</dd>"),
        "{account_page}"
    );

    // The person signs in to the platform in this browser and comes back: the page notices.
    b.platform_signs_in(&s, &platform_jwt(&s, "cloud-lou", "lou@cloud.test"));
    let (status, text) = page(&s, &b.http, "/projects").await;
    assert_eq!(status, 403);
    assert!(
        text.contains("You are signed in with Magento.com as <strong>lou@magento.test</strong> and to accounts.magento.cloud as <strong>lou@cloud.test</strong>."),
        "{text}"
    );
    assert!(text.contains("Connect with Magento.com</button>"), "{text}");
    assert!(text.contains("name=\"rd\" value=\"/projects\""), "{text}");
    let after = state(&s, &b.http).await;
    assert_eq!(after["state"], "both_unlinked", "{after}");
    assert_eq!(after["account"], "lou@cloud.test");
    assert_eq!(after["account_from_jwt"], true);
    assert_eq!(after["actions"]["connect"], "/oauth2/link/connect");
    let (_, account_page) = page(&s, &b.http, "/oauth2/link").await;
    assert!(account_page.contains("<dd id=\"account-as\">Signed in as lou@cloud.test</dd>"));
    assert!(account_page.contains("Connect with Magento.com</button>"));

    // Seeing the JWT links nothing; a forged or cross-site form links nothing.
    assert_eq!(links(&s), 0, "the JWT alone links nobody");
    assert_eq!(post_connect(&s, &b.http, "csrf=forged").await.status(), 400);
    let csrf = after["csrf"].as_str().unwrap().to_string();
    let cross = b
        .http
        .post(s.gate.url("/oauth2/link/connect"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 400);
    assert_eq!(links(&s), 0);
    assert_eq!(s.upstream.count(), 0);

    // The click: linked, no password asked anywhere, back on the page asked for.
    let resp = post_connect(&s, &b.http, &format!("csrf={csrf}&rd=%2Fprojects")).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(location(&resp), s.gate.url("/projects"));
    assert_eq!(links(&s), 1);
    let resp = navigate(b.http.get(location(&resp))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-linkgate-link-status"), Some("linked"));
    assert_eq!(seen.header("x-linkgate-account-id"), Some("cloud-lou"));
    assert_eq!(
        seen.header("x-linkgate-sso-subject"),
        Some("lou@magento.test")
    );
    let linked = state(&s, &b.http).await;
    assert_eq!(linked["state"], "linked", "{linked}");
    assert_eq!(linked["connected_as"], "lou@magento.test");
    assert_eq!(linked["actions"]["disconnect"], "/oauth2/link/disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_source_cloud_first_connects_at_magento_and_method_2_asks_no_second_password() {
    let s = jwt_scenario("").await;
    // Cloud account first: the rule sends the unlinked account to Magento.com.
    let b = Browser::new();
    b.platform_signs_in(&s, &platform_jwt(&s, "cloud-mia", "mia@cloud.test"));
    let (status, _) = page(&s, &b.http, "/oauth2/link").await;
    assert_eq!(status, 200, "the account page makes a session from the JWT");
    let cloud_only = state(&s, &b.http).await;
    assert_eq!(cloud_only["state"], "cloud_only", "{cloud_only}");
    assert_eq!(cloud_only["account"], "mia@cloud.test");
    assert_eq!(cloud_only["actions"]["connect"], "/oauth2/link/connect");
    let resp = navigate(b.http.get(s.gate.url("/projects")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).contains("intent=connect"));
    let (resp, prompted) = s.follow(&b.http, resp, "mia@magento.test").await;
    assert!(prompted, "first time at Magento.com: its password");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-account-id"),
        Some("cloud-mia")
    );

    // Method 2: already signed in at Magento.com (another tab), then the cloud account's
    // "Connect with Magento.com": no second password.
    let b = Browser::new();
    let outcome = s
        .begin_sign_in(&b.http, "/elsewhere", "ned@magento.test")
        .await;
    assert!(outcome.prompted);
    // (The Magento.com session exists at the provider; the browser has no gate session yet.)
    b.platform_signs_in(&s, &platform_jwt(&s, "cloud-ned", "ned@cloud.test"));
    let (status, _) = page(&s, &b.http, "/oauth2/link").await;
    assert_eq!(status, 200);
    let csrf = state(&s, &b.http).await["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = post_connect(&s, &b.http, &format!("csrf={csrf}")).await;
    assert_eq!(resp.status(), 302);
    let (resp, prompted) = s.follow(&b.http, resp, "ned@magento.test").await;
    assert!(
        !prompted,
        "no password: the Magento.com session completes the round trip"
    );
    assert_eq!(resp.status(), 200);
    let linked = state(&s, &b.http).await;
    assert_eq!(linked["state"], "linked", "{linked}");
    assert_eq!(linked["connected_as"], "ned@magento.test");
    assert_eq!(linked["account"], "ned@cloud.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_source_magento_first_the_page_offers_the_cloud_sign_in_and_it_links() {
    let s = oauth2_scenario("").await;
    let b = Browser::new();
    let resp = s.sign_in(&b.http, "/projects", "oli@magento.test").await;
    assert_eq!(resp.status(), 403);
    let text = resp.text().await.unwrap();
    let sign_in = "/oauth2/account/start?rd=%2Fprojects";
    assert!(text.contains(&format!("href=\"{sign_in}\"")), "{text}");
    assert!(text.contains("Sign in to accounts.magento.cloud</a>"));
    let sso_only = state(&s, &b.http).await;
    assert_eq!(sso_only["state"], "sso_only", "{sso_only}");
    assert!(sso_only["actions"]["account_sign_in"]
        .as_str()
        .unwrap()
        .starts_with("/oauth2/account/start?rd="));
    // The one next step: the cloud sign-in, which links the waiting session.
    let resp = s.account_sign_in(&b.http, "/projects", "cloud-oli").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(links(&s), 1);
    let resp = navigate(b.http.get(location(&resp))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-link-status"),
        Some("linked")
    );
    assert_eq!(state(&s, &b.http).await["state"], "linked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_source_cloud_first_is_sent_to_magento_and_comes_back_linked() {
    let s = oauth2_scenario("").await;
    let b = Browser::new();
    let resp = s
        .account_sign_in(&b.http, "/oauth2/link", "cloud-pia")
        .await;
    assert_eq!(resp.status(), 302);
    let cloud_only = state(&s, &b.http).await;
    assert_eq!(cloud_only["state"], "cloud_only", "{cloud_only}");
    assert_eq!(cloud_only["sso"], Value::Null);
    let (_, text) = page(&s, &b.http, "/oauth2/link").await;
    assert!(
        text.contains("<dd id=\"sso-as\">Not signed in</dd>"),
        "{text}"
    );
    assert!(text.contains("Connect with Magento.com</button>"));
    let resp = navigate(b.http.get(s.gate.url("/projects")))
        .send()
        .await
        .unwrap();
    let (resp, prompted) = s.follow(&b.http, resp, "pia@magento.test").await;
    assert!(prompted);
    assert_eq!(resp.status(), 200);
    assert_eq!(links(&s), 1);
    assert_eq!(state(&s, &b.http).await["state"], "linked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_linked_to_someone_else_is_told_who_masked_and_how_to_fix_it() {
    let s = jwt_scenario("").await;
    // The cloud account is linked to ann@magento.test (the previous owner).
    let first = Browser::new();
    first.platform_signs_in(&s, &platform_jwt(&s, "cloud-shop", "shop@cloud.test"));
    let resp = navigate(first.http.get(s.gate.url("/projects")))
        .send()
        .await
        .unwrap();
    let (resp, _) = s.follow(&first.http, resp, "ann@magento.test").await;
    assert_eq!(resp.status(), 200);
    // The new owner signs in with Magento.com, then to the platform as the same account.
    let b = Browser::new();
    let resp = s.sign_in(&b.http, "/projects", "bob@magento.test").await;
    assert_eq!(resp.status(), 403);
    b.platform_signs_in(&s, &platform_jwt(&s, "cloud-shop", "shop@cloud.test"));
    let v = state(&s, &b.http).await;
    assert_eq!(v["state"], "linked_to_someone_else", "{v}");
    let conflict = v["conflict"].as_str().unwrap();
    assert!(conflict.contains("a***@magento.test"), "{conflict}");
    assert!(
        !conflict.contains("ann@"),
        "the other person's email is masked"
    );
    assert!(v["conflict_fix"]
        .as_str()
        .unwrap()
        .contains("linkgate links unlink"));
    assert_eq!(
        v["actions"]["connect"],
        Value::Null,
        "no button that cannot work"
    );
    let (status, text) = page(&s, &b.http, "/projects").await;
    assert_eq!(status, 403);
    assert!(text.contains("id=\"conflict\""), "{text}");
    assert!(!text.contains("link/connect"));
    assert_eq!(links(&s), 1, "the registry is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_warn_and_disconnect_not_allowed_each_say_so() {
    // Grace: before required_from, an unlinked session passes and the page says until when.
    let s = oauth2_scenario("[link]\nrequired_from = \"2999-01-01T00:00:00Z\"").await;
    let b = Browser::new();
    let resp = s
        .account_sign_in(&b.http, "/oauth2/link", "cloud-gus")
        .await;
    assert_eq!(resp.status(), 302);
    let v = state(&s, &b.http).await;
    assert_eq!(v["mode"], "grace", "{v}");
    assert!(v["grace"]
        .as_str()
        .unwrap()
        .contains("required from 2999-01-01"));
    let (_, text) = page(&s, &b.http, "/oauth2/link").await;
    assert!(text.contains("class=\"notice\""), "{text}");
    drop(s);

    // Warn: never required, asked for.
    let s = oauth2_scenario("[link]\nmode = \"warn\"").await;
    let b = Browser::new();
    s.account_sign_in(&b.http, "/oauth2/link", "cloud-wes")
        .await;
    let v = state(&s, &b.http).await;
    assert_eq!(v["mode"], "warn", "{v}");
    assert!(v["grace"]
        .as_str()
        .unwrap()
        .contains("You can continue without it for now."));
    assert!(!v["grace"].as_str().unwrap().contains("required from"));
    drop(s);

    // Disconnect not allowed: the linked page says so and offers no Disconnect.
    let s = oauth2_scenario("[link]\nallow_disconnect = false").await;
    let b = Browser::new();
    let resp = s.account_sign_in(&b.http, "/projects", "cloud-dot").await;
    let resp = navigate(b.http.get(location(&resp))).send().await.unwrap();
    let (resp, _) = s.follow(&b.http, resp, "dot@magento.test").await;
    assert_eq!(resp.status(), 200);
    let v = state(&s, &b.http).await;
    assert_eq!(v["state"], "linked");
    assert_eq!(v["allow_disconnect"], false);
    assert_eq!(v["actions"]["disconnect"], Value::Null);
    let (_, text) = page(&s, &b.http, "/oauth2/link").await;
    assert!(
        text.contains("Disconnecting is not allowed on this site."),
        "{text}"
    );
    assert!(!text.contains("link/disconnect"));
}

async fn sign_out_everywhere_ends_every_session_of_that_person_on_every_instance(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start()
        .await;
    let gate2 = s.another_gate();
    let laptop = Browser::new();
    let phone = Browser::new();
    let other = Browser::new();
    for (b, who) in [
        (&laptop, "ivy@magento.test"),
        (&phone, "ivy@magento.test"),
        (&other, "jon@magento.test"),
    ] {
        assert_eq!(s.sign_in(&b.http, "/x", who).await.status(), 200);
    }
    // The phone's session works on the second instance too (and is cached there now).
    let at_gate2 = |b: &Browser| {
        let req = navigate(b.http.get(gate2.url("/x")));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(at_gate2(&phone).await, 200);
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(redis.keys("linkgate:session:*").len(), 3);

    // The confirmation page says what will happen; the POST ends both of ivy's sessions.
    let (status, text) = page(&s, &laptop.http, "/oauth2/sign_out?everywhere=1").await;
    assert_eq!(status, 200);
    assert!(text.contains("Sign out everywhere</button>"), "{text}");
    assert!(text.contains("every session of yours"), "{text}");
    let resp = s.sign_out(&laptop.http, "?everywhere=1").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(
        redis.keys("linkgate:session:*").len(),
        1,
        "jon's session stays"
    );
    support::sso::eventually(
        "the phone signed out on instance 2",
        std::time::Duration::from_secs(10),
        || {
            let status = at_gate2(&phone);
            async move { status.await == 302 }
        },
    )
    .await;
    let resp = navigate(phone.http.get(s.gate.url("/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "signed out on instance 1 too");
    assert!(location(&resp).contains("/oauth2/start"));
    assert_eq!(
        at_gate2(&other).await,
        200,
        "another person is not signed out"
    );

    // Without everywhere, only this browser's session ends.
    assert_eq!(
        s.sign_in(&phone.http, "/x", "ivy@magento.test")
            .await
            .status(),
        200
    );
    assert_eq!(
        s.sign_in(&laptop.http, "/x", "ivy@magento.test")
            .await
            .status(),
        200
    );
    s.sign_out(&laptop.http, "").await;
    let resp = navigate(phone.http.get(s.gate.url("/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_has_its_own_reload_safe_url_masked_with_the_operator_command() {
    let s = oauth2_scenario("").await;
    // gus@magento.test is linked to cloud-gus.
    let first = Browser::new();
    let resp = s.account_sign_in(&first.http, "/p", "cloud-gus").await;
    let resp = navigate(first.http.get(location(&resp)))
        .send()
        .await
        .unwrap();
    let (resp, _) = s.follow(&first.http, resp, "gus@magento.test").await;
    assert_eq!(resp.status(), 200);

    // The new owner's cloud account tries to connect the same Magento.com account.
    let b = Browser::new();
    let resp = s.account_sign_in(&b.http, "/p", "cloud-new-owner").await;
    let page = navigate(b.http.get(location(&resp))).send().await.unwrap();
    let start = navigate(b.http.get(location(&page))).send().await.unwrap();
    let outcome = support::oidc::login(&b.http, &location(&start), "gus@magento.test").await;
    let callback = navigate(b.http.get(&outcome.callback_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        callback.status(),
        302,
        "the callback does not render the problem"
    );
    let problem = location(&callback);
    assert!(
        problem.starts_with(&s.gate.url("/oauth2/link/problem?p=")),
        "{problem}"
    );
    for _ in 0..2 {
        // Shown again on reload: the details travel sealed in the URL.
        let resp = navigate(b.http.get(&problem)).send().await.unwrap();
        assert_eq!(resp.status(), 409);
        let text = resp.text().await.unwrap();
        assert!(text.contains("Accounts not connected"), "{text}");
        assert!(
            text.contains("The Magento.com account gus@magento.test is already connected to another accounts.magento.cloud account (c***@example.test)"),
            "{text}"
        );
        assert!(!text.contains("cloud-gus"), "the other account is masked");
        assert!(text.contains("linkgate links unlink"), "{text}");
    }
    let json: Value = b
        .http
        .get(&problem)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["error"], "link_conflict", "{json}");
    // An altered or made-up URL shows nothing of its own: on to the account page.
    let tampered = format!("{}x", problem.trim_end_matches(|c: char| c != '='));
    for url in [tampered, s.gate.url("/oauth2/link/problem?p=hello")] {
        let resp = navigate(b.http.get(&url)).send().await.unwrap();
        assert_eq!(resp.status(), 302, "{url}");
        assert_eq!(location(&resp), s.gate.url("/oauth2/link"));
    }
    assert_eq!(links(&s), 1, "nothing changed");
}

async fn signing_out_from_linkgate_s_pages_ends_on_a_signed_out_page_with_sign_in_again(
    flavor: Flavor,
) {
    let s = oauth2_scenario_of("", flavor).await;
    let b = Browser::new();
    let resp = s
        .account_sign_in(&b.http, "/oauth2/link", "cloud-sam")
        .await;
    assert_eq!(resp.status(), 302);
    let (_, text) = page(&s, &b.http, "/oauth2/link").await;
    assert!(
        text.contains("action=\"/oauth2/sign_out?rd=/oauth2/signed_out\""),
        "{text}"
    );
    assert!(text.contains("Sign out everywhere</button>"), "{text}");
    let resp = s.sign_out(&b.http, "?rd=/oauth2/signed_out").await;
    assert_eq!(resp.status(), 302);
    // On through the providers' logouts (accounts.magento.cloud, where this browser signed
    // in, then Magento.com), each returning to signed_out: with a sealed state (RP-initiated
    // logout), or as it is (IMS), the rest of the chain then kept in linkgate's cookie.
    let signed_out = s.gate.url("/oauth2/signed_out");
    let accounts = s.accounts.as_ref().unwrap();
    let first = location(&resp);
    assert!(
        first.starts_with(&accounts.end_session_endpoint()),
        "{first}"
    );
    let back = support::oidc::logout(&b.http, &first).await;
    assert!(
        back.starts_with(&s.gate.url("/oauth2/signed_out?state=")),
        "{back}"
    );
    let logout = location(&navigate(b.http.get(&back)).send().await.unwrap());
    flavor.assert_provider_logout(&s, &logout, &signed_out);
    let back = support::oidc::logout(&b.http, &logout).await;
    match flavor {
        Flavor::Standard => {
            assert!(
                back.starts_with(&s.gate.url("/oauth2/signed_out?state=")),
                "{back}"
            );
            let resp = navigate(b.http.get(&back)).send().await.unwrap();
            assert_eq!(location(&resp), signed_out);
        }
        Flavor::Ims => {
            assert!(!logout.contains("state="), "IMS takes no state: {logout}");
            assert_eq!(back, signed_out);
        }
    }
    let (status, text) = page(&s, &b.http, "/oauth2/signed_out").await;
    assert_eq!(status, 200);
    assert!(text.contains("<h1>Signed out</h1>"), "{text}");
    assert!(
        text.contains("href=\"/oauth2/start?rd=%2F\">Sign in again</a>"),
        "{text}"
    );
    // The session is gone: the account page asks to sign in.
    let resp = navigate(b.http.get(s.gate.url("/oauth2/link")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).contains("/oauth2/start"));
    // With `state` (the provider's return), signed_out still goes on to the validated rd.
    let resp = b
        .http
        .get(s.gate.url("/oauth2/signed_out?state=%2Fbye"))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&resp), s.gate.url("/bye"));
}

// Sign-out against both providers (the standard one and the IMS look-alike).
flavored_tests!(
    sign_out_everywhere_ends_every_session_of_that_person_on_every_instance,
    signing_out_from_linkgate_s_pages_ends_on_a_signed_out_page_with_sign_in_again,
);

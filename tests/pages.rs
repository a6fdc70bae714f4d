//! Issue 16, what a person reads: the pages in the browser's language (the catalogue,
//! `[pages] language`, `Accept-Language`), the troubleshooting pages at URLs of their own
//! (the provider refused, the provider could not be reached, the sign-in expired mid-way),
//! the account page's JSON twin with no identity at all, and a sign-out that also ends the
//! accounts provider's session. Real providers (two `oidc-provider` instances), real Redis,
//! the real binary.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::oidc;
use support::sso::{location, navigate, user, Accounts, Scenario, ScenarioBuilder, StoreKind};
use url::Url;

const SWEDISH: &str = "sv-SE,sv;q=0.9,en-US;q=0.8,en;q=0.7";

async fn oauth2_scenario(extra: &str) -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .accounts(Accounts::OAuth2)
        .toml(extra)
        .start()
        .await
}

/// A page as a browser asks for it, in `language` (none: no `Accept-Language`).
async fn page(http: &reqwest::Client, url: &str, language: Option<&str>) -> (u16, String) {
    let mut req = navigate(http.get(url));
    if let Some(language) = language {
        req = req.header("accept-language", language);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

// === Language ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_page_speaks_the_browsers_language_and_json_keeps_english_codes() {
    let s = oauth2_scenario("").await;
    let http = user();
    let resp = s.account_sign_in(&http, "/oauth2/link", "cloud-siv").await;
    assert_eq!(resp.status(), 302);
    let link = s.gate.url("/oauth2/link");

    let (status, sv) = page(&http, &link, Some(SWEDISH)).await;
    assert_eq!(status, 200);
    assert!(sv.contains("<html lang=\"sv\">"), "{sv}");
    assert!(
        sv.contains("<title>Kontoinställningar · Inloggning med Magento.com</title>"),
        "{sv}"
    );
    assert!(sv.contains("<h2 id=\"sso\">Enkel inloggning</h2>"), "{sv}");
    assert!(
        sv.contains("<dt>Leverantör</dt><dd>Magento.com</dd>"),
        "{sv}"
    );
    assert!(sv.contains("<dd id=\"status\">Inte ansluten</dd>"), "{sv}");
    assert!(sv.contains(">Anslut med Magento.com</button>"), "{sv}");
    assert!(sv.contains(">Logga ut överallt</button>"), "{sv}");
    assert!(!sv.contains("Account Settings"), "{sv}");

    // No Accept-Language, or one that names no catalogue: the configured default.
    for language in [None, Some("de-DE,fr;q=0.5")] {
        let (_, en) = page(&http, &link, language).await;
        assert!(en.contains("<html lang=\"en\">"), "{en}");
        assert!(en.contains("<h2 id=\"sso\">Single Sign-On</h2>"), "{en}");
        assert!(en.contains("<dd id=\"status\">Not Connected</dd>"), "{en}");
    }

    // The JSON twin: machine-readable fields stay English; human texts follow the language.
    let v: Value = http
        .get(&link)
        .header("accept", "application/json")
        .header("accept-language", SWEDISH)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "cloud_only", "{v}");
    assert_eq!(v["status"], "not_connected", "{v}");
    assert_eq!(v["mode"], "enforce", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_language_is_the_default_and_the_browser_may_choose_another() {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .toml("[pages]\nlanguage = \"sv\"")
        .start()
        .await;
    let http = user();
    let missing = s.gate.url("/oauth2/no-such-endpoint");
    let (status, sv) = page(&http, &missing, None).await;
    assert_eq!(status, 404);
    assert!(sv.contains("<html lang=\"sv\">"), "{sv}");
    assert!(sv.contains("<h1>Hittades inte</h1>"), "{sv}");
    assert!(sv.contains("Kontrollera adressen."), "{sv}");
    let (_, en) = page(&http, &missing, Some("en-GB")).await;
    assert!(en.contains("<h1>Not found</h1>"), "{en}");
    // An API client's JSON: `error` is the stable code, `message` in the default language.
    let v: Value = http
        .get(&missing)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "not_found");
    assert_eq!(v["message"], "sidan finns inte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_identity_at_all_the_json_twin_says_nothing_and_where_to_sign_in() {
    let s = oauth2_scenario("").await;
    let resp = user()
        .get(s.gate.url("/oauth2/link"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer realm="));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["state"], "nothing", "{v}");
    assert_eq!(v["error"], "unauthenticated", "{v}");
    assert_eq!(
        v["actions"]["sign_in"], "/oauth2/start?rd=%2Foauth2%2Flink",
        "{v}"
    );
    assert_eq!(
        v["actions"]["account_sign_in"], "/oauth2/account/start?rd=%2Foauth2%2Flink",
        "{v}"
    );
}

// === Troubleshooting pages ===

/// The answer of a callback that met a problem: a redirect to a problem page of its own.
/// Opens it twice (a reload shows the same page) and returns its URL, status and text.
async fn problem_page(
    s: &Scenario,
    http: &reqwest::Client,
    callback: reqwest::Response,
    language: Option<&str>,
) -> (String, u16, String) {
    assert_eq!(
        callback.status(),
        302,
        "the callback does not render the problem"
    );
    let url = location(&callback);
    assert!(
        url.starts_with(&s.gate.url("/oauth2/link/problem?p=")),
        "{url}"
    );
    let (status, text) = page(http, &url, language).await;
    let (again, reloaded) = page(http, &url, language).await;
    assert_eq!((again, &reloaded), (status, &text), "reload-safe");
    // From another browser too: nothing of it is in a cookie or the store.
    let (elsewhere, _) = page(&user(), &url, language).await;
    assert_eq!(elsewhere, status);
    (url, status, text)
}

/// The page's one action: its button's label and where it goes.
fn action(text: &str) -> (String, String) {
    let at = text
        .find("<a class=\"button\" href=\"")
        .unwrap_or_else(|| panic!("no action on the page:\n{text}"));
    let rest = &text[at + "<a class=\"button\" href=\"".len()..];
    let (href, rest) = rest.split_once("\">").unwrap();
    let label = rest.split_once("</a>").unwrap().0;
    (label.to_string(), href.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_refusing_gets_a_page_of_its_own_with_sign_in_again() {
    let s = ScenarioBuilder::new(StoreKind::Memory).start().await;
    let http = user();
    let outcome = s.begin_sign_in(&http, "/deep/page", "dave").await;
    let denied = format!(
        "{}?error=access_denied&state={}",
        s.gate.url("/oauth2/callback"),
        outcome.param("state").unwrap()
    );
    let callback = navigate(http.get(&denied)).send().await.unwrap();
    let (url, status, text) = problem_page(&s, &http, callback, None).await;
    assert_eq!(status, 400);
    assert!(
        text.contains("<h1>Magento.com did not sign you in</h1>"),
        "{text}"
    );
    assert!(
        text.contains("Magento.com sign-in was cancelled or refused."),
        "{text}"
    );
    assert!(
        text.contains("If you cancelled on purpose, there is nothing more to do."),
        "{text}"
    );
    assert_eq!(
        action(&text),
        (
            "Sign in again".into(),
            "/oauth2/start?rd=%2Fdeep%2Fpage".into()
        )
    );
    // The same page in Swedish.
    let (_, sv) = page(&http, &url, Some(SWEDISH)).await;
    assert!(
        sv.contains("<h1>Magento.com loggade inte in dig</h1>"),
        "{sv}"
    );
    assert!(
        sv.contains("Inloggningen på Magento.com avbröts eller nekades."),
        "{sv}"
    );
    assert_eq!(
        action(&sv),
        (
            "Logga in igen".into(),
            "/oauth2/start?rd=%2Fdeep%2Fpage".into()
        )
    );
    // Its JSON twin.
    let v: Value = http
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&v["error"], &v["problem"], &v["retry"]),
        (
            &json!("sign_in_failed"),
            &json!("refused"),
            &json!("/oauth2/start?rd=%2Fdeep%2Fpage")
        ),
        "{v}"
    );
    // "Sign in again" starts a sign-in that comes back to the page asked for.
    let resp = s.sign_in(&http, "/deep/page", "dave").await;
    assert_eq!(resp.status(), 200);
    // A made-up or altered problem URL shows nothing of its own.
    for p in ["x", &url[url.len() - 20..]] {
        let resp = navigate(http.get(s.gate.url(&format!("/oauth2/link/problem?p={p}"))))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (resp.status().as_u16(), location(&resp)),
            (302, s.gate.url("/"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_gone_before_the_token_exchange_gets_a_page_of_its_own() {
    let mut s = ScenarioBuilder::new(StoreKind::Memory).start().await;
    let http = user();
    let outcome = s.begin_sign_in(&http, "/orders", "olga").await;
    // Magento.com stops between the sign-in form and the callback's code exchange.
    s.provider.close_stdin();
    assert!(
        s.provider.wait_exit(Duration::from_secs(10)).is_some(),
        "the provider stopped"
    );
    let callback = s.finish_sign_in(&http, &outcome).await;
    let (_, status, text) = problem_page(&s, &http, callback, None).await;
    assert_eq!(status, 503);
    assert!(
        text.contains("<h1>Magento.com could not be reached</h1>"),
        "{text}"
    );
    assert!(
        text.contains("Magento.com did not answer, or its answer could not be used"),
        "{text}"
    );
    assert!(text.contains("wait a moment, then sign in again"), "{text}");
    assert_eq!(
        action(&text),
        ("Sign in again".into(), "/oauth2/start?rd=%2F".into())
    );
    s.gate
        .metrics_containing(
            "linkgate_logins_total{provider=\"sso\",result=\"provider_unavailable\"} 1",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_whose_flow_is_gone_at_the_callback_gets_a_page_of_its_own() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    let http = user();
    let outcome = s.begin_sign_in(&http, "/reports", "pia").await;
    // The flow cookie is gone (expired after ten minutes, or cleared): the browser comes
    // back without it.
    let fresh = user();
    let callback = s.finish_sign_in(&fresh, &outcome).await;
    let (_, status, text) = problem_page(&s, &fresh, callback, Some(SWEDISH)).await;
    assert_eq!(status, 400);
    assert!(
        text.contains("<h1>Din inloggning har gått ut</h1>"),
        "{text}"
    );
    assert!(
        text.contains("Den här inloggningen påbörjades i en annan webbläsare, eller så har den gått ut eller redan använts."),
        "{text}"
    );
    assert!(
        text.contains("slutför inloggningen inom tio minuter"),
        "{text}"
    );
    assert_eq!(
        action(&text),
        ("Logga in igen".into(), "/oauth2/start?rd=%2F".into())
    );
    // The same in English, for a callback used twice in the browser that started it.
    assert_eq!(s.finish_sign_in(&http, &outcome).await.status(), 302);
    let replay = s.finish_sign_in(&http, &outcome).await;
    let (_, status, text) = problem_page(&s, &http, replay, None).await;
    assert_eq!(status, 400);
    assert!(text.contains("<h1>Your sign-in expired</h1>"), "{text}");
    assert!(text.contains("expired or was already used"), "{text}");
    assert_eq!(
        action(&text),
        ("Sign in again".into(), "/oauth2/start?rd=%2F".into())
    );
}

// === Sign-out ends the accounts provider's session too ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_ends_the_accounts_provider_session_then_magento_com_then_lands_on_rd() {
    let s = oauth2_scenario("").await;
    let accounts = s.accounts.as_ref().unwrap();
    let http = user();
    // Cloud account first, then Magento.com: linked, both providers signed in.
    let resp = s.account_sign_in(&http, "/projects", "cloud-ola").await;
    let (resp, _) = s.follow(&http, resp, "ola@magento.test").await;
    assert_eq!(resp.status(), 200);

    // The confirmation page names both providers.
    let (_, confirm) = page(&http, &s.gate.url("/oauth2/sign_out"), None).await;
    assert!(
        confirm.contains("Sign out of this site, of Magento.com and of accounts.magento.cloud?"),
        "{confirm}"
    );

    let resp = s.sign_out(&http, "?rd=%2Fbye").await;
    assert_eq!(resp.status(), 302);
    let first = location(&resp);
    // 1. The accounts provider's logout, with its own id_token and client.
    assert!(
        first.starts_with(&accounts.end_session_endpoint()),
        "{first}"
    );
    assert_eq!(
        param(&first, "client_id").as_deref(),
        Some("linkgate-accounts")
    );
    assert_eq!(
        param(&first, "post_logout_redirect_uri"),
        Some(s.gate.url("/oauth2/signed_out"))
    );
    let hint = param(&first, "id_token_hint").expect("id_token_hint");
    let claims = jwt_claims(&hint);
    assert_eq!(claims["iss"], accounts.issuer(), "{claims}");
    assert_eq!(claims["aud"], "linkgate-accounts", "{claims}");
    let state = param(&first, "state").unwrap();
    assert!(
        !state.contains("bye") && !state.contains("eyJ"),
        "state is sealed: {state}"
    );
    // The state replayed by another browser (as read from a provider's log or a Referer)
    // opens nothing: no next hop, no id_token, twice over.
    for _ in 0..2 {
        let resp = navigate(
            user()
                .get(s.gate.url("/oauth2/signed_out"))
                .query(&[("state", &state)]),
        )
        .send()
        .await
        .unwrap();
        let to = location(&resp);
        assert!(
            !to.contains("id_token_hint") && !to.starts_with(&s.provider.end_session_endpoint()),
            "{to}"
        );
    }
    let back = oidc::logout(&http, &first).await;
    assert!(
        back.starts_with(&s.gate.url("/oauth2/signed_out?")),
        "{back}"
    );

    // 2. Back at linkgate: on to Magento.com's logout, with Magento.com's id_token.
    let resp = navigate(http.get(&back)).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let second = location(&resp);
    assert!(
        second.starts_with(&s.provider.end_session_endpoint()),
        "{second}"
    );
    assert_eq!(param(&second, "client_id").as_deref(), Some("linkgate"));
    let claims = jwt_claims(&param(&second, "id_token_hint").expect("id_token_hint"));
    assert_eq!(claims["iss"], s.provider.issuer(), "{claims}");
    let back = oidc::logout(&http, &second).await;

    // 3. Back at linkgate: on to rd.
    let resp = navigate(http.get(&back)).send().await.unwrap();
    assert_eq!(
        (resp.status().as_u16(), location(&resp)),
        (302, s.gate.url("/bye"))
    );
    assert_eq!(accounts.counts().await.end_session, 1);
    assert_eq!(s.provider.counts().await.end_session, 1);

    // Both providers ask for the password again.
    let start = navigate(http.get(s.gate.url("/oauth2/account/start?rd=%2F")))
        .send()
        .await
        .unwrap();
    let outcome = oidc::login(&http, &location(&start), "cloud-ola").await;
    assert!(
        outcome.prompted,
        "the accounts provider asks for the password again"
    );
    let start = navigate(http.get(s.gate.url("/oauth2/start?rd=%2F")))
        .send()
        .await
        .unwrap();
    let outcome = oidc::login(&http, &location(&start), "ola@magento.test").await;
    assert!(outcome.prompted, "Magento.com asks for the password again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_out_chain_is_no_open_redirect() {
    let s = oauth2_scenario("").await;
    let http = user();
    let resp = s.account_sign_in(&http, "/", "cloud-eve").await;
    assert_eq!(resp.status(), 302);
    // rd is validated before the chain begins and again at its end.
    let resp = s.sign_out(&http, "?rd=https%3A%2F%2Fevil.example%2F").await;
    let first = location(&resp);
    let back = oidc::logout(&http, &first).await;
    let resp = navigate(http.get(&back)).send().await.unwrap();
    // Without a Magento.com session there is no Magento.com hop: straight to rd, which is /.
    let next = location(&resp);
    let next = if next.starts_with(s.provider.issuer()) {
        let back = oidc::logout(&http, &next).await;
        location(&navigate(http.get(&back)).send().await.unwrap())
    } else {
        next
    };
    assert_eq!(next, s.gate.url("/"));
    // A made-up state names no URL: it is read as an rd and validated.
    for state in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "not-a-sealed-chain",
    ] {
        let resp = navigate(
            http.get(s.gate.url("/oauth2/signed_out"))
                .query(&[("state", state)]),
        )
        .send()
        .await
        .unwrap();
        let to = location(&resp);
        assert!(to.starts_with(&s.gate.url("/")), "{state} -> {to}");
    }
    // A real chain's state with one byte changed does not open: read as an rd, it is `/`.
    let state = param(&first, "state").unwrap();
    let mut altered = state.into_bytes();
    let i = altered.len() / 2;
    altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let resp = navigate(
        http.get(s.gate.url("/oauth2/signed_out"))
            .query(&[("state", &altered)]),
    )
    .send()
    .await
    .unwrap();
    let to = location(&resp);
    assert!(
        to == s.gate.url(&format!("/{altered}")) || to == s.gate.url("/"),
        "{to}"
    );
    assert!(!to.contains(s.accounts.as_ref().unwrap().issuer()), "{to}");
}

/// The claims of a JWT (not verified: the test only reads whose it is).
fn jwt_claims(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

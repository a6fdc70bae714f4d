//! The Magento.com link rule end to end, with two real OpenID providers (Magento.com and
//! accounts.magento.cloud) and real Redis: Method 1, Method 2, primary login, the link page,
//! both conflicts, concurrent linking, grace and enforcement, disconnect, durability across
//! a restart, and the platform-JWT account source. Every test runs with Magento.com played by
//! the standard provider (`standard::`) and by the Adobe IMS look-alike (`ims::`, whose
//! subjects are `...@AdobeID`); accounts.magento.cloud is a standard provider in both.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::sso::{
    location, navigate, user, Accounts, Flavor, Scenario, ScenarioBuilder, StoreKind,
    PLATFORM_AUDIENCE, PLATFORM_COOKIE,
};

async fn linked_scenario(flavor: Flavor) -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .accounts(Accounts::OAuth2)
        .toml("[authz]\nbearer_tokens = true")
        .start()
        .await
}

/// Method 1 for `account` connecting with Magento.com `sso`, from a protected page; returns
/// the answer at the page afterwards.
async fn method_1(
    s: &Scenario,
    http: &reqwest::Client,
    account: &str,
    sso: &str,
) -> reqwest::Response {
    let resp = s.account_sign_in(http, "/projects", account).await;
    assert_eq!(resp.status(), 302, "account callback");
    let (resp, _) = s.follow(http, resp, sso).await;
    resp
}

async fn method_1_an_unlinked_cloud_account_is_sent_to_magento_and_comes_back_linked(
    flavor: Flavor,
) {
    let s = linked_scenario(flavor).await;
    let http = user();
    let resp = s.account_sign_in(&http, "/projects", "cloud-ann").await;
    assert_eq!(resp.status(), 302);
    // Back on the page asked for, the rule sends the unlinked account to Magento.com.
    let page = navigate(http.get(location(&resp))).send().await.unwrap();
    assert_eq!(page.status(), 302);
    let to_start = location(&page);
    assert!(
        to_start.contains("/oauth2/start?rd=%2Fprojects&intent=connect"),
        "{to_start}"
    );
    assert_eq!(
        s.upstream.count(),
        0,
        "nothing unlinked reached the upstream"
    );
    let (resp, prompted) = s.follow(&http, page, "ann@magento.test").await;
    assert!(
        prompted,
        "the user signs in (or creates the account) at Magento.com"
    );
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(seen.uri, "/projects");
    assert_eq!(seen.header("x-linkgate-link-status"), Some("linked"));
    assert_eq!(seen.header("x-linkgate-account-id"), Some("cloud-ann"));
    assert_eq!(
        seen.header("x-linkgate-sso-subject"),
        Some(flavor.sub("ann@magento.test").as_str())
    );
    assert_eq!(seen.header("x-forwarded-email"), Some("ann@magento.test"));
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(redis.keys("linkgate:link:account:*").len(), 1);
    assert_eq!(redis.keys("linkgate:link:sso:*").len(), 1);
    s.gate
        .metrics_containing("linkgate_links_total{result=\"created\"} 1")
        .await;
    // The account page says so.
    let page = navigate(http.get(s.gate.url("/oauth2/link")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<h2 id=\"sso\">Single Sign-On</h2>"),
        "{page}"
    );
    assert!(page.contains("Magento.com"));
    assert!(page.contains("<dd id=\"status\">Connected</dd>"), "{page}");
    assert!(page.contains("ann@magento.test"));
    assert!(page.contains("Disconnect from Magento.com"));
}

async fn method_1_from_the_account_page_button(flavor: Flavor) {
    let s = linked_scenario(flavor).await;
    let http = user();
    let resp = s.account_sign_in(&http, "/oauth2/link", "cloud-bea").await;
    assert_eq!(location(&resp), s.gate.url("/oauth2/link"));
    let page = navigate(http.get(s.gate.url("/oauth2/link")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("<dd id=\"status\">Not Connected</dd>"),
        "{page}"
    );
    assert!(page.contains("Connect with Magento.com"));
    let csrf = s.csrf(&http).await;
    // A forged form (no or wrong token) changes nothing.
    assert_eq!(s.post_link(&http, "connect", "forged").await.status(), 400);
    let resp = s.post_link(&http, "connect", &csrf).await;
    assert_eq!(resp.status(), 302);
    let (resp, _) = s.follow(&http, resp, "bea@magento.test").await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("<dd id=\"status\">Connected</dd>"), "{page}");
    assert!(page.contains("bea@magento.test"));
}

async fn method_2_already_signed_in_at_magento_connects_without_a_password(flavor: Flavor) {
    let s = linked_scenario(flavor).await;
    let http = user();
    // Tab 1: the user is signed in at Magento.com (the provider session exists).
    let outcome = s
        .begin_sign_in(&http, "/elsewhere", "cai@magento.test")
        .await;
    assert!(outcome.prompted);
    // Tab 2: the cloud account page, "Connect with Magento.com".
    let resp = s.account_sign_in(&http, "/oauth2/link", "cloud-cai").await;
    assert_eq!(resp.status(), 302);
    let csrf = s.csrf(&http).await;
    let resp = s.post_link(&http, "connect", &csrf).await;
    let (resp, prompted) = s.follow(&http, resp, "cai@magento.test").await;
    assert!(
        !prompted,
        "no password prompt: the Magento.com session completes the round trip"
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("<dd id=\"status\">Connected</dd>"), "{page}");
    assert!(page.contains("cai@magento.test"));
}

async fn primary_login_magento_alone_opens_the_linked_cloud_account(flavor: Flavor) {
    let s = linked_scenario(flavor).await;
    assert_eq!(
        method_1(&s, &user(), "cloud-dan", "dan@magento.test")
            .await
            .status(),
        200
    );
    // Another browser, Magento.com only.
    let fresh = user();
    let resp = s.sign_in(&fresh, "/projects/42", "dan@magento.test").await;
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(seen.uri, "/projects/42");
    assert_eq!(seen.header("x-linkgate-link-status"), Some("linked"));
    assert_eq!(seen.header("x-linkgate-account-id"), Some("cloud-dan"));
    assert_eq!(
        seen.header("x-linkgate-sso-subject"),
        Some(flavor.sub("dan@magento.test").as_str())
    );
}

async fn magento_without_a_linked_account_sees_the_rule_and_apis_get_rfc_9470(flavor: Flavor) {
    let s = linked_scenario(flavor).await;
    let http = user();
    let outcome = s
        .begin_sign_in(&http, "/projects", "eve@magento.test")
        .await;
    let resp = s.finish_sign_in(&http, &outcome).await;
    let page = navigate(http.get(location(&resp))).send().await.unwrap();
    assert_eq!(page.status(), 403);
    let text = page.text().await.unwrap();
    assert!(text.contains("Since 1 April 2020"), "{text}");
    assert!(text.contains("eve@magento.test"));
    assert!(text.contains("Sign in to accounts.magento.cloud"), "{text}");
    assert!(
        text.contains("/oauth2/account/start?rd=%2Fprojects"),
        "{text}"
    );
    let api = http
        .get(s.gate.url("/api/projects"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let www = api.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        www.contains("error=\"insufficient_user_authentication\""),
        "{www}"
    );
    let v: serde_json::Value = api.json().await.unwrap();
    assert_eq!(v["error"], "link_required");
    assert_eq!(v["link_page"], "/oauth2/link");
    assert_eq!(s.upstream.count(), 0);
    // From that page, signing in to the cloud account links the two at once.
    let resp = s.account_sign_in(&http, "/projects", "cloud-eve").await;
    assert_eq!(resp.status(), 302);
    let resp = navigate(http.get(location(&resp))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-link-status"),
        Some("linked")
    );
}

async fn an_unlinked_bearer_token_gets_insufficient_user_authentication(flavor: Flavor) {
    let key = support::oidc::generate_key("sso-key");
    let jwk = key.jwk.clone();
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .accounts(Accounts::OAuth2)
        .toml("[authz]\nbearer_tokens = true")
        .provider(move |o| o.jwks(json!({ "keys": [jwk] })))
        .start()
        .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = |sub: &str| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("sso-key".into());
        let claims = json!({"iss": s.provider.issuer(), "aud": "linkgate", "sub": sub, "iat": now, "exp": now + 300});
        jsonwebtoken::encode(
            &h,
            &claims,
            &EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let call = |t: String| {
        support::client()
            .get(s.gate.url("/api"))
            .bearer_auth(t)
            .send()
    };
    // The provider's subject for fay (IMS: "...@AdobeID").
    let fay = flavor.sub("fay@magento.test");
    let resp = call(token(&fay)).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_user_authentication"));
    // Once linked, the same kind of token passes with both identities.
    assert_eq!(
        method_1(&s, &user(), "cloud-fay", "fay@magento.test")
            .await
            .status(),
        200
    );
    let resp = call(token(&fay)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-account-id"),
        Some("cloud-fay")
    );
}

async fn conflicts_explain_and_leave_the_registry_unchanged(flavor: Flavor) {
    let s = linked_scenario(flavor).await;
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(
        method_1(&s, &user(), "cloud-gus", "gus@magento.test")
            .await
            .status(),
        200
    );
    let before = (
        redis.keys("linkgate:link:*"),
        redis.cli(&["SMEMBERS", "linkgate:links:index:{links}"]),
    );

    // 1. The Magento.com account is already linked to another cloud account (ownership transfer).
    let resp = method_1(&s, &user(), "cloud-new-owner", "gus@magento.test").await;
    assert_eq!(resp.status(), 409);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("already connected to another accounts.magento.cloud account"),
        "{page}"
    );
    assert!(page.contains("ownership transfer"));
    assert!(page.contains("Disconnect from Magento.com"));
    assert!(page.contains("href=\"/oauth2/link\""));

    // 2. The cloud account is already linked to another Magento.com account (email change).
    let resp = method_1(&s, &user(), "cloud-gus", "gus.new@magento.test").await;
    assert_eq!(resp.status(), 409);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("already connected to another Magento.com account (g***@magento.test)"),
        "{page}"
    );
    assert!(page.contains("email change"));
    assert!(page.contains("linkgate links unlink"), "{page}");

    let after = (
        redis.keys("linkgate:link:*"),
        redis.cli(&["SMEMBERS", "linkgate:links:index:{links}"]),
    );
    assert_eq!(before, after, "nothing changed");
    s.gate
        .metrics_containing("linkgate_links_total{result=\"conflict_sso\"} 1")
        .await;
}

async fn two_concurrent_link_attempts_for_one_magento_account_have_one_winner(flavor: Flavor) {
    let s = linked_scenario(flavor).await;
    let (one, two) = (user(), user());
    // Both browsers are signed in to different cloud accounts and reach the Magento.com
    // sign-in as the same person.
    let mut callbacks = Vec::new();
    for (http, account) in [(&one, "cloud-hal-1"), (&two, "cloud-hal-2")] {
        let resp = s.account_sign_in(http, "/p", account).await;
        let page = navigate(http.get(location(&resp))).send().await.unwrap();
        let start = navigate(http.get(location(&page))).send().await.unwrap();
        let outcome = support::oidc::login(http, &location(&start), "hal@magento.test").await;
        callbacks.push((http.clone(), outcome.callback_url));
    }
    let tasks: Vec<_> = callbacks
        .into_iter()
        .map(|(http, url)| {
            tokio::spawn(async move {
                let resp = navigate(http.get(url)).send().await.unwrap();
                // The loser is sent to the conflict's own page.
                match resp.headers().get("location").and_then(|l| l.to_str().ok()) {
                    Some(l) if l.contains("/oauth2/link/problem?p=") => 409,
                    _ => resp.status().as_u16(),
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [302, 409], "exactly one wins");
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(redis.keys("linkgate:link:account:*").len(), 1);
    assert_eq!(redis.keys("linkgate:link:sso:*").len(), 1);
}

async fn before_required_from_unlinked_sessions_pass_in_grace(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .accounts(Accounts::OAuth2)
        .toml("[link]\nrequired_from = \"2099-01-01T00:00:00Z\"")
        .start()
        .await;
    let http = user();
    let resp = s.sign_in(&http, "/projects", "ivy@magento.test").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-link-status"),
        Some("grace")
    );
    let page = navigate(http.get(s.gate.url("/oauth2/link")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("required from 2099-01-01"), "{page}");
    // A cloud account alone passes too, marked grace.
    let other = user();
    let resp = s.account_sign_in(&other, "/projects", "cloud-ivy").await;
    let resp = navigate(other.get(location(&resp))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-link-status"),
        Some("grace")
    );
    assert_eq!(
        s.upstream.last().header("x-linkgate-account-id"),
        Some("cloud-ivy")
    );
}

async fn disconnect_ends_every_session_that_relied_on_the_link(flavor: Flavor) {
    let s = linked_scenario(flavor).await;
    let first = user();
    assert_eq!(
        method_1(&s, &first, "cloud-jo", "jo@magento.test")
            .await
            .status(),
        200
    );
    let second = user();
    assert_eq!(
        s.sign_in(&second, "/x", "jo@magento.test").await.status(),
        200
    );
    let csrf = s.csrf(&first).await;
    let resp = s.post_link(&first, "disconnect", &csrf).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(location(&resp), s.gate.url("/oauth2/link"));
    let page = navigate(first.get(location(&resp)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<dd id=\"status\">Not Connected</dd>"),
        "{page}"
    );
    // The other browser's linked session is gone at once.
    let resp = navigate(second.get(s.gate.url("/x"))).send().await.unwrap();
    assert_eq!(resp.status(), 302, "the second browser must sign in again");
    assert!(location(&resp).contains("/oauth2/start"));
    let redis = s.redis.as_ref().unwrap();
    assert!(redis.keys("linkgate:link:*").is_empty());
    s.gate
        .metrics_containing("linkgate_links_total{result=\"disconnected\"} 1")
        .await;
}

async fn links_survive_a_linkgate_restart(flavor: Flavor) {
    let mut s = linked_scenario(flavor).await;
    assert_eq!(
        method_1(&s, &user(), "cloud-kai", "kai@magento.test")
            .await
            .status(),
        200
    );
    s.gate.restart();
    let fresh = user();
    assert_eq!(
        s.sign_in(&fresh, "/after-restart", "kai@magento.test")
            .await
            .status(),
        200
    );
    assert_eq!(
        s.upstream.last().header("x-linkgate-account-id"),
        Some("cloud-kai")
    );
}

async fn the_platform_jwt_source(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .accounts(Accounts::Jwt)
        .start()
        .await;
    let key = s.account_key.as_ref().unwrap();
    let issuer = s.accounts.as_ref().unwrap().issuer().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = |patch: serde_json::Value| {
        let mut c = json!({"iss": issuer, "aud": PLATFORM_AUDIENCE, "sub": "cloud-lou", "email": "lou@cloud.test", "iat": now, "exp": now + 300});
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let sign = |c: serde_json::Value, alg: Algorithm| {
        let mut h = Header::new(alg);
        h.kid = Some("platform".into());
        jsonwebtoken::encode(
            &h,
            &c,
            &EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let projects = s.gate.url("/projects");
    // A browser the platform signed in: its cookie is in the jar, sent on every request
    // (a session made from it follows it).
    let visit = |token: String| {
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let url = projects.clone();
        jar.add_cookie_str(
            &format!("{PLATFORM_COOKIE}={token}; Path=/"),
            &url::Url::parse(&url).unwrap(),
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar)
            .no_proxy()
            .build()
            .unwrap();
        async move {
            let resp = navigate(http.get(url)).send().await.unwrap();
            (http, resp)
        }
    };
    // Refused tokens: nothing passes, no session is made.
    let hmac = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("platform".into());
        jsonwebtoken::encode(
            &h,
            &claims(json!({})),
            &EncodingKey::from_secret(key.public_pem.as_bytes()),
        )
        .unwrap()
    };
    use base64::Engine as _;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "platform"})),
        b64(&claims(json!({})))
    );
    for (what, token) in [
        (
            "expired",
            sign(
                claims(json!({"exp": now - 600, "iat": now - 1200})),
                Algorithm::RS256,
            ),
        ),
        (
            "wrong issuer",
            sign(
                claims(json!({"iss": "http://127.0.0.1:1"})),
                Algorithm::RS256,
            ),
        ),
        (
            "wrong audience",
            sign(claims(json!({"aud": "someone-else"})), Algorithm::RS256),
        ),
        ("alg none", none),
        ("HMAC with the public key", hmac),
    ] {
        let (_, resp) = visit(token).await;
        // A browser with a JWT that does not verify is sent to sign in (issue 10).
        assert_eq!(resp.status(), 302, "{what}");
        assert!(location(&resp).contains("/oauth2/start?rd="), "{what}");
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "{what}: no session"
        );
    }
    assert!(s
        .redis
        .as_ref()
        .unwrap()
        .keys("linkgate:session:*")
        .is_empty());
    // A valid token of an unlinked account: sent to connect with Magento.com.
    let valid = sign(claims(json!({})), Algorithm::RS256);
    let (http, resp) = visit(valid.clone()).await;
    assert_eq!(resp.status(), 302);
    assert!(location(&resp).contains("intent=connect"));
    let (resp, _) = s.follow(&http, resp, "lou@magento.test").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-account-id"),
        Some("cloud-lou")
    );
    assert_eq!(
        s.upstream.last().header("x-linkgate-link-status"),
        Some("linked")
    );
    // Linked now: a fresh browser with only the platform JWT gets straight through, and no
    // session is written for it (the verified JWT is remembered instead).
    let sessions_before = s.redis.as_ref().unwrap().keys("linkgate:session:*").len();
    let (_, resp) = visit(valid).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("_linkgate")),
        "no session for the platform JWT alone"
    );
    assert_eq!(
        s.redis.as_ref().unwrap().keys("linkgate:session:*").len(),
        sessions_before
    );
    assert_eq!(
        s.upstream.last().header("x-linkgate-sso-subject"),
        Some(flavor.sub("lou@magento.test").as_str())
    );
}

flavored_tests!(
    method_1_an_unlinked_cloud_account_is_sent_to_magento_and_comes_back_linked,
    method_1_from_the_account_page_button,
    method_2_already_signed_in_at_magento_connects_without_a_password,
    primary_login_magento_alone_opens_the_linked_cloud_account,
    magento_without_a_linked_account_sees_the_rule_and_apis_get_rfc_9470,
    an_unlinked_bearer_token_gets_insufficient_user_authentication,
    conflicts_explain_and_leave_the_registry_unchanged,
    two_concurrent_link_attempts_for_one_magento_account_have_one_winner,
    before_required_from_unlinked_sessions_pass_in_grace,
    disconnect_ends_every_session_that_relied_on_the_link,
    links_survive_a_linkgate_restart,
    the_platform_jwt_source,
);

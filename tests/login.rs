//! Signing in through linkgate against a real OpenID provider (npm `oidc-provider`), with
//! sessions in real Redis or in memory: what a user sees, what the upstream receives, and
//! every way a sign-in can be abused. Every test runs twice (`flavored_tests!` at the end):
//! `standard::` against oidc-provider as it comes, `ims::` against the Adobe IMS look-alike
//! with the `adobe-ims` preset, asserting each flavour's own behaviour where they differ
//! (subjects, scopes, the logout endpoint and its parameters).

mod support;

use std::time::Duration;

use support::oidc::{self, Account};
use support::sso::{
    eventually, location, navigate, problem_page, user, Flavor, ScenarioBuilder, StoreKind,
};

async fn full_login_lands_on_the_original_url_with_identity(store: StoreKind, flavor: Flavor) {
    let s = ScenarioBuilder::new(store)
        .flavor(flavor)
        .provider(|o| {
            o.account(
                "alice",
                Account::new()
                    .email("alice@shop.test")
                    .name("Alice Example")
                    .preferred_username("alice")
                    .groups(&["admins", "staff"]),
            )
        })
        .start()
        .await;
    let http = user();
    // What the authorization request asks for: the flavour's scopes, joined its way (IMS
    // refuses space-separated ones), with PKCE S256.
    let start = navigate(http.get(s.gate.url("/oauth2/start?rd=%2F")))
        .send()
        .await
        .unwrap();
    let authorize = url::Url::parse(&location(&start)).unwrap();
    let param = |k: &str| {
        authorize
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(param("scope").as_deref(), Some(flavor.scope()));
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    let resp = s.sign_in(&http, "/orders?id=7", "alice").await;
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.last();
    let alice = flavor.sub("alice");
    assert_eq!(seen.uri, "/orders?id=7");
    assert_eq!(seen.header("x-forwarded-user"), Some(alice.as_str()));
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@shop.test"));
    assert_eq!(seen.header("x-forwarded-groups"), Some("admins,staff"));
    assert_eq!(seen.header("x-forwarded-preferred-username"), Some("alice"));
    assert_eq!(seen.header("x-linkgate-sso-subject"), Some(alice.as_str()));
    assert_eq!(
        seen.header("x-forwarded-access-token"),
        None,
        "not configured"
    );
    assert_eq!(seen.header("authorization"), None, "not configured");
    assert!(
        seen.header("cookie")
            .is_none_or(|c| !c.contains("_linkgate")),
        "linkgate's cookies never reach the upstream: {:?}",
        seen.header("cookie")
    );
    // The next request is served from the session, and spoofed headers are replaced.
    let resp = navigate(http.get(s.gate.url("/again")))
        .header("X-Forwarded-User", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-forwarded-user"),
        Some(alice.as_str())
    );
    // userinfo and forward-auth agree.
    let info: serde_json::Value = http
        .get(s.gate.url("/oauth2/userinfo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "alice@shop.test");
    // IMS sends the string "true": it counts as verified.
    assert_eq!(info["email_verified"], true, "{info}");
    assert_eq!(info["user"], alice.as_str());
    let auth = http.get(s.gate.url("/oauth2/auth")).send().await.unwrap();
    assert_eq!(auth.status(), 202);
    assert_eq!(auth.headers()["x-auth-request-email"], "alice@shop.test");
    assert_eq!(auth.headers()["x-forwarded-user"], alice.as_str());
    let anonymous = support::client()
        .get(s.gate.url("/oauth2/auth"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    s.gate
        .metrics_containing("linkgate_logins_total{provider=\"sso\",result=\"ok\"} 1")
        .await;
    if let Some(redis) = &s.redis {
        assert_eq!(redis.keys("linkgate:session:*").len(), 1);
        // The flow lived in a cookie; the store holds only the mark that its state was
        // used, written after the code exchange and expiring with the flow.
        let marks = redis.keys("linkgate:flow:*");
        assert_eq!(marks.len(), 1, "{marks:?}");
        assert_eq!(redis.cli(&["GET", &marks[0]]).trim(), "used");
        let ttl: i64 = redis.cli(&["TTL", &marks[0]]).trim().parse().unwrap();
        assert!((1..=600).contains(&ttl), "{ttl}");
        let raw = redis.cli(&["GET", &redis.keys("linkgate:session:*")[0]]);
        assert!(
            !raw.contains("alice"),
            "session records are encrypted at rest"
        );
    }
}

async fn full_login_on_redis(flavor: Flavor) {
    full_login_lands_on_the_original_url_with_identity(StoreKind::Redis, flavor).await;
}

async fn full_login_on_memory(flavor: Flavor) {
    full_login_lands_on_the_original_url_with_identity(StoreKind::Memory, flavor).await;
}

async fn two_tabs_sign_in_at_once(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start()
        .await;
    let http = user();
    // Both tabs start before either finishes.
    let first = s.begin_sign_in(&http, "/tab-one", "bob").await;
    let second = s.begin_sign_in(&http, "/tab-two", "bob").await;
    assert!(
        !second.prompted,
        "the provider session makes the second tab password-less"
    );
    let r2 = s.finish_sign_in(&http, &second).await;
    assert_eq!(r2.status(), 302);
    assert!(location(&r2).ends_with("/tab-two"));
    let r1 = s.finish_sign_in(&http, &first).await;
    assert_eq!(r1.status(), 302);
    assert!(location(&r1).ends_with("/tab-one"));
    let resp = navigate(http.get(s.gate.url("/tab-one")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn a_replayed_callback_is_refused(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start()
        .await;
    let http = user();
    let outcome = s.begin_sign_in(&http, "/x", "carol").await;
    assert_eq!(s.finish_sign_in(&http, &outcome).await.status(), 302);
    let replay = problem_page(&http, s.finish_sign_in(&http, &outcome).await).await;
    assert_eq!(replay.status(), 400);
    let page = replay.text().await.unwrap();
    assert!(page.contains("expired or was already used"), "{page}");
    assert!(page.contains(">Sign in again</a>"), "{page}");
    // Even from a fresh browser that never had a session.
    let other = user();
    let replay = s.finish_sign_in(&other, &outcome).await;
    assert!(replay.headers().get("set-cookie").is_none());
    assert_eq!(problem_page(&other, replay).await.status(), 400);
}

async fn a_callback_from_another_browser_is_refused(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .start()
        .await;
    let victim = user();
    let attacker = user();
    // The attacker starts a sign-in and lures the victim into finishing it (login CSRF).
    let outcome = s.begin_sign_in(&attacker, "/x", "mallory").await;
    let resp = problem_page(&victim, s.finish_sign_in(&victim, &outcome).await).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("another browser"));
    // The victim's browser had no flow cookie for it; nothing about her changed. (The
    // attacker may still finish his own sign-in in his own browser: that signs in only him.)
    let resp = navigate(victim.get(s.gate.url("/x"))).send().await.unwrap();
    assert_eq!(resp.status(), 302, "the victim is not signed in as mallory");
}

async fn provider_errors_get_a_page_with_a_retry(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .start()
        .await;
    let http = user();
    let outcome = s.begin_sign_in(&http, "/deep/page", "dave").await;
    let state = outcome.param("state").unwrap();
    let denied = format!(
        "{}?error=access_denied&state={}",
        s.gate.url("/oauth2/callback"),
        state
    );
    let resp = navigate(http.get(denied)).send().await.unwrap();
    let resp = problem_page(&http, resp).await;
    assert_eq!(resp.status(), 400);
    let page = resp.text().await.unwrap();
    assert!(page.contains("cancelled or refused"), "{page}");
    assert!(
        page.contains("/oauth2/start?rd=%2Fdeep%2Fpage"),
        "retry keeps the destination: {page}"
    );
}

async fn a_tampered_cookie_is_refused_without_a_store_call(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start()
        .await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "erin").await.status(), 200);
    let gets_before = redis.calls("get");
    let forged = [
        "_linkgate=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "_linkgate=not-base64!",
        "_linkgate=",
        "_linkgate=q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng",
    ];
    for cookie in forged {
        let resp = support::client()
            .get(s.gate.url("/x"))
            .header("cookie", cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{cookie}");
        let clear = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        assert!(
            clear.is_some_and(|c| c.starts_with("_linkgate=;")),
            "a bad cookie is cleared"
        );
    }
    assert_eq!(
        redis.calls("get"),
        gets_before,
        "no store lookup for a forged cookie"
    );
}

async fn an_expired_session_is_sent_back_to_sign_in(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start_with(|_| "ttl = \"2s\"\nrefresh_before = \"1s\"\n".to_string())
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "frank").await.status(), 200);
    let gate = &s.gate;
    eventually("the session to expire", Duration::from_secs(10), || {
        let http = http.clone();
        async move {
            let resp = navigate(http.get(gate.url("/x"))).send().await.unwrap();
            resp.status() == 302 && location(&resp).contains("/oauth2/start?rd=%2Fx")
        }
    })
    .await;
}

async fn concurrent_requests_during_a_refresh_cause_one_refresh(flavor: Flavor) {
    // Access tokens live 8 s; refresh_before = 6 s, but a refresh waits for half the lifetime
    // and the 5-second floor: five seconds after sign-in, every request finds the token due.
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .provider(|o| o.access_token_ttl(Duration::from_secs(8)))
        .start_with(|_| "refresh_before = \"6s\"\n".to_string())
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "grace").await.status(), 200);
    s.provider.reset_counts().await;
    // Token ageing is the point of this test: wait for the refresh window, no longer.
    tokio::time::sleep(Duration::from_millis(5300)).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let http = http.clone();
        let url = s.gate.url(&format!("/burst/{i}"));
        tasks.push(tokio::spawn(async move {
            http.get(url)
                .header("accept", "application/json")
                .send()
                .await
                .map(|r| r.status())
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap(),
            200,
            "every request during the refresh succeeds"
        );
    }
    let counts = s.provider.counts().await;
    assert_eq!(
        counts.refresh_token, 1,
        "exactly one refresh at the provider: {counts:?}"
    );
    assert_eq!(
        navigate(http.get(s.gate.url("/after")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        s.provider.counts().await.refresh_token,
        1,
        "the new token is not due again"
    );
}

async fn forwarded_tokens_are_the_sessions_and_follow_a_refresh(flavor: Flavor) {
    // `pass_access_token` and `set_authorization` forward the session's tokens, from the
    // cache as from the store; after a refresh, the new ones.
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .provider(|o| o.access_token_ttl(Duration::from_secs(8)))
        .toml("[headers]\npass_access_token = true\nset_authorization = true\n")
        .start_with(|_| "refresh_before = \"6s\"\n".to_string())
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "ivan").await.status(), 200);
    let tokens = |seen: &support::upstream::Seen| {
        let access = seen.header("x-forwarded-access-token").map(str::to_string);
        let authorization = seen.header("authorization").map(str::to_string);
        (
            access.expect("access token forwarded"),
            authorization.expect("Authorization set"),
        )
    };
    let (access, authorization) = tokens(&s.upstream.last());
    assert!(!access.is_empty());
    let id_token = authorization.strip_prefix("Bearer ").expect("a bearer");
    assert_eq!(id_token.split('.').count(), 3, "the id_token: {id_token}");
    // The next request is a cache hit and forwards the same tokens.
    let get = |path: &'static str| {
        let http = http.clone();
        let url = s.gate.url(path);
        async move { navigate(http.get(url)).send().await.unwrap().status() }
    };
    assert_eq!(get("/cached").await, 200);
    assert_eq!(
        tokens(&s.upstream.last()),
        (access.clone(), authorization.clone())
    );
    // In the refresh window the token is renewed, and the new one is forwarded from then on.
    tokio::time::sleep(Duration::from_millis(5300)).await;
    assert_eq!(get("/refreshed").await, 200);
    let (renewed, _) = tokens(&s.upstream.last());
    assert_ne!(renewed, access, "a refreshed access token");
    assert_eq!(get("/after").await, 200);
    assert_eq!(tokens(&s.upstream.last()).0, renewed);
    assert_eq!(s.provider.counts().await.refresh_token, 1);
}

async fn sign_out_removes_the_session_and_ends_the_provider_session(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start()
        .await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "heidi").await.status(), 200);
    assert_eq!(redis.keys("linkgate:session:*").len(), 1);
    let resp = s.sign_out(&http, "?rd=%2Fbye").await;
    assert_eq!(resp.status(), 302);
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("_linkgate=;"));
    // The standard provider's end-session endpoint, or IMS's /ims/logout/v1 with its own
    // parameter names; both return to the gate's signed-out page, an absolute URL.
    let logout = location(&resp);
    let signed_out = s.gate.url("/oauth2/signed_out");
    s.flavor.assert_provider_logout(&s, &logout, &signed_out);
    assert_eq!(
        logout.contains("id_token_hint="),
        flavor == Flavor::Standard,
        "the hint where OpenID's logout takes one: {logout}"
    );
    assert!(
        redis.keys("linkgate:session:*").is_empty(),
        "the session is gone from Redis"
    );
    assert!(redis.keys("linkgate:sessions:sso:*").is_empty());
    // The provider (after a confirmation, or IMS at once) sends the browser back to
    // linkgate, which goes on to rd: carried by `state`, or past IMS (which hands nothing
    // back) by a cookie of linkgate's.
    let back = oidc::logout(&http, &logout).await;
    assert!(back.starts_with(&signed_out), "{back}");
    let resp = http.get(&back).send().await.unwrap();
    assert_eq!(location(&resp), s.gate.url("/bye"));
    let counts = s.provider.counts().await;
    match s.flavor {
        Flavor::Standard => assert_eq!(counts.end_session, 1, "{counts:?}"),
        Flavor::Ims => assert_eq!(counts.ims_logout, 1, "{counts:?}"),
    }
    // Signed out everywhere: the next visit asks for the password again.
    let outcome = s.begin_sign_in(&http, "/x", "heidi").await;
    assert!(outcome.prompted, "the provider session ended too");
}

async fn sign_out_without_rd_ends_on_the_signed_out_page(flavor: Flavor) {
    // Both providers bring the browser back to the same place: linkgate's "Signed out" page
    // (not "/", which would send a signed-out person straight to a sign-in).
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .start()
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "hana").await.status(), 200);
    let resp = s.sign_out(&http, "").await;
    assert_eq!(resp.status(), 302);
    let logout = location(&resp);
    let signed_out = s.gate.url("/oauth2/signed_out");
    s.flavor.assert_provider_logout(&s, &logout, &signed_out);
    let back = oidc::logout(&http, &logout).await;
    assert!(back.starts_with(&signed_out), "{back}");
    let mut resp = navigate(http.get(&back)).send().await.unwrap();
    for _ in 0..3 {
        if !resp.status().is_redirection() {
            break;
        }
        let next = location(&resp);
        assert!(next.starts_with(&signed_out), "{next}");
        resp = navigate(http.get(&next)).send().await.unwrap();
    }
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("You are signed out"), "{page}");
    assert!(page.contains("Sign in again"), "{page}");
    // The page, again: nothing left that would send the browser elsewhere.
    let again = navigate(http.get(&signed_out)).send().await.unwrap();
    assert_eq!(again.status(), 200);
    // Without a session, a sign-out without rd goes to the same page.
    let resp = user()
        .get(s.gate.url("/oauth2/sign_out"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(location(&resp), signed_out);
}

async fn rd_never_leaves_for_a_foreign_site(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .toml("[authz]\nredirect_domains = [\".shop.test\"]")
        .start()
        .await;
    let corpus = [
        "//evil.com",
        "/\\evil.com",
        "/%09/evil.com",
        "/%2F%2Fevil.com",
        "https://evil.com",
        "https:evil.com",
        "https://shop.test.evil.com",
        "https://www.shop.test@evil.com",
        "javascript:alert(1)",
        "/%5Cevil.com",
        "http://evilshop.test",
    ];
    // sign_out without a session follows rd at once.
    for rd in corpus {
        let url = format!(
            "{}?rd={}",
            s.gate.url("/oauth2/sign_out"),
            percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC)
        );
        let resp = support::client().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers()["location"], "/", "sign_out?rd={rd}");
    }
    let ok = support::client()
        .get(format!(
            "{}?rd=https%3A%2F%2Fwww.shop.test%2Fcart",
            s.gate.url("/oauth2/sign_out")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.headers()["location"], "https://www.shop.test/cart");
    // start keeps rd through the provider round trip: a hostile one lands on "/".
    for rd in ["//evil.com", "https://evil.com/x", "/%09/evil.com"] {
        let http = user();
        let start = format!(
            "{}?rd={}",
            s.gate.url("/oauth2/start"),
            percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC)
        );
        let resp = navigate(http.get(start)).send().await.unwrap();
        let outcome = oidc::login(&http, &location(&resp), "ivan").await;
        let resp = s.finish_sign_in(&http, &outcome).await;
        assert_eq!(resp.status(), 302);
        assert_eq!(resp.headers()["location"], "/", "start?rd={rd}");
    }
}

async fn a_provider_key_rotation_does_not_break_sign_in(flavor: Flavor) {
    let mut s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .start()
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "judy").await.status(), 200);
    let old = s.provider.private_jwks().await;
    let new = oidc::generate_key("rotated-key");
    let opts = s
        .provider
        .options()
        .jwks(serde_json::json!({ "keys": [new.jwk, old["keys"][0]] }));
    s.provider.restart_with(opts);
    let fresh = user();
    let resp = s.sign_in(&fresh, "/y", "judy").await;
    assert_eq!(
        resp.status(),
        200,
        "a token signed with the new key verifies"
    );
}

async fn redis_down_gives_503_and_service_resumes_when_it_returns(flavor: Flavor) {
    // Without the session cache every request needs the store (see tests/cache.rs for a
    // cached session riding out an outage).
    let mut s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start_with(|_| "cache_ttl = \"0s\"\n".to_string())
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "kim").await.status(), 200);
    s.redis.as_mut().unwrap().stop();

    let resp = navigate(http.get(s.gate.url("/x"))).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Temporarily unavailable"));
    let resp = http
        .get(s.gate.url("/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "store_unavailable");
    // Starting a sign-in needs no store (the flow is a cookie); finishing one does.
    let anonymous = user();
    let outcome = s.begin_sign_in(&anonymous, "/x", "kim").await;
    let resp = s.finish_sign_in(&anonymous, &outcome).await;
    assert_eq!(resp.status(), 503, "no new session while the store is down");
    let ready = support::client()
        .get(s.gate.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);

    s.redis.as_mut().unwrap().restart();
    let gate = &s.gate;
    eventually("readiness to return", Duration::from_secs(10), || async {
        support::client()
            .get(gate.admin_url("/readyz"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    // The old Redis kept nothing: the user signs in again, and it works.
    let fresh = user();
    assert_eq!(s.sign_in(&fresh, "/x", "kim").await.status(), 200);
}

async fn authz_refusals_say_who_is_signed_in(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .toml("[authz]\nemail_domains = [\"shop.test\"]")
        .start()
        .await;
    let http = user();
    let resp = s.sign_in(&http, "/x", "outsider@elsewhere.test").await;
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.unwrap();
    assert!(page.contains("outsider@elsewhere.test"), "{page}");
    assert!(page.contains("sign_out"), "{page}");
    assert_eq!(s.upstream.count(), 0);
    let http = user();
    assert_eq!(
        s.sign_in(&http, "/x", "insider@shop.test").await.status(),
        200
    );
}

flavored_tests!(
    full_login_on_redis,
    full_login_on_memory,
    two_tabs_sign_in_at_once,
    a_replayed_callback_is_refused,
    a_callback_from_another_browser_is_refused,
    provider_errors_get_a_page_with_a_retry,
    a_tampered_cookie_is_refused_without_a_store_call,
    an_expired_session_is_sent_back_to_sign_in,
    concurrent_requests_during_a_refresh_cause_one_refresh,
    forwarded_tokens_are_the_sessions_and_follow_a_refresh,
    sign_out_removes_the_session_and_ends_the_provider_session,
    sign_out_without_rd_ends_on_the_signed_out_page,
    rd_never_leaves_for_a_foreign_site,
    a_provider_key_rotation_does_not_break_sign_in,
    redis_down_gives_503_and_service_resumes_when_it_returns,
    authz_refusals_say_who_is_signed_in,
);

//! The `adobe-ims` preset against a local provider that behaves like Adobe IMS (provider.mjs
//! with `ims`): no `end_session_endpoint` in its discovery (IMS's own `/ims/logout/v1`),
//! comma-separated scopes required, `client_secret_post` only, `email_verified` as the string
//! `"true"`, `...@AdobeID` subjects, rotating refresh tokens, 24-hour access tokens. Sign-in,
//! refresh, sign-out and linking run against it.

mod support;

use std::time::Duration;

use support::sso::{location, navigate, user, Accounts, ScenarioBuilder, StoreKind};

fn json_get(http: &reqwest::Client, url: String) -> reqwest::RequestBuilder {
    http.get(url).header("accept", "application/json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_sign_in_sends_comma_scopes_and_reads_ims_claims() {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .ims()
        .provider(|o| o.access_token_ttl(Duration::from_secs(24 * 3600)))
        .start()
        .await;
    let http = user();
    // What the preset sends: IMS's comma-separated scopes, offline_access among them, PKCE.
    let resp = navigate(http.get(s.gate.url("/oauth2/start?rd=%2Fx")))
        .send()
        .await
        .unwrap();
    let authorize = location(&resp);
    let url = url::Url::parse(&authorize).unwrap();
    let param = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(
        param("scope").as_deref(),
        Some("openid,AdobeID,email,profile,offline_access")
    );
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    // The whole sign-in (the token request authenticates in the body: the provider takes
    // nothing else).
    assert_eq!(s.sign_in(&http, "/x", "vera").await.status(), 200);
    let seen = s.upstream.last();
    let sub = seen.header("x-forwarded-user").unwrap().to_string();
    assert!(sub.ends_with("@AdobeID"), "{sub}");
    let info: serde_json::Value = json_get(&http, s.gate.url("/oauth2/userinfo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "vera@example.test", "{info}");
    assert_eq!(
        info["email_verified"], true,
        "the string \"true\" counts: {info}"
    );
    // 24-hour tokens: nothing to refresh for a long while.
    for i in 0..20 {
        let resp = json_get(&http, s.gate.url(&format!("/p/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(s.provider.counts().await.refresh_token, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_rotating_refresh_tokens_are_refreshed_once_across_two_instances() {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .ims()
        .provider(|o| o.access_token_ttl(Duration::from_secs(8)))
        .start()
        .await;
    let b = s.another_gate();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "wes").await.status(), 200);
    let signed_in = std::time::Instant::now();
    s.provider.reset_counts().await;
    for round in 1..=2u64 {
        // Token ageing: 8-second tokens are due after 5 s.
        let due = signed_in + Duration::from_millis(5300 * round);
        tokio::time::sleep(due.saturating_duration_since(std::time::Instant::now())).await;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let http = http.clone();
            let url = if i % 2 == 0 {
                s.gate.url("/r")
            } else {
                b.url("/r")
            };
            tasks.push(tokio::spawn(async move {
                json_get(&http, url).send().await.unwrap().status()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        let counts = s.provider.counts().await;
        assert_eq!(counts.refresh_token, round, "{counts:?}");
        assert_eq!(
            counts.token_error, 0,
            "a spent token was never sent: {counts:?}"
        );
    }
    assert_eq!(
        s.upstream
            .last()
            .header("x-forwarded-user")
            .map(|u| u.ends_with("@AdobeID")),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_sign_out_goes_through_ims_logout() {
    let s = ScenarioBuilder::new(StoreKind::Redis).ims().start().await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "xia").await.status(), 200);
    let resp = s.sign_out(&http, "?rd=%2Fbye").await;
    assert_eq!(resp.status(), 302);
    let logout = location(&resp);
    let url = url::Url::parse(&logout).unwrap();
    assert_eq!(url.path(), "/ims/logout/v1", "{logout}");
    let param = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(param("client_id").as_deref(), Some("linkgate"));
    assert_eq!(
        param("redirect_uri"),
        Some(s.gate.url("/oauth2/signed_out"))
    );
    assert_eq!(
        param("post_logout_redirect_uri"),
        None,
        "IMS's names, not OIDC's"
    );
    assert!(redis.keys("linkgate:session:*").is_empty());
    // IMS ends its session and sends the browser back.
    let back = http.get(&logout).send().await.unwrap();
    assert_eq!(back.status(), 302);
    assert!(location(&back).starts_with(&s.gate.url("/oauth2/signed_out")));
    assert_eq!(s.provider.counts().await.ims_logout, 1);
    let outcome = s.begin_sign_in(&http, "/x", "xia").await;
    assert!(outcome.prompted, "signed out at IMS too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_linking_connects_a_cloud_account_to_an_adobeid() {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .ims()
        .accounts(Accounts::OAuth2)
        .start()
        .await;
    let http = user();
    let resp = s.account_sign_in(&http, "/projects", "cloud-yan").await;
    assert_eq!(resp.status(), 302);
    let (resp, prompted) = s.follow(&http, resp, "yan").await;
    assert!(prompted);
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-linkgate-link-status"), Some("linked"));
    assert_eq!(seen.header("x-linkgate-account-id"), Some("cloud-yan"));
    let sso = seen.header("x-linkgate-sso-subject").unwrap();
    assert!(sso.ends_with("@AdobeID"), "{sso}");
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(redis.keys("linkgate:link:sso:*").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_separated_scopes_are_refused_by_ims() {
    // The local IMS refuses what IMS documents as wrong: the separator setting is what
    // makes the preset work.
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .ims()
        .sso_keys("scope_separator = \"space\"")
        .start()
        .await;
    let http = user();
    let resp = navigate(http.get(s.gate.url("/oauth2/start?rd=%2Fx")))
        .send()
        .await
        .unwrap();
    let authorize = location(&resp);
    assert!(authorize.contains("scope=openid+AdobeID"), "{authorize}");
    let resp = http.get(&authorize).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("comma-separated"));
}

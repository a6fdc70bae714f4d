//! The `adobe-ims` preset against a local provider that behaves like Adobe IMS (provider.mjs
//! with `ims`): no `end_session_endpoint` in its discovery (IMS's own `/ims/logout/v1`),
//! comma-separated scopes required, `client_secret_post` only, `email_verified` as the string
//! `"true"`, `...@AdobeID` subjects, rotating refresh tokens, 24-hour access tokens. The
//! sign-in, refresh, sign-out and linking suites run against it as `ims::` twins of their
//! tests (`flavored_tests!` in tests/login.rs, refresh.rs, linking.rs and the sign-out tests
//! of cache.rs, linking_paths.rs and security_holes.rs); this file checks what is IMS's own.

mod support;

use support::sso::{location, navigate, problem_page, user, ScenarioBuilder, StoreKind};

fn json_get(http: &reqwest::Client, url: String) -> reqwest::RequestBuilder {
    http.get(url).header("accept", "application/json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_sign_in_sends_comma_scopes_and_reads_ims_claims() {
    // The look-alike's own lifetimes: 24 hours, as IMS issues them.
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .ims()
        .toml("[headers]\nset_authorization = true\n")
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
    // 24-hour tokens (the id_token forwarded as the bearer says so): nothing to refresh for
    // a long while.
    let bearer = seen.header("authorization").unwrap().to_string();
    let claims = bearer
        .strip_prefix("Bearer ")
        .and_then(|t| t.split('.').nth(1))
        .unwrap();
    use base64::Engine as _;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        24 * 3600,
        "{claims}"
    );
    // What IMS sends as it sends it: the string "true", an "...@AdobeID" subject.
    assert_eq!(claims["email_verified"], "true", "{claims}");
    assert_eq!(claims["sub"].as_str(), Some(sub.as_str()), "{claims}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_look_alike_is_ims_shaped_where_a_client_would_notice() {
    // What the local IMS is, checked at the source: a client that relied on a stock
    // provider's ways would fail against it as against IMS.
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .ims()
        .sso_keys("token_auth_method = \"client_secret_basic\"")
        .start()
        .await;
    let http = support::client();
    let doc: serde_json::Value = http
        .get(format!(
            "{}/ims/.well-known/openid-configuration",
            s.provider.issuer()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc.get("end_session_endpoint").is_none(), "{doc}");
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_post"]),
        "{doc}"
    );
    let end_session = http
        .get(s.provider.end_session_endpoint())
        .send()
        .await
        .unwrap();
    assert_eq!(end_session.status(), 404, "no RP-initiated logout");
    // HTTP Basic at the token endpoint is refused: the sign-in fails at the code exchange
    // (a clear page, no session), as with IMS; the preset's client_secret_post works.
    let browser = user();
    let outcome = s.begin_sign_in(&browser, "/x", "zoe").await;
    let resp = problem_page(&browser, s.finish_sign_in(&browser, &outcome).await).await;
    assert!(
        resp.status().is_client_error() || resp.status().is_server_error(),
        "{}",
        resp.status()
    );
    let after = navigate(browser.get(s.gate.url("/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 302, "still signed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adobe_s_documented_endpoints_are_reachable_by_a_setting() {
    // The look-alike's discovery names oidc-provider's paths (/auth, /token, /me, /jwks),
    // while Adobe documents /ims/authorize/v2, /ims/token/v3, /ims/userinfo/v2, /ims/keys:
    // discovery wins by default; preset_endpoints = "documented" uses Adobe's.
    for (setting, path) in [("discovery", "/auth"), ("documented", "/ims/authorize/v2")] {
        let s = ScenarioBuilder::new(StoreKind::Memory)
            .ims()
            .sso_keys(&format!("preset_endpoints = \"{setting}\""))
            .start()
            .await;
        let http = user();
        let resp = navigate(http.get(s.gate.url("/oauth2/start?rd=%2Fx")))
            .send()
            .await
            .unwrap();
        let authorize = url::Url::parse(&location(&resp)).unwrap();
        assert_eq!(authorize.path(), path, "{setting}");
        assert_eq!(
            s.sign_in(&http, "/x", "abe").await.status(),
            200,
            "{setting}"
        );
        let counts = s.provider.counts().await;
        assert_eq!(counts.authorization_code, 1, "{setting}: {counts:?}");
        assert_eq!(counts.userinfo, 1, "{setting}: {counts:?}");
    }
}

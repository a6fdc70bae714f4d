//! The OpenID provider test rig against the real node provider (tests/support/oidc/).

mod support;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::oidc;
use support::oidc::{Account, ClientConfig, OidcProvider, ProviderOptions};
use url::Url;

const RP_CALLBACK: &str = "http://127.0.0.1:9/oauth2/callback";
const RP_SIGNED_OUT: &str = "http://127.0.0.1:9/signed-out";

fn sso_options(name: &str) -> ProviderOptions {
    ProviderOptions::new(name)
        .client(
            ClientConfig::confidential("linkgate", "linkgate-secret", RP_CALLBACK)
                .post_logout_redirect_uri(RP_SIGNED_OUT),
        )
        .account(
            "alice",
            Account::new()
                .email("alice@magento.test")
                .name("Alice Example")
                .groups(&["admins", "devs"]),
        )
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

struct AuthRequest {
    url: String,
    state: String,
    nonce: String,
    pkce: Pkce,
}

fn authorize_request(
    p: &OidcProvider,
    client_id: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> AuthRequest {
    let state = random_token();
    let nonce = random_token();
    let pkce = pkce();
    let mut url = Url::parse(&p.authorization_endpoint()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", RP_CALLBACK)
        .append_pair("scope", scope)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256");
    for (k, v) in extra {
        url.query_pairs_mut().append_pair(k, v);
    }
    AuthRequest {
        url: url.to_string(),
        state,
        nonce,
        pkce,
    }
}

fn jwt_part(jwt: &str, i: usize) -> Value {
    let part = jwt.split('.').nth(i).expect("JWT part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

async fn token_request(p: &OidcProvider, form: &[(&str, &str)]) -> (reqwest::StatusCode, Value) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(p.token_endpoint())
        .basic_auth("linkgate", Some("linkgate-secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

async fn exchange_code(p: &OidcProvider, code: &str, verifier: &str) -> Value {
    let (status, body) = token_request(
        p,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", RP_CALLBACK),
            ("code_verifier", verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "token endpoint: {body}");
    body
}

async fn get_json(url: &str) -> Value {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

fn process_alive(pid: u32) -> bool {
    // A killed-and-reaped child has no /proc entry (a zombie would still have one, with state Z).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

fn done(name: &str, t: Instant) {
    eprintln!("TIMING {name}: {} ms", t.elapsed().as_millis());
}

#[tokio::test]
async fn discovery_issuer_matches_configuration() {
    let t = Instant::now();
    let p = OidcProvider::start(sso_options("sso"));
    assert_eq!(p.issuer(), format!("http://127.0.0.1:{}", p.port()));
    let d = get_json(&p.discovery_url()).await;
    assert_eq!(d["issuer"], p.issuer());
    assert_eq!(d["authorization_endpoint"], p.authorization_endpoint());
    assert_eq!(d["token_endpoint"], p.token_endpoint());
    assert_eq!(d["userinfo_endpoint"], p.userinfo_endpoint());
    assert_eq!(d["jwks_uri"], p.jwks_uri());
    assert_eq!(d["end_session_endpoint"], p.end_session_endpoint());
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(d["response_types_supported"], json!(["code"]));
    done("discovery_issuer_matches_configuration", t);
}

#[tokio::test]
async fn code_flow_with_pkce_and_nonce_yields_id_token_claims() {
    let t = Instant::now();
    let p = OidcProvider::start(sso_options("sso"));
    let client = oidc::browserless_client();
    let req = authorize_request(&p, "linkgate", "openid email profile", &[]);

    let outcome = oidc::login(&client, &req.url, "alice").await;
    assert!(outcome.prompted, "first login must show the password form");
    assert!(
        outcome.callback_url.starts_with(RP_CALLBACK),
        "{}",
        outcome.callback_url
    );
    assert_eq!(outcome.param("state").as_deref(), Some(req.state.as_str()));
    assert_eq!(outcome.param("iss").as_deref(), Some(p.issuer()));
    let code = outcome.param("code").expect("code in callback");

    let tokens = exchange_code(&p, &code, &req.pkce.verifier).await;
    assert_eq!(tokens["token_type"], "Bearer");
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let header = jwt_part(id_token, 0);
    assert_eq!(header["alg"], "RS256");
    let claims = jwt_part(id_token, 1);
    assert_eq!(claims["iss"], p.issuer());
    assert_eq!(claims["aud"], "linkgate");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], req.nonce.as_str());
    assert_eq!(claims["email"], "alice@magento.test");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["groups"], json!(["admins", "devs"]));

    // The signing key is the one published in the JWKS.
    let jwks = get_json(&p.jwks_uri()).await;
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "JWKS must not publish private parts"
    );

    // Userinfo with the access token.
    let ui: Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(p.userinfo_endpoint())
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ui["sub"], "alice");
    assert_eq!(ui["email"], "alice@magento.test");

    // The code is single-use.
    let (status, body) = token_request(
        &p,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", RP_CALLBACK),
            ("code_verifier", &req.pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");

    let c = p.counts().await;
    assert_eq!(c.authorization_code, 2);
    assert_eq!(c.token_success, 1);
    assert_eq!(c.token_error, 1);
    assert_eq!(c.userinfo, 1);
    assert_eq!(c.login_forms_posted, 1);
    done("code_flow_with_pkce_and_nonce_yields_id_token_claims", t);
}

#[tokio::test]
async fn unknown_login_gets_default_claims() {
    let t = Instant::now();
    let p = OidcProvider::start(sso_options("sso"));
    let client = oidc::browserless_client();
    let req = authorize_request(&p, "linkgate", "openid email profile", &[]);
    let outcome = oidc::login(&client, &req.url, "bob").await;
    let tokens = exchange_code(&p, &outcome.param("code").unwrap(), &req.pkce.verifier).await;
    let claims = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["email"], "bob@example.test");
    assert_eq!(claims["groups"], json!([]));

    let req = authorize_request(&p, "linkgate", "openid email", &[("prompt", "login")]);
    let outcome = oidc::login(&client, &req.url, "carol@shop.test").await;
    assert!(outcome.prompted, "prompt=login must ask again");
    let tokens = exchange_code(&p, &outcome.param("code").unwrap(), &req.pkce.verifier).await;
    let claims = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
    assert_eq!(claims["sub"], "carol@shop.test");
    assert_eq!(claims["email"], "carol@shop.test");
    assert!(
        claims.get("groups").is_none(),
        "no profile/groups scope, no groups claim"
    );
    done("unknown_login_gets_default_claims", t);
}

#[tokio::test]
async fn pkce_is_required_and_checked() {
    let t = Instant::now();
    let p = OidcProvider::start(sso_options("sso"));
    let client = oidc::browserless_client();

    // No code_challenge: the provider redirects back with an error.
    let mut url = Url::parse(&p.authorization_endpoint()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "linkgate")
        .append_pair("redirect_uri", RP_CALLBACK)
        .append_pair("scope", "openid")
        .append_pair("state", "s1");
    let outcome = oidc::login(&client, url.as_str(), "alice").await;
    assert!(!outcome.prompted);
    assert_eq!(
        outcome.param("error").as_deref(),
        Some("invalid_request"),
        "{}",
        outcome.callback_url
    );

    // plain is refused.
    url.query_pairs_mut()
        .append_pair("code_challenge", "x".repeat(43).as_str())
        .append_pair("code_challenge_method", "plain");
    let outcome = oidc::login(&client, url.as_str(), "alice").await;
    assert_eq!(
        outcome.param("error").as_deref(),
        Some("invalid_request"),
        "{}",
        outcome.callback_url
    );

    // A wrong verifier fails the exchange.
    let req = authorize_request(&p, "linkgate", "openid", &[]);
    let outcome = oidc::login(&client, &req.url, "alice").await;
    let (status, body) = token_request(
        &p,
        &[
            ("grant_type", "authorization_code"),
            ("code", &outcome.param("code").unwrap()),
            ("redirect_uri", RP_CALLBACK),
            ("code_verifier", &random_token()),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    done("pkce_is_required_and_checked", t);
}

#[tokio::test]
async fn second_login_with_provider_session_is_not_prompted() {
    let t = Instant::now();
    let p = OidcProvider::start(sso_options("sso"));
    let client = oidc::browserless_client();

    // prompt=none without a session: login_required back at the RP, no form.
    let req = authorize_request(&p, "linkgate", "openid email", &[("prompt", "none")]);
    let outcome = oidc::login(&client, &req.url, "alice").await;
    assert!(!outcome.prompted);
    assert_eq!(outcome.param("error").as_deref(), Some("login_required"));

    let first = authorize_request(&p, "linkgate", "openid email profile", &[]);
    let outcome = oidc::login(&client, &first.url, "alice").await;
    assert!(outcome.prompted);

    // Method 2: already signed in at the provider, the round trip needs no password.
    let second = authorize_request(&p, "linkgate", "openid email profile groups", &[]);
    let outcome = oidc::login(&client, &second.url, "ignored").await;
    assert!(!outcome.prompted, "second login must not show the form");
    assert_eq!(
        outcome.param("state").as_deref(),
        Some(second.state.as_str())
    );
    let tokens = exchange_code(&p, &outcome.param("code").unwrap(), &second.pkce.verifier).await;
    let claims = jwt_part(tokens["id_token"].as_str().unwrap(), 1);
    assert_eq!(
        claims["sub"], "alice",
        "the session's account, not the login passed"
    );
    assert_eq!(claims["nonce"], second.nonce.as_str());

    // prompt=none now succeeds silently.
    let third = authorize_request(&p, "linkgate", "openid", &[("prompt", "none")]);
    let outcome = oidc::login(&client, &third.url, "alice").await;
    assert!(!outcome.prompted);
    assert!(outcome.param("code").is_some(), "{}", outcome.callback_url);

    // Another cookie jar (another browser) is prompted.
    let other = oidc::browserless_client();
    let fourth = authorize_request(&p, "linkgate", "openid", &[]);
    assert!(oidc::login(&other, &fourth.url, "bob").await.prompted);

    assert_eq!(p.counts().await.login_forms_posted, 2);
    done("second_login_with_provider_session_is_not_prompted", t);
}

#[tokio::test]
async fn refresh_grant_works_and_is_counted() {
    let t = Instant::now();
    let p = OidcProvider::start(sso_options("sso").access_token_ttl(Duration::from_secs(30)));
    let client = oidc::browserless_client();
    let req = authorize_request(&p, "linkgate", "openid email profile", &[]);
    let outcome = oidc::login(&client, &req.url, "alice").await;
    let tokens = exchange_code(&p, &outcome.param("code").unwrap(), &req.pkce.verifier).await;
    assert_eq!(tokens["expires_in"], 30);
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh_token issued without offline_access");

    let (status, refreshed) = token_request(
        &p,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert!(refreshed["access_token"].is_string());
    assert_ne!(refreshed["access_token"], tokens["access_token"]);
    // Confidential client: oidc-provider does not rotate (until 70% of the refresh token's TTL
    // has passed) and answers with the same refresh_token.
    assert_eq!(refreshed["refresh_token"], refresh);
    let claims = jwt_part(refreshed["id_token"].as_str().unwrap(), 1);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["groups"], json!(["admins", "devs"]));

    let c = p.counts().await;
    assert_eq!((c.authorization_code, c.refresh_token), (1, 1), "{c:?}");
    assert_eq!(c.token_success, 2);

    p.reset_counts().await;
    assert_eq!(p.counts().await, oidc::Counts::default());
    done("refresh_grant_works_and_is_counted", t);
}

#[tokio::test]
async fn public_client_with_pkce_only() {
    let t = Instant::now();
    let p = OidcProvider::start(
        ProviderOptions::new("pub").client(ClientConfig::public("spa", RP_CALLBACK)),
    );
    let client = oidc::browserless_client();
    let req = authorize_request(&p, "spa", "openid", &[]);
    let outcome = oidc::login(&client, &req.url, "dave").await;
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(p.token_endpoint())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs([
                    ("grant_type", "authorization_code"),
                    ("client_id", "spa"),
                    ("code", &outcome.param("code").unwrap()),
                    ("redirect_uri", RP_CALLBACK),
                    ("code_verifier", &req.pkce.verifier),
                ])
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(
        jwt_part(tokens["id_token"].as_str().unwrap(), 1)["sub"],
        "dave"
    );
    done("public_client_with_pkce_only", t);
}

#[tokio::test]
async fn restart_with_rotated_key_changes_kid_on_the_same_issuer() {
    let t = Instant::now();
    let old_key = oidc::generate_key("key-1");
    let mut p = OidcProvider::start(sso_options("sso").jwks(json!({ "keys": [old_key.jwk] })));
    let issuer = p.issuer().to_owned();
    let old_pid = p.pid();
    let jwks = get_json(&p.jwks_uri()).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], "key-1");
    assert_eq!(p.private_jwks().await["keys"][0]["kid"], "key-1");

    // Rotate: the new key signs, the old one stays published.
    let new_key = oidc::generate_key("key-2");
    let opts = p
        .options()
        .jwks(json!({ "keys": [new_key.jwk, old_key.jwk] }));
    p.restart_with(opts);
    assert!(!process_alive(old_pid), "old provider process must be gone");
    assert_eq!(p.issuer(), issuer);
    let jwks = get_json(&p.jwks_uri()).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, ["key-2", "key-1"]);

    let client = oidc::browserless_client();
    let req = authorize_request(&p, "linkgate", "openid", &[]);
    let outcome = oidc::login(&client, &req.url, "alice").await;
    let tokens = exchange_code(&p, &outcome.param("code").unwrap(), &req.pkce.verifier).await;
    assert_eq!(
        jwt_part(tokens["id_token"].as_str().unwrap(), 0)["kid"],
        "key-2"
    );

    // Without jwks the provider generates a fresh key: another kid again.
    let mut opts = p.options();
    opts.jwks = None;
    p.restart_with(opts);
    let jwks = get_json(&p.jwks_uri()).await;
    let kid = jwks["keys"][0]["kid"].as_str().unwrap();
    assert!(kid != "key-1" && kid != "key-2", "{kid}");

    // sign_jwt uses the current key.
    let jwt = p
        .sign_jwt(&json!({"sub": "acct-1", "iss": p.issuer()}))
        .await;
    assert_eq!(jwt_part(&jwt, 0)["kid"], kid);
    assert_eq!(jwt_part(&jwt, 1)["sub"], "acct-1");
    done("restart_with_rotated_key_changes_kid_on_the_same_issuer", t);
}

#[tokio::test]
async fn two_providers_at_once_keep_separate_sessions() {
    let t = Instant::now();
    let sso = OidcProvider::start(sso_options("magento-com"));
    let accounts = OidcProvider::start(
        ProviderOptions::new("accounts-magento-cloud")
            .client(ClientConfig::confidential(
                "linkgate",
                "linkgate-secret",
                RP_CALLBACK,
            ))
            .account("acct-7", Account::new().email("owner@cloud.test")),
    );
    assert_ne!(sso.port(), accounts.port());
    assert_ne!(sso.issuer(), accounts.issuer());
    assert_eq!(get_json(&sso.discovery_url()).await["issuer"], sso.issuer());
    assert_eq!(
        get_json(&accounts.discovery_url()).await["issuer"],
        accounts.issuer()
    );

    // One browser (cookie jar) signs in at both: cookies do not isolate by port, so the
    // providers' cookie names must not collide.
    let browser = oidc::browserless_client();
    let a = authorize_request(&accounts, "linkgate", "openid email", &[]);
    let out_a = oidc::login(&browser, &a.url, "acct-7").await;
    assert!(out_a.prompted);
    let s = authorize_request(&sso, "linkgate", "openid email profile", &[]);
    let out_s = oidc::login(&browser, &s.url, "alice").await;
    assert!(out_s.prompted);

    let ta = exchange_code(&accounts, &out_a.param("code").unwrap(), &a.pkce.verifier).await;
    let ts = exchange_code(&sso, &out_s.param("code").unwrap(), &s.pkce.verifier).await;
    let ca = jwt_part(ta["id_token"].as_str().unwrap(), 1);
    let cs = jwt_part(ts["id_token"].as_str().unwrap(), 1);
    assert_eq!(
        (ca["iss"].as_str(), ca["sub"].as_str()),
        (Some(accounts.issuer()), Some("acct-7"))
    );
    assert_eq!(
        (cs["iss"].as_str(), cs["sub"].as_str()),
        (Some(sso.issuer()), Some("alice"))
    );

    // Both sessions survive each other: the second round trips are password-less at both.
    let a2 = authorize_request(&accounts, "linkgate", "openid", &[]);
    assert!(!oidc::login(&browser, &a2.url, "x").await.prompted);
    let s2 = authorize_request(&sso, "linkgate", "openid", &[]);
    assert!(!oidc::login(&browser, &s2.url, "x").await.prompted);

    assert_eq!(sso.counts().await.authorization_code, 1);
    assert_eq!(accounts.counts().await.authorization_code, 1);
    done("two_providers_at_once_keep_separate_sessions", t);
}

#[tokio::test]
async fn rp_initiated_logout_ends_the_provider_session() {
    let t = Instant::now();
    let p = OidcProvider::start(sso_options("sso"));
    let client = oidc::browserless_client();
    let req = authorize_request(&p, "linkgate", "openid", &[]);
    let outcome = oidc::login(&client, &req.url, "alice").await;
    let tokens = exchange_code(&p, &outcome.param("code").unwrap(), &req.pkce.verifier).await;

    let mut end = Url::parse(&p.end_session_endpoint()).unwrap();
    end.query_pairs_mut()
        .append_pair("id_token_hint", tokens["id_token"].as_str().unwrap())
        .append_pair("post_logout_redirect_uri", RP_SIGNED_OUT)
        .append_pair("state", "bye");
    let back = oidc::logout(&client, end.as_str()).await;
    assert_eq!(back, format!("{RP_SIGNED_OUT}?state=bye"));

    // The session is gone: the next login asks for the password again.
    let again = authorize_request(&p, "linkgate", "openid", &[]);
    assert!(oidc::login(&client, &again.url, "alice").await.prompted);
    assert_eq!(p.counts().await.end_session, 1);
    done("rp_initiated_logout_ends_the_provider_session", t);
}

#[test]
fn drop_kills_the_process_and_start_works_outside_a_runtime() {
    let t = Instant::now();
    let p = OidcProvider::start(ProviderOptions::new("sync"));
    let pid = p.pid();
    assert!(process_alive(pid));
    // Reachable without any async runtime.
    let stream = std::net::TcpStream::connect(("127.0.0.1", p.port()));
    assert!(stream.is_ok());
    drop(stream);
    drop(p);
    assert!(
        !process_alive(pid),
        "provider process {pid} still alive after drop"
    );
    done(
        "drop_kills_the_process_and_start_works_outside_a_runtime",
        t,
    );
}

#[test]
fn provider_exits_when_stdin_closes_and_on_sigterm() {
    let t = Instant::now();
    // stdin closed: what happens when the test process dies without running Drop.
    let mut p = OidcProvider::start(ProviderOptions::new("stdin"));
    p.close_stdin();
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("provider must exit when stdin closes");
    assert!(status.success(), "{status:?}");

    let mut p = OidcProvider::start(ProviderOptions::new("sigterm"));
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("provider must exit on SIGTERM");
    assert!(status.success(), "{status:?}");
    done("provider_exits_when_stdin_closes_and_on_sigterm", t);
}

#[test]
#[should_panic(expected = "apt-get install nodejs npm")]
fn missing_node_fails_with_a_fix() {
    OidcProvider::start(ProviderOptions::new("no-node").node_binary("/nonexistent/node"));
}

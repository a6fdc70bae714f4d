//! Header hygiene attacked through the real binary: nothing a client sends can pose as the
//! client's address or scheme to the app, and no identity value can smuggle a second value
//! into a multi-valued identity header.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::oidc;
use support::sso::{ScenarioBuilder, StoreKind, CLIENT_ID};
use support::{raw_get, GateBuilder, Upstream};

/// Headers that apps (Magento's `RemoteAddress` with alternative headers configured, PHP
/// frameworks, IIS modules) read as the client's address, host or scheme.
const SPOOFS: &[&str] = &[
    "True-Client-IP",
    "X-Real-IP",
    "X-Client-IP",
    "Client-IP",
    "X-Cluster-Client-IP",
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Server",
    "X-Forwarded-Scheme",
    "X-Forwarded-Ssl",
    "X-Forwarded-Port",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Original-Host",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
    "X-Originating-IP",
    "Front-End-Https",
    "X_Real_IP",
    "x_forwarded_for",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_cannot_choose_its_address_or_scheme() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml("[authz]\nskip_auth_routes = [\"^/\"]")
        .start();
    let lines: Vec<String> = SPOOFS.iter().map(|h| format!("{h}: 6.6.6.6")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let resp = raw_get(gate.addr(), "/", &lines).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = upstream.last();
    for (name, value) in &seen.headers {
        assert!(
            !value.contains("6.6.6.6"),
            "{name}: {value} reached the app from an untrusted peer"
        );
    }
    assert_eq!(seen.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_keeps_its_chain() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .server("trusted_proxies = [\"127.0.0.1\"]")
        .toml("[authz]\nskip_auth_routes = [\"^/\"]")
        .start();
    let resp = raw_get(
        gate.addr(),
        "/",
        &["X-Real-IP: 203.0.113.7", "X-Forwarded-For: 203.0.113.7"],
    )
    .await;
    assert_eq!(resp.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.header("x-real-ip"), Some("203.0.113.7"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_name_cannot_smuggle_another_group() {
    let key = oidc::generate_key("groups-key");
    let kid = key.jwk["kid"].as_str().unwrap().to_string();
    let jwk = key.jwk.clone();
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .provider(move |o| o.jwks(json!({ "keys": [jwk] })))
        .toml("[authz]\nbearer_tokens = true")
        .start()
        .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "iss": s.provider.issuer(),
        "aud": CLIENT_ID,
        "sub": "api-client",
        "groups": ["staff,admins", "ops", " root", "a;b"],
        "iat": now,
        "exp": now + 300,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let resp = support::client()
        .get(s.gate.url("/api"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(s.upstream.last().header("x-forwarded-groups"), Some("ops"));
    let auth = support::client()
        .get(s.gate.url("/oauth2/auth"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), 202);
    assert_eq!(auth.headers()["x-forwarded-groups"], "ops");
}

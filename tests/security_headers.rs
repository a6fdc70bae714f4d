//! Header hygiene attacked through the real binary: nothing a client sends can pose as the
//! client's address or scheme to the app, no identity value can smuggle a second value
//! into a multi-valued identity header, and the app reads a body's length as linkgate did.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support::oidc;
use support::sso::{ScenarioBuilder, StoreKind, CLIENT_ID};
use support::{raw_get, raw_request, GateBuilder, Upstream};

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

/// A gate in front of `upstream` that lets every request through without a sign-in: what
/// these tests look at is what reaches the app.
fn open_gate(upstream: &Upstream) -> support::Gate {
    GateBuilder::new()
        .upstream("app", upstream)
        .toml("[authz]\nskip_auth_routes = [\"^/\"]")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_client_cannot_choose_its_address_or_scheme() {
    let upstream = Upstream::start().await;
    let gate = open_gate(&upstream);
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

/// A `Content-Length` list (`3, 3`, or one value on two lines), which Pingora frames by
/// its one agreeing value, reaches the app as that one value: an app reading the list
/// another way must not frame the body differently (forwarded as written, `3, 3` was
/// answered `400` by this hyper upstream after linkgate had accepted it). Beside
/// `Transfer-Encoding`, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_gets_the_one_body_length_linkgate_read() {
    let upstream = Upstream::start().await;
    let gate = open_gate(&upstream);
    let lengths = |seen: &support::upstream::Seen| -> Vec<String> {
        seen.headers
            .iter()
            .filter(|(k, _)| k == "content-length")
            .map(|(_, v)| v.clone())
            .collect()
    };
    for framing in [
        "Content-Length: 3, 3",
        "Content-Length: 3\r\nContent-Length: 3",
        "Content-Length: 3,3",
    ] {
        let resp = raw_request(
            gate.addr(),
            &format!(
                "POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{framing}\r\n\r\nabc"
            ),
        )
        .await;
        assert_eq!(resp.status, 200, "{framing:?}: {resp:?}");
        let seen = upstream.last();
        assert_eq!(lengths(&seen), vec!["3".to_string()], "{framing:?}");
        assert_eq!(seen.body_len, 3, "{framing:?}");
    }
    // Lengths that disagree are refused before anything reaches the app.
    let before = upstream.count();
    let resp = raw_request(
        gate.addr(),
        "POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 3, 4\r\n\r\nabcd",
    )
    .await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(upstream.count(), before);
    // Chunked with a Content-Length beside it: the chunks frame the body, and the app is
    // not told a length.
    let resp = raw_request(
        gate.addr(),
        "POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = upstream.last();
    assert!(lengths(&seen).is_empty(), "{:?}", seen.headers);
    assert_eq!(seen.body_len, 3);
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

//! Crafted JWTs against linkgate's verifier: bearer tokens through the running gate, and
//! id_token rules (nonce, azp) through the library against the provider's real JWKS. Every
//! token a forger could make is refused; a flood of unknown `kid`s does not become a flood
//! of JWKS downloads.

mod support;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::oidc::{self, GeneratedKey};
use support::sso::{Scenario, ScenarioBuilder, StoreKind, CLIENT_ID};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sign(key: &GeneratedKey, kid: &str, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    )
}

struct Rig {
    s: Scenario,
    key: GeneratedKey,
    kid: String,
}

/// A gate accepting bearer tokens, whose provider signs with a key the test holds.
async fn rig() -> Rig {
    let key = oidc::generate_key("test-key");
    let kid = key.jwk["kid"].as_str().unwrap().to_string();
    let jwk = key.jwk.clone();
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .provider(move |o| o.jwks(json!({ "keys": [jwk] })))
        .toml("[authz]\nbearer_tokens = true")
        .start()
        .await;
    Rig { s, key, kid }
}

impl Rig {
    fn claims(&self) -> Value {
        json!({
            "iss": self.s.provider.issuer(),
            "aud": CLIENT_ID,
            "sub": "api-client",
            "email": "api@shop.test",
            "iat": now(),
            "exp": now() + 300,
        })
    }

    fn with(&self, patch: Value) -> Value {
        let mut c = self.claims();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    async fn call(&self, token: &str) -> reqwest::Response {
        support::client()
            .get(self.s.gate.url("/api/orders"))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_bearer_token_passes_with_identity() {
    let r = rig().await;
    let token = sign(&r.key, &r.kid, Algorithm::RS256, &r.claims());
    let resp = r.call(&token).await;
    assert_eq!(resp.status(), 200);
    let seen = r.s.upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("api-client"));
    assert_eq!(seen.header("x-forwarded-email"), Some("api@shop.test"));
    r.s.gate
        .metrics_containing("linkgate_requests_total{decision=\"bearer\"} 1")
        .await;
    // userinfo shows the token's identity in full; forward-auth answers with its headers.
    let bearer = format!("Bearer {token}");
    let info: Value = support::client()
        .get(r.s.gate.url("/oauth2/userinfo"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["user"], "api-client", "{info}");
    assert_eq!(info["email"], "api@shop.test", "{info}");
    assert_eq!(info["sso"]["issuer"], r.s.provider.issuer(), "{info}");
    assert_eq!(info["linked"], false, "{info}");
    let auth = support::client()
        .get(r.s.gate.url("/oauth2/auth"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(auth.status(), 202);
    assert_eq!(auth.headers()["x-auth-request-user"], "api-client");
    assert_eq!(auth.headers()["x-forwarded-email"], "api@shop.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_token_is_verified_once_and_an_altered_one_never_rides_on_it() {
    let r = rig().await;
    let token = sign(&r.key, &r.kid, Algorithm::RS256, &r.claims());
    for _ in 0..3 {
        assert_eq!(r.call(&token).await.status(), 200);
        assert_eq!(
            r.s.upstream.last().header("x-forwarded-user"),
            Some("api-client")
        );
    }
    r.s.gate
        .metrics_containing("linkgate_token_cache_total{result=\"miss\"} 1")
        .await;
    r.s.gate
        .metrics_containing("linkgate_token_cache_total{result=\"hit\"} 2")
        .await;
    // The same claims with a signature byte changed, and the same signature over
    // other claims: each verified in full, each refused, however often sent.
    // (a byte in the middle: the last base64 character of a signature carries unused bits)
    let middle = token.len() - 40;
    let flipped = if &token[middle..=middle] == "A" {
        "B"
    } else {
        "A"
    };
    let altered = format!("{}{flipped}{}", &token[..middle], &token[middle + 1..]);
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let other = sign(
        &r.key,
        &r.kid,
        Algorithm::RS256,
        &r.with(json!({"sub": "mallory"})),
    );
    let other_payload = other.split('.').nth(1).unwrap();
    let spliced = format!("{head}.{other_payload}.{signature}");
    for forged in [&altered, &spliced, &altered, &spliced] {
        assert_eq!(r.call(forged).await.status(), 401);
    }
    r.s.gate
        .metrics_containing("linkgate_token_cache_total{result=\"miss\"} 5")
        .await;
    r.s.gate
        .metrics_containing("linkgate_token_cache_total{result=\"hit\"} 2")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_wrong_tokens_are_refused() {
    let r = rig().await;
    let public_pem = r.key.public_pem.clone();
    let stranger = oidc::generate_key("stranger");
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong iss",
            sign(
                &r.key,
                &r.kid,
                Algorithm::RS256,
                &r.with(json!({"iss": "http://127.0.0.1:1"})),
            ),
        ),
        (
            "wrong aud",
            sign(
                &r.key,
                &r.kid,
                Algorithm::RS256,
                &r.with(json!({"aud": "someone-else"})),
            ),
        ),
        (
            "expired",
            sign(
                &r.key,
                &r.kid,
                Algorithm::RS256,
                &r.with(json!({"exp": now() - 3600, "iat": now() - 7200})),
            ),
        ),
        (
            "not yet valid",
            sign(
                &r.key,
                &r.kid,
                Algorithm::RS256,
                &r.with(json!({"nbf": now() + 3600})),
            ),
        ),
        (
            "issued in the future",
            sign(
                &r.key,
                &r.kid,
                Algorithm::RS256,
                &r.with(json!({"iat": now() + 3600})),
            ),
        ),
        (
            "no exp",
            sign(
                &r.key,
                &r.kid,
                Algorithm::RS256,
                &r.with(json!({"exp": null})),
            ),
        ),
        (
            "no sub",
            sign(
                &r.key,
                &r.kid,
                Algorithm::RS256,
                &r.with(json!({"sub": null})),
            ),
        ),
        (
            "alg none",
            unsigned(
                &json!({"alg": "none", "typ": "JWT", "kid": r.kid}),
                &r.claims(),
            ),
        ),
        (
            "alg None",
            unsigned(&json!({"alg": "None", "kid": r.kid}), &r.claims()),
        ),
        ("HMAC with the public key", {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(r.kid.clone());
            jsonwebtoken::encode(
                &header,
                &r.claims(),
                &EncodingKey::from_secret(public_pem.as_bytes()),
            )
            .unwrap()
        }),
        (
            "RS512 not on the allow-list",
            sign(&r.key, &r.kid, Algorithm::RS512, &r.claims()),
        ),
        (
            "unknown kid",
            sign(&stranger, "stranger", Algorithm::RS256, &r.claims()),
        ),
        (
            "known kid, other key",
            sign(&stranger, &r.kid, Algorithm::RS256, &r.claims()),
        ),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (what, token) in cases {
        let resp = r.call(&token).await;
        assert_eq!(resp.status(), 401, "{what}");
        let www = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(www.contains("invalid_token"), "{what}: {www}");
    }
    assert_eq!(
        r.s.upstream.count(),
        0,
        "nothing forged reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_does_not_flood_the_provider() {
    let r = rig().await;
    // Load the keys once with a good token.
    let good = sign(&r.key, &r.kid, Algorithm::RS256, &r.claims());
    assert_eq!(r.call(&good).await.status(), 200);
    let stranger = oidc::generate_key("flood");
    let before = r.s.provider.counts().await.jwks;
    for i in 0..30 {
        let token = sign(
            &stranger,
            &format!("kid-{i}"),
            Algorithm::RS256,
            &r.claims(),
        );
        assert_eq!(r.call(&token).await.status(), 401);
    }
    let fetched = r.s.provider.counts().await.jwks - before;
    assert!(
        fetched <= 1,
        "30 unknown kids caused {fetched} JWKS downloads"
    );
    // Good tokens keep working throughout.
    assert_eq!(r.call(&good).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_nonce_and_azp_rules() {
    use linkgate::oidc::jwks::Jwks;
    use linkgate::oidc::verify::{verify, Expect, VerifyError};
    let r = rig().await;
    let http = linkgate::oidc::http_client(Duration::from_secs(5)).unwrap();
    let jwks = Jwks::new(url::Url::parse(&r.s.provider.jwks_uri()).unwrap(), http);
    let issuer = r.s.provider.issuer().to_string();
    let audiences = [CLIENT_ID.to_string()];
    let expect = |nonce: Option<&'static str>| Expect {
        issuer: &issuer,
        audiences: &audiences,
        algs: &[Algorithm::RS256],
        nonce,
        authorized_party: Some(CLIENT_ID),
        leeway: 60,
    };
    let with_nonce = sign(
        &r.key,
        &r.kid,
        Algorithm::RS256,
        &r.with(json!({"nonce": "n-1"})),
    );
    assert!(verify(&jwks, &with_nonce, &expect(Some("n-1")))
        .await
        .is_ok());
    assert!(matches!(
        verify(&jwks, &with_nonce, &expect(Some("n-2"))).await,
        Err(VerifyError::Nonce)
    ));
    let without = sign(&r.key, &r.kid, Algorithm::RS256, &r.claims());
    assert!(matches!(
        verify(&jwks, &without, &expect(Some("n-1"))).await,
        Err(VerifyError::Nonce)
    ));
    // Several audiences: azp must name us.
    let shared = sign(
        &r.key,
        &r.kid,
        Algorithm::RS256,
        &r.with(json!({"aud": [CLIENT_ID, "other"]})),
    );
    assert!(matches!(
        verify(&jwks, &shared, &expect(None)).await,
        Err(VerifyError::AuthorizedParty)
    ));
    let shared_ok = sign(
        &r.key,
        &r.kid,
        Algorithm::RS256,
        &r.with(json!({"aud": [CLIENT_ID, "other"], "azp": CLIENT_ID})),
    );
    assert!(verify(&jwks, &shared_ok, &expect(None)).await.is_ok());
    let other_azp = sign(
        &r.key,
        &r.kid,
        Algorithm::RS256,
        &r.with(json!({"azp": "other"})),
    );
    assert!(matches!(
        verify(&jwks, &other_azp, &expect(None)).await,
        Err(VerifyError::AuthorizedParty)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_extra_issuers_are_accepted_for_their_audience() {
    let partner_key = oidc::generate_key("partner-key");
    let partner = oidc::OidcProvider::start(
        oidc::ProviderOptions::new("partner").jwks(json!({ "keys": [partner_key.jwk.clone()] })),
    );
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .toml(&format!(
            "[authz]\nbearer_tokens = true\nextra_jwt_issuers = [\"{}=partner-api\"]",
            partner.issuer()
        ))
        .start()
        .await;
    let claims = |aud: &str| {
        json!({
            "iss": partner.issuer(),
            "aud": aud,
            "sub": "partner-service",
            "iat": now(),
            "exp": now() + 300,
        })
    };
    let call = |token: String| {
        support::client()
            .get(s.gate.url("/api"))
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let ok = sign(
        &partner_key,
        "partner-key",
        Algorithm::RS256,
        &claims("partner-api"),
    );
    assert_eq!(call(ok).await.unwrap().status(), 200);
    assert_eq!(
        s.upstream.last().header("x-forwarded-user"),
        Some("partner-service")
    );
    let wrong_aud = sign(
        &partner_key,
        "partner-key",
        Algorithm::RS256,
        &claims(CLIENT_ID),
    );
    assert_eq!(call(wrong_aud).await.unwrap().status(), 401);
}

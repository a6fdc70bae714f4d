use sha2::{Digest, Sha256};

use super::bearer::verify_bearer;
use super::*;
use crate::app::VerifiedToken;
use crate::fixtures::Fixture;

fn app(cache_ttl: &str) -> App {
    Fixture::new()
        .sso()
        .set("session", "cache_ttl", &format!("\"{cache_ttl}\""))
        .set("authz", "bearer_tokens", "true")
        .app()
}

fn remember(app: &App, token: &str, expires_at: i64) {
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let entry = VerifiedToken {
        identity: Identity::sample("http://127.0.0.1:1", "cached"),
        expires_at,
    };
    app.verified_tokens
        .as_ref()
        .unwrap()
        .insert(key, Arc::new(entry));
}

#[tokio::test]
async fn a_verified_token_is_served_from_the_cache_until_its_exp() {
    let app = app("30s");
    remember(&app, "token-a", now() + 60);
    let (identity, exp) = verify_bearer(&app, "token-a").await.unwrap();
    assert_eq!(identity.subject, "cached");
    assert!(exp > now());
    assert_eq!(app.metrics.token_cache_hit.get(), 1);
    // Past its exp the entry is not used: the token is verified in full (and here fails:
    // it is no JWT, and the provider is unreachable).
    remember(&app, "token-b", now() - 1);
    assert!(verify_bearer(&app, "token-b").await.is_err());
    assert_eq!(app.metrics.token_cache_hit.get(), 1);
    assert_eq!(app.metrics.token_cache_miss.get(), 1);
    let key: [u8; 32] = Sha256::digest(b"token-b").into();
    assert!(app.verified_tokens.as_ref().unwrap().get(&key).is_none());
    // Another token, even one differing in a byte, is never a hit.
    assert!(verify_bearer(&app, "token-A").await.is_err());
}

fn jwt_app() -> App {
    Fixture::new().jwt_account().app()
}

fn request(cookie: Option<&str>) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    if let Some(cookie) = cookie {
        req.insert_header("cookie", cookie).unwrap();
    }
    req
}

#[tokio::test]
async fn a_session_following_a_jwt_checks_it_by_hash_and_verifies_only_a_changed_one() {
    let app = jwt_app();
    let account = Identity::sample("http://127.0.0.1:1", "acct");
    let follows = |valid_until| FollowsJwt {
        sha256: Sha256::digest(b"jwt-one").into(),
        valid_until,
        account_key: account.key(),
    };
    let passport = Passport::sample(None, Some(&account)).following(follows(now() + 60));
    // The same JWT, still valid: kept for a hash, nothing verified (the JWKS is
    // unreachable, so any verification would fail as unavailable).
    let same = request(Some("pjwt=jwt-one"));
    assert!(matches!(
        Platform::of(&app, &same).keeps(&app, &passport).await,
        Ok(true)
    ));
    // No JWT, or two different ones: the session's account is not used.
    for req in [request(None), request(Some("pjwt=jwt-one; pjwt=jwt-two"))] {
        assert!(matches!(
            Platform::of(&app, &req).keeps(&app, &passport).await,
            Ok(false)
        ));
    }
    // Another JWT, or the same one past its validity: verified again.
    let expired = Passport::sample(None, Some(&account)).following(follows(now() - 1));
    for (req, passport) in [
        (request(Some("pjwt=jwt-two")), &passport),
        (request(Some("pjwt=jwt-one")), &expired),
    ] {
        let kept = Platform::of(&app, &req).keeps(&app, passport).await;
        assert!(
            matches!(kept, Ok(false) | Err(Found::Unavailable(_))),
            "{kept:?}"
        );
    }
    // A passport that follows nothing is kept whatever the request carries.
    let plain = Passport::sample(None, Some(&account));
    assert!(matches!(
        Platform::of(&app, &request(None)).keeps(&app, &plain).await,
        Ok(true)
    ));
}

#[tokio::test]
async fn no_token_cache_without_a_session_cache() {
    assert!(app("0s").verified_tokens.is_none());
}

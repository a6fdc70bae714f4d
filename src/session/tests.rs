use std::sync::atomic::Ordering;

use super::*;
use crate::fixtures::Fixture;
use crate::metrics::Metrics;
use crate::passport::Field;
use std::sync::atomic::AtomicUsize;

fn sessions(cache_ttl: &str) -> (Sessions, Arc<Metrics>) {
    let app = Fixture::new()
        .memory_sessions()
        .set("session", "cache_ttl", &format!("\"{cache_ttl}\""))
        .set("session", "refresh_before", "\"60s\"")
        .app();
    (app.sessions.unwrap(), app.metrics)
}

fn identity(sub: &str) -> Identity {
    Identity::sample("https://sso.example", sub)
}

fn passport(record: SessionRecord) -> Passport {
    Passport::sample(record.sso.as_ref(), record.account.as_ref())
}

/// Reads session `id` through the cache, counting the passports built (store reads).
async fn read_counted(sessions: &Sessions, id: &OpaqueId, built: &AtomicUsize) -> Arc<Passport> {
    let resident = sessions.resident(id, |r| {
        built.fetch_add(1, Ordering::SeqCst);
        passport(r)
    });
    resident.await.unwrap().unwrap()
}

fn tokens(expires_in: i64) -> Tokens {
    Tokens {
        access_token: "at".into(),
        refresh_token: Some("rt".into()),
        id_token: Some("it".into()),
        expires_at: Some(now() + expires_in),
        issued_at: None,
    }
}

#[tokio::test]
async fn a_miss_reads_the_store_once_then_every_request_hits() {
    let (sessions, metrics) = sessions("30s");
    let (id, _) = sessions
        .create(Some(identity("u1")), None, Some(tokens(3600)))
        .await
        .unwrap();
    let built = AtomicUsize::new(0);
    for _ in 0..5 {
        let resident = read_counted(&sessions, &id, &built).await;
        let user = resident.headers.get(Field::User).unwrap();
        assert_eq!(user, "u1");
        assert!(!resident.refresh_due(now()));
    }
    assert_eq!(
        built.load(Ordering::SeqCst),
        1,
        "one passport per cache entry"
    );
    assert_eq!(metrics.session_cache_miss.get(), 1);
    assert_eq!(metrics.session_cache_hit.get(), 4);
}

#[tokio::test]
async fn a_session_keeps_the_platform_jwt_its_account_came_from() {
    let (sessions, _) = sessions("30s");
    let binding = JwtBinding {
        sha256: "ab".repeat(32),
        valid_until: now() + 300,
    };
    let id = sessions.jwt_session_id(&[1; 32]);
    let (_, record) = sessions
        .create_as(
            id,
            None,
            Some(identity("acct")),
            None,
            Some(binding.clone()),
        )
        .await
        .unwrap();
    assert_eq!(record.account_jwt.as_ref(), Some(&binding));
    let loaded = sessions.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.account_jwt, Some(binding.clone()));
    // No account, nothing to follow.
    let (_, record) = sessions
        .create_as(
            OpaqueId::random(),
            Some(identity("s")),
            None,
            None,
            Some(binding),
        )
        .await
        .unwrap();
    assert_eq!(record.account_jwt, None);
    // Records written before the field existed read as following nothing.
    let old: SessionRecord =
        serde_json::from_str(r#"{"account":null,"created_at":1,"expires_at":2}"#).unwrap();
    assert_eq!(old.account_jwt, None);
}

#[tokio::test]
async fn a_jwt_session_id_is_one_per_jwt_and_secret() {
    let (a, _) = sessions("30s");
    let (b, _) = sessions("30s");
    assert_eq!(a.jwt_session_id(&[1; 32]), b.jwt_session_id(&[1; 32]));
    assert_ne!(a.jwt_session_id(&[1; 32]), a.jwt_session_id(&[2; 32]));
    let other = Sessions::new(&[9; 32], a.store.clone(), a.config.clone());
    assert_ne!(a.jwt_session_id(&[1; 32]), other.jwt_session_id(&[1; 32]));
}

#[tokio::test]
async fn a_link_change_forgets_every_remembered_jwt() {
    let (sessions, _) = sessions("30s");
    let cache = sessions.account_jwts().unwrap();
    let pass = AccountPass {
        account: identity("acct"),
        sso: None,
        valid_until: now() + 60,
        passport: Arc::new(Passport::sample(None, Some(&identity("acct")))),
    };
    cache.insert([3; 32], Arc::new(pass));
    let generation = sessions.links_generation();
    sessions.links_changed().await;
    assert!(cache.get(&[3; 32]).is_none());
    assert_ne!(sessions.links_generation(), generation);
    let (no_cache, _) = self::sessions("0s");
    assert!(no_cache.account_jwts().is_none());
}

#[tokio::test]
async fn without_a_cache_every_request_reads_the_store() {
    let (sessions, metrics) = sessions("0s");
    let (id, _) = sessions
        .create(Some(identity("u1")), None, None)
        .await
        .unwrap();
    let built = AtomicUsize::new(0);
    for _ in 0..3 {
        read_counted(&sessions, &id, &built).await;
    }
    assert_eq!(built.load(Ordering::SeqCst), 3);
    assert_eq!(metrics.session_cache_hit.get(), 0);
}

#[tokio::test]
async fn an_invalidation_during_a_read_keeps_that_read_out_of_the_cache() {
    let (sessions, _) = sessions("30s");
    let (id, _) = sessions
        .create(Some(identity("u1")), None, None)
        .await
        .unwrap();
    // A sign-out (here or on another instance) lands between the store read and the
    // insert: what was read may be the ended session, so it must not be cached.
    let resident = sessions
        .resident(&id, |r| {
            sessions.generation.fetch_add(1, Ordering::SeqCst);
            passport(r)
        })
        .await
        .unwrap();
    assert!(resident.is_some(), "this request still gets what it read");
    let cache = sessions.cache.as_ref().unwrap();
    assert!(cache.get(&id).is_none(), "nothing cached");
    // The next read, undisturbed, is cached.
    sessions.resident(&id, passport).await.unwrap().unwrap();
    assert!(cache.get(&id).is_some());
}

#[tokio::test]
async fn a_destroyed_session_is_gone_from_the_cache_at_once() {
    let (sessions, _) = sessions("10m");
    let (id, record) = sessions
        .create(Some(identity("u1")), None, None)
        .await
        .unwrap();
    sessions.resident(&id, passport).await.unwrap().unwrap();
    sessions.destroy(&id, Some(&record)).await.unwrap();
    assert!(sessions.resident(&id, passport).await.unwrap().is_none());
}

#[tokio::test]
async fn a_cached_session_is_due_for_refresh_refresh_before_its_token_expires() {
    let (sessions, _) = sessions("30s");
    let (fresh, _) = sessions
        .create(Some(identity("u1")), None, Some(tokens(3600)))
        .await
        .unwrap();
    let (due, _) = sessions
        .create(Some(identity("u2")), None, Some(tokens(30)))
        .await
        .unwrap();
    let mut no_refresh_token = tokens(30);
    no_refresh_token.refresh_token = None;
    let (never, _) = sessions
        .create(Some(identity("u3")), None, Some(no_refresh_token))
        .await
        .unwrap();
    let at = |id| {
        let sessions = sessions.clone();
        async move { sessions.resident(&id, passport).await.unwrap().unwrap() }
    };
    let fresh = at(fresh).await;
    assert!(!fresh.refresh_due(now()));
    assert!(fresh.refresh_due(now() + 3600 - 60));
    assert!(
        at(due).await.refresh_due(now()),
        "30 s left, refresh_before = 60 s"
    );
    assert_eq!(
        at(never).await.refresh_at,
        i64::MAX,
        "nothing to refresh with"
    );
}

#[test]
fn a_refresh_waits_for_half_the_tokens_lifetime_and_the_floor() {
    let iat = 1_000_000;
    // 5-minute tokens under refresh_before = 5m: not due at once, but after 2.5 minutes.
    assert_eq!(refresh_at(Some(iat), iat + 300, 300), Some(iat + 150));
    // 1-hour tokens: refresh_before ahead of the expiry.
    assert_eq!(refresh_at(Some(iat), iat + 3600, 60), Some(iat + 3540));
    // 24-hour tokens (IMS) under the default.
    assert_eq!(refresh_at(Some(iat), iat + 86_400, 300), Some(iat + 86_100));
    // Short tokens: the floor, then the expiry bound it.
    assert_eq!(
        refresh_at(Some(iat), iat + 8, 6),
        Some(iat + MIN_REFRESH_INTERVAL)
    );
    assert_eq!(refresh_at(Some(iat), iat + 3, 1), Some(iat + 3));
    // Tokens stored without their issue time: refresh_before alone, as before.
    assert_eq!(refresh_at(None, iat + 300, 300), Some(iat));
    // The backoff after a failure: a tenth of the lifetime, 5 s to a minute.
    assert_eq!(refresh_backoff(Some(iat), Some(iat + 300)).as_secs(), 30);
    assert_eq!(refresh_backoff(Some(iat), Some(iat + 8)).as_secs(), 5);
    assert_eq!(refresh_backoff(Some(iat), Some(iat + 86_400)).as_secs(), 60);
    assert_eq!(refresh_backoff(None, None).as_secs(), 30);
}

#[tokio::test]
async fn one_request_claims_a_refresh_and_a_failure_backs_off() {
    let (sessions, _) = sessions("30s");
    let id = OpaqueId::random();
    assert!(sessions.claim_refresh(&id), "the first request refreshes");
    assert!(
        !sessions.claim_refresh(&id),
        "the others are served meanwhile"
    );
    sessions.refresh_done(&id, None);
    assert!(
        sessions.claim_refresh(&id),
        "done: the next due request may"
    );
    sessions.refresh_done(&id, Some(now() + 60));
    assert!(!sessions.claim_refresh(&id), "backing off");
    sessions.refresh_done(&id, Some(now() - 1));
    assert!(sessions.claim_refresh(&id), "the backoff is over");
    // A session with tokens that carry their issue time follows the half-life rule.
    let mut t = tokens(300);
    t.issued_at = Some(now());
    let (id, record) = sessions
        .create(Some(identity("u9")), None, Some(t))
        .await
        .unwrap();
    assert!(
        !sessions.needs_refresh(&record),
        "refresh_before = 60 s, 300 s tokens"
    );
    let resident = sessions.resident(&id, passport).await.unwrap().unwrap();
    assert_eq!(resident.refresh_at, record.created_at + 240);
}

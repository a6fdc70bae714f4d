//! The Redis backend keeps the same contract as the memory backend, against a real
//! redis-server: expiry, take-once, locks, sets, and the atomic pair used by links.

mod support;

use std::sync::Arc;
use std::time::Duration;

use linkgate::config::Config;
use linkgate::store::redis::RedisBackend;
use linkgate::store::{Backend, Pair, PairOutcome};

fn backend(redis: &support::Redis) -> Arc<RedisBackend> {
    let config = Config::parse(
        &format!(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
             [session]\nstore = \"redis\"\n[redis]\nurl = \"{}\"\n",
            redis.url()
        ),
        "test.toml",
        &|_| None,
    )
    .expect("config");
    Arc::new(RedisBackend::new(config.redis.as_ref().unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_backend_keeps_the_contract() {
    let redis = support::Redis::start();
    linkgate::store::contract::exercise(backend(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_concurrent_pair_creations_exactly_one_wins() {
    let redis = support::Redis::start();
    let b = backend(&redis);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let account = format!("account-{i}");
            let pair = Pair {
                a: &account,
                va: b"x",
                b: "shared-sso",
                vb: account.as_bytes(),
                index: "index",
                member: &account,
            };
            b.create_pair(&pair).await.unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == PairOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(b.set_members("index").await.unwrap().len(), 1);
    let winner = String::from_utf8(b.get("shared-sso").await.unwrap().unwrap()).unwrap();
    assert!(b.get(&winner).await.unwrap().is_some());
    assert_eq!(
        redis.keys("account-*").len(),
        1,
        "no loser left a half-written key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_an_error_not_a_hang_and_recovery_is_automatic() {
    let mut redis = support::Redis::start();
    let b = backend(&redis);
    b.put("k", b"v", Duration::from_secs(60)).await.unwrap();
    redis.stop();
    let started = std::time::Instant::now();
    assert!(b.get("k").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast: {:?}",
        started.elapsed()
    );
    redis.restart();
    support::sso::eventually("the backend to reconnect", Duration::from_secs(10), || {
        let b = b.clone();
        async move { b.ping().await.is_ok() }
    })
    .await;
}

//! The hot path: a cached session costs no store round trip, a miss exactly one, and a
//! change on one instance (sign-out, refresh, disconnect) reaches every other instance's
//! cache at once through Redis pub/sub — not when the cache entry would have expired.

mod support;

use std::time::Duration;

use support::sso::{eventually, user, Flavor, Scenario, ScenarioBuilder, StoreKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_session_costs_no_redis_command_and_a_miss_costs_one_get() {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .start_with(|_| "cache_ttl = \"10m\"\n".to_string())
        .await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "lee").await.status(), 200);
    let before = redis.cli(&["INFO", "commandstats"]);
    let gets = redis.calls("get");
    for i in 0..25 {
        let resp = http
            .get(s.gate.url(&format!("/cached/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let after = redis.cli(&["INFO", "commandstats"]);
    assert_eq!(redis.calls("get"), gets, "no GET for a cached session");
    let total = |info: &str| -> u64 {
        info.lines()
            .filter(|l| {
                l.starts_with("cmdstat_")
                    && !l.starts_with("cmdstat_info")
                    && !l.starts_with("cmdstat_publish")
            })
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    assert_eq!(
        total(&after),
        total(&before),
        "no Redis command at all:\n{before}\n{after}"
    );
    s.gate
        .metrics_containing("linkgate_session_cache_total{result=\"hit\"}")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_every_request_costs_exactly_one_get() {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .start_with(|_| "cache_ttl = \"0s\"\n".to_string())
        .await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "mia").await.status(), 200);
    let gets = redis.calls("get");
    for i in 0..10 {
        assert_eq!(
            http.get(s.gate.url(&format!("/uncached/{i}")))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(redis.calls("get"), gets + 10);
}

async fn sign_out_on_one_instance_reaches_the_cache_of_another_at_once(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start_with(|_| "cache_ttl = \"10m\"\n".to_string())
        .await;
    let b = s.another_gate();
    let http = user();
    let outcome = s.begin_sign_in(&http, "/x", "noor").await;
    let resp = s.finish_sign_in(&http, &outcome).await;
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("_linkgate="))
        .expect("a session cookie");
    // A client that keeps sending this cookie, whatever it is told: a copied cookie must
    // stop working everywhere once the session ends.
    let plain = support::client_without_cookies();
    let on_b = || {
        plain
            .get(b.url("/on-b"))
            .header("cookie", cookie.as_str())
            .header("accept", "application/json")
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            on_b().await.unwrap().status(),
            200,
            "instance B serves (and caches) the session"
        );
    }
    let page: serde_json::Value = plain
        .get(s.gate.url("/oauth2/sign_out"))
        .header("cookie", cookie.as_str())
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = plain
        .post(s.gate.url("/oauth2/sign_out"))
        .header("cookie", cookie.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(format!("csrf={}", page["csrf"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let started = std::time::Instant::now();
    eventually(
        "instance B to drop the signed-out session",
        Duration::from_secs(5),
        || async { on_b().await.unwrap().status() == 401 },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "far sooner than the 10 min cache TTL"
    );
}

const HIT: &str = "linkgate_session_cache_total{result=\"hit\"}";
const STALE: &str = "linkgate_session_cache_total{result=\"stale\"}";

/// Requests until one was answered from the cache. (A cache fill is skipped while an
/// invalidation is in flight, as the sign-in's own may be: on a loaded machine the first
/// request after it then missed the cache, and an outage right after gave 503.) Bounded: a
/// session that never reaches the cache fails here, not later.
async fn warm_until_cached(s: &Scenario, http: &reqwest::Client) {
    for _ in 0..50 {
        assert_eq!(
            http.get(s.gate.url("/warm")).send().await.unwrap().status(),
            200
        );
        if s.gate.metric(HIT).await > 0.0 {
            return;
        }
    }
    panic!("the session never came from the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_session_rides_out_a_redis_outage_while_new_sign_ins_wait() {
    let mut s = ScenarioBuilder::new(StoreKind::Redis)
        .start_with(|_| "cache_ttl = \"10m\"\n".to_string())
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "oli").await.status(), 200);
    warm_until_cached(&s, &http).await;
    s.redis.as_mut().unwrap().stop();
    let resp = http.get(s.gate.url("/during-outage")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the cached session needs no store");
    // A newcomer's sign-in starts without the store (its flow is a cookie), but its session
    // cannot be stored: a clear 503 at the callback.
    let newcomer = user();
    let outcome = s.begin_sign_in(&newcomer, "/y", "pat").await;
    let resp = s.finish_sign_in(&newcomer, &outcome).await;
    assert_eq!(
        resp.status(),
        503,
        "a new sign-in cannot be stored: a clear 503"
    );
    s.redis.as_mut().unwrap().restart();
}

// A Redis failover takes seconds; a cache entry that runs out meanwhile must not log its
// person out. Past `cache_stale_if_error` the store's 503 stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_cache_entry_runs_out_during_an_outage_is_served_stale_for_the_grace() {
    let mut s = ScenarioBuilder::new(StoreKind::Redis)
        .start_with(|_| "cache_ttl = \"1s\"\ncache_stale_if_error = \"4s\"\n".to_string())
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "oli").await.status(), 200);
    warm_until_cached(&s, &http).await;
    // The entry is fresh now (a hit, or just re-read). The store goes away, the entry's TTL
    // runs out.
    s.redis.as_mut().unwrap().stop();
    let stopped = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp = http.get(s.gate.url("/stale")).send().await.unwrap();
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "the request came too late to test the grace"
    );
    assert_eq!(resp.status(), 200, "served from the expired entry");
    assert!(s.gate.metric(STALE).await >= 1.0, "and counted as stale");
    // Past TTL + grace (1 s + 4 s, from the entry's last fill before the stop).
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(stopped.elapsed())).await;
    let resp = http.get(s.gate.url("/too-late")).send().await.unwrap();
    assert_eq!(
        resp.status(),
        503,
        "past the grace the store's answer stands"
    );
    // Back (an empty Redis: this test's server keeps nothing on disk): the store answers
    // again without a restart of linkgate, and what it says stands: the session is gone,
    // so this client (not a navigation) gets 401, not the old entry.
    s.redis.as_mut().unwrap().restart();
    eventually(
        "the store answering again",
        Duration::from_secs(10),
        || async { http.get(s.gate.url("/back")).send().await.unwrap().status() != 503 },
    )
    .await;
    let resp = http.get(s.gate.url("/back")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a session the store lost is not served");
}

// Sign-out against both providers (the standard one and the IMS look-alike).
flavored_tests!(sign_out_on_one_instance_reaches_the_cache_of_another_at_once,);

//! Token refresh against real providers (issue 12): short access tokens refreshed at half
//! their lifetime, not on every request; one refresher across two instances with rotating
//! refresh tokens; a provider that fails at refresh time keeps the session and is not asked
//! again on every request; and the provider's trouble during a sign-in (token endpoint slow
//! or down, rotated keys, clock skew, discovery down at start) told as it is; and refreshed
//! tokens that the store fails to save (Redis frozen or refusing writes at that moment) kept,
//! served and saved later.
//!
//! The provider tests run twice (`flavored_tests!`): `standard::` against oidc-provider,
//! `ims::` against the Adobe IMS look-alike (which always rotates its refresh tokens). Not
//! doubled: the `check` test (configuration only, no provider) and the refused-writes test
//! (see its comment).
//!
//! Token ageing is the point of several tests here: they wait for a refresh to come due
//! (8-second tokens are due after 5 s), and no longer.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::oidc::{ClientConfig, OidcProvider, ProviderOptions};
use support::sso::{
    eventually, navigate, problem_page, user, Flavor, Scenario, ScenarioBuilder, StoreKind,
};
use support::{client, GateBuilder, Upstream};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn refreshes(gate: &support::Gate, result: &str) -> f64 {
    gate.metric(&format!(
        "linkgate_token_refreshes_total{{result=\"{result}\"}}"
    ))
    .await
}

async fn unsaved(gate: &support::Gate, event: &str) -> f64 {
    gate.metric(&format!(
        "linkgate_unsaved_tokens_total{{event=\"{event}\"}}"
    ))
    .await
}

/// Requests from `workers` clients sharing `http`'s cookies until `until`, spread over
/// `gates`; returns how many were made. Every one must pass.
async fn hammer(
    http: &reqwest::Client,
    gates: &[&support::Gate],
    workers: usize,
    until: Instant,
) -> usize {
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let http = http.clone();
        let url = gates[w % gates.len()].url(&format!("/work/{w}"));
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let resp = http
                    .get(&url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200, "every request of a live session passes");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

/// `n` requests at once, spread over `gates`; every one must pass.
async fn burst(http: &reqwest::Client, gates: &[&support::Gate], n: usize) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let http = http.clone();
        let url = gates[i % gates.len()].url(&format!("/burst/{i}"));
        tasks.push(tokio::spawn(async move {
            http.get(url)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            200,
            "every request during a refresh passes"
        );
    }
}

async fn eight_second_tokens(store: StoreKind, rotate: bool, flavor: Flavor) -> Scenario {
    // The defaults otherwise: refresh_before = "5m", longer than the tokens live. (The IMS
    // look-alike rotates its refresh tokens whatever `rotate` says, as IMS does.)
    ScenarioBuilder::new(store)
        .flavor(flavor)
        .provider(move |o| {
            o.access_token_ttl(Duration::from_secs(8))
                .rotate_refresh_tokens(rotate)
        })
        .start()
        .await
}

// === 1. the schedule ===

async fn short_tokens_are_refreshed_once_per_half_lifetime_and_due_requests_read_no_store(
    flavor: Flavor,
) {
    let s = eight_second_tokens(StoreKind::Redis, false, flavor).await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "kim").await.status(), 200);
    let signed_in = Instant::now();
    s.provider.reset_counts().await;
    let gets = redis.calls("get");
    // Under refresh_before = "5m" every 8-second token used to be due at once: a refresh per
    // request. Now the first is due after 5 s, the next 5 s after that one.
    let made = hammer(
        &http,
        &[&s.gate],
        4,
        signed_in + Duration::from_millis(6500),
    )
    .await;
    let counts = s.provider.counts().await;
    assert_eq!(
        counts.refresh_token, 1,
        "{made} requests, one refresh: {counts:?}"
    );
    assert_eq!(counts.token_error, 0, "{counts:?}");
    assert_eq!(refreshes(&s.gate, "ok").await, 1.0);
    // Store reads (GET, in scripts too): the refresher's read under the lock and the lock's
    // release; its new passport replaces the cached one, so nobody else reads.
    let read = redis.calls("get") - gets;
    assert!(read <= 2, "{read} store reads for {made} requests");
    eprintln!("{made} requests, {read} store reads, {counts:?}");
}

async fn a_provider_down_at_refresh_time_keeps_the_session_and_backs_off(flavor: Flavor) {
    let s = eight_second_tokens(StoreKind::Memory, false, flavor).await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "lee").await.status(), 200);
    let signed_in = Instant::now();
    s.provider.misbehave(&json!({"token_status": 503})).await;
    s.provider.reset_counts().await;
    tokio::time::sleep(Duration::from_millis(5300)).await;
    // Due, and the provider fails: one attempt, then a 5-second backoff (a tenth of the
    // lifetime, at least the floor) during which every request passes on the session.
    let made = hammer(
        &http,
        &[&s.gate],
        4,
        signed_in + Duration::from_millis(9000),
    )
    .await;
    let counts = s.provider.counts().await;
    assert_eq!(
        counts.refresh_refused_on_purpose, 1,
        "{made} requests, one attempt: {counts:?}"
    );
    assert_eq!(refreshes(&s.gate, "unavailable").await, 1.0);
    // The provider is back: after the backoff, the next request refreshes.
    s.provider.misbehave(&json!({})).await;
    let gate = &s.gate;
    eventually(
        "a refresh after the backoff",
        Duration::from_secs(15),
        || {
            let http = http.clone();
            async move {
                let resp = http
                    .get(gate.url("/y"))
                    .header("accept", "application/json")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                refreshes(gate, "ok").await == 1.0
            }
        },
    )
    .await;
    assert_eq!(s.provider.counts().await.refresh_token, 1);
    assert_eq!(refreshes(gate, "refused").await, 0.0);
}

// === 2. rotating refresh tokens, two instances ===

async fn two_instances_under_concurrent_requests_make_one_refresh_with_rotating_tokens(
    flavor: Flavor,
) {
    let s = eight_second_tokens(StoreKind::Redis, true, flavor).await;
    let b = s.another_gate();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "mia").await.status(), 200);
    let signed_in = Instant::now();
    // Both instances know the session (cached).
    burst(&http, &[&s.gate, &b], 2).await;
    s.provider.reset_counts().await;
    for round in 1..=2u64 {
        let due = signed_in + Duration::from_millis(5300 * round);
        tokio::time::sleep(due.saturating_duration_since(Instant::now())).await;
        burst(&http, &[&s.gate, &b], 24).await;
        let counts = s.provider.counts().await;
        // One refresh per round across both instances; the second spends the token the
        // first one's winner got (a spent one would be invalid_grant and revoke the grant).
        assert_eq!(counts.refresh_token, round, "round {round}: {counts:?}");
        assert_eq!(counts.token_error, 0, "round {round}: {counts:?}");
        let ok = refreshes(&s.gate, "ok").await + refreshes(&b, "ok").await;
        assert_eq!(ok, round as f64);
    }
    // The session lives on, on both.
    burst(&http, &[&s.gate, &b], 4).await;
    assert!(s.redis.as_ref().unwrap().keys("linkgate:session:*").len() == 1);
}

async fn a_refusal_caused_by_a_concurrent_rotation_does_not_end_the_session(flavor: Flavor) {
    let s = eight_second_tokens(StoreKind::Redis, true, flavor).await;
    let redis = s.redis.as_ref().unwrap();
    let b = s.another_gate();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "noa").await.status(), 200);
    burst(&http, &[&s.gate, &b], 2).await;
    tokio::time::sleep(Duration::from_millis(5300)).await;
    // A refresher on A whose lock is lost while the provider is slow (as when a lock expires
    // mid-call): B then refreshes with the same token. The provider answers A first; B's
    // token is spent by then: invalid_grant. B must take A's tokens, not end the session.
    s.provider.reset_counts().await;
    let a_req = refresh_in_flight(&s, &http, &s.gate, Duration::from_millis(1500)).await;
    let locks = redis.keys("linkgate:lock:refresh:*");
    redis.cli(&["DEL", &locks[0]]);
    let b_resp = http
        .get(b.url("/b"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(b_resp.status(), 200, "B's request passes");
    assert_eq!(a_req.await.unwrap(), 200, "A's request passes");
    // The requests wait 0.5 s at most for their refresh; the refreshes finish without them.
    let (gate, b_gate) = (&s.gate, &b);
    eventually(
        "both refreshes to end",
        Duration::from_secs(15),
        || async move {
            refreshes(gate, "ok").await == 1.0 && refreshes(b_gate, "superseded").await == 1.0
        },
    )
    .await;
    let counts = s.provider.counts().await;
    assert_eq!(counts.refresh_token, 2, "{counts:?}");
    assert_eq!(counts.token_error, 1, "{counts:?}");
    assert_eq!(refreshes(&s.gate, "ok").await, 1.0);
    assert_eq!(refreshes(&b, "superseded").await, 1.0);
    assert_eq!(refreshes(&b, "refused").await, 0.0);
    assert_eq!(
        redis.keys("linkgate:session:*").len(),
        1,
        "the session is kept"
    );
    s.provider.misbehave(&json!({})).await;
    burst(&http, &[&s.gate, &b], 4).await;
}

// === the store failing at the moment refreshed tokens are saved ===

/// A signed-in session on 8-second rotating tokens whose access token is forwarded
/// (`pass_access_token`), so that the tests see which token a request was served with.
async fn rotating_forwarded(flavor: Flavor) -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .provider(|o| {
            o.access_token_ttl(Duration::from_secs(8))
                .rotate_refresh_tokens(true)
        })
        .toml("[headers]\npass_access_token = true\n")
        .start()
        .await
}

/// One request at `gate`; the access token the upstream got with it.
async fn served_token(s: &Scenario, http: &reqwest::Client, gate: &support::Gate) -> String {
    let resp = http
        .get(gate.url("/token"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the session lives");
    let seen = s.upstream.last();
    seen.header("x-forwarded-access-token")
        .expect("the access token is forwarded")
        .to_string()
}

/// Starts a refresh at `gate` while the provider answers `delay` late, and returns the
/// request (to be awaited) once the refresher holds the refresh lock and its token request
/// has reached the provider: the moment to break the store, between the provider spending
/// the old refresh token and the save. (Waiting for the lock alone let a test's next step
/// overtake the refresh on a loaded machine: a second gate's refresh reached the provider
/// first and won the rotation.)
async fn refresh_in_flight(
    s: &Scenario,
    http: &reqwest::Client,
    gate: &support::Gate,
    delay: Duration,
) -> tokio::task::JoinHandle<reqwest::StatusCode> {
    let redis = s.redis.as_ref().unwrap();
    s.provider
        .misbehave(&json!({"token_delay_ms": delay.as_millis() as u64}))
        .await;
    let received = s.provider.counts().await.token_received;
    let request = {
        let http = http.clone();
        let url = gate.url("/refreshing");
        tokio::spawn(async move {
            http.get(url)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    eventually("the refresh lock", Duration::from_secs(5), || async {
        !redis.keys("linkgate:lock:refresh:*").is_empty()
    })
    .await;
    eventually(
        "the refresh at the provider",
        Duration::from_secs(5),
        || async { s.provider.counts().await.token_received > received },
    )
    .await;
    request
}

async fn refreshed_tokens_survive_a_store_frozen_while_they_are_saved(flavor: Flavor) {
    // Redis stops answering (SIGSTOP) after the refresh token was sent to the provider and
    // before the new tokens are saved: with rotation the old token is spent by then.
    let s = rotating_forwarded(flavor).await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "pat").await.status(), 200);
    let first = served_token(&s, &http, &s.gate).await;
    // Token ageing: due after 5 s.
    tokio::time::sleep(Duration::from_millis(5300)).await;
    s.provider.reset_counts().await;
    let request = refresh_in_flight(&s, &http, &s.gate, Duration::from_millis(1500)).await;
    redis.pause();
    assert_eq!(
        request.await.unwrap(),
        200,
        "the refreshing request is served"
    );
    // The request waited at most 0.5 s for the refresh, which finishes in its own task: its
    // save fails, and the tokens are kept.
    eventually("the kept tokens", Duration::from_secs(10), || async {
        unsaved(&s.gate, "kept").await == 1.0
    })
    .await;
    let counts = s.provider.counts().await;
    assert_eq!(counts.refresh_token, 1, "{counts:?}");
    // The next requests are served with the new access token while Redis is frozen.
    let renewed = served_token(&s, &http, &s.gate).await;
    assert_ne!(renewed, first, "the refreshed access token is used at once");
    for _ in 0..3 {
        assert_eq!(served_token(&s, &http, &s.gate).await, renewed);
    }
    redis.resume();
    s.provider.misbehave(&json!({})).await;
    // Saved once Redis answers: an instance that never saw the session reads the new tokens.
    let fresh = s.another_gate();
    eventually(
        "the kept tokens in the store",
        Duration::from_secs(10),
        || {
            let (s, http, fresh, renewed) = (&s, &http, &fresh, &renewed);
            async move { served_token(s, http, fresh).await == *renewed }
        },
    )
    .await;
    // The next refresh spends the newest refresh token: accepted, the session goes on.
    eventually("the second refresh", Duration::from_secs(20), || async {
        served_token(&s, &http, &s.gate).await;
        s.provider.counts().await.refresh_token == 2
    })
    .await;
    let counts = s.provider.counts().await;
    assert_eq!(counts.token_error, 0, "no spent token was sent: {counts:?}");
    assert_eq!(refreshes(&s.gate, "refused").await, 0.0);
    assert_eq!(unsaved(&s.gate, "saved").await, 1.0);
    assert_eq!(redis.keys("linkgate:session:*").len(), 1);
    assert_ne!(served_token(&s, &http, &s.gate).await, renewed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_tokens_the_store_refuses_to_save_are_kept_served_and_saved_later() {
    // Redis answers but refuses every write (`min-replicas-to-write` with no replica: the
    // error a primary gives when its replicas are gone) from the moment the refresh token is
    // spent. Standard provider with rotation only: what is tested is the store, and the IMS
    // look-alike's rotation is the same oidc-provider rotation (its twin of the frozen-store
    // test above runs on IMS).
    let s = rotating_forwarded(Flavor::Standard).await;
    let redis = s.redis.as_ref().unwrap();
    let b = s.another_gate();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "quin").await.status(), 200);
    let first = served_token(&s, &http, &s.gate).await;
    assert_eq!(
        served_token(&s, &http, &b).await,
        first,
        "B caches the session"
    );
    tokio::time::sleep(Duration::from_millis(5300)).await;
    s.provider.reset_counts().await;
    let request = refresh_in_flight(&s, &http, &s.gate, Duration::from_millis(1500)).await;
    redis.cli(&["CONFIG", "SET", "min-replicas-to-write", "1"]);
    assert_eq!(request.await.unwrap(), 200);
    // The refresh finishes in its own task (the request waits 0.5 s at most): its save is
    // refused, and the tokens are kept.
    eventually("the kept tokens", Duration::from_secs(10), || async {
        unsaved(&s.gate, "kept").await == 1.0
    })
    .await;
    let renewed = served_token(&s, &http, &s.gate).await;
    assert_ne!(renewed, first, "served with the refreshed token");
    assert_eq!(served_token(&s, &http, &s.gate).await, renewed);
    // B cannot know them yet (the documented window): it goes on with the old, still valid,
    // access token, and cannot take the refresh lock to spend the old refresh token.
    assert_eq!(served_token(&s, &http, &b).await, first);
    assert_eq!(s.provider.counts().await.refresh_token, 1);
    // Writes are taken again: A's background save lands and B reads the new tokens.
    redis.cli(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    s.provider.misbehave(&json!({})).await;
    eventually(
        "B to serve the saved tokens",
        Duration::from_secs(10),
        || {
            let (s, http, b, renewed) = (&s, &http, &b, &renewed);
            async move { served_token(s, http, b).await == *renewed }
        },
    )
    .await;
    eventually("the second refresh", Duration::from_secs(20), || async {
        served_token(&s, &http, &b).await;
        served_token(&s, &http, &s.gate).await;
        s.provider.counts().await.refresh_token == 2
    })
    .await;
    let counts = s.provider.counts().await;
    assert_eq!(counts.token_error, 0, "no spent token was sent: {counts:?}");
    assert_eq!(
        refreshes(&s.gate, "refused").await + refreshes(&b, "refused").await,
        0.0
    );
    assert_eq!(unsaved(&s.gate, "saved").await, 1.0);
    assert_eq!(redis.keys("linkgate:session:*").len(), 1);
}

// === 4. provider trouble during a sign-in ===

async fn a_sign_in_while_the_token_endpoint_is_down_or_slow_gets_a_clear_503(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .sso_keys("http_timeout = \"1s\"")
        .start()
        .await;
    let redis = s.redis.as_ref().unwrap();
    for switches in [
        json!({"token_status": 503}),
        json!({"token_delay_ms": 2500}),
    ] {
        s.provider.misbehave(&switches).await;
        let http = user();
        let outcome = s.begin_sign_in(&http, "/x", "olga").await;
        let resp = s.finish_sign_in(&http, &outcome).await;
        let session_cookie = resp.headers().get_all("set-cookie").iter().any(|c| {
            c.to_str().unwrap().starts_with("_linkgate=")
                && !c.to_str().unwrap().contains("Max-Age=0")
        });
        assert!(!session_cookie, "no session for {switches}");
        // The page says the provider could not be reached, at a URL of its own.
        let resp = problem_page(&http, resp).await;
        assert_eq!(resp.status(), 503, "{switches}");
        let page = resp.text().await.unwrap();
        assert!(
            page.contains("Magento.com could not be reached")
                && page.contains("wait a moment, then sign in again"),
            "{switches}: {page}"
        );
        assert!(!page.contains("127.0.0.1"), "no provider detail: {page}");
        assert!(redis.keys("linkgate:session:*").is_empty(), "{switches}");
    }
    let counts = s.provider.counts().await;
    assert_eq!(counts.code_refused_on_purpose, 1, "{counts:?}");
    // The provider recovers: the same person signs in.
    s.provider.misbehave(&json!({})).await;
    assert_eq!(s.sign_in(&user(), "/x", "olga").await.status(), 200);
    assert_eq!(redis.keys("linkgate:session:*").len(), 1);
}

async fn rotated_signing_keys_are_fetched_once_then_unknown_kids_wait_out_the_cooldown(
    flavor: Flavor,
) {
    let mut s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .toml("[authz]\nbearer_tokens = true")
        .start()
        .await;
    let first = user();
    assert_eq!(s.sign_in(&first, "/x", "pia").await.status(), 200);
    // The provider rotates its key (same issuer, new kid).
    let opts = s.provider.options();
    s.provider.restart_with(opts);
    let second = user();
    assert_eq!(s.sign_in(&second, "/x", "quinn").await.status(), 200);
    assert_eq!(
        s.provider.counts().await.jwks,
        1,
        "the new key fetched once"
    );
    assert_eq!(s.sign_in(&user(), "/x", "rae").await.status(), 200);
    // Tokens naming keys nobody has: no further fetch within the cooldown.
    for kid in ["k1", "k2", "k3"] {
        let header = base64_url(&json!({"alg": "RS256", "kid": kid}).to_string());
        let claims = base64_url(
            &json!({"iss": s.provider.issuer(), "sub": "x", "exp": now() + 60}).to_string(),
        );
        let resp = client()
            .get(s.gate.url("/api"))
            .header("authorization", format!("Bearer {header}.{claims}.c2ln"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(
        s.provider.counts().await.jwks,
        1,
        "no refetch during the cooldown"
    );
    // The session made before the rotation goes on.
    assert_eq!(
        navigate(first.get(s.gate.url("/y")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

async fn a_provider_clock_a_little_ahead_is_tolerated_and_far_ahead_is_refused(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .flavor(flavor)
        .start()
        .await;
    // 30 s ahead: within the 60-second leeway.
    s.provider
        .misbehave(&json!({"id_token": {"iat": now() + 30, "nbf": now() + 30}}))
        .await;
    assert_eq!(s.sign_in(&user(), "/x", "sam").await.status(), 200);
    // Ten minutes ahead: the id_token is "not yet valid"; the person is told the sign-in
    // could not be verified, and no session is made.
    s.provider
        .misbehave(
            &json!({"id_token": {"iat": now() + 600, "nbf": now() + 600, "exp": now() + 4200}}),
        )
        .await;
    let http = user();
    let outcome = s.begin_sign_in(&http, "/x", "tess").await;
    let resp = problem_page(&http, s.finish_sign_in(&http, &outcome).await).await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let page = resp.text().await.unwrap();
    assert!(page.contains("could not be verified"), "{page}");
    let after = navigate(http.get(s.gate.url("/x"))).send().await.unwrap();
    assert_eq!(after.status(), 302, "still signed out");
}

async fn discovery_down_at_start_is_reported_and_recovers_without_a_restart(flavor: Flavor) {
    let upstream = Upstream::start().await;
    let port = support::free_port();
    let builder = GateBuilder::new();
    let callback = builder.url("/oauth2/callback");
    let gate = builder
        .upstream("app", &upstream)
        .toml(&format!(
            "[sso]\nissuer = \"http://127.0.0.1:{port}\"\nclient_id = \"linkgate\"\nclient_secret = \"linkgate-secret\"\n{preset}\
             [session]\ncookie_secret = \"{}\"\ncookie_secure = false\nstore = \"memory\"\n",
            support::COOKIE_SECRET,
            preset = match flavor {
                Flavor::Standard => "",
                Flavor::Ims => "preset = \"adobe-ims\"\n",
            },
        ))
        .start();
    // linkgate is up; /readyz says what is missing.
    let ready = client()
        .get(gate.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let why = ready.text().await.unwrap();
    assert!(why.contains("sso"), "{why}");
    // A sign-in gets a plain 503 page.
    let resp = navigate(client().get(gate.url("/oauth2/start?rd=%2F")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.text().await.unwrap().contains("try again"));
    // The provider comes up: linkgate notices by itself (after the failure cooldown).
    let provider = OidcProvider::start(
        ProviderOptions::new("late")
            .port(port)
            .ims(flavor == Flavor::Ims)
            .client(ClientConfig::confidential(
                "linkgate",
                "linkgate-secret",
                &callback,
            )),
    );
    let admin = gate.admin_url("/readyz");
    eventually("readiness", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move { client().get(admin).send().await.unwrap().status() == 200 }
    })
    .await;
    let http = user();
    let resp = navigate(http.get(gate.url("/oauth2/start?rd=%2Fhome")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let authorize = support::sso::location(&resp);
    let outcome = support::oidc::login(&http, &authorize, "uma").await;
    let resp = navigate(http.get(&outcome.callback_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "{:?}", resp.text().await);
    let home = navigate(http.get(gate.url("/home"))).send().await.unwrap();
    assert_eq!(home.status(), 200);
    assert_eq!(
        upstream.last().header("x-forwarded-user"),
        Some(flavor.sub("uma").as_str())
    );
    drop(provider);
}

flavored_tests!(
    short_tokens_are_refreshed_once_per_half_lifetime_and_due_requests_read_no_store,
    a_provider_down_at_refresh_time_keeps_the_session_and_backs_off,
    two_instances_under_concurrent_requests_make_one_refresh_with_rotating_tokens,
    a_refusal_caused_by_a_concurrent_rotation_does_not_end_the_session,
    a_sign_in_while_the_token_endpoint_is_down_or_slow_gets_a_clear_503,
    rotated_signing_keys_are_fetched_once_then_unknown_kids_wait_out_the_cooldown,
    a_provider_clock_a_little_ahead_is_tolerated_and_far_ahead_is_refused,
    discovery_down_at_start_is_reported_and_recovers_without_a_restart,
    refreshed_tokens_survive_a_store_frozen_while_they_are_saved,
);

// === check ===

#[test]
fn check_warns_when_refresh_before_is_out_of_proportion() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = |before: &str| {
        format!(
            "[[upstreams]]\nname = \"app\"\nurl = \"http://127.0.0.1:8080\"\n\
             [sso]\npreset = \"adobe-ims\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [session]\ncookie_secret = \"{}\"\nrefresh_before = \"{before}\"\n",
            support::COOKIE_SECRET
        )
    };
    std::fs::write(&path, text("30m")).unwrap();
    let (code, out, err) = support::linkgate_cli(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "a warning, not an error: {out}{err}");
    let said = format!("{out}{err}");
    assert!(
        said.contains("session.refresh_before") && said.contains("half their lifetime"),
        "{said}"
    );
    std::fs::write(&path, text("5m")).unwrap();
    let (code, out, err) = support::linkgate_cli(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0);
    assert!(
        !format!("{out}{err}").contains("refresh_before"),
        "{out}{err}"
    );
}

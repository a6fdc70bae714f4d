//! Issue 10, classes 2 and 4, attacked from outside against the real binary, real Redis and
//! real OpenID providers: anonymous sign-in starts cost the store nothing and hold no
//! memory; what a client sends (`rd`, `Host`) is bounded or refused; a link is made only for
//! the session that asked for it, whatever cookie an attacker plants; two cookies of one
//! name are refused; a callback works once.

mod support;

use std::sync::Arc;

use reqwest::cookie::Jar;
use reqwest::header::SET_COOKIE;
use support::oidc::{self, ClientConfig, OidcProvider, ProviderOptions};
use support::sso::{
    location, navigate, problem_page, user, Accounts, Scenario, ScenarioBuilder, StoreKind,
};
use support::{GateBuilder, COOKIE_SECRET};

// === helpers ===

/// A browser whose cookie jar the test can write into (to plant cookies).
fn browser() -> (reqwest::Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_provider(jar.clone())
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client");
    (client, jar)
}

/// Every `Set-Cookie` line of an answer.
fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The `name=value` of the flow cookie a `start` answer sets (the first line).
fn flow_cookie(resp: &reqwest::Response) -> String {
    let line = set_cookies(resp)
        .into_iter()
        .find(|c| c.starts_with("_linkgate_bind_"))
        .unwrap_or_else(|| panic!("no flow cookie in {:?}", set_cookies(resp)));
    line.split(';').next().unwrap().to_string()
}

fn dbsize(s: &Scenario) -> u64 {
    s.redis
        .as_ref()
        .unwrap()
        .cli(&["DBSIZE"])
        .trim()
        .parse()
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn start_url(s: &Scenario, rd: &str) -> String {
    format!(
        "{}?rd={}",
        s.gate.url("/oauth2/start"),
        percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC)
    )
}

fn links(s: &Scenario) -> Vec<String> {
    s.redis.as_ref().unwrap().keys("linkgate:link:*")
}

async fn linked_scenario() -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .accounts(Accounts::OAuth2)
        .start()
        .await
}

/// The attacker, signed in to his own cloud account, starts connecting it with Magento.com
/// and signs in there as himself; returns his flow cookie and the callback URL he will lure
/// the victim to (neither used by him).
async fn attackers_connect_flow(s: &Scenario) -> (String, String) {
    let (attacker, _) = browser();
    let resp = s
        .account_sign_in(&attacker, "/projects", "cloud-mallory")
        .await;
    assert_eq!(resp.status(), 302);
    let page = navigate(attacker.get(location(&resp)))
        .send()
        .await
        .unwrap();
    let start = location(&page);
    assert!(start.contains("intent=connect"), "{start}");
    let resp = navigate(attacker.get(&start)).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let cookie = flow_cookie(&resp);
    let outcome = oidc::login(&attacker, &location(&resp), "mallory@magento.test").await;
    (cookie, outcome.callback_url)
}

// === class 2: anonymous clients cost the store nothing ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_starts_write_no_redis_key_and_hold_no_memory() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    let http = support::client_without_cookies();
    let long_rd = format!("/{}", "a".repeat(2000));
    let huge_rd = format!("/{}", "b".repeat(4096));
    let huge_host = format!("{}.example", "h".repeat(8 * 1024));
    let send = |rd: &str, host: Option<&str>| {
        let mut req = navigate(http.get(start_url(&s, rd)));
        if let Some(host) = host {
            req = req.header("host", host);
        }
        req.send()
    };
    // Warm up (provider discovery, connection pools), then measure.
    for _ in 0..20 {
        assert_eq!(send("/", None).await.unwrap().status(), 302);
    }
    let before = rss_kib(s.gate.pid());
    let mut redirected = 0;
    for i in 0..200 {
        let resp = match i % 4 {
            0 => send("/orders?id=7", None).await,
            1 => send(&long_rd, None).await,
            2 => send(&huge_rd, None).await,
            _ => send("/", Some(&huge_host)).await,
        }
        .unwrap();
        match i % 4 {
            0 | 1 => {
                assert_eq!(resp.status(), 302);
                let cookie = set_cookies(&resp).join("\n");
                assert!(
                    cookie.len() < 4096,
                    "one flow cookie: {} bytes",
                    cookie.len()
                );
                redirected += 1;
            }
            _ => assert_eq!(resp.status(), 400, "request {i}"),
        }
    }
    let after = rss_kib(s.gate.pid());
    assert_eq!(redirected, 100);
    assert_eq!(dbsize(&s), 0, "no anonymous start writes a key");
    assert!(
        s.redis
            .as_ref()
            .unwrap()
            .cli(&["INFO", "keyspace"])
            .lines()
            .all(|l| !l.starts_with("db")),
        "the keyspace is empty"
    );
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 200 starts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_rd_is_refused_and_one_at_the_bound_still_signs_in() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    let too_long = format!("/{}", "x".repeat(2048));
    let resp = navigate(user().get(start_url(&s, &too_long)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(set_cookies(&resp).is_empty(), "no flow for it");
    let page = resp.text().await.unwrap();
    assert!(page.contains("longer than 2048 bytes"), "{page}");
    let json = user()
        .get(start_url(&s, &too_long))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 400);
    assert_eq!(
        json.json::<serde_json::Value>().await.unwrap()["error"],
        "bad_request"
    );
    // At the bound, the whole round trip works and lands on rd.
    let at_bound = format!("/{}", "y".repeat(2047));
    let http = user();
    let resp = navigate(http.get(start_url(&s, &at_bound)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let outcome = oidc::login(&http, &location(&resp), "olga").await;
    let back = s.finish_sign_in(&http, &outcome).await;
    assert_eq!(back.status(), 302);
    assert_eq!(back.headers()["location"], at_bound.as_str());
    // A protected page with a path too long for rd is sent to start with rd=/ instead.
    let page = navigate(user().get(s.gate.url(&too_long)))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 302);
    assert!(location(&page).ends_with("/oauth2/start?rd=%2F"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_configuration_does_not_name_is_refused() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    for host in [
        "evil.example".to_string(),
        "evil.example:443".to_string(),
        format!("{}.example", "h".repeat(300)),
        "127.0.0.1:1".to_string(),
        "127.0.0.1".to_string(),
        "localhost:1".to_string(),
        "localhost.evil.example".to_string(),
    ] {
        let resp = navigate(user().get(start_url(&s, "/")))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "Host: {host}");
        assert!(set_cookies(&resp).is_empty());
        let page = resp.text().await.unwrap();
        assert!(!page.contains("evil"), "the host is not echoed");
    }
    assert_eq!(dbsize(&s), 0);
    // The listener's own address (what the browser opened) is fine, and so is a name an
    // upstream lists, or anything once public_url is set.
    let resp = navigate(user().get(start_url(&s, "/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let redirect_uri = url::Url::parse(&location(&resp))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(redirect_uri, s.gate.url("/oauth2/callback"));
    // `localhost` with the listener's port is the loopback listener's own name.
    let port = s.gate.addr().port();
    let resp = navigate(user().get(start_url(&s, "/")))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert!(
        location(&resp).contains(&format!("localhost%3A{port}%2Foauth2%2Fcallback")),
        "{}",
        location(&resp)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hosts_and_public_url_decide_the_redirect_uri() {
    let s = ScenarioBuilder::new(StoreKind::Memory).start().await;
    let sections = s.sections.clone();
    let named = GateBuilder::new()
        .upstream_with(
            "shop",
            &s.upstream.url(),
            "hosts = [\"shop.test\", \"*.shop.test\"]\n",
        )
        .toml(&sections)
        .start();
    let redirect_uri_for = |host: &'static str, gate: &support::Gate| {
        let url = format!("{}?rd=%2F", gate.url("/oauth2/start"));
        async move {
            let resp = navigate(user().get(url))
                .header("host", host)
                .send()
                .await
                .unwrap();
            if resp.status() != 302 {
                return Err(resp.status().as_u16());
            }
            Ok(url::Url::parse(&location(&resp))
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "redirect_uri")
                .map(|(_, v)| v.into_owned())
                .unwrap())
        }
    };
    assert_eq!(
        redirect_uri_for("www.shop.test", &named).await,
        Ok("http://www.shop.test/oauth2/callback".to_string())
    );
    assert_eq!(redirect_uri_for("shop.test.evil", &named).await, Err(400));
    let public = GateBuilder::new()
        .upstream("app", &s.upstream)
        .server("public_url = \"https://gate.shop.test\"\n")
        .toml(&sections)
        .start();
    assert_eq!(
        redirect_uri_for("evil.example", &public).await,
        Ok("https://gate.shop.test/oauth2/callback".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_writes_the_store_only_after_the_provider_honoured_the_code() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    let http = user();
    let outcome = s.begin_sign_in(&http, "/x", "pia").await;
    assert_eq!(
        dbsize(&s),
        0,
        "nothing stored while signing in at the provider"
    );
    // A forged code with the right flow cookie: the exchange fails, nothing is written.
    let forged = outcome.callback_url.replace("code=", "code=forged");
    let resp = navigate(http.get(&forged)).send().await.unwrap();
    let cleared = set_cookies(&resp);
    assert_eq!(problem_page(&http, resp).await.status(), 400);
    assert_eq!(dbsize(&s), 0, "a failed exchange writes nothing");
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("_linkgate_bind_") && c.contains("Max-Age=0")),
        "the flow cookie is cleared whatever happens: {cleared:?}"
    );
    // The flow is gone from this browser: the genuine callback now fails too.
    let resp = problem_page(&http, s.finish_sign_in(&http, &outcome).await).await;
    assert_eq!(resp.status(), 400);
    // A fresh sign-in works end to end and leaves exactly a session, its index, and the
    // mark that its state was used.
    let fresh = user();
    assert_eq!(s.sign_in(&fresh, "/x", "pia").await.status(), 200);
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(redis.keys("linkgate:session:*").len(), 1);
    assert_eq!(redis.keys("linkgate:flow:*").len(), 1);
    assert_eq!(dbsize(&s), 3, "{:?}", redis.keys("*"));
}

// === replay, tabs, duplicates ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_callback_fails_even_with_a_copy_of_the_flow_cookie() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    let http = user();
    let resp = navigate(http.get(start_url(&s, "/r")))
        .send()
        .await
        .unwrap();
    let cookie = flow_cookie(&resp);
    let outcome = oidc::login(&http, &location(&resp), "quinn").await;
    let first = s.finish_sign_in(&http, &outcome).await;
    assert_eq!(first.status(), 302);
    // The attacker captured both the callback URL and the flow cookie.
    let replay = navigate(support::client_without_cookies().get(&outcome.callback_url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&replay)
        .iter()
        .all(|c| !c.starts_with("_linkgate=") || c.starts_with("_linkgate=;")));
    let replay = problem_page(&support::client_without_cookies(), replay).await;
    assert_eq!(replay.status(), 400);
    assert_eq!(
        s.redis.as_ref().unwrap().keys("linkgate:session:*").len(),
        1,
        "no second session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tabs_sign_in_at_once_and_a_browser_keeps_at_most_four_flows() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    let http = user();
    let mut outcomes = Vec::new();
    for tab in 0..5 {
        outcomes.push(s.begin_sign_in(&http, &format!("/tab-{tab}"), "rita").await);
    }
    assert_eq!(dbsize(&s), 0);
    // The oldest flow made room for the fifth; the four others complete, in any order.
    for tab in [4, 2, 3, 1] {
        let resp = s.finish_sign_in(&http, &outcomes[tab]).await;
        assert_eq!(resp.status(), 302, "tab {tab}");
        assert!(location(&resp).ends_with(&format!("/tab-{tab}")));
    }
    let oldest = problem_page(&http, s.finish_sign_in(&http, &outcomes[0]).await).await;
    assert_eq!(oldest.status(), 400);
    assert!(oldest
        .text()
        .await
        .unwrap()
        .contains("expired or was already used"));
    let page = navigate(http.get(s.gate.url("/tab-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_flows_share_a_byte_budget_so_the_cookie_header_stays_small() {
    let s = ScenarioBuilder::new(StoreKind::Memory).start().await;
    let (http, jar) = browser();
    let long_rd = format!("/{}", "z".repeat(2000));
    let mut names = Vec::new();
    for round in 0..4 {
        let resp = navigate(http.get(start_url(&s, &long_rd)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302);
        let lines = set_cookies(&resp);
        names.push(flow_cookie(&resp).split('=').next().unwrap().to_string());
        let cleared: Vec<&String> = lines.iter().filter(|l| l.contains("Max-Age=0")).collect();
        if round < 2 {
            assert!(cleared.is_empty(), "round {round}: {cleared:?}");
        } else {
            // A third ~2.8 KB flow would pass 6 KiB: the oldest one goes.
            assert_eq!(cleared.len(), 1, "round {round}: {lines:?}");
            assert!(cleared[0].starts_with(&format!("{}=;", names[round - 2])));
        }
    }
    // What the browser sends back stays within the budget (nginx: 8 KB a header line).
    let sent =
        reqwest::cookie::CookieStore::cookies(&*jar, &url::Url::parse(&s.gate.url("/")).unwrap())
            .unwrap();
    assert!(sent.len() <= 6144 + 64, "{} bytes", sent.len());
    assert_eq!(sent.to_str().unwrap().matches("_linkgate_bind_").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cookies_of_one_name_are_refused_never_tried_in_turn() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    // Two signed-in users: each cookie alone is valid.
    let (alice, alice_jar) = browser();
    let (bob, bob_jar) = browser();
    assert_eq!(s.sign_in(&alice, "/x", "alice").await.status(), 200);
    assert_eq!(s.sign_in(&bob, "/x", "bob").await.status(), 200);
    let base = url::Url::parse(&s.gate.url("/")).unwrap();
    let session_of = |jar: &Jar| {
        use reqwest::cookie::CookieStore;
        let header = jar.cookies(&base).unwrap();
        header
            .to_str()
            .unwrap()
            .split("; ")
            .find(|c| c.starts_with("_linkgate="))
            .unwrap()
            .to_string()
    };
    let (a, b) = (session_of(&alice_jar), session_of(&bob_jar));
    for cookie in [format!("{b}; {a}"), format!("{a}; {a}")] {
        let resp = support::client_without_cookies()
            .get(s.gate.url("/x"))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{cookie}");
        assert!(
            set_cookies(&resp)
                .iter()
                .any(|c| c.starts_with("_linkgate=;")),
            "the cookies are cleared"
        );
        let seen = s.upstream.count();
        let nav = navigate(support::client_without_cookies().get(s.gate.url("/x")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(nav.status(), 302, "sent to sign in, not in as either");
        assert_eq!(s.upstream.count(), seen);
    }
    // Two flow cookies of one flow's name: the callback refuses both and clears them.
    let (carl, _) = browser();
    let resp = navigate(carl.get(start_url(&s, "/c")))
        .send()
        .await
        .unwrap();
    let mine = flow_cookie(&resp);
    let name = mine.split('=').next().unwrap().to_string();
    let outcome = oidc::login(&carl, &location(&resp), "carl").await;
    let resp = navigate(support::client_without_cookies().get(&outcome.callback_url))
        .header("cookie", format!("{name}=planted; {mine}"))
        .send()
        .await
        .unwrap();
    assert!(resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .any(|c| c.to_str().unwrap().starts_with(&format!("{name}=;"))));
    let resp = problem_page(&support::client_without_cookies(), resp).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("twice"));
    assert_eq!(
        s.redis.as_ref().unwrap().keys("linkgate:session:*").len(),
        2,
        "no session for carl"
    );
}

// === class 4: a link is made only for the session that asked for it ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_connect_flow_links_nothing_in_the_victims_session() {
    let s = linked_scenario().await;
    let (cookie, callback) = attackers_connect_flow(&s).await;
    // The victim: signed in to her cloud account, not linked.
    let (victim, jar) = browser();
    let resp = s.account_sign_in(&victim, "/projects", "cloud-vera").await;
    assert_eq!(resp.status(), 302);
    // The attacker's flow cookie lands in her browser (a sibling subdomain, plain-HTTP MITM).
    let base = url::Url::parse(&s.gate.url("/")).unwrap();
    jar.add_cookie_str(&format!("{cookie}; Path=/"), &base);
    let resp = navigate(victim.get(&callback)).send().await.unwrap();
    let cleared = set_cookies(&resp);
    let resp = problem_page(&victim, resp).await;
    assert_eq!(resp.status(), 400);
    let page = resp.text().await.unwrap();
    assert!(page.contains("started from another session"), "{page}");
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with(cookie.split('=').next().unwrap())),
        "the planted cookie is cleared: {cleared:?}"
    );
    assert!(links(&s).is_empty(), "nothing linked: {:?}", links(&s));
    s.gate
        .metrics_containing("linkgate_links_total{result=\"wrong_session\"} 1")
        .await;
    // She is still herself, still unlinked, and can connect her own account.
    let json: serde_json::Value = victim
        .get(s.gate.url("/oauth2/link"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["status"], "not_connected");
    assert!(
        json["account"].as_str().unwrap().starts_with("cloud-vera"),
        "{json}"
    );
    let csrf = s.csrf(&victim).await;
    let resp = s.post_link(&victim, "connect", &csrf).await;
    let (resp, _) = s.follow(&victim, resp, "vera@magento.test").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(links(&s).len(), 2, "her own link: {:?}", links(&s));
    let raw = s.redis.as_ref().unwrap().keys("linkgate:link:sso:*");
    assert!(raw.iter().all(|k| !k.contains("mallory")), "{raw:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_connect_flow_in_an_anonymous_or_magento_browser_links_nothing() {
    let s = linked_scenario().await;
    let (cookie, callback) = attackers_connect_flow(&s).await;
    let base = url::Url::parse(&s.gate.url("/")).unwrap();
    // A browser with no session at all.
    let (anon, jar) = browser();
    jar.add_cookie_str(&format!("{cookie}; Path=/"), &base);
    let resp = navigate(anon.get(&callback)).send().await.unwrap();
    assert_eq!(problem_page(&anon, resp).await.status(), 400);
    assert!(links(&s).is_empty());
    // The attacker's own callback, completed in his own browser, would link only his own
    // account: that is his right. Here it was already spent by the victim's browser.
    let (spent, jar) = browser();
    jar.add_cookie_str(&format!("{cookie}; Path=/"), &base);
    let resp = navigate(spent.get(&callback)).send().await.unwrap();
    assert_eq!(problem_page(&spent, resp).await.status(), 400);
    assert!(links(&s).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_account_sign_in_does_not_link_a_waiting_magento_session() {
    let s = linked_scenario().await;
    // The victim signed in with Magento.com; her session waits for its cloud account.
    let (victim, jar) = browser();
    let resp = s.sign_in(&victim, "/projects", "wendy@magento.test").await;
    assert_eq!(
        resp.status(),
        403,
        "the link rule asks for the cloud account"
    );
    // The attacker starts a cloud-account sign-in (anonymously) as himself.
    let (attacker, _) = browser();
    let accounts = s.accounts.as_ref().unwrap();
    let resp = navigate(attacker.get(s.gate.url("/oauth2/account/start?rd=%2F")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let cookie = flow_cookie(&resp);
    let authorize = location(&resp);
    assert!(authorize.starts_with(accounts.issuer()));
    let outcome = oidc::login(&attacker, &authorize, "cloud-mallory").await;
    let base = url::Url::parse(&s.gate.url("/")).unwrap();
    jar.add_cookie_str(&format!("{cookie}; Path=/"), &base);
    let resp = navigate(victim.get(&outcome.callback_url))
        .send()
        .await
        .unwrap();
    let resp = problem_page(&victim, resp).await;
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("started from another session"));
    assert!(links(&s).is_empty(), "{:?}", links(&s));
    // Her own account sign-in, started from her session, links.
    let resp = s.account_sign_in(&victim, "/projects", "cloud-wendy").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(links(&s).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_login_flow_never_links_the_victims_account() {
    let s = linked_scenario().await;
    // The attacker's plain Magento.com sign-in (not a connect).
    let (attacker, _) = browser();
    let resp = navigate(attacker.get(start_url(&s, "/")))
        .send()
        .await
        .unwrap();
    let cookie = flow_cookie(&resp);
    let outcome = oidc::login(&attacker, &location(&resp), "mallory@magento.test").await;
    // The victim, signed in to her cloud account and unlinked, completes it.
    let (victim, jar) = browser();
    assert_eq!(
        s.account_sign_in(&victim, "/projects", "cloud-xena")
            .await
            .status(),
        302
    );
    let base = url::Url::parse(&s.gate.url("/")).unwrap();
    jar.add_cookie_str(&format!("{cookie}; Path=/"), &base);
    let resp = navigate(victim.get(&outcome.callback_url))
        .send()
        .await
        .unwrap();
    // Her browser has a session the flow was not started by, of someone else: the sign-in
    // is refused (no login CSRF into a signed-in browser), her session stays, nothing links.
    let resp = problem_page(&victim, resp).await;
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("started from another session"));
    assert!(links(&s).is_empty(), "{:?}", links(&s));
    let json: serde_json::Value = victim
        .get(s.gate.url("/oauth2/link"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        json["account"].as_str().unwrap().starts_with("cloud-xena"),
        "{json}"
    );
    assert_eq!(json["connected_as"], serde_json::Value::Null);
    // Switching users on purpose still works: a sign-in started from her own session.
    let resp = navigate(victim.get(start_url(&s, "/")))
        .send()
        .await
        .unwrap();
    let outcome = oidc::login(&victim, &location(&resp), "xena@magento.test").await;
    assert_eq!(s.finish_sign_in(&victim, &outcome).await.status(), 302);
    assert!(links(&s).is_empty(), "a login never links");
}

// === cookie names, readiness ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_cookies_carry_the_host_prefix_by_default() {
    let upstream = support::upstream::Upstream::start().await;
    let builder = GateBuilder::new();
    let provider = OidcProvider::start(ProviderOptions::new("sso").client(
        ClientConfig::confidential(
            "linkgate",
            "linkgate-secret",
            &builder.url("/oauth2/callback"),
        ),
    ));
    let gate = builder
        .upstream("app", &upstream)
        .toml(&format!(
            "[sso]\nissuer = \"{}\"\nclient_id = \"linkgate\"\nclient_secret = \"linkgate-secret\"\n\
             [session]\ncookie_secret = \"{COOKIE_SECRET}\"\n\
             [authz]\nskip_auth_routes = [\"^/public/\"]\n",
            provider.issuer()
        ))
        .start();
    let resp = navigate(user().get(gate.url("/oauth2/start?rd=%2F")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    let lines = set_cookies(&resp);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(line.starts_with("__Host-linkgate_bind_"), "{line}");
    for attr in ["; Secure", "; Path=/", "; HttpOnly", "; SameSite=Lax"] {
        assert!(line.contains(attr), "{line}");
    }
    assert!(!line.contains("Domain"), "{line}");
    // A stale session cookie is cleared under the prefixed name, with the same attributes.
    let resp = support::client_without_cookies()
        .get(gate.url("/x"))
        .header("cookie", "__Host-linkgate=forged")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let clear = set_cookies(&resp).join("\n");
    assert!(clear.starts_with("__Host-linkgate=;"), "{clear}");
    assert!(clear.contains("; Secure") && clear.contains("; Path=/"));
    // Neither the prefixed cookies nor a pre-upgrade `_linkgate` one reach the upstream.
    let resp = support::client_without_cookies()
        .get(gate.url("/public/x"))
        .header(
            "cookie",
            "_linkgate=old-session; theme=dark; __Host-linkgate=s; __Host-linkgate_bind_0123456789ab=f",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.last().header("cookie"), Some("theme=dark"));
    // `linkgate check` refuses cookie_domain with a __Host- name (here the default).
    let config = gate.dir().join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let bad = gate.dir().join("domain.toml");
    std::fs::write(
        &bad,
        text.replace("[session]\n", "[session]\ncookie_domain = \"shop.test\"\n"),
    )
    .unwrap();
    let (code, _, err) = support::linkgate_cli(&["check", "-c", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("session.cookie_domain") && err.contains("`__Host-linkgate` forbids"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_policy_that_could_evict_links_is_reported() {
    let s = ScenarioBuilder::new(StoreKind::Redis).start().await;
    let redis = s.redis.as_ref().unwrap();
    let readyz = || async {
        let resp = support::client()
            .get(s.gate.admin_url("/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "still ready");
        resp.json::<serde_json::Value>().await.unwrap()
    };
    let config = s.gate.dir().join("config.toml");
    let check = || support::linkgate_cli(&["check", "-c", config.to_str().unwrap()], &[]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    let body = readyz().await;
    assert_eq!(body["warnings"], serde_json::json!([]), "{body}");
    let (code, _, err) = check();
    assert_eq!(code, 0);
    assert!(!err.contains("maxmemory-policy"), "{err}");
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let body = readyz().await;
    assert_eq!(body["ready"], true);
    let warning = body["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("allkeys-lru") && warning.contains("evict links"),
        "{body}"
    );
    let (code, _, err) = check();
    assert_eq!(code, 0, "a warning, not an error: {err}");
    assert!(
        err.contains("warning: Redis maxmemory-policy is allkeys-lru"),
        "{err}"
    );
}

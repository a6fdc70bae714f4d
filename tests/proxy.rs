//! The proxy as a user and an upstream see it: forwarding, routing, WebSockets, HTTP/2, header
//! hygiene, upstream failures, unauthenticated requests, skip routes, admin endpoints and the
//! process lifecycle. Every scenario runs the real linkgate binary against a real upstream.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use support::{client, raw_get, raw_request, GateBuilder, Upstream};

/// Public routes, so these scenarios exercise the proxy without sign-in.
const PUBLIC: &str = "[authz]\nskip_auth_routes = [\"^/\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_get_and_post_with_an_8_mib_body_intact() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .start();
    let http = client();

    let resp = http.get(gate.url("/hello?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.last().uri, "/hello?x=1");
    assert_eq!(upstream.last().method, "GET");

    let body: Vec<u8> = (0..8 * 1024 * 1024)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let sha = format!("{:x}", Sha256::digest(&body));
    let resp = http
        .post(gate.url("/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body_len, body.len());
    assert_eq!(seen.body_sha256, sha);

    // A chunked upload of unknown length streams through too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1 << 20).map(|c| Ok(c.to_vec())).collect();
    let resp = http
        .put(gate.url("/upload-stream"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.last().body_sha256, sha);

    // A large download streams back whole.
    let resp = http.get(gate.url("/__big/9000000")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 9_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_longest_path_prefix() {
    let default = Upstream::start().await;
    let api = Upstream::start().await;
    let shop = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("default", &default)
        .upstream_with("api", &api.url(), "path_prefix = \"/api\"")
        .upstream_with(
            "shop",
            &shop.url(),
            "hosts = [\"shop.test\", \"*.shop.test\"]",
        )
        .toml(PUBLIC)
        .start();
    let http = client();
    let get = |path: &str, host: &str| http.get(gate.url(path)).header("host", host).send();
    assert_eq!(get("/", "x.test").await.unwrap().status(), 200);
    assert_eq!(get("/api/v1", "x.test").await.unwrap().status(), 200);
    assert_eq!(get("/apix", "x.test").await.unwrap().status(), 200);
    assert_eq!(get("/", "shop.test").await.unwrap().status(), 200);
    assert_eq!(get("/", "EU.Shop.Test:8080").await.unwrap().status(), 200);
    assert_eq!(
        default
            .seen()
            .iter()
            .map(|s| s.uri.as_str())
            .collect::<Vec<_>>(),
        ["/", "/apix"]
    );
    assert_eq!(
        api.seen()
            .iter()
            .map(|s| s.uri.as_str())
            .collect::<Vec<_>>(),
        ["/api/v1"]
    );
    assert_eq!(shop.count(), 2);
    // The upstream sees the host the route was chosen by, in its canonical spelling (so
    // that its virtual hosts and linkgate's routes read one name).
    assert_eq!(shop.last().header("host"), Some("eu.shop.test:8080"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_a_404_not_a_guess() {
    let shop = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream_with("shop", &shop.url(), "hosts = [\"shop.test\"]")
        .toml(PUBLIC)
        .start();
    let resp = client()
        .get(gate.url("/"))
        .header("host", "other.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "no_route");
    assert_eq!(shop.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_linkgate() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .start();
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", gate.listen))
            .await
            .expect("websocket handshake through linkgate");
    assert_eq!(resp.status(), 101);
    for text in ["hello", "through", "the gate"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("not an error");
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    assert_eq!(upstream.last().header("upgrade"), Some("websocket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .start();
    let resp = raw_get(
        gate.addr(),
        "/x",
        &[
            "X-FORWARDED-USER: mallory",
            "x-forwarded-email: mallory@evil.test",
            "X_Forwarded_Groups: admins",
            "x-forwarded-preferred-username: root",
            "X-Linkgate-Link-Status: linked",
            "x_linkgate_account_id: acct-1",
            "X-LinkGate-Sso-Subject: sub-1",
            "X-Forwarded-Access-Token: token",
            "X-Auth-Request-User: mallory",
            "X-Original-URL: /admin",
            "X-Rewrite-Url: /admin",
            "Forwarded: for=10.0.0.1",
            "X-Forwarded-For: 10.0.0.1",
            "Cookie: theme=dark; _linkgate=forged; _linkgate_csrf=x",
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    let seen = upstream.last();
    for (name, value) in &seen.headers {
        let folded = name.replace('_', "-");
        assert!(
            !folded.starts_with("x-forwarded-user")
                && !folded.starts_with("x-forwarded-email")
                && !folded.starts_with("x-forwarded-groups")
                && !folded.starts_with("x-forwarded-preferred")
                && !folded.starts_with("x-forwarded-access")
                && !folded.starts_with("x-linkgate")
                && !folded.starts_with("x-auth-request")
                && !folded.starts_with("x-original")
                && !folded.starts_with("x-rewrite")
                && folded != "forwarded",
            "upstream received {name}: {value}"
        );
    }
    // Untrusted peer: the forwarded chain is linkgate's, not the client's.
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("cookie"), Some("theme=dark"));
    // The stripped copies are counted.
    gate.metrics_containing("linkgate_stripped_identity_headers_total 11")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_believed_only_from_trusted_proxies() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .server("trusted_proxies = [\"127.0.0.1/32\"]")
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .start();
    let resp = raw_get(
        gate.addr(),
        "/x",
        &[
            "X-Forwarded-For: 203.0.113.7",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Host: shop.test",
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.test"));
    // Identity headers are removed even from a trusted proxy: only linkgate sets them.
    let _ = raw_get(gate.addr(), "/x", &["X-Forwarded-User: admin"]).await;
    assert_eq!(upstream.last().header("x-forwarded-user"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_or_slow_upstreams_get_502_and_504_while_other_routes_keep_working() {
    let live = Upstream::start().await;
    let slow = Upstream::start().await;
    let dead_port = support::free_port();
    let gate = GateBuilder::new()
        .upstream("live", &live)
        .upstream_with(
            "dead",
            &format!("http://127.0.0.1:{dead_port}"),
            "path_prefix = \"/dead\"",
        )
        .upstream_with(
            "slow",
            &slow.url(),
            "path_prefix = \"/__slow\"\nread_timeout = \"300ms\"",
        )
        .toml(PUBLIC)
        .start();
    let http = client();

    let resp = http.get(gate.url("/dead/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "bad_gateway");

    let resp = http
        .get(gate.url("/dead/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("<h1>Application unreachable</h1>"));

    let resp = http.get(gate.url("/__slow/3000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);

    for _ in 0..5 {
        assert_eq!(
            http.get(gate.url("/still-alive"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    gate.metrics_containing(
        "linkgate_upstream_errors_total{kind=\"bad_gateway\",upstream=\"dead\"} 2",
    )
    .await;
    gate.metrics_containing(
        "linkgate_upstream_errors_total{kind=\"gateway_timeout\",upstream=\"slow\"} 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_get_a_redirect_in_browsers_and_401_json_elsewhere() {
    let upstream = Upstream::start().await;
    // The provider is never contacted before someone follows the redirect.
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(&format!(
            "[sso]\nissuer = \"http://127.0.0.1:{}\"\nclient_id = \"linkgate\"\nclient_secret = \"s\"\n\
             [session]\ncookie_secret = \"{}\"\ncookie_secure = false\n",
            support::free_port(),
            support::COOKIE_SECRET
        ))
        .start();
    let http = client();

    let resp = http
        .get(gate.url("/orders?id=7&x=a b"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "/oauth2/start?rd=%2Forders%3Fid%3D7%26x%3Da%2520b"
    );
    assert_eq!(resp.headers()["content-length"], "0");
    assert_eq!(resp.headers()["cache-control"], "no-store");

    for (accept, mode) in [
        ("application/json", None),
        ("text/html", Some("cors")),
        ("image/avif,image/webp,*/*", Some("no-cors")),
        ("*/*", None),
    ] {
        let mut req = http.get(gate.url("/favicon.ico")).header("accept", accept);
        if let Some(mode) = mode {
            req = req.header("sec-fetch-mode", mode);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "accept={accept} mode={mode:?}");
        assert!(resp.headers().contains_key("www-authenticate"));
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "unauthenticated");
    }
    let resp = http
        .post(gate.url("/form"))
        .header("accept", "text/html")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a POST never starts a login");
    assert_eq!(
        upstream.count(),
        0,
        "nothing unauthenticated reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_routes_match_the_normalised_path_only() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml("[authz]\nskip_auth_routes = [\"GET=^/public/\", \"^/health$\"]")
        .start();
    let addr = gate.addr();
    assert_eq!(raw_get(addr, "/public/logo.png", &[]).await.status, 200);
    assert_eq!(raw_get(addr, "/health", &[]).await.status, 200);
    assert_eq!(raw_get(addr, "/health?verbose=1", &[]).await.status, 200);
    let refused = [
        "/admin?next=/public/",
        "/admin?/public/",
        "/admin#/public/",
        "/admin%23/public/",
        "/admin%2523/public/",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E%2Fadmin",
        "/public/%252e%252e/admin",
        "/public/..;/admin",
        "/public/..%5cadmin",
        "//public/../admin",
        "/health/",
        "/healthz",
        "/x/health",
    ];
    for target in refused {
        let resp = raw_get(addr, target, &[]).await;
        assert!(
            resp.status == 401 || resp.status == 400,
            "{target} was not refused: {}",
            resp.status
        );
    }
    // Headers that claim another URL change nothing.
    for header in [
        "X-Forwarded-Uri: /public/x",
        "X-Original-URL: /public/x",
        "X-Rewrite-URL: /public/x",
    ] {
        assert_eq!(
            raw_get(addr, "/admin", &[header]).await.status,
            401,
            "{header}"
        );
    }
    // The method restriction holds.
    let resp = raw_request(
        addr,
        "POST /public/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 401);
    assert!(upstream
        .seen()
        .iter()
        .all(|s| s.uri.starts_with("/public/logo.png") || s.uri.starts_with("/health")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_and_over_tls() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .start();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let resp = h2.get(gate.url("/h2c")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(upstream.last().uri, "/h2c");

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::tls::self_signed(dir.path());
    let tls_gate = GateBuilder::new()
        .server(&format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
            cert.display(),
            key.display()
        ))
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .start();
    let https = client();
    let resp = https
        .get(format!("https://127.0.0.1:{}/over-tls", tls_gate.listen))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let seen = upstream.last();
    assert_eq!(seen.uri, "/over-tls");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_reports_health_readiness_and_metrics() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .start();
    let http = client();
    http.get(gate.url("/a")).send().await.unwrap();
    let health = http.get(gate.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(gate.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let v: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(v["ready"], true);
    let metrics = gate
        .metrics_containing("linkgate_requests_total{decision=\"skip_auth\"} 1")
        .await;
    assert!(metrics.contains("linkgate_request_duration_seconds_bucket"));
    // The admin listener is not the proxy: it serves nothing else.
    assert_eq!(
        http.get(gate.admin_url("/a"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The access log has a line for the request (written after the response is sent, and
    // read from the child's stderr by a thread: wait for it rather than race it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gate.log().contains("linkgate::access") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = gate.log();
    assert!(log.contains("linkgate::access"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_then_exits() {
    let upstream = Upstream::start().await;
    let mut gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .server("graceful_shutdown_timeout = \"5s\"")
        .start();
    let url = gate.url("/__slow/700");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    support::wait_until(
        "the slow request to reach the upstream",
        Duration::from_secs(5),
        || upstream.count() == 1,
    );
    gate.signal(nix::sys::signal::Signal::SIGTERM);
    let status = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    let exit = gate.wait_exit(Duration::from_secs(15));
    assert!(exit.success(), "exit status {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_hands_the_sockets_to_a_new_process() {
    let upstream = Upstream::start().await;
    let mut gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(PUBLIC)
        .server("graceful_shutdown_timeout = \"5s\"")
        .start();
    let old_pid = gate.pid();
    let url = gate.url("/__slow/800");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    support::wait_until(
        "the slow request to reach the upstream",
        Duration::from_secs(5),
        || upstream.count() == 1,
    );
    let mut old = gate.upgrade();
    assert_ne!(gate.pid(), old_pid);
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the old process finished its request"
    );
    // New connections are served by the new process on the same port.
    for _ in 0..5 {
        assert_eq!(
            client()
                .get(gate.url("/after"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if old.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old process did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

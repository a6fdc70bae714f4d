//! Issue 10, class 6: the smaller holes found by reading, each attacked the way an outsider
//! would, against the real binary, a real OpenID provider (made to lie or fail per test
//! through its `/__test/misbehave` switches) and, where it matters, real Redis.

mod support;

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::oidc::{self, Account};
use support::sso::{
    location, navigate, problem_page, user, Accounts, Flavor, ScenarioBuilder, StoreKind,
    CLIENT_ID, PLATFORM_AUDIENCE, PLATFORM_COOKIE,
};
use support::{client, GateBuilder, Upstream};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The value of `name="csrf"` in a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

// === sign-out ===

async fn a_cross_site_sign_out_ends_nothing_and_a_person_still_signs_out(flavor: Flavor) {
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .flavor(flavor)
        .start()
        .await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "olga").await.status(), 200);
    assert_eq!(redis.keys("linkgate:session:*").len(), 1);

    // A link or an image on another site: the browser sends the cookie (SameSite=Lax lets
    // top-level GETs through), linkgate shows a page and ends nothing.
    for (mode, dest) in [("navigate", "document"), ("no-cors", "image")] {
        let resp = http
            .get(s.gate.url("/oauth2/sign_out?rd=%2Fbye"))
            .header("accept", "text/html")
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", mode)
            .header("sec-fetch-dest", dest)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "a page, not a redirect ({dest})");
        assert!(resp.headers().get("set-cookie").is_none());
        let page = resp.text().await.unwrap();
        assert!(page.contains("<form method=\"post\""), "{page}");
    }
    // A cross-site form POST, with or without a token the attacker cannot know.
    for token in ["", "forged"] {
        let resp = http
            .post(s.gate.url("/oauth2/sign_out"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", "https://evil.test")
            .header("sec-fetch-site", "cross-site")
            .body(format!("csrf={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    }
    // Same-site but without the token (an injected form on the app's own pages).
    let resp = http
        .post(s.gate.url("/oauth2/sign_out"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", s.gate.url(""))
        .header("sec-fetch-site", "same-origin")
        .body("csrf=")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        redis.keys("linkgate:session:*").len(),
        1,
        "every attempt left the session alone"
    );
    let before = s.provider.counts().await;
    let resp = navigate(http.get(s.gate.url("/still")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "still signed in");

    // The person clicks "Sign out" on the confirmation page.
    let page = navigate(http.get(s.gate.url("/oauth2/sign_out?rd=%2Fbye")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("olga"), "says who is signed in: {page}");
    let resp = http
        .post(s.gate.url("/oauth2/sign_out?rd=%2Fbye"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", s.gate.url(""))
        .header("sec-fetch-site", "same-origin")
        .body(format!("csrf={}", csrf_of(&page)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    // On to the provider's logout (RP-initiated, or IMS's own), not yet followed.
    flavor.assert_provider_logout(&s, &location(&resp), &s.gate.url("/oauth2/signed_out"));
    assert!(redis.keys("linkgate:session:*").is_empty());
    let after = s.provider.counts().await;
    assert_eq!(
        (after.end_session, after.ims_logout),
        (before.end_session, before.ims_logout)
    );
    // Without a session the page has nothing to ask: on to rd (validated).
    let resp = http
        .get(s.gate.url("/oauth2/sign_out?rd=%2F%2Fevil.test"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "/");
}

// === identities ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_userinfo_email_does_not_borrow_the_id_tokens_verification() {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .provider(|o| o.account("mallory", Account::new().email("mallory@evil.test")))
        .toml("[authz]\nemail_domains = [\"shop.test\"]")
        .start()
        .await;
    // The id_token vouches for mallory@evil.test; userinfo names the boss, unverified.
    s.provider
        .misbehave(&json!({"userinfo": {"email": "boss@shop.test", "email_verified": null}}))
        .await;
    let http = user();
    let resp = s.sign_in(&http, "/admin", "mallory").await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("not verified"));
    assert_eq!(s.upstream.count(), 0, "nothing reached the app");
    let me: Value = http
        .get(s.gate.url("/oauth2/userinfo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(me["email_verified"], true, "{me}");

    // When userinfo itself says the new address is verified, it is.
    s.provider
        .misbehave(&json!({"userinfo": {"email": "boss@shop.test", "email_verified": true}}))
        .await;
    let http = user();
    assert_eq!(s.sign_in(&http, "/admin", "mallory").await.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-forwarded-email"),
        Some("boss@shop.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_about_nobody_or_someone_else_makes_no_session() {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .toml("[authz]\nbearer_tokens = true")
        .start()
        .await;
    for (switches, what) in [
        (
            json!({"id_token": {"sub": ""}}),
            "an id_token with an empty sub",
        ),
        (
            json!({"id_token": {"sub": "  "}}),
            "an id_token with a blank sub",
        ),
        (
            json!({"userinfo": {"sub": "root"}}),
            "userinfo about another sub",
        ),
        (json!({"userinfo": {"sub": null}}), "userinfo without a sub"),
    ] {
        s.provider.misbehave(&switches).await;
        let http = user();
        let outcome = s.begin_sign_in(&http, "/x", "nemo").await;
        let resp = s.finish_sign_in(&http, &outcome).await;
        assert!(!sets_a_session(&resp), "{what}");
        assert_eq!(problem_page(&http, resp).await.status(), 400, "{what}");
        let resp = navigate(http.get(s.gate.url("/x"))).send().await.unwrap();
        assert_eq!(resp.status(), 302, "still anonymous after {what}");
    }
    s.provider.misbehave(&json!({})).await;
    // A bearer token signed by the provider, about nobody.
    let claims = |sub: &str| json!({"iss": s.provider.issuer(), "aud": CLIENT_ID, "sub": sub, "iat": now(), "exp": now() + 300});
    for sub in ["", " "] {
        let token = s.provider.sign_jwt(&claims(sub)).await;
        let resp = client()
            .get(s.gate.url("/api"))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "sub {sub:?}");
    }
    let token = s.provider.sign_jwt(&claims("api-client")).await;
    let resp = client()
        .get(s.gate.url("/api"))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the same token about someone passes");
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_jwt_about_nobody_is_refused() {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .accounts(Accounts::Jwt)
        .start()
        .await;
    let platform = s.accounts.as_ref().unwrap();
    let jwt = |sub: &'static str| async move {
        platform
            .sign_jwt(&json!({
                "iss": platform.issuer(), "aud": PLATFORM_AUDIENCE, "sub": sub,
                "iat": now(), "exp": now() + 300,
            }))
            .await
    };
    let call = |token: String| {
        client()
            .get(s.gate.url("/projects"))
            .header("cookie", format!("{PLATFORM_COOKIE}={token}"))
            .header("accept", "application/json")
            .send()
    };
    let v: Value = call(jwt("").await).await.unwrap().json().await.unwrap();
    assert_eq!(v["error"], "invalid_token", "{v}");
    let v: Value = call(jwt("cloud-7").await)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(
        v["error"], "invalid_token",
        "a real account is not refused as such: {v}"
    );
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_id_token_about_someone_else_ends_the_session() {
    // Access tokens live 8 s and are refreshed after 5 s (half their lifetime, and the floor).
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .provider(|o| o.access_token_ttl(Duration::from_secs(8)))
        .start_with(|_| "refresh_before = \"6s\"\n".to_string())
        .await;
    let redis = s.redis.as_ref().unwrap();
    let http = user();
    assert_eq!(s.sign_in(&http, "/x", "victor").await.status(), 200);
    let seen = s.upstream.count();
    s.provider
        .misbehave(&json!({"refresh_id_token": {"sub": "mallory"}}))
        .await;
    s.provider.reset_counts().await;
    // Token ageing is the point: wait for the refresh window, no longer.
    tokio::time::sleep(Duration::from_millis(5300)).await;
    let resp = http
        .get(s.gate.url("/y"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the session ended");
    assert_eq!(s.provider.counts().await.refresh_token, 1);
    assert_eq!(
        s.upstream.count(),
        seen,
        "nothing reached the app as mallory"
    );
    assert!(redis.keys("linkgate:session:*").is_empty());
}

// === RFC 9207 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_responses_iss_is_required_when_promised() {
    let s = ScenarioBuilder::new(StoreKind::Memory).start().await;
    let discovery: Value = client()
        .get(s.provider.discovery_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"], true,
        "the provider promises iss"
    );
    for (iss, what) in [
        (Value::Null, "no iss"),
        (json!("http://evil.test"), "another iss"),
    ] {
        s.provider
            .misbehave(&json!({ "authorization_iss": iss }))
            .await;
        let http = user();
        let outcome = s.begin_sign_in(&http, "/x", "ivy").await;
        let resp = s.finish_sign_in(&http, &outcome).await;
        assert!(!sets_a_session(&resp), "{what}");
        let resp = problem_page(&http, resp).await;
        assert_eq!(resp.status(), 400, "{what}");
        assert!(resp.text().await.unwrap().contains("unexpected provider"));
    }
    assert_eq!(s.upstream.count(), 0);

    // A provider that does not promise it may leave it out.
    let s = ScenarioBuilder::new(StoreKind::Memory).start().await;
    s.provider
        .misbehave(&json!({
            "discovery": {"authorization_response_iss_parameter_supported": false},
            "authorization_iss": null,
        }))
        .await;
    assert_eq!(s.sign_in(&user(), "/x", "ivy").await.status(), 200);
}

// === the provider's failures ===

fn forged(kid: &str, issuer: &str) -> String {
    let key = oidc::generate_key("stranger");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        &json!({"iss": issuer, "aud": CLIENT_ID, "sub": "x", "iat": now(), "exp": now() + 300}),
        &EncodingKey::from_rsa_pem(key.pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_jwks_is_not_hammered_and_its_address_is_not_told() {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .toml("[authz]\nbearer_tokens = true")
        .start()
        .await;
    s.provider.misbehave(&json!({"jwks_status": 500})).await;
    s.provider.reset_counts().await;
    let forged = forged("kid-0", s.provider.issuer());
    let port = s.provider.port().to_string();
    for i in 0..40 {
        // Each token names a kid of its own (the header is all that differs).
        let token = forged.replacen("kid-0", &format!("kid-{i}"), 1);
        let resp = client()
            .get(s.gate.url("/api"))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert!(
            matches!(resp.status().as_u16(), 401 | 503),
            "{}",
            resp.status()
        );
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains(&port) && !body.contains("jwks"),
            "no provider detail: {body}"
        );
    }
    let fetched = s.provider.counts().await.jwks;
    assert!(
        fetched <= 1,
        "40 tokens against a failing JWKS caused {fetched} fetches"
    );
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_clients_see_a_plain_503_when_the_provider_is_down() {
    let upstream = Upstream::start().await;
    let nowhere = support::free_port();
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .toml(&format!(
            "[sso]\nissuer = \"http://127.0.0.1:{nowhere}/realms/internal\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             [session]\ncookie_secret = \"{}\"\ncookie_secure = false\nstore = \"memory\"\n",
            support::COOKIE_SECRET
        ))
        .start();
    for accept in ["text/html", "application/json"] {
        let resp = client()
            .get(gate.url("/oauth2/start?rd=%2F"))
            .header("accept", accept)
            .header("sec-fetch-mode", "navigate")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        let body = resp.text().await.unwrap();
        for secret in [
            nowhere.to_string().as_str(),
            "realms",
            "well-known",
            "discovery",
        ] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }
    assert!(
        gate.log()
            .contains(&format!("127.0.0.1:{nowhere}/realms/internal")),
        "the operator's log has the detail:\n{}",
        gate.log()
    );
}

// === request heads ===

/// A gate with public routes and tight head limits.
async fn head_limited_gate() -> (Upstream, support::Gate) {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .server("header_read_timeout = \"1s\"\nkeepalive_timeout = \"1s\"")
        .toml("[authz]\nskip_auth_routes = [\"^/\"]\n")
        .start();
    (upstream, gate)
}

/// Reads until the server closes (bounded: a server that never closes fails the test).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_dribbled_byte_by_byte_is_cut_off() {
    let (upstream, gate) = head_limited_gate().await;
    let mut stream = TcpStream::connect(gate.addr()).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // One byte every 100 ms: each read is far inside Pingora's per-read timeout, the head
    // is never finished. The writer stops when the server closes.
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        let mut sent = 0usize;
        while writer.write_all(b"X").await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if sent > 600 {
                break;
            }
        }
        sent
    });
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the server kept the dribbling connection");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let sent = dribble.await.unwrap();
    assert!(sent < 600, "cut off after {sent} bytes");
    assert_eq!(upstream.count(), 0);

    // Keep-alive: after a request, an idle connection is closed too.
    let mut stream = TcpStream::connect(gate.addr()).await.unwrap();
    stream
        .write_all(b"GET /one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(upstream.count(), 1);
}

/// HTTP/2 (h2c here) that never finishes a request: a connection that sends its preface
/// and SETTINGS and nothing more, and one whose HEADERS frame never ends (no END_HEADERS,
/// no CONTINUATION), are closed once idle for `keepalive_timeout` (1 s here), as an idle
/// HTTP/1 connection is; Pingora's default held them until the client went away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_that_finish_no_request_are_closed() {
    let (upstream, gate) = head_limited_gate().await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    // HEADERS on stream 1 holding `:method: GET` (HPACK index 2), END_HEADERS not set.
    const OPEN_HEADERS: &[u8] = &[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82];
    for (what, frames) in [
        ("preface and SETTINGS only", [PREFACE, SETTINGS].concat()),
        (
            "a HEADERS frame never finished",
            [PREFACE, SETTINGS, OPEN_HEADERS].concat(),
        ),
    ] {
        let mut stream = TcpStream::connect(gate.addr()).await.unwrap();
        stream.write_all(&frames).await.unwrap();
        let mut buf = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "{what}: the connection was kept");
    }
    assert_eq!(upstream.count(), 0);
}

/// Over TLS, HTTP/2 is chosen by ALPN before any HTTP byte: a client that completes the
/// handshake offering `h2` and then sends nothing, or part of the preface, is closed at
/// `header_read_timeout` (1 s here) like a silent HTTP/1 client, where Pingora's h2
/// handshake waited for the preface for ever; a whole preface goes on to HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_that_choose_http2_and_send_nothing_are_closed() {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = support::tls::self_signed(dir.path());
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .server(&format!(
            "header_read_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\n\
             [server.tls]\ncert = \"{}\"\nkey = \"{}\"",
            cert.display(),
            key.display()
        ))
        .toml("[authz]\nskip_auth_routes = [\"^/\"]\n")
        .start();
    let addr = gate.addr();
    let probe = move |send: &'static [u8]| -> (bool, std::time::Duration) {
        let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
        connector.set_verify(SslVerifyMode::NONE);
        connector.set_alpn_protos(b"\x02h2").unwrap();
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut tls = connector.build().connect("127.0.0.1", tcp).unwrap();
        assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
        let started = std::time::Instant::now();
        tls.write_all(send).unwrap();
        let mut buf = [0u8; 1024];
        let closed = loop {
            match tls.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => {
                    break !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        };
        (closed, started.elapsed())
    };
    for (what, send) in [
        ("nothing", &b""[..]),
        ("10 bytes of the preface", &b"PRI * HTTP"[..]),
    ] {
        let (closed, after) = tokio::task::spawn_blocking(move || probe(send))
            .await
            .unwrap();
        assert!(closed, "{what} after ALPN h2: the connection was kept");
        eprintln!("ALPN h2, then {what}: closed after {after:?}");
    }
    // A whole preface is HTTP/2 from then on: the gate answers with its SETTINGS, and the
    // connection, with no stream, is closed as idle after keepalive_timeout.
    let (closed, _) = tokio::task::spawn_blocking(move || {
        probe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    })
    .await
    .unwrap();
    assert!(closed, "an idle HTTP/2 connection was kept");
    assert_eq!(upstream.count(), 0);
}

/// A client that asks for a large response and stops reading is cut once one write has
/// waited `send_timeout` (1 s here): before, Pingora waited for it for ever and the upstream
/// connection behind it stayed busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_the_send_timeout() {
    const SIZE: usize = 64 << 20;
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .server("send_timeout = \"1s\"")
        .toml("[authz]\nskip_auth_routes = [\"^/\"]\n")
        .start();
    let mut stream = TcpStream::connect(gate.addr()).await.unwrap();
    stream
        .write_all(format!("GET /__big/{SIZE} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Not reading: the socket buffers fill and the gate's write waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Reading now gets what the buffers held, then the end: never the whole response.
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection was kept");
    assert!(
        got < SIZE,
        "the whole {SIZE}-byte response waited for a client that stopped reading ({got} bytes)"
    );
}

/// `max_header_size` bounds HTTP/2 heads too (h2c here): a 20 KB header with the limit at
/// 8 KiB is answered `431` (by the h2 codec) and never reaches the app, where before HTTP/2 had Pingora's 64 KiB whatever the
/// setting; a head within the limit goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_size_bounds_http2_heads_too() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream("app", &upstream)
        .server("max_header_size = 8192")
        .toml("[authz]\nskip_auth_routes = [\"^/\"]\n")
        .start();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let small = h2
        .get(gate.url("/small"))
        .header("x-pad", "p".repeat(2_000))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.version(), reqwest::Version::HTTP_2);
    let big = h2
        .get(gate.url("/big"))
        .header("x-pad", "p".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431, "{big:?}");
    assert_eq!(upstream.count(), 1, "only the small head reached the app");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_cannot_hold_memory() {
    let (upstream, gate) = head_limited_gate().await;
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let mut stream = TcpStream::connect(gate.addr()).await.unwrap();
    let _ = stream.write_all(big.as_bytes()).await;
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // A head just under the limit still passes.
    let fits = format!(
        "GET /fits HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(60 * 1024)
    );
    let mut stream = TcpStream::connect(gate.addr()).await.unwrap();
    stream.write_all(fits.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // At the limit exactly (64 KiB, the default `max_header_size`, counting the empty line
    // that ends the head): a head of that size passes, one byte more is refused, also when
    // that byte is the head's last (it once slipped through).
    for (size, status) in [(64 * 1024, "200"), (64 * 1024 + 1, "431")] {
        let start = "GET /edge HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-Pad: ";
        let head = format!("{start}{}\r\n\r\n", "p".repeat(size - start.len() - 4));
        assert_eq!(head.len(), size);
        let mut stream = TcpStream::connect(gate.addr()).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "a head of {size} bytes: {answer:?}"
        );
    }

    // 200 connections each push 1 MiB of head, never finished, and stay open as long as
    // the server lets them: before, each could pin up to 1 MiB in Pingora's buffer.
    let pid = gate.pid();
    let before = rss_kib(pid);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let addr = gate.addr();
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut head = b"GET /hold HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 1024 * 1024));
            let _ = stream.write_all(&head).await;
            read_until_closed(&mut stream).await
        }));
    }
    let mut peak = before;
    for t in tasks {
        let answer = t.await.unwrap();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer:?}"
        );
        peak = peak.max(rss_kib(pid));
    }
    let grown = peak.saturating_sub(before);
    eprintln!("RSS {before} KiB before, peak {peak} KiB with 200 oversized heads");
    assert!(
        grown < 48 * 1024,
        "RSS grew by {grown} KiB for 200 oversized heads"
    );
    assert_eq!(
        upstream.count(),
        2,
        "only /fits and the head of exactly the limit reached the app"
    );
}

/// Whether a response sets a session cookie (the callback always clears its flow cookie,
/// which is no session).
fn sets_a_session(resp: &reqwest::Response) -> bool {
    resp.headers().get_all("set-cookie").iter().any(|c| {
        let c = c.to_str().unwrap_or("");
        let name = c.split('=').next().unwrap_or("");
        (name == "_linkgate" || name == "__Host-linkgate") && !c.contains("Max-Age=0")
    })
}

// Sign-out against both providers (the standard one and the IMS look-alike).
flavored_tests!(a_cross_site_sign_out_ends_nothing_and_a_person_still_signs_out,);

//! Issue 10, class 3: the platform's account JWT (`[account] source = "jwt"`), attacked the
//! way an outsider would, against the release-shaped binary, real Redis and real OpenID
//! providers (Magento.com; the accounts provider only serves the platform's JWKS).
//!
//! - A client presenting a valid JWT (forward-auth, an API client, a browser) costs the store
//!   nothing per request: no session is written, a repeated JWT makes no store command.
//! - A gate session whose account came from the JWT follows the platform's current JWT:
//!   another account, no JWT, or an invalid one ends it; the upstream never hears of the old
//!   account again.
//! - An expired or invalid JWT sends a browser to sign in and clears the gate's cookie; an
//!   API client gets `401` JSON with `WWW-Authenticate`.
//! - Forged JWTs (another key, issuer, audience, `alg: none`, HMAC keyed with the public key,
//!   two cookies) are refused.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::cookie::{CookieStore, Jar};
use serde_json::{json, Value};
use support::sso::{
    location, navigate, Accounts, Scenario, ScenarioBuilder, StoreKind, PLATFORM_AUDIENCE,
    PLATFORM_COOKIE,
};
use support::{client_without_cookies, Redis};

// === the rig ===

async fn scenario(link_mode: &str) -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .accounts(Accounts::Jwt)
        .toml(&format!("[link]\nmode = \"{link_mode}\""))
        .start()
        .await
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Mints platform JWTs with the scenario's platform key (or another).
struct Platform {
    pem: String,
    public_pem: String,
    issuer: String,
}

impl Platform {
    fn of(s: &Scenario) -> Self {
        let key = s.account_key.as_ref().expect("the platform key");
        Self {
            pem: key.pem.clone(),
            public_pem: key.public_pem.clone(),
            issuer: s.accounts.as_ref().expect("accounts").issuer().to_string(),
        }
    }

    fn claims(&self, account: &str, patch: Value) -> Value {
        let now = now();
        let mut c = json!({
            "iss": self.issuer, "aud": PLATFORM_AUDIENCE, "sub": account,
            "email": format!("{account}@cloud.test"), "iat": now, "exp": now + 600,
        });
        for (k, v) in patch.as_object().expect("an object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn sign_with(pem: &str, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("platform".into());
        jsonwebtoken::encode(
            &h,
            claims,
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// A valid JWT for `account`.
    fn jwt(&self, account: &str) -> String {
        Self::sign_with(&self.pem, &self.claims(account, json!({})))
    }

    /// A JWT for `account` with claims changed (`null` removes one).
    fn jwt_with(&self, account: &str, patch: Value) -> String {
        Self::sign_with(&self.pem, &self.claims(account, patch))
    }
}

/// Every command Redis ran so far, by name (from `INFO commandstats`), leaving out what the
/// test itself sends through redis-cli.
fn commands(redis: &Redis) -> BTreeMap<String, u64> {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            let calls = rest.split(',').next()?.parse().ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "scan" | "dbsize" | "command"))
        .collect()
}

/// What ran between two [`commands`] readings.
fn ran_since(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn sessions(redis: &Redis) -> Vec<String> {
    redis.keys("linkgate:session:*")
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Whether the answer clears the gate's session cookie.
fn clears_gate_cookie(resp: &reqwest::Response) -> bool {
    set_cookies(resp)
        .iter()
        .any(|c| c.starts_with("_linkgate=;") && c.contains("Max-Age=0"))
}

/// A browser: a cookie jar the test can also write the platform's cookie into.
struct Browser {
    jar: Arc<Jar>,
    http: reqwest::Client,
    origin: url::Url,
}

impl Browser {
    fn new(s: &Scenario) -> Self {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .no_proxy()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap();
        let origin = url::Url::parse(&s.gate.url("/")).unwrap();
        Self { jar, http, origin }
    }

    /// The platform signs this browser in as whoever `jwt` names (`None`: signs it out).
    fn platform(&self, jwt: Option<&str>) {
        let cookie = match jwt {
            Some(jwt) => format!("{PLATFORM_COOKIE}={jwt}; Path=/"),
            None => format!("{PLATFORM_COOKIE}=; Path=/; Max-Age=0"),
        };
        self.jar.add_cookie_str(&cookie, &self.origin);
    }

    /// The value of the gate's session cookie in the jar.
    fn gate_cookie(&self) -> Option<String> {
        let header = self.jar.cookies(&self.origin)?;
        header
            .to_str()
            .ok()?
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| *k == "_linkgate")
            .map(|(_, v)| v.to_string())
    }

    async fn open(&self, s: &Scenario, path: &str) -> reqwest::Response {
        navigate(self.http.get(s.gate.url(path)))
            .send()
            .await
            .unwrap()
    }

    async fn xhr(&self, s: &Scenario, path: &str) -> reqwest::Response {
        self.http
            .get(s.gate.url(path))
            .header("accept", "application/json")
            .header("sec-fetch-mode", "cors")
            .send()
            .await
            .unwrap()
    }
}

/// Links cloud account `account` to Magento.com `sso` as a person would (Method 1 from a
/// protected page, in a browser of its own); returns that browser.
async fn link(s: &Scenario, p: &Platform, account: &str, sso: &str) -> Browser {
    let b = Browser::new(s);
    b.platform(Some(&p.jwt(account)));
    let resp = b.open(s, "/projects").await;
    assert_eq!(resp.status(), 302, "an unlinked account is sent to connect");
    assert!(
        location(&resp).contains("intent=connect"),
        "{}",
        location(&resp)
    );
    let (resp, _) = s.follow(&b.http, resp, sso).await;
    assert_eq!(resp.status(), 200, "back on the page, linked");
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-linkgate-account-id"), Some(account));
    assert_eq!(seen.header("x-linkgate-link-status"), Some("linked"));
    b
}

/// Every answer the upstream gave so far named `account` nowhere.
fn upstream_never_saw(s: &Scenario, from: usize, account: &str) {
    for seen in s.upstream.seen().iter().skip(from) {
        assert_ne!(
            seen.header("x-linkgate-account-id"),
            Some(account),
            "the upstream was told {account} at {}",
            seen.uri
        );
        assert_ne!(
            seen.header("x-forwarded-user"),
            Some(account),
            "{}",
            seen.uri
        );
    }
}

// === 1. a valid JWT costs the store nothing ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_jwt_makes_no_session_and_no_store_command_when_repeated() {
    // `warn`: the unlinked account passes (grace), so every kind of client gets through.
    let s = scenario("warn").await;
    let p = Platform::of(&s);
    let redis = s.redis.as_ref().unwrap();
    let jwt = p.jwt("cloud-amy");
    let cookie = format!("{PLATFORM_COOKIE}={jwt}");
    let http = client_without_cookies();
    let keys_before = redis.cli(&["DBSIZE"]);

    // The first request verifies the JWT and reads its link: one GET.
    let before = commands(redis);
    let resp = http
        .get(s.gate.url("/oauth2/auth"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let first = ran_since(&before, &commands(redis));
    assert_eq!(first, BTreeMap::from([("get".to_string(), 1)]), "{first:?}");

    // Then 30 forward-auth checks, 30 navigations, 30 API calls and 30 userinfo reads with
    // the same JWT: all pass, none writes or even reads the store.
    let before = commands(redis);
    for _ in 0..30 {
        let resp = http
            .get(s.gate.url("/oauth2/auth"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.headers()["x-auth-request-user"], "cloud-amy");
        assert_eq!(resp.headers()["x-linkgate-account-id"], "cloud-amy");
        assert!(set_cookies(&resp).is_empty(), "forward-auth sets no cookie");
    }
    for _ in 0..30 {
        let resp = navigate(http.get(s.gate.url("/projects")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            set_cookies(&resp)
                .iter()
                .all(|c| !c.starts_with("_linkgate")),
            "no session cookie for a JWT alone: {:?}",
            set_cookies(&resp)
        );
    }
    for _ in 0..30 {
        let resp = http
            .get(s.gate.url("/api/items"))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    for _ in 0..30 {
        let resp = http
            .get(s.gate.url("/oauth2/userinfo"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["account"]["subject"], "cloud-amy");
        assert_eq!(v["linked"], false);
    }
    let ran = ran_since(&before, &commands(redis));
    assert!(
        ran.is_empty(),
        "120 requests with a remembered JWT ran {ran:?}"
    );
    assert!(sessions(redis).is_empty(), "no session was written");
    assert_eq!(redis.cli(&["DBSIZE"]), keys_before, "Redis did not grow");
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-linkgate-account-id"), Some("cloud-amy"));
    assert_eq!(seen.header("x-linkgate-link-status"), Some("grace"));
    // One signature check for all of them (userinfo looks the JWT up twice: once to let
    // the request in, once for the identities it shows).
    s.gate
        .metrics_containing("linkgate_token_cache_total{result=\"miss\"} 1\n")
        .await;
    s.gate
        .metrics_containing("linkgate_token_cache_total{result=\"hit\"} 150\n")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jwts_and_navigations_of_an_unlinked_account_do_not_grow_the_store_per_request() {
    let s = scenario("enforce").await;
    let p = Platform::of(&s);
    let redis = s.redis.as_ref().unwrap();
    let http = client_without_cookies();
    // Forward-auth and API clients of an unlinked account: refused, nothing written.
    let jwt = p.jwt("cloud-ike");
    let cookie = format!("{PLATFORM_COOKIE}={jwt}");
    for _ in 0..30 {
        let resp = http
            .get(s.gate.url("/oauth2/auth"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "unlinked while enforcing");
        let resp = http
            .get(s.gate.url("/api/items"))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let www = resp.headers()["www-authenticate"].to_str().unwrap();
        assert!(www.contains("insufficient_user_authentication"), "{www}");
    }
    assert!(sessions(redis).is_empty());
    // A browser that ignores cookies and navigates again and again with the same JWT: the
    // connect step needs a session, but it is the same one every time, written once.
    let mut gate_cookies = std::collections::HashSet::new();
    let before = commands(redis);
    for _ in 0..20 {
        let resp = navigate(http.get(s.gate.url("/projects")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302);
        assert!(location(&resp).contains("intent=connect"));
        let c = set_cookies(&resp)
            .into_iter()
            .find(|c| c.starts_with("_linkgate="))
            .expect("a session for the connect step");
        gate_cookies.insert(c.split(';').next().unwrap().to_string());
    }
    assert_eq!(sessions(redis).len(), 1, "one session for one JWT");
    assert_eq!(gate_cookies.len(), 1, "the same session every time");
    let ran = ran_since(&before, &commands(redis));
    assert_eq!(ran.get("set"), Some(&1), "written once: {ran:?}");
    // Forward-auth with that session's cookie and no JWT: the session followed the JWT,
    // which is gone, so it is refused (and the session ended).
    let gate_cookie = gate_cookies.into_iter().next().unwrap();
    let resp = http
        .get(s.gate.url("/oauth2/auth"))
        .header("cookie", &gate_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(sessions(redis).is_empty(), "the session went with its JWT");
}

// === 2. a session follows the platform's current JWT ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_from_a_jwt_follows_the_platform_jwt() {
    let s = scenario("enforce").await;
    let p = Platform::of(&s);
    let redis = s.redis.as_ref().unwrap();
    // Bob's account is linked (in another browser); Ann links hers in this one.
    drop(link(&s, &p, "cloud-bob", "bob@magento.test").await);
    let b = link(&s, &p, "cloud-ann", "ann@magento.test").await;
    let ann_session = b.gate_cookie().expect("a gate session for Ann");
    // Served from the session cache from now on.
    for _ in 0..3 {
        assert_eq!(b.open(&s, "/projects").await.status(), 200);
        assert_eq!(
            s.upstream.last().header("x-linkgate-account-id"),
            Some("cloud-ann")
        );
    }
    let from = s.upstream.count();

    // The platform now names Bob: the upstream sees Bob (linked to bob@magento.test), never
    // Ann, and Ann's gate session is ended and its cookie cleared.
    b.platform(Some(&p.jwt("cloud-bob")));
    let before = sessions(redis).len();
    let resp = b.open(&s, "/projects").await;
    assert_eq!(resp.status(), 200);
    assert!(clears_gate_cookie(&resp), "{:?}", set_cookies(&resp));
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-linkgate-account-id"), Some("cloud-bob"));
    assert_eq!(
        seen.header("x-linkgate-sso-subject"),
        Some("bob@magento.test")
    );
    assert_eq!(sessions(redis).len(), before - 1, "Ann's session is gone");
    upstream_never_saw(&s, from, "cloud-ann");
    upstream_never_saw(&s, from, "ann@magento.test");

    // Replaying Ann's gate cookie next to Bob's JWT does not bring Ann back.
    let http = client_without_cookies();
    let resp = http
        .get(s.gate.url("/oauth2/auth"))
        .header(
            "cookie",
            format!(
                "_linkgate={ann_session}; {PLATFORM_COOKIE}={}",
                p.jwt("cloud-bob")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-linkgate-account-id"], "cloud-bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_from_a_jwt_ends_when_the_jwt_names_an_unlinked_account_or_is_gone() {
    let s = scenario("enforce").await;
    let p = Platform::of(&s);
    let redis = s.redis.as_ref().unwrap();
    let b = link(&s, &p, "cloud-ann", "ann@magento.test").await;
    assert_eq!(b.open(&s, "/projects").await.status(), 200);
    let from = s.upstream.count();

    // Another account, not linked: an API call is refused, forward-auth too; never Ann.
    b.platform(Some(&p.jwt("cloud-cy")));
    let resp = b.xhr(&s, "/api/items").await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "link_required", "{body}");
    // The browser's session is gone; navigating now asks Cy to connect.
    let resp = b.open(&s, "/projects").await;
    assert_eq!(resp.status(), 302);
    assert!(
        location(&resp).contains("intent=connect"),
        "{}",
        location(&resp)
    );
    upstream_never_saw(&s, from, "cloud-ann");
    assert_eq!(s.upstream.count(), from, "nothing reached the upstream");

    // The account page, with Cy's JWT, shows Cy, not Ann.
    let page: Value = b
        .http
        .get(s.gate.url("/oauth2/link"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["status"], "not_connected", "{page}");
    assert!(
        page["account"].as_str().unwrap().contains("cloud-cy"),
        "{page}"
    );

    // Back to Ann: a session for her account page, then the platform signs her out.
    b.platform(Some(&p.jwt("cloud-ann")));
    let resp = b.open(&s, "/oauth2/link").await;
    assert_eq!(resp.status(), 200);
    assert!(b.gate_cookie().is_some(), "the account page made a session");
    assert_eq!(b.open(&s, "/projects").await.status(), 200);
    let from = s.upstream.count();
    let before = sessions(redis).len();
    b.platform(None);
    let resp = b.open(&s, "/projects").await;
    assert_eq!(resp.status(), 302, "sent to sign in");
    assert!(
        location(&resp).contains("/oauth2/start?rd=%2Fprojects"),
        "{}",
        location(&resp)
    );
    assert!(clears_gate_cookie(&resp), "{:?}", set_cookies(&resp));
    assert_eq!(sessions(redis).len(), before - 1);
    assert_eq!(b.gate_cookie(), None);
    assert_eq!(s.upstream.count(), from);
    let resp = b.xhr(&s, "/api/items").await;
    assert_eq!(resp.status(), 401);
}

// === 3. expired or invalid on a navigation: sign in; on an API call: 401 ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_jwt_sends_a_browser_to_sign_in_and_an_api_client_gets_401() {
    let s = scenario("warn").await;
    let p = Platform::of(&s);
    let redis = s.redis.as_ref().unwrap();
    let b = Browser::new(&s);
    b.platform(Some(&p.jwt("cloud-eve")));
    // A gate session made from the JWT (the account page needs one).
    assert_eq!(b.open(&s, "/oauth2/link").await.status(), 200);
    assert!(b.gate_cookie().is_some());
    assert_eq!(b.open(&s, "/projects").await.status(), 200);
    assert_eq!(sessions(redis).len(), 1);
    let from = s.upstream.count();

    // The platform's JWT expired (past the 60 s leeway).
    let expired = p.jwt_with(
        "cloud-eve",
        json!({"iat": now() - 1200, "exp": now() - 600}),
    );
    b.platform(Some(&expired));
    let resp = b.open(&s, "/projects?tab=2").await;
    assert_eq!(resp.status(), 302);
    assert!(
        location(&resp).ends_with("/oauth2/start?rd=%2Fprojects%3Ftab%3D2"),
        "{}",
        location(&resp)
    );
    assert!(clears_gate_cookie(&resp), "{:?}", set_cookies(&resp));
    assert!(sessions(redis).is_empty(), "the session went with its JWT");
    assert_eq!(s.upstream.count(), from);

    // An API client with the expired JWT: 401 JSON with WWW-Authenticate.
    let resp = b.xhr(&s, "/api/items").await;
    assert_eq!(resp.status(), 401);
    let www = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(www.contains("invalid_token"), "{www}");
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token", "{body}");
    // Forward-auth too.
    let resp = client_without_cookies()
        .get(s.gate.url("/oauth2/auth"))
        .header("cookie", format!("{PLATFORM_COOKIE}={expired}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // The sign-in it was sent to works: a Magento.com session, which does not follow the
    // platform's JWT, gets the person through.
    let resp = b.open(&s, "/projects").await;
    let (resp, _) = s.follow(&b.http, resp, "eve@magento.test").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-sso-subject"),
        Some("eve@magento.test")
    );
    upstream_never_saw(&s, from, "cloud-eve");
}

// === 4. forged JWTs ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_platform_jwts_are_refused() {
    let s = scenario("warn").await;
    let p = Platform::of(&s);
    let redis = s.redis.as_ref().unwrap();
    let other_key = support::oidc::generate_key("platform");
    use base64::Engine as _;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let hmac = |secret: &[u8]| {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("platform".into());
        jsonwebtoken::encode(
            &h,
            &p.claims("cloud-mal", json!({})),
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let valid = p.jwt("cloud-mal");
    let mut parts: Vec<&str> = valid.split('.').collect();
    let other_claims = b64(&p.claims("cloud-vic", json!({})));
    parts[1] = &other_claims;
    let spliced = parts.join(".");
    let sso_signed = s
        .provider
        .sign_jwt(&json!({"iss": s.provider.issuer(), "aud": PLATFORM_AUDIENCE, "sub": "cloud-mal", "exp": now() + 600}))
        .await;
    let forged = [
        (
            "another key, same kid",
            Platform::sign_with(&other_key.pem, &p.claims("cloud-mal", json!({}))),
        ),
        (
            "wrong audience",
            p.jwt_with("cloud-mal", json!({"aud": "someone-else"})),
        ),
        (
            "wrong issuer",
            p.jwt_with("cloud-mal", json!({"iss": s.provider.issuer()})),
        ),
        ("no exp", p.jwt_with("cloud-mal", json!({"exp": null}))),
        (
            "not yet valid",
            p.jwt_with("cloud-mal", json!({"nbf": now() + 3600})),
        ),
        (
            "expired",
            p.jwt_with(
                "cloud-mal",
                json!({"iat": now() - 1200, "exp": now() - 600}),
            ),
        ),
        ("no subject", p.jwt_with("cloud-mal", json!({"sub": null}))),
        ("empty subject", p.jwt_with("cloud-mal", json!({"sub": ""}))),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "platform"})),
                b64(&p.claims("cloud-mal", json!({})))
            ),
        ),
        (
            "HS256 keyed with the public key",
            hmac(p.public_pem.as_bytes()),
        ),
        ("HS256 keyed with nothing", hmac(b"")),
        ("claims of another token under a valid signature", spliced),
        ("signed by the Magento.com provider", sso_signed),
        ("garbage", "not.a.jwt".to_string()),
    ];
    let http = client_without_cookies();
    for (what, token) in &forged {
        let cookie = format!("{PLATFORM_COOKIE}={token}");
        let resp = navigate(http.get(s.gate.url("/projects")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "{what}: a browser is sent to sign in");
        assert!(location(&resp).contains("/oauth2/start?rd="), "{what}");
        assert!(
            set_cookies(&resp)
                .iter()
                .all(|c| !c.starts_with("_linkgate=")),
            "{what}"
        );
        let resp = http
            .get(s.gate.url("/api/items"))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        let www = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(www.contains("invalid_token"), "{what}: {www}");
        let resp = http
            .get(s.gate.url("/oauth2/auth"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{what}: forward-auth");
        let resp = navigate(http.get(s.gate.url("/oauth2/link")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "{what}: the account page");
        assert!(location(&resp).contains("/oauth2/start"), "{what}");
    }
    // Two platform cookies (one planted by a sibling subdomain): neither is believed.
    let two = format!(
        "{PLATFORM_COOKIE}={}; {PLATFORM_COOKIE}={}",
        p.jwt("cloud-mal"),
        p.jwt("cloud-vic")
    );
    let resp = http
        .get(s.gate.url("/oauth2/auth"))
        .header("cookie", &two)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "two platform cookies");
    assert_eq!(s.upstream.count(), 0, "nothing forged reached the upstream");
    assert!(sessions(redis).is_empty());
    // The same valid JWT sent twice is one JWT.
    let resp = http
        .get(s.gate.url("/oauth2/auth"))
        .header(
            "cookie",
            format!("{PLATFORM_COOKIE}={valid}; {PLATFORM_COOKIE}={valid}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-linkgate-account-id"], "cloud-mal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_jwt_of_the_same_account_keeps_the_session() {
    let s = scenario("enforce").await;
    let p = Platform::of(&s);
    let redis = s.redis.as_ref().unwrap();
    let b = link(&s, &p, "cloud-ray", "ray@magento.test").await;
    let session = b.gate_cookie().expect("a session");
    assert_eq!(b.open(&s, "/projects").await.status(), 200);
    let before = sessions(redis);
    // The platform issues a new JWT for the same account (another `iat`, another `exp`).
    let refreshed = p.jwt_with("cloud-ray", json!({"iat": now() + 1, "exp": now() + 900}));
    assert_ne!(refreshed, p.jwt("cloud-ray"));
    b.platform(Some(&refreshed));
    for _ in 0..3 {
        let resp = b.open(&s, "/projects").await;
        assert_eq!(resp.status(), 200);
        assert!(!clears_gate_cookie(&resp));
        let seen = s.upstream.last();
        assert_eq!(seen.header("x-linkgate-account-id"), Some("cloud-ray"));
        assert_eq!(
            seen.header("x-linkgate-sso-subject"),
            Some("ray@magento.test")
        );
    }
    assert_eq!(b.gate_cookie(), Some(session), "the same session");
    assert_eq!(sessions(redis), before, "nothing ended, nothing written");
}

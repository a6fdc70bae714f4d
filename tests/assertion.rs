//! The signed identity assertion against the real binary, a real OpenID provider and Redis:
//! the upstream verifies it with a standard JWT library (jsonwebtoken) and with the Node
//! example (examples/assertion/verify.mjs, node:crypto only), refuses forged, altered,
//! unsigned, expired and cross-upstream ones, never sees a client's copy, and two instances
//! rotate their shared key with the new key published before it signs.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use support::oidc::Account;
use support::sso::{navigate, user, Scenario, ScenarioBuilder, StoreKind};
use support::{client, require, GateBuilder};

const HEADER: &str = "x-linkgate-jwt-assertion";

async fn scenario(assertion: &str) -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .server(|b| format!("public_url = \"{}\"", b.url("")))
        .upstream_toml("audience = \"https://shop.test/\"")
        .toml(&format!("[assertion]\n{assertion}"))
        .provider(|o| {
            o.account(
                "ann",
                Account::new()
                    .email("ann@shop.test")
                    .groups(&["staff", "admins"]),
            )
        })
        .start()
        .await
}

/// `server.public_url` without its trailing slash.
fn issuer(s: &Scenario) -> String {
    s.gate.url("")
}

async fn jwks(url: &str) -> JwkSet {
    let resp = client().get(url).send().await.expect("jwks");
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.expect("jwks json")
}

/// Verifies like an upstream using a standard JWT library: the key by `kid` from the JWKS,
/// the algorithm allow-list, `iss`, `aud`, `exp`.
fn verify(token: &str, keys: &JwkSet, iss: &str, aud: &str) -> Result<Value, String> {
    let header = decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = keys.find(&kid).ok_or(format!("unknown kid {kid}"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    // The allow-list: never `none`, never an HMAC alg keyed with a public key.
    if !matches!(header.alg, Algorithm::ES256 | Algorithm::RS256) {
        return Err(format!("alg {:?} not allowed", header.alg));
    }
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[iss]);
    v.set_audience(&[aud]);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// Signs in as ann and asks for `/orders`; returns the assertion the upstream got.
async fn assertion_seen(s: &Scenario, http: &reqwest::Client) -> String {
    let resp = navigate(http.get(s.gate.url("/orders")))
        .header(HEADER, "forged-by-the-client")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.upstream
        .last()
        .header(HEADER)
        .expect("the upstream got an assertion")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_verifies_the_assertion_with_a_jwt_library_and_refuses_forgeries() {
    let s = scenario("").await;
    let http = user();
    let resp = s.sign_in(&http, "/orders", "ann").await;
    assert_eq!(resp.status(), 200);
    let token = assertion_seen(&s, &http).await;
    assert_ne!(
        token, "forged-by-the-client",
        "a client's copy never passes"
    );
    assert_eq!(
        s.upstream
            .last()
            .headers
            .iter()
            .filter(|(k, _)| k == HEADER)
            .count(),
        1
    );

    // The same key set on both listeners.
    let public = jwks(&s.gate.url("/oauth2/.well-known/jwks.json")).await;
    let admin = jwks(&s.gate.admin_url("/.well-known/jwks.json")).await;
    assert_eq!(
        serde_json::to_value(&public).unwrap(),
        serde_json::to_value(&admin).unwrap()
    );
    let header = decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256, "ES256 by default");

    let claims = verify(&token, &public, &issuer(&s), "https://shop.test/").expect("verifies");
    assert_eq!(claims["sub"], "ann");
    assert_eq!(claims["email"], "ann@shop.test");
    assert_eq!(claims["groups"], json!(["staff", "admins"]));
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 60, "60 s by default");

    // Made for this upstream, it is refused by another one (replay across upstreams).
    let other = verify(&token, &public, &issuer(&s), "https://admin.test/");
    assert!(other.unwrap_err().contains("InvalidAudience"));
    // Another issuer.
    assert!(verify(
        &token,
        &public,
        "https://elsewhere.test/",
        "https://shop.test/"
    )
    .is_err());

    // Altered claims: the signature no longer holds.
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged_claims = claims.clone();
    forged_claims["groups"] = json!(["staff", "admins", "root"]);
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(forged_claims.to_string()),
        parts[2]
    );
    assert!(verify(&altered, &public, &issuer(&s), "https://shop.test/").is_err());
    // Unsigned (`alg: none`) with the same kid.
    let none_header = json!({"alg": "none", "kid": header.kid, "typ": "JWT"});
    let unsigned = format!(
        "{}.{}.",
        B64.encode(none_header.to_string()),
        B64.encode(forged_claims.to_string())
    );
    assert!(verify(&unsigned, &public, &issuer(&s), "https://shop.test/").is_err());
    // Signed by an attacker's own key under linkgate's kid.
    let attacker = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let pem = openssl::pkey::PKey::from_ec_key(attacker)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    let mut forged_header = jsonwebtoken::Header::new(Algorithm::ES256);
    forged_header.kid = header.kid.clone();
    let forged = jsonwebtoken::encode(
        &forged_header,
        &forged_claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap();
    assert!(verify(&forged, &public, &issuer(&s), "https://shop.test/")
        .unwrap_err()
        .contains("InvalidSignature"));
    // Expired: the same claims a minute late.
    let mut stale = Validation::new(Algorithm::ES256);
    stale.set_audience(&["https://shop.test/"]);
    stale.leeway = 0;
    let jwk = public.find(header.kid.as_deref().unwrap()).unwrap();
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut late = decode::<Value>(&token, &key, &stale).unwrap().claims;
    late["exp"] = json!(iat - 1);
    let expired = format!("{}.{}.{}", parts[0], B64.encode(late.to_string()), parts[2]);
    assert!(verify(&expired, &public, &issuer(&s), "https://shop.test/").is_err());

    // The key lives in the store, sealed: no PEM in Redis.
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(
        redis.keys("linkgate:assertion:keys"),
        ["linkgate:assertion:keys"]
    );
    let raw = redis.cli(&["GET", "linkgate:assertion:keys"]);
    assert!(
        !raw.contains("PRIVATE KEY"),
        "sealed under the cookie secret"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_session_reuses_its_assertion_and_anonymous_routes_get_none() {
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .server(|b| format!("public_url = \"{}\"", b.url("")))
        .toml("[assertion]\n[authz]\nskip_auth_routes = [\"^/public/\"]")
        .start()
        .await;
    let http = user();
    s.sign_in(&http, "/a", "bob").await;
    let first = assertion_seen(&s, &http).await;
    let second = assertion_seen(&s, &http).await;
    assert_eq!(
        first, second,
        "reused while more than half its lifetime is left (bench/README.md says why)"
    );
    let keys = jwks(&s.gate.url("/oauth2/.well-known/jwks.json")).await;
    let claims =
        verify(&first, &keys, &issuer(&s), "app").expect("aud defaults to the upstream name");
    assert_eq!(claims["sub"], "bob");

    // A skip-auth route forwards no identity, and no client-made assertion either.
    let resp = client()
        .get(s.gate.url("/public/x"))
        .header("X-LINKGATE-JWT-ASSERTION", "eyJ.forged.x")
        .header("x_linkgate_jwt_assertion", "eyJ.forged.y")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(seen.uri, "/public/x");
    assert!(
        seen.headers.iter().all(|(k, _)| !k.contains("assertion")),
        "{:?}",
        seen.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_from_a_key_file_under_a_configured_header() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("assertion.pem");
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let pem = openssl::pkey::PKey::from_rsa(rsa)
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    std::fs::write(&key, pem).unwrap();
    let s = ScenarioBuilder::new(StoreKind::Memory)
        .server(|b| format!("public_url = \"{}\"", b.url("")))
        .toml(&format!(
            "[assertion]\nalgorithm = \"RS256\"\nkey_file = \"{}\"\nheader = \"X-Identity-Assertion\"\nlifetime = \"30s\"",
            key.display()
        ))
        .start()
        .await;
    let http = user();
    s.sign_in(&http, "/a", "carol").await;
    let resp = navigate(http.get(s.gate.url("/b")))
        .header("x-identity-assertion", "from-the-client")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.last();
    let token = seen.header("x-identity-assertion").unwrap();
    assert!(seen.header(HEADER).is_none());
    assert_eq!(decode_header(token).unwrap().alg, Algorithm::RS256);
    let keys = jwks(&s.gate.admin_url("/.well-known/jwks.json")).await;
    assert_eq!(keys.keys.len(), 1);
    let claims = verify(token, &keys, &issuer(&s), "app").unwrap();
    assert_eq!(claims["sub"], "carol");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        30
    );
}

/// The Node example verifier (examples/assertion/verify.mjs) as the upstream.
struct NodeVerifier {
    child: Child,
    port: u16,
}

impl NodeVerifier {
    fn start(jwks: &str, issuer: &str, audience: &str) -> Self {
        require("node", "apt-get install nodejs");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/assertion/verify.mjs");
        let port = support::free_port();
        let mut child = Command::new("node")
            .args([
                script,
                "--jwks",
                jwks,
                "--issuer",
                issuer,
                "--audience",
                audience,
            ])
            .args(["--listen", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), format!("READY {port}"));
        NodeVerifier { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for NodeVerifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_verify(jwks: &str, issuer: &str, audience: &str, token: &str) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/assertion/verify.mjs");
    let out = Command::new("node")
        .args([
            script,
            "--jwks",
            jwks,
            "--issuer",
            issuer,
            "--audience",
            audience,
        ])
        .args(["--token", token])
        .output()
        .expect("node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_verifies_real_assertions_and_refuses_the_rest() {
    let s = scenario("").await;
    let jwks_url = s.gate.admin_url("/.well-known/jwks.json");
    let iss = issuer(&s);
    // An upstream of its own, behind a second instance routed to the Node verifier.
    let node = NodeVerifier::start(&jwks_url, &iss, "node-app");
    let gate = GateBuilder::new()
        .server(&s.server_lines)
        .upstream_with("node-app", &node.url(""), "")
        .toml(&s.sections)
        .start();
    let http = user();
    s.sign_in(&http, "/orders", "ann").await;
    let cookie = http
        .get(s.gate.url("/oauth2/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 200);
    // The session cookie is for 127.0.0.1 (any port): the second instance shares the store.
    let resp = http.get(gate.url("/checkout")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["claims"]["sub"], "ann");
    assert_eq!(body["claims"]["aud"], "node-app");

    // Straight to the upstream, around the gate: a bare header, a forged token, and a real
    // assertion made for another upstream are all refused.
    let direct = client();
    let no_token = direct
        .get(node.url("/x"))
        .header("x-forwarded-user", "ann")
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let token = assertion_seen(&s, &http).await;
    let replayed = direct
        .get(node.url("/x"))
        .header(HEADER, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 401);
    let why: Value = replayed.json().await.unwrap();
    assert!(why["error"].as_str().unwrap().contains("aud"), "{why}");
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(r#"{"sub":"root","aud":"node-app"}"#),
        parts[2]
    );
    let resp = direct
        .get(node.url("/x"))
        .header(HEADER, &tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The one-shot form agrees.
    let (ok, out) = node_verify(&jwks_url, &iss, "https://shop.test/", &token);
    assert!(ok, "{out}");
    assert!(out.contains("\"sub\":\"ann\""), "{out}");
    let (ok, out) = node_verify(&jwks_url, &iss, "https://shop.test/", &tampered);
    assert!(!ok && out.contains("bad signature"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_rotate_one_key_set_publishing_each_key_before_it_signs() {
    // A key is published 2 s before it signs, a successor is made 5 s after it started to
    // sign, and an old key stays 2 s (the lifetime) after its successor starts, plus the
    // minute of clock skew the gate allows (which this test does not wait for).
    let s = scenario("rotate_every = \"5s\"\npublish_ahead = \"2s\"\nlifetime = \"2s\"").await;
    let b = s.another_gate();
    let http = user();
    s.sign_in(&http, "/orders", "ann").await;
    let iss = issuer(&s);
    let mut kids: Vec<String> = Vec::new();
    let mut last_of_first: Option<String> = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // Every assertion verifies against the JWKS the *other* instance served just before it
    // was made: no instance signs with a key another has not published.
    while kids.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rotation within 30 s: {kids:?}"
        );
        let published = jwks(&b.admin_url("/.well-known/jwks.json")).await;
        let resp = navigate(http.get(s.gate.url("/orders")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let token = s.upstream.last().header(HEADER).unwrap().to_string();
        let claims = verify(&token, &published, &iss, "https://shop.test/").unwrap_or_else(|e| {
            panic!("signed with a key not yet published by the other instance: {e}")
        });
        assert_eq!(claims["sub"], "ann");
        let kid = decode_header(&token).unwrap().kid.unwrap();
        if kids.last() != Some(&kid) {
            kids.push(kid);
        }
        if kids.len() == 1 {
            last_of_first = Some(token);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Right after the switch, the old key is still published by both instances: its last
    // assertions have not expired.
    for url in [
        s.gate.admin_url("/.well-known/jwks.json"),
        b.url("/oauth2/.well-known/jwks.json"),
    ] {
        let keys = jwks(&url).await;
        assert!(
            keys.find(&kids[0]).is_some(),
            "old key gone too early from {url}"
        );
        assert!(keys.find(&kids[1]).is_some());
    }
    let last = last_of_first.unwrap();
    let both = jwks(&b.admin_url("/.well-known/jwks.json")).await;
    let header = decode_header(&last).unwrap();
    let key = DecodingKey::from_jwk(both.find(header.kid.as_deref().unwrap()).unwrap()).unwrap();
    let mut sig_only = Validation::new(Algorithm::ES256);
    sig_only.validate_exp = false;
    sig_only.validate_aud = false;
    assert!(decode::<Value>(&last, &key, &sig_only).is_ok());
    // One key set in the store for both.
    let redis = s.redis.as_ref().unwrap();
    assert_eq!(redis.keys("linkgate:assertion:keys").len(), 1);
}

/// The njs module of Debian's nginx.
const NJS_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_js_module.so";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_the_njs_example_verifies_the_assertion() {
    require("nginx", "apt-get install nginx");
    assert!(
        std::path::Path::new(NJS_MODULE).is_file(),
        "nginx's njs module is not installed: apt-get install libnginx-mod-http-js (or run scripts/test)"
    );
    let s = scenario("").await;
    // nginx as the upstream "web", verifying with examples/assertion/assertion.js as
    // examples/assertion/nginx-njs.conf does.
    let dir = tempfile::tempdir().unwrap();
    let (port, app) = (support::free_port(), support::free_port());
    let d = dir.path().display();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/assertion/assertion.js"
    );
    // The verified claims go on to the "application" (a second server) as headers.
    let conf = format!(
        "load_module {NJS_MODULE};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         js_import assertion from {script};\n\
         js_var $assertion_jwks {jwks};\n  js_var $assertion_issuer {iss};\n\
         js_var $assertion_audience web;\n  js_var $assertion_header x-linkgate-jwt-assertion;\n\
         server {{\n    listen 127.0.0.1:{port};\n\
         location / {{\n      auth_request /_linkgate_assertion;\n\
         auth_request_set $assertion_sub $sent_http_x_assertion_sub;\n\
         auth_request_set $assertion_groups $sent_http_x_assertion_groups;\n\
         proxy_set_header X-Verified-Sub $assertion_sub;\n\
         proxy_set_header X-Verified-Groups $assertion_groups;\n\
         proxy_pass http://127.0.0.1:{app};\n    }}\n\
         location = /_linkgate_assertion {{ internal; js_content assertion.check; }}\n  }}\n\
         server {{\n    listen 127.0.0.1:{app};\n\
         location / {{ return 200 \"sub=$http_x_verified_sub groups=$http_x_verified_groups\\n\"; }}\n  }}\n}}\n",
        jwks = s.gate.admin_url("/.well-known/jwks.json"),
        iss = issuer(&s),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut nginx = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    support::wait_until("nginx to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let web = GateBuilder::new()
        .server(&s.server_lines)
        .upstream_with("web", &format!("http://127.0.0.1:{port}"), "")
        .toml(&s.sections)
        .start();
    let http = user();
    s.sign_in(&http, "/orders", "ann").await;
    let resp = http.get(web.url("/checkout")).send().await.unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert_eq!(status, 200, "{body}\n{log}");
    assert_eq!(body.trim(), "sub=ann groups=staff,admins");

    // Around the gate: nothing, a bare X-Forwarded-User, and the shop's assertion (another
    // audience) are all refused by nginx.
    let direct = client();
    let url = format!("http://127.0.0.1:{port}/checkout");
    let shop_token = assertion_seen(&s, &http).await;
    for (name, value) in [
        ("x-forwarded-user", "ann"),
        (HEADER, shop_token.as_str()),
        (HEADER, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbm4ifQ."),
    ] {
        let resp = direct.get(&url).header(name, value).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{name}: {value}");
    }
    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert!(log.contains("assertion refused: aud"), "{log}");
    let _ = nginx.kill();
    let _ = nginx.wait();
}

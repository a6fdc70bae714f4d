//! Micro-benchmarks of what linkgate does on every request, in-process and without I/O.
//!
//! `cargo bench --bench hot_path` (add `-- --quick` for a short run). Under `cargo test
//! --all-targets` each benchmark runs once as a smoke test.
//!
//! - `cookie/*`: encoding and verifying the session cookie (HMAC tag, base64url); a forged
//!   cookie is refused by the same arithmetic, before any store lookup.
//! - `seal/*`: sealing and opening a session record (XChaCha20-Poly1305), and opening plus
//!   deserialising it, which is what a session-store hit costs besides the network.
//! - `path/parse`: checking and canonicalising a request target for the decision and the
//!   upstream, on a plain path, a non-canonical one and a hostile one (refused).
//! - `rd/*`: the `rd` redirect policy on a local path, an allowed host and an attack.
//! - `jwt/verify_rs256`: `linkgate::oidc::verify::verify`, the function that checks bearer
//!   tokens and id_tokens, with an RS256 key from a real JWKS fetched over HTTP from a tiny
//!   loopback server in this file (fetched once, then served from the cache as in production).
//! - `jwt/bearer_cache_hit`: `linkgate::proxy::identify::identify` on a request carrying that
//!   same token once it is in the verified-token cache (`App::verified_tokens`): what a
//!   repeated bearer token costs per request (SHA-256, lookup, `exp` check, passport).
//!
//! - `assertion/*`: the signed identity assertion (`[assertion]`): a fresh ES256 and RS256
//!   signature of a typical identity's claims (what every request would pay if each got its
//!   own assertion), and `cached`, the reuse of one signed within the last half lifetime
//!   (what a cached session pays: the choice `src/assertion/` makes by these figures).
//!
//! `bench/run` measures the whole proxy under load; this file says where the time of one
//! request goes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use linkgate::app::{App, VerifiedToken};
use linkgate::config::Config;
use linkgate::oidc::jwks::Jwks;
use linkgate::oidc::verify::{verify, Expect};
use linkgate::oidc::Identity;
use linkgate::proxy::identify::{identify, Found};
use linkgate::proxy::path::{parse, EncodedSlashes};
use linkgate::redirect::RedirectPolicy;
use linkgate::session::cache::SessionCache;
use linkgate::session::cookie::{decode, encode, OpaqueId, Purpose};
use linkgate::session::keys::Keys;
use linkgate::session::seal::{open, seal};
use linkgate::session::SessionRecord;
use pingora::http::RequestHeader;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: [u8; 32] = *b"linkgate-bench-cookie-secret-32b";
const ISSUER: &str = "https://sso.bench.test";
const CLIENT_ID: &str = "linkgate";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// === cookie ===

fn cookie(c: &mut Criterion) {
    let keys = Keys::derive(&SECRET);
    let id = OpaqueId::random();
    let good = encode(&keys, Purpose::Session, &id);
    // Same length, last character changed: passes the length check, fails the tag.
    let mut forged = good.clone();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);

    let mut g = c.benchmark_group("cookie");
    g.bench_function("encode", |b| {
        b.iter(|| encode(black_box(&keys), Purpose::Session, black_box(&id)))
    });
    g.bench_function("decode_valid", |b| {
        b.iter(|| decode(black_box(&keys), Purpose::Session, black_box(&good)))
    });
    g.bench_function("decode_forged", |b| {
        b.iter(|| decode(black_box(&keys), Purpose::Session, black_box(&forged)))
    });
    g.bench_function("keys_derive", |b| {
        b.iter(|| Keys::derive(black_box(&SECRET)))
    });
    g.finish();
}

// === sealed session records ===

/// A session record shaped like a real one: both identities and a full token set (the
/// provider's JWTs dominate its size).
/// The session cache at the size the soak runs it (100k entries): a hit, a miss, and the
/// lookup of a verified bearer token by its SHA-256.
fn session_cache(c: &mut Criterion) {
    use sha2::{Digest, Sha256};
    let cache: SessionCache<u64> = SessionCache::new(150_000, std::time::Duration::from_secs(30));
    let ids: Vec<OpaqueId> = (0..100_000).map(|_| OpaqueId::random()).collect();
    for (i, id) in ids.iter().enumerate() {
        cache.insert(*id, std::sync::Arc::new(i as u64));
    }
    let absent = OpaqueId::random();
    let tokens: SessionCache<u64, [u8; 32]> =
        SessionCache::new(1000, std::time::Duration::from_secs(30));
    let token = "x".repeat(800);
    tokens.insert(
        Sha256::digest(token.as_bytes()).into(),
        std::sync::Arc::new(1),
    );
    let mut g = c.benchmark_group("session_cache");
    let mut i = 0;
    g.bench_function("hit", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            cache.get(&ids[i])
        })
    });
    g.bench_function("miss", |b| b.iter(|| cache.get(&absent)));
    g.bench_function("token_hash_and_hit", |b| {
        b.iter(|| {
            let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            tokens.get(&key)
        })
    });
    g.finish();
}

fn sample_record() -> SessionRecord {
    let jwtish = |n: usize| "x".repeat(n);
    let identity = |sub: &str| {
        json!({
            "issuer": ISSUER,
            "subject": sub,
            "email": format!("{sub}@example.test"),
            "email_verified": true,
            "name": "Bench User",
            "preferred_username": sub,
            "groups": ["staff", "developers"],
        })
    };
    let t = now() as i64;
    serde_json::from_value(json!({
        "sso": identity("bench-user"),
        "account": identity("cloud-account-1234"),
        "tokens": {
            "access_token": jwtish(900),
            "refresh_token": jwtish(43),
            "id_token": jwtish(1000),
            "expires_at": t + 3600,
        },
        "created_at": t,
        "expires_at": t + 8 * 3600,
    }))
    .expect("a session record from JSON")
}

fn sealed_records(c: &mut Criterion) {
    let keys = Keys::derive(&SECRET);
    let name = format!("linkgate:session:{}", OpaqueId::random().to_hex());
    let plain = serde_json::to_vec(&sample_record()).expect("serialise the record");
    let sealed = seal(&keys, name.as_bytes(), &plain);

    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(plain.len() as u64));
    g.bench_function("seal", |b| {
        b.iter(|| seal(black_box(&keys), name.as_bytes(), black_box(&plain)))
    });
    g.bench_function("open", |b| {
        b.iter(|| open(black_box(&keys), name.as_bytes(), black_box(&sealed)))
    });
    g.bench_function("open_and_deserialise", |b| {
        b.iter(|| {
            let plain = open(&keys, name.as_bytes(), black_box(&sealed)).expect("opens");
            serde_json::from_slice::<SessionRecord>(&plain).expect("parses")
        })
    });
    g.finish();
}

// === path normalisation ===

fn paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("path");
    for (label, target) in [
        ("plain", "/catalog/product/view/id/42?color=blue&size=m"),
        ("respelled", "//catalog/caf%c3%a9/view%2Did/42?color=blue"),
        (
            "hostile",
            "/static/..%252f..%2F;jsessionid=1/admin//./%2e%2e/customer\\account/%23frag?x",
        ),
    ] {
        g.bench_with_input(BenchmarkId::new("parse", label), target, |b, t| {
            b.iter(|| parse(black_box(t.as_bytes()), EncodedSlashes::Reject).is_ok())
        });
    }
    g.finish();
}

// === rd policy ===

fn redirects(c: &mut Criterion) {
    let policy = RedirectPolicy::new([".example.com".to_string(), "shop.test".to_string()]);
    let mut g = c.benchmark_group("rd");
    for (label, rd) in [
        ("local_path", "/checkout/cart?step=2"),
        ("allowed_host", "https://app.example.com/orders?id=7"),
        ("attack", "/%2F%2Fevil.com/%09x"),
    ] {
        g.bench_with_input(BenchmarkId::new("resolve", label), rd, |b, rd| {
            b.iter(|| policy.resolve(black_box(Some(rd))))
        });
    }
    g.finish();
}

// === JWT verification ===

/// Serves `body` as `application/json` to every connection, on a free loopback port.
async fn serve_json(body: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let body = Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                // One request per connection; its head fits in one read.
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let rsa = openssl::rsa::Rsa::generate(2048).expect("RSA key");
    let pem = rsa.private_key_to_pem().expect("PEM");
    let kid = "bench-key";
    let jwks_body = json!({
        "keys": [{
            "kty": "RSA",
            "kid": kid,
            "use": "sig",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(rsa.n().to_vec()),
            "e": URL_SAFE_NO_PAD.encode(rsa.e().to_vec()),
        }]
    })
    .to_string();

    let (jwks, token) = rt.block_on(async {
        let addr = serve_json(jwks_body).await;
        let url = url::Url::parse(&format!("http://{addr}/jwks")).expect("JWKS URL");
        let jwks = Jwks::new(
            url,
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
        );
        jwks.load()
            .await
            .expect("JWKS loads from the loopback server");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        let t = now();
        let claims = json!({
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "sub": "bench-user",
            "email": "bench-user@example.test",
            "groups": ["staff"],
            "iat": t,
            "exp": t + 24 * 3600,
        });
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(&pem).expect("encoding key"),
        )
        .expect("sign the token");
        (jwks, token)
    });

    let audiences = vec![CLIENT_ID.to_string()];
    let algs = [Algorithm::RS256];
    let expect = Expect {
        issuer: ISSUER,
        audiences: &audiences,
        algs: &algs,
        nonce: None,
        authorized_party: None,
        leeway: 60,
    };
    // The token must verify, or the benchmark would time a refusal.
    rt.block_on(verify(&jwks, &token, &expect))
        .expect("the bench token verifies");

    // A gate taking bearer tokens, with this token already verified: the entry is what
    // `proxy::identify` caches after a successful verification.
    let app = rt.block_on(async {
        let config = Config::parse(
            &format!(
                "[[upstreams]]\nname = \"app\"\nurl = \"http://127.0.0.1:1\"\n\
                 [sso]\nissuer = \"{ISSUER}\"\nclient_id = \"{CLIENT_ID}\"\n\
                 client_secret = \"s\"\n\
                 [session]\nstore = \"memory\"\n\
                 cookie_secret = \"q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng\"\n\
                 [authz]\nbearer_tokens = true\n"
            ),
            "bench.toml",
            &|_| None,
        )
        .expect("bench configuration");
        App::new(config).expect("bench app")
    });
    let identity = Identity {
        issuer: ISSUER.to_string(),
        subject: "bench-user".to_string(),
        email: Some("bench-user@example.test".to_string()),
        email_verified: false,
        name: None,
        preferred_username: None,
        groups: vec!["staff".to_string()],
    };
    let key: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(token.as_bytes()).into()
    };
    app.verified_tokens
        .as_ref()
        .expect("bearer tokens with a session cache have a token cache")
        .insert(
            key,
            Arc::new(VerifiedToken {
                identity,
                expires_at: i64::try_from(now()).expect("a timestamp") + 24 * 3600,
            }),
        );
    let mut req = RequestHeader::build("GET", b"/api/orders", None).expect("request");
    req.insert_header("authorization", format!("Bearer {token}"))
        .expect("authorization header");
    // It must be a hit, or the benchmark would time a verification (or a refusal).
    match rt.block_on(identify(&app, &req)) {
        Found::Passport(_) => {}
        other => panic!("the cached bearer token is not accepted: {other:?}"),
    }
    assert_eq!(app.metrics.token_cache_hit.get(), 1, "a cache hit");

    let mut g = c.benchmark_group("jwt");
    g.bench_function("verify_rs256", |b| {
        b.to_async(&rt)
            .iter(|| verify(&jwks, black_box(&token), &expect))
    });
    g.bench_function("bearer_cache_hit", |b| {
        b.to_async(&rt).iter(|| identify(&app, black_box(&req)))
    });
    g.finish();
}

// === assertion ===

/// An app whose `[assertion]` signs with a fresh key of `alg` from a key file.
fn assertion_app(alg: &str, dir: &std::path::Path) -> App {
    let key = match alg {
        "RS256" => openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()),
        _ => openssl::pkey::PKey::from_ec_key(
            openssl::ec::EcKey::generate(
                &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
                    .unwrap(),
            )
            .unwrap(),
        ),
    }
    .unwrap();
    let path = dir.join(format!("{alg}.pem"));
    std::fs::write(&path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let text = format!(
        "[server]\npublic_url = \"https://shop.bench.test\"\n\
         [assertion]\nalgorithm = \"{alg}\"\nkey_file = \"{}\"\n\
         [[upstreams]]\nname = \"app\"\nurl = \"http://127.0.0.1:1\"\naudience = \"https://shop.bench.test/\"\n",
        path.display()
    );
    App::new(Config::parse(&text, "bench.toml", &|_| None).unwrap()).unwrap()
}

fn assertions(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let who = Identity {
        issuer: ISSUER.into(),
        subject: "248289761001".into(),
        email: Some("ann@shop.test".into()),
        email_verified: true,
        name: Some("Ann".into()),
        preferred_username: Some("ann".into()),
        groups: vec!["staff".into(), "admins".into()],
    };
    let claims = bytes::Bytes::from(linkgate::assertion::claims_fragment(&who, Some(&who), None));
    let es = assertion_app("ES256", dir.path());
    let rs = assertion_app("RS256", dir.path());
    let (es, rs) = (es.signer.unwrap(), rs.signer.unwrap());
    let now = now() as i64;
    let mut g = c.benchmark_group("assertion");
    g.bench_function("sign_es256", |b| {
        b.iter(|| es.sign(black_box(&claims), 0, Some("linked"), now, 60))
    });
    g.bench_function("sign_rs256", |b| {
        b.iter(|| rs.sign(black_box(&claims), 0, Some("linked"), now, 60))
    });
    es.assertion(claims.clone(), 0, Some("linked")).unwrap();
    g.bench_function("cached", |b| {
        b.iter(|| es.assertion(black_box(claims.clone()), 0, Some("linked")))
    });
    g.finish();
}

criterion_group!(
    hot_path,
    assertions,
    cookie,
    session_cache,
    sealed_records,
    paths,
    redirects,
    jwt
);
criterion_main!(hot_path);

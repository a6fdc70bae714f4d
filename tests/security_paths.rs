//! Attacks on the path and host the gate decides on, against the real binary in front of nginx
//! (Magento's usual server), which reads paths its own way: decode once, resolve dots, merge
//! slashes. The rule under attack (src/proxy/path.rs): the upstream gets exactly the path the
//! decision was made on, so no spelling of a protected path can pass as a skip route.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::nginx::Nginx;
use support::{raw_get, raw_request, GateBuilder, Upstream};

const SECRET: &str = "TOP-SECRET-ADMIN";
const PUBLIC_BODY: &str = "public file";

fn nginx_site() -> Nginx {
    Nginx::serve(&[
        ("/public/x", PUBLIC_BODY),
        ("/public/app.css", PUBLIC_BODY),
        ("/admin/secret.txt", SECRET),
        ("/index.php", SECRET),
        ("/public/x?/secret.txt", SECRET),
    ])
}

fn gate_before(nginx: &Nginx, server: &str) -> support::Gate {
    GateBuilder::new()
        .upstream_with("shop", &nginx.url(), "")
        .server(server)
        .toml("[authz]\nskip_auth_routes = [\"^/public/\"]")
        .start()
}

/// Every member of the reported family, and the cousins a reader of the issue would try.
const ATTACKS: &[&str] = &[
    "/public/x%3F/../../admin/secret.txt",
    "/public/x%3f/%2e%2e/%2e%2e/admin/secret.txt",
    "/public/x%23/../../admin/secret.txt",
    "/public/x%253F/../../admin/secret.txt",
    "/public/%2e%2e/admin/secret.txt",
    "/public/%2E%2E%2Fadmin%2Fsecret.txt",
    "/public/%252e%252e/admin/secret.txt",
    "/public/.%2e/admin/secret.txt",
    "/admin/..;/public/x",
    "/public/..;/admin/secret.txt",
    "/admin\\..\\public\\x",
    "/public\\..\\admin\\secret.txt",
    "/public%5c..%5cadmin%5csecret.txt",
    "/public%2f..%2fadmin%2fsecret.txt",
    "/public/x%2F..%2F..%2Fadmin/secret.txt",
    "/public/.../admin/secret.txt",
    "/public/..%20/admin/secret.txt",
    "/admin./secret.txt",
    "/public/%c0%ae%c0%ae/admin/secret.txt",
    "/public/%ef%bc%8e%ef%bc%8e/admin/secret.txt",
    "/public/..%ef%bc%8fadmin%ef%bc%8fsecret.txt",
    "/public/%u002e%u002e/admin/secret.txt",
    "/public/x%00/../../admin/secret.txt",
    "/public/x;/../../admin/secret.txt",
    "x:/admin/secret.txt",
    "x:/public/../admin/secret.txt",
    "ftp://127.0.0.1/admin/secret.txt",
    "http://user@127.0.0.1/admin/secret.txt",
    "*",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_protected_path_passes_as_a_skip_route() {
    let nginx = nginx_site();
    let gate = gate_before(&nginx, "");
    let addr = gate.addr();

    // The skip route works, in its canonical and in harmless other spellings.
    for target in [
        "/public/x",
        "//public//x",
        "/public/%78",
        "/%70ublic/app.css",
    ] {
        let resp = raw_get(addr, target, &[]).await;
        assert_eq!(resp.status, 200, "{target}: {resp:?}");
        assert_eq!(resp.body, PUBLIC_BODY, "{target}");
    }
    // A protected path is protected.
    assert_eq!(raw_get(addr, "/admin/secret.txt", &[]).await.status, 401);

    let before = nginx.requests().len();
    for target in ATTACKS {
        let resp = raw_get(addr, target, &[]).await;
        assert!(!resp.body.contains(SECRET), "{target} leaked: {resp:?}");
        assert_eq!(resp.status, 400, "{target}: {resp:?}");
        // linkgate's own 400 names the reason; a few targets (userinfo) Pingora refuses
        // itself, before linkgate, with an empty 400.
        assert!(
            resp.body.is_empty()
                || resp.body.contains("Bad request")
                || resp.body.contains("bad_request"),
            "{target}: {}",
            resp.body
        );
    }
    assert_eq!(
        nginx.requests().len(),
        before,
        "a refused target reached the upstream: {:?}",
        &nginx.requests()[before..]
    );
    // What nginx received for the harmless spellings: the canonical path, never the raw one.
    let seen = nginx.requests();
    assert!(
        seen.contains(&"GET /public/x HTTP/1.1".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"GET /public/app.css HTTP/1.1".to_string()),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("//") || l.contains('%')),
        "{seen:?}"
    );

    let metrics = gate
        .metrics_containing("linkgate_refused_targets_total{reason=\"dot_segment\"}")
        .await;
    assert!(
        metrics.contains("reason=\"encoded_delimiter\""),
        "{metrics}"
    );
}

/// A differential fuzz over the real binary and nginx: random compositions of tricky pieces,
/// sent raw. Nothing that the gate forwards without a session may be anything but public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_paths_never_reach_a_protected_file() {
    let nginx = nginx_site();
    let gate = gate_before(&nginx, "");
    let addr = gate.addr();
    let pieces = prop::sample::select(vec![
        "/",
        "//",
        "public",
        "admin",
        "x",
        "secret.txt",
        "index.php",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        "%3f",
        "%3F",
        "?",
        "%23",
        "%25",
        "%252e",
        "%252f",
        "%253f",
        ";",
        "..;",
        "%3b",
        "%00",
        " ",
        "%20",
        "%70",
        "%c0%ae",
        "%ef%bc%8f",
        "%",
        "~",
    ]);
    let start = prop::sample::select(vec!["/", "/public/", "/public/x/", "/admin/"]);
    let strategy = (start, prop::collection::vec(pieces, 1..8))
        .prop_map(|(start, p)| format!("{start}{}", p.concat()));
    let mut runner = TestRunner::new(Config::default());
    use proptest::strategy::ValueTree;
    let targets: Vec<String> = (0..400)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect();
    let mut forwarded = 0;
    for target in &targets {
        if target.contains(' ') {
            // A space ends the request-target on the wire: not a path an attacker can send.
            continue;
        }
        let resp = raw_get(addr, target, &[]).await;
        assert!(
            !resp.body.contains(SECRET),
            "{target} reached a protected file: {resp:?}"
        );
        assert!(
            matches!(resp.status, 200 | 400 | 401 | 404),
            "{target}: unexpected {resp:?}"
        );
        if resp.status == 200 || resp.status == 404 {
            forwarded += 1;
        }
    }
    // Every request nginx saw was for the public tree.
    for line in nginx.requests() {
        let path = line.split(' ').nth(1).unwrap_or("");
        assert!(path.starts_with("/public/"), "nginx served {line:?}");
    }
    assert!(
        forwarded > 0,
        "the fuzz forwarded nothing: it tested nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_have_one_reading() {
    let upstream = Upstream::start().await;
    let gate = GateBuilder::new()
        .upstream_with("admin", &upstream.url(), "hosts = [\"admin.test\"]")
        .upstream("shop", &upstream)
        .toml("[authz]\nskip_auth_routes = [\"^/public/\"]")
        .start();
    let addr = gate.addr();
    let send = |head: String| async move {
        raw_request(addr, &format!("{head}Connection: close\r\n\r\n")).await
    };

    // Case and a trailing dot are spellings of one host: routed and forwarded canonically.
    let resp = send("GET /public/x HTTP/1.1\r\nHost: ADMIN.Test.\r\n".into()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(upstream.last().header("host"), Some("admin.test"));
    assert_eq!(
        upstream.last().header("x-forwarded-host"),
        Some("admin.test")
    );

    for (what, head) in [
        (
            "two Host headers",
            "GET /public/x HTTP/1.1\r\nHost: shop.test\r\nHost: admin.test\r\n",
        ),
        (
            "absolute-form naming another host",
            "GET http://admin.test/public/x HTTP/1.1\r\nHost: shop.test\r\n",
        ),
        (
            "userinfo in the target",
            "GET http://shop.test@admin.test/public/x HTTP/1.1\r\nHost: admin.test\r\n",
        ),
        (
            "a Host with a path",
            "GET /public/x HTTP/1.1\r\nHost: admin.test/x\r\n",
        ),
        (
            "a Host with userinfo",
            "GET /public/x HTTP/1.1\r\nHost: a@admin.test\r\n",
        ),
        (
            "a Host with an escape",
            "GET /public/x HTTP/1.1\r\nHost: adm%69n.test\r\n",
        ),
        (
            "a Host list",
            "GET /public/x HTTP/1.1\r\nHost: shop.test,admin.test\r\n",
        ),
        (
            "a non-http scheme",
            "GET x:/public/x HTTP/1.1\r\nHost: admin.test\r\n",
        ),
    ] {
        let before = upstream.count();
        let resp = send(head.to_string()).await;
        assert_eq!(resp.status, 400, "{what}: {resp:?}");
        assert_eq!(upstream.count(), before, "{what} reached the upstream");
    }

    // Absolute-form that agrees with Host is forwarded in origin-form.
    let resp =
        send("GET http://admin.test/public/x?a=1 HTTP/1.1\r\nHost: admin.test\r\n".into()).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(upstream.last().uri, "/public/x?a=1");
    assert_eq!(upstream.last().header("host"), Some("admin.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_are_refused_unless_kept_and_kept_ones_never_hide_dots() {
    let nginx = Nginx::serve(&[("/public/a/b", PUBLIC_BODY), ("/admin/secret.txt", SECRET)]);
    let strict = gate_before(&nginx, "");
    assert_eq!(
        raw_get(strict.addr(), "/public/a%2Fb", &[]).await.status,
        400
    );

    let keep = gate_before(&nginx, "encoded_slashes = \"keep\"");
    let resp = raw_get(keep.addr(), "/public/a%2Fb", &[]).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, PUBLIC_BODY);
    for target in [
        "/public/x%2F..%2F..%2Fadmin/secret.txt",
        "/public%2F..%2Fadmin/secret.txt",
        "/%2Fadmin/secret.txt",
        "/public/a%2F%2F..%2Fb",
    ] {
        let resp = raw_get(keep.addr(), target, &[]).await;
        assert_eq!(resp.status, 400, "{target}: {resp:?}");
        assert!(!resp.body.contains(SECRET));
    }
    assert!(
        nginx.requests().iter().all(|l| l.contains("/public/a%2Fb")),
        "{:?}",
        nginx.requests()
    );
}

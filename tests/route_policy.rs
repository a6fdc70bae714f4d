//! Per-route policy against the real binary, a real OpenID provider and Redis: each
//! `[[upstreams]]` entry and its `[[upstreams.rules]]` may set `allowed_groups`,
//! `email_domains`, `allowed_emails`, `require_link` and `skip_auth_routes`; the Magento admin
//! (`/admin`, `/index.php/admin`) admits a smaller group than the storefront; a refusal names
//! the rule; `linkgate check` reports rules that can never match.

mod support;

use support::oidc::Account;
use support::sso::{navigate, user, Accounts, Scenario, ScenarioBuilder, StoreKind};
use support::{client, linkgate_cli};

/// The Magento shop: staff of shop.test on the storefront, admins in the admin area, one
/// named person in `/vip`, static files for everyone.
const SHOP: &str = r#"email_domains = ["shop.test"]
skip_auth_routes = ["GET=^/static/"]

[[upstreams.rules]]
path_prefix = "/admin"
allowed_groups = ["admins"]

[[upstreams.rules]]
path_prefix = "/index.php/admin"
allowed_groups = ["admins"]

[[upstreams.rules]]
path_prefix = "/vip"
allowed_emails = ["ann@shop.test"]
"#;

async fn shop() -> Scenario {
    ScenarioBuilder::new(StoreKind::Redis)
        .upstream_toml(SHOP)
        .provider(|o| {
            o.account(
                "ann",
                Account::new()
                    .email("ann@shop.test")
                    .groups(&["staff", "admins"]),
            )
            .account(
                "bob",
                Account::new().email("bob@shop.test").groups(&["staff"]),
            )
            .account(
                "eve",
                Account::new().email("eve@evil.test").groups(&["admins"]),
            )
        })
        .start()
        .await
}

async fn status(s: &Scenario, http: &reqwest::Client, path: &str) -> (u16, String) {
    let resp = navigate(http.get(s.gate.url(path))).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_magento_admin_admits_only_admins_and_the_refusal_names_the_rule() {
    let s = shop().await;
    let bob = user();
    let resp = s.sign_in(&bob, "/catalog", "bob").await;
    assert_eq!(resp.status(), 200, "staff on the storefront");
    let before = s.upstream.count();
    for path in ["/admin", "/admin/sales/order", "/index.php/admin/dashboard"] {
        let (code, page) = status(&s, &bob, path).await;
        assert_eq!(code, 403, "{path}");
        assert!(page.contains("allowed_groups"), "{page}");
        assert!(page.contains("/admin"), "{page}");
        assert!(
            page.contains("upstreams[0].rules["),
            "the page names the rule: {page}"
        );
    }
    // Other spellings of the same path are read canonically (or refused), never let through.
    for path in [
        "/index.php/%61dmin",
        "/static/../admin",
        "//admin",
        "/admin/",
    ] {
        let (code, _) = status(&s, &bob, path).await;
        assert!(code == 403 || code == 400, "{path}: {code}");
    }
    // A prefix is matched at a segment boundary: /administrators is the storefront's.
    assert_eq!(status(&s, &bob, "/administrators").await.0, 200);
    assert_eq!(
        s.upstream.count(),
        before + 1,
        "only /administrators reached it"
    );

    let ann = user();
    s.sign_in(&ann, "/admin/sales", "ann").await;
    assert_eq!(status(&s, &ann, "/index.php/admin/x").await.0, 200);
    assert_eq!(s.upstream.last().uri, "/index.php/admin/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_allows_and_denies_per_route() {
    let s = shop().await;
    // email_domains (the upstream's own): eve is an admin, but of another domain.
    let eve = user();
    let outcome = s.begin_sign_in(&eve, "/catalog", "eve").await;
    let resp = s.finish_sign_in(&eve, &outcome).await;
    assert_eq!(resp.status(), 302);
    let (code, page) = status(&s, &eve, "/catalog").await;
    assert_eq!(code, 403);
    assert!(
        page.contains("email_domains") && page.contains("evil.test"),
        "{page}"
    );
    assert_eq!(
        status(&s, &eve, "/admin").await.0,
        403,
        "email_domains inherited by the rule"
    );

    // allowed_emails: only ann in /vip.
    let bob = user();
    s.sign_in(&bob, "/catalog", "bob").await;
    let (code, page) = status(&s, &bob, "/vip/lounge").await;
    assert_eq!(code, 403);
    assert!(page.contains("allowed_emails"), "{page}");
    let ann = user();
    s.sign_in(&ann, "/vip/lounge", "ann").await;
    assert_eq!(status(&s, &ann, "/vip/lounge").await.0, 200);

    // The same session alternates between policies: each verdict is the cached one, no
    // store read per request.
    let redis = s.redis.as_ref().unwrap();
    let gets = redis.calls("get");
    for _ in 0..3 {
        assert_eq!(status(&s, &bob, "/catalog").await.0, 200);
        assert_eq!(status(&s, &bob, "/admin").await.0, 403);
        assert_eq!(status(&s, &bob, "/vip").await.0, 403);
    }
    assert_eq!(
        redis.calls("get"),
        gets,
        "verdicts come from the cached passport"
    );

    // skip_auth_routes of the upstream: static files for anyone, GET only, and the rest
    // still asks for a login.
    let anonymous = client();
    let resp = anonymous
        .get(s.gate.url("/static/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(s.upstream.last().uri, "/static/app.css");
    assert!(s.upstream.last().header("x-forwarded-user").is_none());
    let resp = anonymous
        .post(s.gate.url("/static/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = navigate(anonymous.get(s.gate.url("/catalog")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_link_overrides_the_link_mode_per_route() {
    // Linking enforced everywhere except the help pages (off) and the beta area (warn).
    let s = ScenarioBuilder::new(StoreKind::Redis)
        .accounts(Accounts::OAuth2)
        .upstream_toml(
            "[[upstreams.rules]]\npath_prefix = \"/help\"\nrequire_link = \"off\"\n\n\
             [[upstreams.rules]]\npath_prefix = \"/beta\"\nrequire_link = \"warn\"\n",
        )
        .start()
        .await;
    let http = user();
    // Signed in with Magento.com only: not linked to a cloud account.
    let resp = s.sign_in(&http, "/help/start", "ann@magento.test").await;
    assert_eq!(resp.status(), 200, "linking is not asked on /help");
    assert!(s.upstream.last().header("x-linkgate-link-status").is_none());
    let (code, page) = status(&s, &http, "/projects").await;
    assert_ne!(code, 200, "enforced elsewhere");
    assert!(
        page.to_lowercase().contains("link") || page.contains("connect"),
        "{page}"
    );
    assert_eq!(
        s.upstream.last().uri,
        "/help/start",
        "nothing unlinked got past /help"
    );
    let (code, _) = status(&s, &http, "/beta/new").await;
    assert_eq!(code, 200);
    assert_eq!(
        s.upstream.last().header("x-linkgate-link-status"),
        Some("grace")
    );
    // An API client on an enforced route gets 401, not a page.
    let resp = http.get(s.gate.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn check_reports_rules_that_can_never_match() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        r#"[authz]
email_domains = ["shop.test"]

[[upstreams]]
name = "shop"
url = "http://127.0.0.1:9"
path_prefix = "/shop"
require_link = "enforce"

[[upstreams.rules]]
path_prefix = "/admin"
allowed_groups = ["admins"]

[[upstreams.rules]]
path_prefix = "/shop/api/admin"
allowed_groups = ["admins"]

[[upstreams.rules]]
path_prefix = "/shop/vip"
allowed_emails = ["ann@elsewhere.test", "bob@shop.test"]

[[upstreams.rules]]
path_prefix = "/shop/partners"
email_domains = ["partner.test"]
allowed_emails = ["carl@shop.test"]

[[upstreams.rules]]
path_prefix = "/shop/empty"

[[upstreams]]
name = "api"
url = "http://127.0.0.1:9"
path_prefix = "/shop/api"
"#,
    )
    .unwrap();
    let (code, _out, err) = linkgate_cli(&["check", "-c", path.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "findings are warnings: {err}");
    let line = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{err}"))
            .to_string()
    };
    let outside = line("outside this upstream's path_prefix");
    assert!(
        outside.contains("upstreams[0].rules[0]") && outside.contains(":10:1:"),
        "{outside}"
    );
    let shadowed = line("go to upstream `api`");
    assert!(shadowed.contains("upstreams[0].rules[1]"), "{shadowed}");
    let never = line("can never pass: ann@elsewhere.test");
    assert!(
        never.contains("upstreams[0].rules[2].allowed_emails"),
        "{never}"
    );
    let nobody = line("no one can pass");
    assert!(
        nobody.contains("upstreams[0].rules[3]") && nobody.contains("carl@shop.test"),
        "{nobody}"
    );
    assert!(line("sets no policy key").contains("upstreams[0].rules[4]"));
    assert!(
        line("has no effect without an [account] section").contains("upstreams[0].require_link")
    );
}

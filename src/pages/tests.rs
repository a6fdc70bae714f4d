//! The page renderer's tests: templates, escaping, the catalogue in pages.

use super::*;

#[test]
fn the_built_in_templates_compile() {
    environment(None, Arc::new(Catalogues::load(None).unwrap())).unwrap();
}

fn request(accept_language: &str) -> http::request::Parts {
    http::Request::builder()
        .header("accept-language", accept_language)
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[test]
fn the_account_page_speaks_swedish_when_asked_and_english_otherwise() {
    let v = AccountView {
        sso_name: "Magento.com".into(),
        account_name: "accounts.magento.cloud".into(),
        account: Some("ann@cloud.test".into()),
        csrf: "tok".into(),
        ..AccountView::default()
    };
    let ctx = PageContext::default();
    let sv = account_page(&ctx.for_request(&request("sv-SE,sv;q=0.9,en;q=0.8")), &v);
    assert!(sv.contains("<html lang=\"sv\">"), "{sv}");
    assert!(sv.contains("<h1>Kontoinställningar</h1>"), "{sv}");
    assert!(sv.contains("<h2 id=\"sso\">Enkel inloggning</h2>"), "{sv}");
    assert!(sv.contains("<dd id=\"status\">Inte ansluten</dd>"), "{sv}");
    assert!(sv.contains(">Anslut med Magento.com</button>"), "{sv}");
    assert!(
        sv.contains("Inloggad på accounts.magento.cloud som <strong>ann@cloud.test</strong>."),
        "{sv}"
    );
    let en = account_page(&ctx.for_request(&request("fr")), &v);
    assert!(en.contains("<html lang=\"en\">"), "{en}");
    assert!(en.contains("<dd id=\"status\">Not Connected</dd>"), "{en}");
}

#[test]
fn the_configured_language_is_the_default_and_languages_limit_the_choice() {
    let fixed = crate::config::Pages {
        language: "sv".into(),
        languages: vec!["sv".into()],
        ..Default::default()
    };
    let ctx = PageContext::load("Magento.com", "/oauth2", &fixed).unwrap();
    assert_eq!(ctx.lang(), "sv");
    assert_eq!(ctx.for_request(&request("en")).lang(), "sv", "fixed");
    let default_sv = crate::config::Pages {
        language: "sv".into(),
        ..Default::default()
    };
    let ctx = PageContext::load("Magento.com", "/oauth2", &default_sv).unwrap();
    assert_eq!(ctx.for_request(&request("de")).lang(), "sv");
    assert_eq!(ctx.for_request(&request("en-US")).lang(), "en");
}

#[test]
fn an_operator_template_without_the_catalogue_keeps_working() {
    // A template written before the catalogue existed: plain English, no `t()`, a
    // hard-coded `lang`.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.html"),
        "<!doctype html><html lang=\"en\"><title>{{ title }}</title><main>{% block main %}{% endblock %}</main></html>",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sign_out.html"),
        "{% extends \"base.html\" %}{% block main %}<form method=post action=\"{{ s.action }}\"><button>Log off</button></form>{% endblock %}",
    )
    .unwrap();
    let pages = crate::config::Pages {
        templates_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let ctx = PageContext::load("Magento.com", "/oauth2", &pages).unwrap();
    let html = sign_out_page(
        &ctx.for_request(&request("sv")),
        &SignOutView {
            action: "/oauth2/sign_out".into(),
            ..SignOutView::default()
        },
    );
    assert!(html.contains("<button>Log off</button>"), "{html}");
    assert!(html.contains("<title>Logga ut</title>"), "{html}");
    // A template naming a key the catalogue lacks is refused at start.
    std::fs::write(
        dir.path().join("message.html"),
        "{% extends \"base.html\" %}{% block main %}{{ t(\"page.no_such_key\") }}{% endblock %}",
    )
    .unwrap();
    let err = PageContext::load("Magento.com", "/oauth2", &pages).unwrap_err();
    assert!(err.contains("page.no_such_key"), "{err}");
}

#[test]
fn message_escapes_everything_dynamic() {
    let html = message(
        &PageContext::default(),
        "Access <denied>",
        "x\"><script>alert(1)</script>",
        "do & retry",
        Some("<img src=x>"),
        Some(("Try <again>", "/oauth2/start?rd=%2F&x=\"")),
    );
    assert!(!html.contains("<script>"));
    assert!(!html.contains("<img src=x>"));
    assert!(html.contains("Access &lt;denied&gt;"));
    assert!(html.contains("do &amp; retry"));
    assert!(html.contains("href=\"/oauth2/sign_out\""));
    assert!(
        html.contains("<title>Access &lt;denied&gt; · Magento.com sign-in</title>"),
        "{html}"
    );
}

#[test]
fn the_account_page_shows_the_single_sign_on_section() {
    let v = AccountView {
        sso_name: "Magento.com".into(),
        account_name: "accounts.magento.cloud".into(),
        account: Some("ann".into()),
        connected_as: Some("ann@example.com".into()),
        allow_disconnect: true,
        csrf: "tok".into(),
        ..AccountView::default()
    };
    let html = account_page(&PageContext::default(), &v);
    assert!(html.contains("<h2 id=\"sso\">Single Sign-On</h2>"));
    assert!(html.contains("<dd id=\"status\">Connected</dd>"));
    assert!(html.contains("Disconnect from Magento.com"));
    assert!(html.contains("value=\"tok\""));
}

#[test]
fn operators_override_templates_and_broken_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("message.html"),
        "{% extends \"base.html\" %}{% block main %}<p class=custom>{{ what }}</p>{% endblock %}",
    )
    .unwrap();
    let pages = crate::config::Pages {
        templates_dir: Some(dir.path().to_path_buf()),
        banner: Some("Staging <env>".into()),
        ..Default::default()
    };
    let ctx = PageContext::load("Magento.com", "/oauth2", &pages).unwrap();
    let html = message(&ctx, "T", "custom text", "a", None, None);
    assert!(html.contains("<p class=custom>custom text</p>"), "{html}");
    assert!(html.contains("Staging &lt;env&gt;"));
    std::fs::write(dir.path().join("account.html"), "{% if %}").unwrap();
    let err = PageContext::load("Magento.com", "/oauth2", &pages).unwrap_err();
    assert!(err.contains("account.html"), "{err}");
}

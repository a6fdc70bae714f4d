use super::*;

fn parts(method: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri("/x");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn navigation_is_decided_by_sec_fetch_mode_first() {
    assert!(is_navigation(&parts(
        "GET",
        &[("sec-fetch-mode", "navigate")]
    )));
    assert!(!is_navigation(&parts(
        "GET",
        &[("sec-fetch-mode", "cors"), ("accept", "text/html")]
    )));
    assert!(!is_navigation(&parts(
        "GET",
        &[("sec-fetch-mode", "no-cors"), ("sec-fetch-dest", "image")]
    )));
}

#[test]
fn accept_decides_without_fetch_metadata() {
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    assert!(is_navigation(&parts("GET", &[("accept", browser)])));
    assert!(!is_navigation(&parts("POST", &[("accept", browser)])));
    assert!(!is_navigation(&parts(
        "GET",
        &[("accept", "application/json")]
    )));
    assert!(!is_navigation(&parts("GET", &[("accept", "*/*")])));
    assert!(!is_navigation(&parts("GET", &[])));
    assert!(!is_navigation(&parts(
        "GET",
        &[("accept", "application/json, text/html;q=0.5")]
    )));
    assert!(!is_navigation(&parts(
        "GET",
        &[
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest")
        ]
    )));
    assert!(!is_navigation(&parts(
        "GET",
        &[("accept", "text/html;q=0")]
    )));
}

#[test]
fn every_reply_has_length_and_no_store() {
    let r = Reply::redirect("/oauth2/start?rd=%2F").header().unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["content-length"], "0");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["location"], "/oauth2/start?rd=%2F");
    let j = Reply::json(StatusCode::UNAUTHORIZED, &json!({"a": 1}));
    let h = j.header().unwrap();
    assert_eq!(h.headers["content-length"], j.body().len().to_string());
}

#[test]
fn internal_detail_never_reaches_the_client() {
    let ctx = pages::PageContext::default();
    let detail = "discovery at http://10.0.0.7:8080/.well-known/openid-configuration: status 500";
    for refusal in [
        Refusal::ProviderUnavailable(detail.into()),
        Refusal::InvalidToken(detail.into()),
    ] {
        for html in [true, false] {
            let reply = refusal.reply(html, &ctx);
            let body = String::from_utf8_lossy(reply.body());
            assert!(!body.contains("10.0.0.7"), "{body}");
            assert!(!body.contains("status 500"), "{body}");
        }
    }
}

#[test]
fn refusals_speak_the_language_of_the_request_and_keep_english_codes() {
    let ctx = pages::PageContext::default();
    let req = parts("GET", &[("accept-language", "sv-SE,sv;q=0.9,en;q=0.5")]);
    let sv = ctx.for_request(&req);
    assert_eq!(sv.lang(), "sv");
    let refusal = Refusal::SignInFailed {
        why: Text::new("sign_in.expired"),
        retry: "/oauth2/start?rd=%2F".into(),
    };
    let page = String::from_utf8_lossy(refusal.reply(true, &sv).body()).into_owned();
    assert!(page.contains("<html lang=\"sv\">"), "{page}");
    assert!(
        page.contains("Den här inloggningen tog längre tid än tio minuter."),
        "{page}"
    );
    assert!(page.contains(">Försök igen</a>"), "{page}");
    assert!(
        page.contains("<title>Inloggningen slutfördes inte · Inloggning med Magento.com</title>"),
        "{page}"
    );
    let api: serde_json::Value = serde_json::from_slice(refusal.reply(false, &sv).body()).unwrap();
    assert_eq!(api["error"], "sign_in_failed");
    assert_eq!(
        api["message"],
        "Den här inloggningen tog längre tid än tio minuter."
    );
    // The default stays English.
    let en = ctx.for_request(&parts("GET", &[("accept-language", "de")]));
    let page = String::from_utf8_lossy(refusal.reply(true, &en).body()).into_owned();
    assert!(
        page.contains("This sign-in took longer than ten minutes."),
        "{page}"
    );
    assert!(page.contains("<html lang=\"en\">"), "{page}");
}

#[test]
fn refusals_answer_browsers_with_pages_and_apis_with_json() {
    let ctx = pages::PageContext::default();
    let page = Refusal::BadGateway.reply(true, &ctx);
    assert_eq!(page.status(), StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(page.body()).contains("<title>Application unreachable"));
    assert!(String::from_utf8_lossy(page.body()).contains("<html lang=\"en\">"));
    let api = Refusal::Unauthenticated.reply(false, &ctx);
    let v: serde_json::Value = serde_json::from_slice(api.body()).unwrap();
    assert_eq!(v["error"], "unauthenticated");
    let h = api.header().unwrap();
    assert!(h.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
}

use super::*;

/// A `GET` asking for pages in `accept_language`.
fn asking_in(accept_language: &str) -> http::request::Parts {
    let req = http::Request::builder()
        .uri("/x")
        .header("accept-language", accept_language);
    req.body(()).unwrap().into_parts().0
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
    let req = asking_in("sv-SE,sv;q=0.9,en;q=0.5");
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
    let en = ctx.for_request(&asking_in("de"));
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

use super::*;
use serde_json::json;

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

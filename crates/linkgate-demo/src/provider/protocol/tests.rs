use super::*;

#[test]
fn pkce_s256_matches_rfc_7636_appendix_b() {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    assert!(is_verifier(verifier));
    assert!(is_s256_challenge(challenge));
    assert!(pkce_matches(verifier, challenge));
    assert!(!pkce_matches(
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
        challenge
    ));
    // `plain` would send the verifier itself as the challenge: it never matches.
    assert!(!pkce_matches(verifier, verifier));
}

#[test]
fn verifiers_are_43_to_128_unreserved_characters() {
    assert!(!is_verifier(&"a".repeat(42)));
    assert!(is_verifier(&"a".repeat(128)));
    assert!(!is_verifier(&"a".repeat(129)));
    assert!(!is_verifier(&format!("{}+", "a".repeat(42))));
}

fn with_header(name: &str, value: &str) -> RequestHeader {
    let mut req = RequestHeader::build("POST", b"/token", None).expect("request");
    req.insert_header(name.to_string(), value).expect("header");
    req
}

#[test]
fn basic_credentials_are_form_decoded() {
    // RFC 6749 2.3.1: "a b" and "p:w%" are form-urlencoded before base64.
    let raw = STANDARD.encode("a+b:p%3Aw%25");
    let req = with_header("authorization", &format!("Basic {raw}"));
    assert_eq!(
        basic_credentials(&req),
        Some(Ok(("a b".to_string(), "p:w%".to_string())))
    );
    let req = with_header("authorization", "Basic !!!");
    assert_eq!(basic_credentials(&req), Some(Err(())));
    let req = with_header("authorization", "Bearer x");
    assert_eq!(basic_credentials(&req), None);
}

#[test]
fn cookies_are_found_by_exact_name() {
    let req = with_header("cookie", "x_session=1; session=2; other=3");
    assert_eq!(cookie(&req, "session"), Some("2"));
    assert_eq!(cookie(&req, "sess"), None);
}

#[test]
fn cross_site_forms_are_refused() {
    let mut req = with_header("host", "127.0.0.1:4181");
    assert!(same_origin(&req));
    req.insert_header("origin", "http://127.0.0.1:4181")
        .expect("origin");
    assert!(same_origin(&req));
    req.insert_header("origin", "http://evil.example")
        .expect("origin");
    assert!(!same_origin(&req));
    let mut req = with_header("sec-fetch-site", "cross-site");
    req.insert_header("host", "127.0.0.1:4181").expect("host");
    assert!(!same_origin(&req));
}

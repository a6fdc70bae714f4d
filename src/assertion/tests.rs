use super::*;
use crate::config::Algorithm;

#[test]
fn claims_are_ascii_json_members() {
    let who = crate::oidc::Identity {
        email: Some("zoë@shop.test".into()),
        groups: vec!["staff".into(), "a\"b".into()],
        ..crate::oidc::Identity::sample("https://sso.test", "ann")
    };
    let f = claims_fragment(&who, Some(&who), None);
    assert!(f.is_ascii(), "{f}");
    let v: serde_json::Value = serde_json::from_str(&format!("{{{f}}}")).unwrap();
    assert_eq!(v["email"], "zoë@shop.test");
    assert_eq!(v["groups"][1], "a\"b");
    assert_eq!(v["sub"], "ann");
    assert!(v.get("account_id").is_none());
}

#[test]
fn generated_keys_sign_what_their_jwk_verifies() {
    for alg in [Algorithm::ES256, Algorithm::RS256] {
        let (pem, kid) = generate(alg).unwrap();
        let key = SigningKey::new(&StoredKey {
            kid: kid.clone(),
            alg,
            pem,
            created: 0,
            signs_from: 0,
        })
        .unwrap();
        let input = format!(
            "{}{}",
            key.header,
            B64.encode(r#"{"sub":"x","exp":9999999999}"#)
        );
        let token = format!("{input}.{}", key.sign(input.as_bytes()).unwrap());
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk.clone()).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let alg_j = match alg {
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        };
        let mut v = jsonwebtoken::Validation::new(alg_j);
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v).unwrap();
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().kid.unwrap(),
            kid
        );
    }
}

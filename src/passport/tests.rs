use http::HeaderName;

use super::*;
use crate::config::Config;
use crate::config::HeaderNames;
use crate::fixtures::Fixture;

fn config(extra: &str) -> Config {
    let text = format!("{}{extra}", Fixture::new().text());
    Config::parse(&text, "t.toml", &|_| None).unwrap()
}

fn rules(config: &Config, linking: bool) -> Rules<'_> {
    // Leaked: a test's few bytes, so that the rules may borrow them.
    let policies = Box::leak(Box::new(crate::policy::Policies::new(config)));
    Rules {
        headers: &config.headers,
        authz: &config.authz,
        linking,
        policies,
        assertions: false,
    }
}

fn proof<'a>(sso: Option<&'a Identity>, account: Option<&'a Identity>) -> Evidence<'a> {
    Evidence {
        via: Via::Session,
        session: None,
        sso,
        account,
        access_token: Some("at-1"),
        id_token: Some("it-1"),
        expires_at: 0,
    }
}

fn seen(headers: &IdentityHeaders, names: &HeaderNames, user: bool) -> Vec<(String, String)> {
    headers
        .iter(names, user)
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn packed_headers_come_back_with_their_configured_names() {
    let names = HeaderNames {
        user: HeaderName::from_static("x-remote-user"),
        ..HeaderNames::default()
    };
    let packed = IdentityHeaders::pack([
        (Field::User, "alice"),
        (Field::Email, "alice@shop.test"),
        (Field::Groups, "bad\nvalue"),
        (Field::SsoSubject, ""),
        (Field::AccountId, "acct-7"),
    ]);
    assert_eq!(
        seen(&packed, &names, true),
        pairs(&[
            ("x-remote-user", "alice"),
            ("x-forwarded-email", "alice@shop.test"),
            ("x-linkgate-sso-subject", ""),
            ("x-linkgate-account-id", "acct-7"),
        ]),
        "a value that is not header text is left out, an empty one kept"
    );
    assert_eq!(packed.len(), 4);
    assert_eq!(packed.get(Field::Groups), None);
    assert!(IdentityHeaders::default().is_empty());
}

#[test]
fn every_field_once_in_discriminant_order() {
    for (i, field) in Field::ALL.into_iter().enumerate() {
        assert_eq!(field as usize, i, "{field:?}");
    }
}

#[test]
fn upstream_names_are_title_cased_once() {
    let names = HeaderNames {
        user: HeaderName::from_static("x-remote-user"),
        ..HeaderNames::default()
    };
    let cased = CasedNames::new(&names);
    assert_eq!(cased.field(Field::User), "X-Remote-User");
    assert_eq!(cased.field(Field::SsoSubject), "X-Linkgate-Sso-Subject");
    assert_eq!(cased.field(Field::Authorization), "Authorization");
    assert_eq!(cased.link_status(), "X-Linkgate-Link-Status");
}

#[test]
fn values_past_64_kib_in_all_are_left_out_not_cut() {
    let big = "g".repeat(IdentityHeaders::MAX - 2);
    let packed = IdentityHeaders::pack([
        (Field::User, "bob"),
        (Field::Groups, big.as_str()),
        (Field::Email, "b@x.test"),
    ]);
    assert_eq!(packed.get(Field::User).unwrap(), "bob");
    assert!(packed.get(Field::Groups).is_none(), "3 + MAX - 2 bytes");
    assert_eq!(packed.get(Field::Email).unwrap(), "b@x.test");
}

#[test]
fn the_headers_follow_the_configuration_and_tokens_go_only_where_configured() {
    let alice = Identity {
        groups: vec!["staff".into(), "ops".into()],
        preferred_username: Some("al".into()),
        ..Identity::sample("https://sso.test", "alice")
    };
    let acct = Identity::sample("https://accounts.test", "acct-9");
    let names = HeaderNames::default();

    let plain = config("");
    let p = Passport::new(&rules(&plain, true), proof(Some(&alice), Some(&acct)));
    assert_eq!(
        seen(&p.headers, &names, true),
        pairs(&[
            ("x-forwarded-user", "alice"),
            ("x-forwarded-email", "alice@example.test"),
            ("x-forwarded-groups", "staff,ops"),
            ("x-forwarded-preferred-username", "al"),
            ("x-linkgate-sso-subject", "alice"),
            ("x-linkgate-account-id", "acct-9"),
        ])
    );
    assert_eq!(p.headers.get(Field::AccessToken), None);
    assert_eq!(p.headers.get(Field::Authorization), None);
    assert!(p.linked() && p.forbidden().is_none());
    assert!(p.names().is_none(), "a linked passport keeps no names");

    let tokens = config(
        "[headers]\npass_user_headers = false\npass_access_token = true\nset_authorization = true\n",
    );
    let p = Passport::new(&rules(&tokens, false), proof(Some(&alice), None));
    assert_eq!(
        seen(&p.headers, &names, false),
        pairs(&[("x-forwarded-access-token", "at-1")]),
        "no user headers upstream"
    );
    assert_eq!(p.headers.get(Field::Authorization).unwrap(), "Bearer it-1");
    // Forward-auth answers still know who it is (`X-Auth-Request-*`).
    assert_eq!(p.headers.get(Field::User).unwrap(), "alice");
    assert_eq!(p.headers.get(Field::Groups).unwrap(), "staff,ops");

    let no_id_token = Evidence {
        id_token: None,
        ..proof(Some(&alice), None)
    };
    let p = Passport::new(&rules(&tokens, false), no_id_token);
    assert_eq!(p.headers.get(Field::Authorization).unwrap(), "Bearer at-1");
}

#[test]
fn authz_is_decided_once_for_the_primary_identity() {
    let strict = config("[authz]\nemail_domains = [\"shop.test\"]\n");
    let outsider = Identity::sample("https://sso.test", "eve");
    let insider = Identity {
        email: Some("ann@shop.test".into()),
        ..Identity::sample("https://sso.test", "ann")
    };
    let p = Passport::new(&rules(&strict, false), proof(Some(&outsider), None));
    let forbidden = p.forbidden().expect("refused");
    assert_eq!(forbidden.who, "eve@example.test");
    assert!(forbidden.reason.contains("example.test"), "{forbidden:?}");
    // The Magento.com identity speaks for the user, not the account.
    let p = Passport::new(
        &rules(&strict, false),
        proof(Some(&insider), Some(&outsider)),
    );
    assert!(p.forbidden().is_none());
    let p = Passport::new(&rules(&strict, false), proof(None, Some(&insider)));
    assert!(p.forbidden().is_none());
    assert!(p.anyone() && !p.linked());
}

#[test]
fn names_are_kept_only_while_a_link_may_be_asked_for() {
    let plain = config("");
    let alice = Identity::sample("https://sso.test", "alice");
    let p = Passport::new(&rules(&plain, true), proof(Some(&alice), None));
    assert_eq!(
        p.names(),
        Some(&Names {
            sso: Some("alice@example.test".into()),
            account: None
        })
    );
    let p = Passport::new(&rules(&plain, false), proof(Some(&alice), None));
    assert!(p.names().is_none(), "no [account]: never asked to link");
    let p = p.with_cookie("c=1".into());
    assert_eq!(p.set_cookie(), Some("c=1"));
}

#[test]
fn a_passport_stays_small() {
    // The session cache holds one per session: 100k sessions within the RSS target
    // (bench/run --soak) need it to stay a few hundred bytes with its buffer. With its
    // `Arc` counts, 112 bytes is mimalloc's 128-byte class.
    assert!(
        std::mem::size_of::<Passport>() <= 112,
        "{} bytes",
        std::mem::size_of::<Passport>()
    );
}

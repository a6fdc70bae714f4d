//! A proven identity and what the upstream may be given of it.
//!
//! Built once per session cache entry (or per bearer request) and shared by reference: a
//! cached session's request clones one `Arc`, not the identities, tokens and header values.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::HeaderNames;
pub use crate::identity::Via;
use crate::identity::{Identity, OpaqueId};
pub use crate::policy::Forbidden;

/// A proven identity, reduced to what a request needs from it: the identity headers, the
/// facts the link rule and `[authz]` decide on, and, only where a page may show them, the
/// names of the identities. This is what the session cache holds (~0.3 KiB a session, not
/// the identities and tokens of the record); whatever else a request needs (the account page,
/// a refresh) is read from the store.
#[derive(Debug, Clone)]
pub struct Passport {
    /// How it was proven.
    pub via: Via,
    /// The session id, for a session.
    pub session: Option<OpaqueId>,
    /// Whether a Magento.com identity is signed in.
    pub sso: bool,
    /// Whether the cloud account is known.
    pub account: bool,
    /// Unix seconds when this proof ends: the session's end, or a bearer token's `exp`
    /// (`i64::MAX` when it has none).
    pub expires_at: i64,
    /// Unix seconds from which the session's access token should be refreshed
    /// (`session.refresh_before` ahead of its expiry); `i64::MAX` when it cannot be.
    pub refresh_at: i64,
    /// Where the assertion claims start in the packed buffer (`u16::MAX`: none).
    claims_at: u16,
    /// What few passports carry (a refusal, names, a cookie to set), boxed so that the
    /// others do not pay for its slots: a passport fits 112 bytes.
    rare: Option<Box<Rare>>,
    /// The header values for the upstream and for forward-auth answers, every one already
    /// checked as header text. The access token is among them when `headers.pass_access_token`
    /// and the upstream `Authorization` when `headers.set_authorization`; tokens are kept
    /// nowhere else.
    pub headers: IdentityHeaders,
}

/// The parts of a passport most do not have.
#[derive(Debug, Clone, Default)]
struct Rare {
    /// The policies (by index, src/policy.rs) that refuse this identity, decided once.
    forbidden: Vec<(usize, Forbidden)>,
    names: Option<Names>,
    set_cookie: Option<String>,
    follows: Option<FollowsJwt>,
}

/// What a session whose account came from the platform's JWT is checked against on every
/// request, cache hits included: a request carrying exactly this JWT (same SHA-256) while it
/// is valid passes at the cost of a hash; any other JWT must verify and name the same
/// account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowsJwt {
    /// SHA-256 of the JWT the session's account came from.
    pub sha256: [u8; 32],
    /// Unix seconds until which that JWT verifies.
    pub valid_until: i64,
    /// The key (issuer and subject) of the account it names.
    pub account_key: String,
}

/// The identities as shown to a person (email, else username, else subject).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// The Magento.com identity.
    pub sso: Option<String>,
    /// The cloud account.
    pub account: Option<String>,
}

impl Names {
    /// How `sso` and `account` are shown.
    pub fn new(sso: Option<&Identity>, account: Option<&Identity>) -> Self {
        Names {
            sso: sso.map(|i| i.display().to_string()),
            account: account.map(|i| i.display().to_string()),
        }
    }
}

/// What a passport is made from: the proof, the identities, and the tokens (used only for the
/// headers that forward them).
pub struct Evidence<'a> {
    /// How it was proven.
    pub via: Via,
    /// The session id, for a session.
    pub session: Option<OpaqueId>,
    /// The Magento.com identity.
    pub sso: Option<&'a Identity>,
    /// The cloud account.
    pub account: Option<&'a Identity>,
    /// The access token, when there is one.
    pub access_token: Option<&'a str>,
    /// The id_token, when there is one.
    pub id_token: Option<&'a str>,
    /// When the proof ends (unix seconds).
    pub expires_at: i64,
}

/// The `X-Forwarded-Groups` value: the groups joined by `,`. A group whose name holds the
/// separator (`staff,admins`), surrounding spaces, or no text at all would read as other
/// groups to an upstream that splits the list, so it is left out, with a warning naming it.
pub fn header_groups(subject: &str, groups: &[String]) -> Option<String> {
    let mut value = String::new();
    for group in groups {
        let unsafe_name = group.is_empty()
            || group.trim() != group
            || group.contains([',', ';', '"'])
            || group.chars().any(char::is_control);
        if unsafe_name {
            tracing::warn!(
                subject,
                group = group.as_str(),
                "group name holds a list separator, quote, control character or surrounding \
                 spaces; left out of the groups header"
            );
            continue;
        }
        if !value.is_empty() {
            value.push(',');
        }
        value.push_str(group);
    }
    (!value.is_empty()).then_some(value)
}

/// The parts of the configuration a passport is decided by.
pub struct Rules<'a> {
    /// `[headers]`.
    pub headers: &'a crate::config::Headers,
    /// `[authz]`.
    pub authz: &'a crate::config::Authz,
    /// Whether `[account]` is configured (so that an unlinked identity may be sent to link).
    pub linking: bool,
    /// Every route policy; the passport decides under each, once, who may pass.
    pub policies: &'a crate::policy::Policies,
    /// Whether assertions are signed (the passport then carries their claims).
    pub assertions: bool,
}

impl Passport {
    /// Decides everything about a proof that does not depend on the time of a request.
    pub fn new(rules: &Rules<'_>, proof: Evidence<'_>) -> Self {
        let headers = rules.headers;
        // The identity that speaks for the user: Magento.com when signed in there (it is the
        // primary login), else the cloud account.
        let primary = proof.sso.or(proof.account);
        let mut values: Vec<(Field, &str)> = Vec::new();
        let groups = primary.and_then(|i| header_groups(&i.subject, &i.groups));
        if let Some(i) = primary {
            values.push((Field::User, &i.subject));
            if let Some(email) = &i.email {
                values.push((Field::Email, email));
            }
            if let Some(groups) = &groups {
                values.push((Field::Groups, groups));
            }
            if let Some(u) = &i.preferred_username {
                values.push((Field::PreferredUsername, u));
            }
        }
        if let Some(sso) = proof.sso {
            values.push((Field::SsoSubject, &sso.subject));
        }
        if let Some(account) = proof.account {
            values.push((Field::AccountId, &account.subject));
        }
        if headers.pass_access_token {
            if let Some(token) = proof.access_token {
                values.push((Field::AccessToken, token));
            }
        }
        let authorization = proof
            .id_token
            .or(proof.access_token)
            .filter(|_| headers.set_authorization)
            .map(|token| format!("Bearer {token}"));
        if let Some(authorization) = &authorization {
            values.push((Field::Authorization, authorization));
        }
        let claims = primary
            .filter(|_| rules.assertions)
            .map(|i| crate::assertion::claims_fragment(i, proof.sso, proof.account));
        let forbidden: Vec<(usize, Forbidden)> = match primary {
            Some(i) => rules
                .policies
                .all()
                .iter()
                .enumerate()
                .filter_map(|(index, policy)| {
                    let denied = crate::policy::check(&policy.allow, i).err()?;
                    Some((
                        index,
                        Forbidden {
                            who: i.display().to_string(),
                            reason: format!(
                                "{} (refused by {}: {})",
                                denied.reason, policy.label, denied.key
                            ),
                        },
                    ))
                })
                .collect(),
            None => Vec::new(),
        };
        let linked = proof.sso.is_some() && proof.account.is_some();
        let names = (rules.linking && !linked).then(|| Names::new(proof.sso, proof.account));
        let rare = (!forbidden.is_empty() || names.is_some()).then(|| {
            Box::new(Rare {
                forbidden,
                names,
                set_cookie: None,
                follows: None,
            })
        });
        let (headers, claims_at) = IdentityHeaders::pack_with_tail(values, claims.as_deref());
        Passport {
            claims_at: claims_at.unwrap_or(u16::MAX),
            via: proof.via,
            session: proof.session,
            sso: proof.sso.is_some(),
            account: proof.account.is_some(),
            expires_at: proof.expires_at,
            refresh_at: i64::MAX,
            rare,
            headers,
        }
    }

    /// `[authz]`'s verdict on the primary identity, decided once: who was refused and why.
    pub fn forbidden(&self) -> Option<&Forbidden> {
        self.forbidden_under(crate::policy::GLOBAL)
    }

    /// The verdict of policy `index` (src/policy.rs), decided once when the passport was
    /// made: `Some` when it refuses.
    pub fn forbidden_under(&self, index: usize) -> Option<&Forbidden> {
        let rare = self.rare.as_ref()?;
        rare.forbidden
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, f)| f)
    }

    /// The claims of this identity's assertions (JSON object members), when assertions are
    /// signed.
    pub fn claims(&self) -> Option<Bytes> {
        (self.claims_at != u16::MAX)
            .then(|| self.headers.tail(self.claims_at))
            .flatten()
    }

    /// How the identities are shown, kept only while they are not linked and `[account]`
    /// is configured (the link page is the only place that shows them to a request of the
    /// gate).
    pub fn names(&self) -> Option<&Names> {
        self.rare.as_ref()?.names.as_ref()
    }

    /// A `Set-Cookie` to send with the answer (one that clears a session that ended).
    pub fn set_cookie(&self) -> Option<&str> {
        self.rare.as_ref()?.set_cookie.as_deref()
    }

    /// Sends `cookie` with the answer.
    pub fn with_cookie(mut self, cookie: String) -> Self {
        self.rare.get_or_insert_with(Default::default).set_cookie = Some(cookie);
        self
    }

    /// The platform JWT a session follows, when its account came from one.
    pub fn follows(&self) -> Option<&FollowsJwt> {
        self.rare.as_ref()?.follows.as_ref()
    }

    /// Makes a session passport follow the platform JWT its account came from.
    pub fn following(mut self, jwt: FollowsJwt) -> Self {
        self.rare.get_or_insert_with(Default::default).follows = Some(jwt);
        self
    }

    /// Whether there is an identity at all.
    pub fn anyone(&self) -> bool {
        self.sso || self.account
    }

    /// Whether both identities are present, i.e. linked.
    pub fn linked(&self) -> bool {
        self.sso && self.account
    }

    /// Whether the session's tokens are due for a refresh at `now` (unix seconds).
    pub fn refresh_due(&self, now: i64) -> bool {
        now >= self.refresh_at
    }
}

#[cfg(test)]
impl Passport {
    /// A session passport under a minimal configuration (default `[headers]`, no `[authz]`
    /// rule, no `[account]`), for tests.
    pub fn sample(sso: Option<&Identity>, account: Option<&Identity>) -> Self {
        let config = crate::config::Config::parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n",
            "t.toml",
            &|_| None,
        )
        .expect("a minimal configuration");
        let policies = crate::policy::Policies::new(&config);
        let rules = Rules {
            headers: &config.headers,
            authz: &config.authz,
            linking: false,
            policies: &policies,
            assertions: false,
        };
        let proof = Evidence {
            via: Via::Session,
            session: None,
            sso,
            account,
            access_token: None,
            id_token: None,
            expires_at: 0,
        };
        Passport::new(&rules, proof)
    }
}

/// Which header a packed value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    /// `X-Forwarded-User`.
    User,
    /// `X-Forwarded-Email`.
    Email,
    /// `X-Forwarded-Groups`.
    Groups,
    /// `X-Forwarded-Preferred-Username`.
    PreferredUsername,
    /// `X-Linkgate-Sso-Subject`.
    SsoSubject,
    /// `X-Linkgate-Account-Id`.
    AccountId,
    /// `X-Forwarded-Access-Token`.
    AccessToken,
    /// The upstream's `Authorization: Bearer <id_token, else access token>`.
    Authorization,
}

impl Field {
    const COUNT: usize = 8;
    /// Every field, in the order of their discriminants.
    const ALL: [Field; Field::COUNT] = [
        Field::User,
        Field::Email,
        Field::Groups,
        Field::PreferredUsername,
        Field::SsoSubject,
        Field::AccountId,
        Field::AccessToken,
        Field::Authorization,
    ];

    /// Whether the field goes upstream as an identity header under its configured name
    /// (all but `Authorization`).
    fn is_identity(self) -> bool {
        self != Field::Authorization
    }

    /// The configured name of this header (`Authorization` is not configurable).
    pub fn name(self, names: &HeaderNames) -> &HeaderName {
        match self {
            Field::User => &names.user,
            Field::Email => &names.email,
            Field::Groups => &names.groups,
            Field::PreferredUsername => &names.preferred_username,
            Field::SsoSubject => &names.sso_subject,
            Field::AccountId => &names.account_id,
            Field::AccessToken => &names.access_token,
            Field::Authorization => &AUTHORIZATION,
        }
    }

    /// The user headers, forwarded only with `headers.pass_user_headers` (but always known to
    /// forward-auth answers, as `X-Auth-Request-*`).
    fn is_user(self) -> bool {
        !matches!(self, Field::AccessToken | Field::Authorization)
    }
}

/// Header values packed in one buffer, with a fixed table of where each one is: a cached
/// passport holds one allocation for all of them, and a request takes each value as a slice of
/// it (a reference count, no copy, no allocation).
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    buf: Bytes,
    /// `(start, end)` of each field's value in `buf`, indexed by `Field as usize`;
    /// `ABSENT` when the field has no value.
    spans: [(u16, u16); Field::COUNT],
}

const ABSENT: (u16, u16) = (u16::MAX, u16::MAX);

static AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            buf: Bytes::new(),
            spans: [ABSENT; Field::COUNT],
        }
    }
}

impl IdentityHeaders {
    /// The most a passport's header values may take together (64 KiB, far above what any
    /// upstream accepts in headers).
    pub const MAX: usize = u16::MAX as usize - 1;

    /// Packs the values that are valid header text; the others are left out (and so is any
    /// value that would take the whole past [`Self::MAX`]), with a warning.
    pub fn pack<'a>(values: impl IntoIterator<Item = (Field, &'a str)>) -> Self {
        Self::pack_with_tail(values, None).0
    }

    /// Packs like [`Self::pack`], then appends `tail` (not a header: the assertion claims)
    /// and returns where it starts, when it fits.
    pub fn pack_with_tail<'a>(
        values: impl IntoIterator<Item = (Field, &'a str)>,
        tail: Option<&str>,
    ) -> (Self, Option<u16>) {
        let mut buf = Vec::new();
        let mut spans = [ABSENT; Field::COUNT];
        for (field, value) in values {
            // A value packed already (the subject as user and as SSO subject) is shared.
            if let Some(&span) = spans.iter().find(|&&(start, end)| {
                (start, end) != ABSENT && &buf[start as usize..end as usize] == value.as_bytes()
            }) {
                spans[field as usize] = span;
                continue;
            }
            if buf.len() + value.len() > Self::MAX {
                tracing::warn!(header = ?field, "identity header value left out: the header values of this identity exceed 64 KiB");
                continue;
            }
            if HeaderValue::from_str(value).is_err() {
                tracing::warn!(header = ?field, "identity header value left out: not valid header text");
                continue;
            }
            // Both fit in u16: checked against MAX above.
            let start = buf.len() as u16;
            buf.extend_from_slice(value.as_bytes());
            spans[field as usize] = (start, buf.len() as u16);
        }
        let tail_at = match tail {
            Some(tail) if buf.len() + tail.len() <= Self::MAX => {
                let start = buf.len() as u16;
                buf.extend_from_slice(tail.as_bytes());
                Some(start)
            }
            Some(_) => {
                tracing::warn!("assertion claims left out: the identity exceeds 64 KiB");
                None
            }
            None => None,
        };
        // Exactly as long as needed: the buffer lives as long as the cached session.
        buf.shrink_to_fit();
        let packed = Self {
            buf: Bytes::from(buf),
            spans,
        };
        (packed, tail_at)
    }

    /// The buffer from `start` to its end (the assertion claims packed after the values).
    fn tail(&self, start: u16) -> Option<Bytes> {
        let start = start as usize;
        (start <= self.buf.len()).then(|| self.buf.slice(start..))
    }

    /// One field's value, if it has one.
    pub fn get(&self, field: Field) -> Option<HeaderValue> {
        let (start, end) = self.spans[field as usize];
        if (start, end) == ABSENT {
            return None;
        }
        let value = self.buf.slice(start as usize..end as usize);
        // Checked when packed; this re-check is a byte scan, never an allocation.
        HeaderValue::from_maybe_shared(value).ok()
    }

    /// The identity headers for the upstream, each with its configured name: the user
    /// headers only when `forward_user` (`headers.pass_user_headers`); `Authorization` is
    /// not among them.
    pub fn iter<'a>(
        &'a self,
        names: &'a HeaderNames,
        forward_user: bool,
    ) -> impl Iterator<Item = (&'a HeaderName, HeaderValue)> + 'a {
        self.fields(forward_user)
            .map(|(field, v)| (field.name(names), v))
    }

    /// The same headers by field (for [`CasedNames`]).
    pub fn fields(&self, forward_user: bool) -> impl Iterator<Item = (Field, HeaderValue)> + '_ {
        Field::ALL
            .into_iter()
            .filter(|f| f.is_identity())
            .filter(move |f| forward_user || !f.is_user())
            .filter_map(move |field| self.get(field).map(|v| (field, v)))
    }

    /// How many values are packed.
    pub fn len(&self) -> usize {
        self.spans.iter().filter(|&&span| span != ABSENT).count()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The identity header names as written to the upstream: title-cased once
/// (`X-Forwarded-User`) and handed to Pingora as shared bytes, which it keeps as the header's
/// case as they are. (Given a `HeaderName`, Pingora copies it into a new buffer on every
/// insert.)
#[derive(Debug, Clone)]
pub struct CasedNames {
    fields: [Bytes; Field::COUNT],
    link_status: Bytes,
}

impl CasedNames {
    /// The names of `names`, title-cased.
    pub fn new(names: &HeaderNames) -> Self {
        let cased = |name: &HeaderName| Bytes::from(title_case(name.as_str()));
        CasedNames {
            fields: Field::ALL.map(|f| cased(f.name(names))),
            link_status: cased(&names.link_status),
        }
    }

    /// The name of `field`.
    pub fn field(&self, field: Field) -> Bytes {
        self.fields[field as usize].clone()
    }

    /// The name of the link status header.
    pub fn link_status(&self) -> Bytes {
        self.link_status.clone()
    }
}

/// `x-forwarded-user` -> `X-Forwarded-User`.
fn title_case(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c };
            upper = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod group_tests {
    use super::header_groups;

    #[test]
    fn no_group_can_smuggle_another_into_the_header() {
        let groups: Vec<String> = [
            "staff",
            "staff,admins",
            " admins",
            "",
            "ops",
            "a;b",
            "q\"x",
            "x\ny",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(header_groups("u", &groups).as_deref(), Some("staff,ops"));
        assert_eq!(header_groups("u", &["a,b".to_string()]), None);
        assert_eq!(header_groups("u", &[]), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!("[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n{extra}"),
            "t.toml",
            &|_| None,
        )
        .unwrap()
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
}

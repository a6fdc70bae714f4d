//! A proven identity and what the upstream may be given of it.
//!
//! Built once per session cache entry (or per bearer request) and shared by reference: a
//! cached session's request clones one `Arc`, not the identities, tokens and header values.

use bytes::Bytes;

pub use crate::identity::Via;
use crate::identity::{Identity, OpaqueId};
pub use crate::policy::Forbidden;
pub use headers::{header_groups, CasedNames, Field, IdentityHeaders};

mod headers;

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
    /// The policies (by index, src/policy/routes.rs) that refuse this identity, decided once.
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
            .map(|i| claims_fragment(i, proof.sso, proof.account));
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

    /// The verdict of policy `index` (src/policy/routes.rs), decided once when the passport was
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

/// The claims a passport carries for its assertions: JSON object members without braces
/// (`"sub":"..","email":..`), pure ASCII (anything else `\u`-escaped) so that they pack with
/// the passport's header values.
pub fn claims_fragment(
    primary: &Identity,
    sso: Option<&Identity>,
    account: Option<&Identity>,
) -> String {
    let mut map = serde_json::Map::new();
    map.insert("sub".into(), primary.subject.clone().into());
    if let Some(email) = &primary.email {
        map.insert("email".into(), email.clone().into());
        map.insert("email_verified".into(), primary.email_verified.into());
    }
    map.insert("groups".into(), primary.groups.clone().into());
    if let Some(u) = &primary.preferred_username {
        map.insert("preferred_username".into(), u.clone().into());
    }
    if let Some(s) = sso {
        map.insert("sso_sub".into(), s.subject.clone().into());
    }
    if let Some(a) = account {
        map.insert("account_id".into(), a.subject.clone().into());
    }
    let text = serde_json::Value::Object(map).to_string();
    let inner = &text[1..text.len().saturating_sub(1)];
    let mut out = String::with_capacity(inner.len());
    for c in inner.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
impl Passport {
    /// A session passport under a minimal configuration (default `[headers]`, no `[authz]`
    /// rule, no `[account]`), for tests.
    pub fn sample(sso: Option<&Identity>, account: Option<&Identity>) -> Self {
        let config = crate::fixtures::Fixture::new().config();
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

#[cfg(test)]
mod tests;

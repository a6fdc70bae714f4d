//! The identity headers a passport gives: which [`Field`]s, their values packed once into
//! one buffer ([`IdentityHeaders`]), the groups header kept unambiguous, and the names as
//! the upstream sees them ([`CasedNames`]).

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::HeaderNames;

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
    pub(super) const ALL: [Field; Field::COUNT] = [
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
    pub(super) fn tail(&self, start: u16) -> Option<Bytes> {
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

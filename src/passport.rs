//! A proven identity and what the upstream may be given of it.
//!
//! Built once per session cache entry (or per bearer request) and shared by reference: a
//! cached session's request clones one `Arc`, not the identities, tokens and header values.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::config::HeaderNames;
use crate::oidc::Identity;
use crate::session::cookie::OpaqueId;

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A session cookie.
    Session,
    /// An `Authorization: Bearer` JWT.
    Bearer,
}

/// A proven identity and what the upstream may be given of it.
#[derive(Debug, Clone)]
pub struct Passport {
    /// The Magento.com identity, when signed in there. Boxed, like `account`: a cached
    /// passport pays for the identities it has, not for the slots of those it lacks.
    pub sso: Option<Box<Identity>>,
    /// The cloud account, when known.
    pub account: Option<Box<Identity>>,
    /// How it was proven.
    pub via: Via,
    /// The session id, for a session.
    pub session: Option<OpaqueId>,
    /// A `Set-Cookie` to send with the answer (a session made from an account JWT).
    pub set_cookie: Option<String>,
    /// The identity headers for the upstream, every value already checked as header text:
    /// all of them but the link status, which depends on the time of the request. The access
    /// token is among them when `headers.pass_access_token`; tokens are kept nowhere else.
    pub headers: IdentityHeaders,
    /// `Authorization: Bearer <id_token, else access token>` for the upstream, when
    /// `headers.set_authorization`.
    pub authorization: Option<HeaderValue>,
}

impl Passport {
    /// The identity that speaks for the user: Magento.com when signed in there (it is the
    /// primary login), else the cloud account.
    pub fn primary(&self) -> Option<&Identity> {
        self.sso.as_deref().or(self.account.as_deref())
    }

    /// Whether both identities are present, i.e. linked.
    pub fn linked(&self) -> bool {
        self.sso.is_some() && self.account.is_some()
    }
}

/// Which identity header a value is for; its name is configured (`[headers.names]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Field {
    /// The configured name of this header.
    pub fn name(self, names: &HeaderNames) -> &HeaderName {
        match self {
            Field::User => &names.user,
            Field::Email => &names.email,
            Field::Groups => &names.groups,
            Field::PreferredUsername => &names.preferred_username,
            Field::SsoSubject => &names.sso_subject,
            Field::AccountId => &names.account_id,
            Field::AccessToken => &names.access_token,
        }
    }
}

/// Identity header values packed in one buffer: a cached passport holds one allocation for
/// all of them, and a request takes each value as a slice of it (a reference count, no
/// copy, no allocation).
#[derive(Debug, Clone, Default)]
pub struct IdentityHeaders {
    buf: Bytes,
    fields: Box<[(Field, u32, u32)]>,
}

impl IdentityHeaders {
    /// Packs the values that are valid header text; the others are left out.
    pub fn pack<'a>(values: impl IntoIterator<Item = (Field, &'a str)>) -> Self {
        let mut buf = Vec::new();
        let mut fields = Vec::new();
        for (field, value) in values {
            let (Ok(start), Ok(end)) = (
                u32::try_from(buf.len()),
                u32::try_from(buf.len() + value.len()),
            ) else {
                continue;
            };
            if HeaderValue::from_str(value).is_ok() {
                buf.extend_from_slice(value.as_bytes());
                fields.push((field, start, end));
            }
        }
        Self {
            buf: Bytes::from(buf),
            fields: fields.into_boxed_slice(),
        }
    }

    /// Each header with its configured name.
    pub fn iter<'a>(
        &'a self,
        names: &'a HeaderNames,
    ) -> impl Iterator<Item = (&'a HeaderName, HeaderValue)> + 'a {
        self.fields.iter().filter_map(move |&(field, start, end)| {
            let value = self.buf.slice(start as usize..end as usize);
            // Checked when packed; this re-check is a byte scan, never an allocation.
            HeaderValue::from_maybe_shared(value)
                .ok()
                .map(|v| (field.name(names), v))
        })
    }

    /// How many headers.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let seen: Vec<(String, String)> = packed
            .iter(&names)
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            seen,
            [
                ("x-remote-user", "alice"),
                ("x-forwarded-email", "alice@shop.test"),
                ("x-linkgate-sso-subject", ""),
                ("x-linkgate-account-id", "acct-7"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string())),
            "a value that is not header text is left out, an empty one kept"
        );
        assert_eq!(packed.len(), 4);
        assert!(IdentityHeaders::default().is_empty());
    }
}

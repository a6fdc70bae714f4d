//! `[headers]`: which identity headers go upstream, and under which names.
//!
//! Names are validated as `http::HeaderName` here; the proxy strips every client-sent copy
//! of these headers whatever it is told to set.

use http::HeaderName;

use super::reader::{Ctx, Table};

/// `[headers]`: identity headers to the upstream.
#[derive(Debug, Clone)]
pub struct Headers {
    /// Send the user headers (`pass_user_headers`, default true).
    pub pass_user_headers: bool,
    /// Send the SSO access token in `names.access_token` (`pass_access_token`, default false).
    pub pass_access_token: bool,
    /// Send `Authorization: Bearer <id_token>` (`set_authorization`, default false).
    pub set_authorization: bool,
    /// Header names (`[headers.names]`).
    pub names: HeaderNames,
}

/// `[headers.names]`: the name of each identity header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    /// User id (`user`, default `X-Forwarded-User`).
    pub user: HeaderName,
    /// E-mail (`email`, default `X-Forwarded-Email`).
    pub email: HeaderName,
    /// Groups, comma-separated (`groups`, default `X-Forwarded-Groups`).
    pub groups: HeaderName,
    /// Preferred user name (`preferred_username`, default `X-Forwarded-Preferred-Username`).
    pub preferred_username: HeaderName,
    /// SSO subject (`sso_subject`, default `X-Linkgate-Sso-Subject`).
    pub sso_subject: HeaderName,
    /// Cloud account id (`account_id`, default `X-Linkgate-Account-Id`).
    pub account_id: HeaderName,
    /// `linked` or `grace` (`link_status`, default `X-Linkgate-Link-Status`).
    pub link_status: HeaderName,
    /// Access token (`access_token`, default `X-Forwarded-Access-Token`).
    pub access_token: HeaderName,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            user: HeaderName::from_static("x-forwarded-user"),
            email: HeaderName::from_static("x-forwarded-email"),
            groups: HeaderName::from_static("x-forwarded-groups"),
            preferred_username: HeaderName::from_static("x-forwarded-preferred-username"),
            sso_subject: HeaderName::from_static("x-linkgate-sso-subject"),
            account_id: HeaderName::from_static("x-linkgate-account-id"),
            link_status: HeaderName::from_static("x-linkgate-link-status"),
            access_token: HeaderName::from_static("x-forwarded-access-token"),
        }
    }
}

impl HeaderNames {
    /// Every name with its key, in declaration order.
    pub fn all(&self) -> [(&'static str, &HeaderName); 8] {
        [
            ("user", &self.user),
            ("email", &self.email),
            ("groups", &self.groups),
            ("preferred_username", &self.preferred_username),
            ("sso_subject", &self.sso_subject),
            ("account_id", &self.account_id),
            ("link_status", &self.link_status),
            ("access_token", &self.access_token),
        ]
    }

    fn read(ctx: &mut Ctx<'_>, mut t: Table<'_, '_>) -> HeaderNames {
        let mut names = HeaderNames::default();
        let mut set = |ctx: &mut Ctx<'_>, key: &'static str, slot: &mut HeaderName| {
            let Some(s) = t.nonempty(ctx, key) else {
                return;
            };
            match HeaderName::from_bytes(s.value.trim().as_bytes()) {
                Ok(name) => *slot = name,
                Err(_) => s.error(ctx, format!("invalid header name `{}`", s.value.trim())),
            }
        };
        set(ctx, "user", &mut names.user);
        set(ctx, "email", &mut names.email);
        set(ctx, "groups", &mut names.groups);
        set(ctx, "preferred_username", &mut names.preferred_username);
        set(ctx, "sso_subject", &mut names.sso_subject);
        set(ctx, "account_id", &mut names.account_id);
        set(ctx, "link_status", &mut names.link_status);
        set(ctx, "access_token", &mut names.access_token);
        let all = names.all();
        for (i, (key, name)) in all.iter().enumerate() {
            if let Some((other, _)) = all[..i].iter().find(|(_, n)| n == name) {
                if let Some(node) = t.get(key) {
                    node.error(ctx, format!("same header name as headers.names.{other}"));
                }
            }
        }
        t.finish(ctx);
        names
    }
}

impl Headers {
    pub(crate) fn read(ctx: &mut Ctx<'_>, t: Option<Table<'_, '_>>) -> Headers {
        let mut headers = Headers {
            pass_user_headers: true,
            pass_access_token: false,
            set_authorization: false,
            names: HeaderNames::default(),
        };
        let Some(mut t) = t else {
            return headers;
        };
        headers.pass_user_headers = t.bool_or(ctx, "pass_user_headers", true);
        headers.pass_access_token = t.bool_or(ctx, "pass_access_token", false);
        headers.set_authorization = t.bool_or(ctx, "set_authorization", false);
        if let Some(names) = t.table(ctx, "names") {
            headers.names = HeaderNames::read(ctx, names);
        }
        t.finish(ctx);
        headers
    }
}

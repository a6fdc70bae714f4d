//! A proven identity and what the upstream may be given of it.
//!
//! Built once per session cache entry (or per bearer request) and shared by reference: a
//! cached session's request clones one `Arc`, not the identities, tokens and header values.

use http::{HeaderName, HeaderValue};

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
    /// The Magento.com identity, when signed in there.
    pub sso: Option<Identity>,
    /// The cloud account, when known.
    pub account: Option<Identity>,
    /// The access token (for `X-Forwarded-Access-Token`), kept only when the configuration
    /// forwards it (`headers.pass_access_token`, `headers.set_authorization`).
    pub access_token: Option<String>,
    /// The id_token (for `Authorization` when `headers.set_authorization`), same rule.
    pub id_token: Option<String>,
    /// How it was proven.
    pub via: Via,
    /// The session id, for a session.
    pub session: Option<OpaqueId>,
    /// A `Set-Cookie` to send with the answer (a session made from an account JWT).
    pub set_cookie: Option<String>,
    /// The identity headers for the upstream with their configured names, every value
    /// already checked as header text: all of them but the link status, which depends on
    /// the time of the request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Passport {
    /// The identity that speaks for the user: Magento.com when signed in there (it is the
    /// primary login), else the cloud account.
    pub fn primary(&self) -> Option<&Identity> {
        self.sso.as_ref().or(self.account.as_ref())
    }

    /// Whether both identities are present, i.e. linked.
    pub fn linked(&self) -> bool {
        self.sso.is_some() && self.account.is_some()
    }
}

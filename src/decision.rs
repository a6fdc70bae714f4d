//! The decision labels of a request: the `decision` label of `linkgate_requests_total`
//! and of the access log. A leaf: the proxy sets them, metrics count them.

/// The label of the decision taken for a request (metric `decision`, access log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decision {
    /// Not decided yet (an error before the decision).
    #[default]
    Undecided,
    /// A linkgate endpoint under `proxy_prefix` answered.
    Endpoint,
    /// Forwarded without authentication through `authz.skip_auth_routes`.
    SkipAuth,
    /// Forwarded with a session.
    Session,
    /// Forwarded with a bearer token.
    Bearer,
    /// Signed in but refused by `[authz]`.
    Forbidden,
    /// Signed in, but the account link is missing while the rule is enforced.
    LinkRequired,
    /// Redirected a browser to sign in.
    RedirectLogin,
    /// Refused with 401.
    Unauthenticated,
    /// Refused with a 4xx/5xx of linkgate's own (bad request, no route, store down...).
    Refused,
}

/// The `decision` label of a request forwarded before its decision was recorded.
pub const FORWARD_LABEL: &str = "forward";

impl Decision {
    /// Every decision (next to the enum, so that a new variant is added here too).
    pub const ALL: [Decision; 10] = [
        Decision::Undecided,
        Decision::Endpoint,
        Decision::SkipAuth,
        Decision::Session,
        Decision::Bearer,
        Decision::Forbidden,
        Decision::LinkRequired,
        Decision::RedirectLogin,
        Decision::Unauthenticated,
        Decision::Refused,
    ];

    /// The stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Undecided => "undecided",
            Decision::Endpoint => "endpoint",
            Decision::SkipAuth => "skip_auth",
            Decision::Session => "session",
            Decision::Bearer => "bearer",
            Decision::Forbidden => "forbidden",
            Decision::LinkRequired => "link_required",
            Decision::RedirectLogin => "redirect_login",
            Decision::Unauthenticated => "unauthenticated",
            Decision::Refused => "refused",
        }
    }
}

//! The admission of a request, decided in one place: [`decide`] takes what was proven about
//! the request ([`Proof`]), whether it is a browser navigation, and the rules in force for it
//! ([`Rules`]), and answers one [`Admission`]. The proxy, forward-auth, userinfo and the pages
//! map that answer to their replies; none of them decides anything of its own.
//!
//! Pure: no I/O, no clock (the caller passes `now` to [`requirement`]), no Pingora. Its
//! decision table (README, "Requests, in order", steps 3 to 7 and the link rule) is tested in
//! full in `tests.rs`.
//!
//! Below it: [`routes`] resolves which policy applies to a route, [`authz`] says whether an
//! identity may pass one.

pub mod authz;
pub mod routes;

use time::OffsetDateTime;

use crate::config::LinkMode;
use crate::decision::Decision;
pub use crate::identity::Via;
pub use authz::{check, Allowlist, Denied};
pub use routes::{Policies, Resolved, GLOBAL};

/// Whether linking is required at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Unlinked identities are refused (sent to link).
    Enforced,
    /// Unlinked identities pass, marked `grace` (before `required_from`, or `mode = "warn"`).
    Grace,
    /// Linking is never asked.
    Off,
}

/// The requirement of link mode `mode` at `now`, enforced from `required_from`. `now` is a
/// parameter so the rule is testable at any instant.
pub fn requirement(
    mode: LinkMode,
    required_from: OffsetDateTime,
    now: OffsetDateTime,
) -> Requirement {
    match mode {
        LinkMode::Off => Requirement::Off,
        LinkMode::Warn => Requirement::Grace,
        LinkMode::Enforce if now < required_from => Requirement::Grace,
        LinkMode::Enforce => Requirement::Enforced,
    }
}

/// The mode as the account page and its JSON twin name it (`enforce`, `grace`, `warn`,
/// `off`): `warn` is a grace that never ends, told apart from the grace before
/// `required_from`.
pub fn mode_label(mode: LinkMode, requirement: Requirement) -> &'static str {
    match (mode, requirement) {
        (LinkMode::Warn, _) => "warn",
        (_, Requirement::Grace) => "grace",
        (_, Requirement::Off) => "off",
        (_, Requirement::Enforced) => "enforce",
    }
}

/// The link status an admitted request carries (`X-Linkgate-Link-Status`, the assertion's
/// `link_status` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// Linking is not in play (no `[account]`, or the policy's mode is `off` and the
    /// identities are not linked): nothing is said.
    NotInPlay,
    /// Both identities are present: linked.
    Linked,
    /// Not linked, but the rule lets it pass for now.
    Grace,
}

impl LinkStatus {
    /// The header and claim value, when there is one.
    pub fn label(self) -> Option<&'static str> {
        match self {
            LinkStatus::NotInPlay => None,
            LinkStatus::Linked => Some("linked"),
            LinkStatus::Grace => Some("grace"),
        }
    }
}

/// A policy's refusal of an identity: who, which rule, and why in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    /// The primary identity as shown to a person.
    pub who: String,
    /// Why it may not pass, naming the rule that refused (`upstreams[0].rules[0] (shop
    /// /admin): allowed_groups`).
    pub reason: String,
}

/// What identifying the request proved (README steps 3 to 5). `R` is the caller's account of
/// a failure (its refusal), handed back untouched in the [`Admission`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof<'a, R> {
    /// No credentials, or a session that no longer exists.
    Nothing,
    /// A bearer token that did not verify.
    InvalidBearer(R),
    /// The platform's account JWT did not verify (expired, another key, two of them...).
    InvalidAccountJwt(R),
    /// The store or a provider could not be asked: nothing can be decided.
    Unavailable(R),
    /// An identity was proven.
    Identity(Proven<'a>),
}

/// What an identity that was proven has, as far as admission cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proven<'a> {
    /// How it was proven.
    pub via: Via,
    /// Whether a Magento.com (SSO) identity is signed in.
    pub sso: bool,
    /// Whether the cloud account is known.
    pub account: bool,
    /// The verdict of the request's policy on the primary identity: `Some` when it refuses.
    pub forbidden: Option<&'a Forbidden>,
}

/// The rules in force for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Whether a browser can be sent to sign in (`[sso]` is configured).
    pub sign_in: bool,
    /// The link rule: `None` when linking is not in play (no `[account]`, or an endpoint
    /// that shows identities whatever their link), else the requirement of the request's
    /// policy now.
    pub linking: Option<Requirement>,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission<'a, R> {
    /// Let it through, with this link status.
    Pass {
        /// How the identity was proven.
        via: Via,
        /// What the upstream is told about the link.
        link: LinkStatus,
    },
    /// Signed in, but the request's policy refuses the identity: 403 (step 7).
    Forbidden(&'a Forbidden),
    /// A browser signed in with Magento.com whose cloud account is not linked, while the
    /// rule is enforced: the page that explains the rule (step 4).
    LinkPage,
    /// A browser signed in to its cloud account that is not linked, while the rule is
    /// enforced: to the Magento.com sign-in to connect (Method 1, step 4).
    Connect,
    /// Not a browser, not linked, while the rule is enforced: `401`
    /// `insufficient_user_authentication` naming the account page.
    LinkRequired,
    /// A browser with nothing usable (no credentials, or an account JWT that did not
    /// verify): to `{prefix}/start?rd=` (step 6).
    SignIn,
    /// Nobody: `401` with `WWW-Authenticate`, as a page when `page` (step 6).
    Unauthenticated {
        /// Whether the answer is a page (a browser navigation with an identity-less proof).
        page: bool,
    },
    /// A token that did not verify: `401` `invalid_token` (steps 3 and 5).
    InvalidToken(R),
    /// The store or a provider could not be asked: `503`.
    Unavailable(R),
}

/// Decides the admission of a request. `navigation`: a browser navigation (it may be sent
/// somewhere; anything else gets a status and JSON).
pub fn decide<'a, R>(proof: Proof<'a, R>, navigation: bool, rules: Rules) -> Admission<'a, R> {
    let proven = match proof {
        Proof::Unavailable(r) => return Admission::Unavailable(r),
        Proof::InvalidBearer(r) => return Admission::InvalidToken(r),
        // An expired or invalid platform JWT: a person signs in again, as with nothing.
        Proof::InvalidAccountJwt(_) if navigation && rules.sign_in => return Admission::SignIn,
        Proof::InvalidAccountJwt(r) => return Admission::InvalidToken(r),
        Proof::Nothing if navigation && rules.sign_in => return Admission::SignIn,
        Proof::Nothing => return Admission::Unauthenticated { page: false },
        Proof::Identity(proven) => proven,
    };
    if !proven.sso && !proven.account {
        return Admission::Unauthenticated { page: navigation };
    }
    if let Some(forbidden) = proven.forbidden {
        return Admission::Forbidden(forbidden);
    }
    let pass = |link| Admission::Pass {
        via: proven.via,
        link,
    };
    let Some(requirement) = rules.linking else {
        return pass(LinkStatus::NotInPlay);
    };
    match (proven.sso && proven.account, requirement) {
        (true, _) => pass(LinkStatus::Linked),
        (false, Requirement::Off) => pass(LinkStatus::NotInPlay),
        (false, Requirement::Grace) => pass(LinkStatus::Grace),
        (false, Requirement::Enforced) if !navigation => Admission::LinkRequired,
        (false, Requirement::Enforced) if proven.sso => Admission::LinkPage,
        (false, Requirement::Enforced) => Admission::Connect,
    }
}

impl<R> Admission<'_, R> {
    /// The `decision` label of the request (metrics, access log).
    pub fn decision(&self) -> Decision {
        match self {
            Admission::Pass {
                via: Via::Session | Via::AccountJwt,
                ..
            } => Decision::Session,
            Admission::Pass {
                via: Via::Bearer, ..
            } => Decision::Bearer,
            Admission::Forbidden(_) => Decision::Forbidden,
            Admission::LinkPage | Admission::LinkRequired => Decision::LinkRequired,
            Admission::Connect | Admission::SignIn => Decision::RedirectLogin,
            Admission::Unauthenticated { .. } | Admission::InvalidToken(_) => {
                Decision::Unauthenticated
            }
            Admission::Unavailable(_) => Decision::Refused,
        }
    }
}

#[cfg(test)]
mod tests;

//! The refusal catalogue: every reason linkgate answers a request itself with an error.
//!
//! Each [`Refusal`] knows its HTTP status, a stable machine-readable code, the catalogue
//! keys of its page's title, text and advice, and the [`Reply`] it becomes (a page for a
//! browser navigation, JSON otherwise). Whether to refuse is decided elsewhere; how the
//! reply is sent is [`Reply`]'s.

use http::header;
use http::StatusCode;
use serde_json::json;

use super::Reply;
use crate::pages::{self, Text};

/// Why linkgate answers a request itself with an error. Each variant knows its status, a
/// stable machine-readable code, and the page it shows a person.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// No (valid) credentials for a protected resource, and the client is not a browser that
    /// could be sent to sign in.
    #[error("authentication required")]
    Unauthenticated,
    /// Signed in but not allowed by `[authz]`.
    #[error("{reason}")]
    Forbidden {
        /// Who the user is signed in as, shown so they can tell which account was refused.
        who: String,
        /// Why they were refused, in words a user understands (a policy's rule name stays
        /// as configured: [`Text::raw`]).
        reason: Text,
    },
    /// The request itself is malformed.
    #[error("bad request: {0}")]
    BadRequest(Text),
    /// A bearer token that did not verify. The detail is logged, never sent: it may name the
    /// provider's internal URLs.
    #[error("the token is not valid")]
    InvalidToken(String),
    /// A sign-in that cannot complete (expired or replayed flow, another browser, the
    /// provider refused or cancelled). `retry` starts a fresh sign-in.
    #[error("{why}")]
    SignInFailed {
        /// What happened, in words a user understands.
        why: Text,
        /// Where "Try again" goes.
        retry: String,
    },
    /// Signed in, but the Magento.com link the site requires is missing (API clients; a
    /// browser sees the link page instead).
    #[error("this account is not linked to a {sso} account")]
    LinkRequired {
        /// The SSO provider's name.
        sso: String,
        /// Where a person can connect.
        link_page: String,
    },
    /// Linking refused because one side is already linked elsewhere. Nothing changed.
    #[error("{why}")]
    LinkConflict {
        /// What happened.
        why: Text,
        /// What to do about it.
        what_to_do: Text,
        /// The account page.
        link_page: String,
    },
    /// No upstream route matches the host and path.
    #[error("no application is configured for this address")]
    NoRoute,
    /// A linkgate endpoint that does not exist.
    #[error("not found")]
    NotFound,
    /// The method is not allowed on a linkgate endpoint.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A request body to a linkgate endpoint longer than it takes (a form is at most 16 KiB),
    /// refused before it is read whole.
    #[error("the request body is too large")]
    TooLarge,
    /// The session store is unreachable.
    #[error("the session store is unavailable")]
    StoreUnavailable,
    /// The identity provider could not be reached or answered nonsense. The detail (which
    /// URL, which status) is logged, never sent: an anonymous client learns nothing about
    /// the provider's internals.
    #[error("the sign-in provider is unavailable")]
    ProviderUnavailable(String),
    /// The upstream refused the connection or broke it.
    #[error("the application could not be reached")]
    BadGateway,
    /// The upstream did not answer in time.
    #[error("the application did not answer in time")]
    GatewayTimeout,
    /// A bug or an unexpected internal failure.
    #[error("internal error")]
    Internal,
}

// === impl Refusal ===

/// A provider that could not be asked is a `503` whose detail goes to the log, never to the
/// client. (A sign-in tells a provider's refusal apart before it comes to this.)
impl From<crate::oidc::OidcError> for Refusal {
    fn from(e: crate::oidc::OidcError) -> Self {
        Refusal::ProviderUnavailable(e.to_string())
    }
}

/// A store failure is a `503` (what failed was logged where it happened, by the store).
impl From<crate::store::StoreError> for Refusal {
    fn from(_: crate::store::StoreError) -> Self {
        Refusal::StoreUnavailable
    }
}

impl Refusal {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refusal::BadRequest(_) | Refusal::SignInFailed { .. } => StatusCode::BAD_REQUEST,
            Refusal::InvalidToken(_) | Refusal::LinkRequired { .. } => StatusCode::UNAUTHORIZED,
            Refusal::LinkConflict { .. } => StatusCode::CONFLICT,
            Refusal::NoRoute | Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::StoreUnavailable | Refusal::ProviderUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::BadGateway => StatusCode::BAD_GATEWAY,
            Refusal::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable code for API clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::InvalidToken(_) => "invalid_token",
            Refusal::LinkRequired { .. } => "link_required",
            Refusal::LinkConflict { .. } => "link_conflict",
            Refusal::SignInFailed { .. } => "sign_in_failed",
            Refusal::NoRoute => "no_route",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::TooLarge => "payload_too_large",
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::ProviderUnavailable(_) => "provider_unavailable",
            Refusal::BadGateway => "bad_gateway",
            Refusal::GatewayTimeout => "gateway_timeout",
            Refusal::Internal => "internal_error",
        }
    }

    /// What the user can do next, in one sentence (a catalogue key).
    fn advice(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "refusal.unauthenticated_advice",
            Refusal::Forbidden { .. } => "refusal.forbidden_advice",
            Refusal::BadRequest(_) => "refusal.bad_request_advice",
            Refusal::InvalidToken(_) => "refusal.invalid_token_advice",
            Refusal::LinkRequired { .. } => "refusal.link_required_advice",
            Refusal::LinkConflict { .. } => "refusal.link_conflict_advice",
            Refusal::SignInFailed { .. } => "refusal.sign_in_failed_advice",
            Refusal::NoRoute | Refusal::NotFound => "refusal.not_found_advice",
            Refusal::MethodNotAllowed => "refusal.method_not_allowed_advice",
            Refusal::TooLarge => "refusal.too_large_advice",
            Refusal::StoreUnavailable | Refusal::ProviderUnavailable(_) => {
                "refusal.unavailable_advice"
            }
            Refusal::BadGateway | Refusal::GatewayTimeout => "refusal.gateway_advice",
            Refusal::Internal => "refusal.internal_advice",
        }
    }

    /// The page's title (a catalogue key).
    fn title(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "refusal.unauthenticated_title",
            Refusal::Forbidden { .. } => "refusal.forbidden_title",
            Refusal::BadRequest(_) => "refusal.bad_request_title",
            Refusal::InvalidToken(_) => "refusal.invalid_token_title",
            Refusal::LinkRequired { .. } => "refusal.link_required_title",
            Refusal::LinkConflict { .. } => "refusal.link_conflict_title",
            Refusal::SignInFailed { .. } => "refusal.sign_in_failed_title",
            Refusal::NoRoute | Refusal::NotFound => "refusal.not_found_title",
            Refusal::MethodNotAllowed => "refusal.method_not_allowed_title",
            Refusal::TooLarge => "refusal.too_large_title",
            Refusal::StoreUnavailable | Refusal::ProviderUnavailable(_) => {
                "refusal.unavailable_title"
            }
            Refusal::BadGateway => "refusal.bad_gateway_title",
            Refusal::GatewayTimeout => "refusal.gateway_timeout_title",
            Refusal::Internal => "refusal.internal_title",
        }
    }

    /// What happened, in `ctx`'s language (the page's first paragraph, JSON's `message`).
    fn what(&self, ctx: &pages::PageContext) -> String {
        let key = match self {
            Refusal::SignInFailed { why, .. } | Refusal::LinkConflict { why, .. } => {
                return ctx.text(why)
            }
            Refusal::Forbidden { reason, .. } => {
                return ctx
                    .text(&Text::new("refusal.forbidden_what").arg("reason", ctx.text(reason)))
            }
            Refusal::BadRequest(detail) => {
                return ctx
                    .text(&Text::new("refusal.bad_request_what").arg("detail", ctx.text(detail)))
            }
            Refusal::LinkRequired { sso, .. } => {
                return ctx.text(&Text::new("refusal.link_required_what").arg("sso", sso))
            }
            Refusal::Unauthenticated => "refusal.unauthenticated_what",
            Refusal::InvalidToken(_) => "refusal.invalid_token_what",
            Refusal::NoRoute => "refusal.no_route_what",
            Refusal::NotFound => "refusal.not_found_what",
            Refusal::MethodNotAllowed => "refusal.method_not_allowed_what",
            Refusal::TooLarge => "refusal.too_large_what",
            Refusal::StoreUnavailable => "refusal.store_unavailable_what",
            Refusal::ProviderUnavailable(_) => "refusal.provider_unavailable_what",
            Refusal::BadGateway => "refusal.bad_gateway_what",
            Refusal::GatewayTimeout => "refusal.gateway_timeout_what",
            Refusal::Internal => "refusal.internal_what",
        };
        ctx.tr(key)
    }

    /// The reply for this refusal: an HTML page for a browser navigation, JSON otherwise,
    /// its human texts in `ctx`'s language (`error` stays the stable English code).
    /// Internal detail a refusal carries is logged here and left out of the reply.
    pub fn reply(&self, html: bool, ctx: &pages::PageContext) -> Reply {
        match self {
            Refusal::ProviderUnavailable(detail) => {
                tracing::warn!(detail = %detail, "sign-in provider unavailable");
            }
            Refusal::InvalidToken(detail) => {
                tracing::debug!(detail = %detail, "token refused");
            }
            _ => {}
        }
        let status = self.status();
        let advice = match self {
            Refusal::LinkConflict { what_to_do, .. } => ctx.text(what_to_do),
            _ => ctx.tr(self.advice()),
        };
        let what = self.what(ctx);
        let reply = if html {
            let who = match self {
                Refusal::Forbidden { who, .. } => Some(who.as_str()),
                _ => None,
            };
            let action = match self {
                Refusal::SignInFailed { retry, .. } => {
                    Some((ctx.tr("page.try_again"), retry.as_str()))
                }
                Refusal::LinkConflict { link_page, .. }
                | Refusal::LinkRequired { link_page, .. } => {
                    Some((ctx.tr("page.go_to_account_settings"), link_page.as_str()))
                }
                _ => None,
            };
            Reply::html(
                status,
                pages::message(
                    ctx,
                    &ctx.tr(self.title()),
                    &what,
                    &advice,
                    who,
                    action.as_ref().map(|(l, h)| (l.as_str(), *h)),
                ),
            )
        } else {
            let mut body = json!({
                "error": self.code(),
                "message": what,
                "advice": advice,
            });
            match self {
                Refusal::LinkRequired { link_page, .. } => body["link_page"] = json!(link_page),
                Refusal::LinkConflict { link_page, .. } => {
                    body["link_page"] = json!(link_page);
                }
                Refusal::SignInFailed { retry, .. } => body["retry"] = json!(retry),
                _ => {}
            }
            Reply::json(status, &body)
        };
        match self {
            Refusal::Unauthenticated => reply.with_header(
                header::WWW_AUTHENTICATE,
                &format!("Bearer realm=\"{}\"", ctx.realm),
            ),
            Refusal::LinkRequired { .. } => reply.with_header(
                header::WWW_AUTHENTICATE,
                &format!(
                    "Bearer realm=\"{}\", error=\"insufficient_user_authentication\", error_description=\"link your account to {}\"",
                    ctx.realm, ctx.realm
                ),
            ),
            Refusal::InvalidToken(_) => reply.with_header(
                header::WWW_AUTHENTICATE,
                &format!("Bearer realm=\"{}\", error=\"invalid_token\"", ctx.realm),
            ),
            Refusal::StoreUnavailable | Refusal::ProviderUnavailable(_) => {
                reply.with_header(header::RETRY_AFTER, "5")
            }
            _ => reply,
        }
    }
}

#[cfg(test)]
mod tests;

//! Sign-in with Magento.com: `GET start` seals the flow into a cookie of its own and sends
//! the browser to the provider; `GET callback` opens it (once), checks the answer, and makes
//! a new session. [`begin`] and [`finish`] serve the account sign-in too.
//!
//! SECURITY: `start` writes nothing to the store (the flow is a sealed cookie, see
//! [`crate::session::flow`]) and nothing it keeps is sized by the client beyond
//! [`flow::MAX_RD`]. A link is made only for the session that started the flow: connect
//! flows (and account sign-ins of a session waiting for its account) carry that session's
//! id and identity, and the callback links only when the request's session is the same.

use pingora::http::RequestHeader;

use super::link::link;
use super::request::{base_url, current, primary_key, query_param, replace_session};
use super::RequestInfo;
use crate::app::{App, SignIn};
use crate::identity::{Identity, OpaqueId};
use crate::oidc::{OidcError, Tokens};
use crate::pages::Text;
use crate::respond::{Refusal, Reply};
use crate::session::flow::{self, AskedBy};
use crate::session::{Flow, FlowRefusal, Intent, SessionRecord, FLOW_TTL};

/// What a person reads when a callback comes without its flow.
const UNKNOWN_FLOW: &str = "sign_in.unknown_flow";

/// Starts a flow for `provider` and returns the redirect to its authorization endpoint,
/// with the flow sealed in a cookie of its own. Writes nothing to the store.
/// `asked_by` is the session that starts it, for a flow that may link.
pub(super) async fn begin(
    app: &App,
    SignIn { provider, sessions }: SignIn<'_>,
    intent: Intent,
    asked_by: Option<AskedBy>,
    req: &RequestHeader,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let rd = query_param(req, "rd");
    if rd.as_ref().is_some_and(|rd| rd.len() > flow::MAX_RD) {
        return Err(Refusal::BadRequest(
            Text::new("bad_request.rd_too_long").arg("max", flow::MAX_RD),
        ));
    }
    let rd = app.redirects.resolve(rd.as_deref());
    let Some(base) = base_url(app, req, info) else {
        tracing::warn!(
            "sign-in refused: the request's host is neither server.public_url nor an upstream's hosts"
        );
        return Err(Refusal::BadRequest(Text::new("bad_request.unknown_host")));
    };
    let state = flow::new_state();
    let redirect_uri = format!("{base}{}", provider.redirect_path());
    let request = provider.authorize(&state, &redirect_uri).await?;
    let flow = Flow {
        provider: provider.label.to_string(),
        intent,
        verifier: request.verifier,
        nonce: request.nonce,
        rd,
        redirect_uri,
        asked_by,
        expires_at_ms: flow::now_ms() + FLOW_TTL.as_millis() as i64,
    };
    let Some(cookies) = sessions.flow_cookies(req, &state, &flow) else {
        return Err(Refusal::BadRequest(Text::new("bad_request.flow_too_large")));
    };
    let mut reply = Reply::redirect(request.url.as_str());
    for cookie in &cookies {
        reply = reply.with_cookie(cookie);
    }
    Ok(reply)
}

/// Opens the flow of a callback from its cookie (once: the cookie is cleared by
/// [`handle`]), checks it belongs to `provider`, checks the issuer, exchanges the code,
/// verifies the id_token, then marks the state used (the first store write of a sign-in).
pub(super) async fn finish(
    app: &App,
    SignIn { provider, sessions }: SignIn<'_>,
    req: &RequestHeader,
) -> Result<(Flow, Identity, Tokens), Refusal> {
    let logins = |result: &str| {
        app.metrics
            .logins
            .with_label_values(&[provider.label, result])
            .inc();
    };
    let state = query_param(req, "state").unwrap_or_default();
    let home = app.start_url("/", Intent::Login);
    let flow = match sessions.flow_of(req, &state) {
        Ok(Some((_, flow))) if flow.provider == provider.label => flow,
        Ok(_) | Err(FlowRefusal::Invalid(_)) => {
            logins("unknown_state");
            return Err(Refusal::SignInFailed {
                why: Text::new(UNKNOWN_FLOW),
                retry: home,
            });
        }
        Err(FlowRefusal::Duplicate(_)) => {
            // Two cookies of one flow's name: one was planted. Neither is used.
            logins("duplicate_cookie");
            return Err(Refusal::SignInFailed {
                why: Text::new("sign_in.duplicate"),
                retry: home,
            });
        }
        Err(FlowRefusal::Expired(_)) => {
            logins("expired");
            return Err(Refusal::SignInFailed {
                why: Text::new("sign_in.expired"),
                retry: home,
            });
        }
    };
    let retry = app.start_url(&flow.rd, flow.intent);
    if let Some(error) = query_param(req, "error") {
        logins("provider_error");
        let name = provider.display_name();
        let why = match error.as_str() {
            "access_denied" => Text::new("sign_in.cancelled"),
            "login_required" | "consent_required" | "interaction_required" => {
                Text::new("sign_in.login_required")
            }
            _ => Text::new("sign_in.provider_error").arg("error", &error),
        }
        .arg("provider", name);
        return Err(Refusal::SignInFailed { why, retry });
    }
    let endpoints = provider.endpoints().await?;
    // RFC 9207: a mix-up attack shows up as another issuer here, or as none.
    if let Err(e) = endpoints.check_response_issuer(query_param(req, "iss").as_deref()) {
        logins("wrong_issuer");
        tracing::warn!(provider = provider.label, error = %e, "sign-in refused");
        return Err(Refusal::SignInFailed {
            why: Text::new("sign_in.wrong_issuer"),
            retry,
        });
    }
    let Some(code) = query_param(req, "code").filter(|c| !c.is_empty()) else {
        logins("no_code");
        return Err(Refusal::SignInFailed {
            why: Text::new("sign_in.no_code"),
            retry,
        });
    };
    let (identity, tokens) = match provider
        .exchange(&code, &flow.verifier, &flow.redirect_uri, &flow.nonce)
        .await
    {
        Ok(done) => done,
        Err(OidcError::Unavailable(e)) => {
            logins("provider_unavailable");
            return Err(Refusal::ProviderUnavailable(e.to_string()));
        }
        Err(e) => {
            logins("invalid");
            tracing::warn!(provider = provider.label, error = %e, "sign-in refused");
            return Err(Refusal::SignInFailed {
                why: Text::new("sign_in.not_verified"),
                retry,
            });
        }
    };
    // Only now, with a code the provider honoured, may the store be written.
    match sessions.mark_flow_used(&state, &flow).await? {
        true => {}
        false => {
            logins("replayed");
            return Err(Refusal::SignInFailed {
                why: Text::new(UNKNOWN_FLOW),
                retry: home,
            });
        }
    }
    logins("ok");
    Ok((flow, identity, tokens))
}

/// `GET start?rd=[&intent=connect]`: sign in with Magento.com. A connect flow records the
/// session that asks and the cloud account it holds (the callback links only for them).
pub(super) async fn start(
    app: &App,
    sso: SignIn<'_>,
    req: &RequestHeader,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let intent = match query_param(req, "intent").as_deref() {
        Some("connect") => Intent::Connect,
        _ => Intent::Login,
    };
    let asked_by = asked_by_current(app, req).await?;
    begin(app, sso, intent, asked_by, req, info).await
}

/// The session of the request as the starter of a flow, if it has one. A store read only
/// for a cookie whose tag verified: never for an anonymous client.
pub(super) async fn asked_by_current(
    app: &App,
    req: &RequestHeader,
) -> Result<Option<AskedBy>, Refusal> {
    Ok(current(app, req)
        .await?
        .and_then(|(id, record)| primary_key(&record).map(|key| AskedBy::new(id, &key))))
}

/// Whether `flow` was started by the session `old` (same id, same identity).
pub(super) fn started_by(flow: &Flow, old: &(OpaqueId, SessionRecord)) -> bool {
    let (id, record) = old;
    match (flow.asked_by, primary_key(record)) {
        (Some(asked), Some(key)) => asked.is(id, &key),
        _ => false,
    }
}

/// Whether a sign-in as `identity` may replace the browser's session `old`: when that
/// session started it (switching users on purpose), or is already this person. Otherwise a
/// planted flow cookie would sign a signed-in victim into the attacker's account (login
/// CSRF), from where one more click could link her account to his.
pub(super) fn may_replace(
    flow: &Flow,
    old: Option<&(OpaqueId, SessionRecord)>,
    identity_key: &str,
) -> bool {
    old.is_none_or(|old| {
        let same_person = [&old.1.sso, &old.1.account]
            .into_iter()
            .flatten()
            .any(|i| i.key() == identity_key);
        same_person || started_by(flow, old)
    })
}

/// The page for a flow that would link an identity to a session other than the one that
/// asked for it (a planted flow cookie, or a session that changed meanwhile).
pub(super) fn not_this_session(app: &App) -> Refusal {
    app.metrics
        .links
        .with_label_values(&["wrong_session"])
        .inc();
    Refusal::SignInFailed {
        why: Text::new("sign_in.not_this_session"),
        retry: if app.linking.is_on() {
            app.link_page_url()
        } else {
            app.start_url("/", Intent::Login)
        },
    }
}

/// `GET callback`: back from Magento.com. A login looks up the link (primary login, never a
/// new link); a connect links the session's cloud account to this Magento.com account, only
/// when the request's session is the one that started the connect and still holds the same
/// cloud account.
pub(super) async fn callback(
    app: &App,
    sso: SignIn<'_>,
    req: &RequestHeader,
) -> Result<Reply, Refusal> {
    let (flow, identity, tokens) = finish(app, sso, req).await?;
    let old = current(app, req).await?;
    // The account a connect links came from the session; if that came from the platform's
    // JWT, the new session follows the JWT too.
    let mut account_jwt = None;
    let account = match (flow.intent, app.linking.registry()) {
        (Intent::Connect, Some(registry)) => {
            let Some(account) = old.as_ref().and_then(|(_, r)| r.account.clone()) else {
                return Err(Refusal::SignInFailed {
                    why: Text::new("sign_in.account_first"),
                    retry: app.link_page_url(),
                });
            };
            if !old.as_ref().is_some_and(|old| started_by(&flow, old)) {
                tracing::warn!("connect callback for another session refused; nothing linked");
                return Err(not_this_session(app));
            }
            link(app, registry, &account, &identity).await?;
            account_jwt = old.as_ref().and_then(|(_, r)| r.account_jwt.clone());
            Some(account)
        }
        (Intent::Login, _) | (Intent::Connect, None)
            if !may_replace(&flow, old.as_ref(), &identity.key()) =>
        {
            tracing::warn!("sign-in into another session's browser refused; session kept");
            return Err(not_this_session(app));
        }
        (Intent::Login, Some(registry)) => {
            registry.by_sso(&identity.key()).await?.map(|l| l.account)
        }
        (_, None) => None,
    };
    let cookie = replace_session(
        sso.sessions,
        old.as_ref(),
        Some(identity),
        account,
        Some(tokens),
        account_jwt,
    )
    .await?;
    Ok(Reply::redirect(&flow.rd).with_cookie(&cookie))
}

//! Signing out: `GET sign_out` (a page that asks to confirm; a GET never signs out),
//! `POST sign_out` (same-site, with the CSRF token; `everywhere=1` ends every session of the
//! identity), and `GET signed_out`, where the provider's logout comes back.

use std::collections::HashMap;

use http::StatusCode;
use pingora::http::RequestHeader;
use serde_json::json;

use super::request::{base_url, current, query_param};
use super::RequestInfo;
use crate::app::App;
use crate::pages;
use crate::pages::Text;
use crate::redirect::encode;
use crate::respond::{self, Refusal, Reply};
use crate::session::Intent;

/// `GET sign_out?rd=`: never signs out by itself (a cross-site link or image must not end
/// anyone's sessions). With a session it answers a page that asks to confirm, whose button
/// POSTs with the session's CSRF token (JSON clients get the action and token); without
/// one there is nothing to end, and it goes on to `rd`.
pub(super) async fn sign_out_page(
    app: &App,
    req: &RequestHeader,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let rd = sign_out_rd(app, req);
    let Some(sessions) = &app.sessions else {
        return Ok(Reply::redirect(&rd));
    };
    let Some(id) = sessions.id_of(req) else {
        return Ok(Reply::redirect(&rd).with_cookie(&sessions.clear_session_cookie()));
    };
    let record = current(app, req).await.ok().flatten().map(|(_, r)| r);
    let who = record.as_ref().and_then(|record| {
        record
            .sso
            .as_ref()
            .or(record.account.as_ref())
            .map(|i| i.display().to_string())
    });
    // The accounts provider's session ends too when this browser signed in there.
    let account_too = record
        .as_ref()
        .filter(|r| r.account_id_token.is_some() && app.linking.provider().is_some())
        .map(|_| app.account_name().to_string());
    let everywhere = query_param(req, "everywhere").as_deref() == Some("1");
    let action = format!(
        "{}/sign_out?rd={}{}",
        app.prefix(),
        encode(&rd),
        if everywhere { "&everywhere=1" } else { "" }
    );
    let csrf = sessions.csrf_token(&id);
    if !respond::prefers_html(req) && !respond::is_navigation(req) {
        return Ok(Reply::json(
            StatusCode::OK,
            &json!({
                "sign_out": format!(
                    "{}{action}",
                    base_url(app, req, info).unwrap_or_default()
                ),
                "method": "POST",
                "csrf": csrf,
                "everywhere": everywhere,
            }),
        ));
    }
    let page = pages::sign_out_page(
        &app.pages.for_request(req),
        &pages::SignOutView {
            signed_in_as: who,
            action,
            csrf,
            back: rd,
            provider_too: app.sso.is_some(),
            account_too,
            everywhere,
        },
    );
    Ok(Reply::html(StatusCode::OK, page))
}

/// `POST sign_out?rd=[&everywhere=1]` (same-site, with the session's CSRF token): deletes
/// the session (with `everywhere=1`, every session of its Magento.com identity), then
/// ends the provider session too (RP-initiated logout with `id_token_hint`) when the
/// provider has an end-session endpoint.
pub(super) async fn sign_out(
    app: &App,
    req: &RequestHeader,
    form: &HashMap<String, String>,
    info: RequestInfo,
) -> Result<Reply, Refusal> {
    let rd = sign_out_rd(app, req);
    let Some(sessions) = &app.sessions else {
        return Ok(Reply::redirect(&rd));
    };
    let mut ended = super::sign_out_chain::Ended {
        had_session: sessions.id_of(req).is_some(),
        ..Default::default()
    };
    if let Some(id) = sessions.id_of(req) {
        let token = form.get("csrf").map(String::as_str).unwrap_or("");
        if !sessions.csrf_ok(&id, token) {
            return Err(Refusal::BadRequest(Text::new(
                "bad_request.sign_out_form_expired",
            )));
        }
        let record = sessions.load(&id).await?;
        sessions.destroy(&id, record.as_ref()).await?;
        // Everywhere: every session of this Magento.com identity, on every instance (the
        // store's index of them; each instance drops its cached copy on the invalidation).
        let everywhere = query_param(req, "everywhere").as_deref() == Some("1")
            || form.get("everywhere").map(String::as_str) == Some("1");
        if let Some(sso) = record
            .as_ref()
            .and_then(|r| r.sso.as_ref())
            .filter(|_| everywhere)
        {
            let ended = sessions.destroy_all_for(&sso.key()).await?;
            tracing::info!(ended, "signed out everywhere");
        }
        if let Some(record) = record {
            ended.account_id_token = record.account_id_token;
            ended.sso_id_token = record.tokens.and_then(|t| t.id_token);
        }
    }
    // The providers' sessions end too (the accounts provider's, then Magento.com's), each
    // with its id_token as hint when the session still has one (after a disconnect it has
    // none for Magento.com, and the browser is still signed in there).
    let base = base_url(app, req, info);
    let step = super::sign_out_chain::begin(app, base.as_deref(), &rd, ended).await;
    let reply = Reply::redirect(&step.location).with_cookie(&sessions.clear_session_cookie());
    Ok(keep_chain(sessions, reply, step.keep))
}

/// The rest of the sign-out chain waits in a cookie of its own (src/session/signed_out.rs),
/// never in a URL, for `signed_out` to follow.
fn keep_chain(sessions: &crate::session::Sessions, reply: Reply, keep: Option<String>) -> Reply {
    match keep {
        Some(chain) => reply.with_cookie(&sessions.return_cookie(&chain)),
        None => reply,
    }
}

/// Where a sign-out ends: its validated `rd`, or without one the "Signed out" page (rather
/// than `/`, which would send a signed-out person straight back to a sign-in).
fn sign_out_rd(app: &App, req: &RequestHeader) -> String {
    match query_param(req, "rd") {
        Some(rd) => app.redirects.resolve(Some(&rd)),
        None => format!("{}/signed_out", app.prefix()),
    }
}

/// `GET signed_out?state=`: where a provider sends the browser after its logout. `state`
/// (or, after IMS's logout, which returns none, the cookie `sign_out` left) carries the rest
/// of the sign-out chain: the next provider's logout, or `rd`, validated again
/// (src/endpoints/sign_out_chain.rs). Without either, or once the chain ends here: the
/// "Signed out" page, with "Sign in again".
pub(super) async fn signed_out(app: &App, req: &RequestHeader) -> Reply {
    let sessions = app.sessions.as_ref();
    let clear = sessions
        .filter(|s| s.has_return_cookie(req))
        .map(|s| s.clear_return_cookie());
    let state = query_param(req, "state");
    let kept = sessions.and_then(|s| s.return_destination(req));
    let this_page = format!("{}/signed_out", app.prefix());
    let mut keep = None;
    let next = match super::sign_out_chain::resume(app, state.as_deref(), kept.as_deref()).await {
        Some(step) => {
            keep = step.keep;
            // Back from IMS (no `state` in the URL): the page itself is shown at once, not
            // redirected to this very URL.
            Some(step.location).filter(|to| !(state.is_none() && *to == this_page))
        }
        None => None,
    };
    let reply = match next {
        Some(to) => Reply::redirect(&to),
        None => {
            let ctx = app.pages.for_request(req);
            let html = pages::message(
                &ctx,
                &ctx.tr("signed_out.title"),
                &ctx.text(&Text::new("signed_out.what").arg("sso", app.sso_name())),
                &ctx.tr("signed_out.advice"),
                None,
                Some((
                    &ctx.tr("page.sign_in_again"),
                    &app.start_url("/", Intent::Login),
                )),
            );
            Reply::html(StatusCode::OK, html)
        }
    };
    match (sessions, keep, clear) {
        (Some(sessions), Some(keep), _) => keep_chain(sessions, reply, Some(keep)),
        (_, _, Some(clear)) => reply.with_cookie(&clear),
        _ => reply,
    }
}

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
    let rd = app.redirects.resolve(query_param(req, "rd").as_deref());
    let Some(sessions) = &app.sessions else {
        return Ok(Reply::redirect(&rd));
    };
    let Some(id) = sessions.id_of(req) else {
        return Ok(Reply::redirect(&rd).with_cookie(&sessions.clear_session_cookie()));
    };
    let who = match current(app, req).await {
        Ok(Some((_, record))) => record
            .sso
            .as_ref()
            .or(record.account.as_ref())
            .map(|i| i.display().to_string()),
        _ => None,
    };
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
        &app.pages,
        &pages::SignOutView {
            signed_in_as: who,
            action,
            csrf,
            back: rd,
            provider_too: app.sso.is_some(),
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
    let rd = app.redirects.resolve(query_param(req, "rd").as_deref());
    let Some(sessions) = &app.sessions else {
        return Ok(Reply::redirect(&rd));
    };
    let mut id_token = None;
    let had_session = sessions.id_of(req).is_some();
    if let Some(id) = sessions.id_of(req) {
        let token = form.get("csrf").map(String::as_str).unwrap_or("");
        if !sessions.csrf_ok(&id, token) {
            return Err(Refusal::BadRequest(
                "the sign-out form expired; open the sign-out page again".into(),
            ));
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
        id_token = record.and_then(|r| r.tokens).and_then(|t| t.id_token);
    }
    let mut location = rd.clone();
    // The Magento.com session ends too, with the id_token as hint when the session still
    // has one (after a disconnect it does not, and the browser is still signed in there).
    let base = base_url(app, req, info);
    if let (Some(sso), true, Some(base)) = (&app.sso, had_session, base) {
        let back = format!("{base}{}/signed_out", app.prefix());
        if let Some(mut url) = sso.end_session_url(id_token.as_deref(), &back).await {
            url.query_pairs_mut().append_pair("state", &rd);
            location = url.to_string();
        }
    }
    Ok(Reply::redirect(&location).with_cookie(&sessions.clear_session_cookie()))
}

/// `GET signed_out?state=`: where the provider sends the browser after its logout; `state`
/// carries `rd`, validated again. Without `state`: the "Signed out" page, with "Sign in
/// again" (where linkgate's own pages send a sign-out).
pub(super) fn signed_out(app: &App, req: &RequestHeader) -> Reply {
    let Some(state) = query_param(req, "state") else {
        let html = pages::message(
            &app.pages,
            "Signed out",
            &format!("You are signed out of this site and of {}.", app.sso_name()),
            "Close this window, or sign in again.",
            None,
            Some(("Sign in again", &app.start_url("/", Intent::Login))),
        );
        return Reply::html(StatusCode::OK, html);
    };
    let rd = app.redirects.resolve(Some(&state));
    Reply::redirect(&rd)
}

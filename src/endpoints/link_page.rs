//! The account page `GET link` ("Account Settings", "Single Sign-On") and its JSON twin, and
//! the link-required page the proxy shows a browser whose Magento.com account is not linked:
//! where a person stands and what they can do about it.

use http::StatusCode;
use pingora::http::RequestHeader;
use serde_json::json;

use super::link::masked;
use super::request::{current, query_param};
use crate::app::App;
use crate::identify::Passport;
use crate::identity::{Identity, OpaqueId};
use crate::pages::Text;
use crate::pages::{self, AccountView};
use crate::redirect::encode;
use crate::respond::{self, Refusal, Reply};
use crate::session::Intent;

/// The cloud account the request's platform JWT names, for a Magento.com session that has
/// none (`[account] source = "jwt"`): the person signed in at the platform after signing in
/// here. `linked_to`: the Magento.com account that account is already linked to, if any.
/// A JWT that does not verify (or keys that cannot be fetched) shows as none: the page
/// still renders, and `link/connect` verifies again and says why.
struct JwtAccount {
    account: Identity,
    linked_to: Option<Identity>,
}

async fn jwt_account(app: &App, req: &RequestHeader) -> Option<JwtAccount> {
    let registry = app.linking.registry()?;
    app.linking.jwt()?;
    let (account, _) = crate::identify::account_of_jwt(app, req)
        .await
        .ok()
        .flatten()?;
    let linked_to = registry
        .by_account(&account.key())
        .await
        .ok()
        .flatten()
        .map(|l| l.sso);
    Some(JwtAccount { account, linked_to })
}

/// Where a person stands, as the account page (and its JSON twin) tells it.
async fn account_view(
    app: &App,
    id: &OpaqueId,
    sso: Option<&Identity>,
    account: Option<&Identity>,
    req: &RequestHeader,
) -> AccountView {
    let requirement = app.requirement(time::OffsetDateTime::now_utc());
    let linked = sso.is_some() && account.is_some();
    let tr = app.pages.for_request(req);
    let mode = crate::policy::mode_label(app.config.link.mode, requirement);
    let grace_notice = (!linked)
        .then(|| match mode {
            "grace" => {
                let from = app
                    .config
                    .link
                    .required_from
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                Some(
                    tr.text(
                        &Text::new("account.grace")
                            .arg("sso", app.sso_name())
                            .arg("from", from),
                    ),
                )
            }
            "warn" => Some(tr.text(&Text::new("account.warn").arg("sso", app.sso_name()))),
            _ => None,
        })
        .flatten();
    // A Magento.com session without an account notices the platform's JWT when it appears:
    // the page shows whom it names and offers the Connect button (a CSRF-protected POST;
    // nothing is linked by the JWT alone).
    let from_jwt = match (sso, account) {
        (Some(_), None) => jwt_account(app, req).await,
        _ => None,
    };
    let mut conflict = None;
    let mut conflict_fix = None;
    let shown_account = account
        .map(|a| a.display().to_string())
        .or_else(|| from_jwt.as_ref().map(|j| j.account.display().to_string()));
    if let (Some(sso), Some(j)) = (sso, &from_jwt) {
        if let Some(other) = j.linked_to.as_ref().filter(|o| o.key() != sso.key()) {
            conflict = Some(
                tr.text(
                    &Text::new("account.jwt_conflict")
                        .arg("account_name", app.account_name())
                        .arg("account", j.account.display())
                        .arg("sso", app.sso_name())
                        .arg("other", masked(other.display())),
                ),
            );
            conflict_fix = Some(
                tr.text(
                    &Text::new("account.jwt_conflict_fix")
                        .arg("sso", app.sso_name())
                        .arg("key", j.account.key()),
                ),
            );
        }
    }
    let state = match (sso.is_some(), shown_account.is_some()) {
        _ if linked => "linked",
        _ if conflict.is_some() => "linked_to_someone_else",
        (true, true) => "both_unlinked",
        (true, false) => "sso_only",
        (false, true) => "cloud_only",
        (false, false) => "nothing",
    };
    let rd = query_param(req, "rd").unwrap_or_else(|| app.link_page_url());
    AccountView {
        state: state.to_string(),
        mode: mode.to_string(),
        sso_name: app.sso_name().to_string(),
        account_name: app.account_name().to_string(),
        account: shown_account,
        account_from_jwt: from_jwt.is_some(),
        connected_as: sso.filter(|_| linked).map(|s| s.display().to_string()),
        sso_unlinked: sso.filter(|_| !linked).map(|s| s.display().to_string()),
        signed_in_sso: sso.map(|s| s.display().to_string()),
        grace_notice,
        conflict,
        conflict_fix,
        allow_disconnect: app.config.link.allow_disconnect,
        csrf: app
            .sessions
            .as_ref()
            .map(|s| s.csrf_token(id))
            .unwrap_or_default(),
        account_sign_in: app
            .linking
            .provider()
            .map(|_| format!("{}/account/start?rd={}", app.prefix(), encode(&rd))),
        account_hint: app.linking.jwt().map(|_| {
            tr.text(&Text::new("account.account_hint").arg("account_name", app.account_name()))
        }),
        check_again: app.linking.jwt().map(|_| {
            req.uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string()
        }),
        here: req
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string(),
    }
}

/// The page for an SSO session without a linked account, while the rule is enforced.
/// With the JWT source, a JWT that appeared since the sign-in is noticed here: the page
/// offers "Connect with Magento.com" for the account it names.
pub async fn link_required_page(app: &App, passport: &Passport, req: &RequestHeader) -> Reply {
    let record = match (passport.session, &app.sessions) {
        (Some(id), Some(sessions)) => sessions.load(&id).await.ok().flatten(),
        _ => None,
    };
    let id = passport.session.unwrap_or_else(OpaqueId::random);
    let mut view = match &record {
        Some(r) => account_view(app, &id, r.sso.as_ref(), r.account.as_ref(), req).await,
        None => {
            // An unlinked passport keeps the names (with `[account]` configured, as here).
            let names = passport.names().cloned().unwrap_or_default();
            let mut view = account_view(app, &id, None, None, req).await;
            view.sso_unlinked = names.sso.clone();
            view.signed_in_sso = names.sso;
            view.state = "sso_only".into();
            view
        }
    };
    if let Some(url) = &mut view.account_sign_in {
        let rd = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        *url = format!("{}/account/start?rd={}", app.prefix(), encode(rd));
    }
    Reply::html(
        StatusCode::FORBIDDEN,
        pages::link_required(&app.pages.for_request(req), &view),
    )
}

/// The account page's JSON twin: the same state, what it says and what it offers.
fn account_json(app: &App, view: &AccountView) -> serde_json::Value {
    let connect = matches!(view.state.as_str(), "cloud_only" | "both_unlinked");
    json!({
        "state": view.state,
        "mode": view.mode,
        "provider": view.sso_name,
        "status": if view.connected_as.is_some() { "connected" } else { "not_connected" },
        "connected_as": view.connected_as,
        "sso": view.signed_in_sso,
        "account": view.account,
        "account_from_jwt": view.account_from_jwt,
        "grace": view.grace_notice,
        "conflict": view.conflict,
        "conflict_fix": view.conflict_fix,
        "allow_disconnect": view.allow_disconnect,
        "actions": {
            "connect": connect.then(|| format!("{}/link/connect", app.prefix())),
            "disconnect": (view.connected_as.is_some() && view.allow_disconnect)
                .then(|| format!("{}/link/disconnect", app.prefix())),
            "account_sign_in": (view.state == "sso_only").then(|| view.account_sign_in.clone()).flatten(),
            "sign_out": format!("{}/sign_out", app.prefix()),
        },
        "csrf": view.csrf,
    })
}

/// The account page's JSON twin for a client with no identity at all: `401` (as every
/// endpoint answers without credentials), with `state: "nothing"` and where to sign in.
fn nothing_json(app: &App, req: &RequestHeader) -> Reply {
    let reply = Refusal::Unauthenticated.reply(false, &app.pages.for_request(req));
    let mut body: serde_json::Value = serde_json::from_slice(reply.body()).unwrap_or_default();
    body["state"] = json!("nothing");
    body["actions"] = json!({
        "sign_in": app.start_url(&app.link_page_url(), Intent::Login),
        "account_sign_in": app.linking.provider().map(|_| {
            format!("{}/account/start?rd={}", app.prefix(), encode(&app.link_page_url()))
        }),
    });
    Reply::json(StatusCode::UNAUTHORIZED, &body).with_header(
        http::header::WWW_AUTHENTICATE,
        &format!("Bearer realm=\"{}\"", app.pages.realm),
    )
}

/// `GET link`: Account Settings with the Single Sign-On section.
pub(super) async fn link_page(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    if !app.linking.is_on() {
        return Err(Refusal::NotFound);
    }
    let mut made = None;
    let (id, record) = match current(app, req).await? {
        Some(current) => current,
        None if !respond::is_navigation(req) => return Ok(nothing_json(app, req)),
        // A browser with the platform's JWT alone: the page and its forms need a session.
        None => match crate::identify::session_from_jwt(app, req).await? {
            Some((id, record)) => {
                made = app.sessions.as_ref().map(|s| s.session_cookie(&id));
                (id, record)
            }
            None => {
                return Ok(Reply::redirect(
                    &app.start_url(&app.link_page_url(), Intent::Login),
                ))
            }
        },
    };
    let with_made = |reply: Reply| match &made {
        Some(cookie) => reply.with_cookie(cookie),
        None => reply,
    };
    let view = account_view(app, &id, record.sso.as_ref(), record.account.as_ref(), req).await;
    if !respond::prefers_html(req) && !respond::is_navigation(req) {
        return Ok(with_made(Reply::json(
            StatusCode::OK,
            &account_json(app, &view),
        )));
    }
    Ok(with_made(Reply::html(
        StatusCode::OK,
        pages::account_page(&app.pages.for_request(req), &view),
    )))
}

//! `GET auth`: forward-auth for nginx `auth_request`, Traefik and Caddy. The policy core
//! decides as for a proxied request under the global policy (`[authz]`, `[link]`: there is
//! no route), for a client that is never sent anywhere: `202` with the identity headers, or
//! `401`/`403`, never a redirect (the front proxy decides that).

use http::StatusCode;
use pingora::http::RequestHeader;

use crate::app::App;
use crate::identify::{identify, Found};
use crate::passport::Field;
use crate::policy::{self, Admission};
use crate::respond::{Refusal, Reply};

/// `GET auth` (or `POST`): `202` with the identity headers, or the refusal as JSON.
pub async fn forward_auth(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    let found = identify(app, req).await;
    let rules = app.rules_under(
        app.policies.get(policy::GLOBAL),
        time::OffsetDateTime::now_utc(),
    );
    let refusal = match policy::decide(found.proof(policy::GLOBAL), false, rules) {
        Admission::Pass { link, .. } => match &found {
            Found::Passport(passport) => return Ok(accepted(app, passport, link)),
            _ => Refusal::Internal,
        },
        Admission::Forbidden(f) => Refusal::Forbidden {
            who: f.who.clone(),
            reason: crate::pages::Text::raw(f.reason.clone()),
        },
        Admission::LinkPage | Admission::Connect | Admission::LinkRequired => app.link_required(),
        Admission::InvalidToken(r) | Admission::Unavailable(r) => r.clone(),
        Admission::SignIn | Admission::Unauthenticated { .. } => Refusal::Unauthenticated,
    };
    Ok(refusal.reply(false, &app.pages))
}

fn accepted(app: &App, passport: &crate::passport::Passport, link: policy::LinkStatus) -> Reply {
    let mut reply = Reply::text(StatusCode::ACCEPTED, Vec::<u8>::new());
    let forward_user = app.config.headers.pass_user_headers;
    for (name, value) in passport
        .headers
        .iter(&app.config.headers.names, forward_user)
    {
        reply = reply.with_header_value(name.clone(), value);
    }
    if let Some(value) = app.link_status_value(link) {
        let name = app.config.headers.names.link_status.clone();
        reply = reply.with_header_value(name, value);
    }
    // The names nginx users know from oauth2-proxy, for `auth_request_set` (sent whether
    // or not `headers.pass_user_headers` forwards the user headers).
    for (field, name) in [
        (Field::User, "x-auth-request-user"),
        (Field::Email, "x-auth-request-email"),
        (Field::Groups, "x-auth-request-groups"),
    ] {
        if let Some(value) = passport.headers.get(field) {
            reply = reply.with_header_value(http::HeaderName::from_static(name), value);
        }
    }
    reply
}

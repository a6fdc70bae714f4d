//! `GET userinfo`: the signed-in identities as JSON, or `401`/`403`. It shows who is signed
//! in whatever their link: the policy core is asked with linking out of play.

use http::StatusCode;
use pingora::http::RequestHeader;
use serde_json::json;

use crate::app::App;
use crate::identify::{identify, Found};
use crate::identity::Identity;
use crate::policy::{self, Admission, Rules};
use crate::respond::{Refusal, Reply};

fn identity_json(sso: Option<&Identity>, account: Option<&Identity>) -> serde_json::Value {
    let i = sso.or(account);
    json!({
        "user": i.map(|i| &i.subject),
        "email": i.and_then(|i| i.email.as_ref()),
        "email_verified": i.is_some_and(|i| i.email_verified),
        "name": i.and_then(|i| i.name.as_ref()),
        "preferred_username": i.and_then(|i| i.preferred_username.as_ref()),
        "groups": i.map(|i| i.groups.clone()).unwrap_or_default(),
        "sso": sso.map(|s| json!({ "issuer": s.issuer, "subject": s.subject, "email": s.email })),
        "account": account.map(|a| json!({ "issuer": a.issuer, "subject": a.subject, "email": a.email })),
        "linked": sso.is_some() && account.is_some(),
    })
}

/// `GET userinfo`: the signed-in identity as JSON, or 401. The passport says who may see
/// it (the global policy); the identities in full come from the store (a session) or the
/// token (a bearer).
pub async fn userinfo(app: &App, req: &RequestHeader) -> Result<Reply, Refusal> {
    let found = identify(app, req).await;
    let rules = Rules {
        sign_in: false,
        linking: None,
    };
    match policy::decide(found.proof(policy::GLOBAL), false, rules) {
        Admission::Pass { .. } => {}
        Admission::Forbidden(f) => {
            return Err(Refusal::Forbidden {
                who: f.who.clone(),
                reason: crate::pages::Text::raw(f.reason.clone()),
            })
        }
        Admission::InvalidToken(r) | Admission::Unavailable(r) => return Err(r.clone()),
        _ => return Err(Refusal::Unauthenticated),
    }
    let Found::Passport(passport) = &found else {
        return Err(Refusal::Unauthenticated);
    };
    let (sso, account) = crate::identify::identities(app, req, passport).await?;
    Ok(Reply::json(
        StatusCode::OK,
        &identity_json(sso.as_ref(), account.as_ref()),
    ))
}

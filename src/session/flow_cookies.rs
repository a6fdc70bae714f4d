//! The cookies of sign-in flows: each flow sealed into a cookie of its own, found again by
//! its `state`, cleared once used; a browser keeps a bounded number of them. And the one
//! store write of a flow: marking its `state` used after the code exchange.

use std::time::Duration;

use pingora::http::RequestHeader;

use super::{all_cookies, cookies, flow, Flow, Sessions};
use crate::store::{keys as store_keys, StoreError};

/// How long a login may take from `start` to `callback`.
pub const FLOW_TTL: Duration = Duration::from_secs(600);

/// Why the flow cookie of a callback cannot be used; each names the cookie to clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowRefusal {
    /// The request carries two cookies of the flow's name.
    Duplicate(String),
    /// Forged, altered, sealed under another secret or for another state.
    Invalid(String),
    /// Older than ten minutes.
    Expired(String),
}

impl FlowRefusal {
    /// The name of the cookie to clear.
    pub fn cookie(&self) -> &str {
        match self {
            FlowRefusal::Duplicate(n) | FlowRefusal::Invalid(n) | FlowRefusal::Expired(n) => n,
        }
    }
}

/// The most flow cookies one answer clears.
const MAX_FLOW_CLEARS: usize = 8;

fn flow_max_age() -> i64 {
    FLOW_TTL.as_secs() as i64
}

impl Sessions {
    /// The prefix of flow cookie names (`{cookie_name}_bind`, the browser-binding cookie of
    /// earlier versions): a flow cookie is `{cookie_name}_bind_{short state}`.
    fn flow_cookie_prefix(&self) -> String {
        format!("{}_bind", self.config.cookie_name)
    }

    /// The flow of `state` that this request's flow cookie carries, with the cookie's name.
    /// `Err` names the cookie to clear when the request carries it but it cannot be used:
    /// twice (planted), forged, for another state, or expired. `Ok(None)` when the request
    /// does not carry it at all (another browser, or already used).
    pub fn flow_of(
        &self,
        req: &RequestHeader,
        state: &str,
    ) -> Result<Option<(String, Flow)>, FlowRefusal> {
        if !flow::is_state(state) {
            return Ok(None);
        }
        let name = flow::cookie_name(&self.flow_cookie_prefix(), state);
        let (first, twice) = {
            let mut values = cookies(req, &name);
            (values.next().map(str::to_owned), values.next().is_some())
        };
        let Some(value) = first else {
            return Ok(None);
        };
        if twice {
            return Err(FlowRefusal::Duplicate(name));
        }
        match Flow::open(&self.keys, &value, state) {
            Some(f) if !f.expired(flow::now_ms()) => Ok(Some((name, f))),
            Some(_) => Err(FlowRefusal::Expired(name)),
            None => Err(FlowRefusal::Invalid(name)),
        }
    }

    /// The name of the flow cookie of `state` when the request carries it (to clear it).
    pub fn carried_flow_cookie(&self, req: &RequestHeader, state: &str) -> Option<String> {
        if !flow::is_state(state) {
            return None;
        }
        let name = flow::cookie_name(&self.flow_cookie_prefix(), state);
        let carried = cookies(req, &name).next().is_some();
        carried.then_some(name)
    }

    /// `Set-Cookie` lines for a new flow of `state`: the flow's own cookie first, then a
    /// clearing line for each older flow cookie of this browser that must go to keep within
    /// [`flow::MAX_FLOWS`] and [`flow::BUDGET`] (unreadable ones first, then the oldest).
    /// `None` when the flow does not fit in a cookie.
    pub fn flow_cookies(&self, req: &RequestHeader, state: &str, f: &Flow) -> Option<Vec<String>> {
        let value = f.seal(&self.keys, state)?;
        let name = flow::cookie_name(&self.flow_cookie_prefix(), state);
        let prefix = format!("{}_", self.flow_cookie_prefix());
        let mut held: Vec<(i64, &str, usize)> = all_cookies(req)
            .filter(|(k, _)| k.starts_with(&prefix) && *k != name)
            .map(|(k, v)| {
                let expires = Flow::open_any(&self.keys, v)
                    .filter(|f| !f.expired(flow::now_ms()))
                    .map_or(i64::MIN, |f| f.expires_at_ms);
                (expires, k, k.len() + v.len())
            })
            .collect();
        held.sort_unstable();
        held.dedup_by(|a, b| a.1 == b.1);
        let mut total: usize =
            held.iter().map(|(_, _, n)| n).sum::<usize>() + name.len() + value.len();
        let mut lines = vec![format!(
            "{name}={value}{}",
            self.flow_attributes(flow_max_age())
        )];
        let mut kept = held.len();
        // At most a few clearing lines per answer: a client that sends hundreds of fake flow
        // cookies gets them cleared a few at a time, not an answer as large as its request.
        for (expires, old, size) in held.into_iter().take(MAX_FLOW_CLEARS) {
            if expires != i64::MIN && kept < flow::MAX_FLOWS && total <= flow::BUDGET {
                break;
            }
            lines.push(self.clear_flow_cookie(old));
            kept -= 1;
            total -= size;
        }
        Some(lines)
    }

    /// `Set-Cookie` that removes the flow cookie `name`.
    pub fn clear_flow_cookie(&self, name: &str) -> String {
        format!("{name}={}", self.flow_attributes(0))
    }

    /// Flow cookies are host-only whatever `cookie_domain` says (a flow belongs to the host
    /// that started it), `Path=/`, `Secure` with `cookie_secure`, and `SameSite=Lax` so that
    /// the provider's redirect back (a top-level GET navigation) carries them.
    fn flow_attributes(&self, max_age: i64) -> String {
        let mut attrs = String::from("; Path=/; HttpOnly; SameSite=Lax");
        if self.config.cookie_secure {
            attrs.push_str("; Secure");
        }
        attrs.push_str(&format!("; Max-Age={max_age}"));
        attrs
    }

    /// Marks the flow of `state` used, after its code was exchanged: `false` when it
    /// already was (a replay). The mark expires with the flow. The only store write of a
    /// sign-in before its session, and it comes after the provider vouched for the code.
    pub async fn mark_flow_used(&self, state: &str, f: &Flow) -> Result<bool, StoreError> {
        let remaining = (f.expires_at_ms - flow::now_ms()).clamp(1, FLOW_TTL.as_millis() as i64);
        self.store
            .try_lock(
                &store_keys::flow(state),
                "used",
                Duration::from_millis(remaining as u64),
            )
            .await
    }
}

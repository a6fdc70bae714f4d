//! Where a sign-out goes on after a provider's logout.
//!
//! The rest of the sign-out chain (src/endpoints/sign_out_chain.rs: the next provider's
//! hop with its id_token, the final `rd`) waits in a cookie of its own rather than in a
//! URL: sealed under the cookie secret (a sibling subdomain cannot plant one, a provider's
//! logs never hold it), for ten minutes, `SameSite=Lax` whatever `cookie_samesite` says (the
//! way back from the provider is a cross-site navigation), read and cleared by
//! `signed_out`. Adobe IMS's `/ims/logout/v1` returns to `redirect_uri` exactly, with no
//! `state`: then the cookie alone is followed. Without it `signed_out` shows the "Signed out"
//! page.

use pingora::http::RequestHeader;

use super::{cookies, only, Sessions};

/// How long the destination waits for the browser to come back from the provider.
const RETURN_MAX_AGE: i64 = 600;

/// What the sealed value is for (the seal's associated data).
const PURPOSE: &str = "signed_out_rd";

impl Sessions {
    fn return_cookie_name(&self) -> String {
        format!("{}_signed_out", self.config.cookie_name)
    }

    fn return_attributes(&self, max_age: i64) -> String {
        self.attributes(Some(max_age))
            .replace("; SameSite=Strict", "; SameSite=Lax")
    }

    /// The `Set-Cookie` value that keeps `rd` (already validated) for `signed_out` while the
    /// browser is at the provider's logout.
    pub fn return_cookie(&self, rd: &str) -> String {
        format!(
            "{}={}{}",
            self.return_cookie_name(),
            self.seal_note(PURPOSE, rd.as_bytes()),
            self.return_attributes(RETURN_MAX_AGE)
        )
    }

    /// The `Set-Cookie` value that removes it.
    pub fn clear_return_cookie(&self) -> String {
        format!(
            "{}={}",
            self.return_cookie_name(),
            self.return_attributes(0)
        )
    }

    /// Whether the request carries the cookie (valid or not), to clear it.
    pub fn has_return_cookie(&self, req: &RequestHeader) -> bool {
        cookies(req, &self.return_cookie_name()).next().is_some()
    }

    /// The destination kept by [`Sessions::return_cookie`], when the request carries exactly
    /// one such cookie and it opens (the caller validates it again as any `rd`).
    pub fn return_destination(&self, req: &RequestHeader) -> Option<String> {
        let value = only(cookies(req, &self.return_cookie_name()))?;
        let plain = self.open_note(PURPOSE, value)?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use crate::app::App;
    use crate::config::Config;
    use pingora::http::RequestHeader;

    fn app(samesite: &str) -> App {
        let config = Config::parse(
            &format!(
                "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\
                 [sso]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
                 [session]\nstore = \"memory\"\ncookie_samesite = \"{samesite}\"\n\
                 cookie_secret = \"q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng\"\n"
            ),
            "t.toml",
            &|_| None,
        )
        .unwrap();
        App::new(config).unwrap()
    }

    fn request(cookie: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/oauth2/signed_out", None).unwrap();
        req.insert_header("cookie", cookie).unwrap();
        req
    }

    #[test]
    fn the_destination_round_trips_sealed_and_lax() {
        let app = app("strict");
        let sessions = app.sessions.as_ref().unwrap();
        let set = sessions.return_cookie("/bye?x=1");
        assert!(set.starts_with("__Host-linkgate_signed_out="), "{set}");
        assert!(
            set.contains("; SameSite=Lax") && set.contains("Max-Age=600"),
            "{set}"
        );
        assert!(!set.contains("/bye"), "sealed: {set}");
        let pair = set.split(';').next().unwrap();
        assert_eq!(
            sessions.return_destination(&request(pair)).as_deref(),
            Some("/bye?x=1")
        );
        assert!(sessions.has_return_cookie(&request(pair)));
        // Planted or altered values, and two of them, are not followed.
        for cookie in [
            "__Host-linkgate_signed_out=%2Fevil".to_string(),
            format!("{pair}x"),
            format!("{pair}; {pair}"),
        ] {
            assert_eq!(
                sessions.return_destination(&request(&cookie)),
                None,
                "{cookie}"
            );
        }
        let clear = sessions.clear_return_cookie();
        assert!(clear.starts_with("__Host-linkgate_signed_out=;"), "{clear}");
        assert!(clear.contains("Max-Age=0"), "{clear}");
    }
}

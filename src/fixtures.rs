//! Configurations for unit tests, from one minimal file: an upstream, and the sections a
//! test asks for, each written once here (the SSO provider, memory sessions, the platform
//! JWT). A test adds or overrides keys with [`Fixture::set`], and gets the parsed
//! [`Config`] or a whole [`App`]. Nothing is fetched: every URL is an unused loopback port.

use crate::app::App;
use crate::config::Config;

/// The cookie secret of test configurations.
pub const SECRET: &str = "q83vEjRWeJASNFZ4kBI0VniQEjRWeJASNFZ4kBI0Vng";

/// A test configuration under construction.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// `(section header, its lines)`, in order; the first is the upstream.
    sections: Vec<(String, Vec<String>)>,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// One upstream on an unused loopback port, nothing else.
    pub fn new() -> Self {
        Fixture {
            sections: vec![(
                "[[upstreams]]".into(),
                vec!["name = \"a\"".into(), "url = \"http://127.0.0.1:1\"".into()],
            )],
        }
    }

    /// Sets `key = value` (TOML) in `[section]`, replacing the key if it is there.
    pub fn set(mut self, section: &str, key: &str, value: &str) -> Self {
        let header = format!("[{section}]");
        let line = format!("{key} = {value}");
        let prefix = format!("{key} =");
        match self.sections.iter_mut().find(|(h, _)| *h == header) {
            Some((_, lines)) => match lines.iter_mut().find(|l| l.starts_with(&prefix)) {
                Some(existing) => *existing = line,
                None => lines.push(line),
            },
            None => self.sections.push((header, vec![line])),
        }
        self
    }

    /// Sessions in memory under [`SECRET`].
    pub fn memory_sessions(self) -> Self {
        self.set("session", "store", "\"memory\"").set(
            "session",
            "cookie_secret",
            &format!("\"{SECRET}\""),
        )
    }

    /// An SSO provider on an unused port (every fetch fails fast), with memory sessions.
    pub fn sso(self) -> Self {
        self.set("sso", "issuer", "\"http://127.0.0.1:1\"")
            .set("sso", "client_id", "\"c\"")
            .set("sso", "client_secret", "\"s\"")
            .set("sso", "http_timeout", "\"200ms\"")
            .memory_sessions()
    }

    /// The platform's account JWT in cookie `pjwt`, its keys on an unused port, with the SSO
    /// provider.
    pub fn jwt_account(self) -> Self {
        self.sso()
            .set("account", "source", "\"jwt\"")
            .set("account", "cookie", "\"pjwt\"")
            .set("account", "issuer", "\"http://127.0.0.1:1\"")
            .set("account", "audience", "\"x\"")
            .set("account", "jwks_url", "\"http://127.0.0.1:1/jwks\"")
            .set("account", "http_timeout", "\"200ms\"")
    }

    /// The configuration file's text.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for (header, lines) in &self.sections {
            text.push_str(header);
            text.push('\n');
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// The configuration, parsed and validated as an operator's file is.
    pub fn config(&self) -> Config {
        let text = self.text();
        Config::parse(&text, "fixture.toml", &|_| None)
            .unwrap_or_else(|e| panic!("fixture does not parse: {e:?}\n{text}"))
    }

    /// The running state built from it.
    pub fn app(&self) -> App {
        App::new(self.config()).expect("fixture app")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_in_their_section_once() {
        let text = Fixture::new()
            .memory_sessions()
            .set("session", "cache_ttl", "\"30s\"")
            .set("session", "cache_ttl", "\"0s\"")
            .text();
        assert_eq!(text.matches("[session]").count(), 1);
        assert_eq!(text.matches("cache_ttl").count(), 1);
        assert!(text.contains("cache_ttl = \"0s\""));
        let config = Fixture::new().jwt_account().config();
        assert!(config.account.is_some() && config.sso.is_some());
    }
}

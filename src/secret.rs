//! `Secret<T>`: a value that must never reach a log line, an error message or a page.
//!
//! Every secret read from the configuration (client secrets, the cookie secret, the Redis
//! password) is wrapped in [`Secret`] at load time. Its `Debug` and `Display` print
//! `[redacted]`, so `{:?}` on a whole `Config` is safe; code that needs the value calls
//! [`Secret::expose`] at the one place it is used. This module must never grow a way to print
//! the inner value.

use std::fmt;

/// A secret value whose `Debug` and `Display` print `[redacted]`.
///
/// It deliberately does not implement `PartialEq` (compare secrets in constant time where
/// needed) nor `Serialize`.
#[derive(Clone)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// Borrows the inner value. Call it where the secret is used, never to print it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a `Debug` impl prints in place of a secret it holds as a plain `String` (tokens,
/// PKCE verifiers, nonces): `[redacted]`.
#[derive(Clone, Copy)]
pub struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_sessions_and_flows_print_no_secret() {
        let tokens = crate::oidc::Tokens {
            access_token: "AT-secret-1".into(),
            refresh_token: Some("RT-secret-2".into()),
            id_token: Some("IT-secret-3".into()),
            expires_at: Some(1),
            issued_at: None,
        };
        let record = crate::session::SessionRecord {
            sso: None,
            account: None,
            tokens: Some(tokens.clone()),
            created_at: 0,
            expires_at: 1,
            account_jwt: None,
            account_id_token: Some("AIT-secret-4".into()),
        };
        let printed = format!("{tokens:?} {record:?} {record:#?}");
        for secret in ["AT-secret-1", "RT-secret-2", "IT-secret-3", "AIT-secret-4"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("expires_at: Some(1)"), "{printed}");
        assert!(
            printed.contains("refresh_token: Some([redacted])"),
            "{printed}"
        );
    }

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new(String::from("hunter2"));
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redacts_inside_derived_debug() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            key: Secret<[u8; 4]>,
        }
        let h = Holder {
            key: Secret::new(*b"abcd"),
        };
        let shown = format!("{h:?}");
        assert_eq!(shown, "Holder { key: [redacted] }");
        assert_eq!(h.key.expose(), b"abcd");
    }
}

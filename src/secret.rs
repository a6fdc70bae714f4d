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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Why talking to a provider failed, with the cause kept: unreachable (what was asked, and
//! the error underneath), refused, or tokens that do not verify.

use std::sync::Arc;

use super::verify::VerifyError;

/// The provider could not be reached or answered nonsense: what failed, in one line, and the
/// error underneath when there is one (kept as the error's source).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}")]
pub struct Unreachable {
    /// What failed (it includes the message of the error underneath).
    pub what: String,
    /// The error underneath.
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Unreachable {
    /// A failure with nothing underneath (a status, a missing endpoint).
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }

    /// A failure caused by `source`, told as `context: source`.
    pub fn because(
        context: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            what: format!("{context}: {source}"),
            source: Some(Arc::new(source)),
        }
    }

    /// The same failure, told with more context in front.
    pub fn within(self, context: impl std::fmt::Display) -> Self {
        Self {
            what: format!("{context}: {}", self.what),
            source: self.source,
        }
    }
}

/// Why talking to the provider failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense.
    #[error(transparent)]
    Unavailable(#[from] Unreachable),
    /// The provider refused the code or the refresh token.
    #[error("the provider refused: {0}")]
    Refused(String),
    /// The tokens did not verify.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// A provider failure caused by `e` (kept as the source).
pub(super) fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> OidcError {
    OidcError::Unavailable(Unreachable {
        what: e.to_string(),
        source: Some(Arc::new(e)),
    })
}

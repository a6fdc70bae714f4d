//! Everything linkgate builds once from the configuration and shares between requests: the
//! routing table, the header hygiene lists, compiled skip routes, metrics, page context.
//! Nothing here is rebuilt per request.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pages::PageContext;
use crate::proxy::headers::Hygiene;
use crate::proxy::route::{RouteError, Router};

/// Why linkgate could not start from a configuration that passed validation.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An upstream host did not resolve.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Metrics could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(String),
}

/// The shared, immutable state of a running linkgate.
#[derive(Debug)]
pub struct App {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Upstream routes.
    pub router: Router,
    /// What to strip from requests before the upstream sees them.
    pub hygiene: Hygiene,
    /// Every metric.
    pub metrics: Metrics,
    /// What pages need to know.
    pub pages: PageContext,
    /// Requests in flight (a graceful shutdown exits once this reaches zero).
    pub inflight: Arc<AtomicUsize>,
}

// === impl App ===

impl App {
    /// Builds the shared state from a validated configuration.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let router = Router::new(&config.upstreams)?;
        let names = &config.headers.names;
        let hygiene = Hygiene::new(
            [
                names.user.as_str(),
                names.email.as_str(),
                names.groups.as_str(),
                names.preferred_username.as_str(),
                names.sso_subject.as_str(),
                names.account_id.as_str(),
                names.link_status.as_str(),
                names.access_token.as_str(),
            ],
            &config.session.cookie_name,
            config.server.trusted_proxies.clone(),
        );
        let metrics = Metrics::new().map_err(|e| StartError::Metrics(e.to_string()))?;
        let pages = PageContext {
            realm: config
                .sso
                .as_ref()
                .map(|s| s.display_name.clone())
                .unwrap_or_else(|| "linkgate".to_string()),
            prefix: config.server.proxy_prefix.clone(),
        };
        Ok(Self {
            config: Arc::new(config),
            router,
            hygiene,
            metrics,
            pages,
            inflight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// `server.proxy_prefix`.
    pub fn prefix(&self) -> &str {
        &self.config.server.proxy_prefix
    }
}

//! Everything linkgate builds once from the configuration and shares between requests: the
//! routing table, the header hygiene lists, compiled skip routes, the store, the session
//! codec, the identity providers, metrics, page context. Nothing here is rebuilt per request.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::config::{AccountSource, Config, StoreKind};
use crate::link::Registry;
use crate::metrics::Metrics;
use crate::oidc::{AccountJwt, Issuer, Provider};
use crate::pages::PageContext;
use crate::proxy::headers::Hygiene;
use crate::proxy::route::{RouteError, Router};
use crate::redirect::RedirectPolicy;
use crate::session::cache::SessionCache;
use crate::session::Sessions;
use crate::store::memory::Memory;
use crate::store::redis::RedisBackend;
use crate::store::{Backend, Store};

/// Why linkgate could not start from a configuration that passed validation.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An upstream host did not resolve.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Metrics could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(String),
    /// The store could not be set up.
    #[error("redis: {0}")]
    Store(String),
    /// A provider could not be set up.
    #[error("{0}")]
    Provider(String),
    /// A page template (built-in or the operator's) does not compile, or the logo is
    /// unreadable.
    #[error("pages: {0}")]
    Pages(String),
    /// The assertion key could not be read.
    #[error("assertion: {0}")]
    Assertion(String),
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
    /// The identity header names as written upstream.
    pub cased_names: crate::passport::CasedNames,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// What pages need to know.
    pub pages: PageContext,
    /// Requests in flight (a graceful shutdown exits once this reaches zero).
    pub inflight: Arc<AtomicUsize>,
    /// The session store.
    pub store: Store,
    /// Sessions and login flows (present whenever a cookie secret is configured).
    pub sessions: Option<Sessions>,
    /// The SSO provider (`[sso]`).
    pub sso: Option<Arc<Provider>>,
    /// The accounts provider (`[account] source = "oauth2"`).
    pub account_provider: Option<Arc<Provider>>,
    /// The account JWT verifier (`[account] source = "jwt"`).
    pub account_jwt: Option<AccountJwt>,
    /// The link registry (whenever sessions exist).
    pub registry: Option<Registry>,
    /// Further issuers accepted for bearer tokens.
    pub issuers: Vec<Issuer>,
    /// Bearer tokens verified recently, by SHA-256 of the token (when `authz.bearer_tokens`
    /// and `session.cache_ttl` is not zero).
    pub verified_tokens: Option<Arc<SessionCache<VerifiedToken, [u8; 32]>>>,
    /// Where `rd` may point.
    pub redirects: RedirectPolicy,
    /// The route policies (src/policy.rs).
    pub policies: crate::policy::Policies,
    /// The identity assertion signer (`[assertion]`).
    pub signer: Option<Arc<crate::assertion::Signer>>,
    /// The running server's own handle on this state, for work that outlives a request
    /// (a token refresh the request stopped waiting for); set by src/server.rs.
    pub this: std::sync::OnceLock<std::sync::Weak<App>>,
}

/// A bearer token that verified: who it speaks for, until when.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The identity its claims gave.
    pub identity: crate::oidc::Identity,
    /// Its `exp` (unix seconds).
    pub expires_at: i64,
}

// === impl App ===

impl App {
    /// Builds the shared state from a validated configuration.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let router = Router::new(&config.upstreams)?;
        let names = &config.headers.names;
        let assertion_header = config.assertion.as_ref().map(|a| a.header.as_str());
        let hygiene = Hygiene::new(
            names
                .all()
                .iter()
                .map(|(_, n)| n.as_str())
                .chain(assertion_header),
            &config.session.cookie_name,
            config.server.trusted_proxies.clone(),
        );
        let metrics = Arc::new(Metrics::new().map_err(|e| StartError::Metrics(e.to_string()))?);
        let realm = config
            .sso
            .as_ref()
            .map(|s| s.display_name.clone())
            .unwrap_or_else(|| "linkgate".to_string());
        let pages = PageContext::load(&realm, &config.server.proxy_prefix, &config.pages)
            .map_err(StartError::Pages)?;
        let (backend, prefix, timeout): (Arc<dyn Backend>, String, std::time::Duration) =
            match (&config.session.store, &config.redis) {
                (StoreKind::Redis, Some(redis)) => (
                    Arc::new(RedisBackend::new(redis).map_err(StartError::Store)?),
                    redis.key_prefix.clone(),
                    redis.command_timeout + redis.connect_timeout,
                ),
                _ => (
                    Arc::new(Memory::new()),
                    String::new(),
                    std::time::Duration::from_secs(1),
                ),
            };
        let store = Store::new(backend, &prefix, timeout, metrics.clone());
        let verified_tokens = (config.authz.bearer_tokens && !config.session.cache_ttl.is_zero())
            .then(|| {
                Arc::new(SessionCache::new(
                    config.session.cache_capacity,
                    config.session.cache_ttl,
                ))
            });
        let sessions =
            config.session.cookie_secret.as_ref().map(|secret| {
                Sessions::new(secret.expose(), store.clone(), config.session.clone())
            });
        let sso = config
            .sso
            .clone()
            .map(|p| Provider::new("sso", p).map(Arc::new))
            .transpose()
            .map_err(StartError::Provider)?;
        let issuers = match &config.sso {
            Some(p) => {
                let http =
                    crate::oidc::http_client(p.http_timeout).map_err(StartError::Provider)?;
                let algs = crate::oidc::verify::algorithms(&p.id_token_algs);
                config
                    .authz
                    .extra_jwt_issuers
                    .iter()
                    .map(|e| Issuer::new(&e.issuer, &e.audience, http.clone(), algs.clone()))
                    .collect()
            }
            None => Vec::new(),
        };
        let (account_provider, account_jwt) = match config.account.as_ref().map(|a| &a.source) {
            Some(AccountSource::OAuth2(p)) => (
                Some(Arc::new(
                    Provider::new("account", p.clone()).map_err(StartError::Provider)?,
                )),
                None,
            ),
            Some(AccountSource::Jwt(j)) => (
                None,
                Some(AccountJwt::new(j.clone()).map_err(StartError::Provider)?),
            ),
            None => (None, None),
        };
        let registry = sessions.as_ref().map(|_| Registry::new(store.clone()));
        let mut domains = config.authz.redirect_domains.clone();
        if let Some(host) = config.server.public_url.as_ref().and_then(|u| u.host_str()) {
            domains.push(host.to_string());
        }
        let redirects = RedirectPolicy::new(domains);
        let cased_names = crate::passport::CasedNames::new(&config.headers.names);
        let policies = crate::policy::Policies::new(&config);
        let signer = match (&config.assertion, &config.server.public_url) {
            (Some(a), Some(public_url)) => Some(Arc::new(
                crate::assertion::Signer::new(
                    a,
                    public_url.as_str(),
                    config
                        .upstreams
                        .iter()
                        .map(|u| u.audience.clone())
                        .collect(),
                    store.clone(),
                    config.session.cookie_secret.as_ref().map(|s| s.expose()),
                    usize::try_from(config.session.cache_capacity).unwrap_or(usize::MAX),
                )
                .map_err(StartError::Assertion)?,
            )),
            _ => None,
        };
        Ok(Self {
            config: Arc::new(config),
            router,
            hygiene,
            cased_names,
            metrics,
            pages,
            inflight: Arc::new(AtomicUsize::new(0)),
            store,
            sessions,
            verified_tokens,
            sso,
            account_provider,
            account_jwt,
            registry,
            issuers,
            redirects,
            policies,
            signer,
            this: std::sync::OnceLock::new(),
        })
    }

    /// `server.proxy_prefix`.
    pub fn prefix(&self) -> &str {
        &self.config.server.proxy_prefix
    }

    /// The SSO provider's name as users know it ("Magento.com").
    pub fn sso_name(&self) -> &str {
        self.config
            .sso
            .as_ref()
            .map_or("Magento.com", |s| s.display_name.as_str())
    }

    /// The cloud account provider's name ("accounts.magento.cloud").
    pub fn account_name(&self) -> &str {
        self.config
            .account
            .as_ref()
            .map_or("accounts.magento.cloud", |a| a.display_name.as_str())
    }
}

// === rules of a request ===

impl App {
    /// The rules a passport is decided by, from the configuration.
    pub fn rules(&self) -> crate::passport::Rules<'_> {
        crate::passport::Rules {
            headers: &self.config.headers,
            authz: &self.config.authz,
            linking: self.config.account.is_some(),
            policies: &self.policies,
            assertions: self.signer.is_some(),
        }
    }

    /// The value of a request's link-status header (`linked`, `grace`...), when user headers
    /// are passed; its name is `headers.names.link_status`.
    pub fn link_status_value(
        &self,
        link_status: Option<&'static str>,
    ) -> Option<http::HeaderValue> {
        let status = link_status.filter(|_| self.config.headers.pass_user_headers)?;
        Some(http::HeaderValue::from_static(status))
    }
}

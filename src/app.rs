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
    /// How cloud accounts are linked (`[account]`), with the link registry when they are.
    pub linking: Linking,
    /// Further issuers accepted for bearer tokens.
    pub issuers: Vec<Issuer>,
    /// Bearer tokens verified recently, by SHA-256 of the token (when `authz.bearer_tokens`
    /// and `session.cache_ttl` is not zero).
    pub verified_tokens: Option<Arc<SessionCache<VerifiedToken, [u8; 32]>>>,
    /// Where `rd` may point.
    pub redirects: RedirectPolicy,
    /// The route policies (src/policy/routes.rs).
    pub policies: crate::policy::Policies,
    /// The identity assertion signer (`[assertion]`).
    pub signer: Option<Arc<crate::assertion::Signer>>,
    /// The running server's own handle on this state, for work that outlives a request
    /// (a token refresh the request stopped waiting for); set by src/server.rs.
    pub this: std::sync::OnceLock<std::sync::Weak<App>>,
}

/// How cloud accounts come to be linked, decided once at start-up from `[account]`: either
/// not at all, or by one source with the link registry beside it. What a request may do
/// follows from the variant; no handler re-derives it from the configuration.
#[derive(Debug)]
pub enum Linking {
    /// No `[account]`: linking is not in play.
    Off,
    /// `[account] source = "jwt"`: the platform's account JWT names the cloud account.
    Jwt {
        /// Verifies the platform's JWT (boxed: it is far larger than the other variants).
        verifier: Box<AccountJwt>,
        /// The links.
        registry: Registry,
    },
    /// `[account] source = "oauth2"`: the accounts provider signs the cloud account in.
    OAuth2 {
        /// The accounts provider.
        provider: Arc<Provider>,
        /// The links.
        registry: Registry,
    },
}

impl Linking {
    /// Whether linking is in play.
    pub fn is_on(&self) -> bool {
        !matches!(self, Linking::Off)
    }

    /// The link registry, when linking is in play.
    pub fn registry(&self) -> Option<&Registry> {
        match self {
            Linking::Off => None,
            Linking::Jwt { registry, .. } | Linking::OAuth2 { registry, .. } => Some(registry),
        }
    }

    /// The platform JWT verifier (`source = "jwt"`).
    pub fn jwt(&self) -> Option<&AccountJwt> {
        match self {
            Linking::Jwt { verifier, .. } => Some(verifier),
            _ => None,
        }
    }

    /// The accounts provider (`source = "oauth2"`).
    pub fn provider(&self) -> Option<&Arc<Provider>> {
        match self {
            Linking::OAuth2 { provider, .. } => Some(provider),
            _ => None,
        }
    }
}

/// Sign-in with Magento.com: the provider and the sessions it makes. Present whenever
/// `[sso]` is (which cannot be configured without a cookie secret).
#[derive(Debug, Clone, Copy)]
pub struct SignIn<'a> {
    /// The SSO provider.
    pub provider: &'a Provider,
    /// The sessions.
    pub sessions: &'a Sessions,
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
        let linking = match config.account.as_ref().map(|a| &a.source) {
            // `[account]` needs `[sso]`, which needs sessions: the registry is always there.
            Some(AccountSource::OAuth2(p)) => Linking::OAuth2 {
                provider: Arc::new(
                    Provider::new("account", p.clone()).map_err(StartError::Provider)?,
                ),
                registry: Registry::new(store.clone()),
            },
            Some(AccountSource::Jwt(j)) => Linking::Jwt {
                verifier: Box::new(AccountJwt::new(j.clone()).map_err(StartError::Provider)?),
                registry: Registry::new(store.clone()),
            },
            None => Linking::Off,
        };
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
            linking,
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

    /// Sign-in with Magento.com, when `[sso]` is configured.
    pub fn sign_in(&self) -> Option<SignIn<'_>> {
        Some(SignIn {
            provider: self.sso.as_deref()?,
            sessions: self.sessions.as_ref()?,
        })
    }

    /// Sign-in to the cloud account (`[account] source = "oauth2"`), with the registry it
    /// links in.
    pub fn account_sign_in(&self) -> Option<(SignIn<'_>, &Registry)> {
        match &self.linking {
            Linking::OAuth2 { provider, registry } => Some((
                SignIn {
                    provider,
                    sessions: self.sessions.as_ref()?,
                },
                registry,
            )),
            _ => None,
        }
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
            linking: self.linking.is_on(),
            policies: &self.policies,
            assertions: self.signer.is_some(),
        }
    }

    /// The rules the policy core decides a request by under `policy` at `now`: whether a
    /// browser can be sent to sign in, and the link requirement (none without `[account]`).
    pub fn rules_under(
        &self,
        policy: &crate::policy::Resolved,
        now: time::OffsetDateTime,
    ) -> crate::policy::Rules {
        crate::policy::Rules {
            sign_in: self.sso.is_some(),
            linking: self.linking.is_on().then(|| {
                crate::policy::requirement(policy.link_mode, self.config.link.required_from, now)
            }),
        }
    }

    /// The link requirement of `[link]` (the global policy) at `now`.
    pub fn requirement(&self, now: time::OffsetDateTime) -> crate::policy::Requirement {
        crate::policy::requirement(self.config.link.mode, self.config.link.required_from, now)
    }

    /// The value of a request's link-status header (`linked`, `grace`), when user headers
    /// are passed and there is one; its name is `headers.names.link_status`.
    pub fn link_status_value(
        &self,
        status: crate::policy::LinkStatus,
    ) -> Option<http::HeaderValue> {
        let status = status
            .label()
            .filter(|_| self.config.headers.pass_user_headers)?;
        Some(http::HeaderValue::from_static(status))
    }

    /// `{prefix}/start?rd=…` (with `intent=connect` to connect the session's cloud account).
    /// An `rd` longer than [`crate::session::flow::MAX_RD`] becomes `/`: `start` would refuse
    /// it.
    pub fn start_url(&self, rd: &str, intent: crate::session::Intent) -> String {
        let rd = if rd.len() > crate::session::flow::MAX_RD {
            "/"
        } else {
            rd
        };
        let connect = if intent == crate::session::Intent::Connect {
            "&intent=connect"
        } else {
            ""
        };
        format!(
            "{}/start?rd={}{connect}",
            self.prefix(),
            crate::redirect::encode(rd)
        )
    }

    /// The account page, `{prefix}/link`.
    pub fn link_page_url(&self) -> String {
        format!("{}/link", self.prefix())
    }

    /// The refusal of an API client whose link is missing while the rule is enforced: `401`
    /// `insufficient_user_authentication` naming the account page.
    pub fn link_required(&self) -> crate::respond::Refusal {
        crate::respond::Refusal::LinkRequired {
            sso: self.sso_name().to_string(),
            link_page: self.link_page_url(),
        }
    }
}

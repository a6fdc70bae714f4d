//! The demo's stand-ins for the outside world, started by `linkgate demo` on loopback: a
//! development OpenID provider (one for Magento.com, one for accounts.magento.cloud) and the
//! sample application behind the gate. Nothing here is part of the gate: the `linkgate`
//! library has no OpenID provider, and `linkgate run` cannot start one.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod provider;
pub mod upstream;
mod web;

/// The name of the development SSO provider, on its pages and on linkgate's.
pub const SSO_LABEL: &str = "Magento.com (development)";
/// The name of the development accounts provider, on its pages and on linkgate's.
pub const ACCOUNTS_LABEL: &str = "accounts.magento.cloud (development)";
/// linkgate's endpoint prefix in the demo.
pub const PREFIX: &str = "/oauth2";
/// The password of every demo user.
pub const DEMO_PASSWORD: &str = "demo";
/// The OAuth2 client linkgate is registered as, at both providers.
pub const CLIENT_ID: &str = "linkgate-demo";
/// A public client (PKCE only, no secret) registered at both providers, for trying them by
/// hand; its code comes back to the sample application, which shows it.
pub const PUBLIC_CLIENT_ID: &str = "demo-public";
/// The public client's redirect path on the sample application.
pub const PUBLIC_CLIENT_CALLBACK: &str = "/callback";

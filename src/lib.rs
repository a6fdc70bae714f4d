//! linkgate: a reverse-proxy authentication gate on Pingora that lets a request through only
//! when its session's cloud account is linked to a Magento.com single sign-on account.
//!
//! The binary (`src/main.rs`) is only the CLI; everything it runs lives here so the tests and
//! benchmarks can reach it.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod app;
pub mod assertion;
pub mod body;
pub mod config;
pub mod credentials;
pub mod decision;
pub mod demo;
pub mod drain;
pub mod endpoints;
#[cfg(test)]
pub mod fixtures;
pub mod identify;
pub mod identity;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod passport;
pub mod policy;
pub mod proxy;
pub mod redirect;
pub mod request_head;
pub mod respond;
pub mod secret;
pub mod server;
pub mod session;
pub mod store;

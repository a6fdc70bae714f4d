//! The admin listener (`server.admin_listen`): `/healthz` (the process serves), `/readyz`
//! (everything a request needs is reachable; `warnings` lists what is reachable but risky,
//! such as a Redis eviction policy that may evict links) and `/metrics` (Prometheus). It must never serve
//! anything user-facing, and it is meant for a private address.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::app::{App, Linking};

/// The admin HTTP application.
#[derive(Debug)]
pub struct Admin {
    app: Arc<App>,
}

impl Admin {
    /// An admin app over the shared state.
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// Readiness checks by name; all must pass for `/readyz` to answer 200. Also the
    /// warnings: things that do not stop serving but put data at risk.
    async fn readiness(&self) -> (Vec<(String, Result<(), String>)>, Vec<String>) {
        let mut checks = vec![("config".to_string(), Ok(()))];
        let mut warnings = Vec::new();
        let store = self.app.store.ping().await.map_err(|e| e.to_string());
        if store.is_ok() {
            // Links have no TTL: an allkeys-* policy may evict them under memory pressure.
            if let Ok(Some(warning)) = self.app.store.eviction_warning().await {
                warnings.push(warning);
            }
        }
        checks.push(("store".into(), store));
        if let Some(signer) = &self.app.signer {
            let keys = if signer.ready() {
                Ok(())
            } else {
                Err("no assertion key loaded yet".to_string())
            };
            checks.push(("assertion_keys".into(), keys));
        }
        // Every provider and key set a request may need: the SSO provider's discovery and
        // keys, the accounts provider's, the platform JWT's key set, each extra issuer's.
        if let Some(sso) = &self.app.sso {
            checks.push(("sso".into(), sso.prepare().await.map_err(|e| e.to_string())));
        }
        match &self.app.linking {
            Linking::OAuth2 { provider, .. } => {
                let ready = provider.prepare().await.map_err(|e| e.to_string());
                checks.push(("account_provider".into(), ready));
            }
            Linking::Jwt { verifier, .. } => {
                let ready = verifier.prepare().await.map_err(|e| e.to_string());
                checks.push(("account_jwt_keys".into(), ready));
            }
            Linking::Off => {}
        }
        for issuer in &self.app.issuers {
            let ready = issuer.prepare().await.map_err(|e| e.to_string());
            checks.push((format!("extra_jwt_issuer {}", issuer.issuer()), ready));
        }
        (checks, warnings)
    }
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let headers = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => response(200, "text/plain; charset=utf-8", b"ok\n".to_vec()),
            "/readyz" => {
                let (checks, warnings) = self.readiness().await;
                let ready = checks.iter().all(|(_, r)| r.is_ok());
                let body = json!({
                    "ready": ready,
                    "warnings": warnings,
                    "checks": checks.iter().map(|(name, r)| (name.clone(), match r {
                        Ok(()) => json!({"ok": true}),
                        Err(e) => json!({"ok": false, "error": e}),
                    })).collect::<serde_json::Map<_, _>>(),
                });
                response(
                    if ready { 200 } else { 503 },
                    "application/json",
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            }
            // The identity assertion's public keys (also `{prefix}/.well-known/jwks.json`).
            "/.well-known/jwks.json" => match &self.app.signer {
                Some(signer) => response(200, "application/json", signer.jwks().to_vec()),
                None => response(404, "text/plain; charset=utf-8", b"not found\n".to_vec()),
            },
            "/metrics" => {
                let (content_type, body) = self.app.metrics.render();
                response(200, &content_type, body)
            }
            _ => response(404, "text/plain; charset=utf-8", b"not found\n".to_vec()),
        }
    }
}

//! Prometheus metrics, under the names README.md documents (they are part of the operator
//! contract). One registry per process, created at start-up and shared; rendered by the admin
//! listener at `/metrics`.

use pingora_prometheus::prometheus::{
    self, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

use crate::decision::{Decision, FORWARD_LABEL};

/// Every metric linkgate exports.
pub struct Metrics {
    registry: Registry,
    /// `linkgate_requests_total{decision}`: requests by the decision taken.
    pub requests: IntCounterVec,
    /// `linkgate_request_duration_seconds{decision}`: time from request to the end of logging.
    pub request_duration: HistogramVec,
    /// `linkgate_logins_total{provider,result}`.
    pub logins: IntCounterVec,
    /// `linkgate_links_total{result}`.
    pub links: IntCounterVec,
    /// `linkgate_store_operations_total{op,result}`.
    pub store_ops: IntCounterVec,
    /// `linkgate_store_duration_seconds{op}`.
    pub store_duration: HistogramVec,
    /// `linkgate_session_cache_total{result}`.
    pub session_cache: IntCounterVec,
    /// `linkgate_session_cache_total{result="hit"}`, resolved once: counted on every cached
    /// request, where looking the labels up would cost a hash and a lock.
    pub session_cache_hit: IntCounter,
    /// `linkgate_session_cache_total{result="miss"}`.
    pub session_cache_miss: IntCounter,
    /// `linkgate_session_cache_total{result="stale"}`: a session served from its expired
    /// entry because the store could not be read (`session.cache_stale_if_error`).
    pub session_cache_stale: IntCounter,
    /// `linkgate_token_cache_total{result="hit"}`: bearer tokens and platform account JWTs
    /// served from the verified-token caches.
    pub token_cache_hit: IntCounter,
    /// `linkgate_token_cache_total{result="miss"}`: bearer tokens and platform account JWTs
    /// verified in full.
    pub token_cache_miss: IntCounter,
    /// The request counter and duration histogram of each decision label, resolved once.
    by_decision: Vec<(&'static str, IntCounter, Histogram)>,
    /// `linkgate_upstream_errors_total{upstream,kind}`.
    pub upstream_errors: IntCounterVec,
    /// `linkgate_upstream_connections_total{connection="reused"}`: requests sent upstream on
    /// a keep-alive connection from the pool, resolved once.
    pub upstream_reused: IntCounter,
    /// `linkgate_upstream_connections_total{connection="new"}`: requests that opened a new
    /// upstream connection.
    pub upstream_new: IntCounter,
    /// `linkgate_stripped_identity_headers_total`: client-sent identity headers removed.
    pub stripped_headers: IntCounter,
    /// `linkgate_token_refreshes_total{result}`: calls to the SSO provider's token endpoint
    /// with a session's refresh token, by outcome (`ok`, `unavailable`, `refused`, and
    /// `superseded` for a refusal after another refresher had rotated the token).
    pub token_refreshes: IntCounterVec,
    /// `linkgate_unsaved_tokens_total{event}`: refreshed tokens the store failed to save,
    /// kept in this instance (`kept`), then saved by the background retry (`saved`) or
    /// given up because the session ended or the store had newer tokens (`dropped`).
    pub unsaved_tokens: IntCounterVec,
    /// `linkgate_refused_targets_total{reason}`: requests refused with 400 because their
    /// target or `Host` had more than one reading (src/proxy/path.rs).
    pub refused_targets: IntCounterVec,
    /// `linkgate_refused_heads_total{reason}`: connections cut by the request-head limits
    /// (src/request_head/): `too_large` (`431`), `too_slow` (`408`), `no_request` (closed).
    pub refused_heads: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Latency buckets fine enough to see sub-millisecond overhead.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

// === impl Metrics ===

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, prometheus::Error> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let stripped_headers = IntCounter::new(
            "linkgate_stripped_identity_headers_total",
            "Identity headers sent by clients and removed before the upstream",
        )?;
        registry.register(Box::new(stripped_headers.clone()))?;
        let requests = counter(
            "linkgate_requests_total",
            "Requests by the decision linkgate took",
            &["decision"],
        )?;
        let request_duration = histogram(
            "linkgate_request_duration_seconds",
            "Request duration, from the request line to the end of the response",
            &["decision"],
        )?;
        let session_cache = counter(
            "linkgate_session_cache_total",
            "In-process session cache lookups by result",
            &["result"],
        )?;
        let token_cache = counter(
            "linkgate_token_cache_total",
            "Verified-token cache lookups for bearer tokens and platform account JWTs by result",
            &["result"],
        )?;
        // Every decision label a request can end with, resolved once; their series exist from
        // the start, at zero, as Prometheus recommends for known label values.
        let by_decision = Decision::ALL
            .iter()
            .map(|d| d.as_str())
            .chain([FORWARD_LABEL])
            .map(|d| {
                (
                    d,
                    requests.with_label_values(&[d]),
                    request_duration.with_label_values(&[d]),
                )
            })
            .collect();
        let upstream_connections = counter(
            "linkgate_upstream_connections_total",
            "Requests sent upstream, by whether their connection came from the keep-alive pool",
            &["connection"],
        )?;
        Ok(Self {
            upstream_reused: upstream_connections.with_label_values(&["reused"]),
            upstream_new: upstream_connections.with_label_values(&["new"]),
            session_cache_hit: session_cache.with_label_values(&["hit"]),
            session_cache_miss: session_cache.with_label_values(&["miss"]),
            session_cache_stale: session_cache.with_label_values(&["stale"]),
            token_cache_hit: token_cache.with_label_values(&["hit"]),
            token_cache_miss: token_cache.with_label_values(&["miss"]),
            by_decision,
            requests,
            request_duration,
            session_cache,
            logins: counter(
                "linkgate_logins_total",
                "Completed or failed logins by provider",
                &["provider", "result"],
            )?,
            links: counter(
                "linkgate_links_total",
                "Account link operations by result",
                &["result"],
            )?,
            store_ops: counter(
                "linkgate_store_operations_total",
                "Session store operations by result",
                &["op", "result"],
            )?,
            store_duration: histogram(
                "linkgate_store_duration_seconds",
                "Session store operation latency",
                &["op"],
            )?,
            upstream_errors: counter(
                "linkgate_upstream_errors_total",
                "Failed upstream requests by upstream and kind",
                &["upstream", "kind"],
            )?,
            stripped_headers,
            token_refreshes: counter(
                "linkgate_token_refreshes_total",
                "Session token refreshes at the SSO provider by result",
                &["result"],
            )?,
            unsaved_tokens: counter(
                "linkgate_unsaved_tokens_total",
                "Refreshed tokens the store failed to save: kept in memory, then saved or dropped",
                &["event"],
            )?,
            refused_targets: counter(
                "linkgate_refused_targets_total",
                "Requests refused because their target or Host had more than one reading",
                &["reason"],
            )?,
            refused_heads: {
                let c = counter(
                    "linkgate_refused_heads_total",
                    "Connections cut because a request head was too large or too slow",
                    &["reason"],
                )?;
                for reason in ["too_large", "too_slow", "no_request"] {
                    c.with_label_values(&[reason]);
                }
                c
            },
            registry,
        })
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> (String, Vec<u8>) {
        let encoder = TextEncoder::new();
        let mut buf = Vec::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        (encoder.format_type().to_string(), buf)
    }

    /// Counts a finished request under its decision label and observes its duration.
    pub fn request_done(&self, decision: &str, seconds: f64) {
        match self.by_decision.iter().find(|(d, _, _)| *d == decision) {
            Some((_, count, duration)) => {
                count.inc();
                duration.observe(seconds);
            }
            None => {
                self.requests.with_label_values(&[decision]).inc();
                self.duration(decision).observe(seconds);
            }
        }
    }

    /// The request-duration histogram for one decision (for callers that observe directly).
    pub fn duration(&self, decision: &str) -> Histogram {
        self.request_duration.with_label_values(&[decision])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_name_is_exported() {
        let m = Metrics::new().unwrap();
        m.requests.with_label_values(&["forward"]).inc();
        m.duration("forward").observe(0.001);
        m.logins.with_label_values(&["sso", "ok"]).inc();
        m.links.with_label_values(&["created"]).inc();
        m.store_ops.with_label_values(&["get", "ok"]).inc();
        m.store_duration.with_label_values(&["get"]).observe(0.001);
        m.session_cache.with_label_values(&["hit"]).inc();
        m.upstream_errors
            .with_label_values(&["app", "connect"])
            .inc();
        let (_, body) = m.render();
        let text = String::from_utf8(body).unwrap();
        for name in [
            "linkgate_requests_total",
            "linkgate_request_duration_seconds",
            "linkgate_logins_total",
            "linkgate_links_total",
            "linkgate_store_operations_total",
            "linkgate_store_duration_seconds",
            "linkgate_session_cache_total",
            "linkgate_upstream_errors_total",
            "linkgate_upstream_connections_total",
        ] {
            assert!(text.contains(name), "{name} missing from /metrics");
        }
    }
}

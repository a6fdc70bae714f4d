//! Turning a validated configuration into a running Pingora server: the proxy listener
//! (plain with h2c, or TLS with HTTP/2 over ALPN), the admin listener, and the process
//! settings (threads, graceful shutdown, the upgrade socket). Pingora's own CLI and YAML are
//! not used: `Opt` and `ServerConf` are built here from `config.toml`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::ExecutionPhase;
use pingora::services::listening::Service;
use pingora::services::ServiceWithDependents;

use crate::admin::Admin;
use crate::app::App;
use crate::config::Config;
use crate::drain::Drain;
use crate::proxy::Gate;
use crate::request_head::{Guarded, Limits, Shared};

/// The read buffer of a plain-HTTP client connection, in bytes (0: none).
const DOWNSTREAM_READ_BUFFER: usize = 0;

/// Threads of the admin listener and of each background service. `[server] threads` is the
/// proxy's; Pingora would give every service that many runtimes, all competing with the
/// proxy for the same cores.
const SIDE_THREADS: usize = 1;

/// How the process was asked to start.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Take the listening sockets over from a running linkgate (Pingora's graceful upgrade:
    /// start the new process with `--upgrade`, then send the old one `SIGQUIT`).
    pub upgrade: bool,
}

/// Builds the server and runs it until SIGTERM (graceful drain), SIGINT (fast) or SIGQUIT
/// (hand the sockets to an upgrading process). Never returns on success.
pub fn run(config: Config, options: RunOptions) -> anyhow::Result<()> {
    run_with(config, options, Vec::new())
}

/// [`run`], with further services in the same process (the demo's providers and sample
/// application). They start after linkgate's own and stop with it.
pub fn run_with(
    config: Config,
    options: RunOptions,
    extra: Vec<Box<dyn ServiceWithDependents>>,
) -> anyhow::Result<()> {
    // Pingora drains during its grace period, then cancels whatever is left when it stops
    // the runtimes. The grace period is ours to set; `drain_then_exit` ends it early once
    // nothing is in flight, so an idle linkgate stops at once.
    let conf = ServerConf {
        threads: config.server.threads,
        pid_file: config.server.pid_file.display().to_string(),
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        grace_period_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listen = config.server.listen.to_string();
    let admin_listen = config.server.admin_listen.map(|a| a.to_string());
    let tls = config.server.tls.clone();
    let app = Arc::new(App::new(config).context("while preparing to serve")?);
    let _ = app.this.set(Arc::downgrade(&app));

    let server_options = {
        let mut o = HttpServerOptions::default();
        o.h2c = tls.is_none();
        // An HTTP/2 connection with no stream in flight is idle like a keep-alive HTTP/1
        // one: closed after `keepalive_timeout`. Pingora's default is no limit, so one that
        // sent only its preface and SETTINGS (or a HEADERS frame never finished) was held
        // until the peer went away.
        let idle = app.config.server.keepalive_secs();
        o.h2_idle_timeout = Some(std::time::Duration::from_secs(idle));
        o
    };
    // Pingora's proxy app, wrapped so that every connection's request heads are bounded in
    // size and time (see `request_head`).
    let drain = Drain::new(app.config.server.graceful_shutdown_timeout);
    let mut gate =
        pingora::proxy::http_proxy(&server.configuration, Gate::new(app.clone(), drain.clone()));
    gate.server_options = Some(server_options);
    // HTTP/2 heads are bounded by `max_header_size` too (Pingora's default is 64 KiB whatever
    // the setting; the h2 codec counts the decoded list, RFC 9113 section 6.5.2).
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_header_list_size(u32::try_from(app.config.server.max_header_size).unwrap_or(u32::MAX));
    gate.h2_options = Some(h2);
    let limits = Limits {
        max_size: app.config.server.max_header_size,
        read_timeout: app.config.server.header_read_timeout,
    };
    let heads = &app.metrics.refused_heads;
    let shared = Shared {
        too_large: heads.with_label_values(&["too_large"]),
        too_slow: heads.with_label_values(&["too_slow"]),
        no_request: heads.with_label_values(&["no_request"]),
        drain: drain.clone(),
    };
    let mut proxy = Service::new(
        "linkgate proxy".to_string(),
        Guarded::new(gate, limits, shared),
    );
    match &tls {
        Some(tls) => {
            let mut settings = TlsSettings::intermediate(
                &tls.cert.display().to_string(),
                &tls.key.display().to_string(),
            )
            .map_err(|e| anyhow::anyhow!("server.tls: {e}"))?;
            settings.enable_h2();
            proxy.add_tls_with_settings(&listen, None, settings);
        }
        // Plain HTTP: no 64 KiB read buffer per client connection (Pingora's default). The
        // HTTP/1 layer reads request heads into its own buffer; the L4 buffer only doubled
        // the memory of every keep-alive connection (4 MiB at 64 connections).
        None => proxy.add_listener(
            ListenerConfig::tcp(listen.clone())
                .l4_buffer(L4BufferSettings::default().read(DOWNSTREAM_READ_BUFFER)),
        ),
    }
    server.add_service(proxy);

    if let Some(admin_listen) = admin_listen {
        let mut admin = Service::new(
            "linkgate admin".to_string(),
            HttpServer::new_app(Admin::new(app.clone())),
        );
        admin.add_tcp(&admin_listen);
        // Health checks and scrapes: one thread is plenty, and every thread of a service is
        // a runtime of its own (Pingora gives each service `threads` of them).
        admin.threads = Some(SIDE_THREADS);
        server.add_service(admin);
    }

    if app.sessions.is_some() && !app.config.session.cache_ttl.is_zero() {
        let mut invalidation = pingora::services::background::background_service(
            "session cache invalidation",
            Invalidation { app: app.clone() },
        );
        invalidation.threads = Some(SIDE_THREADS);
        server.add_service(invalidation);
    }

    if app.signer.is_some() {
        let mut keys = pingora::services::background::background_service(
            "assertion keys",
            AssertionKeys { app: app.clone() },
        );
        keys.threads = Some(SIDE_THREADS);
        server.add_service(keys);
    }

    for service in extra {
        server.add_boxed_service(service);
    }

    let phases = server.watch_execution_phase();
    let inflight = app.inflight.clone();
    std::thread::Builder::new()
        .name("linkgate-drain".into())
        .spawn(move || drain_then_exit(phases, &inflight, &drain))
        .context("while starting the drain watcher")?;

    tracing::info!(%listen, tls = tls.is_some(), "linkgate serving");
    server.run_forever()
}

/// Keeps the session cache coherent across instances (runs inside Pingora's runtime, where
/// its Redis connection must live).
struct Invalidation {
    app: Arc<App>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Invalidation {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(sessions) = &self.app.sessions else {
            return;
        };
        tokio::select! {
            _ = sessions.invalidation_listener() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Loads, creates and rotates the assertion keys (src/assertion/) in Pingora's runtime.
struct AssertionKeys {
    app: Arc<App>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for AssertionKeys {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(signer) = &self.app.signer else {
            return;
        };
        tokio::select! {
            _ = signer.maintain() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Once Pingora enters its shutdown grace period (after SIGTERM, or after handing the
/// sockets to an upgrading process) and the keep-alive connections' linger is over
/// (src/drain.rs), exits as soon as no request is in flight instead of sleeping out the
/// whole period.
fn drain_then_exit(
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    inflight: &AtomicUsize,
    drain: &Drain,
) {
    loop {
        match phases.blocking_recv() {
            Ok(ExecutionPhase::ShutdownGracePeriod) => break,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
    while !drain.idle_closed() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    loop {
        let n = inflight.load(Ordering::Relaxed);
        if n == 0 {
            tracing::info!("drained: no request in flight, exiting");
            std::process::exit(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

//! The smallest Pingora proxy: a [`ProxyHttp`] whose only method returns the one upstream
//! peer. No filters, no logging, no metrics; the same Cargo profile and allocator as
//! linkgate. `bench/run` has it as the "minimal Pingora" row, the floor linkgate's own
//! per-request work sits on (bench/README.md, "Where the time goes").
//!
//! ```sh
//! minimal-pingora LISTEN UPSTREAM [THREADS] [--no-work-stealing]
//! minimal-pingora 127.0.0.1:8080 127.0.0.1:8081 2
//! ```
//!
//! A benchmark tool, not part of the `linkgate` binary.

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Minimal {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Minimal {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn usage() -> ! {
    eprintln!("usage: minimal-pingora LISTEN UPSTREAM [THREADS] [--no-work-stealing]");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let work_stealing = !args.iter().any(|a| a == "--no-work-stealing");
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (listen, upstream) = match positional.as_slice() {
        [listen, upstream, ..] => (
            listen.to_string(),
            upstream.parse().unwrap_or_else(|_| usage()),
        ),
        _ => usage(),
    };
    let threads = match positional.get(2) {
        Some(t) => t.parse().unwrap_or_else(|_| usage()),
        None => 2,
    };
    let dir = std::env::temp_dir();
    let conf = ServerConf {
        threads,
        work_stealing,
        pid_file: dir
            .join(format!("minimal-pingora-{}.pid", std::process::id()))
            .display()
            .to_string(),
        upgrade_sock: dir
            .join(format!("minimal-pingora-{}.sock", std::process::id()))
            .display()
            .to_string(),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Minimal { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    eprintln!(
        "minimal-pingora: {listen} -> {upstream}, {threads} threads, work stealing {work_stealing}"
    );
    server.run_forever()
}

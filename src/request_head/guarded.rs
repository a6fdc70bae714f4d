//! [`Guarded`]: the [`ServerApp`] that wraps every accepted connection in a
//! [`HeadLimited`] stream, counts the connections open, and runs the drain's linger when
//! the listeners stop.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::time::Instant;

use super::{HeadLimited, Limits, Shared};

/// A [`ServerApp`] whose connections are [`HeadLimited`].
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: Limits,
    shared: Arc<Shared>,
    /// Connections open now (the drain's linger ends early when there are none).
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// One open connection, counted while it lives.
struct Open(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<A> Guarded<A> {
    /// Wraps `inner`.
    pub fn new(inner: A, limits: Limits, shared: Shared) -> Self {
        Self {
            inner: Arc::new(inner),
            limits,
            shared: Arc::new(shared),
            open: Arc::default(),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _open = Open(self.open.clone());
        let guarded: Stream = Box::new(HeadLimited::new(stream, self.limits, &self.shared));
        self.inner.process_new(guarded, shutdown).await
    }

    /// The listeners have stopped: WebSockets are told to close, keep-alive connections
    /// get one more request (answered `Connection: close`) during the linger, then the idle
    /// ones are closed (src/drain.rs). No connection open: no linger.
    async fn cleanup(&self) {
        let drain = &self.shared.drain;
        drain.begin();
        let until = Instant::now() + drain.linger();
        while Instant::now() < until && self.open.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.cleanup().await;
        drain.mark_idle_closed();
    }
}

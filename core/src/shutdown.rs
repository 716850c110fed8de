//! [`Shutdown`]: the signal that ends work from outside (a Ctrl-C, an HTTP
//! call, a test), shared by the worker loop and `Submit`. A primitive
//! below both: the library never installs signal handlers itself.

use tokio_util::sync::CancellationToken;

/// Tells workers to stop: `stop` starts a graceful shutdown, `abort` cuts the
/// grace short (a second Ctrl-C).
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    pub(crate) stop: CancellationToken,
    pub(crate) abort: CancellationToken,
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop pulling; let running tasks finish within the grace period.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stop now: drop running tasks and give their items back.
    pub fn abort(&self) {
        self.stop.cancel();
        self.abort.cancel();
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Wait until a stop is requested.
    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }
}

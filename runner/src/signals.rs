//! SIGTERM and SIGINT: the first stops workers gracefully, a second aborts.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use forloop_core::worker::Shutdown;
use tokio::signal::unix::{SignalKind, signal};

/// Which signal stopped the process, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct Received(Arc<AtomicI32>);

impl Received {
    /// The exit code for a stop by signal: 128 + its number (143, 130).
    pub(crate) fn exit_code(&self) -> Option<u8> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            signal => Some(128 + signal as u8),
        }
    }
}

/// Route SIGTERM and SIGINT to `shutdown`.
pub(crate) fn listen(shutdown: Shutdown, grace: Duration) -> Received {
    let received = Received::default();
    let seen = Arc::clone(&received.0);
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::spawn(async move {
        loop {
            let (number, name) = tokio::select! {
                _ = term.recv() => (libc::SIGTERM, "SIGTERM"),
                _ = int.recv() => (libc::SIGINT, "SIGINT"),
            };
            if seen
                .compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                tracing::warn!(
                    "{name}: stopping; running tasks may finish within {}, then their items go back to the queue. Send it again to stop now.",
                    humantime::format_duration(grace)
                );
                shutdown.stop();
            } else {
                tracing::warn!("{name} again: stopping now; running items go back to the queue");
                shutdown.abort();
            }
        }
    });
    received
}

/// Route SIGTERM and SIGINT to `shutdown` while a submit runs: it stops
/// after the batch on its way and reports what went in. Listening ends
/// when the returned value is dropped.
pub(crate) fn listen_during_submit(shutdown: Shutdown) -> DuringSubmit {
    let received = Received::default();
    let seen = Arc::clone(&received.0);
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let task = tokio::spawn(async move {
        loop {
            let (number, name) = tokio::select! {
                _ = term.recv() => (libc::SIGTERM, "SIGTERM"),
                _ = int.recv() => (libc::SIGINT, "SIGINT"),
            };
            if seen
                .compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                tracing::warn!(
                    "{name}: stopping the submit after the batch on its way. Send it again to stop now."
                );
                shutdown.stop();
            } else {
                // The batch on its way did not end (a queue that does not
                // answer): stop now. What went in is not known; the job's
                // ledger has what it recorded, and `--resume` sends the rest.
                eprintln!(
                    "runner: {name} again: stopped now, without waiting for the batch on its way; \
                     `runner submit --resume` (same input and --job) sends what did not go in"
                );
                std::process::exit(128 + number);
            }
        }
    });
    DuringSubmit { received, task }
}

/// Signals heard during a submit; dropping it stops listening.
#[derive(Debug)]
pub(crate) struct DuringSubmit {
    received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl DuringSubmit {
    /// The exit code for a stop by signal, if one came.
    pub(crate) fn exit_code(&self) -> Option<u8> {
        self.received.exit_code()
    }
}

impl Drop for DuringSubmit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

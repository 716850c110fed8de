//! Progress for people: a bar on a terminal, a log line every few seconds
//! otherwise (CI logs, `kubectl logs`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain log line is written.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A counter shown as a bar or as periodic log lines.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    stop: Arc<tokio::sync::Notify>,
}

impl Progress {
    /// Start showing progress of `what` towards `total`.
    pub(crate) fn start(what: &'static str, total: u64) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(tokio::sync::Notify::new());
        let bar = if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>9} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
                )
                .expect("valid template"),
            );
            bar.set_message(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(LOG_EVERY);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            tracing::info!("{what}: {}/{total}", done.load(Ordering::Relaxed));
                        }
                        _ = stop.notified() => return,
                    }
                }
            });
            None
        };
        Self { bar, done, stop }
    }

    /// Count `n` more.
    pub(crate) fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Set the count.
    pub(crate) fn set(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(n);
        }
    }

    /// Stop showing progress.
    pub(crate) fn finish(&self) {
        self.stop.notify_one();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

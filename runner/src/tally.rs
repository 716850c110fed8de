//! Counts what workers did, feeds the progress bar and the joblog, and makes
//! the end-of-run summary.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use forloop_core::worker::{AttemptRecord, Settlement, WorkerEvents};

use crate::joblog::Joblog;
use crate::progress::Progress;

/// Per-run counters, shared by every worker of this process.
#[derive(Debug, Default)]
pub struct Tally {
    /// Items acked.
    pub done: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Items dead-lettered, with why.
    pub dead: Mutex<Vec<(String, String)>>,
    pub(crate) progress: Option<Progress>,
    pub(crate) joblog: Option<Joblog>,
}

impl WorkerEvents for Tally {
    fn attempt_finished(&self, record: &AttemptRecord<'_>) {
        if let Some(joblog) = &self.joblog {
            joblog.record(record);
        }
        match record.settlement {
            Settlement::Acked => {
                self.done.fetch_add(1, Ordering::Relaxed);
            }
            Settlement::Retrying { delay } => {
                self.retried.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    item = %String::from_utf8_lossy(record.payload),
                    attempt = record.attempt,
                    reason = record.outcome.reason.as_deref().unwrap_or(""),
                    "attempt failed; retrying in {}",
                    humantime::format_duration(delay)
                );
                return;
            }
            Settlement::DeadLettered => {
                let reason = record.outcome.reason.clone().unwrap_or_default();
                self.dead
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((String::from_utf8_lossy(record.payload).into_owned(), reason));
            }
        }
        if let Some(progress) = &self.progress {
            progress.add(1);
        }
    }
}

impl Tally {
    /// Items dead-lettered so far.
    pub fn dead_items(&self) -> Vec<(String, String)> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

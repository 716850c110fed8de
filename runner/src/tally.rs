//! Counts what workers did, feeds the progress bar and the joblog, and makes
//! the end-of-run summary.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use forloop_core::worker::{AttemptRecord, Settlement, WorkerEvents};

use crate::joblog::Joblog;
use crate::progress::Progress;

/// Per-run counters, shared by every worker of this process.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Distinct items whose ack landed (an item run twice counts once).
    pub done: AtomicU64,
    pub(crate) done_ids: Mutex<HashSet<String>>,
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
                let first = self
                    .done_ids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(record.id.to_string());
                if !first {
                    return;
                }
                self.done.fetch_add(1, Ordering::Relaxed);
            }
            Settlement::Unsettled => {
                tracing::info!(
                    item = %String::from_utf8_lossy(record.payload),
                    attempt = record.attempt,
                    "succeeded, but the queue did not take the ack; the item runs again"
                );
                return;
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
    pub(crate) fn dead_items(&self) -> Vec<(String, String)> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use forloop_core::TaskOutcome;

    use super::*;

    fn acked(tally: &Tally, id: &str) {
        tally.attempt_finished(&AttemptRecord {
            id,
            payload: id.as_bytes(),
            attempt: 1,
            outcome: &TaskOutcome::success(),
            settlement: Settlement::Acked,
            elapsed: Duration::ZERO,
            worker: "w",
        });
    }

    #[test]
    fn an_item_acked_twice_is_done_once() {
        let tally = Tally::default();
        acked(&tally, "1");
        acked(&tally, "1");
        acked(&tally, "2");
        assert_eq!(tally.done.load(Ordering::Relaxed), 2);
    }
}

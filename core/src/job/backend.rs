//! [`Backend`]: what opening a backend gives, its queue and, where it
//! keeps jobs, its ledger. The queue speaks the delivery contract and
//! knows nothing of jobs; the ledger sits beside it, one layer up.

use std::fmt;
use std::sync::Arc;

use super::Ledger;
use crate::WorkQueue;

/// A backend as it was opened: its queue and, where it keeps jobs, its
/// [`Ledger`]. A worker given a backend without a ledger runs items as
/// plain items and ends by the backlog rule; one with a ledger writes a
/// receipt for every item of a job and ends when the jobs are complete.
#[derive(Clone)]
pub struct Backend {
    /// The work queue: the delivery contract.
    pub queue: Arc<dyn WorkQueue>,
    /// Where its jobs' manifests and receipts live (`None`: it keeps no
    /// jobs, so items go without one and workers end by the backlog).
    pub ledger: Option<Arc<dyn Ledger>>,
}

impl Backend {
    /// A queue that keeps no jobs.
    pub fn new(queue: Arc<dyn WorkQueue>) -> Self {
        Self {
            queue,
            ledger: None,
        }
    }

    /// With its jobs kept in `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("queue", &self.queue)
            .field("ledger", &self.ledger.is_some())
            .finish()
    }
}

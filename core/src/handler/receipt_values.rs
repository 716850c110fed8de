//! [`ValuesInReceipts`]: where no output store takes large values, a value
//! over what a receipt keeps fails its attempt, loudly, rather than being
//! lost.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Handler, OutcomeKind, Task, TaskOutcome};
use crate::job::MAX_RECEIPT_VALUE;

/// A handler whose values must fit the receipt: a success whose value's
/// JSON is over [`MAX_RECEIPT_VALUE`] bytes, for an item of a job, fails
/// at once (fatal: the same `f` returns the same value), naming the size
/// and `--outputs`, which keeps values of any size. An item without a job
/// has no receipt: its value goes nowhere, whatever its size.
#[derive(Clone)]
pub struct ValuesInReceipts {
    inner: Arc<dyn Handler>,
}

impl std::fmt::Debug for ValuesInReceipts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValuesInReceipts").finish_non_exhaustive()
    }
}

impl ValuesInReceipts {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Handler>) -> Self {
        Self { inner }
    }
}

/// `outcome`, failed if its value cannot be kept without an output store.
pub fn refuse_large_value(outcome: TaskOutcome, in_job: bool) -> TaskOutcome {
    match &outcome.value {
        Some(value)
            if in_job && outcome.kind == OutcomeKind::Succeeded && !value.fits_receipt() =>
        {
            let mut refused = TaskOutcome::fatal(format!(
                "f returned a value of {} bytes of JSON, over the {MAX_RECEIPT_VALUE} bytes a \
                 receipt keeps: run with --outputs URL to keep larger values in the store, or \
                 return less",
                value.len()
            ));
            refused.exit_code = outcome.exit_code;
            refused.stderr_tail = outcome.stderr_tail;
            refused
        }
        _ => outcome,
    }
}

#[async_trait]
impl Handler for ValuesInReceipts {
    async fn handle(&self, task: Task) -> TaskOutcome {
        let in_job = task.item.job.is_some();
        refuse_large_value(self.inner.handle(task).await, in_job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ItemValue;

    #[test]
    fn a_value_over_a_kib_fails_an_item_of_a_job_and_names_outputs() {
        let small = TaskOutcome::success().with_value(ItemValue::string("fits"));
        assert_eq!(refuse_large_value(small.clone(), true), small);
        let large = TaskOutcome::success().with_value(ItemValue::string(&"x".repeat(2000)));
        let refused = refuse_large_value(large.clone(), true);
        assert_eq!(refused.kind, OutcomeKind::Fatal);
        let why = refused.reason.unwrap();
        assert!(
            why.contains("2002 bytes") && why.contains("--outputs URL"),
            "{why}"
        );
        // No job, no receipt: nothing to refuse.
        assert_eq!(
            refuse_large_value(large, false).kind,
            OutcomeKind::Succeeded
        );
    }
}

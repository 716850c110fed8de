//! Publishing a whole input from a library: every item is checked against
//! the queue's payload limit before anything is sent, then the items go out
//! in the queue's largest batches. A failure part-way says exactly how many
//! went in, so the rest can be published alone. It is [`Submit`] without a
//! job, with the ids kept: one path puts every input into a queue
//! (`runner submit` too, with line numbers and a progress bar).

use crate::job::Submit;
use crate::{Item, MessageId, QueueError, WorkQueue};

/// Why [`publish_all`] stopped.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(self))]
pub struct PublishError {
    /// Items in the queue before the failure: the first `published` of the input.
    pub published: usize,
    /// Items in the input.
    pub total: usize,
    /// What the queue said (its message is part of this error's, so it is
    /// not repeated as `source()`).
    pub cause: QueueError,
}

fn describe(error: &PublishError) -> String {
    let PublishError {
        published,
        total,
        cause,
    } = error;
    if *published == 0 {
        format!("nothing of the {total} items was published: {cause}")
    } else {
        format!(
            "publishing failed after {published} of {total} items were sent: {cause}. Items \
             0..{published} are in the queue; publish the rest (from index {published}) alone"
        )
    }
}

/// Publish `messages` in order: all of them checked first (nothing is sent
/// if one is over the payload limit; the error names its index), then in
/// batches of the queue's `max_batch`. `on_batch` hears how many items each
/// sent batch held (for a progress bar). Returns the ids in input order.
///
/// ```
/// # tokio_test_block_on(async {
/// use forloop_core::{MemoryQueue, Item, QueueConfig, publish_all};
/// let queue = MemoryQueue::new(QueueConfig::new("docs"));
/// let items = (0..2500).map(|i| Item::new(i.to_string())).collect();
/// let ids = publish_all(&queue, items, |_sent| {}).await.unwrap();
/// assert_eq!(ids.len(), 2500);
/// # });
/// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn publish_all(
    queue: &dyn WorkQueue,
    messages: Vec<Item>,
    on_batch: impl FnMut(usize) + Send,
) -> Result<Vec<MessageId>, PublishError> {
    let total = messages.len();
    Submit::new(queue, messages)
        .on_batch(on_batch)
        .keep_ids()
        .send()
        .await
        .map(|report| report.ids)
        .map_err(|error| PublishError {
            // Plain items go in order, so what went in is a prefix.
            published: error.sent.len() as usize,
            total,
            cause: error.cause,
        })
}

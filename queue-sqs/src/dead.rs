//! The dead-letter queue `NAME-dead` as the kit's [`DeadQueue`]: list,
//! requeue and purge are the kit's loops over these calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::kit::{DeadQueue, DeadStamp, ReceivedDead};
use forloop_core::{Item, QueueError};

use crate::batch::{BatchCalls, MAX_BATCH, SQS_BATCH};
use crate::codec::{encode, message_of};

/// `NAME-dead`, read and settled through the queue's client.
pub(crate) struct DeadPlace<'a> {
    pub(crate) calls: BatchCalls<'a>,
    /// `NAME-dead`'s URL.
    pub(crate) url: &'a str,
    /// `NAME`'s URL, where a requeued item goes.
    pub(crate) main_url: &'a str,
    /// The redrive policy's `maxReceiveCount`.
    pub(crate) max_receive_count: Option<u32>,
}

#[async_trait]
impl DeadQueue for DeadPlace<'_> {
    fn batch(&self) -> usize {
        MAX_BATCH
    }

    async fn receive(&self, max: usize, hold: Duration) -> Result<Vec<ReceivedDead>, QueueError> {
        let received = self
            .calls
            .receive(self.url, max.min(SQS_BATCH), Duration::from_secs(1), hold)
            .await?;
        let mut known_job = None;
        Ok(received
            .iter()
            .filter_map(|m| {
                Some(ReceivedDead {
                    handle: m.receipt_handle()?.to_string(),
                    id: Arc::from(m.message_id().unwrap_or_default()),
                    item: message_of(m, &mut known_job),
                })
            })
            .collect())
    }

    async fn release(&self, handles: Vec<String>) -> Result<(), QueueError> {
        let changes: Vec<(String, i32)> = handles.into_iter().map(|h| (h, 0)).collect();
        self.calls.change_visibility(self.url, &changes).await?;
        Ok(())
    }

    async fn delete(&self, handles: Vec<String>) -> Result<(), QueueError> {
        self.calls.delete_handles(self.url, &handles).await?;
        Ok(())
    }

    async fn republish(&self, messages: Vec<Item>) -> Result<(), QueueError> {
        let outgoing = messages.iter().map(encode).collect();
        self.calls.send_all(self.main_url, outgoing).await?;
        Ok(())
    }

    /// The redrive policy moves an item after `maxReceiveCount` receives and
    /// adds no attributes.
    fn native_stamp(&self, _: &mut BTreeMap<String, String>) -> DeadStamp {
        let attempts = self.max_receive_count;
        DeadStamp {
            reason: Some(format!(
                "received {} times without an ack (SQS redrive policy)",
                attempts.unwrap_or(0)
            )),
            attempts,
            id: None,
        }
    }
}

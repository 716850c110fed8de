//! The dead-keep subscription as the kit's [`DeadQueue`]: list, requeue and
//! purge are the kit's loops over these calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::kit::{DeadQueue, DeadStamp, ReceivedDead};
use forloop_core::{Item, QueueError};
use gcloud_pubsub::publisher::Publisher;

use crate::batch::SubscriberCalls;
use crate::codec::{MAX_BATCH, from_pubsub, publish_chunks};
use crate::error::error;

/// The attribute Pub/Sub sets on items its dead-letter policy forwards.
pub const DELIVERY_COUNT_ATTRIBUTE: &str = "CloudPubSubDeadLetterSourceDeliveryCount";
/// What every attribute the dead-letter policy adds starts with.
const POLICY_ATTRIBUTES: &str = "CloudPubSubDeadLetter";

/// `NAME-dead-keep`, read and settled through the queue's clients.
pub(crate) struct DeadPlace<'a> {
    pub(crate) calls: SubscriberCalls<'a>,
    /// The queue's topic, where a requeued item goes.
    pub(crate) publisher: &'a Publisher,
    pub(crate) subscription: String,
}

#[async_trait]
impl DeadQueue for DeadPlace<'_> {
    fn batch(&self) -> usize {
        MAX_BATCH
    }

    /// The subscription's own ack deadline (60 s) is the hold.
    async fn receive(&self, max: usize, _hold: Duration) -> Result<Vec<ReceivedDead>, QueueError> {
        let received = self
            .calls
            .pull_raw(&self.subscription, max, Duration::from_secs(2))
            .await?;
        let mut known_job = None;
        Ok(received
            .into_iter()
            .filter_map(|received| {
                let (message, id) = from_pubsub(received.message?, &mut known_job);
                Some(ReceivedDead {
                    handle: received.ack_id,
                    id: Arc::from(id),
                    item: message,
                })
            })
            .collect())
    }

    async fn release(&self, handles: Vec<String>) -> Result<(), QueueError> {
        self.calls.modify(&self.subscription, handles, 0).await
    }

    async fn delete(&self, handles: Vec<String>) -> Result<(), QueueError> {
        self.calls.acknowledge(&self.subscription, handles).await
    }

    async fn republish(&self, messages: Vec<Item>) -> Result<(), QueueError> {
        for chunk in publish_chunks(&messages) {
            self.publisher
                .publish_immediately(chunk, None)
                .await
                .map_err(|s| error("requeue publish", self.calls.address, s))?;
        }
        Ok(())
    }

    /// The dead-letter policy stamps its own attributes on what it forwards.
    fn native_stamp(&self, attributes: &mut BTreeMap<String, String>) -> DeadStamp {
        let attempts = attributes
            .get(DELIVERY_COUNT_ATTRIBUTE)
            .and_then(|n| n.parse().ok());
        attributes.retain(|name, _| !name.starts_with(POLICY_ATTRIBUTES));
        DeadStamp {
            reason: Some(format!(
                "delivered {} times without an ack (Pub/Sub dead-letter policy)",
                attempts.unwrap_or(0)
            )),
            attempts,
            id: None,
        }
    }
}

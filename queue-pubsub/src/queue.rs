//! [`PubsubQueue`]: opening a queue, and the [`WorkQueue`] calls mapped onto
//! Pub/Sub's (see the crate docs for the mapping).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::kit::{HeldDeliveries, TokenSplit, dead, whole_seconds};
use forloop_core::queue::check_payload_sizes;
use forloop_core::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, LeaseReport, LeaseToken, Message,
    MessageId, QueueError, WorkQueue,
};
use gcloud_gax::conn::Channel;
use gcloud_gax::grpc::Status;
use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient as RawSubscriber;
use gcloud_pubsub::publisher::{Publisher, PublisherConfig};
use gcloud_pubsub::subscription::Subscription;
use tokio::time::Instant;

use crate::client::connect_all;
use crate::codec::{from_pubsub, to_pubsub};
use crate::dead::DeadPlace;
use crate::error::error;
use crate::{PubsubAddress, monitoring};

/// Largest item, in bytes (Pub/Sub's limit is 10 MB per message).
pub const MAX_PAYLOAD: usize = 10_000_000;
/// Most items in one publish call (Pub/Sub's per-request limit).
pub const MAX_BATCH: usize = 1000;
/// The longest ack deadline Pub/Sub takes, in seconds.
const MAX_ACK_SECONDS: i32 = 600;

/// A forloop queue on Pub/Sub.
pub struct PubsubQueue {
    address: PubsubAddress,
    pub(crate) subscription: Subscription,
    subscription_name: String,
    dead_subscription: Subscription,
    pub(crate) publisher: Publisher,
    dead_publisher: Publisher,
    pub(crate) raw: RawSubscriber<Channel>,
    ack_deadline: Duration,
    /// Held deliveries by ack id, for `dead_letter`.
    held: HeldDeliveries,
    /// The Cloud Monitoring reader, when counts come from there.
    #[cfg(feature = "auth")]
    monitor: Option<monitoring::Monitor>,
}

impl fmt::Debug for PubsubQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubsubQueue")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "auth")]
fn monitor(address: &PubsubAddress) -> Option<monitoring::Monitor> {
    let endpoint = address.monitoring_endpoint()?;
    monitoring::Monitor::new(
        endpoint,
        &address.project,
        address.subscription(),
        address.dead_subscription(),
    )
    .inspect_err(|e| tracing::warn!("backlog counts unknown: {e}"))
    .ok()
}

#[cfg(not(feature = "auth"))]
fn no_monitor(address: &PubsubAddress) {
    if let crate::BacklogSource::Monitoring(url) = &address.backlog {
        tracing::warn!(
            "backlog counts unknown: this build of the Pub/Sub driver cannot read Cloud Monitoring at {} \
             (it lacks the cargo feature `auth`)",
            forloop_core::kit::redact_url(url)
        );
    }
}

impl PubsubQueue {
    /// Connect to an existing queue (see [`PubsubQueue::create`]). Its lease
    /// is the subscription's ack deadline, set when it was created.
    pub async fn connect(address: PubsubAddress) -> Result<Self, QueueError> {
        let (client, raw) = connect_all(&address).await?;
        #[cfg(not(feature = "auth"))]
        no_monitor(&address);
        let subscription = client.subscription(&address.subscription());
        let (_, sub_config) = subscription
            .config(None)
            .await
            .map_err(|s| error("subscription lookup", &address, s))?;
        let one_worker = || {
            Some(PublisherConfig {
                workers: 1,
                ..PublisherConfig::default()
            })
        };
        let publisher = client.topic(&address.topic()).new_publisher(one_worker());
        let dead_publisher = client
            .topic(&address.dead_topic())
            .new_publisher(one_worker());
        Ok(Self {
            subscription_name: subscription.fully_qualified_name().to_string(),
            dead_subscription: client.subscription(&address.dead_subscription()),
            subscription,
            publisher,
            dead_publisher,
            raw,
            ack_deadline: Duration::from_secs(
                u64::try_from(sub_config.ack_deadline_seconds)
                    .unwrap_or(10)
                    .max(10),
            ),
            held: HeldDeliveries::new(),
            #[cfg(feature = "auth")]
            monitor: monitor(&address),
            address,
        })
    }

    /// Whether backlog counts come from Cloud Monitoring.
    pub fn monitored(&self) -> bool {
        #[cfg(feature = "auth")]
        return self.monitor.is_some();
        #[cfg(not(feature = "auth"))]
        return false;
    }

    /// A failed call `what` on this queue.
    pub(crate) fn fail(&self, what: &str, status: Status) -> QueueError {
        error(what, &self.address, status)
    }

    /// The dead-keep subscription, as the kit's loops read it.
    fn dead_place(&self) -> DeadPlace<'_> {
        DeadPlace {
            queue: self,
            subscription: self.dead_subscription.fully_qualified_name().to_string(),
        }
    }
}

#[async_trait]
impl WorkQueue for PubsubQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(MAX_PAYLOAD, MAX_BATCH)
            .with_deadlines(Duration::from_secs(10), Duration::from_secs(600))
            .with_native_dead_letter(true)
            .with_delayed_nack(true)
            // Monitoring points are trusted up to this old; without them the
            // counts are unknown and only the worker's idle window counts.
            .with_backlog_staleness(if self.monitored() {
                monitoring::STALENESS
            } else {
                Duration::ZERO
            })
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<MessageId>, QueueError> {
        check_payload_sizes(&batch, MAX_PAYLOAD)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let messages = batch.iter().map(to_pubsub).collect();
        let ids = self
            .publisher
            .publish_immediately(messages, None)
            .await
            .map_err(|s| self.fail("publish", s))?;
        Ok(ids.into_iter().map(Arc::from).collect())
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let sent = Instant::now();
        let received = self.pull_raw(&self.subscription_name, max, wait).await?;
        let deadline = sent + self.ack_deadline;
        let deliveries: Vec<Delivery> = received
            .into_iter()
            .filter_map(|received| {
                let (message, id) = from_pubsub(received.message?);
                Some(Delivery {
                    id: Arc::from(id),
                    payload: message.payload,
                    attributes: message.attributes,
                    token: LeaseToken::new(received.ack_id),
                    attempt: u32::try_from(received.delivery_attempt).unwrap_or(0).max(1),
                    deadline,
                })
            })
            .collect();
        self.held.hold(&deliveries, sent);
        Ok(deliveries)
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let split = self.held.release(tokens);
        self.acknowledge(&self.subscription_name, split.texts())
            .await?;
        Ok(LeaseReport { lost: split.lost })
    }

    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let split = TokenSplit::text(tokens);
        let ack_ids = split.texts();
        self.held.forget(&ack_ids);
        let seconds = whole_seconds(delay).min(MAX_ACK_SECONDS);
        self.modify(&self.subscription_name, ack_ids, seconds)
            .await?;
        Ok(LeaseReport { lost: split.lost })
    }

    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.nack(tokens, Duration::ZERO).await
    }

    async fn extend_deadline(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let split = TokenSplit::text(tokens);
        let seconds = whole_seconds(lease).clamp(1, MAX_ACK_SECONDS);
        self.modify(&self.subscription_name, split.texts(), seconds)
            .await?;
        Ok(LeaseReport { lost: split.lost })
    }

    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        let letters = self.held.letters(&TokenSplit::text(tokens), reason);
        if !letters.messages.is_empty() {
            let messages = letters.messages.iter().map(to_pubsub).collect();
            self.dead_publisher
                .publish_immediately(messages, None)
                .await
                .map_err(|s| self.fail("dead-letter publish", s))?;
            let ack_ids: Vec<String> = letters.settled.into_iter().map(|(id, _)| id).collect();
            self.held.forget(&ack_ids);
            self.acknowledge(&self.subscription_name, ack_ids).await?;
        }
        Ok(LeaseReport { lost: letters.lost })
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        #[cfg(feature = "auth")]
        if let Some(monitor) = &self.monitor {
            return Ok(monitor.backlog().await);
        }
        Ok(Backlog {
            ready: Count::Unknown,
            in_flight: Count::Unknown,
            dead: Count::Unknown,
            age: Duration::ZERO,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        dead::list(&self.dead_place(), limit).await
    }

    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        dead::requeue(&self.dead_place()).await
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        dead::purge(&self.dead_place()).await
    }
}

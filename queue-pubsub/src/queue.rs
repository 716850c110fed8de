//! [`PubsubQueue`]: opening a queue, and the [`WorkQueue`] calls mapped onto
//! Pub/Sub's (see the crate docs for the mapping).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use forloop_core::Backend;
use forloop_core::kit::SheetLedger;
use forloop_core::kit::{Carried, HeldDeliveries, Letters, TokenSplit, dead, whole_seconds};
use forloop_core::queue::check_payload_sizes;
use forloop_core::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, Item, LeaseReport, LeaseToken, MessageId,
    QueueError, WorkQueue,
};
use gcloud_gax::conn::Channel;
use gcloud_gax::grpc::Status;
use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient as RawSubscriber;
use gcloud_pubsub::client::Client;
use gcloud_pubsub::publisher::{Publisher, PublisherConfig};
use gcloud_pubsub::subscription::Subscription;
use tokio::time::Instant;

use crate::batch::SubscriberCalls;
use crate::client::connect_all;
use crate::codec::{MAX_BATCH, MAX_PAYLOAD, from_pubsub, publish_chunks};
use crate::dead::DeadPlace;
use crate::error::error;
use crate::{PubsubAddress, monitoring};

/// The longest ack deadline Pub/Sub takes, in seconds.
const MAX_ACK_SECONDS: i32 = 600;

/// Margin before a lease's recorded end within which a dead letter or a
/// hand-back takes the lease as gone.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// The refusal of a subscription without a dead-letter policy.
fn no_dead_letter_policy(address: &PubsubAddress) -> QueueError {
    QueueError::new(
        forloop_core::QueueErrorKind::Invalid,
        format!(
            "Pub/Sub subscription `{sub}` has no dead-letter policy, so Pub/Sub would deliver a failing \
             item forever and every delivery would read as attempt 1; give it one with `gcloud pubsub \
             subscriptions update {sub} --project {project} --dead-letter-topic {dead} \
             --max-delivery-attempts 5`, or delete it and let `runner --queue pubsub://{project}/{name} \
             queue create` make the queue's resources",
            sub = address.subscription(),
            project = address.project,
            name = address.name,
            dead = address.dead_topic(),
        ),
    )
}

/// A forloop queue on Pub/Sub.
pub struct PubsubQueue {
    pub(crate) address: PubsubAddress,
    pub(crate) subscription: Subscription,
    subscription_name: String,
    dead_subscription: Subscription,
    pub(crate) publisher: Publisher,
    dead_publisher: Publisher,
    pub(crate) raw: RawSubscriber<Channel>,
    ack_deadline: Duration,
    /// Held deliveries by ack id, for `dead_letter` and `release`, with the
    /// end of each lease as far as this process knows it.
    held: HeldDeliveries,
    /// The dead-letter policy's `max_delivery_attempts`.
    max_attempts: u32,
    /// The Cloud Monitoring reader, when counts come from there.
    #[cfg(feature = "auth")]
    monitor: Option<monitoring::Monitor>,
    /// The job ledger in the sibling topics, where they exist.
    pub(crate) ledger: Option<Arc<SheetLedger>>,
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
    /// This queue and, where its sibling queues exist, its job ledger, as
    /// a worker or `submit` takes them.
    pub fn into_backend(self) -> Backend {
        let ledger = self.ledger.clone();
        let backend = Backend::new(Arc::new(self));
        match ledger {
            Some(ledger) => backend.with_ledger(ledger),
            None => backend,
        }
    }

    /// Connect to an existing queue (see [`PubsubQueue::create`]). Its lease
    /// is the subscription's ack deadline, set when it was created.
    pub async fn connect(address: PubsubAddress) -> Result<Self, QueueError> {
        let (client, raw) = connect_all(&address).await?;
        #[cfg(not(feature = "auth"))]
        no_monitor(&address);
        let mut queue = Self::open_with(address, &client, raw, false).await?;
        queue.ledger = queue.open_ledger(&client).await?;
        Ok(queue)
    }

    /// Open the subscription of `address` on a connection made. A sheet
    /// sibling of the ledger (`sheets`) has no dead-letter policy: its
    /// messages are never buried.
    pub(crate) async fn open_with(
        address: PubsubAddress,
        client: &Client,
        raw: RawSubscriber<Channel>,
        sheets: bool,
    ) -> Result<Self, QueueError> {
        let subscription = client.subscription(&address.subscription());
        let (_, sub_config) = subscription
            .config(None)
            .await
            .map_err(|s| error("subscription lookup", &address, s))?;
        let max_attempts = match sub_config.dead_letter_policy.as_ref() {
            None if sheets => u32::MAX,
            None => return Err(no_dead_letter_policy(&address)),
            Some(policy) => u32::try_from(policy.max_delivery_attempts)
                .ok()
                .filter(|n| *n > 0)
                // Pub/Sub's default when the policy leaves it unset.
                .unwrap_or(5),
        };
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
            max_attempts,
            #[cfg(feature = "auth")]
            monitor: if sheets { None } else { monitor(&address) },
            ledger: None,
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

    /// Keep of `letters` only the deliveries whose lease is still live, and
    /// renew those for a lease, so that a copy is published only by the
    /// worker that holds the item and while it holds it. Pub/Sub answers a
    /// modack on an expired ack id with success (the emulator too, and GCP
    /// unless the subscription has exactly-once delivery), so "live" is this
    /// process's record of the deadline, with a second of margin.
    async fn keep_live(&self, letters: &mut Letters) -> Result<(), QueueError> {
        let texts: Vec<String> = letters.settled.iter().map(|(t, _)| t.clone()).collect();
        let sent = Instant::now();
        let gone = self.held.ending_before(&texts, sent + LEASE_MARGIN);
        if !gone.is_empty() {
            self.held.forget(&gone);
            let mut kept = Vec::new();
            for ((text, token), message) in
                letters.settled.drain(..).zip(letters.messages.drain(..))
            {
                if gone.contains(&text) {
                    letters.lost.push(token);
                } else {
                    kept.push(((text, token), message));
                }
            }
            (letters.settled, letters.messages) = kept.into_iter().unzip();
        }
        let live: Vec<String> = letters.settled.iter().map(|(t, _)| t.clone()).collect();
        if !live.is_empty() {
            let seconds = whole_seconds(self.ack_deadline).clamp(10, MAX_ACK_SECONDS);
            self.calls()
                .modify(&self.subscription_name, live.clone(), seconds)
                .await?;
            let ended = self.held.extended(&live, sent, sent + self.ack_deadline);
            debug_assert!(ended.is_empty(), "checked just before");
        }
        Ok(())
    }

    /// Publish `letters` with `publisher`, then ack the deliveries they came
    /// from; what a dead letter and a free hand-back share. Returns the
    /// tokens whose lease was gone.
    async fn move_live(
        &self,
        publisher: &Publisher,
        what: &str,
        mut letters: Letters,
    ) -> Result<Vec<LeaseToken>, QueueError> {
        if letters.messages.is_empty() {
            return Ok(letters.lost);
        }
        self.keep_live(&mut letters).await?;
        if !letters.messages.is_empty() {
            for chunk in publish_chunks(&letters.messages) {
                publisher
                    .publish_immediately(chunk, None)
                    .await
                    .map_err(|s| self.fail(what, s))?;
            }
            let ack_ids: Vec<String> = letters.settled.into_iter().map(|(id, _)| id).collect();
            self.held.forget(&ack_ids);
            self.calls()
                .acknowledge(&self.subscription_name, ack_ids)
                .await?;
        }
        Ok(letters.lost)
    }

    /// The subscription calls, through this queue's clients.
    fn calls(&self) -> SubscriberCalls<'_> {
        SubscriberCalls {
            address: &self.address,
            raw: &self.raw,
            subscription: &self.subscription,
        }
    }

    /// The dead-keep subscription, as the kit's loops read it.
    fn dead_place(&self) -> DeadPlace<'_> {
        DeadPlace {
            calls: self.calls(),
            publisher: &self.publisher,
            subscription: self.dead_subscription.fully_qualified_name().to_string(),
        }
    }
}

#[async_trait]
impl WorkQueue for PubsubQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(MAX_PAYLOAD, MAX_BATCH)
            .with_lease_range(Duration::from_secs(10), Duration::from_secs(600))
            .with_native_dead_letter(true)
            .with_delayed_nack(true)
            .with_max_nack_delay(Duration::from_secs(MAX_ACK_SECONDS as u64))
            .with_queue_max_attempts(Some(self.max_attempts))
            // Monitoring points are trusted up to this old; without them the
            // counts are unknown and only the worker's idle window counts.
            .with_backlog_staleness(if self.monitored() {
                monitoring::STALENESS
            } else {
                Duration::ZERO
            })
    }

    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        check_payload_sizes(&batch, MAX_PAYLOAD)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // One request per run of at most 1,000 items and 9 MB (Pub/Sub
        // refuses requests over 10 MB), one after another, so a failure
        // part-way says exactly which items went in: those before it.
        let mut ids: Vec<MessageId> = Vec::with_capacity(batch.len());
        for chunk in publish_chunks(&batch) {
            match self.publisher.publish_immediately(chunk, None).await {
                Ok(sent) => ids.extend(sent.into_iter().map(Arc::from)),
                Err(status) => {
                    let error = self.fail("publish", status);
                    let went = match ids.len() {
                        0 => "none of this batch went in".to_string(),
                        n => format!("items 0 to {} of this batch went in", n - 1),
                    };
                    return Err(QueueError::new(error.kind(), format!("{error}; {went}")));
                }
            }
        }
        Ok(ids)
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let sent = Instant::now();
        let received = self
            .calls()
            .pull_raw(&self.subscription_name, max, wait)
            .await?;
        // The server starts a lease when it hands the message out, which on
        // a long poll can be long after `sent`: count from the answer, less
        // a margin for the trip back.
        let deadline = Instant::now() + self.ack_deadline - LEASE_MARGIN;
        let mut known_job = None;
        let deliveries: Vec<Delivery> = received
            .into_iter()
            .filter_map(|received| {
                let (mut message, id) = from_pubsub(received.message?, &mut known_job);
                let carried = Carried::take_from(&mut message);
                let counted = u32::try_from(received.delivery_attempt).unwrap_or(0).max(1);
                Some(Delivery {
                    id: carried.id.clone().unwrap_or_else(|| Arc::from(id)),
                    item: message,
                    token: LeaseToken::new(received.ack_id),
                    attempt: carried.attempt(counted),
                    failures: Some(carried.failures),
                    deadline,
                })
            })
            .collect();
        let (deliveries, past_max): (Vec<_>, Vec<_>) = deliveries
            .into_iter()
            .partition(|d| d.attempt <= self.max_attempts);
        self.held.hold(&deliveries, sent);
        if !past_max.is_empty() {
            // Handed back after their last attempt: the backend counted only
            // the copy's deliveries, so the driver buries them itself.
            let (tokens, reason) = self.held.hold_past_max(past_max, self.max_attempts, sent);
            self.dead_letter(&tokens, &reason).await?;
        }
        Ok(deliveries)
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let split = self.held.release(tokens);
        self.calls()
            .acknowledge(&self.subscription_name, split.texts())
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
        self.calls()
            .modify(&self.subscription_name, ack_ids, seconds)
            .await?;
        Ok(LeaseReport { lost: split.lost })
    }

    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let back = self.held.handbacks(&TokenSplit::text(tokens));
        let lost = self
            .move_live(&self.publisher, "hand-back publish", back)
            .await?;
        Ok(LeaseReport { lost })
    }

    /// A failed attempt is a copy published again with its failures
    /// counted ([`forloop_core::kit::Carried::failed`]), then the old
    /// delivery acked: Pub/Sub's delivery attempt cannot tell a failure
    /// from a lapse. The copy goes at once (Pub/Sub cannot delay a
    /// publish): the worker holds the lease for the backoff first (no
    /// `delayed_fail`).
    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        _delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let copies = self.held.failures(&TokenSplit::text(tokens));
        let lost = self
            .move_live(&self.publisher, "failed-attempt publish", copies)
            .await?;
        Ok(LeaseReport { lost })
    }

    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let split = TokenSplit::text(tokens);
        let seconds = whole_seconds(lease).clamp(1, MAX_ACK_SECONDS);
        let sent = Instant::now();
        let ack_ids = split.texts();
        self.calls()
            .modify(&self.subscription_name, ack_ids.clone(), seconds)
            .await?;
        let granted = Duration::from_secs(u64::try_from(seconds).unwrap_or(1));
        let ended = self.held.extended(&ack_ids, sent, sent + granted);
        let mut lost = split.lost.clone();
        lost.extend(split.tokens_of(&ended));
        Ok(LeaseReport { lost })
    }

    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        let letters = self.held.letters(&TokenSplit::text(tokens), reason);
        let lost = self
            .move_live(&self.dead_publisher, "dead-letter publish", letters)
            .await?;
        Ok(LeaseReport { lost })
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

    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        dead::list(&self.dead_place(), limit).await
    }

    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        dead::requeue(&self.dead_place()).await
    }

    async fn requeue_dead_telling(
        &self,
        watch: &dyn forloop_core::RequeueWatch,
    ) -> Result<u64, QueueError> {
        dead::requeue_telling(&self.dead_place(), Some(watch)).await
    }

    async fn requeue_dead_where(
        &self,
        select: &forloop_core::DeadSelect<'_>,
        watch: Option<&dyn forloop_core::RequeueWatch>,
    ) -> Result<forloop_core::Requeued, QueueError> {
        dead::requeue_where(&self.dead_place(), select, watch).await
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        dead::purge(&self.dead_place()).await
    }
}

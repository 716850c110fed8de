//! [`SqsQueue`]: opening a queue, and the [`WorkQueue`] calls mapped onto
//! SQS's (see the crate docs for the mapping).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use forloop_core::Backend;
use forloop_core::kit::SheetLedger;
use forloop_core::kit::{Carried, HeldDeliveries, Letters, TokenSplit, dead, whole_seconds};
use forloop_core::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, Item, LeaseReport, LeaseToken, MessageId,
    QueueConfig, QueueError, QueueErrorKind, WorkQueue,
};
use futures_util::future::join_all;
use tokio::time::Instant;

use crate::SqsAddress;
use crate::batch::{BatchCalls, MAX_BATCH, SQS_BATCH};
use crate::client::{client, queue_url};
use crate::codec::{encode, message_of, receive_count, sqs_text, wire_size};
use crate::dead::DeadPlace;
use crate::error::error;

/// SQS's cap on a message's visibility, counted from its receive.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// The payload limit when the queue does not say (AWS's default today).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// The longest visibility SQS takes, in seconds.
const MAX_VISIBILITY_SECONDS: i32 = 43_200;

/// A forloop queue on SQS.
pub struct SqsQueue {
    pub(crate) address: SqsAddress,
    pub(crate) client: Client,
    pub(crate) url: String,
    pub(crate) dead_url: Option<String>,
    pub(crate) lease: Duration,
    pub(crate) max_payload: usize,
    pub(crate) max_receive_count: Option<u32>,
    /// Each held delivery's item, for `dead_letter`, and its receive time,
    /// for the 12-hour visibility cap.
    pub(crate) held: HeldDeliveries,
    /// Whether the last receive came back empty: pulls then short-poll (see
    /// the crate docs), so a worker that goes away leaves no long poll
    /// pending on the server to swallow the next item.
    pub(crate) quiet: AtomicBool,
    /// The job ledger in the sibling queues, where they exist.
    pub(crate) ledger: Option<Arc<SheetLedger>>,
}

/// How often a pull short-polls while the queue reads empty.
pub const QUIET_POLL_EVERY: Duration = Duration::from_millis(500);

impl fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the client: its config holds the credentials provider.
        f.debug_struct("SqsQueue")
            .field("address", &self.address)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SqsQueue {
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

    /// Open an existing queue. `config.lease` is the visibility each pull
    /// asks for; the payload limit and dead-letter setup come from the queue.
    pub async fn connect(address: SqsAddress, config: &QueueConfig) -> Result<Self, QueueError> {
        let client = client(&address).await?;
        Self::with_client(address, client, config).await
    }

    /// Open an existing queue with a client of the caller's.
    pub async fn with_client(
        address: SqsAddress,
        client: Client,
        config: &QueueConfig,
    ) -> Result<Self, QueueError> {
        let url = match &address.url {
            Some(url) => url.clone(),
            None => queue_url(&client, &address, &address.name)
                .await?
                .ok_or_else(|| {
                    QueueError::new(
                        QueueErrorKind::NotFound,
                        format!(
                            "SQS queue `{}` does not exist; {}",
                            address.name,
                            address.create_hint()
                        ),
                    )
                })?,
        };
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| error("queue attributes", &address, e))?;
        let attributes = attributes.attributes().cloned().unwrap_or_default();
        let max_payload = attributes
            .get(&QueueAttributeName::MaximumMessageSize)
            .and_then(|n| n.parse().ok())
            .unwrap_or(DEFAULT_MAX_PAYLOAD);
        let redrive: Option<serde_json::Value> = attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|text| serde_json::from_str(text).ok());
        let max_receive_count = redrive.as_ref().and_then(|r| match &r["maxReceiveCount"] {
            serde_json::Value::String(n) => n.parse().ok(),
            n => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        });
        if max_receive_count.is_none() {
            return Err(QueueError::new(
                QueueErrorKind::Invalid,
                format!(
                    "SQS queue `{name}` has no redrive policy, so a failing item would be delivered \
                     forever, each time as attempt 1; give it one with `runner --queue sqs --name {name} \
                     queue create` (it sets the policy on an existing queue), or with `aws sqs \
                     set-queue-attributes --queue-url {url} --attributes '{{\"RedrivePolicy\":\
                     \"{{\\\"deadLetterTargetArn\\\":\\\"<ARN of {dead}>\\\",\\\"maxReceiveCount\\\":\\\"5\\\"}}\"}}'`",
                    name = address.name,
                    dead = address.dead_name(),
                ),
            ));
        }
        let dead_name = redrive
            .as_ref()
            .and_then(|r| r["deadLetterTargetArn"].as_str())
            .and_then(|arn| arn.rsplit(':').next())
            .map(str::to_string)
            .unwrap_or_else(|| address.dead_name());
        let dead_url = queue_url(&client, &address, &dead_name).await?;
        let mut queue = Self {
            address,
            client,
            url,
            dead_url,
            lease: config.lease,
            max_payload,
            max_receive_count,
            held: HeldDeliveries::new(),
            quiet: AtomicBool::new(false),
            ledger: None,
        };
        queue.ledger = queue.open_ledger().await?;
        Ok(queue)
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The batch calls, through this queue's client.
    pub(crate) fn calls(&self) -> BatchCalls<'_> {
        BatchCalls {
            client: &self.client,
            address: &self.address,
            max_payload: self.max_payload,
        }
    }

    /// The dead-letter queue, as the kit's loops read it.
    fn dead_place(&self) -> Result<DeadPlace<'_>, QueueError> {
        let url = self.dead_url.as_deref().ok_or_else(|| {
            QueueError::new(
                QueueErrorKind::NotFound,
                format!(
                    "the dead-letter queue `{}` does not exist; {}",
                    self.address.dead_name(),
                    self.address.create_hint()
                ),
            )
        })?;
        Ok(DeadPlace {
            calls: self.calls(),
            url,
            main_url: &self.url,
            max_receive_count: self.max_receive_count,
        })
    }

    /// What is left of the 12 hours from the receive of the delivery `handle`.
    fn visibility_left(&self, handle: &str) -> Duration {
        self.held
            .received(handle)
            .map_or(MAX_VISIBILITY, |received| {
                MAX_VISIBILITY.saturating_sub(received.elapsed())
            })
    }

    /// One receive of up to `max` (a long poll of `wait` for the first ten,
    /// short polls for the rest, so a wide worker fills its slots in one
    /// round trip without waiting on empty polls).
    async fn receive_up_to(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, QueueError> {
        let calls = (0..max.div_ceil(SQS_BATCH)).map(|i| {
            let n = (max - i * SQS_BATCH).min(SQS_BATCH);
            let wait = if i == 0 { wait } else { Duration::ZERO };
            self.calls().receive(&self.url, n, wait, self.lease)
        });
        let mut received = Vec::new();
        let mut failure = None;
        for result in join_all(calls).await {
            match result {
                Ok(messages) => received.extend(messages),
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if received.is_empty() => Err(e),
            _ => Ok(received),
        }
    }

    /// Keep of `letters` only the deliveries whose lease is still live, and
    /// renew those for a lease, so that a copy is published only by the
    /// worker that holds the item and while it holds it. SQS refuses a
    /// visibility change on a receipt handle whose message was received
    /// again since (or deleted); those move to `letters.lost`.
    async fn keep_live(&self, letters: &mut Letters) -> Result<(), QueueError> {
        let changes: Vec<(String, i32)> = letters
            .settled
            .iter()
            .map(|(handle, _)| {
                let lease = self.lease.min(self.visibility_left(handle));
                (
                    handle.clone(),
                    whole_seconds(lease).clamp(1, MAX_VISIBILITY_SECONDS),
                )
            })
            .collect();
        let gone = self.calls().change_visibility(&self.url, &changes).await?;
        if gone.is_empty() {
            return Ok(());
        }
        self.held.forget(&gone);
        let mut kept = Vec::new();
        for ((handle, token), message) in letters.settled.drain(..).zip(letters.messages.drain(..))
        {
            if gone.contains(&handle) {
                letters.lost.push(token);
            } else {
                kept.push(((handle, token), message));
            }
        }
        (letters.settled, letters.messages) = kept.into_iter().unzip();
        Ok(())
    }

    /// Publish `letters` to `url`, then delete the deliveries they came from;
    /// what a dead letter and a free hand-back share. Returns the tokens
    /// whose lease was gone.
    async fn move_live(
        &self,
        url: &str,
        mut letters: Letters,
    ) -> Result<Vec<LeaseToken>, QueueError> {
        if letters.messages.is_empty() {
            return Ok(letters.lost);
        }
        self.keep_live(&mut letters).await?;
        let mut lost = letters.lost;
        if letters.messages.is_empty() {
            return Ok(lost);
        }
        let outgoing = letters.messages.iter().map(encode).collect();
        self.calls().send_all(url, outgoing).await?;
        let handles: Vec<String> = letters.settled.iter().map(|(h, _)| h.clone()).collect();
        self.held.forget(&handles);
        let gone = self.calls().delete_handles(&self.url, &handles).await?;
        lost.extend(
            letters
                .settled
                .into_iter()
                .filter(|(handle, _)| gone.contains(handle))
                .map(|(_, token)| token),
        );
        Ok(lost)
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.max_payload, MAX_BATCH)
            .with_lease_range(Duration::from_secs(1), MAX_VISIBILITY)
            .with_native_dead_letter(self.max_receive_count.is_some() && self.dead_url.is_some())
            .with_delayed_nack(true)
            .with_queue_max_attempts(self.max_receive_count)
            .with_backlog_staleness(self.address.staleness)
    }

    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
        let encoded: Vec<_> = batch.iter().map(encode).collect();
        if let Some((index, size)) = encoded
            .iter()
            .map(|(body, attributes)| wire_size(body, attributes))
            .enumerate()
            .find(|(_, size)| *size > self.max_payload)
        {
            return Err(QueueError::payload_too_large(index, size, self.max_payload));
        }
        if encoded.is_empty() {
            return Ok(Vec::new());
        }
        self.calls().send_all(&self.url, encoded).await
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let max = max.max(1);
        let until = Instant::now() + wait;
        let (sent, received) = loop {
            let sent = Instant::now();
            // Once the queue reads empty, short polls spaced in time stand
            // in for the long poll: a pull dropped now (the worker exits)
            // leaves nothing pending on the server.
            let quiet = self.quiet.load(Ordering::Relaxed);
            let long = if quiet { Duration::ZERO } else { wait };
            let received = self.receive_up_to(max, long).await?;
            self.quiet.store(received.is_empty(), Ordering::Relaxed);
            let now = Instant::now();
            if !received.is_empty() || !quiet || now >= until {
                break (sent, received);
            }
            tokio::time::sleep_until((now + QUIET_POLL_EVERY).min(until)).await;
        };
        let deadline = sent + self.lease;
        let mut past_max = Vec::new();
        let mut known_job = None;
        let deliveries: Vec<Delivery> = received
            .into_iter()
            .filter_map(|m| {
                let mut message = message_of(&m, &mut known_job);
                let carried = Carried::take_from(&mut message);
                let delivery = Delivery {
                    id: carried
                        .id
                        .clone()
                        .unwrap_or_else(|| Arc::from(m.message_id().unwrap_or_default())),
                    item: message,
                    token: LeaseToken::new(m.receipt_handle()?),
                    attempt: carried.attempt(receive_count(&m)),
                    failures: Some(carried.failures),
                    deadline,
                };
                if self
                    .max_receive_count
                    .is_some_and(|max| delivery.attempt > max)
                {
                    past_max.push(delivery);
                    None
                } else {
                    Some(delivery)
                }
            })
            .collect();
        self.held.hold(&deliveries, sent);
        if !past_max.is_empty() {
            // Handed back after their last attempt: the backend counted only
            // the copy's deliveries, so the driver buries them itself.
            let (tokens, reason) =
                self.held
                    .hold_past_max(past_max, self.max_receive_count.unwrap_or_default(), sent);
            self.dead_letter(&tokens, &reason).await?;
        }
        Ok(deliveries)
    }

    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let back = self.held.handbacks(&TokenSplit::text(tokens));
        let lost = self.move_live(&self.url, back).await?;
        Ok(LeaseReport { lost })
    }

    /// A failed attempt is a copy sent again with its failures counted
    /// ([`forloop_core::kit::Carried::failed`]), then the old delivery
    /// deleted: SQS's receive count cannot tell a failure from a lapse. The
    /// copy is sent at once: the worker holds the lease for the backoff
    /// first (no `delayed_fail`).
    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        _delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let copies = self.held.failures(&TokenSplit::text(tokens));
        let lost = self.move_live(&self.url, copies).await?;
        Ok(LeaseReport { lost })
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let split = self.held.release(tokens);
        let gone = self
            .calls()
            .delete_handles(&self.url, &split.texts())
            .await?;
        Ok(LeaseReport {
            lost: split.lost_with(&gone),
        })
    }

    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let split = TokenSplit::text(tokens);
        // What is left of the 12 h from the receive bounds the delay.
        let changes: Vec<(String, i32)> = split
            .known
            .iter()
            .map(|(handle, _)| {
                let delay = delay.min(self.visibility_left(handle));
                let seconds = whole_seconds(delay).clamp(0, MAX_VISIBILITY_SECONDS);
                (handle.clone(), seconds)
            })
            .collect();
        self.held.forget(&split.texts());
        let gone = self.calls().change_visibility(&self.url, &changes).await?;
        Ok(LeaseReport {
            lost: split.lost_with(&gone),
        })
    }

    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let split = TokenSplit::text(tokens);
        let mut lost = split.lost.clone();
        let mut changes = Vec::with_capacity(split.known.len());
        for (handle, token) in &split.known {
            let left = self.visibility_left(handle);
            if left < Duration::from_secs(1) {
                // SQS's 12 h cap: this lease cannot be kept any longer.
                lost.push(token.clone());
            } else {
                let seconds = whole_seconds(lease.min(left)).clamp(1, MAX_VISIBILITY_SECONDS);
                changes.push((handle.clone(), seconds));
            }
        }
        let gone = self.calls().change_visibility(&self.url, &changes).await?;
        lost.extend(split.tokens_of(&gone));
        Ok(LeaseReport { lost })
    }

    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        let dead = self.dead_place()?;
        let letters = self
            .held
            .letters(&TokenSplit::text(tokens), &sqs_text(reason));
        let lost = self.move_live(dead.url, letters).await?;
        Ok(LeaseReport { lost })
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let main = self.calls().counts(&self.url);
        let dead = async {
            match &self.dead_url {
                Some(url) => self
                    .calls()
                    .counts(url)
                    .await
                    .map(|(a, b, c)| Count::Approximate(a + b + c)),
                None => Ok(Count::Exact(0)),
            }
        };
        let (main, dead) = tokio::join!(main, dead);
        let (visible, not_visible, delayed) = main?;
        Ok(Backlog {
            ready: Count::Approximate(visible + delayed),
            in_flight: Count::Approximate(not_visible),
            dead: dead?,
            age: Duration::ZERO,
        })
    }

    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        dead::list(&self.dead_place()?, limit).await
    }

    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        dead::requeue(&self.dead_place()?).await
    }

    async fn requeue_dead_telling(
        &self,
        watch: &dyn forloop_core::RequeueWatch,
    ) -> Result<u64, QueueError> {
        dead::requeue_telling(&self.dead_place()?, Some(watch)).await
    }

    async fn requeue_dead_where(
        &self,
        select: &forloop_core::DeadSelect<'_>,
        watch: Option<&dyn forloop_core::RequeueWatch>,
    ) -> Result<forloop_core::Requeued, QueueError> {
        dead::requeue_where(&self.dead_place()?, select, watch).await
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        dead::purge(&self.dead_place()?).await
    }
}

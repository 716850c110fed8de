//! SQS's batch calls, each cut to ten entries (and, for sends, to the
//! queue's byte limit) and sent concurrently: send, receive, delete, change
//! visibility, and the queue's counts.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use forloop_core::kit::{chunks_within, each_chunk, whole_seconds};
use forloop_core::{MessageId, QueueError, QueueErrorKind};
use futures_util::future::join_all;

use crate::SqsAddress;
use crate::codec::{Outgoing, entry, wire_size};
use crate::error::{error, invalid};

/// Most messages in one SQS batch request.
pub const SQS_BATCH: usize = 10;
/// Most items in one driver publish or ack call (sent as concurrent tens).
pub const MAX_BATCH: usize = 100;

/// What one chunk's send did: the items that went in and their ids, the
/// items SQS refused and why, and the error that ended it early.
type ChunkSent = (
    Vec<(usize, MessageId)>,
    Vec<(usize, String)>,
    Option<QueueError>,
);

/// An outgoing message with its index in the caller's batch.
type Indexed = (usize, String, std::collections::BTreeMap<String, String>);

/// What the batch calls go through: a queue's client, its address (which
/// errors name) and its byte limit (which sends keep). Below the queue, so
/// the queue, its dead place and its ledger share these calls.
#[derive(Clone, Copy)]
pub(crate) struct BatchCalls<'a> {
    pub(crate) client: &'a Client,
    pub(crate) address: &'a SqsAddress,
    pub(crate) max_payload: usize,
}

impl<'a> BatchCalls<'a> {
    /// Send `messages` (already checked against the size limit) to `url`,
    /// in requests of at most 10 entries and `max_payload` bytes, all at once.
    pub(crate) async fn send_all(
        self,
        url: &str,
        messages: Vec<Outgoing>,
    ) -> Result<Vec<MessageId>, QueueError> {
        let indexed = messages
            .into_iter()
            .enumerate()
            .map(|(index, (body, attributes))| (index, body, attributes));
        let chunks = chunks_within(
            indexed,
            SQS_BATCH,
            self.max_payload,
            |(_, body, attributes)| wire_size(body, attributes),
        );
        let total: usize = chunks.iter().map(Vec::len).sum();
        let results = join_all(chunks.into_iter().map(|chunk| self.send_chunk(url, chunk))).await;
        let mut ids: Vec<Option<MessageId>> = vec![None; total];
        let mut refused = Vec::new();
        let mut failure = None;
        for (sent, bad, error) in results {
            for (index, id) in sent {
                ids[index] = Some(id);
            }
            refused.extend(bad);
            if error.is_some() {
                failure = error;
            }
        }
        if refused.is_empty() && failure.is_none() {
            return Ok(ids.into_iter().flatten().collect());
        }
        let went = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| id.is_some())
            .map(|(i, _)| i.to_string())
            .collect::<Vec<_>>();
        refused.sort_by_key(|(index, _)| *index);
        let refused_text = refused
            .iter()
            .map(|(index, why)| format!("item {index}: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        let went_text = if went.is_empty() {
            "none of this batch went in".to_string()
        } else {
            format!("items {} of this batch went in", went.join(", "))
        };
        let (kind, cause) = match failure {
            Some(e) if refused.is_empty() => (e.kind(), e.to_string()),
            Some(e) => (e.kind(), format!("{refused_text}; {e}")),
            None => (
                QueueErrorKind::Invalid,
                format!("SQS refused {refused_text}"),
            ),
        };
        Err(QueueError::new(
            kind,
            format!("publish to {:?}: {cause}; {went_text}", self.address),
        ))
    }

    /// One SendMessageBatch, with failed server-side entries tried again.
    /// Returns what went in, by batch index, what SQS refused, with why, and
    /// the error that ended it early: what went in before a failed retry
    /// round is still reported as in.
    async fn send_chunk(self, url: &str, chunk: Vec<Indexed>) -> ChunkSent {
        let mut sent = Vec::new();
        let mut refused = Vec::new();
        let error = self
            .send_rounds(url, chunk, &mut sent, &mut refused)
            .await
            .err();
        (sent, refused, error)
    }

    async fn send_rounds(
        self,
        url: &str,
        chunk: Vec<Indexed>,
        sent: &mut Vec<(usize, MessageId)>,
        refused: &mut Vec<(usize, String)>,
    ) -> Result<(), QueueError> {
        let mut pending = chunk;
        for round in 0..3u32 {
            if pending.is_empty() {
                break;
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            let entries = pending
                .iter()
                .map(|(index, body, attributes)| entry(*index, body.clone(), attributes.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error("publish", self.address, e))?;
            for ok in out.successful() {
                if let Ok(index) = ok.id().parse::<usize>() {
                    sent.push((index, Arc::from(ok.message_id())));
                }
            }
            let mut retry = Vec::new();
            for failed in out.failed() {
                let Ok(index) = failed.id().parse::<usize>() else {
                    continue;
                };
                let why = format!(
                    "{}: {}",
                    failed.code(),
                    failed.message().unwrap_or_default()
                );
                if failed.sender_fault() || round == 2 {
                    refused.push((index, why));
                } else {
                    retry.push(index);
                }
            }
            pending.retain(|(index, _, _)| retry.contains(index));
        }
        Ok(())
    }

    /// One ReceiveMessage of up to 10 from `url`.
    pub(crate) async fn receive(
        self,
        url: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, QueueError> {
        let wait_seconds = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(max.clamp(1, SQS_BATCH)).unwrap_or(10))
            .wait_time_seconds(wait_seconds)
            .visibility_timeout(whole_seconds(visibility).clamp(0, 43_200))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| error("receive", self.address, e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// DeleteMessageBatch in tens, all at once; returns the handles SQS
    /// called invalid.
    pub(crate) async fn delete_handles(
        self,
        url: &str,
        handles: &[String],
    ) -> Result<Vec<String>, QueueError> {
        each_chunk(handles, SQS_BATCH, |chunk| async move {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                        .map_err(|e| invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error("delete", self.address, e))?;
            let mut lost = Vec::new();
            let mut retry = Vec::new();
            for failed in out.failed() {
                let Some(handle) = failed.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                else {
                    continue;
                };
                if is_lost_lease(failed) {
                    lost.push(handle.clone());
                } else {
                    retry.push(handle.clone());
                }
            }
            for handle in retry {
                // One more try, alone; a second server fault is an error.
                self.client
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(&handle)
                    .send()
                    .await
                    .map_err(|e| error("delete", self.address, e))?;
            }
            Ok(lost)
        })
        .await
    }

    /// ChangeMessageVisibilityBatch in tens, all at once, each handle with
    /// its own timeout; returns the handles whose lease is gone.
    pub(crate) async fn change_visibility(
        self,
        url: &str,
        changes: &[(String, i32)],
    ) -> Result<Vec<String>, QueueError> {
        each_chunk(changes, SQS_BATCH, |chunk| async move {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, (handle, timeout))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(*timeout)
                        .build()
                        .map_err(|e| invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error("visibility change", self.address, e))?;
            let mut lost = Vec::new();
            for failed in out.failed() {
                let Some((handle, timeout)) =
                    failed.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                else {
                    continue;
                };
                if is_lost_lease(failed) {
                    lost.push(handle.clone());
                } else {
                    self.client
                        .change_message_visibility()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .visibility_timeout(*timeout)
                        .send()
                        .await
                        .map_err(|e| error("visibility change", self.address, e))?;
                }
            }
            Ok(lost)
        })
        .await
    }

    /// Visible, in-flight and delayed counts of the queue at `url`.
    pub(crate) async fn counts(self, url: &str) -> Result<(u64, u64, u64), QueueError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| error("queue attributes", self.address, e))?;
        let get = |name: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }
}

/// Failed batch entries SQS will not take however often they are sent.
fn is_lost_lease(entry: &BatchResultErrorEntry) -> bool {
    matches!(
        entry.code(),
        "ReceiptHandleIsInvalid" | "MessageNotInflight" | "InvalidParameterValue"
    ) || entry
        .code()
        .starts_with("AWS.SimpleQueueService.MessageNotInflight")
}

//! Pub/Sub's calls on a subscription: a bounded unary pull, and
//! acknowledge and modify-ack-deadline cut to the per-request limit.

use std::time::Duration;

use forloop_core::QueueError;
use forloop_core::kit::each_chunk;
use gcloud_gax::grpc::{Code, Request};
use gcloud_googleapis::pubsub::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, PullRequest, ReceivedMessage,
};

use crate::PubsubQueue;
use crate::queue::MAX_BATCH;

impl PubsubQueue {
    /// A unary pull the server ends after `wait` (never cancelled here).
    pub(crate) async fn pull_raw(
        &self,
        subscription: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let mut request = Request::new(PullRequest {
            subscription: subscription.to_string(),
            max_messages: i32::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1000),
            ..PullRequest::default()
        });
        request.set_timeout(wait.max(Duration::from_millis(100)));
        if let Ok(value) = format!("subscription={subscription}").parse() {
            request
                .metadata_mut()
                .insert("x-goog-request-params", value);
        }
        match self.raw.clone().pull(request).await {
            Ok(response) => Ok(response.into_inner().received_messages),
            // The server's way of saying "nothing came within the wait".
            Err(status) if status.code() == Code::DeadlineExceeded => Ok(Vec::new()),
            Err(status) => Err(self.fail("pull", status)),
        }
    }

    /// Set the ack deadline of `ack_ids` on `subscription` to `seconds` from now.
    pub(crate) async fn modify(
        &self,
        subscription: &str,
        ack_ids: Vec<String>,
        seconds: i32,
    ) -> Result<(), QueueError> {
        each_chunk(&ack_ids, MAX_BATCH, |chunk| async move {
            let request = ModifyAckDeadlineRequest {
                subscription: subscription.to_string(),
                ack_ids: chunk.to_vec(),
                ack_deadline_seconds: seconds,
            };
            let client = self.subscription.get_client();
            client
                .modify_ack_deadline(request, None)
                .await
                .map_err(|s| self.fail("modify ack deadline", s))?;
            Ok(Vec::<()>::new())
        })
        .await?;
        Ok(())
    }

    /// Settle `ack_ids` on `subscription` for good.
    pub(crate) async fn acknowledge(
        &self,
        subscription: &str,
        ack_ids: Vec<String>,
    ) -> Result<(), QueueError> {
        each_chunk(&ack_ids, MAX_BATCH, |chunk| async move {
            let request = AcknowledgeRequest {
                subscription: subscription.to_string(),
                ack_ids: chunk.to_vec(),
            };
            let client = self.subscription.get_client();
            client
                .acknowledge(request, None)
                .await
                .map_err(|s| self.fail("ack", s))?;
            Ok(Vec::<()>::new())
        })
        .await?;
        Ok(())
    }
}

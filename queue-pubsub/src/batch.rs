//! Pub/Sub's calls on a subscription: a bounded unary pull, and
//! acknowledge and modify-ack-deadline cut to the per-request limit.

use std::time::Duration;

use forloop_core::QueueError;
use forloop_core::kit::each_chunk;
use gcloud_gax::grpc::{Code, Request};
use gcloud_googleapis::pubsub::v1::{
    AcknowledgeRequest, ModifyAckDeadlineRequest, PullRequest, ReceivedMessage,
};

use gcloud_gax::conn::Channel;
use gcloud_gax::grpc::Status;
use gcloud_googleapis::pubsub::v1::subscriber_client::SubscriberClient as RawSubscriber;
use gcloud_pubsub::subscription::Subscription;
use tokio::time::Instant;

use crate::PubsubAddress;
use crate::codec::MAX_BATCH;
use crate::error::error;

/// A unary pull of up to `max` from `subscription` that ends after `wait`
/// with what came, or nothing. The deadline travels to the server as
/// `grpc-timeout`, and tonic enforces the same deadline on the client: when
/// its timer fires before the server's empty answer arrives, the call ends
/// `Cancelled` ("Timeout expired"). Both mean "nothing came within the
/// wait", so both are an empty pull; a `Cancelled` before the wait is up is
/// a failure.
pub(crate) async fn bounded_pull(
    mut raw: RawSubscriber<Channel>,
    subscription: &str,
    max: usize,
    wait: Duration,
) -> Result<Vec<ReceivedMessage>, Status> {
    let wait = wait.max(Duration::from_millis(100));
    let mut request = Request::new(PullRequest {
        subscription: subscription.to_string(),
        max_messages: i32::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1000),
        ..PullRequest::default()
    });
    request.set_timeout(wait);
    if let Ok(value) = format!("subscription={subscription}").parse() {
        request
            .metadata_mut()
            .insert("x-goog-request-params", value);
    }
    let sent = Instant::now();
    match raw.pull(request).await {
        Ok(response) => Ok(response.into_inner().received_messages),
        // The server's way of saying "nothing came within the wait".
        Err(status) if status.code() == Code::DeadlineExceeded => Ok(Vec::new()),
        // The client's timer won the race against that answer.
        Err(status) if status.code() == Code::Cancelled && sent.elapsed() >= wait => {
            tracing::debug!("pull ended by the client's deadline: {}", status.message());
            Ok(Vec::new())
        }
        Err(status) => Err(status),
    }
}

/// What the subscription calls go through: the raw channel for bounded
/// pulls, the client of a subscription for acks and modacks, and the
/// address errors name. Below the queue, so the queue and its dead place
/// share these calls.
#[derive(Clone, Copy)]
pub(crate) struct SubscriberCalls<'a> {
    pub(crate) address: &'a PubsubAddress,
    pub(crate) raw: &'a RawSubscriber<Channel>,
    pub(crate) subscription: &'a Subscription,
}

impl SubscriberCalls<'_> {
    /// A failed call `what`.
    fn fail(self, what: &str, status: Status) -> QueueError {
        error(what, self.address, status)
    }

    /// A unary pull the server ends after `wait` (never cancelled here).
    pub(crate) async fn pull_raw(
        self,
        subscription: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        bounded_pull(self.raw.clone(), subscription, max, wait)
            .await
            .map_err(|status| self.fail("pull", status))
    }

    /// Set the ack deadline of `ack_ids` on `subscription` to `seconds` from now.
    pub(crate) async fn modify(
        self,
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
        self,
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::client::connect_all;

    /// A server that accepts connections and never says a word.
    fn silent_server() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let host = listener.local_addr().expect("its address").to_string();
        (listener, host)
    }

    #[tokio::test]
    async fn a_pull_the_server_never_answers_is_empty_after_the_wait() {
        let (listener, host) = silent_server();
        let accepted = std::thread::spawn(move || {
            // Hold the connections open, silent, until the test ends.
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept() {
                held.push(stream);
                if held.len() >= 4 {
                    break;
                }
            }
            held
        });
        let address = PubsubAddress::resolve(Some("pubsub://silent/queue"), "")
            .expect("address")
            .with_emulator(host);
        let (_, raw) = tokio::time::timeout(Duration::from_secs(5), connect_all(&address))
            .await
            .expect("connecting waits on no answer")
            .expect("connect");
        let wait = Duration::from_millis(500);
        let started = std::time::Instant::now();
        let pulled = tokio::time::timeout(
            Duration::from_secs(5),
            bounded_pull(raw, "projects/silent/subscriptions/queue-workers", 10, wait),
        )
        .await
        .expect("the pull ends by its own deadline");
        assert!(
            started.elapsed() >= wait,
            "ended early: {:?}",
            started.elapsed()
        );
        let pulled = pulled.expect("a pull that timed out on the client is empty, not a failure");
        assert!(pulled.is_empty());
        drop(accepted);
    }
}

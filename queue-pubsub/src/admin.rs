//! Making and deleting a queue's topics and subscriptions (`runner queue
//! create`, `runner queue delete`).

use forloop_core::kit::whole_seconds;
use forloop_core::{QueueConfig, QueueError};
use std::time::Duration;

use gcloud_gax::grpc::Status;
use gcloud_googleapis::pubsub::v1::DeadLetterPolicy;
use gcloud_pubsub::client::Client;
use gcloud_pubsub::subscription::{Subscription, SubscriptionConfig, SubscriptionConfigToUpdate};

use crate::client::connect_all;
use crate::error::error;
use crate::ledger::create_siblings;
use crate::{PubsubAddress, PubsubQueue};

/// How long a subscription `queue create` makes keeps unacked messages:
/// 31 days, Pub/Sub's longest (the default, 7 days, lost the items of a
/// job that ran longer). Topic retention is left unset: it keeps every
/// message, acked or not, and is billed for, and only a seek needs it.
pub(crate) const RETENTION: Duration = Duration::from_secs(31 * 24 * 3600);

/// What a server that refuses [`RETENTION`] gets: 7 days, the longest
/// the Pub/Sub emulator takes (it answers "message_retention_duration out
/// of bounds" to more) and GCP's default.
pub(crate) const RETENTION_FALLBACK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether `status` refuses a subscription's retention as too long.
pub(crate) fn retention_refused(status: &Status) -> bool {
    status.message().contains("message_retention_duration")
}

/// Create subscription `name` on `topic` with `config` and the longest
/// retention the server takes ([`RETENTION`], else [`RETENTION_FALLBACK`]).
pub(crate) async fn create_subscription(
    client: &Client,
    name: &str,
    topic: &str,
    mut config: SubscriptionConfig,
) -> Result<(), Status> {
    config.message_retention_duration = Some(RETENTION);
    match client
        .create_subscription(name, topic, config.clone(), None)
        .await
    {
        Err(status) if retention_refused(&status) => {
            config.message_retention_duration = Some(RETENTION_FALLBACK);
            client
                .create_subscription(name, topic, config, None)
                .await?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

/// Give an existing `subscription` the longest retention the server takes
/// where it keeps messages for less (a queue made by an earlier release,
/// or by hand).
pub(crate) async fn ensure_retention(subscription: &Subscription) -> Result<(), Status> {
    let (_, config) = subscription.config(None).await?;
    let kept = config.message_retention_duration.unwrap_or_default();
    for longest in [RETENTION, RETENTION_FALLBACK] {
        if kept >= longest {
            return Ok(());
        }
        let update = SubscriptionConfigToUpdate {
            message_retention_duration: Some(longest),
            ..SubscriptionConfigToUpdate::default()
        };
        match subscription.update(update, None).await {
            Err(status) if retention_refused(&status) => continue,
            other => {
                other?;
                return Ok(());
            }
        }
    }
    Ok(())
}

impl PubsubQueue {
    /// Create the queue's topics and subscriptions where missing, and the
    /// job ledger's siblings (`NAME-ledger`, `NAME-results`, each a topic
    /// and a subscription with no dead-letter policy). The
    /// subscription's ack deadline is `config.lease` (10 to 600 s) and its
    /// dead-letter policy forwards after `config.max_attempts` deliveries
    /// (clamped to Pub/Sub's 5 to 100). Every subscription keeps unacked
    /// messages 31 days (Pub/Sub's longest; 7 on the
    /// emulator, which takes no more; an existing one with less gets it).
    /// On GCP, the Pub/Sub service agent
    /// needs publisher rights on `NAME-dead` and subscriber rights on
    /// `NAME-workers` for forwarding to work.
    pub async fn create(address: &PubsubAddress, config: &QueueConfig) -> Result<(), QueueError> {
        let (client, _) = connect_all(address).await?;
        let fail = |what: &str, status: Status| error(what, address, status);
        for topic in [address.topic(), address.dead_topic()] {
            let handle = client.topic(&topic);
            if !handle
                .exists(None)
                .await
                .map_err(|s| fail("topic lookup", s))?
            {
                client
                    .create_topic(&topic, None, None)
                    .await
                    .map_err(|s| fail("topic creation", s))?;
            }
        }
        let dead_topic = client.topic(&address.dead_topic());
        let subscriptions = [
            (
                address.subscription(),
                address.topic(),
                SubscriptionConfig {
                    ack_deadline_seconds: whole_seconds(config.lease).clamp(10, 600),
                    dead_letter_policy: Some(DeadLetterPolicy {
                        dead_letter_topic: dead_topic.fully_qualified_name().to_string(),
                        max_delivery_attempts: i32::try_from(config.max_attempts)
                            .unwrap_or(100)
                            .clamp(5, 100),
                    }),
                    ..SubscriptionConfig::default()
                },
            ),
            (
                address.dead_subscription(),
                address.dead_topic(),
                SubscriptionConfig {
                    ack_deadline_seconds: 60,
                    ..SubscriptionConfig::default()
                },
            ),
        ];
        for (name, topic, sub_config) in subscriptions {
            let handle = client.subscription(&name);
            if handle
                .exists(None)
                .await
                .map_err(|s| fail("subscription lookup", s))?
            {
                ensure_retention(&handle)
                    .await
                    .map_err(|s| fail("subscription update", s))?;
            } else {
                create_subscription(&client, &name, &topic, sub_config)
                    .await
                    .map_err(|s| fail("subscription creation", s))?;
            }
        }
        create_siblings(&client, address).await
    }

    /// Delete the queue's subscriptions and topics, the ledger's siblings
    /// too (items included).
    pub async fn delete(address: &PubsubAddress) -> Result<(), QueueError> {
        let (client, _) = connect_all(address).await?;
        let [books, results] = address.ledger_siblings();
        for name in [
            address.subscription(),
            address.dead_subscription(),
            books.subscription(),
            results.subscription(),
        ] {
            let handle = client.subscription(&name);
            if handle
                .exists(None)
                .await
                .map_err(|s| error("lookup", address, s))?
            {
                handle
                    .delete(None)
                    .await
                    .map_err(|s| error("subscription deletion", address, s))?;
            }
        }
        for name in [
            address.topic(),
            address.dead_topic(),
            books.topic(),
            results.topic(),
        ] {
            let handle = client.topic(&name);
            if handle
                .exists(None)
                .await
                .map_err(|s| error("lookup", address, s))?
            {
                handle
                    .delete(None)
                    .await
                    .map_err(|s| error("topic deletion", address, s))?;
            }
        }
        Ok(())
    }
}

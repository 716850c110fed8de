//! Making and deleting a queue's SQS queues (`runner queue create`,
//! `runner queue delete`): `NAME`, `NAME-dead` and the job ledger's
//! siblings `NAME-ledger` and `NAME-results`.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use forloop_core::kit::whole_seconds;
use forloop_core::{QueueConfig, QueueError, QueueErrorKind};

use crate::client::{client, queue_url};
use crate::error::error;
use crate::{SqsAddress, SqsQueue};

const RETENTION_SECONDS: &str = "1209600"; // 14 days, SQS's longest

/// SQS's longest queue name.
const MAX_NAME: usize = 80;

impl SqsQueue {
    /// Create `NAME-dead`, `NAME` and the job ledger's siblings
    /// `NAME-ledger` and `NAME-results` (no redrive: a sheet is never
    /// buried) where missing (or update their attributes where present): `NAME`'s visibility timeout is
    /// `config.lease` and its redrive policy moves an item to `NAME-dead`
    /// after `config.max_attempts` receives (SQS allows 1 to 1,000). Both
    /// keep messages 14 days, SQS's longest.
    pub async fn create(address: &SqsAddress, config: &QueueConfig) -> Result<(), QueueError> {
        Self::create_with_client(&client(address).await?, address, config).await
    }

    /// [`SqsQueue::create`] with a client of the caller's.
    pub async fn create_with_client(
        client: &Client,
        address: &SqsAddress,
        config: &QueueConfig,
    ) -> Result<(), QueueError> {
        let dead_url = ensure_queue(client, address, &address.dead_name(), Vec::new()).await?;
        let arn = client
            .get_queue_attributes()
            .queue_url(&dead_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| error("dead queue lookup", address, e))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| {
                QueueError::new(
                    QueueErrorKind::Other,
                    format!("SQS did not say the ARN of `{}`", address.dead_name()),
                )
            })?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": config.max_attempts.clamp(1, 1000).to_string(),
        })
        .to_string();
        let attributes = vec![
            (
                QueueAttributeName::VisibilityTimeout,
                whole_seconds(config.lease).clamp(0, 43_200).to_string(),
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ];
        ensure_queue(client, address, &address.name, attributes).await?;
        create_siblings(client, address).await
    }

    /// Delete `NAME`, `NAME-dead` and the ledger's `NAME-ledger` and
    /// `NAME-results`, items included. (AWS lets a deleted
    /// name be made again only after 60 s.)
    pub async fn delete(address: &SqsAddress) -> Result<(), QueueError> {
        Self::delete_with_client(&client(address).await?, address).await
    }

    /// [`SqsQueue::delete`] with a client of the caller's.
    pub async fn delete_with_client(
        client: &Client,
        address: &SqsAddress,
    ) -> Result<(), QueueError> {
        let [books, results] = address.ledger_names();
        for name in [address.name.clone(), address.dead_name(), books, results] {
            if let Some(url) = queue_url(client, address, &name).await? {
                client
                    .delete_queue()
                    .queue_url(url)
                    .send()
                    .await
                    .map_err(|e| error("queue deletion", address, e))?;
            }
        }
        Ok(())
    }
}

/// Make the siblings where missing; a name too long for them keeps no ledger.
async fn create_siblings(client: &Client, address: &SqsAddress) -> Result<(), QueueError> {
    let names = address.ledger_names();
    if names.iter().any(|name| name.len() > MAX_NAME) {
        tracing::warn!(
            "SQS queue `{}` gets no job ledger: `{}` would be longer than SQS's {MAX_NAME} characters",
            address.name,
            names[1]
        );
        return Ok(());
    }
    for name in names {
        ensure_queue(client, address, &name, Vec::new()).await?;
    }
    Ok(())
}

/// Make the queue `name` with `attributes`, or set them on it if it exists
/// with others; returns its URL.
async fn ensure_queue(
    client: &Client,
    address: &SqsAddress,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<String, QueueError> {
    let mut all = vec![(
        QueueAttributeName::MessageRetentionPeriod,
        RETENTION_SECONDS.to_string(),
    )];
    all.extend(attributes);
    let mut create = client.create_queue().queue_name(name);
    for (key, value) in &all {
        create = create.attributes(key.clone(), value.clone());
    }
    match create.send().await {
        Ok(out) => out.queue_url().map(str::to_string).ok_or_else(|| {
            QueueError::new(
                QueueErrorKind::Other,
                format!("SQS did not say the URL of `{name}`"),
            )
        }),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_name_exists()) =>
        {
            let url = queue_url(client, address, name).await?.ok_or_else(|| {
                QueueError::new(
                    QueueErrorKind::Other,
                    format!("`{name}` exists and does not"),
                )
            })?;
            let mut set = client.set_queue_attributes().queue_url(&url);
            for (key, value) in all {
                set = set.attributes(key, value);
            }
            set.send()
                .await
                .map_err(|e| error("queue update", address, e))?;
            Ok(url)
        }
        Err(e) => Err(error("queue creation", address, e)),
    }
}

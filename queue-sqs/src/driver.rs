//! The plug the runner registers: `--queue sqs` (queue from `--name`),
//! `--queue sqs://NAME` or `--queue https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`;
//! credentials and region from the standard AWS chain, `AWS_ENDPOINT_URL_SQS`
//! for an emulator. Create the queue first with `runner queue create`.

use async_trait::async_trait;
use forloop_core::{
    Backend, Driver, QueueAddress, QueueConfig, QueueError, QueueErrorKind, ScaleTrigger,
};

use crate::{SqsAddress, SqsQueue};

/// Opens SQS queues.
#[derive(Debug, Default, Clone, Copy)]
pub struct SqsDriver;

#[async_trait]
impl Driver for SqsDriver {
    fn name(&self) -> &str {
        "sqs"
    }

    /// `sqs://NAME`, and `https://` URLs on an SQS host only
    /// (`sqs.REGION.amazonaws.com`, the legacy `REGION.queue.amazonaws.com`).
    fn claims(&self, address: &QueueAddress) -> bool {
        match address.scheme() {
            Some("sqs") => true,
            Some("https") => address
                .url
                .as_deref()
                .and_then(|url| url::Url::parse(url).ok())
                .and_then(|url| url.host_str().map(SqsAddress::is_sqs_host))
                .unwrap_or(false),
            _ => false,
        }
    }

    /// The URL's queue: `--name` defaults to it.
    fn queue_name(&self, address: &QueueAddress) -> Option<String> {
        let url = address.url.as_deref()?;
        SqsAddress::resolve(Some(url), "forloop")
            .ok()
            .map(|a| a.name)
    }

    fn environment(&self) -> &[&str] {
        &["AWS_REGION", "AWS_DEFAULT_REGION"]
    }

    async fn open(
        &self,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Backend, QueueError> {
        let address = SqsAddress::resolve(address.url.as_deref(), &config.name)?;
        Ok(SqsQueue::connect(address, &config).await?.into_backend())
    }

    async fn create(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let address = SqsAddress::resolve(address.url.as_deref(), &config.name)?;
        SqsQueue::create(&address, config).await?;
        Ok(true)
    }

    async fn delete(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let address = SqsAddress::resolve(address.url.as_deref(), &config.name)?;
        SqsQueue::delete(&address).await?;
        Ok(true)
    }

    /// KEDA's `aws-sqs-queue` scaler; it needs the queue URL and region,
    /// so the address must be a queue URL.
    async fn scale_trigger(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<ScaleTrigger, QueueError> {
        let resolved = SqsAddress::resolve(address.url.as_deref(), &config.name)?;
        match (resolved.url, resolved.region) {
            (Some(queue_url), Some(region)) => Ok(ScaleTrigger::new("aws-sqs-queue")
                .with("queueURL", queue_url)
                .with("awsRegion", region)
                .with("queueLength", "10")
                .with("identityOwner", "operator")),
            _ => Err(QueueError::new(
                QueueErrorKind::Invalid,
                format!(
                    "--keda on SQS needs the queue's URL: --queue https://sqs.REGION.amazonaws.com/ACCOUNT/{}",
                    resolved.name
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_sqs_hosts_not_the_https_scheme() {
        for (spec, claimed) in [
            ("sqs://jobs", true),
            ("https://sqs.eu-west-1.amazonaws.com/1/q", true),
            ("https://eu-west-1.queue.amazonaws.com/1/q", true),
            ("https://example.com/1/q", false),
            ("redis://h", false),
        ] {
            assert_eq!(
                SqsDriver.claims(&QueueAddress::parse(spec)),
                claimed,
                "{spec}"
            );
        }
    }

    #[tokio::test]
    async fn keda_needs_the_queue_url_and_gets_its_region() {
        let config = QueueConfig::new("q");
        let trigger = SqsDriver
            .scale_trigger(
                &QueueAddress::parse("https://sqs.eu-west-1.amazonaws.com/1/q"),
                &config,
            )
            .await
            .unwrap();
        assert_eq!(trigger.scaler, "aws-sqs-queue");
        assert_eq!(
            trigger.metadata["queueURL"],
            "https://sqs.eu-west-1.amazonaws.com/1/q"
        );
        assert_eq!(trigger.metadata["awsRegion"], "eu-west-1");
        let error = SqsDriver
            .scale_trigger(&QueueAddress::parse("sqs://q"), &config)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("queue's URL"), "{error}");
    }
}

//! The plug the runner registers: `--queue pubsub` (project from
//! `GOOGLE_CLOUD_PROJECT`, queue from `--name`) or
//! `--queue pubsub://PROJECT/NAME`; `PUBSUB_EMULATOR_HOST` selects the
//! emulator. Create the queue first with `runner queue create`.

use async_trait::async_trait;
use forloop_core::{Backend, Driver, QueueAddress, QueueConfig, QueueError, ScaleTrigger};

use crate::{PubsubAddress, PubsubQueue};

/// Opens Pub/Sub queues.
#[derive(Debug, Default, Clone, Copy)]
pub struct PubsubDriver;

#[async_trait]
impl Driver for PubsubDriver {
    fn name(&self) -> &str {
        "pubsub"
    }

    fn claims(&self, address: &QueueAddress) -> bool {
        address.scheme() == Some("pubsub")
    }

    fn backlog_source(&self) -> Option<&str> {
        Some("Cloud Monitoring's num_undelivered_messages, which counts leased items as ready")
    }

    /// The URL's queue: `--name` defaults to it.
    fn queue_name(&self, address: &QueueAddress) -> Option<String> {
        let url = address.url.as_deref()?;
        PubsubAddress::resolve(Some(url), "forloop")
            .ok()
            .map(|a| a.name)
    }

    fn environment(&self) -> &[&str] {
        &["GOOGLE_CLOUD_PROJECT"]
    }

    async fn open(
        &self,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Backend, QueueError> {
        let address = PubsubAddress::resolve(address.url.as_deref(), &config.name)?;
        Ok(PubsubQueue::connect(address).await?.into_backend())
    }

    async fn create(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let address = PubsubAddress::resolve(address.url.as_deref(), &config.name)?;
        PubsubQueue::create(&address, config).await?;
        Ok(true)
    }

    async fn delete(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let address = PubsubAddress::resolve(address.url.as_deref(), &config.name)?;
        PubsubQueue::delete(&address).await?;
        Ok(true)
    }

    /// KEDA deprecated its `gcp-pubsub` scaler: this is the `prometheus`
    /// scaler on Cloud Monitoring's PromQL endpoint, authenticated by the
    /// pod's Workload Identity.
    async fn scale_trigger(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<ScaleTrigger, QueueError> {
        let address = PubsubAddress::resolve(address.url.as_deref(), &config.name)?;
        Ok(ScaleTrigger::new("prometheus")
            .with(
                "serverAddress",
                format!(
                    "https://monitoring.googleapis.com/v1/projects/{}/location/global/prometheus",
                    address.project
                ),
            )
            .with(
                "query",
                format!(
                    "sum(pubsub_googleapis_com:subscription_num_undelivered_messages{{monitored_resource=\"pubsub_subscription\",subscription_id=\"{}\"}})",
                    address.subscription()
                ),
            )
            .with("threshold", "10")
            .with_pod_identity("gcp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keda_asks_monitoring_about_the_workers_subscription() {
        let trigger = PubsubDriver
            .scale_trigger(
                &QueueAddress::parse("pubsub://proj/ids"),
                &QueueConfig::new("videos"),
            )
            .await
            .unwrap();
        assert_eq!(trigger.scaler, "prometheus");
        assert!(trigger.metadata["serverAddress"].contains("/projects/proj/"));
        assert!(trigger.metadata["query"].contains("subscription_id=\"ids-workers\""));
        assert_eq!(trigger.pod_identity.as_deref(), Some("gcp"));
    }
}

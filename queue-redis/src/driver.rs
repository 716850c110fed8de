//! The plug the runner registers: `--queue redis` (server from `REDIS_URL`,
//! else localhost:6379) or `--queue redis://[:password@]host:port[/db]`
//! (`rediss://` for TLS).

use async_trait::async_trait;
use forloop_core::{Backend, Driver, QueueAddress, QueueConfig, QueueError, ScaleTrigger};

use crate::RedisQueue;
use crate::keys::{self, server_url};

/// Opens Redis queues.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedisDriver;

#[async_trait]
impl Driver for RedisDriver {
    fn name(&self) -> &str {
        "redis"
    }

    fn claims(&self, address: &QueueAddress) -> bool {
        matches!(address.scheme(), Some("redis" | "rediss"))
    }

    fn environment(&self) -> &[&str] {
        &["REDIS_URL"]
    }

    async fn open(
        &self,
        address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Backend, QueueError> {
        let url = server_url(address.url.as_deref());
        Ok(RedisQueue::connect(&url, config).await?.into_backend())
    }

    /// Every key of the queue, in one `UNLINK`.
    async fn delete(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<bool, QueueError> {
        let url = server_url(address.url.as_deref());
        RedisQueue::connect(&url, config.clone())
            .await?
            .delete()
            .await
    }

    /// KEDA's `redis` scaler on the ready list.
    async fn scale_trigger(
        &self,
        address: &QueueAddress,
        config: &QueueConfig,
    ) -> Result<ScaleTrigger, QueueError> {
        // As the pods see it: the URL's server, else the in-cluster `redis`.
        let host = address
            .url
            .as_deref()
            .and_then(|url| url::Url::parse(url).ok())
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(6379))))
            .unwrap_or_else(|| "redis:6379".to_string());
        Ok(ScaleTrigger::new("redis")
            .with("address", host)
            .with("listName", keys::ready(&config.name))
            .with("listLength", "10"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keda_reads_the_ready_list_on_the_urls_server() {
        let trigger = RedisDriver
            .scale_trigger(
                &QueueAddress::parse("redis://:pw@redis.default.svc:6379/0"),
                &QueueConfig::new("videos"),
            )
            .await
            .unwrap();
        assert_eq!(trigger.scaler, "redis");
        assert_eq!(trigger.metadata["address"], "redis.default.svc:6379");
        assert_eq!(trigger.metadata["listName"], "{forloop:videos}:ready");
        assert_eq!(trigger.pod_identity, None);
    }
}

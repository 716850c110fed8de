//! [`MemoryDriver`]: the memory queue as a plug, `--queue memory`.

use async_trait::async_trait;

use super::MemoryQueue;
use crate::job::Backend;
use crate::{Driver, QueueAddress, QueueConfig, QueueError};

/// The embedded in-memory queue: `--queue memory`, the default for `run`.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryDriver;

#[async_trait]
impl Driver for MemoryDriver {
    fn name(&self) -> &str {
        "memory"
    }
    fn claims(&self, address: &QueueAddress) -> bool {
        address.scheme() == Some("memory")
    }
    fn in_process(&self) -> bool {
        true
    }
    async fn open(
        &self,
        _address: &QueueAddress,
        config: QueueConfig,
    ) -> Result<Backend, QueueError> {
        Ok(MemoryQueue::new(config).backend())
    }
}

//! [`MemoryDriver`]: the memory queue as a plug, `--queue memory`.

use std::sync::Arc;

use async_trait::async_trait;

use super::MemoryQueue;
use crate::{Driver, QueueAddress, QueueConfig, QueueError, WorkQueue};

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
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        Ok(Arc::new(MemoryQueue::new(config)))
    }
}

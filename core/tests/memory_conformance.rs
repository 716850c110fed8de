//! The memory queue keeps the delivery contract, on a paused clock.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::conformance::Harness;
use forloop_core::{MemoryQueue, WorkQueue};

fn harness() -> Harness {
    Harness::new(|config| async move {
        Arc::new(MemoryQueue::with_max_payload(config, 4096)) as Arc<dyn WorkQueue>
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(10))
}

forloop_core::conformance_tests!(harness, #[tokio::test(start_paused = true)]);

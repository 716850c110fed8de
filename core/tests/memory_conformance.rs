//! The memory queue keeps the delivery contract, on a paused clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forloop_core::MemoryQueue;
use forloop_core::conformance::Harness;

/// Queues by name, so that opening a name twice reaches one queue, as two
/// processes of one job reach one server-side queue. The first opener's
/// config is the queue's.
fn harness() -> Harness {
    let queues: Arc<Mutex<HashMap<String, MemoryQueue>>> = Arc::default();
    Harness::new(move |config| {
        let queue = queues
            .lock()
            .unwrap()
            .entry(config.name.clone())
            .or_insert_with(|| MemoryQueue::with_max_payload(config, 4096).with_done_receipts())
            .clone();
        async move { queue.backend() }
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(10))
}

forloop_core::conformance_tests!(harness, #[tokio::test(start_paused = true)]);
forloop_core::ledger_conformance_tests!(harness, #[tokio::test(start_paused = true)]);

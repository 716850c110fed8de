//! The Redis driver keeps the delivery contract, on a real redis-server.

use std::time::Duration;

use forloop_core::conformance::Harness;
use forloop_queue_redis::RedisQueue;
use forloop_testkit::servers::RedisServer;

fn harness() -> Harness {
    let url = RedisServer::shared().url().to_string();
    Harness::new(move |config| {
        let url = url.clone();
        async move {
            RedisQueue::connect(&url, config)
                .await
                .expect("connect to redis")
                .into_backend()
        }
    })
    .lease(Duration::from_secs(2))
    .slack(Duration::from_millis(300))
}

forloop_core::conformance_tests!(harness);
forloop_core::ledger_conformance_tests!(harness);

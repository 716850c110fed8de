//! The Pub/Sub driver keeps the delivery contract, on the official emulator.
//!
//! The emulator's smallest ack deadline is 10 s and it checks deadlines about
//! once a second, hence the long lease and the 1.5 s slack. Its backlog is
//! unknown (no monitoring API), so the backlog clauses see unknown counts and
//! check only what they can.

use std::time::Duration;

use forloop_core::conformance::Harness;
use forloop_queue_pubsub::{PubsubAddress, PubsubQueue};
use forloop_testkit::servers::PubsubEmulator;

fn harness() -> Harness {
    let host = PubsubEmulator::shared().host().to_string();
    Harness::new(move |config| {
        let host = host.clone();
        async move {
            let address =
                PubsubAddress::resolve(Some(&format!("pubsub://conformance/{}", config.name)), "")
                    .expect("address")
                    .with_emulator(host);
            PubsubQueue::create(&address, &config)
                .await
                .expect("create the queue");
            PubsubQueue::connect(address)
                .await
                .expect("connect")
                .into_backend()
        }
    })
    .lease(Duration::from_secs(10))
    .slack(Duration::from_millis(1500))
    .stale_calls_unreported(
        "Pub/Sub answers modack and ack of an expired ack id with success and changes nothing",
    )
    // The dead-letter policy takes 5 to 100 attempts.
    .least_attempts(5)
}

forloop_core::conformance_tests!(harness);

mod ledger {
    use super::harness;

    forloop_core::ledger_conformance_tests!(harness);

    /// Not a clause: what the ledger asks of this backend in a run of 400
    /// items on 4 workers, ack batches of 10, then 5 idle reads each (the
    /// numbers in docs/design/job-ledger.md).
    #[tokio::test]
    #[ignore = "a measurement: run with --ignored --nocapture"]
    async fn ledger_cost() {
        let cost = forloop_core::job::conformance::ledger_cost(&harness(), 400, 4, 10, 5).await;
        println!("{cost:#?}");
    }
}

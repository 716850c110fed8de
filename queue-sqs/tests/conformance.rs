//! The SQS driver keeps the delivery contract, on the fauxqs emulator.
//!
//! Leases are whole seconds on SQS, and fauxqs moves expired messages back
//! when a receive (or a long poll's 20 ms timer) looks, hence the 1 s slack.
//! The lease is 5 s so that eight pullers can take 200 items and end on an
//! empty 2 s long poll within one lease. fauxqs counts from its own store on
//! every call, so the staleness window is zero here; on AWS it is 60 s.
//! Every clause applies: fauxqs keeps receipt handles per receive (a stale
//! one deletes nothing, as on AWS) and runs the redrive policy.

use std::time::Duration;

use aws_sdk_sqs::config::{Credentials, Region};
use forloop_core::conformance::Harness;
use forloop_queue_sqs::{SqsAddress, SqsQueue};
use forloop_testkit::servers::SqsEmulator;

fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version_latest()
        .endpoint_url(endpoint)
        .region(Region::new(SqsEmulator::REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "conformance"))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

fn harness() -> Harness {
    let endpoint = SqsEmulator::shared().endpoint().to_string();
    Harness::new(move |config| {
        let client = client(&endpoint);
        async move {
            let mut address = SqsAddress::resolve(None, &config.name).expect("address");
            address.staleness = Duration::ZERO;
            // A second client of the same queue (another max-attempts) finds
            // it made: SQS keeps max-attempts with the queue, as its redrive.
            if let Err(error) = SqsQueue::create_with_client(&client, &address, &config).await {
                assert!(
                    error.to_string().contains("QueueNameExists"),
                    "create the queue: {error:?}"
                );
            }
            SqsQueue::with_client(address, client, &config)
                .await
                .expect("connect")
                .into_backend()
        }
    })
    .lease(Duration::from_secs(5))
    .slack(Duration::from_secs(1))
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

//! The SQS driver under the faults of issue 11, on the fauxqs emulator: a
//! dead letter needs a live lease and lands once, a hand-back costs no
//! attempt, a queue without a redrive policy is refused, and a worker that
//! goes away leaves no receive behind to swallow the next item.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::MessageAttributeValue;
use forloop_core::kit::{ID_ATTRIBUTE, REASON_ATTRIBUTE};
use forloop_core::{Count, Item, QueueConfig, WorkQueue};
use forloop_queue_sqs::{SqsAddress, SqsQueue};
use forloop_testkit::servers::SqsEmulator;

fn client() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version_latest()
        .endpoint_url(SqsEmulator::shared().endpoint())
        .region(Region::new(SqsEmulator::REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "faults"))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

fn fresh_name(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "faults-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn address(name: &str) -> SqsAddress {
    let mut address = SqsAddress::resolve(None, name).expect("address");
    address.staleness = Duration::ZERO;
    address
}

/// A fresh queue made by `create`, and a second client of it (another worker).
async fn queue_pair(what: &str, config: QueueConfig) -> (SqsQueue, SqsQueue) {
    let config = QueueConfig::new(fresh_name(what))
        .with_lease(config.lease)
        .with_max_attempts(config.max_attempts);
    let address = address(&config.name);
    SqsQueue::create_with_client(&client(), &address, &config)
        .await
        .expect("create the queue");
    let one = SqsQueue::with_client(address.clone(), client(), &config)
        .await
        .expect("connect");
    let two = SqsQueue::with_client(address, client(), &config)
        .await
        .expect("connect");
    (one, two)
}

#[tokio::test]
async fn a_worker_whose_lease_lapsed_dead_letters_nothing() {
    let config = QueueConfig::new("x").with_lease(Duration::from_secs(1));
    let (stale, live) = queue_pair("lapsed", config).await;
    stale.publish(vec![Item::new("poison")]).await.unwrap();
    let old = stale.pull(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(old.len(), 1);
    // The lease lapses and the other worker holds the live copy.
    let new = live.pull(1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(new.len(), 1, "the item comes back after its 1 s lease");
    let report = stale
        .dead_letter(&[old[0].token.clone()], "exit 1")
        .await
        .unwrap();
    assert_eq!(
        report.lost,
        [old[0].token.clone()],
        "a lapsed lease is reported lost"
    );
    assert!(
        live.list_dead(10).await.unwrap().is_empty(),
        "a worker without the lease copied the item into the dead queue"
    );
    let report = live
        .dead_letter(&[new[0].token.clone()], "exit 1")
        .await
        .unwrap();
    assert!(report.lost.is_empty());
    let dead = live.list_dead(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, new[0].id, "the letter carries the item's id");
}

#[tokio::test]
async fn a_letter_sent_twice_is_listed_and_requeued_once() {
    let (queue, _) = queue_pair("twice", QueueConfig::new("x")).await;
    let client = client();
    let dead_url = client
        .get_queue_url()
        .queue_name(format!("{}-dead", queue_name(&queue)))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let text = |v: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(v)
            .build()
            .unwrap()
    };
    // What a dead-letter publish whose delete failed, tried again, leaves.
    for _ in 0..2 {
        client
            .send_message()
            .queue_url(&dead_url)
            .message_body("item")
            .message_attributes(ID_ATTRIBUTE, text("original-1"))
            .message_attributes(REASON_ATTRIBUTE, text("exit 1"))
            .send()
            .await
            .unwrap();
    }
    let listed = queue.list_dead(10).await.unwrap();
    assert_eq!(listed.len(), 1, "listed twice: {listed:?}");
    assert_eq!(listed[0].id.as_ref(), "original-1");
    assert_eq!(queue.requeue_dead().await.unwrap(), 1);
    let back = queue.pull(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(back.len(), 1, "requeued twice");
    assert_eq!(queue.backlog().await.unwrap().dead, Count::Approximate(0));
}

fn queue_name(queue: &SqsQueue) -> String {
    queue.url().rsplit('/').next().unwrap().to_string()
}

#[tokio::test]
async fn a_hand_back_costs_no_attempt() {
    let config = QueueConfig::new("x").with_max_attempts(2);
    let (queue, _) = queue_pair("handback", config).await;
    let ids = queue
        .publish(vec![Item::new("item").with_attribute("k", "v")])
        .await
        .unwrap();
    for round in 0..4 {
        let got = queue.pull(1, Duration::from_secs(2)).await.unwrap();
        assert_eq!(got.len(), 1, "round {round}: the item is not back");
        assert_eq!(got[0].attempt, 1, "round {round}: a hand-back was charged");
        assert_eq!(got[0].id, ids[0], "the item keeps its id");
        assert_eq!(
            got[0].item.attributes.len(),
            1,
            "{:?}",
            got[0].item.attributes
        );
        let report = queue.release(&[got[0].token.clone()]).await.unwrap();
        assert!(report.lost.is_empty());
    }
    // Now it fails twice: the second failure is its last attempt.
    let got = queue.pull(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got[0].attempt, 1);
    queue
        .nack(&[got[0].token.clone()], Duration::ZERO)
        .await
        .unwrap();
    let got = queue.pull(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got[0].attempt, 2, "a nack is charged");
    assert_eq!(queue.backlog().await.unwrap().dead, Count::Approximate(0));
}

#[tokio::test]
async fn a_handed_back_item_that_lapses_past_its_attempts_goes_dead() {
    let config = QueueConfig::new("x")
        .with_max_attempts(2)
        .with_lease(Duration::from_secs(1));
    let (queue, _) = queue_pair("handback-lapse", config).await;
    queue.publish(vec![Item::new("item")]).await.unwrap();
    let got = queue.pull(1, Duration::from_secs(2)).await.unwrap();
    queue
        .nack(&[got[0].token.clone()], Duration::ZERO)
        .await
        .unwrap();
    let got = queue.pull(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got[0].attempt, 2);
    queue.release(&[got[0].token.clone()]).await.unwrap();
    let got = queue.pull(1, Duration::from_secs(2)).await.unwrap();
    assert_eq!(got[0].attempt, 2, "the hand-back was charged");
    // Its lease lapses on the last attempt: the next pull finds it dead.
    let again = queue.pull(1, Duration::from_secs(3)).await.unwrap();
    assert!(again.is_empty(), "delivered past max attempts: {again:?}");
    let dead = queue.list_dead(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].id, got[0].id);
}

#[tokio::test]
async fn a_queue_without_a_redrive_policy_is_refused_with_the_fix() {
    let name = fresh_name("no-redrive");
    let client = client();
    for queue in [name.clone(), format!("{name}-dead")] {
        client
            .create_queue()
            .queue_name(queue)
            .send()
            .await
            .unwrap();
    }
    let refused = SqsQueue::with_client(address(&name), client, &QueueConfig::new(&name)).await;
    let error = refused.expect_err("a queue that never dead-letters is refused");
    let text = error.to_string();
    assert!(text.contains("redrive"), "{text}");
    assert!(text.contains("queue create"), "{text}");
    assert!(text.contains("aws sqs set-queue-attributes"), "{text}");
}

#[tokio::test]
async fn a_worker_that_stops_mid_poll_leaves_no_receive_behind() {
    let config = QueueConfig::new("x").with_lease(Duration::from_secs(30));
    let (gone, other) = queue_pair("abandoned", config).await;
    // The worker reads the queue empty, polls again, and goes away.
    assert!(
        gone.pull(1, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    let abandoned = tokio::time::timeout(
        Duration::from_millis(300),
        gone.pull(1, Duration::from_secs(5)),
    )
    .await;
    assert!(abandoned.is_err(), "the poll was still waiting");
    drop(gone);
    other.publish(vec![Item::new("late")]).await.unwrap();
    let got = other.pull(1, Duration::from_secs(3)).await.unwrap();
    assert_eq!(
        got.len(),
        1,
        "a receive the departed worker left on the server took the item"
    );
}

/// A stand-in for SQS that answers the connect calls, takes items 0 and 2
/// of the first SendMessageBatch but fails item 1 on its side, then refuses
/// every later request: a retry round that fails after a round that worked.
fn flaky_sqs() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut batches = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let (mut target, mut length) = (String::new(), 0usize);
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("x-amz-target:") {
                        target = v.trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let (status, answer) = match target.as_str() {
                    "amazonsqs.getqueueattributes" => (
                        200,
                        r#"{"Attributes":{"MaximumMessageSize":"262144","RedrivePolicy":"{\"deadLetterTargetArn\":\"arn:aws:sqs:us-east-1:000000000000:flaky-dead\",\"maxReceiveCount\":\"5\"}"}}"#.to_string(),
                    ),
                    "amazonsqs.getqueueurl" => (
                        200,
                        r#"{"QueueUrl":"http://127.0.0.1/000000000000/flaky-dead"}"#.to_string(),
                    ),
                    "amazonsqs.sendmessagebatch" if batches == 0 => {
                        batches += 1;
                        (
                            200,
                            r#"{"Successful":[{"Id":"0","MessageId":"m0","MD5OfMessageBody":"x"},{"Id":"2","MessageId":"m2","MD5OfMessageBody":"x"}],"Failed":[{"Id":"1","SenderFault":false,"Code":"InternalError","Item":"try again"}]}"#.to_string(),
                        )
                    }
                    _ => (
                        400,
                        r#"{"__type":"com.amazonaws.sqs#AccessDenied","message":"refused"}"#.to_string(),
                    ),
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                if stream.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    endpoint
}

#[tokio::test]
async fn a_failed_retry_round_still_reports_what_went_in_before_it() {
    let endpoint = flaky_sqs();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version_latest()
        .endpoint_url(&endpoint)
        .region(Region::new(SqsEmulator::REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "faults"))
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    let mut address = address("flaky");
    address.url = Some(format!("{endpoint}/000000000000/flaky"));
    let queue = SqsQueue::with_client(address, client, &QueueConfig::new("flaky"))
        .await
        .expect("connect");
    let batch = ["a", "b", "c"].map(Item::new).to_vec();
    let error = queue
        .publish(batch)
        .await
        .expect_err("item 1 never went in");
    let text = error.to_string();
    assert!(text.contains("items 0, 2 of this batch went in"), "{text}");
}

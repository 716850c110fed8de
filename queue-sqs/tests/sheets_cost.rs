//! The receipt sheets stay few on fauxqs (issue 21 item 8): the writers
//! fold them as they go, so a job nobody ran `results` on does not leave
//! one sheet per ack batch in `NAME-results`; and `results` still reads
//! every receipt.

use std::time::Duration;

use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use forloop_core::QueueConfig;
use forloop_core::job::{Manifest, Receipt, Settled};
use forloop_queue_sqs::{SqsAddress, SqsQueue};
use forloop_testkit::servers::SqsEmulator;

fn client() -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version_latest()
        .endpoint_url(SqsEmulator::shared().endpoint())
        .region(Region::new(SqsEmulator::REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "sheets"))
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

fn receipt(seq: u64) -> Receipt {
    Receipt {
        job: "j".into(),
        seq,
        state: Settled::Done,
        attempt: 1,
        exit_code: Some(0),
        seconds: 0.1,
        worker: "w".into(),
        item: format!("item-{seq}").into(),
        reason: None,
        stderr_tail: None,
        at: 1_700_000_000_000 + seq,
        life: 0,
        value: None,
        value_url: None,
        copy: false,
    }
}

/// Messages in queue `name` (fauxqs counts exactly).
async fn messages(name: &str) -> u64 {
    let client = client();
    let url = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let attributes = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attributes = attributes.attributes().unwrap();
    [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .map(|key| attributes[key].parse::<u64>().unwrap())
    .sum()
}

#[tokio::test]
async fn writers_fold_the_receipt_sheets_on_fauxqs() {
    let name = format!("sheets-cost-{}", std::process::id());
    let config = QueueConfig::new(&name).with_lease(Duration::from_secs(30));
    let mut address = SqsAddress::resolve(None, &name).expect("address");
    address.staleness = Duration::ZERO;
    SqsQueue::create_with_client(&client(), &address, &config)
        .await
        .expect("create the queue");
    let open = || async {
        SqsQueue::with_client(address.clone(), client(), &config)
            .await
            .expect("connect")
            .into_backend()
            .ledger
            .expect("a ledger")
    };
    let writers = [open().await, open().await];
    writers[0]
        .begin(&Manifest::new("j", 600, "d"))
        .await
        .unwrap();
    const BATCHES: u64 = 120;
    for batch in 0..BATCHES {
        let receipts: Vec<Receipt> = (batch * 5..batch * 5 + 5).map(receipt).collect();
        writers[(batch % 2) as usize]
            .record(&receipts)
            .await
            .unwrap();
    }
    let sheets = messages(&format!("{name}-results")).await;
    eprintln!("{sheets} receipt sheets after {BATCHES} ack batches of two writers");
    assert!(
        sheets <= 40,
        "{sheets} receipt sheets after {BATCHES} ack batches"
    );
    let receipts = open().await.receipts("j").await.unwrap();
    assert_eq!(receipts.len(), 600, "a fold lost receipts");
}

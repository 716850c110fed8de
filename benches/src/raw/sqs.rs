//! The raw aws-sdk-sqs baseline the SQS driver is held to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::Instant;

use crate::{BenchArgs, Failure};

/// The raw aws-sdk-sqs baseline: SendMessageBatch in tens (ten requests in
/// flight), then per client `concurrency / 10` loops of ReceiveMessage (10,
/// short poll, 60 s visibility) and DeleteMessageBatch, until every
/// published item was received.
pub(crate) async fn bench(url: Option<&str>, name: &str, args: &BenchArgs) -> Result<u8, Failure> {
    use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
    let address = forloop_queue_sqs::SqsAddress::resolve(url, name)?;
    let failure = |e: String| Failure::new(format!("raw sqs bench: {e}"));
    let client = forloop_queue_sqs::client(&address).await?;
    let queue_url = match &address.url {
        Some(url) => url.clone(),
        None => client
            .get_queue_url()
            .queue_name(&address.name)
            .send()
            .await
            .map_err(|e| failure(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?
            .queue_url()
            .unwrap_or_default()
            .to_string(),
    };
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < args.items {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let n = (args.items - sent).min(10);
            if n == 0 {
                break;
            }
            let entries = (sent..sent + n)
                .map(|i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(i.to_string())
                        .build()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(failure)?;
            sent += n;
            let request = client
                .send_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries));
            set.spawn(async move {
                let out = request
                    .send()
                    .await
                    .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
                match out.failed().first() {
                    Some(f) => Err(format!("{}: {:?}", f.code(), f.message())),
                    None => Ok(()),
                }
            });
        }
        while let Some(joined) = set.join_next().await {
            joined
                .map_err(|e| failure(e.to_string()))?
                .map_err(failure)?;
        }
    }
    let publish_rate = args.items as f64 / started.elapsed().as_secs_f64();
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let client = forloop_queue_sqs::client(&address).await?;
        for _ in 0..args.concurrency.div_ceil(10).max(1) {
            let (client, queue_url, received, items) = (
                client.clone(),
                queue_url.clone(),
                Arc::clone(&received),
                args.items,
            );
            set.spawn(async move {
                while received.load(Ordering::Relaxed) < items {
                    let out = client
                        .receive_message()
                        .queue_url(&queue_url)
                        .max_number_of_messages(10)
                        .visibility_timeout(60)
                        .wait_time_seconds(0)
                        .send()
                        .await
                        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
                    let messages = out.messages.unwrap_or_default();
                    if messages.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    received.fetch_add(messages.len() as u64, Ordering::Relaxed);
                    let entries = messages
                        .iter()
                        .enumerate()
                        .map(|(i, m)| {
                            DeleteMessageBatchRequestEntry::builder()
                                .id(i.to_string())
                                .receipt_handle(m.receipt_handle().unwrap_or_default())
                                .build()
                                .map_err(|e| e.to_string())
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    client
                        .delete_message_batch()
                        .queue_url(&queue_url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                        .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
                }
                Ok::<_, String>(())
            });
        }
    }
    while let Some(joined) = set.join_next().await {
        joined
            .map_err(|e| failure(e.to_string()))?
            .map_err(failure)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "queue sqs  mode raw aws-sdk-sqs  items {}  clients {}  loops per client {}  publish {publish_rate:.0} items/s  process {:.0} items/s ({secs:.3} s)",
        args.items,
        args.workers,
        args.concurrency.div_ceil(10).max(1),
        args.items as f64 / secs
    );
    Ok(0)
}

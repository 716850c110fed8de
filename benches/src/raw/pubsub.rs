//! The raw gcloud-pubsub baseline the Pub/Sub driver is held to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::Instant;

use crate::{BenchArgs, Failure};

/// The raw gcloud-pubsub baseline: publish in batches of 1,000, then per
/// batch of up to `concurrency`: unary pull, modack (the lease), ack.
pub(crate) async fn bench(url: &str, name: &str, args: &BenchArgs) -> Result<u8, Failure> {
    use gcloud_googleapis::pubsub::v1::{
        AcknowledgeRequest, ModifyAckDeadlineRequest, PubsubMessage,
    };
    use gcloud_pubsub::client::{Client, ClientConfig};
    let address = forloop_queue_pubsub::PubsubAddress::resolve(Some(url), name)?;
    let failure = |e: String| Failure::new(format!("raw pubsub bench: {e}"));
    let mut config = ClientConfig {
        project_id: Some(address.project.clone()),
        ..ClientConfig::default()
    };
    if let Some(host) = &address.emulator {
        config.environment = gcloud_gax::conn::Environment::Emulator(host.clone());
    }
    let client = Client::new(config)
        .await
        .map_err(|e| failure(e.to_string()))?;
    let topic = client.topic(&address.name);
    let publisher = topic.new_publisher(None);
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < args.items {
        let n = (args.items - sent).min(1000);
        let batch = (sent..sent + n)
            .map(|i| PubsubMessage {
                data: i.to_string().into_bytes(),
                ..PubsubMessage::default()
            })
            .collect();
        publisher
            .publish_immediately(batch, None)
            .await
            .map_err(|e| failure(e.to_string()))?;
        sent += n;
    }
    let publish_rate = args.items as f64 / started.elapsed().as_secs_f64();
    let subscription = Arc::new(client.subscription(&format!("{}-workers", address.name)));
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let (subscription, received, items) =
            (Arc::clone(&subscription), Arc::clone(&received), args.items);
        let batch = args.concurrency as i32;
        set.spawn(async move {
            let fqsn = subscription.fully_qualified_name().to_string();
            let raw = subscription.get_client();
            while received.load(Ordering::Relaxed) < items {
                let Ok(pulled) =
                    tokio::time::timeout(Duration::from_secs(2), subscription.pull(batch, None))
                        .await
                else {
                    continue;
                };
                let ack_ids: Vec<String> = pulled
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|m| m.ack_id)
                    .collect();
                if ack_ids.is_empty() {
                    continue;
                }
                raw.modify_ack_deadline(
                    ModifyAckDeadlineRequest {
                        subscription: fqsn.clone(),
                        ack_ids: ack_ids.clone(),
                        ack_deadline_seconds: 60,
                    },
                    None,
                )
                .await
                .map_err(|e| e.to_string())?;
                received.fetch_add(ack_ids.len() as u64, Ordering::Relaxed);
                raw.acknowledge(
                    AcknowledgeRequest {
                        subscription: fqsn.clone(),
                        ack_ids,
                    },
                    None,
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined
            .map_err(|e| failure(e.to_string()))?
            .map_err(failure)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "queue pubsub  mode raw gcloud-pubsub  items {}  clients {}  batch {}  publish {publish_rate:.0} items/s  process {:.0} items/s ({secs:.3} s)",
        args.items,
        args.workers,
        args.concurrency,
        args.items as f64 / secs
    );
    Ok(0)
}

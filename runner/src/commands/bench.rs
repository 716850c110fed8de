//! `runner bench`: what forloop itself costs per item.
//!
//! - memory queue (default): publish N items, drain them through the real
//!   worker loop in this process with a no-op handler.
//! - shared queue (`--queue redis://...`): publish N items to a fresh queue,
//!   drain them with `--workers` processes (no-op handler, or `true` per item
//!   with `--command`), and time from launch to the last worker's exit. Also
//!   reports how long the workers took to exit after the backlog read empty.
//! - `--raw` (Redis, Pub/Sub, SQS): the same drain done by a bare client of
//!   the backend, the baseline the driver is held to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use forloop_core::handler::from_fn;
use forloop_core::worker::{Shutdown, Worker, WorkerConfig};
use forloop_core::{MemoryQueue, Message, QueueConfig, Task, WorkQueue};

use super::Context;
use crate::Failure;
use crate::cli::BenchArgs;

async fn publish(queue: &dyn WorkQueue, items: u64) -> Result<f64, Failure> {
    let batch = queue.capabilities().max_batch as u64;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < items {
        let n = (items - sent).min(batch);
        let messages = (sent..sent + n)
            .map(|i| Message::new(Bytes::from(i.to_string())))
            .collect();
        queue.publish(messages).await?;
        sent += n;
    }
    Ok(items as f64 / started.elapsed().as_secs_f64())
}

/// Drain `queue` with `workers` no-op worker loops in this process.
/// With `until`, the loops stop once that many items were handled: the way
/// to time a drain on a queue that cannot count its backlog (a fresh queue
/// holding exactly the published items).
async fn drain_here(
    queue: Arc<dyn WorkQueue>,
    workers: u32,
    concurrency: u32,
    until: Option<u64>,
) -> Result<u64, Failure> {
    let handled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&handled);
    let shutdown = Shutdown::new();
    let done = shutdown.clone();
    let handler = Arc::new(from_fn(move |_task: Task| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if until.is_some_and(|until| n >= until) {
            done.stop();
        }
        async {}
    }));
    let mut set = tokio::task::JoinSet::new();
    for index in 0..workers {
        let config = WorkerConfig {
            concurrency: concurrency as usize,
            name: Arc::from(format!("bench/{index}")),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(Arc::clone(&queue), handler.clone()).with_config(config);
        set.spawn(worker.run(shutdown.clone()));
    }
    while let Some(joined) = set.join_next().await {
        joined.map_err(|e| Failure::new(e.to_string()))??;
        // An exact backlog read empty by one loop is empty for all.
        if queue.capabilities().exact_backlog {
            shutdown.stop();
        }
    }
    Ok(handled.load(Ordering::Relaxed))
}

pub(crate) async fn bench(context: &Context<'_>, args: BenchArgs) -> Result<u8, Failure> {
    let Some(spec) = context.queue.as_deref().filter(|q| *q != "memory") else {
        return bench_memory(args).await;
    };
    let (driver, address) = context.registry.resolve(spec)?;
    let config = QueueConfig::new(context.name.clone()).with_max_attempts(3);
    let queue = context.open(&*driver, &address, config).await?;
    if args.drain {
        drain_here(queue, 1, args.concurrency, None).await?;
        return Ok(0);
    }
    if args.raw {
        if driver.name() == "pubsub" {
            return raw_pubsub(spec, &context.name, args).await;
        }
        if driver.name() == "sqs" {
            return raw_sqs(address.url.as_deref(), &context.name, args).await;
        }
        return raw(spec, &context.name, args).await;
    }
    if queue.backlog().await?.is_empty().is_none() {
        // Cannot count (Pub/Sub): worker loops in this process, stopped
        // when every published item was handled.
        let publish_rate = publish(&*queue, args.items).await?;
        let started = Instant::now();
        let handled = drain_here(
            Arc::clone(&queue),
            args.workers,
            args.concurrency,
            Some(args.items),
        )
        .await?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "queue {}  mode no-op handler  items {}  worker loops (in process) {}  concurrency {}  publish {publish_rate:.0} items/s  process {:.0} items/s ({secs:.3} s)  handled {handled}",
            driver.name(),
            args.items,
            args.workers,
            args.concurrency,
            args.items as f64 / secs,
        );
        return Ok(0);
    }
    let publish_rate = publish(&*queue, args.items).await?;
    let exe = std::env::current_exe().map_err(|e| Failure::new(e.to_string()))?;
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..args.workers {
        let mut command = tokio::process::Command::new(&exe);
        command
            .arg(format!("--queue={spec}"))
            .arg(format!("--name={}", context.name))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null());
        if args.command {
            command.args([
                "work",
                &format!("--concurrency={}", args.concurrency),
                "--",
                "true",
            ]);
        } else {
            command.args([
                "bench",
                "--drain",
                &format!("--concurrency={}", args.concurrency),
            ]);
        }
        children.push(command.spawn().map_err(|e| Failure::new(e.to_string()))?);
    }
    // Watch for the moment the backlog reads empty (the last ack, within 5 ms).
    let watcher = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move {
            loop {
                if let Ok(b) = queue.backlog().await
                    && b.ready.value() == Some(0)
                    && b.in_flight.value() == Some(0)
                {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for child in &mut children {
        let status = child
            .wait()
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        if !status.success() {
            return Err(Failure::new(format!("a bench worker failed: {status}")));
        }
    }
    let all_exited = Instant::now();
    let drain = started.elapsed().as_secs_f64();
    let emptied = watcher.await.map_err(|e| Failure::new(e.to_string()))?;
    println!(
        "queue {}  mode {}  items {}  worker processes {}  concurrency {}  publish {:.0} items/s  process {:.0} items/s ({drain:.3} s)  last ack -> all exited {:.0} ms",
        driver.name(),
        if args.command {
            "command `true`"
        } else {
            "no-op handler"
        },
        args.items,
        args.workers,
        args.concurrency,
        publish_rate,
        args.items as f64 / drain,
        all_exited.saturating_duration_since(emptied).as_secs_f64() * 1000.0,
    );
    Ok(0)
}

async fn bench_memory(args: BenchArgs) -> Result<u8, Failure> {
    let queue: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new(
        QueueConfig::new("bench").with_max_attempts(1),
    ));
    let publish_rate = publish(&*queue, args.items).await?;
    let started = Instant::now();
    let handled = drain_here(Arc::clone(&queue), args.workers, args.concurrency, None).await?;
    let secs = started.elapsed().as_secs_f64();
    let backlog = queue.backlog().await?;
    println!(
        "queue memory  items {}  workers {}  concurrency {}  publish {publish_rate:.0} items/s  process {:.0} items/s ({secs:.3} s)  handled {handled}  left {:?}/{:?}",
        args.items,
        args.workers,
        args.concurrency,
        args.items as f64 / secs,
        backlog.ready,
        backlog.in_flight,
    );
    Ok(0)
}

#[cfg(feature = "redis")]
async fn raw(url: &str, name: &str, args: BenchArgs) -> Result<u8, Failure> {
    use redis::AsyncCommands;
    let failure = |e: redis::RedisError| Failure::new(format!("raw redis bench: {e}"));
    let client = redis::Client::open(url).map_err(failure)?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(failure)?;
    let (list, leased) = (
        format!("{{raw:{name}}}:list"),
        format!("{{raw:{name}}}:leased"),
    );
    let _: () = con.del(&[&list, &leased]).await.map_err(failure)?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < args.items {
        let n = (args.items - sent).min(1000);
        let batch: Vec<String> = (sent..sent + n).map(|i| i.to_string()).collect();
        let _: () = con.rpush(&list, batch).await.map_err(failure)?;
        sent += n;
    }
    let publish_rate = args.items as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.workers {
        let client = client.clone();
        let (list, leased) = (list.clone(), leased.clone());
        let batch = args.concurrency as usize;
        set.spawn(async move {
            let mut con = client.get_multiplexed_async_connection().await?;
            loop {
                // Pop a batch, lease it (deadline 30 s out), "run" it, ack it.
                let ids: Option<Vec<String>> = redis::cmd("LPOP")
                    .arg(&list)
                    .arg(batch)
                    .query_async(&mut con)
                    .await?;
                let Some(ids) = ids else {
                    return Ok::<_, redis::RedisError>(());
                };
                let deadline = 30_000u64;
                let pairs: Vec<(u64, &String)> = ids.iter().map(|id| (deadline, id)).collect();
                let _: () = con.zadd_multiple(&leased, &pairs).await?;
                let _: () = con.zrem(&leased, &ids).await?;
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        joined
            .map_err(|e| Failure::new(e.to_string()))?
            .map_err(failure)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "queue redis  mode raw redis-rs  items {}  clients {}  batch {}  publish {publish_rate:.0} items/s  process {:.0} items/s ({secs:.3} s)",
        args.items,
        args.workers,
        args.concurrency,
        args.items as f64 / secs
    );
    Ok(0)
}

#[cfg(not(feature = "redis"))]
async fn raw(_url: &str, _name: &str, _args: BenchArgs) -> Result<u8, Failure> {
    Err(Failure::new(
        "`runner bench --raw` needs a runner built with --features redis",
    ))
}

/// The raw gcloud-pubsub baseline: publish in batches of 1,000, then per
/// batch of up to `concurrency`: unary pull, modack (the lease), ack.
#[cfg(feature = "pubsub")]
async fn raw_pubsub(url: &str, name: &str, args: BenchArgs) -> Result<u8, Failure> {
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

#[cfg(not(feature = "pubsub"))]
async fn raw_pubsub(_url: &str, _name: &str, _args: BenchArgs) -> Result<u8, Failure> {
    Err(Failure::new(
        "`runner bench --raw` on Pub/Sub needs a runner built with --features pubsub",
    ))
}

/// The raw aws-sdk-sqs baseline: SendMessageBatch in tens (ten requests in
/// flight), then per client `concurrency / 10` loops of ReceiveMessage (10,
/// short poll, 60 s visibility) and DeleteMessageBatch, until every
/// published item was received.
#[cfg(feature = "sqs")]
async fn raw_sqs(url: Option<&str>, name: &str, args: BenchArgs) -> Result<u8, Failure> {
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

#[cfg(not(feature = "sqs"))]
async fn raw_sqs(_url: Option<&str>, _name: &str, _args: BenchArgs) -> Result<u8, Failure> {
    Err(Failure::new(
        "`runner bench --raw` on SQS needs a runner built with --features sqs",
    ))
}

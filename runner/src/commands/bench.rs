//! `runner bench`: no-op items through the real worker loop on the memory
//! queue, to measure what forloop itself costs per item.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use forloop_core::handler::from_fn;
use forloop_core::worker::{Shutdown, Worker, WorkerConfig};
use forloop_core::{MemoryQueue, Message, QueueConfig, Task, WorkQueue};

use crate::Failure;
use crate::cli::BenchArgs;

pub(crate) async fn bench(args: BenchArgs) -> Result<u8, Failure> {
    let queue = Arc::new(MemoryQueue::new(
        QueueConfig::new("bench").with_max_attempts(1),
    ));
    let batch = queue.capabilities().max_batch;
    let publish_started = Instant::now();
    let mut sent = 0u64;
    while sent < args.items {
        let n = (args.items - sent).min(batch as u64);
        let messages = (sent..sent + n)
            .map(|i| Message::new(Bytes::from(i.to_string())))
            .collect();
        queue.publish(messages).await?;
        sent += n;
    }
    let publish_secs = publish_started.elapsed().as_secs_f64();

    let handled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&handled);
    let handler = Arc::new(from_fn(move |_task: Task| {
        counter.fetch_add(1, Ordering::Relaxed);
        async {}
    }));
    let shutdown = Shutdown::new();
    let drain_started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..args.workers {
        let config = WorkerConfig {
            concurrency: args.concurrency as usize,
            name: Arc::from(format!("bench/{index}")),
            ..WorkerConfig::default()
        };
        let worker = Worker::new(queue.clone(), handler.clone()).with_config(config);
        workers.spawn(worker.run(shutdown.clone()));
    }
    while let Some(joined) = workers.join_next().await {
        joined.map_err(|e| Failure::new(e.to_string()))??;
        shutdown.stop();
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let backlog = queue.backlog().await?;
    println!(
        "items {}  workers {}  concurrency {}  publish {:.0} items/s  process {:.0} items/s  ({:.3} s)  handled {}  left {:?}/{:?}",
        args.items,
        args.workers,
        args.concurrency,
        args.items as f64 / publish_secs,
        args.items as f64 / drain_secs,
        drain_secs,
        handled.load(Ordering::Relaxed),
        backlog.ready,
        backlog.in_flight,
    );
    Ok(0)
}

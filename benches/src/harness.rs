//! The harness: publish N items, drain them through forloop's own worker
//! loop (no-op handler) or `runner work -- true` processes, and time it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use forloop_core::handler::from_fn;
use forloop_core::worker::{Shutdown, Worker, WorkerConfig};
use forloop_core::{Backend, Item, MemoryQueue, QueueConfig, Task, WorkQueue};

use crate::{BenchArgs, Failure};

/// Publish `items`; with `job`, as one job through the queue's ledger, so
/// the workers write a receipt for every item (the ledger's cost).
async fn publish(backend: &Backend, items: u64, job: bool) -> Result<f64, Failure> {
    let started = Instant::now();
    let queue = &*backend.queue;
    if job {
        let ledger = backend
            .ledger
            .as_ref()
            .ok_or_else(|| Failure::new("--job: this queue keeps no ledger"))?;
        let messages = (0..items)
            .map(|i| Item::new(Bytes::from(i.to_string())))
            .collect();
        forloop_core::job::Submit::new(queue, messages)
            .job(&**ledger, "bench")
            .send()
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        return Ok(items as f64 / started.elapsed().as_secs_f64());
    }
    let batch = queue.capabilities().max_batch as u64;
    let mut sent = 0u64;
    while sent < items {
        let n = (items - sent).min(batch);
        let messages = (sent..sent + n)
            .map(|i| Item::new(Bytes::from(i.to_string())))
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
/// With `metrics`, the loops count into the Prometheus metrics
/// `runner work --metrics-addr` serves (on a loopback port nobody scrapes):
/// what they cost is what the bench then shows.
async fn drain_here(
    backend: Backend,
    workers: u32,
    concurrency: u32,
    until: Option<u64>,
    metrics: bool,
) -> Result<u64, Failure> {
    let (backend, metrics) = if metrics {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Failure::new(format!("--metrics: {e}")))?;
        let (backend, metrics) = runner::metrics::serve(listener, backend);
        (backend, Some(metrics))
    } else {
        (backend, None)
    };
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
        let worker = Worker::new(backend.clone(), handler.clone()).with_config(config);
        if let Some(metrics) = &metrics {
            metrics.watch(&worker);
        }
        set.spawn(worker.run(shutdown.clone()));
    }
    while let Some(joined) = set.join_next().await {
        joined.map_err(|e| Failure::new(e.to_string()))??;
        // An exact backlog read empty by one loop is empty for all.
        if backend.queue.capabilities().exact_backlog {
            shutdown.stop();
        }
    }
    Ok(handled.load(Ordering::Relaxed))
}

/// This process's CPU time and minor page faults so far (`/proc/self/stat`;
/// zeros where it cannot be read).
#[derive(Debug, Default)]
struct Usage {
    user_ticks: u64,
    system_ticks: u64,
    minor_faults: u64,
}

impl Usage {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command's closing parenthesis, from field 3 on.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .map(|f| f.parse().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
        Self {
            minor_faults: field(10),
            user_ticks: field(14),
            system_ticks: field(15),
        }
    }

    fn since(&self, before: &Usage) -> Usage {
        Usage {
            user_ticks: self.user_ticks.saturating_sub(before.user_ticks),
            system_ticks: self.system_ticks.saturating_sub(before.system_ticks),
            minor_faults: self.minor_faults.saturating_sub(before.minor_faults),
        }
    }
}

impl std::fmt::Display for Usage {
    /// In clock ticks of 10 ms (Linux's USER_HZ).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user {:.2} s sys {:.2} s, {} minor faults",
            self.user_ticks as f64 / 100.0,
            self.system_ticks as f64 / 100.0,
            self.minor_faults
        )
    }
}

/// The bench on the memory queue: the worker loop in this process.
pub(crate) async fn bench_memory(args: &BenchArgs) -> Result<u8, Failure> {
    let queue = MemoryQueue::new(QueueConfig::new("bench").with_max_attempts(1));
    let queue = if args.keep_receipts {
        queue.with_done_receipts()
    } else {
        queue
    };
    let backend = queue.backend();
    let publish_rate = publish(&backend, args.items, args.job).await?;
    let (started, before) = (Instant::now(), Usage::now());
    let handled = drain_here(backend, args.workers, args.concurrency, None, args.metrics).await?;
    let secs = started.elapsed().as_secs_f64();
    let used = Usage::now().since(&before);
    let backlog = queue.backlog().await?;
    println!(
        "queue memory{}  items {}  workers {}  concurrency {}  publish {publish_rate:.0} items/s  process {:.0} items/s ({secs:.3} s, cpu {})  handled {handled}  left {:?}/{:?}",
        if args.metrics { " (metrics on)" } else { "" },
        args.items,
        args.workers,
        args.concurrency,
        args.items as f64 / secs,
        used,
        backlog.ready,
        backlog.in_flight,
    );
    Ok(0)
}

/// The bench on a shared queue: the driver through the worker loop, or with
/// `--raw` the backend's bare client.
pub(crate) async fn bench(spec: &str, args: &BenchArgs) -> Result<u8, Failure> {
    let (driver, address) = runner::Registry::builtin().resolve(spec)?;
    let config = QueueConfig::new(args.name.clone()).with_max_attempts(3);
    let backend = driver.open(&address, config).await?;
    let queue = Arc::clone(&backend.queue);
    if args.drain {
        drain_here(backend, 1, args.concurrency, None, args.metrics).await?;
        return Ok(0);
    }
    if args.raw {
        // The baselines are per backend by nature: each is that backend's
        // own client doing the least work with the same guarantees.
        return match driver.name() {
            "redis" => crate::raw::redis::bench(spec, &args.name, args).await,
            "pubsub" => crate::raw::pubsub::bench(spec, &args.name, args).await,
            "sqs" => crate::raw::sqs::bench(address.url.as_deref(), &args.name, args).await,
            other => Err(Failure::new(format!(
                "no raw baseline for the `{other}` queue"
            ))),
        };
    }
    if queue.backlog().await?.is_empty().is_none() {
        // Cannot count (Pub/Sub): worker loops in this process, stopped
        // when every published item was handled.
        let publish_rate = publish(&backend, args.items, args.job).await?;
        let started = Instant::now();
        let handled = drain_here(
            backend.clone(),
            args.workers,
            args.concurrency,
            Some(args.items),
            args.metrics,
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
    let publish_rate = publish(&backend, args.items, args.job).await?;
    let exe = std::env::current_exe().map_err(|e| Failure::new(e.to_string()))?;
    // `--command` workers are the product's own `runner work`, built beside
    // this binary (`cargo build --release -p forloop-runner -p forloop-benches`).
    let runner = exe.with_file_name("runner");
    if args.command && !runner.exists() {
        return Err(Failure::new(format!(
            "`--command` runs `{}` as its workers: build it first with \
             `cargo build --release -p forloop-runner --features redis,pubsub,sqs`",
            runner.display()
        )));
    }
    let started = Instant::now();
    let mut children = Vec::new();
    for _ in 0..args.workers {
        let mut command = tokio::process::Command::new(if args.command { &runner } else { &exe });
        command
            .arg(format!("--queue={spec}"))
            .arg(format!("--name={}", args.name))
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
            command.args(["--drain", &format!("--concurrency={}", args.concurrency)]);
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

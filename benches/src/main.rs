//! `forloop-bench`: what forloop itself costs per item, against the bare
//! client of each backend. Not part of the product: the raw SDKs and the
//! worker processes a bench starts live here, not in `runner`.
//!
//! - memory queue (default): publish N items, drain them through the real
//!   worker loop in this process with a no-op handler.
//! - shared queue (`--queue redis://...`): publish N items to a fresh queue,
//!   drain them with `--workers` processes (this binary with `--drain`, a
//!   no-op handler; or `runner work -- true` with `--command`), and time
//!   from launch to the last worker's exit. Also reports how long the
//!   workers took to exit after the backlog read empty.
//! - `--raw` (Redis, Pub/Sub, SQS): the same drain done by a bare client of
//!   the backend, the baseline the driver is held to.
//! - `--upload FILE --outputs s3://...`: one large file through `--outputs`'
//!   path, against (`--raw`) the bare `object_store` client.
//!
//! docs/BENCHMARKS.md has the method and the figures; `scripts/bench-*` run it.

mod harness;
mod upload;
mod raw {
    pub(crate) mod pubsub;
    pub(crate) mod redis;
    pub(crate) mod sqs;
}

use std::fmt;
use std::process::ExitCode;

use clap::Parser;

/// Push N items through forloop, or through a backend's bare client.
#[derive(Debug, Parser)]
#[command(name = "forloop-bench", version)]
pub(crate) struct BenchArgs {
    /// The queue: `memory` (default) or a shared queue's URL, as `runner --queue` takes it
    #[arg(long, default_value = "memory")]
    queue: String,
    /// The queue's name on the backend
    #[arg(long, default_value = "bench")]
    name: String,
    /// Items to push through
    #[arg(long, default_value_t = 1_000_000)]
    items: u64,
    /// Worker loops: tasks in this process on the memory queue, worker
    /// processes on a shared queue
    #[arg(long, short = 'w', default_value_t = 1)]
    workers: u32,
    /// Tasks each worker runs at once
    #[arg(long, short = 'j', default_value_t = 256)]
    concurrency: u32,
    /// Run `true` per item (`runner work`, command mode) instead of the no-op Rust handler
    #[arg(long)]
    command: bool,
    /// Instead of forloop, the backend's bare client doing the least work
    /// with the same guarantees
    #[arg(long)]
    raw: bool,
    /// Publish the items as one job: workers then write a receipt to the
    /// queue's ledger for every item (what the ledger costs)
    #[arg(long)]
    job: bool,
    /// Memory queue with --job: keep every done item's receipt too
    /// (`MemoryQueue::with_done_receipts`), not only the dead items'
    #[arg(long)]
    keep_receipts: bool,
    /// Count into the worker's Prometheus metrics (what `runner work
    /// --metrics-addr` serves), to measure what they cost
    #[arg(long)]
    metrics: bool,
    /// Instead of items: upload this one file to `--outputs URL` through
    /// forloop's output path (with `--raw`: the bare object_store client)
    #[arg(long, value_name = "FILE")]
    upload: Option<std::path::PathBuf>,
    /// With --upload: where to (an `s3://bucket/prefix` URL)
    #[arg(long, value_name = "URL")]
    outputs: Option<String>,
    /// Be one worker process of a shared-queue bench (the harness starts these)
    #[arg(long)]
    drain: bool,
}

/// A bench that could not run, said plainly.
#[derive(Debug)]
pub(crate) struct Failure(String);

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<forloop_core::QueueError> for Failure {
    fn from(error: forloop_core::QueueError) -> Self {
        Self(forloop_core::ErrorChain(&error).to_string())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let result = if let Some(file) = args.upload.clone() {
        upload::bench(&file, &args).await
    } else if args.queue == "memory" {
        harness::bench_memory(&args).await
    } else {
        harness::bench(&args.queue.clone(), &args).await
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("forloop-bench: {failure}");
            ExitCode::FAILURE
        }
    }
}

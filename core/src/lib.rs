//! forloop-core: the parts of a distributed `for item in items { f(item) }`
//! that do not depend on any backend.
//!
//! - [`queue`]: the [`WorkQueue`] trait every backend implements, the types it
//!   speaks ([`Delivery`], [`LeaseToken`], [`Backlog`], [`Capabilities`]) and
//!   [`MemoryQueue`], the embedded default.
//! - [`worker`]: the worker loop, written once: pull only into free slots, keep
//!   leases alive, ack in batches, retry with backoff, dead-letter, shut down on
//!   a signal and exit only when the queue is drained.
//! - [`handler`]: what runs on an item: a command per item, a warm process
//!   per task slot (`--serve`), or a Rust function.
//! - [`driver`]: the [`Driver`] plug each backend crate exports (name, URL
//!   forms, open/create/delete, redaction, autoscaler trigger).
//! - [`kit`]: plumbing queue drivers share (redaction, the dead-letter
//!   envelope, held deliveries, chunking, the dead-queue loop, addresses).
//! - [`cluster`]: the [`ClusterLauncher`] trait and [`LocalLauncher`].
//! - [`publish_all`]: a whole input, checked first, sent in the largest batches.
//!
//! Without the CLI, a program runs its own loop in a few lines: publish,
//! then run a [`Worker`] until the queue drains, with a [`Shutdown`] it can
//! trigger (from a signal, an HTTP call, a test):
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use forloop_core::{MemoryQueue, Item, QueueConfig, Shutdown, Worker, WorkerConfig, WorkerExit};
//!
//! let queue = Arc::new(MemoryQueue::new(QueueConfig::new("squares")));
//! let items = (1..=100).map(|n: u64| Item::new(n.to_string())).collect();
//! forloop_core::publish_all(&*queue, items, |_| {}).await?;
//!
//! let handler = forloop_core::handler::for_str(|item: &str| -> Result<(), std::num::ParseIntError> {
//!     let n: u64 = item.parse()?;
//!     assert!(n * n >= n);
//!     Ok(())
//! });
//! let shutdown = Shutdown::new(); // shutdown.stop() from anywhere ends it gracefully
//! let exit = Worker::new(queue, Arc::new(handler))
//!     .with_config(WorkerConfig { concurrency: 8, ..WorkerConfig::default() })
//!     .run(shutdown.clone())
//!     .await?;
//! assert_eq!(exit, WorkerExit::Drained);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//! - `conformance` (feature `conformance`): the delivery contract as public test
//!   functions that every driver runs against its own backend.
//!
//! The delivery contract lives in `queue` and is what the conformance suite
//! checks; policy (leases, retries, backoff, drain) lives in `worker`, so
//! drivers stay thin.
#![deny(missing_docs)]

pub mod cluster;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod driver;
mod error;
mod fasthash;
pub mod handler;
pub mod job;
pub mod kit;
pub mod memory;
mod publish;
pub mod queue;
mod shutdown;
pub mod worker;

pub use cluster::{
    ClusterLauncher, LaunchError, LaunchHandle, LaunchSpec, LocalLauncher, WorkerCounts,
};
pub use driver::{Driver, QueueAddress, ScaleTrigger};
pub use error::{ErrorChain, QueueError, QueueErrorKind};
pub use handler::{CommandTemplate, Handler, ServeHandler, Task, TaskOutcome};
pub use job::Backend;
pub use memory::{MemoryDriver, MemoryQueue};
pub use publish::{PublishError, publish_all};
pub use queue::{
    Backlog, Capabilities, Count, DeadLetter, DeadSelect, Delivery, Item, LeaseReport, LeaseToken,
    MessageId, QueueConfig, QueueDecorator, RequeueWatch, Requeued, WorkQueue,
};
pub use worker::{Shutdown, Worker, WorkerConfig, WorkerExit};

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
//! - [`cluster`]: the [`ClusterLauncher`] trait and [`LocalLauncher`].
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
mod error;
mod fasthash;
pub mod handler;
pub mod queue;
pub mod worker;

pub use cluster::{
    ClusterLauncher, LaunchError, LaunchHandle, LaunchSpec, LocalLauncher, WorkerCounts,
};
pub use error::{QueueError, QueueErrorKind};
pub use handler::{CommandTemplate, Handler, ServeHandler, Task, TaskOutcome};
pub use queue::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, LeaseReport, LeaseToken, MemoryQueue,
    Message, MessageId, QueueConfig, WorkQueue,
};
pub use worker::{Shutdown, Worker, WorkerConfig, WorkerExit};

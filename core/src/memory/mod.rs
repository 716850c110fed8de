//! The embedded backend: [`MemoryQueue`], its [`MemoryLedger`] and the
//! [`MemoryDriver`] that plugs them in, all in one process. A driver like
//! any other, built into core because `runner run` needs no server: it sits
//! above the queue contract and the job layer, as the other drivers do.

mod driver;
mod ledger;
mod queue;

pub use driver::MemoryDriver;
pub use ledger::MemoryLedger;
pub use queue::MemoryQueue;

//! The driver kit: plumbing that several queue drivers need and that is
//! written once, here, so the copies cannot drift.
//!
//! - [`address`]: the environment read once ([`Env`]) and URLs parsed on the
//!   `url` crate, with errors that name the address and the forms to write.
//! - [`envelope`]: the dead-letter envelope ([`DeadStamp`]): the attributes a
//!   driver stamps on an item it dead-letters, and strips again.
//! - [`held`]: the deliveries a process holds ([`HeldDeliveries`]), for
//!   drivers that dead-letter by publishing a copy.
//! - [`handback`]: the attributes a hand-back that costs no attempt carries
//!   ([`Carried`]).
//! - [`tokens`]: lease tokens split into a driver's own and lost ones.
//! - [`chunks`]: batches cut to a backend request's count and bytes.
//! - [`seconds`]: durations rounded up to whole seconds.
//! - [`dead`]: list, requeue and purge over a dead-letter queue ([`DeadQueue`]).
//! - [`sheets`]: the job ledger kept as sheets in two sibling queues
//!   ([`SheetLedger`]), for backends with no store of their own (SQS,
//!   Pub/Sub).
//! - [`is_secret_name`] and [`has_url_secret`]: what counts as a secret,
//!   defined once; [`redact_url`] and [`Redacted`]: addresses shown without
//!   one.

pub mod address;
pub mod chunks;
pub mod dead;
pub mod envelope;
pub mod handback;
pub mod held;
mod redact;
pub mod seconds;
pub mod sheets;
pub mod tokens;

pub use address::Env;
pub use chunks::{chunks_within, each_chunk};
pub use dead::{DeadQueue, ReceivedDead};
pub use envelope::{ATTEMPTS_ATTRIBUTE, DeadStamp, ID_ATTRIBUTE, REASON_ATTRIBUTE};
pub use handback::{
    CARRIED_ATTEMPTS_ATTRIBUTE, CARRIED_FAILURES_ATTRIBUTE, Carried, ORIGIN_ID_ATTRIBUTE,
};
pub use held::{HeldDeliveries, HeldDelivery, Letters};
pub use redact::{Redacted, has_url_secret, is_secret_name, redact_url};
pub use seconds::whole_seconds;
pub use sheets::{LEDGER_SUFFIX, RESULTS_SUFFIX, SheetLedger, SheetOptions, sibling_owner};
pub use tokens::TokenSplit;

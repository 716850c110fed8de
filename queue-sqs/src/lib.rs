//! forloop's Amazon SQS driver.
//!
//! # Layout
//!
//! A queue named `NAME` is four standard SQS queues, made by
//! [`SqsQueue::create`] (`runner queue create`):
//!
//! | queue | role |
//! | --- | --- |
//! | `NAME` | items; its `VisibilityTimeout` is the default lease and its `RedrivePolicy` moves an item to `NAME-dead` once it was received more than `max_attempts` times |
//! | `NAME-dead` | the dead-letter place, read by `runner dead list / requeue / purge` |
//! | `NAME-ledger` | the job ledger's book sheets ([`forloop_core::kit::SheetLedger`]); no redrive |
//! | `NAME-results` | the job ledger's receipt sheets (`runner results`); no redrive |
//!
//! A queue made before the ledger (no `NAME-ledger`) opens without one
//! (its [`Backend`](forloop_core::Backend)'s `ledger` is `None`, with
//! a note): its items go without a job and workers end by the backlog rule
//! until `runner queue create` adds the siblings.
//!
//! # Mapping onto the contract
//!
//! - publish: `SendMessageBatch` of at most 10 entries and at most the
//!   queue's `MaximumMessageSize` bytes in total (SQS's limits); one driver
//!   call of up to [`MAX_BATCH`] items sends its tens concurrently. Entries
//!   that fail on the server's side are sent again (three tries); entries SQS
//!   refuses are reported by their index in the batch. A call that fails
//!   part-way names exactly the items that went in (every ten, every
//!   round, a failed retry round included); since the tens go concurrently,
//!   those need not be a prefix of the batch.
//! - bodies: an item that is valid SQS text (UTF-8 without the control
//!   characters SQS refuses) is the message body unchanged, so any SQS client
//!   reads it as is. Other bytes travel base64-encoded, marked by the message
//!   attribute [`ENCODING_ATTRIBUTE`].
//! - pull: `ReceiveMessage` of up to 10 with the lease as `VisibilityTimeout`
//!   and a long poll of `wait` (whole seconds, at most 20); a pull of more
//!   than 10 sends one long poll and short polls for the rest, concurrently.
//!   attempt = `ApproximateReceiveCount` (plus what a hand-back carried, see
//!   below); lease token = the receipt handle.
//! - once a receive comes back empty, pulls short-poll (`WaitTimeSeconds=0`)
//!   every [`QUIET_POLL_EVERY`] until `wait` is up or an item comes, and go
//!   back to long polls after the first receive that brings something. A
//!   long poll cannot be called off: one left pending by a worker that
//!   exits after the drain takes the next item published, which then stays
//!   invisible for a whole lease (seen on fauxqs). The price is up to two
//!   requests a second per idle worker instead of one per `wait`.
//! - ack: `DeleteMessageBatch`. SQS answers success for a stale receipt
//!   handle and deletes nothing (so a lost lease cannot settle the item, as
//!   the contract wants), which means an ack cannot report a lost lease
//!   unless SQS calls the handle invalid.
//! - nack(d) and extend: `ChangeMessageVisibilityBatch`; a handle SQS calls
//!   invalid or not in flight is a lost lease. SQS caps a message's
//!   visibility at 12 hours from its receive: longer extensions are cut to
//!   what is left, and a lease with nothing left is reported lost.
//! - dead_letter(reason): first a `ChangeMessageVisibilityBatch` to one
//!   lease as the lease check (SQS refuses it for a receipt handle whose
//!   message was received again or deleted: that lease is reported lost and
//!   nothing is copied), then send the item in the kit's dead-letter
//!   envelope ([`REASON_ATTRIBUTE`], [`ATTEMPTS_ATTRIBUTE`] and its id,
//!   `forloop-dead-id`) to `NAME-dead`, then delete it. A delete that fails
//!   after the send leaves the item dead and live; the worker tries again
//!   and `dead list` / `dead requeue` show and requeue each id once. The
//!   driver keeps each held delivery's item until it is settled, for this
//!   ([`forloop_core::kit::HeldDeliveries`]).
//! - release (the hand-back of a stopping worker): SQS counts every receive,
//!   so a `ChangeMessageVisibility` to 0 would charge an attempt. Instead the
//!   same lease check, then the item is sent again as a new message with its
//!   attributes, its id ([`ORIGIN_ID_ATTRIBUTE`]) and the attempts it already
//!   had ([`CARRIED_ATTEMPTS_ATTRIBUTE`]), then the old delivery is deleted:
//!   three calls per ten items (visibility change, send, delete). Between the
//!   send and the delete the item is in the queue twice; a delete that fails
//!   there leaves both (at least once). The next pull takes the two
//!   attributes off and reports `carried + ApproximateReceiveCount`; since
//!   the redrive policy counts only the copy's receives, a copy delivered
//!   past `maxReceiveCount` in all is dead-lettered by the pull itself.
//! - connect refuses a queue without a redrive policy (every delivery would
//!   read as attempt 1 and a failing item would loop forever), naming
//!   `runner queue create` and the `aws sqs set-queue-attributes` command.
//! - fail_attempt (a failed attempt, counted apart from lapses): the
//!   backend's delivery count cannot tell the two, and a message cannot be
//!   changed, so the item is sent again like a hand-back, carrying its
//!   failures too ([`CARRIED_FAILURES_ATTRIBUTE`]; the failed attempt is
//!   charged), then the old delivery is settled. The copy goes at once
//!   (no `delayed_fail`): the worker holds the lease for the backoff first.
//! - dead list / requeue / purge: the kit's loops ([`forloop_core::kit::dead`])
//!   over `NAME-dead`; a requeued item is a new message with the attributes
//!   it had before it died and a fresh receive count.
//! - backlog: `ApproximateNumberOfMessages` (+ `…Delayed`) as ready,
//!   `…NotVisible` as in flight, and the dead queue's total as dead, all
//!   [`Count::Approximate`](forloop_core::Count::Approximate). AWS says the numbers settle within about a
//!   minute, so [`Capabilities::backlog_staleness`](forloop_core::Capabilities::backlog_staleness) is 90 s (AWS's minute and a margin) unless
//!   [`STALENESS_VAR`] says otherwise (fauxqs counts from its own store
//!   on every call, so `0s` is right there).

#![deny(missing_docs)]

mod address;
mod admin;
mod batch;
mod client;
mod codec;
mod dead;
mod driver;
mod error;
mod ledger;
mod queue;

pub use address::{DEAD_SUFFIX, DEFAULT_STALENESS, STALENESS_VAR, SqsAddress};
pub use batch::{MAX_BATCH, SQS_BATCH};
pub use client::client;
pub use codec::ENCODING_ATTRIBUTE;
pub use driver::SqsDriver;
pub use forloop_core::kit::{
    ATTEMPTS_ATTRIBUTE, CARRIED_ATTEMPTS_ATTRIBUTE, CARRIED_FAILURES_ATTRIBUTE,
    ORIGIN_ID_ATTRIBUTE, REASON_ATTRIBUTE,
};
pub use ledger::SHEET_LEASE;
pub use queue::{DEFAULT_MAX_PAYLOAD, MAX_VISIBILITY, QUIET_POLL_EVERY, SqsQueue};

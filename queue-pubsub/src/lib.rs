//! forloop's Google Cloud Pub/Sub driver, the backend forloop exists for.
//!
//! # Layout
//!
//! A queue named `NAME` in project `PROJECT` is eight resources, made by
//! [`PubsubQueue::create`] (`runner queue create`):
//!
//! | resource | name | role |
//! | --- | --- | --- |
//! | topic | `NAME` | items are published here |
//! | subscription | `NAME-workers` | workers pull from here; its ack deadline is the lease; its dead-letter policy forwards an item after `max_attempts` deliveries (Pub/Sub allows 5 to 100) |
//! | topic | `NAME-dead` | the dead-letter place |
//! | subscription | `NAME-dead-keep` | keeps dead items for `runner dead list / requeue / purge` |
//! | topic, subscription | `NAME-ledger`, `NAME-ledger-workers` | the job ledger's book sheets ([`forloop_core::kit::SheetLedger`]); no dead-letter policy |
//! | topic, subscription | `NAME-results`, `NAME-results-workers` | the job ledger's receipt sheets (`runner results`); no dead-letter policy |
//!
//! A queue made before the ledger (no `NAME-ledger-workers`) opens without
//! one (its [`Backend`](forloop_core::Backend)'s `ledger` is `None`,
//! with a note): its items go without a job and workers end by the backlog
//! rule until `runner queue create` adds the siblings.
//!
//! # Mapping onto the contract
//!
//! - publish: one `Publish` RPC per run of up to 1,000 items and 9 MB
//!   (Pub/Sub refuses requests over 10 MB), one after another, so a failure
//!   part-way reports exactly the items before it as in (the client
//!   library's buffering publisher is not used: its default bundles are tiny).
//! - pull: a unary `Pull` whose deadline travels to the server as
//!   `grpc-timeout`, so the server ends the wait. A pull is never cancelled
//!   from the client: the emulator keeps a cancelled pull registered and it
//!   swallows the next message until its ack deadline. tonic enforces the
//!   same deadline on the client; when its timer fires before the server's
//!   empty answer, the pull ends `Cancelled` after the whole wait, which is
//!   an empty pull too, not a failure. The flip side: a server that accepts
//!   and never answers (a black-holed network) also reads as empty pulls;
//!   the other calls (ack, modack, publish) do fail there.
//! - ack: `Acknowledge`; nack(d) and extend: `ModifyAckDeadline` (0 to 600 s;
//!   the worker's lease keeper renews longer leases).
//! - no retry policy on the subscription, on purpose: the worker's own backoff
//!   is exact (a nack with delay is a modack), and a retry policy would also
//!   delay the delay-0 handback of a stopping worker, which must be at once.
//! - attempt: `delivery_attempt` (plus what a hand-back carried, see below),
//!   which Pub/Sub sets only when the subscription has a dead-letter policy;
//!   `create` always sets one, and connect refuses a subscription without
//!   one (every delivery would read as attempt 1 and a failing item would
//!   loop forever), naming the `gcloud pubsub subscriptions update` command.
//! - lease check: Pub/Sub answers a modack on an expired ack id with
//!   success (the official emulator does, and so does GCP unless the
//!   subscription has exactly-once delivery), so the driver keeps its own
//!   record of each lease's end: counted from the pull's answer, moved by
//!   each renewal sent before it; a renewal sent after it revives nothing
//!   and reports the lease lost.
//! - dead_letter(reason): check the lease on that record (gone: reported
//!   lost, nothing copied), renew it by a modack, publish the item in the
//!   kit's dead-letter envelope ([`REASON_ATTRIBUTE`], [`ATTEMPTS_ATTRIBUTE`]
//!   and its id, `forloop-dead-id`) to `NAME-dead`, then ack it. An ack that
//!   fails after the publish leaves the item dead and live; `dead list` /
//!   `dead requeue` show and requeue each id once. The driver keeps each
//!   held delivery's item until it is settled, for this
//!   ([`forloop_core::kit::HeldDeliveries`]).
//! - release (the hand-back of a stopping worker): a modack to 0 would count
//!   as a delivery (`delivery_attempt` rises). Instead, the same lease check
//!   and modack, then the item is published again to `NAME` with its
//!   attributes, its id ([`ORIGIN_ID_ATTRIBUTE`]) and the attempts it
//!   already had ([`CARRIED_ATTEMPTS_ATTRIBUTE`]), then the old delivery is
//!   acked: three calls (modack, publish, ack). Between the publish and the
//!   ack the item is in the queue twice, and an ack that fails there leaves
//!   both (at least once). The next pull takes the two attributes off and
//!   reports `carried + delivery_attempt`; since the dead-letter policy
//!   counts only the copy's deliveries, a copy delivered past
//!   `max_delivery_attempts` in all is dead-lettered by the pull itself.
//! - fail_attempt (a failed attempt, counted apart from lapses): the
//!   backend's delivery count cannot tell the two, and a message cannot be
//!   changed, so the item is sent again like a hand-back, carrying its
//!   failures too ([`CARRIED_FAILURES_ATTRIBUTE`]; the failed attempt is
//!   charged), then the old delivery is settled. The copy goes at once
//!   (no `delayed_fail`): the worker holds the lease for the backoff first.
//! - dead list / requeue / purge: the kit's loops ([`forloop_core::kit::dead`])
//!   over `NAME-dead-keep`; the envelope and the dead-letter policy's
//!   `CloudPubSubDeadLetter*` attributes come off, so a requeued item is
//!   published with the attributes it had before it died.
//! - backlog: Pub/Sub has no exact counts; see below.
//!
//! # Backlog counts
//!
//! On GCP the driver reads `subscription/num_undelivered_messages` from Cloud
//! Monitoring (the [`monitoring`] module). That metric is sampled once a
//! minute and becomes visible up to two minutes later, so:
//!
//! - counts are [`Count::Approximate`](forloop_core::Count::Approximate), with [`Backlog::age`](forloop_core::Backlog::age) the age of the
//!   newest point; the metric counts leased items too, so a non-zero reading
//!   is `ready ~n` with `in_flight` unknown, and zero is zero for both;
//! - `backlog_staleness` is [`monitoring::STALENESS`] (4 minutes): points
//!   older than that are not used, and the worker's drain detector needs
//!   zero readings spanning that long before it exits. A worker therefore
//!   exits about 4 minutes after the queue is empty, and does not exit while
//!   another worker still holds leased items (they are in the count);
//! - no points (a new subscription has none for its first minutes, whatever
//!   it holds), stale points and every Monitoring error (`roles/monitoring.viewer`
//!   missing, API disabled, timeout) read as [`Count::Unknown`](forloop_core::Count::Unknown), never as
//!   empty: the worker falls back to its idle window of empty pulls, no
//!   shorter than the staleness bound. Errors are logged once per kind;
//! - the workers' identity needs `roles/monitoring.viewer` on the project
//!   (on GKE, the Google service account of their Workload Identity).
//!
//! With `PUBSUB_EMULATOR_HOST` there is no monitoring API: counts are unknown
//! and the staleness is zero, so only `WorkerConfig::idle_window` decides
//! (`runner status` says so). [`PubsubAddress::with_monitoring`] or
//! `FORLOOP_MONITORING_ENDPOINT=URL` points the reader elsewhere (a loopback
//! fake in tests; plain `http://` endpoints get no token), and
//! `FORLOOP_MONITORING_ENDPOINT=off` turns it off.
//!
//! These counts are what workers end by for items without a job and on
//! queues made before the ledger. Items of a job end by the job ledger
//! (`NAME-ledger`, `NAME-results`, see the layout), exactly and whatever
//! Monitoring says; how, and what it costs, is in `docs/design/job-ledger.md`.

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
pub mod monitoring;
mod queue;

pub use address::{BacklogSource, EMULATOR_ENV, MONITORING_ENV, PROJECT_ENV, PubsubAddress};
pub use codec::{MAX_BATCH, MAX_PAYLOAD};
pub use dead::DELIVERY_COUNT_ATTRIBUTE;
pub use driver::PubsubDriver;
pub use forloop_core::kit::{
    ATTEMPTS_ATTRIBUTE, CARRIED_ATTEMPTS_ATTRIBUTE, CARRIED_FAILURES_ATTRIBUTE,
    ORIGIN_ID_ATTRIBUTE, REASON_ATTRIBUTE,
};
pub use ledger::{SHEET_LEASE, SHEET_WAIT};
pub use queue::PubsubQueue;

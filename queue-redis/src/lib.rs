//! forloop's Redis queue driver.
//!
//! # Design
//!
//! Each queue is twelve keys, plus four per job, sharing one hash tag,
//! `{forloop:NAME}`. The
//! driver talks to one server (or a primary behind a proxy or Sentinel
//! address); it does not speak the Redis Cluster protocol and does not
//! follow `MOVED` redirects, so it does not run on Redis Cluster today. The
//! shared hash tag puts every key of a queue in one slot and every script
//! touches only its queue's keys, so a cluster-aware client could run the
//! same scripts unchanged.
//! Lists and sorted sets hold members `ID:ATTEMPTS`, the item's id and how
//! many times it has been delivered, so the count travels with the item and
//! a lease names the exact delivery it belongs to:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `ready` | list | members waiting for a worker, FIFO |
//! | `leased` | sorted set | lease `ID:ATTEMPT:NONCE` → deadline (ms, server clock) |
//! | `delayed` | sorted set | member → when a nacked item is due again |
//! | `payload`, `attrs` | hashes | id → the item, enveloped with its job and attributes when it has either (`codec::pack`); `attrs`: id → attributes of items stored before envelopes |
//! | `dead`, `reason` | list, hash | dead-lettered members, oldest first; id → why |
//! | `seq` | string | the id counter |
//! | `wake` | list | markers that wake blocked pullers |
//! | `jobs`, `settled`, `ledger` | hash, hash, set | the ledger: manifests, first/last settlement, job names (see Jobs) |
//! | `job:JOB:submitted`, `:done`, `:dead`, `:receipts` | bitmaps, hash | one job's items by seq, its receipts |
//!
//! Every operation is one Lua script (`src/lua/`), so each is atomic and one
//! round trip, and each does a fixed number of Redis calls per batch
//! (`HMGET`, `ZMSCORE`, variadic `ZADD`/`ZREM`/`HDEL`), not per item. Why Lua over a list + sorted set rather than Streams with a
//! consumer group: Streams measure idle time per consumer but cannot stop an
//! old consumer from `XACK`ing an entry that was claimed by another, have no
//! delayed redelivery, and mix nacked and running entries in one pending list,
//! which makes an exact backlog impossible. With Lua:
//!
//! - the lease deadline is set at delivery, `TIME` + lease, on the server's
//!   clock (not at enqueue, and not on a worker's clock);
//! - a lease token is `ID:ATTEMPT:NONCE`, the `leased` member, with a nonce
//!   drawn at random by the puller for each delivery; ack, nack, extend and
//!   dead-letter act only while that member's deadline is ahead, so a worker
//!   that lost its lease cannot ack the item its successor holds. The nonce
//!   is what makes a token name one delivery forever: ids and attempts
//!   repeat (`dead requeue` starts attempts over and keeps the id; a server
//!   that lost its keys, failed over to a lagging replica or was restored
//!   from an older RDB counts `seq` from an earlier point), a random nonce
//!   kept nowhere on the server does not;
//! - extend (`ZADD XX`) and nack with delay (`ZADD delayed`) are exact to the
//!   millisecond; expired leases and due nacks are reaped at the start of every
//!   pull and settle call, with the worker's `max_attempts`;
//! - reads change nothing: `backlog` counts a lapsed lease as ready without
//!   moving it, and the dead-letter listing only lists. `max_attempts` is the
//!   workers' setting, so a `runner status` or `runner wait` (whose own
//!   `--max-attempts` is whatever its user typed, default 5) must not apply
//!   it: a reaping read once buried items after 5 deliveries under workers
//!   on 10. Why pure reads rather than storing `max_attempts` in a key at the
//!   first connect: no hidden state, so a job restarted with a new
//!   `--max-attempts` uses it, and no rule about which client writes first.
//!   The cost: a lapsed lease on its last attempt shows as ready, not dead,
//!   until the next pull or settle call buries it;
//! - an item released after `max_attempts` deliveries goes to `dead` with a
//!   reason, so a worker that crashes on an item cannot loop forever (the
//!   runner sizes it `--max-attempts + --max-lapses`);
//! - a failed attempt (`fail_attempt`, `nack.lua` with its failed flag) is a nack that also
//!   counts the failure in the hash `failed` (id → n), in the same script;
//!   the pull script reads it with the item (one `HMGET` per pull, only
//!   while some item has failed), so a delivery tells its failures from
//!   its lapses; the field goes with the item (ack, burial, requeue);
//! - the backlog is exact: `LLEN ready + ZCARD delayed` plus lapsed leases,
//!   the live leases, `LLEN dead`.
//!
//! Bounds: a settle call is cut into script calls of 1000 tokens (Lua's
//! `unpack` takes about 8000 values), requeue and purge move 1000 dead items
//! per script call and loop from the client, so no call holds the server
//! for long; `delete` (`runner queue delete`) `UNLINK`s the queue's keys.
//!
//! # Jobs
//!
//! The queue keeps its jobs' ledger ([`RedisLedger`], returned by
//! the driver's open, beside the queue in its [`Backend`](forloop_core::Backend)) in the keys
//! above, beside its items: it moves with the queue, two clients of a queue
//! share it, and `delete` removes it. A
//! job's submitted, done and dead items are bitmaps (bit = seq: 125 KB per
//! million items each, counted by `BITCOUNT`), its receipts a hash (a
//! field per ack batch of done ones, a field per dead one), its manifest a
//! field of `jobs`. Each (job, seq) counts once and done beats dead inside
//! one script (`record.lua`, `ack_recorded.lua`), so receipts may be
//! re-sent freely. An item of a job that Redis buries by itself (its lease
//! lapsed on its last attempt, reaped by the next pull or settle call) gets
//! its dead receipt in the same script as the burial (`common.lua`, read from
//! the item's stored value), so the job still ends.
//!
//! What it costs:
//!
//! - **per ack batch**: nothing more: the receipts travel in the ack's own
//!   script call (`ack_recorded.lua`), the done ones as one hash field of
//!   short JSON lines (`src/receipts.rs`, ~35 bytes plus the item per
//!   receipt) and a bitmap window ORed into `done` and `submitted` with
//!   one `GETRANGE`/`SETRANGE` each; a dead one is a field of its own.
//! - **per item**: its job and seq in its stored value (`codec::pack`,
//!   ~20 bytes with a short job name, read by every pull); two bits, and
//!   its receipt line until the queue is deleted. Measured on Redis 7.0
//!   (docs/BENCHMARKS.md): 47.3 k server instructions per item published
//!   and processed with a job, against 44.0 k without.
//! - **per worker**: `jobs()` about once a second while idle: one script
//!   call (`jobs.lua`) reading every manifest and three `BITCOUNT`s per job:
//!   about 30 µs of server time for a job of 100 000 items.
//!
//! Scripts name the per-job keys themselves (job names are data), all under
//! the queue's hash tag, so they stay in the queue's slot.
//!
//! Pulls that find nothing block with `BLPOP` on `wake` (pushed by publish,
//! nack and reaping), on a connection of their own whose response timeout is
//! longer than the block; everything else shares one auto-reconnecting
//! `ConnectionManager`, which pipelines concurrent calls.

#![deny(missing_docs)]

mod codec;
mod driver;
mod error;
mod keys;
mod lease;
mod ledger;
mod link;
mod queue;
mod receipts;

pub use driver::RedisDriver;
pub use error::redact;
pub use keys::{DEFAULT_URL, URL_ENV};
pub use ledger::RedisLedger;
pub use queue::{MAX_BATCH, MAX_PAYLOAD, RedisQueue};

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
//!   reason, so a worker that crashes on an item cannot loop forever;
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
//! [`WorkQueue::ledger`]) in the keys above, beside its items: it moves with
//! the queue, two clients of a queue share it, and `delete` removes it. A
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
mod ledger;
mod receipts;

pub use driver::RedisDriver;
pub use error::redact;
pub use keys::{DEFAULT_URL, URL_ENV};
pub use ledger::RedisLedger;

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use forloop_core::job::{JobItem, Ledger, Receipt, ReceiptRef};
use forloop_core::kit::{TokenSplit, each_chunk};
use forloop_core::queue::check_payload_sizes;
use forloop_core::{
    Backlog, Capabilities, Count, DeadLetter, Delivery, LeaseReport, LeaseToken, Message,
    MessageId, QueueConfig, QueueError, QueueErrorKind, WorkQueue,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use tokio::time::Instant;

use crate::codec::{as_bytes, as_i64, as_u64, decode_attributes, encode_attributes, pack, unpack};
use crate::error::{error, malformed};

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

struct Scripts {
    publish: Script,
    pull: Script,
    ack: Script,
    ack_recorded: Script,
    nack: Script,
    release: Script,
    extend: Script,
    dead_letter: Script,
    backlog: Script,
    dead_list: Script,
    dead_requeue: Script,
    dead_purge: Script,
    record: Script,
    begin: Script,
    jobs: Script,
    seqs: Script,
    delete: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            publish: script!("publish.lua"),
            pull: script!("pull.lua"),
            ack: script!("ack.lua"),
            ack_recorded: script!("ack_recorded.lua"),
            nack: script!("nack.lua"),
            release: script!("release.lua"),
            extend: script!("extend.lua"),
            dead_letter: script!("dead_letter.lua"),
            backlog: script!("backlog.lua"),
            dead_list: script!("dead_list.lua"),
            dead_requeue: script!("dead_requeue.lua"),
            dead_purge: script!("dead_purge.lua"),
            record: script!("record.lua"),
            begin: script!("begin.lua"),
            jobs: script!("jobs.lua"),
            seqs: script!("seqs.lua"),
            delete: script!("delete.lua"),
        }
    }
}

/// Largest item accepted, in bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Most items in one publish call (one Lua script call).
pub const MAX_BATCH: usize = 1000;

/// What every call needs, shared by the queue and its ledger: the
/// auto-reconnecting connection (its response timeout is every call's
/// deadline), the queue's keys in the scripts' order, the scripts.
#[derive(Clone)]
pub(crate) struct Link {
    connection: ConnectionManager,
    keys: Arc<[String; keys::PARTS.len()]>,
    scripts: Arc<Scripts>,
    shown_url: String,
    name: String,
}

impl Link {
    /// A failed call `what`, naming the queue and the server (no password).
    pub(crate) fn fail(&self, what: &str, e: redis::RedisError) -> QueueError {
        failure(what, &self.name, &self.shown_url, e)
    }

    /// Run `script` with the queue's keys and the arguments `args` adds.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, QueueError> {
        let mut invocation = script.prepare_invoke();
        for key in self.keys.iter() {
            invocation.key(key);
        }
        args(&mut invocation);
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| self.fail(what, e))
    }

    /// Send `pipe` and wait for it to finish.
    pub(crate) async fn pipe(&self, what: &str, pipe: &redis::Pipeline) -> Result<(), QueueError> {
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(|e| self.fail(what, e))
    }

    /// One command's reply.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, QueueError> {
        let mut connection = self.connection.clone();
        cmd.query_async(&mut connection)
            .await
            .map_err(|e| self.fail(what, e))
    }
}

/// A failed call `what` on queue `name` at `url`.
fn failure(what: &str, name: &str, url: &str, e: redis::RedisError) -> QueueError {
    error(&format!("{what} (queue `{name}`)"), url, e)
}

/// A forloop queue in Redis.
pub struct RedisQueue {
    client: Client,
    link: Link,
    /// Connections for blocking pulls, reused; one per concurrent puller.
    blocking: Mutex<Vec<MultiplexedConnection>>,
    config: QueueConfig,
    ledger: Arc<RedisLedger>,
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("url", &self.link.shown_url)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Connect to the queue `config.name` on the server at `url`
    /// (`redis://[:password@]host:port[/db]`, or `rediss://` with the `tls` feature).
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        let shown_url = redact(url);
        let client = Client::open(url).map_err(|e| {
            QueueError::new(
                QueueErrorKind::Invalid,
                format!("`{shown_url}` is not a Redis URL (expected redis://host:port[/db])"),
            )
            .with_source(e)
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let connection = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(|e| error("connection", url, e))?;
        let link = Link {
            connection,
            keys: Arc::new(keys::PARTS.map(|part| keys::key(&config.name, part))),
            scripts: Arc::new(Scripts::new()),
            shown_url,
            name: config.name.to_string(),
        };
        Ok(Self {
            client,
            ledger: Arc::new(RedisLedger::new(link.clone())),
            link,
            blocking: Mutex::new(Vec::new()),
            config,
        })
    }

    /// Connect using `REDIS_URL`, or [`DEFAULT_URL`].
    pub async fn from_env(config: QueueConfig) -> Result<Self, QueueError> {
        Self::connect(&keys::server_url(None), config).await
    }

    fn fail(&self, what: &str, e: redis::RedisError) -> QueueError {
        self.link.fail(what, e)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &str,
        script: &Script,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, QueueError> {
        self.link.run(what, script, args).await
    }

    /// This queue's jobs (also [`WorkQueue::ledger`]).
    pub fn jobs_ledger(&self) -> Arc<RedisLedger> {
        Arc::clone(&self.ledger)
    }

    /// Run a settle script over tokens, [`SETTLE_CHUNK`] per script call
    /// (all sent at once), `head` its first arguments; each reply lists
    /// lost positions (1-based).
    async fn settle(
        &self,
        what: &str,
        script: &Script,
        tokens: &[LeaseToken],
        head: &[String],
    ) -> Result<LeaseReport, QueueError> {
        self.settle_after(what, script, tokens, &|inv| {
            for arg in head {
                inv.arg(arg);
            }
        })
        .await
    }

    /// [`RedisQueue::settle`], the first arguments written by `head`.
    async fn settle_after(
        &self,
        what: &str,
        script: &Script,
        tokens: &[LeaseToken],
        head: &(dyn Fn(&mut redis::ScriptInvocation<'_>) + Sync),
    ) -> Result<LeaseReport, QueueError> {
        let split = TokenSplit::new(tokens, lease_id);
        let mut report = LeaseReport {
            lost: split.lost.clone(),
        };
        let positions: Vec<usize> = (0..split.known.len()).collect();
        let lost = each_chunk(&positions, SETTLE_CHUNK, |chunk| {
            let first = chunk[0];
            let known = &split.known[first..first + chunk.len()];
            async move {
                let lost: Vec<usize> = self
                    .run(what, script, |inv| {
                        head(inv);
                        for (id, token) in known {
                            inv.arg(token.as_text().unwrap_or_default()).arg(id);
                        }
                    })
                    .await?;
                // 1-based in the chunk, 0-based in `split.known`.
                Ok(lost
                    .into_iter()
                    .map(|i| (first + i).wrapping_sub(1))
                    .collect())
            }
        })
        .await?;
        report.lost.extend(split.at(lost));
        Ok(report)
    }

    /// Run a dead-list script (requeue, purge) a batch at a time until a
    /// batch comes back short; returns how many items it moved in all.
    async fn each_dead_batch(&self, what: &str, script: &Script) -> Result<u64, QueueError> {
        let mut total = 0;
        loop {
            let n: u64 = self
                .run(what, script, |inv| {
                    inv.arg(DEAD_BATCH);
                })
                .await?;
            total += n;
            if n < DEAD_BATCH {
                return Ok(total);
            }
        }
    }

    /// Remove the queue: every key, items, dead letters and jobs' ledgers
    /// included (`runner queue delete`, `delete.lua`). `UNLINK`, so the
    /// server frees a large queue in the background instead of blocking.
    /// False when there was nothing.
    pub async fn delete(&self) -> Result<bool, QueueError> {
        let removed: u64 = self
            .run("delete", &self.link.scripts.delete, |_| {})
            .await?;
        Ok(removed > 0)
    }

    async fn blocking_connection(&self) -> Result<MultiplexedConnection, QueueError> {
        if let Some(connection) = self
            .blocking
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
        {
            return Ok(connection);
        }
        // A pull blocks for at most `wait`, capped below; the response timeout
        // must outlast the block, or every idle pull would fail.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(MAX_BLOCK + Duration::from_secs(5)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.fail("connection", e))
    }

    /// Block until a wake marker arrives (true) or `timeout` passes (false).
    async fn block(&self, timeout: Duration) -> Result<bool, QueueError> {
        let mut connection = self.blocking_connection().await?;
        let seconds = timeout
            .clamp(Duration::from_millis(10), MAX_BLOCK)
            .as_secs_f64();
        let result: Result<Value, _> = redis::cmd("BLPOP")
            .arg(&self.link.keys[8])
            .arg(seconds)
            .query_async(&mut connection)
            .await;
        match result {
            Ok(value) => {
                self.blocking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(connection);
                Ok(!matches!(value, Value::Nil))
            }
            // Drop the connection: it may be broken or still blocked.
            Err(e) => Err(self.fail("blocking pull", e)),
        }
    }
}

/// Most tokens in one settle script call: Lua's `unpack` takes about 8000
/// values, and a bounded call keeps the server free for others.
pub(crate) const SETTLE_CHUNK: usize = 1000;

/// Most dead items one requeue or purge script call moves.
const DEAD_BATCH: u64 = 1000;

/// Longest single BLPOP; a longer wait loops.
const MAX_BLOCK: Duration = Duration::from_secs(20);

/// The message a stored value holds ([`codec::pack`]), its attributes
/// from `attrs` (the `attrs` hash's entry, for an item stored before
/// envelopes) when the value is bare. The job's name is shared with
/// `known_job` ([`JobItem::shared`]).
fn open(value: Bytes, attrs: &Value, known_job: &mut Option<Arc<str>>) -> Message {
    let stored = unpack(value);
    let encoded = stored.attributes.unwrap_or_else(|| as_bytes(attrs));
    let attributes = decode_attributes(&encoded);
    match stored.job {
        Some((seq, name)) => Message {
            payload: stored.payload,
            attributes,
            job: Some(JobItem::shared(
                &String::from_utf8_lossy(&name),
                seq,
                known_job,
            )),
        },
        None => Message::from_wire(stored.payload, attributes, known_job),
    }
}

/// A lease `ID:ATTEMPT:NONCE` (see `src/lua/common.lua`): its id and attempt.
fn lease_parts(lease: &str) -> Option<(&str, u64)> {
    let mut parts = lease.splitn(3, ':');
    let id = parts.next()?;
    let attempt = parts.next()?.parse().ok()?;
    parts.next()?;
    id.parse::<u64>().ok()?;
    Some((id, attempt))
}

/// The id of a token this driver made; `None` for any other token, which
/// names no lease here and is reported lost.
fn lease_id(token: &LeaseToken) -> Option<String> {
    token
        .as_text()
        .and_then(lease_parts)
        .map(|(id, _)| id.to_string())
}

/// 64 random bits for one pull's leases, in hex. Random rather than
/// counted, so no state on the server (which can lose it) and no state in
/// this process (which can restart) makes a nonce repeat: SipHash under the
/// standard library's randomly seeded keys, over a process-wide counter.
fn nonce() -> String {
    static PULLS: AtomicU64 = AtomicU64::new(0);
    let n = PULLS.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}",
        RandomState::new().hash_one((n, std::process::id()))
    )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl WorkQueue for RedisQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(MAX_PAYLOAD, MAX_BATCH)
            .with_deadlines(Duration::from_millis(10), Duration::from_secs(12 * 3600))
            .with_native_dead_letter(true)
            .with_delayed_nack(true)
            .with_exact_backlog()
    }

    async fn publish(&self, batch: Vec<Message>) -> Result<Vec<MessageId>, QueueError> {
        check_payload_sizes(&batch, MAX_PAYLOAD)?;
        if batch.len() > MAX_BATCH {
            return Err(QueueError::new(
                QueueErrorKind::Invalid,
                format!(
                    "a batch of {} items is over the redis driver's limit of {MAX_BATCH}",
                    batch.len()
                ),
            ));
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let n = batch.len() as u64;
        let first: u64 = self
            .run("publish", &self.link.scripts.publish, |inv| {
                inv.arg(n);
                for message in &batch {
                    let attributes = encode_attributes(&message.attributes);
                    inv.arg(&*pack(&message.payload, message.job.as_ref(), &attributes));
                }
            })
            .await?;
        Ok((first..first + n)
            .map(|id| Arc::from(id.to_string()))
            .collect())
    }

    async fn pull(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let until = Instant::now() + wait;
        // After a wake marker, one more look, then answer even if empty when
        // the queue reads drained (nothing leased or delayed either): the
        // marker may mean it was just drained, which the worker should see
        // now rather than at the end of its wait. A marker can also be stale
        // (a publish whose items a pull took without blocking): with a lease
        // or a delayed nack still to fall due, keep waiting for it, or a pull
        // would come back empty at once with an item due within its wait.
        let mut woken = false;
        loop {
            let sent = Instant::now();
            let reply: Vec<Value> = self
                .run("pull", &self.link.scripts.pull, |inv| {
                    inv.arg(max.clamp(1, MAX_BATCH))
                        .arg(millis(self.config.lease))
                        .arg(self.config.max_attempts)
                        .arg(nonce());
                })
                .await?;
            let (Some(now_ms), Some(next_ms)) = (
                reply.first().and_then(as_i64),
                reply.get(1).and_then(as_i64),
            ) else {
                return Err(malformed("pull"));
            };
            // The server starts the lease at its `now`; counting from when the
            // request left is never later than that.
            let deadline = sent + self.config.lease;
            let mut known_job = None;
            let none = Arc::new(BTreeMap::new());
            let deliveries: Vec<Delivery> = reply[2..]
                .chunks_exact(3)
                .filter_map(|chunk| {
                    let lease = String::from_utf8(as_bytes(&chunk[0]).to_vec()).ok()?;
                    let (id, attempt) = lease_parts(&lease)?;
                    let message = open(as_bytes(&chunk[1]), &chunk[2], &mut known_job);
                    let attributes = if message.attributes.is_empty() {
                        Arc::clone(&none)
                    } else {
                        Arc::new(message.attributes)
                    };
                    Some(Delivery {
                        id: Arc::from(id),
                        payload: message.payload,
                        attributes,
                        job: message.job,
                        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                        token: LeaseToken::new(lease),
                        deadline,
                    })
                })
                .collect();
            let now = Instant::now();
            if !deliveries.is_empty() || now >= until || (woken && next_ms < 0) {
                return Ok(deliveries);
            }
            let mut block = until - now;
            if next_ms >= 0 {
                let next = Duration::from_millis(u64::try_from(next_ms - now_ms).unwrap_or(0));
                block = block.min(next + Duration::from_millis(1));
            }
            woken = self.block(block).await?;
        }
    }

    async fn ack(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        let head = [self.config.max_attempts.to_string()];
        self.settle("ack", &self.link.scripts.ack, tokens, &head)
            .await
    }

    /// A worker's ack batch is one job's receipts and at most
    /// 1000 leases (a settle chunk): one `ack_recorded.lua` call, one round
    /// trip, where the receipts and the ack land together or not at all
    /// (two calls re-run an item whose ack fails after its receipt).
    /// Anything larger records, then acks.
    async fn ack_recorded(
        &self,
        tokens: &[LeaseToken],
        receipts: &[ReceiptRef<'_>],
    ) -> Result<LeaseReport, QueueError> {
        let receipts: Vec<Receipt> = receipts.iter().map(ReceiptRef::to_receipt).collect();
        let calls = ledger::record_calls(&receipts)?;
        let ([call], true) = (&calls[..], tokens.len() <= SETTLE_CHUNK) else {
            self.ledger.record(&receipts).await?;
            return self.ack(tokens).await;
        };
        let max_attempts = self.config.max_attempts;
        self.settle_after(
            "receipt and ack",
            &self.link.scripts.ack_recorded,
            tokens,
            &|inv| {
                inv.arg(call.arg_count());
                call.args(inv);
                inv.arg(max_attempts);
            },
        )
        .await
    }

    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let head = [
            millis(delay).to_string(),
            self.config.max_attempts.to_string(),
        ];
        self.settle("nack", &self.link.scripts.nack, tokens, &head)
            .await
    }

    /// Back to the front of `ready` with the delivery uncounted
    /// (`release.lua`): a hand-back costs no attempt.
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.settle("release", &self.link.scripts.release, tokens, &[])
            .await
    }

    async fn extend_deadline(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let lease = lease.min(self.capabilities().max_deadline);
        self.settle(
            "extend",
            &self.link.scripts.extend,
            tokens,
            &[millis(lease).to_string()],
        )
        .await
    }

    async fn dead_letter(
        &self,
        tokens: &[LeaseToken],
        reason: &str,
    ) -> Result<LeaseReport, QueueError> {
        self.settle(
            "dead-letter",
            &self.link.scripts.dead_letter,
            tokens,
            &[reason.to_string()],
        )
        .await
    }

    async fn backlog(&self) -> Result<Backlog, QueueError> {
        let counts: Vec<u64> = self
            .run("backlog", &self.link.scripts.backlog, |_| {})
            .await?;
        let [ready, in_flight, dead] = counts[..] else {
            return Err(malformed("backlog"));
        };
        Ok(Backlog {
            ready: Count::Exact(ready),
            in_flight: Count::Exact(in_flight),
            dead: Count::Exact(dead),
            age: Duration::ZERO,
        })
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let reply: Vec<Value> = self
            .run("dead list", &self.link.scripts.dead_list, |inv| {
                inv.arg(limit.max(1));
            })
            .await?;
        let mut known_job = None;
        Ok(reply
            .chunks_exact(5)
            .map(|chunk| DeadLetter {
                id: Arc::from(String::from_utf8_lossy(&as_bytes(&chunk[0])).as_ref()),
                attempts: as_u64(&chunk[1])
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                reason: String::from_utf8_lossy(&as_bytes(&chunk[2])).into_owned(),
                message: open(as_bytes(&chunk[3]), &chunk[4], &mut known_job),
            })
            .take(limit)
            .collect())
    }

    async fn requeue_dead(&self) -> Result<u64, QueueError> {
        self.each_dead_batch("dead requeue", &self.link.scripts.dead_requeue)
            .await
    }

    async fn purge_dead(&self) -> Result<u64, QueueError> {
        self.each_dead_batch("dead purge", &self.link.scripts.dead_purge)
            .await
    }

    /// The jobs' ledger, in this queue's keys ([`RedisLedger`]).
    fn ledger(&self) -> Option<Arc<dyn forloop_core::job::Ledger>> {
        Some(self.jobs_ledger())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_drivers_leases_are_read_and_nonces_differ() {
        assert_eq!(lease_parts("12:3:00ff.0"), Some(("12", 3)));
        assert_eq!(lease_parts("12:3"), None, "a lease without a nonce");
        assert_eq!(lease_parts("x:3:n"), None);
        assert_eq!(lease_id(&LeaseToken::from_numbers(12, 3)), None);
        assert_eq!(
            lease_id(&LeaseToken::new("12:3:ab.1")).as_deref(),
            Some("12")
        );
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn errors_name_the_queue_and_never_the_password() {
        let e = failure(
            "ledger record",
            "videos",
            "redis://:hunter2@host:6379",
            redis::RedisError::from((redis::ErrorKind::Io, "down")),
        );
        let text = e.to_string();
        assert!(text.contains("ledger record (queue `videos`)"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(e.kind(), QueueErrorKind::Unavailable);
    }
}

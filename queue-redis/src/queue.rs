//! The queue: [`RedisQueue`] and its [`WorkQueue`] methods, each one script
//! call (a settle call one per [`SETTLE_CHUNK`] tokens), and the blocking
//! wait of a pull that found nothing.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use forloop_core::queue::check_payload_sizes;
use forloop_core::{
    Backend, Backlog, Capabilities, Count, DeadLetter, Delivery, Item, LeaseReport, LeaseToken,
    MessageId, QueueConfig, QueueError, QueueErrorKind, WorkQueue,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script, Value};
use tokio::time::Instant;

use crate::codec::{as_bytes, as_i64, as_u64, encode_attributes, open, pack};
use crate::error::malformed;
use crate::keys;
use crate::lease::{lease_parts, nonce};
use crate::ledger::RedisLedger;
use crate::link::Link;

/// Largest item accepted, in bytes.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Most items in one publish call (one Lua script call).
pub const MAX_BATCH: usize = 1000;

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
        let (client, link) = Link::connect(url, &config.name).await?;
        Ok(Self {
            client,
            ledger: Arc::new(RedisLedger::new(link.clone(), config.max_attempts)),
            link,
            blocking: Mutex::new(Vec::new()),
            config,
        })
    }

    /// Connect using `REDIS_URL`, or [`DEFAULT_URL`](crate::DEFAULT_URL).
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

    /// This queue's jobs, kept in its keys.
    pub fn jobs_ledger(&self) -> Arc<RedisLedger> {
        Arc::clone(&self.ledger)
    }

    /// This queue and its ledger, as a worker or `submit` takes them.
    pub fn into_backend(self) -> Backend {
        let ledger = self.jobs_ledger();
        Backend::new(Arc::new(self)).with_ledger(ledger)
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
        self.link.settle_after(what, script, tokens, head).await
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

    /// Nack (`failed`: as a failed attempt, counted in the same script):
    /// `nack.lua`.
    async fn reschedule(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
        failed: bool,
    ) -> Result<LeaseReport, QueueError> {
        let head = [
            millis(delay).to_string(),
            self.config.max_attempts.to_string(),
            u8::from(failed).to_string(),
        ];
        let what = if failed { "fail" } else { "nack" };
        self.settle(what, &self.link.scripts.nack, tokens, &head)
            .await
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
            .arg(&self.link.keys.wake)
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

    /// `count` letters of the dead list from index `first`, oldest first
    /// (`dead_page.lua`), each with its member as it stands in the list, so
    /// a selective requeue names exactly the letter it looked at.
    async fn dead_page(
        &self,
        first: u64,
        count: usize,
        known_job: &mut Option<Arc<str>>,
    ) -> Result<Vec<(Bytes, DeadLetter)>, QueueError> {
        let reply: Vec<Value> = self
            .run("dead page", &self.link.scripts.dead_page, |inv| {
                inv.arg(first).arg(count);
            })
            .await?;
        Ok(reply
            .chunks_exact(6)
            .map(|chunk| {
                let letter = DeadLetter {
                    id: Arc::from(String::from_utf8_lossy(&as_bytes(&chunk[1])).as_ref()),
                    attempts: as_u64(&chunk[2])
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(0),
                    reason: String::from_utf8_lossy(&as_bytes(&chunk[3])).into_owned(),
                    item: open(as_bytes(&chunk[4]), &chunk[5], known_job),
                };
                (as_bytes(&chunk[0]), letter)
            })
            .collect())
    }
}

/// Most dead items one requeue or purge script call moves.
const DEAD_BATCH: u64 = 1000;

/// Dead items a selective requeue reads per page (and moves per call).
const DEAD_PAGE: usize = 500;

/// Longest single BLPOP; a longer wait loops.
const MAX_BLOCK: Duration = Duration::from_secs(20);

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl WorkQueue for RedisQueue {
    fn capabilities(&self) -> Capabilities {
        Capabilities::new(MAX_PAYLOAD, MAX_BATCH)
            .with_lease_range(Duration::from_millis(10), Duration::from_secs(12 * 3600))
            .with_native_dead_letter(true)
            .with_delayed_nack(true)
            .with_delayed_fail(true)
            .with_exact_backlog()
    }

    async fn publish(&self, batch: Vec<Item>) -> Result<Vec<MessageId>, QueueError> {
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
            let deliveries: Vec<Delivery> = reply[2..]
                .chunks_exact(4)
                .filter_map(|chunk| {
                    let lease = String::from_utf8(as_bytes(&chunk[0]).to_vec()).ok()?;
                    let (id, attempt) = lease_parts(&lease)?;
                    let failures = as_u64(&chunk[3]).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
                    Some(Delivery {
                        id: Arc::from(id),
                        item: open(as_bytes(&chunk[1]), &chunk[2], &mut known_job),
                        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                        failures: Some(failures.unwrap_or(0)),
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

    async fn nack(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.reschedule(tokens, delay, false).await
    }

    /// A nack that counts the failure in the item's `failed` field, in the
    /// same script (`nack.lua`).
    async fn fail_attempt(
        &self,
        tokens: &[LeaseToken],
        delay: Duration,
    ) -> Result<LeaseReport, QueueError> {
        self.reschedule(tokens, delay, true).await
    }

    /// Back to the front of `ready` with the delivery uncounted
    /// (`release.lua`): a hand-back costs no attempt.
    async fn release(&self, tokens: &[LeaseToken]) -> Result<LeaseReport, QueueError> {
        self.settle("release", &self.link.scripts.release, tokens, &[])
            .await
    }

    async fn extend_lease(
        &self,
        tokens: &[LeaseToken],
        lease: Duration,
    ) -> Result<LeaseReport, QueueError> {
        let lease = lease.min(self.capabilities().max_lease);
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

    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let page = self.dead_page(0, limit.max(1), &mut None).await?;
        Ok(page
            .into_iter()
            .map(|(_, letter)| letter)
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

    /// A page of the dead list at a time, oldest first: read it
    /// (`dead_page.lua`), pick in this process, then move the picked
    /// members in one script (`dead_requeue_members.lua`) that un-counts
    /// each in the step that moves it and skips one no longer there. So a
    /// letter buried while the page is picked from stays dead (it is past
    /// the page, or not picked), an item moves once even with two
    /// requeues at once, and a requeuer that dies between pages leaves
    /// every item in one place, counted once. The letters left stay in
    /// their order. Costs one `LREM` per moved item, each a walk from the
    /// head of the list past the letters left dead before it.
    async fn requeue_dead_where(
        &self,
        select: &forloop_core::DeadSelect<'_>,
        watch: Option<&dyn forloop_core::RequeueWatch>,
    ) -> Result<forloop_core::Requeued, QueueError> {
        if watch.is_some() {
            return Err(QueueError::unsupported(
                "tell a ledger of a requeue: Redis un-counts what it moves in the same script",
            ));
        }
        let mut done = forloop_core::Requeued::default();
        let mut start = 0u64;
        let mut known_job = None;
        loop {
            let letters = self.dead_page(start, DEAD_PAGE, &mut known_job).await?;
            let page = letters.len();
            let picked: Vec<Bytes> = letters
                .into_iter()
                .filter(|(_, letter)| select(letter))
                .map(|(member, _)| member)
                .collect();
            let moved: u64 = if picked.is_empty() {
                0
            } else {
                self.run(
                    "dead requeue",
                    &self.link.scripts.dead_requeue_members,
                    |inv| {
                        for member in &picked {
                            inv.arg(&member[..]);
                        }
                    },
                )
                .await?
            };
            done.moved += moved;
            done.left += (page - picked.len()) as u64;
            if page < DEAD_PAGE {
                return Ok(done);
            }
            start += page as u64 - moved;
        }
    }
}

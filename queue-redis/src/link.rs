//! The connection every call of a queue and its ledger shares: one
//! auto-reconnecting client whose response timeout is every call's
//! deadline, the queue's keys, and the Lua scripts they run with.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::kit::{TokenSplit, each_chunk};
use forloop_core::{LeaseReport, LeaseToken, QueueError, QueueErrorKind};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use crate::error::{error, redact};
use crate::keys::QueueKeys;
use crate::lease::lease_id;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/common.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// One script per operation: `common.lua`, then the operation's own file
/// (`src/lua/`).
pub(crate) struct Scripts {
    pub(crate) publish: Script,
    pub(crate) pull: Script,
    pub(crate) ack: Script,
    pub(crate) ack_recorded: Script,
    pub(crate) nack: Script,
    pub(crate) release: Script,
    pub(crate) extend: Script,
    pub(crate) dead_letter: Script,
    pub(crate) backlog: Script,
    pub(crate) dead_requeue: Script,
    pub(crate) dead_page: Script,
    pub(crate) dead_requeue_members: Script,
    pub(crate) dead_purge: Script,
    pub(crate) record: Script,
    pub(crate) begin: Script,
    pub(crate) jobs: Script,
    pub(crate) seqs: Script,
    pub(crate) delete: Script,
    pub(crate) dead_letter_recorded: Script,
    pub(crate) requeued: Script,
    pub(crate) cancel: Script,
    pub(crate) halt: Script,
    pub(crate) unhalt: Script,
    pub(crate) forget: Script,
    pub(crate) forgotten: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
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
            dead_requeue: script!("dead_requeue.lua"),
            dead_page: script!("dead_page.lua"),
            dead_requeue_members: script!("dead_requeue_members.lua"),
            dead_purge: script!("dead_purge.lua"),
            record: script!("record.lua"),
            begin: script!("begin.lua"),
            jobs: script!("jobs.lua"),
            seqs: script!("seqs.lua"),
            delete: script!("delete.lua"),
            dead_letter_recorded: script!("dead_letter_recorded.lua"),
            requeued: script!("requeued.lua"),
            cancel: script!("cancel.lua"),
            halt: script!("halt.lua"),
            unhalt: script!("unhalt.lua"),
            forget: script!("forget.lua"),
            forgotten: script!("forgotten.lua"),
        }
    }
}

/// Most tokens in one settle script call: Lua's `unpack` takes about 8000
/// values, and a bounded call keeps the server free for others.
pub(crate) const SETTLE_CHUNK: usize = 1000;

/// What every call needs, shared by the queue and its ledger: the
/// auto-reconnecting connection (its response timeout is every call's
/// deadline), the queue's keys by name, the scripts.
#[derive(Clone)]
pub(crate) struct Link {
    connection: ConnectionManager,
    pub(crate) keys: Arc<QueueKeys>,
    pub(crate) scripts: Arc<Scripts>,
    pub(crate) shown_url: String,
    pub(crate) name: String,
}

impl Link {
    /// Run a settle script over tokens, [`SETTLE_CHUNK`] per script call
    /// (all sent at once), the first arguments written by `head`; each
    /// reply lists lost positions (1-based).
    pub(crate) async fn settle_after(
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

    /// Connect to the queue `name` on the server at `url`: the client (for
    /// the blocking connections a pull opens) and the shared link.
    pub(crate) async fn connect(url: &str, name: &str) -> Result<(Client, Self), QueueError> {
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
        check_eviction(&mut connection.clone(), &shown_url).await;
        let link = Self {
            connection,
            keys: Arc::new(QueueKeys::new(name)),
            scripts: Arc::new(Scripts::new()),
            shown_url,
            name: name.to_string(),
        };
        Ok((client, link))
    }

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
        for key in self.keys.in_script_order() {
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

/// Warn when the server at `shown_url` may evict the queue's keys: a
/// `maxmemory-policy` of `allkeys-*` drops any key once the server is at
/// `maxmemory`, so a ledger bitmap or a queued item can vanish without an
/// error (`volatile-*` evicts only keys with a TTL, and the queue sets
/// none; `noeviction` refuses writes instead, which workers report). A
/// server that does not answer `CONFIG GET` (a managed one may rename it)
/// is not checked.
async fn check_eviction(connection: &mut ConnectionManager, shown_url: &str) {
    let reply: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(connection)
        .await;
    match reply {
        Ok(pair) => {
            if let Some(warning) = pair.get(1).and_then(|p| eviction_warning(p, shown_url)) {
                tracing::warn!("{warning}");
            }
        }
        Err(e) => tracing::debug!("{shown_url}: CONFIG GET maxmemory-policy: {e}"),
    }
}

/// What to say about `policy`, if it can evict the queue's keys.
fn eviction_warning(policy: &str, shown_url: &str) -> Option<String> {
    policy.starts_with("allkeys-").then(|| {
        format!(
            "redis at {shown_url} has maxmemory-policy {policy}: once it reaches maxmemory it evicts \
             any key, so queued items and the job ledger can vanish without an error and a job reads \
             lost or wrong. Set `CONFIG SET maxmemory-policy noeviction` (and `maxmemory-policy \
             noeviction` in redis.conf, or your provider's setting), or use a server of its own for \
             forloop"
        )
    })
}

/// A failed call `what` on queue `name` at `url`.
fn failure(what: &str, name: &str, url: &str, e: redis::RedisError) -> QueueError {
    error(&format!("{what} (queue `{name}`)"), url, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policies_that_evict_any_key_are_warned_about() {
        for policy in ["allkeys-lru", "allkeys-lfu", "allkeys-random"] {
            let warning = eviction_warning(policy, "redis://h:6379").expect(policy);
            assert!(warning.contains(policy), "{warning}");
            assert!(warning.contains("noeviction"), "{warning}");
        }
        for policy in ["noeviction", "volatile-lru", "volatile-ttl", ""] {
            assert_eq!(eviction_warning(policy, "redis://h:6379"), None, "{policy}");
        }
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

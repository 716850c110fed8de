//! Warm processes: one long-lived process per task slot serves many items
//! ([`ServeHandler`], `runner --serve`).
//!
//! # The protocol
//!
//! The process is started with `FORLOOP_SLOT` (its slot, from 0) and
//! `FORLOOP_SERVE` (`lines` or `json`) in its environment; its stderr is the
//! worker's. It gets one item at a time, one line on its stdin, and answers
//! each with one line on its stdout:
//!
//! - `ok`: done, the item is acked; `ok VALUE` also keeps VALUE as the
//!   item's value (JSON when it reads as JSON, else the text as a JSON
//!   string; [`crate::job::ItemValue`]);
//! - `error MESSAGE`: failed, retried with backoff (dead-lettered after the
//!   last attempt);
//! - `fatal MESSAGE`: failed in a way no retry can fix: dead-lettered now.
//!
//! The message is optional; the word is case-insensitive and may be followed
//! by `:`. A reply may also be JSON: `{"status": "error", "message": "..."}`,
//! with a `value` (for `ok`) or a `traceback` (kept where a command's
//! stderr tail goes), and may name the item's `id` (from the `json`
//! format): a reply naming another id fails the item and restarts the
//! process.
//! So `while read -r item; do ...; echo ok; done` is a complete serve
//! process. The next item is written only after the reply to the last one.
//!
//! In the `lines` format (the default) the item's bytes are the line; an
//! item holding a newline cannot be sent and is dead-lettered. In the `json`
//! format each line is an object with `item` (the item as text), `id`,
//! `attempt` (1 on the first) and `attributes`, and with `--outputs`
//! `output_dir`, the attempt's own directory for the files to keep.
//!
//! # What happens to an item
//!
//! | when | the item | the process |
//! | --- | --- | --- |
//! | the process answered the last item twice, wrote stray output, or exited, before this item was written | not charged: it goes to a fresh process | restarted; the stray output is logged with the process and the item it followed |
//! | the process dies before it reads the item | the attempt fails (retried with backoff) | restarted with backoff |
//! | the process dies while the item is out (crash, OOM kill, `exit`), or exits with half a reply line | the attempt fails (retried with backoff; dead-lettered after the last attempt) | restarted with backoff |
//! | it answers with a line that is not a reply (or a line over 16 MiB) | the attempt fails, the error names the process, the item and the line | killed and restarted: it may still answer later |
//! | no answer within the reply timeout (`--task-timeout`) | the attempt fails; the error says whether the process ever read the item | killed (its whole process group) and restarted |
//! | the worker drops the task (its task timeout, or the shutdown grace ran out after SIGTERM) | the worker gives it back or fails it, as for any handler | killed; a new one starts for the next item |
//! | SIGTERM | as command mode: no new items; a running item has the grace to be answered; then it is given back (nack 0) | [`ServeHandler::close`] closes the stdin of every process (end of input) and kills those still running after the stop timeout |
//!
//! **Crash rule: an item whose process dies while it holds the item fails
//! that attempt**, like a command that crashes. The worker cannot tell a
//! process killed from outside from one the item crashed, and a poison
//! item handed back without a charge would crash a process after another
//! forever; as a failed attempt it is retried with backoff and
//! dead-lettered after `max_attempts`, with the exit status as the reason.
//! Only an item that was never written to the process goes on unharmed.
//!
//! A second reply is caught when it reaches the worker before the next item
//! is written (it usually does: replies written together arrive together).
//! One that comes later is taken, in the `lines` format, as the next item's
//! answer; that item's own reply then shows up as stray output, caught
//! before the item after it. Replies that carry the item's `id` (as
//! `python/forloop_worker.py` writes them with `--serve=json`) close that
//! gap: the late reply names the wrong id and fails the item it reached.
//!
//! Restarts back off per slot: 100 ms after the first crash, doubling to at
//! most 30 s, and back to none after the next proper reply; the wait holds
//! the next item (its lease kept alive by the worker).
//!
//! A process that never reads its stdin and never exits is caught by the
//! reply timeout; without one, a warning after `unread_notice` names the
//! process and the item it has not read.

mod process;
mod reply;

use std::ffi::OsString;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tracing::warn;

use self::process::{Process, Read, describe, unread_input};
use super::{Handler, Task, TaskOutcome};

/// How items are written to a serve process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServeFormat {
    /// The item's bytes, then `\n`.
    #[default]
    Lines,
    /// One JSON object per item: `item`, `id`, `attempt`, `attributes`.
    Json,
}

impl ServeFormat {
    /// The name in `FORLOOP_SERVE` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lines => "lines",
            Self::Json => "json",
        }
    }
}

/// Settings of a [`ServeHandler`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How items are written (default [`ServeFormat::Lines`]).
    pub format: ServeFormat,
    /// Longest wait for an answer, from writing the item; over it the
    /// process is killed and the attempt fails (default none).
    pub reply_timeout: Option<Duration>,
    /// Restart delay after a slot's first crash; it doubles per crash in a
    /// row (default 100 ms).
    pub restart_delay: Duration,
    /// Longest restart delay (default 30 s).
    pub max_restart_delay: Duration,
    /// How long [`ServeHandler::close`] lets processes exit after their
    /// stdin closes before it kills them (default 5 s).
    pub stop_timeout: Duration,
    /// Without an answer after this long, warn if the process has not even
    /// read the item (default 10 s).
    pub unread_notice: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            format: ServeFormat::Lines,
            reply_timeout: None,
            restart_delay: Duration::from_millis(100),
            max_restart_delay: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            unread_notice: Duration::from_secs(10),
        }
    }
}

/// Runs each item through a warm process: one per task slot, started on
/// first use, restarted when it dies. See the [module docs](self) for the
/// protocol and what happens to an item when the process fails.
///
/// Call [`close`](Self::close) when the worker returns, so processes see the
/// end of their input; dropping the handler kills any still running.
pub struct ServeHandler {
    argv: Vec<OsString>,
    shown: String,
    config: ServeConfig,
    pool: Mutex<Pool>,
    started: AtomicU64,
}

impl fmt::Debug for ServeHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeHandler")
            .field("command", &self.shown)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Pool {
    idle: Vec<Slot>,
    next_index: usize,
    closed: bool,
}

/// One task slot and its process.
struct Slot {
    index: usize,
    process: Option<Process>,
    /// Crashes (or kills) since the last proper reply.
    crashes: u32,
    restart_at: Option<Instant>,
    /// The last item answered, for messages about output after it.
    last_item: Option<String>,
}

impl ServeHandler {
    /// A handler that runs `argv` (program first) once per slot.
    pub fn new<I, S>(argv: I, config: ServeConfig) -> Result<Self, super::CommandError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
        if argv.is_empty() {
            return Err(super::CommandError::Empty);
        }
        let shown = argv
            .iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Self {
            argv,
            shown,
            config,
            pool: Mutex::new(Pool::default()),
            started: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ServeConfig {
        &self.config
    }

    /// Processes started so far (the first of each slot, and every restart).
    pub fn processes_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// End every idle process: close its stdin, wait up to the stop timeout
    /// for it to exit, then kill it. Slots in use when this is called stop
    /// (kill) their process as soon as their item is settled.
    pub async fn close(&self) {
        self.close_within(self.config.stop_timeout).await;
    }

    /// [`close`](Self::close), waiting at most `limit` before the kill.
    pub async fn close_within(&self, limit: Duration) {
        let idle = {
            let mut pool = self.pool.lock().expect("serve pool");
            pool.closed = true;
            std::mem::take(&mut pool.idle)
        };
        let stops = idle.into_iter().filter_map(|slot| {
            let index = slot.index;
            slot.process.map(|mut process| async move {
                let pid = process.pid();
                let status = process.stop(limit).await;
                tracing::debug!(slot = index, pid, status = %describe(status), "serve process stopped");
            })
        });
        futures_util::future::join_all(stops).await;
    }

    fn who(&self, slot: usize, pid: u32) -> Who<'_> {
        Who {
            pid,
            slot,
            command: &self.shown,
        }
    }

    fn take_slot(&self) -> Slot {
        let mut pool = self.pool.lock().expect("serve pool");
        pool.idle.pop().unwrap_or_else(|| {
            let index = pool.next_index;
            pool.next_index += 1;
            Slot {
                index,
                process: None,
                crashes: 0,
                restart_at: None,
                last_item: None,
            }
        })
    }

    fn put_slot(&self, mut slot: Slot) {
        let mut pool = self.pool.lock().expect("serve pool");
        if pool.closed {
            // Dropping the process kills it; close() has already run.
            slot.process = None;
        }
        pool.idle.push(slot);
        // Lowest slot first, so a lightly loaded worker reuses the same
        // processes.
        pool.idle.sort_by_key(|slot| std::cmp::Reverse(slot.index));
    }

    fn crashed(&self, slot: &mut Slot) {
        slot.process = None;
        slot.crashes += 1;
        let exponent = slot.crashes.saturating_sub(1).min(20);
        let delay = self
            .config
            .restart_delay
            .saturating_mul(1 << exponent)
            .min(self.config.max_restart_delay);
        slot.restart_at = Some(Instant::now() + delay);
    }

    /// The line for `task`, or why it cannot be sent.
    fn encode(&self, task: &Task) -> Result<Vec<u8>, TaskOutcome> {
        let mut line = match self.config.format {
            ServeFormat::Lines => {
                if task.item.payload.contains(&b'\n') {
                    return Err(TaskOutcome::fatal(
                        "the item contains a newline, which a --serve process reading lines cannot \
                         receive; use --serve=json",
                    ));
                }
                task.item.payload.to_vec()
            }
            ServeFormat::Json => {
                let Ok(item) = std::str::from_utf8(&task.item.payload) else {
                    return Err(TaskOutcome::fatal(
                        "the item is not UTF-8 text, which the JSON serve format cannot carry; \
                         use --serve (lines)",
                    ));
                };
                let mut object = serde_json::json!({
                    "item": item,
                    "id": &*task.id,
                    "attempt": task.attempt,
                    // As published: a job's item shows its job and seq.
                    "attributes": crate::job::wire_attributes(task.item.job.as_ref(), &task.item.attributes),
                });
                // With --outputs: the attempt's own directory for its files.
                if let Some(dir) = &task.output_dir {
                    object["output_dir"] = dir.to_string_lossy().into_owned().into();
                }
                serde_json::to_vec(&object).expect("JSON of strings and numbers")
            }
        };
        line.push(b'\n');
        Ok(line)
    }

    /// Make sure the slot has a live process with nothing unexpected on its
    /// stdout; start one (after the restart delay) if not.
    async fn ready(&self, slot: &mut Slot, item: &str) -> Result<(), TaskOutcome> {
        if let Some(process) = &mut slot.process
            && let Some(output) = process.unexpected_output()
        {
            let who = self.who(slot.index, process.pid());
            let after = slot.last_item.as_deref().map_or_else(String::new, |last| {
                format!(" after its reply to item {last:?}")
            });
            if output.is_empty() {
                let status = process.exit_status(Duration::from_millis(100)).await;
                warn!(
                    "{who} exited between items ({}){after}; starting a new one for item {item:?}",
                    describe(status)
                );
            } else {
                warn!(
                    "{who} wrote `{}`{after}, before any new item was sent: a second reply or stray \
                     output (stdout is for one reply per item; print logs to stderr). Restarting it \
                     for item {item:?}",
                    reply::shown(&output)
                );
                process.kill_and_reap().await;
            }
            self.crashed(slot);
        }
        if slot.process.is_some() {
            return Ok(());
        }
        if let Some(at) = slot.restart_at.take() {
            tokio::time::sleep_until(at).await;
        }
        let env = [("FORLOOP_SERVE", self.config.format.name())];
        match Process::spawn(&self.argv, slot.index, &env) {
            Ok(process) => {
                self.started.fetch_add(1, Ordering::Relaxed);
                slot.process = Some(process);
                Ok(())
            }
            Err(error) => {
                let message = format!("cannot start serve process `{}`: {error}", self.shown);
                self.crashed(slot);
                Err(match error.kind() {
                    std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput => TaskOutcome::fatal(message),
                    _ => TaskOutcome::failed(message),
                })
            }
        }
    }

    /// Send the item and read its reply. `busy` is true while the process
    /// holds the item (if the future is dropped then, the guard kills it).
    async fn exchange(
        &self,
        slot: &mut Slot,
        (line, item, id): (&[u8], &str, &str),
        busy: &mut bool,
    ) -> TaskOutcome {
        let Some(process) = slot.process.as_mut() else {
            unreachable!("ready() leaves a process in the slot");
        };
        let who = self.who(slot.index, process.pid());
        let stdin = process.stdin_fd();
        *busy = true;
        let started = Instant::now();
        let deadline = self.config.reply_timeout.map(|limit| started + limit);
        let notice_at = started + self.config.unread_notice;
        let mut noticed = false;
        let received = {
            let io = async {
                process.send(line).await?;
                process.receive().await
            };
            tokio::pin!(io);
            loop {
                let next = if noticed {
                    deadline
                } else {
                    Some(deadline.map_or(notice_at, |d| d.min(notice_at)))
                };
                let timer = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    result = &mut io => break Some(result),
                    () = timer => {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break None;
                        }
                        noticed = true;
                    }
                }
                // The notice: only here, with `io` not polled, may the
                // process be inspected.
                if unread_input(stdin) > 0 {
                    warn!(
                        "{who} has not read item {item:?} from its stdin after {:?}: a --serve \
                         process must read one line per item and answer each on stdout \
                         (--task-timeout limits the wait)",
                        self.config.unread_notice
                    );
                }
            }
        };
        let outcome = match received {
            Some(Ok(Read::Line(reply))) => match reply::parse(&reply) {
                Some(reply::Reply {
                    id: Some(other), ..
                }) if other != id => {
                    process.kill_and_reap().await;
                    let after = slot.last_item.as_deref().map_or_else(String::new, |last| {
                        format!(" (the last item before it was {last:?})")
                    });
                    TaskOutcome::failed(format!(
                        "{who} answered item {item:?} (id {id}) with a reply for id {other}: a second \
                         reply to an earlier item{after}. The process was restarted"
                    ))
                }
                Some(reply) => {
                    *busy = false;
                    slot.crashes = 0;
                    slot.last_item = Some(item.to_string());
                    return reply.outcome;
                }
                None => {
                    process.kill_and_reap().await;
                    TaskOutcome::failed(format!(
                        "{who} answered item {item:?} with `{}`, which is not a reply: stdout is \
                         for one reply line per item (`ok`, `error MESSAGE` or `fatal MESSAGE`), \
                         print logs to stderr. The process was restarted",
                        reply::shown(&reply)
                    ))
                }
            },
            Some(Ok(Read::TooLong)) => {
                process.kill_and_reap().await;
                TaskOutcome::failed(format!(
                    "{who} answered item {item:?} with a line over {} bytes, which is not a reply; \
                     the process was restarted",
                    reply::MAX_REPLY
                ))
            }
            Some(Ok(Read::Eof(partial))) => {
                let unread = unread_input(stdin) > 0;
                let status = describe(process.exit_status(Duration::from_secs(1)).await);
                let what = if unread {
                    "before reading"
                } else if partial.is_empty() {
                    "while holding"
                } else {
                    "in the middle of its reply to"
                };
                let partial = if partial.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (it wrote `{}` without the ending newline)",
                        reply::shown(&partial)
                    )
                };
                TaskOutcome::failed(format!(
                    "{who} exited {what} item {item:?}: {status}{partial}; its stderr says why. \
                     The process is restarted",
                ))
            }
            Some(Err(error)) => {
                let unread = unread_input(stdin) > 0;
                let status = describe(process.exit_status(Duration::from_secs(1)).await);
                let what = if error.kind() == std::io::ErrorKind::BrokenPipe || unread {
                    "exited before reading"
                } else {
                    "failed while holding"
                };
                TaskOutcome::failed(format!(
                    "{who} {what} item {item:?} ({error}; {status}); the process is restarted"
                ))
            }
            None => {
                let limit = self.config.reply_timeout.unwrap_or_default();
                let never_read = if unread_input(stdin) > 0 {
                    "; it never read the item from its stdin: a --serve process must read one line per item"
                } else {
                    ""
                };
                process.kill_and_reap().await;
                TaskOutcome::failed(format!(
                    "{who} did not answer item {item:?} within {limit:?} (--task-timeout){never_read}; \
                     it was killed and is restarted"
                ))
            }
        };
        *busy = false;
        self.crashed(slot);
        outcome
    }
}

/// Names a process in messages (made only when one is written).
struct Who<'a> {
    pid: u32,
    slot: usize,
    command: &'a str,
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "serve process {} (slot {}, `{}`)",
            self.pid, self.slot, self.command
        )
    }
}

/// Gives the slot back to the pool when the task ends or is dropped; a slot
/// dropped while its process holds an item loses that process.
struct SlotGuard<'a> {
    handler: &'a ServeHandler,
    slot: Option<Slot>,
    busy: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        if self.busy {
            if let Some(process) = &slot.process {
                tracing::debug!(
                    "{} stopped with its item unanswered (task timeout or shutdown)",
                    self.handler.who(slot.index, process.pid())
                );
            }
            // Dropping the process kills its group; tokio reaps it.
            self.handler.crashed(&mut slot);
        }
        self.handler.put_slot(slot);
    }
}

#[async_trait]
impl Handler for ServeHandler {
    async fn handle(&self, task: Task) -> TaskOutcome {
        let line = match self.encode(&task) {
            Ok(line) => line,
            Err(outcome) => return outcome,
        };
        let item = String::from_utf8_lossy(&task.item.payload);
        let mut guard = SlotGuard {
            handler: self,
            slot: Some(self.take_slot()),
            busy: false,
        };
        let SlotGuard { slot, busy, .. } = &mut guard;
        let slot = slot.as_mut().expect("a slot until the guard drops");
        match self.ready(slot, &item).await {
            Ok(()) => self.exchange(slot, (&line, &item, &task.id), busy).await,
            Err(outcome) => outcome,
        }
    }
}

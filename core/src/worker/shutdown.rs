//! Stopping: the worker's way out when its [`Shutdown`] signal comes: running tasks dropped and their items given back, then the last
//! word with the queue (acks and hand-backs still owed, retried until the
//! budget ends).

use std::sync::Arc;

use futures_util::stream::StreamExt;
use tokio::time::Instant;
use tracing::warn;

use super::calls::{self, Calls, Done};
use super::tasks::{Finished, TaskStops, Tasks};
use super::{AckBuffer, LeaseKeeper, Worker};
use crate::LeaseToken;
#[cfg(doc)]
use crate::Shutdown;

impl Worker {
    /// Drop every running task and give its item back at once.
    pub(super) fn interrupt(
        &self,
        tasks: &mut Tasks,
        keeper: &mut LeaseKeeper,
        calls: &mut Calls<Finished>,
    ) -> usize {
        // Only the items of running tasks go back: a finished item whose ack
        // is still on its way must not run again. Dropping a task's future
        // stops its work (command handlers kill their process group).
        let tokens: Vec<LeaseToken> = tasks.iter().map(|r| r.token.clone()).collect();
        tasks.clear();
        for token in &tokens {
            keeper.release(token);
        }
        let count = tokens.len();
        self.give_back(tokens, calls);
        count
    }

    pub(super) fn give_back(&self, tokens: Vec<LeaseToken>, calls: &mut Calls<Finished>) {
        if tokens.is_empty() {
            return;
        }
        self.counts.handed_back(tokens.len());
        let queue = Arc::clone(&self.queue);
        let limit = self.config.call_timeout;
        calls.push(Box::pin(async move {
            let result = calls::within(limit, "a hand-back", queue.release(&tokens)).await;
            Done::GiveBack { tokens, result }
        }));
    }

    /// Ack items of jobs that are over (cancelled, forgotten) without
    /// running them: they are settled, with no receipt to write.
    pub(super) fn discard(&self, tokens: Vec<LeaseToken>, calls: &mut Calls<Finished>) {
        if tokens.is_empty() {
            return;
        }
        let queue = Arc::clone(&self.queue);
        let limit = self.config.call_timeout;
        let count = tokens.len();
        calls.push(Box::pin(async move {
            let result = calls::within(limit, "an ack", queue.ack(&tokens)).await;
            Done::Settle {
                what: "settling items of a job that is over",
                item: format!("{count} item(s)"),
                tokens,
                result,
            }
        }));
    }

    /// The last word with the queue: wait for calls in flight, send what is
    /// still buffered, retry what fails, until `until`.
    pub(super) async fn settle_all(
        &self,
        mut calls: Calls<Finished>,
        mut acks: AckBuffer,
        keeper: &mut LeaseKeeper,
        stops: &mut TaskStops,
        ack_batch: usize,
        until: Instant,
    ) {
        let mut backs: Vec<LeaseToken> = Vec::new();
        let mut backs_at = Instant::now();
        loop {
            let now = Instant::now();
            if acks.in_flight == 0
                && !acks.pending.is_empty()
                && acks.flush_at.is_none_or(|at| at <= now)
            {
                acks.flush_at = None;
                self.flush_acks(&mut acks, &mut calls, ack_batch);
            }
            if !backs.is_empty() && backs_at <= now {
                self.give_back(std::mem::take(&mut backs), &mut calls);
            }
            let next = if calls.is_empty() {
                if acks.pending.is_empty() && backs.is_empty() {
                    return;
                }
                // Only retries wait: sleep until the first is due.
                let at = [acks.flush_at, (!backs.is_empty()).then_some(backs_at)]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(now);
                if at < until {
                    tokio::time::sleep_until(at).await;
                    continue;
                }
                None
            } else {
                tokio::time::timeout_at(until, calls.next())
                    .await
                    .ok()
                    .flatten()
            };
            let Some(done) = next else {
                warn!(worker = %self.config.name, acks = acks.pending.len() + acks.in_flight,
                    "out of time to settle with the queue: what is unsettled runs again after its lease");
                return;
            };
            if let Done::GiveBack {
                tokens,
                result: Err(error),
            } = &done
                && error.is_retryable()
            {
                backs.extend(tokens.iter().cloned());
                backs_at = Instant::now() + self.config.ack_interval;
            }
            // On the way out already: an ack that fails for good gave its
            // items back, and nothing else is left to stop.
            let _ = self.finished_call(done, &mut acks, keeper, stops, &mut calls);
        }
    }
}

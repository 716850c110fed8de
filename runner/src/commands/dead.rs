//! `runner dead list | requeue | purge`.

use std::collections::HashMap;

use forloop_core::DeadLetter;
use forloop_core::job::{Ledger, Receipt};

use super::context::Context;
use crate::Failure;
use crate::cli::DeadCommand;

pub(crate) async fn dead(context: &Context<'_>, command: DeadCommand) -> Result<u8, Failure> {
    let (driver, address) = context.driver("dead", None)?;
    let backend = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    let queue = &backend.queue;
    match command {
        DeadCommand::List { limit, json } => {
            let letters = queue.list_dead(limit).await?;
            let receipts = last_attempts(backend.ledger.as_deref(), &letters).await;
            for letter in &letters {
                let item = String::from_utf8_lossy(&letter.item.payload);
                let receipt = letter
                    .item
                    .job
                    .as_ref()
                    .and_then(|i| receipts.get(&(i.job.clone(), i.seq)));
                let exit_code = receipt.and_then(|r| r.exit_code);
                let stderr_tail = receipt.and_then(|r| r.stderr_tail.as_deref());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "id": &*letter.id,
                            "item": item,
                            "attempts": letter.attempts,
                            "reason": letter.reason,
                            // As published: a job's item shows its job and seq.
                            "attributes": letter.item.wire_attributes(),
                            "exit_code": exit_code,
                            "stderr_tail": stderr_tail,
                        })
                    );
                } else {
                    let exit = exit_code.map_or(String::new(), |c| c.to_string());
                    let tail = stderr_tail
                        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()))
                        .unwrap_or_default();
                    println!(
                        "{item}\t{}\t{}\t{exit}\t{}",
                        letter.attempts,
                        letter.reason,
                        crate::joblog::escape(tail.as_bytes())
                    );
                }
            }
            if !json {
                eprintln!("{} dead item(s) shown (at most {limit})", letters.len());
            }
        }
        DeadCommand::Requeue => {
            // Through the ledger where the queue keeps jobs: each item's
            // death is un-counted before it moves, so its job reads
            // incomplete until the item settles again.
            let n = match backend.ledger.as_deref() {
                Some(ledger) => ledger.requeue_dead(&**queue).await?,
                None => queue.requeue_dead().await?,
            };
            eprintln!(
                "requeued {n} dead item(s) of {} with fresh attempts",
                driver.redact(&address)
            );
        }
        DeadCommand::Purge => {
            let n = queue.purge_dead().await?;
            eprintln!("purged {n} dead item(s) of {}", driver.redact(&address));
        }
    }
    Ok(0)
}

/// The receipts of the jobs `letters` belong to, by (job, seq): each dead
/// item's last exit code and stderr. Empty where the queue keeps no jobs.
async fn last_attempts(
    ledger: Option<&dyn Ledger>,
    letters: &[DeadLetter],
) -> HashMap<(std::sync::Arc<str>, u64), Receipt> {
    let mut receipts = HashMap::new();
    let Some(ledger) = ledger else {
        return receipts;
    };
    let mut jobs: Vec<std::sync::Arc<str>> = letters
        .iter()
        .filter_map(|l| l.item.job.as_ref().map(|i| i.job.clone()))
        .collect();
    jobs.sort();
    jobs.dedup();
    for job in jobs {
        match ledger.receipts(&job).await {
            Ok(list) => receipts.extend(list.into_iter().map(|r| ((r.job.clone(), r.seq), r))),
            Err(error) => {
                tracing::warn!(%job, error = %forloop_core::ErrorChain(&error), "cannot read the job's receipts")
            }
        }
    }
    receipts
}

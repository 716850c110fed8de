//! `runner dead list | requeue | purge`, every one of them or only the
//! dead items a filter picks (`--exit-code`, `--match`, `--job`,
//! `--items`; `forloop_core::job::DeadFilter`).

use forloop_core::job::{DeadDetails, DeadFilter, Ledger};
use forloop_core::{DeadLetter, Requeued};

use super::context::Context;
use crate::Failure;
use crate::cli::{CauseArgs, DeadCommand, DeadFilterArgs};
use crate::input::{ItemRules, read_items};

/// The most dead items a filtered listing or dry run looks at.
const SCAN: usize = 1_000_000;

pub(crate) async fn dead(context: &Context<'_>, command: DeadCommand) -> Result<u8, Failure> {
    // Every filter is checked before the queue is even opened: bad input
    // moves nothing.
    let filter = match &command {
        DeadCommand::List { filter, .. } | DeadCommand::Requeue { filter, .. } => {
            dead_filter(filter)?
        }
        DeadCommand::Purge => DeadFilter::default(),
    };
    let (driver, address) = context.driver("dead", None)?;
    let backend = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    let queue = &backend.queue;
    let ledger = backend.ledger.as_deref();
    match command {
        DeadCommand::List { limit, json, .. } => {
            let scan = if filter.is_all() { limit } else { SCAN };
            let letters = queue.list_dead(scan).await?;
            let details = details(ledger, &letters, &filter).await?;
            let shown: Vec<&DeadLetter> = letters
                .iter()
                .filter(|l| filter.matches_letter(l, details.of(l)))
                .take(limit)
                .collect();
            for letter in &shown {
                print_letter(letter, &details, json);
            }
            if !json {
                eprintln!("{} dead item(s) shown (at most {limit})", shown.len());
                looked_at(letters.len(), &filter);
            }
        }
        DeadCommand::Requeue { dry_run: true, .. } => {
            let letters = queue.list_dead(SCAN).await?;
            let details = details(ledger, &letters, &filter).await?;
            let mut picked = 0;
            for letter in &letters {
                if filter.matches_letter(letter, details.of(letter)) {
                    print_letter(letter, &details, false);
                    picked += 1;
                }
            }
            eprintln!(
                "dry run: would requeue {picked} of {} dead item(s) of {}; nothing moved",
                letters.len(),
                driver.redact(&address)
            );
            looked_at(letters.len(), &filter);
        }
        DeadCommand::Requeue { .. } if filter.is_all() => {
            // Through the ledger where the queue keeps jobs: each item's
            // death is un-counted before it moves, so its job reads
            // incomplete until the item settles again.
            let n = match ledger {
                Some(ledger) => ledger.requeue_dead(&**queue).await?,
                None => queue.requeue_dead().await?,
            };
            eprintln!(
                "requeued {n} dead item(s) of {} with fresh attempts",
                driver.redact(&address)
            );
        }
        DeadCommand::Requeue { .. } => {
            // The receipts are read first: a letter is picked by what its
            // own death's receipt says, or by its reason alone.
            let details = match ledger {
                Some(ledger) if filter.needs_receipts() => {
                    dead_details(ledger, filter.only_job()).await?
                }
                _ => DeadDetails::default(),
            };
            let select = |letter: &DeadLetter| filter.matches_letter(letter, details.of(letter));
            let Requeued { moved, left } = match ledger {
                Some(ledger) => ledger.requeue_dead_where(&**queue, &select).await?,
                None => queue.requeue_dead_where(&select, None).await?,
            };
            eprintln!(
                "requeued {moved} dead item(s) of {} with fresh attempts; {left} others looked at stay dead",
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

/// The filter `args` ask for, every part checked: an unreadable `--items`
/// file or a bad `--match` pattern fails here, before anything is sent.
pub(crate) fn dead_filter(args: &DeadFilterArgs) -> Result<DeadFilter, Failure> {
    let filter = cause_filter(&args.cause)?;
    Ok(match &args.job {
        Some(job) => filter.job(job.clone()),
        None => filter,
    })
}

/// The filter of `--exit-code`, `--match` and `--items`.
pub(crate) fn cause_filter(args: &CauseArgs) -> Result<DeadFilter, Failure> {
    let mut filter = DeadFilter::default().exit_codes(args.exit_code.iter().copied());
    if let Some(pattern) = &args.pattern {
        filter = filter
            .pattern(pattern)
            .map_err(|e| Failure::new(e.to_string()))?;
    }
    if let Some(path) = &args.items {
        let items = read_items(path, &ItemRules::queue(usize::MAX))
            .map_err(|e| Failure::new(format!("--items: {e}")))?;
        filter = filter.items(items.items);
    }
    Ok(filter)
}

/// Say how many dead items a filtered look went through, and whether it
/// stopped at [`SCAN`].
fn looked_at(letters: usize, filter: &DeadFilter) {
    if filter.is_all() {
        return;
    }
    eprintln!("{letters} dead item(s) looked at");
    if letters >= SCAN {
        eprintln!("runner: only the first {SCAN} dead items were looked at");
    }
}

fn print_letter(letter: &DeadLetter, details: &DeadDetails, json: bool) {
    let item = String::from_utf8_lossy(&letter.item.payload);
    let receipt = details.of(letter);
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

/// The receipts of the jobs `letters` belong to: each dead item's last
/// exit code and stderr. Empty where the queue keeps no jobs. A receipt
/// that cannot be read is a warning when only shown, and an error when
/// `filter` picks by it (a filter must not answer from a partial view).
async fn details(
    ledger: Option<&dyn Ledger>,
    letters: &[DeadLetter],
    filter: &DeadFilter,
) -> Result<DeadDetails, Failure> {
    let mut details = DeadDetails::default();
    let Some(ledger) = ledger else {
        return Ok(details);
    };
    let mut jobs: Vec<std::sync::Arc<str>> = letters
        .iter()
        .filter_map(|l| l.item.job.as_ref().map(|i| i.job.clone()))
        .filter(|job| filter.only_job().is_none_or(|only| **job == *only))
        .collect();
    jobs.sort();
    jobs.dedup();
    for job in jobs {
        match ledger.receipts(&job).await {
            Ok(list) => details.add(list),
            Err(error) if filter.needs_receipts() => {
                return Err(Failure::new(format!(
                    "cannot read the receipts of job `{job}`, which --exit-code and --match \
                     look at: {}",
                    forloop_core::ErrorChain(&error)
                )));
            }
            Err(error) => {
                tracing::warn!(%job, error = %forloop_core::ErrorChain(&error), "cannot read the job's receipts")
            }
        }
    }
    Ok(details)
}

/// The receipts of every job with dead items (or only `job`'s), for a
/// requeue that picks by exit code or pattern.
async fn dead_details(ledger: &dyn Ledger, job: Option<&str>) -> Result<DeadDetails, Failure> {
    let mut details = DeadDetails::default();
    for status in ledger.jobs().await? {
        let name = &status.manifest.job;
        if status.dead == 0 || job.is_some_and(|only| only != name) {
            continue;
        }
        let receipts = ledger.receipts(name).await.map_err(|error| {
            Failure::new(format!(
                "cannot read the receipts of job `{name}`, which --exit-code and --match look \
                 at; nothing was requeued: {}",
                forloop_core::ErrorChain(&error)
            ))
        })?;
        details.add(receipts);
    }
    Ok(details)
}

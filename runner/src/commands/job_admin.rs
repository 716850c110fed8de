//! `runner job list | cancel | forget`: the jobs of a queue as things with
//! a life of their own. A job stuck for good (its submit stopped and will
//! not be resumed, its items lost to retention) holds every worker of the
//! whole queue until it is cancelled; a job that is over can be forgotten,
//! so its records stop costing.

use forloop_core::job::{JobStatus, Ledger};

use super::context::Context;
use crate::Failure;
use crate::cli::JobCommand;

pub(crate) async fn job(context: &Context<'_>, command: JobCommand) -> Result<u8, Failure> {
    let (driver, address) = context.driver("job", None)?;
    let backend = context
        .open(&*driver, &address, context.queue_config(None))
        .await?;
    let Some(ledger) = backend.ledger.as_deref() else {
        return Err(Failure::new(format!(
            "{} keeps no jobs (for Pub/Sub and SQS, `runner queue create` makes the ledger jobs need)",
            driver.redact(&address)
        )));
    };
    match command {
        JobCommand::List { json } => list(ledger, json).await,
        JobCommand::Cancel { job } => {
            let status = find(ledger, &job).await?;
            if status.cancelled.is_none() && !ledger.cancel(&job).await? {
                return Err(no_such_job(&job));
            }
            eprintln!(
                "job `{job}` is cancelled ({} of {} settled): its items still queued are settled \
                 without running, and workers for it end",
                status.settled(),
                status.manifest.total
            );
            Ok(0)
        }
        JobCommand::Forget { job } => {
            let status = find(ledger, &job).await?;
            if !status.is_over() {
                return Err(Failure::new(format!(
                    "job `{job}` is {} ({} of {} settled): only a job that is over can be \
                     forgotten; cancel it first (`runner job cancel {job}`)",
                    status.phase(),
                    status.settled(),
                    status.manifest.total
                )));
            }
            if !ledger.forget(&job).await? {
                return Err(no_such_job(&job));
            }
            eprintln!("job `{job}` is forgotten: its records left the ledger");
            Ok(0)
        }
    }
}

fn no_such_job(job: &str) -> Failure {
    Failure::new(format!(
        "no job `{job}` on this queue (`runner job list` shows its jobs)"
    ))
}

async fn find(ledger: &dyn Ledger, job: &str) -> Result<JobStatus, Failure> {
    ledger
        .jobs()
        .await?
        .into_iter()
        .find(|status| status.manifest.job == job)
        .ok_or_else(|| no_such_job(job))
}

async fn list(ledger: &dyn Ledger, json: bool) -> Result<u8, Failure> {
    let mut jobs = ledger.jobs().await?;
    jobs.sort_by(|a, b| {
        (a.manifest.created, &a.manifest.job).cmp(&(b.manifest.created, &b.manifest.job))
    });
    for job in &jobs {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "job": job.manifest.job,
                    "phase": job.phase(),
                    "total": job.manifest.total,
                    "submitted": job.submitted,
                    "done": job.done,
                    "dead": job.dead,
                    "remaining": job.remaining(),
                    "cancelled": job.cancelled,
                    "halted": job.halt.at,
                    "max_dead": job.manifest.max_dead.map(|limit| limit.to_string()),
                    "created": job.manifest.created,
                    "command": job.manifest.command,
                })
            );
        } else {
            println!(
                "{}\t{}\t{} done, {} dead of {}\t{}",
                job.manifest.job,
                job.phase(),
                job.done,
                job.dead,
                job.manifest.total,
                job.manifest.command.as_deref().unwrap_or("-"),
            );
        }
    }
    if !json {
        eprintln!("{} job(s)", jobs.len());
    }
    Ok(0)
}

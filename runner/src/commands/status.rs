//! `runner status` and `runner wait`: read the queue's backlog and its
//! jobs, change nothing.

use std::sync::Arc;
use std::time::Duration;

use forloop_core::job::{JobStatus, LOST_AFTER, Ledger, lost_job};
use forloop_core::worker::{DrainDetector, DrainState};
use forloop_core::{Backend, Backlog, Count};
use tokio::time::Instant;

use super::context::{Context, Stdout};
use super::deadline::retrying;
use crate::Failure;
use crate::cli::{StatusArgs, WaitArgs};
use crate::progress::Progress;

fn json_count(count: Count) -> serde_json::Value {
    count.value().map_or(serde_json::Value::Null, Into::into)
}

fn text_count(count: Count) -> String {
    match count {
        Count::Exact(n) => n.to_string(),
        Count::Approximate(n) => format!("~{n}"),
        Count::Unknown => "unknown".to_string(),
    }
}

/// The `status --json` object.
pub(crate) fn status_json(backlog: &Backlog) -> serde_json::Value {
    serde_json::json!({
        "ready": json_count(backlog.ready),
        "in_flight": json_count(backlog.in_flight),
        "dead": json_count(backlog.dead),
        "exact": backlog.is_exact(),
        "age_seconds": backlog.age.as_secs_f64(),
    })
}

/// What `status` adds after the counts: nothing when they are exact, else
/// how far to trust them and what workers make of them.
pub(crate) fn status_note(backlog: &Backlog, staleness: Duration, source: Option<&str>) -> String {
    let lag = humantime::format_duration(staleness);
    if backlog.is_exact() {
        String::new()
    } else if backlog.is_empty().is_none() {
        let floor = if staleness.is_zero() {
            String::new()
        } else {
            format!(" (at least {lag})")
        };
        format!(
            " (this backend cannot count its backlog here; workers take it as drained \
             after --idle-window{floor} of empty pulls)"
        )
    } else {
        let from = source.map_or(String::new(), |s| format!(", from {s}"));
        format!(
            " (approximate{from}; reading {} s old, may lag by up to {lag})",
            backlog.age.as_secs()
        )
    }
}

/// How long `status` retries a read that failed for a reason that may
/// pass (a server restarting, a network blip) before it gives up.
const STATUS_RETRY_FOR: Duration = Duration::from_secs(30);
/// The same for each read of `wait`, which may wait for hours anyway.
const WAIT_RETRY_FOR: Duration = Duration::from_secs(300);
/// The queue's jobs (`None`: it keeps none).
async fn jobs_of(
    ledger: Option<&Arc<dyn Ledger>>,
    bound: Duration,
) -> Result<Option<Vec<JobStatus>>, Failure> {
    match ledger {
        Some(ledger) => Ok(Some(
            retrying("reading the job ledger", bound, || ledger.jobs()).await?,
        )),
        None => Ok(None),
    }
}

async fn backlog_of(
    queue: &dyn forloop_core::WorkQueue,
    bound: Duration,
) -> Result<Backlog, Failure> {
    Ok(retrying("reading the backlog", bound, || queue.backlog()).await?)
}

/// Which rule ends the workers, for people and for `--json`.
fn end_rule(jobs: Option<&[JobStatus]>) -> (&'static str, &'static str) {
    match jobs {
        Some(jobs) if !jobs.is_empty() => (
            "jobs",
            "a worker for a job (`run`, `work --job`) exits 0 when its job is over; a worker of the \
             whole queue when every job is complete or cancelled (done + dead = its items, from \
             the ledger); items without a job are waited for only where the queue counts exactly",
        ),
        Some(_) => (
            "backlog",
            "no jobs on this queue yet: workers end when the backlog reads empty",
        ),
        None => (
            "backlog",
            "this queue keeps no jobs: workers end when the backlog reads empty",
        ),
    }
}

fn job_json(job: &JobStatus) -> serde_json::Value {
    serde_json::json!({
        "job": job.manifest.job,
        "total": job.manifest.total,
        "submitted": job.submitted,
        "done": job.done,
        "dead": job.dead,
        "remaining": job.remaining(),
        "complete": job.is_complete(),
        "phase": job.phase(),
        "cancelled": job.cancelled,
        "halted": job.halt.at,
        "max_dead": job.manifest.max_dead.map(|limit| limit.to_string()),
        "command": job.manifest.command,
        "rate_per_second": job.rate(),
        "created": job.manifest.created,
    })
}

fn job_line(job: &JobStatus) -> String {
    let mut line = format!(
        "job `{}`: {} of {} done, {} dead, {} left",
        job.manifest.job,
        job.done,
        job.manifest.total,
        job.dead,
        job.remaining()
    );
    if job.is_complete() {
        line.push_str(" (complete)");
    } else if job.cancelled.is_some() {
        line.push_str(&format!(
            " (cancelled: its {} left are settled without running; `runner job forget {}` removes it)",
            job.remaining(),
            job.manifest.job
        ));
    } else if job.is_halted() {
        line.push_str(&format!(
            " ({}: its {} left stay queued; fix the cause, then `--resume` continues it)",
            job.halt_line(),
            job.remaining()
        ));
    } else {
        if !job.is_sealed() {
            line.push_str(&format!(
                "; never sealed: only {} of {} were sent: `runner submit --resume --job {}` sends \
                 the rest, `runner job cancel {}` ends it",
                job.submitted, job.manifest.total, job.manifest.job, job.manifest.job
            ));
        }
        if let Some(still) = standing_still(job, forloop_core::job::unix_millis()) {
            line.push_str(&format!(
                "; nothing settled for {}: are workers running for it? `runner job cancel {}` ends it",
                humantime::format_duration(still),
                job.manifest.job
            ));
        }
        if let Some(rate) = job.rate() {
            let eta = Duration::from_secs((job.remaining() as f64 / rate).ceil() as u64);
            line.push_str(&format!(
                "; {rate:.1}/s, about {} to go",
                humantime::format_duration(eta)
            ));
        }
    }
    line
}

pub(crate) async fn status(context: &Context<'_>, args: StatusArgs) -> Result<u8, Failure> {
    let (driver, address) = context.driver("status", None)?;
    let Backend { queue, ledger } = context
        .open_retrying(
            &*driver,
            &address,
            context.queue_config(None),
            STATUS_RETRY_FOR,
        )
        .await?;
    let mut out = Stdout::default();
    let Some(every) = args.watch else {
        let staleness = queue.capabilities().backlog_staleness;
        let reading = read_status(&*queue, ledger.as_ref()).await?;
        print_status(context, &*driver, staleness, &reading, args.json, &mut out)?;
        return Ok(0);
    };
    // Read again every `every`, until Ctrl-C or a closed pipe: on a
    // terminal the screen is redrawn, elsewhere each reading follows the
    // last (JSON: one object a line).
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let staleness = queue.capabilities().backlog_staleness;
    loop {
        let reading = read_status(&*queue, ledger.as_ref()).await?;
        if terminal && !args.json {
            out.line(format_args!(
                "\x1b[H\x1b[2J{}",
                humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            ))?;
        }
        print_status(context, &*driver, staleness, &reading, args.json, &mut out)?;
        if out.closed() {
            return Ok(0);
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

/// One reading of what `status` shows.
struct StatusReading {
    backlog: Backlog,
    jobs: Option<Vec<JobStatus>>,
    /// The causes that dominate each halted job's deaths, by job.
    halt_causes: std::collections::BTreeMap<String, String>,
}

async fn read_status(
    queue: &dyn forloop_core::WorkQueue,
    ledger: Option<&Arc<dyn Ledger>>,
) -> Result<StatusReading, Failure> {
    let backlog = backlog_of(queue, STATUS_RETRY_FOR).await?;
    let jobs = jobs_of(ledger, STATUS_RETRY_FOR).await?;
    let mut halt_causes = std::collections::BTreeMap::new();
    if let Some(ledger) = ledger {
        for job in jobs.as_deref().unwrap_or_default() {
            if job.is_halted() {
                let causes = super::summary::halt_causes(&**ledger, job).await;
                halt_causes.insert(job.manifest.job.to_string(), causes);
            }
        }
    }
    Ok(StatusReading {
        backlog,
        jobs,
        halt_causes,
    })
}

fn print_status(
    context: &Context<'_>,
    driver: &dyn forloop_core::Driver,
    staleness: Duration,
    reading: &StatusReading,
    json_out: bool,
    out: &mut Stdout,
) -> Result<(), Failure> {
    let StatusReading {
        backlog,
        jobs,
        halt_causes,
    } = reading;
    let (rule, why) = end_rule(jobs.as_deref());
    if json_out {
        let mut json = status_json(backlog);
        json["end_rule"] = rule.into();
        json["jobs"] = jobs
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(job_json)
            .collect();
        out.line(json)?;
    } else {
        out.line(format_args!(
            "{}: ready {}, in flight {}, dead {}{}",
            context.name,
            text_count(backlog.ready),
            text_count(backlog.in_flight),
            text_count(backlog.dead),
            status_note(backlog, staleness, driver.backlog_source())
        ))?;
        for job in jobs.as_deref().unwrap_or_default() {
            out.line(job_line(job))?;
            if let Some(causes) = halt_causes.get(&*job.manifest.job) {
                out.line(causes)?;
            }
        }
        out.line(format_args!("end rule: {why}"))?;
    }
    Ok(())
}

pub(crate) async fn wait(context: &Context<'_>, args: WaitArgs) -> Result<u8, Failure> {
    let (driver, address) = context.driver("wait", None)?;
    let Backend { queue, ledger } = context
        .open_retrying(
            &*driver,
            &address,
            context.queue_config(None),
            WAIT_RETRY_FOR,
        )
        .await?;
    if let Some(ledger) = ledger
        && let Some(jobs) = jobs_of(Some(&ledger), WAIT_RETRY_FOR)
            .await?
            .filter(|jobs| !jobs.is_empty())
    {
        return wait_for_jobs(context, &*ledger, jobs, args.poll).await;
    }
    let caps = queue.capabilities();
    let mut detector = DrainDetector::new(caps.backlog_staleness, Duration::ZERO);
    let first = backlog_of(&*queue, WAIT_RETRY_FOR).await?;
    if first.ready == Count::Unknown && first.in_flight == Count::Unknown {
        return Err(Failure::new(format!(
            "the `{}` queue cannot count its backlog here, so `runner wait` cannot tell when it is drained; \
             wait for the workers to exit instead (they exit 0 once drained)",
            driver.redact(&address)
        )));
    }
    let remaining = |b: &Backlog| b.ready.value().unwrap_or(0) + b.in_flight.value().unwrap_or(0);
    let total = remaining(&first);
    let progress = Progress::start("done", total);
    let mut backlog = first;
    loop {
        let left = remaining(&backlog);
        progress.set(total.saturating_sub(left));
        if detector.observe(&backlog, Instant::now()) == DrainState::Drained {
            break;
        }
        // Readings further apart than the detector's longest gap never add
        // up to a drained stretch, so look at least twice per gap.
        let gap = detector.longest_gap();
        let poll = if gap.is_zero() {
            args.poll
        } else {
            args.poll.min(gap / 2)
        };
        tokio::time::sleep(poll).await;
        backlog = backlog_of(&*queue, WAIT_RETRY_FOR).await?;
    }
    progress.finish();
    let dead = backlog.dead.value().unwrap_or(0);
    if dead > 0 {
        eprintln!(
            "`{}` is drained, but {dead} item(s) are in its dead-letter place",
            context.name
        );
        return Ok(1);
    }
    eprintln!("`{}` is drained", context.name);
    Ok(0)
}

/// `wait` on a queue with jobs: until every job is complete, exactly.
async fn wait_for_jobs(
    context: &Context<'_>,
    ledger: &dyn Ledger,
    mut jobs: Vec<JobStatus>,
    poll: Duration,
) -> Result<u8, Failure> {
    let total: u64 = jobs.iter().map(|j| j.manifest.total).sum();
    let progress = Progress::start("settled", total);
    let mut watch = JobWatch::default();
    watch.look(&jobs, &[], Instant::now())?;
    while jobs.iter().any(|j| !j.is_over()) || watch.missing() {
        progress.set(jobs.iter().map(JobStatus::settled).sum());
        tokio::time::sleep(poll).await;
        jobs = retrying("reading the job ledger", WAIT_RETRY_FOR, || ledger.jobs()).await?;
        // The forgotten names only when a job seen before is missing: on a
        // ledger kept in sheets every read costs calls.
        let forgotten = if watch.misses_any(&jobs) {
            retrying("reading the job ledger", WAIT_RETRY_FOR, || {
                ledger.forgotten()
            })
            .await?
        } else {
            Vec::new()
        };
        watch.look(&jobs, &forgotten, Instant::now())?;
    }
    progress.finish();
    let dead: u64 = jobs.iter().map(|j| j.dead).sum();
    for job in &jobs {
        eprintln!("{}", job_line(job));
    }
    let halted: Vec<&JobStatus> = jobs
        .iter()
        .filter(|j| j.is_halted() && !j.is_complete() && j.cancelled.is_none())
        .collect();
    for job in &halted {
        eprintln!("{}", super::summary::halt_causes(ledger, job).await);
    }
    if !halted.is_empty() {
        return Ok(forloop_core::job::HALTED_EXIT);
    }
    let cancelled: Vec<&str> = jobs
        .iter()
        .filter(|j| j.cancelled.is_some() && !j.is_complete())
        .map(|j| j.manifest.job.as_str())
        .collect();
    if !cancelled.is_empty() {
        eprintln!(
            "every job on `{}` is over, but {} was cancelled before it completed",
            context.name,
            cancelled.join(", ")
        );
        return Ok(1);
    }
    if dead > 0 {
        eprintln!(
            "every job on `{}` is complete, but {dead} item(s) were dead-lettered: \
             `runner results --state dead` shows them",
            context.name
        );
        return Ok(1);
    }
    eprintln!("every job on `{}` is complete", context.name);
    Ok(0)
}

/// How long an open job has settled nothing (since its last settlement,
/// or its creation), where that is past [`STALLED`], in whole minutes.
fn standing_still(job: &JobStatus, now_ms: u64) -> Option<Duration> {
    if job.is_over() {
        return None;
    }
    let since_ms = job
        .settled_between
        .map_or(job.manifest.created.saturating_mul(1000), |(_, last)| last);
    let still = Duration::from_secs(now_ms.saturating_sub(since_ms) / 60_000 * 60);
    (still >= STALLED).then_some(still)
}

/// What `wait` saw of the jobs over time: a job that vanishes without
/// being forgotten was lost by the server, which is never an end; a job
/// that does not move for [`STALLED`] gets a word on what to do.
#[derive(Debug, Default)]
struct JobWatch {
    /// Each job seen: its settled count, when that last changed, whether
    /// the stall was told, and readings in a row that missed it.
    jobs: std::collections::BTreeMap<String, (u64, Instant, bool, u32)>,
}

/// How long a job may stand still before `wait` says so.
const STALLED: Duration = Duration::from_secs(600);

impl JobWatch {
    fn look(
        &mut self,
        jobs: &[JobStatus],
        forgotten: &[String],
        now: Instant,
    ) -> Result<(), Failure> {
        for (name, (_, _, _, misses)) in &mut self.jobs {
            if jobs.iter().any(|j| j.manifest.job == *name) || forgotten.contains(name) {
                *misses = 0;
                continue;
            }
            *misses += 1;
            if *misses >= LOST_AFTER {
                return Err(lost_job(name, true).into());
            }
        }
        self.jobs.retain(|name, _| !forgotten.contains(name));
        for job in jobs {
            let settled = job.settled();
            let entry = self
                .jobs
                .entry(job.manifest.job.clone())
                .or_insert((settled, now, false, 0));
            if entry.0 != settled {
                *entry = (settled, now, false, 0);
            } else if !job.is_over() && !entry.2 && now.duration_since(entry.1) >= STALLED {
                entry.2 = true;
                let name = &job.manifest.job;
                let why = if job.is_sealed() {
                    "are workers running for it?".to_string()
                } else {
                    format!(
                        "it was never sealed: its submit stopped after {} of {} items; \
                         `runner submit --resume --job {name} FILE` sends the rest",
                        job.submitted, job.manifest.total
                    )
                };
                eprintln!(
                    "runner: job `{name}` has not moved for {} ({} of {} settled): {why}; \
                     `runner job cancel {name}` ends it",
                    humantime::format_duration(STALLED),
                    settled,
                    job.manifest.total
                );
            }
        }
        Ok(())
    }

    /// A job seen before is not among `jobs`.
    fn misses_any(&self, jobs: &[JobStatus]) -> bool {
        self.jobs
            .keys()
            .any(|name| !jobs.iter().any(|j| j.manifest.job == *name))
    }

    /// A job seen before is missing from the last reading.
    fn missing(&self) -> bool {
        self.jobs.values().any(|(_, _, _, misses)| *misses > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(ready: Count, in_flight: Count, age: u64) -> Backlog {
        Backlog {
            ready,
            in_flight,
            dead: Count::Unknown,
            age: Duration::from_secs(age),
        }
    }

    #[test]
    fn a_job_that_settled_nothing_for_ten_minutes_stands_still() {
        let mut manifest = forloop_core::job::Manifest::new("j", 10, "d");
        manifest.created = 1_000;
        let mut job = JobStatus {
            manifest,
            submitted: 10,
            done: 2,
            dead: 0,
            settled_between: Some((1_000_000, 2_000_000)),
            cancelled: None,
            halt: Default::default(),
        };
        let minute = 60_000;
        assert_eq!(standing_still(&job, 2_000_000 + 9 * minute), None);
        assert_eq!(
            standing_still(&job, 2_000_000 + 25 * minute + 5_000),
            Some(Duration::from_secs(25 * 60))
        );
        job.settled_between = None;
        assert_eq!(
            standing_still(&job, 1_000_000 + 12 * minute),
            Some(Duration::from_secs(12 * 60)),
            "from its creation when nothing settled yet"
        );
        job.cancelled = Some(1);
        assert_eq!(
            standing_still(&job, u64::MAX / 2),
            None,
            "over: not flagged"
        );
    }

    #[test]
    fn the_note_says_where_counts_come_from_and_how_old_they_are() {
        let four_minutes = Duration::from_secs(240);
        let note = status_note(
            &backlog(Count::Approximate(5), Count::Unknown, 95),
            four_minutes,
            Some("Cloud Monitoring"),
        );
        assert_eq!(
            note,
            " (approximate, from Cloud Monitoring; reading 95 s old, may lag by up to 4m)"
        );
        let unknown = backlog(Count::Unknown, Count::Unknown, 0);
        assert!(status_note(&unknown, four_minutes, None).contains("--idle-window (at least 4m)"),);
        assert!(status_note(&unknown, Duration::ZERO, None).contains("--idle-window of empty"));
        let exact = Backlog {
            dead: Count::Exact(0),
            ..backlog(Count::Exact(0), Count::Exact(0), 0)
        };
        assert_eq!(status_note(&exact, Duration::ZERO, None), "");
    }
}

//! What a worker knows of the jobs on its queue, and what it does with an
//! item of each: run it, hand it back (another job's command, a job this
//! worker is not for, or a halted job), settle it without running (its job
//! was cancelled or forgotten), or hand it back until the ledger shows its
//! job.
//!
//! Every reading also enforces the jobs' `--max-dead`
//! ([`crate::job::halt`]): a job whose counts pass its limit is halted in
//! the ledger by the worker that read them (in the epoch it read), so any
//! worker, on any machine, halts it at its next reading. A worker reads
//! again after every death of an item of a job with a limit, so the
//! deaths past the limit are bounded by the items in flight when it was
//! passed.
//!
//! The knowledge comes from the ledger ([`Ledger::jobs`] and
//! [`Ledger::forgotten`]), read when an item of a job not seen yet
//! arrives, at most every [`REFRESH`] while items keep coming (so a
//! cancel reaches busy workers), and with every end reading. A job the
//! ledger had and no longer has, without having forgotten it, was lost
//! (the server lost its data): after [`LOST_AFTER`] readings in a row
//! without it, the worker fails naming it, instead of reading the
//! missing job as done. A worker for a job it has never seen says there is
//! no such job only after [`NOT_FOUND_AFTER`] of readings without it: a
//! ledger kept in sheets misses every job while a reader that died holds
//! its sheets.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::job::{JobItem, JobStatus, LOST_AFTER, Ledger, lost_job};
use crate::{QueueError, QueueErrorKind};

/// How often a busy worker re-reads the jobs, to see a cancel.
pub(super) const REFRESH: Duration = Duration::from_secs(30);

/// What the ledger said about its jobs: their counts, and the forgotten
/// names where a job looked for was missing (`None`: not read).
#[derive(Debug, Clone, Default)]
pub(super) struct JobsSeen {
    pub(super) jobs: Vec<JobStatus>,
    pub(super) forgotten: Option<Vec<String>>,
}

impl JobsSeen {
    /// Read the jobs from `ledger`, and the forgotten names only when one
    /// of `expected` (or of `more`) is not among them: on a ledger kept in
    /// sheets every read costs calls, and the common reading finds every
    /// job it looks for.
    pub(super) async fn read<'a>(
        ledger: &dyn Ledger,
        expected: &'a HashSet<Arc<str>>,
        more: impl IntoIterator<Item = &'a Arc<str>>,
    ) -> Result<Self, QueueError> {
        let mut jobs = ledger.jobs().await?;
        for job in jobs.iter_mut().filter(|job| job.should_halt()) {
            let name = &job.manifest.job;
            if ledger.halt(name, job.halt.epoch).await? {
                job.halt.at = Some(crate::job::unix_millis());
                tracing::warn!(job = %name, "job `{name}` passed its --max-dead: {}; \
                    no worker takes its items until `--resume`", job.halt_line());
            }
        }
        let present = |name: &Arc<str>| jobs.iter().any(|job| *job.manifest.job == **name);
        let missing = expected.iter().chain(more).any(|name| !present(name));
        let forgotten = if missing {
            Some(ledger.forgotten().await?)
        } else {
            None
        };
        Ok(Self { jobs, forgotten })
    }
}

/// Whether the items of a pull call for a reading of the ledger.
#[derive(Debug)]
pub(super) struct WantsReading {
    pub(super) watched: Arc<HashSet<Arc<str>>>,
    names: Arc<HashSet<Arc<str>>>,
    stale: bool,
}

impl WantsReading {
    /// One of `jobs` is not known yet, or the last reading is older than
    /// [`REFRESH`] and there are items of jobs.
    pub(super) fn wants<'a>(&self, jobs: impl IntoIterator<Item = Option<&'a JobItem>>) -> bool {
        let mut any = false;
        for job in jobs.into_iter().flatten() {
            if !self.names.contains(&job.job) {
                return true;
            }
            any = true;
        }
        any && self.stale
    }
}

/// What to do with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Run it.
    Run,
    /// Give it back at no cost: it is for another worker.
    HandBack,
    /// Ack it without running: its job is over (cancelled or forgotten).
    Discard,
}

#[derive(Debug)]
struct Known {
    command: Option<Arc<str>>,
    over: bool,
    /// Every item settled.
    complete: bool,
    /// Items not settled yet.
    remaining: u64,
    cancelled: bool,
    halted: bool,
    /// It has a `--max-dead`: a death of its items calls for a reading.
    limited: bool,
}

/// How long a worker for a job it has never seen reads the ledger without
/// it before it fails saying there is no such job: a ledger kept in sheets
/// misses every job while a reader that died holds its sheets (until
/// their lease ends; the sheet ledger waits 35 s for the ones it can
/// count), and a worker started in a storm, with no memory of the job,
/// would otherwise fail at once. A job once seen and then missing is
/// judged by [`LOST_AFTER`] readings alone: its reader remembers it.
const NOT_FOUND_AFTER: Duration = Duration::from_secs(45);

/// The worker's view of the jobs.
#[derive(Debug)]
pub(super) struct JobGate {
    for_jobs: Option<HashSet<Arc<str>>>,
    command: Option<Arc<str>>,
    known: HashMap<Arc<str>, Known>,
    forgotten: HashSet<Arc<str>>,
    /// The jobs known and forgotten, shared with pulls.
    names: Arc<HashSet<Arc<str>>>,
    /// The keys of `misses`, shared with readings.
    watched: Arc<HashSet<Arc<str>>>,
    /// Jobs of items seen or of the scope, with the readings in a row
    /// that missed them.
    misses: HashMap<Arc<str>, u32>,
    /// When each job now missing was first missed.
    missed_since: HashMap<Arc<str>, Instant>,
    /// Jobs ever seen in a reading.
    seen: HashSet<Arc<str>>,
    read_at: Option<Instant>,
    /// Jobs whose items this worker was told about handing back.
    warned: HashSet<Arc<str>>,
}

impl JobGate {
    pub(super) fn new(for_jobs: Option<&[Arc<str>]>, command: Option<Arc<str>>) -> Self {
        let for_jobs: Option<HashSet<Arc<str>>> =
            for_jobs.map(|jobs| jobs.iter().cloned().collect());
        let misses: HashMap<Arc<str>, u32> = for_jobs
            .iter()
            .flatten()
            .map(|job| (Arc::clone(job), 0))
            .collect();
        Self {
            for_jobs,
            command,
            known: HashMap::new(),
            forgotten: HashSet::new(),
            names: Arc::default(),
            watched: Arc::new(misses.keys().cloned().collect()),
            misses,
            missed_since: HashMap::new(),
            seen: HashSet::new(),
            read_at: None,
            warned: HashSet::new(),
        }
    }

    /// The jobs this worker is for (`None`: every job).
    pub(super) fn scope(&self) -> Option<&HashSet<Arc<str>>> {
        self.for_jobs.as_ref()
    }

    /// The jobs this worker watches for loss (its own, and those whose
    /// items it met).
    pub(super) fn watched(&self) -> Arc<HashSet<Arc<str>>> {
        Arc::clone(&self.watched)
    }

    /// What a pull needs to decide, once it has its items, whether to
    /// read the ledger before they are judged.
    pub(super) fn wanting_reading(&self, now: Instant) -> WantsReading {
        WantsReading {
            watched: Arc::clone(&self.watched),
            names: Arc::clone(&self.names),
            stale: self
                .read_at
                .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH),
        }
    }

    /// Whether a job this worker watches is missing from the last reading.
    pub(super) fn missing(&self) -> bool {
        self.misses.values().any(|&misses| misses > 0)
    }

    /// Take in a reading of the ledger. Fails when a job this worker is
    /// for, or whose items it saw, is gone from the ledger without having
    /// been forgotten, [`LOST_AFTER`] readings in a row.
    pub(super) fn learn(&mut self, seen: &JobsSeen, now: Instant) -> Result<(), QueueError> {
        self.read_at = Some(now);
        match &seen.forgotten {
            Some(forgotten) => {
                self.forgotten = forgotten.iter().map(|j| Arc::from(j.as_str())).collect();
            }
            // Not read: what was known stays, but for a name a new job took.
            None => self
                .forgotten
                .retain(|name| !seen.jobs.iter().any(|job| *job.manifest.job == **name)),
        }
        let mut names: HashSet<Arc<str>> = self.forgotten.clone();
        self.known.clear();
        for job in &seen.jobs {
            let name: Arc<str> = Arc::from(job.manifest.job.as_str());
            self.seen.insert(Arc::clone(&name));
            names.insert(Arc::clone(&name));
            self.known.insert(
                name,
                Known {
                    command: job.manifest.command.as_deref().map(Arc::from),
                    over: job.is_over(),
                    complete: job.is_complete(),
                    remaining: job.remaining(),
                    cancelled: job.cancelled.is_some(),
                    halted: job.is_halted() && !job.is_complete(),
                    limited: job.manifest.max_dead.is_some(),
                },
            );
        }
        self.names = Arc::new(names);
        for (job, misses) in &mut self.misses {
            if self.known.contains_key(job) || self.forgotten.contains(job) {
                *misses = 0;
                self.missed_since.remove(job);
                continue;
            }
            *misses += 1;
            let since = *self.missed_since.entry(Arc::clone(job)).or_insert(now);
            if *misses >= LOST_AFTER {
                let scoped = self
                    .for_jobs
                    .as_ref()
                    .is_some_and(|jobs| jobs.contains(job));
                if scoped && !self.seen.contains(job) {
                    if now.saturating_duration_since(since) < NOT_FOUND_AFTER {
                        continue;
                    }
                    return Err(QueueError::new(
                        QueueErrorKind::NotFound,
                        format!(
                            "this worker is for job `{job}`, and the queue has no such job \
                             (`runner job list` shows its jobs; was it submitted with another \
                             --name or --queue?)"
                        ),
                    ));
                }
                return Err(lost_job(job, self.seen.contains(job)));
            }
        }
        Ok(())
    }

    /// Start watching `job` for loss (an item of it was seen).
    fn watch(&mut self, job: &Arc<str>) {
        if !self.misses.contains_key(job) {
            self.misses.insert(Arc::clone(job), 0);
            Arc::make_mut(&mut self.watched).insert(Arc::clone(job));
        }
    }

    /// What to do with an item of `job` (`None`: an item without a job).
    pub(super) fn judge(&mut self, job: Option<&JobItem>) -> Verdict {
        let Some(job) = job else {
            // Another program's item: a worker for given jobs leaves it
            // to workers for the whole queue.
            return if self.for_jobs.is_some() {
                Verdict::HandBack
            } else {
                Verdict::Run
            };
        };
        let name = &job.job;
        if self.forgotten.contains(name) {
            return Verdict::Discard;
        }
        // A job whose items this worker meets must not vanish unnoticed.
        self.watch(name);
        let Some(known) = self.known.get(name) else {
            // Not in the reading just taken: back it goes, until a reading
            // shows the job or [`LOST_AFTER`] of them call it lost.
            return Verdict::HandBack;
        };
        if known.cancelled {
            return Verdict::Discard;
        }
        if known.halted {
            // It waits in the queue, at no cost, for a resume.
            return Verdict::HandBack;
        }
        let same = match (&self.command, &known.command) {
            (Some(mine), Some(theirs)) => Some(mine == theirs),
            _ => None,
        };
        let run = match &self.for_jobs {
            // The whole queue, or this worker's own job: anything but an
            // item recorded with another command. A job recorded without
            // one (`submit`) runs under the worker's; a Rust handler runs
            // what it is given.
            None => same != Some(false),
            Some(jobs) if jobs.contains(name) => same != Some(false),
            // Another job shares this worker only where both recorded
            // the same command.
            Some(_) => same == Some(true),
        };
        let verdict = if run { Verdict::Run } else { Verdict::HandBack };
        if verdict == Verdict::HandBack && self.warned.insert(Arc::clone(name)) {
            let theirs = known.command.as_deref().unwrap_or("(none recorded)");
            tracing::warn!(
                job = %name, command = theirs,
                "handing back items of job `{name}`: this worker runs another command or another job; \
                 they wait for a worker of their own (`runner work --job {name} -- COMMAND`)"
            );
        }
        verdict
    }

    /// Whether the last reading shows `job` complete: every item of it
    /// settled, so a copy of one still running or queued is redundant.
    pub(super) fn complete(&self, job: &JobItem) -> bool {
        self.known.get(&job.job).is_some_and(|known| known.complete)
    }

    /// The items of `job` not settled yet, by the last reading.
    pub(super) fn remaining(&self, job: &str) -> Option<u64> {
        self.known.get(job).map(|known| known.remaining)
    }

    /// An item of `job` died: where its job has a `--max-dead`, the next
    /// pull reads the ledger (and halts the job if the limit is passed).
    pub(super) fn died(&mut self, job: &JobItem) {
        if self.known.get(&job.job).is_some_and(|known| known.limited) {
            self.read_at = None;
        }
    }

    /// The halted jobs this worker is for (a worker of the whole queue:
    /// every halted job it knows of).
    pub(super) fn halted(&self) -> Vec<Arc<str>> {
        let mut halted: Vec<Arc<str>> = self
            .known
            .iter()
            .filter(|(name, known)| {
                known.halted
                    && self
                        .for_jobs
                        .as_ref()
                        .is_none_or(|jobs| jobs.contains(*name))
            })
            .map(|(name, _)| Arc::clone(name))
            .collect();
        halted.sort();
        halted
    }

    /// Whether every job this worker is for is over; `None` for a worker
    /// of the whole queue.
    pub(super) fn scope_over(&self) -> Option<bool> {
        let jobs = self.for_jobs.as_ref()?;
        Some(
            jobs.iter().all(|job| {
                self.forgotten.contains(job) || self.known.get(job).is_some_and(|k| k.over)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Manifest;

    fn status(name: &str, command: Option<&str>) -> JobStatus {
        let mut manifest = Manifest::new(name, 2, "d");
        manifest.command = command.map(str::to_string);
        JobStatus {
            manifest,
            submitted: 2,
            done: 0,
            dead: 0,
            settled_between: None,
            cancelled: None,
            halt: Default::default(),
        }
    }

    fn item(job: &str) -> JobItem {
        JobItem::new(job, 0)
    }

    /// A worker started for a job it has never seen reads a ledger kept in
    /// sheets whose every sheet a reader that died holds (a worker
    /// SIGKILLed mid-read, in a storm): each reading misses the job for as
    /// long as those sheets are held. "No such job" waits that out; then,
    /// if the job is still missing, it is said.
    #[tokio::test(start_paused = true)]
    async fn a_job_never_seen_is_no_such_job_only_after_the_window() {
        let mut gate = JobGate::new(Some(&[Arc::from("j")]), None);
        let empty = JobsSeen {
            jobs: Vec::new(),
            forgotten: Some(Vec::new()),
        };
        let start = Instant::now();
        for second in 0..NOT_FOUND_AFTER.as_secs() {
            let at = start + Duration::from_secs(second);
            assert!(
                gate.learn(&empty, at).is_ok(),
                "said no such job after {second} s, while a dead reader may hold the sheets"
            );
        }
        let error = gate.learn(&empty, start + NOT_FOUND_AFTER).unwrap_err();
        assert!(error.to_string().contains("no such job"), "{error}");
        // And once seen, the job is in the view: nothing is said.
        let mut gate = JobGate::new(Some(&[Arc::from("j")]), None);
        let with = JobsSeen {
            jobs: vec![status("j", None)],
            forgotten: None,
        };
        assert!(gate.learn(&empty, start).is_ok());
        assert!(gate.learn(&with, start + Duration::from_secs(1)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_submit_runs_only_on_workers_of_the_queue_or_of_the_job() {
        let seen = JobsSeen {
            jobs: vec![status("plain", None), status("other", Some("x"))],
            forgotten: None,
        };
        let mut whole = JobGate::new(None, Some(Arc::from("x")));
        whole.learn(&seen, Instant::now()).unwrap();
        assert_eq!(whole.judge(Some(&item("plain"))), Verdict::Run);
        let scoped = [Arc::from("other")];
        let mut for_other = JobGate::new(Some(&scoped), Some(Arc::from("x")));
        for_other.learn(&seen, Instant::now()).unwrap();
        assert_eq!(for_other.judge(Some(&item("plain"))), Verdict::HandBack);
        assert_eq!(for_other.judge(None), Verdict::HandBack);
        assert_eq!(whole.judge(None), Verdict::Run);
    }
}

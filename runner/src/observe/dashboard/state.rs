//! What the page shows, read by one shared reader for every open page: the
//! ledger's jobs and the queue's backlog every `poll`, each running job's
//! receipts every `receipts_poll` (and once more when it ends). A page
//! reads this memory, never the backend; with no page open for a minute
//! the reader stops until one is opened again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use forloop_core::job::{JobStatus, Ledger, Receipt, Settled};
use forloop_core::{Backlog, ErrorChain, WorkQueue};
use tokio::sync::Notify;

/// Points of progress kept per job: an hour at the default poll.
const HISTORY: usize = 720;
/// With no page asking for this long, the reader rests.
const IDLE_AFTER: Duration = Duration::from_secs(60);

/// One reading of a job's progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Point {
    /// Unix milliseconds.
    pub(crate) at: u64,
    pub(crate) done: u64,
    pub(crate) dead: u64,
}

/// A job as the page shows it.
#[derive(Debug, Clone)]
pub(crate) struct JobView {
    pub(crate) status: JobStatus,
    pub(crate) history: VecDeque<Point>,
    /// The last receipts read, and when (Unix ms).
    pub(crate) receipts: Option<(u64, Arc<Vec<Receipt>>)>,
    /// The job was over at the last receipts read: read no more.
    pub(crate) receipts_final: bool,
    /// The ledger no longer shows the job (forgotten, or the server lost
    /// its keys) since then (Unix ms): the page keeps its last view and
    /// says so, rather than let it vanish.
    pub(crate) missing_since: Option<u64>,
}

/// Everything the page shows.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// When the ledger was last read (Unix ms).
    pub(crate) read_at: Option<u64>,
    /// The last read's error, if it failed (the rest is the last good read).
    pub(crate) error: Option<String>,
    pub(crate) backlog: Option<Backlog>,
    pub(crate) jobs: BTreeMap<String, JobView>,
}

/// The shared reader's state: the snapshot pages read, and whether anyone
/// is looking.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) snapshot: Mutex<Snapshot>,
    last_view: AtomicU64,
    wake: Notify,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            snapshot: Mutex::new(Snapshot::default()),
            last_view: AtomicU64::new(0),
            wake: Notify::new(),
        })
    }

    /// A page asked: the reader keeps reading (and wakes if it rested).
    pub(crate) fn viewed(&self) {
        self.last_view.store(now_ms(), Ordering::Relaxed);
        self.wake.notify_one();
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    forloop_core::job::unix_millis()
}

/// How often the reader reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub(crate) poll: Duration,
    pub(crate) receipts_poll: Duration,
}

/// Read forever, at `rates`, into `shared`.
pub(crate) async fn read_forever(
    shared: Arc<Shared>,
    queue: Arc<dyn WorkQueue>,
    ledger: Arc<dyn Ledger>,
    rates: Rates,
) {
    let mut receipts_due: HashMap<String, u64> = HashMap::new();
    loop {
        let idle_for = now_ms().saturating_sub(shared.last_view.load(Ordering::Relaxed));
        if idle_for > IDLE_AFTER.as_millis() as u64 {
            shared.wake.notified().await;
        }
        read_once(&shared, &*queue, &*ledger, rates, &mut receipts_due).await;
        tokio::time::sleep(rates.poll).await;
    }
}

async fn read_once(
    shared: &Shared,
    queue: &dyn WorkQueue,
    ledger: &dyn Ledger,
    rates: Rates,
    receipts_due: &mut HashMap<String, u64>,
) {
    let jobs = match ledger.jobs().await {
        Ok(jobs) => jobs,
        Err(error) => {
            shared.lock().error = Some(format!(
                "reading the job ledger failed: {}",
                ErrorChain(&error)
            ));
            return;
        }
    };
    let backlog = queue.backlog().await;
    let at = now_ms();
    // Which jobs' receipts are due: running ones every `receipts_poll`,
    // and a job once more after it is over.
    let mut wanted = Vec::new();
    {
        let snapshot = shared.lock();
        for job in &jobs {
            let name = &job.manifest.job;
            let done_reading = snapshot
                .jobs
                .get(name.as_ref() as &str)
                .is_some_and(|view| view.receipts_final);
            let due = receipts_due
                .get(name.as_ref() as &str)
                .is_none_or(|&t| t <= at);
            if !done_reading && (due || job.is_over()) {
                wanted.push((name.to_string(), job.is_over()));
            }
        }
    }
    let mut read = Vec::new();
    let mut error = None;
    for (name, over) in wanted {
        match ledger.receipts(&name).await {
            Ok(receipts) => {
                receipts_due.insert(name.clone(), at + rates.receipts_poll.as_millis() as u64);
                read.push((name, over, receipts));
            }
            Err(failed) => {
                error = Some(format!(
                    "reading the receipts of job `{name}` failed: {}",
                    ErrorChain(&failed)
                ));
            }
        }
    }
    let mut snapshot = shared.lock();
    snapshot.read_at = Some(at);
    match backlog {
        Ok(backlog) => snapshot.backlog = Some(backlog),
        Err(failed) => {
            error = Some(format!(
                "reading the backlog failed: {}",
                ErrorChain(&failed)
            ));
        }
    }
    snapshot.error = error;
    let names: Vec<String> = jobs.iter().map(|j| j.manifest.job.to_string()).collect();
    for (name, view) in &mut snapshot.jobs {
        if !names.contains(name) {
            view.missing_since.get_or_insert(at);
        }
    }
    for job in jobs {
        let name = job.manifest.job.to_string();
        let point = Point {
            at,
            done: job.done,
            dead: job.dead,
        };
        let view = snapshot.jobs.entry(name).or_insert_with(|| JobView {
            status: job.clone(),
            history: VecDeque::new(),
            receipts: None,
            receipts_final: false,
            missing_since: None,
        });
        view.status = job;
        view.missing_since = None;
        if view.history.len() >= HISTORY {
            // Keep the whole run at half the detail.
            view.history = view.history.iter().copied().step_by(2).collect();
        }
        view.history.push_back(point);
    }
    for (name, over, receipts) in read {
        if let Some(view) = snapshot.jobs.get_mut(&name) {
            view.receipts = Some((at, Arc::new(receipts)));
            view.receipts_final = over;
        }
    }
}

/// A worker as its receipts show it.
#[derive(Debug, Clone)]
pub(crate) struct WorkerView {
    pub(crate) name: String,
    pub(crate) settled: u64,
    pub(crate) dead: u64,
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) seconds: f64,
    /// Items settled in the minute before the receipts were read.
    pub(crate) last_minute: u64,
}

/// Each worker's receipts, busiest first.
pub(crate) fn workers(receipts: &[Receipt], read_at: u64) -> Vec<WorkerView> {
    let mut by: HashMap<&str, WorkerView> = HashMap::new();
    for r in receipts {
        let view = by.entry(&r.worker).or_insert_with(|| WorkerView {
            name: r.worker.to_string(),
            settled: 0,
            dead: 0,
            first: r.at,
            last: r.at,
            seconds: 0.0,
            last_minute: 0,
        });
        view.settled += 1;
        view.dead += u64::from(r.state == Settled::Dead);
        view.first = view.first.min(r.at);
        view.last = view.last.max(r.at);
        view.seconds += r.seconds;
        view.last_minute += u64::from(r.at + 60_000 >= read_at);
    }
    let mut out: Vec<WorkerView> = by.into_values().collect();
    out.sort_by(|a, b| b.settled.cmp(&a.settled).then(a.name.cmp(&b.name)));
    out
}

/// Dead items grouped by why: exit code and stderr signature.
#[derive(Debug, Clone)]
pub(crate) struct FailureGroup {
    pub(crate) exit_code: Option<i32>,
    pub(crate) signature: String,
    pub(crate) count: u64,
    /// Up to three (item, stderr tail) examples.
    pub(crate) examples: Vec<(String, String)>,
}

/// The dead receipts grouped by exit code and normalised signature,
/// largest group first.
pub(crate) fn failure_groups(receipts: &[Receipt]) -> Vec<FailureGroup> {
    let mut groups: HashMap<(Option<i32>, String), FailureGroup> = HashMap::new();
    for r in receipts.iter().filter(|r| r.state == Settled::Dead) {
        let signature = signature_of(r);
        let group = groups
            .entry((r.exit_code, signature.clone()))
            .or_insert_with(|| FailureGroup {
                exit_code: r.exit_code,
                signature,
                count: 0,
                examples: Vec::new(),
            });
        group.count += 1;
        if group.examples.len() < 3 {
            group.examples.push((
                r.item_text().into_owned(),
                r.stderr_tail
                    .clone()
                    .or_else(|| r.reason.clone())
                    .unwrap_or_default(),
            ));
        }
    }
    let mut out: Vec<FailureGroup> = groups.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.signature.cmp(&b.signature)));
    out
}

/// The signature a dead receipt is grouped by: its stderr's last line
/// (else its reason), normalised.
pub(crate) fn signature_of(r: &Receipt) -> String {
    let text = last_line(r.stderr_tail.as_deref())
        .or(r.reason.as_deref())
        .unwrap_or("");
    signature(text)
}

/// The last line of `text` with something on it.
fn last_line(text: Option<&str>) -> Option<&str> {
    text?.lines().rev().map(str::trim).find(|l| !l.is_empty())
}

/// `text` with what differs between occurrences of one failure made
/// alike: paths become `<path>`, hex runs `<hex>`, numbers `<n>`, runs
/// of space one space; cut at 200 characters.
pub(crate) fn signature(text: &str) -> String {
    let mut out = String::new();
    for (i, word) in text.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&normalise_word(word));
        if out.len() > 200 {
            let mut cut = 200;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
            break;
        }
    }
    out
}

fn normalise_word(word: &str) -> String {
    // A path: a word with a `/` past a leading quote or bracket, not a URL
    // scheme's `//` alone.
    let trimmed = word.trim_matches(|c: char| "\"'`()[]{}<>,;:".contains(c));
    if trimmed.len() > 1 && trimmed.contains('/') && !trimmed.contains("://") {
        let lead = &word[..word.find(trimmed).unwrap_or(0)];
        let tail = &word[word.find(trimmed).unwrap_or(0) + trimmed.len()..];
        return format!("{lead}<path>{tail}");
    }
    let mut out = String::new();
    let chars: Vec<char> = word.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_hexdigit() {
            // The run of hex digits (with a 0x prefix) starting here.
            let start = i;
            let mut end = i;
            if c == '0' && chars.get(i + 1).is_some_and(|&x| x == 'x' || x == 'X') {
                end += 2;
            }
            while end < chars.len() && chars[end].is_ascii_hexdigit() {
                end += 1;
            }
            let run: String = chars[start..end].iter().collect();
            let word_edge = start == 0 || !chars[start - 1].is_ascii_alphanumeric();
            let has_digit = run.chars().any(|c| c.is_ascii_digit());
            let all_digits = run.chars().all(|c| c.is_ascii_digit());
            if all_digits {
                out.push_str("<n>");
                // A decimal point and more digits belong to the number.
                i = end;
                while i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                continue;
            }
            if word_edge && has_digit && (run.starts_with("0x") || run.len() >= 8) {
                out.push_str("<hex>");
                i = end;
                continue;
            }
            // Letters that happen to be hex (`bad`, `face`): a word.
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                out.push(chars[i]);
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() {
            out.push_str("<n>");
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn failures_that_differ_only_in_numbers_hex_and_paths_share_a_signature() {
        let a = signature(
            "HTTP 429 Too Many Requests for /data/in/item-17.json (id 0x7f3a9c, req 5f2c1e9ab33d)",
        );
        let b = signature(
            "HTTP 429  Too Many Requests for /tmp/other/x.json (id 0xdead01, req 0a1b2c3d4e5f6a)",
        );
        assert_eq!(a, b);
        assert_eq!(
            a,
            "HTTP <n> Too Many Requests for <path> (id <hex>, req <hex>)"
        );
        assert_eq!(signature("took 1.25s, retry 3"), "took <n>s, retry <n>");
        // Words that are made of hex letters stay words.
        assert_eq!(signature("bad face value"), "bad face value");
        assert_ne!(
            signature("exit 3: no such file"),
            signature("exit 3: permission denied")
        );
    }
}
